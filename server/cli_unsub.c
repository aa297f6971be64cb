/*
 * leadloop unsubscribe-mail [FILE]: the receiving end of the List-Unsubscribe mailto (RFC 2369).
 *
 * Every nurture message offers <mailto:ADDRESS?subject=unsubscribe%20TOKEN>; the mail client
 * sends a message with that subject to mailer.unsubscribe_mailto (else mailer.from). The MTA
 * hands each such message to this command on standard input (a Postfix alias
 * "|leadloop -c /etc/leadloop/leadloop.yaml unsubscribe-mail", a pipe transport, procmail).
 * The token (a signed LL_TOK_UNSUB) is looked for in the Subject, then in the first lines of
 * the body (a client that dropped the subject, a person who typed it); it is verified like the
 * one-click URL's, and an `unsubscribe` event goes through ingest, which flags the contact in
 * the same transaction (and scores it, when scoring is configured).
 *
 * Exit statuses follow sysexits.h, which MTAs understand: 0 done (or already unsubscribed);
 * 65 (EX_DATAERR) no valid token: the MTA bounces the message, and nothing changed; 75
 * (EX_TEMPFAIL) the store failed: the MTA keeps the message and tries again later.
 */
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>
#include "leadloop/ingest.h"
#include "leadloop/score.h"
#include "cli.h"

#define EX_DATAERR 65
#define EX_TEMPFAIL 75
#define MSG_MAX (1024 * 1024) /* read at most this much of a message */
#define BODY_SCAN 8192        /* how far into the body a token is looked for */

/* Prints "leadloop: unsubscribe-mail: ..." and returns status (a sysexits.h code). */
static int fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int status, const char *fmt, ...)
{
    va_list ap;
    fputs("leadloop: unsubscribe-mail: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return status;
}

/* Finds "unsubscribe" followed by blanks and a token-looking word in s[0..n); 1 when found. */
static int find_token(const char *s, size_t n, const char **tok, size_t *toklen)
{
    static const char word[] = "unsubscribe";
    const size_t wl = sizeof(word) - 1;
    for (size_t i = 0; i + wl < n; i++) {
        if (strncasecmp(s + i, word, wl) != 0)
            continue;
        size_t j = i + wl;
        while (j < n && (s[j] == ' ' || s[j] == '\t' || s[j] == ':'))
            j++;
        size_t k = j;
        while (k < n && (isalnum((unsigned char)s[k]) || s[k] == '-' || s[k] == '_'))
            k++;
        if (k - j >= 16) {
            *tok = s + j;
            *toklen = k - j;
            return 1;
        }
    }
    return 0;
}

/* The unfolded value of header name in the header block hdr[0..n), into out; 1 when present. */
static int header_value(const char *hdr, size_t n, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name), o = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && hdr[e] != '\n')
            e++;
        if (e - i > nl && strncasecmp(hdr + i, name, nl) == 0 && hdr[i + nl] == ':') {
            size_t p = i + nl + 1;
            for (;;) {
                for (; p < e && o + 1 < outlen; p++)
                    if (hdr[p] != '\r')
                        out[o++] = hdr[p];
                /* a folded continuation starts with a blank */
                if (e + 1 < n && (hdr[e + 1] == ' ' || hdr[e + 1] == '\t')) {
                    p = e + 1;
                    e = p;
                    while (e < n && hdr[e] != '\n')
                        e++;
                    continue;
                }
                break;
            }
            out[o] = '\0';
            return 1;
        }
        i = e + 1;
    }
    return 0;
}

int ll__cli_unsubscribe_mail(ll_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "unsubscribe-mail";
    const ll_cli_opt_t opts[] = {{NULL, 0, NULL}};
    char *pos[1], subject[1024] = "", from[512] = "";
    int npos, rc;
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 1, &npos)) != 0)
        return rc;
    FILE *f = npos == 1 ? fopen(pos[0], "rb") : stdin;
    if (f == NULL)
        return ll__cli_fail(cmd, "%s: %s", pos[0], strerror(errno));
    char *msg = ll_malloc(MSG_MAX + 1);
    size_t n = fread(msg, 1, MSG_MAX, f);
    int rerr = ferror(f);
    if (f != stdin)
        fclose(f);
    msg[n] = '\0';
    if (rerr) {
        free(msg);
        return fail(EX_TEMPFAIL, "%s: read error", npos == 1 ? pos[0] : "standard input");
    }
    /* The header block ends at the first empty line. */
    size_t hend = n, body = n;
    for (size_t i = 0; i + 1 < n; i++) {
        if (msg[i] == '\n' && (msg[i + 1] == '\n' || (msg[i + 1] == '\r' && i + 2 < n && msg[i + 2] == '\n'))) {
            hend = i + 1;
            body = msg[i + 1] == '\n' ? i + 2 : i + 3;
            break;
        }
    }
    header_value(msg, hend, "Subject", subject, sizeof(subject));
    header_value(msg, hend, "From", from, sizeof(from));
    const char *tok = NULL;
    size_t toklen = 0;
    ll_token_t t;
    int found = find_token(subject, strlen(subject), &tok, &toklen) ||
                find_token(msg + body, n - body < BODY_SCAN ? n - body : BODY_SCAN, &tok, &toklen);
    if (!found) {
        free(msg);
        return fail(EX_DATAERR, "no \"unsubscribe TOKEN\" in the Subject or the body; nothing changed");
    }
    if ((rc = ll__cli_keys(cli, cmd)) != 0 || (rc = ll__cli_store(cli, cmd, 0)) != 0) {
        free(msg);
        return EX_TEMPFAIL;
    }
    if (ll_token_verify(cli->keys, LL_TOK_UNSUB, tok, toklen, &t) != 0 || t.contact == 0) {
        free(msg);
        return fail(EX_DATAERR, "the unsubscribe token is not valid (altered, or signed with a retired key); "
                                 "nothing changed");
    }
    free(msg);

    char err[512];
    ll_scorer_t *sc = NULL;
    if (ll_scorer_open(cli->store, cli->conf.score, &sc, err, sizeof(err)) != 0)
        return fail(EX_TEMPFAIL, "%s", err);
    ll_txn_t txn;
    ll_contact_t c;
    memset(&c, 0, sizeof(c));
    if ((rc = ll_txn_begin(cli->store, 0, &txn)) != 0) {
        ll_scorer_free(sc);
        return fail(EX_TEMPFAIL, "%s: cannot write the store: %s", cli->data_dir, ll_strerror(rc));
    }
    if ((rc = ll_contact_get(&txn, t.contact, &c)) != 0) {
        ll_txn_abort(&txn);
        ll_scorer_free(sc);
        if (rc == LL_ENOTFOUND)
            return fail(EX_DATAERR, "contact %llu of the token does not exist; nothing changed",
                                (unsigned long long)t.contact);
        return fail(EX_TEMPFAIL, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
    }
    if (c.flags & LL_CF_UNSUBSCRIBED) {
        printf("%s was already unsubscribed\n", c.email);
        rc = 0;
        ll_txn_abort(&txn);
        goto out;
    }
    /* The request's sender, as data: who asked (it may differ from the contact: a forward). */
    json_t *d = json_pack("{s:s, s:s}", "method", "mailto", "from", from);
    char *dj = d != NULL ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    ll_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = LL_EV_UNSUBSCRIBE;
    ev.cls = LL_CLASS_UNKNOWN;
    ev.time_us = ll_now_us();
    ev.contact = t.contact;
    ev.send = t.send;
    if (dj != NULL && strlen(dj) <= ll_event_field_limit(LL_F_DATA))
        ev.f[LL_F_DATA] = ll_str(dj, strlen(dj));
    rc = ll_ingest_event(&txn, &ev, sc);
    free(dj);
    if (rc == 0)
        rc = ll_txn_commit(&txn);
    else
        ll_txn_abort(&txn);
    if (rc != 0) {
        rc = fail(EX_TEMPFAIL, "%s: cannot record the unsubscribe: %s", cli->data_dir, ll_strerror(rc));
        goto out;
    }
    printf("unsubscribed %s (contact %llu, send %llu)\n", c.email, (unsigned long long)t.contact,
           (unsigned long long)t.send);
out:
    ll_contact_clear(&c);
    ll_scorer_free(sc);
    return rc;
}
