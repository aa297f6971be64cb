/* leadloop link|pixel|unsubscribe-link (signed tokens) and leadloop keys list|rotate. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include "cli.h"

static const char bad_destination[] = "destination must be an http(s) URL without spaces or control characters";

/* The contact for email, created (without fields) when missing. */
static int contact_for(ll_cli_t *cli, const char *cmd, const char *email, uint64_t *id)
{
    ll_txn_t t;
    int rc, created = 0;
    if ((rc = ll__cli_store(cli, cmd, 1)) != 0)
        return rc;
    if ((rc = ll_txn_begin(cli->store, 1, &t)) != 0)
        return ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
    rc = ll_contact_find(&t, email, id);
    ll_txn_abort(&t);
    if (rc == 0)
        return 0;
    if (rc != LL_ENOTFOUND)
        return ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
    /* Another process may create it meanwhile: upsert decides again inside the write txn. */
    if ((rc = ll_txn_begin(cli->store, 0, &t)) != 0 || (rc = ll_contact_upsert(&t, email, NULL, id, &created)) != 0 ||
        (rc = ll_txn_commit(&t)) != 0) {
        ll_txn_abort(&t);
        return ll__cli_fail(cmd, "%s: cannot create contact '%s': %s", cli->data_dir, email, ll_strerror(rc));
    }
    if (created) /* stderr: stdout carries only the link, for $(leadloop link ...) */
        fprintf(stderr, "leadloop: %s: created contact %llu %s\n", cmd, (unsigned long long)*id, email);
    return 0;
}

static int sign_cmd(ll_cli_t *cli, const char *cmd, int kind, int argc, char **argv)
{
    const char *to = NULL, *send = NULL, *link = NULL, *tag = NULL;
    /* --link and --tag only for clicks: a NULL name ends the table there for the others. */
    const ll_cli_opt_t opts[] = {{"--to", 1, &to},
                                 {"--send", 1, &send},
                                 {kind == LL_TOK_CLICK ? "--link" : NULL, 1, &link},
                                 {"--tag", 1, &tag},
                                 {NULL, 0, NULL}};
    char *pos[1], email[256], out[LL_TOKEN_B64_MAX];
    const char *url = NULL;
    uint64_t v;
    int npos, rc;
    ll_token_t *tok = ll_calloc(1, sizeof(*tok));

    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, kind == LL_TOK_CLICK ? 1 : 0, &npos)) != 0)
        goto out;
    if (kind == LL_TOK_CLICK) {
        if (npos != 1) {
            rc = ll__cli_usage(cmd, "missing URL");
            goto out;
        }
        url = pos[0];
        if (ll_url_check_destination(url, strlen(url)) != 0) {
            rc = ll__cli_fail(cmd, "%s", bad_destination);
            goto out;
        }
    }
    if (to == NULL) {
        rc = ll__cli_usage(cmd, "--to EMAIL is required");
        goto out;
    }
    tok->kind = (uint8_t)kind;
    if (send != NULL) {
        if (ll__cli_uint(send, UINT64_MAX, &v) != 0) {
            rc = ll__cli_fail(cmd, "--send: '%s' is not a number", send);
            goto out;
        }
        tok->send = v;
    }
    if (link != NULL) {
        if (ll__cli_uint(link, UINT32_MAX, &v) != 0) {
            rc = ll__cli_fail(cmd, "--link: '%s' is not a number up to %u", link, UINT32_MAX);
            goto out;
        }
        tok->link = (uint32_t)v;
    }
    if (url != NULL) {
        tok->url_len = strlen(url); /* bounded by ll_url_check_destination */
        memcpy(tok->url, url, tok->url_len + 1);
    }
    if (tag != NULL) {
        if (ll_link_tag_check(tag, strlen(tag)) != 0) {
            rc = ll__cli_fail(cmd, "--tag: '%s' is not a link tag (1 to %d of a-z, 0-9, '_', '.', '-')", tag,
                              LL_TOKEN_LINK_TAG_MAX);
            goto out;
        }
        memcpy(tok->link_tag, tag, strlen(tag) + 1);
    }
    if ((rc = ll__cli_email(cmd, "--to", to, email)) != 0 || (rc = contact_for(cli, cmd, email, &tok->contact)) != 0 ||
        (rc = ll__cli_keys(cli, cmd)) != 0)
        goto out;
    if ((rc = ll_token_sign(cli->keys, tok, out, sizeof(out))) != 0) {
        rc = rc == LL_EINVAL && url != NULL ? ll__cli_fail(cmd, "%s", bad_destination)
                                            : ll__cli_fail(cmd, "cannot sign: %s", ll_strerror(rc));
        goto out;
    }
    const char *base = cli->conf.public_url != NULL ? cli->conf.public_url : "";
    size_t bl = strlen(base);
    if (bl > 0 && base[bl - 1] == '/')
        bl--;
    printf("%.*s/%s/%s%s\n", (int)bl, base, kind == LL_TOK_CLICK ? "c" : kind == LL_TOK_OPEN ? "o" : "u", out,
           kind == LL_TOK_OPEN ? ".gif" : "");
out:
    free(tok);
    return rc;
}

int ll__cli_link(ll_cli_t *cli, int argc, char **argv)
{
    return sign_cmd(cli, "link", LL_TOK_CLICK, argc, argv);
}

int ll__cli_pixel(ll_cli_t *cli, int argc, char **argv)
{
    return sign_cmd(cli, "pixel", LL_TOK_OPEN, argc, argv);
}

int ll__cli_unsubscribe_link(ll_cli_t *cli, int argc, char **argv)
{
    return sign_cmd(cli, "unsubscribe-link", LL_TOK_UNSUB, argc, argv);
}

/* Lists the ids in the key file (already validated by ll_keyring_open, whose rules this
 * follows: blank and '#' lines are skipped, a key line is "ID HEX") with a fingerprint, the
 * first 8 bytes of SHA-256 of the key: enough to compare rings between edges without ever
 * printing a key. */
static int keys_list(ll_cli_t *cli)
{
    static const char cmd[] = "keys list";
    char line[256];
    uint8_t key[32], digest[SHA256_DIGEST_LENGTH];
    int rc, lineno = 0;
    if ((rc = ll__cli_keys(cli, cmd)) != 0)
        return rc;
    FILE *f = fopen(cli->key_path, "r");
    if (f == NULL)
        return ll__cli_fail(cmd, "%s: %s", cli->key_path, strerror(errno));
    int current = ll_keyring_current(cli->keys);
    printf("%-4s %-16s %s\n", "ID", "FINGERPRINT", "USE");
    while (fgets(line, sizeof(line), f) != NULL) {
        uint64_t id;
        char hex[17], *sp = strchr(line, ' ');
        size_t skip = strspn(line, " \t\r\n");
        lineno++;
        if (line[skip] == '\0' || line[skip] == '#')
            continue;
        if (sp != NULL)
            *sp = '\0';
        if (sp == NULL || strlen(sp + 1) < 64 || ll__cli_uint(line, 255, &id) != 0 ||
            ll_hex_decode(key, sp + 1, 32) != 0) {
            rc = ll__cli_fail(cmd, "%s:%d: not \"ID HEXKEY\"", cli->key_path, lineno);
            break;
        }
        SHA256(key, sizeof(key), digest);
        ll_hex_encode(hex, digest, 8);
        printf("%-4llu %-16s %s\n", (unsigned long long)id, hex,
               (int)id == current ? "signs and verifies" : "verifies");
    }
    if (rc == 0 && ferror(f))
        rc = ll__cli_fail(cmd, "%s: read error", cli->key_path);
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(line, sizeof(line));
    fclose(f);
    return rc;
}

static int keys_rotate(ll_cli_t *cli)
{
    static const char cmd[] = "keys rotate";
    char err[512];
    int rc;
    /* Opening first creates the ring (and the data directory) when this is a fresh install. */
    if ((rc = ll__cli_keys(cli, cmd)) != 0)
        return rc;
    if (ll_keyring_rotate(cli->key_path, err, sizeof(err)) != 0)
        return ll__cli_fail(cmd, "%s", err);
    ll_keyring_free(cli->keys);
    cli->keys = NULL;
    if ((rc = ll__cli_keys(cli, cmd)) != 0)
        return rc;
    int id = ll_keyring_current(cli->keys);
    printf("added key %d to %s; it signs the links this CLI makes from now on\n"
           "restart leadloopd to sign with key %d: a running leadloopd keeps the keys it loaded at start,\n"
           "and until it restarts it also rejects links signed with key %d. Links signed with older keys stay valid.\n",
           id, cli->key_path, id, id);
    return 0;
}

int ll__cli_keys_cmd(ll_cli_t *cli, int argc, char **argv)
{
    if (argc < 1)
        return ll__cli_usage("keys", "missing subcommand (list or rotate)");
    if (argc > 1)
        return ll__cli_usage("keys", "unexpected argument '%s'", argv[1]);
    if (strcmp(argv[0], "list") == 0)
        return keys_list(cli);
    if (strcmp(argv[0], "rotate") == 0)
        return keys_rotate(cli);
    return ll__cli_usage("keys", "unknown subcommand '%s' (list or rotate)", argv[0]);
}
