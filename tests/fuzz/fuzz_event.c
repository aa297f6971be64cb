/*
 * ll_event_decode of a stored record (the store is shared by three programs and may hold a
 * record from a newer writer or a torn one), then ll_event_to_json, which the CLI and exports
 * print. Properties: the JSON always parses as one object (integers read as reals: ids are
 * u64, which jansson's int64 cannot hold, yet valid JSON); re-encoding a decoded event decodes
 * again, each field a prefix of the original and within its limit.
 */
#include <string.h>
#include <jansson.h>
#include "fuzz.h"
#include "leadloop/event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ll_event_t ev, ev2;
    ll_buf_t out, rec;
    if (ll_event_decode(data, size, &ev) != 0)
        return 0;
    /* An email from the contact record: take it from the record's own tail when there is one. */
    char email[64] = "";
    if (size > LL_EVENT_HEADER + 8) {
        size_t n = size - LL_EVENT_HEADER < sizeof(email) - 1 ? size - LL_EVENT_HEADER : sizeof(email) - 1;
        memcpy(email, data + size - n, n);
        email[n] = '\0';
    }
    ll_buf_init(&out, 1 << 20);
    FUZZ_CHECK(ll_event_to_json(&ev, data[3] & 0x80 ? email : NULL, &out) == 0);
    json_error_t jerr;
    json_t *j = json_loadb(out.data, out.len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &jerr);
    if (!json_is_object(j))
        fprintf(stderr, "not JSON (%s): %.*s\n", jerr.text, (int)(out.len > 2000 ? 2000 : out.len), out.data);
    FUZZ_CHECK(json_is_object(j));
    json_decref(j);
    ll_buf_free(&out);

    ll_buf_init(&rec, LL_EVENT_MAX);
    if (ll_event_encode(&ev, &rec) == 0) {
        FUZZ_CHECK(rec.len <= LL_EVENT_MAX);
        FUZZ_CHECK(ll_event_decode(rec.data, rec.len, &ev2) == 0);
        FUZZ_CHECK(ev2.type == ev.type && ev2.seq == ev.seq && ev2.contact == ev.contact && ev2.reasons == ev.reasons);
        for (int t = 1; t < LL_F__MAX; t++) {
            FUZZ_CHECK(ev2.f[t].len <= ev.f[t].len && ev2.f[t].len <= ll_event_field_limit(t));
            FUZZ_CHECK(ev2.f[t].len == 0 || memcmp(ev2.f[t].base, ev.f[t].base, ev2.f[t].len) == 0);
        }
    }
    ll_buf_free(&rec);
    return 0;
}
