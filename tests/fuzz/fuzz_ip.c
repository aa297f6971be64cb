/*
 * ll_ip_parse and ll_ip_resolve of X-Forwarded-For behind trusted proxies. Input: one byte
 * picking the peer (trusted or not, v4 or v6) and truncation prefixes, then the header value.
 * Properties: a parsed address formats and parses back to itself; the resolved client is the
 * peer or an address that appears in the header; truncation never leaves host bits.
 */
#include <string.h>
#include <arpa/inet.h>
#include "fuzz.h"
#include "leadloop/config.h"
#include "leadloop/geo.h"

static ll_config_t conf;
static int ready;

static void init(void)
{
    static const char *const proxies[] = {"10.0.0.0/8", "::1", "192.168.1.0/24", "fd00::/8", "127.0.0.1"};
    ll_config_defaults(&conf);
    for (size_t i = 0; i < sizeof(proxies) / sizeof(proxies[0]); i++)
        FUZZ_CHECK(ll_cidr_parse(proxies[i], &conf.trusted_proxies[conf.num_trusted_proxies++]) == 0);
    ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        init();
    if (size < 1)
        return 0;
    static const char *const peers[] = {"10.1.2.3", "::1", "203.0.113.9", "2001:db8::1"};
    ll_ip_t peer, out, again;
    char text[64];
    FUZZ_CHECK(ll_ip_parse(peers[data[0] & 3], strlen(peers[data[0] & 3]), &peer) == 0);
    const char *s = (const char *)data + 1;
    size_t n = size - 1;

    ll_ip_resolve(&conf, &peer, s, n, &out);
    FUZZ_CHECK(out.family == AF_INET || out.family == AF_INET6);
    if (memcmp(&out, &peer, sizeof(out)) != 0)
        FUZZ_CHECK(n > 0);

    if (ll_ip_parse(s, n, &out) == 0) {
        ll_ip_format(&out, text, sizeof(text));
        FUZZ_CHECK(ll_ip_parse(text, strlen(text), &again) == 0 && memcmp(&again, &out, sizeof(out)) == 0);
        int v4 = (data[0] >> 2) % 40 - 4, v6 = (data[0] >> 2) * 3 % 140 - 6;
        ll_ip_truncate(&out, v4, v6);
        int bits = out.family == AF_INET ? (v4 < 0 ? 0 : v4 > 32 ? 32 : v4) : (v6 < 0 ? 0 : v6 > 128 ? 128 : v6);
        for (int b = bits; b < 128; b++)
            FUZZ_CHECK((out.addr[b / 8] & (0x80 >> (b % 8))) == 0);
    }
    /* ll_cidr_parse reads the operator's trusted_proxies: a NUL-terminated copy. */
    if (n < 80) {
        char c[80];
        ll_cidr_t cidr;
        memcpy(c, s, n);
        c[n] = '\0';
        if (ll_cidr_parse(c, &cidr) == 0)
            FUZZ_CHECK((cidr.family == AF_INET && cidr.bits >= 0 && cidr.bits <= 32) ||
                       (cidr.family == AF_INET6 && cidr.bits >= 0 && cidr.bits <= 128));
    }
    return 0;
}
