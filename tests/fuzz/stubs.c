/* What server/main.c defines for the server objects a fuzz target links (never called for
 * real: the targets drive parsers, not the event loop). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include "../../server/server.h"

ll_server_t ll_srv;
int ll_log_level = 0;

void log_warnx(const char *fmt, ...)
{
    (void)fmt;
}

void log_warn(const char *fmt, ...)
{
    (void)fmt;
}

void log_info(const char *fmt, ...)
{
    (void)fmt;
}

void log_debug(const char *fmt, ...)
{
    (void)fmt;
}

void fatalx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    abort();
}
