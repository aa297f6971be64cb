/*
 * The YAML configuration (config.h). One table names every top-level key with its type and
 * bounds; `forms:` is the only nested key. Parsed with libyaml's document API, so every node
 * carries the line it came from for the error message.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include "config_int.h"

enum key_type {
    K_STR,      /* any printable string; "" means unset (NULL) */
    K_COOKIE,   /* a cookie name: [A-Za-z0-9_.-]+ */
    K_DOMAIN,   /* a host name: [A-Za-z0-9.-]+; "" means unset */
    K_PATH,     /* a file name; "" means unset */
    K_URL,      /* http:// or https:// base, trailing '/' removed */
    K_LISTEN,   /* ADDR:PORT */
    K_INT,
    K_BOOL,
    K_SIZE,     /* bytes, with an optional K, M or G suffix */
    K_LOGLEVEL, /* warn, info, debug or 0..2 */
    K_ACK,      /* commit, queued or journal (config.h LL_ACK_AFTER_*) */
    K_EXTS,     /* a list (or comma-separated string) of file extensions */
    K_PROXIES,  /* a list of CIDRs */
    K_FORMS,
    K_SECTION   /* a nested section parsed by its own file (config_int.h) */
};

struct key {
    const char *name;
    enum key_type type;
    size_t off;
    long long min, max;
    ll_cfg_section_fn section; /* K_SECTION only */
};

#define F(field) offsetof(ll_config_t, field)
static const struct key keys[] = {
    {"listen", K_LISTEN, F(listen), 0, 0, NULL},
    {"data_dir", K_PATH, F(data_dir), 0, 0, NULL},
    {"public_url", K_URL, F(public_url), 0, 0, NULL},
    {"threads", K_INT, F(threads), 1, 64, NULL},
    {"tls_cert", K_PATH, F(tls_cert), 0, 0, NULL},
    {"tls_key", K_PATH, F(tls_key), 0, 0, NULL},
    {"http2", K_BOOL, F(http2), 0, 0, NULL},
    {"max_body", K_SIZE, F(max_body), 1024, 64LL << 20, NULL},
    {"map_size", K_SIZE, F(map_size), 1LL << 20, 1LL << 40, NULL},
    {"batch_max", K_INT, F(batch_max), 1, 65536, NULL},
    {"click_deadline_ms", K_INT, F(click_deadline_ms), 10, 60000, NULL},
    {"ack", K_ACK, F(ack), 0, 0, NULL},
    {"queued_commit_ms", K_INT, F(queued_commit_ms), 0, 1000, NULL},
    {"journal_kb", K_INT, F(journal_kb), 64, 4194304, NULL},
    {"log_level", K_LOGLEVEL, F(log_level), 0, 2, NULL},
    {"cookie_name", K_COOKIE, F(cookie_name), 0, 0, NULL},
    {"cookie_domain", K_DOMAIN, F(cookie_domain), 0, 0, NULL},
    {"cookie_days", K_INT, F(cookie_days), 0, 3650, NULL},
    {"ipv4_prefix", K_INT, F(ipv4_prefix), 0, 32, NULL},
    {"ipv6_prefix", K_INT, F(ipv6_prefix), 0, 128, NULL},
    {"trusted_proxies", K_PROXIES, F(trusted_proxies), 0, 0, NULL},
    {"geo_country_db", K_PATH, F(geo_country_db), 0, 0, NULL},
    {"geo_city_db", K_PATH, F(geo_city_db), 0, 0, NULL},
    {"geo_asn_db", K_PATH, F(geo_asn_db), 0, 0, NULL},
    {"honor_dnt", K_BOOL, F(honor_dnt), 0, 0, NULL},
    {"honor_gpc", K_BOOL, F(honor_gpc), 0, 0, NULL},
    {"download_exts", K_EXTS, F(download_exts), 0, 0, NULL},
    {"forms", K_FORMS, F(forms), 0, 0, NULL},
    {"form_rate_per_min", K_INT, F(form_rate_per_min), 1, 1000000, NULL},
    {"scanner_lists", K_PATH, F(scanner_lists), 0, 0, NULL},
    {"provisional_s", K_INT, F(provisional_s), 0, 600, NULL},
    {"sweep_window_s", K_INT, F(sweep_window_s), 1, 600, NULL},
    {"fast_after_send_s", K_INT, F(fast_after_send_s), 0, 86400, NULL},
    /* Sections parsed in their own files: {"name", K_SECTION, 0, 0, 0, ll__cfg_name}. */
    {"smtp", K_SECTION, 0, 0, 0, ll__cfg_smtp},
    {"mailer", K_SECTION, 0, 0, 0, ll__cfg_mailer},
    {"programs", K_SECTION, 0, 0, 0, ll__cfg_programs},
    {"enroll_rules", K_SECTION, 0, 0, 0, ll__cfg_enroll_rules},
    {"scoring", K_SECTION, 0, 0, 0, ll__cfg_scoring},
    {"routing", K_SECTION, 0, 0, 0, ll__cfg_routing},
    {"sla", K_SECTION, 0, 0, 0, ll__cfg_sla},
    {"alerts", K_SECTION, 0, 0, 0, ll__cfg_alerts},
};
#undef F

/* The fields the embedded default form `contact` keeps. */
static const char *const default_contact_fields[] = {"email", "first_name", "last_name", "name", "company",
                                                     "title", "phone", "country", "message"};

static void set_str(char **slot, const char *v)
{
    free(*slot);
    *slot = v == NULL ? NULL : ll_strdup(v);
}

static void form_clear(ll_form_t *f)
{
    for (size_t i = 0; i < f->num_fields; i++)
        free(f->fields[i]);
    free(f->thank_you);
    memset(f, 0, sizeof(*f));
}

static void form_init(ll_form_t *f, const char *id)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->id, sizeof(f->id), "%s", id);
    strcpy(f->email_field, "email");
    strcpy(f->honeypot, "_hp");
}

void ll_config_defaults(ll_config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->listen = ll_strdup("127.0.0.1:8080");
    c->data_dir = ll_strdup("var");
    c->public_url = ll_strdup("http://127.0.0.1:8080");
    c->threads = 1;
    c->max_body = 65536;
    c->map_size = (size_t)1 << 30;
    c->batch_max = 1024;
    c->click_deadline_ms = 1000;
    c->queued_commit_ms = 10;
    c->journal_kb = 32768;
    c->log_level = 1; /* info: the start and stop lines */
    c->cookie_name = ll_strdup("_ll");
    c->cookie_days = 395;
    c->ipv4_prefix = 24;
    c->ipv6_prefix = 48;
    c->honor_dnt = 1;
    c->honor_gpc = 1;
    c->download_exts = ll_strdup("pdf,zip,docx,xlsx,pptx,csv,dmg,exe,msi");
    c->form_rate_per_min = 10;
    c->scanner_lists = ll_strdup("deploy/lists");
    c->provisional_s = 30;
    c->sweep_window_s = 10;
    c->fast_after_send_s = 120;
    ll_form_t *f = &c->forms[c->num_forms++];
    form_init(f, "contact");
    for (size_t i = 0; i < sizeof(default_contact_fields) / sizeof(default_contact_fields[0]); i++)
        f->fields[f->num_fields++] = ll_strdup(default_contact_fields[i]);
    ll__cfg_mail_init(c);
    ll__cfg_score_init(c);
}

void ll_config_free(ll_config_t *c)
{
    char **strs[] = {&c->path, &c->listen, &c->data_dir, &c->public_url, &c->tls_cert, &c->tls_key,
                     &c->cookie_name, &c->cookie_domain, &c->geo_country_db, &c->geo_city_db, &c->geo_asn_db,
                     &c->download_exts, &c->scanner_lists};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
    for (size_t i = 0; i < c->num_forms; i++)
        form_clear(&c->forms[i]);
    c->num_forms = 0;
    ll__cfg_mail_free(c);
    ll__cfg_score_free(c);
}

const ll_form_t *ll_config_form(const ll_config_t *c, const char *id, size_t len)
{
    for (size_t i = 0; i < c->num_forms; i++)
        if (strlen(c->forms[i].id) == len && memcmp(c->forms[i].id, id, len) == 0)
            return &c->forms[i];
    return NULL;
}

/* ---- addresses ---- */

int ll_cidr_parse(const char *s, ll_cidr_t *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t hl = slash != NULL ? (size_t)(slash - s) : strlen(s);
    if (hl == 0 || hl >= sizeof(host))
        return LL_EINVAL;
    memcpy(host, s, hl);
    host[hl] = '\0';
    memset(out, 0, sizeof(*out));
    int maxbits;
    if (inet_pton(AF_INET, host, out->addr) == 1) {
        out->family = AF_INET;
        maxbits = 32;
    } else if (inet_pton(AF_INET6, host, out->addr) == 1) {
        out->family = AF_INET6;
        maxbits = 128;
    } else {
        return LL_EINVAL;
    }
    out->bits = maxbits;
    if (slash != NULL) {
        char *end;
        errno = 0;
        long b = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || errno != 0 || b < 0 || b > maxbits)
            return LL_EINVAL;
        out->bits = (int)b;
    }
    return 0;
}

int ll_cidr_match(const ll_cidr_t *c, int family, const uint8_t *addr)
{
    if (c->family != family)
        return 0;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, addr, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (addr[full] & mask);
}

/* ---- the parser ---- */

int ll__cfg_fail(ll_cfg_t *x, const yaml_node_t *n, const char *key, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return ll_err(x->err, x->errlen, LL_EINVAL, "%s:%zu: key '%s': %s", x->path, n->start_mark.line + 1, key, why);
}

/* A scalar's text, or NULL (and an error) when n is not a scalar or holds control characters. */
const char *ll__cfg_scalar(ll_cfg_t *x, const yaml_node_t *n, const char *key, int *rc)
{
    if (n->type != YAML_SCALAR_NODE) {
        *rc = ll__cfg_fail(x, n, key, "expected a single value, not a %s", n->type == YAML_SEQUENCE_NODE ? "list" : "mapping");
        return NULL;
    }
    const char *s = (const char *)n->data.scalar.value;
    for (size_t i = 0; i < n->data.scalar.length; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f) {
            *rc = ll__cfg_fail(x, n, key, "control characters are not allowed");
            return NULL;
        }
    }
    return s;
}

int ll__cfg_int(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0)
        return -1;
    *out = v;
    return 0;
}

int ll__cfg_size(const char *s, long long *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    unsigned long long mult = 1;
    if (*end != '\0') {
        switch (*end == ' ' ? end[1] : *end) {
        case 'k': case 'K': mult = 1ULL << 10; break;
        case 'm': case 'M': mult = 1ULL << 20; break;
        case 'g': case 'G': mult = 1ULL << 30; break;
        case 't': case 'T': mult = 1ULL << 40; break;
        default: return -1;
        }
        const char *suffix = end + (*end == ' ') + 1;
        if (*suffix != '\0' && strcmp(suffix, "B") != 0 && strcmp(suffix, "iB") != 0 && strcmp(suffix, "b") != 0)
            return -1;
    }
    if (v > (unsigned long long)LLONG_MAX / mult)
        return -1;
    *out = (long long)(v * mult);
    return 0;
}

int ll__cfg_bool(const char *s)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return 1;
        if (strcasecmp(s, no[i]) == 0)
            return 0;
    }
    return -1;
}

static int valid_listen(const char *s)
{
    const char *colon = strrchr(s, ':');
    long long port;
    if (colon == NULL || colon == s || ll__cfg_int(colon + 1, &port) != 0 || port < 1 || port > 65535)
        return 0;
    char host[INET6_ADDRSTRLEN + 3];
    size_t hl = colon - s;
    if (hl >= sizeof(host))
        return 0;
    memcpy(host, s, hl);
    host[hl] = '\0';
    uint8_t buf[16];
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        return inet_pton(AF_INET6, host + 1, buf) == 1;
    }
    return inet_pton(AF_INET, host, buf) == 1;
}

int ll__cfg_http_url(const char *s)
{
    size_t n = strlen(s);
    const char *rest = strncasecmp(s, "https://", 8) == 0 ? s + 8 : strncasecmp(s, "http://", 7) == 0 ? s + 7 : NULL;
    if (rest == NULL || *rest == '\0' || *rest == '/' || n > 1024)
        return 0;
    return strpbrk(s, " \"<>\\") == NULL;
}

int ll__cfg_each(ll_cfg_t *x, const yaml_node_t *n, const char *key, ll_cfg_item_fn fn, void *arg)
{
    int rc = 0;
    if (n->type == YAML_MAPPING_NODE)
        return ll__cfg_fail(x, n, key, "expected a list");
    if (n->type == YAML_SCALAR_NODE) {
        const char *v = ll__cfg_scalar(x, n, key, &rc);
        return v == NULL ? rc : fn(x, n, key, v, arg);
    }
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        const yaml_node_t *in = yaml_document_get_node(x->doc, *it);
        const char *v = ll__cfg_scalar(x, in, key, &rc);
        if (v == NULL || (rc = fn(x, in, key, v, arg)) != 0)
            return rc;
    }
    return 0;
}

static int add_proxy(ll_cfg_t *x, const yaml_node_t *n, const char *key, const char *v, void *arg)
{
    ll_config_t *c = x->c;
    if (c->num_trusted_proxies == LL_MAX_PROXIES)
        return ll__cfg_fail(x, n, key, "more than %d entries", LL_MAX_PROXIES);
    if (ll_cidr_parse(v, &c->trusted_proxies[c->num_trusted_proxies]) != 0)
        return ll__cfg_fail(x, n, key, "'%s' is not an address or ADDR/BITS", v);
    c->num_trusted_proxies++;
    return 0;
}

static int add_ext(ll_cfg_t *x, const yaml_node_t *n, const char *key, const char *v, void *arg)
{
    ll_buf_t *b = arg;
    char one[32];
    for (const char *p = v; *p != '\0';) {
        size_t len = strcspn(p, ", ");
        if (len >= sizeof(one))
            return ll__cfg_fail(x, n, key, "extension too long");
        memcpy(one, p, len);
        one[len] = '\0';
        const char *e = one[0] == '.' ? one + 1 : one;
        for (const char *q = e; *q != '\0'; q++)
            if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9')))
                return ll__cfg_fail(x, n, key, "'%s' is not a file extension (letters and digits)", one);
        if (*e != '\0' && ll_buf_printf(b, "%s%s", b->len ? "," : "", e) != 0)
            return ll__cfg_fail(x, n, key, "list too long");
        p += len;
        p += strspn(p, ", ");
    }
    return 0;
}

int ll__cfg_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n >= max)
        return 0;
    for (const char *p = s; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '-' || *p == '.' || *p == '[' || *p == ']'))
            return 0;
    return 1;
}

static int add_field(ll_cfg_t *x, const yaml_node_t *n, const char *key, const char *v, void *arg)
{
    ll_form_t *f = arg;
    if (!ll__cfg_name(v, 64))
        return ll__cfg_fail(x, n, key, "'%s' is not a field name (letters, digits, _ - . [ ], at most 63)", v);
    for (size_t i = 0; i < f->num_fields; i++)
        if (strcmp(f->fields[i], v) == 0)
            return 0;
    if (f->num_fields == LL_MAX_FORM_FIELDS)
        return ll__cfg_fail(x, n, key, "more than %d fields", LL_MAX_FORM_FIELDS);
    f->fields[f->num_fields++] = ll_strdup(v);
    return 0;
}

static int parse_form(ll_cfg_t *x, const yaml_node_t *idn, const yaml_node_t *body, ll_form_t *f)
{
    int rc = 0;
    const char *id = ll__cfg_scalar(x, idn, "forms", &rc);
    if (id == NULL)
        return rc;
    if (!ll__cfg_name(id, sizeof(f->id)) || strpbrk(id, ".[]") != NULL)
        return ll__cfg_fail(x, idn, "forms", "'%s' is not a form id (letters, digits, _ and -, at most 63)", id);
    form_init(f, id);
    if (body->type == YAML_SCALAR_NODE && body->data.scalar.length == 0)
        goto done; /* `id:` alone: keep only the email field */
    if (body->type != YAML_MAPPING_NODE)
        return ll__cfg_fail(x, body, id, "a form is a mapping of fields, email_field, honeypot, thank_you");
    for (yaml_node_pair_t *p = body->data.mapping.pairs.start; p < body->data.mapping.pairs.top; p++) {
        const yaml_node_t *kn = yaml_document_get_node(x->doc, p->key), *vn = yaml_document_get_node(x->doc, p->value);
        const char *k = ll__cfg_scalar(x, kn, id, &rc), *v;
        if (k == NULL)
            return rc;
        if (strcmp(k, "fields") == 0) {
            if ((rc = ll__cfg_each(x, vn, k, add_field, f)) != 0)
                return rc;
        } else if (strcmp(k, "email_field") == 0 || strcmp(k, "honeypot") == 0) {
            if ((v = ll__cfg_scalar(x, vn, k, &rc)) == NULL)
                return rc;
            if (*v != '\0' && !ll__cfg_name(v, 64))
                return ll__cfg_fail(x, vn, k, "'%s' is not a field name", v);
            if (*k == 'e' && *v == '\0')
                return ll__cfg_fail(x, vn, k, "must name a field");
            snprintf(*k == 'e' ? f->email_field : f->honeypot, 64, "%s", v);
        } else if (strcmp(k, "thank_you") == 0) {
            if ((v = ll__cfg_scalar(x, vn, k, &rc)) == NULL)
                return rc;
            if (!(ll__cfg_http_url(v) || (v[0] == '/' && v[1] != '/' && strpbrk(v, " \"<>\\") == NULL)))
                return ll__cfg_fail(x, vn, k, "'%s' is not an http(s) URL or a /path", v);
            set_str(&f->thank_you, v);
        } else {
            return ll__cfg_fail(x, kn, k, "unknown key in form '%s' (fields, email_field, honeypot, thank_you)", id);
        }
    }
done:
    /* The email field is always kept: it is what binds a visitor to a contact. */
    for (size_t i = 0; i < f->num_fields; i++)
        if (strcmp(f->fields[i], f->email_field) == 0)
            return 0;
    if (f->num_fields == LL_MAX_FORM_FIELDS)
        return ll__cfg_fail(x, body, id, "more than %d fields", LL_MAX_FORM_FIELDS);
    f->fields[f->num_fields++] = ll_strdup(f->email_field);
    return 0;
}

static int parse_forms(ll_cfg_t *x, const yaml_node_t *n)
{
    ll_config_t *c = x->c;
    for (size_t i = 0; i < c->num_forms; i++)
        form_clear(&c->forms[i]);
    c->num_forms = 0;
    if (n->type == YAML_SCALAR_NODE && n->data.scalar.length == 0)
        return 0;
    if (n->type != YAML_MAPPING_NODE)
        return ll__cfg_fail(x, n, "forms", "expected a mapping of form ids");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *kn = yaml_document_get_node(x->doc, p->key), *vn = yaml_document_get_node(x->doc, p->value);
        if (c->num_forms == LL_MAX_FORMS)
            return ll__cfg_fail(x, kn, "forms", "more than %d forms", LL_MAX_FORMS);
        ll_form_t *f = &c->forms[c->num_forms++];
        int rc = parse_form(x, kn, vn, f);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i + 1 < c->num_forms; i++)
            if (strcmp(c->forms[i].id, f->id) == 0)
                return ll__cfg_fail(x, kn, "forms", "form '%s' appears twice", f->id);
    }
    return 0;
}

static int apply(ll_cfg_t *x, const struct key *k, const yaml_node_t *n)
{
    void *slot = (char *)x->c + k->off;
    int rc = 0;
    long long v;
    const char *s;
    switch (k->type) {
    case K_PROXIES:
        x->c->num_trusted_proxies = 0;
        return ll__cfg_each(x, n, k->name, add_proxy, NULL);
    case K_FORMS:
        return parse_forms(x, n);
    case K_SECTION:
        return k->section(x, n);
    case K_EXTS: {
        ll_buf_t b;
        ll_buf_init(&b, 1024);
        if ((rc = ll__cfg_each(x, n, k->name, add_ext, &b)) == 0)
            set_str(slot, b.len ? b.data : "");
        ll_buf_free(&b);
        return rc;
    }
    default:
        break;
    }
    if ((s = ll__cfg_scalar(x, n, k->name, &rc)) == NULL)
        return rc;
    switch (k->type) {
    case K_STR:
    case K_PATH:
        if (strlen(s) > 4096)
            return ll__cfg_fail(x, n, k->name, "too long");
        set_str(slot, *s == '\0' ? NULL : s);
        return 0;
    case K_COOKIE:
    case K_DOMAIN: {
        /* Both go into Set-Cookie: nothing that could end it or add an attribute. */
        static const char chars[] = "_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-";
        size_t len = strlen(s), ok = strspn(s, k->type == K_COOKIE ? chars : chars + 1);
        if (len > 253 || ok != len || (len == 0 && k->type == K_COOKIE))
            return ll__cfg_fail(x, n, k->name, "'%s' is not a %s", s, k->type == K_COOKIE ? "cookie name" : "host name");
        set_str(slot, len == 0 ? NULL : s);
        return 0;
    }
    case K_URL: {
        if (!ll__cfg_http_url(s))
            return ll__cfg_fail(x, n, k->name, "'%s' is not an http:// or https:// URL", s);
        char *u = ll_strdup(s);
        for (size_t len = strlen(u); len > 0 && u[len - 1] == '/'; len--)
            u[len - 1] = '\0';
        free(*(char **)slot);
        *(char **)slot = u;
        return 0;
    }
    case K_LISTEN:
        if (!valid_listen(s))
            return ll__cfg_fail(x, n, k->name, "'%s' is not ADDR:PORT (an IPv4 address or [IPv6], port 1-65535)", s);
        set_str(slot, s);
        return 0;
    case K_BOOL:
        if ((v = ll__cfg_bool(s)) < 0)
            return ll__cfg_fail(x, n, k->name, "'%s' is not true or false", s);
        *(int *)slot = (int)v;
        return 0;
    case K_ACK:
        if (strcmp(s, "commit") == 0)
            *(int *)slot = LL_ACK_AFTER_COMMIT;
        else if (strcmp(s, "queued") == 0)
            *(int *)slot = LL_ACK_AFTER_QUEUE;
        else if (strcmp(s, "journal") == 0)
            *(int *)slot = LL_ACK_AFTER_JOURNAL;
        else
            return ll__cfg_fail(x, n, k->name, "'%s' is not commit, queued or journal", s);
        return 0;
    case K_LOGLEVEL:
        if (strcmp(s, "warn") == 0 || strcmp(s, "info") == 0 || strcmp(s, "debug") == 0) {
            *(int *)slot = s[0] == 'w' ? 0 : s[0] == 'i' ? 1 : 2;
            return 0;
        }
        __attribute__((fallthrough)); /* a number */
    case K_INT:
        if (ll__cfg_int(s, &v) != 0)
            return ll__cfg_fail(x, n, k->name, "'%s' is not a whole number", s);
        if (v < k->min || v > k->max)
            return ll__cfg_fail(x, n, k->name, "%lld is out of range (%lld to %lld)", v, k->min, k->max);
        *(int *)slot = (int)v;
        return 0;
    case K_SIZE:
        if (ll__cfg_size(s, &v) != 0)
            return ll__cfg_fail(x, n, k->name, "'%s' is not a size (a number of bytes with an optional K, M or G)", s);
        if (v < k->min || v > k->max)
            return ll__cfg_fail(x, n, k->name, "%lld bytes is out of range (%lld to %lld)", v, k->min, k->max);
        *(size_t *)slot = (size_t)v;
        return 0;
    default:
        return ll_err(x->err, x->errlen, LL_EINVAL, "%s: internal error on key '%s'", x->path, k->name);
    }
}

int ll_config_load(ll_config_t *c, const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return ll_err(err, errlen, LL_EIO, "%s: cannot open: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc = 0;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, fp);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = ll_err(err, errlen, LL_EINVAL, "%s:%zu: YAML syntax error: %s%s%s", path, parser.problem_mark.line + 1,
                    parser.problem != NULL ? parser.problem : "unreadable", parser.context != NULL ? " " : "",
                    parser.context != NULL ? parser.context : "");
        yaml_parser_delete(&parser);
        fclose(fp);
        return rc;
    }
    ll_cfg_t x = {c, path, &doc, err, errlen};
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0)) {
        /* an empty file: all defaults */
    } else if (root->type != YAML_MAPPING_NODE) {
        rc = ll_err(err, errlen, LL_EINVAL, "%s:%zu: the file must be a mapping of 'key: value' lines", path,
                    root->start_mark.line + 1);
    } else {
        for (yaml_node_pair_t *p = root->data.mapping.pairs.start; rc == 0 && p < root->data.mapping.pairs.top; p++) {
            yaml_node_t *kn = yaml_document_get_node(&doc, p->key), *vn = yaml_document_get_node(&doc, p->value);
            const char *name = ll__cfg_scalar(&x, kn, "?", &rc);
            if (name == NULL)
                break;
            const struct key *k = NULL;
            for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
                if (strcmp(keys[i].name, name) == 0)
                    k = &keys[i];
            rc = k == NULL ? ll__cfg_fail(&x, kn, name, "unknown key") : apply(&x, k, vn);
        }
    }
    if (rc == 0 && (c->tls_cert == NULL) != (c->tls_key == NULL))
        rc = ll_err(err, errlen, LL_EINVAL, "%s: key '%s': tls_cert and tls_key go together", path,
                    c->tls_cert == NULL ? "tls_key" : "tls_cert");
    if (rc == 0)
        set_str(&c->path, path);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(fp);
    return rc;
}
