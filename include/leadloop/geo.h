/*
 * Client address, geolocation and address truncation.
 *
 * The client address is the peer address unless the peer is a configured trusted proxy, in
 * which case X-Forwarded-For is walked from the right, skipping trusted proxies; the first
 * untrusted address is the client. A malformed entry stops the walk at the last good address.
 *
 * Geo is looked up on the full address (libmaxminddb); the address stored with an event is
 * then truncated per policy (default /24 for IPv4, /48 for IPv6). The country database is
 * either the bundled one built from tor-geoipdb (deploy/build-geodb.pl) or a configured
 * GeoIP2/GeoLite2 database; optional City and ASN databases add region, city, time zone, ASN
 * and organisation. MMDB strings are not NUL-terminated: every copy is bounded.
 */
#ifndef LEADLOOP_GEO_H
#define LEADLOOP_GEO_H

#include "leadloop/common.h"
#include "leadloop/config.h"

typedef struct st_ll_ip_t {
    int family; /* AF_INET, AF_INET6, or 0 when unknown */
    uint8_t addr[16];
} ll_ip_t;

typedef struct st_ll_geo_t {
    char country[3]; /* ISO code, "" when unknown */
    char region[16]; /* ISO subdivision code */
    char city[64];
    char tz[48];
    uint32_t asn;
    char org[128];
} ll_geo_t;

typedef struct st_ll_geo_db_t ll_geo_db_t;

/** Opens the databases (any path may be NULL). A missing or corrupt file fails naming it. */
int ll_geo_open(const char *country, const char *city, const char *asn, ll_geo_db_t **out, char *err, size_t errlen);
void ll_geo_close(ll_geo_db_t *g);
/** Fills out (zeroed first); unknown fields stay empty. Thread-safe (MMDB is read-only). */
void ll_geo_lookup(const ll_geo_db_t *g, const ll_ip_t *ip, ll_geo_t *out);

/**
 * The time zone most people of a country (ISO code, any case) live in: its first zone in
 * tzdata's zone.tab, or for a few large countries (AU, BR, CA, RU, UA, UZ) the most populous
 * one. The mailer's send window falls back to it when a contact has no zone of its own.
 * LL_ENOTFOUND for an unknown code (or no tzdata).
 */
int ll_geo_country_tz(const char *cc, char *out, size_t outlen);

/** Parses a textual v4/v6 address (v4-mapped v6 becomes v4). */
int ll_ip_parse(const char *s, size_t n, ll_ip_t *out);
void ll_ip_format(const ll_ip_t *ip, char *out, size_t outlen);
/** Client address from the peer and an X-Forwarded-For value (may be NULL). */
void ll_ip_resolve(const ll_config_t *c, const ll_ip_t *peer, const char *xff, size_t xff_len, ll_ip_t *out);
/** Zeroes the host bits past the configured prefix. */
void ll_ip_truncate(ll_ip_t *ip, int v4_prefix, int v6_prefix);
/** Bytes of the address (4 or 16; 0 when unknown). */
size_t ll_ip_len(const ll_ip_t *ip);

#endif
