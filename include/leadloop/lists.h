/*
 * Scanner lists: user agents, IP ranges and networks (ASNs) of machines that open and click
 * email (mail gateways' link scanners, Apple Mail Privacy Protection, image proxies, crawlers),
 * kept as data files so an operator can update them without a rebuild or a restart (issue #5).
 *
 * A directory holds one list per file, NAME.txt (the list is called NAME). Files are loaded in
 * name order; names starting with '.' and anything that is not a regular file (after following
 * symlinks, so a Kubernetes ConfigMap mount works) are skipped. The format, line by line:
 *
 *   # class: scanner              required, once: scanner, prefetch or bot (ll_class_t)
 *   # applies: click,open         optional, once: event types (ll_event_type_name); default all
 *   # source: https://... (what, retrieved 2026-12-01)
 *                                 required, one or more (anywhere in the file): where the
 *                                 entries come from; it must start with http:// or https://
 *   ip 40.107.0.0/16 Exchange Online Protection
 *   ip 2a01:111:f400::/48 Exchange Online Protection
 *   asn 8075 Microsoft
 *   ua GoogleImageProxy Gmail image proxy
 *   ua "Barracuda Sentinel" Barracuda link protection
 *
 * An entry is a kind, a value and an optional label (the rest of the line, shown as evidence).
 * `ip` takes a v4 or v6 CIDR (host bits are masked off; a bare address is a /32 or /128);
 * `asn` a number (an "AS" prefix is allowed); `ua` a substring matched case-insensitively, at
 * least 3 bytes, in double quotes when it contains spaces (\" and \\ escape inside quotes).
 * Other comment lines ("# ..." without one of the three keys above) and blank lines are
 * ignored; "#" starts a comment only at the start of a line. A line that breaks any of this
 * (an unknown class, kind or event type, a bad CIDR or number, a short ua, a file without a
 * class or a source) fails the whole load with "path:line: why".
 *
 * Matching: an IP is looked up by prefix length, longest first, with a binary search in each,
 * so the most specific range wins (an IPv4-mapped IPv6 address is looked up as IPv4); ties
 * and ASNs go to the first list in name order. A user agent's first LL_LISTS_UA_SCAN bytes
 * are lowercased once and scanned once, trying at each byte only the entries that start with
 * it; the earliest entry (list name order, then line order) found anywhere wins. The match
 * functions never allocate and accept a NULL set (no match).
 *
 * A set remembers the user agents it has answered for (a memo, common.h), so a user agent seen
 * before costs a hash and a compare instead of the scan.
 *
 * Caveats: a set's lists are immutable and not locked; the memo changes under lookups.
 * ll_lists_maybe_reload() frees the old set, so every lookup must run on the thread that reloads
 * (the writer), or the caller must add its own locking and reference counting. Lists say which machines they are, not what they may do: the caller
 * checks hit->applies against its event type (an Apple address that clicks is not MPP).
 */
#ifndef LEADLOOP_LISTS_H
#define LEADLOOP_LISTS_H

#include "leadloop/common.h"
#include "leadloop/event.h"
#include "leadloop/geo.h"

#define LL_LISTS_UA_SCAN 512        /* bytes of a user agent looked at */
#define LL_LISTS_FILE_MAX (16u << 20) /* bytes in one list file */
#define LL_LISTS_ENTRIES_MAX 1000000 /* entries in a whole set */

typedef struct st_ll_lists_t ll_lists_t;

typedef struct st_ll_list_hit_t {
    int cls;          /* ll_class_t the list assigns: LL_CLASS_SCANNER, LL_CLASS_PREFETCH or LL_CLASS_BOT (event.h) */
    const char *list; /* the list's name (its file name without .txt), valid while the ll_lists_t lives */
    const char *label; /* the matching entry's label ("Microsoft Exchange Online Protection"), "" if none */
    unsigned applies; /* bit set of the event types the list applies to: 1u << LL_EV_CLICK, 1u << LL_EV_OPEN, ...;
                         all bits when not restricted */
} ll_list_hit_t;

/**
 * Loads every *.txt file in dir (sorted by name) into a new set in *out (the caller frees it
 * with ll_lists_free()). An empty directory gives an empty set.
 * @return 0; LL_ENOTFOUND with err naming dir when it is missing (or not a directory);
 *         LL_EINVAL for a malformed line, err "path:line: why"; LL_EIO when a file cannot be
 *         read; LL_ETOOBIG past LL_LISTS_FILE_MAX or LL_LISTS_ENTRIES_MAX. *out is untouched on
 *         failure.
 */
int ll_lists_open(const char *dir, ll_lists_t **out, char *err, size_t errlen);
/** Frees a set (NULL is fine). Hit strings from it die with it. */
void ll_lists_free(ll_lists_t *l);

/**
 * Checks, at most once per second of now_us, whether any file of the set's directory changed
 * (added, removed, or its mtime, size or inode); if so loads a new set, swaps it into *l and
 * frees the old one. A failed load keeps the old set and returns <0 with err set, once: the
 * same failing state (the same files with the same stamps) is not reported again, so a caller
 * polling every second logs it once; the next change is tried afresh. Single-threaded (see the
 * caveats above). *l NULL: nothing to do.
 * @return 1 when reloaded, 0 otherwise, or a negative LL_E* code as for ll_lists_open()
 */
int ll_lists_maybe_reload(ll_lists_t **l, uint64_t now_us, char *err, size_t errlen);

/** Entries in all lists, for logs. 0 for NULL. */
size_t ll_lists_count(const ll_lists_t *l);

/*
 * Each returns 1 and fills *hit for the first match (most specific IP range wins), 0 otherwise
 * (*hit then untouched).
 */
/** IPv4 and IPv6 CIDR ranges, binary search per prefix length. */
int ll_lists_match_ip(const ll_lists_t *l, const ll_ip_t *ip, ll_list_hit_t *hit);
int ll_lists_match_asn(const ll_lists_t *l, uint32_t asn, ll_list_hit_t *hit);
/** Case-insensitive (ASCII) substring of the first LL_LISTS_UA_SCAN bytes of ua[0..len). */
int ll_lists_match_ua(const ll_lists_t *l, const char *ua, size_t len, ll_list_hit_t *hit);

#endif
