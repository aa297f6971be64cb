/*
 * Owner alert emails (issue #4): the scorer queues one row per alert in `outbox_mail` (score.h)
 * with the alert's JSON; the mailer turns it into a plain-text message for the owner. The text
 * carries what the webhook carries: why, score and grade, the routing rule, the deadline, the
 * profile and the last events, and the command that accepts the lead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "mailer.h"

static const char *str(json_t *o, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL && *s != '\0' ? s : dflt;
}

static const char *headline(const char *kind)
{
    if (strcmp(kind, "sales_ready") == 0)
        return "is sales-ready";
    if (strcmp(kind, "owner_click") == 0)
        return "clicked just now";
    if (strcmp(kind, "sla_breach") == 0)
        return "was not accepted in time (SLA breach)";
    return "needs attention";
}

int ll__alert_render(const char *json, size_t len, char **subject, char **text, uint64_t *contact)
{
    json_error_t jerr;
    json_t *a = json_loadb(json, len, 0, &jerr);
    if (!json_is_object(a)) {
        json_decref(a);
        return LL_EINVAL;
    }
    json_t *c = json_object_get(a, "contact");
    const char *email = str(c, "email", "(unknown)"), *kind = str(a, "alert", "alert");
    json_t *fields = json_object_get(c, "fields");
    *contact = json_is_integer(json_object_get(c, "id")) ? (uint64_t)json_integer_value(json_object_get(c, "id")) : 0;

    ll_buf_t b;
    ll_buf_init(&b, LL_TPL_MAX);
    const char *name = str(fields, "name", NULL), *company = str(fields, "company", NULL);
    ll_buf_printf(&b, "[leadloop] %s %s", email, headline(kind));
    if (company != NULL)
        ll_buf_printf(&b, " (%s)", company);
    *subject = ll_strdup(b.data);
    b.len = 0;

    ll_buf_printf(&b, "%s%s%s%s %s.\n\nWhy: %s\n", name ? name : "", name ? " <" : "", email, name ? ">" : "",
                  headline(kind), str(a, "why", "-"));
    ll_buf_printf(&b, "Score: %lld (threshold %lld)   Fit: %lld, grade %s\n",
                  (long long)json_number_value(json_object_get(a, "score")),
                  (long long)json_integer_value(json_object_get(a, "threshold")),
                  (long long)json_integer_value(json_object_get(a, "fit")), str(a, "grade", "-"));
    if (json_object_get(a, "stage") != NULL)
        ll_buf_printf(&b, "Stage: %s   Owner: %s   Routing rule: %s\n", str(a, "stage", "-"), str(a, "owner", "-"),
                      str(a, "routing_rule", "-"));
    if (json_object_get(a, "accept_by") != NULL)
        ll_buf_printf(&b, "Accept by: %s\n", str(a, "accept_by", "-"));
    const char *key;
    json_t *v;
    if (json_object_size(fields) > 0) {
        ll_buf_appends(&b, "\nProfile:\n");
        json_object_foreach(fields, key, v) {
            if (json_is_string(v))
                ll_buf_printf(&b, "  %s: %s\n", key, json_string_value(v));
            else if (json_is_number(v))
                ll_buf_printf(&b, "  %s: %g\n", key, json_number_value(v));
        }
    }
    size_t i;
    json_t *events = json_object_get(a, "last_events");
    if (json_array_size(events) > 0)
        ll_buf_appends(&b, "\nLast events (newest first):\n");
    json_array_foreach(events, i, v) {
        ll_buf_printf(&b, "  %s  %-8s", str(v, "time", "-"), str(v, "type", "-"));
        static const char *const show[] = {"url", "form", "program", "step"};
        for (size_t k = 0; k < sizeof(show) / sizeof(show[0]); k++)
            if (str(v, show[k], NULL) != NULL)
                ll_buf_printf(&b, " %s=%s", show[k], str(v, show[k], ""));
        ll_buf_appends(&b, "\n");
    }
    ll_buf_printf(&b, "\nAccept it:  leadloop lead accept %s\nThe score, line by line:  leadloop score %s\n", email,
                  email);
    json_decref(a);
    int rc = b.len < b.limit ? 0 : LL_ETOOBIG;
    *text = rc == 0 ? ll_strdup(b.data) : NULL;
    ll_buf_free(&b);
    if (rc != 0) {
        free(*subject);
        *subject = NULL;
    }
    return rc;
}
