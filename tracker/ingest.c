/* Identity rules applied to each event inside the writer's transaction (see ingest.h). */
#include <string.h>
#include <stdlib.h>
#include "leadloop/ingest.h"
#include "leadloop/judge.h"
#include "leadloop/score.h"

typedef struct {
    ll_txn_t *t;
    uint64_t contact;
    ll_scorer_t *scorer;
    int rc;
} attribute_ctx_t;

/* Earlier anonymous events of a newly bound visitor join the contact's timeline. */
static int on_attribute(const ll_event_t *ev, void *p)
{
    attribute_ctx_t *a = p;
    if (ev->contact != 0)
        return 0;
    uint8_t ck[8], sv[8];
    ll_be64_put(ck, a->contact);
    ll_be64_put(sv, ev->seq);
    MDB_val k = {8, ck}, v = {8, sv};
    int rc = mdb_put(a->t->txn, ll_store_dbi(a->t->store, LL_DB_CONTACT_EVENTS), &k, &v, MDB_NODUPDATA);
    if (rc != 0 && rc != MDB_KEYEXIST) {
        a->rc = ll_store_err(rc);
        return 1;
    }
    /* DESIGN.md "Identity": binding attributes the earlier events to the contact and scores them. */
    if (rc == 0 && a->scorer != NULL) {
        MDB_val ek = {8, sv}, ev_rec;
        if ((rc = mdb_get(a->t->txn, ll_store_dbi(a->t->store, LL_DB_EVENTS), &ek, &ev_rec)) != 0 ||
            (a->rc = ll_score_event(a->scorer, a->t, ev_rec.mv_data, ev_rec.mv_size, a->contact, 0)) != 0) {
            if (a->rc == 0)
                a->rc = ll_store_err(rc);
            return 1;
        }
    }
    return 0;
}

int ll_ingest(ll_txn_t *t, ll_ingest_t *in)
{
    ll_visitor_id_t vid;
    ll_visitor_rec_t vr;
    int rc, have_visitor, known_visitor = 0;
    uint8_t flags = ((uint8_t *)in->rec)[3];
    uint64_t now = ll_now_us(), contact = ll_event_rec_contact(in->rec), bind_to = 0;

    in->contact_created = 0;
    if (in->email != NULL) {
        if ((rc = ll_contact_upsert(t, in->email, in->fields_json, &contact, &in->contact_created)) != 0)
            return rc;
        bind_to = contact;
    } else if (in->bind && contact != 0) {
        bind_to = contact;
    }

    ll_event_rec_visitor(in->rec, &vid);
    have_visitor = !ll_visitor_is_zero(&vid);
    if (have_visitor) {
        rc = ll_visitor_get(t, &vid, &vr);
        if (rc == 0)
            known_visitor = 1;
        else if (rc == LL_ENOTFOUND)
            vr.first_us = now, flags |= LL_EVF_NEW_VISITOR;
        else
            return rc;
        vr.last_us = now;
        ll_event_t ev;
        if (ll_event_decode(in->rec, in->len, &ev) == 0 && ev.f[LL_F_COUNTRY].len == 2)
            memcpy(vr.country, ev.f[LL_F_COUNTRY].base, 2);
        int attribute = 0;
        if (bind_to != 0) {
            if (vr.contact == 0) {
                vr.contact = bind_to;
                flags |= LL_EVF_BOUND;
                attribute = known_visitor;
            } else if (vr.contact != bind_to && in->email == NULL) {
                /* Never merge two known people: someone else's link was clicked (forwarded mail). */
                flags |= LL_EVF_FORWARD;
            } else if (vr.contact != bind_to) {
                /* A form naming another address rebinds the browser to the person who typed it. */
                vr.contact = bind_to;
                flags |= LL_EVF_BOUND;
            }
        }
        if (contact == 0)
            contact = vr.contact;
        if ((rc = ll_visitor_put(t, &vid, &vr)) != 0)
            return rc;
        if (attribute) {
            attribute_ctx_t a = {t, bind_to, in->scorer, 0};
            if ((rc = ll_events_of_visitor(t, &vid, on_attribute, &a)) != 0)
                return rc;
            if (a.rc != 0)
                return a.rc;
        }
    }
    /* An opt-out or a hard bounce suppresses the contact in the transaction that records it, so
     * the mailer (which checks the flags when it claims a message) never mails it again. */
    uint8_t type = ll_event_rec_type(in->rec);
    if ((type == LL_EV_UNSUBSCRIBE || type == LL_EV_BOUNCE) && contact != 0) {
        ll_contact_t c;
        uint32_t f = type == LL_EV_UNSUBSCRIBE ? LL_CF_UNSUBSCRIBED : LL_CF_BOUNCED;
        if ((rc = ll_contact_get(t, contact, &c)) == 0) {
            if (!(c.flags & f)) {
                c.flags |= f;
                rc = ll_contact_put(t, &c);
            }
            ll_contact_clear(&c);
        }
        if (rc != 0 && rc != LL_ENOTFOUND)
            return rc;
    }
    ll_event_patch_contact(in->rec, contact);
    ll_event_patch_flags(in->rec, flags);
    in->contact = contact;
    uint8_t *rec = in->rec;
    size_t len = in->len;
    ll_buf_t with_data = {0};
    if (in->judge != NULL) {
        char *data = NULL;
        if ((rc = ll_judge_before(in->judge, t, rec, len, in->client_ip, &data)) != 0)
            return rc;
        if (data != NULL) { /* the judge's evidence becomes the event's data (it has none) */
            size_t n = strlen(data);
            ll_buf_init(&with_data, LL_EVENT_MAX);
            if (n <= ll_event_field_limit(LL_F_DATA) && ll_event_add_field(rec, len, LL_F_DATA, data, n, &with_data) == 0)
                rec = (uint8_t *)with_data.data, len = with_data.len;
            free(data);
        }
    }
    int defer = 0;
    if ((rc = ll_event_append(t, rec, len, &in->seq)) == 0 && in->judge != NULL)
        rc = ll_judge_after(in->judge, t, rec, len, in->seq, &defer);
    if (rc == 0 && in->scorer != NULL && !defer)
        rc = ll_score_event(in->scorer, t, rec, len, 0, in->email != NULL);
    ll_buf_free(&with_data);
    return rc;
}

int ll_ingest_event(ll_txn_t *t, const ll_event_t *ev, struct st_ll_scorer_t *scorer)
{
    ll_buf_t rec;
    ll_buf_init(&rec, LL_EVENT_MAX);
    int rc = ll_event_encode(ev, &rec);
    if (rc == 0) {
        ll_ingest_t in = {.rec = (uint8_t *)rec.data, .len = rec.len, .scorer = scorer};
        rc = ll_ingest(t, &in);
    }
    ll_buf_free(&rec);
    return rc;
}
