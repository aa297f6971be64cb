/*
 * The outbox (score.h): one row per alert and receiver, written in the transaction that
 * raised the alert, removed by the notifier once the receiver answered 2xx. Ids increase, so
 * rows go out in the order they were raised.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/hmac.h>
#include "score_int.h"

#define OUTBOX_VERSION 1
#define BACKOFF_MAX_US (600ULL * 1000000)

/* Ids come from one counter in the meta db, so they never repeat, even after the outbox empties. */
int ll_outbox_next(ll_txn_t *t, uint64_t *id)
{
    MDB_val mk = {11, "outbox_next"}, mv;
    int rc = mdb_get(t->txn, ll_store_dbi(t->store, LL_DB_META), &mk, &mv);
    *id = rc == 0 && mv.mv_size == 8 ? ll_be64_get(mv.mv_data) : 1;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

static int put_row(ll_scorer_t *sc, ll_txn_t *t, int kind, const char *target, const char *json, size_t len)
{
    uint64_t id;
    int rc = ll_outbox_next(t, &id);
    if (rc != 0)
        return rc;
    ll_outbox_hdr_t h;
    memset(&h, 0, sizeof(h));
    h.version = OUTBOX_VERSION;
    h.kind = (uint8_t)kind;
    h.created_us = h.next_us = ll_now_us();
    snprintf(h.target, sizeof(h.target), "%s", target);
    uint8_t kb[8], nb[8];
    ll_be64_put(kb, id);
    ll_be64_put(nb, id + 1);
    MDB_val k = {8, kb}, v = {sizeof(h) + len, NULL};
    /* Email rows wait for the mailer in their own db: the notifier never scans them. */
    MDB_dbi dbi = kind == LL_OUT_EMAIL ? sc->outbox_mail : sc->outbox;
    if ((rc = mdb_put(t->txn, dbi, &k, &v, MDB_RESERVE)) != 0)
        return ll_store_err(rc);
    memcpy(v.mv_data, &h, sizeof(h));
    memcpy((char *)v.mv_data + sizeof(h), json, len);
    MDB_val mk = {11, "outbox_next"}, mv = {8, nb};
    return ll_store_err(mdb_put(t->txn, ll_store_dbi(t->store, LL_DB_META), &mk, &mv, 0));
}

int ll_outbox_alert(ll_scorer_t *sc, ll_txn_t *t, const char *to, const char *json, size_t len)
{
    const ll_score_conf_t *conf = sc->conf;
    int rc = 0;
    for (size_t i = 0; i < conf->num_hooks && rc == 0; i++)
        rc = put_row(sc, t, conf->hooks[i].kind == LL_HOOK_SLACK ? LL_OUT_SLACK : LL_OUT_JSON, conf->hooks[i].name, json,
                     len);
    if (rc == 0 && conf->admin_token != NULL && conf->admin_listen != NULL)
        rc = put_row(sc, t, LL_OUT_SSE, "sse", json, len);
    if (rc == 0 && conf->email_owner && to != NULL && strchr(to, '@') != NULL)
        rc = put_row(sc, t, LL_OUT_EMAIL, to, json, len);
    return rc;
}

static int each(MDB_dbi dbi, ll_txn_t *t, uint64_t from, ll_outbox_cb cb, void *ctx)
{
    MDB_cursor *cur;
    uint8_t fb[8];
    ll_be64_put(fb, from);
    MDB_val k = {8, fb}, v;
    int rc = mdb_cursor_open(t->txn, dbi, &cur);
    if (rc != 0)
        return ll_store_err(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        ll_outbox_hdr_t h;
        if (k.mv_size != 8 || v.mv_size < sizeof(h))
            continue;
        memcpy(&h, v.mv_data, sizeof(h));
        if (cb(ll_be64_get(k.mv_data), &h, (const char *)v.mv_data + sizeof(h), v.mv_size - sizeof(h), ctx) != 0)
            break;
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

int ll_outbox_each(ll_scorer_t *sc, ll_txn_t *t, ll_outbox_cb cb, void *ctx)
{
    return each(sc->outbox, t, 0, cb, ctx);
}

int ll_outbox_each_from(ll_scorer_t *sc, ll_txn_t *t, uint64_t from, ll_outbox_cb cb, void *ctx)
{
    return each(sc->outbox, t, from, cb, ctx);
}

int ll_outbox_mail_each(ll_scorer_t *sc, ll_txn_t *t, ll_outbox_cb cb, void *ctx)
{
    return each(sc->outbox_mail, t, 0, cb, ctx);
}

int ll_outbox_mail_done(ll_scorer_t *sc, ll_txn_t *t, uint64_t id)
{
    uint8_t kb[8];
    ll_be64_put(kb, id);
    MDB_val k = {8, kb};
    int rc = mdb_del(t->txn, sc->outbox_mail, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

int ll_outbox_done(ll_scorer_t *sc, ll_txn_t *t, uint64_t id)
{
    uint8_t kb[8];
    ll_be64_put(kb, id);
    MDB_val k = {8, kb};
    int rc = mdb_del(t->txn, sc->outbox, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

static int retry(ll_scorer_t *sc, MDB_dbi dbi, ll_txn_t *t, uint64_t id, uint64_t now_us)
{
    uint8_t kb[8];
    ll_be64_put(kb, id);
    MDB_val k = {8, kb}, v;
    int rc = mdb_get(t->txn, dbi, &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
    ll_outbox_hdr_t h;
    if (v.mv_size < sizeof(h))
        return LL_EINVAL;
    memcpy(&h, v.mv_data, sizeof(h));
    h.attempts++;
    if (sc->conf->retry_max > 0 && h.attempts >= (uint32_t)sc->conf->retry_max)
        return ll_store_err(mdb_del(t->txn, dbi, &k, NULL)); /* given up; the caller logs it */
    uint64_t backoff = 1000000ULL << (h.attempts < 10 ? h.attempts - 1 : 9);
    h.next_us = now_us + (backoff < BACKOFF_MAX_US ? backoff : BACKOFF_MAX_US);
    /* Rewrite the whole value: LMDB values in a read-write txn may be copied on write. */
    size_t len = v.mv_size;
    char *copy = ll_malloc(len);
    memcpy(copy, v.mv_data, len);
    memcpy(copy, &h, sizeof(h));
    MDB_val nv = {len, copy};
    rc = ll_store_err(mdb_put(t->txn, dbi, &k, &nv, 0));
    free(copy);
    return rc;
}

int ll_outbox_retry(ll_scorer_t *sc, ll_txn_t *t, uint64_t id, uint64_t now_us)
{
    return retry(sc, sc->outbox, t, id, now_us);
}

int ll_outbox_mail_retry(ll_scorer_t *sc, ll_txn_t *t, uint64_t id, uint64_t now_us)
{
    return retry(sc, sc->outbox_mail, t, id, now_us);
}

void ll_alert_sign(const char *secret, const char *ts, const char *body, size_t len, char out[65])
{
    unsigned char mac[32];
    unsigned int maclen = 0;
    size_t tl = strlen(ts);
    char *msg = ll_malloc(tl + 1 + len);
    memcpy(msg, ts, tl);
    msg[tl] = '.';
    memcpy(msg + tl + 1, body, len);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, tl + 1 + len, mac, &maclen);
    free(msg);
    ll_hex_encode(out, mac, 32);
}
