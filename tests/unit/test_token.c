/*
 * Tokens, key rings, destination checks and base64url (tracker/token.c). Key files live in a
 * fresh mkdtemp directory under /tmp, removed at the end. Tokens with a valid tag but a bad
 * field are forged here with the key read back from the file, to reach the checks that run
 * after the tag.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/hmac.h>
#include "leadloop/token.h"
#include "test.h"

static char tmpdir[64];

static void path_in_tmp(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    fputs(text, f);
    fclose(f);
}

static ll_keyring_t *ring_open(const char *name)
{
    char path[128], err[256] = "";
    ll_keyring_t *k = NULL;
    path_in_tmp(path, sizeof(path), name);
    int rc = ll_keyring_open(path, &k, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "test_token: %s\n", err);
    CHECK_EQ_INT(rc, 0);
    return k;
}

static int ring_rotate(const char *name)
{
    char path[128], err[256] = "";
    path_in_tmp(path, sizeof(path), name);
    int rc = ll_keyring_rotate(path, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "test_token: %s\n", err);
    return rc;
}

static ll_token_t make_tok(int kind, const char *url)
{
    ll_token_t t;
    memset(&t, 0, sizeof(t));
    t.kind = (uint8_t)kind;
    t.send = 0x0102030405060708ull;
    t.contact = 0xfedcba9876543210ull;
    t.link = 7;
    if (url != NULL) {
        t.url_len = strlen(url);
        memcpy(t.url, url, t.url_len + 1);
    }
    return t;
}

static int verify_str(const ll_keyring_t *k, int kind, const char *s, ll_token_t *out)
{
    return ll_token_verify(k, kind, s, strlen(s), out);
}

static void test_roundtrip(void)
{
    ll_keyring_t *k = ring_open("rt.keys");
    if (k == NULL)
        return;
    CHECK_EQ_INT(ll_keyring_current(k), 1);
    static const int kinds[] = {LL_TOK_CLICK, LL_TOK_OPEN, LL_TOK_UNSUB};
    for (size_t i = 0; i < 3; i++) {
        ll_token_t t = make_tok(kinds[i], kinds[i] == LL_TOK_CLICK ? "https://example.com/a?b=c#d" : NULL), got;
        char b64[LL_TOKEN_B64_MAX];
        CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), 0);
        memset(&got, 0xaa, sizeof(got));
        CHECK_EQ_INT(verify_str(k, kinds[i], b64, &got), 0);
        CHECK_EQ_INT(got.kind, kinds[i]);
        CHECK_EQ_INT(got.key_id, 1);
        CHECK(got.issued != 0); /* filled in from the clock */
        CHECK(got.send == t.send);
        CHECK(got.contact == t.contact);
        CHECK_EQ_INT(got.link, 7);
        CHECK_EQ_INT(got.url_len, t.url_len);
        CHECK_EQ_STR(got.url, kinds[i] == LL_TOK_CLICK ? "https://example.com/a?b=c#d" : "");
    }
    /* An explicit issue time is kept; a url on an open token is not carried. */
    ll_token_t t = make_tok(LL_TOK_OPEN, "https://example.com/"), got;
    t.issued = 1234567890;
    char b64[LL_TOKEN_B64_MAX];
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), 0);
    CHECK_EQ_INT(verify_str(k, LL_TOK_OPEN, b64, &got), 0);
    CHECK_EQ_INT(got.issued, 1234567890);
    CHECK_EQ_INT(got.url_len, 0);
    /* The longest destination with the longest link tag fits, in LL_TOKEN_B64_MAX exactly. */
    char url[LL_TOKEN_URL_MAX + 2];
    memset(url, 'a', sizeof(url));
    memcpy(url, "https://x.example/", 18);
    url[LL_TOKEN_URL_MAX] = '\0';
    t = make_tok(LL_TOK_CLICK, url);
    memset(t.link_tag, 'z', LL_TOKEN_LINK_TAG_MAX);
    t.link_tag[LL_TOKEN_LINK_TAG_MAX] = '\0';
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), 0);
    CHECK_EQ_INT(strlen(b64), LL_TOKEN_B64_MAX - 1);
    CHECK_EQ_INT(verify_str(k, LL_TOK_CLICK, b64, &got), 0);
    CHECK_EQ_INT(got.url_len, LL_TOKEN_URL_MAX);
    CHECK_EQ_STR(got.link_tag, t.link_tag);
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64) - 1), LL_ETOOBIG);
    t.link_tag[0] = '\0';
    url[LL_TOKEN_URL_MAX] = 'a';
    url[LL_TOKEN_URL_MAX + 1] = '\0';
    t = make_tok(LL_TOK_CLICK, url);
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), LL_EINVAL);
    /* Kinds the format does not know are refused. */
    t = make_tok(0, NULL);
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), LL_EINVAL);
    t = make_tok(4, NULL);
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), LL_EINVAL);
    ll_keyring_free(k);
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Every token that differs from good in one char, or is a strict prefix of it, must fail. */
static void check_tamper(const ll_keyring_t *k, int kind, const char *good)
{
    char buf[LL_TOKEN_B64_MAX + 2];
    size_t len = strlen(good), accepted = 0;
    ll_token_t got;
    for (size_t i = 0; i < len; i++) {
        for (const char *c = b64chars; *c != '\0'; c++) {
            if (*c == good[i])
                continue;
            memcpy(buf, good, len + 1);
            buf[i] = *c;
            if (ll_token_verify(k, kind, buf, len, &got) != LL_EBADTOKEN)
                accepted++;
        }
    }
    CHECK_EQ_INT(accepted, 0);
    for (size_t n = 0; n < len; n++)
        if (ll_token_verify(k, kind, good, n, &got) != LL_EBADTOKEN)
            accepted++;
    CHECK_EQ_INT(accepted, 0);
    /* One more char, or a padding char, is no better. */
    memcpy(buf, good, len);
    buf[len + 1] = '\0';
    for (const char *c = "A_=."; *c != '\0'; c++) {
        buf[len] = *c;
        CHECK_EQ_INT(ll_token_verify(k, kind, buf, len + 1, &got), LL_EBADTOKEN);
    }
    CHECK_EQ_INT(ll_token_verify(k, kind, good, len, &got), 0);
}

static void test_tamper(void)
{
    ll_keyring_t *k = ring_open("rt.keys");
    if (k == NULL)
        return;
    char b64[LL_TOKEN_B64_MAX];
    ll_token_t t = make_tok(LL_TOK_CLICK, "http://a.example/x");
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), 0);
    check_tamper(k, LL_TOK_CLICK, b64);
    t = make_tok(LL_TOK_OPEN, NULL);
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), 0);
    check_tamper(k, LL_TOK_OPEN, b64);
    t = make_tok(LL_TOK_UNSUB, NULL);
    t.link = 0;
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), 0);
    check_tamper(k, LL_TOK_UNSUB, b64);
    /* Over-long input is refused before decoding, whatever it holds. */
    char big[LL_TOKEN_B64_MAX + 1];
    memset(big, 'A', sizeof(big));
    ll_token_t got;
    CHECK_EQ_INT(ll_token_verify(k, LL_TOK_CLICK, big, LL_TOKEN_B64_MAX, &got), LL_EBADTOKEN);
    CHECK_EQ_INT(ll_token_verify(k, LL_TOK_CLICK, big, sizeof(big), &got), LL_EBADTOKEN);
    CHECK_EQ_INT(ll_token_verify(k, LL_TOK_CLICK, NULL, 0, &got), LL_EBADTOKEN);
    ll_keyring_free(k);
}

static void test_wrong_kind(void)
{
    ll_keyring_t *k = ring_open("rt.keys");
    if (k == NULL)
        return;
    static const int kinds[] = {LL_TOK_CLICK, LL_TOK_OPEN, LL_TOK_UNSUB};
    for (size_t i = 0; i < 3; i++) {
        ll_token_t t = make_tok(kinds[i], "https://example.com/"), got;
        char b64[LL_TOKEN_B64_MAX];
        CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), 0);
        for (int want = 0; want <= 4; want++)
            CHECK_EQ_INT(verify_str(k, want, b64, &got), want == kinds[i] ? 0 : LL_EBADTOKEN);
    }
    ll_keyring_free(k);
}

static void test_unknown_key(void)
{
    ll_keyring_t *a = ring_open("a.keys"), *b = ring_open("b.keys");
    if (a == NULL || b == NULL)
        goto leave;
    char b64[LL_TOKEN_B64_MAX];
    ll_token_t t = make_tok(LL_TOK_OPEN, NULL), got;
    /* Same id 1 in both rings, different keys: the tag does not check out. */
    CHECK_EQ_INT(ll_token_sign(a, &t, b64, sizeof(b64)), 0);
    CHECK_EQ_INT(verify_str(b, LL_TOK_OPEN, b64, &got), LL_EBADTOKEN);
    /* Id 2 exists only in ring A. */
    CHECK_EQ_INT(ring_rotate("a.keys"), 0);
    ll_keyring_free(a);
    a = ring_open("a.keys");
    if (a == NULL)
        goto leave;
    CHECK_EQ_INT(ll_keyring_current(a), 2);
    CHECK_EQ_INT(ll_token_sign(a, &t, b64, sizeof(b64)), 0);
    CHECK_EQ_INT(verify_str(a, LL_TOK_OPEN, b64, &got), 0);
    CHECK_EQ_INT(got.key_id, 2);
    CHECK_EQ_INT(verify_str(b, LL_TOK_OPEN, b64, &got), LL_EBADTOKEN);
leave:
    ll_keyring_free(a);
    ll_keyring_free(b);
}

typedef struct {
    ll_keyring_t *k;
    char b64[64][LL_TOKEN_B64_MAX];
    int rc;
} signer_t;

static void *sign_many(void *arg)
{
    signer_t *sg = arg;
    for (int i = 0; i < 64 && sg->rc == 0; i++) {
        ll_token_t t = make_tok(LL_TOK_OPEN, NULL);
        t.send = (uint64_t)i;
        sg->rc = ll_token_sign(sg->k, &t, sg->b64[i], sizeof(sg->b64[i]));
    }
    return NULL;
}

/* Each thread keeps copies of the MAC contexts it uses (token.c): more rings than it keeps, a
 * ring freed and another made (perhaps at the same address), and threads signing side by side
 * never mix keys up. */
static void test_thread_contexts(void)
{
    enum { RINGS = 6 };
    ll_keyring_t *r[RINGS] = {0};
    char b64[LL_TOKEN_B64_MAX], old[LL_TOKEN_B64_MAX], name[32], path[128];
    ll_token_t t = make_tok(LL_TOK_OPEN, NULL), got;
    for (int i = 0; i < RINGS; i++) {
        snprintf(name, sizeof(name), "ctx%d.keys", i);
        if ((r[i] = ring_open(name)) == NULL)
            goto leave;
    }
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < RINGS; i++) {
            CHECK_EQ_INT(ll_token_sign(r[i], &t, b64, sizeof(b64)), 0);
            CHECK_EQ_INT(verify_str(r[i], LL_TOK_OPEN, b64, &got), 0);
            CHECK_EQ_INT(verify_str(r[(i + 1) % RINGS], LL_TOK_OPEN, b64, &got), LL_EBADTOKEN);
        }
    /* Ring 0 freed, a ring with another key opened in its place. */
    CHECK_EQ_INT(ll_token_sign(r[0], &t, old, sizeof(old)), 0);
    ll_keyring_free(r[0]);
    path_in_tmp(path, sizeof(path), "ctx0.keys");
    unlink(path);
    if ((r[0] = ring_open("ctx0.keys")) == NULL)
        goto leave;
    CHECK_EQ_INT(verify_str(r[0], LL_TOK_OPEN, old, &got), LL_EBADTOKEN);
    CHECK_EQ_INT(ll_token_sign(r[0], &t, b64, sizeof(b64)), 0);
    CHECK_EQ_INT(verify_str(r[0], LL_TOK_OPEN, b64, &got), 0);
    /* Threads sign with rings of their own and the main thread checks. */
    signer_t sg[4];
    pthread_t tid[4];
    for (int i = 0; i < 4; i++) {
        sg[i].k = r[i], sg[i].rc = 0;
        CHECK(pthread_create(&tid[i], NULL, sign_many, &sg[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(tid[i], NULL);
        CHECK_EQ_INT(sg[i].rc, 0);
        for (int j = 0; j < 64; j++) {
            CHECK_EQ_INT(verify_str(r[i], LL_TOK_OPEN, sg[i].b64[j], &got), 0);
            CHECK(got.send == (uint64_t)j);
            CHECK_EQ_INT(verify_str(r[(i + 1) % RINGS], LL_TOK_OPEN, sg[i].b64[j], &got), LL_EBADTOKEN);
        }
    }
leave:
    for (int i = 0; i < RINGS; i++)
        ll_keyring_free(r[i]);
}

static void test_rotation(void)
{
    char path[128], err[256] = "";
    ll_keyring_t *k = ring_open("rot.keys");
    if (k == NULL)
        return;
    char old_b64[LL_TOKEN_B64_MAX], new_b64[LL_TOKEN_B64_MAX];
    ll_token_t t = make_tok(LL_TOK_CLICK, "https://example.com/r"), got;
    CHECK_EQ_INT(ll_token_sign(k, &t, old_b64, sizeof(old_b64)), 0);
    CHECK_EQ_INT(ring_rotate("rot.keys"), 0);
    CHECK_EQ_INT(ring_rotate("rot.keys"), 0);
    ll_keyring_t *k2 = ring_open("rot.keys");
    if (k2 == NULL)
        goto leave;
    CHECK_EQ_INT(ll_keyring_current(k2), 3);
    CHECK_EQ_INT(verify_str(k2, LL_TOK_CLICK, old_b64, &got), 0);
    CHECK_EQ_INT(got.key_id, 1);
    CHECK_EQ_STR(got.url, "https://example.com/r");
    CHECK_EQ_INT(ll_token_sign(k2, &t, new_b64, sizeof(new_b64)), 0);
    CHECK_EQ_INT(verify_str(k2, LL_TOK_CLICK, new_b64, &got), 0);
    CHECK_EQ_INT(got.key_id, 3);
    /* A ring loaded before the rotation does not know the new key yet. */
    CHECK_EQ_INT(verify_str(k, LL_TOK_CLICK, new_b64, &got), LL_EBADTOKEN);
    ll_keyring_free(k2);

    /* Ids are one byte: no rotation past 255, and the file is left alone. */
    path_in_tmp(path, sizeof(path), "full.keys");
    write_file(path, "255 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
    CHECK_EQ_INT(ll_keyring_rotate(path, err, sizeof(err)), LL_ENOMEM);
    CHECK(strstr(err, path) != NULL);
    k2 = ring_open("full.keys");
    if (k2 != NULL)
        CHECK_EQ_INT(ll_keyring_current(k2), 255);
    ll_keyring_free(k2);

    /* A hand-edited file without a final newline, with a comment and ids out of order. */
    path_in_tmp(path, sizeof(path), "edit.keys");
    write_file(path, "# keys\n7 00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff\r\n\n"
                     "3 ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100");
    k2 = ring_open("edit.keys");
    if (k2 != NULL)
        CHECK_EQ_INT(ll_keyring_current(k2), 3); /* the last line signs */
    ll_keyring_free(k2);
    CHECK_EQ_INT(ring_rotate("edit.keys"), 0);
    k2 = ring_open("edit.keys");
    if (k2 != NULL)
        CHECK_EQ_INT(ll_keyring_current(k2), 8); /* newest is the highest id */
    ll_keyring_free(k2);

    path_in_tmp(path, sizeof(path), "missing.keys");
    CHECK_EQ_INT(ll_keyring_rotate(path, err, sizeof(err)), LL_EIO);
    CHECK(strstr(err, path) != NULL);
leave:
    ll_keyring_free(k);
}

static void test_destinations(void)
{
    static const char *const good[] = {
        "http://a",
        "https://example.com",
        "HTTPS://Example.COM/path?q=1&r=%20#frag",
        "HtTp://example.com:8080/",
        "http://[::1]:8080/x",
        "https://example.com/a@b",
        "https://example.com?x=a@b",
        "https://xn--bcher-kva.example/%C3%BC",
    };
    static const char *const bad[] = {
        "",
        "javascript:alert(1)",
        "JAVASCRIPT://example.com/%0aalert(1)",
        "ftp://example.com/",
        "data:text/html,x",
        "//example.com/",
        "/relative",
        "http:example.com",
        "http://a\r\nSet-Cookie: x",
        "http://a/\n",
        "http://a/b c",
        "http://a/\t",
        "http://a/\x7f",
        "http://a\\@evil.example/",
        "https:\\\\evil.example",
        "http://ex\xc3\xa4mple.com/",
        "http:///path",
        "http://",
        "https://?q",
        "http://:80/",
        "http://user@example.com/",
        "http://example.com@evil.example/",
        "http://user:pass@evil.example",
        "http://a:port/",
        "http://a:/",
        "http://a:99999/",
        "http://[::1/",
        "http://[]/",
        "http://[::1]x/",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int rc = ll_url_check_destination(good[i], strlen(good[i]));
        if (rc != 0)
            fprintf(stderr, "test_token: refused %s\n", good[i]);
        CHECK_EQ_INT(rc, 0);
    }
    ll_keyring_t *k = ring_open("rt.keys");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = ll_url_check_destination(bad[i], strlen(bad[i]));
        if (rc != LL_EINVAL)
            fprintf(stderr, "test_token: accepted %s\n", bad[i]);
        CHECK_EQ_INT(rc, LL_EINVAL);
        if (k != NULL) {
            ll_token_t t = make_tok(LL_TOK_CLICK, bad[i]);
            char b64[LL_TOKEN_B64_MAX];
            CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), LL_EINVAL);
        }
    }
    /* A NUL inside the range counts; the range, not strlen, is what is checked. */
    CHECK_EQ_INT(ll_url_check_destination("http://a/\0x", 11), LL_EINVAL);
    CHECK_EQ_INT(ll_url_check_destination("http://a/ x", 8), 0);
    CHECK_EQ_INT(ll_url_check_destination(NULL, 0), LL_EINVAL);
    char url[LL_TOKEN_URL_MAX + 1];
    memset(url, 'a', sizeof(url));
    memcpy(url, "http://a/", 9);
    CHECK_EQ_INT(ll_url_check_destination(url, LL_TOKEN_URL_MAX), 0);
    CHECK_EQ_INT(ll_url_check_destination(url, LL_TOKEN_URL_MAX + 1), LL_EINVAL);
    ll_keyring_free(k);
}

static void test_b64url(void)
{
    static const struct {
        const char *raw, *enc;
    } vec[] = {{"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"}, {"foob", "Zm9vYg"},
               {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"}, {"\xff\xfe\xfd", "__79"}};
    char enc[80];
    uint8_t dec[64];
    size_t n;
    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
        size_t rl = strlen(vec[i].raw);
        CHECK_EQ_INT(ll_b64url_encode(enc, (const uint8_t *)vec[i].raw, rl), strlen(vec[i].enc));
        CHECK_EQ_STR(enc, vec[i].enc);
        n = 99;
        CHECK_EQ_INT(ll_b64url_decode(dec, sizeof(dec), vec[i].enc, strlen(vec[i].enc), &n), 0);
        CHECK_EQ_INT(n, rl);
        CHECK(memcmp(dec, vec[i].raw, rl) == 0);
    }
    /* Every length and byte value round-trips. */
    uint8_t raw[48];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (uint8_t)(i * 37 + 255);
    for (size_t len = 0; len <= sizeof(raw); len++) {
        size_t el = ll_b64url_encode(enc, raw, len);
        CHECK_EQ_INT(ll_b64url_decode(dec, sizeof(dec), enc, el, &n), 0);
        CHECK_EQ_INT(n, len);
        CHECK(memcmp(dec, raw, len) == 0);
    }
    static const char *const bad[] = {
        "Zg==", "Zg=", "Zm9v=", "Zm+v", "Zm/v", "Zm9v\n", " Zm9v", "Zm 9v", "Zm9\t", "Z",
        "Zm9vY", "Zh", "Zm9", "Zm-", "Zm9vYh", "Zm.v", "Zm9v\x80", "\xc3\xa4",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = ll_b64url_decode(dec, sizeof(dec), bad[i], strlen(bad[i]), &n);
        if (rc != LL_EINVAL)
            fprintf(stderr, "test_token: decoded \"%s\"\n", bad[i]);
        CHECK_EQ_INT(rc, LL_EINVAL);
    }
    /* Non-canonical tails: "Zh" and "Zm-" decode to the same bytes as "Zg" and "Zm8". */
    CHECK_EQ_INT(ll_b64url_decode(dec, sizeof(dec), "Zm9", 3, &n), LL_EINVAL);
    CHECK_EQ_INT(ll_b64url_decode(dec, sizeof(dec), "Zm8", 3, &n), 0);
    /* Every byte value in every place of a group and of a two-character tail: decoded iff in the
     * alphabet (and, as a tail's last, with no bits left over), to its index. */
    int wrong = 0;
    for (int c = 0; c < 256; c++) {
        const char *at = c != 0 ? strchr(b64chars, c) : NULL;
        uint32_t x = at != NULL ? (uint32_t)(at - b64chars) : 0;
        for (size_t pos = 0; pos < 6; pos++) {
            char in[6];
            memcpy(in, "AAAAAA", 6);
            in[pos] = (char)c;
            size_t len = pos < 4 ? 4 : 6;
            int ok = at != NULL && (pos != 5 || (x & 15) == 0);
            int rc = ll_b64url_decode(dec, sizeof(dec), in, len, &n);
            uint32_t v = pos < 4 ? x << (6 * (3 - pos)) : 0;
            uint8_t tail = pos == 4 ? (uint8_t)(x << 2) : pos == 5 ? (uint8_t)(x >> 4) : 0;
            if (!ok ? rc != LL_EINVAL
                    : rc != 0 || n != len / 4 * 3 + (len % 4 ? 1 : 0) || dec[0] != (uint8_t)(v >> 16) ||
                          dec[1] != (uint8_t)(v >> 8) || dec[2] != (uint8_t)v || (len == 6 && dec[3] != tail))
                wrong++;
        }
    }
    CHECK_EQ_INT(wrong, 0);
    /* The output bound holds. */
    CHECK_EQ_INT(ll_b64url_decode(dec, 2, "Zm9v", 4, &n), LL_ETOOBIG);
    CHECK_EQ_INT(ll_b64url_decode(dec, 3, "Zm9v", 4, &n), 0);
    CHECK_EQ_INT(ll_b64url_decode(dec, 1, "Zm8", 3, &n), LL_ETOOBIG);
}

static void test_keyfile(void)
{
    char path[128], err[256], want[192];
    struct stat st;
    ll_keyring_t *k = NULL;

    /* Created 0600 whatever the umask, one line with id 1, and the same key when reopened. */
    mode_t old = umask(0);
    k = ring_open("new.keys");
    umask(old);
    path_in_tmp(path, sizeof(path), "new.keys");
    CHECK_EQ_INT(stat(path, &st), 0);
    CHECK_EQ_INT(st.st_mode & 07777, 0600);
    CHECK_EQ_INT(st.st_size, 2 + 64 + 1);
    FILE *f = fopen(path, "r");
    char line[128] = "";
    if (f != NULL) {
        CHECK(fgets(line, sizeof(line), f) != NULL);
        fclose(f);
    }
    CHECK(strncmp(line, "1 ", 2) == 0);
    CHECK(strspn(line + 2, "0123456789abcdef") == 64);
    ll_keyring_t *k2 = ring_open("new.keys");
    if (k != NULL && k2 != NULL) {
        char b64[LL_TOKEN_B64_MAX];
        ll_token_t t = make_tok(LL_TOK_UNSUB, NULL), got;
        CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), 0);
        CHECK_EQ_INT(verify_str(k2, LL_TOK_UNSUB, b64, &got), 0);
    }
    ll_keyring_free(k2);
    ll_keyring_free(k);
    /* No temporary file is left beside it. */
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "test $(ls '%s' | grep -c tmp) = 0", tmpdir);
    CHECK_EQ_INT(system(cmd), 0);

    /* A readable-by-others file still loads. */
    path_in_tmp(path, sizeof(path), "open.keys");
    write_file(path, "1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
    chmod(path, 0644);
    k = ring_open("open.keys");
    CHECK(k != NULL);
    ll_keyring_free(k);

    static const struct {
        const char *text;
        int line;
    } bad[] = {
        {"1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n2 abc\n", 2},
        {"1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeffaa\n", 1},
        {"0 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 1},
        {"256 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 1},
        {"x 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 1},
        {"\n\n1  00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 3},
        {"1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg\n", 1},
        {"-1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        path_in_tmp(path, sizeof(path), "bad.keys");
        write_file(path, bad[i].text);
        k = (ll_keyring_t *)1;
        strcpy(err, "");
        CHECK_EQ_INT(ll_keyring_open(path, &k, err, sizeof(err)), LL_EINVAL);
        CHECK(k == NULL);
        snprintf(want, sizeof(want), "%s:%d: malformed key line", path, bad[i].line);
        CHECK_EQ_STR(err, want);
        CHECK_EQ_INT(ll_keyring_rotate(path, err, sizeof(err)), LL_EINVAL);
        CHECK_EQ_STR(err, want);
    }
    /* A repeated id and an empty file fail too, naming the file. */
    write_file(path, "1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
                     "1 ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100\n");
    CHECK_EQ_INT(ll_keyring_open(path, &k, err, sizeof(err)), LL_EINVAL);
    snprintf(want, sizeof(want), "%s:2: duplicate key id 1", path);
    CHECK_EQ_STR(err, want);
    write_file(path, "# nothing\n");
    CHECK_EQ_INT(ll_keyring_open(path, &k, err, sizeof(err)), LL_EINVAL);
    CHECK(strncmp(err, path, strlen(path)) == 0);
    /* A directory where the file should be, and a path in a missing directory. */
    CHECK(ll_keyring_open(tmpdir, &k, err, sizeof(err)) != 0);
    CHECK(k == NULL);
    path_in_tmp(path, sizeof(path), "nodir/x.keys");
    CHECK_EQ_INT(ll_keyring_open(path, &k, err, sizeof(err)), LL_EIO);
    CHECK(strstr(err, "nodir") != NULL);
}

/* Signs an arbitrary payload with key id 1 of the given file, as only a key holder could. */
static void forge(const char *keyfile, const uint8_t *payload, size_t n, char *out)
{
    char path[128], line[128] = "";
    uint8_t key[32], raw[LL_TOKEN_FIXED + LL_TOKEN_URL_MAX + LL_TOKEN_TAG + 8], md[32];
    unsigned mdlen = 0;
    path_in_tmp(path, sizeof(path), keyfile);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK(fgets(line, sizeof(line), f) != NULL);
        fclose(f);
    }
    CHECK(strncmp(line, "1 ", 2) == 0);
    CHECK_EQ_INT(ll_hex_decode(key, line + 2, 32), 0);
    memcpy(raw, payload, n);
    HMAC(EVP_sha256(), key, sizeof(key), payload, n, md, &mdlen);
    memcpy(raw + n, md, LL_TOKEN_TAG);
    ll_b64url_encode(out, raw, n + LL_TOKEN_TAG);
}

static size_t payload(uint8_t *p, int version, int kind, int key_id, const char *url, int url_len_field)
{
    memset(p, 0, LL_TOKEN_FIXED);
    p[0] = (uint8_t)version, p[1] = (uint8_t)kind, p[2] = (uint8_t)key_id;
    p[6] = 1;  /* issued */
    p[14] = 2; /* send */
    p[22] = 3; /* contact */
    size_t ul = url != NULL ? strlen(url) : 0;
    int field = url_len_field >= 0 ? url_len_field : (int)ul;
    p[27] = (uint8_t)(field >> 8), p[28] = (uint8_t)field;
    if (ul != 0)
        memcpy(p + LL_TOKEN_FIXED, url, ul);
    return LL_TOKEN_FIXED + ul;
}

/* Tokens with a tag that checks out but a field that does not. */
static void test_after_tag(void)
{
    ll_keyring_t *k = ring_open("rt.keys");
    if (k == NULL)
        return;
    uint8_t p[LL_TOKEN_FIXED + 64];
    char b64[LL_TOKEN_B64_MAX];
    ll_token_t got;
    size_t n;

    n = payload(p, 1, LL_TOK_CLICK, 1, "https://ok.example/", -1);
    forge("rt.keys", p, n, b64);
    CHECK_EQ_INT(verify_str(k, LL_TOK_CLICK, b64, &got), 0); /* the forger is sound */
    CHECK_EQ_INT(got.issued, 1);
    CHECK(got.send == 2 && got.contact == 3);
    CHECK_EQ_STR(got.url, "https://ok.example/");

    n = payload(p, 2, LL_TOK_CLICK, 1, "https://ok.example/", -1);
    forge("rt.keys", p, n, b64);
    CHECK_EQ_INT(verify_str(k, LL_TOK_CLICK, b64, &got), LL_EBADTOKEN);

    n = payload(p, 1, LL_TOK_CLICK, 1, "javascript:alert(1)", -1);
    forge("rt.keys", p, n, b64);
    CHECK_EQ_INT(verify_str(k, LL_TOK_CLICK, b64, &got), LL_EBADTOKEN);

    n = payload(p, 1, LL_TOK_CLICK, 1, "http://a\r\nSet-Cookie: x", -1);
    forge("rt.keys", p, n, b64);
    CHECK_EQ_INT(verify_str(k, LL_TOK_CLICK, b64, &got), LL_EBADTOKEN);

    n = payload(p, 1, LL_TOK_CLICK, 1, NULL, -1); /* a click with no destination */
    forge("rt.keys", p, n, b64);
    CHECK_EQ_INT(verify_str(k, LL_TOK_CLICK, b64, &got), LL_EBADTOKEN);

    static const int lens[] = {0, 18, 20, 0xffff};
    for (size_t i = 0; i < 4; i++) { /* the url length disagrees with the token length */
        n = payload(p, 1, LL_TOK_CLICK, 1, "https://ok.example/", lens[i]);
        forge("rt.keys", p, n, b64);
        CHECK_EQ_INT(verify_str(k, LL_TOK_CLICK, b64, &got), LL_EBADTOKEN);
    }

    n = payload(p, 1, LL_TOK_OPEN, 1, "https://ok.example/", -1); /* opens carry no url */
    forge("rt.keys", p, n, b64);
    CHECK_EQ_INT(verify_str(k, LL_TOK_OPEN, b64, &got), LL_EBADTOKEN);
    n = payload(p, 1, LL_TOK_OPEN, 1, NULL, -1);
    forge("rt.keys", p, n, b64);
    CHECK_EQ_INT(verify_str(k, LL_TOK_OPEN, b64, &got), 0);

    /* Kinds beyond the three never match, even when asked for. */
    n = payload(p, 1, 9, 1, NULL, -1);
    forge("rt.keys", p, n, b64);
    CHECK_EQ_INT(verify_str(k, LL_TOK_OPEN, b64, &got), LL_EBADTOKEN);

    /* The right key under an id the ring does not hold. */
    n = payload(p, 1, LL_TOK_OPEN, 2, NULL, -1);
    forge("rt.keys", p, n, b64);
    CHECK_EQ_INT(verify_str(k, LL_TOK_OPEN, b64, &got), LL_EBADTOKEN);
    n = payload(p, 1, LL_TOK_OPEN, 0, NULL, -1);
    forge("rt.keys", p, n, b64);
    CHECK_EQ_INT(verify_str(k, LL_TOK_OPEN, b64, &got), LL_EBADTOKEN);
    ll_keyring_free(k);
}

/* Link tags (version 2): carried by clicks, checked when signing and when verifying; an
 * untagged click stays version 1 and as short as before. */
static void test_link_tag(void)
{
    ll_keyring_t *k = ring_open("tag.keys");
    if (k == NULL)
        return;
    char b64[LL_TOKEN_B64_MAX], plain[LL_TOKEN_B64_MAX];
    ll_token_t t = make_tok(LL_TOK_CLICK, "https://example.com/pricing"), got;
    CHECK_EQ_INT(ll_token_sign(k, &t, plain, sizeof(plain)), 0);
    CHECK_EQ_INT(verify_str(k, LL_TOK_CLICK, plain, &got), 0);
    CHECK_EQ_STR(got.link_tag, "");
    snprintf(t.link_tag, sizeof(t.link_tag), "pricing-v2.q_1");
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), 0);
    CHECK(strlen(b64) > strlen(plain));
    memset(&got, 0xaa, sizeof(got));
    CHECK_EQ_INT(verify_str(k, LL_TOK_CLICK, b64, &got), 0);
    CHECK_EQ_STR(got.link_tag, "pricing-v2.q_1");
    CHECK_EQ_STR(got.url, "https://example.com/pricing");
    CHECK_EQ_INT(verify_str(k, LL_TOK_OPEN, b64, &got), LL_EBADTOKEN);
    check_tamper(k, LL_TOK_CLICK, b64);
    static const char *const bad[] = {"Pricing", "a b", "x/y", "\"q\"", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(t.link_tag, sizeof(t.link_tag), "%s", bad[i]);
        CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), strlen(bad[i]) > LL_TOKEN_LINK_TAG_MAX ? 0 : LL_EINVAL);
    }
    CHECK_EQ_INT(ll_link_tag_check("", 0), LL_EINVAL);
    CHECK_EQ_INT(ll_link_tag_check("ok", 2), 0);
    /* Opens and unsubscribes never carry one. */
    t = make_tok(LL_TOK_OPEN, NULL);
    snprintf(t.link_tag, sizeof(t.link_tag), "x1");
    CHECK_EQ_INT(ll_token_sign(k, &t, b64, sizeof(b64)), 0);
    CHECK_EQ_INT(verify_str(k, LL_TOK_OPEN, b64, &got), 0);
    CHECK_EQ_STR(got.link_tag, "");
    ll_keyring_free(k);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_token.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_roundtrip);
    RUN(test_tamper);
    RUN(test_wrong_kind);
    RUN(test_unknown_key);
    RUN(test_thread_contexts);
    RUN(test_rotation);
    RUN(test_destinations);
    RUN(test_b64url);
    RUN(test_keyfile);
    RUN(test_after_tag);
    RUN(test_link_tag);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_token: cannot remove %s\n", tmpdir);
    return TEST_DONE("token");
}
