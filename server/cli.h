/*
 * The operator CLI `leadloop` (private to server/cli*.c).
 *
 * cli.c parses the global options, loads the configuration and dispatches; each command is
 * a function taking its own arguments (argv[0] is the command's first argument, not its
 * name) and returning the process exit status: 0, 1 when something failed (the message
 * already went to stderr, starting "leadloop: <command>: "), 2 on a usage error.
 *
 * The store and the key ring are opened lazily by the commands that need them and closed
 * once in main(). The CLI runs beside leadloopd: LMDB allows several processes, and
 * read-only commands only take read transactions.
 */
#ifndef LEADLOOP_CLI_H
#define LEADLOOP_CLI_H

#include <stdio.h>
#include "leadloop/config.h"
#include "leadloop/store.h"
#include "leadloop/token.h"

typedef struct st_ll_cli_t {
    ll_config_t conf;
    const char *data_dir; /* -d, else conf.data_dir */
    ll_store_t *store;    /* NULL until ll__cli_store() */
    ll_keyring_t *keys;   /* NULL until ll__cli_keys() */
    char *key_path;       /* DATA_DIR/keys, malloc'd */
} ll_cli_t;

/* Exit statuses. */
enum { LL_CLI_OK = 0, LL_CLI_FAIL = 1, LL_CLI_USAGE = 2 };

/** Prints "leadloop: <cmd>: <message>\n" to stderr and returns LL_CLI_FAIL. */
int ll__cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** The same, returning LL_CLI_USAGE and adding a pointer to `leadloop help`. */
int ll__cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * Command-line options of one command. An option takes a value (`--to X` or `--to=X`) when
 * has_arg is set, otherwise it is a flag and *value becomes "1". Arguments that do not start
 * with "--" (and everything after a lone "--") are positional.
 */
typedef struct st_ll_cli_opt_t {
    const char *name; /* "--to" */
    int has_arg;
    const char **value;
} ll_cli_opt_t;

/**
 * Parses argv against opts (terminated by a NULL name). Positional arguments go to pos, at
 * most maxpos of them. Returns 0, or LL_CLI_USAGE after printing what is wrong.
 */
int ll__cli_parse(const char *cmd, int argc, char **argv, const ll_cli_opt_t *opts, char **pos, int maxpos,
                  int *npos);
/** Parses a decimal unsigned integer no larger than max; 0 or LL_EINVAL. */
int ll__cli_uint(const char *s, uint64_t max, uint64_t *out);

/**
 * Opens the store (once); 0 or LL_CLI_FAIL after printing why. Commands that only read pass
 * create 0: a mistyped -d then fails instead of showing an empty new store.
 */
int ll__cli_store(ll_cli_t *cli, const char *cmd, int create);
/** Opens the key ring DATA_DIR/keys (once, creating it and DATA_DIR when missing). */
int ll__cli_keys(ll_cli_t *cli, const char *cmd);
/** Normalises an address given to cmd's option opt (NULL: a positional argument). */
int ll__cli_email(const char *cmd, const char *opt, const char *in, char out[256]);
/** Looks up an existing contact by normalised email in a read transaction. */
int ll__cli_contact_id(ll_cli_t *cli, const char *cmd, const char *opt, const char *email, uint64_t *id);

/** "2026-11-22T10:00:00Z" (UTC, whole seconds). */
void ll__cli_iso(uint64_t us, char out[32]);
/**
 * Writes untrusted text for a terminal: control characters (C0, DEL, C1) and invalid UTF-8
 * become \xNN escapes, and output stops after max bytes of input with "...".
 */
void ll__cli_put_text(FILE *f, const char *s, size_t n, size_t max);
/** Short, readable description of an event: its url, form, send/link, fields or data. */
void ll__cli_put_event_what(FILE *f, const ll_event_t *ev);
/** Names of LL_CF_* flags, comma-separated, into out ("-" when none). */
void ll__cli_contact_flags(uint32_t flags, char *out, size_t outlen);
/** 1 once stdout has failed (a closed pipe): long listings stop early. */
int ll__cli_out_failed(void);

/* Commands (cli_contact.c, cli_events.c, cli_token.c). */
int ll__cli_contact(ll_cli_t *cli, int argc, char **argv);
int ll__cli_events(ll_cli_t *cli, int argc, char **argv);
int ll__cli_stats(ll_cli_t *cli, int argc, char **argv);
/* cli_score.c */
int ll__cli_score(ll_cli_t *cli, int argc, char **argv);
int ll__cli_rescore(ll_cli_t *cli, int argc, char **argv);
int ll__cli_lead(ll_cli_t *cli, int argc, char **argv);
int ll__cli_outbox(ll_cli_t *cli, int argc, char **argv);
int ll__cli_rep(ll_cli_t *cli, int argc, char **argv);
int ll__cli_link(ll_cli_t *cli, int argc, char **argv);
int ll__cli_pixel(ll_cli_t *cli, int argc, char **argv);
int ll__cli_unsubscribe_link(ll_cli_t *cli, int argc, char **argv);
/* The List-Unsubscribe mailto's receiving end, for the MTA (cli_unsub.c). */
int ll__cli_unsubscribe_mail(ll_cli_t *cli, int argc, char **argv);
int ll__cli_keys_cmd(ll_cli_t *cli, int argc, char **argv);
/* Nurture enrolment (cli_mail.c). */
int ll__cli_enroll(ll_cli_t *cli, int argc, char **argv);
int ll__cli_unenroll(ll_cli_t *cli, int argc, char **argv);
int ll__cli_contact_import(ll_cli_t *cli, int argc, char **argv);
int ll__cli_enrollments(ll_cli_t *cli, int argc, char **argv);

/** Parses an --since TIME (ISO 8601 date or date-time, unix seconds, or "30s"/"15m"/"2h"/"7d" ago). */
int ll__cli_parse_time(const char *s, uint64_t now_us, uint64_t *out_us);

#endif
