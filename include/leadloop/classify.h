/*
 * Request classification: is this hit from a person, a prefetch, a bot or unknown?
 * For now it looks only at the request itself (user agent, method, Purpose/Sec-Purpose);
 * a later issue adds timing and network evidence for email scanners. Each decision carries
 * its reasons (LL_REASON_* in event.h) so an operator can see why.
 */
#ifndef LEADLOOP_CLASSIFY_H
#define LEADLOOP_CLASSIFY_H

#include "leadloop/event.h"

typedef struct st_ll_classify_in_t {
    int is_head;       /* HEAD request */
    ll_str_t ua;       /* User-Agent (len 0: absent) */
    ll_str_t purpose;  /* Purpose or X-Purpose or X-Moz */
    ll_str_t sec_purpose;
    int from_snippet;  /* the event came from ll.js (the page ran JavaScript) */
} ll_classify_in_t;

/** Returns an ll_class_t and ORs the reasons into *reasons. Never fails. */
int ll_classify(const ll_classify_in_t *in, uint32_t *reasons);

#endif
