/*
 * leadloop enroll | unenroll | contact import: nurture enrolment from the command line
 * (program.h). Programs come from the configuration (-c FILE).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <csv.h>
#include <jansson.h>
#include "leadloop/ingest.h"
#include "leadloop/program.h"
#include "cli.h"

#define IMPORT_MAX_COLS 64
#define IMPORT_FIELD_MAX 4096
#ifndef IMPORT_LINE_MAX /* tests/fuzz/fuzz_csv.c makes it small: lines then span several reads */
#define IMPORT_LINE_MAX (1 << 20)
#endif

static int store_failed(ll_cli_t *cli, const char *cmd, int rc)
{
    if (rc == LL_EFULL)
        return ll__cli_fail(cmd, "%s: the store is full (raise map_size in the configuration)", cli->data_dir);
    return ll__cli_fail(cmd, "%s: cannot update the store: %s", cli->data_dir, ll_strerror(rc));
}

static const ll_program_t *find_program(ll_cli_t *cli, const char *cmd, const char *id)
{
    const ll_program_t *p = ll_mail_program(cli->conf.mail, id);
    if (p == NULL)
        ll__cli_fail(cmd, "no program '%s' in the configuration%s", id,
                     cli->conf.path == NULL ? " (give it with -c FILE)" : "");
    return p;
}

/* Enrols in t; prints the outcome. 0, or an LL_E* store error. */
static int enroll_one(ll_nurture_t *n, ll_txn_t *t, const ll_program_t *p, uint64_t id, const char *email, int quiet)
{
    int rc = ll_nurture_enroll(n, t, id, p, ll_now_us());
    if (rc == 0) {
        if (!quiet)
            printf("enrolled %s in %s\n", email, p->id);
        return 0;
    }
    if (rc == LL_EEXIST) {
        printf("%s: already in %s (or finished it, and the program has no re-entry)\n", email, p->id);
        return 0;
    }
    if (rc == LL_EINVAL) {
        printf("%s: unsubscribed, bounced or do-not-contact: not enrolled in %s\n", email, p->id);
        return 0;
    }
    return rc;
}

int ll__cli_enroll(ll_cli_t *cli, int argc, char **argv)
{
    static const char cmd[] = "enroll";
    const ll_cli_opt_t opts[] = {{NULL, 0, NULL}};
    char *pos[2], email[256];
    ll_nurture_t n;
    ll_txn_t t = {0};
    uint64_t id;
    int npos, rc, created;
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 2, &npos)) != 0)
        return rc;
    if (npos != 2)
        return ll__cli_usage(cmd, "usage: enroll EMAIL PROGRAM");
    const ll_program_t *p = find_program(cli, cmd, pos[1]);
    if (p == NULL || (rc = ll__cli_email(cmd, NULL, pos[0], email)) != 0 || (rc = ll__cli_store(cli, cmd, 1)) != 0)
        return p == NULL ? LL_CLI_FAIL : rc;
    if ((rc = ll_nurture_open(cli->store, &n)) != 0 || (rc = ll_txn_begin(cli->store, 0, &t)) != 0 ||
        (rc = ll_contact_upsert(&t, email, NULL, &id, &created)) != 0 ||
        (rc = enroll_one(&n, &t, p, id, email, 0)) != 0 || (rc = ll_txn_commit(&t)) != 0) {
        ll_txn_abort(&t);
        return store_failed(cli, cmd, rc);
    }
    return 0;
}

int ll__cli_unenroll(ll_cli_t *cli, int argc, char **argv)
{
    static const char cmd[] = "unenroll";
    const ll_cli_opt_t opts[] = {{NULL, 0, NULL}};
    char *pos[2], email[256];
    ll_nurture_t n;
    ll_txn_t t = {0};
    uint64_t id;
    int npos, rc;
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 2, &npos)) != 0)
        return rc;
    if (npos != 2)
        return ll__cli_usage(cmd, "usage: unenroll EMAIL PROGRAM");
    if ((rc = ll__cli_email(cmd, NULL, pos[0], email)) != 0 || (rc = ll__cli_contact_id(cli, cmd, NULL, email, &id)) != 0)
        return rc;
    if ((rc = ll_nurture_open(cli->store, &n)) != 0 || (rc = ll_txn_begin(cli->store, 0, &t)) != 0)
        return store_failed(cli, cmd, rc);
    rc = ll_nurture_exit(&n, &t, id, pos[1], LL_EXIT_UNENROLLED);
    if (rc == LL_ENOTFOUND) {
        ll_txn_abort(&t);
        return ll__cli_fail(cmd, "%s is not active in program '%s'", email, pos[1]);
    }
    if (rc != 0 || (rc = ll_txn_commit(&t)) != 0) {
        ll_txn_abort(&t);
        return store_failed(cli, cmd, rc);
    }
    printf("unenrolled %s from %s\n", email, pos[1]);
    return 0;
}

/* ---- contact import ---- */

typedef struct st_import_t {
    const char *file;
    char *cols[IMPORT_MAX_COLS];
    size_t ncols;
    int header_done, header_bad;
    /* the row being read */
    char *vals[IMPORT_MAX_COLS];
    size_t nvals;
    int too_many;
    long row_line;
    int row_ended;
    /* what a good row becomes (import_store; the fuzz target checks it instead) */
    void (*on_contact)(struct st_import_t *im, const char *email, const char *fields_json);
    /* the store */
    ll_cli_t *cli;
    ll_txn_t *t;
    ll_nurture_t *n;
    const ll_program_t *program;
    int email_col;
    size_t created, updated, bad, enrolled;
    int rc;
} import_t;

static void on_field(void *s, size_t len, void *arg)
{
    import_t *im = arg;
    if (im->nvals == IMPORT_MAX_COLS) {
        im->too_many = 1;
        return;
    }
    im->vals[im->nvals++] = ll_strndup(s != NULL ? s : "", len > IMPORT_FIELD_MAX ? IMPORT_FIELD_MAX + 1 : len);
}

static void row_clear(import_t *im)
{
    for (size_t i = 0; i < im->nvals; i++)
        free(im->vals[i]);
    im->nvals = 0;
    im->too_many = 0;
}

static void bad_row(import_t *im, const char *fmt, const char *arg)
{
    /* The value is the file's: shown bounded, with control characters escaped. */
    char shown[256];
    size_t n = 0;
    for (const unsigned char *s = (const unsigned char *)arg; *s != '\0' && n + 5 < sizeof(shown); s++)
        n += (size_t)(*s < 0x20 || *s == 0x7f ? snprintf(shown + n, 5, "\\x%02x", *s) : (shown[n] = (char)*s, 1));
    shown[n] = '\0';
    fprintf(stderr, "leadloop: contact import: %s:%ld: ", im->file, im->row_line);
    fprintf(stderr, fmt, shown);
    fputs("; row skipped\n", stderr);
    im->bad++;
}

static int field_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
              *s == '.' || *s == '-'))
            return 0;
    return 1;
}

static void import_row(import_t *im)
{
    char email[256];
    if (im->nvals == 1 && im->vals[0][0] == '\0')
        return; /* a blank line */
    if (!im->header_done) {
        im->header_done = 1;
        im->email_col = -1;
        for (size_t i = 0; i < im->nvals; i++) {
            char *c = im->vals[i];
            for (char *p = c; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p = (char)(*p - 'A' + 'a');
            if (!field_name_ok(c)) {
                fprintf(stderr, "leadloop: contact import: %s:%ld: column '%s' is not a field name\n", im->file,
                        im->row_line, c);
                im->header_bad = 1;
            }
            for (size_t j = 0; j < i; j++)
                if (strcmp(im->cols[j], c) == 0 && !im->header_bad) {
                    /* Two "email" columns, or two values for one field: which one is meant? */
                    fprintf(stderr, "leadloop: contact import: %s:%ld: column '%s' appears twice\n", im->file,
                            im->row_line, c);
                    im->header_bad = 1;
                }
            if (strcmp(c, "email") == 0)
                im->email_col = (int)i;
            im->cols[i] = c;
            im->vals[i] = NULL;
        }
        im->ncols = im->nvals;
        im->nvals = 0;
        if (im->email_col < 0) {
            fprintf(stderr, "leadloop: contact import: %s:%ld: the header has no 'email' column\n", im->file,
                    im->row_line);
            im->header_bad = 1;
        }
        return;
    }
    if (im->header_bad || im->rc != 0)
        return;
    if (im->too_many || im->nvals != im->ncols) {
        char n[32];
        snprintf(n, sizeof(n), "%zu", im->nvals);
        bad_row(im, "%s fields where the header has a different number", n);
        return;
    }
    const char *raw = im->vals[im->email_col];
    if (ll_email_normalize(raw, strlen(raw), email) != 0) {
        bad_row(im, "'%s' is not an email address", raw);
        return;
    }
    json_t *fields = json_object();
    for (size_t i = 0; i < im->ncols; i++) {
        if ((int)i == im->email_col || im->vals[i][0] == '\0')
            continue;
        if (strlen(im->vals[i]) > IMPORT_FIELD_MAX || !ll_utf8_valid(im->vals[i], strlen(im->vals[i]))) {
            bad_row(im, "field '%s' is too long or not UTF-8", im->cols[i]);
            json_decref(fields);
            return;
        }
        json_object_set_new(fields, im->cols[i], json_string(im->vals[i]));
    }
    char *fj = json_object_size(fields) ? json_dumps(fields, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(fields);
    if (fj != NULL && strlen(fj) > ll_event_field_limit(LL_F_FIELDS)) {
        bad_row(im, "%s: the fields are too large", email);
        free(fj);
        return;
    }
    im->on_contact(im, email, fj);
    free(fj);
}

/* A good row into the store (and the program); a store error stops the import (im->rc). */
static void import_store(import_t *im, const char *email, const char *fj)
{
    uint64_t id;
    int created, rc;
    ll_buf_t rec;
    ll_buf_init(&rec, LL_EVENT_MAX);
    if ((rc = ll_contact_upsert(im->t, email, fj, &id, &created)) == 0) {
        ll_event_t ev;
        memset(&ev, 0, sizeof(ev));
        ev.type = LL_EV_IDENTIFY;
        ev.time_us = ll_now_us();
        ev.contact = id;
        if (fj != NULL)
            ev.f[LL_F_FIELDS] = ll_str(fj, strlen(fj));
        ev.f[LL_F_DATA] = LL_STR_LIT("{\"source\":\"import\"}");
        ll_ingest_t in;
        memset(&in, 0, sizeof(in));
        if ((rc = ll_event_encode(&ev, &rec)) == 0) {
            in.rec = (uint8_t *)rec.data;
            in.len = rec.len;
            rc = ll_ingest(im->t, &in);
        }
    }
    if (rc == 0) {
        created ? im->created++ : im->updated++;
        if (im->program != NULL) {
            int erc = ll_nurture_enroll(im->n, im->t, id, im->program, ll_now_us());
            if (erc == 0)
                im->enrolled++;
            else if (erc != LL_EEXIST && erc != LL_EINVAL)
                rc = erc;
        }
    }
    ll_buf_free(&rec);
    im->rc = rc;
}

static void on_row(int term, void *arg)
{
    import_t *im = arg;
    import_row(im);
    row_clear(im);
    im->row_ended = 1;
}

/* Up to cap - 1 bytes of fp's next line, its '\n' included, into buf; how many (NUL bytes too). */
static size_t read_line(FILE *fp, char *buf, size_t cap)
{
    size_t n = 0;
    int c;
    while (n + 1 < cap && (c = getc_unlocked(fp)) != EOF)
        if ((buf[n++] = (char)c) == '\n')
            break;
    buf[n] = '\0';
    return n;
}

/*
 * Reads the CSV in fp row by row into import_row (libcsv, strict quoting): each bad row is
 * reported with its line and skipped, the rest go to im->on_contact. Stops when im->rc is set.
 * A line longer than IMPORT_LINE_MAX is read in parts (one line number); a bad row is dropped
 * up to the end of the line where it went wrong, and parsing starts again on the next line.
 */
static void import_read(import_t *im, FILE *fp)
{
    struct csv_parser csv;
    csv_init(&csv, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL);
    char *line = ll_malloc(IMPORT_LINE_MAX);
    long lineno = 0;
    int new_row = 1, line_start = 1, skip = 0;
    size_t len;
    while (im->rc == 0 && (len = read_line(fp, line, IMPORT_LINE_MAX)) > 0) {
        int first = line_start;
        line_start = line[len - 1] == '\n';
        if (first) {
            lineno++;
            if (new_row)
                im->row_line = lineno;
        }
        if (skip) {
            skip = !line_start;
            continue;
        }
        char *p = line;
        /* Excel starts a UTF-8 CSV with a byte order mark: not part of the first column's name. */
        if (lineno == 1 && first && len >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0)
            p += 3, len -= 3;
        /* A NUL byte ends the row where it is: a C string would cut the field and join the
         * rest of the line to the next one. */
        const char *nul = memchr(p, '\0', len), *why = NULL;
        size_t n = nul != NULL ? (size_t)(nul - p) : len;
        im->row_ended = 0;
        if (csv_parse(&csv, p, n, on_field, on_row, im) != n)
            why = csv_strerror(csv_error(&csv));
        else if (nul != NULL)
            why = "a NUL byte (is this a text file?)";
        if (why != NULL) {
            fprintf(stderr, "leadloop: contact import: %s:%ld: %s; row skipped\n", im->file, im->row_line, why);
            im->bad++;
            /* Start again on the next line: the broken row is dropped whole. */
            csv_free(&csv);
            row_clear(im);
            csv_init(&csv, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL);
            new_row = 1;
            skip = !line_start;
            continue;
        }
        /* A quoted field may run over several lines: the next row starts after a row ended. */
        new_row = im->row_ended;
    }
    if (im->rc == 0 && csv_fini(&csv, on_field, on_row, im) != 0) {
        fprintf(stderr, "leadloop: contact import: %s:%ld: a quoted field is not closed at the end of the file; "
                        "row skipped\n", im->file, im->row_line);
        im->bad++;
    }
    csv_free(&csv);
    row_clear(im);
    free(line);
    for (size_t i = 0; i < im->ncols; i++)
        free(im->cols[i]);
    im->ncols = 0;
}

int ll__cli_contact_import(ll_cli_t *cli, int argc, char **argv)
{
    static const char cmd[] = "contact import";
    const char *enroll = NULL;
    const ll_cli_opt_t opts[] = {{"--enroll", 1, &enroll}, {NULL, 0, NULL}};
    char *pos[1];
    int npos, rc;
    ll_nurture_t n;
    ll_txn_t t = {0};
    import_t im;
    memset(&im, 0, sizeof(im));
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 1, &npos)) != 0)
        return rc;
    if (npos != 1)
        return ll__cli_usage(cmd, "usage: contact import FILE.csv [--enroll PROGRAM]");
    if (enroll != NULL && (im.program = find_program(cli, cmd, enroll)) == NULL)
        return LL_CLI_FAIL;
    FILE *fp = strcmp(pos[0], "-") == 0 ? stdin : fopen(pos[0], "rb");
    if (fp == NULL)
        return ll__cli_fail(cmd, "%s: cannot open: %s", pos[0], strerror(errno));
    if ((rc = ll__cli_store(cli, cmd, 1)) != 0)
        goto close;
    if ((rc = ll_nurture_open(cli->store, &n)) != 0 || (rc = ll_txn_begin(cli->store, 0, &t)) != 0) {
        rc = store_failed(cli, cmd, rc);
        goto close;
    }
    im.file = pos[0];
    im.cli = cli;
    im.t = &t;
    im.n = &n;
    im.on_contact = import_store;
    import_read(&im, fp);
    if (im.rc != 0) {
        rc = store_failed(cli, cmd, im.rc);
    } else if (!im.header_done || im.header_bad) {
        rc = ll__cli_fail(cmd, "%s: %s", pos[0], im.header_done ? "bad header; nothing imported" : "empty file");
    } else if ((rc = ll_txn_commit(&t)) != 0) {
        rc = store_failed(cli, cmd, rc);
    } else {
        printf("imported %zu contact(s): %zu created, %zu updated, %zu bad row(s) skipped", im.created + im.updated,
               im.created, im.updated, im.bad);
        if (im.program != NULL)
            printf(", %zu enrolled in %s", im.enrolled, im.program->id);
        printf("\n");
        rc = 0;
    }
    ll_txn_abort(&t);
close:
    if (fp != stdin)
        fclose(fp);
    return rc;
}

/* ---- enrollments EMAIL ---- */

typedef struct {
    uint64_t contact;
    size_t n;
} sends_ctx_t;

static int on_send(const ll_send_t *s, void *arg)
{
    sends_ctx_t *c = arg;
    if (s->contact != c->contact)
        return 0;
    char created[32], accepted[32] = "-";
    ll__cli_iso(s->created_us, created);
    if (s->accepted_us != 0)
        ll__cli_iso(s->accepted_us, accepted);
    if (c->n++ == 0)
        printf("sends\n  %-8s %-16s %-5s %-10s %-20s %-20s %s\n", "SEND", "PROGRAM", "STEP", "STATE", "CLAIMED",
               "SMTP ACCEPTED", "CODE");
    printf("  %-8llu ", (unsigned long long)s->id);
    ll__cli_put_text(stdout, s->program, strlen(s->program), 16);
    printf("%*s %-5u %-10s %-20s %-20s %u\n", strlen(s->program) < 16 ? (int)(16 - strlen(s->program)) : 0, "",
           s->step + 1u, ll_send_state_name(s->state), created, accepted, s->smtp_code);
    return ll__cli_out_failed();
}

int ll__cli_enrollments(ll_cli_t *cli, int argc, char **argv)
{
    static const char cmd[] = "enrollments";
    const ll_cli_opt_t opts[] = {{NULL, 0, NULL}};
    char *pos[1], email[256];
    ll_nurture_t n;
    ll_txn_t t = {0};
    uint64_t id;
    int npos, rc, any = 0;
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 1, &npos)) != 0)
        return rc;
    if (npos != 1)
        return ll__cli_usage(cmd, "usage: enrollments EMAIL");
    if ((rc = ll__cli_email(cmd, NULL, pos[0], email)) != 0 || (rc = ll__cli_contact_id(cli, cmd, NULL, email, &id)) != 0)
        return rc;
    if ((rc = ll_nurture_open(cli->store, &n)) != 0 || (rc = ll_txn_begin(cli->store, 1, &t)) != 0)
        return ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
    /* Every enrollment of the contact, configured program or not. */
    MDB_cursor *cur;
    MDB_val k, v;
    uint8_t ck[8];
    ll_be64_put(ck, id);
    if (mdb_cursor_open(t.txn, n.enrollments, &cur) == 0) {
        k.mv_size = 8, k.mv_data = ck;
        for (int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            char prog[LL_PROGRAM_ID_MAX];
            ll_enrollment_t e;
            if (k.mv_size < 9 || memcmp(k.mv_data, ck, 8) != 0 || k.mv_size - 8 >= sizeof(prog))
                break;
            memcpy(prog, (char *)k.mv_data + 8, k.mv_size - 8);
            prog[k.mv_size - 8] = '\0';
            if (ll_enrollment_get(&n, &t, id, prog, &e) != 0)
                continue;
            const ll_program_t *p = ll_mail_program(cli->conf.mail, prog);
            char enrolled[32], next[32] = "-", steps[32];
            ll__cli_iso(e.enrolled_us, enrolled);
            if (e.state == LL_ENR_ACTIVE)
                ll__cli_iso(e.next_us, next);
            if (p != NULL)
                snprintf(steps, sizeof(steps), "%u/%zu", e.step + 1u > p->num_steps ? (unsigned)p->num_steps : e.step + 1u,
                         p->num_steps);
            else
                snprintf(steps, sizeof(steps), "%u/?", e.step + 1u);
            if (!any++)
                printf("%-16s %-8s %-6s %-20s %-20s %s\n", "PROGRAM", "STATE", "STEP", "ENROLLED", "NEXT", "EXIT");
            ll__cli_put_text(stdout, prog, strlen(prog), 16);
            printf("%*s %-8s %-6s %-20s %-20s %s\n", strlen(prog) < 16 ? (int)(16 - strlen(prog)) : 0, "",
                   e.state == LL_ENR_ACTIVE ? "active" : e.state == LL_ENR_DONE ? "done" : "exited", steps, enrolled,
                   next, e.state == LL_ENR_EXITED ? ll_exit_reason_name(e.exit_reason) : "-");
        }
        mdb_cursor_close(cur);
    }
    if (!any)
        printf("%s is in no program\n", email);
    sends_ctx_t sc = {id, 0};
    rc = ll_send_scan(&n, &t, on_send, &sc);
    ll_txn_abort(&t);
    if (rc != 0)
        return ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
    return 0;
}
