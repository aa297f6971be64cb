/*
 * The form body parsers of server/form.c (statics, so the file is included): urlencoded,
 * multipart/form-data with its Content-Type boundary, JSON, and header_param. Input: one mode
 * byte; for multipart the Content-Type value up to the first '\n', then the body.
 * Properties: every pair lies inside the body (or the pool) and is read in full, as the
 * handler's UTF-8 check does; a JSON body is accepted only when it is an object. Modes 'M' and
 * 'U' build a multipart or urlencoded body the way a client would from fuzzed pairs
 * (name 0xfe value 0xff ...; for 'M' a flag byte first: unquoted names, an extra part header)
 * and check that the parser gives exactly those pairs back.
 */
#include "../../server/form.c"
#include "fuzz.h"

static void touch(const pairs_t *ps)
{
    FUZZ_CHECK(ps->n <= MAX_PAIRS);
    for (size_t i = 0; i < ps->n; i++) {
        ll_utf8_valid(ps->v[i].name.base, ps->v[i].name.len);
        ll_utf8_valid(ps->v[i].value.base, ps->v[i].value.len);
    }
}

/* Splits a generator input into (name, value) pairs: name 0xfe value 0xff ...; names keep only
 * the bytes a client can put in them (a token when unquoted, no quote or line break when quoted). */
static size_t gen_pairs(const uint8_t *p, size_t n, int token_names, pair_t *out, size_t max)
{
    size_t k = 0;
    const uint8_t *end = p + n;
    while (p < end && k < max) {
        const uint8_t *ff = memchr(p, 0xff, end - p), *stop = ff ? ff : end;
        const uint8_t *fe = memchr(p, 0xfe, stop - p);
        const uint8_t *nend = fe ? fe : stop;
        int ok = nend > p;
        for (const uint8_t *c = p; c < nend && ok; c++)
            ok = token_names ? (*c > 0x20 && *c < 0x7f && !strchr("()<>@,;:\\\"/[]?={}", *c)) : (*c != '"' && *c != '\r' && *c != '\n' && *c != 0);
        if (ok)
            out[k++] = (pair_t){ll_str((const char *)p, nend - p),
                                fe ? ll_str((const char *)fe + 1, stop - fe - 1) : ll_str("", 0)};
        p = stop + 1;
    }
    return k;
}

static int same(ll_str_t a, ll_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.base, b.base, a.len) == 0);
}

/* What a client sends, built from the pairs: the parser must give exactly them back. */
static void roundtrip_multipart(const uint8_t *data, size_t size)
{
    static pair_t want[MAX_PAIRS];
    static pairs_t got;
    static const char boundary[] = "----LLfuzzBoundary7MA4YWxkTrZu0gW";
    if (size < 1)
        return;
    int unquoted = data[0] & 1, extra = (data[0] >> 1) & 3;
    size_t k = gen_pairs(data + 1, size - 1, unquoted, want, MAX_PAIRS);
    ll_buf_t b;
    ll_buf_init(&b, 1 << 22);
    for (size_t i = 0; i < k; i++) {
        /* A boundary is chosen not to occur in the content (RFC 2046 5.1.1). */
        if (h2o_strstr(want[i].value.base, want[i].value.len, boundary, sizeof(boundary) - 1) != SIZE_MAX) {
            ll_buf_free(&b);
            return;
        }
        ll_buf_printf(&b, "--%s\r\n", boundary);
        if (extra == 1)
            ll_buf_appends(&b, "Content-Type: text/plain; charset=utf-8\r\n");
        ll_buf_appends(&b, "Content-Disposition: form-data; name=");
        ll_buf_appends(&b, unquoted ? "" : "\"");
        ll_buf_append(&b, want[i].name.base, want[i].name.len);
        ll_buf_appends(&b, unquoted ? "" : "\"");
        if (extra == 2)
            ll_buf_appends(&b, "\r\nContent-Type: text/plain");
        ll_buf_appends(&b, "\r\n\r\n");
        ll_buf_append(&b, want[i].value.base, want[i].value.len);
        ll_buf_appends(&b, "\r\n");
    }
    ll_buf_printf(&b, "--%s--\r\n", boundary);
    got.n = 0;
    FUZZ_CHECK(parse_multipart(h2o_iovec_init(b.data, b.len), ll_str(boundary, sizeof(boundary) - 1), &got) == 0);
    FUZZ_CHECK(got.n == k);
    for (size_t i = 0; i < k; i++)
        FUZZ_CHECK(same(got.v[i].name, want[i].name) && same(got.v[i].value, want[i].value));
    ll_buf_free(&b);
}

static void roundtrip_urlencoded(h2o_mem_pool_t *pool, const uint8_t *data, size_t size)
{
    static pair_t want[MAX_PAIRS];
    static pairs_t got;
    size_t k = gen_pairs(data, size, 0, want, MAX_PAIRS);
    ll_buf_t b;
    ll_buf_init(&b, 1 << 22);
    for (size_t i = 0; i < k; i++) {
        ll_str_t parts[2] = {want[i].name, want[i].value};
        if (i > 0)
            ll_buf_append(&b, "&", 1);
        for (int j = 0; j < 2; j++) {
            for (size_t c = 0; c < parts[j].len; c++) {
                unsigned char ch = (unsigned char)parts[j].base[c];
                if (ch == ' ')
                    ll_buf_append(&b, "+", 1);
                else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("-._~", ch))
                    ll_buf_append(&b, &parts[j].base[c], 1);
                else
                    ll_buf_printf(&b, "%%%02X", ch);
            }
            if (j == 0)
                ll_buf_append(&b, "=", 1);
        }
    }
    got.n = 0;
    parse_urlencoded(pool, h2o_iovec_init(b.data ? b.data : "", b.len), &got);
    FUZZ_CHECK(got.n == k);
    for (size_t i = 0; i < k; i++)
        FUZZ_CHECK(same(got.v[i].name, want[i].name) && same(got.v[i].value, want[i].value));
    ll_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pairs_t ps;
    if (size < 1)
        return 0;
    if (data[0] == 'M') {
        roundtrip_multipart(data + 1, size - 1);
        return 0;
    }
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    ps.n = 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] == 'U') {
        roundtrip_urlencoded(&pool, data + 1, size - 1);
        h2o_mem_clear_pool(&pool);
        return 0;
    }
    switch (data[0] % 3) {
    case 0:
        parse_urlencoded(&pool, h2o_iovec_init(s, n), &ps);
        touch(&ps);
        for (size_t i = 0; i < ps.n; i++)
            FUZZ_CHECK(ps.v[i].name.len <= n && ps.v[i].value.len <= n);
        break;
    case 1: {
        const char *nl = memchr(s, '\n', n);
        size_t ctl = nl ? (size_t)(nl - s) : n;
        ll_str_t b = header_param(s, ctl, "boundary");
        const char *body = nl ? nl + 1 : s + n;
        size_t bl = (size_t)(s + n - body);
        if (b.base != NULL)
            FUZZ_CHECK(b.base >= s && b.base + b.len <= s + ctl);
        /* The other parameters header_param reads, over the same bytes. */
        ll_str_t nm = header_param(s, ctl, "name"), fn = header_param(s, ctl, "filename");
        FUZZ_CHECK(nm.base == NULL || (nm.base >= s && nm.base + nm.len <= s + ctl));
        FUZZ_CHECK(fn.base == NULL || (fn.base >= s && fn.base + fn.len <= s + ctl));
        if (parse_multipart(h2o_iovec_init(body, bl), b, &ps) == 0 || ps.n != 0) {
            touch(&ps);
            for (size_t i = 0; i < ps.n; i++) {
                FUZZ_CHECK(ps.v[i].name.base >= body && ps.v[i].name.base + ps.v[i].name.len <= body + bl);
                FUZZ_CHECK(ps.v[i].value.base >= body && ps.v[i].value.base + ps.v[i].value.len <= body + bl);
            }
        }
        break;
    }
    default:
        if (parse_json(&pool, h2o_iovec_init(s, n), &ps) == 0) {
            FUZZ_CHECK(n >= 2);
            touch(&ps);
        } else {
            FUZZ_CHECK(ps.n == 0);
        }
        break;
    }
    h2o_mem_clear_pool(&pool);
    return 0;
}
