/*
 * Scanner lists: the file format and its errors, IP/ASN/UA matching, reloading a changed
 * directory, and the shipped deploy/lists/ (the unit tests run from the repository root).
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "leadloop/lists.h"
#include "test.h"

static char dir[64];
static char err[512];

static void put(const char *name, const char *text, time_t mtime)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
    if (mtime != 0) {
        struct timespec ts[2] = {{mtime, 0}, {mtime, 0}};
        utimensat(AT_FDCWD, path, ts, 0);
    }
}

static void drop(const char *name)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
}

static void clear_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            drop(de->d_name);
    if (d != NULL)
        closedir(d);
}

static ll_ip_t ip(const char *s)
{
    ll_ip_t a;
    memset(&a, 0, sizeof(a));
    if (strchr(s, ':') != NULL) { /* not ll_ip_parse: keep v4-mapped addresses as v6 here */
        a.family = AF_INET6;
        inet_pton(AF_INET6, s, a.addr);
    } else {
        a.family = AF_INET;
        inet_pton(AF_INET, s, a.addr);
    }
    return a;
}

/* The label of the IP's match, "-" for none. */
static const char *ip_label(const ll_lists_t *l, const char *s)
{
    ll_list_hit_t hit;
    ll_ip_t a = ip(s);
    return ll_lists_match_ip(l, &a, &hit) ? hit.label : "-";
}

static const char *ua_list(const ll_lists_t *l, const char *ua)
{
    ll_list_hit_t hit;
    return ll_lists_match_ua(l, ua, strlen(ua), &hit) ? hit.list : "-";
}

/* Loads one file alone; returns the code and leaves the message in err. */
static int load_one(const char *text)
{
    ll_lists_t *l = NULL;
    clear_dir();
    put("x.txt", text, 0);
    err[0] = '\0';
    int rc = ll_lists_open(dir, &l, err, sizeof(err));
    ll_lists_free(l);
    return rc;
}

/* err is "DIR/x.txt:LINE: ..." and mentions what. */
static int err_is(int line, const char *what)
{
    char want[128];
    snprintf(want, sizeof(want), "%s/x.txt:%d: ", dir, line);
    if (strncmp(err, want, strlen(want)) != 0 || strstr(err, what) == NULL) {
        fprintf(stderr, "  err: %s\n", err);
        return 0;
    }
    return 1;
}

#define HDR "# class: scanner\n# source: https://example.com/list (test)\n"

static void test_errors(void)
{
    CHECK_EQ_INT(load_one(HDR "ip 10.0.0.0/8 ten\nasn AS8075\nua \"a b\" label\n\n# note\n"), 0);
    CHECK_EQ_INT(load_one("# class: human\n# source: https://x\n"), LL_EINVAL);
    CHECK(err_is(1, "class 'human'"));
    CHECK_EQ_INT(load_one("# class: scanner\n# class: bot\n# source: https://x\n"), LL_EINVAL);
    CHECK(err_is(2, "second class"));
    CHECK_EQ_INT(load_one("# source: https://x\nip 10.0.0.0/8\n"), LL_EINVAL);
    CHECK(err_is(2, "no '# class:'"));
    CHECK_EQ_INT(load_one("# class: bot\n\nua curl/ c\n"), LL_EINVAL);
    CHECK(err_is(3, "no '# source:'"));
    CHECK_EQ_INT(load_one("# class: bot\n# source: somewhere\n"), LL_EINVAL);
    CHECK(err_is(2, "not an http(s) URL"));
    CHECK_EQ_INT(load_one(HDR "host example.com\n"), LL_EINVAL);
    CHECK(err_is(3, "unknown entry kind 'host'"));
    CHECK_EQ_INT(load_one(HDR "ip\n"), LL_EINVAL);
    CHECK(err_is(3, "without a value"));
    const char *bad_cidr[] = {"10.0.0.0/33", "300.1.2.3/8", "10.0.0/8", "10.0.0.0/", "10.0.0.0/a", "10.0.0.0/-1",
                              "fe80::/129", "fe80:::1/64", "10.0.0.0/8/8", "1.2.3.4/0032"};
    for (size_t i = 0; i < sizeof(bad_cidr) / sizeof(bad_cidr[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), HDR "# comment\nip %s label\n", bad_cidr[i]);
        CHECK_EQ_INT(load_one(text), LL_EINVAL);
        CHECK(err_is(4, "not an IPv4 or IPv6 CIDR"));
    }
    CHECK_EQ_INT(load_one(HDR "asn 0\n"), LL_EINVAL);
    CHECK(err_is(3, "not an AS number"));
    CHECK_EQ_INT(load_one(HDR "asn 4294967296\n"), LL_EINVAL);
    CHECK(err_is(3, "not an AS number"));
    CHECK_EQ_INT(load_one(HDR "asn 12x\n"), LL_EINVAL);
    CHECK(err_is(3, "not an AS number"));
    CHECK_EQ_INT(load_one(HDR "ua ab label\n"), LL_EINVAL);
    CHECK(err_is(3, "shorter than 3"));
    CHECK_EQ_INT(load_one(HDR "ua \"ab\"\n"), LL_EINVAL);
    CHECK(err_is(3, "shorter than 3"));
    CHECK_EQ_INT(load_one(HDR "ua \"abc def\n"), LL_EINVAL);
    CHECK(err_is(3, "quote"));
    CHECK_EQ_INT(load_one(HDR "ua \"abc\"def\n"), LL_EINVAL);
    CHECK(err_is(3, "quote"));
    CHECK_EQ_INT(load_one("# class: prefetch\n# applies: open,klick\n# source: https://x\n"), LL_EINVAL);
    CHECK(err_is(2, "'klick' is not an event type"));
    CHECK_EQ_INT(load_one("# class: prefetch\n# applies: open\n# applies: click\n# source: https://x\n"), LL_EINVAL);
    CHECK(err_is(3, "second applies"));
    CHECK_EQ_INT(load_one(HDR "ip 10.0.0.0/8\nua abc\0def\n"), LL_OK); /* fputs stops at the NUL */

    /* a missing directory names it */
    ll_lists_t *l = NULL;
    CHECK_EQ_INT(ll_lists_open("/nonexistent/lists", &l, err, sizeof(err)), LL_ENOTFOUND);
    CHECK(l == NULL);
    CHECK(strstr(err, "/nonexistent/lists") != NULL);
    /* an empty directory is an empty set */
    clear_dir();
    CHECK_EQ_INT(ll_lists_open(dir, &l, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll_lists_count(l), 0);
    CHECK_EQ_STR(ua_list(l, "anything"), "-");
    ll_lists_free(l);
    CHECK_EQ_INT(ll_lists_count(NULL), 0);
    CHECK_EQ_STR(ua_list(NULL, "anything"), "-");
}

static void test_nul_byte(void)
{
    char path[512];
    static const char text[] = HDR "ua abc\0def\n";
    clear_dir();
    snprintf(path, sizeof(path), "%s/x.txt", dir);
    FILE *f = fopen(path, "w");
    fwrite(text, 1, sizeof(text) - 1, f);
    fclose(f);
    ll_lists_t *l = NULL;
    CHECK_EQ_INT(ll_lists_open(dir, &l, err, sizeof(err)), LL_EINVAL);
    CHECK(err_is(3, "NUL"));
}

static void test_ip(void)
{
    ll_lists_t *l = NULL;
    ll_list_hit_t hit;
    clear_dir();
    put("a-wide.txt", "# class: scanner\n# applies: click, open\n# source: https://example.com/a\n"
                      "ip 10.0.0.0/8 wide\n"
                      "ip 192.168.1.77/24 masked\n"
                      "ip 2001:db8::/32 v6 wide\n"
                      "ip 0.0.0.0/1 low half\n",
        0);
    put("b-narrow.txt", "# class: prefetch\n# source: https://example.com/b\n"
                        "ip 10.1.0.0/16 narrow\n"
                        "ip 10.1.2.3 host\n"
                        "ip 10.0.0.0/8 duplicate of wide\n"
                        "ip 2001:db8:1::/48 v6 narrow\n"
                        "ip 2001:db8:1::1/128\n"
                        "ip 203.0.113.0/24 test-net-3\n"
                        "ip 172.16.0.0/12 private\n"
                        "ip fc00::/7 ula\n",
        0);
    CHECK_EQ_INT(ll_lists_open(dir, &l, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll_lists_count(l), 12);

    /* ranges wider than 16 bits, at the edges of what they cover (each /16 of them is marked) */
    CHECK_EQ_STR(ip_label(l, "172.16.0.0"), "private");
    CHECK_EQ_STR(ip_label(l, "172.31.255.255"), "private");
    CHECK_EQ_STR(ip_label(l, "172.32.0.0"), "-");
    CHECK_EQ_STR(ip_label(l, "172.15.255.255"), "-");
    CHECK_EQ_STR(ip_label(l, "fc00::"), "ula");
    CHECK_EQ_STR(ip_label(l, "fdff:ffff::1"), "ula");
    CHECK_EQ_STR(ip_label(l, "fe00::"), "-");
    CHECK_EQ_STR(ip_label(l, "fbff:ffff::1"), "-");

    CHECK_EQ_STR(ip_label(l, "10.0.0.0"), "wide");
    CHECK_EQ_STR(ip_label(l, "10.255.255.255"), "wide");
    CHECK_EQ_STR(ip_label(l, "11.0.0.0"), "low half"); /* past the /8: the next range out */
    CHECK_EQ_STR(ip_label(l, "9.255.255.255"), "low half");
    CHECK_EQ_STR(ip_label(l, "128.0.0.0"), "-");
    CHECK_EQ_STR(ip_label(l, "127.255.255.255"), "low half");
    CHECK_EQ_STR(ip_label(l, "10.1.0.0"), "narrow");
    CHECK_EQ_STR(ip_label(l, "10.1.255.255"), "narrow");
    CHECK_EQ_STR(ip_label(l, "10.2.0.0"), "wide");
    CHECK_EQ_STR(ip_label(l, "10.0.255.255"), "wide");
    CHECK_EQ_STR(ip_label(l, "10.1.2.3"), "host");
    CHECK_EQ_STR(ip_label(l, "10.1.2.4"), "narrow");
    CHECK_EQ_STR(ip_label(l, "10.1.2.2"), "narrow");
    CHECK_EQ_STR(ip_label(l, "192.168.1.0"), "masked");
    CHECK_EQ_STR(ip_label(l, "192.168.1.255"), "masked");
    CHECK_EQ_STR(ip_label(l, "192.168.2.0"), "-");
    CHECK_EQ_STR(ip_label(l, "192.168.0.255"), "-");
    CHECK_EQ_STR(ip_label(l, "203.0.113.9"), "test-net-3");
    CHECK_EQ_STR(ip_label(l, "::ffff:10.1.2.3"), "host"); /* v4-mapped is looked up as v4 */
    CHECK_EQ_STR(ip_label(l, "::ffff:203.0.113.1"), "test-net-3");
    CHECK_EQ_STR(ip_label(l, "::a01:203"), "-"); /* not v4-mapped */

    CHECK_EQ_STR(ip_label(l, "2001:db8::"), "v6 wide");
    CHECK_EQ_STR(ip_label(l, "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), "v6 wide");
    CHECK_EQ_STR(ip_label(l, "2001:db9::"), "-");
    CHECK_EQ_STR(ip_label(l, "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff"), "-");
    CHECK_EQ_STR(ip_label(l, "2001:db8:1::"), "v6 narrow");
    CHECK_EQ_STR(ip_label(l, "2001:db8:1:ffff:ffff:ffff:ffff:ffff"), "v6 narrow");
    CHECK_EQ_STR(ip_label(l, "2001:db8:2::"), "v6 wide");
    CHECK_EQ_STR(ip_label(l, "2001:db8:1::1"), ""); /* no label */
    CHECK_EQ_STR(ip_label(l, "2001:db8:1::2"), "v6 narrow");

    /* the hit names its list, class and event types; a tie goes to the first list */
    ll_ip_t a = ip("10.9.9.9");
    CHECK(ll_lists_match_ip(l, &a, &hit));
    CHECK_EQ_STR(hit.list, "a-wide");
    CHECK_EQ_INT(hit.cls, LL_CLASS_SCANNER);
    CHECK_EQ_INT(hit.applies, (1u << LL_EV_CLICK) | (1u << LL_EV_OPEN));
    a = ip("10.1.9.9");
    CHECK(ll_lists_match_ip(l, &a, &hit));
    CHECK_EQ_STR(hit.list, "b-narrow");
    CHECK_EQ_INT(hit.cls, LL_CLASS_PREFETCH);
    CHECK_EQ_INT(hit.applies, ~0u);
    a.family = 0;
    CHECK(!ll_lists_match_ip(l, &a, &hit));
    ll_lists_free(l);
}

static void test_asn_ua(void)
{
    ll_lists_t *l = NULL;
    ll_list_hit_t hit;
    char long_ua[1200];
    clear_dir();
    put("a.txt", "# class: bot\r\n# source: https://example.com/a\r\n"
                 "asn 8075 Microsoft\r\n"
                 "asn AS15169\r\n"
                 "ua GoogleImageProxy Gmail image proxy\r\n"
                 "ua \"Barracuda Sentinel\" with a space\r\n"
                 "ua \"say \\\"hi\\\"\" quoted\r\n"
                 "ua zzz late\r\n",
        0);
    put("b.txt", "# class: scanner\n# source: https://example.com/b\nasn 8075 again\nasn 4294967295 last\n"
                 "ua imageproxy shorter\nua tail-token tail\n",
        0);
    CHECK_EQ_INT(ll_lists_open(dir, &l, err, sizeof(err)), 0);

    CHECK(ll_lists_match_asn(l, 8075, &hit));
    CHECK_EQ_STR(hit.list, "a");
    CHECK_EQ_STR(hit.label, "Microsoft");
    CHECK_EQ_INT(hit.cls, LL_CLASS_BOT);
    CHECK(ll_lists_match_asn(l, 15169, &hit));
    CHECK_EQ_STR(hit.label, "");
    CHECK(ll_lists_match_asn(l, 4294967295u, &hit));
    CHECK_EQ_STR(hit.list, "b");
    CHECK(!ll_lists_match_asn(l, 8074, &hit));
    CHECK(!ll_lists_match_asn(l, 0, &hit));

    const char *gmail = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
    CHECK(ll_lists_match_ua(l, gmail, strlen(gmail), &hit));
    CHECK_EQ_STR(hit.list, "a");
    CHECK_EQ_STR(hit.label, "Gmail image proxy");
    CHECK_EQ_STR(ua_list(l, "GOOGLEIMAGEPROXY"), "a");
    CHECK_EQ_STR(ua_list(l, "x googleimageprox"), "-");
    CHECK_EQ_STR(ua_list(l, "foo ImageProxy"), "b"); /* only the shorter entry matches */
    CHECK_EQ_STR(ua_list(l, "barracuda sentinel (EE)"), "a");
    CHECK_EQ_STR(ua_list(l, "barracuda  sentinel"), "-");
    CHECK_EQ_STR(ua_list(l, "they SAY \"HI\" there"), "a");
    CHECK_EQ_STR(ua_list(l, "Mozilla/5.0"), "-");
    CHECK_EQ_STR(ua_list(l, ""), "-");
    CHECK_EQ_STR(ua_list(l, "zz"), "-");
    CHECK_EQ_STR(ua_list(l, "zzz"), "a");
    /* the earliest entry wins wherever it occurs: "zzz" (a) comes before "tail-token" (b) */
    CHECK(ll_lists_match_ua(l, "tail-token zzz", 14, &hit));
    CHECK_EQ_STR(hit.label, "late");
    /* the length is honoured, not the NUL */
    CHECK(!ll_lists_match_ua(l, "zzzz", 2, &hit));
    /* only the first LL_LISTS_UA_SCAN bytes are looked at */
    memset(long_ua, 'x', sizeof(long_ua));
    memcpy(long_ua + LL_LISTS_UA_SCAN - 10, "tail-token", 10);
    CHECK(ll_lists_match_ua(l, long_ua, sizeof(long_ua), &hit));
    CHECK_EQ_STR(hit.label, "tail");
    memset(long_ua, 'x', sizeof(long_ua));
    memcpy(long_ua + LL_LISTS_UA_SCAN - 9, "tail-token", 10);
    CHECK(!ll_lists_match_ua(l, long_ua, sizeof(long_ua), &hit));

    /* the same answers again (the set's memo gives them) and among more user agents than it
     * holds, where a match and a miss have strings of the same length */
    for (int pass = 0; pass < 3; pass++) {
        char ua[64];
        int wrong = 0;
        for (int i = 0; i < 1000; i++) {
            snprintf(ua, sizeof(ua), "Mozilla/5.0 agent %04d %s", i, i % 2 ? "ImageProxy" : "ImageProxi");
            if (strcmp(ua_list(l, ua), i % 2 ? "b" : "-") != 0)
                wrong++;
        }
        CHECK_EQ_INT(wrong, 0);
        CHECK(ll_lists_match_ua(l, gmail, strlen(gmail), &hit));
        CHECK_EQ_STR(hit.list, "a");
        CHECK_EQ_STR(hit.label, "Gmail image proxy");
        CHECK(ll_lists_match_ua(l, "tail-token zzz", 14, &hit));
        CHECK_EQ_STR(hit.label, "late");
        CHECK(!ll_lists_match_ua(l, "tail-token zzz", 2, &hit));
        CHECK_EQ_STR(ua_list(l, "x googleimageprox"), "-");
    }
    ll_lists_free(l);
}

static void test_reload(void)
{
    ll_lists_t *l = NULL, *before;
    ll_list_hit_t hit;
    const uint64_t S = 1000000;
    uint64_t now = 1000 * S;
    clear_dir();
    put("one.txt", HDR "ua first-agent one\n", 1000);
    CHECK_EQ_INT(ll_lists_open(dir, &l, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll_lists_count(l), 1);
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), 0);

    /* a change within the second is not seen yet; after it, it is */
    put("one.txt", HDR "ua first-agent one\nua second-agent two\n", 1001);
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now + S / 2, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll_lists_count(l), 1);
    before = l;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now + S, err, sizeof(err)), 1);
    CHECK(l != before);
    CHECK_EQ_INT(ll_lists_count(l), 2);
    CHECK_EQ_STR(ua_list(l, "x second-agent"), "one");
    now += S;

    /* the same size, only the mtime bumped */
    put("one.txt", HDR "ua first-agent one\nua second-agent 2wo\n", 1002);
    now += 2 * S;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), 1);
    CHECK(ll_lists_match_ua(l, "second-agent", 12, &hit));
    CHECK_EQ_STR(hit.label, "2wo");

    /* a file added, then removed; other files and dotfiles are not lists */
    put("two.txt", HDR "asn 64500 documentation\n", 1000);
    put("notes.md", "not a list\n", 1000);
    put(".hidden.txt", "garbage\n", 1000);
    now += 2 * S;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), 1);
    CHECK_EQ_INT(ll_lists_count(l), 3);
    CHECK(ll_lists_match_asn(l, 64500, &hit));
    CHECK_EQ_STR(hit.list, "two");
    now += 2 * S;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), 0); /* nothing changed */
    drop("two.txt");
    now += 2 * S;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), 1);
    CHECK_EQ_INT(ll_lists_count(l), 2);
    CHECK(!ll_lists_match_asn(l, 64500, &hit));

    /* a bad edit keeps the old lists, is reported once, and a fix loads */
    put("one.txt", HDR "ua first-agent one\nua x2 too short\n", 1010);
    now += 2 * S;
    before = l;
    err[0] = '\0';
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), LL_EINVAL);
    CHECK(l == before);
    CHECK(strstr(err, "one.txt:4: ") != NULL);
    CHECK_EQ_STR(ua_list(l, "second-agent"), "one");
    now += 2 * S;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), 0);
    CHECK(l == before);
    put("one.txt", HDR "ua first-agent one\nua third-agent three\n", 1011);
    now += 2 * S;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), 1);
    CHECK_EQ_STR(ua_list(l, "third-agent"), "one");
    CHECK_EQ_STR(ua_list(l, "second-agent"), "-");

    /* the directory gone: reported once, the lists kept; back: reloaded */
    drop("one.txt");
    drop("notes.md");
    drop(".hidden.txt");
    rmdir(dir);
    now += 2 * S;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), LL_ENOTFOUND);
    now += 2 * S;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), 0);
    CHECK_EQ_STR(ua_list(l, "third-agent"), "one");
    mkdir(dir, 0700);
    put("one.txt", HDR "ua fourth-agent four\n", 1020);
    now += 2 * S;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), 1);
    CHECK_EQ_STR(ua_list(l, "fourth-agent"), "one");
    ll_lists_free(l);

    l = NULL;
    CHECK_EQ_INT(ll_lists_maybe_reload(&l, now, err, sizeof(err)), 0);
}

/* The shipped lists load, and a few entries every deployment relies on match. */
static void test_deploy_lists(void)
{
    ll_lists_t *l = NULL;
    ll_list_hit_t hit;
    ll_ip_t a;
    static const char *browsers[] = {
        "Mozilla/5.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
        "Safari/537.36 Edg/124.0.2478.80",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Trident/7.0; rv:11.0) like Gecko",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile "
        "Safari/537.36",
    };

    err[0] = '\0';
    CHECK_EQ_INT(ll_lists_open("deploy/lists", &l, err, sizeof(err)), 0);
    if (l == NULL) {
        fprintf(stderr, "  deploy/lists: %s\n", err);
        return;
    }
    CHECK(ll_lists_count(l) > 20);

    a = ip("17.58.1.2");
    CHECK(ll_lists_match_ip(l, &a, &hit));
    CHECK_EQ_STR(hit.list, "apple-mpp");
    CHECK_EQ_INT(hit.cls, LL_CLASS_PREFETCH);
    CHECK_EQ_INT(hit.applies, 1u << LL_EV_OPEN);
    a = ip("40.107.5.6");
    CHECK(ll_lists_match_ip(l, &a, &hit));
    CHECK_EQ_STR(hit.list, "microsoft-eop");
    CHECK_EQ_INT(hit.cls, LL_CLASS_SCANNER);
    CHECK(hit.applies & (1u << LL_EV_CLICK));
    a = ip("2a01:111:f400:7e00::1");
    CHECK(ll_lists_match_ip(l, &a, &hit));
    CHECK_EQ_STR(hit.list, "microsoft-eop");
    a = ip("192.0.2.1"); /* documentation range: on no list */
    CHECK(!ll_lists_match_ip(l, &a, &hit));

    /* Gmail's image proxy fetches when the person opens the message: on no list, it stays an open. */
    const char *gip = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)";
    CHECK(!ll_lists_match_ua(l, gip, strlen(gip), &hit));
    const char *ymp = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html";
    CHECK(ll_lists_match_ua(l, ymp, strlen(ymp), &hit));
    CHECK_EQ_STR(hit.list, "yahoo-mail-proxy");
    CHECK_EQ_INT(hit.cls, LL_CLASS_PREFETCH);
    for (size_t i = 0; i < sizeof(browsers) / sizeof(browsers[0]); i++) {
        if (ll_lists_match_ua(l, browsers[i], strlen(browsers[i]), &hit)) {
            fprintf(stderr, "  a browser matches %s (%s): %s\n", hit.list, hit.label, browsers[i]);
            CHECK(0);
        }
    }
    ll_lists_free(l);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/ll-lists-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 2;
    }
    RUN(test_errors);
    RUN(test_nul_byte);
    RUN(test_ip);
    RUN(test_asn_ua);
    RUN(test_reload);
    RUN(test_deploy_lists);
    clear_dir();
    rmdir(dir);
    return TEST_DONE("lists");
}
