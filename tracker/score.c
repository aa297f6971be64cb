/*
 * The scorer (score.h): behavior rules with caps, lazy decay, fit and grade, the ledger, and
 * the rescore that rebuilds it all from the log.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "score_int.h"

#define STATE_VERSION 2
#define DAY_US 86400000000ULL

int ll_scorer_open(ll_store_t *s, const ll_score_conf_t *conf, ll_scorer_t **out, char *err, size_t errlen)
{
    ll_scorer_t *sc = ll_calloc(1, sizeof(*sc));
    int rc;
    sc->store = s;
    sc->conf = conf;
    if ((rc = ll_store_open_db(s, "scores", 0, &sc->scores)) != 0 || (rc = ll_store_open_db(s, "ledger", 0, &sc->ledger)) != 0 ||
        (rc = ll_store_open_db(s, "leads", 0, &sc->leads)) != 0 ||
        (rc = ll_store_open_db(s, "sla_due", 0, &sc->sla_due)) != 0 || (rc = ll_store_open_db(s, "outbox", 0, &sc->outbox)) != 0 ||
        (rc = ll_store_open_db(s, "outbox_mail", 0, &sc->outbox_mail)) != 0 ||
        (rc = ll_store_open_db(s, "routing", 0, &sc->routing)) != 0 || (rc = ll_nurture_open(s, &sc->nurture)) != 0) {
        free(sc);
        *out = NULL;
        return ll_err(err, errlen, rc, "cannot open the scoring databases: %s", ll_strerror(rc));
    }
    *out = sc;
    return 0;
}

void ll_scorer_free(ll_scorer_t *sc)
{
    free(sc);
}

const ll_score_conf_t *ll_scorer_conf(const ll_scorer_t *sc)
{
    return sc->conf;
}

static const char *const stage_names[LL_STAGE__MAX] = {"none", "inquiry", "mql", "accepted", "sql", "opportunity",
                                                       "customer", "recycled"};

const char *ll_stage_name(int stage)
{
    return stage >= 0 && stage < LL_STAGE__MAX ? stage_names[stage] : "unknown";
}

int ll_stage_parse(const char *s)
{
    for (int i = 0; i < LL_STAGE__MAX; i++)
        if (strcasecmp(s, stage_names[i]) == 0)
            return i;
    return -1;
}

/* ---- helpers ---- */

int ll__glob(const char *pat, const char *s, size_t n, int ci)
{
    /* Iterative with one backtrack point: linear in practice, no recursion on client input. */
    const char *star = NULL;
    size_t i = 0, mark = 0;
    while (i < n) {
        char pc = *pat, sc = s[i];
        if (ci)
            pc = (char)tolower((unsigned char)pc), sc = (char)tolower((unsigned char)sc);
        if (*pat == '*') {
            star = ++pat;
            mark = i;
        } else if (*pat != '\0' && (*pat == '?' || pc == sc)) {
            pat++, i++;
        } else if (star != NULL) {
            pat = star;
            i = ++mark;
        } else {
            return 0;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

void ll__field(json_t *fields, const char *name, char *out, size_t outlen)
{
    json_t *v = fields != NULL ? json_object_get(fields, name) : NULL;
    out[0] = '\0';
    if (json_is_string(v))
        snprintf(out, outlen, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(out, outlen, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(out, outlen, "%.17g", json_real_value(v));
}

void ll__iso(uint64_t us, char out[32])
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "@%llu", (unsigned long long)(us / 1000000));
}

static double decay_factor(const ll_score_conf_t *conf, uint64_t from_us, uint64_t to_us)
{
    if (conf->half_life_days <= 0 || to_us <= from_us)
        return 1.0;
    double days = (double)(to_us - from_us) / (double)DAY_US;
    return pow(2.0, -days / conf->half_life_days);
}

double ll_score_decayed(const ll_score_conf_t *conf, const ll_score_state_t *st, uint64_t now_us)
{
    return st->engagement * decay_factor(conf, st->engaged_us, now_us);
}

char ll_score_grade(const ll_score_conf_t *conf, int fit)
{
    return fit >= conf->grade_a ? 'A' : fit >= conf->grade_b ? 'B' : fit >= conf->grade_c ? 'C' : 'D';
}

int ll_score_get(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_score_state_t *st)
{
    uint8_t kb[8];
    ll_be64_put(kb, contact);
    MDB_val k = {8, kb}, v;
    int rc = ll_txn_get(t, sc->scores, &k, &v);
    memset(st, 0, sizeof(*st));
    if (rc != 0)
        return ll_store_err(rc);
    if (v.mv_size != sizeof(*st))
        return LL_EINVAL;
    memcpy(st, v.mv_data, sizeof(*st));
    return st->version == STATE_VERSION ? 0 : LL_EINVAL;
}

int ll__score_put(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, const ll_score_state_t *st)
{
    uint8_t kb[8];
    ll_be64_put(kb, contact);
    MDB_val k = {8, kb}, v = {sizeof(*st), (void *)st};
    return ll_store_err(ll_txn_put(t, sc->scores, &k, &v, 0));
}

/* The ledger is keyed by seq (then a row number), so rows are appended at the end of the tree
 * and a batch dirties a few pages, not one per contact; a contact's rows are found through its
 * timeline (contact_events). A value, packed: contact (8), time (8), points (4), capped (4),
 * after (8, a double), event type (1), is_fit (1), then the rule name (< LL_NAME_MAX bytes). */
#define LEDGER_FIXED 34

int ll__ledger_put(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, uint16_t n, const ll_ledger_rec_t *r)
{
    uint8_t kb[10], vb[LEDGER_FIXED + LL_NAME_MAX];
    ll_be64_put(kb, r->seq);
    kb[8] = (uint8_t)(n >> 8), kb[9] = (uint8_t)n;
    size_t nl = strnlen(r->rule, sizeof(r->rule) - 1);
    ll_be64_put(vb, contact);
    ll_be64_put(vb + 8, r->time_us);
    ll_be32_put(vb + 16, (uint32_t)r->points);
    ll_be32_put(vb + 20, (uint32_t)r->capped);
    memcpy(vb + 24, &r->after, 8);
    vb[32] = r->event_type, vb[33] = r->is_fit;
    memcpy(vb + LEDGER_FIXED, r->rule, nl);
    MDB_val k = {10, kb}, v = {LEDGER_FIXED + nl, vb};
    return ll_store_err(ll_txn_put(t, sc->ledger, &k, &v, 0));
}

/* The rows of one seq that belong to contact. */
static int ledger_of_seq(MDB_cursor *cur, uint64_t contact, uint64_t seq, ll_ledger_cb cb, void *ctx, int *stop)
{
    uint8_t kb[10] = {0};
    ll_be64_put(kb, seq);
    MDB_val k = {10, kb}, v;
    int rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 10 || ll_be64_get(k.mv_data) != seq)
            break;
        ll_ledger_rec_t r;
        const uint8_t *vb = v.mv_data;
        if (v.mv_size < LEDGER_FIXED || v.mv_size >= LEDGER_FIXED + sizeof(r.rule) || ll_be64_get(vb) != contact)
            continue;
        memset(&r, 0, sizeof(r));
        r.seq = seq;
        r.time_us = ll_be64_get(vb + 8);
        r.points = (int32_t)ll_be32_get(vb + 16);
        r.capped = (int32_t)ll_be32_get(vb + 20);
        memcpy(&r.after, vb + 24, 8);
        r.event_type = vb[32], r.is_fit = vb[33];
        memcpy(r.rule, vb + LEDGER_FIXED, v.mv_size - LEDGER_FIXED);
        if (cb(&r, ctx) != 0) {
            *stop = 1;
            return 0;
        }
    }
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

int ll_ledger_each(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_ledger_cb cb, void *ctx)
{
    MDB_cursor *ce, *cur;
    uint8_t kb[8];
    ll_be64_put(kb, contact);
    MDB_val k = {8, kb}, v;
    int rc, stop = 0;
    if ((rc = mdb_cursor_open(t->txn, ll_store_dbi(t->store, LL_DB_CONTACT_EVENTS), &ce)) != 0)
        return ll_store_err(rc);
    if ((rc = mdb_cursor_open(t->txn, sc->ledger, &cur)) != 0) {
        mdb_cursor_close(ce);
        return ll_store_err(rc);
    }
    for (rc = mdb_cursor_get(ce, &k, &v, MDB_SET_KEY); rc == 0 && !stop; rc = mdb_cursor_get(ce, &k, &v, MDB_NEXT_DUP)) {
        if (v.mv_size == 8 && (rc = ledger_of_seq(cur, contact, ll_be64_get(v.mv_data), cb, ctx, &stop)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    mdb_cursor_close(ce);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : rc < 0 ? rc : ll_store_err(rc);
}

/** The seq of the contact's latest event (0 when none): where a row without an event goes. */
uint64_t ll__contact_last_seq(ll_txn_t *t, uint64_t contact)
{
    MDB_cursor *ce;
    uint8_t kb[8];
    ll_be64_put(kb, contact);
    MDB_val k = {8, kb}, v;
    uint64_t seq = 0;
    if (mdb_cursor_open(t->txn, ll_store_dbi(t->store, LL_DB_CONTACT_EVENTS), &ce) != 0)
        return 0;
    if (mdb_cursor_get(ce, &k, &v, MDB_SET_KEY) == 0 && mdb_cursor_get(ce, &k, &v, MDB_LAST_DUP) == 0 && v.mv_size == 8)
        seq = ll_be64_get(v.mv_data);
    mdb_cursor_close(ce);
    return seq;
}

int ll__engagement_reset(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_score_state_t *st, uint64_t seq,
                         uint64_t time_us, const char *why)
{
    double was = ll_score_decayed(sc->conf, st, time_us);
    ll_ledger_rec_t r;
    memset(&r, 0, sizeof(r));
    r.time_us = time_us;
    r.seq = seq;
    r.points = -(int32_t)(was + 0.5);
    snprintf(r.rule, sizeof(r.rule), "%s", why);
    st->engagement = 0;
    st->engaged_us = time_us;
    return ll__ledger_put(sc, t, contact, 0xffff, &r);
}

/* In a rescore: the recycle that happened between the previous event and this one. */
static int replay_reset(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_score_state_t *st, uint64_t before_us)
{
    uint64_t at = sc->replay_recycled_us;
    if (!sc->rescoring || at == 0 || st->engaged_us >= at || before_us < at)
        return 0;
    return ll__engagement_reset(sc, t, contact, st, sc->replay_prev_seq, at, sc->replay_why);
}

/* ---- behavior ---- */

/* The path (and query) of an absolute URL, or the whole text when it has no scheme. */
static ll_str_t url_path(ll_str_t u)
{
    const char *p = memchr(u.base, ':', u.len);
    if (p != NULL && (size_t)(p - u.base) + 2 < u.len && p[1] == '/' && p[2] == '/') {
        const char *host = p + 3, *end = u.base + u.len;
        const char *slash = memchr(host, '/', end - host);
        if (slash == NULL)
            return LL_STR_LIT("/");
        const char *hash = memchr(slash, '#', end - slash);
        return ll_str(slash, (hash != NULL ? hash : end) - slash);
    }
    return u;
}

static int str_is(ll_str_t f, const char *lit)
{
    return lit == NULL || (f.len == strlen(lit) && memcmp(f.base, lit, f.len) == 0);
}

static int file_is(ll_str_t url, const char *ext)
{
    ll_str_t p = url_path(url);
    const char *q = memchr(p.base, '?', p.len);
    size_t n = q != NULL ? (size_t)(q - p.base) : p.len, el = strlen(ext);
    if (ext[0] == '.')
        ext++, el--;
    return n > el && p.base[n - el - 1] == '.' && strncasecmp(p.base + n - el, ext, el) == 0;
}

static int rule_matches(const ll_score_rule_t *r, const ll_event_t *ev)
{
    if (r->type != 0 && r->type != ev->type)
        return 0;
    if (r->path != NULL) {
        ll_str_t p = url_path(ev->f[LL_F_URL]);
        if (ev->f[LL_F_URL].len == 0 || !ll__glob(r->path, p.base, p.len, 0))
            return 0;
    }
    if (r->url != NULL && (ev->f[LL_F_URL].len == 0 || !ll__glob(r->url, ev->f[LL_F_URL].base, ev->f[LL_F_URL].len, 1)))
        return 0;
    if (r->link >= 0 && (ev->type != LL_EV_CLICK || (int64_t)ev->link != r->link))
        return 0;
    if (!str_is(ev->f[LL_F_FORM], r->form) || !str_is(ev->f[LL_F_PROGRAM], r->program) ||
        !str_is(ev->f[LL_F_STEP], r->step) || !str_is(ev->f[LL_F_TAG], r->tag))
        return 0;
    if (r->file != NULL && !file_is(ev->f[LL_F_URL], r->file))
        return 0;
    return 1;
}

/* ---- fit ---- */

static int fit_matches(const ll_fit_rule_t *f, json_t *fields, const char *geo_country)
{
    char v[256];
    ll__field(fields, f->field, v, sizeof(v));
    if (v[0] == '\0' && strcmp(f->field, "country") == 0 && geo_country != NULL)
        snprintf(v, sizeof(v), "%s", geo_country);
    if (v[0] == '\0')
        return 0;
    if (f->num_in > 0) {
        size_t i = 0;
        while (i < f->num_in && strcasecmp(f->in[i], v) != 0)
            i++;
        if (i == f->num_in)
            return 0;
    }
    if (f->match != NULL && !ll__glob(f->match, v, strlen(v), 1))
        return 0;
    if (f->has_min) {
        char *end;
        double d = strtod(v, &end);
        if (end == v || d != d || d < f->min)
            return 0;
    }
    return 1;
}

/* Recomputes fit from the profile; a ledger row for each rule that starts or stops matching. */
static int update_fit(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_score_state_t *st, const ll_event_t *ev,
                      uint16_t *n)
{
    const ll_score_conf_t *conf = sc->conf;
    ll_contact_t c;
    json_t *fields;
    int rc = ll_contact_get_fields(t, contact, &c, &fields);
    if (rc != 0)
        return rc == LL_ENOTFOUND ? 0 : rc;
    ll_contact_clear(&c);
    for (size_t i = 0; i < conf->num_fit && rc == 0; i++) {
        const ll_fit_rule_t *f = &conf->fit[i];
        int now = fit_matches(f, fields, st->country[0] ? st->country : NULL);
        uint32_t bit = 1u << i;
        int was = (st->fit_mask & bit) != 0;
        if (now == was)
            continue;
        int pts = now ? f->points : -f->points;
        st->fit += pts;
        st->fit_mask ^= bit;
        ll_ledger_rec_t r;
        memset(&r, 0, sizeof(r));
        r.time_us = ev->time_us, r.seq = ev->seq, r.points = pts, r.after = st->fit, r.event_type = ev->type;
        r.is_fit = 1;
        snprintf(r.rule, sizeof(r.rule), "fit:%s", f->name);
        rc = ll__ledger_put(sc, t, contact, (*n)++, &r);
    }
    json_decref(fields);
    return rc;
}

/* ---- one event ---- */

int ll_score_event(ll_scorer_t *sc, ll_txn_t *t, const void *rec, size_t len, uint64_t contact, int profile_changed)
{
    ll_event_t ev;
    ll_score_state_t st;
    int rc;
    if (sc == NULL || ll_event_decode(rec, len, &ev) != 0)
        return 0;
    const ll_score_conf_t *conf = sc->conf;
    if (!conf->enabled)
        return 0; /* no scoring: section: the writer's hot path stays as it was */
    if (contact != 0)
        ev.contact = contact;
    if (ev.contact == 0)
        return 0;
    /* Only people score and alert (human, or likely-human: an email open or click with no machine
     * signal, judge.h); a profile change (an operator's identify) still updates fit. A
     * provisional open or click scores when the judge settles it. */
    if (ev.flags & LL_EVF_PROVISIONAL)
        return 0;
    int human = ev.cls == LL_CLASS_HUMAN || ev.cls == LL_CLASS_LIKELY_HUMAN;
    if (!human && !profile_changed && ev.type != LL_EV_IDENTIFY)
        return 0;
    /* An email open or click carries only its token's send id: the mailer's send row names the
     * program and step (1-based, as on the `sent` event), so `program:`/`step:` rules match it. */
    char program[LL_PROGRAM_ID_MAX], step[8];
    ll_send_t send;
    if ((ev.type == LL_EV_OPEN || ev.type == LL_EV_CLICK) && ev.send != 0 && ev.f[LL_F_PROGRAM].len == 0 &&
        ll_send_get(&sc->nurture, t, ev.send, &send) == 0 && send.program[0] != '\0') {
        snprintf(program, sizeof(program), "%s", send.program);
        snprintf(step, sizeof(step), "%u", send.step + 1u);
        ev.f[LL_F_PROGRAM] = ll_str(program, strlen(program));
        ev.f[LL_F_STEP] = ll_str(step, strlen(step));
    }
    if ((rc = ll_score_get(sc, t, ev.contact, &st)) == LL_EINVAL) {
        memset(&st, 0, sizeof(st)); /* an older layout: start again (leadloop rescore rebuilds it) */
        rc = LL_ENOTFOUND;
    } else if (rc != 0 && rc != LL_ENOTFOUND) {
        return rc;
    }
    st.version = STATE_VERSION;
    int fresh = rc == LL_ENOTFOUND;
    uint64_t engaged_before = st.engaged_us;
    if ((rc = replay_reset(sc, t, ev.contact, &st, ev.time_us)) != 0)
        return rc;
    /* Not for attributed events (the binding event that follows computes it) nor in a rescore,
     * which gives fit once per contact at the end of its timeline instead (the profile it reads
     * is today's, not the one the first event saw). */
    int first = fresh && !sc->rescoring && contact == 0, changed = fresh || st.engaged_us != engaged_before;
    if (ev.f[LL_F_COUNTRY].len == 2 && memcmp(st.country, ev.f[LL_F_COUNTRY].base, 2) != 0) {
        memcpy(st.country, ev.f[LL_F_COUNTRY].base, 2);
        st.country[2] = '\0';
        changed = 1;
    }
    int gained = 0;
    uint16_t n = 0;
    /* Opens and clicks classified as anything but human never score (nor alert). */
    for (size_t i = 0; human && i < conf->num_rules; i++) {
        const ll_score_rule_t *r = &conf->rules[i];
        if (!rule_matches(r, &ev))
            continue;
        int pts = r->points, withheld = 0;
        if (r->cap_per_day > 0) {
            uint32_t day = (uint32_t)(ev.time_us / DAY_US);
            uint16_t scratch = 0, *used = &scratch;
            if (day > st.cap_day) {
                st.cap_day = day;
                st.num_caps = 0;
            }
            if (day == st.cap_day) {
                size_t c = 0;
                while (c < st.num_caps && st.caps[c].rule != i)
                    c++;
                if (c == st.num_caps && c < LL_SCORE_MAX_CAPS) {
                    st.caps[c].rule = (uint16_t)i, st.caps[c].used = 0;
                    st.num_caps++;
                }
                if (c < st.num_caps)
                    used = &st.caps[c].used;
            }
            int room = r->cap_per_day - *used;
            int mag = abs(pts);
            if (mag > room) {
                withheld = mag - (room > 0 ? room : 0);
                mag = room > 0 ? room : 0;
                pts = pts < 0 ? -mag : mag;
            }
            *used = (uint16_t)(*used + mag > 65535 ? 65535 : *used + mag);
        }
        /* Lazy decay: bring the value to the later of the two times, then add. An event older
         * than the state (attributed on binding) adds its points already decayed. */
        if (ev.time_us >= st.engaged_us) {
            st.engagement *= decay_factor(conf, st.engaged_us, ev.time_us);
            st.engaged_us = ev.time_us;
            st.engagement += pts;
        } else {
            st.engagement += pts * decay_factor(conf, ev.time_us, st.engaged_us);
        }
        if (pts > 0)
            gained = 1;
        ll_ledger_rec_t lr;
        memset(&lr, 0, sizeof(lr));
        lr.time_us = ev.time_us, lr.seq = ev.seq, lr.points = pts, lr.capped = withheld, lr.after = st.engagement;
        lr.event_type = ev.type;
        memcpy(lr.rule, r->name, strnlen(r->name, sizeof(lr.rule) - 1)); /* lr zeroed: no printf a row */
        if ((rc = ll__ledger_put(sc, t, ev.contact, n++, &lr)) != 0)
            return rc;
        changed = 1;
    }
    /* Fit is recomputed when the profile may have changed, and the first time a contact scores
     * (a contact imported or added by hand gets its grade with its first event). */
    if (conf->num_fit > 0 && (first || profile_changed || ev.type == LL_EV_FORM || ev.type == LL_EV_IDENTIFY ||
                              (ev.f[LL_F_COUNTRY].len == 2 && changed))) {
        int32_t fit_before = st.fit;
        if ((rc = update_fit(sc, t, ev.contact, &st, &ev, &n)) != 0)
            return rc;
        changed |= fit_before != st.fit;
    }
    if (changed) {
        st.updated_us = ev.time_us;
        if ((rc = ll__score_put(sc, t, ev.contact, &st)) != 0)
            return rc;
    }
    if (sc->rescoring || !human)
        return 0;
    if ((rc = ll__lead_on_activity(sc, t, ev.contact, &ev, &st)) != 0)
        return rc;
    double now_score = ll_score_decayed(conf, &st, ev.time_us);
    if (gained && conf->threshold > 0 && now_score + 1e-9 >= conf->threshold)
        return ll__lead_on_ready(sc, t, ev.contact, &st, ev.seq, ev.time_us);
    return 0;
}

/* ---- rescore ---- */

/* A contact whose fit was never computed while replaying (no form, no identify) gets it once,
 * as a row after its last event (row numbers from 0x8000 keep clear of that event's own). */
static int fit_at_end(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, uint64_t seq, uint64_t time_us)
{
    ll_score_state_t st;
    int rc = ll_score_get(sc, t, contact, &st);
    if (rc == LL_ENOTFOUND) {
        memset(&st, 0, sizeof(st));
        st.version = STATE_VERSION;
    } else if (rc != 0) {
        return rc;
    }
    ll_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.seq = seq, ev.time_us = time_us, ev.contact = contact;
    int32_t before = st.fit;
    uint64_t engaged = st.engaged_us;
    uint16_t n = 0x8000;
    sc->replay_prev_seq = seq;
    if ((rc = replay_reset(sc, t, contact, &st, UINT64_MAX)) != 0) /* a recycle after the last event */
        return rc;
    if (sc->conf->num_fit > 0 && (rc = update_fit(sc, t, contact, &st, &ev, &n)) != 0)
        return rc;
    return st.fit != before || st.engaged_us != engaged ? ll__score_put(sc, t, contact, &st) : 0;
}

int ll_score_rescore(ll_scorer_t *sc, ll_txn_t *t, uint64_t *n)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc;
    *n = 0;
    if ((rc = mdb_drop(t->txn, sc->scores, 0)) != 0 || (rc = mdb_drop(t->txn, sc->ledger, 0)) != 0 ||
        (rc = mdb_cursor_open(t->txn, ll_store_dbi(t->store, LL_DB_CONTACT_EVENTS), &cur)) != 0)
        return ll_store_err(rc);
    /* Contact by contact, each timeline in seq order: this includes the anonymous events a
     * binding attributed, whose records carry no contact. */
    sc->rescoring = 1;
    uint64_t prev = 0, prev_seq = 0, prev_time = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint64_t contact = rc == 0 && k.mv_size == 8 ? ll_be64_get(k.mv_data) : 0;
        if (rc == 0 && (k.mv_size != 8 || v.mv_size != 8))
            continue;
        if (prev != 0 && contact != prev && (rc == 0 || rc == MDB_NOTFOUND)) {
            int r2 = fit_at_end(sc, t, prev, prev_seq, prev_time);
            if (r2 != 0) {
                rc = r2;
                break;
            }
        }
        if (rc != 0)
            break;
        if (contact != prev) {
            /* A new timeline: its lead's last recycle is replayed where it happened. */
            ll_lead_t l;
            sc->replay_recycled_us = 0;
            sc->replay_prev_seq = 0;
            if (ll_lead_get(sc, t, contact, &l) == 0 && l.recycled_us != 0) {
                sc->replay_recycled_us = l.recycled_us;
                snprintf(sc->replay_why, sizeof(sc->replay_why), "%s", l.recycle_why[0] ? l.recycle_why : "recycle");
            }
        }
        MDB_val ek = {8, v.mv_data}, ev;
        if ((rc = mdb_get(t->txn, ll_store_dbi(t->store, LL_DB_EVENTS), &ek, &ev)) != 0)
            break;
        (*n)++;
        if (contact == prev)
            sc->replay_prev_seq = prev_seq;
        prev = contact, prev_seq = ll_be64_get(v.mv_data);
        prev_time = ev.mv_size >= LL_EVENT_HEADER ? ll_be64_get((const uint8_t *)ev.mv_data + 12) : 0;
        if ((rc = ll_score_event(sc, t, ev.mv_data, ev.mv_size, contact, 0)) != 0)
            break;
    }
    sc->rescoring = 0;
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc < 0 ? rc : ll_store_err(rc);
}
