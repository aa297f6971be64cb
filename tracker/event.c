/* The event record codec (layout in include/leadloop/event.h). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <jansson.h>
#include <openssl/rand.h>
#include "leadloop/event.h"
#include "leadloop/store.h"

static const char *const type_names[LL_EV__MAX] = {
    "none", "pageview", "click", "open", "form", "download", "outbound", "engage",
    "custom", "sent", "bounce", "unsubscribe", "identify"};
static const char *const class_names[LL_CLASS__MAX] = {"unknown", "human", "prefetch", "bot", "scanner",
                                                       "likely-human"};
static const char *const field_names[LL_F__MAX] = {
    "", "url", "referrer", "title", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    "country", "region", "city", "tz", "asn", "org", "ip", "ua", "form", "fields", "data", "email", "program", "step",
    "tag"};
static const char *const reason_names[] = {"bot_ua", "head", "prefetch_header", "no_ua", "browser_ua", "js",
                                           "form", "honeypot", "headless_ua", "prerender", "fast_after_send",
                                           "sweep", "honeypot_link", "ip_list", "asn_list", "ua_list", "js_after",
                                           "no_js_after", "webdriver", "late"};

size_t ll_event_field_limit(ll_field_t tag)
{
    switch (tag) {
    case LL_F_URL:
    case LL_F_REFERRER:
        return 2048;
    case LL_F_TITLE:
        return 300;
    case LL_F_UA:
        return 512;
    case LL_F_FIELDS:
    case LL_F_DATA:
        return 4096;
    case LL_F_COUNTRY:
        return 2;
    case LL_F_IP:
        return 16;
    default:
        return 256;
    }
}

/* Longest prefix of s no longer than max that does not split a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    size_t i = max;
    while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80)
        i--;
    return i;
}

/* Appends the field tag = s[0..n), bounded (ll_event_field_limit; the address's raw bytes
 * to 16, text at a UTF-8 boundary). */
static int put_field(ll_buf_t *out, int tag, const char *s, size_t n)
{
    n = tag == LL_F_IP ? (n > 16 ? 16 : n) : utf8_cut(s, n, ll_event_field_limit(tag));
    uint8_t th[3] = {(uint8_t)tag, (uint8_t)(n >> 8), (uint8_t)n};
    int rc = ll_buf_append(out, th, 3);
    return rc != 0 ? rc : ll_buf_append(out, s, n);
}

/* What an encode appended from start, unless it failed or came out too large. */
static int encoded(ll_buf_t *out, size_t start, int rc)
{
    if (rc == 0 && out->len - start > LL_EVENT_MAX)
        rc = LL_ETOOBIG;
    if (rc != 0)
        out->len = start;
    return rc;
}

int ll_event_encode(const ll_event_t *ev, ll_buf_t *out)
{
    uint8_t h[LL_EVENT_HEADER] = {0};
    h[0] = LL_EVENT_VERSION;
    h[1] = ev->type;
    h[2] = ev->cls;
    h[3] = ev->flags;
    ll_be64_put(h + 4, ev->seq);
    ll_be64_put(h + 12, ev->time_us);
    memcpy(h + 20, ev->visitor.b, 16);
    ll_be64_put(h + 36, ev->contact);
    ll_be64_put(h + 44, ev->send);
    ll_be32_put(h + 52, ev->link);
    ll_be32_put(h + 56, ev->reasons);
    size_t start = out->len;
    int rc = ll_buf_append(out, h, sizeof(h));
    for (int tag = 1; tag < LL_F__MAX && rc == 0; tag++)
        if (ev->f[tag].len != 0)
            rc = put_field(out, tag, ev->f[tag].base, ev->f[tag].len);
    return encoded(out, start, rc);
}

int ll_event_add_field(const void *rec, size_t len, ll_field_t tag, const char *s, size_t n, ll_buf_t *out)
{
    size_t start = out->len;
    int rc = ll_buf_append(out, rec, len);
    return encoded(out, start, rc != 0 || n == 0 ? rc : put_field(out, tag, s, n));
}

int ll_event_decode_header(const void *rec, size_t len, ll_event_t *ev)
{
    const uint8_t *p = rec;
    if (len < LL_EVENT_HEADER || p[0] != LL_EVENT_VERSION)
        return LL_EINVAL;
    ev->version = p[0];
    ev->type = p[1];
    ev->cls = p[2];
    ev->flags = p[3];
    ev->seq = ll_be64_get(p + 4);
    ev->time_us = ll_be64_get(p + 12);
    memcpy(ev->visitor.b, p + 20, 16);
    ev->contact = ll_be64_get(p + 36);
    ev->send = ll_be64_get(p + 44);
    ev->link = ll_be32_get(p + 52);
    ev->reasons = ll_be32_get(p + 56);
    return 0;
}

int ll_event_decode(const void *rec, size_t len, ll_event_t *ev)
{
    const uint8_t *p = rec;
    memset(ev, 0, sizeof(*ev));
    if (ll_event_decode_header(rec, len, ev) != 0)
        return LL_EINVAL;
    for (size_t off = LL_EVENT_HEADER; off < len;) {
        if (len - off < 3)
            return LL_EINVAL;
        unsigned tag = p[off];
        size_t n = (size_t)p[off + 1] << 8 | p[off + 2];
        off += 3;
        if (n > len - off)
            return LL_EINVAL;
        if (tag > 0 && tag < LL_F__MAX) /* unknown tags from newer writers are skipped */
            ev->f[tag] = ll_str((const char *)p + off, n);
        off += n;
    }
    return 0;
}

void ll_event_patch_seq(void *rec, uint64_t seq)
{
    ll_be64_put((uint8_t *)rec + 4, seq);
}

void ll_event_patch_contact(void *rec, uint64_t contact)
{
    ll_be64_put((uint8_t *)rec + 36, contact);
}

void ll_event_patch_flags(void *rec, uint8_t flags)
{
    ((uint8_t *)rec)[3] = flags;
}

void ll_event_patch_class(void *rec, uint8_t cls, uint32_t reasons)
{
    ((uint8_t *)rec)[2] = cls;
    ll_be32_put((uint8_t *)rec + 56, reasons);
}

uint64_t ll_event_rec_contact(const void *rec)
{
    return ll_be64_get((const uint8_t *)rec + 36);
}

void ll_event_rec_visitor(const void *rec, ll_visitor_id_t *out)
{
    memcpy(out->b, (const uint8_t *)rec + 20, 16);
}

uint8_t ll_event_rec_type(const void *rec)
{
    return ((const uint8_t *)rec)[1];
}

const char *ll_event_type_name(int type)
{
    return type > 0 && type < LL_EV__MAX ? type_names[type] : "unknown";
}

int ll_event_type_parse(const char *s, size_t n)
{
    for (int i = 1; i < LL_EV__MAX; i++)
        if (strlen(type_names[i]) == n && memcmp(type_names[i], s, n) == 0)
            return i;
    return 0;
}

const char *ll_class_name(int cls)
{
    return cls >= 0 && cls < LL_CLASS__MAX ? class_names[cls] : "unknown";
}

const char *ll_field_name(int tag)
{
    return tag > 0 && tag < LL_F__MAX ? field_names[tag] : "";
}

const char *ll_reason_name(int bit)
{
    return bit >= 0 && (size_t)bit < sizeof(reason_names) / sizeof(reason_names[0]) ? reason_names[bit] : NULL;
}

int ll_reasons_format(uint32_t reasons, ll_buf_t *out)
{
    int rc = 0, first = 1;
    for (size_t i = 0; i < sizeof(reason_names) / sizeof(reason_names[0]) && rc == 0; i++) {
        if ((reasons & (1u << i)) == 0)
            continue;
        if (!first)
            rc = ll_buf_append(out, ",", 1);
        if (rc == 0)
            rc = ll_buf_appends(out, reason_names[i]);
        first = 0;
    }
    return rc;
}

int ll_visitor_is_zero(const ll_visitor_id_t *v)
{
    static const uint8_t zero[16];
    return memcmp(v->b, zero, 16) == 0;
}

void ll_visitor_to_hex(const ll_visitor_id_t *v, char out[33])
{
    ll_hex_encode(out, v->b, 16);
}

int ll_visitor_from_hex(ll_visitor_id_t *v, const char *s, size_t n)
{
    ll_visitor_id_t tmp;
    if (n != 32 || ll_hex_decode(tmp.b, s, 16) != 0 || ll_visitor_is_zero(&tmp))
        return LL_EINVAL;
    *v = tmp;
    return 0;
}

/* The random part of minted ids comes from a per-thread pool, one RAND_bytes call per POOL_IDS
 * ids: a call costs about 2 µs on the benchmark machine (half of it the getpid of OpenSSL's fork
 * check), more than the rest of minting. The pool is OpenSSL's output all the same, only drawn
 * ahead. A fork empties the child's pool (the child has only the forking thread), so parent and
 * child never hand out the same bytes. */
#define POOL_IDS 64
static __thread struct {
    uint8_t b[10 * POOL_IDS];
    size_t used;
} pool = {.used = 10 * POOL_IDS};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_forget(void)
{
    pool.used = sizeof(pool.b);
}

static void pool_atfork(void)
{
    pthread_atfork(NULL, NULL, pool_forget);
}

static void pool_take(uint8_t *out, size_t n)
{
    if (pool.used + n > sizeof(pool.b)) {
        pthread_once(&pool_once, pool_atfork);
        if (RAND_bytes(pool.b, sizeof(pool.b)) != 1) {
            fprintf(stderr, "leadloop: RAND_bytes failed\n");
            abort();
        }
        pool.used = 0;
    }
    memcpy(out, pool.b + pool.used, n);
    pool.used += n;
}

void ll_visitor_new(ll_visitor_id_t *v)
{
    /* Time first (event.h): new ids land at the end of the visitor tables. */
    uint64_t ms = ll_now_us() / 1000;
    for (int i = 0; i < 6; i++)
        v->b[i] = (uint8_t)(ms >> (8 * (5 - i)));
    do
        pool_take(v->b + 6, 10);
    while (ll_visitor_is_zero(v)); /* only with a fake time of 0 */
}

/* A JSON object text stored in FIELDS/DATA is embedded as-is only when it parses as one (a
 * brace at each end is not enough: "{x}" or a raw control character inside a string would
 * break the output); the writer stores only what it produced itself, but a reader must never
 * emit broken JSON. Anything else is emitted as a JSON string. */
static int append_json_value(ll_buf_t *out, ll_str_t v)
{
    json_error_t jerr;
    json_t *obj = v.len >= 2 && v.base[0] == '{' ? json_loadb(v.base, v.len, 0, &jerr) : NULL;
    int embed = json_is_object(obj);
    json_decref(obj);
    if (embed)
        return ll_buf_append(out, v.base, v.len);
    int rc = ll_buf_append(out, "\"", 1);
    if (rc == 0)
        rc = ll_buf_append_json_str(out, v.base, v.len);
    return rc ? rc : ll_buf_append(out, "\"", 1);
}

int ll_event_to_json(const ll_event_t *ev, const char *contact_email, ll_buf_t *out)
{
    char vid[33], tbuf[40];
    time_t secs = (time_t)(ev->time_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t tl = strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tbuf + tl, sizeof(tbuf) - tl, ".%03uZ", (unsigned)(ev->time_us % 1000000 / 1000));
    ll_visitor_to_hex(&ev->visitor, vid);
    int rc = ll_buf_printf(out, "{\"seq\":%llu,\"time\":\"%s\",\"type\":\"%s\",\"class\":\"%s\",\"reasons\":[",
                           (unsigned long long)ev->seq, tbuf, ll_event_type_name(ev->type), ll_class_name(ev->cls));
    ll_buf_t rs;
    ll_buf_init(&rs, 1024);
    ll_reasons_format(ev->reasons, &rs);
    for (char *p = rs.data, *q; rc == 0 && p != NULL && *p != '\0'; p = q) {
        q = strchr(p, ',');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        rc = ll_buf_printf(out, "%s\"%.*s\"", p == rs.data ? "" : ",", (int)n, p);
        if (q)
            q++;
    }
    ll_buf_free(&rs);
    if (rc == 0)
        rc = ll_buf_printf(out, "],\"visitor\":\"%s\",\"contact\":%llu", ll_visitor_is_zero(&ev->visitor) ? "" : vid,
                           (unsigned long long)ev->contact);
    if (rc == 0 && contact_email != NULL && ev->f[LL_F_EMAIL].len == 0) {
        rc = ll_buf_appends(out, ",\"email\":\"");
        if (rc == 0)
            rc = ll_buf_append_json_str(out, contact_email, strlen(contact_email));
        if (rc == 0)
            rc = ll_buf_append(out, "\"", 1);
    }
    if (rc == 0 && ev->send != 0)
        rc = ll_buf_printf(out, ",\"send\":%llu,\"link\":%u", (unsigned long long)ev->send, ev->link);
    if (rc == 0 && (ev->flags & LL_EVF_FORWARD))
        rc = ll_buf_appends(out, ",\"forward\":true");
    if (rc == 0 && (ev->flags & LL_EVF_PROVISIONAL))
        rc = ll_buf_appends(out, ",\"provisional\":true");
    for (int tag = 1; tag < LL_F__MAX && rc == 0; tag++) {
        ll_str_t f = ev->f[tag];
        if (f.len == 0)
            continue;
        rc = ll_buf_printf(out, ",\"%s\":", ll_field_name(tag));
        if (rc != 0)
            break;
        if (tag == LL_F_FIELDS || tag == LL_F_DATA) {
            rc = append_json_value(out, f);
        } else if (tag == LL_F_IP) {
            char ip[64] = "";
            if (f.len == 4)
                snprintf(ip, sizeof(ip), "%u.%u.%u.%u", (uint8_t)f.base[0], (uint8_t)f.base[1], (uint8_t)f.base[2],
                         (uint8_t)f.base[3]);
            else if (f.len == 16)
                for (int i = 0; i < 16; i += 2)
                    snprintf(ip + strlen(ip), sizeof(ip) - strlen(ip), "%s%x", i ? ":" : "",
                             (unsigned)((uint8_t)f.base[i] << 8 | (uint8_t)f.base[i + 1]));
            rc = ll_buf_printf(out, "\"%s\"", ip);
        } else {
            rc = ll_buf_append(out, "\"", 1);
            if (rc == 0)
                rc = ll_buf_append_json_str(out, f.base, f.len);
            if (rc == 0)
                rc = ll_buf_append(out, "\"", 1);
        }
    }
    return rc ? rc : ll_buf_append(out, "}", 1);
}
