/* The LMDB environment, its named databases, and the event/contact/visitor records. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include "leadloop/store.h"

struct st_ll_store_t {
    MDB_env *env;
    MDB_dbi dbi[LL_DB__MAX];
    int rdonly;
    int nometasync;     /* LL_STORE_NOMETASYNC */
    uint64_t zeroed_to; /* the data file was at least this long when last looked at */
};

static const struct {
    const char *name;
    unsigned flags;
} db_defs[LL_DB__MAX] = {
    [LL_DB_EVENTS] = {"events", 0},
    [LL_DB_CONTACT_EVENTS] = {"contact_events", MDB_DUPSORT | MDB_DUPFIXED},
    [LL_DB_VISITOR_EVENTS] = {"visitor_events", MDB_DUPSORT | MDB_DUPFIXED},
    [LL_DB_VISITORS] = {"visitors", 0},
    [LL_DB_CONTACTS] = {"contacts", 0},
    [LL_DB_EMAILS] = {"emails", 0},
    [LL_DB_META] = {"meta", 0},
};

int ll_store_err(int rc)
{
    switch (rc) {
    case 0: return 0;
    case MDB_NOTFOUND: return LL_ENOTFOUND;
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT: return LL_EFULL;
    case MDB_KEYEXIST: return LL_EEXIST;
    default: return LL_ESTORE;
    }
}

int ll_store_open(const char *dir, size_t mapsize, int flags, ll_store_t **out, char *err, size_t errlen)
{
    ll_store_t *s = ll_calloc(1, sizeof(*s));
    int rc;
    MDB_txn *txn = NULL;
    *out = NULL;
    s->rdonly = (flags & LL_STORE_RDONLY) != 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rc = ll_err(err, errlen, LL_EIO, "%s: cannot create data directory: %s", dir, strerror(errno));
        goto fail;
    }
    if ((rc = mdb_env_create(&s->env)) != 0)
        goto mdb_fail;
    mdb_env_set_maxdbs(s->env, 32);
    mdb_env_set_maxreaders(s->env, 256);
    if ((rc = mdb_env_set_mapsize(s->env, mapsize ? mapsize : (size_t)1 << 30)) != 0)
        goto mdb_fail;
    s->nometasync = (flags & LL_STORE_NOMETASYNC) != 0;
    unsigned envflags = MDB_NOTLS | (flags & LL_STORE_NOSYNC ? MDB_NOSYNC : 0) | (s->nometasync ? MDB_NOMETASYNC : 0);
    if ((rc = mdb_env_open(s->env, dir, envflags, 0600)) != 0)
        goto mdb_fail;
    /* Databases are created once by a write transaction; handles stay valid for the env's life. */
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0)
        goto mdb_fail;
    for (int i = 0; i < LL_DB__MAX; i++)
        if ((rc = mdb_dbi_open(txn, db_defs[i].name, db_defs[i].flags | MDB_CREATE, &s->dbi[i])) != 0)
            goto mdb_fail;
    MDB_val k = {6, "schema"}, v = {1, "1"};
    if ((rc = mdb_put(txn, s->dbi[LL_DB_META], &k, &v, MDB_NOOVERWRITE)) != 0 && rc != MDB_KEYEXIST)
        goto mdb_fail;
    rc = mdb_txn_commit(txn);
    txn = NULL;
    if (rc != 0)
        goto mdb_fail;
    *out = s;
    return 0;
mdb_fail:
    rc = ll_err(err, errlen, ll_store_err(rc), "%s: cannot open store: %s", dir, mdb_strerror(rc));
fail:
    if (txn != NULL)
        mdb_txn_abort(txn);
    if (s->env != NULL)
        mdb_env_close(s->env);
    free(s);
    return rc;
}

void ll_store_close(ll_store_t *s)
{
    if (s == NULL)
        return;
    mdb_env_close(s->env);
    free(s);
}

int ll_store_sync(ll_store_t *s)
{
    return s->nometasync ? ll_store_err(mdb_env_sync(s->env, 1)) : 0;
}

MDB_env *ll_store_env(ll_store_t *s)
{
    return s->env;
}

MDB_dbi ll_store_dbi(ll_store_t *s, ll_db_t db)
{
    return s->dbi[db];
}

int ll_store_open_db(ll_store_t *s, const char *name, unsigned flags, MDB_dbi *out)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != 0)
        return ll_store_err(rc);
    if ((rc = mdb_dbi_open(txn, name, flags | MDB_CREATE, out)) != 0) {
        mdb_txn_abort(txn);
        return ll_store_err(rc);
    }
    return ll_store_err(mdb_txn_commit(txn));
}

int ll_txn_begin(ll_store_t *s, int rdonly, ll_txn_t *t)
{
    t->store = s;
    t->rdonly = rdonly;
    t->journaled = 0;
    t->last_seq = 0;
    t->nkept = 0;
    memset(&t->defer, 0, sizeof(t->defer));
    t->txn = NULL;
    return ll_store_err(mdb_txn_begin(s->env, NULL, rdonly ? MDB_RDONLY : 0, &t->txn));
}

/* The kept cursor on dbi (ll_txn_t.kept), opened on first use; NULL: none (a read transaction,
 * every slot taken). */
static MDB_cursor *kept_cursor(ll_txn_t *t, MDB_dbi dbi)
{
    if (t->rdonly)
        return NULL;
    for (int i = 0; i < t->nkept; i++)
        if (t->kept[i].dbi == dbi)
            return t->kept[i].c;
    if (t->nkept == (int)(sizeof(t->kept) / sizeof(t->kept[0])) || mdb_cursor_open(t->txn, dbi, &t->kept[t->nkept].c) != 0)
        return NULL;
    t->kept[t->nkept].dbi = dbi;
    return t->kept[t->nkept++].c;
}

int ll_txn_get(ll_txn_t *t, MDB_dbi dbi, MDB_val *k, MDB_val *v)
{
    MDB_cursor *c = kept_cursor(t, dbi);
    return c != NULL ? mdb_cursor_get(c, k, v, MDB_SET_KEY) : mdb_get(t->txn, dbi, k, v);
}

int ll_txn_put(ll_txn_t *t, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags)
{
    MDB_cursor *c = kept_cursor(t, dbi);
    return c != NULL ? mdb_cursor_put(c, k, v, flags) : mdb_put(t->txn, dbi, k, v, flags);
}

void ll_store_zero_ahead(ll_txn_t *t)
{
    static char zeros[64 * 1024];
    MDB_env *env = t->store->env;
    MDB_envinfo info;
    MDB_stat st;
    struct stat sb;
    int fd;
    if (t->rdonly || mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0 || mdb_env_get_fd(env, &fd) != 0)
        return;
    /* The last committed page; this transaction's new pages are written by its commit, after these
     * zeros, so zero-filling from the file's end never overwrites a page. */
    uint64_t used = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
    if (used + LL_STORE_AHEAD / 2 <= t->store->zeroed_to)
        return; /* no fstat per batch: the file is at least this long (it never shrinks) */
    if (fstat(fd, &sb) != 0)
        return;
    uint64_t from = (uint64_t)sb.st_size, to = used + LL_STORE_AHEAD;
    if (to > info.me_mapsize)
        to = info.me_mapsize;
    while (from < to) {
        size_t n = to - from < sizeof(zeros) ? (size_t)(to - from) : sizeof(zeros);
        ssize_t w = pwrite(fd, zeros, n, (off_t)from);
        if (w <= 0)
            break;
        from += (uint64_t)w;
    }
    t->store->zeroed_to = from;
}

int ll_txn_defer(ll_txn_t *t, int (*commit)(void *arg, ll_txn_t *t), void (*drop)(void *arg), void *arg)
{
    if (t->defer.arg == arg && t->defer.commit == commit)
        return 0;
    if (t->defer.arg != NULL || t->rdonly)
        return LL_EEXIST;
    t->defer.commit = commit, t->defer.drop = drop, t->defer.arg = arg;
    return 0;
}

int ll_txn_commit(ll_txn_t *t)
{
    if (t->defer.commit != NULL) {
        int rc = t->defer.commit(t->defer.arg, t);
        memset(&t->defer, 0, sizeof(t->defer)); /* put, or dropped by the commit that failed */
        if (rc != 0) {
            ll_txn_abort(t);
            return rc;
        }
    }
    int rc = mdb_txn_commit(t->txn);
    t->txn = NULL;
    if (rc == 0 && !t->journaled && !t->rdonly)
        return ll_store_sync(t->store); /* the meta page too (store.h), under LL_STORE_NOMETASYNC */
    return ll_store_err(rc);
}

void ll_txn_abort(ll_txn_t *t)
{
    if (t->defer.drop != NULL)
        t->defer.drop(t->defer.arg);
    memset(&t->defer, 0, sizeof(t->defer));
    if (t->txn != NULL)
        mdb_txn_abort(t->txn);
    t->txn = NULL;
}

/* ---- events ---- */

uint64_t ll_event_last_seq(ll_txn_t *t)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t seq = 0;
    if (mdb_cursor_open(t->txn, t->store->dbi[LL_DB_EVENTS], &c) != 0)
        return 0;
    if (mdb_cursor_get(c, &k, &v, MDB_LAST) == 0 && k.mv_size == 8)
        seq = ll_be64_get(k.mv_data);
    mdb_cursor_close(c);
    return seq;
}

/* An event's number under its visitor or contact. Numbers only grow, so it goes after the
 * key's last one (MDB_APPENDDUP: no search of a long list); LMDB refuses that with
 * MDB_KEYEXIST, changing nothing, when the list holds a larger number, and then an ordinary put
 * files it in order. */
static int index_put(ll_txn_t *t, ll_db_t db, const void *key, size_t keylen, uint64_t seq)
{
    uint8_t sv[8];
    ll_be64_put(sv, seq);
    MDB_val k = {keylen, (void *)key}, v = {8, sv};
    int rc = ll_txn_put(t, t->store->dbi[db], &k, &v, MDB_APPENDDUP);
    if (rc == MDB_KEYEXIST)
        rc = ll_txn_put(t, t->store->dbi[db], &k, &v, MDB_NODUPDATA);
    return rc == MDB_KEYEXIST ? 0 : ll_store_err(rc);
}

int ll_event_append(ll_txn_t *t, void *rec, size_t len, uint64_t *seq)
{
    uint8_t key[8];
    uint64_t s = (t->last_seq != 0 ? t->last_seq : ll_event_last_seq(t)) + 1;
    ll_event_patch_seq(rec, s);
    ll_be64_put(key, s);
    MDB_val k = {8, key}, v = {len, rec};
    int rc = ll_txn_put(t, t->store->dbi[LL_DB_EVENTS], &k, &v, MDB_APPEND);
    if (rc != 0)
        return ll_store_err(rc);
    t->last_seq = s;
    ll_visitor_id_t vid;
    ll_event_rec_visitor(rec, &vid);
    if (!ll_visitor_is_zero(&vid) && (rc = index_put(t, LL_DB_VISITOR_EVENTS, vid.b, 16, s)) != 0)
        return rc;
    uint64_t contact = ll_event_rec_contact(rec);
    if (contact != 0) {
        uint8_t ck[8];
        ll_be64_put(ck, contact);
        if ((rc = index_put(t, LL_DB_CONTACT_EVENTS, ck, 8, s)) != 0)
            return rc;
    }
    *seq = s;
    return 0;
}

int ll_event_get(ll_txn_t *t, uint64_t seq, ll_event_t *ev)
{
    uint8_t key[8];
    ll_be64_put(key, seq);
    MDB_val k = {8, key}, v;
    int rc = mdb_get(t->txn, t->store->dbi[LL_DB_EVENTS], &k, &v);
    if (rc != 0)
        return ll_store_err(rc);
    return ll_event_decode(v.mv_data, v.mv_size, ev);
}

/* ---- contacts ---- */

void ll_contact_clear(ll_contact_t *c)
{
    free(c->fields_json);
    memset(c, 0, sizeof(*c));
}

int ll_email_normalize(const char *in, size_t n, char out[256])
{
    while (n > 0 && (*in == ' ' || *in == '\t'))
        in++, n--;
    while (n > 0 && (in[n - 1] == ' ' || in[n - 1] == '\t'))
        n--;
    if (n < 3 || n > 254)
        return LL_EINVAL;
    size_t at = n, dot_after_at = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '<' || ch == '>' || ch == '"' || ch == '\\' || ch == ',' || ch == ';')
            return LL_EINVAL;
        if (ch == '@') {
            if (at != n)
                return LL_EINVAL;
            at = i;
        } else if (ch == '.' && at != n) {
            dot_after_at = i;
        }
        out[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : (char)ch;
    }
    out[n] = '\0';
    if (at == 0 || at == n || at + 1 >= n || dot_after_at == 0 || dot_after_at == at + 1 || dot_after_at == n - 1)
        return LL_EINVAL;
    if (!ll_utf8_valid(in, n))
        return LL_EINVAL;
    return 0;
}

int ll_contact_find(ll_txn_t *t, const char *email, uint64_t *id)
{
    MDB_val k = {strlen(email), (void *)email}, v;
    int rc = mdb_get(t->txn, t->store->dbi[LL_DB_EMAILS], &k, &v);
    if (rc != 0)
        return ll_store_err(rc);
    if (v.mv_size != 8)
        return LL_ESTORE;
    *id = ll_be64_get(v.mv_data);
    return 0;
}

int ll_contact_get_fields(ll_txn_t *t, uint64_t id, ll_contact_t *c, json_t **fields_out)
{
    *fields_out = NULL;
    uint8_t key[8];
    ll_be64_put(key, id);
    MDB_val k = {8, key}, v;
    memset(c, 0, sizeof(*c));
    int rc = mdb_get(t->txn, t->store->dbi[LL_DB_CONTACTS], &k, &v);
    if (rc != 0)
        return ll_store_err(rc);
    json_error_t jerr;
    json_t *root = json_loadb(v.mv_data, v.mv_size, 0, &jerr);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return LL_ESTORE;
    }
    c->id = id;
    const char *email = json_string_value(json_object_get(root, "email"));
    snprintf(c->email, sizeof(c->email), "%s", email ? email : "");
    c->created_us = (uint64_t)json_integer_value(json_object_get(root, "created"));
    c->updated_us = (uint64_t)json_integer_value(json_object_get(root, "updated"));
    c->flags = (uint32_t)json_integer_value(json_object_get(root, "flags"));
    json_t *fields = json_object_get(root, "fields");
    *fields_out = json_is_object(fields) ? json_incref(fields) : json_object();
    json_decref(root);
    return 0;
}

int ll_contact_get(ll_txn_t *t, uint64_t id, ll_contact_t *c)
{
    json_t *fields;
    int rc = ll_contact_get_fields(t, id, c, &fields);
    if (rc != 0)
        return rc;
    c->fields_json = json_dumps(fields, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(fields);
    if (c->fields_json == NULL)
        c->fields_json = ll_strdup("{}");
    return 0;
}

/* Writes c's record with fields (a JSON object, borrowed) as its profile; updates `updated`. */
static int contact_write(ll_txn_t *t, ll_contact_t *c, json_t *fields)
{
    c->updated_us = ll_now_us();
    json_t *root = json_pack("{s:s, s:I, s:I, s:I, s:O}", "email", c->email, "created", (json_int_t)c->created_us,
                             "updated", (json_int_t)c->updated_us, "flags", (json_int_t)c->flags, "fields", fields);
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (text == NULL)
        return LL_ENOMEM;
    uint8_t key[8];
    ll_be64_put(key, c->id);
    MDB_val k = {8, key}, v = {strlen(text), text};
    int rc = ll_store_err(mdb_put(t->txn, t->store->dbi[LL_DB_CONTACTS], &k, &v, 0));
    free(text);
    return rc;
}

int ll_contact_put(ll_txn_t *t, ll_contact_t *c)
{
    json_error_t jerr;
    json_t *fields = json_loads(c->fields_json ? c->fields_json : "{}", 0, &jerr);
    int rc = fields != NULL && json_is_object(fields) ? contact_write(t, c, fields) : LL_EINVAL;
    json_decref(fields);
    return rc;
}

static uint64_t next_contact_id(ll_txn_t *t)
{
    MDB_cursor *c;
    MDB_val k, v;
    uint64_t id = 0;
    if (mdb_cursor_open(t->txn, t->store->dbi[LL_DB_CONTACTS], &c) != 0)
        return 0;
    if (mdb_cursor_get(c, &k, &v, MDB_LAST) == 0 && k.mv_size == 8)
        id = ll_be64_get(k.mv_data);
    mdb_cursor_close(c);
    return id + 1;
}

/* Merges the string/number/bool members of add into fields; other types are ignored. */
static void merge_fields(json_t *fields, json_t *add)
{
    const char *key;
    json_t *val;
    json_object_foreach(add, key, val) {
        if (json_is_string(val) || json_is_number(val) || json_is_boolean(val))
            json_object_set(fields, key, val);
    }
}

int ll_contact_upsert(ll_txn_t *t, const char *email, const char *fields_json, uint64_t *id, int *created)
{
    ll_contact_t c;
    json_t *fields = NULL;
    int rc = ll_contact_find(t, email, id);
    *created = 0;
    if (rc == LL_ENOTFOUND) {
        memset(&c, 0, sizeof(c));
        c.id = *id = next_contact_id(t);
        if (c.id == 0)
            return LL_ESTORE;
        snprintf(c.email, sizeof(c.email), "%s", email);
        c.created_us = ll_now_us();
        uint8_t key[8];
        ll_be64_put(key, c.id);
        MDB_val k = {strlen(email), (void *)email}, v = {8, key};
        if ((rc = ll_store_err(mdb_put(t->txn, t->store->dbi[LL_DB_EMAILS], &k, &v, MDB_NOOVERWRITE))) != 0)
            return rc;
        *created = 1;
        if ((fields = json_object()) == NULL)
            return LL_ENOMEM;
    } else if (rc != 0 || (rc = ll_contact_get_fields(t, *id, &c, &fields)) != 0) {
        return rc;
    }
    /* The profile is merged as parsed and printed once, with the record (a form's whole cost
     * in the writer was mostly these parses and prints: BENCHMARKS.md, Results 2026-12-04 17:55). */
    if (fields_json != NULL) {
        json_error_t jerr;
        json_t *add = json_loads(fields_json, 0, &jerr);
        if (add != NULL && json_is_object(add))
            merge_fields(fields, add);
        else
            rc = LL_EINVAL;
        json_decref(add);
    }
    if (rc == 0)
        rc = contact_write(t, &c, fields);
    json_decref(fields);
    return rc;
}

/* ---- visitors ---- */

enum { VISITOR_REC = 26 };

int ll_visitor_get(ll_txn_t *t, const ll_visitor_id_t *vid, ll_visitor_rec_t *out)
{
    MDB_val k = {16, (void *)vid->b}, v;
    memset(out, 0, sizeof(*out));
    int rc = ll_txn_get(t, t->store->dbi[LL_DB_VISITORS], &k, &v);
    if (rc != 0)
        return ll_store_err(rc);
    if (v.mv_size < VISITOR_REC)
        return LL_ESTORE;
    const uint8_t *p = v.mv_data;
    out->contact = ll_be64_get(p);
    out->first_us = ll_be64_get(p + 8);
    out->last_us = ll_be64_get(p + 16);
    memcpy(out->country, p + 24, 2);
    out->country[2] = '\0';
    return 0;
}

int ll_visitor_put(ll_txn_t *t, const ll_visitor_id_t *vid, const ll_visitor_rec_t *rec)
{
    uint8_t p[VISITOR_REC] = {0};
    ll_be64_put(p, rec->contact);
    ll_be64_put(p + 8, rec->first_us);
    ll_be64_put(p + 16, rec->last_us);
    memcpy(p + 24, rec->country, strnlen(rec->country, 2));
    MDB_val k = {16, (void *)vid->b}, v = {sizeof(p), p}, ck, cv;
    MDB_dbi dbi = t->store->dbi[LL_DB_VISITORS];
    MDB_cursor *c = kept_cursor(t, dbi);
    /* Where ll_visitor_get left the cursor, when it found this visitor: in place, no search. */
    if (c != NULL && mdb_cursor_get(c, &ck, &cv, MDB_GET_CURRENT) == 0 && ck.mv_size == 16 &&
        memcmp(ck.mv_data, vid->b, 16) == 0)
        return ll_store_err(mdb_cursor_put(c, &k, &v, MDB_CURRENT));
    /* A new one: from where the get left off (ll_txn_put). */
    return ll_store_err(ll_txn_put(t, dbi, &k, &v, 0));
}

/* ---- iteration ---- */

enum { SCAN_REV = 1, SCAN_HEAD = 2 }; /* newest first; the events' headers only */

/* The events filed under key in an index, through a second cursor on the events db: a list's
 * numbers are near one another, so the next event is mostly on the leaf the last one was on and
 * LMDB finds it there, without the search from the root an ll_event_get each would make (a
 * look-back over 64 events of a flooding recipient: 132k -> 71k instructions). */
static int scan_index(ll_txn_t *t, ll_db_t db, const void *key, size_t keylen, int how, ll_event_cb cb, void *ctx)
{
    int rev = how & SCAN_REV;
    MDB_cursor *c, *ec;
    MDB_val k = {keylen, (void *)key}, v;
    int rc = mdb_cursor_open(t->txn, t->store->dbi[db], &c);
    if (rc != 0)
        return ll_store_err(rc);
    if ((rc = mdb_cursor_open(t->txn, t->store->dbi[LL_DB_EVENTS], &ec)) != 0) {
        mdb_cursor_close(c);
        return ll_store_err(rc);
    }
    ll_event_t ev;
    if (how & SCAN_HEAD)
        memset(&ev, 0, sizeof(ev)); /* the fields stay absent: only headers are decoded */
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
    if (rc == 0 && rev)
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST_DUP);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, rev ? MDB_PREV_DUP : MDB_NEXT_DUP)) {
        MDB_val ek = v, rec;
        if (v.mv_size != 8 || mdb_cursor_get(ec, &ek, &rec, MDB_SET_KEY) != 0 ||
            (how & SCAN_HEAD ? ll_event_decode_header : ll_event_decode)(rec.mv_data, rec.mv_size, &ev) != 0)
            continue;
        if (cb(&ev, ctx) != 0)
            break;
    }
    mdb_cursor_close(ec);
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

static int scan_contact(ll_txn_t *t, uint64_t contact, int how, ll_event_cb cb, void *ctx)
{
    uint8_t key[8];
    ll_be64_put(key, contact);
    return scan_index(t, LL_DB_CONTACT_EVENTS, key, 8, how, cb, ctx);
}

int ll_events_of_contact(ll_txn_t *t, uint64_t contact, ll_event_cb cb, void *ctx)
{
    return scan_contact(t, contact, 0, cb, ctx);
}

int ll_events_of_contact_rev(ll_txn_t *t, uint64_t contact, ll_event_cb cb, void *ctx)
{
    return scan_contact(t, contact, SCAN_REV, cb, ctx);
}

int ll_event_heads_of_contact_rev(ll_txn_t *t, uint64_t contact, ll_event_cb cb, void *ctx)
{
    return scan_contact(t, contact, SCAN_REV | SCAN_HEAD, cb, ctx);
}

int ll_events_of_visitor(ll_txn_t *t, const ll_visitor_id_t *v, ll_event_cb cb, void *ctx)
{
    return scan_index(t, LL_DB_VISITOR_EVENTS, v->b, 16, 0, cb, ctx);
}

int ll_event_heads_of_visitor_rev(ll_txn_t *t, const ll_visitor_id_t *v, ll_event_cb cb, void *ctx)
{
    return scan_index(t, LL_DB_VISITOR_EVENTS, v->b, 16, SCAN_REV | SCAN_HEAD, cb, ctx);
}

int ll_events_scan(ll_txn_t *t, uint64_t from, ll_event_cb cb, void *ctx)
{
    MDB_cursor *c;
    uint8_t key[8];
    ll_be64_put(key, from);
    MDB_val k = {8, key}, v;
    int rc = mdb_cursor_open(t->txn, t->store->dbi[LL_DB_EVENTS], &c);
    if (rc != 0)
        return ll_store_err(rc);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        ll_event_t ev;
        if (ll_event_decode(v.mv_data, v.mv_size, &ev) != 0)
            continue;
        if (cb(&ev, ctx) != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}
