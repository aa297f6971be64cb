/* leadloop, the operator CLI: global options, dispatch and the helpers its commands share. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"

static void usage(void)
{
    fprintf(stderr,
            "usage: leadloop [-d DIR] [-c FILE] COMMAND [ARGS]\n"
            "\n"
            "Operator commands for leadloop; they work whether or not leadloopd runs.\n"
            "  -d DIR   data directory (default: data_dir from the configuration, \"var\")\n"
            "  -c FILE  YAML configuration (default: the built-in defaults)\n"
            "\n"
            "Contacts\n"
            "  contact add EMAIL [NAME=VALUE ...]  create or update a contact, merging the fields\n"
            "                                      (NAME: letters, digits, '_', '.', '-')\n"
            "  contact show EMAIL [--json]         profile and timeline\n"
            "  contact list [--json]               all contacts (--json: one object a line)\n"
            "  contact import FILE.csv [--enroll PROGRAM]\n"
            "                                      contacts from a CSV with a header row that has an\n"
            "                                      'email' column; bad rows are reported and skipped\n"
            "\n"
            "Nurture programs (programs: in the configuration; leadloop-mailer sends them)\n"
            "  enroll EMAIL PROGRAM                start the program for a contact (created if missing)\n"
            "  unenroll EMAIL PROGRAM              stop it\n"
            "  enrollments EMAIL                   its programs (state, step, next send) and sends\n"
            "  unsubscribe-mail [FILE]             a List-Unsubscribe mailto message (stdin), for the\n"
            "                                      MTA's pipe; exits 65 (no valid token), 75 (retry)\n"
            "\n"
            "Signed links (each creates the contact when it does not exist yet)\n"
            "  link URL --to EMAIL [--send ID] [--link N] [--tag TAG]\n"
            "                                              click link: PUBLIC_URL/c/TOKEN\n"
            "  pixel --to EMAIL [--send ID]                open pixel: PUBLIC_URL/o/TOKEN.gif\n"
            "  unsubscribe-link --to EMAIL [--send ID]     PUBLIC_URL/u/TOKEN\n"
            "\n"
            "Events\n"
            "  events [--contact EMAIL] [--since TIME] [--type TYPE] [--limit N] [--json]\n"
            "      TIME: 2026-11-22, 2026-11-22T10:00:00Z, unix seconds, or 30s, 15m, 2h, 7d ago\n"
            "      --limit N stops after the first N matching events (oldest first)\n"
            "      --json prints one JSON object a line\n"
            "  stats [--json] [--send ID | --by-send]\n"
            "                      events by type and class, contacts, visitors, last seq; email opens\n"
            "                      and clicks by label and reason (machines set aside), in total or per send\n"
            "\n"
            "Scoring and hand-off (scoring:, routing:, sla:, alerts: in the configuration)\n"
            "  score EMAIL [--json]                the score, fit grade, stage and owner, and the ledger\n"
            "                                      line by line (event, rule, points, decay)\n"
            "  rescore                             rebuild every score and the ledger from the log\n"
            "  lead list [--stage S] [--owner O] [--json]   sales-ready leads and their SLA deadlines\n"
            "  lead accept EMAIL | lead reject EMAIL        the owner's answer (reject recycles)\n"
            "  lead stage EMAIL STAGE              sql, opportunity, customer, recycled\n"
            "  outbox                              alerts waiting for delivery\n"
            "  rep list | rep away NAME | rep back NAME     round-robin reps, their credit, away or not\n"
            "\n"
            "Keys (DIR/keys)\n"
            "  keys list           key ids and fingerprints; the newest signs\n"
            "  keys rotate         add a new signing key (then restart leadloopd)\n"
            "\n"
            "Exit status: 0 done, 1 failed, 2 usage error (unsubscribe-mail: sysexits).\n");
}

int ll__cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "leadloop: %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return LL_CLI_FAIL;
}

int ll__cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "leadloop: %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see leadloop help)\n");
    return LL_CLI_USAGE;
}

int ll__cli_parse(const char *cmd, int argc, char **argv, const ll_cli_opt_t *opts, char **pos, int maxpos,
                  int *npos)
{
    int only_pos = 0;
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (*npos >= maxpos)
                return ll__cli_usage(cmd, "unexpected argument '%s'", a);
            pos[(*npos)++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq != NULL ? (size_t)(eq - a) : strlen(a);
        const ll_cli_opt_t *o = opts;
        while (o->name != NULL && !(strlen(o->name) == nl && memcmp(o->name, a, nl) == 0))
            o++;
        if (o->name == NULL)
            return ll__cli_usage(cmd, "unknown option '%s'", a);
        if (o->has_arg) {
            if (eq != NULL)
                *o->value = eq + 1;
            else if (i + 1 < argc)
                *o->value = argv[++i];
            else
                return ll__cli_usage(cmd, "%s needs a value", o->name);
        } else {
            if (eq != NULL)
                return ll__cli_usage(cmd, "%s takes no value", o->name);
            *o->value = "1";
        }
    }
    return 0;
}

int ll__cli_uint(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '\0')
        return LL_EINVAL;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return LL_EINVAL;
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return LL_EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int ll__cli_store(ll_cli_t *cli, const char *cmd, int create)
{
    char err[512];
    struct stat st;
    if (cli->store != NULL)
        return 0;
    if (!create) {
        /* data.mdb is LMDB's (documented) file in an environment directory. */
        snprintf(err, sizeof(err), "%s/data.mdb", cli->data_dir);
        if (stat(err, &st) != 0)
            return ll__cli_fail(cmd, "%s: no store here (%s); check -d or data_dir", cli->data_dir, strerror(errno));
    }
    if (ll_store_open(cli->data_dir, cli->conf.map_size, 0, &cli->store, err, sizeof(err)) != 0)
        return ll__cli_fail(cmd, "%s", err);
    return 0;
}

int ll__cli_keys(ll_cli_t *cli, const char *cmd)
{
    char err[512];
    if (cli->keys != NULL)
        return 0;
    /* The key ring may be the first thing made in a fresh data directory. */
    if (mkdir(cli->data_dir, 0700) != 0 && errno != EEXIST)
        return ll__cli_fail(cmd, "%s: cannot create data directory: %s", cli->data_dir, strerror(errno));
    if (cli->key_path == NULL) {
        size_t n = strlen(cli->data_dir) + sizeof("/keys");
        cli->key_path = ll_malloc(n);
        snprintf(cli->key_path, n, "%s/keys", cli->data_dir);
    }
    if (ll_keyring_open(cli->key_path, &cli->keys, err, sizeof(err)) != 0)
        return ll__cli_fail(cmd, "%s", err);
    return 0;
}

int ll__cli_email(const char *cmd, const char *opt, const char *in, char out[256])
{
    if (ll_email_normalize(in, strlen(in), out) == 0)
        return 0;
    if (opt != NULL)
        return ll__cli_fail(cmd, "%s: '%s' is not an email address", opt, in);
    return ll__cli_fail(cmd, "'%s' is not an email address", in);
}

int ll__cli_contact_id(ll_cli_t *cli, const char *cmd, const char *opt, const char *email, uint64_t *id)
{
    ll_txn_t t;
    int rc;
    if ((rc = ll__cli_store(cli, cmd, 0)) != 0)
        return rc;
    if ((rc = ll_txn_begin(cli->store, 1, &t)) != 0)
        return ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
    rc = ll_contact_find(&t, email, id);
    ll_txn_abort(&t);
    if (rc == LL_ENOTFOUND)
        return ll__cli_fail(cmd, "%s%s'%s': no such contact", opt ? opt : "", opt ? ": " : "", email);
    if (rc != 0)
        return ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
    return 0;
}

void ll__cli_iso(uint64_t us, char out[32])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "@%llu", (unsigned long long)(us / 1000000));
}

void ll__cli_put_text(FILE *f, const char *s, size_t n, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (i >= max) {
            fputs("...", f);
            break;
        }
        unsigned c = p[i];
        size_t l = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (c < 0x20 || c == 0x7f || c == '\\' || l == 0 || l > n - i || (l > 1 && !ll_utf8_valid(s + i, l))) {
            fprintf(f, c == '\\' ? "\\\\" : "\\x%02x", c);
            i++;
            continue;
        }
        /* C1 controls (U+0080..U+009F: CSI is one of them) and bidi overrides can rewrite what
         * a terminal shows; they are escaped as code points. */
        unsigned cp = 0;
        if (l == 2)
            cp = (c & 0x1f) << 6 | (p[i + 1] & 0x3f);
        else if (l == 3)
            cp = (c & 0x0f) << 12 | (p[i + 1] & 0x3f) << 6 | (p[i + 2] & 0x3f);
        if ((cp >= 0x80 && cp <= 0x9f) || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069)) {
            fprintf(f, "\\u%04x", cp);
        } else {
            fwrite(s + i, 1, l, f);
        }
        i += l;
    }
}

void ll__cli_put_event_what(FILE *f, const ll_event_t *ev)
{
    int any = 0;
    if (ev->f[LL_F_URL].len != 0) {
        ll__cli_put_text(f, ev->f[LL_F_URL].base, ev->f[LL_F_URL].len, 160);
        any = 1;
    }
    if (ev->f[LL_F_FORM].len != 0) {
        fputs(any ? " form=" : "form=", f);
        ll__cli_put_text(f, ev->f[LL_F_FORM].base, ev->f[LL_F_FORM].len, 64);
        any = 1;
    }
    if (ev->send != 0) {
        fprintf(f, "%ssend=%llu", any ? " " : "", (unsigned long long)ev->send);
        if (ev->type == LL_EV_CLICK)
            fprintf(f, " link=%u", ev->link);
        any = 1;
    }
    if (ev->f[LL_F_PROGRAM].len != 0) {
        fputs(any ? " program=" : "program=", f);
        ll__cli_put_text(f, ev->f[LL_F_PROGRAM].base, ev->f[LL_F_PROGRAM].len, 64);
        if (ev->f[LL_F_STEP].len != 0) {
            fputs(" step=", f);
            ll__cli_put_text(f, ev->f[LL_F_STEP].base, ev->f[LL_F_STEP].len, 16);
        }
        any = 1;
    }
    if (!any && ev->f[LL_F_FIELDS].len != 0) {
        ll__cli_put_text(f, ev->f[LL_F_FIELDS].base, ev->f[LL_F_FIELDS].len, 160);
        any = 1;
    }
    if (!any && ev->f[LL_F_DATA].len != 0) {
        ll__cli_put_text(f, ev->f[LL_F_DATA].base, ev->f[LL_F_DATA].len, 160);
        any = 1;
    }
    if (ev->flags & LL_EVF_FORWARD) {
        fputs(any ? " (forwarded)" : "(forwarded)", f);
        any = 1;
    }
    if (!any)
        fputc('-', f);
}

void ll__cli_contact_flags(uint32_t flags, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s%s%s", flags & LL_CF_UNSUBSCRIBED ? ",unsubscribed" : "",
             flags & LL_CF_BOUNCED ? ",bounced" : "", flags & LL_CF_DO_NOT_CONTACT ? ",do-not-contact" : "",
             flags == 0 ? ",-" : "");
    memmove(out, out + 1, strlen(out)); /* drop the leading comma */
}

/* errno of the first failed write to stdout, kept because later calls may clobber it. */
static int out_errno;

int ll__cli_out_failed(void)
{
    if (!ferror(stdout))
        return 0;
    if (out_errno == 0)
        out_errno = errno != 0 ? errno : EIO;
    return 1;
}

static const struct {
    const char *name;
    int (*run)(ll_cli_t *cli, int argc, char **argv);
} commands[] = {
    {"contact", ll__cli_contact},
    {"link", ll__cli_link},
    {"pixel", ll__cli_pixel},
    {"unsubscribe-link", ll__cli_unsubscribe_link},
    {"unsubscribe-mail", ll__cli_unsubscribe_mail},
    {"events", ll__cli_events},
    {"keys", ll__cli_keys_cmd},
    {"stats", ll__cli_stats},
    {"score", ll__cli_score},
    {"rescore", ll__cli_rescore},
    {"lead", ll__cli_lead},
    {"outbox", ll__cli_outbox},
    {"rep", ll__cli_rep},
    {"enroll", ll__cli_enroll},
    {"unenroll", ll__cli_unenroll},
    {"enrollments", ll__cli_enrollments},
};

int main(int argc, char **argv)
{
    const char *conf_path = NULL, *dir = NULL;
    char err[512];
    ll_cli_t cli;
    int ch, rc;

    memset(&cli, 0, sizeof(cli));
    while ((ch = getopt(argc, argv, "+c:d:h")) != -1) {
        switch (ch) {
        case 'c': conf_path = optarg; break;
        case 'd': dir = optarg; break;
        default: usage(); return LL_CLI_USAGE;
        }
    }
    if (optind >= argc) {
        usage();
        return LL_CLI_USAGE;
    }
    const char *name = argv[optind];
    size_t i = 0;
    while (i < sizeof(commands) / sizeof(commands[0]) && strcmp(commands[i].name, name) != 0)
        i++;
    if (i == sizeof(commands) / sizeof(commands[0])) {
        if (strcmp(name, "help") != 0 && strcmp(name, "--help") != 0)
            fprintf(stderr, "leadloop: unknown command '%s'\n", name);
        usage();
        return LL_CLI_USAGE;
    }

    ll_config_defaults(&cli.conf);
    if (conf_path != NULL && ll_config_load(&cli.conf, conf_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "leadloop: %s\n", err);
        rc = LL_CLI_FAIL;
        goto out;
    }
    cli.data_dir = dir != NULL ? dir : cli.conf.data_dir != NULL ? cli.conf.data_dir : "var";

    /* A closed pipe (leadloop events | head) shows up as a write error, checked below. */
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, isatty(STDOUT_FILENO) ? _IOLBF : _IOFBF, 1 << 16);
    rc = commands[i].run(&cli, argc - optind - 1, argv + optind + 1);
    ll__cli_out_failed();
    errno = 0;
    if (fflush(stdout) != 0 && out_errno == 0)
        out_errno = errno != 0 ? errno : EIO;
    if (out_errno != 0 || ferror(stdout)) {
        /* A reader that went away (| head) is not worth a message; the status still says so. */
        if (out_errno != EPIPE)
            fprintf(stderr, "leadloop: %s: cannot write to standard output: %s\n", name,
                    strerror(out_errno != 0 ? out_errno : EIO));
        rc = LL_CLI_FAIL;
    }
out:
    ll_keyring_free(cli.keys);
    ll_store_close(cli.store);
    free(cli.key_path);
    ll_config_free(&cli.conf);
    return rc;
}
