/*
 * leadloop common definitions: error codes, allocation wrappers, string views and a
 * capped growable buffer.
 *
 * Error convention (STYLE.md 4): functions return 0 or a negative LL_E* code; human
 * detail goes into a caller-provided buffer where one is taken. Running out of memory
 * ends the process in ll_malloc() and friends, so callers never check for NULL.
 */
#ifndef LEADLOOP_COMMON_H
#define LEADLOOP_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

enum {
    LL_OK = 0,
    LL_EINVAL = -1,     /* malformed input */
    LL_ENOMEM = -2,     /* a cap was reached (a buffer, a map) */
    LL_ESTORE = -3,     /* LMDB failed; detail in the error buffer */
    LL_ENOTFOUND = -4,  /* no such record */
    LL_EBADTOKEN = -5,  /* token tag, version, kind or key id does not check out */
    LL_EFULL = -6,      /* the LMDB map (or the disk) is full */
    LL_EEXIST = -7,     /* already exists */
    LL_ETOOBIG = -8,    /* input longer than its bound */
    LL_EIO = -9         /* a file could not be read or written; errno-based detail */
};

/** A short English text for an LL_E* code (never NULL). */
const char *ll_strerror(int err);

/* Allocation wrappers: abort with a message on exhaustion, never return NULL. */
void *ll_malloc(size_t n);
void *ll_calloc(size_t n, size_t size);
void *ll_realloc(void *p, size_t n);
char *ll_strdup(const char *s);
char *ll_strndup(const char *s, size_t n);

/** A borrowed byte range; owner stated where it is used. */
typedef struct st_ll_str_t {
    const char *base;
    size_t len;
} ll_str_t;

#define LL_STR_LIT(s) ((ll_str_t){(s), sizeof(s) - 1})
static inline ll_str_t ll_str(const char *base, size_t len)
{
    ll_str_t s = {base, len};
    return s;
}

/**
 * A growable byte buffer with a hard cap (STYLE.md 5). Appends past the cap fail with
 * LL_ETOOBIG and leave the buffer as it was. The buffer owns its memory; release it with
 * ll_buf_free(). data is NUL-terminated after every successful append (not counted in len).
 */
typedef struct st_ll_buf_t {
    char *data;
    size_t len;
    size_t cap;   /* allocated */
    size_t limit; /* hard cap on len */
} ll_buf_t;

void ll_buf_init(ll_buf_t *b, size_t limit);
void ll_buf_free(ll_buf_t *b);
void ll_buf_reset(ll_buf_t *b);
int ll_buf_append(ll_buf_t *b, const void *p, size_t n);
int ll_buf_appends(ll_buf_t *b, const char *s);
int ll_buf_printf(ll_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Appends v in decimal (what "%llu" writes, without printf's cost on a hot path). */
int ll_buf_append_u64(ll_buf_t *b, uint64_t v);
/** Appends s as the inside of a JSON string (escapes quotes, controls, invalid UTF-8 as U+FFFD). */
int ll_buf_append_json_str(ll_buf_t *b, const char *s, size_t n);

/** Writes into err (may be NULL) with a printf format; always NUL-terminates. Returns code. */
int ll_err(char *err, size_t errlen, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/** Syncs the directory that holds path, so that a file just created or renamed there stays
 * (best effort: errors are ignored). */
void ll_fsync_parent(const char *path);

/** Makes path a file of size bytes of zeros (size a multiple of 4096), synced with its directory
 * entry, through path.new and a rename: a journal written with O_DSYNC over blocks already
 * allocated costs one device flush a write. LL_EIO on failure (errno tells), nothing left behind. */
int ll_file_make_zeroed(const char *path, size_t size);

/**
 * Puts the calling thread under SCHED_BATCH; threads it starts afterwards inherit it. A woken
 * SCHED_BATCH thread does not preempt the running one, so on a shared CPU a hand-off to it
 * costs no context switch until the waker blocks (BENCHMARKS.md: leadloopd's journal thread,
 * the mailer). 0, or the errno of a refusal (the thread is then left as it was).
 */
int ll_sched_batch(void);

/**
 * Names the calling thread (printf-style, cut to the kernel's 15 characters), as `top -H`,
 * `ps -L`, `perf` and /proc/PID/task/TID/comm show it: leadloopd's "ll-loop-N", "ll-writer",
 * "ll-journal", "ll-notify", "ll-admin"; the mailer's "ll-smtp-N", "ll-render".
 */
void ll_thread_name(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** Wall clock in microseconds since the epoch. Tests may pin it with LEADLOOP_FAKE_TIME (seconds). */
uint64_t ll_now_us(void);

/** 1 when [s, s+n) is valid UTF-8 without NULs. */
int ll_utf8_valid(const char *s, size_t n);

/** Hex encode n bytes into out (2n+1 bytes, NUL-terminated). */
void ll_hex_encode(char *out, const uint8_t *in, size_t n);
/** Hex decode exactly 2n chars into n bytes; LL_EINVAL on a non-hex char. */
int ll_hex_decode(uint8_t *out, const char *in, size_t n);

/** Case-insensitive ASCII compare of a range with a NUL-terminated literal. */
int ll_str_ieq(const char *s, size_t n, const char *lit);

/*
 * A memo of verdicts keyed by strings (user agents: ll_classify, ll_lists_match_ua). A site's
 * hits come from a few hundred user agents and most of them from a handful, so a scan of the
 * string runs about once per string instead of once per request. Direct-mapped by a hash of
 * the string; each slot holds the whole string (compared on a hit) and a value. Strings longer
 * than LL_MEMO_KEY_MAX are never remembered; a client that sends a new string each time only
 * evicts. Not locked: one thread uses a memo.
 */
#define LL_MEMO_KEY_MAX 256
typedef struct st_ll_memo_t ll_memo_t;

/** A memo of `slots` entries (a power of two), about 280 bytes each. */
ll_memo_t *ll_memo_new(size_t slots);
void ll_memo_free(ll_memo_t *m);
/** 1 and *value when s[0..len) was remembered, else 0. */
int ll_memo_get(const ll_memo_t *m, const char *s, size_t len, uint64_t *value);
/** Remembers value for s[0..len) in place of what shared its slot; nothing when len is above
 * LL_MEMO_KEY_MAX. */
void ll_memo_put(ll_memo_t *m, const char *s, size_t len, uint64_t value);

#endif
