/* People or machines: the verdict on email opens and clicks (see judge.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "leadloop/geo.h"
#include "leadloop/judge.h"
#include "leadloop/lists.h"
#include "leadloop/program.h"
#include "leadloop/score.h"

#define BURST_SCAN_MAX 64    /* events looked at for a burst (a sweep is a few dozen at most) */
#define VISITOR_SCAN_MAX 50  /* events looked at for a visitor's provisional clicks */
#define SEC 1000000ULL

/* Reasons that decide alone: the request or the network says machine. */
#define STRONG_REASONS                                                                                                 \
    (LL_REASON_BOT_UA | LL_REASON_HEAD | LL_REASON_PREFETCH_HDR | LL_REASON_NO_UA | LL_REASON_HEADLESS_UA |          \
     LL_REASON_PRERENDER | LL_REASON_SWEEP | LL_REASON_HONEYPOT_LINK | LL_REASON_IP_LIST | LL_REASON_ASN_LIST |      \
     LL_REASON_UA_LIST)

typedef struct {
    uint64_t send, until_us;
    uint32_t reason;
} machine_t;

typedef struct {
    uint8_t key[10]; /* as in judge_counts */
    int64_t delta;
} tally_t;

struct st_ll_judge_t {
    ll_store_t *store;
    const ll_config_t *conf;
    ll_nurture_t n;
    MDB_dbi pending, counts;
    ll_lists_t *lists;
    /* set by ll_judge_before() for ll_judge_after(): a burst of this send to relabel */
    struct {
        uint64_t send, contact, since_us;
        uint32_t reason;
    } burst;
    /* Sends found sweeping or hitting the honeypot lately, so that an open (which adds no link)
     * needs no scan of the log: direct-mapped by send id; lost on a restart (one window). */
    machine_t machine[1024];
    /* The counts added in the open write transaction, put once per key at its commit
     * (tally_commit, through ll_txn_defer): a batch of 500 opens of one message puts 4 counts,
     * not 2,000. v in the order added; slot (open addressing, a power of two, kept at most half
     * full) holds an index + 1 into v, 0 for empty. */
    struct {
        tally_t *v;
        size_t n, cap;
        uint32_t *slot;
        size_t nslot;
    } tally;
    /* On judge_pending, in the transaction the tally belongs to: due rows come in due order, so
     * each is appended where the last one went (pending_add); forgotten with the tally. */
    MDB_cursor *pending_end;
};

static uint32_t machine_burst(const ll_judge_t *j, uint64_t send, uint64_t at_us)
{
    const machine_t *m = &j->machine[send % (sizeof(j->machine) / sizeof(j->machine[0]))];
    return m->send == send && at_us <= m->until_us ? m->reason : 0;
}

static void machine_burst_set(ll_judge_t *j, uint64_t send, uint64_t until_us, uint32_t reason)
{
    machine_t *m = &j->machine[send % (sizeof(j->machine) / sizeof(j->machine[0]))];
    m->send = send, m->until_us = until_us, m->reason = reason;
}

static int is_message_event(const ll_event_t *ev)
{
    return (ev->type == LL_EV_OPEN || ev->type == LL_EV_CLICK) && ev->send != 0 && ev->contact != 0;
}

int ll_judge_open(ll_store_t *s, const ll_config_t *conf, ll_judge_t **out, char *err, size_t errlen)
{
    ll_judge_t *j = ll_calloc(1, sizeof(*j));
    int rc;
    j->store = s;
    j->conf = conf;
    if ((rc = ll_nurture_open(s, &j->n)) != 0 || (rc = ll_store_open_db(s, "judge_pending", 0, &j->pending)) != 0 ||
        (rc = ll_judge_counts_db(s, &j->counts)) != 0) {
        free(j);
        return ll_err(err, errlen, rc, "cannot open the judge's databases: %s", ll_strerror(rc));
    }
    *out = j;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (conf->scanner_lists != NULL && (rc = ll_lists_open(conf->scanner_lists, &j->lists, err, errlen)) != 0) {
        j->lists = NULL;
        /* The default directory may be absent (an install without deploy/): run without lists,
         * saying so; a configured one that is broken is an error. */
        if (rc == LL_ENOTFOUND)
            return 0;
        ll_judge_free(j);
        *out = NULL;
        return rc;
    }
    return 0;
}

void ll_judge_free(ll_judge_t *j)
{
    if (j == NULL)
        return;
    ll_lists_free(j->lists);
    free(j->tally.v);
    free(j->tally.slot);
    free(j);
}

/* ---- counts ---- */

int ll_judge_counts_db(ll_store_t *s, MDB_dbi *out)
{
    return ll_store_open_db(s, "judge_counts", 0, out);
}

MDB_dbi ll_judge_counts_dbi(const ll_judge_t *j)
{
    return j->counts;
}

size_t ll_judge_list_entries(const ll_judge_t *j)
{
    return j != NULL ? ll_lists_count(j->lists) : 0;
}

static void count_key(uint8_t kb[10], uint64_t send, char kind, uint8_t id)
{
    ll_be64_put(kb, send);
    kb[8] = (uint8_t)kind;
    kb[9] = id;
}

/* Adds delta to one count, found with one search: an existing count is overwritten where it is
 * (MDB_CURRENT, same size), a new one inserted. */
static int count_one(MDB_cursor *cur, const uint8_t kb[10], int64_t delta)
{
    uint8_t vb[8];
    MDB_val k = {10, (void *)kb}, v;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return ll_store_err(rc);
    uint64_t n = rc == 0 && v.mv_size == 8 ? ll_be64_get(v.mv_data) : 0;
    n = delta < 0 && n < (uint64_t)-delta ? 0 : n + (uint64_t)delta;
    ll_be64_put(vb, n);
    unsigned flags = rc == 0 && v.mv_size == 8 ? MDB_CURRENT : 0;
    v.mv_size = 8, v.mv_data = vb;
    return ll_store_err(mdb_cursor_put(cur, &k, &v, flags));
}

static size_t tally_hash(const uint8_t kb[10])
{
    uint64_t h = (ll_be64_get(kb) ^ ((uint64_t)kb[8] << 56 | (uint64_t)kb[9] << 48)) * 0x9e3779b97f4a7c15ull;
    return (size_t)(h ^ h >> 32);
}

/* The slot of key: where it is, or the empty slot where it goes. */
static uint32_t *tally_slot(ll_judge_t *j, const uint8_t kb[10])
{
    size_t mask = j->tally.nslot - 1;
    for (size_t i = tally_hash(kb) & mask;; i = (i + 1) & mask) {
        uint32_t *s = &j->tally.slot[i];
        if (*s == 0 || memcmp(j->tally.v[*s - 1].key, kb, 10) == 0)
            return s;
    }
}

static void tally_add(ll_judge_t *j, const uint8_t kb[10], int64_t delta)
{
    if (2 * (j->tally.n + 1) > j->tally.nslot) { /* grow, keeping the slots at most half full */
        j->tally.cap = j->tally.cap ? 2 * j->tally.cap : 64;
        j->tally.v = ll_realloc(j->tally.v, j->tally.cap * sizeof(*j->tally.v));
        free(j->tally.slot);
        j->tally.nslot = 2 * j->tally.cap;
        j->tally.slot = ll_calloc(j->tally.nslot, sizeof(*j->tally.slot));
        for (size_t i = 0; i < j->tally.n; i++)
            *tally_slot(j, j->tally.v[i].key) = (uint32_t)i + 1;
    }
    uint32_t *s = tally_slot(j, kb);
    if (*s == 0) {
        memcpy(j->tally.v[j->tally.n].key, kb, 10);
        j->tally.v[j->tally.n].delta = 0;
        *s = (uint32_t)++j->tally.n;
    }
    j->tally.v[*s - 1].delta += delta;
}

/* The transaction ended without the tally (ll_txn_defer's drop), or it was put. After a batch
 * far larger than usual the tables go, rather than being cleared at that size every commit. */
static void tally_drop(void *arg)
{
    ll_judge_t *j = arg;
    j->pending_end = NULL; /* LMDB closes it with the transaction */
    if (j->tally.nslot > 4096 && 16 * j->tally.n < j->tally.nslot) {
        free(j->tally.v);
        free(j->tally.slot);
        memset(&j->tally, 0, sizeof(j->tally));
        return;
    }
    if (j->tally.n > 0)
        memset(j->tally.slot, 0, j->tally.nslot * sizeof(*j->tally.slot));
    j->tally.n = 0;
}

static int tally_cmp(const void *a, const void *b)
{
    return memcmp(((const tally_t *)a)->key, ((const tally_t *)b)->key, 10);
}

/* At the commit (ll_txn_defer): each key's sum, in key order, one search and put each. */
static int tally_commit(void *arg, ll_txn_t *t)
{
    ll_judge_t *j = arg;
    MDB_cursor *cur = NULL;
    int rc = ll_store_err(mdb_cursor_open(t->txn, j->counts, &cur));
    qsort(j->tally.v, j->tally.n, sizeof(*j->tally.v), tally_cmp);
    for (size_t i = 0; i < j->tally.n && rc == 0; i++)
        if (j->tally.v[i].delta != 0)
            rc = count_one(cur, j->tally.v[i].key, j->tally.v[i].delta);
    if (cur != NULL)
        mdb_cursor_close(cur);
    tally_drop(j);
    return rc;
}

/* Adds delta to the send's and the total's counts of cls and of each reason, in the tally that
 * t's commit puts. */
static int count(ll_judge_t *j, ll_txn_t *t, uint64_t send, int cls, uint32_t reasons, int64_t delta)
{
    if (t->defer.arg != j && j->tally.n > 0)
        tally_drop(j); /* left by a transaction that never ended through ll_txn_commit or _abort */
    int rc = ll_txn_defer(t, tally_commit, tally_drop, j);
    uint8_t kb[10];
    for (int w = 0; w < 2 && rc == 0; w++) {
        uint64_t key = w == 0 ? send : 0;
        count_key(kb, key, 'c', (uint8_t)cls);
        tally_add(j, kb, delta);
        for (uint32_t m = reasons; m != 0; m &= m - 1) { /* each reason's bit, lowest first */
            count_key(kb, key, 'r', (uint8_t)__builtin_ctz(m));
            tally_add(j, kb, delta);
        }
    }
    return rc;
}

static void counts_add(ll_judge_counts_t *c, const MDB_val *k, const MDB_val *v)
{
    const uint8_t *kb = k->mv_data;
    uint64_t n = ll_be64_get(v->mv_data);
    if (kb[8] == 'c' && kb[9] < LL_CLASS__MAX)
        c->cls[kb[9]] += n;
    else if (kb[8] == 'r' && kb[9] < 32)
        c->reason[kb[9]] += n;
}

int ll_judge_counts(ll_txn_t *t, MDB_dbi dbi, uint64_t send, ll_judge_counts_t *out)
{
    MDB_cursor *cur;
    uint8_t kb[8];
    memset(out, 0, sizeof(*out));
    ll_be64_put(kb, send);
    MDB_val k = {8, kb}, v;
    int rc = mdb_cursor_open(t->txn, dbi, &cur);
    if (rc != 0)
        return ll_store_err(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 10 || v.mv_size != 8 || memcmp(k.mv_data, kb, 8) != 0)
            break;
        counts_add(out, &k, &v);
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

int ll_judge_counts_each(ll_txn_t *t, MDB_dbi dbi, ll_judge_counts_cb cb, void *ctx)
{
    MDB_cursor *cur;
    MDB_val k, v;
    ll_judge_counts_t c;
    uint64_t cur_send = 0;
    int rc = mdb_cursor_open(t->txn, dbi, &cur), have = 0, stop = 0;
    if (rc != 0)
        return ll_store_err(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && !stop; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 10 || v.mv_size != 8)
            continue;
        uint64_t send = ll_be64_get(k.mv_data);
        if (send == 0)
            continue; /* the total */
        if (have && send != cur_send) {
            stop = cb(cur_send, &c, ctx) != 0;
            have = 0;
        }
        if (!have) {
            memset(&c, 0, sizeof(c));
            cur_send = send;
            have = 1;
        }
        counts_add(&c, &k, &v);
    }
    if (have && !stop)
        cb(cur_send, &c, ctx);
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

/* ---- records ---- */

/* Rewrites the stored record seq with a new class, reasons and flags (through a copy: a value
 * LMDB returns may point into a read-only page). */
static int rewrite(ll_txn_t *t, uint64_t seq, int cls, uint32_t reasons, uint8_t flags)
{
    uint8_t kb[8];
    ll_be64_put(kb, seq);
    MDB_val k = {8, kb}, v;
    MDB_dbi dbi = ll_store_dbi(t->store, LL_DB_EVENTS);
    int rc = mdb_get(t->txn, dbi, &k, &v);
    if (rc != 0)
        return ll_store_err(rc);
    if (v.mv_size < LL_EVENT_HEADER)
        return LL_EINVAL;
    uint8_t *copy = ll_malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    ll_event_patch_class(copy, (uint8_t)cls, reasons);
    ll_event_patch_flags(copy, flags);
    MDB_val nv = {v.mv_size, copy};
    rc = ll_store_err(mdb_put(t->txn, dbi, &k, &nv, 0));
    free(copy);
    return rc;
}

/* The final label of an open or click from its reasons (judge.h). cls is the label so far. */
static int label(int type, int cls, uint32_t reasons)
{
    if (reasons & STRONG_REASONS)
        return cls == LL_CLASS_BOT || cls == LL_CLASS_PREFETCH || cls == LL_CLASS_SCANNER ? cls : LL_CLASS_SCANNER;
    if (reasons & LL_REASON_WEBDRIVER)
        return LL_CLASS_BOT;
    if (type == LL_EV_CLICK) {
        if (reasons & LL_REASON_JS_AFTER)
            return LL_CLASS_HUMAN;
        if (reasons & LL_REASON_FAST)
            return LL_CLASS_SCANNER;
        return reasons & LL_REASON_BROWSER_UA ? LL_CLASS_LIKELY_HUMAN : LL_CLASS_UNKNOWN;
    }
    return reasons & LL_REASON_FAST ? LL_CLASS_UNKNOWN : LL_CLASS_LIKELY_HUMAN;
}

/* ---- before the append ---- */

typedef struct {
    const ll_event_t *ev;
    uint64_t since_us;
    uint32_t links[8];
    size_t nlinks;
    int honeypot, in_order, looked;
} burst_t;

static int on_burst_event(const ll_event_t *e, void *arg)
{
    burst_t *b = arg;
    if (e->time_us < b->since_us || ++b->looked > BURST_SCAN_MAX)
        return 1; /* newest first: everything further is older (and a flood is not rescanned) */
    if (e->send != b->ev->send || (e->type != LL_EV_CLICK && e->type != LL_EV_OPEN))
        return 0;
    if (e->reasons & LL_REASON_HONEYPOT_LINK)
        b->honeypot = 1;
    if (e->type != LL_EV_CLICK)
        return b->honeypot;
    if (e->link == LL_LINK_HONEYPOT)
        b->honeypot = 1;
    /* An earlier link of the document clicked just before (within a second): document order. */
    if (b->ev->type == LL_EV_CLICK && e->link < b->ev->link && b->ev->time_us - e->time_us <= SEC &&
        e->link != LL_LINK_HONEYPOT && b->ev->link != LL_LINK_HONEYPOT)
        b->in_order = 1;
    size_t i = 0;
    while (i < b->nlinks && b->links[i] != e->link)
        i++;
    if (i == b->nlinks && b->nlinks < sizeof(b->links) / sizeof(b->links[0]))
        b->links[b->nlinks++] = e->link;
    return b->honeypot || b->nlinks >= 3 || b->in_order; /* decided: no need to look further */
}

/* Events found by a scan, changed after it (never while a cursor walks the index). */
typedef struct {
    struct {
        uint64_t seq, send;
        uint8_t type, cls, flags;
        uint32_t reasons;
    } v[BURST_SCAN_MAX];
    size_t n;
    uint64_t since_us, send, skip_seq;
    int looked;
    uint64_t now_us;   /* the visitor's look-back: the snippet event's time */
    uint32_t adds;     /* and the reason it adds (LL_REASON_JS_AFTER or LL_REASON_WEBDRIVER) */
} found_t;

static void found_add(found_t *f, const ll_event_t *e)
{
    if (f->n == sizeof(f->v) / sizeof(f->v[0]))
        return;
    f->v[f->n].seq = e->seq, f->v[f->n].send = e->send, f->v[f->n].type = e->type;
    f->v[f->n].cls = e->cls, f->v[f->n].flags = e->flags, f->v[f->n].reasons = e->reasons;
    f->n++;
}

/* The reason a snippet event adds to its visitor's provisional clicks. */
static uint32_t js_adds(uint32_t reasons)
{
    return reasons & LL_REASON_WEBDRIVER ? LL_REASON_WEBDRIVER : LL_REASON_JS_AFTER;
}

/*
 * A visitor's provisional clicks of sends within the window. The look-back stops at the
 * visitor's previous snippet event that added the same reason and is no later than this one:
 * its own look-back (the judge is always on in leadloopd, the only writer of snippet events)
 * already gave that reason to every provisional click older than it within its window (which
 * began no later than this one's) and its 50 events (which reach at least as far back). So a
 * visitor's next page view looks at the events since its last one, not at 50 (a beacon of 20
 * page views from one visitor looked at 50 events each: 72% of the writer's instructions).
 * Left aside: when a restart makes provisional_s longer, the clicks before the visitor's last
 * page view keep the shorter window that page view looked back over.
 */
static int on_visitor_event(const ll_event_t *e, void *arg)
{
    found_t *f = arg;
    if (e->time_us < f->since_us || ++f->looked > VISITOR_SCAN_MAX)
        return 1;
    if ((e->reasons & LL_REASON_JS) && e->time_us <= f->now_us && js_adds(e->reasons) == f->adds)
        return 1;
    if (e->type == LL_EV_CLICK && e->send != 0 && (e->flags & LL_EVF_PROVISIONAL))
        found_add(f, e);
    return 0;
}

/* Adds reason to found events, keeping the counts right. */
static int add_reason(ll_judge_t *j, ll_txn_t *t, found_t *f, uint32_t reason, int to_cls)
{
    int rc = 0;
    for (size_t i = 0; i < f->n && rc == 0; i++) {
        uint32_t nr = f->v[i].reasons | reason;
        int nc = to_cls >= 0 ? to_cls : f->v[i].cls;
        if (nr == f->v[i].reasons && nc == f->v[i].cls)
            continue;
        if ((rc = count(j, t, f->v[i].send, f->v[i].cls, f->v[i].reasons, -1)) == 0 &&
            (rc = count(j, t, f->v[i].send, nc, nr, 1)) == 0)
            rc = rewrite(t, f->v[i].seq, nc, nr, f->v[i].flags);
    }
    return rc;
}

/* Why an open or click got its label, stored as its data: the list and entry that matched, the
 * seconds since the message was delivered. */
typedef struct {
    const char *list, *entry;
    int has_since;
    uint64_t since_s;
} evidence_t;

/* Appends "key": to an evidence object, opening it with the first key. */
static int evidence_key(ll_buf_t *b, const char *key)
{
    int rc = ll_buf_appends(b, b->len == 0 ? "{\"" : ",\"");
    if (rc == 0 && (rc = ll_buf_appends(b, key)) == 0)
        rc = ll_buf_appends(b, "\":");
    return rc;
}

/* Appends "key":"value" (value escaped). */
static int evidence_str(ll_buf_t *b, const char *key, const char *value)
{
    int rc = evidence_key(b, key);
    if (rc == 0 && (rc = ll_buf_appends(b, "\"")) == 0)
        rc = ll_buf_append_json_str(b, value, strlen(value));
    return rc != 0 ? rc : ll_buf_appends(b, "\"");
}

/* The evidence as a JSON object with its keys in order, or NULL when there is none. Written
 * directly: a jansson object dumped with sorted keys cost 0.3 µs an open or click. */
static char *evidence_json(const evidence_t *e)
{
    ll_buf_t b;
    int rc = 0;
    if (e->list == NULL && !e->has_since)
        return NULL;
    ll_buf_init(&b, LL_EVENT_MAX);
    if (e->entry != NULL && e->entry[0] != '\0')
        rc = evidence_str(&b, "entry", e->entry);
    if (rc == 0 && e->list != NULL)
        rc = evidence_str(&b, "list", e->list);
    if (rc == 0 && e->has_since && (rc = evidence_key(&b, "since_delivery_s")) == 0)
        rc = ll_buf_append_u64(&b, e->since_s);
    if (rc == 0)
        rc = ll_buf_appends(&b, "}");
    if (rc != 0) {
        ll_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* Looks the event's client up in the lists (its user agent, address, network); the first hit
 * whose list applies to this event type counts. Fills the evidence, returns the reason. */
static uint32_t list_match(ll_judge_t *j, const ll_event_t *ev, const ll_ip_t *client_ip, int *cls,
                           evidence_t *evidence)
{
    ll_list_hit_t hit;
    uint32_t reason = 0;
    unsigned type = 1u << ev->type;
    if (j->lists == NULL)
        return 0;
    if (ev->f[LL_F_UA].len > 0 && ll_lists_match_ua(j->lists, ev->f[LL_F_UA].base, ev->f[LL_F_UA].len, &hit) &&
        (hit.applies & type))
        reason = LL_REASON_UA_LIST;
    ll_ip_t stored;
    if (reason == 0 && client_ip == NULL && (ev->f[LL_F_IP].len == 4 || ev->f[LL_F_IP].len == 16)) {
        memset(&stored, 0, sizeof(stored));
        stored.family = ev->f[LL_F_IP].len == 4 ? AF_INET : AF_INET6;
        memcpy(stored.addr, ev->f[LL_F_IP].base, ev->f[LL_F_IP].len);
        client_ip = &stored;
    }
    if (reason == 0 && client_ip != NULL && ll_lists_match_ip(j->lists, client_ip, &hit) && (hit.applies & type))
        reason = LL_REASON_IP_LIST;
    if (reason == 0 && ev->f[LL_F_ASN].len > 0 && ev->f[LL_F_ASN].len < 16) {
        char num[16];
        memcpy(num, ev->f[LL_F_ASN].base, ev->f[LL_F_ASN].len);
        num[ev->f[LL_F_ASN].len] = '\0';
        uint32_t asn = (uint32_t)strtoul(num[0] == 'A' || num[0] == 'a' ? num + 2 : num, NULL, 10);
        if (asn != 0 && ll_lists_match_asn(j->lists, asn, &hit) && (hit.applies & type))
            reason = LL_REASON_ASN_LIST;
    }
    if (reason == 0)
        return 0;
    *cls = hit.cls;
    evidence->list = hit.list;
    evidence->entry = hit.label;
    return reason;
}

int ll_judge_before(ll_judge_t *j, ll_txn_t *t, uint8_t *rec, size_t len, const ll_ip_t *client_ip, char **data)
{
    ll_event_t ev;
    *data = NULL;
    if (j == NULL || ll_event_decode(rec, len, &ev) != 0)
        return 0;
    j->burst.send = 0;
    if (!is_message_event(&ev)) {
        /* The snippet ran: the visitor's provisional clicks were a browser's (or a robot's). */
        if (!(ev.reasons & LL_REASON_JS) || ll_visitor_is_zero(&ev.visitor) || j->conf->provisional_s <= 0)
            return 0;
        found_t *f = ll_calloc(1, sizeof(*f));
        uint64_t w = (uint64_t)j->conf->provisional_s * SEC;
        f->since_us = ev.time_us > w ? ev.time_us - w : 0;
        f->now_us = ev.time_us;
        f->adds = js_adds(ev.reasons);
        int rc = ll_event_heads_of_visitor_rev(t, &ev.visitor, on_visitor_event, f);
        if (rc == 0)
            rc = add_reason(j, t, f, f->adds, -1);
        free(f);
        return rc;
    }
    int cls = ev.cls;
    uint32_t reasons = ev.reasons;
    evidence_t evidence = {0};
    reasons |= list_match(j, &ev, client_ip, &cls, &evidence);

    ll_send_t s;
    if (ll_send_get(&j->n, t, ev.send, &s) == 0 && s.accepted_us != 0 && ev.time_us >= s.accepted_us) {
        uint64_t dt = ev.time_us - s.accepted_us;
        reasons |= dt < (uint64_t)j->conf->fast_after_send_s * SEC ? LL_REASON_FAST : LL_REASON_LATE;
        evidence.has_since = 1, evidence.since_s = dt / SEC;
    }

    uint64_t window = (uint64_t)j->conf->sweep_window_s * SEC;
    burst_t b = {&ev, ev.time_us > window ? ev.time_us - window : 0, {0}, 0, 0, 0, 0};
    uint32_t burst = machine_burst(j, ev.send, ev.time_us);
    if (burst == 0 && ev.type == LL_EV_CLICK) { /* an open adds no link: only a known burst counts */
        b.links[b.nlinks++] = ev.link;
        b.honeypot = ev.link == LL_LINK_HONEYPOT;
        int rc = ll_event_heads_of_contact_rev(t, ev.contact, on_burst_event, &b);
        if (rc != 0)
            return rc;
        burst = b.honeypot ? LL_REASON_HONEYPOT_LINK : b.nlinks >= 3 || b.in_order ? LL_REASON_SWEEP : 0;
    }
    if (burst != 0) {
        machine_burst_set(j, ev.send, ev.time_us + window, burst);
        reasons |= burst;
        cls = LL_CLASS_SCANNER;
        j->burst.send = ev.send, j->burst.contact = ev.contact, j->burst.since_us = b.since_us;
        j->burst.reason = burst;
    }
    uint8_t flags = ev.flags;
    cls = label(ev.type, cls, reasons);
    /* A strong signal is final; anything else waits for the burst and the browser. */
    if (!(reasons & STRONG_REASONS) && j->conf->provisional_s > 0)
        flags |= LL_EVF_PROVISIONAL;
    ll_event_patch_class(rec, (uint8_t)cls, reasons);
    ll_event_patch_flags(rec, flags);
    if (ev.f[LL_F_DATA].len == 0)
        *data = evidence_json(&evidence);
    return 0;
}

/* ---- after the append ---- */

/* The burst's earlier events of the same send. */
static int on_burst_member(const ll_event_t *e, void *arg)
{
    found_t *f = arg;
    if (e->time_us < f->since_us || ++f->looked > BURST_SCAN_MAX)
        return 1;
    if (e->send == f->send && e->seq != f->skip_seq && (e->type == LL_EV_CLICK || e->type == LL_EV_OPEN))
        found_add(f, e);
    return 0;
}

static int pending_key(uint8_t kb[16], uint64_t due_us, uint64_t seq)
{
    ll_be64_put(kb, due_us);
    ll_be64_put(kb + 8, seq);
    return 16;
}

/* A due row, after count() tied the tally (and so pending_end) to t: appended at the end
 * without a search; a clock that stepped back gets an ordinary put. */
static int pending_add(ll_judge_t *j, ll_txn_t *t, uint64_t due_us, uint64_t seq)
{
    uint8_t kb[16];
    MDB_val k = {(size_t)pending_key(kb, due_us, seq), kb}, v = {0, ""};
    int rc = MDB_KEYEXIST;
    if (t->defer.arg == j && (j->pending_end != NULL || mdb_cursor_open(t->txn, j->pending, &j->pending_end) == 0))
        rc = mdb_cursor_put(j->pending_end, &k, &v, MDB_APPEND);
    if (rc == MDB_KEYEXIST)
        rc = mdb_put(t->txn, j->pending, &k, &v, 0);
    return ll_store_err(rc);
}

int ll_judge_after(ll_judge_t *j, ll_txn_t *t, const uint8_t *rec, size_t len, uint64_t seq, int *defer)
{
    ll_event_t ev;
    *defer = 0;
    if (j == NULL || ll_event_decode(rec, len, &ev) != 0 || !is_message_event(&ev))
        return 0;
    int rc = count(j, t, ev.send, ev.cls, ev.reasons, 1);
    if (rc == 0 && (ev.flags & LL_EVF_PROVISIONAL)) {
        rc = pending_add(j, t, ll_now_us() + (uint64_t)j->conf->provisional_s * SEC, seq);
        *defer = 1;
    }
    if (rc == 0 && j->burst.send == ev.send && j->burst.contact == ev.contact) {
        /* The whole burst is the machine's: relabel what came before this event. */
        found_t *f = ll_calloc(1, sizeof(*f));
        f->since_us = j->burst.since_us, f->send = ev.send, f->skip_seq = seq;
        if ((rc = ll_event_heads_of_contact_rev(t, ev.contact, on_burst_member, f)) == 0)
            rc = add_reason(j, t, f, j->burst.reason, LL_CLASS_SCANNER);
        free(f);
    }
    j->burst.send = 0;
    return rc;
}

/* ---- settling ---- */

int ll_judge_reload(ll_judge_t *j, uint64_t now_us, char *err, size_t errlen)
{
    return j != NULL && j->lists != NULL ? ll_lists_maybe_reload(&j->lists, now_us, err, errlen) : 0;
}

uint64_t ll_judge_next_due(ll_judge_t *j, ll_txn_t *t)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t due = 0;
    if (j == NULL || mdb_cursor_open(t->txn, j->pending, &cur) != 0)
        return 0;
    if (mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0 && k.mv_size == 16)
        due = ll_be64_get(k.mv_data);
    mdb_cursor_close(cur);
    return due;
}

int ll_judge_settle(ll_judge_t *j, ll_txn_t *t, struct st_ll_scorer_t *sc, uint64_t now_us, size_t max, int *more)
{
    *more = 0;
    if (j == NULL)
        return 0;
    uint64_t *seqs = ll_calloc(max, sizeof(*seqs));
    size_t n = 0;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = ll_store_err(mdb_cursor_open(t->txn, j->pending, &cur));
    if (rc != 0) {
        free(seqs);
        return rc;
    }
    for (int mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 16 || ll_be64_get(k.mv_data) > now_us)
            break;
        if (n == max) {
            *more = 1;
            break;
        }
        seqs[n++] = ll_be64_get((uint8_t *)k.mv_data + 8);
        if ((rc = ll_store_err(mdb_cursor_del(cur, 0))) != 0)
            break;
    }
    mdb_cursor_close(cur);
    for (size_t i = 0; i < n && rc == 0; i++) {
        ll_event_t ev;
        if (ll_event_get(t, seqs[i], &ev) != 0 || !(ev.flags & LL_EVF_PROVISIONAL))
            continue;
        uint32_t reasons = ev.reasons;
        if (ev.type == LL_EV_CLICK && !(reasons & (LL_REASON_JS_AFTER | LL_REASON_WEBDRIVER)))
            reasons |= LL_REASON_NO_JS_AFTER;
        int cls = label(ev.type, ev.cls, reasons);
        uint64_t send = ev.send;
        uint8_t flags = ev.flags & (uint8_t)~LL_EVF_PROVISIONAL;
        if ((rc = count(j, t, send, ev.cls, ev.reasons, -1)) != 0 || (rc = count(j, t, send, cls, reasons, 1)) != 0 ||
            (rc = rewrite(t, seqs[i], cls, reasons, flags)) != 0)
            break;
        /* Now it may score (and alert). */
        uint8_t kb[8];
        ll_be64_put(kb, seqs[i]);
        MDB_val ek = {8, kb}, rv;
        if (sc != NULL && (rc = ll_store_err(mdb_get(t->txn, ll_store_dbi(t->store, LL_DB_EVENTS), &ek, &rv))) == 0)
            rc = ll_score_event(sc, t, rv.mv_data, rv.mv_size, 0, 0);
    }
    free(seqs);
    return rc;
}
