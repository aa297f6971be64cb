/*
 * DKIM signing (RFC 6376) with libopendkim: relaxed/relaxed, rsa-sha256, the whole message
 * (headers and body) fed as one chunk, the DKIM-Signature header put in front of it.
 * Signing runs on the claiming thread (main.c), so one library handle serves every message.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dkim.h>
#include "mailer.h"

struct st_ll_dkim_t {
    DKIM_LIB *lib;
    unsigned char *key; /* PEM text */
    char selector[64], domain[256];
};

int ll__dkim_open(const char *key_path, const char *selector, const char *domain, ll_dkim_t **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    FILE *f = fopen(key_path, "rb");
    if (f == NULL)
        return ll_err(err, errlen, LL_EIO, "%s: cannot open the DKIM key: %s", key_path, strerror(errno));
    ll_buf_t b;
    ll_buf_init(&b, 64 * 1024);
    char chunk[4096];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rc = ll_buf_append(&b, chunk, n);
    fclose(f);
    if (rc != 0 || b.len == 0 || strstr(b.data, "PRIVATE KEY-----") == NULL) {
        ll_buf_free(&b);
        return ll_err(err, errlen, LL_EINVAL, "%s: not a PEM private key", key_path);
    }
    if (strlen(selector) >= 64 || strlen(domain) >= 256 || *selector == '\0' || *domain == '\0') {
        ll_buf_free(&b);
        return ll_err(err, errlen, LL_EINVAL, "dkim: selector and domain are required");
    }
    ll_dkim_t *d = ll_calloc(1, sizeof(*d));
    d->key = (unsigned char *)b.data; /* the buffer's memory is now the key's */
    snprintf(d->selector, sizeof(d->selector), "%s", selector);
    snprintf(d->domain, sizeof(d->domain), "%s", domain);
    if ((d->lib = dkim_init(NULL, NULL)) == NULL) {
        ll__dkim_free(d);
        return ll_err(err, errlen, LL_ENOMEM, "dkim: cannot initialise libopendkim");
    }
    /* Sign one test message now, so a bad key fails at start rather than at send time. */
    ll_buf_t probe;
    ll_buf_init(&probe, 4096);
    ll_buf_appends(&probe, "From: <a@example.com>\r\nSubject: probe\r\n\r\nprobe\r\n");
    rc = ll__dkim_sign(d, 0, &probe);
    ll_buf_free(&probe);
    if (rc != 0) {
        ll__dkim_free(d);
        return ll_err(err, errlen, LL_EINVAL, "%s: libopendkim cannot sign with this key", key_path);
    }
    *out = d;
    return 0;
}

void ll__dkim_free(ll_dkim_t *d)
{
    if (d == NULL)
        return;
    if (d->lib != NULL)
        dkim_close(d->lib);
    free(d->key);
    free(d);
}

int ll__dkim_sign(ll_dkim_t *d, uint64_t send, ll_buf_t *msg)
{
    DKIM_STAT st;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    char id[32];
    snprintf(id, sizeof(id), "send-%llu", (unsigned long long)send);
    DKIM *dk = dkim_sign(d->lib, (const unsigned char *)id, NULL, d->key, (const unsigned char *)d->selector,
                         (const unsigned char *)d->domain, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
                         DKIM_SIGN_RSASHA256, -1, &st);
    if (dk == NULL)
        return LL_EINVAL;
    int rc = LL_EINVAL;
    if (dkim_chunk(dk, (unsigned char *)msg->data, msg->len) == DKIM_STAT_OK && dkim_chunk(dk, NULL, 0) == DKIM_STAT_OK &&
        dkim_eom(dk, NULL) == DKIM_STAT_OK &&
        dkim_getsighdr_d(dk, sizeof("DKIM-Signature: ") - 1, &sig, &siglen) == DKIM_STAT_OK) {
        /* The header goes first; libopendkim folds it with LF: make those CRLF. */
        ll_buf_t out;
        ll_buf_init(&out, msg->limit);
        rc = ll_buf_appends(&out, "DKIM-Signature: ");
        for (size_t i = 0; i < siglen && rc == 0; i++)
            rc = sig[i] == '\n' ? ll_buf_append(&out, "\r\n", 2) : sig[i] == '\r' ? 0 : ll_buf_append(&out, &sig[i], 1);
        if (rc == 0)
            rc = ll_buf_append(&out, "\r\n", 2);
        if (rc == 0)
            rc = ll_buf_append(&out, msg->data, msg->len);
        if (rc == 0) {
            ll_buf_free(msg);
            *msg = out;
        } else {
            ll_buf_free(&out);
        }
    }
    dkim_free(dk);
    return rc;
}
