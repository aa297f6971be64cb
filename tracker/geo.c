/* Client address parsing and resolution, truncation, and MMDB geo lookups (see geo.h). */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <maxminddb.h>
#include "leadloop/geo.h"

/* X-Forwarded-For entries examined at most; a longer chain is someone padding the header. */
#define XFF_MAX_ENTRIES 32
/* Longest textual address accepted, with brackets and surrounding blanks already removed. */
#define IP_TEXT_MAX INET6_ADDRSTRLEN

struct st_ll_geo_db_t {
    MMDB_s country, city, asn;
    int has_country, has_city, has_asn;
};

static int open_one(const char *path, MMDB_s *db, int *has, char *err, size_t errlen)
{
    if (path == NULL)
        return 0;
    errno = 0;
    int st = MMDB_open(path, MMDB_MODE_MMAP, db);
    if (st != MMDB_SUCCESS) {
        if (st == MMDB_IO_ERROR && errno != 0)
            return ll_err(err, errlen, LL_EIO, "%s: cannot open geo database: %s (%s)", path, MMDB_strerror(st),
                          strerror(errno));
        return ll_err(err, errlen, LL_EIO, "%s: cannot open geo database: %s", path, MMDB_strerror(st));
    }
    *has = 1;
    return 0;
}

int ll_geo_open(const char *country, const char *city, const char *asn, ll_geo_db_t **out, char *err, size_t errlen)
{
    ll_geo_db_t *g = ll_calloc(1, sizeof(*g));
    int r;

    *out = NULL;
    if ((r = open_one(country, &g->country, &g->has_country, err, errlen)) != 0 ||
        (r = open_one(city, &g->city, &g->has_city, err, errlen)) != 0 ||
        (r = open_one(asn, &g->asn, &g->has_asn, err, errlen)) != 0)
        goto fail;
    *out = g;
    return 0;
fail:
    ll_geo_close(g);
    return r;
}

void ll_geo_close(ll_geo_db_t *g)
{
    if (g == NULL)
        return;
    if (g->has_country)
        MMDB_close(&g->country);
    if (g->has_city)
        MMDB_close(&g->city);
    if (g->has_asn)
        MMDB_close(&g->asn);
    free(g);
}

/*
 * Copies a utf8_string at path into out. MMDB strings are not NUL-terminated, so the copy is
 * bounded by data_size and by outlen, and a cut never splits a UTF-8 sequence. A missing key or
 * a value of another type leaves out empty.
 */
static void get_string(MMDB_entry_s *entry, char *out, size_t outlen, const char *const *path)
{
    MMDB_entry_data_s d;

    out[0] = '\0';
    if (MMDB_aget_value(entry, &d, path) != MMDB_SUCCESS || !d.has_data || d.type != MMDB_DATA_TYPE_UTF8_STRING)
        return;
    size_t n = d.data_size;
    if (n > outlen - 1) {
        n = outlen - 1;
        while (n > 0 && ((unsigned char)d.utf8_string[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(out, d.utf8_string, n);
    out[n] = '\0';
}

/* A country code is two ASCII capitals; anything else from a foreign database is dropped. */
static void get_country(MMDB_entry_s *entry, char out[3])
{
    static const char *const path[] = {"country", "iso_code", NULL};
    char cc[8];

    get_string(entry, cc, sizeof(cc), path);
    if (strlen(cc) == 2 && cc[0] >= 'A' && cc[0] <= 'Z' && cc[1] >= 'A' && cc[1] <= 'Z')
        memcpy(out, cc, 3);
}

static int lookup(const MMDB_s *db, const struct sockaddr *sa, MMDB_entry_s *entry)
{
    int mmdb_err = MMDB_SUCCESS;
    MMDB_lookup_result_s res = MMDB_lookup_sockaddr(db, sa, &mmdb_err);

    if (mmdb_err != MMDB_SUCCESS || !res.found_entry)
        return 0;
    *entry = res.entry;
    return 1;
}

void ll_geo_lookup(const ll_geo_db_t *g, const ll_ip_t *ip, ll_geo_t *out)
{
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    const struct sockaddr *sa;
    MMDB_entry_s entry;

    memset(out, 0, sizeof(*out));
    if (g == NULL)
        return;
    if (ip->family == AF_INET) {
        memset(&sin, 0, sizeof(sin));
        sin.sin_family = AF_INET;
        memcpy(&sin.sin_addr, ip->addr, 4);
        sa = (const struct sockaddr *)&sin;
    } else if (ip->family == AF_INET6) {
        memset(&sin6, 0, sizeof(sin6));
        sin6.sin6_family = AF_INET6;
        memcpy(&sin6.sin6_addr, ip->addr, 16);
        sa = (const struct sockaddr *)&sin6;
    } else {
        return;
    }

    if (g->has_country && lookup(&g->country, sa, &entry))
        get_country(&entry, out->country);
    if (g->has_city && lookup(&g->city, sa, &entry)) {
        static const char *const region[] = {"subdivisions", "0", "iso_code", NULL};
        static const char *const city[] = {"city", "names", "en", NULL};
        static const char *const tz[] = {"location", "time_zone", NULL};
        /* The configured country database wins; the City one fills in where it knows nothing. */
        if (out->country[0] == '\0')
            get_country(&entry, out->country);
        get_string(&entry, out->region, sizeof(out->region), region);
        get_string(&entry, out->city, sizeof(out->city), city);
        get_string(&entry, out->tz, sizeof(out->tz), tz);
    }
    if (g->has_asn && lookup(&g->asn, sa, &entry)) {
        static const char *const asn[] = {"autonomous_system_number", NULL};
        static const char *const org[] = {"autonomous_system_organization", NULL};
        MMDB_entry_data_s d;
        if (MMDB_aget_value(&entry, &d, asn) == MMDB_SUCCESS && d.has_data && d.type == MMDB_DATA_TYPE_UINT32)
            out->asn = d.uint32;
        get_string(&entry, out->org, sizeof(out->org), org);
    }
}

/* ::ffff:a.b.c.d is an IPv4 client seen through a dual-stack socket: store it as IPv4. */
static void unmap_v4(ll_ip_t *ip)
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (ip->family == AF_INET6 && memcmp(ip->addr, prefix, sizeof(prefix)) == 0) {
        memmove(ip->addr, ip->addr + 12, 4);
        memset(ip->addr + 4, 0, 12);
        ip->family = AF_INET;
    }
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

int ll_ip_parse(const char *s, size_t n, ll_ip_t *out)
{
    char buf[IP_TEXT_MAX + 1];

    memset(out, 0, sizeof(*out));
    while (n > 0 && is_blank(s[0]))
        s++, n--;
    while (n > 0 && is_blank(s[n - 1]))
        n--;
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
        s++, n -= 2;
    /* inet_pton stops at a NUL, so one inside the range would let trailing bytes through. */
    if (n == 0 || n > IP_TEXT_MAX || memchr(s, '\0', n) != NULL)
        return LL_EINVAL;
    memcpy(buf, s, n);
    buf[n] = '\0';

    int family = memchr(buf, ':', n) != NULL ? AF_INET6 : AF_INET;
    if (inet_pton(family, buf, out->addr) != 1) {
        memset(out, 0, sizeof(*out));
        return LL_EINVAL;
    }
    out->family = family;
    unmap_v4(out);
    return 0;
}

void ll_ip_format(const ll_ip_t *ip, char *out, size_t outlen)
{
    if (outlen == 0)
        return;
    if ((ip->family != AF_INET && ip->family != AF_INET6) ||
        inet_ntop(ip->family, ip->addr, out, (socklen_t)(outlen > 64 ? 64 : outlen)) == NULL)
        out[0] = '\0';
}

static int is_trusted(const ll_config_t *c, const ll_ip_t *ip)
{
    for (size_t i = 0; i < c->num_trusted_proxies && i < LL_MAX_PROXIES; i++)
        if (ll_cidr_match(&c->trusted_proxies[i], ip->family, ip->addr))
            return 1;
    return 0;
}

void ll_ip_resolve(const ll_config_t *c, const ll_ip_t *peer, const char *xff, size_t xff_len, ll_ip_t *out)
{
    ll_ip_t good = *peer;

    unmap_v4(&good);
    *out = good;
    /* Only a trusted proxy may speak for someone else: anyone can send X-Forwarded-For. */
    if (c == NULL || xff == NULL || !is_trusted(c, &good))
        return;

    size_t end = xff_len;
    for (int seen = 0; seen < XFF_MAX_ENTRIES && end > 0; seen++) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        ll_ip_t cur;
        const char *e = xff + start;
        size_t n = end - start;
        end = start > 0 ? start - 1 : 0;
        while (n > 0 && is_blank(*e))
            e++, n--;
        if (n == 0) /* "a, , b": HTTP list syntax allows empty elements */
            continue;
        if (ll_ip_parse(e, n, &cur) != 0)
            break; /* a proxy we trust did not write this: stop at the last address we believe */
        good = cur;
        if (!is_trusted(c, &cur))
            break;
    }
    *out = good;
}

void ll_ip_truncate(ll_ip_t *ip, int v4_prefix, int v6_prefix)
{
    int bits, total;

    if (ip->family == AF_INET)
        bits = v4_prefix, total = 32;
    else if (ip->family == AF_INET6)
        bits = v6_prefix, total = 128;
    else
        return;
    if (bits < 0)
        bits = 0;
    if (bits > total)
        bits = total;
    int byte = bits / 8, rem = bits % 8;
    if (rem != 0)
        ip->addr[byte++] &= (uint8_t)(0xff << (8 - rem));
    memset(ip->addr + byte, 0, (size_t)(16 - byte));
}

size_t ll_ip_len(const ll_ip_t *ip)
{
    return ip->family == AF_INET ? 4 : ip->family == AF_INET6 ? 16 : 0;
}

/* ---- a country's time zone ---- */

#define ZONE_TAB "/usr/share/zoneinfo/zone.tab"

/* Countries whose first zone in zone.tab is not where most of their people live. */
static const char *const main_zone[][2] = {
    {"AU", "Australia/Sydney"}, {"BR", "America/Sao_Paulo"}, {"CA", "America/Toronto"},
    {"RU", "Europe/Moscow"},    {"UA", "Europe/Kyiv"},       {"UZ", "Asia/Tashkent"},
};

static char zones[26 * 26][48];
static pthread_once_t zones_once = PTHREAD_ONCE_INIT;

static void load_zones(void)
{
    FILE *f = fopen(ZONE_TAB, "r");
    char line[512];
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f) != NULL) {
        /* CC <tab> coordinates <tab> zone [<tab> comment] */
        if (line[0] < 'A' || line[0] > 'Z' || line[1] < 'A' || line[1] > 'Z' || line[2] != '\t')
            continue;
        char *zone = strchr(line + 3, '\t');
        if (zone == NULL)
            continue;
        zone++;
        zone[strcspn(zone, "\t\r\n")] = '\0';
        char *slot = zones[(line[0] - 'A') * 26 + (line[1] - 'A')];
        int preferred = 0;
        for (size_t i = 0; i < sizeof(main_zone) / sizeof(main_zone[0]); i++)
            preferred |= memcmp(main_zone[i][0], line, 2) == 0 && strcmp(main_zone[i][1], zone) == 0;
        if ((slot[0] == '\0' || preferred) && strlen(zone) < sizeof(zones[0]))
            snprintf(slot, sizeof(zones[0]), "%s", zone);
    }
    fclose(f);
}

int ll_geo_country_tz(const char *cc, char *out, size_t outlen)
{
    pthread_once(&zones_once, load_zones);
    if (cc == NULL || strlen(cc) != 2)
        return LL_ENOTFOUND;
    int a = toupper((unsigned char)cc[0]) - 'A', b = toupper((unsigned char)cc[1]) - 'A';
    if (a < 0 || a >= 26 || b < 0 || b >= 26 || zones[a * 26 + b][0] == '\0')
        return LL_ENOTFOUND;
    snprintf(out, outlen, "%s", zones[a * 26 + b]);
    return 0;
}
