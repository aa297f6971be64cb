/* The judge (judge.h): labels, bursts, the browser afterwards, settling and counts, on a real
 * LMDB store with a send row, a list file and events ingested as the writer does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <jansson.h>
#include "leadloop/ingest.h"
#include "leadloop/judge.h"
#include "leadloop/program.h"
#include "leadloop/score.h"
#include "test.h"

#define SEC 1000000ULL

static char tmpdir[64];
static ll_config_t conf;
static ll_store_t *store;
static ll_judge_t *judge;
static ll_scorer_t *sc;
static ll_nurture_t nurture;
static uint64_t t0; /* the send's SMTP acceptance */

static void teardown(void)
{
    ll_judge_free(judge);
    judge = NULL;
    ll_scorer_free(sc);
    sc = NULL;
    if (store != NULL)
        ll_store_close(store);
    store = NULL;
    ll_config_free(&conf);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpdir);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

/* A store with contact 1, sends 10 and 11 accepted at t0, a list, and the judge and scorer. */
static int setup(void)
{
    char err[512], path[128];
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_judge.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/lists", tmpdir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/lists/eop.txt", tmpdir);
    write_file(path, "# class: scanner\n# applies: click,open\n# source: https://example.test/eop (a test list)\n"
                     "ip 40.92.0.0/15 Exchange Online Protection\n"
                     "ip 198.51.100.0/24 a \"quoted\" \\ label\n");
    snprintf(path, sizeof(path), "%s/conf.yaml", tmpdir);
    write_file(path, "scoring:\n  threshold: 1000\n  rules:\n    - {name: c, event: click, points: 10}\n"
                     "    - {name: o, event: open, points: 1}\n");
    ll_config_defaults(&conf);
    int rc = ll_config_load(&conf, path, err, sizeof(err));
    if (rc != 0)
        return fprintf(stderr, "config: %s\n", err), rc;
    free(conf.scanner_lists);
    snprintf(path, sizeof(path), "%s/lists", tmpdir);
    conf.scanner_lists = ll_strdup(path);
    conf.provisional_s = 5;
    snprintf(path, sizeof(path), "%s/data", tmpdir);
    if ((rc = ll_store_open(path, 0, LL_STORE_NOSYNC, &store, err, sizeof(err))) != 0 ||
        (rc = ll_scorer_open(store, conf.score, &sc, err, sizeof(err))) != 0 ||
        (rc = ll_judge_open(store, &conf, &judge, err, sizeof(err))) != 0 || (rc = ll_nurture_open(store, &nurture)) != 0)
        return fprintf(stderr, "open: %s\n", err), rc;
    ll_txn_t t;
    uint64_t id;
    int created;
    t0 = ll_now_us() - 3600 * SEC;
    if ((rc = ll_txn_begin(store, 0, &t)) != 0 || (rc = ll_contact_upsert(&t, "ann@example.com", NULL, &id, &created)) != 0)
        return rc;
    for (uint64_t s = 10; s <= 11 && rc == 0; s++) {
        ll_send_t row = {.id = s, .state = LL_SEND_ACCEPTED, .contact = id, .created_us = t0, .accepted_us = t0};
        snprintf(row.program, sizeof(row.program), "welcome");
        rc = ll_send_put(&nurture, &t, &row);
    }
    return rc != 0 ? rc : ll_txn_commit(&t);
}

typedef struct {
    int type, cls;
    uint32_t reasons;
    uint64_t at_s; /* seconds after t0 */
    uint64_t send;
    uint32_t link;
    uint8_t visitor;
    const char *ip; /* dotted IPv4, truncated as the edge stores it */
    int no_judge;   /* ingested without the judge (as no writer of leadloop does for the snippet) */
} ev_t;

/* Ingests one event in t as the writer does; returns its seq. */
static uint64_t ingest_in(ll_txn_t *t, ev_t e)
{
    ll_event_t ev;
    ll_buf_t rec;
    uint8_t ip[4];
    memset(&ev, 0, sizeof(ev));
    ev.version = LL_EVENT_VERSION;
    ev.type = (uint8_t)e.type;
    ev.cls = (uint8_t)(e.cls ? e.cls : LL_CLASS_HUMAN);
    ev.reasons = e.reasons ? e.reasons : LL_REASON_BROWSER_UA;
    ev.time_us = t0 + e.at_s * SEC;
    ev.send = e.send;
    ev.contact = e.send ? 1 : 0;
    ev.link = e.link;
    if (e.visitor) {
        ev.visitor.b[0] = 0xcc;
        ev.visitor.b[15] = e.visitor;
    }
    if (e.ip != NULL) {
        unsigned a, b, c, d;
        if (sscanf(e.ip, "%u.%u.%u.%u", &a, &b, &c, &d) == 4) {
            ip[0] = (uint8_t)a, ip[1] = (uint8_t)b, ip[2] = (uint8_t)c, ip[3] = 0;
            ev.f[LL_F_IP] = ll_str((const char *)ip, 4);
        }
    }
    ll_buf_init(&rec, LL_EVENT_MAX);
    CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
    ll_ingest_t in = {.rec = (uint8_t *)rec.data, .len = rec.len, .scorer = sc, .judge = e.no_judge ? NULL : judge};
    CHECK_EQ_INT(ll_ingest(t, &in), 0);
    ll_buf_free(&rec);
    return in.seq;
}

/* Ingests one event in a transaction of its own. */
static uint64_t ingest(ev_t e)
{
    ll_txn_t t;
    CHECK_EQ_INT(ll_txn_begin(store, 0, &t), 0);
    uint64_t seq = ingest_in(&t, e);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    return seq;
}

static ll_event_t got;
static char got_data[512];

static const ll_event_t *event(uint64_t seq)
{
    ll_txn_t t;
    memset(&got, 0, sizeof(got));
    got_data[0] = '\0';
    if (ll_txn_begin(store, 1, &t) == 0) {
        ll_event_t ev;
        if (ll_event_get(&t, seq, &ev) == 0) {
            got = ev;
            snprintf(got_data, sizeof(got_data), "%.*s", (int)ev.f[LL_F_DATA].len, ev.f[LL_F_DATA].base);
        }
        ll_txn_abort(&t);
    }
    return &got;
}

static int settle(uint64_t after_s)
{
    ll_txn_t t;
    int more = 0, rc = ll_txn_begin(store, 0, &t);
    if (rc == 0 && (rc = ll_judge_settle(judge, &t, sc, ll_now_us() + after_s * SEC, 100, &more)) == 0)
        return ll_txn_commit(&t);
    ll_txn_abort(&t);
    return rc;
}

static double score(void)
{
    ll_txn_t t;
    ll_score_state_t st;
    double v = -1;
    if (ll_txn_begin(store, 1, &t) == 0) {
        v = ll_score_get(sc, &t, 1, &st) == 0 ? st.engagement : 0;
        ll_txn_abort(&t);
    }
    return v;
}

static ll_judge_counts_t counts(uint64_t send)
{
    ll_judge_counts_t c;
    ll_txn_t t;
    memset(&c, 0, sizeof(c));
    if (ll_txn_begin(store, 1, &t) == 0) {
        CHECK_EQ_INT(ll_judge_counts(&t, ll_judge_counts_dbi(judge), send, &c), 0);
        ll_txn_abort(&t);
    }
    return c;
}

/* A person: a click 3 s in (fast: a scanner's if nothing else happens), then the page's snippet. */
static void test_js_after_makes_a_fast_click_human(void)
{
    if (setup() != 0) {
        CHECK(0);
        teardown();
        return;
    }
    uint64_t click = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 3, .send = 10, .link = 2, .visitor = 1});
    const ll_event_t *e = event(click);
    CHECK(e->flags & LL_EVF_PROVISIONAL);
    CHECK(e->reasons & LL_REASON_FAST);
    CHECK_EQ_STR(got_data, "{\"since_delivery_s\":3}");
    CHECK(score() <= 0); /* not before it settles */
    /* Not due yet: nothing changes. */
    CHECK_EQ_INT(settle(0), 0);
    CHECK(event(click)->flags & LL_EVF_PROVISIONAL);
    ingest((ev_t){.type = LL_EV_PAGEVIEW, .reasons = LL_REASON_JS | LL_REASON_BROWSER_UA, .at_s = 5, .visitor = 1});
    CHECK(event(click)->reasons & LL_REASON_JS_AFTER);
    CHECK_EQ_INT(settle(10), 0);
    e = event(click);
    CHECK_EQ_INT(e->cls, LL_CLASS_HUMAN);
    CHECK(!(e->flags & LL_EVF_PROVISIONAL));
    CHECK(score() == 10);
    ll_judge_counts_t c = counts(10);
    CHECK_EQ_INT(c.cls[LL_CLASS_HUMAN], 1);
    CHECK_EQ_INT(c.cls[LL_CLASS_SCANNER], 0);
    CHECK_EQ_INT(c.reason[16], 1); /* js_after */
    teardown();
}

/* The same fast click without the snippet after it: a scanner's, never scored. */
static void test_fast_click_without_js_is_a_scanner(void)
{
    if (setup() != 0) {
        CHECK(0);
        teardown();
        return;
    }
    uint64_t click = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 3, .send = 10, .link = 2, .visitor = 1});
    uint64_t late = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 1800, .send = 11, .link = 1, .visitor = 2});
    CHECK_EQ_INT(settle(10), 0);
    CHECK_EQ_INT(event(click)->cls, LL_CLASS_SCANNER);
    CHECK(got.reasons & LL_REASON_NO_JS_AFTER);
    CHECK_EQ_INT(event(late)->cls, LL_CLASS_LIKELY_HUMAN);
    CHECK(got.reasons & LL_REASON_LATE);
    CHECK(score() == 10); /* only the late one */
    teardown();
}

/* Three links within the window, in document order: the whole burst is a sweep, the open too. */
static void test_sweep_relabels_the_burst(void)
{
    if (setup() != 0) {
        CHECK(0);
        teardown();
        return;
    }
    uint64_t a = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 600, .send = 10, .link = 1, .visitor = 3});
    uint64_t o = ingest((ev_t){.type = LL_EV_OPEN, .at_s = 600, .send = 10, .visitor = 3});
    uint64_t b = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 602, .send = 10, .link = 5, .visitor = 4});
    CHECK_EQ_INT(event(b)->cls, LL_CLASS_LIKELY_HUMAN); /* two links 2 s apart, out of order: not yet */
    uint64_t c = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 603, .send = 10, .link = 3, .visitor = 5});
    uint64_t other = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 603, .send = 11, .link = 3, .visitor = 6});
    for (uint64_t s = a; s <= c; s++) {
        event(s);
        CHECK_EQ_INT(got.cls, LL_CLASS_SCANNER);
        CHECK(got.reasons & LL_REASON_SWEEP);
    }
    CHECK(!(event(c)->flags & LL_EVF_PROVISIONAL)); /* decided: nothing to wait for */
    CHECK_EQ_INT(event(other)->cls, LL_CLASS_LIKELY_HUMAN); /* another message */
    CHECK_EQ_INT(settle(10), 0);
    CHECK_EQ_INT(event(o)->cls, LL_CLASS_SCANNER);
    CHECK(score() == 10); /* the other message's click alone */
    ll_judge_counts_t n = counts(10), all = counts(0);
    CHECK_EQ_INT(n.cls[LL_CLASS_SCANNER], 4);
    CHECK_EQ_INT(n.reason[11], 4); /* sweep */
    CHECK_EQ_INT(all.cls[LL_CLASS_SCANNER], 4);
    CHECK_EQ_INT(all.cls[LL_CLASS_LIKELY_HUMAN], 1);
    teardown();
}

/* The writer's way: the sweep of test_sweep_relabels_the_burst within one transaction gives the
 * same counts (summed in memory, put at the commit); an aborted transaction's counts are gone. */
static void test_counts_of_one_batch(void)
{
    if (setup() != 0) {
        CHECK(0);
        teardown();
        return;
    }
    ll_txn_t t;
    CHECK_EQ_INT(ll_txn_begin(store, 0, &t), 0);
    ingest_in(&t, (ev_t){.type = LL_EV_CLICK, .at_s = 600, .send = 10, .link = 1, .visitor = 3});
    uint64_t o = ingest_in(&t, (ev_t){.type = LL_EV_OPEN, .at_s = 600, .send = 10, .visitor = 3});
    ingest_in(&t, (ev_t){.type = LL_EV_CLICK, .at_s = 602, .send = 10, .link = 5, .visitor = 4});
    ingest_in(&t, (ev_t){.type = LL_EV_CLICK, .at_s = 603, .send = 10, .link = 3, .visitor = 5});
    ingest_in(&t, (ev_t){.type = LL_EV_CLICK, .at_s = 603, .send = 11, .link = 3, .visitor = 6});
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    ll_judge_counts_t n = counts(10), all = counts(0);
    CHECK_EQ_INT(n.cls[LL_CLASS_SCANNER], 4); /* +1 as likely human each, then -1 +1 relabelled */
    CHECK_EQ_INT(n.cls[LL_CLASS_LIKELY_HUMAN], 0);
    CHECK_EQ_INT(n.reason[11], 4); /* sweep */
    CHECK_EQ_INT(all.cls[LL_CLASS_LIKELY_HUMAN], 1);
    CHECK_EQ_INT(all.cls[LL_CLASS_UNKNOWN] + all.cls[LL_CLASS_HUMAN], 0);
    /* Aborted: none of its counts reach the next commit. */
    CHECK_EQ_INT(ll_txn_begin(store, 0, &t), 0);
    ingest_in(&t, (ev_t){.type = LL_EV_CLICK, .at_s = 1700, .send = 11, .link = 2, .visitor = 7});
    ll_txn_abort(&t);
    ingest((ev_t){.type = LL_EV_CLICK, .at_s = 1800, .send = 11, .link = 1, .visitor = 8});
    CHECK_EQ_INT(settle(10), 0);
    CHECK_EQ_INT(event(o)->cls, LL_CLASS_SCANNER);
    n = counts(10), all = counts(0);
    CHECK_EQ_INT(n.cls[LL_CLASS_SCANNER], 4);
    CHECK_EQ_INT(n.cls[LL_CLASS_LIKELY_HUMAN], 0);
    CHECK_EQ_INT(n.reason[11], 4);
    CHECK_EQ_INT(all.cls[LL_CLASS_SCANNER], 4);
    CHECK_EQ_INT(all.cls[LL_CLASS_LIKELY_HUMAN], 2);
    CHECK_EQ_INT(counts(11).cls[LL_CLASS_LIKELY_HUMAN], 2);
    teardown();
}

/* Due rows are appended in due order; one due before the last (provisional_s lowered by a
 * reload, or the clock stepped back) still goes in, and settles when due. */
static void test_pending_out_of_order(void)
{
    if (setup() != 0) {
        CHECK(0);
        teardown();
        return;
    }
    conf.provisional_s = 100;
    uint64_t late = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 1800, .send = 10, .link = 1, .visitor = 1});
    conf.provisional_s = 5;
    ll_txn_t t;
    CHECK_EQ_INT(ll_txn_begin(store, 0, &t), 0);
    uint64_t a = ingest_in(&t, (ev_t){.type = LL_EV_CLICK, .at_s = 1801, .send = 11, .link = 1, .visitor = 2});
    uint64_t b = ingest_in(&t, (ev_t){.type = LL_EV_CLICK, .at_s = 1802, .send = 11, .link = 2, .visitor = 3});
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK_EQ_INT(settle(10), 0);
    CHECK(!(event(a)->flags & LL_EVF_PROVISIONAL));
    CHECK(!(event(b)->flags & LL_EVF_PROVISIONAL));
    CHECK(event(late)->flags & LL_EVF_PROVISIONAL);
    CHECK_EQ_INT(settle(200), 0);
    CHECK(!(event(late)->flags & LL_EVF_PROVISIONAL));
    teardown();
}

/* The honeypot, then a visible link: both the scanner's; a listed address decides alone. */
static void test_honeypot_and_lists(void)
{
    if (setup() != 0) {
        CHECK(0);
        teardown();
        return;
    }
    uint64_t h = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 900, .send = 10, .link = LL_LINK_HONEYPOT, .visitor = 7});
    uint64_t v = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 905, .send = 10, .link = 2, .visitor = 8});
    CHECK_EQ_INT(event(h)->cls, LL_CLASS_SCANNER);
    CHECK(got.reasons & LL_REASON_HONEYPOT_LINK);
    CHECK_EQ_INT(event(v)->cls, LL_CLASS_SCANNER);
    CHECK(got.reasons & LL_REASON_HONEYPOT_LINK);
    uint64_t l = ingest((ev_t){.type = LL_EV_OPEN, .at_s = 2000, .send = 11, .visitor = 9, .ip = "40.93.7.1"});
    CHECK_EQ_INT(event(l)->cls, LL_CLASS_SCANNER);
    CHECK(got.reasons & LL_REASON_IP_LIST);
    CHECK_EQ_STR(got_data, "{\"entry\":\"Exchange Online Protection\",\"list\":\"eop\",\"since_delivery_s\":2000}");
    /* The entry's text escaped: the data is JSON that gives it back. */
    uint64_t q = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 2100, .send = 11, .link = 1, .visitor = 9, .ip = "198.51.100.9"});
    CHECK(event(q)->reasons & LL_REASON_IP_LIST);
    json_error_t jerr;
    json_t *d = json_loads(got_data, JSON_REJECT_DUPLICATES, &jerr);
    CHECK(d != NULL);
    CHECK_EQ_STR(json_string_value(json_object_get(d, "entry")), "a \"quoted\" \\ label");
    CHECK_EQ_INT(json_integer_value(json_object_get(d, "since_delivery_s")), 2100);
    CHECK_EQ_INT(json_object_size(d), 3);
    json_decref(d);
    CHECK_EQ_INT(settle(10), 0);
    CHECK(score() <= 0);
    teardown();
}

/* An automated browser's snippet (navigator.webdriver) makes the click before it a bot's. */
static void test_webdriver(void)
{
    if (setup() != 0) {
        CHECK(0);
        teardown();
        return;
    }
    uint64_t click = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 1200, .send = 10, .link = 1, .visitor = 10});
    ingest((ev_t){.type = LL_EV_PAGEVIEW, .cls = LL_CLASS_BOT, .reasons = LL_REASON_JS | LL_REASON_WEBDRIVER,
                  .at_s = 1202, .visitor = 10});
    CHECK_EQ_INT(settle(10), 0);
    CHECK_EQ_INT(event(click)->cls, LL_CLASS_BOT);
    CHECK(got.reasons & LL_REASON_WEBDRIVER);
    CHECK(score() <= 0);
    teardown();
}

/*
 * A visitor's page views look back only to its previous one that added the same reason
 * (judge.c, on_visitor_event): clicks between two page views get JS_AFTER from the second, an
 * automated browser's page view still reaches the clicks that earlier page views marked, and a
 * page view stops at the last one before it.
 */
static void test_page_views_look_back_to_the_last_one(void)
{
    if (setup() != 0) {
        CHECK(0);
        teardown();
        return;
    }
    const uint32_t js = LL_REASON_JS | LL_REASON_BROWSER_UA; /* provisional_s: 5 */
    uint64_t c1 = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 1, .send = 10, .link = 1, .visitor = 1});
    ingest((ev_t){.type = LL_EV_PAGEVIEW, .reasons = js, .at_s = 2, .visitor = 1});
    CHECK(event(c1)->reasons & LL_REASON_JS_AFTER);
    uint64_t c2 = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 3, .send = 11, .link = 1, .visitor = 1});
    for (int i = 0; i < 4; i++) /* a beacon's page views */
        ingest((ev_t){.type = LL_EV_PAGEVIEW, .reasons = js, .at_s = 3, .visitor = 1});
    CHECK(event(c2)->reasons & LL_REASON_JS_AFTER);
    CHECK(!(event(c2)->reasons & LL_REASON_WEBDRIVER));
    /* navigator.webdriver: past the page views that added JS_AFTER, to both clicks. */
    ingest((ev_t){.type = LL_EV_PAGEVIEW, .cls = LL_CLASS_BOT, .reasons = js | LL_REASON_WEBDRIVER, .at_s = 4, .visitor = 1});
    CHECK(event(c1)->reasons & LL_REASON_WEBDRIVER);
    CHECK(event(c2)->reasons & LL_REASON_WEBDRIVER);
    ingest((ev_t){.type = LL_EV_PAGEVIEW, .cls = LL_CLASS_BOT, .reasons = js | LL_REASON_WEBDRIVER, .at_s = 5, .visitor = 1});
    ll_judge_counts_t a = counts(10), b = counts(11);
    CHECK_EQ_INT(a.reason[16], 1); /* js_after, counted once each */
    CHECK_EQ_INT(b.reason[16], 1);
    CHECK_EQ_INT(a.reason[18], 1); /* webdriver */
    CHECK_EQ_INT(b.reason[18], 1);
    /* The stop itself: a page view written without the judge (no writer does that) is taken as
     * having looked back, so the click before it is not reached by the page view after it. */
    uint64_t c3 = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 10, .send = 10, .link = 2, .visitor = 2});
    ingest((ev_t){.type = LL_EV_PAGEVIEW, .reasons = js, .at_s = 11, .visitor = 2, .no_judge = 1});
    ingest((ev_t){.type = LL_EV_PAGEVIEW, .reasons = js, .at_s = 12, .visitor = 2});
    CHECK(event(c3)->flags & LL_EVF_PROVISIONAL);
    CHECK(!(event(c3)->reasons & LL_REASON_JS_AFTER));
    /* One whose clock says it came later does not stop the look-back. */
    uint64_t c4 = ingest((ev_t){.type = LL_EV_CLICK, .at_s = 20, .send = 10, .link = 2, .visitor = 3});
    ingest((ev_t){.type = LL_EV_PAGEVIEW, .reasons = js, .at_s = 40, .visitor = 3, .no_judge = 1});
    ingest((ev_t){.type = LL_EV_PAGEVIEW, .reasons = js, .at_s = 21, .visitor = 3});
    CHECK(event(c4)->reasons & LL_REASON_JS_AFTER);
    teardown();
}

int main(void)
{
    RUN(test_js_after_makes_a_fast_click_human);
    RUN(test_fast_click_without_js_is_a_scanner);
    RUN(test_sweep_relabels_the_burst);
    RUN(test_counts_of_one_batch);
    RUN(test_pending_out_of_order);
    RUN(test_honeypot_and_lists);
    RUN(test_webdriver);
    RUN(test_page_views_look_back_to_the_last_one);
    return TEST_DONE("judge");
}
