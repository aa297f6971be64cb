/*
 * Lead scoring, lifecycle, routing, SLA and the alert outbox (issue #4; DESIGN.md "The write path").
 *
 * The scorer runs inside the writer's batch transaction, once per stored event, from
 * ll_ingest() (and for the earlier anonymous events a binding attributes to a contact). Per
 * event it does O(rules) work and a handful of point reads and writes; it never scans the log
 * (only ll_score_rescore() does). Everything it decides is written in that same transaction:
 *
 *   scores   contact id (be64)                      -> ll_score_state_t (packed, versioned)
 *   ledger   seq (be64) n (be16)                    -> contact + ll_ledger_rec_t, packed: one row per change
 *   leads    contact id (be64)                      -> ll_lead_t: stage, owner, SLA times
 *   sla_due  due time (be64) contact id (be64)      -> "": when the SLA pass must look at a lead
 *   outbox   id (be64, increasing)                  -> ll_outbox_hdr_t + JSON alert body (webhooks, SSE)
 *   outbox_mail  id (be64)                          -> the same, kind email, for the mailer to send
 *   routing  "rr:<group>"                           -> "rep=credit\n" lines (round-robin state)
 *
 * Behavior points come from ordered rules matching the event type and optional matchers (URL
 * path glob, whole-URL glob, link index, link tag, form id, file type, program, step); only events classified human
 * score, and a rule may cap the points it gives one contact per UTC day. Engagement decays
 * lazily: the stored value is decayed to the event's time before points are added
 * (value * 2^(-dt/half_life)), and to "now" when shown. Fit points come from profile fields
 * and give a grade A-D, separate from the engagement score; the threshold (default 60) on
 * the engagement score makes a contact sales-ready (MQL): it is routed (ordered rules, else
 * a weighted round-robin group, else the hopper), a lead row is written with its SLA
 * deadline, and alerts go to the outbox. Decay uses event times, so a rescore of the same log
 * gives the same scores.
 *
 * Caveat: per-day caps are tracked per rule position; reordering the rules mid-day lets a
 * contact earn up to one more cap that day.
 */
#ifndef LEADLOOP_SCORE_H
#define LEADLOOP_SCORE_H

#include "leadloop/store.h"

#define LL_SCORE_MAX_RULES 64
#define LL_SCORE_MAX_FIT 32
#define LL_ROUTE_MAX_RULES 32
#define LL_ROUTE_MAX_GROUPS 16
#define LL_ROUTE_MAX_REPS 32
#define LL_MAX_LIST 16      /* values in one "in" list */
#define LL_ALERT_MAX_HOOKS 8
#define LL_NAME_MAX 64
#define LL_OWNER_MAX 128

/* ---- configuration (parsed by tracker/config_score.c) ---- */

typedef struct st_ll_score_rule_t {
    char name[LL_NAME_MAX];
    int type;             /* ll_event_type_t; 0: any */
    char *path;           /* glob on the URL path (and query), NULL: any */
    char *url;            /* case-insensitive glob on the whole URL (a click's destination), NULL: any */
    int link;             /* link index; -1: any */
    char *form, *file, *program, *step; /* exact ids; "file" is an extension; NULL: any */
    char *tag;            /* a click's link tag (data-ll-tag="..." in the template), exact; NULL: any */
    int points;           /* may be negative */
    int cap_per_day;      /* absolute points per contact per UTC day; 0: no cap */
} ll_score_rule_t;

typedef struct st_ll_fit_rule_t {
    char name[LL_NAME_MAX];
    char field[LL_NAME_MAX]; /* profile field ("country" also falls back to the geo country) */
    char *in[LL_MAX_LIST];   /* case-insensitive equality with one of them */
    size_t num_in;
    char *match;             /* case-insensitive glob */
    double min;              /* numeric field >= min */
    int has_min;
    int points;
} ll_fit_rule_t;

typedef struct st_ll_route_rule_t {
    char name[LL_NAME_MAX];
    char *country[LL_MAX_LIST]; size_t num_country;
    char *region[LL_MAX_LIST]; size_t num_region;
    char *industry[LL_MAX_LIST]; size_t num_industry;
    char *company;           /* glob on the company field */
    double employees_min, revenue_min;
    int has_employees, has_revenue;
    char to[LL_OWNER_MAX];   /* a rep, or */
    char group[LL_NAME_MAX]; /* a round-robin group */
} ll_route_rule_t;

typedef struct st_ll_rep_t {
    char name[LL_OWNER_MAX];
    int weight; /* >= 1 */
    int away;
} ll_rep_t;

typedef struct st_ll_route_group_t {
    char name[LL_NAME_MAX];
    ll_rep_t reps[LL_ROUTE_MAX_REPS];
    size_t num_reps;
} ll_route_group_t;

typedef enum { LL_HOOK_JSON = 1, LL_HOOK_SLACK = 2 } ll_hook_kind_t;

typedef struct st_ll_hook_t {
    char name[LL_NAME_MAX];
    int kind;
    char *url;
    char *secret; /* HMAC key of JSON hooks; NULL: unsigned */
} ll_hook_t;

typedef struct st_ll_score_conf_t {
    int enabled;                  /* any scoring: rules or fit given */
    ll_score_rule_t rules[LL_SCORE_MAX_RULES];
    size_t num_rules;
    ll_fit_rule_t fit[LL_SCORE_MAX_FIT];
    size_t num_fit;
    int grade_a, grade_b, grade_c; /* fit points for A, B, C (else D): 40, 25, 10 */
    int threshold;                /* 60 */
    double half_life_days;        /* 0: no decay */
    /* routing */
    ll_route_rule_t routes[LL_ROUTE_MAX_RULES];
    size_t num_routes;
    ll_route_group_t groups[LL_ROUTE_MAX_GROUPS];
    size_t num_groups;
    char hopper[LL_OWNER_MAX];    /* owner when no rule matches: "hopper" */
    /* SLA */
    int accept_seconds;           /* 3600; 0: no deadline */
    char escalate_to[LL_OWNER_MAX]; /* the manager alerted on a breach ("" none) */
    int reassign;                 /* a breach also routes the lead to the next rep */
    int reassign_max;             /* at most this many times a lead (3); the breach after that
                                   * escalates without reassigning and stops the clock, so a
                                   * lead nobody accepts does not go round the reps for ever */
    int recycle_days;             /* accepted and idle this long: recycled; 30; 0: never */
    /* alerts */
    ll_hook_t hooks[LL_ALERT_MAX_HOOKS];
    size_t num_hooks;
    int email_owner;              /* also queue an outbox row of kind email for the mailer */
    int retry_max;                /* attempts before a row is given up: 20 */
    char *admin_listen;           /* SSE listener, "127.0.0.1:8081"; NULL: off */
    char *admin_token;            /* bearer token; NULL: the listener stays off */
} ll_score_conf_t;

/* ---- the scorer ---- */

typedef struct st_ll_scorer_t ll_scorer_t;

/** Opens (creating) the scorer's databases in s. conf is borrowed and must outlive it. */
int ll_scorer_open(ll_store_t *s, const ll_score_conf_t *conf, ll_scorer_t **out, char *err, size_t errlen);
void ll_scorer_free(ll_scorer_t *sc);
const ll_score_conf_t *ll_scorer_conf(const ll_scorer_t *sc);

typedef enum {
    LL_STAGE_NONE = 0, LL_STAGE_INQUIRY, LL_STAGE_MQL, LL_STAGE_ACCEPTED, LL_STAGE_SQL,
    LL_STAGE_OPPORTUNITY, LL_STAGE_CUSTOMER, LL_STAGE_RECYCLED, LL_STAGE__MAX
} ll_stage_t;
const char *ll_stage_name(int stage);
int ll_stage_parse(const char *s); /* -1 when unknown */

#define LL_SCORE_MAX_CAPS 16 /* capped rules one contact can use in one day */

/**
 * The state kept per contact (about 110 bytes: it is rewritten by every scored event, so its
 * size is most of what scoring adds to a commit). Times in microseconds. Cap counters are for
 * one UTC day (cap_day), the latest seen; an event of an earlier day (attributed late) is
 * capped on its own.
 */
typedef struct st_ll_score_state_t {
    uint32_t version;
    int32_t fit;
    uint32_t fit_mask;     /* the fit rules (by position) that match */
    uint32_t cap_day;      /* UTC day number of the counters */
    double engagement;     /* as of engaged_us */
    uint64_t engaged_us;
    uint64_t updated_us;
    char country[4];       /* last geo country seen in an event */
    uint16_t num_caps;
    uint16_t pad;
    struct {
        uint16_t rule;     /* position in scoring.rules */
        uint16_t used;     /* points given today (absolute) */
    } caps[LL_SCORE_MAX_CAPS];
} ll_score_state_t;

/** A ledger row. rule is the rule's name ("fit:<name>", "recycle" for resets). */
typedef struct st_ll_ledger_rec_t {
    uint64_t time_us;
    uint64_t seq;
    int32_t points;
    int32_t capped;        /* points the cap withheld */
    double after;          /* engagement (or fit) after the change */
    uint8_t event_type;
    uint8_t is_fit;
    char rule[LL_NAME_MAX];
} ll_ledger_rec_t;

/**
 * Scores one stored event (rec/len: its encoded record, seq and contact already set). A no-op
 * for events without a contact. contact: 0 for the record's own, else the contact an earlier
 * anonymous event is being attributed to. profile_changed: the event created or changed the contact's fields (recompute fit).
 * Errors are LMDB errors; the caller aborts the transaction.
 */
int ll_score_event(ll_scorer_t *sc, ll_txn_t *t, const void *rec, size_t len, uint64_t contact, int profile_changed);

/** Reads the state; LL_ENOTFOUND when the contact never scored. */
int ll_score_get(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_score_state_t *st);
/** The engagement decayed to now_us (half-life from the configuration). */
double ll_score_decayed(const ll_score_conf_t *conf, const ll_score_state_t *st, uint64_t now_us);
/** 'A'..'D' for fit points. */
char ll_score_grade(const ll_score_conf_t *conf, int fit);

typedef int (*ll_ledger_cb)(const ll_ledger_rec_t *r, void *ctx);
/** The ledger rows of one contact in order. */
int ll_ledger_each(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_ledger_cb cb, void *ctx);

/**
 * Drops every score, ledger row and cap, then scores the whole log again in order (the only
 * full scan). Leads and the outbox are kept; no alert is raised for a contact that already
 * has a lead. *n counts the events read.
 */
int ll_score_rescore(ll_scorer_t *sc, ll_txn_t *t, uint64_t *n);

/* ---- leads ---- */

typedef struct st_ll_lead_t {
    uint32_t version;
    uint8_t stage;         /* ll_stage_t */
    uint8_t escalated;
    uint16_t reassigned;
    char owner[LL_OWNER_MAX];
    char rule[LL_NAME_MAX]; /* the routing rule or group that picked the owner */
    uint64_t mql_us, assigned_us, accept_by_us, accepted_us, last_activity_us, updated_us;
    int32_t score_at_mql;
    char grade_at_mql;
    char recycle_why[23];  /* the ledger rule of the last recycle ("recycle:idle", ...) */
    uint64_t recycled_us;  /* the last recycle (its engagement reset is replayed by a rescore) */
} ll_lead_t;

int ll_lead_get(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, ll_lead_t *out);
int ll_lead_put(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, const ll_lead_t *l);
typedef int (*ll_lead_cb)(uint64_t contact, const ll_lead_t *l, void *ctx);
int ll_lead_each(ll_scorer_t *sc, ll_txn_t *t, ll_lead_cb cb, void *ctx);
/** Accept (stage accepted) or reject (stage recycled, engagement reset) by the owner. */
int ll_lead_accept(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, uint64_t now_us);
int ll_lead_reject(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, uint64_t now_us);
/** Moves a lead to a later stage by hand (sql, opportunity, customer, recycled). */
int ll_lead_set_stage(ll_scorer_t *sc, ll_txn_t *t, uint64_t contact, int stage, uint64_t now_us);

/**
 * Picks the owner for a contact (profile fields as JSON text, geo country fallback) and
 * advances the round-robin state of the group used. rule gets the rule or group name.
 */
int ll_route_pick(ll_scorer_t *sc, ll_txn_t *t, const char *fields_json, const char *country, const char *exclude,
                  char owner[LL_OWNER_MAX], char rule[LL_NAME_MAX]);

/**
 * A rep marked away by an operator (leadloop rep away) gets no round-robin leads until marked
 * back; it keeps its place in the rotation. Config `away: true` is the static form.
 */
int ll_rep_away_get(ll_scorer_t *sc, ll_txn_t *t, const char *rep, int *away);
int ll_rep_away_set(ll_scorer_t *sc, ll_txn_t *t, const char *rep, int away);
/** A rep's round-robin credit in a group (0 when never picked). */
long long ll_rep_credit(ll_scorer_t *sc, ll_txn_t *t, const char *group, const char *rep);

/** 1 when some lead is due for the SLA pass at now_us (read-only; for a cheap check first). */
int ll_lead_sla_due(ll_scorer_t *sc, ll_txn_t *t, uint64_t now_us);

/**
 * The SLA pass: leads past their accept deadline are escalated (an alert to escalate_to and,
 * with reassign, a new owner by routing and a new deadline, at most reassign_max times a lead;
 * the breach after that stops the clock); accepted leads idle for recycle_days are recycled.
 * Reads only the leads due (the sla_due index that ll_lead_put() keeps), at most 1000 a pass.
 * *changed counts leads touched.
 */
int ll_lead_sla_pass(ll_scorer_t *sc, ll_txn_t *t, uint64_t now_us, int *changed);

/* ---- the outbox ---- */

typedef enum { LL_OUT_JSON = 1, LL_OUT_SLACK = 2, LL_OUT_EMAIL = 3, LL_OUT_SSE = 4 } ll_out_kind_t;

/** The fixed head of an outbox value; the alert's JSON follows it. */
typedef struct st_ll_outbox_hdr_t {
    uint32_t version;
    uint8_t kind;          /* ll_out_kind_t */
    uint8_t pad[3];
    uint32_t attempts;
    uint64_t created_us;
    uint64_t next_us;      /* not before */
    char target[LL_OWNER_MAX]; /* hook name, or the owner's address for email */
} ll_outbox_hdr_t;

/** The id the next outbox row will get: a transaction that moved it queued an alert (leadloopd
 * wakes its notifier only then, not after every commit). */
int ll_outbox_next(ll_txn_t *t, uint64_t *id);
/** Appends one row per receiver of an alert (every hook, SSE, the owner's email). */
int ll_outbox_alert(ll_scorer_t *sc, ll_txn_t *t, const char *to, const char *json, size_t len);
typedef int (*ll_outbox_cb)(uint64_t id, const ll_outbox_hdr_t *h, const char *body, size_t len, void *ctx);
/** Rows for the notifier (webhooks, Slack, SSE) in id order. */
int ll_outbox_each(ll_scorer_t *sc, ll_txn_t *t, ll_outbox_cb cb, void *ctx);
/** The same from the first row whose id is at least from (ids never repeat: a caller that has
 * seen every row below from need not read them again). */
int ll_outbox_each_from(ll_scorer_t *sc, ll_txn_t *t, uint64_t from, ll_outbox_cb cb, void *ctx);
/**
 * Email rows (kind LL_OUT_EMAIL, target the owner's address, body the alert JSON) in id order:
 * the mailer's to send; it removes each with ll_outbox_mail_done() in the transaction that
 * records the send.
 */
int ll_outbox_mail_each(ll_scorer_t *sc, ll_txn_t *t, ll_outbox_cb cb, void *ctx);
int ll_outbox_mail_done(ll_scorer_t *sc, ll_txn_t *t, uint64_t id);
/** An email row the SMTP server deferred: the same backoff and retry_max as ll_outbox_retry(). */
int ll_outbox_mail_retry(ll_scorer_t *sc, ll_txn_t *t, uint64_t id, uint64_t now_us);
/** Removes a delivered row. */
int ll_outbox_done(ll_scorer_t *sc, ll_txn_t *t, uint64_t id);
/** Records a failed attempt: next try after an exponential backoff (1 s doubling, at most 10 min). */
int ll_outbox_retry(ll_scorer_t *sc, ll_txn_t *t, uint64_t id, uint64_t now_us);

/** HMAC-SHA256 signature of a JSON hook delivery: hex of HMAC(secret, "<ts>.<body>"), 65 bytes. */
void ll_alert_sign(const char *secret, const char *ts, const char *body, size_t len, char out[65]);

#endif
