/*
 * ll__url_decode and ll__event_utm (server/http.c) over a page URL a client sends. Properties:
 * decoding never grows the text and NUL-terminates it; every UTM field lies in pool memory
 * and is valid UTF-8 without NULs, like every other text a handler stores (a %-escape must
 * not smuggle in what the body checks refuse).
 */
#include <string.h>
#include "fuzz.h"
#include "../../server/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    const char *s = (const char *)data;
    ll_str_t d = ll__url_decode(&pool, s, size);
    FUZZ_CHECK(d.len <= size && d.base[d.len] == '\0');
    ll_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ll__event_utm(&pool, &ev, ll_str(s, size));
    for (int t = LL_F_UTM_SOURCE; t <= LL_F_UTM_CONTENT; t++) {
        FUZZ_CHECK(ev.f[t].len <= size);
        if (ev.f[t].len != 0)
            FUZZ_CHECK(ev.f[t].base[ev.f[t].len] == '\0' && ll_utf8_valid(ev.f[t].base, ev.f[t].len));
    }
    for (int t = 0; t < LL_F__MAX; t++)
        if (t < LL_F_UTM_SOURCE || t > LL_F_UTM_CONTENT)
            FUZZ_CHECK(ev.f[t].len == 0);
    h2o_mem_clear_pool(&pool);
    return 0;
}
