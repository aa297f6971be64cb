/*
 * The mailer's configuration sections (program.h): smtp:, mailer:, programs:, enroll_rules:.
 * Each is one line in config.c's key table; the keys inside a section are tables here too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "config_int.h"
#include "leadloop/program.h"

#define M(x) ((x)->c->mail)

static void set_str(char **slot, const char *v)
{
    free(*slot);
    *slot = v == NULL || *v == '\0' ? NULL : ll_strdup(v);
}

void ll__cfg_mail_init(ll_config_t *c)
{
    ll_mail_conf_t *m = ll_calloc(1, sizeof(*m));
    m->smtp_host = ll_strdup("localhost");
    m->smtp_port = 25;
    m->smtp_starttls = 1;
    m->smtp_timeout_s = 30;
    m->from = ll_strdup("leadloop@localhost");
    m->templates_dir = ll_strdup("templates");
    m->connections = 2;
    m->batch = 500;
    m->retry_s = 300;
    m->max_attempts = 8;
    m->poll_s = 30;
    m->dkim_selector = ll_strdup("default");
    c->mail = m;
}

static void programs_clear(ll_mail_conf_t *m)
{
    for (size_t i = 0; i < m->num_programs; i++) {
        ll_program_t *p = &m->programs[i];
        for (size_t s = 0; s < p->num_steps; s++) {
            free(p->steps[s].template_path);
            free(p->steps[s].cond_field);
            free(p->steps[s].cond_value);
        }
        free(p->window_tz);
    }
    memset(m->programs, 0, sizeof(m->programs));
    m->num_programs = 0;
}

void ll__cfg_mail_free(ll_config_t *c)
{
    ll_mail_conf_t *m = c->mail;
    if (m == NULL)
        return;
    programs_clear(m);
    char **strs[] = {&m->smtp_host, &m->smtp_user, &m->smtp_password, &m->smtp_ca_file, &m->from, &m->from_name,
                     &m->templates_dir, &m->unsubscribe_mailto, &m->dkim_key, &m->dkim_selector, &m->dkim_domain};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        free(*strs[i]);
    free(m);
    c->mail = NULL;
}

const ll_program_t *ll_mail_program(const ll_mail_conf_t *m, const char *id)
{
    for (size_t i = 0; m != NULL && i < m->num_programs; i++)
        if (strcmp(m->programs[i].id, id) == 0)
            return &m->programs[i];
    return NULL;
}

/* ---- scalar sections ---- */

enum vtype { V_STR, V_INT, V_BOOL, V_TLS, V_EMAIL };
struct mkey {
    const char *name;
    enum vtype type;
    size_t off;
    long long min, max;
};

#define MO(f) offsetof(ll_mail_conf_t, f)
static const struct mkey smtp_keys[] = {
    {"host", V_STR, MO(smtp_host), 0, 0},
    {"port", V_INT, MO(smtp_port), 1, 65535},
    {"starttls", V_TLS, MO(smtp_starttls), 0, 0},
    {"user", V_STR, MO(smtp_user), 0, 0},
    {"password", V_STR, MO(smtp_password), 0, 0},
    {"ca_file", V_STR, MO(smtp_ca_file), 0, 0},
    {"timeout", V_INT, MO(smtp_timeout_s), 1, 3600},
};
static const struct mkey mailer_keys[] = {
    {"from", V_EMAIL, MO(from), 0, 0},
    {"from_name", V_STR, MO(from_name), 0, 0},
    {"templates", V_STR, MO(templates_dir), 0, 0},
    {"unsubscribe_mailto", V_EMAIL, MO(unsubscribe_mailto), 0, 0},
    {"connections", V_INT, MO(connections), 1, 64},
    {"batch", V_INT, MO(batch), 1, 100000},
    {"rate_per_hour", V_INT, MO(rate_per_hour), 0, 100000000},
    {"retry", V_INT, MO(retry_s), 1, 86400},
    {"max_attempts", V_INT, MO(max_attempts), 1, 100},
    {"poll", V_INT, MO(poll_s), 1, 3600},
    {"dkim_key", V_STR, MO(dkim_key), 0, 0},
    {"dkim_selector", V_STR, MO(dkim_selector), 0, 0},
    {"dkim_domain", V_STR, MO(dkim_domain), 0, 0},
};
#undef MO

static int parse_table(ll_cfg_t *x, const yaml_node_t *n, const char *section, const struct mkey *keys, size_t nkeys)
{
    int rc = 0;
    if (n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0)
        return 0;
    if (n->type != YAML_MAPPING_NODE)
        return ll__cfg_fail(x, n, section, "expected a mapping");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *kn = yaml_document_get_node(x->doc, p->key), *vn = yaml_document_get_node(x->doc, p->value);
        const char *k = ll__cfg_scalar(x, kn, section, &rc), *v;
        if (k == NULL)
            return rc;
        const struct mkey *mk = NULL;
        for (size_t i = 0; i < nkeys; i++)
            if (strcmp(keys[i].name, k) == 0)
                mk = &keys[i];
        if (mk == NULL)
            return ll__cfg_fail(x, kn, k, "unknown key in %s", section);
        if ((v = ll__cfg_scalar(x, vn, k, &rc)) == NULL)
            return rc;
        void *slot = (char *)M(x) + mk->off;
        long long iv;
        char norm[256];
        switch (mk->type) {
        case V_STR:
            if (strlen(v) > 4096)
                return ll__cfg_fail(x, vn, k, "too long");
            set_str(slot, v);
            break;
        case V_EMAIL:
            if (ll_email_normalize(v, strlen(v), norm) != 0)
                return ll__cfg_fail(x, vn, k, "'%s' is not an email address", v);
            set_str(slot, norm);
            break;
        case V_INT:
            if (ll__cfg_int(v, &iv) != 0)
                return ll__cfg_fail(x, vn, k, "'%s' is not a whole number", v);
            if (iv < mk->min || iv > mk->max)
                return ll__cfg_fail(x, vn, k, "%lld is out of range (%lld to %lld)", iv, mk->min, mk->max);
            *(int *)slot = (int)iv;
            break;
        case V_BOOL:
            if ((iv = ll__cfg_bool(v)) < 0)
                return ll__cfg_fail(x, vn, k, "'%s' is not true or false", v);
            *(int *)slot = (int)iv;
            break;
        case V_TLS:
            if (strcmp(v, "required") == 0)
                iv = 2;
            else if ((iv = ll__cfg_bool(v)) < 0)
                return ll__cfg_fail(x, vn, k, "'%s' is not true, false or required", v);
            *(int *)slot = (int)iv;
            break;
        }
    }
    return 0;
}

int ll__cfg_smtp(ll_cfg_t *x, const yaml_node_t *n)
{
    return parse_table(x, n, "smtp", smtp_keys, sizeof(smtp_keys) / sizeof(smtp_keys[0]));
}

int ll__cfg_mailer(ll_cfg_t *x, const yaml_node_t *n)
{
    return parse_table(x, n, "mailer", mailer_keys, sizeof(mailer_keys) / sizeof(mailer_keys[0]));
}

/* ---- programs ---- */

/* "3 days", "90m", "2h", "1 month", "0": seconds or months. */
static int parse_delay(const char *s, uint64_t *secs, int *months)
{
    char *end;
    if (*s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    while (*end == ' ')
        end++;
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {{"", 1},           {"s", 1},          {"second", 1},      {"seconds", 1},   {"m", 60},
                 {"min", 60},       {"minute", 60},    {"minutes", 60},    {"h", 3600},      {"hour", 3600},
                 {"hours", 3600},   {"d", 86400},      {"day", 86400},     {"days", 86400},  {"w", 604800},
                 {"week", 604800},  {"weeks", 604800}, {"mo", 0},          {"month", 0},     {"months", 0}};
    if (v > 1000000000ULL)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].unit) != 0)
            continue;
        if (units[i].mult == 0) {
            if (v > 1200)
                return -1;
            *months = (int)v, *secs = 0;
        } else {
            *secs = v * units[i].mult, *months = 0;
        }
        return 0;
    }
    return -1;
}

/* "9-17" (hours 9 through 17) or "9-12,14-17" into a bit set; upper bound inclusive. */
static int parse_ranges(const char *s, int lo, int hi, const char *const *names, uint32_t *out)
{
    *out = 0;
    while (*s != '\0') {
        int a = -1, b;
        for (int i = 0; names != NULL && names[i] != NULL; i++)
            if (strncasecmp(s, names[i], 3) == 0)
                a = i, s += 3;
        if (a < 0) {
            char *end;
            long v = strtol(s, &end, 10);
            if (end == s || v < lo || v > hi)
                return -1;
            a = (int)v, s = end;
        }
        b = a;
        if (*s == '-') {
            s++;
            b = -1;
            for (int i = 0; names != NULL && names[i] != NULL; i++)
                if (strncasecmp(s, names[i], 3) == 0)
                    b = i, s += 3;
            if (b < 0) {
                char *end;
                long v = strtol(s, &end, 10);
                if (end == s || v < lo || v > hi)
                    return -1;
                b = (int)v, s = end;
            }
        }
        for (int i = a;; i = i == hi ? lo : i + 1) {
            *out |= 1u << i;
            if (i == b)
                break;
        }
        while (*s == ',' || *s == ' ')
            s++;
    }
    return *out == 0 ? -1 : 0;
}

static int parse_condition(ll_cfg_t *x, const yaml_node_t *n, ll_step_t *st)
{
    int rc = 0;
    if (n->type != YAML_MAPPING_NODE)
        return ll__cfg_fail(x, n, "if", "a condition is a mapping: not_clicked: N, score_below: X, or field: F with "
                                        "equals: V or not_equals: V");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *kn = yaml_document_get_node(x->doc, p->key), *vn = yaml_document_get_node(x->doc, p->value);
        const char *k = ll__cfg_scalar(x, kn, "if", &rc), *v;
        if (k == NULL || (v = ll__cfg_scalar(x, vn, k, &rc)) == NULL)
            return rc;
        long long iv;
        if (strcmp(k, "not_clicked") == 0) {
            if (ll__cfg_int(v, &iv) != 0 || iv < 1 || iv > LL_MAX_STEPS)
                return ll__cfg_fail(x, vn, k, "'%s' is not a step number (1 to %d)", v, LL_MAX_STEPS);
            st->cond = LL_COND_NOT_CLICKED, st->cond_step = (int)iv;
        } else if (strcmp(k, "score_below") == 0) {
            char *end;
            double d = strtod(v, &end);
            if (*v == '\0' || *end != '\0')
                return ll__cfg_fail(x, vn, k, "'%s' is not a number", v);
            st->cond = LL_COND_SCORE_BELOW, st->cond_score = d;
        } else if (strcmp(k, "field") == 0) {
            if (!ll__cfg_name(v, 64))
                return ll__cfg_fail(x, vn, k, "'%s' is not a field name", v);
            set_str(&st->cond_field, v);
        } else if (strcmp(k, "equals") == 0 || strcmp(k, "not_equals") == 0) {
            st->cond = k[0] == 'e' ? LL_COND_FIELD_EQ : LL_COND_FIELD_NE;
            free(st->cond_value);
            st->cond_value = ll_strdup(v);
        } else {
            return ll__cfg_fail(x, kn, k, "unknown condition (not_clicked, score_below, field with equals/not_equals)");
        }
    }
    if ((st->cond == LL_COND_FIELD_EQ || st->cond == LL_COND_FIELD_NE) != (st->cond_field != NULL))
        return ll__cfg_fail(x, n, "if", "field and equals (or not_equals) go together");
    return 0;
}

static int parse_step(ll_cfg_t *x, const yaml_node_t *n, ll_program_t *pr, size_t idx)
{
    int rc = 0;
    ll_step_t *st = &pr->steps[idx];
    if (n->type != YAML_MAPPING_NODE)
        return ll__cfg_fail(x, n, "steps", "a step is a mapping: template, delay, after, if");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *kn = yaml_document_get_node(x->doc, p->key), *vn = yaml_document_get_node(x->doc, p->value);
        const char *k = ll__cfg_scalar(x, kn, "steps", &rc), *v;
        if (k == NULL)
            return rc;
        if (strcmp(k, "if") == 0) {
            if ((rc = parse_condition(x, vn, st)) != 0)
                return rc;
            continue;
        }
        if ((v = ll__cfg_scalar(x, vn, k, &rc)) == NULL)
            return rc;
        if (strcmp(k, "template") == 0) {
            if (*v == '\0' || strlen(v) > 1024)
                return ll__cfg_fail(x, vn, k, "a template file name is required");
            set_str(&st->template_path, v);
        } else if (strcmp(k, "delay") == 0) {
            if (parse_delay(v, &st->delay_s, &st->delay_months) != 0)
                return ll__cfg_fail(x, vn, k, "'%s' is not a delay (N minutes, hours, days, weeks or months)", v);
        } else if (strcmp(k, "after") == 0) {
            if (strcmp(v, "enrolment") == 0 || strcmp(v, "enrollment") == 0)
                st->after_enrolment = 1;
            else if (strcmp(v, "previous") == 0)
                st->after_enrolment = 0;
            else
                return ll__cfg_fail(x, vn, k, "'%s' is not enrolment or previous", v);
        } else {
            return ll__cfg_fail(x, kn, k, "unknown key in a step (template, delay, after, if)");
        }
    }
    if (st->template_path == NULL)
        return ll__cfg_fail(x, n, "steps", "step %zu of program '%s' has no template", idx + 1, pr->id);
    if (st->cond == LL_COND_NOT_CLICKED && (size_t)st->cond_step > idx)
        return ll__cfg_fail(x, n, "if", "not_clicked names step %d, which is not before step %zu", st->cond_step,
                            idx + 1);
    return 0;
}

static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static int parse_window(ll_cfg_t *x, const yaml_node_t *n, ll_program_t *pr)
{
    int rc = 0;
    if (n->type != YAML_MAPPING_NODE)
        return ll__cfg_fail(x, n, "window", "a window is a mapping: hours, days, tz_field, tz");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *kn = yaml_document_get_node(x->doc, p->key), *vn = yaml_document_get_node(x->doc, p->value);
        const char *k = ll__cfg_scalar(x, kn, "window", &rc), *v;
        if (k == NULL || (v = ll__cfg_scalar(x, vn, k, &rc)) == NULL)
            return rc;
        uint32_t bits;
        if (strcmp(k, "hours") == 0) {
            if (parse_ranges(v, 0, 23, NULL, &bits) != 0)
                return ll__cfg_fail(x, vn, k, "'%s' is not hours such as 9-17 or 8-12,14-18", v);
            pr->window_hours = bits;
        } else if (strcmp(k, "days") == 0) {
            if (parse_ranges(v, 0, 6, day_names, &bits) != 0)
                return ll__cfg_fail(x, vn, k, "'%s' is not days such as mon-fri", v);
            pr->window_days = (uint8_t)bits;
        } else if (strcmp(k, "tz_field") == 0) {
            if (!ll__cfg_name(v, sizeof(pr->window_tz_field)))
                return ll__cfg_fail(x, vn, k, "'%s' is not a field name", v);
            snprintf(pr->window_tz_field, sizeof(pr->window_tz_field), "%s", v);
        } else if (strcmp(k, "tz") == 0) {
            if (*v == '\0' || strlen(v) > 64 || strstr(v, "..") != NULL || v[0] == '/')
                return ll__cfg_fail(x, vn, k, "'%s' is not a time zone name such as Europe/Paris", v);
            set_str(&pr->window_tz, v);
        } else {
            return ll__cfg_fail(x, kn, k, "unknown key in window (hours, days, tz_field, tz)");
        }
    }
    return 0;
}

static int add_exit(ll_cfg_t *x, const yaml_node_t *n, const char *key, const char *v, void *arg)
{
    ll_program_t *pr = arg;
    if (strcmp(v, "sales_ready") == 0) {
        pr->exit_sales_ready = 1;
    } else if (strncmp(v, "form:", 5) == 0 && ll__cfg_name(v + 5, sizeof(pr->exit_form))) {
        snprintf(pr->exit_form, sizeof(pr->exit_form), "%s", v + 5);
    } else if (strcmp(v, "unsubscribed") == 0 || strcmp(v, "bounced") == 0) {
        /* always exits; accepted so that the list can say so */
    } else {
        return ll__cfg_fail(x, n, key, "'%s' is not an exit rule (form:ID, sales_ready, unsubscribed, bounced)", v);
    }
    return 0;
}

static int parse_program(ll_cfg_t *x, const yaml_node_t *idn, const yaml_node_t *body, ll_program_t *pr)
{
    int rc = 0;
    const char *id = ll__cfg_scalar(x, idn, "programs", &rc), *v;
    if (id == NULL)
        return rc;
    if (!ll__cfg_name(id, sizeof(pr->id)) || strpbrk(id, ".[]") != NULL)
        return ll__cfg_fail(x, idn, "programs", "'%s' is not a program id (letters, digits, _ and -)", id);
    snprintf(pr->id, sizeof(pr->id), "%s", id);
    if (body->type != YAML_MAPPING_NODE)
        return ll__cfg_fail(x, body, id, "a program is a mapping: steps, window, exit, reentry");
    for (yaml_node_pair_t *p = body->data.mapping.pairs.start; p < body->data.mapping.pairs.top; p++) {
        const yaml_node_t *kn = yaml_document_get_node(x->doc, p->key), *vn = yaml_document_get_node(x->doc, p->value);
        const char *k = ll__cfg_scalar(x, kn, id, &rc);
        if (k == NULL)
            return rc;
        if (strcmp(k, "steps") == 0) {
            if (vn->type != YAML_SEQUENCE_NODE)
                return ll__cfg_fail(x, vn, k, "expected a list of steps");
            for (yaml_node_item_t *it = vn->data.sequence.items.start; it < vn->data.sequence.items.top; it++) {
                if (pr->num_steps == LL_MAX_STEPS)
                    return ll__cfg_fail(x, vn, k, "more than %d steps", LL_MAX_STEPS);
                pr->num_steps++;
                if ((rc = parse_step(x, yaml_document_get_node(x->doc, *it), pr, pr->num_steps - 1)) != 0)
                    return rc;
            }
        } else if (strcmp(k, "window") == 0) {
            if ((rc = parse_window(x, vn, pr)) != 0)
                return rc;
        } else if (strcmp(k, "exit") == 0) {
            if ((rc = ll__cfg_each(x, vn, k, add_exit, pr)) != 0)
                return rc;
        } else if (strcmp(k, "reentry") == 0) {
            if ((v = ll__cfg_scalar(x, vn, k, &rc)) == NULL)
                return rc;
            if ((pr->reentry = ll__cfg_bool(v)) < 0)
                return ll__cfg_fail(x, vn, k, "'%s' is not true or false", v);
        } else {
            return ll__cfg_fail(x, kn, k, "unknown key in program '%s' (steps, window, exit, reentry)", id);
        }
    }
    if (pr->num_steps == 0)
        return ll__cfg_fail(x, body, id, "program '%s' has no steps", id);
    if (pr->window_tz == NULL)
        pr->window_tz = ll_strdup("UTC");
    return 0;
}

int ll__cfg_programs(ll_cfg_t *x, const yaml_node_t *n)
{
    ll_mail_conf_t *m = M(x);
    programs_clear(m);
    if (n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0)
        return 0;
    if (n->type != YAML_MAPPING_NODE)
        return ll__cfg_fail(x, n, "programs", "expected a mapping of program ids");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *kn = yaml_document_get_node(x->doc, p->key), *vn = yaml_document_get_node(x->doc, p->value);
        if (m->num_programs == LL_MAX_PROGRAMS)
            return ll__cfg_fail(x, kn, "programs", "more than %d programs", LL_MAX_PROGRAMS);
        ll_program_t *pr = &m->programs[m->num_programs++];
        int rc = parse_program(x, kn, vn, pr);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i + 1 < m->num_programs; i++)
            if (strcmp(m->programs[i].id, pr->id) == 0)
                return ll__cfg_fail(x, kn, "programs", "program '%s' appears twice", pr->id);
    }
    return 0;
}

int ll__cfg_enroll_rules(ll_cfg_t *x, const yaml_node_t *n)
{
    ll_mail_conf_t *m = M(x);
    int rc = 0;
    m->num_rules = 0;
    if (n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0)
        return 0;
    if (n->type != YAML_SEQUENCE_NODE)
        return ll__cfg_fail(x, n, "enroll_rules", "expected a list of rules");
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        const yaml_node_t *rn = yaml_document_get_node(x->doc, *it);
        if (m->num_rules == LL_MAX_ENROLL_RULES)
            return ll__cfg_fail(x, rn, "enroll_rules", "more than %d rules", LL_MAX_ENROLL_RULES);
        ll_enroll_rule_t *r = &m->rules[m->num_rules++];
        memset(r, 0, sizeof(*r));
        if (rn->type != YAML_MAPPING_NODE)
            return ll__cfg_fail(x, rn, "enroll_rules", "a rule is a mapping: program, and form or field with equals");
        for (yaml_node_pair_t *p = rn->data.mapping.pairs.start; p < rn->data.mapping.pairs.top; p++) {
            const yaml_node_t *kn = yaml_document_get_node(x->doc, p->key), *vn = yaml_document_get_node(x->doc, p->value);
            const char *k = ll__cfg_scalar(x, kn, "enroll_rules", &rc), *v;
            if (k == NULL || (v = ll__cfg_scalar(x, vn, k, &rc)) == NULL)
                return rc;
            if (strcmp(k, "program") == 0 && ll__cfg_name(v, sizeof(r->program)))
                snprintf(r->program, sizeof(r->program), "%s", v);
            else if (strcmp(k, "form") == 0 && ll__cfg_name(v, sizeof(r->form)))
                snprintf(r->form, sizeof(r->form), "%s", v);
            else if (strcmp(k, "field") == 0 && ll__cfg_name(v, sizeof(r->field)))
                snprintf(r->field, sizeof(r->field), "%s", v);
            else if (strcmp(k, "equals") == 0 && strlen(v) < sizeof(r->value))
                snprintf(r->value, sizeof(r->value), "%s", v);
            else
                return ll__cfg_fail(x, kn, k, "'%s': not a valid rule key or value (program, form, field, equals)", v);
        }
        if (r->program[0] == '\0' || (r->form[0] == '\0') == (r->field[0] == '\0'))
            return ll__cfg_fail(x, rn, "enroll_rules", "a rule names a program and either a form or a field");
    }
    return 0;
}
