/*
 * Nurture programs: their configuration (the `smtp:`, `mailer:`, `programs:` and
 * `enroll_rules:` sections, parsed by tracker/config_mailer.c) and their state in the shared
 * LMDB environment (tracker/program.c). leadloop-mailer, the leadloop CLI and leadloopd share it.
 *
 * State, named databases (keys big-endian, so key order is time order):
 *   enrollments  contact (8) | program id         -> ll_enrollment_t, packed (below)
 *   due          due time us (8) | contact (8) | program id -> "" (the mailer's schedule)
 *   sends        send id (8)                       -> ll_send_t, packed (below)
 *   alert_sends  outbox_mail row id (8)            -> send id (8): an owner alert email's claim
 *                (mailer/main.c; its send row has program "@alert", never a configured id)
 *
 * An active enrollment has exactly one `due` row, at its next_us. The mailer claims a due row
 * by writing a send row in state LL_SEND_INTENT and pointing the enrollment at it, in one
 * transaction, before any SMTP traffic (exactly once, DESIGN.md): a restart finds the intent
 * and knows the message may be under way. The send row moves to LL_SEND_COMMITTED right before
 * the final "." of DATA is written (the point after which the MTA may have the message), then
 * to LL_SEND_ACCEPTED with the SMTP acceptance time. While the mailer's batch is on the wire
 * that move is durable in its journal (mailer/marks.c, DATA_DIR/mailer.marks.N) and reaches this
 * row with the batch's outcomes, or before the next claim after a crash; readers of `sends` see
 * INTENT until then. A 4xx reply, even to the final ".", puts the row back to INTENT (the MTA
 * did not take it). On restart, an INTENT row is sent again
 * (the MTA cannot have it: DATA was never terminated), a COMMITTED row is taken as sent and is
 * never sent twice.
 *
 * Opt-outs are checked when a due row is claimed, in the claiming transaction: a contact
 * flagged unsubscribed, bounced or do-not-contact leaves its programs there and then, whatever
 * was queued before.
 */
#ifndef LEADLOOP_PROGRAM_H
#define LEADLOOP_PROGRAM_H

#include "leadloop/store.h"

#define LL_MAX_PROGRAMS 32
#define LL_MAX_STEPS 24
#define LL_MAX_ENROLL_RULES 32
#define LL_PROGRAM_ID_MAX 64

/* A step's condition. */
typedef enum {
    LL_COND_NONE = 0,
    LL_COND_NOT_CLICKED, /* only if step cond_step (1-based) of this program was not clicked */
    LL_COND_SCORE_BELOW, /* only while the profile's numeric field `score` is below cond_score */
    LL_COND_FIELD_EQ,    /* only if profile field cond_field equals cond_value */
    LL_COND_FIELD_NE     /* only if it does not */
} ll_cond_t;

typedef struct st_ll_step_t {
    int after_enrolment;     /* 1: the delay counts from enrolment; 0: from the previous step */
    uint64_t delay_s;        /* minutes, hours, days, as seconds */
    int delay_months;        /* calendar months, added in UTC */
    char *template_path;     /* as resolved against mailer.templates */
    int cond;                /* ll_cond_t */
    int cond_step;
    double cond_score;
    char *cond_field, *cond_value;
} ll_step_t;

typedef struct st_ll_program_t {
    char id[LL_PROGRAM_ID_MAX];
    ll_step_t steps[LL_MAX_STEPS];
    size_t num_steps;
    int reentry;             /* 1: a contact who finished or left may be enrolled again */
    char exit_form[64];      /* a goal: a submission of this form ends the program ("" none) */
    int exit_sales_ready;    /* the profile field `stage` = "sales-ready" ends the program */
    /* send window, in the recipient's time zone (profile field window_tz_field, else window_tz) */
    uint32_t window_hours;   /* bit h set: sending allowed from h:00 to h:59; 0 = any hour */
    uint8_t window_days;     /* bit 0 = Sunday ... bit 6 = Saturday; 0 = any day */
    char window_tz_field[64];
    char *window_tz;         /* an IANA zone, "UTC" by default */
} ll_program_t;

typedef struct st_ll_enroll_rule_t {
    char form[64];           /* a submission of this form enrols ("" none) */
    char field[64], value[256]; /* or a profile field equal to value ("" none) */
    char program[LL_PROGRAM_ID_MAX];
} ll_enroll_rule_t;

typedef struct st_ll_mail_conf_t {
    /* smtp: */
    char *smtp_host;         /* "localhost" */
    int smtp_port;           /* 25 */
    int smtp_starttls;       /* 0 never, 1 when offered (default), 2 required */
    char *smtp_user, *smtp_password;
    char *smtp_ca_file;      /* CA for the server's certificate; NULL: the system store */
    int smtp_timeout_s;      /* every SMTP phase, 30 */
    /* mailer: */
    char *from;              /* envelope and From: address, "leadloop@localhost" */
    char *from_name;         /* display name, NULL none */
    char *templates_dir;     /* relative template paths resolve here, "templates" */
    char *unsubscribe_mailto; /* List-Unsubscribe mailto address; NULL: `from` */
    int connections;         /* parallel SMTP sessions, 2 */
    int batch;               /* messages claimed per pass, 500 */
    int rate_per_hour;       /* messages per hour, 0 = unlimited */
    int retry_s;             /* first retry after a 4xx, doubled each time, 300 */
    int max_attempts;        /* a message given up after this many 4xx, 8 */
    int poll_s;              /* the daemon looks for due messages this often, 30 */
    char *dkim_key;          /* PEM private key: sign with DKIM (rsa-sha256, relaxed); NULL: no signing */
    char *dkim_selector;     /* "default" */
    char *dkim_domain;       /* d=; NULL: the domain of `from` */
    ll_program_t programs[LL_MAX_PROGRAMS];
    size_t num_programs;
    ll_enroll_rule_t rules[LL_MAX_ENROLL_RULES];
    size_t num_rules;
} ll_mail_conf_t;

/** The program with this id, or NULL. */
const ll_program_t *ll_mail_program(const ll_mail_conf_t *m, const char *id);

/* ---- state ---- */

typedef struct st_ll_nurture_t {
    ll_store_t *store;
    MDB_dbi enrollments, due, sends;
} ll_nurture_t;

/** Opens (creating) the three databases. */
int ll_nurture_open(ll_store_t *s, ll_nurture_t *out);

enum {
    LL_ENR_ACTIVE = 1,
    LL_ENR_DONE = 2,    /* every step went out or was skipped */
    LL_ENR_EXITED = 3   /* unenrolled, opted out, bounced or reached the goal */
};

typedef struct st_ll_enrollment_t {
    uint8_t state;
    uint8_t exit_reason;     /* LL_EXIT_* */
    uint16_t step;           /* next step, 0-based */
    uint32_t attempts;       /* 4xx retries of the current step */
    uint64_t enrolled_us;
    uint64_t last_us;        /* when the previous step was sent (or enrolment) */
    uint64_t next_us;        /* the due row's time while active */
    uint64_t send;           /* send id of the current step once claimed, 0 otherwise */
} ll_enrollment_t;

enum {
    LL_EXIT_NONE = 0, LL_EXIT_UNENROLLED, LL_EXIT_UNSUBSCRIBED, LL_EXIT_BOUNCED, LL_EXIT_DO_NOT_CONTACT,
    LL_EXIT_GOAL, LL_EXIT_SALES_READY, LL_EXIT_NO_PROGRAM
};
const char *ll_exit_reason_name(int r);

enum {
    LL_SEND_INTENT = 1,
    LL_SEND_COMMITTED = 2,  /* the final "." may have reached the MTA */
    LL_SEND_ACCEPTED = 3,
    LL_SEND_BOUNCED = 4,    /* 5xx */
    LL_SEND_FAILED = 5      /* gave up after max_attempts 4xx */
};

typedef struct st_ll_send_t {
    uint64_t id;
    uint8_t state;
    uint16_t step;
    uint64_t contact;
    uint64_t created_us, accepted_us;
    uint32_t smtp_code;
    char program[LL_PROGRAM_ID_MAX];
} ll_send_t;

/** Reads or writes one enrollment. LL_ENOTFOUND when the contact never joined. */
int ll_enrollment_get(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, const char *program, ll_enrollment_t *e);
int ll_enrollment_put(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, const char *program, const ll_enrollment_t *e);

/**
 * Enrols contact in p at now: the first step becomes due. LL_EEXIST when it is active already,
 * or finished/left and p does not allow re-entry. An opted-out contact is refused (LL_EINVAL).
 */
int ll_nurture_enroll(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, const ll_program_t *p, uint64_t now_us);
/** Ends an active enrollment with reason (LL_EXIT_*), removing its due row. LL_ENOTFOUND if not active. */
int ll_nurture_exit(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, const char *program, int reason);
/** Ends every active enrollment of contact (an opt-out or a bounce). */
int ll_nurture_exit_all(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, int reason);
/** Moves the due row of an active enrollment to at_us (and e->next_us), writing e. */
int ll_nurture_reschedule(ll_nurture_t *n, ll_txn_t *t, uint64_t contact, const char *program, ll_enrollment_t *e,
                          uint64_t at_us);
/** Removes one due row (a stale one, or when an enrollment finishes). */
int ll_nurture_due_drop(ll_nurture_t *n, ll_txn_t *t, uint64_t at_us, uint64_t contact, const char *program);
/** When step `step` of p falls due for an enrollment whose previous step went at last_us. */
uint64_t ll_program_step_due(const ll_program_t *p, size_t step, uint64_t enrolled_us, uint64_t last_us);

/** Called per due row up to now, in time order; return non-zero to stop. */
typedef int (*ll_due_cb)(uint64_t due_us, uint64_t contact, const char *program, void *ctx);
int ll_nurture_due_scan(ll_nurture_t *n, ll_txn_t *t, uint64_t now_us, ll_due_cb cb, void *ctx);

/** A new send id (the largest + 1). */
int ll_send_next_id(ll_nurture_t *n, ll_txn_t *t, uint64_t *id);
int ll_send_get(ll_nurture_t *n, ll_txn_t *t, uint64_t id, ll_send_t *s);
int ll_send_put(ll_nurture_t *n, ll_txn_t *t, const ll_send_t *s);
/** Called for each send row in id order; return non-zero to stop. */
typedef int (*ll_send_cb)(const ll_send_t *s, void *ctx);
int ll_send_scan(ll_nurture_t *n, ll_txn_t *t, ll_send_cb cb, void *ctx);
/** The same, newest first (ids grow with time: a recent window is read without a full scan). */
int ll_send_scan_rev(ll_nurture_t *n, ll_txn_t *t, ll_send_cb cb, void *ctx);
const char *ll_send_state_name(int st);

#endif
