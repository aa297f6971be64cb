/*
 * The LMDB store: one environment shared by leadloopd, leadloop-mailer and the leadloop CLI.
 *
 * Named databases (keys big-endian so that key order is time order):
 *   events          seq (u64)             -> event record (event.h), appended with MDB_APPEND
 *   contact_events  contact id (u64)      -> seq (u64), MDB_DUPSORT|MDB_DUPFIXED
 *   visitor_events  visitor id (16 bytes) -> seq (u64), MDB_DUPSORT|MDB_DUPFIXED
 *   visitors        visitor id            -> ll_visitor_rec_t (packed, fixed layout, below)
 *   contacts        contact id (u64)      -> contact JSON: {"email","created","updated","fields":{..},"flags":[..]}
 *   emails          lower-cased email     -> contact id (u64)
 *   meta            text key              -> value ("schema" = "1", "next_contact" = u64)
 * Later modules (scoring, mailer) add their own databases through ll_store_dbi().
 *
 * Contacts are JSON because their fields are open-ended and edited rarely; events are binary
 * because they are written at request rate.
 *
 * Concurrency: LMDB allows one write transaction at a time across processes; readers never
 * block. A store handle is used from one thread at a time for writing; read transactions may
 * be opened from any thread (MDB_NOTLS).
 *
 * Durability: commits are synced (no MDB_NOSYNC) unless LL_STORE_NOSYNC is passed, which only
 * the durability benchmark does. LL_STORE_NOMETASYNC (leadloopd under `ack: journal`, whose
 * journal holds what a crash may undo: journal.h) lets a transaction marked `journaled` commit
 * without syncing its meta page, which the next commit's sync or ll_store_sync() makes durable:
 * a crash may undo that commit, never tear it. Every other commit is synced as without the
 * flag. meta "journal" (be64) is the last journal item in the store.
 */
#ifndef LEADLOOP_STORE_H
#define LEADLOOP_STORE_H

#include <lmdb.h>
#include "leadloop/common.h"
#include "leadloop/event.h"

typedef struct st_ll_store_t ll_store_t;

typedef enum {
    LL_DB_EVENTS,
    LL_DB_CONTACT_EVENTS,
    LL_DB_VISITOR_EVENTS,
    LL_DB_VISITORS,
    LL_DB_CONTACTS,
    LL_DB_EMAILS,
    LL_DB_META,
    LL_DB__MAX
} ll_db_t;

enum {
    LL_STORE_RDONLY = 1,
    LL_STORE_NOSYNC = 2,
    LL_STORE_NOMETASYNC = 4
};

/** A transaction: the LMDB handle is public so that tracker modules can add their own puts. */
typedef struct st_ll_txn_t {
    MDB_txn *txn;
    ll_store_t *store;
    int rdonly;
    int journaled; /* set before the commit: a journal holds what it writes (LL_STORE_NOMETASYNC) */
    uint64_t last_seq; /* the last event appended in this transaction (0: none yet): the next
                        * append's number without a search (events are never deleted) */
    /* Cursors kept for the rest of a write transaction, one per db, opened on first use (LMDB
     * closes them when the transaction ends): an event's append (left at the events db's end),
     * its numbers in visitor_events and contact_events, a visitor's get then put, the scorer's
     * scores, ledger and leads. LMDB skips the search from the root when the next key is on the
     * cursor's leaf (a contact's next event) or past the tree's end (the next event, a minted
     * visitor id: time-first). ll_txn_get, ll_txn_put. */
    struct {
        MDB_dbi dbi;
        MDB_cursor *c;
    } kept[8];
    int nkept;
    /* Writes one module held back until the commit (ll_txn_defer), so that what many events of
     * a batch add to the same keys is put once per key: the judge's counts (judge.c). */
    struct {
        int (*commit)(void *arg, struct st_ll_txn_t *t); /* puts them, first thing in ll_txn_commit */
        void (*drop)(void *arg);                         /* the transaction ended without them */
        void *arg;
    } defer;
} ll_txn_t;

/**
 * mdb_get and mdb_put (their return codes) through the cursor kept on dbi for write transaction
 * t (ll_txn_t.kept): the store's own dbs and the modules' that keep their own (the scorer's). A
 * read transaction, or a ninth db, uses mdb_get and mdb_put. *v from ll_txn_get is valid until
 * the next write in t, as with mdb_get.
 */
int ll_txn_get(ll_txn_t *t, MDB_dbi dbi, MDB_val *k, MDB_val *v);
int ll_txn_put(ll_txn_t *t, MDB_dbi dbi, MDB_val *k, MDB_val *v, unsigned flags);

/**
 * Opens (creating when missing) the environment in dir (created 0700 when missing).
 * mapsize 0 means the default (1 GiB). On failure *out is NULL and err names the path.
 */
int ll_store_open(const char *dir, size_t mapsize, int flags, ll_store_t **out, char *err, size_t errlen);
void ll_store_close(ll_store_t *s);
/** Under LL_STORE_NOMETASYNC, makes every commit so far durable (one device flush); otherwise
 * they are already and this does nothing. */
int ll_store_sync(ll_store_t *s);
MDB_env *ll_store_env(ll_store_t *s);
MDB_dbi ll_store_dbi(ll_store_t *s, ll_db_t db);
/** Opens (creating) an extra named database, for modules beyond this header. */
int ll_store_open_db(ll_store_t *s, const char *name, unsigned flags, MDB_dbi *out);

int ll_txn_begin(ll_store_t *s, int rdonly, ll_txn_t *t);
/** Commits (the deferred writes first); on failure the transaction is gone and the code is
 * LL_EFULL or LL_ESTORE, or the deferred commit's. */
int ll_txn_commit(ll_txn_t *t);
/** Ends the transaction without its writes (a deferred module's drop is called). */
void ll_txn_abort(ll_txn_t *t);
/**
 * Holds one module's writes back until t commits: commit(arg, t) puts them at the start of
 * ll_txn_commit (its error aborts t), drop(arg) forgets them when t ends any other way. One
 * module per transaction: another arg gets LL_EEXIST; the same arg again is a no-op.
 */
int ll_txn_defer(ll_txn_t *t, int (*commit)(void *arg, ll_txn_t *t), void (*drop)(void *arg), void *arg);
/**
 * Keeps the data file zero-filled some megabytes ahead of LMDB's last page, within the map size.
 * Call inside a write transaction (no other writer can extend the file meanwhile), before its
 * commit, whose sync then flushes the zeros too. Why: a commit that writes past the end of the
 * file changes its size and blocks, so its fdatasync also commits the file system's journal;
 * pages written inside an already written region do not (measured: the writer's CPU per durable
 * pixel -20%, BENCHMARKS.md). PostgreSQL zero-fills its WAL segments for the same reason. The
 * file is then up to LL_STORE_AHEAD bytes bigger than its contents; LMDB reads only up to its
 * last page. Best effort: a failed write (disk full) changes nothing and is left to the commit.
 */
#define LL_STORE_AHEAD (4u << 20)
void ll_store_zero_ahead(ll_txn_t *t);
/** Maps an LMDB return code to LL_*: MDB_MAP_FULL/ENOSPC -> LL_EFULL, MDB_NOTFOUND -> LL_ENOTFOUND. */
int ll_store_err(int mdb_rc);

/* Big-endian helpers for keys. Inline and spelled out byte by byte, which the compiler turns
 * into one byte swap and one move (a call with a loop was 4% of leadloopd's instructions). */
static inline void ll_be64_put(uint8_t *p, uint64_t v)
{
    p[0] = (uint8_t)(v >> 56), p[1] = (uint8_t)(v >> 48), p[2] = (uint8_t)(v >> 40), p[3] = (uint8_t)(v >> 32);
    p[4] = (uint8_t)(v >> 24), p[5] = (uint8_t)(v >> 16), p[6] = (uint8_t)(v >> 8), p[7] = (uint8_t)v;
}

static inline uint64_t ll_be64_get(const uint8_t *p)
{
    return (uint64_t)p[0] << 56 | (uint64_t)p[1] << 48 | (uint64_t)p[2] << 40 | (uint64_t)p[3] << 32 |
           (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 | (uint64_t)p[6] << 8 | p[7];
}

static inline void ll_be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static inline uint32_t ll_be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- events ---- */

/**
 * Appends an encoded record: assigns the next seq (patched into rec), puts it with MDB_APPEND
 * and indexes it by visitor and contact (when set in the record).
 */
int ll_event_append(ll_txn_t *t, void *rec, size_t len, uint64_t *seq);
/** Reads one event; ev points into the map, valid until the transaction ends. */
int ll_event_get(ll_txn_t *t, uint64_t seq, ll_event_t *ev);
uint64_t ll_event_last_seq(ll_txn_t *t);

/* ---- contacts ---- */

/** A contact profile, decoded. fields_json owns a JSON object text ("{}" when empty). */
typedef struct st_ll_contact_t {
    uint64_t id;
    char email[256];
    uint64_t created_us, updated_us;
    char *fields_json; /* malloc'd, free with ll_contact_clear */
    uint32_t flags;    /* LL_CF_* */
} ll_contact_t;

enum {
    LL_CF_UNSUBSCRIBED = 1u << 0,
    LL_CF_BOUNCED = 1u << 1,
    LL_CF_DO_NOT_CONTACT = 1u << 2
};

void ll_contact_clear(ll_contact_t *c);
/**
 * Normalises an email address into out (lower-case, trimmed) and checks its shape
 * (one @, non-empty local part and domain with a dot, no spaces or controls, at most 254 bytes).
 * LL_EINVAL when it is not an address.
 */
int ll_email_normalize(const char *in, size_t n, char out[256]);
int ll_contact_find(ll_txn_t *t, const char *email, uint64_t *id);
int ll_contact_get(ll_txn_t *t, uint64_t id, ll_contact_t *c);
struct json_t;
/**
 * ll_contact_get for a caller that reads the profile's fields: *fields is the parsed object (a
 * new reference, an empty object when the profile has none; json_decref it) and c->fields_json
 * stays NULL, so the record is parsed once and its fields are not printed to text and parsed
 * again (the mailer's claim and rendering, the scorer's fit, a form's upsert).
 */
int ll_contact_get_fields(ll_txn_t *t, uint64_t id, ll_contact_t *c, struct json_t **fields);
/**
 * Creates the contact for email when missing, then merges fields_json (a JSON object of
 * string/number values; NULL for none) into its profile. *created tells which happened.
 */
int ll_contact_upsert(ll_txn_t *t, const char *email, const char *fields_json, uint64_t *id, int *created);
/** Writes c back (fields_json, flags); updates `updated`. */
int ll_contact_put(ll_txn_t *t, ll_contact_t *c);

/* ---- visitors ---- */

typedef struct st_ll_visitor_rec_t {
    uint64_t contact;
    uint64_t first_us, last_us;
    char country[3];
} ll_visitor_rec_t;

int ll_visitor_get(ll_txn_t *t, const ll_visitor_id_t *v, ll_visitor_rec_t *out);
int ll_visitor_put(ll_txn_t *t, const ll_visitor_id_t *v, const ll_visitor_rec_t *rec);

/* ---- iteration ---- */

/** Called for each event; return non-zero to stop. ev is valid only during the call. */
typedef int (*ll_event_cb)(const ll_event_t *ev, void *ctx);
/** Events of one contact in seq order. */
int ll_events_of_contact(ll_txn_t *t, uint64_t contact, ll_event_cb cb, void *ctx);
/** The same, newest first (return non-zero from cb to stop early). */
int ll_events_of_contact_rev(ll_txn_t *t, uint64_t contact, ll_event_cb cb, void *ctx);
/** Events of one visitor in seq order. */
int ll_events_of_visitor(ll_txn_t *t, const ll_visitor_id_t *v, ll_event_cb cb, void *ctx);
/** A contact's or a visitor's events newest first, each event's fixed header only
 * (ll_event_decode_header; its text fields all absent): for look-backs that read none, as the
 * judge's do over a flood. */
int ll_event_heads_of_contact_rev(ll_txn_t *t, uint64_t contact, ll_event_cb cb, void *ctx);
int ll_event_heads_of_visitor_rev(ll_txn_t *t, const ll_visitor_id_t *v, ll_event_cb cb, void *ctx);
/** All events from seq `from` on, in order. */
int ll_events_scan(ll_txn_t *t, uint64_t from, ll_event_cb cb, void *ctx);

#endif
