/*
 * The form body parsers of server/form.c (statics, so the file is included): urlencoded,
 * multipart/form-data with its Content-Type boundary, JSON, and header_param. Input: one mode
 * byte; for multipart the Content-Type value up to the first '\n', then the body.
 * Properties: every pair lies inside the body (or the pool) and is read in full, as the
 * handler's UTF-8 check does; a JSON body is accepted only when it is an object.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pairs_t ps;
    if (size < 1)
        return 0;
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    ps.n = 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
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
