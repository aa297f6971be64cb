/*
 * The event model and its versioned binary record (the value of the `events` database).
 *
 * A record is a fixed 64-byte header followed by tag-length-value fields:
 *
 *   off size field
 *     0   1  version (LL_EVENT_VERSION)
 *     1   1  type (ll_event_type_t)
 *     2   1  classification (ll_class_t)
 *     3   1  flags (LL_EVF_*)
 *     4   8  seq, big-endian (patched by the store when appended)
 *    12   8  time, microseconds since the epoch, big-endian
 *    20  16  visitor id (all zero: none)
 *    36   8  contact id, big-endian (0: none; patched by ingest when resolved)
 *    44   8  send id, big-endian (0: none)
 *    52   4  link index, big-endian
 *    56   4  classification reasons, a bit set of LL_REASON_*
 *    60   4  reserved (0)
 *    64   ..  fields: tag (1 byte), length (2 bytes big-endian), bytes
 *
 * Why: the header keeps what indexes and scoring read at fixed offsets, so the writer can
 * patch seq and contact in place without re-encoding; TLV fields make the record
 * extensible (an unknown tag is skipped by older readers). Every text field is bounded on
 * encode (ll_event_field_limit) and truncated at a UTF-8 boundary, so a client never chooses
 * how large a record gets. A new layout bumps LL_EVENT_VERSION; readers keep decoding old ones.
 */
#ifndef LEADLOOP_EVENT_H
#define LEADLOOP_EVENT_H

#include "leadloop/common.h"

#define LL_EVENT_VERSION 1
#define LL_EVENT_HEADER 64
#define LL_EVENT_MAX 16384 /* an encoded record never exceeds this */

typedef enum {
    LL_EV_NONE = 0,
    LL_EV_PAGEVIEW = 1,
    LL_EV_CLICK = 2,      /* signed email click */
    LL_EV_OPEN = 3,       /* email open pixel */
    LL_EV_FORM = 4,       /* form submission */
    LL_EV_DOWNLOAD = 5,   /* file download link on a page */
    LL_EV_OUTBOUND = 6,   /* outbound link click on a page */
    LL_EV_ENGAGE = 7,     /* engaged time and scroll depth for a page */
    LL_EV_CUSTOM = 8,     /* a named event from the site */
    LL_EV_SENT = 9,       /* the mailer handed a message to SMTP */
    LL_EV_BOUNCE = 10,
    LL_EV_UNSUBSCRIBE = 11,
    LL_EV_IDENTIFY = 12,  /* a contact created or updated by an operator or import */
    LL_EV__MAX
} ll_event_type_t;

typedef enum {
    LL_CLASS_UNKNOWN = 0,
    LL_CLASS_HUMAN = 1,
    LL_CLASS_PREFETCH = 2,
    LL_CLASS_BOT = 3,
    LL_CLASS_SCANNER = 4,
    LL_CLASS_LIKELY_HUMAN = 5, /* an open or click with no machine signal, not proven human (judge.h) */
    LL_CLASS__MAX
} ll_class_t;

/* Classification reasons (bit set). Names via ll_reason_name(). */
enum {
    LL_REASON_BOT_UA = 1u << 0,        /* user agent names a crawler or tool */
    LL_REASON_HEAD = 1u << 1,          /* HEAD request */
    LL_REASON_PREFETCH_HDR = 1u << 2,  /* Purpose / Sec-Purpose: prefetch */
    LL_REASON_NO_UA = 1u << 3,         /* no user agent at all */
    LL_REASON_BROWSER_UA = 1u << 4,    /* a browser user agent */
    LL_REASON_JS = 1u << 5,            /* sent by the snippet (ran JavaScript) */
    LL_REASON_FORM = 1u << 6,          /* a form post from a browser */
    LL_REASON_HONEYPOT = 1u << 7,      /* honeypot field was filled */
    LL_REASON_HEADLESS_UA = 1u << 8,   /* HeadlessChrome and kin */
    LL_REASON_PRERENDER = 1u << 9,     /* sent while prerendered */
    /* Message-level signals on email opens and clicks (judge.h). */
    LL_REASON_FAST = 1u << 10,         /* within scanner fast_after_send_s of the message's SMTP acceptance */
    LL_REASON_SWEEP = 1u << 11,        /* several links of one message within sweep_window_s, or in document order */
    LL_REASON_HONEYPOT_LINK = 1u << 12, /* the hidden link, or in the burst of a message where it was hit */
    LL_REASON_IP_LIST = 1u << 13,      /* the address is on a list in scanner_lists */
    LL_REASON_ASN_LIST = 1u << 14,     /* its network (ASN) is */
    LL_REASON_UA_LIST = 1u << 15,      /* its user agent is */
    LL_REASON_JS_AFTER = 1u << 16,     /* the clicking browser then ran the snippet */
    LL_REASON_NO_JS_AFTER = 1u << 17,  /* it did not, within provisional_s */
    LL_REASON_WEBDRIVER = 1u << 18,    /* the snippet saw navigator.webdriver (an automated browser) */
    LL_REASON_LATE = 1u << 19          /* long enough after delivery for a person (not fast) */
};

/* Flags */
enum {
    LL_EVF_FORWARD = 1u << 0,  /* a click on contact B's link by a visitor bound to contact A */
    LL_EVF_NEW_VISITOR = 1u << 1,
    LL_EVF_BOUND = 1u << 2,    /* this event bound its visitor to its contact */
    LL_EVF_PROVISIONAL = 1u << 3 /* an open or click whose label may still change: not scored yet (judge.h) */
};

/* Field tags. Never renumber; add at the end. */
typedef enum {
    LL_F_URL = 1,
    LL_F_REFERRER = 2,
    LL_F_TITLE = 3,
    LL_F_UTM_SOURCE = 4,
    LL_F_UTM_MEDIUM = 5,
    LL_F_UTM_CAMPAIGN = 6,
    LL_F_UTM_TERM = 7,
    LL_F_UTM_CONTENT = 8,
    LL_F_COUNTRY = 9,
    LL_F_REGION = 10,
    LL_F_CITY = 11,
    LL_F_TZ = 12,
    LL_F_ASN = 13,   /* decimal text */
    LL_F_ORG = 14,
    LL_F_IP = 15,    /* truncated address, 4 or 16 raw bytes */
    LL_F_UA = 16,
    LL_F_FORM = 17,  /* form id */
    LL_F_FIELDS = 18, /* JSON object of the kept form fields */
    LL_F_DATA = 19,  /* JSON object of event-specific data (engaged_ms, scroll, name, file, ...) */
    LL_F_EMAIL = 20, /* email address given with a form (lower-cased) */
    LL_F_PROGRAM = 21,
    LL_F_STEP = 22,
    LL_F_TAG = 23,   /* a click's link tag (data-ll-tag in the template) */
    LL_F__MAX
} ll_field_t;

typedef struct st_ll_visitor_id_t {
    uint8_t b[16];
} ll_visitor_id_t;

/**
 * A decoded (or to-be-encoded) event. Text fields are borrowed ranges: after
 * ll_event_decode() they point into the record; before ll_event_encode() into whatever the
 * caller owns. A field with len 0 is absent.
 */
typedef struct st_ll_event_t {
    uint8_t version, type, cls, flags;
    uint64_t seq;
    uint64_t time_us;
    ll_visitor_id_t visitor;
    uint64_t contact;
    uint64_t send;
    uint32_t link;
    uint32_t reasons;
    ll_str_t f[LL_F__MAX]; /* indexed by ll_field_t */
} ll_event_t;

/** Maximum bytes kept for a field (longer values are truncated at a UTF-8 boundary). */
size_t ll_event_field_limit(ll_field_t tag);

/** Appends the record for ev to out (which should have limit >= LL_EVENT_MAX). */
int ll_event_encode(const ll_event_t *ev, ll_buf_t *out);

/**
 * Appends to out the record rec with one field more, tag = s (bounded as ll_event_encode bounds
 * it; nothing when n is 0), after its other fields: for a field rec does not have, what encoding
 * the decoded event with the field set gives, save the fields' order, which readers do not
 * depend on. The writer adds the judge's evidence to an open or click this way (a decode and an
 * encode cost about five times as much).
 */
int ll_event_add_field(const void *rec, size_t len, ll_field_t tag, const char *s, size_t n, ll_buf_t *out);

/** Decodes rec; fields point into rec. LL_EINVAL on a short or corrupt record. */
int ll_event_decode(const void *rec, size_t len, ll_event_t *ev);
/**
 * Decodes rec's fixed header only (version, type, class, flags, seq, time, visitor, contact,
 * send, link, reasons) and leaves ev->f as it was: for scans that read no text field (the
 * judge's look-backs). LL_EINVAL on a short record or another version; the fields after the
 * header are not looked at.
 */
int ll_event_decode_header(const void *rec, size_t len, ll_event_t *ev);

/* In-place patches of an encoded record (rec has at least LL_EVENT_HEADER bytes). */
void ll_event_patch_seq(void *rec, uint64_t seq);
void ll_event_patch_contact(void *rec, uint64_t contact);
void ll_event_patch_flags(void *rec, uint8_t flags);
void ll_event_patch_class(void *rec, uint8_t cls, uint32_t reasons);
uint64_t ll_event_rec_contact(const void *rec);
void ll_event_rec_visitor(const void *rec, ll_visitor_id_t *out);
uint8_t ll_event_rec_type(const void *rec);

const char *ll_event_type_name(int type);   /* "pageview", ...; "unknown" */
int ll_event_type_parse(const char *s, size_t n); /* 0 when unknown */
const char *ll_class_name(int cls);         /* "human", ... */
const char *ll_field_name(int tag);         /* "url", ... */
/** The name of reason bit i (0..31), or NULL when the bit has none. */
const char *ll_reason_name(int bit);
/** Appends the reason names, comma-separated, to out. */
int ll_reasons_format(uint32_t reasons, ll_buf_t *out);

int ll_visitor_is_zero(const ll_visitor_id_t *v);
void ll_visitor_to_hex(const ll_visitor_id_t *v, char out[33]);
int ll_visitor_from_hex(ll_visitor_id_t *v, const char *s, size_t n); /* 0 or LL_EINVAL */
/**
 * A new visitor id: the time in milliseconds (6 bytes, big-endian), then 10 bytes of OpenSSL
 * RAND_bytes (drawn 64 ids ahead per thread; a fork drops the child's), as a UUIDv7 is built.
 * Time first so that the visitor tables, keyed by the id, take new ids near their end: random ids cost a random page each per commit, which halved the click
 * rate on a store of a few hundred thousand visitors (BENCHMARKS.md). Never all zero. Ids from
 * elsewhere (the snippet's, old cookies) stay any 16 non-zero bytes.
 */
void ll_visitor_new(ll_visitor_id_t *v);

/**
 * Appends ev as one JSON object (no newline). Field names are stable: seq, time (ISO 8601 UTC),
 * type, class, reasons[], visitor, contact, email (when given), send, link, and each field by
 * ll_field_name(); FIELDS and DATA are embedded as JSON objects.
 */
int ll_event_to_json(const ll_event_t *ev, const char *contact_email, ll_buf_t *out);

#endif
