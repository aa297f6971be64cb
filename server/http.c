/* Request-side helpers shared by the handlers: client, visitor cookie, responses, CORS. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include "leadloop/classify.h"
#include "server.h"

const uint8_t ll_gif[43] = {0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
                            0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
                            0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b};

h2o_iovec_t ll__header(h2o_req_t *req, const h2o_token_t *token)
{
    ssize_t i = h2o_find_header(&req->headers, token, -1);
    return i < 0 ? h2o_iovec_init(NULL, 0) : req->headers.entries[i].value;
}

h2o_iovec_t ll__header_str(h2o_req_t *req, const char *name)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    return i < 0 ? h2o_iovec_init(NULL, 0) : req->headers.entries[i].value;
}

int ll__cookie_visitor(const char *name, const char *v, size_t len, ll_visitor_id_t *out)
{
    size_t nlen = strlen(name);
    const char *p = v, *end = v + len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ';'))
            p++;
        const char *semi = memchr(p, ';', end - p);
        const char *stop = semi ? semi : end;
        const char *eq = memchr(p, '=', stop - p);
        if (eq != NULL && (size_t)(eq - p) == nlen && memcmp(p, name, nlen) == 0 &&
            ll_visitor_from_hex(out, eq + 1, stop - eq - 1) == 0)
            return 0;
        p = stop;
    }
    return LL_ENOTFOUND;
}

/* The visitor cookie: a value of exactly 32 hex chars; anything else (garbage, oversized,
 * duplicated junk) is ignored and a new id is issued. Scans at most 8 KB of Cookie headers. */
static int cookie_visitor(h2o_req_t *req, ll_visitor_id_t *out)
{
    size_t scanned = 0;
    for (ssize_t i = -1; (i = h2o_find_header(&req->headers, H2O_TOKEN_COOKIE, i)) >= 0;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if ((scanned += v.len) > 8192)
            return LL_ETOOBIG;
        if (ll__cookie_visitor(ll_srv.conf.cookie_name, v.base, v.len, out) == 0)
            return 0;
    }
    return LL_ENOTFOUND;
}

void ll__reqinfo(h2o_req_t *req, unsigned flags, ll_reqinfo_t *ri)
{
    memset(ri, 0, sizeof(*ri));
    struct sockaddr_storage ss;
    ll_ip_t peer = {0};
    socklen_t sl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (sl != 0 && ss.ss_family == AF_INET) {
        peer.family = AF_INET;
        memcpy(peer.addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    } else if (sl != 0 && ss.ss_family == AF_INET6) {
        const uint8_t *a = (const uint8_t *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            peer.family = AF_INET;
            memcpy(peer.addr, a + 12, 4);
        } else {
            peer.family = AF_INET6;
            memcpy(peer.addr, a, 16);
        }
    }
    h2o_iovec_t xff = ll__header(req, H2O_TOKEN_X_FORWARDED_FOR);
    ll_ip_resolve(&ll_srv.conf, &peer, xff.base, xff.len, &ri->ip);
    if (ll_srv.geo != NULL)
        ll_geo_lookup(ll_srv.geo, &ri->ip, &ri->geo);
    /* Minting an id costs RAND_bytes (and its fork check, a getpid): only where one is kept. */
    if (!(flags & LL_RI_NO_VISITOR) && cookie_visitor(req, &ri->visitor) != 0) {
        ll_visitor_new(&ri->visitor);
        ri->visitor_new = 1;
    }
    h2o_iovec_t ua = ll__header(req, H2O_TOKEN_USER_AGENT), purpose = ll__header_str(req, "purpose"),
                sec = ll__header_str(req, "sec-purpose");
    if (purpose.base == NULL)
        purpose = ll__header_str(req, "x-purpose");
    if (purpose.base == NULL)
        purpose = ll__header_str(req, "x-moz");
    ll_classify_in_t in = {.is_head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")),
                           .ua = ll_str(ua.base, ua.len),
                           .purpose = ll_str(purpose.base, purpose.len),
                           .sec_purpose = ll_str(sec.base, sec.len),
                           .from_snippet = (flags & LL_RI_SNIPPET) != 0};
    ri->cls = ll_classify(&in, &ri->reasons);
}

void ll__event_from_req(h2o_req_t *req, ll_reqinfo_t *ri, ll_event_t *ev, uint8_t ipbuf[16], char asnbuf[16])
{
    ev->time_us = ll_now_us();
    ev->visitor = ri->visitor;
    ev->cls = (uint8_t)ri->cls;
    ev->reasons = ri->reasons;
    ev->flags = ri->visitor_new ? LL_EVF_NEW_VISITOR : 0;
    ll_ip_t t = ri->ip;
    ll_ip_truncate(&t, ll_srv.conf.ipv4_prefix, ll_srv.conf.ipv6_prefix);
    memcpy(ipbuf, t.addr, ll_ip_len(&t));
    ev->f[LL_F_IP] = ll_str((const char *)ipbuf, ll_ip_len(&t));
    h2o_iovec_t ua = ll__header(req, H2O_TOKEN_USER_AGENT);
    ev->f[LL_F_UA] = ll_str(ua.base, ua.len);
    ev->f[LL_F_COUNTRY] = ll_str(ri->geo.country, strlen(ri->geo.country));
    ev->f[LL_F_REGION] = ll_str(ri->geo.region, strlen(ri->geo.region));
    ev->f[LL_F_CITY] = ll_str(ri->geo.city, strlen(ri->geo.city));
    ev->f[LL_F_TZ] = ll_str(ri->geo.tz, strlen(ri->geo.tz));
    ev->f[LL_F_ORG] = ll_str(ri->geo.org, strlen(ri->geo.org));
    if (ri->geo.asn != 0) {
        int n = snprintf(asnbuf, 16, "%u", ri->geo.asn);
        ev->f[LL_F_ASN] = ll_str(asnbuf, (size_t)n);
    }
}

static int hexdigit(int c)
{
    return (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
}

/* Percent-decodes (and '+' to space) into pool memory. */
ll_str_t ll__url_decode(h2o_mem_pool_t *pool, const char *s, size_t n)
{
    char *out = h2o_mem_alloc_pool(pool, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n && hexdigit(s[i + 1]) >= 0 && hexdigit(s[i + 2]) >= 0) {
            out[o++] = (char)(hexdigit(s[i + 1]) << 4 | hexdigit(s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return ll_str(out, o);
}

void ll__event_utm(h2o_mem_pool_t *pool, ll_event_t *ev, ll_str_t url)
{
    static const struct {
        const char *name;
        ll_field_t tag;
    } utm[] = {{"utm_source", LL_F_UTM_SOURCE}, {"utm_medium", LL_F_UTM_MEDIUM}, {"utm_campaign", LL_F_UTM_CAMPAIGN},
               {"utm_term", LL_F_UTM_TERM}, {"utm_content", LL_F_UTM_CONTENT}};
    const char *q = url.base ? memchr(url.base, '?', url.len) : NULL;
    if (q == NULL)
        return;
    const char *end = url.base + url.len, *hash = memchr(q, '#', end - q);
    if (hash != NULL)
        end = hash;
    for (const char *p = q + 1; p < end;) {
        const char *amp = memchr(p, '&', end - p), *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', stop - p);
        if (eq != NULL) {
            for (size_t i = 0; i < sizeof(utm) / sizeof(utm[0]); i++) {
                if ((size_t)(eq - p) != strlen(utm[i].name) || memcmp(p, utm[i].name, eq - p) != 0)
                    continue;
                /* The handlers store only valid UTF-8; a %-escape (%00, %FF) must not undo that. */
                ll_str_t v = ll__url_decode(pool, eq + 1, stop - eq - 1);
                if (ll_utf8_valid(v.base, v.len))
                    ev->f[utm[i].tag] = v;
            }
        }
        p = stop + 1;
    }
}

void ll__cookie_init(void)
{
    const ll_config_t *c = &ll_srv.conf;
    ll_buf_t b;
    ll_buf_init(&b, 1024);
    ll_buf_printf(&b, "; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax%s%s%s", c->cookie_days * 86400,
                  c->tls_cert != NULL || strncmp(c->public_url, "https:", 6) == 0 ? "; Secure" : "",
                  c->cookie_domain ? "; Domain=" : "", c->cookie_domain ? c->cookie_domain : "");
    ll_srv.cookie_attrs = h2o_iovec_init(b.data, b.len); /* kept for the process's life */
}

/* The value is the name, "=", the id in hex and the attributes made at start: copies, no format
 * (snprintf was 5% of a click's instructions). */
void ll__set_visitor_cookie(h2o_req_t *req, const ll_visitor_id_t *v)
{
    char hex[33];
    size_t nlen = strlen(ll_srv.conf.cookie_name), len = nlen + 1 + 32 + ll_srv.cookie_attrs.len;
    char *p = h2o_mem_alloc_pool(&req->pool, len);
    ll_visitor_to_hex(v, hex);
    memcpy(p, ll_srv.conf.cookie_name, nlen);
    p[nlen] = '=';
    memcpy(p + nlen + 1, hex, 32);
    memcpy(p + nlen + 33, ll_srv.cookie_attrs.base, ll_srv.cookie_attrs.len);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_SET_COOKIE, NULL, p, len);
}

void ll__send(h2o_req_t *req, const char *body, size_t len)
{
    if (req->res.status != 204 && req->res.status != 304)
        req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

void ll__respond_text(h2o_req_t *req, ll_endpoint_t ep, int status, const char *reason, const char *body)
{
    ll__metrics_request(ep, status);
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/plain; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    ll__send(req, body, strlen(body));
}

/* Not h2o_send_redirect(): it drops every header set before it (the visitor cookie among them).
 * location must be free of CR/LF and controls; the callers take it from a signed token, the
 * configuration or a checked Referer. */
void ll__respond_redirect(h2o_req_t *req, ll_endpoint_t ep, int status, const char *reason, const char *location)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_LOCATION, NULL, location, strlen(location));
    ll__respond_text(req, ep, status, reason, "redirecting\n");
}

void ll__respond_gif(h2o_req_t *req, ll_endpoint_t ep)
{
    ll__metrics_request(ep, 200);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("image/gif"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store, max-age=0"));
    ll__send(req, (const char *)ll_gif, sizeof(ll_gif));
}

void ll__cors(h2o_req_t *req)
{
    h2o_iovec_t origin = ll__header_str(req, "origin");
    /* Echo only a plausible origin: scheme://host[:port], printable, bounded. */
    if (origin.len == 0 || origin.len > 255 || !(h2o_memis(origin.base, 7, H2O_STRLIT("http://")) ||
                                                 (origin.len > 8 && h2o_memis(origin.base, 8, H2O_STRLIT("https://")))))
        return;
    for (size_t i = 0; i < origin.len; i++)
        if ((unsigned char)origin.base[i] <= 0x20 || (unsigned char)origin.base[i] >= 0x7f)
            return;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, origin.base, origin.len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-credentials"), 0, NULL,
                          H2O_STRLIT("true"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-methods"), 0, NULL,
                          H2O_STRLIT("POST, OPTIONS"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("access-control-allow-headers"), 0, NULL,
                          H2O_STRLIT("Content-Type"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
}

int ll__is_navigation(h2o_req_t *req)
{
    h2o_iovec_t mode = ll__header_str(req, "sec-fetch-mode");
    if (mode.len != 0)
        return h2o_memis(mode.base, mode.len, H2O_STRLIT("navigate"));
    if (ll__header_str(req, "x-requested-with").len != 0)
        return 0;
    h2o_iovec_t accept = ll__header(req, H2O_TOKEN_ACCEPT);
    return accept.len != 0 && h2o_strstr(accept.base, accept.len, H2O_STRLIT("text/html")) != SIZE_MAX;
}
