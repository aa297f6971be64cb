/*
 * `leadloop contact import FILE.csv`: the CSV reading (libcsv in strict mode, restarted after
 * a bad row) and the row checks against the header, through import_read() in
 * server/cli_mail.c. Good rows go to a checker here instead of the store.
 * Properties, for every row that would be stored:
 *   - the email normalises to itself;
 *   - the fields are NULL or a JSON object within the identify event's limit, whose keys are
 *     header columns (field names, lower case, each column once, never "email") and whose
 *     values are non-empty UTF-8 strings of at most IMPORT_FIELD_MAX bytes;
 *   - a file that starts with a UTF-8 byte order mark imports as it does without one.
 * The import's messages (one per bad row) go to /dev/null while it runs; a failed property is
 * written to fd 2 directly. Only the file is fuzzed, not the store: import_store() is covered
 * by the mailer and CLI suites.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "fuzz.h"
#define IMPORT_LINE_MAX 256 /* lines longer than this are read in parts, as 1 MiB ones are */
#include "../../server/cli_mail.c"

/* cli.c's helpers, which the import reader never calls (the commands in cli_mail.c do). */
int ll__cli_fail(const char *cmd, const char *fmt, ...)
{
    abort();
}

int ll__cli_usage(const char *cmd, const char *fmt, ...)
{
    abort();
}

int ll__cli_parse(const char *cmd, int argc, char **argv, const ll_cli_opt_t *opts, char **pos, int maxpos, int *npos)
{
    abort();
}

int ll__cli_store(ll_cli_t *cli, const char *cmd, int create)
{
    abort();
}

int ll__cli_email(const char *cmd, const char *opt, const char *in, char out[256])
{
    abort();
}

int ll__cli_contact_id(ll_cli_t *cli, const char *cmd, const char *opt, const char *email, uint64_t *id)
{
    abort();
}

void ll__cli_iso(uint64_t us, char out[32])
{
    abort();
}

void ll__cli_put_text(FILE *f, const char *s, size_t n, size_t max)
{
    abort();
}

int ll__cli_out_failed(void)
{
    abort();
}

#define CHECK(e)                                                                                   \
    do {                                                                                           \
        if (!(e)) {                                                                                \
            dprintf(2, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #e);                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static size_t good;

static void on_contact(import_t *im, const char *email, const char *fields_json)
{
    char again[256];
    size_t n = strlen(email);
    CHECK(n > 0 && n < 256 && ll_email_normalize(email, n, again) == 0 && strcmp(email, again) == 0);
    good++;
    if (fields_json == NULL)
        return;
    CHECK(strlen(fields_json) <= ll_event_field_limit(LL_F_FIELDS));
    json_error_t jerr;
    json_t *o = json_loads(fields_json, 0, &jerr), *v;
    CHECK(json_is_object(o) && json_object_size(o) > 0);
    const char *key;
    json_object_foreach(o, key, v) {
        int col = 0;
        for (size_t i = 0; i < im->ncols; i++)
            col += strcmp(im->cols[i], key) == 0 && (int)i != im->email_col;
        CHECK(col == 1 && field_name_ok(key) && strcmp(key, "email") != 0);
        for (const char *p = key; *p != '\0'; p++)
            CHECK(!(*p >= 'A' && *p <= 'Z'));
        CHECK(json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) <= IMPORT_FIELD_MAX);
        CHECK(ll_utf8_valid(json_string_value(v), json_string_length(v)));
    }
    json_decref(o);
}

typedef struct {
    size_t good, bad;
    int header_done, header_bad;
} outcome_t;

static outcome_t import(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    static FILE *devnull;
    if (fd < 0) {
        fd = memfd_create("ll-fuzz-csv", 0);
        devnull = fopen("/dev/null", "w");
        FUZZ_CHECK(fd >= 0 && devnull != NULL);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    FUZZ_CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == (ssize_t)size);
    FILE *fp = fopen(path, "rb"); /* a file description of its own: reading starts at 0 */
    FUZZ_CHECK(fp != NULL);
    import_t im;
    memset(&im, 0, sizeof(im));
    im.file = "fuzz.csv";
    im.on_contact = on_contact;
    good = 0;
    FILE *err = stderr;
    stderr = devnull;
    import_read(&im, fp);
    stderr = err;
    CHECK(im.ncols == 0 && im.nvals == 0 && im.rc == 0);
    CHECK(good == 0 || (im.header_done && !im.header_bad));
    fclose(fp);
    return (outcome_t){good, im.bad, im.header_done, im.header_bad};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    outcome_t a = import(data, size);
    /* A UTF-8 byte order mark (Excel writes one) changes nothing; a second one is data. */
    static const char bom[] = "\xef\xbb\xbf";
    if (size >= 3 && memcmp(data, bom, 3) == 0 && (size < 6 || memcmp(data + 3, bom, 3) != 0)) {
        outcome_t b = import(data + 3, size - 3);
        CHECK(a.good == b.good && a.bad == b.bad && a.header_done == b.header_done && a.header_bad == b.header_bad);
    }
    return 0;
}
