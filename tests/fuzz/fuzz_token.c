/*
 * ll_token_verify and base64url. Input: one mode byte, then the rest.
 *   mode & 3 picks the kind the endpoint expects (0 is no kind at all).
 *   mode & 4: the rest is a raw payload, signed here with key 1 and then verified, so that the
 *             parsing after the tag check (version, kind, url length, destination) is reached;
 *             otherwise the rest is a token as a client sends it.
 * Properties: decode-then-encode gives the input back (one spelling per byte string); a token
 * that verifies carries a destination ll_url_check_destination accepts; a signed click to a
 * destination that passes the check verifies and gives the same fields back.
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "fuzz.h"
#include "leadloop/token.h"

static const char key1_hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
static ll_keyring_t *keys;

static void init(void)
{
    char path[] = "/tmp/ll-fuzz-keys-XXXXXX", err[256];
    int fd = mkstemp(path);
    FUZZ_CHECK(fd >= 0);
    dprintf(fd, "1 %s\n2 ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100\n1\n", key1_hex);
    close(fd);
    /* A malformed last line must fail to load; then the good file. */
    FUZZ_CHECK(ll_keyring_open(path, &keys, err, sizeof(err)) != 0 && keys == NULL);
    fd = open(path, O_WRONLY | O_TRUNC);
    dprintf(fd, "2 ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100\n1 %s\n", key1_hex);
    close(fd);
    FUZZ_CHECK(ll_keyring_open(path, &keys, err, sizeof(err)) == 0);
    unlink(path);
}

static void signed_payload(int kind, const uint8_t *p, size_t n)
{
    static uint8_t raw[LL_TOKEN_FIXED + LL_TOKEN_URL_MAX + LL_TOKEN_TAG + 64];
    static char b64[sizeof(raw) * 2];
    uint8_t key[32], md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (n > sizeof(raw) - LL_TOKEN_TAG)
        return;
    ll_hex_decode(key, key1_hex, 32);
    memcpy(raw, p, n);
    FUZZ_CHECK(HMAC(EVP_sha256(), key, 32, raw, n, md, &mdlen) != NULL);
    memcpy(raw + n, md, LL_TOKEN_TAG);
    size_t len = ll_b64url_encode(b64, raw, n + LL_TOKEN_TAG);
    ll_token_t tok;
    if (ll_token_verify(keys, kind, b64, len, &tok) != 0)
        return;
    /* It verified: the payload must be exactly what the header says. */
    FUZZ_CHECK(n >= LL_TOKEN_FIXED && p[0] == LL_TOKEN_VERSION && p[1] == kind && p[2] == 1);
    FUZZ_CHECK(tok.url_len == n - LL_TOKEN_FIXED && memcmp(tok.url, p + LL_TOKEN_FIXED, tok.url_len) == 0);
    FUZZ_CHECK(kind == LL_TOK_CLICK ? ll_url_check_destination(tok.url, tok.url_len) == 0 : tok.url_len == 0);
}

static void roundtrip_click(const char *url, size_t n)
{
    static ll_token_t in, out;
    static char b64[LL_TOKEN_B64_MAX];
    if (n > LL_TOKEN_URL_MAX)
        return;
    int ok = ll_url_check_destination(url, n) == 0;
    memset(&in, 0, sizeof(in));
    in.kind = LL_TOK_CLICK;
    in.issued = 1700000000;
    in.send = 7;
    in.contact = 42;
    in.link = 3;
    memcpy(in.url, url, n);
    in.url_len = n;
    int rc = ll_token_sign(keys, &in, b64, sizeof(b64));
    FUZZ_CHECK((rc == 0) == ok);
    if (rc != 0)
        return;
    FUZZ_CHECK(ll_token_verify(keys, LL_TOK_CLICK, b64, strlen(b64), &out) == 0);
    FUZZ_CHECK(out.url_len == n && memcmp(out.url, url, n) == 0 && out.contact == 42 && out.send == 7 && out.link == 3);
    FUZZ_CHECK(ll_token_verify(keys, LL_TOK_OPEN, b64, strlen(b64), &out) != 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t raw[8192];
    static char enc[sizeof(raw) * 2];
    if (keys == NULL)
        init();
    if (size < 1)
        return 0;
    int kind = data[0] & 3;
    const char *s = (const char *)data + 1;
    size_t n = size - 1, olen;
    if (data[0] & 4) {
        signed_payload(kind, data + 1, n);
        return 0;
    }
    ll_token_t tok;
    if (ll_token_verify(keys, kind, s, n, &tok) == 0)
        FUZZ_CHECK(kind == LL_TOK_CLICK ? ll_url_check_destination(tok.url, tok.url_len) == 0 : tok.url_len == 0);
    if (ll_b64url_decode(raw, sizeof(raw), s, n, &olen) == 0) {
        size_t e = ll_b64url_encode(enc, raw, olen);
        FUZZ_CHECK(e == n && memcmp(enc, s, n) == 0);
    }
    roundtrip_click(s, n);
    return 0;
}
