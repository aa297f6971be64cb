/*
 * leadloop score | rescore | lead | outbox: the scorer's ledger explained, the rebuild from
 * the log, the hand-off queue and the alerts waiting for delivery (leadloop/score.h).
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "leadloop/score.h"
#include "cli.h"

static int open_scorer(ll_cli_t *cli, const char *cmd, int create, ll_scorer_t **sc)
{
    char err[256];
    int rc = ll__cli_store(cli, cmd, create);
    if (rc != 0)
        return rc;
    if (ll_scorer_open(cli->store, cli->conf.score, sc, err, sizeof(err)) != 0)
        return ll__cli_fail(cmd, "%s", err);
    return 0;
}

typedef struct {
    const ll_score_conf_t *conf;
    int json, n;
    double last;
    uint64_t last_us;
} explain_t;

static int on_line(const ll_ledger_rec_t *r, void *p)
{
    explain_t *x = p;
    char iso[32];
    ll__cli_iso(r->time_us, iso);
    if (x->json) {
        printf("%s{\"time\":\"%s\",\"seq\":%llu,\"event\":\"%s\",\"rule\":\"", x->n ? "," : "", iso,
               (unsigned long long)r->seq, r->event_type ? ll_event_type_name(r->event_type) : "-");
        ll__cli_put_text(stdout, r->rule, strnlen(r->rule, sizeof(r->rule)), 64);
        printf("\",\"kind\":\"%s\",\"points\":%d,\"capped\":%d,\"after\":%.2f}", r->is_fit ? "fit" : "behavior",
               r->points, r->capped, r->after);
    } else {
        if (!r->is_fit && x->conf->half_life_days > 0 && x->n > 0 && r->time_us > x->last_us) {
            /* The decay between two rows, shown as its own line. */
            double before = r->after - r->points, lost = x->last - before;
            if (lost >= 0.05)
                printf("  %-20s  %-8s %-10s %-24s %+8.1f\n", iso, "", "decay", "half-life", -lost);
        }
        printf("  %-20s  %-8llu %-10s ", iso, (unsigned long long)r->seq,
               r->event_type ? ll_event_type_name(r->event_type) : "-");
        ll__cli_put_text(stdout, r->rule, strnlen(r->rule, sizeof(r->rule)), 24);
        int pad = 24 - (int)strnlen(r->rule, sizeof(r->rule));
        printf("%*s %+8d  %s %.1f", pad > 0 ? pad : 0, "", r->points, r->is_fit ? "fit" : "score", r->after);
        if (r->capped)
            printf("  (cap withheld %d)", r->capped);
        putchar('\n');
    }
    if (!r->is_fit)
        x->last = r->after, x->last_us = r->time_us;
    x->n++;
    return ll__cli_out_failed();
}

static int cmd_score(ll_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "score", *json = NULL;
    ll_cli_opt_t opts[] = {{"--json", 0, &json}, {NULL, 0, NULL}};
    char *pos[1], email[256];
    int npos, rc;
    uint64_t id;
    ll_scorer_t *sc = NULL;
    ll_txn_t t = {0};
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 1, &npos)) != 0)
        return rc;
    if (npos != 1)
        return ll__cli_usage(cmd, "score EMAIL [--json]");
    if ((rc = ll__cli_email(cmd, NULL, pos[0], email)) != 0 || (rc = ll__cli_contact_id(cli, cmd, NULL, email, &id)) != 0 ||
        (rc = open_scorer(cli, cmd, 0, &sc)) != 0)
        goto out;
    const ll_score_conf_t *conf = cli->conf.score;
    ll_score_state_t st;
    ll_lead_t l;
    uint64_t now = ll_now_us();
    if ((rc = ll_txn_begin(cli->store, 1, &t)) != 0) {
        rc = ll__cli_fail(cmd, "%s", ll_strerror(rc));
        goto out;
    }
    if (ll_score_get(sc, &t, id, &st) != 0)
        memset(&st, 0, sizeof(st));
    int have_lead = ll_lead_get(sc, &t, id, &l) == 0;
    double score = ll_score_decayed(conf, &st, now);
    explain_t x = {conf, json != NULL, 0, 0, 0};
    if (json) {
        printf("{\"contact\":%llu,\"email\":\"", (unsigned long long)id);
        ll__cli_put_text(stdout, email, strlen(email), 256);
        printf("\",\"score\":%.2f,\"threshold\":%d,\"fit\":%d,\"grade\":\"%c\",\"stage\":\"%s\",\"owner\":\"", score,
               conf->threshold, st.fit, ll_score_grade(conf, st.fit),
               have_lead ? ll_stage_name(l.stage) : st.updated_us ? "inquiry" : "none");
        if (have_lead)
            ll__cli_put_text(stdout, l.owner, strnlen(l.owner, sizeof(l.owner)), sizeof(l.owner));
        printf("\",\"ledger\":[");
    } else {
        printf("contact %llu %s\n  score    %.0f (threshold %d)%s\n  fit      %d, grade %c\n  stage    %s\n",
               (unsigned long long)id, email, score, conf->threshold,
               score + 1e-9 >= conf->threshold ? ", sales-ready" : "", st.fit, ll_score_grade(conf, st.fit),
               have_lead ? ll_stage_name(l.stage) : st.updated_us ? "inquiry" : "none");
        if (have_lead) {
            printf("  owner    ");
            ll__cli_put_text(stdout, l.owner, strnlen(l.owner, sizeof(l.owner)), sizeof(l.owner));
            printf(" (rule %s)\n", l.rule);
        }
        printf("ledger (time, seq, event, rule, points, after):\n");
    }
    rc = ll_ledger_each(sc, &t, id, on_line, &x);
    if (json) {
        printf("]}\n");
    } else {
        if (x.n == 0)
            printf("  (no score changes)\n");
        else if (conf->half_life_days > 0 && x.last - score >= 0.05) {
            char iso[32];
            ll__cli_iso(now, iso);
            printf("  %-20s  %-8s %-10s %-24s %+8.1f  score %.1f\n", iso, "", "decay", "now", score - x.last, score);
        }
    }
    if (rc != 0)
        rc = ll__cli_fail(cmd, "%s", ll_strerror(rc));
out:
    ll_txn_abort(&t);
    ll_scorer_free(sc);
    return rc;
}

static int cmd_rescore(ll_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "rescore";
    char *pos[1];
    int npos, rc;
    ll_scorer_t *sc = NULL;
    ll_txn_t t;
    uint64_t n = 0;
    ll_cli_opt_t opts[] = {{NULL, 0, NULL}};
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 0, &npos)) != 0)
        return rc;
    if ((rc = open_scorer(cli, cmd, 0, &sc)) != 0)
        return rc;
    if ((rc = ll_txn_begin(cli->store, 0, &t)) == 0) {
        if ((rc = ll_score_rescore(sc, &t, &n)) == 0)
            rc = ll_txn_commit(&t);
        else
            ll_txn_abort(&t);
    }
    ll_scorer_free(sc);
    if (rc != 0)
        return ll__cli_fail(cmd, "%s", ll_strerror(rc));
    printf("rescored %llu event(s) from the log\n", (unsigned long long)n);
    return 0;
}

typedef struct {
    ll_txn_t *t;
    int json, stage;
    const char *owner;
    int n;
} list_t;

static int on_lead(uint64_t contact, const ll_lead_t *l, void *p)
{
    list_t *x = p;
    if ((x->stage >= 0 && l->stage != x->stage) || (x->owner != NULL && strcmp(x->owner, l->owner) != 0))
        return 0;
    ll_contact_t c;
    if (ll_contact_get(x->t, contact, &c) != 0)
        return 0;
    char mql[32], by[32];
    ll__cli_iso(l->mql_us, mql);
    ll__cli_iso(l->accept_by_us, by);
    if (x->json) {
        printf("{\"contact\":%llu,\"email\":\"", (unsigned long long)contact);
        ll__cli_put_text(stdout, c.email, strlen(c.email), 256);
        printf("\",\"stage\":\"%s\",\"owner\":\"", ll_stage_name(l->stage));
        ll__cli_put_text(stdout, l->owner, strnlen(l->owner, sizeof(l->owner)), sizeof(l->owner));
        printf("\",\"rule\":\"%s\",\"mql\":\"%s\",\"accept_by\":\"%s\",\"escalated\":%s,\"reassigned\":%u,"
               "\"score_at_mql\":%d,\"grade_at_mql\":\"%c\"}\n",
               l->rule, mql, l->accept_by_us ? by : "", l->escalated ? "true" : "false", (unsigned)l->reassigned,
               l->score_at_mql,
               l->grade_at_mql ? l->grade_at_mql : '-');
    } else {
        if (x->n == 0)
            printf("%-32s %-11s %-28s %-14s %-20s %s\n", "contact", "stage", "owner", "rule", "accept by", "score/grade");
        ll__cli_put_text(stdout, c.email, strlen(c.email), 32);
        int pad = 32 - (int)strlen(c.email);
        printf("%*s %-11s ", pad > 0 ? pad : 0, "", ll_stage_name(l->stage));
        ll__cli_put_text(stdout, l->owner, strnlen(l->owner, sizeof(l->owner)), 28);
        pad = 28 - (int)strnlen(l->owner, sizeof(l->owner));
        printf("%*s %-14s %-20s %d/%c%s\n", pad > 0 ? pad : 0, "", l->rule,
               l->stage == LL_STAGE_MQL && l->accept_by_us ? by : "-", l->score_at_mql,
               l->grade_at_mql ? l->grade_at_mql : '-', l->escalated ? " escalated" : "");
    }
    ll_contact_clear(&c);
    x->n++;
    return ll__cli_out_failed();
}

static int lead_change(ll_cli_t *cli, const char *cmd, const char *what, char *email_in, int stage)
{
    char email[256];
    uint64_t id;
    ll_scorer_t *sc = NULL;
    ll_txn_t t;
    int rc;
    if ((rc = ll__cli_email(cmd, NULL, email_in, email)) != 0 || (rc = ll__cli_contact_id(cli, cmd, NULL, email, &id)) != 0 ||
        (rc = open_scorer(cli, cmd, 0, &sc)) != 0)
        return rc;
    if ((rc = ll_txn_begin(cli->store, 0, &t)) == 0) {
        uint64_t now = ll_now_us();
        rc = strcmp(what, "accept") == 0   ? ll_lead_accept(sc, &t, id, now)
             : strcmp(what, "reject") == 0 ? ll_lead_reject(sc, &t, id, now)
                                           : ll_lead_set_stage(sc, &t, id, stage, now);
        if (rc == 0)
            rc = ll_txn_commit(&t);
        else
            ll_txn_abort(&t);
    }
    ll_scorer_free(sc);
    if (rc == LL_ENOTFOUND)
        return ll__cli_fail(cmd, "%s is not a lead (never sales-ready)", email);
    if (rc == LL_EINVAL)
        return ll__cli_fail(cmd, "%s: cannot %s a lead in this stage", email, what);
    if (rc != 0)
        return ll__cli_fail(cmd, "%s", ll_strerror(rc));
    printf("%s: %s\n", email, strcmp(what, "accept") == 0 ? "accepted" : strcmp(what, "reject") == 0 ? "rejected, recycled" : ll_stage_name(stage));
    return 0;
}

static int cmd_lead(ll_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "lead", *json = NULL, *stage_s = NULL, *owner = NULL;
    ll_cli_opt_t opts[] = {{"--json", 0, &json}, {"--stage", 1, &stage_s}, {"--owner", 1, &owner}, {NULL, 0, NULL}};
    char *pos[3];
    int npos, rc;
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 3, &npos)) != 0)
        return rc;
    if (npos >= 1 && strcmp(pos[0], "list") == 0 && npos == 1) {
        int stage = -1;
        if (stage_s != NULL && (stage = ll_stage_parse(stage_s)) < 0)
            return ll__cli_usage(cmd, "--stage: '%s' is not a stage (mql, accepted, sql, opportunity, customer, recycled)",
                                 stage_s);
        ll_scorer_t *sc = NULL;
        ll_txn_t t;
        if ((rc = open_scorer(cli, cmd, 0, &sc)) != 0)
            return rc;
        list_t x = {&t, json != NULL, stage, owner, 0};
        if ((rc = ll_txn_begin(cli->store, 1, &t)) == 0) {
            rc = ll_lead_each(sc, &t, on_lead, &x);
            ll_txn_abort(&t);
        }
        ll_scorer_free(sc);
        if (rc != 0 && rc != 1)
            return ll__cli_fail(cmd, "%s", ll_strerror(rc));
        if (x.n == 0 && !x.json)
            printf("no leads\n");
        return 0;
    }
    if (npos == 2 && (strcmp(pos[0], "accept") == 0 || strcmp(pos[0], "reject") == 0))
        return lead_change(cli, cmd, pos[0], pos[1], 0);
    if (npos == 3 && strcmp(pos[0], "stage") == 0) {
        int stage = ll_stage_parse(pos[2]);
        if (stage < LL_STAGE_ACCEPTED)
            return ll__cli_usage(cmd, "'%s' is not a stage to set (accepted, sql, opportunity, customer, recycled)", pos[2]);
        return lead_change(cli, cmd, "stage", pos[1], stage);
    }
    return ll__cli_usage(cmd, "lead list [--stage S] [--owner O] [--json] | lead accept EMAIL | lead reject EMAIL | "
                              "lead stage EMAIL STAGE");
}

static int on_row(uint64_t id, const ll_outbox_hdr_t *h, const char *body, size_t len, void *p)
{
    static const char *const kinds[] = {"?", "webhook", "slack", "email", "sse"};
    char next[32];
    ll__cli_iso(h->next_us, next);
    printf("%-8llu %-8s %-28s attempts %-3u next %s  ", (unsigned long long)id, kinds[h->kind <= 4 ? h->kind : 0],
           h->target, h->attempts, next);
    ll__cli_put_text(stdout, body, len, 100);
    putchar('\n');
    ++*(int *)p;
    return ll__cli_out_failed();
}

static int cmd_outbox(ll_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "outbox";
    char *pos[1];
    int npos, rc, n = 0;
    ll_cli_opt_t opts[] = {{NULL, 0, NULL}};
    ll_scorer_t *sc = NULL;
    ll_txn_t t;
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 0, &npos)) != 0 || (rc = open_scorer(cli, cmd, 0, &sc)) != 0)
        return rc;
    if ((rc = ll_txn_begin(cli->store, 1, &t)) == 0) {
        if ((rc = ll_outbox_each(sc, &t, on_row, &n)) == 0)
            rc = ll_outbox_mail_each(sc, &t, on_row, &n);
        ll_txn_abort(&t);
    }
    ll_scorer_free(sc);
    if (rc != 0)
        return ll__cli_fail(cmd, "%s", ll_strerror(rc));
    if (n == 0)
        printf("outbox empty\n");
    return 0;
}

static int cmd_rep(ll_cli_t *cli, int argc, char **argv)
{
    const char *cmd = "rep";
    char *pos[2];
    int npos, rc;
    ll_cli_opt_t opts[] = {{NULL, 0, NULL}};
    ll_scorer_t *sc = NULL;
    ll_txn_t t;
    const ll_score_conf_t *conf = cli->conf.score;
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 2, &npos)) != 0)
        return rc;
    int list = npos == 1 && strcmp(pos[0], "list") == 0;
    int set = npos == 2 && (strcmp(pos[0], "away") == 0 || strcmp(pos[0], "back") == 0);
    if (!list && !set)
        return ll__cli_usage(cmd, "rep list | rep away NAME | rep back NAME");
    if (set) {
        int known = 0;
        for (size_t g = 0; g < conf->num_groups; g++)
            for (size_t i = 0; i < conf->groups[g].num_reps; i++)
                known |= strcmp(conf->groups[g].reps[i].name, pos[1]) == 0;
        if (!known)
            return ll__cli_fail(cmd, "'%s' is in no routing group of the configuration (use -c)", pos[1]);
    }
    if ((rc = open_scorer(cli, cmd, 0, &sc)) != 0)
        return rc;
    if ((rc = ll_txn_begin(cli->store, list, &t)) == 0) {
        if (set) {
            if ((rc = ll_rep_away_set(sc, &t, pos[1], pos[0][0] == 'a')) == 0)
                rc = ll_txn_commit(&t);
            else
                ll_txn_abort(&t);
            if (rc == 0)
                printf("%s: %s\n", pos[1], pos[0][0] == 'a' ? "away (no round-robin leads)" : "back in the rotation");
        } else {
            printf("%-16s %-32s %-6s %-8s %s\n", "group", "rep", "weight", "credit", "status");
            for (size_t g = 0; g < conf->num_groups; g++) {
                for (size_t i = 0; i < conf->groups[g].num_reps; i++) {
                    const ll_rep_t *r = &conf->groups[g].reps[i];
                    int away = 0;
                    ll_rep_away_get(sc, &t, r->name, &away);
                    printf("%-16s %-32s %-6d %-8lld %s\n", conf->groups[g].name, r->name, r->weight,
                           ll_rep_credit(sc, &t, conf->groups[g].name, r->name),
                           r->away ? "away (config)" : away ? "away" : "available");
                }
            }
            ll_txn_abort(&t);
        }
    }
    ll_scorer_free(sc);
    return rc != 0 ? ll__cli_fail(cmd, "%s", ll_strerror(rc)) : 0;
}

int ll__cli_rep(ll_cli_t *cli, int argc, char **argv)
{
    return cmd_rep(cli, argc, argv);
}

int ll__cli_score(ll_cli_t *cli, int argc, char **argv)
{
    return cmd_score(cli, argc, argv);
}

int ll__cli_rescore(ll_cli_t *cli, int argc, char **argv)
{
    return cmd_rescore(cli, argc, argv);
}

int ll__cli_lead(ll_cli_t *cli, int argc, char **argv)
{
    return cmd_lead(cli, argc, argv);
}

int ll__cli_outbox(ll_cli_t *cli, int argc, char **argv)
{
    return cmd_outbox(cli, argc, argv);
}
