/*
 * ll_utf8_valid and ll_buf_append_json_str, checked against jansson: both must agree on what
 * is valid UTF-8 (without NULs), and the escaped text must read back as a JSON string that
 * equals the input whenever the input was valid.
 */
#include <string.h>
#include <jansson.h>
#include "fuzz.h"
#include "leadloop/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int valid = ll_utf8_valid(s, size);
    json_t *t = memchr(s, 0, size) == NULL ? json_stringn(s, size) : NULL;
    int jvalid = t != NULL;
    json_decref(t);
    FUZZ_CHECK(valid == jvalid);

    ll_buf_t b;
    ll_buf_init(&b, 8 * size + 16);
    FUZZ_CHECK(ll_buf_append(&b, "\"", 1) == 0);
    FUZZ_CHECK(ll_buf_append_json_str(&b, s, size) == 0);
    FUZZ_CHECK(ll_buf_append(&b, "\"", 1) == 0);
    /* No raw line breaks of any kind in the output (one event, one line). */
    for (size_t i = 0; i < b.len; i++)
        FUZZ_CHECK((unsigned char)b.data[i] >= 0x20 && b.data[i] != 0x7f);
    FUZZ_CHECK(b.len < 3 || strstr(b.data, "\xe2\x80\xa8") == NULL);
    json_error_t jerr;
    json_t *j = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    FUZZ_CHECK(json_is_string(j));
    if (valid)
        FUZZ_CHECK(json_string_length(j) == size && memcmp(json_string_value(j), s, size) == 0);
    json_decref(j);
    ll_buf_free(&b);
    return 0;
}
