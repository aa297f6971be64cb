/*
 * The no-script pixel's query string (GET /e.gif?u=..&r=..&ti=..&t=..): pixel_query in
 * server/track.c (included for its statics), then what ll__on_pixel does with it: the type,
 * the UTF-8 check, UTM, ll_event_encode, and back through ll_event_decode and
 * ll_event_to_json. Input: the query, '?' included. Properties: every decoded parameter lies
 * in pool memory, is NUL-terminated and no longer than the query; an event that passes the
 * checks stores only valid UTF-8 and prints as JSON.
 */
#include <jansson.h>
#include "../../server/track.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    ll_event_t q, ev;
    memset(&q, 0, sizeof(q));
    memset(&ev, 0, sizeof(ev));
    pixel_query(&pool, h2o_iovec_init(data, size), &q);
    for (int t = 0; t < LL_F__MAX; t++) {
        FUZZ_CHECK(q.f[t].len <= size);
        if (t != LL_F_URL && t != LL_F_REFERRER && t != LL_F_TITLE && t != LL_F_DATA)
            FUZZ_CHECK(q.f[t].len == 0);
        else if (q.f[t].len != 0)
            FUZZ_CHECK(q.f[t].base[q.f[t].len] == '\0');
    }
    ev.type = LL_EV_PAGEVIEW;
    ev.time_us = 1700000000000000ull;
    ev.f[LL_F_URL] = q.f[LL_F_URL];
    ev.f[LL_F_TITLE] = q.f[LL_F_TITLE];
    ev.f[LL_F_REFERRER] = q.f[LL_F_REFERRER];
    if (q.f[LL_F_DATA].len != 0) {
        int type = ll_event_type_parse(q.f[LL_F_DATA].base, q.f[LL_F_DATA].len);
        if (type == LL_EV_PAGEVIEW || type == LL_EV_DOWNLOAD || type == LL_EV_OUTBOUND || type == LL_EV_CUSTOM)
            ev.type = (uint8_t)type;
    }
    int ok = 1;
    for (int f = 1; f < LL_F__MAX; f++)
        ok &= ev.f[f].len == 0 || ll_utf8_valid(ev.f[f].base, ev.f[f].len);
    if (ok) {
        ll__event_utm(&pool, &ev, ev.f[LL_F_URL]);
        ll_buf_t rec, js;
        ll_event_t back;
        json_error_t jerr;
        ll_buf_init(&rec, LL_EVENT_MAX);
        ll_buf_init(&js, 1 << 20);
        FUZZ_CHECK(ll_event_encode(&ev, &rec) == 0);
        FUZZ_CHECK(ll_event_decode(rec.data, rec.len, &back) == 0 && back.type == ev.type);
        for (int t = 1; t < LL_F__MAX; t++)
            FUZZ_CHECK(ll_utf8_valid(back.f[t].base, back.f[t].len));
        FUZZ_CHECK(ll_event_to_json(&back, NULL, &js) == 0);
        json_t *j = json_loadb(js.data, js.len, JSON_DECODE_INT_AS_REAL, &jerr);
        FUZZ_CHECK(json_is_object(j));
        json_decref(j);
        ll_buf_free(&rec);
        ll_buf_free(&js);
    }
    h2o_mem_clear_pool(&pool);
    return 0;
}
