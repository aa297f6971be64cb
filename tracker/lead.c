/*
 * Leads (score.h): the hand-off of a sales-ready contact, its lifecycle stage, the SLA pass,
 * and the alerts they raise. Alerts carry their reasons (score, grade, last events, routing
 * rule) and an id made of the contact, the event seq (for an SLA breach, the missed deadline in
 * unix seconds) and the kind, so a receiver can drop a repeat (the notifier sends it, with the
 * webhook's name, as the Idempotency-Key).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "score_int.h"

#define LEAD_VERSION 1
#define LAST_EVENTS 5

int ll_lead_get(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_lead_t *out)
{
    uint8_t kb[8];
    ll_be64_put(kb, contact);
    MDB_val k = {8, kb}, v;
    int rc = ll_txn_get(t, sc->leads, &k, &v);
    memset(out, 0, sizeof(*out));
    if (rc != 0)
        return ll_store_err(rc);
    if (v.mv_size != sizeof(*out))
        return LL_EINVAL;
    memcpy(out, v.mv_data, sizeof(*out));
    return 0;
}

/* When the SLA pass must look at a lead next: its accept deadline while it waits, or the end of
 * its idle allowance once accepted. 0: never. */
static uint64_t due_at(const ll_score_conf_t *conf, const ll_lead_t *l)
{
    if (l->stage == LL_STAGE_MQL && !l->escalated)
        return l->accept_by_us;
    if (l->stage == LL_STAGE_ACCEPTED && conf->recycle_days > 0)
        return l->last_activity_us + (uint64_t)conf->recycle_days * 86400000000ULL;
    return 0;
}

/* The sla_due index: (due time, contact) -> "", so the pass reads only what is due. */
static int due_index(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, uint64_t when, int add)
{
    uint8_t kb[16];
    ll_be64_put(kb, when);
    ll_be64_put(kb + 8, contact);
    MDB_val k = {16, kb}, v = {0, ""};
    int rc = add ? mdb_put(t->txn, sc->sla_due, &k, &v, 0) : mdb_del(t->txn, sc->sla_due, &k, NULL);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

/* Puts l, whose stored version is due at was (0: none or never), and moves its sla_due row. */
static int lead_write(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, uint64_t was, const ll_lead_t *l)
{
    uint8_t kb[8];
    ll_be64_put(kb, contact);
    ll_lead_t copy = *l;
    copy.version = LEAD_VERSION;
    copy.updated_us = ll_now_us();
    uint64_t now = due_at(sc->conf, &copy);
    int rc;
    if (was != now && ((was != 0 && (rc = due_index(sc, t, contact, was, 0)) != 0) ||
                       (now != 0 && (rc = due_index(sc, t, contact, now, 1)) != 0)))
        return rc;
    MDB_val k = {8, kb}, v = {sizeof(copy), &copy};
    return ll_store_err(ll_txn_put(t, sc->leads, &k, &v, 0));
}

int ll_lead_put(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, const ll_lead_t *l)
{
    ll_lead_t old;
    int rc = ll_lead_get(sc, t, contact, &old);
    if (rc != 0 && rc != LL_ENOTFOUND && rc != LL_EINVAL)
        return rc;
    return lead_write(sc, t, contact, rc == 0 ? due_at(sc->conf, &old) : 0, l);
}

int ll_lead_each(ll_scorer_t *sc, ll_txn_t *t, ll_lead_cb cb, void *ctx)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(t->txn, sc->leads, &cur);
    if (rc != 0)
        return ll_store_err(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        ll_lead_t l;
        if (k.mv_size != 8 || v.mv_size != sizeof(l))
            continue;
        memcpy(&l, v.mv_data, sizeof(l));
        if ((rc = cb(ll_be64_get(k.mv_data), &l, ctx)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc > 0 ? ll_store_err(rc) : rc;
}

/* ---- alerts ---- */

/* The last few events of the contact's timeline, newest first, as a JSON array. */
typedef struct {
    ll_buf_t *b;
    int n;
} last_t;

static int on_last_event(const ll_event_t *ev, void *arg)
{
    last_t *l = arg;
    char iso[32];
    ll__iso(ev->time_us, iso);
    ll_buf_printf(l->b, "%s{\"seq\":%llu,\"type\":\"%s\",\"time\":\"%s\"", l->n ? "," : "",
                  (unsigned long long)ev->seq, ll_event_type_name(ev->type), iso);
    static const int show[] = {LL_F_URL, LL_F_FORM, LL_F_PROGRAM, LL_F_STEP};
    for (size_t i = 0; i < sizeof(show) / sizeof(show[0]); i++) {
        if (ev->f[show[i]].len == 0)
            continue;
        ll_buf_printf(l->b, ",\"%s\":\"", ll_field_name(show[i]));
        ll_buf_append_json_str(l->b, ev->f[show[i]].base, ev->f[show[i]].len);
        ll_buf_appends(l->b, "\"");
    }
    ll_buf_appends(l->b, "}");
    return ++l->n >= LAST_EVENTS;
}

static int last_events(ll_txn_t *t, uint64_t contact, ll_buf_t *b)
{
    last_t l = {b, 0};
    ll_buf_appends(b, "[");
    int rc = ll_events_of_contact_rev(t, contact, on_last_event, &l);
    ll_buf_appends(b, "]");
    return rc;
}

int ll__alert(ll_scorer_t *sc, ll_txn_t *t, const char *kind, uint64_t contact, const ll_lead_t *l, uint64_t seq,
              const char *why, const char *to)
{
    const ll_score_conf_t *conf = sc->conf;
    ll_contact_t c;
    ll_score_state_t st;
    int rc = ll_contact_get(t, contact, &c);
    if (rc != 0)
        return rc == LL_ENOTFOUND ? 0 : rc;
    if ((rc = ll_score_get(sc, t, contact, &st)) != 0 && rc != LL_ENOTFOUND && rc != LL_EINVAL) {
        ll_contact_clear(&c);
        return rc;
    }
    uint64_t now = ll_now_us();
    char iso[32];
    ll__iso(now, iso);
    ll_buf_t b;
    ll_buf_init(&b, 64 * 1024);
    ll_buf_printf(&b, "{\"id\":\"%llu-%llu-%s\",\"alert\":\"%s\",\"time\":\"%s\",\"why\":\"",
                  (unsigned long long)contact, (unsigned long long)seq, kind, kind, iso);
    ll_buf_append_json_str(&b, why, strlen(why));
    ll_buf_printf(&b, "\",\"to\":\"");
    ll_buf_append_json_str(&b, to, strlen(to));
    ll_buf_printf(&b, "\",\"contact\":{\"id\":%llu,\"email\":\"", (unsigned long long)contact);
    ll_buf_append_json_str(&b, c.email, strlen(c.email));
    /* The profile is bounded by the forms' kept fields, but many forms merge into one: past 16 KB
     * the alert carries the email and says the fields were left out. */
    const char *fields = c.fields_json ? c.fields_json : "{}";
    if (strlen(fields) > 16384)
        fields = "{\"_truncated\":true}";
    ll_buf_printf(&b, "\",\"fields\":%s},", fields);
    ll_buf_printf(&b, "\"score\":%.0f,\"threshold\":%d,\"fit\":%d,\"grade\":\"%c\",", ll_score_decayed(conf, &st, now),
                  conf->threshold, st.fit, ll_score_grade(conf, st.fit));
    if (l != NULL) {
        ll_buf_printf(&b, "\"stage\":\"%s\",\"owner\":\"", ll_stage_name(l->stage));
        ll_buf_append_json_str(&b, l->owner, strlen(l->owner));
        ll_buf_appends(&b, "\",\"routing_rule\":\"");
        ll_buf_append_json_str(&b, l->rule, strlen(l->rule));
        ll_buf_appends(&b, "\",");
        if (l->accept_by_us != 0) {
            ll__iso(l->accept_by_us, iso);
            ll_buf_printf(&b, "\"accept_by\":\"%s\",", iso);
        }
    }
    ll_buf_appends(&b, "\"last_events\":");
    rc = last_events(t, contact, &b);
    ll_buf_appends(&b, "}");
    ll_contact_clear(&c);
    if (rc == 0)
        rc = b.len < b.limit ? ll_outbox_alert(sc, t, to, b.data, b.len) : LL_ETOOBIG;
    ll_buf_free(&b);
    return rc;
}

/* ---- hand-off ---- */

static int assign(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_lead_t *l, const char *exclude)
{
    ll_contact_t c;
    ll_score_state_t st;
    int rc = ll_contact_get(t, contact, &c);
    if (rc != 0)
        return rc;
    if ((rc = ll_score_get(sc, t, contact, &st)) != 0 && rc != LL_ENOTFOUND) {
        ll_contact_clear(&c);
        return rc;
    }
    rc = ll_route_pick(sc, t, c.fields_json, st.country[0] ? st.country : NULL, exclude, l->owner, l->rule);
    ll_contact_clear(&c);
    uint64_t now = ll_now_us();
    l->assigned_us = now;
    l->accept_by_us = sc->conf->accept_seconds > 0 ? now + (uint64_t)sc->conf->accept_seconds * 1000000 : 0;
    l->escalated = 0;
    return rc;
}

int ll__lead_on_ready(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, const ll_score_state_t *st, uint64_t seq,
                      uint64_t time_us)
{
    ll_lead_t l;
    int rc = ll_lead_get(sc, t, contact, &l);
    if (rc != 0 && rc != LL_ENOTFOUND)
        return rc;
    if (rc == 0 && l.stage != LL_STAGE_NONE && l.stage != LL_STAGE_INQUIRY && l.stage != LL_STAGE_RECYCLED)
        return 0;
    uint64_t recycled_us = rc == 0 ? l.recycled_us : 0;
    char recycle_why[sizeof(l.recycle_why)] = "";
    if (rc == 0)
        memcpy(recycle_why, l.recycle_why, sizeof(recycle_why));
    memset(&l, 0, sizeof(l));
    l.recycled_us = recycled_us; /* kept: a rescore replays the reset */
    memcpy(l.recycle_why, recycle_why, sizeof(recycle_why));
    l.stage = LL_STAGE_MQL;
    l.mql_us = time_us;
    l.last_activity_us = time_us;
    double score = ll_score_decayed(sc->conf, st, time_us);
    l.score_at_mql = (int32_t)(score + 0.5);
    l.grade_at_mql = ll_score_grade(sc->conf, st->fit);
    if ((rc = assign(sc, t, contact, &l, NULL)) != 0 || (rc = ll_lead_put(sc, t, contact, &l)) != 0)
        return rc;
    char why[512];
    snprintf(why, sizeof(why), "sales-ready: score %d reached the threshold %d (grade %c); routed by %s to %s",
             l.score_at_mql, sc->conf->threshold, l.grade_at_mql, l.rule, l.owner);
    return ll__alert(sc, t, "sales_ready", contact, &l, seq, why, l.owner);
}

int ll__lead_on_activity(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, const ll_event_t *ev,
                         const ll_score_state_t *st)
{
    ll_lead_t l;
    int rc = ll_lead_get(sc, t, contact, &l);
    if (rc != 0)
        return rc == LL_ENOTFOUND || rc == LL_EINVAL ? 0 : rc;
    if (ev->time_us > l.last_activity_us) { /* every event of a lead: no second read to put it */
        uint64_t was = due_at(sc->conf, &l);
        l.last_activity_us = ev->time_us;
        if ((rc = lead_write(sc, t, contact, was, &l)) != 0)
            return rc;
    }
    int owned = l.stage >= LL_STAGE_MQL && l.stage <= LL_STAGE_CUSTOMER && strcmp(l.owner, sc->conf->hopper) != 0;
    if (ev->type != LL_EV_CLICK || !owned)
        return 0;
    char why[512];
    snprintf(why, sizeof(why), "a click by a lead owned by %s (stage %s)", l.owner, ll_stage_name(l.stage));
    return ll__alert(sc, t, "owner_click", contact, &l, ev->seq, why, l.owner);
}

/* ---- by hand ---- */

int ll_lead_accept(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, uint64_t now_us)
{
    ll_lead_t l;
    int rc = ll_lead_get(sc, t, contact, &l);
    if (rc != 0)
        return rc;
    if (l.stage != LL_STAGE_MQL)
        return LL_EINVAL;
    l.stage = LL_STAGE_ACCEPTED;
    l.accepted_us = now_us;
    l.last_activity_us = now_us;
    return ll_lead_put(sc, t, contact, &l);
}

/* Recycling resets the engagement score, so the contact must earn its way back to sales-ready. */
static int recycle(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_lead_t *l, uint64_t now_us, const char *why)
{
    ll_score_state_t st;
    int rc = ll_score_get(sc, t, contact, &st);
    l->stage = LL_STAGE_RECYCLED;
    l->recycled_us = now_us;
    snprintf(l->recycle_why, sizeof(l->recycle_why), "%s", why);
    if (rc == 0) {
        /* The row goes after the contact's latest event, where a rescore puts it again. */
        if ((rc = ll__engagement_reset(sc, t, contact, &st, ll__contact_last_seq(t, contact), now_us, why)) != 0 ||
            (rc = ll__score_put(sc, t, contact, &st)) != 0)
            return rc;
    } else if (rc != LL_ENOTFOUND) {
        return rc;
    }
    return ll_lead_put(sc, t, contact, l);
}

int ll_lead_reject(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, uint64_t now_us)
{
    ll_lead_t l;
    int rc = ll_lead_get(sc, t, contact, &l);
    if (rc != 0)
        return rc;
    if (l.stage != LL_STAGE_MQL && l.stage != LL_STAGE_ACCEPTED)
        return LL_EINVAL;
    return recycle(sc, t, contact, &l, now_us, "recycle:rejected");
}

int ll_lead_set_stage(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, int stage, uint64_t now_us)
{
    ll_lead_t l;
    int rc = ll_lead_get(sc, t, contact, &l);
    if (rc != 0)
        return rc;
    if (stage == LL_STAGE_RECYCLED)
        return recycle(sc, t, contact, &l, now_us, "recycle:by-hand");
    if (stage < LL_STAGE_ACCEPTED || stage > LL_STAGE_CUSTOMER)
        return LL_EINVAL;
    l.stage = (uint8_t)stage;
    if (stage == LL_STAGE_ACCEPTED && l.accepted_us == 0)
        l.accepted_us = now_us;
    return ll_lead_put(sc, t, contact, &l);
}

/* ---- SLA ---- */

typedef struct {
    uint64_t contact;
    ll_lead_t l;
} due_t;

/* The leads due at now, from the sla_due index (at most max): a pass reads only those. */
static int collect_due(ll_scorer_t *sc, ll_txn_t *t, uint64_t now, size_t max, due_t **out, size_t *n)
{
    MDB_cursor *cur;
    MDB_val k, v;
    size_t cap = 0;
    int rc = mdb_cursor_open(t->txn, sc->sla_due, &cur);
    *out = NULL, *n = 0;
    if (rc != 0)
        return ll_store_err(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && *n < max; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 16)
            continue;
        if (ll_be64_get(k.mv_data) > now)
            break;
        uint64_t contact = ll_be64_get((const uint8_t *)k.mv_data + 8);
        ll_lead_t l;
        if (ll_lead_get(sc, t, contact, &l) != 0)
            continue;
        uint64_t when = due_at(sc->conf, &l);
        if (when == 0 || when > now)
            continue; /* stale entry (the configuration changed): put fixes it at the next change */
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = ll_realloc(*out, cap * sizeof(**out));
        }
        (*out)[*n].contact = contact;
        (*out)[*n].l = l;
        (*n)++;
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

int ll_lead_sla_due(ll_scorer_t *sc, ll_txn_t *t, uint64_t now_us)
{
    due_t *due;
    size_t n;
    collect_due(sc, t, now_us, 1, &due, &n);
    free(due);
    return n > 0;
}

int ll_lead_sla_pass(ll_scorer_t *sc, ll_txn_t *t, uint64_t now_us, int *changed)
{
    due_t *due;
    size_t num;
    int rc = collect_due(sc, t, now_us, 1000, &due, &num);
    *changed = 0;
    for (size_t i = 0; rc == 0 && i < num; i++) {
        ll_lead_t *l = &due[i].l;
        uint64_t contact = due[i].contact;
        char why[768];
        if (l->stage == LL_STAGE_ACCEPTED) {
            rc = recycle(sc, t, contact, l, now_us, "recycle:idle");
        } else {
            char was[LL_OWNER_MAX];
            uint64_t missed_us = l->accept_by_us;
            snprintf(was, sizeof(was), "%s", l->owner);
            l->escalated = 1;
            /* Reassigned at most reassign_max times: the breach after that stays with its owner
             * and stops the clock (escalated), as without reassign. */
            int again = sc->conf->reassign && l->reassigned < sc->conf->reassign_max;
            if (again) {
                if ((rc = assign(sc, t, contact, l, was)) != 0)
                    break;
                l->reassigned++;
            }
            if ((rc = ll_lead_put(sc, t, contact, l)) != 0)
                break;
            if (again)
                snprintf(why, sizeof(why), "SLA breach: %s did not accept within %d s; reassigned to %s", was,
                         sc->conf->accept_seconds, l->owner);
            else if (sc->conf->reassign)
                snprintf(why, sizeof(why), "SLA breach: %s did not accept within %d s; reassigned %u time%s, not again",
                         was, sc->conf->accept_seconds, (unsigned)l->reassigned, l->reassigned == 1 ? "" : "s");
            else
                snprintf(why, sizeof(why), "SLA breach: %s did not accept within %d s", was, sc->conf->accept_seconds);
            const char *to = sc->conf->escalate_to[0] ? sc->conf->escalate_to : was;
            /* The id's middle number is the missed deadline: a second breach (after a
             * reassignment) is a new alert, a retry of this one is not. */
            rc = ll__alert(sc, t, "sla_breach", contact, l, missed_us / 1000000, why, to);
        }
        (*changed)++;
    }
    free(due);
    return rc;
}
