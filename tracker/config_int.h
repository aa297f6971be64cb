/*
 * Internal to tracker/: the YAML helpers that config.c shares with the parsers of nested
 * sections kept in their own files (a section such as `programs:` or `scoring:` is one line
 * in config.c's key table, K_SECTION, naming an ll_cfg_section_fn). Every error goes through
 * ll__cfg_fail(), so it names the file, line and key.
 */
#ifndef LEADLOOP_CONFIG_INT_H
#define LEADLOOP_CONFIG_INT_H

#include <yaml.h>
#include "leadloop/config.h"

typedef struct st_ll_cfg_t {
    ll_config_t *c;
    const char *path;
    yaml_document_t *doc;
    char *err;
    size_t errlen;
} ll_cfg_t;

/** Parses the value node of a section key into x->c; 0 or an ll__cfg_fail() code. */
typedef int (*ll_cfg_section_fn)(ll_cfg_t *x, const yaml_node_t *value);
typedef int (*ll_cfg_item_fn)(ll_cfg_t *x, const yaml_node_t *n, const char *key, const char *v, void *arg);

/** Writes "file:line: key 'key': why" for node n into x->err; returns LL_EINVAL. */
int ll__cfg_fail(ll_cfg_t *x, const yaml_node_t *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/** A scalar's text, or NULL with *rc set when n is a list or mapping or holds control chars. */
const char *ll__cfg_scalar(ll_cfg_t *x, const yaml_node_t *n, const char *key, int *rc);
/** Calls fn for each item of a list, or once for a lone scalar (`key: a` reads as `key: [a]`). */
int ll__cfg_each(ll_cfg_t *x, const yaml_node_t *n, const char *key, ll_cfg_item_fn fn, void *arg);
/* Scalar parsers: 0, or -1 when s is not one. Sizes take K, M, G, T suffixes. */
int ll__cfg_int(const char *s, long long *out);
int ll__cfg_size(const char *s, long long *out);
int ll__cfg_bool(const char *s); /* 1, 0, or -1 */
int ll__cfg_http_url(const char *s);      /* 1 for an absolute http(s) URL without blanks or quotes */
int ll__cfg_name(const char *s, size_t max); /* 1 for [A-Za-z0-9_.\[\]-]{1,max-1} */

/* The mailer's sections (config_mailer.c): defaults, release, and the section parsers. */
void ll__cfg_mail_init(ll_config_t *c);
void ll__cfg_mail_free(ll_config_t *c);
int ll__cfg_smtp(ll_cfg_t *x, const yaml_node_t *n);
int ll__cfg_mailer(ll_cfg_t *x, const yaml_node_t *n);
int ll__cfg_programs(ll_cfg_t *x, const yaml_node_t *n);
int ll__cfg_enroll_rules(ll_cfg_t *x, const yaml_node_t *n);

/* Scoring, routing, SLA and alerts (config_score.c, leadloop/score.h). */
void ll__cfg_score_init(ll_config_t *c);
void ll__cfg_score_free(ll_config_t *c);
int ll__cfg_scoring(ll_cfg_t *x, const yaml_node_t *n);
int ll__cfg_routing(ll_cfg_t *x, const yaml_node_t *n);
int ll__cfg_sla(ll_cfg_t *x, const yaml_node_t *n);
int ll__cfg_alerts(ll_cfg_t *x, const yaml_node_t *n);

/* Iterating a mapping: for (yaml_node_pair_t *p = LL_CFG_PAIRS(n); p < n->data.mapping.pairs.top; p++)
 * with yaml_document_get_node(x->doc, p->key / p->value). */

#endif
