/*
 * The scoring, routing, sla and alerts sections of the configuration (score.h). Each section
 * is a mapping; lists of rules are lists of mappings. Every error names file, line and key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config_int.h"
#include "leadloop/score.h"
#include "leadloop/token.h"

void ll__cfg_score_init(ll_config_t *c)
{
    ll_score_conf_t *s = ll_calloc(1, sizeof(*s));
    s->grade_a = 40, s->grade_b = 25, s->grade_c = 10;
    s->threshold = 60;
    strcpy(s->hopper, "hopper");
    s->accept_seconds = 3600;
    s->reassign_max = 3;
    s->recycle_days = 30;
    s->retry_max = 20;
    s->admin_listen = ll_strdup("127.0.0.1:8081");
    c->score = s;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i]);
}

void ll__cfg_score_free(ll_config_t *c)
{
    ll_score_conf_t *s = c->score;
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->num_rules; i++) {
        ll_score_rule_t *r = &s->rules[i];
        free(r->path), free(r->url), free(r->form), free(r->file), free(r->program), free(r->step), free(r->tag);
    }
    for (size_t i = 0; i < s->num_fit; i++) {
        free_list(s->fit[i].in, s->fit[i].num_in);
        free(s->fit[i].match);
    }
    for (size_t i = 0; i < s->num_routes; i++) {
        ll_route_rule_t *r = &s->routes[i];
        free_list(r->country, r->num_country), free_list(r->region, r->num_region);
        free_list(r->industry, r->num_industry), free(r->company);
    }
    for (size_t i = 0; i < s->num_hooks; i++)
        free(s->hooks[i].url), free(s->hooks[i].secret);
    free(s->admin_listen), free(s->admin_token);
    free(s);
    c->score = NULL;
}

/* ---- helpers ---- */

typedef struct {
    char **items;
    size_t *n;
} list_t;

static int add_item(ll_cfg_t *x, const yaml_node_t *n, const char *key, const char *v, void *arg)
{
    list_t *l = arg;
    if (*l->n == LL_MAX_LIST)
        return ll__cfg_fail(x, n, key, "more than %d values", LL_MAX_LIST);
    if (strlen(v) > 255)
        return ll__cfg_fail(x, n, key, "value too long");
    l->items[(*l->n)++] = ll_strdup(v);
    return 0;
}

static int get_int(ll_cfg_t *x, const yaml_node_t *n, const char *k, long long min, long long max, int *out)
{
    int rc = 0;
    long long v;
    const char *s = ll__cfg_scalar(x, n, k, &rc);
    if (s == NULL)
        return rc;
    if (ll__cfg_int(s, &v) != 0)
        return ll__cfg_fail(x, n, k, "'%s' is not a whole number", s);
    if (v < min || v > max)
        return ll__cfg_fail(x, n, k, "%lld is out of range (%lld to %lld)", v, min, max);
    *out = (int)v;
    return 0;
}

static int get_num(ll_cfg_t *x, const yaml_node_t *n, const char *k, double *out)
{
    int rc = 0;
    const char *s = ll__cfg_scalar(x, n, k, &rc);
    if (s == NULL)
        return rc;
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || v != v || v < 0 || v > 1e15)
        return ll__cfg_fail(x, n, k, "'%s' is not a number >= 0", s);
    *out = v;
    return 0;
}

static int get_str(ll_cfg_t *x, const yaml_node_t *n, const char *k, size_t max, char **out)
{
    int rc = 0;
    const char *s = ll__cfg_scalar(x, n, k, &rc);
    if (s == NULL)
        return rc;
    if (strlen(s) >= max)
        return ll__cfg_fail(x, n, k, "longer than %zu bytes", max - 1);
    free(*out);
    *out = *s == '\0' ? NULL : ll_strdup(s);
    return 0;
}

static int get_buf(ll_cfg_t *x, const yaml_node_t *n, const char *k, char *out, size_t max)
{
    char *s = NULL;
    int rc = get_str(x, n, k, max, &s);
    if (rc == 0)
        snprintf(out, max, "%s", s ? s : "");
    free(s);
    return rc;
}

static int get_bool(ll_cfg_t *x, const yaml_node_t *n, const char *k, int *out)
{
    int rc = 0;
    const char *s = ll__cfg_scalar(x, n, k, &rc);
    if (s == NULL)
        return rc;
    if ((rc = ll__cfg_bool(s)) < 0)
        return ll__cfg_fail(x, n, k, "'%s' is not true or false", s);
    *out = rc;
    return 0;
}

/* Iterates a mapping's pairs as (key node, value node, key text); a key that is not a scalar
 * reads as "?" and fails as an unknown key. */
#define PAIRS(n, kn, vn, k)                                                                                  \
    for (yaml_node_pair_t *p_##kn = (n)->data.mapping.pairs.start; p_##kn < (n)->data.mapping.pairs.top; p_##kn++)      \
        for (const yaml_node_t *kn = yaml_document_get_node(x->doc, p_##kn->key),                                \
                               *vn = yaml_document_get_node(x->doc, p_##kn->value);                              \
             kn != NULL; kn = NULL)                                                                          \
            for (const char *k = key_text(kn); k != NULL; k = NULL)

static const char *key_text(const yaml_node_t *kn)
{
    return kn->type == YAML_SCALAR_NODE ? (const char *)kn->data.scalar.value : "?";
}

static int need_map(ll_cfg_t *x, const yaml_node_t *n, const char *key)
{
    if (n->type != YAML_MAPPING_NODE)
        return ll__cfg_fail(x, n, key, "expected a mapping");
    return 0;
}

static int need_list(ll_cfg_t *x, const yaml_node_t *n, const char *key)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return ll__cfg_fail(x, n, key, "expected a list of mappings");
    return 0;
}

/* ---- scoring: ---- */

static int parse_rule(ll_cfg_t *x, const yaml_node_t *n, ll_score_rule_t *r, size_t idx)
{
    int rc = need_map(x, n, "scoring.rules");
    if (rc != 0)
        return rc;
    snprintf(r->name, sizeof(r->name), "rule%zu", idx + 1);
    r->link = -1;
    int have_points = 0;
    PAIRS(n, kn, vn, k) {
        if (strcmp(k, "name") == 0) {
            if ((rc = get_buf(x, vn, k, r->name, sizeof(r->name))) == 0 && !ll__cfg_name(r->name, sizeof(r->name)))
                rc = ll__cfg_fail(x, vn, k, "'%s' is not a name (letters, digits, _ - .)", r->name);
        } else if (strcmp(k, "event") == 0) {
            const char *s = ll__cfg_scalar(x, vn, k, &rc);
            if (s != NULL && strcmp(s, "any") != 0 && (r->type = ll_event_type_parse(s, strlen(s))) == 0)
                rc = ll__cfg_fail(x, vn, k, "'%s' is not an event type (pageview, click, open, form, download, ...)", s);
        } else if (strcmp(k, "path") == 0) {
            rc = get_str(x, vn, k, 1024, &r->path);
        } else if (strcmp(k, "url") == 0) {
            rc = get_str(x, vn, k, 1024, &r->url);
        } else if (strcmp(k, "link") == 0) {
            rc = get_int(x, vn, k, 0, 1 << 30, &r->link);
        } else if (strcmp(k, "form") == 0) {
            rc = get_str(x, vn, k, 64, &r->form);
        } else if (strcmp(k, "file") == 0) {
            rc = get_str(x, vn, k, 32, &r->file);
        } else if (strcmp(k, "program") == 0) {
            rc = get_str(x, vn, k, 128, &r->program);
        } else if (strcmp(k, "step") == 0) {
            rc = get_str(x, vn, k, 128, &r->step);
        } else if (strcmp(k, "tag") == 0) {
            rc = get_str(x, vn, k, LL_TOKEN_LINK_TAG_MAX + 1, &r->tag);
            if (rc == 0 && ll_link_tag_check(r->tag, strlen(r->tag)) != 0)
                rc = ll__cfg_fail(x, vn, k, "a link tag is 1 to %d of a-z, 0-9, '_', '.', '-'", LL_TOKEN_LINK_TAG_MAX);
        } else if (strcmp(k, "points") == 0) {
            rc = get_int(x, vn, k, -1000, 1000, &r->points);
            have_points = 1;
        } else if (strcmp(k, "cap_per_day") == 0) {
            rc = get_int(x, vn, k, 0, 65000, &r->cap_per_day);
        } else {
            rc = ll__cfg_fail(x, kn, k, "unknown key in a scoring rule (name, event, path, url, link, form, file, program, "
                                        "step, tag, points, cap_per_day)");
        }
        if (rc != 0)
            return rc;
    }
    if (rc != 0)
        return rc;
    if (!have_points)
        return ll__cfg_fail(x, n, r->name, "a scoring rule needs points");
    return 0;
}

static int parse_fit(ll_cfg_t *x, const yaml_node_t *n, ll_fit_rule_t *f, size_t idx)
{
    int rc = need_map(x, n, "scoring.fit");
    if (rc != 0)
        return rc;
    snprintf(f->name, sizeof(f->name), "fit%zu", idx + 1);
    PAIRS(n, kn, vn, k) {
        if (strcmp(k, "name") == 0) {
            rc = get_buf(x, vn, k, f->name, sizeof(f->name));
        } else if (strcmp(k, "field") == 0) {
            if ((rc = get_buf(x, vn, k, f->field, sizeof(f->field))) == 0 && !ll__cfg_name(f->field, sizeof(f->field)))
                rc = ll__cfg_fail(x, vn, k, "'%s' is not a field name", f->field);
        } else if (strcmp(k, "in") == 0) {
            list_t l = {f->in, &f->num_in};
            rc = ll__cfg_each(x, vn, k, add_item, &l);
        } else if (strcmp(k, "match") == 0) {
            rc = get_str(x, vn, k, 256, &f->match);
        } else if (strcmp(k, "min") == 0) {
            rc = get_num(x, vn, k, &f->min);
            f->has_min = 1;
        } else if (strcmp(k, "points") == 0) {
            rc = get_int(x, vn, k, -1000, 1000, &f->points);
        } else {
            rc = ll__cfg_fail(x, kn, k, "unknown key in a fit rule (name, field, in, match, min, points)");
        }
        if (rc != 0)
            return rc;
    }
    if (rc == 0 && f->field[0] == '\0')
        return ll__cfg_fail(x, n, f->name, "a fit rule needs a field");
    return rc;
}

int ll__cfg_scoring(ll_cfg_t *x, const yaml_node_t *n)
{
    ll_score_conf_t *s = x->c->score;
    int rc = need_map(x, n, "scoring");
    if (rc != 0)
        return rc;
    PAIRS(n, kn, vn, k) {
        if (strcmp(k, "threshold") == 0) {
            rc = get_int(x, vn, k, 1, 100000, &s->threshold);
        } else if (strcmp(k, "half_life_days") == 0) {
            rc = get_num(x, vn, k, &s->half_life_days);
        } else if (strcmp(k, "grades") == 0) {
            if ((rc = need_map(x, vn, k)) != 0)
                return rc;
            PAIRS(vn, gkn, gvn, gk) {
                int *slot = strcmp(gk, "A") == 0 ? &s->grade_a : strcmp(gk, "B") == 0 ? &s->grade_b
                          : strcmp(gk, "C") == 0 ? &s->grade_c : NULL;
                rc = slot == NULL ? ll__cfg_fail(x, gkn, gk, "grades are A, B and C (fit points for each; below C is D)")
                                  : get_int(x, gvn, gk, -100000, 100000, slot);
                if (rc != 0)
                    return rc;
            }
        } else if (strcmp(k, "rules") == 0 || strcmp(k, "fit") == 0) {
            if ((rc = need_list(x, vn, k)) != 0)
                return rc;
            int fit = k[0] == 'f';
            for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top; it++) {
                const yaml_node_t *in = yaml_document_get_node(x->doc, *it);
                if (fit) {
                    if (s->num_fit == LL_SCORE_MAX_FIT)
                        return ll__cfg_fail(x, in, k, "more than %d fit rules", LL_SCORE_MAX_FIT);
                    rc = parse_fit(x, in, &s->fit[s->num_fit], s->num_fit);
                    s->num_fit++;
                } else {
                    if (s->num_rules == LL_SCORE_MAX_RULES)
                        return ll__cfg_fail(x, in, k, "more than %d rules", LL_SCORE_MAX_RULES);
                    rc = parse_rule(x, in, &s->rules[s->num_rules], s->num_rules);
                    s->num_rules++;
                }
                if (rc != 0)
                    return rc;
            }
        } else {
            rc = ll__cfg_fail(x, kn, k, "unknown key in scoring (threshold, half_life_days, grades, rules, fit)");
        }
        if (rc != 0)
            return rc;
    }
    s->enabled = s->num_rules > 0 || s->num_fit > 0;
    return rc;
}

/* ---- routing: ---- */

static int parse_route(ll_cfg_t *x, const yaml_node_t *n, ll_route_rule_t *r, size_t idx)
{
    int rc = need_map(x, n, "routing.rules");
    if (rc != 0)
        return rc;
    snprintf(r->name, sizeof(r->name), "route%zu", idx + 1);
    PAIRS(n, kn, vn, k) {
        list_t l = {NULL, NULL};
        if (strcmp(k, "name") == 0) {
            rc = get_buf(x, vn, k, r->name, sizeof(r->name));
        } else if (strcmp(k, "country") == 0 || strcmp(k, "region") == 0 || strcmp(k, "industry") == 0) {
            l = k[0] == 'c' ? (list_t){r->country, &r->num_country}
              : k[0] == 'r' ? (list_t){r->region, &r->num_region} : (list_t){r->industry, &r->num_industry};
            rc = ll__cfg_each(x, vn, k, add_item, &l);
        } else if (strcmp(k, "company") == 0) {
            rc = get_str(x, vn, k, 256, &r->company);
        } else if (strcmp(k, "employees_min") == 0) {
            rc = get_num(x, vn, k, &r->employees_min);
            r->has_employees = 1;
        } else if (strcmp(k, "revenue_min") == 0) {
            rc = get_num(x, vn, k, &r->revenue_min);
            r->has_revenue = 1;
        } else if (strcmp(k, "to") == 0) {
            rc = get_buf(x, vn, k, r->to, sizeof(r->to));
        } else if (strcmp(k, "group") == 0) {
            rc = get_buf(x, vn, k, r->group, sizeof(r->group));
        } else {
            rc = ll__cfg_fail(x, kn, k, "unknown key in a routing rule (name, country, region, industry, company, "
                                        "employees_min, revenue_min, to, group)");
        }
        if (rc != 0)
            return rc;
    }
    if (rc == 0 && (r->to[0] == '\0') == (r->group[0] == '\0'))
        return ll__cfg_fail(x, n, r->name, "a routing rule needs either to (a rep) or group");
    return rc;
}

static int parse_group(ll_cfg_t *x, const yaml_node_t *kn, const yaml_node_t *vn, ll_route_group_t *g)
{
    int rc = 0;
    if (get_buf(x, kn, "groups", g->name, sizeof(g->name)) != 0 || need_list(x, vn, g->name) != 0)
        return LL_EINVAL;
    for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top; it++) {
        const yaml_node_t *in = yaml_document_get_node(x->doc, *it);
        if (g->num_reps == LL_ROUTE_MAX_REPS)
            return ll__cfg_fail(x, in, g->name, "more than %d reps", LL_ROUTE_MAX_REPS);
        ll_rep_t *r = &g->reps[g->num_reps++];
        r->weight = 1;
        if (in->type == YAML_SCALAR_NODE) {
            if ((rc = get_buf(x, in, g->name, r->name, sizeof(r->name))) != 0)
                return rc;
            continue;
        }
        if ((rc = need_map(x, in, g->name)) != 0)
            return rc;
        PAIRS(in, rkn, rvn, k) {
            if (strcmp(k, "rep") == 0)
                rc = get_buf(x, rvn, k, r->name, sizeof(r->name));
            else if (strcmp(k, "weight") == 0)
                rc = get_int(x, rvn, k, 1, 1000, &r->weight);
            else if (strcmp(k, "away") == 0)
                rc = get_bool(x, rvn, k, &r->away);
            else
                rc = ll__cfg_fail(x, rkn, k, "unknown key in a rep (rep, weight, away)");
            if (rc != 0)
                return rc;
        }
        if (rc == 0 && r->name[0] == '\0')
            return ll__cfg_fail(x, in, g->name, "a rep needs a name (rep:)");
    }
    return rc;
}

int ll__cfg_routing(ll_cfg_t *x, const yaml_node_t *n)
{
    ll_score_conf_t *s = x->c->score;
    int rc = need_map(x, n, "routing");
    if (rc != 0)
        return rc;
    PAIRS(n, kn, vn, k) {
        if (strcmp(k, "hopper") == 0) {
            rc = get_buf(x, vn, k, s->hopper, sizeof(s->hopper));
        } else if (strcmp(k, "rules") == 0) {
            if ((rc = need_list(x, vn, k)) != 0)
                return rc;
            for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top; it++) {
                const yaml_node_t *in = yaml_document_get_node(x->doc, *it);
                if (s->num_routes == LL_ROUTE_MAX_RULES)
                    return ll__cfg_fail(x, in, k, "more than %d rules", LL_ROUTE_MAX_RULES);
                if ((rc = parse_route(x, in, &s->routes[s->num_routes], s->num_routes)) != 0)
                    return rc;
                s->num_routes++;
            }
        } else if (strcmp(k, "groups") == 0) {
            if ((rc = need_map(x, vn, k)) != 0)
                return rc;
            PAIRS(vn, gkn, gvn, gk) {
                if (s->num_groups == LL_ROUTE_MAX_GROUPS)
                    return ll__cfg_fail(x, gkn, gk, "more than %d groups", LL_ROUTE_MAX_GROUPS);
                if ((rc = parse_group(x, gkn, gvn, &s->groups[s->num_groups++])) != 0)
                    return rc;
            }
        } else {
            rc = ll__cfg_fail(x, kn, k, "unknown key in routing (rules, groups, hopper)");
        }
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; rc == 0 && i < s->num_routes; i++) {
        if (s->routes[i].group[0] == '\0')
            continue;
        size_t j = 0;
        while (j < s->num_groups && strcmp(s->groups[j].name, s->routes[i].group) != 0)
            j++;
        if (j == s->num_groups)
            rc = ll__cfg_fail(x, n, s->routes[i].name, "group '%s' is not defined under routing.groups",
                              s->routes[i].group);
    }
    return rc;
}

/* ---- sla: ---- */

int ll__cfg_sla(ll_cfg_t *x, const yaml_node_t *n)
{
    ll_score_conf_t *s = x->c->score;
    int rc = need_map(x, n, "sla");
    if (rc != 0)
        return rc;
    PAIRS(n, kn, vn, k) {
        if (strcmp(k, "accept_seconds") == 0)
            rc = get_int(x, vn, k, 0, 365 * 86400, &s->accept_seconds);
        else if (strcmp(k, "escalate_to") == 0)
            rc = get_buf(x, vn, k, s->escalate_to, sizeof(s->escalate_to));
        else if (strcmp(k, "reassign") == 0)
            rc = get_bool(x, vn, k, &s->reassign);
        else if (strcmp(k, "reassign_max") == 0)
            rc = get_int(x, vn, k, 1, 1000, &s->reassign_max);
        else if (strcmp(k, "recycle_days") == 0)
            rc = get_int(x, vn, k, 0, 3650, &s->recycle_days);
        else
            rc = ll__cfg_fail(x, kn, k, "unknown key in sla (accept_seconds, escalate_to, reassign, reassign_max, recycle_days)");
        if (rc != 0)
            return rc;
    }
    return rc;
}

/* ---- alerts: ---- */

int ll__cfg_alerts(ll_cfg_t *x, const yaml_node_t *n)
{
    ll_score_conf_t *s = x->c->score;
    int rc = need_map(x, n, "alerts");
    if (rc != 0)
        return rc;
    PAIRS(n, kn, vn, k) {
        if (strcmp(k, "webhooks") == 0) {
            if ((rc = need_list(x, vn, k)) != 0)
                return rc;
            for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top; it++) {
                const yaml_node_t *in = yaml_document_get_node(x->doc, *it);
                if (s->num_hooks == LL_ALERT_MAX_HOOKS)
                    return ll__cfg_fail(x, in, k, "more than %d webhooks", LL_ALERT_MAX_HOOKS);
                if ((rc = need_map(x, in, k)) != 0)
                    return rc;
                ll_hook_t *h = &s->hooks[s->num_hooks++];
                snprintf(h->name, sizeof(h->name), "hook%zu", s->num_hooks);
                h->kind = LL_HOOK_JSON;
                PAIRS(in, hkn, hvn, hk) {
                    if (strcmp(hk, "name") == 0) {
                        rc = get_buf(x, hvn, hk, h->name, sizeof(h->name));
                    } else if (strcmp(hk, "url") == 0) {
                        if ((rc = get_str(x, hvn, hk, 1025, &h->url)) == 0 && (h->url == NULL || !ll__cfg_http_url(h->url)))
                            rc = ll__cfg_fail(x, hvn, hk, "not an http:// or https:// URL");
                    } else if (strcmp(hk, "secret") == 0) {
                        rc = get_str(x, hvn, hk, 257, &h->secret);
                    } else if (strcmp(hk, "kind") == 0) {
                        const char *v = ll__cfg_scalar(x, hvn, hk, &rc);
                        if (v != NULL && strcmp(v, "json") == 0)
                            h->kind = LL_HOOK_JSON;
                        else if (v != NULL && strcmp(v, "slack") == 0)
                            h->kind = LL_HOOK_SLACK;
                        else if (v != NULL)
                            rc = ll__cfg_fail(x, hvn, hk, "'%s' is not json or slack", v);
                    } else {
                        rc = ll__cfg_fail(x, hkn, hk, "unknown key in a webhook (name, url, secret, kind)");
                    }
                    if (rc != 0)
                        return rc;
                }
                if (rc == 0 && h->url == NULL)
                    return ll__cfg_fail(x, in, h->name, "a webhook needs a url");
            }
        } else if (strcmp(k, "email_owner") == 0) {
            rc = get_bool(x, vn, k, &s->email_owner);
        } else if (strcmp(k, "retry_max") == 0) {
            rc = get_int(x, vn, k, 1, 1000, &s->retry_max);
        } else if (strcmp(k, "admin_listen") == 0) {
            rc = get_str(x, vn, k, 64, &s->admin_listen);
        } else if (strcmp(k, "admin_token") == 0) {
            if ((rc = get_str(x, vn, k, 257, &s->admin_token)) == 0 && s->admin_token != NULL &&
                strlen(s->admin_token) < 16)
                rc = ll__cfg_fail(x, vn, k, "at least 16 characters");
        } else {
            rc = ll__cfg_fail(x, kn, k, "unknown key in alerts (webhooks, email_owner, retry_max, admin_listen, "
                                        "admin_token)");
        }
        if (rc != 0)
            return rc;
    }
    return rc;
}
