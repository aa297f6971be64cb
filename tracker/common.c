/* Error texts, allocation wrappers, the capped buffer and small text helpers. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>
#include "leadloop/common.h"

const char *ll_strerror(int err)
{
    switch (err) {
    case LL_OK: return "ok";
    case LL_EINVAL: return "invalid input";
    case LL_ENOMEM: return "limit reached";
    case LL_ESTORE: return "store error";
    case LL_ENOTFOUND: return "not found";
    case LL_EBADTOKEN: return "bad token";
    case LL_EFULL: return "store full";
    case LL_EEXIST: return "already exists";
    case LL_ETOOBIG: return "too large";
    case LL_EIO: return "i/o error";
    default: return "unknown error";
    }
}

static void oom(size_t n)
{
    fprintf(stderr, "leadloop: out of memory allocating %zu bytes\n", n);
    abort();
}

void *ll_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL)
        oom(n);
    return p;
}

void *ll_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        oom(n * size);
    return p;
}

void *ll_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL)
        oom(n);
    return q;
}

char *ll_strdup(const char *s)
{
    return ll_strndup(s, strlen(s));
}

char *ll_strndup(const char *s, size_t n)
{
    char *p = ll_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void ll_buf_init(ll_buf_t *b, size_t limit)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->limit = limit;
}

void ll_buf_free(ll_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void ll_buf_reset(ll_buf_t *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

static int reserve(ll_buf_t *b, size_t n)
{
    if (n > b->limit || b->len + n > b->limit)
        return LL_ETOOBIG;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = ll_realloc(b->data, cap);
        b->cap = cap;
    }
    return 0;
}

int ll_buf_append(ll_buf_t *b, const void *p, size_t n)
{
    int rc;
    if ((rc = reserve(b, n)) != 0)
        return rc;
    if (n != 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int ll_buf_appends(ll_buf_t *b, const char *s)
{
    return ll_buf_append(b, s, strlen(s));
}

int ll_buf_printf(ll_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    char tmp[512];
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return LL_EINVAL;
    if ((size_t)n < sizeof(tmp))
        return ll_buf_append(b, tmp, n);
    int rc;
    if ((rc = reserve(b, (size_t)n)) != 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += n;
    return 0;
}

int ll_buf_append_u64(ll_buf_t *b, uint64_t v)
{
    char d[20];
    size_t i = sizeof(d);
    do
        d[--i] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    return ll_buf_append(b, d + i, sizeof(d) - i);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid or truncated. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        len = 2, min = 0x80, c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, min = 0x800, c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, min = 0x10000, c &= 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return len;
}

int ll_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    const uint64_t high = 0x8080808080808080ull, ones = 0x0101010101010101ull;
    for (size_t i = 0; i < n;) {
        if (n - i >= 8) { /* eight ASCII bytes at a time, none of them NUL: most text (URLs, JSON) */
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (!(w & high) && !((w - ones) & ~w & high)) {
                i += 8;
                continue;
            }
        }
        if (p[i] == 0)
            return 0;
        size_t l = utf8_seq(p + i, n - i);
        if (l == 0)
            return 0;
        i += l;
    }
    return 1;
}

int ll_buf_append_json_str(ll_buf_t *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        unsigned c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = ll_buf_append(b, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            rc = ll_buf_printf(b, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            rc = ll_buf_append(b, p + i, 1);
            i++;
        } else {
            size_t l = utf8_seq(p + i, n - i);
            if (l == 0) {
                rc = ll_buf_append(b, "\xef\xbf\xbd", 3);
                i++;
            } else if ((l == 2 && c == 0xc2 && p[i + 1] < 0xa0) ||
                       (l == 3 && c == 0xe2 && p[i + 1] == 0x80 && (p[i + 2] == 0xa8 || p[i + 2] == 0xa9))) {
                /* C1 controls and the line/paragraph separators: escaped, so that no reader
                 * (Python's splitlines, JavaScript before ES2019) sees a line break in a line. */
                rc = ll_buf_printf(b, "\\u%04x", l == 2 ? p[i + 1] : 0x2000u + (p[i + 2] - 0x80u));
                i += l;
            } else {
                rc = ll_buf_append(b, p + i, l);
                i += l;
            }
        }
    }
    return rc;
}

int ll_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err != NULL && errlen != 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int ll_file_make_zeroed(const char *path, size_t size)
{
    enum { CHUNK = 65536 };
    char *tmp = ll_malloc(strlen(path) + 8);
    sprintf(tmp, "%s.new", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), rc = fd < 0;
    uint8_t *zero = ll_calloc(1, CHUNK);
    for (size_t done = 0; done < size && rc == 0; done += CHUNK) {
        size_t n = size - done < CHUNK ? size - done : CHUNK;
        rc = write(fd, zero, n) != (ssize_t)n;
    }
    free(zero);
    if (rc == 0)
        rc = fsync(fd) != 0;
    if (fd >= 0 && close(fd) != 0)
        rc = 1;
    if (rc == 0)
        rc = rename(tmp, path) != 0;
    if (rc == 0)
        ll_fsync_parent(path);
    if (rc != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
    }
    free(tmp);
    return rc ? LL_EIO : 0;
}

int ll_sched_batch(void)
{
    struct sched_param sp = {0};
    return pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
}

void ll_thread_name(const char *fmt, ...)
{
    char name[16]; /* the kernel's TASK_COMM_LEN */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    pthread_setname_np(pthread_self(), name);
}

uint64_t ll_now_us(void)
{
    static const char *fake;
    static int checked;
    if (!checked) {
        fake = getenv("LEADLOOP_FAKE_TIME");
        checked = 1;
    }
    if (fake != NULL && *fake != '\0')
        return (uint64_t)strtoull(fake, NULL, 10) * 1000000u;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

void ll_hex_encode(char *out, const uint8_t *in, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int ll_hex_decode(uint8_t *out, const char *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return LL_EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int ll_str_ieq(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (l != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char a = s[i], b = lit[i];
        if (a >= 'A' && a <= 'Z')
            a += 32;
        if (b >= 'A' && b <= 'Z')
            b += 32;
        if (a != b)
            return 0;
    }
    return 1;
}

void ll_fsync_parent(const char *path)
{
    char dir[PATH_MAX] = ".";
    const char *slash = strrchr(path, '/');
    if (slash != NULL) {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        if (n >= sizeof(dir))
            return;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* ---- memo (common.h) ---- */

typedef struct {
    uint64_t hash, value;
    size_t len; /* 0: empty */
    char key[LL_MEMO_KEY_MAX];
} memo_slot_t;

struct st_ll_memo_t {
    size_t mask;
    memo_slot_t slot[];
};

ll_memo_t *ll_memo_new(size_t slots)
{
    ll_memo_t *m = ll_calloc(1, sizeof(*m) + slots * sizeof(memo_slot_t));
    m->mask = slots - 1;
    return m;
}

void ll_memo_free(ll_memo_t *m)
{
    free(m);
}

/* Eight bytes a step: a user agent of 120 bytes hashes in about 15 steps. */
static uint64_t memo_hash(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n, w;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, s + i, n - i);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    return h ^ h >> 29;
}

int ll_memo_get(const ll_memo_t *m, const char *s, size_t len, uint64_t *value)
{
    if (len == 0 || len > LL_MEMO_KEY_MAX)
        return 0;
    uint64_t h = memo_hash(s, len);
    const memo_slot_t *e = &m->slot[h & m->mask];
    if (e->len != len || e->hash != h || memcmp(e->key, s, len) != 0)
        return 0;
    *value = e->value;
    return 1;
}

void ll_memo_put(ll_memo_t *m, const char *s, size_t len, uint64_t value)
{
    if (len == 0 || len > LL_MEMO_KEY_MAX)
        return;
    uint64_t h = memo_hash(s, len);
    memo_slot_t *e = &m->slot[h & m->mask];
    e->hash = h, e->value = value, e->len = len;
    memcpy(e->key, s, len);
}
