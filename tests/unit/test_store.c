/*
 * The event codec (tracker/event.c), the LMDB store (tracker/store.c) and the identity rules of
 * ingest (tracker/ingest.c). Each store test runs in a fresh mkdtemp directory under /tmp,
 * removed at the end. Run from anywhere.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <jansson.h>
#include "leadloop/event.h"
#include "leadloop/ingest.h"
#include "leadloop/store.h"
#include "test.h"

static char tmpdir[64];

static ll_store_t *store_open(void)
{
    ll_store_t *s = NULL;
    char err[256] = "";
    int rc = ll_store_open(tmpdir, 0, LL_STORE_NOSYNC, &s, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "test_store: %s\n", err);
    CHECK_EQ_INT(rc, 0);
    return s;
}

/* A fresh, empty store directory for each store test. */
static ll_store_t *store_fresh(void)
{
    char cmd[128];
    if (tmpdir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "test_store: cannot remove %s\n", tmpdir);
    }
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_store.XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    return store_open();
}

static void vid_set(ll_visitor_id_t *v, uint8_t n)
{
    memset(v->b, 0, 16);
    v->b[0] = 0xaa;
    v->b[15] = n;
}

static void set(ll_event_t *ev, int tag, const char *s)
{
    ev->f[tag] = ll_str(s, strlen(s));
}

static int str_eq(ll_str_t a, const char *s)
{
    return a.len == strlen(s) && memcmp(a.base, s, a.len) == 0;
}

/* ---- codec ---- */

static void fill_all(ll_event_t *ev, ll_buf_t *owned)
{
    memset(ev, 0, sizeof(*ev));
    ev->type = LL_EV_CLICK;
    ev->cls = LL_CLASS_HUMAN;
    ev->flags = LL_EVF_FORWARD | LL_EVF_BOUND;
    ev->seq = 0x0102030405060708ull;
    ev->time_us = 1795000000123456ull;
    for (int i = 0; i < 16; i++)
        ev->visitor.b[i] = (uint8_t)(0xf0 + i);
    ev->contact = 0xfedcba9876543210ull;
    ev->send = 77;
    ev->link = 0xdeadbeef;
    ev->reasons = LL_REASON_BROWSER_UA | LL_REASON_JS | LL_REASON_PRERENDER;
    /* One distinct value per field, kept alive in owned. */
    ll_buf_init(owned, 1 << 16);
    size_t offs[LL_F__MAX];
    for (int tag = 1; tag < LL_F__MAX; tag++) {
        offs[tag] = owned->len;
        if (tag == LL_F_IP)
            ll_buf_append(owned, "\xc0\x00\x02\x00", 4);
        else if (tag == LL_F_COUNTRY)
            ll_buf_appends(owned, "DE");
        else if (tag == LL_F_FIELDS || tag == LL_F_DATA)
            ll_buf_printf(owned, "{\"k%d\":\"v\"}", tag);
        else
            ll_buf_printf(owned, "value of %s \xc3\xa9", ll_field_name(tag));
    }
    for (int tag = 1; tag < LL_F__MAX; tag++) {
        size_t end = tag + 1 < LL_F__MAX ? offs[tag + 1] : owned->len;
        ev->f[tag] = ll_str(owned->data + offs[tag], end - offs[tag]);
    }
}

static void test_roundtrip(void)
{
    ll_event_t ev, d;
    ll_buf_t owned, rec;
    fill_all(&ev, &owned);
    ll_buf_init(&rec, LL_EVENT_MAX);
    CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
    CHECK_EQ_INT(ll_event_decode(rec.data, rec.len, &d), 0);
    CHECK_EQ_INT(d.version, LL_EVENT_VERSION);
    CHECK_EQ_INT(d.type, LL_EV_CLICK);
    CHECK_EQ_INT(d.cls, LL_CLASS_HUMAN);
    CHECK_EQ_INT(d.flags, LL_EVF_FORWARD | LL_EVF_BOUND);
    CHECK(d.seq == ev.seq);
    CHECK(d.time_us == ev.time_us);
    CHECK(memcmp(d.visitor.b, ev.visitor.b, 16) == 0);
    CHECK(d.contact == ev.contact);
    CHECK(d.send == 77);
    CHECK(d.link == 0xdeadbeef);
    CHECK_EQ_INT(d.reasons, LL_REASON_BROWSER_UA | LL_REASON_JS | LL_REASON_PRERENDER);
    for (int tag = 1; tag < LL_F__MAX; tag++) {
        CHECK_EQ_INT(d.f[tag].len, ev.f[tag].len);
        if (d.f[tag].len == ev.f[tag].len && memcmp(d.f[tag].base, ev.f[tag].base, d.f[tag].len) != 0) {
            fprintf(stderr, "field %s differs\n", ll_field_name(tag));
            CHECK(0);
        }
    }

    /* The in-place accessors and patches see the same header. */
    CHECK(ll_event_rec_contact(rec.data) == ev.contact);
    CHECK_EQ_INT(ll_event_rec_type(rec.data), LL_EV_CLICK);
    ll_visitor_id_t v;
    ll_event_rec_visitor(rec.data, &v);
    CHECK(memcmp(v.b, ev.visitor.b, 16) == 0);
    ll_event_patch_seq(rec.data, 42);
    ll_event_patch_contact(rec.data, 9);
    ll_event_patch_flags(rec.data, LL_EVF_NEW_VISITOR);
    CHECK_EQ_INT(ll_event_decode(rec.data, rec.len, &d), 0);
    CHECK_EQ_INT(d.seq, 42);
    CHECK_EQ_INT(d.contact, 9);
    CHECK_EQ_INT(d.flags, LL_EVF_NEW_VISITOR);
    CHECK(str_eq(d.f[LL_F_URL], "value of url \xc3\xa9"));

    /* An empty event is just the header. */
    ll_event_t empty;
    memset(&empty, 0, sizeof(empty));
    ll_buf_reset(&rec);
    CHECK_EQ_INT(ll_event_encode(&empty, &rec), 0);
    CHECK_EQ_INT(rec.len, LL_EVENT_HEADER);

    /* Names parse back to their types. */
    for (int t = 1; t < LL_EV__MAX; t++) {
        const char *name = ll_event_type_name(t);
        CHECK_EQ_INT(ll_event_type_parse(name, strlen(name)), t);
    }
    CHECK_EQ_INT(ll_event_type_parse("pageviewx", 9), 0);
    CHECK_EQ_STR(ll_event_type_name(200), "unknown");
    ll_buf_free(&rec);
    ll_buf_free(&owned);
}

/* A field added to an encoded record (ll_event_add_field) reads back as if the event had been
 * encoded with it: every other field the same, the new one bounded the same way. */
static void test_add_field(void)
{
    ll_event_t ev, d, want;
    ll_buf_t owned, rec, added, enc, big;
    fill_all(&ev, &owned);
    ll_str_t data = ev.f[LL_F_DATA];
    ev.f[LL_F_DATA] = ll_str(NULL, 0);
    ll_buf_init(&rec, LL_EVENT_MAX);
    ll_buf_init(&added, LL_EVENT_MAX);
    ll_buf_init(&enc, LL_EVENT_MAX);
    CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
    /* a long value with a two-byte character across the limit, and a short one */
    ll_buf_init(&big, 1 << 16);
    while (big.len < ll_event_field_limit(LL_F_DATA) - 1)
        ll_buf_appends(&big, "a");
    ll_buf_appends(&big, "\xc3\xa9" "bc");
    const ll_str_t vals[] = {data, ll_str(big.data, big.len)};
    for (size_t i = 0; i < 2; i++) {
        ll_buf_reset(&added);
        ll_buf_reset(&enc);
        CHECK_EQ_INT(ll_event_add_field(rec.data, rec.len, LL_F_DATA, vals[i].base, vals[i].len, &added), 0);
        ev.f[LL_F_DATA] = vals[i];
        CHECK_EQ_INT(ll_event_encode(&ev, &enc), 0);
        ev.f[LL_F_DATA] = ll_str(NULL, 0);
        CHECK_EQ_INT(added.len, enc.len);
        CHECK(memcmp(added.data, enc.data, LL_EVENT_HEADER) == 0);
        CHECK_EQ_INT(ll_event_decode(added.data, added.len, &d), 0);
        CHECK_EQ_INT(ll_event_decode(enc.data, enc.len, &want), 0);
        for (int tag = 1; tag < LL_F__MAX; tag++) {
            CHECK_EQ_INT(d.f[tag].len, want.f[tag].len);
            CHECK(d.f[tag].len == want.f[tag].len && memcmp(d.f[tag].base, want.f[tag].base, d.f[tag].len) == 0);
        }
    }
    CHECK_EQ_INT(d.f[LL_F_DATA].len, ll_event_field_limit(LL_F_DATA) - 1); /* cut before the é */
    /* Nothing to add: the record as it was. A record that would pass LL_EVENT_MAX: LL_ETOOBIG, out
     * as it was. */
    ll_buf_reset(&added);
    CHECK_EQ_INT(ll_event_add_field(rec.data, rec.len, LL_F_DATA, "", 0, &added), 0);
    CHECK(added.len == rec.len && memcmp(added.data, rec.data, rec.len) == 0);
    uint8_t *full = ll_calloc(1, LL_EVENT_MAX); /* a record of zeros, as long as allowed */
    ll_buf_reset(&added);
    CHECK_EQ_INT(ll_event_add_field(full, LL_EVENT_MAX - 5, LL_F_DATA, "{}", 2, &added), 0);
    ll_buf_reset(&added);
    CHECK_EQ_INT(ll_buf_appends(&added, "x"), 0);
    CHECK_EQ_INT(ll_event_add_field(full, LL_EVENT_MAX - 4, LL_F_DATA, "{}", 2, &added), LL_ETOOBIG);
    CHECK_EQ_INT(added.len, 1);
    free(full);
    ll_buf_free(&big);
    ll_buf_free(&enc);
    ll_buf_free(&added);
    ll_buf_free(&rec);
    ll_buf_free(&owned);
}

static void test_truncate(void)
{
    ll_event_t ev, d;
    ll_buf_t rec, big;
    memset(&ev, 0, sizeof(ev));
    ll_buf_init(&rec, LL_EVENT_MAX);
    ll_buf_init(&big, 1 << 16);
    size_t tlim = ll_event_field_limit(LL_F_TITLE);
    /* A two-byte character straddles the limit: the cut falls before it. */
    for (size_t i = 0; i + 1 < tlim; i++)
        ll_buf_append(&big, "a", 1);
    ll_buf_appends(&big, "\xc3\xa9zzz");
    size_t title_len = big.len;
    /* A four-byte character ending one byte past the URL limit. */
    size_t ulim = ll_event_field_limit(LL_F_URL);
    size_t url_off = big.len;
    for (size_t i = 0; i + 3 < ulim; i++)
        ll_buf_append(&big, "u", 1);
    ll_buf_appends(&big, "\xf0\x9f\x98\x80");
    size_t url_len = big.len - url_off;
    ev.f[LL_F_TITLE] = ll_str(big.data, title_len);
    ev.f[LL_F_URL] = ll_str(big.data + url_off, url_len);
    set(&ev, LL_F_COUNTRY, "DEU");
    ev.f[LL_F_IP] = ll_str("0123456789abcdefXYZ", 19);
    set(&ev, LL_F_UA, "short");
    CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
    CHECK_EQ_INT(ll_event_decode(rec.data, rec.len, &d), 0);
    CHECK_EQ_INT(d.f[LL_F_TITLE].len, tlim - 1);
    CHECK(ll_utf8_valid(d.f[LL_F_TITLE].base, d.f[LL_F_TITLE].len));
    CHECK_EQ_INT(d.f[LL_F_URL].len, ulim - 3);
    CHECK(ll_utf8_valid(d.f[LL_F_URL].base, d.f[LL_F_URL].len));
    CHECK(str_eq(d.f[LL_F_COUNTRY], "DE"));
    CHECK_EQ_INT(d.f[LL_F_IP].len, 16);
    CHECK(str_eq(d.f[LL_F_UA], "short"));

    /* Exactly at the limit nothing is cut, multi-byte or not. */
    ll_buf_reset(&rec);
    memset(&ev, 0, sizeof(ev));
    ev.f[LL_F_TITLE] = ll_str(big.data + 1, tlim); /* "a"*(tlim-2) + 2-byte char */
    CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
    CHECK_EQ_INT(ll_event_decode(rec.data, rec.len, &d), 0);
    CHECK_EQ_INT(d.f[LL_F_TITLE].len, tlim);

    /* Every field at its limit would exceed LL_EVENT_MAX: refused, and out is left as it was. */
    ll_buf_reset(&rec);
    ll_buf_appends(&rec, "keep");
    ll_buf_reset(&big);
    for (int i = 0; i < 8192; i++)
        ll_buf_append(&big, "x", 1);
    memset(&ev, 0, sizeof(ev));
    for (int tag = 1; tag < LL_F__MAX; tag++)
        ev.f[tag] = ll_str(big.data, big.len);
    int rc = ll_event_encode(&ev, &rec);
    CHECK(rc == 0 || rc == LL_ETOOBIG);
    if (rc == 0)
        CHECK(rec.len - 4 <= LL_EVENT_MAX);
    else
        CHECK_EQ_INT(rec.len, 4);
    ll_buf_free(&big);
    ll_buf_free(&rec);
}

static void test_corrupt(void)
{
    ll_event_t ev, d;
    ll_buf_t owned, rec;
    fill_all(&ev, &owned);
    ll_buf_init(&rec, LL_EVENT_MAX);
    CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);

    /* Where each field ends: a prefix ending exactly there is itself a well-formed record of
     * the earlier fields (the format has no total length), every other prefix is refused. */
    size_t boundary[LL_F__MAX + 1], nb = 0;
    boundary[nb++] = LL_EVENT_HEADER;
    for (size_t off = LL_EVENT_HEADER; off + 3 <= rec.len;) {
        off += 3 + ((size_t)(uint8_t)rec.data[off + 1] << 8 | (uint8_t)rec.data[off + 2]);
        boundary[nb++] = off;
    }
    CHECK_EQ_INT(boundary[nb - 1], rec.len);
    int refused = 0, accepted = 0;
    for (size_t len = 0; len < rec.len; len++) {
        /* A copy of exactly len bytes, so that ASan sees any read past the end. */
        char *p = ll_malloc(len);
        memcpy(p, rec.data, len);
        int rc = ll_event_decode(p, len, &d);
        int at_boundary = 0;
        for (size_t i = 0; i < nb; i++)
            at_boundary |= boundary[i] == len;
        if (at_boundary) {
            CHECK_EQ_INT(rc, 0);
            accepted++;
            /* Fields past the cut are absent, not garbage. */
            for (int tag = 1; tag < LL_F__MAX; tag++)
                CHECK(d.f[tag].len == 0 || (d.f[tag].base >= p && d.f[tag].base + d.f[tag].len <= p + len));
        } else {
            if (rc != LL_EINVAL)
                fprintf(stderr, "prefix of %zu bytes: rc %d\n", len, rc);
            CHECK_EQ_INT(rc, LL_EINVAL);
            refused++;
        }
        free(p);
    }
    CHECK_EQ_INT(accepted, nb - 1);
    CHECK(refused > 0);

    /* Corrupt headers and lengths. */
    char *p = ll_malloc(rec.len);
    memcpy(p, rec.data, rec.len);
    p[0] = 0;
    CHECK_EQ_INT(ll_event_decode(p, rec.len, &d), LL_EINVAL);
    p[0] = 99;
    CHECK_EQ_INT(ll_event_decode(p, rec.len, &d), LL_EINVAL);
    memcpy(p, rec.data, rec.len);
    p[LL_EVENT_HEADER + 1] = (char)0xff; /* first field claims 65k bytes */
    CHECK_EQ_INT(ll_event_decode(p, rec.len, &d), LL_EINVAL);
    memcpy(p, rec.data, rec.len);
    p[boundary[nb - 2] + 2] = (char)((uint8_t)p[boundary[nb - 2] + 2] + 1); /* last field one byte long */
    CHECK_EQ_INT(ll_event_decode(p, rec.len, &d), LL_EINVAL);
    /* An unknown tag from a newer writer is skipped. */
    memcpy(p, rec.data, rec.len);
    p[LL_EVENT_HEADER] = (char)200;
    CHECK_EQ_INT(ll_event_decode(p, rec.len, &d), 0);
    CHECK_EQ_INT(d.f[LL_F_URL].len, 0);
    CHECK(d.f[LL_F_REFERRER].len > 0);
    free(p);
    CHECK_EQ_INT(ll_event_decode(NULL, 0, &d), LL_EINVAL);
    ll_buf_free(&rec);
    ll_buf_free(&owned);
}

/* Parses one ll_event_to_json output; \u0000 is valid JSON, so it is allowed. */
static json_t *to_json(const ll_event_t *ev, const char *email)
{
    ll_buf_t out;
    json_error_t jerr;
    ll_buf_init(&out, 1 << 20);
    CHECK_EQ_INT(ll_event_to_json(ev, email, &out), 0);
    json_t *j = json_loadb(out.data, out.len, JSON_ALLOW_NUL, &jerr);
    if (j == NULL)
        fprintf(stderr, "not JSON (%s): %s\n", jerr.text, out.data);
    CHECK(j != NULL && json_is_object(j));
    ll_buf_free(&out);
    return j;
}

static void test_json(void)
{
    ll_event_t ev;
    ll_buf_t owned;
    fill_all(&ev, &owned);
    ev.contact = 0x7edcba9876543210ull; /* jansson holds integers up to INT64_MAX */
    json_t *j = to_json(&ev, "ann@example.com");
    if (j != NULL) {
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "seq")), (json_int_t)ev.seq);
        CHECK_EQ_STR(json_string_value(json_object_get(j, "type")), "click");
        CHECK_EQ_STR(json_string_value(json_object_get(j, "class")), "human");
        CHECK_EQ_STR(json_string_value(json_object_get(j, "visitor")), "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        CHECK_EQ_STR(json_string_value(json_object_get(j, "time")), "2026-11-18T11:06:40.123Z");
        CHECK_EQ_INT(json_array_size(json_object_get(j, "reasons")), 3);
        CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(j, "reasons"), 0)), "browser_ua");
        CHECK(json_is_true(json_object_get(j, "forward")));
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "contact")), (json_int_t)ev.contact);
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "send")), 77);
        CHECK_EQ_INT(json_integer_value(json_object_get(j, "link")), 0xdeadbeef);
        CHECK_EQ_STR(json_string_value(json_object_get(j, "ip")), "192.0.2.0");
        CHECK(json_is_object(json_object_get(j, "fields")));
        CHECK(json_is_object(json_object_get(j, "data")));
        /* The event's own EMAIL field wins over the contact's address: one "email" key. */
        CHECK_EQ_STR(json_string_value(json_object_get(j, "email")), "value of email \xc3\xa9");
        CHECK_EQ_STR(json_string_value(json_object_get(j, "url")), "value of url \xc3\xa9");
    }
    json_decref(j);
    ll_buf_free(&owned);

    /* Hostile bytes in every text field. */
    static const char nasty[] = "a\"b\\c\x01\x1f\x7f\n\t\xff\xc3(\xe2\x82\xed\xa0\x80\xf4\x90\x80\x80 end";
    memset(&ev, 0, sizeof(ev));
    ev.type = LL_EV_FORM;
    for (int tag = 1; tag < LL_F__MAX; tag++)
        ev.f[tag] = ll_str(nasty, sizeof(nasty) - 1);
    ev.f[LL_F_TITLE] = ll_str("nul\0inside", 10);
    ev.f[LL_F_IP] = ll_str("\x0a\x00\x00\x01\x02", 5); /* neither 4 nor 16 bytes */
    j = to_json(&ev, "x\"y@example.com");
    if (j != NULL) {
        CHECK_EQ_STR(json_string_value(json_object_get(j, "type")), "form");
        CHECK(json_is_string(json_object_get(j, "fields")));
        CHECK(json_string_length(json_object_get(j, "title")) == 10);
        const char *u = json_string_value(json_object_get(j, "url"));
        CHECK(u != NULL && strncmp(u, "a\"b\\c\x01\x1f\x7f\n\t", 10) == 0);
    }
    json_decref(j);

    /* FIELDS/DATA that look like objects but are not valid JSON are emitted as strings. */
    static const char *const objs[] = {"{not json}", "{\"a\":\"\x01\"}", "{\"a\":\"\xff\"}", "{\"a\":1}{",
                                       "{\"a\":1", "{}", "{\"a\":{\"b\":[1,2]}}"};
    for (size_t i = 0; i < sizeof(objs) / sizeof(objs[0]); i++) {
        memset(&ev, 0, sizeof(ev));
        set(&ev, LL_F_FIELDS, objs[i]);
        set(&ev, LL_F_DATA, objs[i]);
        j = to_json(&ev, NULL);
        if (j != NULL) {
            int valid = i >= 5;
            CHECK_EQ_INT(json_is_object(json_object_get(j, "fields")), valid);
            CHECK_EQ_INT(json_is_object(json_object_get(j, "data")), valid);
            CHECK(json_object_get(j, "email") == NULL);
        }
        json_decref(j);
    }

    /* The contact's email is used when the event has none, escaped. */
    memset(&ev, 0, sizeof(ev));
    j = to_json(&ev, "a\"b@example.com");
    if (j != NULL)
        CHECK_EQ_STR(json_string_value(json_object_get(j, "email")), "a\"b@example.com");
    json_decref(j);
}

/* ---- store ---- */

typedef struct {
    uint64_t seq[64];
    uint64_t contact[64];
    uint8_t flags[64];
    int n;
} collect_t;

static int on_collect(const ll_event_t *ev, void *p)
{
    collect_t *c = p;
    if (c->n < 64) {
        c->seq[c->n] = ev->seq;
        c->contact[c->n] = ev->contact;
        c->flags[c->n] = ev->flags;
        c->n++;
    }
    return 0;
}

static collect_t of_contact(ll_store_t *s, uint64_t contact)
{
    collect_t c = {.n = 0};
    ll_txn_t t;
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_events_of_contact(&t, contact, on_collect, &c), 0);
    ll_txn_abort(&t);
    return c;
}

/* Encodes and ingests one event in its own transaction; returns the result. */
static ll_ingest_t ingest(ll_store_t *s, int type, uint8_t vnum, uint64_t contact, const char *email,
                          const char *fields, int bind)
{
    ll_event_t ev;
    ll_buf_t rec;
    ll_txn_t t;
    ll_ingest_t in;
    memset(&ev, 0, sizeof(ev));
    memset(&in, 0, sizeof(in));
    ev.type = (uint8_t)type;
    ev.time_us = ll_now_us();
    if (vnum != 0)
        vid_set(&ev.visitor, vnum);
    ev.contact = contact;
    set(&ev, LL_F_URL, "https://example.com/");
    set(&ev, LL_F_COUNTRY, "NL");
    ll_buf_init(&rec, LL_EVENT_MAX);
    CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
    in.rec = (uint8_t *)rec.data;
    in.len = rec.len;
    in.email = email;
    in.fields_json = fields;
    in.bind = bind;
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    int rc = ll_ingest(&t, &in);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0)
        CHECK_EQ_INT(ll_txn_commit(&t), 0);
    else
        ll_txn_abort(&t);
    in.rec = NULL;
    ll_buf_free(&rec);
    return in;
}

static uint64_t visitor_contact(ll_store_t *s, uint8_t vnum)
{
    ll_visitor_id_t v;
    ll_visitor_rec_t vr;
    ll_txn_t t;
    vid_set(&v, vnum);
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    int rc = ll_visitor_get(&t, &v, &vr);
    ll_txn_abort(&t);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(vr.country, "NL");
    CHECK(vr.first_us != 0 && vr.last_us >= vr.first_us);
    return rc == 0 ? vr.contact : 0;
}

static uint64_t upsert(ll_store_t *s, const char *email, const char *fields, int *created)
{
    ll_txn_t t;
    uint64_t id = 0;
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_contact_upsert(&t, email, fields, &id, created), 0);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    return id;
}

static long long file_size(const char *name)
{
    char path[128];
    struct stat sb;
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* ll_store_zero_ahead keeps the data file zero-filled ahead of the last page, never over a
 * committed page, never past the map size. */
static void test_zero_ahead(void)
{
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    char title[1001];
    memset(title, 'z', sizeof(title) - 1);
    title[sizeof(title) - 1] = '\0';
    ll_txn_t t;
    ll_buf_t rec;
    ll_event_t ev, d;
    uint64_t seq;
    ll_buf_init(&rec, LL_EVENT_MAX);
    for (int batch = 0; batch < 120; batch++) { /* about 6 MB of events: past LL_STORE_AHEAD */
        CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
        for (int i = 0; i < 50; i++) {
            memset(&ev, 0, sizeof(ev));
            ev.type = LL_EV_PAGEVIEW;
            ev.time_us = (uint64_t)(batch * 50 + i + 1);
            set(&ev, LL_F_URL, title); /* 1000 bytes: within the url field's limit */
            ll_buf_reset(&rec);
            CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
            CHECK_EQ_INT(ll_event_append(&t, rec.data, rec.len, &seq), 0);
        }
        ll_store_zero_ahead(&t);
        CHECK_EQ_INT(ll_txn_commit(&t), 0);
        MDB_envinfo info;
        MDB_stat st;
        CHECK_EQ_INT(mdb_env_info(ll_store_env(s), &info), 0);
        CHECK_EQ_INT(mdb_env_stat(ll_store_env(s), &st), 0);
        long long used = ((long long)info.me_last_pgno + 1) * st.ms_psize, size = file_size("data.mdb");
        /* ahead by at least half the margin after every commit, and by no more than the margin
         * plus one transaction's pages */
        CHECK(size >= used + (long long)LL_STORE_AHEAD / 2 - 64 * 1024);
        CHECK(size <= used + (long long)LL_STORE_AHEAD + 256 * 1024);
    }
    ll_buf_free(&rec);
    ll_store_close(s);
    s = store_open(); /* every event reads back whole: no zeros over a page */
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_event_last_seq(&t), 120 * 50);
    for (uint64_t q = 1; q <= 120 * 50; q++) {
        if (ll_event_get(&t, q, &d) != 0 || d.time_us != q || !str_eq(d.f[LL_F_URL], title)) {
            fprintf(stderr, "event %llu did not read back\n", (unsigned long long)q);
            CHECK(0);
            break;
        }
    }
    ll_txn_abort(&t);
    ll_store_close(s);

    /* A map smaller than the margin: the file never grows past it. */
    ll_store_close(store_fresh());
    char err[256];
    CHECK_EQ_INT(ll_store_open(tmpdir, (size_t)1 << 20, LL_STORE_NOSYNC, &s, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    ll_store_zero_ahead(&t);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK(file_size("data.mdb") == 1 << 20);
    ll_store_close(s);
}

static void test_append(void)
{
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    ll_txn_t t;
    ll_buf_t rec;
    ll_event_t ev, d;
    uint64_t seq = 0, prev = 0;
    ll_buf_init(&rec, LL_EVENT_MAX);
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_event_last_seq(&t), 0);
    CHECK_EQ_INT(ll_event_get(&t, 1, &d), LL_ENOTFOUND);
    ll_txn_abort(&t);
    for (int batch = 0; batch < 3; batch++) {
        CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
        for (int i = 0; i < 4; i++) {
            memset(&ev, 0, sizeof(ev));
            ev.type = LL_EV_PAGEVIEW;
            ev.time_us = (uint64_t)(batch * 4 + i);
            set(&ev, LL_F_TITLE, "t");
            ll_buf_reset(&rec);
            CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
            CHECK_EQ_INT(ll_event_append(&t, rec.data, rec.len, &seq), 0);
            CHECK(seq == prev + 1);
            CHECK_EQ_INT(ll_be64_get((uint8_t *)rec.data + 4), seq); /* patched in place */
            prev = seq;
        }
        CHECK_EQ_INT(ll_txn_commit(&t), 0);
    }
    /* An aborted append leaves no gap. */
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_event_append(&t, rec.data, rec.len, &seq), 0);
    CHECK_EQ_INT(seq, 13);
    ll_txn_abort(&t);
    /* The next transaction, on the same ll_txn_t, numbers from the store, not from the append
     * it remembered (last_seq). */
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_event_append(&t, rec.data, rec.len, &seq), 0);
    CHECK_EQ_INT(seq, 13);
    ll_txn_abort(&t);
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_event_last_seq(&t), 12);
    CHECK_EQ_INT(ll_event_get(&t, 7, &d), 0);
    CHECK_EQ_INT(d.seq, 7);
    CHECK_EQ_INT(d.time_us, 6);
    collect_t c = {.n = 0};
    CHECK_EQ_INT(ll_events_scan(&t, 5, on_collect, &c), 0);
    CHECK_EQ_INT(c.n, 8);
    CHECK_EQ_INT(c.seq[0], 5);
    CHECK_EQ_INT(c.seq[7], 12);
    ll_txn_abort(&t);
    ll_buf_free(&rec);
    ll_store_close(s);
}

/* The numbers filed under a key of an index (visitor_events, contact_events), in order. */
static size_t index_list(ll_txn_t *t, ll_db_t db, const void *key, size_t keylen, uint64_t *out, size_t max)
{
    MDB_cursor *c;
    MDB_val k = {keylen, (void *)key}, v;
    size_t n = 0;
    if (mdb_cursor_open(t->txn, ll_store_dbi(t->store, db), &c) != 0)
        return 0;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY); rc == 0 && n < max; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_DUP))
        out[n++] = ll_be64_get(v.mv_data);
    mdb_cursor_close(c);
    return n;
}

/* An event's number goes after its visitor's and contact's last (MDB_APPENDDUP), and still in
 * order when a list already holds a larger number: a store never has one (numbers only grow),
 * so the test puts it there. */
static void test_index_append(void)
{
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    ll_txn_t t;
    ll_buf_t rec;
    ll_event_t ev;
    uint64_t seq, got[8];
    uint8_t ck[8], big[8];
    ll_be64_put(ck, 7);
    ll_be64_put(big, 1000);
    ll_buf_init(&rec, LL_EVENT_MAX);
    memset(&ev, 0, sizeof(ev));
    ev.type = LL_EV_PAGEVIEW;
    ev.contact = 7;
    vid_set(&ev.visitor, 3);
    CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    MDB_val k = {8, ck}, v = {8, big};
    CHECK_EQ_INT(mdb_put(t.txn, ll_store_dbi(s, LL_DB_CONTACT_EVENTS), &k, &v, 0), 0);
    k = (MDB_val){16, ev.visitor.b};
    CHECK_EQ_INT(mdb_put(t.txn, ll_store_dbi(s, LL_DB_VISITOR_EVENTS), &k, &v, 0), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(ll_event_append(&t, rec.data, rec.len, &seq), 0);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    ev.contact = 8; /* a key of its own: the first number, then appended */
    ll_buf_reset(&rec);
    CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
    CHECK_EQ_INT(ll_event_append(&t, rec.data, rec.len, &seq), 0);
    CHECK_EQ_INT(ll_event_append(&t, rec.data, rec.len, &seq), 0);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(index_list(&t, LL_DB_CONTACT_EVENTS, ck, 8, got, 8), 4);
    CHECK(got[0] == 1 && got[1] == 2 && got[2] == 3 && got[3] == 1000);
    CHECK_EQ_INT(index_list(&t, LL_DB_VISITOR_EVENTS, ev.visitor.b, 16, got, 8), 6);
    CHECK(got[0] == 1 && got[3] == 4 && got[4] == 5 && got[5] == 1000);
    ll_be64_put(ck, 8);
    CHECK_EQ_INT(index_list(&t, LL_DB_CONTACT_EVENTS, ck, 8, got, 8), 2);
    CHECK(got[0] == 4 && got[1] == 5);
    ll_txn_abort(&t);
    ll_buf_free(&rec);
    ll_store_close(s);
}

/* The cursors kept in a transaction (ll_txn_t.index, .visitor) stay right while other writes
 * move the same trees under them: 2000 contacts and 600 visitors in a shuffled order, so that leaves
 * split and the next key is seldom on the cursor's leaf; another cursor putting into
 * contact_events (as ingest.c binds a visitor's earlier events) and a delete, in between. Every
 * list must read back whole and in order. */
static void test_index_cursor(void)
{
    enum { CONTACTS = 2000, VISITORS = 600, EVENTS = 12000 };
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    ll_txn_t t;
    ll_buf_t rec;
    ll_event_t ev;
    uint64_t seq, got[64];
    static uint64_t want_c[CONTACTS + 1][32];
    static size_t nwant_c[CONTACTS + 1];
    static size_t nwant_v[VISITORS];
    static uint64_t last_v[VISITORS];
    uint32_t r = 12345;
    ll_buf_init(&rec, LL_EVENT_MAX);
    memset(nwant_c, 0, sizeof(nwant_c));
    memset(nwant_v, 0, sizeof(nwant_v));
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    for (uint64_t i = 1; i <= EVENTS; i++) {
        r = r * 1103515245u + 12345u;
        memset(&ev, 0, sizeof(ev));
        ev.type = LL_EV_PAGEVIEW;
        ev.contact = 1 + (r >> 8) % CONTACTS;
        size_t vn = (r >> 4) % VISITORS;
        memset(ev.visitor.b, 0, 16);
        ev.visitor.b[0] = 0xbb;
        ll_be64_put(ev.visitor.b + 8, vn * 0x9e3779b97f4a7c15ull); /* scattered over the tree */
        ll_buf_reset(&rec);
        CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
        CHECK_EQ_INT(ll_event_append(&t, rec.data, rec.len, &seq), 0);
        CHECK(seq == i);
        ll_visitor_rec_t vr; /* as ingest does: the visitor read, then written, new or not */
        int vrc = ll_visitor_get(&t, &ev.visitor, &vr);
        CHECK(vrc == 0 || vrc == LL_ENOTFOUND);
        if (vrc == LL_ENOTFOUND)
            vr.first_us = i;
        vr.last_us = i;
        vr.contact = vn;
        CHECK_EQ_INT(ll_visitor_put(&t, &ev.visitor, &vr), 0);
        last_v[vn] = i;
        if (nwant_c[ev.contact] < 32)
            want_c[ev.contact][nwant_c[ev.contact]++] = seq;
        nwant_v[vn]++;
        if (i % 997 == 0) { /* another cursor's put into the same tree, a number already there */
            uint8_t ck[8], sv[8];
            ll_be64_put(ck, ev.contact);
            ll_be64_put(sv, seq);
            MDB_val k = {8, ck}, v = {8, sv};
            CHECK_EQ_INT(mdb_put(t.txn, ll_store_dbi(s, LL_DB_CONTACT_EVENTS), &k, &v, MDB_NODUPDATA), MDB_KEYEXIST);
        }
        if (i == EVENTS / 2) { /* a delete under the cursors: contact 1's list goes */
            uint8_t ck[8];
            ll_be64_put(ck, 1);
            MDB_val k = {8, ck};
            int rc = mdb_del(t.txn, ll_store_dbi(s, LL_DB_CONTACT_EVENTS), &k, NULL);
            CHECK(rc == 0 || rc == MDB_NOTFOUND);
            nwant_c[1] = 0;
        }
    }
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    int bad = 0;
    for (uint64_t c = 1; c <= CONTACTS; c++) {
        uint8_t ck[8];
        ll_be64_put(ck, c);
        size_t n = index_list(&t, LL_DB_CONTACT_EVENTS, ck, 8, got, 64);
        size_t w = nwant_c[c] < 32 ? nwant_c[c] : 32;
        if (nwant_c[c] < 32 && n != w)
            bad++;
        for (size_t i = 0; i < w && i < n; i++)
            if (got[i] != want_c[c][i])
                bad++;
    }
    size_t total = 0;
    for (size_t vn = 0; vn < VISITORS; vn++) {
        uint8_t vb[16] = {0xbb};
        ll_be64_put(vb + 8, vn * 0x9e3779b97f4a7c15ull);
        size_t n = index_list(&t, LL_DB_VISITOR_EVENTS, vb, 16, got, 64);
        if (n != nwant_v[vn] || n > 64)
            bad++;
        for (size_t i = 1; i < n && i < 64; i++)
            if (got[i] <= got[i - 1])
                bad++;
        total += n;
        ll_visitor_id_t vid;
        ll_visitor_rec_t vr;
        memcpy(vid.b, vb, 16);
        if (nwant_v[vn] > 0 && (ll_visitor_get(&t, &vid, &vr) != 0 || vr.last_us != last_v[vn] || vr.contact != vn))
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(total == EVENTS);
    ll_txn_abort(&t);
    ll_buf_free(&rec);
    ll_store_close(s);
}

/* The judge's look-backs read headers only (ll_event_heads_of_contact_rev): the same events,
 * newest first, with the same header fields as a full scan and no text field. */
typedef struct {
    ll_event_t ev[8];
    size_t n;
} heads_t;

static int collect(const ll_event_t *e, void *arg)
{
    heads_t *h = arg;
    if (h->n < 8)
        h->ev[h->n++] = *e;
    return 0;
}

static void test_event_heads(void)
{
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    ll_txn_t t;
    ll_buf_t rec;
    ll_event_t ev;
    uint64_t seq;
    ll_buf_init(&rec, LL_EVENT_MAX);
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    for (int i = 0; i < 5; i++) {
        memset(&ev, 0, sizeof(ev));
        ev.type = i % 2 ? LL_EV_CLICK : LL_EV_OPEN;
        ev.contact = i == 2 ? 8 : 7; /* one event of another contact in between */
        ev.send = 40 + (uint64_t)i;
        ev.link = (uint32_t)i;
        ev.reasons = 1u << i;
        ev.time_us = 1000 + (uint64_t)i;
        vid_set(&ev.visitor, 9);
        set(&ev, LL_F_URL, "https://example.com/a");
        set(&ev, LL_F_UA, "Mozilla/5.0");
        ll_buf_reset(&rec);
        CHECK_EQ_INT(ll_event_encode(&ev, &rec), 0);
        CHECK_EQ_INT(ll_event_append(&t, rec.data, rec.len, &seq), 0);
    }
    heads_t full = {0}, heads = {0};
    CHECK_EQ_INT(ll_events_of_contact_rev(&t, 7, collect, &full), 0);
    CHECK_EQ_INT(ll_event_heads_of_contact_rev(&t, 7, collect, &heads), 0);
    CHECK_EQ_INT((int)full.n, 4);
    CHECK_EQ_INT((int)heads.n, 4);
    for (size_t i = 0; i < heads.n && i < full.n; i++) {
        const ll_event_t *a = &full.ev[i], *b = &heads.ev[i];
        CHECK(a->seq == b->seq && a->type == b->type && a->time_us == b->time_us && a->send == b->send &&
              a->link == b->link && a->reasons == b->reasons && a->contact == b->contact &&
              memcmp(a->visitor.b, b->visitor.b, 16) == 0);
        CHECK(a->f[LL_F_URL].len > 0);
        for (int f = 0; f < LL_F__MAX; f++)
            CHECK(b->f[f].len == 0);
    }
    CHECK(heads.ev[0].seq == 5 && heads.ev[3].seq == 1); /* newest first */
    heads.n = 0;
    CHECK_EQ_INT(ll_event_heads_of_visitor_rev(&t, &ev.visitor, collect, &heads), 0);
    CHECK_EQ_INT((int)heads.n, 5);
    CHECK_EQ_INT(ll_event_decode_header(rec.data, LL_EVENT_HEADER - 1, &ev), LL_EINVAL);
    ll_txn_abort(&t);
    ll_buf_free(&rec);
    ll_store_close(s);
}

/* A module's deferred writes (ll_txn_defer): put at the commit, dropped by an abort or by a
 * failed put (which aborts the transaction), one module per transaction. */
typedef struct {
    int commits, drops, fail;
    const char *key;
} defer_t;

static int defer_commit(void *arg, ll_txn_t *t)
{
    defer_t *d = arg;
    d->commits++;
    MDB_val k = {strlen(d->key), (void *)d->key}, v = {1, "1"};
    int rc = ll_store_err(mdb_put(t->txn, ll_store_dbi(t->store, LL_DB_META), &k, &v, 0));
    return d->fail ? LL_EFULL : rc;
}

static void defer_drop(void *arg)
{
    ((defer_t *)arg)->drops++;
}

static int meta_has(ll_store_t *s, const char *key)
{
    ll_txn_t t;
    MDB_val k = {strlen(key), (void *)key}, v;
    if (ll_txn_begin(s, 1, &t) != 0)
        return -1;
    int rc = mdb_get(t.txn, ll_store_dbi(s, LL_DB_META), &k, &v);
    ll_txn_abort(&t);
    return rc == 0;
}

/* ll_buf_append_u64 writes what "%llu" does. */
static void test_buf_u64(void)
{
    const uint64_t vals[] = {0, 7, 9, 10, 99, 100, 3600, 1234567890123ull, UINT64_MAX / 10, UINT64_MAX};
    char want[32];
    ll_buf_t b;
    ll_buf_init(&b, 64);
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        ll_buf_reset(&b);
        CHECK_EQ_INT(ll_buf_appends(&b, "x"), 0);
        CHECK_EQ_INT(ll_buf_append_u64(&b, vals[i]), 0);
        snprintf(want, sizeof(want), "x%llu", (unsigned long long)vals[i]);
        CHECK_EQ_STR(b.data, want);
    }
    ll_buf_free(&b);
    ll_buf_init(&b, 3); /* the cap holds: a number that does not fit leaves the buffer as it was */
    CHECK_EQ_INT(ll_buf_appends(&b, "ab"), 0);
    CHECK_EQ_INT(ll_buf_append_u64(&b, 12), LL_ETOOBIG);
    CHECK_EQ_STR(b.data, "ab");
    ll_buf_free(&b);
}

/* ll_sched_batch: the calling thread under SCHED_BATCH, and a thread it starts after it too. */
static void *policy_of_thread(void *arg)
{
    struct sched_param sp;
    pthread_getschedparam(pthread_self(), (int *)arg, &sp);
    return NULL;
}

static void *batch_then_start(void *arg)
{
    int *got = arg;
    struct sched_param sp;
    pthread_t child;
    if (ll_sched_batch() != 0)
        return NULL;
    pthread_getschedparam(pthread_self(), &got[0], &sp);
    if (pthread_create(&child, NULL, policy_of_thread, &got[1]) == 0)
        pthread_join(child, NULL);
    return NULL;
}

static void test_sched_batch(void)
{
    int got[2] = {-1, -1}, before = -1, after = -2;
    pthread_t t;
    policy_of_thread(&before);
    CHECK_EQ_INT(pthread_create(&t, NULL, batch_then_start, got), 0);
    pthread_join(t, NULL);
    CHECK_EQ_INT(got[0], SCHED_BATCH);
    CHECK_EQ_INT(got[1], SCHED_BATCH);
    policy_of_thread(&after); /* the thread that started it is left as it was */
    CHECK_EQ_INT(after, before);
}

/* ll_utf8_valid, whose ASCII runs are read eight bytes at a time: a NUL, a bad byte or a
 * sequence anywhere in or around such a run is still found. */
static void test_utf8(void)
{
    char s[48];
    for (size_t n = 1; n <= 40; n++) {
        for (size_t k = 0; k < n; k++) {
            memset(s, 'a', n);
            CHECK(ll_utf8_valid(s, n));
            s[k] = '\0';
            CHECK(!ll_utf8_valid(s, n));
            s[k] = (char)0xff;
            CHECK(!ll_utf8_valid(s, n));
            s[k] = (char)0x80; /* a continuation byte alone */
            CHECK(!ll_utf8_valid(s, n));
            s[k] = (char)0xc3; /* a lead byte cut short (or followed by 'a') */
            CHECK(!ll_utf8_valid(s, n));
            if (k + 1 < n) {
                s[k + 1] = (char)0xa9; /* é */
                CHECK(ll_utf8_valid(s, n));
                s[k] = (char)0xc0, s[k + 1] = (char)0xaf; /* overlong '/' */
                CHECK(!ll_utf8_valid(s, n));
            }
            if (k + 2 < n) {
                memcpy(s + k, "\xed\xa0\x80", 3); /* a surrogate */
                CHECK(!ll_utf8_valid(s, n));
                memcpy(s + k, "\xe2\x82\xac", 3); /* € */
                CHECK(ll_utf8_valid(s, n));
            }
        }
    }
    CHECK(ll_utf8_valid("", 0));
}

/* Visitor rows: a put after a get of the same visitor goes in place, any other put searches;
 * a longer row (another layout) is replaced whole. */
static void test_visitor_rows(void)
{
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    ll_visitor_id_t a, b, c, d;
    ll_visitor_rec_t r;
    ll_txn_t t;
    vid_set(&a, 1), vid_set(&b, 2), vid_set(&c, 3), vid_set(&d, 4);
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_visitor_put(&t, &a, &(ll_visitor_rec_t){.contact = 1, .first_us = 10, .last_us = 10}), 0);
    uint8_t longer[40];
    memset(longer, 0, sizeof(longer));
    longer[7] = 9; /* contact 9 */
    MDB_val k = {16, d.b}, v = {sizeof(longer), longer};
    CHECK_EQ_INT(mdb_put(t.txn, ll_store_dbi(s, LL_DB_VISITORS), &k, &v, 0), 0);
    CHECK_EQ_INT(ll_visitor_get(&t, &a, &r), 0);
    r.last_us = 20;
    CHECK_EQ_INT(ll_visitor_put(&t, &a, &r), 0); /* in place */
    CHECK_EQ_INT(ll_visitor_get(&t, &c, &r), LL_ENOTFOUND);
    CHECK_EQ_INT(ll_visitor_put(&t, &c, &(ll_visitor_rec_t){.contact = 3, .first_us = 30, .last_us = 30}), 0);
    CHECK_EQ_INT(ll_visitor_get(&t, &a, &r), 0);
    CHECK_EQ_INT(ll_visitor_put(&t, &b, &(ll_visitor_rec_t){.contact = 2, .first_us = 40, .last_us = 40}), 0);
    CHECK_EQ_INT(ll_visitor_get(&t, &d, &r), 0);
    CHECK_EQ_INT(r.contact, 9);
    r.last_us = 50;
    CHECK_EQ_INT(ll_visitor_put(&t, &d, &r), 0);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    static const struct {
        uint64_t contact, first, last;
    } want[] = {{1, 10, 20}, {2, 40, 40}, {3, 30, 30}, {9, 0, 50}};
    const ll_visitor_id_t *ids[] = {&a, &b, &c, &d};
    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ_INT(ll_visitor_get(&t, ids[i], &r), 0);
        CHECK_EQ_INT(r.contact, want[i].contact);
        CHECK_EQ_INT(r.first_us, want[i].first);
        CHECK_EQ_INT(r.last_us, want[i].last);
    }
    MDB_stat st;
    CHECK_EQ_INT(mdb_stat(t.txn, ll_store_dbi(s, LL_DB_VISITORS), &st), 0);
    CHECK_EQ_INT(st.ms_entries, 4);
    k = (MDB_val){16, d.b};
    CHECK_EQ_INT(mdb_get(t.txn, ll_store_dbi(s, LL_DB_VISITORS), &k, &v), 0);
    CHECK_EQ_INT(v.mv_size, 26);
    ll_txn_abort(&t);
    ll_store_close(s);
}

static void test_defer(void)
{
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    ll_txn_t t;
    defer_t a = {.key = "defer-a"}, b = {.key = "defer-b"}, f = {.key = "defer-f", .fail = 1};
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_txn_defer(&t, defer_commit, defer_drop, &a), 0);
    CHECK_EQ_INT(ll_txn_defer(&t, defer_commit, defer_drop, &a), 0); /* again: no-op */
    CHECK_EQ_INT(ll_txn_defer(&t, defer_commit, defer_drop, &b), LL_EEXIST);
    CHECK_EQ_INT(meta_has(s, "defer-a"), 0);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK_EQ_INT(a.commits, 1);
    CHECK_EQ_INT(a.drops, 0);
    CHECK_EQ_INT(meta_has(s, "defer-a"), 1);
    /* Aborted: dropped, never put; the next transaction on the same ll_txn_t starts clean. */
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_txn_defer(&t, defer_commit, defer_drop, &b), 0);
    ll_txn_abort(&t);
    CHECK_EQ_INT(b.drops, 1);
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK_EQ_INT(b.commits, 0);
    CHECK_EQ_INT(meta_has(s, "defer-b"), 0);
    /* A failed deferred put aborts the transaction: its other writes are gone too. */
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    MDB_val k = {7, "other-1"}, v = {1, "1"};
    CHECK_EQ_INT(mdb_put(t.txn, ll_store_dbi(s, LL_DB_META), &k, &v, 0), 0);
    CHECK_EQ_INT(ll_txn_defer(&t, defer_commit, defer_drop, &f), 0);
    CHECK_EQ_INT(ll_txn_commit(&t), LL_EFULL);
    CHECK_EQ_INT(f.commits, 1);
    CHECK_EQ_INT(f.drops, 0); /* its commit had it: nothing left to drop */
    CHECK_EQ_INT(meta_has(s, "other-1"), 0);
    CHECK_EQ_INT(meta_has(s, "defer-f"), 0);
    /* A read transaction takes none. */
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_txn_defer(&t, defer_commit, defer_drop, &a), LL_EEXIST);
    ll_txn_abort(&t);
    ll_store_close(s);
}

static void test_email(void)
{
    static const struct {
        const char *in, *out; /* out NULL: refused */
    } cases[] = {
        {"ann@example.com", "ann@example.com"},
        {"  Ann.Lee+News@Example.COM\t", "ann.lee+news@example.com"},
        {"a@b.co", "a@b.co"},
        {"j\xc3\xb6rg@m\xc3\xbcller.de", "j\xc3\xb6rg@m\xc3\xbcller.de"},
        {"first.last@sub.example.org", "first.last@sub.example.org"},
        {"", NULL},
        {"   ", NULL},
        {"ann", NULL},
        {"ann@", NULL},
        {"@example.com", NULL},
        {"ann@example", NULL},
        {"ann@example.", NULL},
        {"ann@.com", NULL},
        {"ann@@example.com", NULL},
        {"a@b@example.com", NULL},
        {"ann lee@example.com", NULL},
        {"ann@exa mple.com", NULL},
        {"ann\n@example.com", NULL},
        {"ann\x7f@example.com", NULL},
        {"<ann@example.com>", NULL},
        {"\"ann\"@example.com", NULL},
        {"ann@example.com,bob@example.com", NULL},
        {"ann@example.com;", NULL},
        {"a\\b@example.com", NULL},
        {"ann\xff@example.com", NULL},
        {"ann\xc3@example.com", NULL},
    };
    char out[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = ll_email_normalize(cases[i].in, strlen(cases[i].in), out);
        if (cases[i].out != NULL) {
            if (rc != 0)
                fprintf(stderr, "refused: '%s'\n", cases[i].in);
            CHECK_EQ_INT(rc, 0);
            if (rc == 0)
                CHECK_EQ_STR(out, cases[i].out);
        } else {
            if (rc != LL_EINVAL)
                fprintf(stderr, "accepted: '%s'\n", cases[i].in);
            CHECK_EQ_INT(rc, LL_EINVAL);
        }
    }
    /* A NUL inside the range is not an address; lengths around the 254-byte bound. */
    CHECK_EQ_INT(ll_email_normalize("a\0b@example.com", 15, out), LL_EINVAL);
    char longer[300];
    memset(longer, 'a', sizeof(longer));
    memcpy(longer + 242, "@example.com", 12); /* 254 bytes */
    CHECK_EQ_INT(ll_email_normalize(longer, 254, out), 0);
    CHECK_EQ_INT(strlen(out), 254);
    memset(longer, 'a', sizeof(longer));
    memcpy(longer + 243, "@example.com", 12); /* 255 bytes */
    CHECK_EQ_INT(ll_email_normalize(longer, 255, out), LL_EINVAL);
}

static void test_contacts(void)
{
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    int created = -1;
    uint64_t a = upsert(s, "ann@example.com", "{\"name\":\"Ann\",\"size\":50}", &created);
    CHECK_EQ_INT(created, 1);
    CHECK_EQ_INT(a, 1);
    uint64_t b = upsert(s, "bob@example.com", NULL, &created);
    CHECK_EQ_INT(created, 1);
    CHECK_EQ_INT(b, 2);
    uint64_t a2 = upsert(s, "ann@example.com", "{\"size\":\"51-200\",\"vip\":true,\"nested\":{\"x\":1}}", &created);
    CHECK_EQ_INT(created, 0);
    CHECK(a2 == a);

    ll_txn_t t;
    ll_contact_t c;
    uint64_t id = 0;
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_contact_find(&t, "ann@example.com", &id), 0);
    CHECK(id == a);
    CHECK_EQ_INT(ll_contact_find(&t, "nobody@example.com", &id), LL_ENOTFOUND);
    CHECK_EQ_INT(ll_contact_get(&t, 99, &c), LL_ENOTFOUND);
    CHECK_EQ_INT(ll_contact_get(&t, a, &c), 0);
    CHECK_EQ_STR(c.email, "ann@example.com");
    CHECK(c.created_us != 0 && c.updated_us >= c.created_us);
    json_error_t jerr;
    json_t *f = json_loads(c.fields_json, 0, &jerr);
    CHECK(json_is_object(f));
    CHECK_EQ_STR(json_string_value(json_object_get(f, "name")), "Ann");
    CHECK_EQ_STR(json_string_value(json_object_get(f, "size")), "51-200");
    CHECK(json_is_true(json_object_get(f, "vip")));
    CHECK(json_object_get(f, "nested") == NULL); /* only scalar values merge */
    json_decref(f);
    ll_contact_clear(&c);
    CHECK_EQ_INT(ll_contact_get(&t, b, &c), 0);
    CHECK_EQ_STR(c.fields_json, "{}");
    ll_contact_clear(&c);
    /* The same record with its fields as the parsed object: equal to what the text says, an
     * empty object for none, the text left NULL. */
    json_t *g = NULL;
    CHECK_EQ_INT(ll_contact_get_fields(&t, a, &c, &g), 0);
    CHECK_EQ_STR(c.email, "ann@example.com");
    CHECK(c.fields_json == NULL);
    CHECK_EQ_INT(ll_contact_get(&t, a, &c), 0);
    f = json_loads(c.fields_json, 0, &jerr);
    CHECK(g != NULL && json_equal(g, f));
    json_decref(f);
    json_decref(g);
    ll_contact_clear(&c);
    CHECK_EQ_INT(ll_contact_get_fields(&t, b, &c, &g), 0);
    CHECK(json_is_object(g) && json_object_size(g) == 0);
    json_decref(g);
    CHECK_EQ_INT(ll_contact_get_fields(&t, 99, &c, &g), LL_ENOTFOUND);
    CHECK(g == NULL);
    ll_txn_abort(&t);

    /* Flags survive a put. */
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_contact_get(&t, b, &c), 0);
    c.flags = LL_CF_UNSUBSCRIBED | LL_CF_BOUNCED;
    CHECK_EQ_INT(ll_contact_put(&t, &c), 0);
    ll_contact_clear(&c);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_contact_get(&t, b, &c), 0);
    CHECK_EQ_INT(c.flags, LL_CF_UNSUBSCRIBED | LL_CF_BOUNCED);
    uint64_t created_us = c.created_us;
    ll_contact_clear(&c);
    ll_txn_abort(&t);

    /* ... and an upsert (a form from someone who opted out): the flags and the creation time
     * stay, the fields merge in their order, a changed value in its place. */
    upsert(s, "bob@example.com", "{\"company\":\"Acme\",\"role\":\"cto\"}", &created);
    upsert(s, "bob@example.com", "{\"phone\":\"1\",\"company\":\"Acme Ltd\"}", &created);
    CHECK_EQ_INT(created, 0);
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_contact_get(&t, b, &c), 0);
    CHECK_EQ_INT(c.flags, LL_CF_UNSUBSCRIBED | LL_CF_BOUNCED);
    CHECK(c.created_us == created_us && c.updated_us >= created_us);
    CHECK_EQ_STR(c.fields_json, "{\"company\":\"Acme Ltd\",\"role\":\"cto\",\"phone\":\"1\"}");
    ll_contact_clear(&c);
    ll_txn_abort(&t);

    /* Fields that are not a JSON object are refused. */
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_contact_upsert(&t, "ann@example.com", "[1]", &id, &created), LL_EINVAL);
    ll_txn_abort(&t);
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_contact_upsert(&t, "ann@example.com", "{bad", &id, &created), LL_EINVAL);
    ll_txn_abort(&t);
    ll_store_close(s);
}

/* A form with an email creates the contact, binds the visitor and attributes its past. */
static void test_ingest_form(void)
{
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    ll_ingest_t r1 = ingest(s, LL_EV_PAGEVIEW, 1, 0, NULL, NULL, 0);
    ll_ingest_t r2 = ingest(s, LL_EV_PAGEVIEW, 1, 0, NULL, NULL, 0);
    CHECK_EQ_INT(r1.contact, 0);
    CHECK_EQ_INT(r2.contact, 0);
    CHECK_EQ_INT(visitor_contact(s, 1), 0);
    /* Another visitor's pageview must not be attributed. */
    ll_ingest_t other = ingest(s, LL_EV_PAGEVIEW, 2, 0, NULL, NULL, 0);

    ll_ingest_t f = ingest(s, LL_EV_FORM, 1, 0, "ann@example.com", "{\"company\":\"Acme\"}", 0);
    CHECK_EQ_INT(f.contact_created, 1);
    CHECK(f.contact != 0);
    CHECK_EQ_INT(visitor_contact(s, 1), f.contact);

    collect_t c = of_contact(s, f.contact);
    CHECK_EQ_INT(c.n, 3);
    CHECK(c.seq[0] == r1.seq && c.seq[1] == r2.seq && c.seq[2] == f.seq);
    CHECK_EQ_INT(c.contact[0], 0); /* the records themselves never change */
    CHECK(c.contact[2] == f.contact);
    CHECK(c.flags[0] & LL_EVF_NEW_VISITOR);
    CHECK(!(c.flags[1] & LL_EVF_NEW_VISITOR));
    CHECK(c.flags[2] & LL_EVF_BOUND);
    CHECK(!(c.flags[2] & LL_EVF_FORWARD));
    for (int i = 0; i < c.n; i++)
        CHECK(c.seq[i] != other.seq);

    ll_txn_t t;
    ll_contact_t ct;
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_contact_get(&t, f.contact, &ct), 0);
    CHECK_EQ_STR(ct.fields_json, "{\"company\":\"Acme\"}");
    ll_contact_clear(&ct);
    ll_txn_abort(&t);

    /* A second form from the same browser updates, does not re-bind, does not duplicate. */
    ll_ingest_t f2 = ingest(s, LL_EV_FORM, 1, 0, "ann@example.com", "{\"phone\":\"1\"}", 0);
    CHECK_EQ_INT(f2.contact_created, 0);
    CHECK(f2.contact == f.contact);
    c = of_contact(s, f.contact);
    CHECK_EQ_INT(c.n, 4);
    CHECK(!(c.flags[3] & LL_EVF_BOUND));
    ll_store_close(s);
}

static void test_ingest_click(void)
{
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    int created;
    uint64_t a = upsert(s, "a@example.com", NULL, &created);
    uint64_t b = upsert(s, "b@example.com", NULL, &created);

    /* A click binds an unbound visitor, and attributes its earlier pageview. */
    ll_ingest_t pv = ingest(s, LL_EV_PAGEVIEW, 3, 0, NULL, NULL, 0);
    ll_ingest_t ck = ingest(s, LL_EV_CLICK, 3, a, NULL, NULL, 1);
    CHECK(ck.contact == a);
    CHECK_EQ_INT(visitor_contact(s, 3), a);
    collect_t c = of_contact(s, a);
    CHECK_EQ_INT(c.n, 2);
    CHECK(c.seq[0] == pv.seq && c.seq[1] == ck.seq);
    CHECK(c.flags[1] & LL_EVF_BOUND);
    CHECK(!(c.flags[1] & LL_EVF_FORWARD));

    /* An open (bind = 0) by an unbound visitor does not bind it. */
    ingest(s, LL_EV_OPEN, 4, b, NULL, NULL, 0);
    CHECK_EQ_INT(visitor_contact(s, 4), 0);

    /* B's link clicked in A's browser: a forward, stored with B, the visitor stays A's. */
    ll_ingest_t fw = ingest(s, LL_EV_CLICK, 3, b, NULL, NULL, 1);
    CHECK(fw.contact == b);
    CHECK_EQ_INT(visitor_contact(s, 3), a);
    ll_txn_t t;
    ll_event_t ev;
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_event_get(&t, fw.seq, &ev), 0);
    CHECK(ev.flags & LL_EVF_FORWARD);
    CHECK(!(ev.flags & LL_EVF_BOUND));
    CHECK(ev.contact == b);
    ll_txn_abort(&t);
    c = of_contact(s, b);
    CHECK_EQ_INT(c.n, 2); /* the open and the forwarded click */
    CHECK(c.seq[1] == fw.seq);
    c = of_contact(s, a);
    CHECK_EQ_INT(c.n, 2); /* unchanged */

    /* An event without a contact gets the visitor's. */
    ll_ingest_t later = ingest(s, LL_EV_PAGEVIEW, 3, 0, NULL, NULL, 0);
    CHECK(later.contact == a);
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_event_get(&t, later.seq, &ev), 0);
    CHECK(ev.contact == a);
    ll_txn_abort(&t);
    c = of_contact(s, a);
    CHECK_EQ_INT(c.n, 3);

    /* An event with neither visitor nor contact stays anonymous and is still stored. */
    ll_ingest_t anon = ingest(s, LL_EV_CUSTOM, 0, 0, NULL, NULL, 0);
    CHECK_EQ_INT(anon.contact, 0);
    CHECK(anon.seq == later.seq + 1);
    ll_store_close(s);
}

static void test_reopen(void)
{
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    ll_ingest_t f = ingest(s, LL_EV_FORM, 9, 0, "keep@example.com", "{\"k\":\"v\"}", 0);
    ingest(s, LL_EV_PAGEVIEW, 9, 0, NULL, NULL, 0);
    ll_store_close(s);

    s = store_open();
    if (s == NULL)
        return;
    ll_txn_t t;
    uint64_t id = 0;
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0);
    CHECK_EQ_INT(ll_event_last_seq(&t), 2);
    CHECK_EQ_INT(ll_contact_find(&t, "keep@example.com", &id), 0);
    CHECK(id == f.contact);
    ll_txn_abort(&t);
    CHECK_EQ_INT(visitor_contact(s, 9), f.contact);
    collect_t c = of_contact(s, f.contact);
    CHECK_EQ_INT(c.n, 2);
    /* New contacts and events continue the sequences. */
    int created;
    CHECK_EQ_INT(upsert(s, "new@example.com", NULL, &created), f.contact + 1);
    ll_ingest_t n = ingest(s, LL_EV_PAGEVIEW, 10, 0, NULL, NULL, 0);
    CHECK_EQ_INT(n.seq, 3);
    ll_store_close(s);
}

/* Minted ids: time first (they sort by minting time, so the visitor tables grow at one end),
 * then random bytes (two ids of the same millisecond still differ). */
static void test_visitor_new(void)
{
    ll_visitor_id_t a, b, c;
    uint64_t before = ll_now_us() / 1000;
    ll_visitor_new(&a);
    ll_visitor_new(&b);
    usleep(2000);
    ll_visitor_new(&c);
    CHECK(!ll_visitor_is_zero(&a));
    CHECK(memcmp(a.b, b.b, 16) != 0);
    CHECK(memcmp(a.b + 6, b.b + 6, 10) != 0);
    CHECK(memcmp(b.b, c.b, 6) < 0);
    uint64_t ms = 0;
    for (int i = 0; i < 6; i++)
        ms = ms << 8 | a.b[i];
    CHECK(ms >= before && ms <= ll_now_us() / 1000);
}

/* The random part is drawn ahead in a per-thread pool: ids across refills all differ, and a
 * forked child does not hand out the bytes its parent will. */
static void test_visitor_new_pool(void)
{
    enum { N = 300 };
    static ll_visitor_id_t ids[N];
    for (int i = 0; i < N; i++)
        ll_visitor_new(&ids[i]);
    for (int i = 0; i < N; i++)
        for (int k = i + 1; k < N; k++)
            CHECK(memcmp(ids[i].b + 6, ids[k].b + 6, 10) != 0);

    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        ll_visitor_id_t c;
        ll_visitor_new(&c);
        _exit(write(fds[1], c.b, 16) == 16 ? 0 : 1);
    }
    ll_visitor_id_t parent, child;
    ll_visitor_new(&parent);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(read(fds[0], child.b, 16) == 16);
    close(fds[0]);
    close(fds[1]);
    CHECK(memcmp(parent.b + 6, child.b + 6, 10) != 0);
}

/* ll_txn_get/ll_txn_put (store.h): ten dbs, eight kept cursors and two that fall back, random
 * keys and ever-larger ones, with another cursor's puts, deletes and a drop under the kept
 * cursors; every read checked against a mirror, in the write transaction and after it. */
static void test_kept_cursors(void)
{
    enum { DBS = 10, KEYS = 1500, OPS = 30000 };
    ll_store_t *s = store_fresh();
    if (s == NULL)
        return;
    MDB_dbi dbi[DBS];
    static uint32_t want[DBS][KEYS]; /* 0: absent */
    char name[16];
    uint32_t r = 777;
    memset(want, 0, sizeof(want));
    for (int d = 0; d < DBS; d++) {
        snprintf(name, sizeof(name), "kept%d", d);
        CHECK_EQ_INT(ll_store_open_db(s, name, 0, &dbi[d]), 0);
    }
    ll_txn_t t;
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    for (uint32_t i = 1; i <= OPS; i++) {
        r = r * 1103515245u + 12345u;
        int d = (int)((r >> 24) % DBS);
        /* db 1 grows at its end, as the ledger does; the others take keys anywhere */
        uint32_t key = d == 1 ? (i * (KEYS - 1)) / OPS : (r >> 8) % KEYS;
        uint8_t kb[8], vb[4];
        ll_be64_put(kb, key);
        ll_be32_put(vb, i);
        MDB_val k = {8, kb}, v = {4, vb};
        if (i % 97 == 0) { /* another cursor's put */
            CHECK_EQ_INT(mdb_put(t.txn, dbi[d], &k, &v, 0), 0);
            want[d][key] = i;
        } else if (i % 211 == 0) { /* a delete */
            int rc = mdb_del(t.txn, dbi[d], &k, NULL);
            CHECK(rc == 0 || rc == MDB_NOTFOUND);
            want[d][key] = 0;
        } else if (i == OPS / 2) { /* db 0 emptied under its kept cursor */
            CHECK_EQ_INT(mdb_drop(t.txn, dbi[0], 0), 0);
            memset(want[0], 0, sizeof(want[0]));
        } else if (i % 3 == 0) {
            MDB_val gk = {8, kb}, gv;
            int rc = ll_txn_get(&t, dbi[d], &gk, &gv);
            if (want[d][key] == 0)
                CHECK_EQ_INT(rc, MDB_NOTFOUND);
            else
                CHECK(rc == 0 && gv.mv_size == 4 && ll_be32_get(gv.mv_data) == want[d][key]);
        } else {
            CHECK_EQ_INT(ll_txn_put(&t, dbi[d], &k, &v, 0), 0);
            want[d][key] = i;
        }
    }
    CHECK_EQ_INT(t.nkept, (int)(sizeof(t.kept) / sizeof(t.kept[0])));
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK_EQ_INT(ll_txn_begin(s, 1, &t), 0); /* a read transaction: mdb_get */
    size_t bad = 0, present = 0;
    for (int d = 0; d < DBS; d++) {
        for (uint32_t key = 0; key < KEYS; key++) {
            uint8_t kb[8];
            ll_be64_put(kb, key);
            MDB_val k = {8, kb}, v;
            int rc = ll_txn_get(&t, dbi[d], &k, &v);
            present += rc == 0;
            if (want[d][key] == 0 ? rc != MDB_NOTFOUND : rc != 0 || ll_be32_get(v.mv_data) != want[d][key])
                bad++;
        }
    }
    CHECK_EQ_INT(t.nkept, 0);
    ll_txn_abort(&t);
    CHECK_EQ_INT((int)bad, 0);
    CHECK(present > 3000);
    ll_store_close(s);
}

int main(void)
{
    RUN(test_visitor_new);
    RUN(test_visitor_new_pool);
    RUN(test_zero_ahead);
    RUN(test_roundtrip);
    RUN(test_add_field);
    RUN(test_truncate);
    RUN(test_corrupt);
    RUN(test_json);
    RUN(test_append);
    RUN(test_defer);
    RUN(test_visitor_rows);
    RUN(test_index_append);
    RUN(test_index_cursor);
    RUN(test_event_heads);
    RUN(test_kept_cursors);
    RUN(test_buf_u64);
    RUN(test_sched_batch);
    RUN(test_utf8);
    RUN(test_email);
    RUN(test_contacts);
    RUN(test_ingest_form);
    RUN(test_ingest_click);
    RUN(test_reopen);
    if (tmpdir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "test_store: cannot remove %s\n", tmpdir);
    }
    return TEST_DONE("store");
}
