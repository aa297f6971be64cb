/*
 * Tracking endpoints: signed clicks (/c/), email opens (/o/), the beacon (/e), the no-script
 * pixel (/e.gif) and the snippet (/t.js).
 */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include <openssl/sha.h>
#include "server.h"

#define BEACON_MAX_EVENTS 50

/* ---- clicks ---- */

/* The destination with the visitor handed over (`_llv=`), so that the snippet on another
 * domain adopts the same visitor. Inserted before any fragment. */
static char *handoff_url(const char *url, const ll_visitor_id_t *v)
{
    char hex[33];
    ll_visitor_to_hex(v, hex);
    size_t n = strlen(url);
    const char *hash = strchr(url, '#');
    size_t before = hash ? (size_t)(hash - url) : n;
    char sep = memchr(url, '?', before) ? '&' : '?';
    char *out = ll_malloc(n + 40), *p = out;
    memcpy(p, url, before), p += before; /* copies, no format: snprintf was 3% of a click */
    *p++ = sep;
    memcpy(p, "_llv=", 5), p += 5;
    memcpy(p, hex, 32), p += 32;
    memcpy(p, url + before, n - before + 1); /* the fragment, if any, and the NUL */
    return out;
}

static void click_redirect(h2o_req_t *req, ll_pending_t *p)
{
    ll__set_visitor_cookie(req, &p->visitor);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0, NULL,
                          H2O_STRLIT("no-referrer-when-downgrade"));
    /* The location is a signed http(s) URL without CR/LF or controls (token.h). */
    ll__respond_redirect(req, EP_CLICK, 302, "Found", p->location);
}

static void on_click_done(ll_pending_t *p, h2o_req_t *req)
{
    if (p->result != 0 && !p->answered_early)
        ll__metrics_lost(EP_CLICK, p->nrecs);
    /* A person is never kept from their destination by the store: redirect whatever happened. */
    if (req != NULL)
        click_redirect(req, p);
}

int ll__on_click(h2o_req_t *req, h2o_iovec_t b64)
{
    ll_token_t tok;
    if (ll_token_verify(ll_srv.keys, LL_TOK_CLICK, b64.base, b64.len, &tok) != 0) {
        ll__metrics_reject(REJ_BAD_TOKEN);
        ll__respond_text(req, EP_CLICK, 404, "Not Found", "not found\n");
        return 0;
    }
    ll_reqinfo_t ri;
    ll_event_t ev = {0};
    uint8_t ip[16];
    char asn[16];
    ll__reqinfo(req, 0, &ri);
    ll__event_from_req(req, &ri, &ev, ip, asn);
    ev.type = LL_EV_CLICK;
    ev.contact = tok.contact;
    ev.send = tok.send;
    ev.link = tok.link;
    ev.f[LL_F_URL] = ll_str(tok.url, tok.url_len);
    ev.f[LL_F_TAG] = ll_str(tok.link_tag, strlen(tok.link_tag));
    h2o_iovec_t ref = ll__header(req, H2O_TOKEN_REFERER);
    ev.f[LL_F_REFERRER] = ll_str(ref.base, ref.len);
    ll__event_utm(&req->pool, &ev, ev.f[LL_F_URL]);

    ll_pending_t *p = ll__pending_new(req, EP_CLICK, on_click_done);
    p->visitor = ri.visitor;
    p->client_ip = ri.ip;
    p->location = handoff_url(tok.url, &ri.visitor);
    /* Machines (prefetchers, crawlers) are logged but never bind a browser to a person. */
    p->bind = ri.cls == LL_CLASS_HUMAN || ri.cls == LL_CLASS_UNKNOWN;
    if (ll__pending_add(p, &ev) != 0 || ll__pending_submit(p, LL_ACK_DEADLINE) != 0) {
        ll__metrics_reject(REJ_OVERLOAD);
        ll__metrics_lost(EP_CLICK, 1);
        click_redirect(req, p);
        ll__pending_free(p);
    }
    return 0;
}

/* ---- opens ---- */

static void on_gif_done(ll_pending_t *p, h2o_req_t *req)
{
    if (p->result != 0 && !p->answered_early)
        ll__metrics_lost(p->ep, p->nrecs);
    if (req != NULL)
        ll__respond_gif(req, p->ep);
}

int ll__on_open(h2o_req_t *req, h2o_iovec_t tail)
{
    ll_token_t tok;
    /* Always the GIF: an email never shows a broken image, whatever the token. */
    if (tail.len < 4 || memcmp(tail.base + tail.len - 4, ".gif", 4) != 0 ||
        ll_token_verify(ll_srv.keys, LL_TOK_OPEN, tail.base, tail.len - 4, &tok) != 0) {
        ll__metrics_reject(REJ_BAD_TOKEN);
        ll__respond_gif(req, EP_OPEN);
        return 0;
    }
    ll_reqinfo_t ri;
    ll_event_t ev = {0};
    uint8_t ip[16];
    char asn[16];
    /* Mail clients and proxies fetch pixels without cookies: a visitor id here would be noise. */
    ll__reqinfo(req, LL_RI_NO_VISITOR, &ri);
    ll__event_from_req(req, &ri, &ev, ip, asn);
    ev.type = LL_EV_OPEN;
    ev.contact = tok.contact;
    ev.send = tok.send;
    ll_pending_t *p = ll__pending_new(req, EP_OPEN, on_gif_done);
    p->client_ip = ri.ip;
    if (ll__pending_add(p, &ev) != 0 || ll__pending_submit(p, LL_ACK_DEADLINE) != 0) {
        ll__metrics_reject(REJ_OVERLOAD);
        ll__metrics_lost(EP_OPEN, 1);
        ll__respond_gif(req, EP_OPEN);
        ll__pending_free(p);
    }
    return 0;
}

/* ---- beacon ---- */

static void on_beacon_done(ll_pending_t *p, h2o_req_t *req)
{
    if (req == NULL)
        return;
    if (p->result != 0) {
        ll__metrics_reject(REJ_STORE_FAILED);
        ll__respond_text(req, p->ep, 503, "Service Unavailable", "store unavailable\n");
        return;
    }
    ll__set_visitor_cookie(req, &p->visitor);
    ll__cors(req);
    if (p->ep == EP_PIXEL) {
        ll__respond_gif(req, EP_PIXEL);
    } else {
        ll__metrics_request(EP_BEACON, 204);
        req->res.status = 204;
        req->res.reason = "No Content";
        ll__send(req, "", 0);
    }
}

/* ---- the beacon ----
 *
 * The body is the snippet's JSON.stringify output, parsed with cJSON: a page view's hot path,
 * where jansson took 2.0 µs for a 164-byte beacon and cJSON 0.3 (BENCHMARKS.md). cJSON is laxer
 * than the JSON grammar in a few places; body_text_ok and tree_ok hold a beacon to what the
 * edge took with jansson: valid UTF-8 (checked first), no control character and no NUL (\u0000)
 * inside a string, nothing after the value, no key twice in one object, finite numbers. Numbers
 * are doubles, as the browser's are. */

/* Control characters and \u0000 inside strings: cJSON passes the first and cuts a string at
 * the second. */
static int body_text_ok(const char *s, size_t n)
{
    int in_string = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!in_string) {
            in_string = c == '"';
        } else if (c == '"') {
            in_string = 0;
        } else if (c < 0x20) {
            return 0;
        } else if (c == '\\') {
            if (i + 5 < n && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0)
                return 0;
            i++; /* the escaped character: an escaped quote does not end the string */
        }
    }
    return 1;
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether object o has no key twice: pairs for a few keys, sorted beyond (a body of 64 KiB can
 * hold thousands, and pairs would be millions of compares). */
static int keys_unique(const cJSON *o)
{
    size_t n = 0;
    for (const cJSON *c = o->child; c != NULL; c = c->next)
        n++;
    if (n <= 16) {
        for (const cJSON *c = o->child; c != NULL; c = c->next)
            for (const cJSON *d = o->child; d != c; d = d->next)
                if (strcmp(c->string, d->string) == 0)
                    return 0;
        return 1;
    }
    const char **keys = ll_malloc(n * sizeof(*keys));
    size_t i = 0;
    for (const cJSON *c = o->child; c != NULL; c = c->next)
        keys[i++] = c->string;
    qsort(keys, n, sizeof(*keys), key_cmp);
    int ok = 1;
    for (i = 1; i < n && ok; i++)
        ok = strcmp(keys[i - 1], keys[i]) != 0;
    free(keys);
    return ok;
}

/*
 * cJSON's allocations while a beacon is handled come from the request's pool (a bump pointer,
 * all of it given back with the request) instead of a malloc and a free for every node and
 * string of the tree: ll__json_hooks_init installs these, ll__on_beacon sets the pool for the
 * time it runs. Anywhere else (no pool set: tests, fuzzers) they are malloc and free. A pointer
 * never crosses: everything cJSON allocates during a beacon is freed, or left, inside it.
 */
static __thread h2o_mem_pool_t *json_pool;

static void *json_malloc(size_t n)
{
    return json_pool != NULL ? h2o_mem_alloc_pool(json_pool, n) : malloc(n);
}

static void json_free(void *p)
{
    if (json_pool == NULL)
        free(p);
}

void ll__json_hooks_init(void)
{
    cJSON_Hooks hooks = {json_malloc, json_free};
    cJSON_InitHooks(&hooks);
}

/* Unique keys in every object and finite numbers (cJSON reads 1e999 as infinity), at any depth
 * (cJSON stops at 1000 levels). */
static int tree_ok(const cJSON *v)
{
    if (cJSON_IsNumber(v))
        return isfinite(v->valuedouble);
    if (cJSON_IsObject(v) && !keys_unique(v))
        return 0;
    for (const cJSON *c = v->child; c != NULL; c = c->next)
        if (!tree_ok(c))
            return 0;
    return 1;
}

/* The body as a beacon's JSON object, or NULL with *why set to the reject and its text. */
static cJSON *beacon_parse(const char *body, size_t len, ll_reject_t *why, const char **text)
{
    if (!ll_utf8_valid(body, len)) {
        *why = REJ_BAD_UTF8, *text = "body is not valid UTF-8\n";
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = body_text_ok(body, len) ? cJSON_ParseWithLengthOpts(body, len, &end, 0) : NULL;
    while (root != NULL && end < body + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (root == NULL || end != body + len || !cJSON_IsObject(root) || !tree_ok(root)) {
        cJSON_Delete(root);
        *why = REJ_BAD_JSON, *text = "body is not a JSON object\n";
        return NULL;
    }
    return root;
}

/* The beacon's events: "e", an array of 1 to BEACON_MAX_EVENTS, or NULL. */
static const cJSON *beacon_events(const cJSON *root)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "e");
    int n = cJSON_IsArray(e) ? cJSON_GetArraySize(e) : 0;
    return n >= 1 && n <= BEACON_MAX_EVENTS ? e : NULL;
}

static ll_str_t json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? ll_str(v->valuestring, strlen(v->valuestring)) : ll_str(NULL, 0);
}

static void bad_request(h2o_req_t *req, ll_endpoint_t ep, ll_reject_t why, const char *body)
{
    ll__metrics_reject(why);
    ll__respond_text(req, ep, 400, "Bad Request", body);
}

/* The client-given part of one beacon event e (type, url, referrer, title, UTM, data) into ev,
 * with no request in sight, so that tests/fuzz reaches it. *data gets the text cJSON allocated that
 * the DATA field points into (the caller frees it with cJSON_free after encoding). Returns a reason
 * text for a 400, or NULL. */
static const char *beacon_fields(h2o_mem_pool_t *pool, const cJSON *e, ll_event_t *ev, char **data)
{
    static const int allowed[] = {LL_EV_PAGEVIEW, LL_EV_ENGAGE, LL_EV_OUTBOUND, LL_EV_DOWNLOAD, LL_EV_CUSTOM};
    *data = NULL;
    if (!cJSON_IsObject(e))
        return "each event must be an object\n";
    ll_str_t t = json_str(e, "t");
    int type = t.len ? ll_event_type_parse(t.base, t.len) : 0, ok = 0;
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
        ok |= type == allowed[i];
    if (!ok)
        return "unknown event type\n";
    ev->type = (uint8_t)type;
    ev->f[LL_F_URL] = json_str(e, "u");
    ev->f[LL_F_REFERRER] = json_str(e, "r");
    ev->f[LL_F_TITLE] = json_str(e, "ti");
    ll__event_utm(pool, ev, ev->f[LL_F_URL]);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "d");
    if (cJSON_IsObject(d)) {
        char *s = cJSON_PrintUnformatted(d); /* keys in their order, no spaces */
        if (s == NULL || strlen(s) > ll_event_field_limit(LL_F_DATA)) {
            cJSON_free(s);
            return "event data too large\n";
        }
        ev->f[LL_F_DATA] = ll_str(s, strlen(s));
        *data = s;
    }
    return NULL;
}

/* Adds one beacon event; returns a reason text for a 400, or NULL. */
static const char *beacon_event(h2o_req_t *req, ll_pending_t *p, ll_reqinfo_t *ri, const cJSON *e)
{
    ll_event_t ev = {0};
    uint8_t ip[16];
    char asn[16];
    char *data;
    ll__event_from_req(req, ri, &ev, ip, asn);
    const char *why = beacon_fields(&req->pool, e, &ev, &data);
    if (why != NULL)
        return why;
    int rc = ll__pending_add(p, &ev);
    cJSON_free(data);
    return rc == 0 ? NULL : "batch too large\n";
}

static int on_beacon(h2o_req_t *req);

int ll__on_beacon(h2o_req_t *req)
{
    json_pool = &req->pool;
    int rc = on_beacon(req);
    json_pool = NULL;
    return rc;
}

static int on_beacon(h2o_req_t *req)
{
    /* JSON from text/plain (sendBeacon, no preflight) or an urlencoded `d=` field. */
    h2o_iovec_t body = req->entity;
    if (body.base == NULL || body.len == 0) {
        bad_request(req, EP_BEACON, REJ_BAD_JSON, "empty body\n");
        return 0;
    }
    ll_reject_t reject;
    const char *reject_text;
    cJSON *root = beacon_parse(body.base, body.len, &reject, &reject_text);
    if (root == NULL) {
        bad_request(req, EP_BEACON, reject, reject_text);
        return 0;
    }
    const cJSON *events = beacon_events(root);
    if (events == NULL) {
        cJSON_Delete(root);
        bad_request(req, EP_BEACON, REJ_BAD_REQUEST, "\"e\" must be an array of 1 to 50 events\n");
        return 0;
    }
    /* The snippet's own first-party id wins over the edge cookie: it is what the site sees.
     * With one, no cookie is read and no id minted. */
    ll_reqinfo_t ri;
    ll_visitor_id_t given;
    ll_str_t v = json_str(root, "v");
    int has_v = v.len != 0 && ll_visitor_from_hex(&given, v.base, v.len) == 0;
    ll__reqinfo(req, LL_RI_SNIPPET | (has_v ? LL_RI_NO_VISITOR : 0), &ri);
    if (has_v)
        ri.visitor = given;
    /* navigator.webdriver: an automated browser (a sandboxing link scanner, a test rig). */
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "w");
    if (cJSON_IsTrue(w) || (cJSON_IsNumber(w) && w->valuedouble == 1)) {
        ri.cls = LL_CLASS_BOT;
        ri.reasons |= LL_REASON_WEBDRIVER;
    }
    ll_pending_t *p = ll__pending_new(req, EP_BEACON, on_beacon_done);
    p->visitor = ri.visitor;
    const char *why = NULL;
    for (const cJSON *e = events->child; e != NULL && why == NULL; e = e->next)
        why = beacon_event(req, p, &ri, e);
    cJSON_Delete(root);
    if (why != NULL) {
        ll__pending_free(p);
        bad_request(req, EP_BEACON, REJ_BAD_REQUEST, why);
        return 0;
    }
    if (ll__pending_submit(p, LL_ACK_TRACKING) != 0) {
        ll__pending_free(p);
        ll__metrics_reject(REJ_OVERLOAD);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, H2O_STRLIT("5"));
        ll__respond_text(req, EP_BEACON, 503, "Service Unavailable", "overloaded\n");
    }
    return 0;
}

/* The pixel's query ("?u=..&r=..&ti=..&t=..", with its '?') into q's URL, REFERRER, TITLE and
 * DATA (the type name), decoded into pool memory; the last of a repeated parameter wins. */
static void pixel_query(h2o_mem_pool_t *pool, h2o_iovec_t query, ll_event_t *q)
{
    static const struct {
        const char *name;
        ll_field_t tag;
    } params[] = {{"u", LL_F_URL}, {"r", LL_F_REFERRER}, {"ti", LL_F_TITLE}, {"t", LL_F_DATA}};
    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++) {
        char pat[8];
        snprintf(pat, sizeof(pat), "%s=", params[i].name);
        for (size_t off = 1; off < query.len;) {
            const char *s = query.base + off, *amp = memchr(s, '&', query.len - off);
            size_t len = amp ? (size_t)(amp - s) : query.len - off;
            if (len > strlen(pat) && memcmp(s, pat, strlen(pat)) == 0) {
                q->f[params[i].tag] = ll__url_decode(pool, s + strlen(pat), len - strlen(pat));
            }
            off += len + 1;
        }
    }
}

/* GET /e.gif?t=pageview&u=...&r=...&ti=...: the same for pages without JavaScript. */
int ll__on_pixel(h2o_req_t *req)
{
    ll_reqinfo_t ri;
    ll_event_t ev = {0};
    uint8_t ip[16];
    char asn[16];
    ll__reqinfo(req, 0, &ri);
    ll__event_from_req(req, &ri, &ev, ip, asn);
    ev.type = LL_EV_PAGEVIEW;
    ll_event_t q = {0};
    if (req->query_at != SIZE_MAX)
        pixel_query(&req->pool, h2o_iovec_init(req->path.base + req->query_at, req->path.len - req->query_at), &q);
    ev.f[LL_F_URL] = q.f[LL_F_URL];
    ev.f[LL_F_TITLE] = q.f[LL_F_TITLE];
    ev.f[LL_F_REFERRER] = q.f[LL_F_REFERRER];
    if (ev.f[LL_F_URL].len == 0) {
        h2o_iovec_t ref = ll__header(req, H2O_TOKEN_REFERER);
        ev.f[LL_F_URL] = ll_str(ref.base, ref.len);
    }
    if (q.f[LL_F_DATA].len != 0) {
        int type = ll_event_type_parse(q.f[LL_F_DATA].base, q.f[LL_F_DATA].len);
        if (type == LL_EV_PAGEVIEW || type == LL_EV_DOWNLOAD || type == LL_EV_OUTBOUND || type == LL_EV_CUSTOM)
            ev.type = (uint8_t)type;
    }
    for (int f = 1; f < LL_F__MAX; f++)
        if (ev.f[f].len != 0 && f != LL_F_IP && !ll_utf8_valid(ev.f[f].base, ev.f[f].len)) {
            ll__metrics_reject(REJ_BAD_UTF8);
            ll__respond_gif(req, EP_PIXEL); /* still an image: it sits in an <img> */
            return 0;
        }
    ll__event_utm(&req->pool, &ev, ev.f[LL_F_URL]);
    ll_pending_t *p = ll__pending_new(req, EP_PIXEL, on_beacon_done);
    p->visitor = ri.visitor;
    if (ll__pending_add(p, &ev) != 0 || ll__pending_submit(p, LL_ACK_TRACKING) != 0) {
        ll__pending_free(p);
        ll__metrics_reject(REJ_OVERLOAD);
        ll__respond_gif(req, EP_PIXEL);
    }
    return 0;
}

/* ---- snippet ---- */

int ll__snippet_load(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return LL_EIO;
    ll_buf_t src, out;
    ll_buf_init(&src, 1 << 20);
    ll_buf_init(&out, 1 << 20);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        if (ll_buf_append(&src, chunk, n) != 0)
            break;
    fclose(f);
    char conf[1024];
    snprintf(conf, sizeof(conf), "{\"dnt\":%s,\"gpc\":%s,\"dl\":\"%s\"}", ll_srv.conf.honor_dnt ? "true" : "false",
             ll_srv.conf.honor_gpc ? "true" : "false", ll_srv.conf.download_exts ? ll_srv.conf.download_exts : "");
    const char *mark = src.data ? strstr(src.data, "__LL_CONFIG__") : NULL;
    if (mark == NULL) {
        ll_buf_append(&out, src.data ? src.data : "", src.len);
    } else {
        ll_buf_append(&out, src.data, mark - src.data);
        ll_buf_appends(&out, conf);
        ll_buf_appends(&out, mark + strlen("__LL_CONFIG__"));
    }
    ll_buf_free(&src);
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)out.data, out.len, md);
    ll_srv.snippet_etag[0] = '"';
    ll_hex_encode(ll_srv.snippet_etag + 1, md, 16);
    strcat(ll_srv.snippet_etag, "\"");
    ll_srv.snippet = h2o_iovec_init(out.data, out.len);
    return 0;
}

int ll__on_snippet(h2o_req_t *req)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, ll_srv.snippet_etag, strlen(ll_srv.snippet_etag));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("public, max-age=3600"));
    h2o_iovec_t inm = ll__header(req, H2O_TOKEN_IF_NONE_MATCH);
    if (inm.len != 0 && h2o_strstr(inm.base, inm.len, ll_srv.snippet_etag, strlen(ll_srv.snippet_etag)) != SIZE_MAX) {
        ll__metrics_request(EP_SNIPPET, 304);
        req->res.status = 304;
        req->res.reason = "Not Modified";
        ll__send(req, "", 0);
        return 0;
    }
    ll__metrics_request(EP_SNIPPET, 200);
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/javascript; charset=utf-8"));
    ll__send(req, ll_srv.snippet.base, ll_srv.snippet.len);
    return 0;
}
