/*
 * Unsubscribe links (/u/<token>, a signed LL_TOK_UNSUB token from the mailer):
 *   GET  shows a confirmation page and changes nothing: mail scanners and link checkers follow
 *        every link, and must not unsubscribe anyone;
 *   POST unsubscribes at once (RFC 8058 one-click: the mail client posts
 *        "List-Unsubscribe=One-Click"; the page's own button posts the same).
 * The unsubscribe event goes through the writer like any other; ingest (tracker/ingest.c) sets
 * the contact's unsubscribed flag in the same transaction, and the answer waits for the commit.
 */
#include <string.h>
#include "server.h"

static const char page_head[] =
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
    "<meta name=\"robots\" content=\"noindex\"><title>Unsubscribe</title></head>"
    "<body style=\"font-family:sans-serif;max-width:32em;margin:3em auto\">";

static void respond_html(h2o_req_t *req, int status, const char *reason, const char *body)
{
    h2o_iovec_t b = h2o_concat(&req->pool, h2o_iovec_init(page_head, sizeof(page_head) - 1),
                               h2o_iovec_init(body, strlen(body)), h2o_iovec_init(H2O_STRLIT("</body></html>\n")));
    ll__metrics_request(EP_OTHER, status);
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/html; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-robots-tag"), 0, NULL, H2O_STRLIT("noindex"));
    ll__send(req, b.base, b.len);
}

static void on_unsub_done(ll_pending_t *p, h2o_req_t *req)
{
    if (req == NULL)
        return;
    if (p->result != 0) {
        respond_html(req, 503, "Service Unavailable",
                     "<h1>Please try again</h1><p>We could not record your request just now.</p>");
        return;
    }
    respond_html(req, 200, "OK",
                 "<h1>You are unsubscribed</h1><p>You will not receive these emails any more.</p>");
}

int ll__on_unsub(h2o_req_t *req, h2o_iovec_t b64, int post)
{
    ll_token_t tok;
    if (ll_token_verify(ll_srv.keys, LL_TOK_UNSUB, b64.base, b64.len, &tok) != 0 || tok.contact == 0) {
        ll__metrics_reject(REJ_BAD_TOKEN);
        ll__respond_text(req, EP_OTHER, 404, "Not Found", "not found\n");
        return 0;
    }
    if (!post) {
        /* The form posts back to this same path; the token is base64url, safe in an attribute. */
        h2o_iovec_t body = h2o_concat(&req->pool, h2o_iovec_init(H2O_STRLIT("<h1>Unsubscribe</h1>"
                                                                            "<p>Stop receiving these emails?</p>"
                                                                            "<form method=\"post\" action=\"/u/")),
                                      b64,
                                      h2o_iovec_init(H2O_STRLIT("\"><input type=\"hidden\" name=\"List-Unsubscribe\" "
                                                                "value=\"One-Click\"><button type=\"submit\">"
                                                                "Unsubscribe</button></form>")));
        respond_html(req, 200, "OK", body.base);
        return 0;
    }
    ll_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = LL_EV_UNSUBSCRIBE;
    ev.cls = LL_CLASS_UNKNOWN;
    ev.time_us = ll_now_us();
    ev.contact = tok.contact;
    ev.send = tok.send;
    h2o_iovec_t ua = ll__header(req, H2O_TOKEN_USER_AGENT);
    ev.f[LL_F_UA] = ll_str(ua.base, ua.len);
    ev.f[LL_F_DATA] = LL_STR_LIT("{\"method\":\"one-click\"}");
    ll_pending_t *p = ll__pending_new(req, EP_OTHER, on_unsub_done);
    if (ll__pending_add(p, &ev) != 0 || ll__pending_submit(p, LL_ACK_COMMIT) != 0) {
        ll__pending_free(p);
        respond_html(req, 503, "Service Unavailable", "<h1>Please try again</h1>");
    }
    return 0;
}
