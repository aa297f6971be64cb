/*
 * The visitor cookie in a Cookie header (ll__cookie_visitor, server/http.c). Input: the header
 * value; the cookie name is the default "_ll", or "x" when the value starts with '!'.
 * Properties: a found visitor is non-zero and its hex appears in the header right after
 * "<name>=".
 */
#include <ctype.h>
#include <string.h>
#include "fuzz.h"
#include "../../server/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *name = size > 0 && data[0] == '!' ? "x" : "_ll";
    ll_visitor_id_t v;
    if (ll__cookie_visitor(name, (const char *)data, size, &v) != 0)
        return 0;
    FUZZ_CHECK(!ll_visitor_is_zero(&v));
    char hex[33], want[40];
    ll_visitor_to_hex(&v, hex);
    int wl = snprintf(want, sizeof(want), "%s=%s", name, hex);
    int found = 0;
    for (size_t i = 0; !found && i + (size_t)wl <= size; i++) {
        found = 1;
        for (int k = 0; k < wl && found; k++)
            found = tolower(data[i + k]) == want[k];
    }
    FUZZ_CHECK(found);
    return 0;
}
