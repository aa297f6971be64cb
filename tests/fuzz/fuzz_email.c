/*
 * ll_email_normalize of a form's email field. Properties: an accepted address is at most 254
 * bytes of valid UTF-8 with one '@', has no upper-case ASCII, and normalises to itself.
 */
#include <string.h>
#include "fuzz.h"
#include "leadloop/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[256], again[256];
    if (ll_email_normalize((const char *)data, size, out) != 0)
        return 0;
    size_t n = strlen(out);
    FUZZ_CHECK(n >= 3 && n <= 254 && ll_utf8_valid(out, n));
    const char *at = strchr(out, '@');
    FUZZ_CHECK(at != NULL && strchr(at + 1, '@') == NULL && at != out);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(!(out[i] >= 'A' && out[i] <= 'Z') && (unsigned char)out[i] > 0x20);
    FUZZ_CHECK(ll_email_normalize(out, n, again) == 0 && strcmp(out, again) == 0);
    return 0;
}
