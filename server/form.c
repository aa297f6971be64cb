/*
 * POST /f/<form-id>: submissions from any HTML form (urlencoded, multipart, JSON). Only the
 * fields the form's config names are kept; an email field creates or updates the contact and
 * binds the visitor. A honeypot and a per-IP rate limit keep spam out.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "server.h"

#define MAX_PAIRS 256
#define VALUE_MAX 2000

typedef struct {
    ll_str_t name, value;
} pair_t;

typedef struct {
    pair_t v[MAX_PAIRS];
    size_t n;
} pairs_t;

static void pair_add(pairs_t *ps, ll_str_t name, ll_str_t value)
{
    if (ps->n < MAX_PAIRS)
        ps->v[ps->n++] = (pair_t){name, value};
}

static ll_str_t pair_get(const pairs_t *ps, const char *name)
{
    for (size_t i = 0; i < ps->n; i++)
        if (ps->v[i].name.len == strlen(name) && memcmp(ps->v[i].name.base, name, ps->v[i].name.len) == 0)
            return ps->v[i].value;
    return ll_str(NULL, 0);
}

/* ---- rate limit: a fixed one-minute window per client address ---- */

static struct {
    pthread_mutex_t mutex;
    struct {
        uint8_t addr[16];
        uint64_t minute;
        int count;
    } slot[4096];
} rl = {.mutex = PTHREAD_MUTEX_INITIALIZER};

static int rate_ok(const ll_ip_t *ip)
{
    if (ll_srv.conf.form_rate_per_min <= 0)
        return 1;
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ ip->addr[i]) * 16777619u;
    uint64_t minute = ll_now_us() / 60000000u;
    pthread_mutex_lock(&rl.mutex);
    __typeof__(rl.slot[0]) *s = &rl.slot[h % 4096];
    /* A colliding address takes the slot over: an attacker can reset someone's window, never
     * lock out another address. */
    if (s->minute != minute || memcmp(s->addr, ip->addr, 16) != 0) {
        memcpy(s->addr, ip->addr, 16);
        s->minute = minute;
        s->count = 0;
    }
    int ok = ++s->count <= ll_srv.conf.form_rate_per_min;
    pthread_mutex_unlock(&rl.mutex);
    return ok;
}

/* ---- body parsers ---- */

static void parse_urlencoded(h2o_mem_pool_t *pool, h2o_iovec_t body, pairs_t *ps)
{
    const char *p = body.base, *end = body.base + body.len;
    while (p < end) {
        const char *amp = memchr(p, '&', end - p), *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', stop - p);
        if (eq != NULL)
            pair_add(ps, ll__url_decode(pool, p, eq - p), ll__url_decode(pool, eq + 1, stop - eq - 1));
        p = stop + 1;
    }
}

/* The value of a parameter (boundary=, name=) in a header value; quotes removed. */
static ll_str_t header_param(const char *s, size_t n, const char *param)
{
    size_t pl = strlen(param);
    int quoted = 0;
    for (size_t i = 0; i + pl < n; i++) {
        /* Inside another parameter's quoted value, "; filename=" is text: browsers escape only
         * '"', CR and LF in a field name, so name="a; filename=b" must not make a file part. */
        if (s[i] == '"')
            quoted = !quoted;
        if (quoted)
            continue;
        if ((i == 0 || s[i - 1] == ';' || s[i - 1] == ' ') && strncasecmp(s + i, param, pl) == 0 && s[i + pl] == '=') {
            const char *v = s + i + pl + 1, *end = s + n;
            if (v < end && *v == '"') {
                const char *q = memchr(v + 1, '"', end - v - 1);
                return q ? ll_str(v + 1, q - v - 1) : ll_str(NULL, 0);
            }
            const char *e = v;
            while (e < end && *e != ';' && *e != ' ')
                e++;
            return ll_str(v, e - v);
        }
    }
    return ll_str(NULL, 0);
}

/* multipart/form-data (RFC 7578): text parts only; file parts are dropped unread. */
static int parse_multipart(h2o_iovec_t body, ll_str_t boundary, pairs_t *ps)
{
    if (boundary.len == 0 || boundary.len > 70)
        return LL_EINVAL;
    char delim[80];
    size_t dl = (size_t)snprintf(delim, sizeof(delim), "--%.*s", (int)boundary.len, boundary.base);
    size_t at = h2o_strstr(body.base, body.len, delim, dl);
    if (at == SIZE_MAX)
        return LL_EINVAL;
    const char *p = body.base + at + dl, *end = body.base + body.len;
    for (;;) {
        if (end - p >= 2 && p[0] == '-' && p[1] == '-')
            return 0; /* closing delimiter */
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return LL_EINVAL;
        p += 2;
        size_t hend = h2o_strstr(p, end - p, H2O_STRLIT("\r\n\r\n"));
        if (hend == SIZE_MAX)
            return LL_EINVAL;
        const char *headers = p, *content = p + hend + 4;
        size_t next = h2o_strstr(content, end - content, delim, dl);
        if (next == SIZE_MAX || next < 2)
            return LL_EINVAL;
        ll_str_t name = {0}, filename = {0};
        for (const char *h = headers; h < headers + hend;) {
            const char *eol = memchr(h, '\n', headers + hend - h);
            size_t hl = eol ? (size_t)(eol - h) : (size_t)(headers + hend - h);
            /* Lines end in CRLF: without the CR, an unquoted last parameter (name=email) of a
             * line that another header follows would read as "email\r". */
            size_t vl = hl > 0 && h[hl - 1] == '\r' ? hl - 1 : hl;
            if (vl > 20 && strncasecmp(h, "content-disposition:", 20) == 0) {
                name = header_param(h, vl, "name");
                filename = header_param(h, vl, "filename");
            }
            h += hl + 1;
        }
        if (name.len != 0 && filename.base == NULL)
            pair_add(ps, name, ll_str(content, next - 2)); /* minus the CRLF before the delimiter */
        p = content + next + dl;
    }
}

static int parse_json(h2o_mem_pool_t *pool, h2o_iovec_t body, pairs_t *ps)
{
    json_error_t jerr;
    json_t *root = json_loadb(body.base, body.len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return LL_EINVAL;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        char num[64];
        const char *s = NULL;
        size_t n = 0;
        if (json_is_string(val)) {
            s = json_string_value(val), n = json_string_length(val);
        } else if (json_is_integer(val)) {
            n = (size_t)snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(val)), s = num;
        } else if (json_is_real(val)) {
            n = (size_t)snprintf(num, sizeof(num), "%g", json_real_value(val)), s = num;
        } else if (json_is_boolean(val)) {
            s = json_is_true(val) ? "true" : "false", n = strlen(s);
        }
        if (s != NULL) {
            h2o_iovec_t k = h2o_strdup(pool, key, strlen(key)), v = h2o_strdup(pool, s, n);
            pair_add(ps, ll_str(k.base, k.len), ll_str(v.base, v.len));
        }
    }
    json_decref(root);
    return 0;
}

/* ---- the handler ---- */

static int field_kept(const ll_form_t *form, ll_str_t name)
{
    if (name.len == strlen(form->email_field) && memcmp(name.base, form->email_field, name.len) == 0)
        return 1;
    for (size_t i = 0; i < form->num_fields; i++)
        if (name.len == strlen(form->fields[i]) && memcmp(name.base, form->fields[i], name.len) == 0)
            return 1;
    return 0;
}

static void form_error(h2o_req_t *req, int status, const char *reason, ll_reject_t why, const char *body)
{
    ll__metrics_reject(why);
    ll__cors(req);
    ll__respond_text(req, EP_FORM, status, reason, body);
}

/* Success: a browser post goes to the thank-you page (or back where it came from); a
 * fetch/XHR post gets JSON. */
static void form_success(h2o_req_t *req, const char *location, int contact)
{
    ll__cors(req);
    if (ll__is_navigation(req)) {
        if (location != NULL) {
            ll__respond_redirect(req, EP_FORM, 303, "See Other", location);
            return;
        }
        ll__metrics_request(EP_FORM, 200);
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/html; charset=utf-8"));
        static const char page[] = "<!doctype html><meta charset=utf-8><title>Thank you</title><p>Thank you.</p>\n";
        ll__send(req, page, sizeof(page) - 1);
        return;
    }
    ll__metrics_request(EP_FORM, 200);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    const char *body = contact ? "{\"ok\":true,\"contact\":true}\n" : "{\"ok\":true,\"contact\":false}\n";
    ll__send(req, body, strlen(body));
}

static void on_form_done(ll_pending_t *p, h2o_req_t *req)
{
    if (req == NULL)
        return;
    if (p->result != 0) {
        form_error(req, 503, "Service Unavailable", REJ_STORE_FAILED, "store unavailable, please try again\n");
        return;
    }
    ll__set_visitor_cookie(req, &p->visitor);
    form_success(req, p->location, p->email != NULL);
}

/* Where a browser goes after posting: the configured thank-you page, else a Referer that
 * would be a safe redirect, else nowhere (an inline thank-you page). */
static char *thank_you_url(h2o_req_t *req, const ll_form_t *form)
{
    if (form->thank_you != NULL)
        return ll_strdup(form->thank_you);
    h2o_iovec_t ref = ll__header(req, H2O_TOKEN_REFERER);
    if (ref.len != 0 && ll_url_check_destination(ref.base, ref.len) == 0)
        return ll_strndup(ref.base, ref.len);
    return NULL;
}

int ll__on_form(h2o_req_t *req, h2o_iovec_t id)
{
    const ll_form_t *form = ll_config_form(&ll_srv.conf, id.base, id.len);
    if (form == NULL) {
        form_error(req, 404, "Not Found", REJ_UNKNOWN_FORM, "unknown form\n");
        return 0;
    }
    ll_reqinfo_t ri;
    ll__reqinfo(req, 0, &ri);
    if (!rate_ok(&ri.ip)) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("60"));
        form_error(req, 429, "Too Many Requests", REJ_RATE_LIMIT, "too many submissions, try again in a minute\n");
        return 0;
    }
    pairs_t *ps = h2o_mem_alloc_pool(&req->pool, sizeof(*ps));
    ps->n = 0;
    h2o_iovec_t body = req->entity, ct = ll__header(req, H2O_TOKEN_CONTENT_TYPE);
    if (body.base == NULL)
        body = h2o_iovec_init("", 0);
    int rc = 0;
    if (ct.len >= 33 && strncasecmp(ct.base, "application/x-www-form-urlencoded", 33) == 0) {
        parse_urlencoded(&req->pool, body, ps);
    } else if (ct.len >= 19 && strncasecmp(ct.base, "multipart/form-data", 19) == 0) {
        rc = parse_multipart(body, header_param(ct.base, ct.len, "boundary"), ps);
    } else if ((ct.len >= 16 && strncasecmp(ct.base, "application/json", 16) == 0) ||
               (ct.len >= 10 && strncasecmp(ct.base, "text/plain", 10) == 0)) {
        rc = parse_json(&req->pool, body, ps);
    } else {
        form_error(req, 415, "Unsupported Media Type", REJ_BAD_REQUEST,
                   "send the form as urlencoded, multipart/form-data or JSON\n");
        return 0;
    }
    if (rc != 0) {
        form_error(req, 400, "Bad Request", REJ_BAD_REQUEST, "malformed form body\n");
        return 0;
    }
    for (size_t i = 0; i < ps->n; i++) {
        if (!ll_utf8_valid(ps->v[i].name.base, ps->v[i].name.len) || !ll_utf8_valid(ps->v[i].value.base, ps->v[i].value.len)) {
            form_error(req, 400, "Bad Request", REJ_BAD_UTF8, "form fields must be valid UTF-8\n");
            return 0;
        }
    }
    /* A filled honeypot looks like success to the bot; nothing is stored. */
    if (form->honeypot[0] != '\0' && pair_get(ps, form->honeypot).len != 0) {
        ll__metrics_reject(REJ_HONEYPOT);
        form_success(req, NULL, 0);
        return 0;
    }
    char email[256];
    ll_str_t email_in = pair_get(ps, form->email_field);
    int have_email = email_in.len != 0;
    if (have_email && ll_email_normalize(email_in.base, email_in.len, email) != 0) {
        form_error(req, 400, "Bad Request", REJ_BAD_EMAIL, "the email field is not an email address\n");
        return 0;
    }
    ll_str_t v = pair_get(ps, "_llv");
    if (v.len != 0 && ll_visitor_from_hex(&ri.visitor, v.base, v.len) == 0)
        ri.visitor_new = 0;

    json_t *kept = json_object(), *profile = json_object();
    for (size_t i = 0; i < ps->n; i++) {
        if (!field_kept(form, ps->v[i].name))
            continue;
        size_t n = ps->v[i].value.len > VALUE_MAX ? VALUE_MAX : ps->v[i].value.len;
        while (n > 0 && n < ps->v[i].value.len && ((unsigned char)ps->v[i].value.base[n] & 0xc0) == 0x80)
            n--;
        char *name = ll_strndup(ps->v[i].name.base, ps->v[i].name.len);
        json_t *val = json_stringn(ps->v[i].value.base, n);
        json_object_set(kept, name, val);
        if (strcmp(name, form->email_field) != 0)
            json_object_set(profile, name, val);
        json_decref(val);
        free(name);
    }
    char *kept_json = json_dumps(kept, JSON_COMPACT | JSON_PRESERVE_ORDER);
    char *profile_json = json_dumps(profile, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(kept);
    json_decref(profile);

    ll_event_t ev = {0};
    uint8_t ip[16];
    char asn[16];
    ll__event_from_req(req, &ri, &ev, ip, asn);
    ev.type = LL_EV_FORM;
    ev.reasons |= LL_REASON_FORM;
    ev.f[LL_F_FORM] = ll_str(form->id, strlen(form->id));
    ev.f[LL_F_FIELDS] = ll_str(kept_json, strlen(kept_json));
    if (have_email)
        ev.f[LL_F_EMAIL] = ll_str(email, strlen(email));
    ll_str_t page = pair_get(ps, "_llu");
    if (page.len == 0) {
        h2o_iovec_t ref = ll__header(req, H2O_TOKEN_REFERER);
        page = ll_str(ref.base, ref.len);
    }
    ev.f[LL_F_URL] = page;
    ll__event_utm(&req->pool, &ev, page);

    ll_pending_t *p = ll__pending_new(req, EP_FORM, on_form_done);
    p->visitor = ri.visitor;
    p->location = thank_you_url(req, form);
    if (have_email) {
        p->email = ll_strdup(email);
        p->fields_json = profile_json;
        profile_json = NULL;
    }
    rc = ll__pending_add(p, &ev);
    free(kept_json);
    free(profile_json);
    if (rc != 0 || ll__pending_submit(p, LL_ACK_COMMIT) != 0) {
        ll__pending_free(p);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
        form_error(req, 503, "Service Unavailable", REJ_OVERLOAD, "overloaded, please try again\n");
    }
    return 0;
}
