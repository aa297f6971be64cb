/*
 * tokens: signed click paths for many recipients, for the capture benchmark only.
 *
 *   tokens DATA_DIR N URL SEND > paths.txt
 *
 * Creates contacts bench-0@example.com .. bench-(N-1)@example.com in DATA_DIR's store, one
 * transaction, and prints one click path ("/c/TOKEN") a line, signed with DATA_DIR/keys as
 * `leadloop link URL --to EMAIL --send SEND` would sign it. The CLI takes a process and a
 * commit for each link; this takes seconds for a hundred thousand.
 *
 * It also records send SEND as the mailer does once a message is accepted (program "bench",
 * step 1, to bench@example.com, an hour ago), so that an open or click of it pays what a real
 * one does: the judge's lookup of the delivery time and its evidence, the scorer's program.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "leadloop/program.h"
#include "leadloop/store.h"
#include "leadloop/token.h"

static int fail(const char *what, int rc)
{
    fprintf(stderr, "tokens: %s: %s\n", what, ll_strerror(rc));
    return 1;
}

int main(int argc, char **argv)
{
    char err[512], path[4096], email[64], out[LL_TOKEN_B64_MAX];
    ll_store_t *store;
    ll_keyring_t *keys;
    ll_txn_t t;
    ll_token_t tok;
    int rc, created;

    if (argc != 5 || atol(argv[2]) <= 0 || strlen(argv[3]) > LL_TOKEN_URL_MAX) {
        fprintf(stderr, "usage: tokens DATA_DIR N URL SEND\n");
        return 2;
    }
    long n = atol(argv[2]);
    snprintf(path, sizeof(path), "%s/keys", argv[1]);
    if (ll_keyring_open(path, &keys, err, sizeof(err)) != 0 ||
        ll_store_open(argv[1], (size_t)8 << 30, 0, &store, err, sizeof(err)) != 0) {
        fprintf(stderr, "tokens: %s\n", err);
        return 1;
    }
    memset(&tok, 0, sizeof(tok));
    tok.kind = LL_TOK_CLICK;
    tok.send = strtoull(argv[4], NULL, 10);
    tok.url_len = strlen(argv[3]);
    memcpy(tok.url, argv[3], tok.url_len + 1);
    ll_nurture_t nurture;
    if ((rc = ll_nurture_open(store, &nurture)) != 0)
        return fail("sends", rc);
    if ((rc = ll_txn_begin(store, 0, &t)) != 0)
        return fail("begin", rc);
    for (long i = 0; i < n; i++) {
        snprintf(email, sizeof(email), "bench-%ld@example.com", i);
        if ((rc = ll_contact_upsert(&t, email, NULL, &tok.contact, &created)) != 0)
            return fail(email, rc);
        if ((rc = ll_token_sign(keys, &tok, out, sizeof(out))) != 0)
            return fail("sign", rc);
        printf("/c/%s\n", out);
    }
    ll_send_t send = {.id = tok.send, .state = LL_SEND_ACCEPTED, .smtp_code = 250, .program = "bench"};
    send.accepted_us = ll_now_us() - 3600 * 1000000ull;
    send.created_us = send.accepted_us - 1000000;
    if ((rc = ll_contact_upsert(&t, "bench@example.com", NULL, &send.contact, &created)) != 0 ||
        (rc = ll_send_put(&nurture, &t, &send)) != 0)
        return fail("send", rc);
    if ((rc = ll_txn_commit(&t)) != 0)
        return fail("commit", rc);
    ll_store_close(store);
    ll_keyring_free(keys);
    return fflush(stdout) == 0 ? 0 : 1;
}
