/*
 * leadloop-mailer: sends the nurture programs' due messages (program.h, mailer.h).
 *
 *   leadloop-mailer [-c FILE] [-d DATA_DIR] [--once] [-v]
 *
 * A pass: enrol by rules, claim what is due into send intents (one transaction), send them
 * over SMTP sessions on worker threads, record the outcomes (one transaction). --once runs one
 * pass (repeating while a full batch went out) and exits; otherwise a pass runs every
 * mailer.poll seconds until SIGTERM or SIGINT.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <jansson.h>
#include "leadloop/geo.h"
#include "leadloop/ingest.h"
#include "leadloop/score.h"
#include "mailer.h"

int ll_log_level = 1;
static volatile sig_atomic_t stopping;

static void vlog(const char *level, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    fprintf(stderr, "leadloop-mailer: %s%s\n", level, msg);
}

#define LOGFN(name, lvl, prefix)                                                                                       \
    void name(const char *fmt, ...)                                                                                    \
    {                                                                                                                  \
        if (ll_log_level < (lvl))                                                                                      \
            return;                                                                                                    \
        va_list ap;                                                                                                    \
        va_start(ap, fmt);                                                                                             \
        vlog(prefix, fmt, ap);                                                                                         \
        va_end(ap);                                                                                                    \
    }
LOGFN(log_warnx, 0, "warning: ")
LOGFN(log_info, 1, "")
LOGFN(log_debug, 2, "debug: ")

static void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatalx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("", fmt, ap);
    va_end(ap);
    exit(1);
}

typedef struct {
    ll_config_t conf;
    ll_mail_conf_t *m;
    ll_store_t *store;
    ll_keyring_t *keys;
    ll_nurture_t n;
    ll_scorer_t *scorer; /* score.h: sales-ready exits, score conditions; events are scored too */
    MDB_dbi alert_sends; /* outbox_mail row id (be64) -> send id (be64): an alert email's claim */
    ll_dkim_t *dkim;     /* NULL: messages are not signed */
    ll_tpl_t *tpl[LL_MAX_PROGRAMS][LL_MAX_STEPS];
    ll_smtp_t smtp;
    ll_marks_t *marks;   /* the end-of-DATA marks of the pass on the wire (marks.c) */
    int pass_open;       /* a pass may be open in LMDB (at start, or its outcomes not recorded) */
} mailer_t;

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = ll_malloc(n);
    if (name[0] == '/')
        snprintf(p, n, "%s", name);
    else
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Every template of every program, checked before anything is sent. */
static void load_templates(mailer_t *M)
{
    char err[512];
    int bad = 0;
    for (size_t i = 0; i < M->m->num_programs; i++) {
        const ll_program_t *p = &M->m->programs[i];
        for (size_t s = 0; s < p->num_steps; s++) {
            char *path = path_join(M->m->templates_dir, p->steps[s].template_path);
            if (ll__tpl_load(path, &M->conf, &M->tpl[i][s], err, sizeof(err)) != 0) {
                log_warnx("program %s step %zu: %s", p->id, s + 1, err);
                bad = 1;
            }
            free(path);
        }
    }
    for (size_t r = 0; r < M->m->num_rules; r++)
        if (ll_mail_program(M->m, M->m->rules[r].program) == NULL) {
            log_warnx("enroll_rules: rule %zu names program '%s', which is not configured", r + 1,
                      M->m->rules[r].program);
            bad = 1;
        }
    if (bad)
        fatalx("%s: template or program errors; nothing sent", M->conf.path ? M->conf.path : "configuration");
}

static size_t program_index(mailer_t *M, const ll_program_t *p)
{
    return (size_t)(p - M->m->programs);
}

/* ---- events ---- */

static ll_scorer_t *the_scorer;

static int record_event(ll_txn_t *t, int type, uint64_t contact, uint64_t send, const char *program, int step,
                        uint64_t time_us, const char *data)
{
    ll_event_t ev;
    char stepbuf[16];
    memset(&ev, 0, sizeof(ev));
    ev.type = (uint8_t)type;
    ev.cls = LL_CLASS_UNKNOWN;
    ev.time_us = time_us;
    ev.contact = contact;
    ev.send = send;
    if (program != NULL) {
        ev.f[LL_F_PROGRAM] = ll_str(program, strlen(program));
        snprintf(stepbuf, sizeof(stepbuf), "%d", step + 1);
        ev.f[LL_F_STEP] = ll_str(stepbuf, strlen(stepbuf));
    }
    if (data != NULL)
        ev.f[LL_F_DATA] = ll_str(data, strlen(data));
    return ll_ingest_event(t, &ev, the_scorer);
}

/* ---- conditions, exits, windows ---- */

typedef struct {
    ll_nurture_t *n;
    ll_txn_t *t;
    const char *program;
    int step;          /* NOT_CLICKED: 0-based step */
    const char *form;  /* goal: form id */
    uint64_t since_us;
    int found;
} scan_t;

static int on_click_scan(const ll_event_t *ev, void *p)
{
    scan_t *s = p;
    ll_send_t row;
    if (ev->type == LL_EV_CLICK && ev->send != 0 && !(ev->flags & LL_EVF_FORWARD) &&
        ll_send_get(s->n, s->t, ev->send, &row) == 0 && strcmp(row.program, s->program) == 0 && row.step == s->step)
        s->found = 1;
    return s->found;
}

static int on_form_scan(const ll_event_t *ev, void *p)
{
    scan_t *s = p;
    if (ev->type == LL_EV_FORM && ev->time_us >= s->since_us && ev->f[LL_F_FORM].len == strlen(s->form) &&
        memcmp(ev->f[LL_F_FORM].base, s->form, ev->f[LL_F_FORM].len) == 0)
        s->found = 1;
    return s->found;
}

static const char *field_str(json_t *fields, const char *name, char *num, size_t numlen)
{
    json_t *j = json_object_get(fields, name);
    if (json_is_string(j))
        return json_string_value(j);
    if (json_is_number(j)) {
        snprintf(num, numlen, "%g", json_number_value(j));
        return num;
    }
    return NULL;
}

/* 1 when step s of p should go to this contact. */
static int condition_holds(mailer_t *M, ll_txn_t *t, const ll_program_t *p, const ll_step_t *s, uint64_t contact,
                           json_t *fields)
{
    char num[64];
    const char *v;
    switch (s->cond) {
    case LL_COND_NOT_CLICKED: {
        scan_t sc = {&M->n, t, p->id, s->cond_step - 1, NULL, 0, 0};
        ll_events_of_contact(t, contact, on_click_scan, &sc);
        return !sc.found;
    }
    case LL_COND_SCORE_BELOW: {
        /* The scorer's engagement, decayed to now; without scoring state, a numeric `score` field. */
        ll_score_state_t st;
        if (M->scorer != NULL && ll_score_get(M->scorer, t, contact, &st) == 0)
            return ll_score_decayed(ll_scorer_conf(M->scorer), &st, ll_now_us()) < s->cond_score;
        json_t *j = json_object_get(fields, "score");
        double score = json_is_number(j) ? json_number_value(j) : json_is_string(j) ? atof(json_string_value(j)) : 0;
        return score < s->cond_score;
    }
    case LL_COND_FIELD_EQ:
    case LL_COND_FIELD_NE:
        v = field_str(fields, s->cond_field, num, sizeof(num));
        return (v != NULL && strcmp(v, s->cond_value) == 0) == (s->cond == LL_COND_FIELD_EQ);
    default:
        return 1;
    }
}

/* The first moment at or after at_us inside p's window, in the contact's time zone. */
/* Sales-ready: a lead at MQL or later (and not recycled), or a profile field stage: sales-ready. */
static int sales_ready(mailer_t *M, ll_txn_t *t, uint64_t contact, json_t *fields)
{
    ll_lead_t lead;
    if (M->scorer != NULL && ll_lead_get(M->scorer, t, contact, &lead) == 0 && lead.stage >= LL_STAGE_MQL &&
        lead.stage != LL_STAGE_RECYCLED)
        return 1;
    const char *stage = json_string_value(json_object_get(fields, "stage"));
    return stage != NULL && strcmp(stage, "sales-ready") == 0;
}

/* A usable IANA zone name: a file under /usr/share/zoneinfo. */
static int tz_ok(const char *tz)
{
    char path[128];
    if (tz == NULL || *tz == '\0' || *tz == '/' || strlen(tz) > 64 || strstr(tz, "..") != NULL)
        return 0;
    snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", tz);
    return access(path, R_OK) == 0;
}

typedef struct {
    char tz[64], country[3];
    int n;
} geo_scan_t;

/* The newest geolocated event: its time zone (with a City database), else its country. */
static int on_geo_event(const ll_event_t *ev, void *arg)
{
    geo_scan_t *g = arg;
    if (ev->f[LL_F_TZ].len > 0 && ev->f[LL_F_TZ].len < sizeof(g->tz)) {
        memcpy(g->tz, ev->f[LL_F_TZ].base, ev->f[LL_F_TZ].len);
        g->tz[ev->f[LL_F_TZ].len] = '\0';
        return 1;
    }
    if (g->country[0] == '\0' && ev->f[LL_F_COUNTRY].len == 2) {
        memcpy(g->country, ev->f[LL_F_COUNTRY].base, 2);
        g->country[2] = '\0';
    }
    return ++g->n >= 200; /* a bounded look back */
}

/* The contact's time zone for p's window: the profile field window.tz_field; else the zone of
 * the newest geolocated event; else the main zone of the country (the profile's `country`
 * field, else the newest event's); else the program's window.tz. */
static void contact_tz(ll_txn_t *t, const ll_program_t *p, uint64_t contact, json_t *fields, char *out, size_t outlen)
{
    char num[64];
    const char *v = p->window_tz_field[0] ? field_str(fields, p->window_tz_field, num, sizeof(num)) : NULL;
    geo_scan_t g;
    memset(&g, 0, sizeof(g));
    if (tz_ok(v)) {
        snprintf(out, outlen, "%s", v);
        return;
    }
    ll_events_of_contact_rev(t, contact, on_geo_event, &g);
    if (tz_ok(g.tz)) {
        snprintf(out, outlen, "%s", g.tz);
        return;
    }
    v = field_str(fields, "country", num, sizeof(num));
    if ((v != NULL && ll_geo_country_tz(v, out, outlen) == 0 && tz_ok(out)) ||
        (g.country[0] != '\0' && ll_geo_country_tz(g.country, out, outlen) == 0 && tz_ok(out)))
        return;
    snprintf(out, outlen, "%s", p->window_tz);
}

static uint64_t window_next(ll_txn_t *txn, const ll_program_t *p, uint64_t contact, json_t *fields, uint64_t at_us)
{
    if (p->window_hours == 0 && p->window_days == 0)
        return at_us;
    char tz[64];
    contact_tz(txn, p, contact, fields, tz, sizeof(tz));
    log_debug("contact %llu: send window in %s", (unsigned long long)contact, tz);
    char *old = getenv("TZ") ? ll_strdup(getenv("TZ")) : NULL;
    setenv("TZ", tz, 1);
    tzset();
    time_t t = (time_t)(at_us / 1000000);
    uint64_t out = at_us;
    for (int i = 0; i < 24 * 8; i++) {
        struct tm tm;
        localtime_r(&t, &tm);
        int hour_ok = p->window_hours == 0 || (p->window_hours & (1u << tm.tm_hour));
        int day_ok = p->window_days == 0 || (p->window_days & (1u << tm.tm_wday));
        if (hour_ok && day_ok) {
            out = i == 0 ? at_us : (uint64_t)t * 1000000u;
            break;
        }
        t = t - tm.tm_min * 60 - tm.tm_sec + 3600; /* the next local hour */
    }
    if (old != NULL) {
        setenv("TZ", old, 1);
        free(old);
    } else {
        unsetenv("TZ");
    }
    tzset();
    return out;
}

/* ---- a pass ---- */

typedef struct {
    mailer_t *M;
    ll_txn_t *t;
    uint64_t now;
    size_t limit;
    ll_outmsg_t *out;
    size_t nout;
    int rc;
    /* due rows are collected first: the callbacks change the due database */
    struct due_item {
        uint64_t at, contact;
        char program[LL_PROGRAM_ID_MAX];
    } *items;
    size_t nitems, cap;
    /* messages claimed, rendered after the claims on several threads (render_all); job i is
     * out[i] (the alerts, claimed after the rendering, follow them) */
    struct render_job {
        ll_contact_t c;
        json_t *fields; /* the job's reference */
        ll_send_t row;
        ll_enrollment_t e;
        const ll_program_t *p;
        int rc;
    } *jobs;
    size_t njobs;
    _Atomic size_t next_job;
} pass_t;

static int on_due(uint64_t at, uint64_t contact, const char *program, void *arg)
{
    pass_t *ps = arg;
    if (ps->nitems == ps->cap)
        return 1;
    struct due_item *it = &ps->items[ps->nitems++];
    it->at = at, it->contact = contact;
    snprintf(it->program, sizeof(it->program), "%s", program);
    return 0;
}

static int advance(mailer_t *M, ll_txn_t *t, const ll_program_t *p, uint64_t contact, ll_enrollment_t *e,
                   uint64_t sent_us)
{
    e->step++;
    e->last_us = sent_us;
    e->send = 0;
    e->attempts = 0;
    if (e->step >= p->num_steps) {
        int rc = ll_nurture_due_drop(&M->n, t, e->next_us, contact, p->id);
        e->state = LL_ENR_DONE;
        return rc != 0 ? rc : ll_enrollment_put(&M->n, t, contact, p->id, e);
    }
    return ll_nurture_reschedule(&M->n, t, contact, p->id, e, ll_program_step_due(p, e->step, e->enrolled_us, e->last_us));
}

static void iso(uint64_t us, char out[32])
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A send that went out: the row, the sent event and the next step, in t. */
static int record_sent(mailer_t *M, ll_txn_t *t, const ll_program_t *p, ll_send_t *row, ll_enrollment_t *e, int code,
                       uint64_t accepted_us)
{
    char data[128], when[32] = "unknown";
    row->state = accepted_us ? LL_SEND_ACCEPTED : LL_SEND_COMMITTED;
    row->accepted_us = accepted_us;
    row->smtp_code = (uint32_t)code;
    int rc = ll_send_put(&M->n, t, row);
    if (accepted_us)
        iso(accepted_us, when);
    snprintf(data, sizeof(data), "{\"accepted\":\"%s\",\"smtp\":%d}", when, code);
    if (rc == 0)
        rc = record_event(t, LL_EV_SENT, row->contact, row->id, row->program, row->step,
                          accepted_us ? accepted_us : ll_now_us(), data);
    if (rc == 0 && p != NULL && e != NULL)
        rc = advance(M, t, p, row->contact, e, accepted_us ? accepted_us : ll_now_us());
    return rc;
}

static int render(mailer_t *M, const ll_program_t *p, size_t step, const ll_contact_t *c, json_t *fields,
                  uint64_t send, ll_outmsg_t *o)
{
    ll_render_t r;
    ll_token_t tok;
    char b64[LL_TOKEN_B64_MAX];
    char *subject = NULL, *html = NULL, *text = NULL;
    memset(&r, 0, sizeof(r));
    r.keys = M->keys;
    r.public_url = M->conf.public_url;
    r.send = send;
    r.contact = c->id;
    r.email = c->email;
    r.fields = fields;
    memset(&tok, 0, sizeof(tok));
    tok.kind = LL_TOK_UNSUB, tok.send = send, tok.contact = c->id;
    if (ll_token_sign(M->keys, &tok, b64, sizeof(b64)) != 0)
        return LL_EINVAL;
    snprintf(r.unsub_url, sizeof(r.unsub_url), "%s/u/%s", M->conf.public_url, b64);
    char unsub_tok[LL_TOKEN_B64_MAX];
    snprintf(unsub_tok, sizeof(unsub_tok), "%s", b64);
    tok.kind = LL_TOK_OPEN;
    if (ll_token_sign(M->keys, &tok, b64, sizeof(b64)) != 0)
        return LL_EINVAL;
    snprintf(r.pixel_url, sizeof(r.pixel_url), "%s/o/%s.gif", M->conf.public_url, b64);
    int rc = ll__tpl_render(M->tpl[program_index(M, p)][step], &r, &subject, &html, &text);
    if (rc == 0) {
        ll_mime_in_t in = {M->m->from, M->m->from_name, c->email, subject, html, text, r.unsub_url,
                           M->m->unsubscribe_mailto ? M->m->unsubscribe_mailto : M->m->from, unsub_tok, send,
                           ll_now_us()};
        ll_buf_init(&o->body, 4 * LL_TPL_MAX);
        rc = ll__mime_build(&in, &o->body);
        if (rc == 0 && M->dkim != NULL)
            rc = ll__dkim_sign(M->dkim, send, &o->body);
    }
    free(subject);
    free(html);
    free(text);
    return rc;
}

/* Handles one due row inside the claiming transaction; may add a message to ps->out. */
static int claim_one(pass_t *ps, struct due_item *it)
{
    mailer_t *M = ps->M;
    ll_txn_t *t = ps->t;
    ll_enrollment_t e;
    ll_contact_t c;
    int rc = ll_enrollment_get(&M->n, t, it->contact, it->program, &e);
    if (rc != 0 || e.state != LL_ENR_ACTIVE || e.next_us != it->at) {
        /* A stale row (should not happen): drop it. */
        log_warnx("due row for contact %llu, program %s has no active enrollment; dropped",
                  (unsigned long long)it->contact, it->program);
        return ll_nurture_due_drop(&M->n, t, it->at, it->contact, it->program);
    }
    const ll_program_t *p = ll_mail_program(M->m, it->program);
    if (p == NULL || e.step >= p->num_steps)
        return ll_nurture_exit(&M->n, t, it->contact, it->program, LL_EXIT_NO_PROGRAM);
    json_t *fields;
    if ((rc = ll_contact_get_fields(t, it->contact, &c, &fields)) != 0)
        return rc == LL_ENOTFOUND ? ll_nurture_exit(&M->n, t, it->contact, it->program, LL_EXIT_NO_PROGRAM) : rc;
    ll_send_t row;
    int have_row = 0;

    /* Never to an opt-out, whatever was queued before it. */
    if (c.flags & (LL_CF_UNSUBSCRIBED | LL_CF_BOUNCED | LL_CF_DO_NOT_CONTACT)) {
        int why = c.flags & LL_CF_UNSUBSCRIBED ? LL_EXIT_UNSUBSCRIBED
                  : c.flags & LL_CF_BOUNCED   ? LL_EXIT_BOUNCED
                                              : LL_EXIT_DO_NOT_CONTACT;
        log_info("contact %llu (%s) opted out: leaves %s", (unsigned long long)c.id, c.email, p->id);
        rc = ll_nurture_exit_all(&M->n, t, c.id, why);
        goto out;
    }
    if (e.send != 0 && ll_send_get(&M->n, t, e.send, &row) == 0) {
        have_row = 1;
        if (row.state == LL_SEND_COMMITTED || row.state == LL_SEND_ACCEPTED) {
            /* A crash after the end of DATA: the MTA may have it, so it counts as sent. */
            log_info("send %llu: recorded as sent before a restart; not sent again", (unsigned long long)row.id);
            rc = record_sent(M, t, p, &row, &e, (int)row.smtp_code, row.accepted_us);
            goto out;
        }
    }
    if (!have_row) {
        scan_t sc = {&M->n, t, p->id, 0, p->exit_form, e.enrolled_us, 0};
        if (p->exit_sales_ready && sales_ready(M, t, c.id, fields)) {
            log_info("contact %llu (%s) is sales-ready: leaves %s", (unsigned long long)c.id, c.email, p->id);
            rc = ll_nurture_exit(&M->n, t, c.id, p->id, LL_EXIT_SALES_READY);
            goto out;
        }
        if (p->exit_form[0] != '\0' && (ll_events_of_contact(t, c.id, on_form_scan, &sc), sc.found)) {
            log_info("contact %llu (%s) reached the goal (form %s): leaves %s", (unsigned long long)c.id, c.email,
                     p->exit_form, p->id);
            rc = ll_nurture_exit(&M->n, t, c.id, p->id, LL_EXIT_GOAL);
            goto out;
        }
        if (!condition_holds(M, t, p, &p->steps[e.step], c.id, fields)) {
            log_info("contact %llu: %s step %d skipped (condition)", (unsigned long long)c.id, p->id, e.step + 1);
            rc = advance(M, t, p, c.id, &e, ps->now);
            goto out;
        }
    }
    uint64_t when = window_next(t, p, c.id, fields, ps->now);
    if (when > ps->now) {
        rc = ll_nurture_reschedule(&M->n, t, c.id, p->id, &e, when);
        goto out;
    }
    if (!have_row) {
        memset(&row, 0, sizeof(row));
        if ((rc = ll_send_next_id(&M->n, t, &row.id)) != 0)
            goto out;
        row.state = LL_SEND_INTENT;
        row.step = e.step;
        row.contact = c.id;
        row.created_us = ps->now;
        snprintf(row.program, sizeof(row.program), "%s", p->id);
        if ((rc = ll_send_put(&M->n, t, &row)) != 0)
            goto out;
        e.send = row.id;
        if ((rc = ll_enrollment_put(&M->n, t, c.id, p->id, &e)) != 0)
            goto out;
    }
    ll_outmsg_t *o = &ps->out[ps->nout];
    memset(o, 0, sizeof(*o));
    o->send = row.id;
    o->contact = c.id;
    o->step = row.step;
    snprintf(o->program, sizeof(o->program), "%s", p->id);
    snprintf(o->to, sizeof(o->to), "%s", c.email);
    ps->jobs[ps->njobs++] = (struct render_job){.c = c, .fields = json_incref(fields), .row = row, .e = e, .p = p};
    ps->nout++;
out:
    json_decref(fields);
    ll_contact_clear(&c);
    return rc;
}

static void *render_worker(void *arg)
{
    pass_t *ps = arg;
    for (size_t i; (i = atomic_fetch_add(&ps->next_job, 1)) < ps->njobs;) {
        struct render_job *j = &ps->jobs[i];
        j->rc = render(ps->M, j->p, j->row.step, &j->c, j->fields, j->row.id, &ps->out[i]);
    }
    return NULL;
}

/* A renderer's own thread, named (the main thread renders too, under its own name). */
static void *render_thread(void *arg)
{
    ll_thread_name("ll-render");
    return render_worker(arg);
}

/* Renders the messages claimed, on up to RENDER_THREADS threads (this one included) when the
 * mailer may use several CPUs: templates, MIME and above all DKIM signing (the RSA signature,
 * about 0.3 ms a message here, BENCHMARKS.md) would otherwise take one CPU while the sessions
 * wait. A message that cannot be rendered skips its step, as when rendering was done claim by
 * claim; the others keep their order in ps->out. */
#define RENDER_THREADS 8
#define RENDER_PER_THREAD 16 /* fewer messages than this a thread: not worth a thread */
static int render_all(pass_t *ps)
{
    cpu_set_t cpus;
    size_t n = sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? (size_t)CPU_COUNT(&cpus) : 1, started = 0;
    if (n > RENDER_THREADS)
        n = RENDER_THREADS;
    if (n > (ps->njobs + RENDER_PER_THREAD - 1) / RENDER_PER_THREAD)
        n = (ps->njobs + RENDER_PER_THREAD - 1) / RENDER_PER_THREAD;
    pthread_t tids[RENDER_THREADS];
    for (size_t i = 1; i < n; i++)
        started += pthread_create(&tids[started], NULL, render_thread, ps) == 0;
    render_worker(ps);
    for (size_t i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    int rc = 0;
    size_t kept = 0;
    for (size_t i = 0; i < ps->njobs; i++) {
        struct render_job *j = &ps->jobs[i];
        ll_outmsg_t *o = &ps->out[i];
        if (j->rc == 0) {
            ps->out[kept++] = *o;
        } else {
            ll_buf_free(&o->body);
            log_warnx("send %llu: cannot render (%s); the step is skipped", (unsigned long long)j->row.id,
                      ll_strerror(j->rc));
            j->row.state = LL_SEND_FAILED;
            if (rc == 0)
                rc = ll_send_put(&ps->M->n, ps->t, &j->row);
            if (rc == 0)
                rc = advance(ps->M, ps->t, j->p, j->c.id, &j->e, ps->now);
        }
        ll_contact_clear(&j->c);
        json_decref(j->fields);
    }
    ps->nout = kept;
    ps->njobs = 0;
    return rc;
}

/* Sends counted against mailer.rate_per_hour: those created in the last hour. Send ids grow
 * with time, so the walk goes newest first and stops at the first older than the hour (a few
 * out of order at the edge, from a long-deferred retry, do not matter to a rate). */
typedef struct {
    uint64_t since;
    size_t n;
} rate_t;

static int on_rate(const ll_send_t *s, void *arg)
{
    rate_t *r = arg;
    if (s->created_us < r->since)
        return 1;
    r->n += s->state != LL_SEND_INTENT && strcmp(s->program, LL_ALERT_PROGRAM) != 0;
    return 0;
}

/* ---- owner alert emails (score.h outbox_mail; mailer/alert.c) ----
 * Exactly once, as for nurture messages: the claim writes a send row (program "@alert") in
 * state INTENT and maps the outbox row to it in `alert_sends`; smtp.c moves it to COMMITTED
 * before the final "."; the outcome removes the outbox row. A restart that finds the send
 * COMMITTED or ACCEPTED drops the row unsent; INTENT is sent again. Alerts do not count
 * against mailer.rate_per_hour: they are the team's own mail. */

typedef struct {
    uint64_t id, now;
    ll_outbox_hdr_t h;
    char *json;
    size_t len;
} alert_row_t;

typedef struct {
    alert_row_t rows[LL_ALERT_BATCH];
    size_t n;
    uint64_t now;
} alert_rows_t;

static int on_alert_row(uint64_t id, const ll_outbox_hdr_t *h, const char *body, size_t len, void *arg)
{
    alert_rows_t *a = arg;
    if (h->next_us > a->now)
        return 0;
    if (a->n == LL_ALERT_BATCH)
        return 1;
    alert_row_t *r = &a->rows[a->n++];
    r->id = id, r->h = *h, r->len = len;
    r->json = ll_malloc(len + 1);
    memcpy(r->json, body, len);
    r->json[len] = '\0';
    return 0;
}

/* The claim of outbox_mail row id: its send id (0: not claimed yet). */
static int alert_claim_get(mailer_t *M, ll_txn_t *t, uint64_t id, uint64_t *send)
{
    uint8_t kb[8];
    ll_be64_put(kb, id);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(t->txn, M->alert_sends, &k, &v);
    *send = rc == 0 && v.mv_size == 8 ? ll_be64_get(v.mv_data) : 0;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

static int alert_claim_put(mailer_t *M, ll_txn_t *t, uint64_t id, uint64_t send)
{
    uint8_t kb[8], vb[8];
    ll_be64_put(kb, id);
    ll_be64_put(vb, send);
    MDB_val k = {8, kb}, v = {8, vb};
    return ll_store_err(mdb_put(t->txn, M->alert_sends, &k, &v, 0));
}

/* Removes a finished alert row and its claim. */
static int alert_done(mailer_t *M, ll_txn_t *t, uint64_t id)
{
    uint8_t kb[8];
    ll_be64_put(kb, id);
    MDB_val k = {8, kb};
    int rc = ll_outbox_mail_done(M->scorer, t, id);
    if (rc != 0)
        return rc;
    rc = mdb_del(t->txn, M->alert_sends, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

/* Claims up to LL_ALERT_BATCH due alert rows into ps->out, inside the claiming transaction. */
static int claim_alerts(pass_t *ps, size_t *claimed)
{
    mailer_t *M = ps->M;
    alert_rows_t *a = ll_calloc(1, sizeof(*a));
    a->now = ps->now;
    int rc = ll_outbox_mail_each(M->scorer, ps->t, on_alert_row, a);
    *claimed = a->n;
    for (size_t i = 0; i < a->n && rc == 0; i++) {
        alert_row_t *r = &a->rows[i];
        ll_send_t row;
        uint64_t send = 0, contact = 0;
        char *subject = NULL, *text = NULL;
        if ((rc = alert_claim_get(M, ps->t, r->id, &send)) != 0)
            break;
        if (send != 0 && ll_send_get(&M->n, ps->t, send, &row) == 0 &&
            (row.state == LL_SEND_COMMITTED || row.state == LL_SEND_ACCEPTED)) {
            log_info("alert %llu to %s: recorded as sent before a restart; not sent again", (unsigned long long)r->id,
                     r->h.target);
            rc = alert_done(M, ps->t, r->id);
            continue;
        }
        if (ll__alert_render(r->json, r->len, &subject, &text, &contact) != 0) {
            log_warnx("alert %llu to %s: not a readable alert; dropped", (unsigned long long)r->id, r->h.target);
            rc = alert_done(M, ps->t, r->id);
            continue;
        }
        if (send == 0) {
            memset(&row, 0, sizeof(row));
            if ((rc = ll_send_next_id(&M->n, ps->t, &row.id)) != 0)
                goto next;
            row.state = LL_SEND_INTENT;
            row.contact = contact;
            row.created_us = ps->now;
            snprintf(row.program, sizeof(row.program), "%s", LL_ALERT_PROGRAM);
            send = row.id;
            if ((rc = ll_send_put(&M->n, ps->t, &row)) != 0 || (rc = alert_claim_put(M, ps->t, r->id, send)) != 0)
                goto next;
        }
        ll_outmsg_t *o = &ps->out[ps->nout];
        memset(o, 0, sizeof(*o));
        o->send = send;
        o->contact = contact;
        o->alert = r->id;
        o->attempts = r->h.attempts;
        snprintf(o->program, sizeof(o->program), "%s", LL_ALERT_PROGRAM);
        snprintf(o->to, sizeof(o->to), "%s", r->h.target);
        ll_mime_in_t in = {M->m->from, M->m->from_name, o->to, subject, NULL, text, NULL, NULL, NULL, send,
                           ll_now_us()};
        ll_buf_init(&o->body, 4 * LL_TPL_MAX);
        if ((rc = ll__mime_build(&in, &o->body)) == 0 && M->dkim != NULL)
            rc = ll__dkim_sign(M->dkim, send, &o->body);
        if (rc == 0)
            ps->nout++;
        else
            ll_buf_free(&o->body);
    next:
        free(subject);
        free(text);
    }
    for (size_t i = 0; i < a->n; i++)
        free(a->rows[i].json);
    free(a);
    return rc;
}

/* The outcome of one alert email, in t. */
static int alert_outcome(mailer_t *M, ll_txn_t *t, ll_outmsg_t *o, ll_send_t *row)
{
    int rc;
    row->smtp_code = (uint32_t)o->code;
    if ((o->code >= 200 && o->code < 300) || (o->code == 0 && o->committed)) {
        log_info("alert %llu to %s: accepted (%d)", (unsigned long long)o->alert, o->to, o->code);
        row->state = o->accepted_us ? LL_SEND_ACCEPTED : LL_SEND_COMMITTED;
        row->accepted_us = o->accepted_us;
        if ((rc = ll_send_put(&M->n, t, row)) == 0)
            rc = alert_done(M, t, o->alert);
        return rc;
    }
    if (o->code >= 500) {
        log_warnx("alert %llu to %s: refused (%d %s); check the rep's address. Not retried", (unsigned long long)o->alert,
                  o->to, o->code, o->reply);
        row->state = LL_SEND_BOUNCED;
        if ((rc = ll_send_put(&M->n, t, row)) == 0)
            rc = alert_done(M, t, o->alert);
        return rc;
    }
    const ll_score_conf_t *sc = ll_scorer_conf(M->scorer);
    if (sc->retry_max > 0 && o->attempts + 1 >= (uint32_t)sc->retry_max) {
        log_warnx("alert %llu to %s: gave up after %u attempts (%d %s)", (unsigned long long)o->alert, o->to,
                  o->attempts + 1, o->code, o->reply);
        row->state = LL_SEND_FAILED;
        if ((rc = ll_send_put(&M->n, t, row)) == 0)
            rc = alert_done(M, t, o->alert);
        return rc;
    }
    log_info("alert %llu to %s: deferred (%d %s); retried with backoff", (unsigned long long)o->alert, o->to, o->code,
             o->reply);
    row->state = LL_SEND_INTENT; /* not taken, even after the final ".": sent again */
    if ((rc = ll_send_put(&M->n, t, row)) == 0)
        rc = ll_outbox_mail_retry(M->scorer, t, o->alert, ll_now_us());
    return rc;
}

/* The pass that sends (marks.c): be64 number | 1 while open (its marks may be only in
 * mailer.marks.N), 0 once its outcomes are recorded. A key of its own in the enrollments db, as
 * the rules' watermark. */
static const uint8_t pass_key[] = "\0\0\0\0\0\0\0\0~pass";

static int pass_get(mailer_t *M, ll_txn_t *t, uint64_t *pass, int *open)
{
    MDB_val k = {sizeof(pass_key) - 1, (void *)pass_key}, v;
    int rc = mdb_get(t->txn, M->n.enrollments, &k, &v);
    *pass = 0, *open = 0;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc == 0 && v.mv_size == 9)
        *pass = ll_be64_get(v.mv_data), *open = ((const uint8_t *)v.mv_data)[8];
    return ll_store_err(rc);
}

static int pass_put(mailer_t *M, ll_txn_t *t, uint64_t pass, int open)
{
    uint8_t buf[9];
    ll_be64_put(buf, pass);
    buf[8] = (uint8_t)open;
    MDB_val k = {sizeof(pass_key) - 1, (void *)pass_key}, v = {sizeof(buf), buf};
    return ll_store_err(mdb_put(t->txn, M->n.enrollments, &k, &v, 0));
}

/* A pass left open (a crash, or its outcomes not written): its marks from the mailer.marks.N
 * files into LMDB, before anything is claimed, so that its committed messages are not sent again. */
static int close_open_pass(mailer_t *M)
{
    ll_txn_t t;
    uint64_t pass;
    int open;
    size_t moved = 0;
    int rc = ll_txn_begin(M->store, 0, &t);
    if (rc != 0)
        return rc;
    if ((rc = pass_get(M, &t, &pass, &open)) == 0 && open && (rc = ll__marks_apply(M->marks, &t, pass, &moved)) == 0)
        rc = pass_put(M, &t, pass, 0);
    if (rc == 0 && open && ll__marks_made(M->marks))
        log_warnx("pass %llu was interrupted and a mailer.marks file was missing or cut short: its messages that had "
                  "reached the end of DATA may be sent again", (unsigned long long)pass);
    if (rc == 0 && (rc = ll_txn_commit(&t)) == 0) {
        M->pass_open = 0;
        if (moved > 0)
            log_info("pass %llu was interrupted: %zu message(s) had reached the end of DATA",
                     (unsigned long long)pass, moved);
        return 0;
    }
    ll_txn_abort(&t);
    return rc;
}

/* Applies the SMTP outcomes of a batch, and closes its pass (marks.c). */
static int record_outcomes(mailer_t *M, ll_outmsg_t *out, size_t n, uint64_t pass)
{
    ll_txn_t t;
    int rc = ll_txn_begin(M->store, 0, &t);
    if (rc != 0)
        return rc;
    rc = pass_put(M, &t, pass, 0);
    for (size_t i = 0; i < n && rc == 0; i++) {
        ll_outmsg_t *o = &out[i];
        ll_send_t row;
        ll_enrollment_t e;
        const ll_program_t *p = ll_mail_program(M->m, o->program);
        if ((rc = ll_send_get(&M->n, &t, o->send, &row)) != 0)
            break;
        if (o->alert != 0) {
            rc = alert_outcome(M, &t, o, &row);
            continue;
        }
        int have_e = ll_enrollment_get(&M->n, &t, o->contact, o->program, &e) == 0 && e.state == LL_ENR_ACTIVE &&
                     e.send == o->send && p != NULL;
        if ((o->code >= 200 && o->code < 300) || (o->code == 0 && o->committed)) {
            log_info("send %llu to %s: %s step %d accepted (%d)", (unsigned long long)o->send, o->to, o->program,
                     o->step + 1, o->code);
            rc = record_sent(M, &t, have_e ? p : NULL, &row, have_e ? &e : NULL, o->code, o->accepted_us);
        } else if (o->code >= 500) {
            char data[400];
            json_t *j = json_pack("{s:i, s:s}", "smtp", o->code, "reply", o->reply);
            char *txt = j ? json_dumps(j, JSON_COMPACT) : NULL;
            snprintf(data, sizeof(data), "%s", txt ? txt : "{}");
            free(txt);
            json_decref(j);
            log_info("send %llu to %s: refused (%d %s): hard bounce, contact suppressed", (unsigned long long)o->send,
                     o->to, o->code, o->reply);
            row.state = LL_SEND_BOUNCED;
            row.smtp_code = (uint32_t)o->code;
            if ((rc = ll_send_put(&M->n, &t, &row)) == 0 &&
                (rc = record_event(&t, LL_EV_BOUNCE, o->contact, o->send, o->program, o->step, ll_now_us(), data)) == 0)
                rc = ll_nurture_exit_all(&M->n, &t, o->contact, LL_EXIT_BOUNCED);
        } else if (have_e) {
            e.attempts++;
            row.smtp_code = (uint32_t)o->code;
            if (e.attempts >= (uint32_t)M->m->max_attempts) {
                log_warnx("send %llu to %s: gave up after %u attempts (%d %s)", (unsigned long long)o->send, o->to,
                          e.attempts, o->code, o->reply);
                row.state = LL_SEND_FAILED;
                if ((rc = ll_send_put(&M->n, &t, &row)) == 0)
                    rc = advance(M, &t, p, o->contact, &e, ll_now_us());
            } else {
                uint64_t wait = (uint64_t)M->m->retry_s << (e.attempts - 1 < 16 ? e.attempts - 1 : 16);
                log_info("send %llu to %s: deferred (%d %s); retry %u in %llu s", (unsigned long long)o->send, o->to,
                         o->code, o->reply, e.attempts, (unsigned long long)wait);
                row.state = LL_SEND_INTENT; /* a 4xx, even to the final ".", means not taken: send again */
                if ((rc = ll_send_put(&M->n, &t, &row)) == 0)
                    rc = ll_nurture_reschedule(&M->n, &t, o->contact, o->program, &e, ll_now_us() + wait * 1000000u);
            }
        }
    }
    if (rc == 0)
        return ll_txn_commit(&t);
    ll_txn_abort(&t);
    return rc;
}

/* ---- automatic enrolment ---- */

static const uint8_t watermark_key[] = "\0\0\0\0\0\0\0\0~rules";

typedef struct {
    mailer_t *M;
    ll_txn_t *t;
    uint64_t last;
    int rc;
} rules_t;

static int on_rule_event(const ll_event_t *ev, void *arg)
{
    rules_t *r = arg;
    mailer_t *M = r->M;
    r->last = ev->seq;
    if (ev->contact != 0 && (ev->type == LL_EV_UNSUBSCRIBE || ev->type == LL_EV_BOUNCE)) {
        /* An opt-out from the edge (or a bounce) ends the contact's programs now, not when its
         * next message falls due (that check stays: it covers whatever this misses). */
        int rc = ll_nurture_exit_all(&M->n, r->t, ev->contact,
                                     ev->type == LL_EV_UNSUBSCRIBE ? LL_EXIT_UNSUBSCRIBED : LL_EXIT_BOUNCED);
        if (rc != 0) {
            r->rc = rc;
            return 1;
        }
        return 0;
    }
    if (ev->contact == 0 || M->m->num_rules == 0 || (ev->type != LL_EV_FORM && ev->type != LL_EV_IDENTIFY))
        return 0;
    ll_contact_t c;
    json_t *fields = NULL;
    for (size_t i = 0; i < M->m->num_rules; i++) {
        const ll_enroll_rule_t *rule = &M->m->rules[i];
        int match = 0;
        if (rule->form[0] != '\0') {
            match = ev->type == LL_EV_FORM && ev->f[LL_F_FORM].len == strlen(rule->form) &&
                    memcmp(ev->f[LL_F_FORM].base, rule->form, ev->f[LL_F_FORM].len) == 0;
        } else {
            if (fields == NULL) {
                if (ll_contact_get_fields(r->t, ev->contact, &c, &fields) != 0)
                    continue;
                ll_contact_clear(&c);
            }
            char num[64];
            const char *v = field_str(fields, rule->field, num, sizeof(num));
            match = v != NULL && strcmp(v, rule->value) == 0;
        }
        const ll_program_t *p = match ? ll_mail_program(M->m, rule->program) : NULL;
        if (p == NULL)
            continue;
        int rc = ll_nurture_enroll(&M->n, r->t, ev->contact, p, ll_now_us());
        if (rc == 0)
            log_info("contact %llu enrolled in %s by rule %zu", (unsigned long long)ev->contact, p->id, i + 1);
        else if (rc != LL_EEXIST && rc != LL_EINVAL && rc != LL_ENOTFOUND) {
            r->rc = rc;
            json_decref(fields);
            return 1;
        }
    }
    json_decref(fields);
    return 0;
}

/* Follows the log from where the last pass stopped: opt-outs leave their programs, and the
 * enroll_rules enrol. */
static int enroll_by_rules(mailer_t *M)
{
    ll_txn_t t;
    int rc = ll_txn_begin(M->store, 0, &t);
    if (rc != 0)
        return rc;
    MDB_val k = {sizeof(watermark_key) - 1, (void *)watermark_key}, v;
    uint64_t from = 1;
    if (mdb_get(t.txn, M->n.enrollments, &k, &v) == 0 && v.mv_size == 8)
        from = ll_be64_get(v.mv_data) + 1;
    rules_t r = {M, &t, from - 1, 0};
    if ((rc = ll_events_scan(&t, from, on_rule_event, &r)) == 0 && (rc = r.rc) == 0) {
        uint8_t buf[8];
        ll_be64_put(buf, r.last);
        v.mv_size = 8, v.mv_data = buf;
        rc = ll_store_err(mdb_put(t.txn, M->n.enrollments, &k, &v, 0));
    }
    if (rc == 0)
        return ll_txn_commit(&t);
    ll_txn_abort(&t);
    return rc;
}

/* One pass; *full is set when the batch was full (more may be due). */
static int run_pass(mailer_t *M, int *full)
{
    ll_txn_t t;
    int rc;
    *full = 0;
    if (M->pass_open && (rc = close_open_pass(M)) != 0)
        return rc;
    if ((rc = enroll_by_rules(M)) != 0)
        return rc;
    pass_t ps;
    memset(&ps, 0, sizeof(ps));
    ps.M = M;
    ps.now = ll_now_us();
    ps.limit = (size_t)M->m->batch;
    if ((rc = ll_txn_begin(M->store, 0, &t)) != 0)
        return rc;
    ps.t = &t;
    if (M->m->rate_per_hour > 0) {
        rate_t r = {ps.now > 3600000000u ? ps.now - 3600000000u : 0, 0};
        ll_send_scan_rev(&M->n, &t, on_rate, &r);
        size_t left = r.n >= (size_t)M->m->rate_per_hour ? 0 : (size_t)M->m->rate_per_hour - r.n;
        if (left < ps.limit)
            ps.limit = left;
    }
    ps.cap = ps.limit;
    ps.items = ll_calloc(ps.cap + 1, sizeof(*ps.items));
    ps.out = ll_calloc(ps.cap + LL_ALERT_BATCH + 1, sizeof(*ps.out));
    ps.jobs = ll_calloc(ps.cap + 1, sizeof(*ps.jobs));
    if (ps.cap > 0)
        rc = ll_nurture_due_scan(&M->n, &t, ps.now, on_due, &ps);
    for (size_t i = 0; i < ps.nitems && rc == 0; i++)
        rc = claim_one(&ps, &ps.items[i]);
    if (rc == 0)
        rc = render_all(&ps);
    for (size_t i = 0; i < ps.njobs; i++) /* left by a failed claim */
        ll_contact_clear(&ps.jobs[i].c);
    size_t alerts = 0;
    uint64_t pass = 0;
    int open;
    if (rc == 0)
        rc = claim_alerts(&ps, &alerts);
    if (rc == 0 && ps.nout > 0 && (rc = pass_get(M, &t, &pass, &open)) == 0)
        rc = pass_put(M, &t, ++pass, 1);
    if (rc == 0)
        rc = ll_txn_commit(&t);
    else
        ll_txn_abort(&t);
    if (rc != 0) {
        for (size_t i = 0; i < ps.nout; i++)
            ll_buf_free(&ps.out[i].body);
        ps.nout = 0;
    }
    if (ps.nout > 0) {
        log_info("sending %zu message(s) over %d connection(s)", ps.nout, M->m->connections);
        M->pass_open = 1;
        ll__marks_begin(M->marks, pass);
        ll__smtp_send(&M->smtp, ps.out, ps.nout);
        if ((rc = record_outcomes(M, ps.out, ps.nout, pass)) == 0)
            M->pass_open = 0;
    }
    *full = rc == 0 && ((ps.cap > 0 && ps.nitems == ps.cap) || alerts == LL_ALERT_BATCH);
    for (size_t i = 0; i < ps.nout; i++)
        ll_buf_free(&ps.out[i].body);
    free(ps.items);
    free(ps.jobs);
    free(ps.out);
    return rc;
}

static void on_signal(int sig)
{
    stopping = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: leadloop-mailer [-c FILE] [-d DATA_DIR] [--once] [-v]\n"
                    "  -c FILE      YAML configuration (smtp:, mailer:, programs:; see deploy/leadloop.example.yaml)\n"
                    "  -d DATA_DIR  data directory shared with leadloopd (default: data_dir, \"var\")\n"
                    "  --once       send what is due now and exit\n"
                    "  -v           log every message (log_level debug)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static mailer_t M;
    const char *conf_path = NULL, *data_dir = NULL;
    int once = 0, verbose = 0;
    char err[512];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--once") == 0)
            once = 1;
        else if (strcmp(argv[i], "-v") == 0)
            verbose = 1;
        else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            conf_path = argv[++i];
        else if (strcmp(argv[i], "-d") == 0 && i + 1 < argc)
            data_dir = argv[++i];
        else
            usage();
    }
    ll_config_defaults(&M.conf);
    if (conf_path != NULL && ll_config_load(&M.conf, conf_path, err, sizeof(err)) != 0)
        fatalx("%s", err);
    if (data_dir != NULL) {
        free(M.conf.data_dir);
        M.conf.data_dir = ll_strdup(data_dir);
    }
    ll_log_level = verbose ? 2 : M.conf.log_level;
    /* The mailer is batch work: it and the threads it starts (the SMTP sessions, the renderers)
     * run under SCHED_BATCH (ll_sched_batch). A session whose reply or end-of-DATA mark has come
     * in waits for the running session to block instead of taking the CPU from it mid-message,
     * and the mailer never preempts leadloopd on a CPU they share. Measured in alternating
     * rounds of the mailer benchmark on the one CPU it gives the mailer (BENCHMARKS.md): 1.09-1.17x
     * the messages a second, 0.85-0.93x the CPU a message. */
    int batch = ll_sched_batch();
    if (batch != 0)
        log_warnx("cannot run under SCHED_BATCH: %s; left as it was", strerror(batch));
    M.m = M.conf.mail;
    load_templates(&M);
    signal(SIGPIPE, SIG_IGN);
    if (ll_store_open(M.conf.data_dir, M.conf.map_size, 0, &M.store, err, sizeof(err)) != 0)
        fatalx("%s", err);
    char *keypath = path_join(M.conf.data_dir, "keys");
    if (ll_keyring_open(keypath, &M.keys, err, sizeof(err)) != 0)
        fatalx("%s", err);
    free(keypath);
    if (ll_nurture_open(M.store, &M.n) != 0)
        fatalx("%s: cannot open the nurture databases", M.conf.data_dir);
    if (ll_scorer_open(M.store, M.conf.score, &M.scorer, err, sizeof(err)) != 0)
        fatalx("%s", err);
    the_scorer = M.scorer;
    if (ll_store_open_db(M.store, "alert_sends", 0, &M.alert_sends) != 0)
        fatalx("%s: cannot open the alert_sends database", M.conf.data_dir);
    if (M.m->dkim_key != NULL) {
        const char *at = strrchr(M.m->from, '@');
        if (ll__dkim_open(M.m->dkim_key, M.m->dkim_selector, M.m->dkim_domain ? M.m->dkim_domain : at ? at + 1 : "",
                          &M.dkim, err, sizeof(err)) != 0)
            fatalx("%s", err);
    }
    /* One mailer per environment: two would claim the same due rows. */
    char *lockpath = path_join(M.conf.data_dir, "mailer.lock");
    int lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lockfd < 0 || flock(lockfd, LOCK_EX | LOCK_NB) != 0)
        fatalx("%s: %s", lockpath, lockfd < 0 ? strerror(errno) : "another leadloop-mailer runs on this data directory");
    free(lockpath);
    if (ll__marks_open(M.conf.data_dir, &M.n, M.store, &M.marks, err, sizeof(err)) != 0)
        fatalx("%s", err);
    M.pass_open = 1;
    M.smtp.m = M.m;
    M.smtp.marks = M.marks;
    ll__smtp_init();

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    log_info("%zu program(s), SMTP %s:%d, data in %s%s", M.m->num_programs, M.m->smtp_host, M.m->smtp_port,
             M.conf.data_dir, once ? " (once)" : "");
    int status = 0;
    while (!stopping) {
        int full = 0, rc = run_pass(&M, &full);
        if (rc != 0) {
            log_warnx("pass failed: %s", ll_strerror(rc));
            status = 1;
        }
        if (full)
            continue;
        if (once)
            break;
        for (int i = 0; i < M.m->poll_s * 10 && !stopping; i++)
            usleep(100000);
    }
    for (size_t i = 0; i < M.m->num_programs; i++)
        for (size_t s = 0; s < M.m->programs[i].num_steps; s++)
            ll__tpl_free(M.tpl[i][s]);
    ll_keyring_free(M.keys);
    ll_scorer_free(M.scorer);
    ll__dkim_free(M.dkim);
    ll__marks_close(M.marks);
    ll_store_close(M.store);
    close(lockfd);
    ll_config_free(&M.conf);
    return status;
}
