/* leadloop events and leadloop stats. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "leadloop/judge.h"
#include "cli.h"

/* ---- --since TIME ---- */

/* Exactly n decimal digits at *p. */
static int take_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* YYYY-MM-DD[(T| )HH:MM[:SS[.frac]][Z|(+|-)HH[:]MM]]; without a zone the time is UTC. */
static int parse_iso(const char *s, uint64_t *out_us)
{
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, oh = 0, om = 0, sign = 0;
    uint64_t frac_us = 0;
    if (take_digits(&p, 4, &y) != 0 || *p++ != '-' || take_digits(&p, 2, &mo) != 0 || *p++ != '-' ||
        take_digits(&p, 2, &d) != 0)
        return LL_EINVAL;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return LL_EINVAL;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (take_digits(&p, 2, &h) != 0 || *p++ != ':' || take_digits(&p, 2, &mi) != 0)
            return LL_EINVAL;
        if (*p == ':') {
            p++;
            if (take_digits(&p, 2, &sec) != 0)
                return LL_EINVAL;
            if (*p == '.' || *p == ',') {
                p++;
                if (*p < '0' || *p > '9')
                    return LL_EINVAL;
                for (uint64_t scale = 100000; *p >= '0' && *p <= '9'; p++, scale /= 10)
                    frac_us += (uint64_t)(*p - '0') * scale;
            }
        }
        if (h > 23 || mi > 59 || sec > 60)
            return LL_EINVAL;
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            sign = *p++ == '-' ? -1 : 1;
            if (take_digits(&p, 2, &oh) != 0)
                return LL_EINVAL;
            if (*p == ':')
                p++;
            if (take_digits(&p, 2, &om) != 0 || oh > 23 || om > 59)
                return LL_EINVAL;
        }
    }
    if (*p != '\0')
        return LL_EINVAL;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    long long t = (long long)timegm(&tm) - (long long)sign * (oh * 3600 + om * 60);
    if (t < 0)
        return LL_EINVAL;
    *out_us = (uint64_t)t * 1000000u + frac_us;
    return 0;
}

int ll__cli_parse_time(const char *s, uint64_t now_us, uint64_t *out_us)
{
    size_t n = strlen(s);
    uint64_t v;
    if (n == 0)
        return LL_EINVAL;
    if (ll__cli_uint(s, 253402300799ull, &v) == 0) { /* unix seconds, up to 9999-12-31 */
        *out_us = v * 1000000u;
        return 0;
    }
    /* "30s", "15m", "2h", "7d": that long before now. */
    char num[24];
    if (n >= 2 && n - 1 < sizeof(num) && strchr("smhdw", s[n - 1]) != NULL) {
        memcpy(num, s, n - 1);
        num[n - 1] = '\0';
        if (ll__cli_uint(num, 1000000000000ull, &v) != 0)
            return LL_EINVAL;
        static const char units[] = "smhdw";
        static const uint64_t secs[] = {1, 60, 3600, 86400, 7 * 86400};
        uint64_t ago = v * secs[strchr(units, s[n - 1]) - units] * 1000000u;
        *out_us = ago < now_us ? now_us - ago : 0;
        return 0;
    }
    return parse_iso(s, out_us);
}

/* ---- events ---- */

/* id -> email, direct-mapped: bounded memory however many contacts a scan meets. */
#define EMAIL_CACHE 1024
typedef struct {
    uint64_t id; /* 0: empty */
    int found;
    char email[256];
} email_slot_t;

typedef struct {
    ll_txn_t *t;
    int json;
    int type;
    uint64_t since_us, limit, n;
    const char *email; /* --contact: every event of the timeline gets it */
    email_slot_t *cache;
    ll_buf_t buf;
    int rc;
} events_ctx_t;

static const char *email_of(events_ctx_t *x, uint64_t id)
{
    if (x->email != NULL)
        return x->email;
    if (id == 0)
        return NULL;
    email_slot_t *s = &x->cache[id % EMAIL_CACHE];
    if (s->id != id) {
        ll_contact_t c;
        s->id = id;
        s->found = ll_contact_get(x->t, id, &c) == 0;
        snprintf(s->email, sizeof(s->email), "%s", s->found ? c.email : "");
        if (s->found)
            ll_contact_clear(&c);
    }
    return s->found ? s->email : NULL;
}

static int on_event(const ll_event_t *ev, void *p)
{
    events_ctx_t *x = p;
    if (ev->time_us < x->since_us || (x->type != 0 && ev->type != x->type))
        return 0;
    const char *email = email_of(x, ev->contact);
    if (x->json) {
        ll_buf_reset(&x->buf);
        if ((x->rc = ll_event_to_json(ev, email, &x->buf)) != 0)
            return 1;
        ll_buf_append(&x->buf, "\n", 1);
        fwrite(x->buf.data, 1, x->buf.len, stdout);
    } else {
        char when[32];
        ll__cli_iso(ev->time_us, when);
        printf("%-8llu %s  %-11s %-8s ", (unsigned long long)ev->seq, when, ll_event_type_name(ev->type),
               ll_class_name(ev->cls));
        if (email != NULL) {
            ll__cli_put_text(stdout, email, strlen(email), 64);
            size_t el = strlen(email);
            printf("%*s ", el < 28 ? (int)(28 - el) : 0, "");
        } else if (!ll_visitor_is_zero(&ev->visitor)) {
            char vid[33];
            ll_visitor_to_hex(&ev->visitor, vid);
            printf("visitor %.12s         ", vid);
        } else {
            printf("%-28s ", "-");
        }
        ll__cli_put_event_what(stdout, ev);
        fputc('\n', stdout);
    }
    x->n++;
    return (x->limit != 0 && x->n >= x->limit) || ll__cli_out_failed();
}

int ll__cli_events(ll_cli_t *cli, int argc, char **argv)
{
    static const char cmd[] = "events";
    const char *contact = NULL, *since = NULL, *type = NULL, *limit = NULL, *json = NULL;
    const ll_cli_opt_t opts[] = {{"--contact", 1, &contact}, {"--since", 1, &since}, {"--type", 1, &type},
                                 {"--limit", 1, &limit},     {"--json", 0, &json},   {NULL, 0, NULL}};
    char *pos[1], email[256];
    ll_txn_t t = {0};
    events_ctx_t x;
    uint64_t id = 0;
    int npos, rc;

    memset(&x, 0, sizeof(x));
    ll_buf_init(&x.buf, 1 << 20);
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 0, &npos)) != 0)
        goto out;
    if (type != NULL && (x.type = ll_event_type_parse(type, strlen(type))) == 0) {
        fprintf(stderr, "leadloop: events: --type: unknown event type '%s' (one of", type);
        for (int i = 1; i < LL_EV__MAX; i++)
            fprintf(stderr, " %s", ll_event_type_name(i));
        fprintf(stderr, ")\n");
        rc = LL_CLI_FAIL;
        goto out;
    }
    if (limit != NULL && (ll__cli_uint(limit, UINT64_MAX, &x.limit) != 0 || x.limit == 0)) {
        rc = ll__cli_fail(cmd, "--limit: '%s' is not a positive number", limit);
        goto out;
    }
    if (since != NULL && ll__cli_parse_time(since, ll_now_us(), &x.since_us) != 0) {
        rc = ll__cli_fail(cmd, "--since: cannot parse '%s'", since);
        goto out;
    }
    if (contact != NULL) {
        if ((rc = ll__cli_email(cmd, "--contact", contact, email)) != 0 ||
            (rc = ll__cli_contact_id(cli, cmd, "--contact", email, &id)) != 0)
            goto out;
        x.email = email;
    }
    if ((rc = ll__cli_store(cli, cmd, 0)) != 0)
        goto out;
    if ((rc = ll_txn_begin(cli->store, 1, &t)) != 0) {
        rc = ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
        goto out;
    }
    x.t = &t;
    x.json = json != NULL;
    x.cache = ll_calloc(EMAIL_CACHE, sizeof(*x.cache));
    if (!x.json)
        printf("%-8s %-20s  %-11s %-8s %-28s %s\n", "SEQ", "TIME", "TYPE", "CLASS", "CONTACT", "WHAT");
    rc = contact != NULL ? ll_events_of_contact(&t, id, on_event, &x) : ll_events_scan(&t, 1, on_event, &x);
    if (rc != 0 || (rc = x.rc) != 0)
        rc = ll__cli_fail(cmd, "%s: cannot read the events: %s", cli->data_dir, ll_strerror(rc));
out:
    ll_txn_abort(&t);
    free(x.cache);
    ll_buf_free(&x.buf);
    return rc;
}

/* ---- stats ---- */

typedef struct {
    uint64_t total, forwards;
    uint64_t types[LL_EV__MAX + 1];     /* [LL_EV__MAX]: unknown types */
    uint64_t classes[LL_CLASS__MAX + 1];
} stats_t;

static int on_stat(const ll_event_t *ev, void *p)
{
    stats_t *s = p;
    s->total++;
    s->types[ev->type > 0 && ev->type < LL_EV__MAX ? ev->type : LL_EV__MAX]++;
    s->classes[ev->cls < LL_CLASS__MAX ? ev->cls : LL_CLASS__MAX]++;
    if (ev->flags & LL_EVF_FORWARD)
        s->forwards++;
    return 0;
}

/* Email opens and clicks by label and reason (judge.h), as JSON or text. */
static void put_judge_counts(const ll_judge_counts_t *c, int json)
{
    uint64_t total = 0, machine = c->cls[LL_CLASS_PREFETCH] + c->cls[LL_CLASS_SCANNER] + c->cls[LL_CLASS_BOT];
    for (int i = 0; i < LL_CLASS__MAX; i++)
        total += c->cls[i];
    if (json) {
        printf("{\"total\":%llu,\"set_aside\":%llu,\"classes\":{", (unsigned long long)total,
               (unsigned long long)machine);
        for (int i = 0; i < LL_CLASS__MAX; i++)
            printf("%s\"%s\":%llu", i > 0 ? "," : "", ll_class_name(i), (unsigned long long)c->cls[i]);
        printf("},\"reasons\":{");
        for (int b = 0, n = 0; b < 32; b++)
            if (ll_reason_name(b) != NULL && c->reason[b] != 0)
                printf("%s\"%s\":%llu", n++ ? "," : "", ll_reason_name(b), (unsigned long long)c->reason[b]);
        printf("}}");
        return;
    }
    printf("  %llu, of which %llu set aside as machines (prefetch, scanner, bot)\n", (unsigned long long)total,
           (unsigned long long)machine);
    for (int i = 0; i < LL_CLASS__MAX; i++)
        if (c->cls[i] != 0)
            printf("  %-14s %llu\n", ll_class_name(i), (unsigned long long)c->cls[i]);
    printf("  by reason\n");
    for (int b = 0; b < 32; b++)
        if (ll_reason_name(b) != NULL && c->reason[b] != 0)
            printf("    %-16s %llu\n", ll_reason_name(b), (unsigned long long)c->reason[b]);
}

static int on_send_counts(uint64_t send, const ll_judge_counts_t *c, void *arg)
{
    int *json = arg;
    if (*json) {
        printf("{\"send\":%llu,\"email\":", (unsigned long long)send);
        put_judge_counts(c, 1);
        printf("}\n");
    } else {
        printf("send %llu\n", (unsigned long long)send);
        put_judge_counts(c, 0);
    }
    return ll__cli_out_failed();
}

int ll__cli_stats(ll_cli_t *cli, int argc, char **argv)
{
    static const char cmd[] = "stats";
    const char *json = NULL, *send = NULL, *by_send = NULL;
    const ll_cli_opt_t opts[] = {{"--json", 0, &json}, {"--send", 1, &send}, {"--by-send", 0, &by_send}, {NULL, 0, NULL}};
    char *pos[1];
    ll_txn_t t = {0};
    stats_t s;
    MDB_stat contacts, visitors;
    MDB_dbi counts_dbi;
    ll_judge_counts_t jc;
    uint64_t last = 0, send_id = 0;
    int npos, rc;

    memset(&s, 0, sizeof(s));
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 0, &npos)) != 0 || (rc = ll__cli_store(cli, cmd, 0)) != 0)
        goto out;
    if (send != NULL && (ll__cli_uint(send, UINT64_MAX, &send_id) != 0 || send_id == 0)) {
        rc = ll__cli_fail(cmd, "--send: '%s' is not a send id", send);
        goto out;
    }
    if ((rc = ll_judge_counts_db(cli->store, &counts_dbi)) != 0) {
        rc = ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
        goto out;
    }
    if (send_id != 0 || by_send != NULL) {
        /* Opens and clicks of one send (one message), or of each. */
        int js = json != NULL;
        if ((rc = ll_txn_begin(cli->store, 1, &t)) == 0)
            rc = send_id != 0 ? ll_judge_counts(&t, counts_dbi, send_id, &jc)
                              : ll_judge_counts_each(&t, counts_dbi, on_send_counts, &js);
        if (rc != 0) {
            rc = ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
        } else if (send_id != 0) {
            if (!js)
                printf("send %llu: email opens and clicks\n", (unsigned long long)send_id);
            put_judge_counts(&jc, js);
            if (js)
                printf("\n");
        }
        goto out;
    }
    if ((rc = ll_txn_begin(cli->store, 1, &t)) != 0 ||
        (rc = ll_judge_counts(&t, counts_dbi, 0, &jc)) != 0 ||
        (rc = ll_store_err(mdb_stat(t.txn, ll_store_dbi(cli->store, LL_DB_CONTACTS), &contacts))) != 0 ||
        (rc = ll_store_err(mdb_stat(t.txn, ll_store_dbi(cli->store, LL_DB_VISITORS), &visitors))) != 0 ||
        (rc = ll_events_scan(&t, 1, on_stat, &s)) != 0) {
        rc = ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
        goto out;
    }
    last = ll_event_last_seq(&t);
    if (json != NULL) {
        printf("{\"events\":%llu,\"last_seq\":%llu,\"forwards\":%llu,\"types\":{", (unsigned long long)s.total,
               (unsigned long long)last, (unsigned long long)s.forwards);
        for (int i = 1; i <= LL_EV__MAX; i++)
            printf("%s\"%s\":%llu", i > 1 ? "," : "", i < LL_EV__MAX ? ll_event_type_name(i) : "other",
                   (unsigned long long)s.types[i]);
        printf("},\"classes\":{");
        for (int i = 0; i <= LL_CLASS__MAX; i++)
            printf("%s\"%s\":%llu", i > 0 ? "," : "", i < LL_CLASS__MAX ? ll_class_name(i) : "other",
                   (unsigned long long)s.classes[i]);
        printf("},\"email\":");
        put_judge_counts(&jc, 1);
        printf(",\"contacts\":%llu,\"visitors\":%llu}\n", (unsigned long long)contacts.ms_entries,
               (unsigned long long)visitors.ms_entries);
        goto out;
    }
    printf("events     %llu (last seq %llu, %llu forwarded)\n", (unsigned long long)s.total,
           (unsigned long long)last, (unsigned long long)s.forwards);
    printf("by type\n");
    for (int i = 1; i <= LL_EV__MAX; i++)
        if (s.types[i] != 0)
            printf("  %-12s %llu\n", i < LL_EV__MAX ? ll_event_type_name(i) : "other", (unsigned long long)s.types[i]);
    printf("by class\n");
    for (int i = 0; i <= LL_CLASS__MAX; i++)
        if (s.classes[i] != 0)
            printf("  %-12s %llu\n", i < LL_CLASS__MAX ? ll_class_name(i) : "other",
                   (unsigned long long)s.classes[i]);
    printf("email opens and clicks (by label; --send ID or --by-send for each message)\n");
    put_judge_counts(&jc, 0);
    printf("contacts   %llu\nvisitors   %llu\n", (unsigned long long)contacts.ms_entries,
           (unsigned long long)visitors.ms_entries);
out:
    ll_txn_abort(&t);
    return rc;
}
