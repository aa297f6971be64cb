/*
 * The beacon's JSON-to-event path (server/track.c, included for its statics): beacon_parse and
 * the checks ll__on_beacon makes, then beacon_fields for each event, ll_event_encode as
 * ll__pending_add does, and back through ll_event_decode and ll_event_to_json. Properties: a
 * body beacon_parse takes is valid UTF-8 and, printed again, a JSON object jansson reads with
 * no key twice; whatever a client sends becomes records within LL_EVENT_MAX whose text fields
 * are valid UTF-8 and that decode and print as valid JSON.
 */
#include <jansson.h>
#include "../../server/track.c"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    if (size == 0)
        return 0;
    ll_reject_t why;
    const char *text;
    cJSON *root = beacon_parse((const char *)data, size, &why, &text);
    if (root == NULL) {
        FUZZ_CHECK(text != NULL && (why == REJ_BAD_JSON || why == REJ_BAD_UTF8));
        return 0;
    }
    FUZZ_CHECK(ll_utf8_valid((const char *)data, size));
    char *again = cJSON_PrintUnformatted(root);
    json_t *strict = again ? json_loads(again, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    FUZZ_CHECK(json_is_object(strict));
    json_decref(strict);
    cJSON_free(again);
    const cJSON *events = beacon_events(root);
    if (events == NULL) {
        cJSON_Delete(root);
        return 0;
    }
    ll_visitor_id_t vid;
    ll_str_t v = json_str(root, "v");
    if (v.len != 0 && ll_visitor_from_hex(&vid, v.base, v.len) == 0)
        FUZZ_CHECK(!ll_visitor_is_zero(&vid));
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    ll_buf_t recs, js;
    ll_buf_init(&recs, 64 * LL_EVENT_MAX);
    ll_buf_init(&js, 1 << 20);
    for (const cJSON *e = events->child; e != NULL; e = e->next) {
        ll_event_t ev = {0}, back;
        char *d = NULL;
        ev.time_us = 1700000000000000ull;
        if (beacon_fields(&pool, e, &ev, &d) != NULL) {
            FUZZ_CHECK(d == NULL);
            break;
        }
        size_t off = recs.len;
        int rc = ll_event_encode(&ev, &recs);
        cJSON_free(d);
        if (rc != 0)
            break;
        FUZZ_CHECK(recs.len - off <= LL_EVENT_MAX);
        FUZZ_CHECK(ll_event_decode(recs.data + off, recs.len - off, &back) == 0 && back.type == ev.type);
        for (int t = 1; t < LL_F__MAX; t++)
            FUZZ_CHECK(ll_utf8_valid(back.f[t].base, back.f[t].len));
        ll_buf_reset(&js);
        FUZZ_CHECK(ll_event_to_json(&back, NULL, &js) == 0);
        json_t *j = json_loadb(js.data, js.len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &jerr);
        FUZZ_CHECK(json_is_object(j));
        json_decref(j);
    }
    ll_buf_free(&recs);
    ll_buf_free(&js);
    h2o_mem_clear_pool(&pool);
    cJSON_Delete(root);
    return 0;
}
