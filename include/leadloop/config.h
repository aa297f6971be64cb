/*
 * Configuration: one YAML file (libyaml), every key optional. The keys, their types, bounds
 * and defaults are one table in tracker/config.c (STYLE.md 7); deploy/leadloop.example.yaml is
 * the manual. Errors name the file, line and key: "leadloop.yaml:12: key 'listen': ...".
 *
 * Command-line flags override the file: the caller sets fields after ll_config_load().
 */
#ifndef LEADLOOP_CONFIG_H
#define LEADLOOP_CONFIG_H

#include "leadloop/common.h"

#define LL_MAX_FORMS 64
#define LL_MAX_FORM_FIELDS 32
#define LL_MAX_PROXIES 32

/* `ack:` (README, "The edge's endpoints") */
enum {
    LL_ACK_AFTER_COMMIT,  /* `commit` (default): after the LMDB commit, synced */
    LL_ACK_AFTER_QUEUE,   /* `queued`: once queued for the writer; a crash loses the uncommitted */
    LL_ACK_AFTER_JOURNAL, /* `journal`: after a synced write to the journal (journal.h), the commit
                           * behind it; as durable as `commit`, in the store moments later */
};

typedef struct st_ll_form_t {
    char id[64];
    char *fields[LL_MAX_FORM_FIELDS]; /* names kept from a submission; others are dropped */
    size_t num_fields;
    char email_field[64];   /* default "email" */
    char honeypot[64];      /* a field that only bots fill; "" for none (default "_hp") */
    char *thank_you;        /* 303 target for browser posts; NULL: back to the Referer */
} ll_form_t;

typedef struct st_ll_cidr_t {
    int family;      /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    int bits;
} ll_cidr_t;

typedef struct st_ll_config_t {
    char *path;             /* the file read, or NULL for the embedded default */
    /* server */
    char *listen;           /* "127.0.0.1:8080" */
    char *data_dir;         /* "var" */
    char *public_url;       /* base of signed links, "http://127.0.0.1:8080" */
    int threads;            /* event loop threads, 1 */
    char *tls_cert, *tls_key; /* both or neither */
    int http2;              /* 0 (see LIBS.md: no CVE-2023-44487 fix in h2o 2.2.5) */
    size_t max_body;        /* 65536 */
    size_t map_size;        /* LMDB map size, 1 GiB */
    int batch_max;          /* events per commit, 1024 */
    int click_deadline_ms;  /* redirect anyway past this, 1000 */
    int ack;                /* when opens, clicks and the snippet's events are answered (forms and
                             * unsubscribes always after their commit): LL_ACK_AFTER_* above */
    int queued_commit_ms;   /* under `ack: queued` or `journal`, while no request waits for its
                             * commit, the writer gathers events this long (10) before committing
                             * them; 0: commits as soon as it can, as under `ack: commit` */
    int journal_kb;         /* `ack: journal`: size of DATA_DIR/edge.journal, 32768 (journal.h) */
    int log_level;          /* 0 warn, 1 info (default), 2 debug */
    /* identity */
    char *cookie_name;      /* "_ll" */
    char *cookie_domain;    /* NULL: host-only */
    int cookie_days;        /* 395 */
    int ipv4_prefix;        /* 24 */
    int ipv6_prefix;        /* 48 */
    ll_cidr_t trusted_proxies[LL_MAX_PROXIES];
    size_t num_trusted_proxies;
    /* geo */
    char *geo_country_db;   /* NULL: the bundled build/geo/country.mmdb */
    char *geo_city_db;      /* GeoIP2/GeoLite2 City, optional */
    char *geo_asn_db;       /* GeoLite2 ASN, optional */
    /* snippet */
    int honor_dnt;          /* 1 */
    int honor_gpc;          /* 1 */
    char *download_exts;    /* "pdf,zip,docx,xlsx,pptx,csv,dmg,exe,msi" */
    /* forms */
    ll_form_t forms[LL_MAX_FORMS];
    size_t num_forms;
    int form_rate_per_min;  /* per client IP, 10 */
    /* people or machines: email opens and clicks (leadloop/judge.h) */
    char *scanner_lists;    /* directory of UA/IP/ASN lists, "deploy/lists"; "" none */
    int provisional_s;      /* an open or click waits this long before it scores, 30; 0: at once */
    int sweep_window_s;     /* links of one message clicked within this are a sweep, 10 */
    int fast_after_send_s;  /* sooner than this after SMTP acceptance is suspect, 120 */
    /* nurture mailer: smtp:, mailer:, programs:, enroll_rules: (leadloop/program.h) */
    struct st_ll_mail_conf_t *mail; /* never NULL after ll_config_defaults() */
    /* scoring:, routing:, sla:, alerts: (leadloop/score.h) */
    struct st_ll_score_conf_t *score; /* never NULL after ll_config_defaults() */
} ll_config_t;

/** Fills c with the defaults (the embedded configuration `make run` uses). */
void ll_config_defaults(ll_config_t *c);
/** Reads path over the defaults already in c. On error, err holds "file:line: key 'k': why". */
int ll_config_load(ll_config_t *c, const char *path, char *err, size_t errlen);
void ll_config_free(ll_config_t *c);
const ll_form_t *ll_config_form(const ll_config_t *c, const char *id, size_t len);
/** Parses "10.0.0.0/8" or "::1" (a host) into out. */
int ll_cidr_parse(const char *s, ll_cidr_t *out);
int ll_cidr_match(const ll_cidr_t *c, int family, const uint8_t *addr);

#endif
