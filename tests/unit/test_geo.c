/*
 * Address parsing, formatting, truncation, client resolution and geo lookups.
 *
 * The databases come from LL_TEST_GEODB (country), LL_TEST_CITYDB and LL_TEST_ASNDB. When one
 * is unset the test builds it with deploy/build-geodb.pl into a fresh directory under /tmp
 * (the country database from tor-geoipdb, unless `make` already left build/geo/country.mmdb;
 * City and ASN from the script's --fixture mode). Run from the repository root.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "leadloop/geo.h"
#include "test.h"

static char tmpdir[64];
static const char *country_db, *city_db, *asn_db;
static char country_buf[128], city_buf[128], asn_buf[128];

static ll_ip_t ip(const char *s)
{
    ll_ip_t a;
    if (ll_ip_parse(s, strlen(s), &a) != 0)
        fprintf(stderr, "test_geo: cannot parse %s\n", s);
    return a;
}

static const char *fmt(const ll_ip_t *a)
{
    static char buf[4][64];
    static int n;
    char *b = buf[n++ % 4];
    ll_ip_format(a, b, 64);
    return b;
}

static const char *pfmt(const char *s)
{
    ll_ip_t a = ip(s);
    return fmt(&a);
}

static int parses(const char *s, size_t n)
{
    ll_ip_t a;
    return ll_ip_parse(s, n, &a) == 0;
}

static void test_parse(void)
{
    ll_ip_t a = ip("192.0.2.33");
    CHECK_EQ_INT(a.family, AF_INET);
    CHECK_EQ_INT(ll_ip_len(&a), 4);
    CHECK_EQ_INT(a.addr[0], 192);
    CHECK_EQ_INT(a.addr[3], 33);
    CHECK_EQ_STR(fmt(&a), "192.0.2.33");

    a = ip("2001:DB8::0:1");
    CHECK_EQ_INT(a.family, AF_INET6);
    CHECK_EQ_INT(ll_ip_len(&a), 16);
    CHECK_EQ_STR(fmt(&a), "2001:db8::1");

    /* v4-mapped becomes v4; brackets and surrounding blanks go */
    a = ip("::ffff:198.51.100.7");
    CHECK_EQ_INT(a.family, AF_INET);
    CHECK_EQ_STR(fmt(&a), "198.51.100.7");
    CHECK_EQ_STR(pfmt(" \t[::1] "), "::1");
    CHECK_EQ_STR(pfmt("  10.0.0.1\t"), "10.0.0.1");
    CHECK_EQ_STR(pfmt("[10.0.0.1]"), "10.0.0.1");
    /* ::a.b.c.d (deprecated v4-compatible) stays v6 */
    CHECK_EQ_INT(ip("::1.2.3.4").family, AF_INET6);

    /* the length bounds the parse: the bytes after it are not the address */
    CHECK(parses("10.0.0.1xyz", 8));

    static const char *const bad[] = {
        "", " ", "[]", "[", "]", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.-4", "01.2.3.4", "0x7f.0.0.1",
        "::g", "1:2:3:4:5:6:7:8:9", "fe80::1%eth0", "1.2.3.4:80", "[::1]:443", "[::1", "::1]", "unknown",
        "1.2.3.4 5", "1.2.3.4,5.6.7.8", "localhost", "\xff\xfe",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ll_ip_t b;
        memset(&b, 0x55, sizeof(b));
        if (ll_ip_parse(bad[i], strlen(bad[i]), &b) != LL_EINVAL) {
            fprintf(stderr, "accepted bad address '%s'\n", bad[i]);
            CHECK(0);
        }
        CHECK_EQ_INT(b.family, 0);
        CHECK_EQ_INT(ll_ip_len(&b), 0);
    }
    /* a NUL inside the range must not end the address early */
    CHECK(!parses("1.2.3.4\0garbage", 15));
    /* far too long, and exactly at the bound with blanks */
    char longs[200];
    memset(longs, '1', sizeof(longs));
    CHECK(!parses(longs, sizeof(longs)));
    CHECK(parses("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", 45));
}

static void test_format(void)
{
    ll_ip_t a = ip("203.0.113.200"), z;
    char small[8];

    memset(small, 'x', sizeof(small));
    ll_ip_format(&a, small, sizeof(small)); /* too small: empty, not a cut address */
    CHECK_EQ_STR(small, "");
    ll_ip_format(&a, small, 0);             /* must not write */
    CHECK_EQ_STR(small, "");
    memset(&z, 0, sizeof(z));
    CHECK_EQ_STR(fmt(&z), "");
    a = ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    CHECK_EQ_STR(fmt(&a), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    a = ip("::");
    CHECK_EQ_STR(fmt(&a), "::");
}

static const char *truncated(const char *s, int p4, int p6)
{
    ll_ip_t a = ip(s);
    ll_ip_truncate(&a, p4, p6);
    return fmt(&a);
}

static void test_truncate(void)
{
    CHECK_EQ_STR(truncated("198.51.100.77", 24, 48), "198.51.100.0");
    CHECK_EQ_STR(truncated("198.51.100.77", 32, 48), "198.51.100.77");
    CHECK_EQ_STR(truncated("198.51.100.77", 0, 48), "0.0.0.0");
    CHECK_EQ_STR(truncated("198.51.100.77", 20, 48), "198.51.96.0");
    CHECK_EQ_STR(truncated("198.51.100.77", 16, 0), "198.51.0.0");
    CHECK_EQ_STR(truncated("198.51.100.77", -5, 48), "0.0.0.0");
    CHECK_EQ_STR(truncated("198.51.100.77", 99, 48), "198.51.100.77");
    CHECK_EQ_STR(truncated("2001:db8:abcd:1234:5678::9", 24, 48), "2001:db8:abcd::");
    CHECK_EQ_STR(truncated("2001:db8:abcd:1234:5678::9", 24, 128), "2001:db8:abcd:1234:5678::9");
    CHECK_EQ_STR(truncated("2001:db8:abcd:1234:5678::9", 24, 0), "::");
    CHECK_EQ_STR(truncated("2001:db8:abcd:1234:5678::9", 24, 33), "2001:db8:8000::");
    CHECK_EQ_STR(truncated("2001:db8:abcd:1234:5678::9", 24, 64), "2001:db8:abcd:1234::");
    CHECK_EQ_STR(truncated("2001:db8:abcd:1234:5678::9", 24, 200), "2001:db8:abcd:1234:5678::9");

    ll_ip_t z;
    memset(&z, 0, sizeof(z));
    ll_ip_truncate(&z, 24, 48); /* unknown family: untouched, no crash */
    CHECK_EQ_INT(z.family, 0);
}

static ll_config_t cfg;

static void trust(const char *cidr)
{
    CHECK_EQ_INT(ll_cidr_parse(cidr, &cfg.trusted_proxies[cfg.num_trusted_proxies]), 0);
    cfg.num_trusted_proxies++;
}

/* Resolves with peer and xff (NULL: no header); xff is copied without a NUL so ASan sees overreads. */
static const char *resolve(const char *peer, const char *xff)
{
    ll_ip_t p = ip(peer), out;
    char *copy = NULL;
    size_t n = 0;
    if (xff != NULL) {
        n = strlen(xff);
        copy = malloc(n ? n : 1);
        memcpy(copy, xff, n);
    }
    ll_ip_resolve(&cfg, &p, copy, n, &out);
    free(copy);
    return fmt(&out);
}

static void test_resolve(void)
{
    memset(&cfg, 0, sizeof(cfg));
    /* no trusted proxies: the header is ignored */
    CHECK_EQ_STR(resolve("203.0.113.9", "198.51.100.1"), "203.0.113.9");
    CHECK_EQ_STR(resolve("203.0.113.9", NULL), "203.0.113.9");

    trust("10.0.0.0/8");
    trust("::1");
    /* a spoofed header from an untrusted peer is ignored */
    CHECK_EQ_STR(resolve("203.0.113.9", "198.51.100.1"), "203.0.113.9");
    CHECK_EQ_STR(resolve("203.0.113.9", "10.0.0.1, 198.51.100.1"), "203.0.113.9");
    /* one trusted hop */
    CHECK_EQ_STR(resolve("10.1.2.3", "198.51.100.1"), "198.51.100.1");
    CHECK_EQ_STR(resolve("10.1.2.3", NULL), "10.1.2.3");
    CHECK_EQ_STR(resolve("10.1.2.3", ""), "10.1.2.3");
    /* the rightmost untrusted entry wins; whatever the client put to its left does not */
    CHECK_EQ_STR(resolve("10.1.2.3", "1.1.1.1, 198.51.100.1,10.9.9.9 ,  10.8.8.8"), "198.51.100.1");
    /* garbage left of the client does not matter; garbage right of it stops at the last good one */
    CHECK_EQ_STR(resolve("10.1.2.3", "evil, 198.51.100.1"), "198.51.100.1");
    CHECK_EQ_STR(resolve("10.1.2.3", "198.51.100.1, evil"), "10.1.2.3");
    CHECK_EQ_STR(resolve("10.1.2.3", "198.51.100.1, evil, 10.4.4.4"), "10.4.4.4");
    CHECK_EQ_STR(resolve("10.1.2.3", "198.51.100.1, 10.4.4.4:8080"), "10.1.2.3");
    /* all trusted: the leftmost one seen */
    CHECK_EQ_STR(resolve("10.1.2.3", "10.5.5.5, 10.6.6.6"), "10.5.5.5");
    /* empty list elements are allowed by HTTP and skipped */
    CHECK_EQ_STR(resolve("10.1.2.3", " , 198.51.100.1,, "), "198.51.100.1");
    CHECK_EQ_STR(resolve("10.1.2.3", ",,,"), "10.1.2.3");
    /* v6 proxy, bracketed v6 client, v4-mapped peer */
    CHECK_EQ_STR(resolve("::1", "[2001:db8::7]"), "2001:db8::7");
    CHECK_EQ_STR(resolve("::ffff:10.0.0.1", "2001:db8::7"), "2001:db8::7");
    CHECK_EQ_STR(resolve("::2", "2001:db8::7"), "::2");
    CHECK_EQ_STR(resolve("10.1.2.3", "::ffff:198.51.100.4"), "198.51.100.4");

    /* the walk is bounded: a client hiding behind 40 "trusted" hops is not reached */
    char big[1024] = "198.51.100.1";
    for (int i = 0; i < 40; i++)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), ", 10.0.0.%d", i + 1);
    CHECK_EQ_STR(resolve("10.1.2.3", big), "10.0.0.9"); /* 32 entries from the right */
    char ok[1024] = "198.51.100.1";
    for (int i = 0; i < 31; i++)
        snprintf(ok + strlen(ok), sizeof(ok) - strlen(ok), ", 10.0.0.%d", i + 1);
    CHECK_EQ_STR(resolve("10.1.2.3", ok), "198.51.100.1");

    /* no config at all */
    ll_ip_t p = ip("10.1.2.3"), out;
    ll_ip_resolve(NULL, &p, "198.51.100.1", 12, &out);
    CHECK_EQ_STR(fmt(&out), "10.1.2.3");
}

/* Builds what the environment does not name; returns 0 when every database is there. */
static int build(const char *cmd)
{
    char full[1024];
    snprintf(full, sizeof(full), "%s 2>%s/build.log", cmd, tmpdir);
    if (system(full) != 0) {
        fprintf(stderr, "test_geo: '%s' failed:\n", cmd);
        snprintf(full, sizeof(full), "cat %s/build.log >&2", tmpdir);
        if (system(full) != 0)
            fprintf(stderr, "(no log)\n");
        return -1;
    }
    return 0;
}

static int find_dbs(void)
{
    country_db = getenv("LL_TEST_GEODB");
    city_db = getenv("LL_TEST_CITYDB");
    asn_db = getenv("LL_TEST_ASNDB");
    if (country_db == NULL && access("build/geo/country.mmdb", R_OK) == 0)
        country_db = "build/geo/country.mmdb";
    if (country_db != NULL && city_db != NULL && asn_db != NULL)
        return 0;

    strcpy(tmpdir, "/tmp/leadloop-geo-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("test_geo: mkdtemp");
        return -1;
    }
    char cmd[512];
    if (country_db == NULL) {
        snprintf(country_buf, sizeof(country_buf), "%s/country.mmdb", tmpdir);
        snprintf(cmd, sizeof(cmd), "perl deploy/build-geodb.pl /usr/share/tor/geoip /usr/share/tor/geoip6 %s",
                 country_buf);
        if (build(cmd) != 0)
            return -1;
        country_db = country_buf;
    }
    if (city_db == NULL || asn_db == NULL) {
        snprintf(city_buf, sizeof(city_buf), "%s/city.mmdb", tmpdir);
        snprintf(asn_buf, sizeof(asn_buf), "%s/asn.mmdb", tmpdir);
        snprintf(cmd, sizeof(cmd), "perl deploy/build-geodb.pl --fixture %s %s", city_buf, asn_buf);
        if (build(cmd) != 0)
            return -1;
        if (city_db == NULL)
            city_db = city_buf;
        if (asn_db == NULL)
            asn_db = asn_buf;
    }
    return 0;
}

static void cleanup_dbs(void)
{
    char cmd[128];
    if (tmpdir[0] == '\0')
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_geo: could not remove %s\n", tmpdir);
}

static ll_geo_t look(const ll_geo_db_t *g, const char *addr)
{
    ll_geo_t out;
    ll_ip_t a = ip(addr);
    memset(&out, 0x55, sizeof(out)); /* lookup must zero it */
    ll_geo_lookup(g, &a, &out);
    return out;
}

static void test_open_errors(void)
{
    ll_geo_db_t *g = (ll_geo_db_t *)&g;
    char err[256] = "";

    CHECK_EQ_INT(ll_geo_open("/nonexistent/x.mmdb", NULL, NULL, &g, err, sizeof(err)), LL_EIO);
    CHECK(g == NULL);
    CHECK(strstr(err, "/nonexistent/x.mmdb: cannot open geo database: ") == err);
    /* a file that is not a database, in the second slot: named, and the first is released (ASan) */
    err[0] = '\0';
    CHECK_EQ_INT(ll_geo_open(country_db, "tests/unit/test.h", NULL, &g, err, sizeof(err)), LL_EIO);
    CHECK(g == NULL);
    CHECK(strstr(err, "tests/unit/test.h: cannot open geo database: ") == err);
    err[0] = '\0';
    CHECK_EQ_INT(ll_geo_open(NULL, NULL, "/nonexistent/asn.mmdb", &g, err, 8), LL_EIO);
    CHECK_EQ_INT(strlen(err), 7); /* cut, terminated */

    /* nothing configured: opens, knows nothing */
    CHECK_EQ_INT(ll_geo_open(NULL, NULL, NULL, &g, err, sizeof(err)), 0);
    ll_geo_t o = look(g, "8.8.8.8");
    CHECK_EQ_STR(o.country, "");
    ll_geo_close(g);
    ll_geo_close(NULL);
    o = look(NULL, "8.8.8.8");
    CHECK_EQ_STR(o.country, "");
}

static void test_country(void)
{
    ll_geo_db_t *g = NULL;
    char err[256] = "";

    CHECK_EQ_INT(ll_geo_open(country_db, NULL, NULL, &g, err, sizeof(err)), 0);
    if (g == NULL) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    ll_geo_t o = look(g, "8.8.8.8");
    CHECK_EQ_STR(o.country, "US");
    CHECK_EQ_STR(o.city, "");
    CHECK_EQ_INT(o.asn, 0);
    CHECK_EQ_STR(look(g, "85.214.132.117").country, "DE");  /* Strato, Berlin */
    CHECK_EQ_STR(look(g, "141.20.1.1").country, "DE");      /* Humboldt-Universität */
    CHECK_EQ_STR(look(g, "2003::1").country, "DE");         /* Deutsche Telekom */
    CHECK_EQ_STR(look(g, "2001:4860:4860::8888").country, "US");
    CHECK_EQ_STR(look(g, "::ffff:8.8.4.4").country, "US");
    CHECK_EQ_STR(look(g, "127.0.0.1").country, "");
    CHECK_EQ_STR(look(g, "10.1.2.3").country, "");
    CHECK_EQ_STR(look(g, "::1").country, "");
    ll_ip_t z;
    ll_geo_t oz;
    memset(&z, 0, sizeof(z));
    ll_geo_lookup(g, &z, &oz);
    CHECK_EQ_STR(oz.country, "");
    ll_geo_close(g);

    /* a City database accepted in the country slot (same country/iso_code layout) */
    CHECK_EQ_INT(ll_geo_open(city_db, NULL, NULL, &g, err, sizeof(err)), 0);
    if (g != NULL) {
        o = look(g, "198.51.100.7");
        CHECK_EQ_STR(o.country, "US");
        CHECK_EQ_STR(o.city, ""); /* the country slot gives only the country */
        ll_geo_close(g);
    }
}

static void test_city_asn(void)
{
    ll_geo_db_t *g = NULL;
    char err[256] = "";

    CHECK_EQ_INT(ll_geo_open(NULL, city_db, asn_db, &g, err, sizeof(err)), 0);
    if (g == NULL) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    ll_geo_t o = look(g, "198.51.100.7");
    CHECK_EQ_STR(o.country, "US");
    CHECK_EQ_STR(o.region, "CA");
    CHECK_EQ_STR(o.city, "San Francisco");
    CHECK_EQ_STR(o.tz, "America/Los_Angeles");
    CHECK_EQ_INT(o.asn, 64500);
    CHECK_EQ_STR(o.org, "Example Net");

    o = look(g, "2001:db8:1::99");
    CHECK_EQ_STR(o.country, "DE");
    CHECK_EQ_STR(o.region, "BE");
    CHECK_EQ_STR(o.city, "Berlin");
    CHECK_EQ_STR(o.tz, "Europe/Berlin");
    CHECK_EQ_INT(o.asn, 0);
    CHECK_EQ_STR(o.org, "");

    /* oversized values: bounded, cut on a UTF-8 boundary, a bogus country code dropped */
    o = look(g, "192.0.2.1");
    CHECK_EQ_STR(o.country, "");
    CHECK_EQ_INT(strlen(o.region), sizeof(o.region) - 1);
    CHECK(strncmp(o.region, "REGION-CODE-TOO", 15) == 0);
    CHECK_EQ_INT(strlen(o.city), 62); /* 31 two-byte characters; the 32nd would not fit whole */
    CHECK(ll_utf8_valid(o.city, strlen(o.city)));
    CHECK_EQ_INT(strlen(o.tz), sizeof(o.tz) - 1);
    CHECK_EQ_INT(o.asn, 4200000000u);
    CHECK_EQ_INT(strlen(o.org), sizeof(o.org) - 1);

    o = look(g, "127.0.0.1");
    CHECK_EQ_STR(o.country, "");
    CHECK_EQ_STR(o.city, "");
    CHECK_EQ_INT(o.asn, 0);
    ll_geo_close(g);

    /* all three: country from the country database, the rest from City/ASN, and City fills
     * the country where the country database has none (documentation ranges are reserved) */
    CHECK_EQ_INT(ll_geo_open(country_db, city_db, asn_db, &g, err, sizeof(err)), 0);
    if (g == NULL)
        return;
    o = look(g, "198.51.100.7");
    CHECK_EQ_STR(o.country, "US");
    CHECK_EQ_STR(o.city, "San Francisco");
    CHECK_EQ_INT(o.asn, 64500);
    o = look(g, "85.214.132.117");
    CHECK_EQ_STR(o.country, "DE");
    CHECK_EQ_STR(o.city, "");
    o = look(g, "8.8.8.8"); /* the fixture says CA/Toronto on purpose */
    CHECK_EQ_STR(o.country, "US");
    CHECK_EQ_STR(o.city, "Toronto");
    ll_geo_close(g);
}

static void test_country_tz(void)
{
    char tz[64];
    CHECK_EQ_INT(ll_geo_country_tz("FR", tz, sizeof(tz)), 0);
    CHECK_EQ_STR(tz, "Europe/Paris");
    CHECK_EQ_INT(ll_geo_country_tz("jp", tz, sizeof(tz)), 0);
    CHECK_EQ_STR(tz, "Asia/Tokyo");
    CHECK_EQ_INT(ll_geo_country_tz("US", tz, sizeof(tz)), 0);
    CHECK_EQ_STR(tz, "America/New_York");
    CHECK_EQ_INT(ll_geo_country_tz("CA", tz, sizeof(tz)), 0); /* not St Johns, the first in zone.tab */
    CHECK_EQ_STR(tz, "America/Toronto");
    CHECK_EQ_INT(ll_geo_country_tz("AU", tz, sizeof(tz)), 0);
    CHECK_EQ_STR(tz, "Australia/Sydney");
    CHECK_EQ_INT(ll_geo_country_tz("ZZ", tz, sizeof(tz)), LL_ENOTFOUND);
    CHECK_EQ_INT(ll_geo_country_tz("F", tz, sizeof(tz)), LL_ENOTFOUND);
    CHECK_EQ_INT(ll_geo_country_tz("F1", tz, sizeof(tz)), LL_ENOTFOUND);
    CHECK_EQ_INT(ll_geo_country_tz(NULL, tz, sizeof(tz)), LL_ENOTFOUND);
}

int main(void)
{
    RUN(test_country_tz);
    RUN(test_parse);
    RUN(test_format);
    RUN(test_truncate);
    RUN(test_resolve);
    if (find_dbs() != 0) {
        test_failed++;
        fprintf(stderr, "FAIL geo databases\n");
    } else {
        RUN(test_open_errors);
        RUN(test_country);
        RUN(test_city_asn);
    }
    cleanup_dbs();
    return TEST_DONE("geo");
}
