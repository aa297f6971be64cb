/*
 * Routing at hand-off (score.h): ordered rules on the profile, then a weighted round-robin
 * group, else the hopper. Round-robin is "smooth weighted" (each pick adds every active rep's
 * weight to its credit, takes the rep with the most, and charges it the total): the credits
 * are kept per rep name, so adding or removing a rep, or marking one away, leaves the others'
 * place in the rotation as it was.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "score_int.h"

static int in_list(char *const *l, size_t n, const char *v)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(l[i], v) == 0)
            return 1;
    return 0;
}

static int at_least(json_t *fields, const char *name, double min)
{
    char v[64];
    ll__field(fields, name, v, sizeof(v));
    char *end;
    double d = strtod(v, &end);
    return end != v && d == d && d >= min;
}

static int away_key(const char *name, char key[LL_OWNER_MAX + 8])
{
    return snprintf(key, LL_OWNER_MAX + 8, "away:%s", name);
}

int ll_rep_away_get(ll_scorer_t *sc, ll_txn_t *t, const char *rep, int *away)
{
    char key[LL_OWNER_MAX + 8];
    MDB_val k = {(size_t)away_key(rep, key), key}, v;
    int rc = mdb_get(t->txn, sc->routing, &k, &v);
    *away = rc == 0;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

int ll_rep_away_set(ll_scorer_t *sc, ll_txn_t *t, const char *rep, int away)
{
    char key[LL_OWNER_MAX + 8];
    MDB_val k = {(size_t)away_key(rep, key), key}, v = {1, "1"};
    int rc = away ? mdb_put(t->txn, sc->routing, &k, &v, 0) : mdb_del(t->txn, sc->routing, &k, NULL);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : ll_store_err(rc);
}

long long ll_rep_credit(ll_scorer_t *sc, ll_txn_t *t, const char *group, const char *rep)
{
    char key[LL_NAME_MAX + 4];
    int klen = snprintf(key, sizeof(key), "rr:%s", group);
    MDB_val k = {(size_t)klen, key}, v;
    if (mdb_get(t->txn, sc->routing, &k, &v) != 0)
        return 0;
    const char *p = v.mv_data, *end = p + v.mv_size;
    size_t n = strlen(rep);
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        if (nl == NULL)
            break;
        if ((size_t)(nl - p) > n && memcmp(p, rep, n) == 0 && p[n] == ' ')
            return strtoll(p + n + 1, NULL, 10);
        p = nl + 1;
    }
    return 0;
}

static int rule_matches(const ll_route_rule_t *r, json_t *fields, const char *geo_country)
{
    char v[256];
    if (r->num_country > 0) {
        ll__field(fields, "country", v, sizeof(v));
        if (v[0] == '\0' && geo_country != NULL)
            snprintf(v, sizeof(v), "%s", geo_country);
        if (!in_list(r->country, r->num_country, v))
            return 0;
    }
    if (r->num_region > 0) {
        ll__field(fields, "region", v, sizeof(v));
        if (!in_list(r->region, r->num_region, v))
            return 0;
    }
    if (r->num_industry > 0) {
        ll__field(fields, "industry", v, sizeof(v));
        if (!in_list(r->industry, r->num_industry, v))
            return 0;
    }
    if (r->company != NULL) {
        ll__field(fields, "company", v, sizeof(v));
        if (v[0] == '\0' || !ll__glob(r->company, v, strlen(v), 1))
            return 0;
    }
    if (r->has_employees && !at_least(fields, "employees", r->employees_min))
        return 0;
    if (r->has_revenue && !at_least(fields, "revenue", r->revenue_min))
        return 0;
    return 1;
}

/* Credits of a group's reps: "name credit\n" lines; unknown names are kept for reps that come back. */
static int rr_pick(ll_scorer_t *sc, ll_txn_t *t, const ll_route_group_t *g, const char *exclude, char owner[LL_OWNER_MAX])
{
    long long credit[LL_ROUTE_MAX_REPS] = {0};
    char key[LL_NAME_MAX + 4];
    int klen = snprintf(key, sizeof(key), "rr:%s", g->name);
    MDB_val k = {(size_t)klen, key}, v;
    int rc = mdb_get(t->txn, sc->routing, &k, &v);
    if (rc == 0) {
        const char *p = v.mv_data, *end = p + v.mv_size;
        while (p < end) {
            const char *nl = memchr(p, '\n', end - p), *sp;
            if (nl == NULL)
                break;
            sp = memchr(p, ' ', nl - p);
            if (sp != NULL) {
                for (size_t i = 0; i < g->num_reps; i++)
                    if (strlen(g->reps[i].name) == (size_t)(sp - p) && memcmp(g->reps[i].name, p, sp - p) == 0)
                        credit[i] = strtoll(sp + 1, NULL, 10);
            }
            p = nl + 1;
        }
    } else if (rc != MDB_NOTFOUND) {
        return ll_store_err(rc);
    }
    long long total = 0;
    int best = -1;
    for (size_t i = 0; i < g->num_reps; i++) {
        const ll_rep_t *r = &g->reps[i];
        int away = r->away;
        if (!away && (rc = ll_rep_away_get(sc, t, r->name, &away)) != 0)
            return rc;
        if (away || (exclude != NULL && strcmp(r->name, exclude) == 0))
            continue;
        credit[i] += r->weight;
        total += r->weight;
        if (best < 0 || credit[i] > credit[best])
            best = (int)i;
    }
    if (best < 0)
        return LL_ENOTFOUND;
    credit[best] -= total;
    snprintf(owner, LL_OWNER_MAX, "%s", g->reps[best].name);
    ll_buf_t b;
    ll_buf_init(&b, 64 * 1024);
    for (size_t i = 0; i < g->num_reps; i++)
        ll_buf_printf(&b, "%s %lld\n", g->reps[i].name, credit[i]);
    v.mv_size = b.len, v.mv_data = b.data;
    rc = ll_store_err(mdb_put(t->txn, sc->routing, &k, &v, 0));
    ll_buf_free(&b);
    return rc;
}

int ll_route_pick(ll_scorer_t *sc, ll_txn_t *t, const char *fields_json, const char *country, const char *exclude,
                  char owner[LL_OWNER_MAX], char rule[LL_NAME_MAX])
{
    const ll_score_conf_t *conf = sc->conf;
    json_t *fields = json_loads(fields_json ? fields_json : "{}", 0, NULL);
    int rc = 0;
    size_t i;
    for (i = 0; i < conf->num_routes; i++) {
        const ll_route_rule_t *r = &conf->routes[i];
        if (!rule_matches(r, fields, country))
            continue;
        if (r->to[0] != '\0') {
            if (exclude != NULL && strcmp(exclude, r->to) == 0)
                continue; /* reassigning: the next rule that gives someone else */
            snprintf(owner, LL_OWNER_MAX, "%s", r->to);
            snprintf(rule, LL_NAME_MAX, "%s", r->name);
            break;
        }
        const ll_route_group_t *g = NULL;
        for (size_t j = 0; j < conf->num_groups; j++)
            if (strcmp(conf->groups[j].name, r->group) == 0)
                g = &conf->groups[j];
        if (g == NULL)
            continue;
        rc = rr_pick(sc, t, g, exclude, owner);
        if (rc == LL_ENOTFOUND) {
            rc = 0;
            continue; /* everyone away: the next rule */
        }
        snprintf(rule, LL_NAME_MAX, "%s", r->name);
        break;
    }
    if (rc == 0 && i == conf->num_routes) {
        snprintf(owner, LL_OWNER_MAX, "%s", conf->hopper);
        snprintf(rule, LL_NAME_MAX, "hopper");
    }
    json_decref(fields);
    return rc;
}
