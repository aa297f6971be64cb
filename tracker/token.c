/* Signed tokens, the key ring behind them, destination checks and base64url (token.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "leadloop/token.h"

#define KEY_LEN 32
#define KEY_IDS 256             /* ids 1..255; 0 is never a key */
#define KEYFILE_MAX (64 * 1024) /* 255 lines of ~70 bytes, with room for comments */
#define PAYLOAD_MAX (LL_TOKEN_FIXED + LL_TOKEN_URL_MAX + 1 + LL_TOKEN_LINK_TAG_MAX)
#define RAW_MAX (PAYLOAD_MAX + LL_TOKEN_TAG)
#define B64_LEN(n) (((n) * 4 + 2) / 3)

struct st_ll_keyring_t {
    /* One keyed HMAC context per id, set up once at load: ll_token_verify duplicates it rather
     * than calling HMAC(), which fetches the algorithm and redoes the key schedule on every call
     * (about 1.1 us against 0.5 us here, on a path that costs about 7.5 us a request). */
    EVP_MAC_CTX *mac[KEY_IDS];
    int current;
    uint64_t gen; /* unique per key ring made: the threads' contexts (below) are keyed by it */
};

static _Atomic uint64_t keyring_gens;

/* ---- base64url ---- */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t ll_b64url_encode(char *out, const uint8_t *in, size_t n)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (n - i == 1) {
        out[o++] = b64_alphabet[in[i] >> 2];
        out[o++] = b64_alphabet[(in[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];
        out[o++] = b64_alphabet[v >> 10];
        out[o++] = b64_alphabet[(v >> 4) & 63];
        out[o++] = b64_alphabet[(v & 15) << 2];
    }
    out[o] = '\0';
    return o;
}

/* Each alphabet byte's value plus one; 0 for a byte outside it. A table: the decode runs on every
 * tracking request, and a branch per range cost 11 instructions a character. */
static const uint8_t b64_rev[256] = {
    ['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8, ['I'] = 9,
    ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16, ['Q'] = 17,
    ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25,
    ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33,
    ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41,
    ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49,
    ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56, ['4'] = 57,
    ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64
};

int ll_b64url_decode(uint8_t *out, size_t outcap, const char *in, size_t n, size_t *outlen)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, o = 0;

    /* One leftover char carries only 6 bits: no byte string encodes to that length. */
    if (n % 4 == 1)
        return LL_EINVAL;
    size_t need = n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1);
    if (need > outcap)
        return LL_ETOOBIG;
    for (; i + 4 <= n; i += 4) {
        unsigned a = b64_rev[s[i]], b = b64_rev[s[i + 1]], c = b64_rev[s[i + 2]], d = b64_rev[s[i + 3]];
        if (a == 0 || b == 0 || c == 0 || d == 0)
            return LL_EINVAL;
        uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);
        out[o++] = (uint8_t)(v >> 16), out[o++] = (uint8_t)(v >> 8), out[o++] = (uint8_t)v;
    }
    if (i < n) { /* 2 or 3 characters left: 1 or 2 bytes */
        uint32_t v = 0;
        size_t left = n - i;
        for (size_t k = 0; k < left; k++) {
            unsigned x = b64_rev[s[i + k]];
            if (x == 0)
                return LL_EINVAL;
            v = v << 6 | (x - 1);
        }
        /* Non-zero leftover bits would give one byte string several spellings: a token must have
         * exactly one, or a "changed" token could still verify. */
        unsigned spare = left == 2 ? 4 : 2;
        if (v & ((1u << spare) - 1))
            return LL_EINVAL;
        v >>= spare;
        if (left == 3)
            out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    *outlen = o;
    return 0;
}

/* ---- destinations ---- */

int ll_url_check_destination(const char *url, size_t len)
{
    if (url == NULL || len == 0 || len > LL_TOKEN_URL_MAX)
        return LL_EINVAL;
    /* Controls (CR LF for header injection), spaces, DEL and non-ASCII are refused outright;
     * callers percent-encode. Backslash is refused because browsers read it as '/', which
     * turns "https:\\evil" or "https://a\@evil" into a different host than the one checked. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c < 0x21 || c >= 0x7f || c == '\\')
            return LL_EINVAL;
    }
    size_t p;
    if (len >= 7 && ll_str_ieq(url, 7, "http://"))
        p = 7;
    else if (len >= 8 && ll_str_ieq(url, 8, "https://"))
        p = 8;
    else
        return LL_EINVAL;
    size_t end = p;
    while (end < len && url[end] != '/' && url[end] != '?' && url[end] != '#')
        end++;
    /* Userinfo ("https://yourbank.example@evil.example/") only serves to mislead a reader about
     * where the link goes. */
    if (memchr(url + p, '@', end - p) != NULL)
        return LL_EINVAL;
    size_t host_end = end;
    if (p < end && url[p] == '[') {
        const char *rb = memchr(url + p, ']', end - p);
        if (rb == NULL || rb == url + p + 1)
            return LL_EINVAL;
        host_end = (size_t)(rb - url) + 1;
        if (host_end != end && url[host_end] != ':')
            return LL_EINVAL;
    } else {
        const char *colon = memchr(url + p, ':', end - p);
        if (colon != NULL)
            host_end = (size_t)(colon - url);
    }
    if (host_end == p)
        return LL_EINVAL;
    if (host_end != end) {
        /* A port: 1 to 5 digits, at most 65535; anything else is not a port a browser takes. */
        size_t d = host_end + 1, nd = end - d;
        unsigned port = 0;
        if (nd == 0 || nd > 5)
            return LL_EINVAL;
        for (size_t i = d; i < end; i++) {
            if (url[i] < '0' || url[i] > '9')
                return LL_EINVAL;
            port = port * 10 + (unsigned)(url[i] - '0');
        }
        if (port > 65535)
            return LL_EINVAL;
    }
    return 0;
}

/* ---- keys ---- */

static EVP_MAC_CTX *mac_new(const uint8_t key[KEY_LEN])
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    if (mac == NULL)
        return NULL;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context holds its own reference */
    if (ctx == NULL)
        return NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (!EVP_MAC_init(ctx, key, KEY_LEN, params)) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/*
 * Each thread keeps its own copies of the contexts it uses (THREAD_MACS of them, by key ring
 * and id) and re-initialises one for each MAC (EVP_MAC_init without a key keeps the key): a
 * copy made and freed per MAC cost 620-680 ns against 270-320 here. The key ring's templates
 * are never touched, so threads share one ring. A thread's copies go with it (a pthread key's
 * destructor); a ring freed and another made at the same address cannot be mistaken for it
 * (gen).
 */
#define THREAD_MACS 4
typedef struct {
    uint64_t gen;
    int id;
    EVP_MAC_CTX *ctx;
} thread_mac_t;

static __thread thread_mac_t *thread_macs;
static pthread_key_t thread_macs_key;
static pthread_once_t thread_macs_once = PTHREAD_ONCE_INIT;

static void thread_macs_free(void *arg)
{
    thread_mac_t *m = arg;
    for (int i = 0; i < THREAD_MACS; i++)
        EVP_MAC_CTX_free(m[i].ctx);
    free(m);
}

static void thread_macs_init(void)
{
    pthread_key_create(&thread_macs_key, thread_macs_free);
}

static EVP_MAC_CTX *thread_mac(const ll_keyring_t *k, int id)
{
    thread_mac_t *m = thread_macs;
    if (m == NULL) {
        pthread_once(&thread_macs_once, thread_macs_init);
        m = thread_macs = ll_calloc(THREAD_MACS, sizeof(*m));
        pthread_setspecific(thread_macs_key, m);
    }
    for (int i = 0; i < THREAD_MACS; i++)
        if (m[i].ctx != NULL && m[i].gen == k->gen && m[i].id == id)
            return m[i].ctx;
    thread_mac_t *slot = &m[(k->gen * 31 + (uint64_t)id) % THREAD_MACS];
    EVP_MAC_CTX_free(slot->ctx);
    slot->ctx = EVP_MAC_CTX_dup(k->mac[id]);
    slot->gen = k->gen, slot->id = id;
    return slot->ctx;
}

/* HMAC-SHA256 of p under key id of k (which holds it), truncated to LL_TOKEN_TAG bytes. */
static int mac_compute(const ll_keyring_t *k, int id, const uint8_t *p, size_t n, uint8_t tag[LL_TOKEN_TAG])
{
    uint8_t full[EVP_MAX_MD_SIZE];
    size_t flen = 0;
    int ok = 0;
    EVP_MAC_CTX *ctx = thread_mac(k, id);
    if (ctx != NULL && EVP_MAC_init(ctx, NULL, 0, NULL) && EVP_MAC_update(ctx, p, n) &&
        EVP_MAC_final(ctx, full, &flen, sizeof(full)) && flen >= LL_TOKEN_TAG) {
        memcpy(tag, full, LL_TOKEN_TAG);
        ok = 1;
    }
    OPENSSL_cleanse(full, sizeof(full));
    return ok ? 0 : LL_EINVAL;
}

void ll_keyring_free(ll_keyring_t *k)
{
    if (k == NULL)
        return;
    for (int i = 0; i < KEY_IDS; i++)
        EVP_MAC_CTX_free(k->mac[i]);
    free(k);
}

int ll_keyring_current(const ll_keyring_t *k)
{
    return k->current;
}

/* Parses one "<id> <64 hex>" line (without its newline) into *id and key. Trailing blanks and
 * a CR are tolerated because the file is meant to be edited by hand. */
static int parse_key_line(const char *s, size_t n, int *id, uint8_t key[KEY_LEN])
{
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    size_t i = 0;
    int v = 0;
    while (i < n && i < 3 && s[i] >= '0' && s[i] <= '9')
        v = v * 10 + (s[i++] - '0');
    if (i == 0 || v < 1 || v >= KEY_IDS)
        return LL_EINVAL;
    if (n != i + 1 + 2 * KEY_LEN || s[i] != ' ')
        return LL_EINVAL;
    if (ll_hex_decode(key, s + i + 1, KEY_LEN) != 0)
        return LL_EINVAL;
    *id = v;
    return 0;
}

/* Parses a whole key file. *max_id gets the highest id (for rotation); k, when not NULL, gets
 * every key and the last line as the signing key. Blank lines and '#' comments are skipped. */
static int parse_keys(const char *path, const char *buf, size_t n, ll_keyring_t *k, int *max_id, char *err,
                      size_t errlen)
{
    uint8_t seen[KEY_IDS] = {0};
    uint8_t key[KEY_LEN];
    int last = 0, max = 0, rc = 0;
    unsigned line = 0;
    for (size_t pos = 0; pos < n;) {
        const char *nl = memchr(buf + pos, '\n', n - pos);
        size_t end = nl != NULL ? (size_t)(nl - buf) : n;
        const char *s = buf + pos;
        size_t len = end - pos;
        pos = end + 1;
        line++;
        size_t j = 0;
        while (j < len && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r'))
            j++;
        if (j == len || s[j] == '#')
            continue;
        int id;
        if (parse_key_line(s, len, &id, key) != 0) {
            rc = ll_err(err, errlen, LL_EINVAL, "%s:%u: malformed key line", path, line);
            goto leave;
        }
        /* Two keys under one id would make a token's meaning depend on which one is loaded. */
        if (seen[id]) {
            rc = ll_err(err, errlen, LL_EINVAL, "%s:%u: duplicate key id %d", path, line, id);
            goto leave;
        }
        seen[id] = 1;
        if (k != NULL && (k->mac[id] = mac_new(key)) == NULL) {
            rc = ll_err(err, errlen, LL_EINVAL, "%s:%u: cannot set up HMAC-SHA256", path, line);
            goto leave;
        }
        last = id;
        if (id > max)
            max = id;
    }
    if (last == 0) {
        rc = ll_err(err, errlen, LL_EINVAL, "%s: no keys", path);
        goto leave;
    }
    if (k != NULL)
        k->current = last;
    *max_id = max;
leave:
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

/* Reads all of fd (a key file, so bounded and small) into a fresh buffer. */
static int read_all(int fd, const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return ll_err(err, errlen, LL_EINVAL, "%s: not a regular file", path);
    if (st.st_size > KEYFILE_MAX)
        return ll_err(err, errlen, LL_ETOOBIG, "%s: larger than %d bytes", path, KEYFILE_MAX);
    char *buf = ll_malloc((size_t)st.st_size + 1);
    size_t n = 0;
    for (;;) {
        /* +1 so a file that grew since fstat is noticed rather than cut short. */
        ssize_t r = pread(fd, buf + n, (size_t)st.st_size + 1 - n, (off_t)n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            OPENSSL_cleanse(buf, n);
            free(buf);
            return ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > (size_t)st.st_size) {
            OPENSSL_cleanse(buf, n);
            free(buf);
            return ll_err(err, errlen, LL_EIO, "%s: changed while being read", path);
        }
    }
    *out = buf;
    *outlen = n;
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* "<id> <64 hex>\n" for a fresh random key, into line (at least 4 + 2 * KEY_LEN + 2 bytes). */
static int new_key_line(char *line, size_t cap, int id)
{
    uint8_t key[KEY_LEN];
    char hex[2 * KEY_LEN + 1];
    if (RAND_bytes(key, sizeof(key)) != 1)
        return LL_EIO;
    ll_hex_encode(hex, key, sizeof(key));
    int n = snprintf(line, cap, "%u %s\n", (unsigned)(uint8_t)id, hex);
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(hex, sizeof(hex));
    return n > 0 && (size_t)n < cap ? n : LL_EINVAL;
}

/* Creates path holding one key with id 1. The key is written and synced under a temporary
 * name (O_CREAT|O_EXCL, 0600) and then linked into place, so a process racing us either sees
 * no file or a complete one, never an empty one; link() failing with EEXIST means another
 * process won, and its file is the one everybody loads. */
static int create_keyfile(const char *path, char *err, size_t errlen)
{
    char tmp[PATH_MAX], line[4 + 2 * KEY_LEN + 2];
    uint8_t rnd[6];
    int fd = -1, rc = 0, n;
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return ll_err(err, errlen, LL_EIO, "%s: no randomness for a new key", path);
    char suffix[2 * sizeof(rnd) + 1];
    ll_hex_encode(suffix, rnd, sizeof(rnd));
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.%s.tmp", path, suffix) >= sizeof(tmp))
        return ll_err(err, errlen, LL_EINVAL, "%s: path too long", path);
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
        return ll_err(err, errlen, LL_EIO, "%s: %s", tmp, strerror(errno));
    if ((n = new_key_line(line, sizeof(line), 1)) < 0) {
        rc = ll_err(err, errlen, LL_EIO, "%s: no randomness for a new key", path);
        goto leave;
    }
    if (fchmod(fd, 0600) != 0 || write_all(fd, line, (size_t)n) != 0 || fsync(fd) != 0) {
        rc = ll_err(err, errlen, LL_EIO, "%s: %s", tmp, strerror(errno));
        goto leave;
    }
    if (link(tmp, path) != 0 && errno != EEXIST) {
        rc = ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(errno));
        goto leave;
    }
    ll_fsync_parent(path);
leave:
    OPENSSL_cleanse(line, sizeof(line));
    close(fd);
    unlink(tmp);
    return rc;
}

int ll_keyring_open(const char *path, ll_keyring_t **out, char *err, size_t errlen)
{
    ll_keyring_t *k = NULL;
    char *buf = NULL;
    size_t n = 0;
    int fd, rc, max_id;
    *out = NULL;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 && errno == ENOENT) {
        if ((rc = create_keyfile(path, err, errlen)) != 0)
            return rc;
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0)
        return ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(errno));
    /* Shared lock: ll_keyring_rotate appends under an exclusive one, so we never parse half a line. */
    while (flock(fd, LOCK_SH) != 0 && errno == EINTR)
        ;
    rc = read_all(fd, path, &buf, &n, err, errlen);
    close(fd);
    if (rc != 0)
        return rc;
    k = ll_calloc(1, sizeof(*k));
    k->gen = atomic_fetch_add(&keyring_gens, 1) + 1;
    if ((rc = parse_keys(path, buf, n, k, &max_id, err, errlen)) != 0) {
        ll_keyring_free(k);
        k = NULL;
    }
    OPENSSL_cleanse(buf, n);
    free(buf);
    *out = k;
    return rc;
}

int ll_keyring_rotate(const char *path, char *err, size_t errlen)
{
    char *buf = NULL, line[1 + 4 + 2 * KEY_LEN + 2];
    size_t n = 0;
    int fd, rc, max_id = 0, len;
    if ((fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC)) < 0)
        return ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(errno));
    /* Exclusive: two rotations at once would both pick newest + 1. */
    while (flock(fd, LOCK_EX) != 0 && errno == EINTR)
        ;
    if ((rc = read_all(fd, path, &buf, &n, err, errlen)) != 0)
        goto leave;
    if ((rc = parse_keys(path, buf, n, NULL, &max_id, err, errlen)) != 0)
        goto leave;
    /* Token payloads carry the id in one byte, and reusing an id would silently revoke the
     * tokens signed under its old key. */
    if (max_id + 1 >= KEY_IDS) {
        rc = ll_err(err, errlen, LL_ENOMEM, "%s: key id %d is the last one; no rotation past 255", path, max_id);
        goto leave;
    }
    /* A hand-edited file may lack its final newline: never glue the new key onto the last one. */
    size_t off = n > 0 && buf[n - 1] != '\n' ? 1 : 0;
    line[0] = '\n';
    if ((len = new_key_line(line + off, sizeof(line) - off, max_id + 1)) < 0) {
        rc = ll_err(err, errlen, LL_EIO, "%s: no randomness for a new key", path);
        goto leave;
    }
    if (write_all(fd, line, off + (size_t)len) != 0 || fsync(fd) != 0) {
        rc = ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(errno));
        /* Leave the file as it was rather than with half a line every later load refuses. */
        if (ftruncate(fd, (off_t)n) == 0)
            fsync(fd);
        goto leave;
    }
leave:
    OPENSSL_cleanse(line, sizeof(line));
    if (buf != NULL) {
        OPENSSL_cleanse(buf, n);
        free(buf);
    }
    close(fd);
    return rc;
}

/* ---- tokens ---- */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

int ll_link_tag_check(const char *s, size_t n)
{
    if (n == 0 || n > LL_TOKEN_LINK_TAG_MAX)
        return LL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '.' ||
              s[i] == '-'))
            return LL_EINVAL;
    return 0;
}

int ll_token_sign(const ll_keyring_t *k, const ll_token_t *tok, char *out, size_t outlen)
{
    uint8_t raw[RAW_MAX];
    size_t url_len = 0, tag_len = 0;
    if (k == NULL || k->current == 0 || tok == NULL || out == NULL)
        return LL_EINVAL;
    if (tok->kind != LL_TOK_CLICK && tok->kind != LL_TOK_OPEN && tok->kind != LL_TOK_UNSUB)
        return LL_EINVAL;
    /* Only clicks carry a destination; a url left in an open or unsubscribe token is ignored. */
    if (tok->kind == LL_TOK_CLICK) {
        url_len = tok->url_len;
        if (ll_url_check_destination(tok->url, url_len) != 0)
            return LL_EINVAL;
        tag_len = strnlen(tok->link_tag, sizeof(tok->link_tag));
        if (tag_len > 0 && ll_link_tag_check(tok->link_tag, tag_len) != 0)
            return LL_EINVAL;
    }
    size_t plen = LL_TOKEN_FIXED + url_len + (tag_len > 0 ? 1 + tag_len : 0);
    if (outlen < B64_LEN(plen + LL_TOKEN_TAG) + 1)
        return LL_ETOOBIG;
    uint32_t issued = tok->issued != 0 ? tok->issued : (uint32_t)(ll_now_us() / 1000000u);
    raw[0] = tag_len > 0 ? 2 : LL_TOKEN_VERSION;
    raw[1] = tok->kind;
    raw[2] = (uint8_t)k->current;
    put32(raw + 3, issued);
    put64(raw + 7, tok->send);
    put64(raw + 15, tok->contact);
    put32(raw + 23, tok->link);
    put16(raw + 27, (uint16_t)url_len);
    memcpy(raw + LL_TOKEN_FIXED, tok->url, url_len);
    if (tag_len > 0) {
        raw[LL_TOKEN_FIXED + url_len] = (uint8_t)tag_len;
        memcpy(raw + LL_TOKEN_FIXED + url_len + 1, tok->link_tag, tag_len);
    }
    if (mac_compute(k, k->current, raw, plen, raw + plen) != 0)
        return LL_EINVAL;
    ll_b64url_encode(out, raw, plen + LL_TOKEN_TAG);
    return 0;
}

int ll_token_verify(const ll_keyring_t *k, int kind, const char *b64, size_t len, ll_token_t *out)
{
    uint8_t raw[RAW_MAX], tag[LL_TOKEN_TAG];
    size_t n;
    /* Bound before decoding: the client chooses len, and nothing longer can be a token. */
    if (k == NULL || b64 == NULL || out == NULL || len < B64_LEN(LL_TOKEN_FIXED + LL_TOKEN_TAG) ||
        len > B64_LEN(RAW_MAX))
        return LL_EBADTOKEN;
    if (ll_b64url_decode(raw, sizeof(raw), b64, len, &n) != 0 || n < LL_TOKEN_FIXED + LL_TOKEN_TAG)
        return LL_EBADTOKEN;
    size_t plen = n - LL_TOKEN_TAG;
    /* The key id is the one field read before the tag checks out: it only picks which key to
     * try, and an id we do not hold fails like any other forgery. */
    if (k->mac[raw[2]] == NULL || mac_compute(k, raw[2], raw, plen, tag) != 0 ||
        CRYPTO_memcmp(tag, raw + plen, LL_TOKEN_TAG) != 0)
        return LL_EBADTOKEN;
    size_t url_len = (size_t)raw[27] << 8 | raw[28], tag_len = 0;
    if ((raw[0] != LL_TOKEN_VERSION && raw[0] != 2) || raw[1] != kind || url_len > plen - LL_TOKEN_FIXED)
        return LL_EBADTOKEN;
    const char *url = (const char *)raw + LL_TOKEN_FIXED, *ltag = url + url_len + 1;
    if (raw[0] == 2) { /* a tagged click */
        if (kind != LL_TOK_CLICK || plen < LL_TOKEN_FIXED + url_len + 2)
            return LL_EBADTOKEN;
        tag_len = plen - LL_TOKEN_FIXED - url_len - 1;
        if (raw[LL_TOKEN_FIXED + url_len] != tag_len || ll_link_tag_check(ltag, tag_len) != 0)
            return LL_EBADTOKEN;
    } else if (url_len != plen - LL_TOKEN_FIXED) {
        return LL_EBADTOKEN;
    }
    /* Belt and braces: a key that leaked, or a signer with a looser check, still cannot send a
     * browser to javascript: or smuggle a header through the redirect. */
    if (kind == LL_TOK_CLICK ? ll_url_check_destination(url, url_len) != 0 : url_len != 0)
        return LL_EBADTOKEN;
    out->kind = raw[1];
    out->key_id = raw[2];
    out->issued = get32(raw + 3);
    out->send = get64(raw + 7);
    out->contact = get64(raw + 15);
    out->link = get32(raw + 23);
    memcpy(out->url, url, url_len);
    out->url[url_len] = '\0';
    out->url_len = url_len;
    memcpy(out->link_tag, ltag, tag_len);
    out->link_tag[tag_len] = '\0';
    return 0;
}
