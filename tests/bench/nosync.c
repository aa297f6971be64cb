/*
 * nosync.so: an LD_PRELOAD shim for the durability benchmark only. fsync, fdatasync, msync
 * and sync_file_range return at once, and O_DSYNC/O_SYNC are dropped from open(), so LMDB
 * commits reach the page cache but are not synced: the cost of the sync and nothing else.
 * Never for real use.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

int fsync(int fd);
int fdatasync(int fd);
int msync(void *addr, size_t len, int flags);
int open(const char *path, int flags, ...);
int open64(const char *path, int flags, ...);

int fsync(int fd)
{
    return 0;
}

int fdatasync(int fd)
{
    return 0;
}

int msync(void *addr, size_t len, int flags)
{
    return 0;
}

static int call_open(const char *sym, const char *path, int flags, mode_t mode)
{
    int (*real)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, sym);
    return real(path, flags & ~(O_DSYNC | O_SYNC), mode);
}

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    return call_open("open", path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    return call_open("open64", path, flags, mode);
}
