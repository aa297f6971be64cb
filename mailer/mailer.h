/*
 * leadloop-mailer internals (private to mailer/).
 *
 * main.c runs passes: apply the end-of-DATA marks of a pass a crash left open (marks.c), enrol
 * by rules, claim due rows into send intents and number the pass (one write transaction),
 * render each message (template.c, mime.c), hand the batch to N SMTP sessions on worker threads
 * (smtp.c, marks in marks.c), then record the outcomes (sent, bounce, retry) and close the pass
 * in one write transaction. Templates are loaded and checked once at start;
 * rendering never fails on a template, only on a cap.
 *
 * Caveat: opt-outs are checked when a message is claimed; one committed while its batch is on
 * the wire cannot stop it (the window is one batch, bounded by mailer.batch). Run one mailer per
 * data directory (mailer.lock enforces it): two would claim the same due rows.
 */
#ifndef LEADLOOP_MAILER_H
#define LEADLOOP_MAILER_H

#include <stdint.h>
#include "leadloop/config.h"
#include "leadloop/program.h"
#include "leadloop/store.h"
#include "leadloop/token.h"

/* ---- logging ---- */
extern int ll_log_level;
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- templates (template.c) ---- */

#define LL_TPL_MAX (256 * 1024) /* a template file, and a rendered part */

typedef struct st_ll_tpl_t {
    char *path;
    char *subject, *html, *text; /* the raw parts, NUL-terminated */
    int html_line, text_line;    /* where the parts start in the file, for messages */
    struct st_ll_tpl_plan_t *plan; /* the HTML's links and body, parsed once; NULL: per message */
} ll_tpl_t;

/**
 * Loads and checks a template file: a "Subject: ..." line, then "--- html" and "--- text"
 * sections (either may be missing, not both). Checked: every {{placeholder}} is closed on its
 * line and names a known field (ll__tpl_known_field), and the HTML closes the tags it opens.
 * On error err holds "file:line: why".
 */
int ll__tpl_load(const char *path, const ll_config_t *conf, ll_tpl_t **out, char *err, size_t errlen);
void ll__tpl_free(ll_tpl_t *t);

/** What one message is rendered with. */
typedef struct st_ll_render_t {
    const ll_keyring_t *keys;
    const char *public_url;
    uint64_t send, contact;
    const char *email;
    struct json_t *fields; /* the profile's fields (an object; NULL: none) */
    char unsub_url[LL_TOKEN_B64_MAX + 256];
    char pixel_url[LL_TOKEN_B64_MAX + 256];
} ll_render_t;

/**
 * Renders subject, html and text: placeholders substituted (HTML-escaped in the HTML part),
 * every http(s) link (found with libgumbo in the HTML, by URL syntax in the text) replaced by a
 * signed click link, an open pixel added to the HTML, and a hidden honeypot link (link index
 * LL_LINK_HONEYPOT, judge.h) first in its body. Outputs are malloc'd.
 */
int ll__tpl_render(const ll_tpl_t *t, ll_render_t *r, char **subject, char **html, char **text);

/* ---- MIME (mime.c) ---- */

typedef struct st_ll_mime_in_t {
    const char *from, *from_name, *to;
    const char *subject, *html, *text;
    const char *unsub_url, *unsub_mailto; /* mailto address; the token goes into its subject. NULL
                                           * unsub_url: no List-Unsubscribe (alerts to the team) */
    const char *unsub_token;
    uint64_t send;
    uint64_t date_us;
} ll_mime_in_t;

/** Builds the whole message (CRLF line ends) into out. */
int ll__mime_build(const ll_mime_in_t *in, ll_buf_t *out);
/** Quoted-printable (RFC 2045) of s into out, CRLF line ends, lines at most 76 chars. */
int ll__mime_qp(const char *s, size_t n, ll_buf_t *out);

/* ---- owner alerts (alert.c) ---- */

/**
 * The plain-text email for one queued alert (the JSON of an `outbox_mail` row, score.h): a
 * subject naming the contact and what happened, a body with why, score, grade, routing, the
 * profile and the last events. *contact is the alert's contact id. Outputs are malloc'd.
 */
int ll__alert_render(const char *json, size_t len, char **subject, char **text, uint64_t *contact);
#define LL_ALERT_PROGRAM "@alert" /* the program of an alert's send row (never a configured id) */
#define LL_ALERT_BATCH 64         /* alert emails claimed per pass, beside the nurture batch */

/* ---- DKIM (dkim.c) ---- */

typedef struct st_ll_dkim_t ll_dkim_t;
/** Loads a PEM private key and checks that it signs. err names the file. */
int ll__dkim_open(const char *key_path, const char *selector, const char *domain, ll_dkim_t **out, char *err,
                  size_t errlen);
void ll__dkim_free(ll_dkim_t *d);
/** Signs msg (a whole message, CRLF) and puts the DKIM-Signature header in front of it. */
int ll__dkim_sign(ll_dkim_t *d, uint64_t send, ll_buf_t *msg);
/* How many times a parsed key was handed to libopendkim instead of its PEM text decoded again
 * (dkim.c; for tests). */
size_t ll__dkim_key_hits(void);

/* ---- end-of-DATA marks journal (marks.c) ---- */

#define LL_MARKS_BLOCKS 256 /* marks a pass writes before a checkpoint into LMDB */
typedef struct st_ll_marks_t ll_marks_t;
/** Opens data_dir/mailer.marks.0 to .7, creating each (zero-filled, synced) when missing or
 * of another size; err names the file that failed. */
int ll__marks_open(const char *data_dir, ll_nurture_t *n, ll_store_t *store, ll_marks_t **out, char *err,
                   size_t errlen);
void ll__marks_close(ll_marks_t *j);
/** 1 when open found a file not whole and made it anew (marks it held, if any, are gone; not
 * when an older build's single file is there to read), until the first ll__marks_begin. */
int ll__marks_made(const ll_marks_t *j);
/** Later writes belong to pass (numbered by the claim transaction, main.c); the file starts over. */
void ll__marks_begin(ll_marks_t *j, uint64_t pass);
/** A session's end-of-DATA marks. Each makes its send durable as LL_SEND_COMMITTED: in a block
 * of the files, or by an LMDB commit when they are full (a checkpoint) or a write fails. Started
 * early, while the message is still on its way, and waited for just before its final "."
 * (smtp.c); the marks thread writes the marks queued by all the sessions as one block. One
 * ll_mark_t per session thread. */
typedef struct st_ll_mark_t ll_mark_t;
ll_mark_t *ll__mark_new(ll_marks_t *j);
/** Queues send id's mark (the marks thread starts with the first). A mark queued before and not
 * waited for (its message never reached the ".") is still written, in this pass. */
void ll__mark_start(ll_mark_t *mk, uint64_t id);
/** Returns once id's mark is durable, queueing it first if it was not: 0, or the LMDB error
 * (the mark is then not durable). Without the marks thread the session writes it itself. */
int ll__mark_finish(ll_mark_t *mk, uint64_t id);
/** Waits for the mark last queued, if not waited for yet, and frees. */
void ll__mark_free(ll_mark_t *mk);
/** In t: sends of pass still in LL_SEND_INTENT whose mark is in the file become COMMITTED. */
int ll__marks_apply(ll_marks_t *j, ll_txn_t *t, uint64_t pass, size_t *moved);

/* ---- SMTP (smtp.c) ---- */

typedef struct st_ll_outmsg_t {
    uint64_t send, contact;
    uint64_t alert;       /* an owner alert: its outbox_mail row id; 0 for a nurture message */
    uint32_t attempts;    /* an alert's earlier deferrals */
    char program[LL_PROGRAM_ID_MAX];
    uint16_t step;
    char to[256];
    ll_buf_t body;
    /* results */
    int code;             /* SMTP code: 250 accepted; 4xx/5xx; 0 not attempted (connection failed) */
    char reply[256];
    uint64_t accepted_us;
    int committed;        /* the end of DATA was recorded (LL_SEND_COMMITTED) */
    size_t off;           /* message callback position */
} ll_outmsg_t;

typedef struct st_ll_smtp_t {
    const ll_mail_conf_t *m;
    ll_marks_t *marks;
} ll_smtp_t;

/** Sends msgs over m->connections sessions (each with many messages), filling the results. */
void ll__smtp_send(ll_smtp_t *s, ll_outmsg_t *msgs, size_t n);
int ll__smtp_init(void);

#endif
