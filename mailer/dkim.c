/*
 * DKIM signing (RFC 6376) with libopendkim: relaxed/relaxed, rsa-sha256, the whole message
 * (headers and body) fed as one chunk, the DKIM-Signature header put in front of it.
 * One library handle serves every message, on whichever rendering thread signs it (main.c).
 *
 * The parsed key, kept. libopendkim takes the key's PEM text in dkim_sign() and decodes it for
 * every message it signs (PEM_read_bio_PrivateKey on a memory BIO over its copy of the text);
 * it has no call that takes a parsed key. With OpenSSL 3 that decoding, and the RSA set-up a new
 * key object pays on its first signature (its Montgomery contexts, its blinding), cost more than
 * the signature itself: 733 messages/s signed against ~4500 unsigned (BENCHMARKS.md). So the
 * mailer defines PEM_read_bio_PrivateKey itself, as smtp.c does connect(): the executable's
 * definition comes before libcrypto's for the libraries it loads. When the BIO holds exactly the
 * text of a key an open ll_dkim_t parsed, it returns that key (one more reference: libopendkim
 * frees it after signing); anything else goes to libcrypto's. An EVP_PKEY may sign on several
 * threads at once. Measured: 1206-1307 messages/s against 513-536 in 4 alternating pairs.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <dkim.h>
#include "mailer.h"

struct st_ll_dkim_t {
    DKIM_LIB *lib;
    unsigned char *key; /* PEM text */
    size_t keylen;
    EVP_PKEY *pkey;     /* the key parsed once (NULL: libopendkim parses it per message) */
    char selector[64], domain[256];
    struct st_ll_dkim_t *next_open;
};

static struct {
    pthread_mutex_t mu;
    ll_dkim_t *open; /* the handles whose parsed keys are handed out */
    size_t hits;     /* keys handed out (tests) */
} kept = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef EVP_PKEY *(*pem_read_fn)(BIO *, EVP_PKEY **, pem_password_cb *, void *);
static pem_read_fn libcrypto_pem_read;
static pthread_once_t pem_read_once = PTHREAD_ONCE_INIT;

static void find_pem_read(void)
{
    libcrypto_pem_read = (pem_read_fn)dlsym(RTLD_NEXT, "PEM_read_bio_PrivateKey");
}

EVP_PKEY *PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, pem_password_cb *cb, void *u)
{
    pthread_once(&pem_read_once, find_pem_read);
    char *data = NULL;
    long len = x == NULL && cb == NULL && bp != NULL && BIO_method_type(bp) == BIO_TYPE_MEM
                   ? BIO_get_mem_data(bp, &data)
                   : 0;
    if (len > 0) {
        pthread_mutex_lock(&kept.mu);
        for (ll_dkim_t *d = kept.open; d != NULL; d = d->next_open) {
            if ((size_t)len == d->keylen && memcmp(data, d->key, d->keylen) == 0 && EVP_PKEY_up_ref(d->pkey) == 1) {
                kept.hits++;
                pthread_mutex_unlock(&kept.mu);
                return d->pkey;
            }
        }
        pthread_mutex_unlock(&kept.mu);
    }
    return libcrypto_pem_read(bp, x, cb, u);
}

size_t ll__dkim_key_hits(void)
{
    pthread_mutex_lock(&kept.mu);
    size_t n = kept.hits;
    pthread_mutex_unlock(&kept.mu);
    return n;
}

/* Parses d's key once and hands it out from now on. Without it, signing still works (slower). */
static void keep_parsed_key(ll_dkim_t *d)
{
    pthread_once(&pem_read_once, find_pem_read);
    BIO *bio = BIO_new_mem_buf(d->key, (int)d->keylen);
    if (bio == NULL)
        return;
    d->pkey = libcrypto_pem_read(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (d->pkey == NULL)
        return;
    pthread_mutex_lock(&kept.mu);
    d->next_open = kept.open;
    kept.open = d;
    pthread_mutex_unlock(&kept.mu);
}

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
    d->keylen = b.len;
    snprintf(d->selector, sizeof(d->selector), "%s", selector);
    snprintf(d->domain, sizeof(d->domain), "%s", domain);
    if ((d->lib = dkim_init(NULL, NULL)) == NULL) {
        ll__dkim_free(d);
        return ll_err(err, errlen, LL_ENOMEM, "dkim: cannot initialise libopendkim");
    }
    keep_parsed_key(d);
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
    pthread_mutex_lock(&kept.mu);
    for (ll_dkim_t **p = &kept.open; *p != NULL; p = &(*p)->next_open) {
        if (*p == d) {
            *p = d->next_open;
            break;
        }
    }
    pthread_mutex_unlock(&kept.mu);
    EVP_PKEY_free(d->pkey);
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
