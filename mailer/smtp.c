/*
 * SMTP with libESMTP: one blocking session per worker thread, many messages per session.
 * LIBS.md pitfalls: <openssl/ssl.h> before libesmtp.h; STARTTLS is capped at TLS 1.2 (the
 * TLS 1.3 hang); every phase is bounded with Timeout_OVERRIDE_RFC2822_MINIMUM; the event
 * callback never accepts a certificate that failed verification (it leaves *ok alone).
 *
 * Exactly once: the message callback is what libESMTP reads DATA from. When it has handed
 * over the whole message and is asked for more, the final "." is about to be written; the send
 * row moves to LL_SEND_COMMITTED, durably, first (program.h; marks.c keeps these marks in a
 * journal until the pass's outcomes). The mark's write starts earlier, when the server has
 * answered the session's message before (on_event), so that it overlaps this message's round
 * trips and the marks thread writes the sessions' marks together; the callback only waits for
 * it. So never twice; but a SIGKILL from the start of a mark until its "." has gone (about the
 * time of a message's MAIL, RCPT and DATA round trips, or of the write if longer) leaves a
 * committed send whose "." never went, counted as sent after a restart: one message a session
 * at most. libESMTP offers no hook between its write of the "." and the server's reply that
 * could tell the two apart (its protocol monitor is off from DATA until the reply), so that
 * window stays: README, "Delivery"; test_kills_at_any_moment_never_send_twice.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <openssl/ssl.h>
#include <auth-client.h> /* before libesmtp.h, which declares smtp_auth_set_context only after it */
#include <libesmtp.h>
#include "mailer.h"

typedef struct {
    ll_smtp_t *s;
    ll_outmsg_t *msgs;
    size_t n, no;
    pthread_t tid;
    ll_mark_t *mark; /* the end-of-DATA mark under way (marks.c) */
} worker_t;

typedef struct {
    worker_t *w;
    size_t i;
} cbarg_t;

/*
 * TCP_NODELAY for libESMTP's sockets. libESMTP 1.1 has no hook for its socket, and Nagle's
 * algorithm holds the final "." of DATA (a small write after the body's last segment, still
 * unacknowledged) until the server's delayed ACK: about 40 ms a message (BENCHMARKS.md). So the
 * mailer defines connect() itself: the executable's definition comes before libc's for the
 * shared libraries it loads, and this one sets TCP_NODELAY on every TCP socket, then calls
 * libc's. The mailer makes no other connections.
 */
int connect(int fd, const struct sockaddr *addr, socklen_t len);

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
static connect_fn libc_connect;
static pthread_once_t connect_once = PTHREAD_ONCE_INIT;

static void find_connect(void)
{
    libc_connect = (connect_fn)dlsym(RTLD_NEXT, "connect");
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    pthread_once(&connect_once, find_connect);
    if (addr != NULL && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        int on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    }
    return libc_connect(fd, addr, len);
}

int ll__smtp_init(void)
{
    auth_client_init();
    return 0;
}

/* The end of DATA: the mark, durable before the final "." (marks.c). */
static void mark_committed(worker_t *w, ll_outmsg_t *m)
{
    int rc = ll__mark_finish(w->mark, m->send);
    if (rc != 0)
        log_warnx("send %llu: cannot record the end of DATA: %s", (unsigned long long)m->send, ll_strerror(rc));
    m->committed = 1;
}

static const char *on_message(void **ctx, int *len, void *arg)
{
    cbarg_t *a = arg;
    ll_outmsg_t *m = &a->w->msgs[a->i];
    if (len == NULL) { /* rewind */
        m->off = 0;
        return NULL;
    }
    if (m->off < m->body.len) {
        const char *p = m->body.data + m->off;
        *len = (int)(m->body.len - m->off);
        m->off = m->body.len;
        return p;
    }
    /* All of it was handed over: the terminating "." goes out after this returns. */
    if (!m->committed)
        mark_committed(a->w, m);
    *len = 0;
    return NULL;
}

/*
 * The session's next mark starts as soon as the server has answered the message before it (or
 * the connection is made, for the first): its write overlaps that message's MAIL, RCPT and DATA
 * round trips, and the marks thread (marks.c) writes the marks queued by all the sessions as one
 * block. on_message waits for it before the final ".". A message refused on the way, or a session
 * that ends before its ".", leaves a durable mark that its outcome overrides (main.c: only
 * `committed`, set in on_message, counts a message with no reply as sent).
 */
static void on_event(smtp_session_t session, int event, void *arg, ...)
{
    worker_t *w = arg;
    va_list ap;
    va_start(ap, arg);
    if (event == SMTP_EV_CONNECT && w->n > 0)
        ll__mark_start(w->mark, w->msgs[0].send);
    if (event == SMTP_EV_MESSAGESENT) {
        smtp_message_t msg = va_arg(ap, smtp_message_t);
        cbarg_t *a = smtp_message_get_application_data(msg);
        const smtp_status_t *st = smtp_message_transfer_status(msg);
        if (a != NULL && st != NULL && st->code >= 200 && st->code < 300)
            w->msgs[a->i].accepted_us = ll_now_us();
        if (a != NULL && a->i + 1 < w->n)
            ll__mark_start(w->mark, w->msgs[a->i + 1].send);
    }
    /* Certificate events: *ok is left as libESMTP set it (refused), so a bad certificate ends
     * the session; the messages are retried later. */
    va_end(ap);
}

static int on_auth(auth_client_request_t req, char **result, int fields, void *arg)
{
    const ll_mail_conf_t *m = arg;
    for (int i = 0; i < fields; i++) {
        if (req[i].flags & AUTH_USER)
            result[i] = m->smtp_user;
        else if (req[i].flags & AUTH_PASS)
            result[i] = m->smtp_password != NULL ? m->smtp_password : "";
        else
            result[i] = "";
    }
    return 1;
}

static void copy_status(ll_outmsg_t *m, const smtp_status_t *st)
{
    if (st == NULL)
        return;
    m->code = st->code;
    snprintf(m->reply, sizeof(m->reply), "%s", st->text != NULL ? st->text : "");
    for (char *p = m->reply; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    for (size_t n = strlen(m->reply); n > 0 && m->reply[n - 1] == ' ';)
        m->reply[--n] = '\0';
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    const ll_mail_conf_t *mc = w->s->m;
    char server[300];
    SSL_CTX *ctx = NULL;
    auth_context_t auth = NULL;
    cbarg_t *args = ll_calloc(w->n, sizeof(*args));
    smtp_message_t *msgs = ll_calloc(w->n, sizeof(*msgs));
    smtp_recipient_t *rcpts = ll_calloc(w->n, sizeof(*rcpts));

    w->mark = ll__mark_new(w->s->marks);
    smtp_session_t session = smtp_create_session();
    snprintf(server, sizeof(server), "%s:%d", mc->smtp_host, mc->smtp_port);
    smtp_set_server(session, server);
    long to = (long)mc->smtp_timeout_s * 1000;
    for (int which = Timeout_GREETING; which <= Timeout_DATA2; which++)
        smtp_set_timeout(session, which | Timeout_OVERRIDE_RFC2822_MINIMUM, to);
    smtp_set_eventcb(session, on_event, w);
    if (mc->smtp_starttls != 0) {
        ctx = SSL_CTX_new(TLS_client_method());
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION); /* LIBS.md: STARTTLS + TLS 1.3 hang */
        if (mc->smtp_ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, mc->smtp_ca_file, NULL) != 1
                                     : SSL_CTX_set_default_verify_paths(ctx) != 1)
            log_warnx("smtp: cannot load CA certificates%s%s", mc->smtp_ca_file ? " from " : "",
                      mc->smtp_ca_file ? mc->smtp_ca_file : "");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        smtp_starttls_set_ctx(session, ctx);
        smtp_starttls_enable(session, mc->smtp_starttls == 2 ? Starttls_REQUIRED : Starttls_ENABLED);
    }
    if (mc->smtp_user != NULL) {
        auth = auth_create_context();
        auth_set_mechanism_flags(auth, AUTH_PLUGIN_PLAIN, 0);
        auth_set_interact_cb(auth, on_auth, (void *)mc);
        smtp_auth_set_context(session, auth);
    }
    for (size_t i = 0; i < w->n; i++) {
        args[i].w = w;
        args[i].i = i;
        msgs[i] = smtp_add_message(session);
        smtp_set_reverse_path(msgs[i], mc->from);
        smtp_message_set_application_data_release(msgs[i], &args[i], NULL);
        smtp_set_messagecb(msgs[i], on_message, &args[i]);
        rcpts[i] = smtp_add_recipient(msgs[i], w->msgs[i].to);
    }
    if (!smtp_start_session(session)) {
        char buf[128];
        log_warnx("smtp: session with %s failed: %s", server, smtp_strerror(smtp_errno(), buf, sizeof(buf)));
    }
    for (size_t i = 0; i < w->n; i++) {
        ll_outmsg_t *m = &w->msgs[i];
        const smtp_status_t *rs = smtp_recipient_status(rcpts[i]);
        if (rs != NULL && rs->code >= 400)
            copy_status(m, rs);
        else
            copy_status(m, smtp_message_transfer_status(msgs[i]));
        if (m->code >= 200 && m->code < 300 && m->accepted_us == 0)
            m->accepted_us = ll_now_us();
    }
    smtp_destroy_session(session);
    ll__mark_free(w->mark);
    if (auth != NULL)
        auth_destroy_context(auth);
    if (ctx != NULL)
        SSL_CTX_free(ctx);
    free(args);
    free(msgs);
    free(rcpts);
    return NULL;
}

/* A session's own thread, named for it (not the main thread, which runs a session itself when
 * no thread can be started: renaming it would rename the process). */
static void *worker_thread(void *arg)
{
    ll_thread_name("ll-smtp-%zu", ((worker_t *)arg)->no);
    return worker_main(arg);
}

void ll__smtp_send(ll_smtp_t *s, ll_outmsg_t *msgs, size_t n)
{
    size_t nw = (size_t)s->m->connections;
    if (nw > n)
        nw = n;
    if (nw == 0)
        return;
    worker_t *w = ll_calloc(nw, sizeof(*w));
    size_t per = n / nw, extra = n % nw, off = 0;
    for (size_t i = 0; i < nw; i++) {
        w[i].s = s;
        w[i].msgs = msgs + off;
        w[i].n = per + (i < extra);
        w[i].no = i + 1;
        off += w[i].n;
        if (pthread_create(&w[i].tid, NULL, worker_thread, &w[i]) != 0) {
            log_warnx("smtp: cannot start a worker thread; sending on this one");
            worker_main(&w[i]);
            w[i].tid = 0;
        }
    }
    for (size_t i = 0; i < nw; i++)
        if (w[i].tid != 0)
            pthread_join(w[i].tid, NULL);
    free(w);
}
