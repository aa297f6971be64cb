/* Request classification: real user agents, HEAD, Purpose/Sec-Purpose, and the precedence. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "leadloop/classify.h"
#include "test.h"

static uint32_t reasons;

static int classify(int head, const char *ua, const char *purpose, const char *sec_purpose, int js)
{
    ll_classify_in_t in;
    memset(&in, 0, sizeof(in));
    in.is_head = head;
    if (ua != NULL)
        in.ua = ll_str(ua, strlen(ua));
    if (purpose != NULL)
        in.purpose = ll_str(purpose, strlen(purpose));
    if (sec_purpose != NULL)
        in.sec_purpose = ll_str(sec_purpose, strlen(sec_purpose));
    in.from_snippet = js;
    reasons = 0;
    return ll_classify(&in, &reasons);
}

static int ua_class(const char *ua)
{
    return classify(0, ua, NULL, NULL, 0);
}

static const char CHROME[] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                             "Chrome/124.0.0.0 Safari/537.36";
static const char FIREFOX[] = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
static const char SAFARI[] = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
                             "Version/17.4.1 Safari/605.1.15";
static const char IPHONE[] = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
                             "like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
static const char EDGE[] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                           "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80";
static const char CUBOT[] = "Mozilla/5.0 (Linux; Android 9; CUBOT_X19) AppleWebKit/537.36 (KHTML, like Gecko) "
                            "Chrome/119.0.6045.163 Mobile Safari/537.36";
static const char YANDEX_APP[] = "Mozilla/5.0 (Linux; Android 12; SM-A125F) AppleWebKit/537.36 (KHTML, like Gecko) "
                                 "Chrome/110.0.5481.192 YaBrowser/23.3.3.86.00 SA/3 Mobile Safari/537.36 "
                                 "YandexSearch/23.30";
static const char GOOGLEBOT[] = "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, "
                                "like Gecko) Chrome/124.0.6367.118 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
                                "+http://www.google.com/bot.html)";
static const char HEADLESS[] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                               "HeadlessChrome/120.0.6099.224 Safari/537.36";
static const char BINGPREVIEW[] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                                  "BingPreview/1.0b";
static const char FB[] = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)";
static const char GPTBOT[] = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
                             "+https://openai.com/gptbot)";
static const char YANDEXBOT[] = "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)";
static const char BAIDUSPIDER[] = "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)";

static void test_browsers(void)
{
    const char *const humans[] = {CHROME, FIREFOX, SAFARI, IPHONE, EDGE, CUBOT, YANDEX_APP};
    for (size_t i = 0; i < sizeof(humans) / sizeof(humans[0]); i++) {
        if (ua_class(humans[i]) != LL_CLASS_HUMAN || reasons != LL_REASON_BROWSER_UA) {
            fprintf(stderr, "not a browser: %s\n", humans[i]);
            CHECK(0);
        }
    }
    CHECK_EQ_INT(classify(0, CHROME, NULL, NULL, 1), LL_CLASS_HUMAN);
    CHECK_EQ_INT(reasons, LL_REASON_BROWSER_UA | LL_REASON_JS);
}

static void test_bots(void)
{
    const char *const bots[] = {
        "curl/8.5.0",
        "Wget/1.21.3",
        "python-requests/2.31.0",
        "Python-urllib/3.11",
        "Go-http-client/2.0",
        "Java/17.0.2",
        "okhttp/4.12.0",
        "axios/1.6.8",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
        "PostmanRuntime/7.37.3",
        "Apache-HttpClient/4.5.14 (Java/17.0.9)",
        "libwww-perl/6.72",
        GOOGLEBOT,
        BINGPREVIEW,
        FB,
        GPTBOT,
        YANDEXBOT,
        BAIDUSPIDER,
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
        "Mozilla/5.0 (compatible; Pingdom.com_bot_version_1.4_(http://www.pingdom.com/))",
        "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/112.0 "
        "Safari/537.36 Chrome-Lighthouse",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
        "CCBot/2.0 (https://commoncrawl.org/faq/)",
        "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
        "FeedFetcher-Google; (+http://www.google.com/feedfetcher.html)",
    };
    for (size_t i = 0; i < sizeof(bots) / sizeof(bots[0]); i++) {
        if (ua_class(bots[i]) != LL_CLASS_BOT || reasons != LL_REASON_BOT_UA) {
            fprintf(stderr, "not a bot: %s\n", bots[i]);
            CHECK(0);
        }
    }
    CHECK_EQ_INT(ua_class(HEADLESS), LL_CLASS_BOT);
    CHECK_EQ_INT(reasons, LL_REASON_HEADLESS_UA);
    CHECK_EQ_INT(ua_class("Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 "
                          "Safari/538.1"),
                 LL_CLASS_BOT);
    CHECK_EQ_INT(reasons, LL_REASON_HEADLESS_UA);
    /* the headless reason wins wherever the tokens sit */
    CHECK_EQ_INT(ua_class("PhantomJS/2.1 (crawler bot)"), LL_CLASS_BOT);
    CHECK_EQ_INT(reasons, LL_REASON_HEADLESS_UA);
    CHECK_EQ_INT(ua_class("Mozilla/5.0 (compatible; somebot) HeadlessChrome/120"), LL_CLASS_BOT);
    CHECK_EQ_INT(reasons, LL_REASON_HEADLESS_UA);
    /* the snippet ran, but a bot is a bot */
    CHECK_EQ_INT(classify(0, HEADLESS, NULL, NULL, 1), LL_CLASS_BOT);
    CHECK_EQ_INT(reasons, LL_REASON_HEADLESS_UA);
    /* case does not matter */
    CHECK_EQ_INT(ua_class("CURL/7.88.1"), LL_CLASS_BOT);
}

static void test_no_ua_unknown(void)
{
    CHECK_EQ_INT(ua_class(NULL), LL_CLASS_BOT);
    CHECK_EQ_INT(reasons, LL_REASON_NO_UA);
    CHECK_EQ_INT(ua_class(""), LL_CLASS_BOT);
    CHECK_EQ_INT(reasons, LL_REASON_NO_UA);
    CHECK_EQ_INT(ua_class("  \t"), LL_CLASS_BOT);
    CHECK_EQ_INT(reasons, LL_REASON_NO_UA);
    /* neither a known tool nor a browser */
    CHECK_EQ_INT(ua_class("SomeApp/1.0"), LL_CLASS_UNKNOWN);
    CHECK_EQ_INT(reasons, 0);
    CHECK_EQ_INT(ua_class("Mozilla/4.0"), LL_CLASS_UNKNOWN);
    CHECK_EQ_INT(ua_class("Chrome/124.0 Safari/537.36"), LL_CLASS_UNKNOWN); /* no Mozilla/ */
    CHECK_EQ_INT(ua_class("-"), LL_CLASS_UNKNOWN);
}

static void test_head_prefetch(void)
{
    CHECK_EQ_INT(classify(1, CHROME, NULL, NULL, 0), LL_CLASS_BOT);
    CHECK_EQ_INT(reasons, LL_REASON_HEAD);
    CHECK_EQ_INT(classify(0, CHROME, NULL, "prefetch", 0), LL_CLASS_PREFETCH);
    CHECK_EQ_INT(reasons, LL_REASON_PREFETCH_HDR);
    CHECK_EQ_INT(classify(0, CHROME, NULL, "prefetch;prerender", 0), LL_CLASS_PREFETCH);
    CHECK_EQ_INT(reasons, LL_REASON_PREFETCH_HDR);
    CHECK_EQ_INT(classify(0, CHROME, "Prefetch", NULL, 0), LL_CLASS_PREFETCH);
    CHECK_EQ_INT(classify(0, CHROME, NULL, "PRERENDER", 0), LL_CLASS_PREFETCH);
    CHECK_EQ_INT(classify(0, CHROME, "preview", NULL, 0), LL_CLASS_HUMAN); /* other purposes */
    CHECK_EQ_INT(classify(0, CHROME, "", "", 0), LL_CLASS_HUMAN);
    /* precedence: HEAD over prefetch over no UA over the lists */
    CHECK_EQ_INT(classify(1, NULL, "prefetch", NULL, 0), LL_CLASS_BOT);
    CHECK_EQ_INT(reasons, LL_REASON_HEAD);
    CHECK_EQ_INT(classify(0, NULL, "prefetch", NULL, 0), LL_CLASS_PREFETCH);
    CHECK_EQ_INT(classify(0, "curl/8.0", NULL, "prefetch", 0), LL_CLASS_PREFETCH);
    /* reasons are ORed in, not overwritten; NULL reasons is allowed */
    ll_classify_in_t in;
    memset(&in, 0, sizeof(in));
    in.ua = LL_STR_LIT("curl/8.0");
    uint32_t r = LL_REASON_FORM;
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_BOT);
    CHECK_EQ_INT(r, LL_REASON_FORM | LL_REASON_BOT_UA);
    CHECK_EQ_INT(ll_classify(&in, NULL), LL_CLASS_BOT);
}

static void test_bounds(void)
{
    /* a bot token past the scan window is not seen; the browser tokens before it are */
    size_t n = 4096;
    char *ua = malloc(n); /* not NUL-terminated: ASan catches reads past the length */
    if (ua == NULL) {
        CHECK(0);
        return;
    }
    memset(ua, 'a', n);
    memcpy(ua, "Mozilla/5.0 Chrome/1", 20);
    memcpy(ua + n - 10, "Googlebot/", 10);
    ll_classify_in_t in;
    memset(&in, 0, sizeof(in));
    in.ua = ll_str(ua, n);
    uint32_t r = 0;
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_HUMAN);
    memcpy(ua + 500, "curl/", 5);
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_BOT);
    /* tokens cut at the window edge and at the end of the value */
    memset(ua, 'a', n);
    memcpy(ua + 509, "bot", 3);
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_BOT);
    memset(ua, 'a', n);
    memcpy(ua + 510, "bot", 3);
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_UNKNOWN);
    in.ua = ll_str(ua + n - 2, 2); /* "cu" exception at the very start, "bot" absent */
    memcpy(ua + n - 2, "cu", 2);
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_UNKNOWN);
    in.ua = ll_str(ua + n - 3, 3);
    memcpy(ua + n - 3, "bot", 3);
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_BOT);
    in.ua = ll_str(ua + n - 6, 6);
    memcpy(ua + n - 6, "yandex", 6); /* not_before check at the end of the value */
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_BOT);
    /* "cubot" and later a real "bot" */
    in.ua = LL_STR_LIT("Mozilla/5.0 (CUBOT) Chrome/1 Safari/1 bot");
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_BOT);
    /* embedded NUL does not end the scan */
    static const char nul[] = "Mozilla/5.0\0curl/8";
    in.ua = ll_str(nul, sizeof(nul) - 1);
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_BOT);
    /* a huge Purpose value is bounded too */
    memset(ua, 'a', n);
    memcpy(ua + n - 8, "prefetch", 8);
    in.ua = LL_STR_LIT("curl/8");
    in.purpose = ll_str(ua, n);
    CHECK_EQ_INT(ll_classify(&in, &r), LL_CLASS_BOT);
    free(ua);
}

/* ua i of a set where a browser and a tool alternate with strings of the same length: only
 * their bytes tell them apart. 1 when it is the tool's. */
static int memo_ua(char *ua, size_t len, int i)
{
    snprintf(ua, len, "Mozilla/5.0 (X11; Linux x86_64) %s/%04d.0 Safari/537.36", i % 2 ? "Scrapy" : "Chrome", i);
    return i % 2;
}

/* Every answer in pass over n user agents is the scan's (the memo's slots are far fewer). */
static int memo_pass(int n, int js)
{
    char ua[128];
    int wrong = 0;
    for (int i = 0; i < n; i++) {
        int bot = memo_ua(ua, sizeof(ua), i);
        ll_classify_in_t in;
        memset(&in, 0, sizeof(in));
        in.ua = ll_str(ua, strlen(ua));
        in.from_snippet = js;
        uint32_t r = 0;
        int cls = ll_classify(&in, &r);
        if (bot ? cls != LL_CLASS_BOT || r != LL_REASON_BOT_UA
                : cls != LL_CLASS_HUMAN || r != (LL_REASON_BROWSER_UA | (js ? LL_REASON_JS : 0)))
            wrong++;
    }
    return wrong;
}

static void *memo_thread(void *arg)
{
    intptr_t wrong = 0;
    for (int k = 0; k < 20; k++)
        wrong += memo_pass(300, k % 2);
    (void)arg;
    return (void *)wrong;
}

/* Each thread remembers the verdicts it scanned: the same answers the second time, after
 * evictions, with the snippet's reason the request's own, and in threads side by side. */
static void test_memo(void)
{
    for (int pass = 0; pass < 3; pass++)
        CHECK_EQ_INT(memo_pass(1000, pass == 1), 0);
    /* the same string with and without the snippet */
    CHECK_EQ_INT(classify(0, CHROME, NULL, NULL, 1), LL_CLASS_HUMAN);
    CHECK_EQ_INT(reasons, LL_REASON_BROWSER_UA | LL_REASON_JS);
    CHECK_EQ_INT(classify(0, CHROME, NULL, NULL, 0), LL_CLASS_HUMAN);
    CHECK_EQ_INT(reasons, LL_REASON_BROWSER_UA);
    CHECK_EQ_INT(classify(0, CHROME, NULL, NULL, 1), LL_CLASS_HUMAN);
    CHECK_EQ_INT(reasons, LL_REASON_BROWSER_UA | LL_REASON_JS);
    /* a remembered browser string, then the header rules that come before the user agent */
    CHECK_EQ_INT(classify(1, CHROME, NULL, NULL, 0), LL_CLASS_BOT);
    CHECK_EQ_INT(classify(0, CHROME, NULL, "prefetch", 0), LL_CLASS_PREFETCH);
    /* longer than what is remembered: a tool named past byte 256 is still found, each time */
    char ua[400];
    memset(ua, 'a', sizeof(ua));
    memcpy(ua, "Mozilla/5.0 Chrome/1", 20);
    memcpy(ua + 300, "wget/", 5);
    for (int k = 0; k < 2; k++) {
        ll_classify_in_t in;
        memset(&in, 0, sizeof(in));
        in.ua = ll_str(ua, sizeof(ua));
        CHECK_EQ_INT(ll_classify(&in, NULL), LL_CLASS_BOT);
        memcpy(ua + 300, "aaaaa", 5);
        in.ua = ll_str(ua, sizeof(ua));
        CHECK_EQ_INT(ll_classify(&in, NULL), LL_CLASS_HUMAN);
        memcpy(ua + 300, "wget/", 5);
    }
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(pthread_create(&t[i], NULL, memo_thread, NULL), 0);
    for (int i = 0; i < 3; i++) {
        void *wrong = NULL;
        pthread_join(t[i], &wrong);
        CHECK_EQ_INT((int)(intptr_t)wrong, 0);
    }
}

int main(void)
{
    RUN(test_browsers);
    RUN(test_bots);
    RUN(test_no_ua_unknown);
    RUN(test_head_prefetch);
    RUN(test_bounds);
    RUN(test_memo);
    return TEST_DONE("classify");
}
