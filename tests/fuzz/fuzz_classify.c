/*
 * ll_classify of the request headers a client chooses. Input: one flag byte (HEAD, from the
 * snippet), then User-Agent, Purpose and Sec-Purpose separated by '\n'. Properties: the class
 * is in range and at least one reason explains any class other than unknown.
 */
#include <string.h>
#include "fuzz.h"
#include "leadloop/classify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    ll_classify_in_t in = {.is_head = data[0] & 1, .from_snippet = (data[0] >> 1) & 1};
    ll_str_t *parts[] = {&in.ua, &in.purpose, &in.sec_purpose};
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    for (size_t i = 0; i < 3 && p <= end; i++) {
        const char *nl = i < 2 ? memchr(p, '\n', end - p) : NULL, *stop = nl ? nl : end;
        *parts[i] = ll_str(p, stop - p);
        p = stop + 1;
    }
    uint32_t reasons = 0;
    int cls = ll_classify(&in, &reasons);
    FUZZ_CHECK(cls >= 0 && cls < LL_CLASS__MAX);
    FUZZ_CHECK(cls == LL_CLASS_UNKNOWN || cls == LL_CLASS_HUMAN || reasons != 0);
    return 0;
}
