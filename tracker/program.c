/* Nurture state in LMDB: enrollments, the due index and send records (program.h). */
#include <string.h>
#include <time.h>
#include "leadloop/program.h"

#define ENR_VERSION 1
#define ENR_LEN 44
#define SEND_VERSION 1
#define SEND_FIXED 42

int ll_nurture_open(ll_store_t *s, ll_nurture_t *out)
{
    int rc;
    out->store = s;
    if ((rc = ll_store_open_db(s, "enrollments", 0, &out->enrollments)) != 0 ||
        (rc = ll_store_open_db(s, "due", 0, &out->due)) != 0 || (rc = ll_store_open_db(s, "sends", 0, &out->sends)) != 0)
        return rc;
    return 0;
}

const char *ll_exit_reason_name(int r)
{
    static const char *const names[] = {"-", "unenrolled", "unsubscribed", "bounced", "do-not-contact", "goal",
                                        "sales-ready", "program removed"};
    return r >= 0 && r < (int)(sizeof(names) / sizeof(names[0])) ? names[r] : "unknown";
}

const char *ll_send_state_name(int st)
{
    static const char *const names[] = {"?", "intent", "committed", "accepted", "bounced", "failed"};
    return st >= 0 && st < (int)(sizeof(names) / sizeof(names[0])) ? names[st] : "unknown";
}

/* ---- enrollments ---- */

static size_t enr_key(uint8_t *k, uint64_t contact, const char *program)
{
    size_t n = strnlen(program, LL_PROGRAM_ID_MAX - 1);
    ll_be64_put(k, contact);
    memcpy(k + 8, program, n);
    return 8 + n;
}

int ll_enrollment_get(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, const char *program, ll_enrollment_t *e)
{
    uint8_t k[8 + LL_PROGRAM_ID_MAX];
    MDB_val key = {enr_key(k, contact, program), k}, v;
    int rc = mdb_get(t->txn, n->enrollments, &key, &v);
    if (rc != 0)
        return ll_store_err(rc);
    const uint8_t *p = v.mv_data;
    if (v.mv_size < ENR_LEN || p[0] != ENR_VERSION)
        return LL_EINVAL;
    memset(e, 0, sizeof(*e));
    e->state = p[1];
    e->exit_reason = p[2];
    e->step = (uint16_t)(p[4] << 8 | p[5]);
    e->attempts = ll_be32_get(p + 6);
    e->enrolled_us = ll_be64_get(p + 10);
    e->last_us = ll_be64_get(p + 18);
    e->next_us = ll_be64_get(p + 26);
    e->send = ll_be64_get(p + 34);
    return 0;
}

int ll_enrollment_put(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, const char *program, const ll_enrollment_t *e)
{
    uint8_t k[8 + LL_PROGRAM_ID_MAX], p[ENR_LEN] = {0};
    p[0] = ENR_VERSION;
    p[1] = e->state;
    p[2] = e->exit_reason;
    p[4] = (uint8_t)(e->step >> 8);
    p[5] = (uint8_t)e->step;
    ll_be32_put(p + 6, e->attempts);
    ll_be64_put(p + 10, e->enrolled_us);
    ll_be64_put(p + 18, e->last_us);
    ll_be64_put(p + 26, e->next_us);
    ll_be64_put(p + 34, e->send);
    MDB_val key = {enr_key(k, contact, program), k}, v = {sizeof(p), p};
    return ll_store_err(mdb_put(t->txn, n->enrollments, &key, &v, 0));
}

/* ---- the due index ---- */

static size_t due_key(uint8_t *k, uint64_t at, uint64_t contact, const char *program)
{
    ll_be64_put(k, at);
    return 8 + enr_key(k + 8, contact, program);
}

static int due_put(ll_nurture_t *n, ll_txn_t *t, uint64_t at, uint64_t contact, const char *program)
{
    uint8_t k[16 + LL_PROGRAM_ID_MAX];
    MDB_val key = {due_key(k, at, contact, program), k}, v = {0, ""};
    return ll_store_err(mdb_put(t->txn, n->due, &key, &v, 0));
}

static int due_del(ll_nurture_t *n, ll_txn_t *t, uint64_t at, uint64_t contact, const char *program)
{
    uint8_t k[16 + LL_PROGRAM_ID_MAX];
    MDB_val key = {due_key(k, at, contact, program), k};
    int rc = mdb_del(t->txn, n->due, &key, NULL);
    return rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

int ll_nurture_due_drop(ll_nurture_t *n, ll_txn_t *t, uint64_t at_us, uint64_t contact, const char *program)
{
    return due_del(n, t, at_us, contact, program);
}

static uint64_t add_months(uint64_t us, int months)
{
    time_t secs = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int mday = tm.tm_mday;
    tm.tm_mon += months;
    tm.tm_mday = 1;
    time_t first = timegm(&tm);
    gmtime_r(&first, &tm);
    /* The 31st plus a month is the last day of the shorter month, not a day in the next. */
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y = tm.tm_year + 1900, last = mdays[tm.tm_mon] + (tm.tm_mon == 1 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
    tm.tm_mday = mday < last ? mday : last;
    return (uint64_t)timegm(&tm) * 1000000u + us % 1000000u;
}

uint64_t ll_program_step_due(const ll_program_t *p, size_t step, uint64_t enrolled_us, uint64_t last_us)
{
    const ll_step_t *s = &p->steps[step];
    uint64_t base = s->after_enrolment || step == 0 ? enrolled_us : last_us;
    if (s->delay_months != 0)
        base = add_months(base, s->delay_months);
    return base + s->delay_s * 1000000u;
}

int ll_nurture_enroll(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, const ll_program_t *p, uint64_t now_us)
{
    ll_enrollment_t e;
    ll_contact_t c;
    int rc = ll_contact_get(t, contact, &c);
    if (rc != 0)
        return rc;
    uint32_t flags = c.flags;
    ll_contact_clear(&c);
    if (flags & (LL_CF_UNSUBSCRIBED | LL_CF_BOUNCED | LL_CF_DO_NOT_CONTACT))
        return LL_EINVAL;
    rc = ll_enrollment_get(n, t, contact, p->id, &e);
    if (rc == 0 && (e.state == LL_ENR_ACTIVE || !p->reentry))
        return LL_EEXIST;
    if (rc != 0 && rc != LL_ENOTFOUND)
        return rc;
    memset(&e, 0, sizeof(e));
    e.state = LL_ENR_ACTIVE;
    e.enrolled_us = e.last_us = now_us;
    e.next_us = ll_program_step_due(p, 0, now_us, now_us);
    if ((rc = ll_enrollment_put(n, t, contact, p->id, &e)) != 0)
        return rc;
    return due_put(n, t, e.next_us, contact, p->id);
}

int ll_nurture_exit(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, const char *program, int reason)
{
    ll_enrollment_t e;
    int rc = ll_enrollment_get(n, t, contact, program, &e);
    if (rc != 0)
        return rc;
    if (e.state != LL_ENR_ACTIVE)
        return LL_ENOTFOUND;
    if ((rc = due_del(n, t, e.next_us, contact, program)) != 0)
        return rc;
    e.state = LL_ENR_EXITED;
    e.exit_reason = (uint8_t)reason;
    return ll_enrollment_put(n, t, contact, program, &e);
}

int ll_nurture_exit_all(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, int reason)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint8_t ck[8];
    char ids[LL_MAX_PROGRAMS][LL_PROGRAM_ID_MAX];
    size_t nids = 0;
    int rc = mdb_cursor_open(t->txn, n->enrollments, &cur);
    if (rc != 0)
        return ll_store_err(rc);
    ll_be64_put(ck, contact);
    k.mv_size = 8, k.mv_data = ck;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && nids < LL_MAX_PROGRAMS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 8 || memcmp(k.mv_data, ck, 8) != 0 || k.mv_size - 8 >= LL_PROGRAM_ID_MAX)
            break;
        memcpy(ids[nids], (char *)k.mv_data + 8, k.mv_size - 8);
        ids[nids++][k.mv_size - 8] = '\0';
    }
    mdb_cursor_close(cur);
    for (size_t i = 0; i < nids; i++) {
        rc = ll_nurture_exit(n, t, contact, ids[i], reason);
        if (rc != 0 && rc != LL_ENOTFOUND)
            return rc;
    }
    return 0;
}

int ll_nurture_reschedule(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, const char *program, ll_enrollment_t *e,
                          uint64_t at_us)
{
    int rc;
    if ((rc = due_del(n, t, e->next_us, contact, program)) != 0)
        return rc;
    e->next_us = at_us;
    if ((rc = ll_enrollment_put(n, t, contact, program, e)) != 0)
        return rc;
    return due_put(n, t, at_us, contact, program);
}

int ll_nurture_due_scan(ll_nurture_t *n, ll_txn_t *t, uint64_t now_us, ll_due_cb cb, void *ctx)
{
    MDB_cursor *cur;
    MDB_val k, v;
    char program[LL_PROGRAM_ID_MAX];
    int rc = mdb_cursor_open(t->txn, n->due, &cur);
    if (rc != 0)
        return ll_store_err(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= 16 || k.mv_size - 16 >= LL_PROGRAM_ID_MAX)
            continue;
        uint64_t at = ll_be64_get(k.mv_data);
        if (at > now_us)
            break;
        memcpy(program, (char *)k.mv_data + 16, k.mv_size - 16);
        program[k.mv_size - 16] = '\0';
        if (cb(at, ll_be64_get((uint8_t *)k.mv_data + 8), program, ctx) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

/* ---- sends ---- */

int ll_send_next_id(ll_nurture_t *n, ll_txn_t *t, uint64_t *id)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(t->txn, n->sends, &cur);
    if (rc != 0)
        return ll_store_err(rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) {
        *id = 1;
        return 0;
    }
    if (rc != 0)
        return ll_store_err(rc);
    *id = k.mv_size == 8 ? ll_be64_get(k.mv_data) + 1 : 1;
    return 0;
}

static int send_decode(const MDB_val *k, const MDB_val *v, ll_send_t *s)
{
    const uint8_t *p = v->mv_data;
    if (k->mv_size != 8 || v->mv_size < SEND_FIXED || p[0] != SEND_VERSION || v->mv_size - SEND_FIXED >= LL_PROGRAM_ID_MAX)
        return LL_EINVAL;
    memset(s, 0, sizeof(*s));
    s->id = ll_be64_get(k->mv_data);
    s->state = p[1];
    s->step = (uint16_t)(p[2] << 8 | p[3]);
    s->contact = ll_be64_get(p + 4);
    s->created_us = ll_be64_get(p + 12);
    s->accepted_us = ll_be64_get(p + 20);
    s->smtp_code = ll_be32_get(p + 28);
    memcpy(s->program, p + SEND_FIXED, v->mv_size - SEND_FIXED);
    return 0;
}

int ll_send_get(ll_nurture_t *n, ll_txn_t *t, uint64_t id, ll_send_t *s)
{
    uint8_t kb[8];
    ll_be64_put(kb, id);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(t->txn, n->sends, &k, &v);
    if (rc != 0)
        return ll_store_err(rc);
    return send_decode(&k, &v, s);
}

int ll_send_put(ll_nurture_t *n, ll_txn_t *t, const ll_send_t *s)
{
    uint8_t kb[8], p[SEND_FIXED + LL_PROGRAM_ID_MAX] = {0};
    size_t pl = strnlen(s->program, LL_PROGRAM_ID_MAX - 1);
    ll_be64_put(kb, s->id);
    p[0] = SEND_VERSION;
    p[1] = s->state;
    p[2] = (uint8_t)(s->step >> 8);
    p[3] = (uint8_t)s->step;
    ll_be64_put(p + 4, s->contact);
    ll_be64_put(p + 12, s->created_us);
    ll_be64_put(p + 20, s->accepted_us);
    ll_be32_put(p + 28, s->smtp_code);
    memcpy(p + SEND_FIXED, s->program, pl);
    MDB_val k = {8, kb}, v = {SEND_FIXED + pl, p};
    return ll_store_err(mdb_put(t->txn, n->sends, &k, &v, 0));
}

static int send_walk(ll_nurture_t *n, ll_txn_t *t, int newest_first, ll_send_cb cb, void *ctx)
{
    MDB_cursor *cur;
    MDB_val k, v;
    ll_send_t s;
    int rc = mdb_cursor_open(t->txn, n->sends, &cur);
    if (rc != 0)
        return ll_store_err(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, newest_first ? MDB_LAST : MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, newest_first ? MDB_PREV : MDB_NEXT))
        if (send_decode(&k, &v, &s) == 0 && cb(&s, ctx) != 0)
            break;
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

int ll_send_scan(ll_nurture_t *n, ll_txn_t *t, ll_send_cb cb, void *ctx)
{
    return send_walk(n, t, 0, cb, ctx);
}

int ll_send_scan_rev(ll_nurture_t *n, ll_txn_t *t, ll_send_cb cb, void *ctx)
{
    return send_walk(n, t, 1, cb, ctx);
}
