/*
 * Signed tokens for email links, open pixels and unsubscribe links (DESIGN.md "Tokens").
 *
 * Wire form: base64url (no padding) of   payload || tag
 *   payload: version (1) | kind (1) | key id (1) | issued, unix seconds (4, BE)
 *            | send id (8, BE) | contact id (8, BE) | link index (4, BE)
 *            | url length (2, BE) | url bytes (clicks only; 0 length otherwise)
 *            [version 2 only: | link tag length (1) | link tag bytes]
 *   tag:     HMAC-SHA256(key[key id], payload), first LL_TOKEN_TAG bytes
 *
 * Any edge verifies a token without a database read. Verification recomputes the tag and
 * compares it in constant time (CRYPTO_memcmp) before looking at anything else in the
 * payload, so a changed byte, a truncated token, an unknown key id or a token of another
 * kind all fail the same way: LL_EBADTOKEN. Keys rotate by id: the newest key signs, every
 * key in the ring verifies.
 *
 * Destinations are http or https only, at most LL_TOKEN_URL_MAX bytes, with no control
 * characters, spaces or backslashes (ll_url_check_destination): a token can never carry a
 * header injection or a javascript: URL, because such a URL is refused when signing and,
 * belt and braces, again after verification.
 *
 * Version 2 adds a click's link tag (data-ll-tag="pricing" on the template's link, for scoring
 * rules that match a tag): [a-z0-9_.-], 1 to LL_TOKEN_LINK_TAG_MAX bytes. A token without a tag
 * is signed as version 1, so untagged links keep their length; both versions verify.
 *
 * Key file: text, mode 0600, one key a line: "<id> <64 hex chars>"; the last line signs.
 */
#ifndef LEADLOOP_TOKEN_H
#define LEADLOOP_TOKEN_H

#include "leadloop/common.h"

#define LL_TOKEN_VERSION 1
#define LL_TOKEN_TAG 16
#define LL_TOKEN_URL_MAX 2048
#define LL_TOKEN_FIXED 29 /* payload bytes before the url */
#define LL_TOKEN_LINK_TAG_MAX 32
/* Longest encoded token, plus a NUL. */
#define LL_TOKEN_B64_MAX (((LL_TOKEN_FIXED + LL_TOKEN_URL_MAX + 1 + LL_TOKEN_LINK_TAG_MAX + LL_TOKEN_TAG) * 4 + 2) / 3 + 1)

typedef enum {
    LL_TOK_CLICK = 1,
    LL_TOK_OPEN = 2,
    LL_TOK_UNSUB = 3
} ll_token_kind_t;

typedef struct st_ll_token_t {
    uint8_t kind;
    uint8_t key_id;
    uint32_t issued;   /* unix seconds; set by ll_token_sign when 0 */
    uint64_t send;
    uint64_t contact;
    uint32_t link;
    char url[LL_TOKEN_URL_MAX + 1]; /* clicks: the destination, NUL-terminated; "" otherwise */
    size_t url_len;
    char link_tag[LL_TOKEN_LINK_TAG_MAX + 1]; /* clicks: "" or the link's tag (version 2) */
} ll_token_t;

typedef struct st_ll_keyring_t ll_keyring_t;

/**
 * Loads the key file at path, creating it (0600, one random 256-bit key with id 1) when it
 * does not exist. Creation is race-free between processes (O_EXCL). A malformed file fails
 * with a message naming the path and line.
 */
int ll_keyring_open(const char *path, ll_keyring_t **out, char *err, size_t errlen);
/** Appends a new random key (id = newest + 1, wrapping past 255 is refused) to the file. */
int ll_keyring_rotate(const char *path, char *err, size_t errlen);
void ll_keyring_free(ll_keyring_t *k);
/** The key id that signs. */
int ll_keyring_current(const ll_keyring_t *k);

/**
 * Signs tok (kind, send, contact, link, url) with the current key into out (NUL-terminated).
 * outlen should be LL_TOKEN_B64_MAX. LL_EINVAL for a destination ll_url_check_destination refuses.
 */
int ll_token_sign(const ll_keyring_t *k, const ll_token_t *tok, char *out, size_t outlen);

/**
 * Verifies b64 (len bytes, not NUL-terminated) and decodes it into *out. kind is the kind the
 * endpoint expects. Constant-time tag comparison; never allocates.
 * @return 0, or LL_EBADTOKEN
 */
int ll_token_verify(const ll_keyring_t *k, int kind, const char *b64, size_t len, ll_token_t *out);

/** 0 when s (n bytes) is a valid link tag: 1..LL_TOKEN_LINK_TAG_MAX of [a-z0-9_.-]. */
int ll_link_tag_check(const char *s, size_t n);

/** 0 when url may be a redirect target: http(s)://host..., no controls/space/backslash, bounded. */
int ll_url_check_destination(const char *url, size_t len);

/* base64url without padding. */
size_t ll_b64url_encode(char *out, const uint8_t *in, size_t n); /* returns chars written, NUL added */
int ll_b64url_decode(uint8_t *out, size_t outcap, const char *in, size_t n, size_t *outlen);

#endif
