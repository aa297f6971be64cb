/*
 * leadloopd: configuration, listeners, event-loop threads, signals and the request dispatch.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include "leadloop/judge.h"
#include "leadloop/score.h"
#include "server.h"

ll_server_t ll_srv;
int ll_log_level = 1;

static h2o_globalconf_t globalconf;
static SSL_CTX *ssl_ctx;
static struct sockaddr_storage listen_addr;
static socklen_t listen_addrlen;
static atomic_int stopping;

typedef struct st_thread_t {
    pthread_t tid;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_multithread_receiver_t stop_receiver;
    h2o_socket_t *listener;
    int fd;
} thread_t;

static thread_t *threads;

/* ---- logging ---- */

static void vlog(const char *level, int with_errno, const char *fmt, va_list ap)
{
    char msg[1024];
    int saved = errno;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (with_errno)
        fprintf(stderr, "leadloopd: %s%s: %s\n", level, msg, strerror(saved));
    else
        fprintf(stderr, "leadloopd: %s%s\n", level, msg);
}

#define LOGFN(name, lvl, prefix, with_errno)                                                                            \
    void name(const char *fmt, ...)                                                                                    \
    {                                                                                                                  \
        if (ll_log_level < (lvl))                                                                                      \
            return;                                                                                                    \
        va_list ap;                                                                                                    \
        va_start(ap, fmt);                                                                                             \
        vlog(prefix, with_errno, fmt, ap);                                                                             \
        va_end(ap);                                                                                                    \
    }
LOGFN(log_warnx, 0, "warning: ", 0)
LOGFN(log_warn, 0, "warning: ", 1)
LOGFN(log_info, 1, "", 0)
LOGFN(log_debug, 2, "debug: ", 0)

void fatalx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("", 0, fmt, ap);
    va_end(ap);
    exit(1);
}

/* ---- dispatch ---- */

static int path_is(h2o_iovec_t path, const char *lit)
{
    size_t n = strlen(lit);
    return path.len == n && memcmp(path.base, lit, n) == 0;
}

static int path_tail(h2o_iovec_t path, const char *prefix, h2o_iovec_t *tail)
{
    size_t n = strlen(prefix);
    if (path.len <= n || memcmp(path.base, prefix, n) != 0)
        return 0;
    *tail = h2o_iovec_init(path.base + n, path.len - n);
    return 1;
}

static int method_is(h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static int not_allowed(h2o_req_t *req, ll_endpoint_t ep, const char *allow)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
    ll__metrics_reject(REJ_METHOD);
    ll__respond_text(req, ep, 405, "Method Not Allowed", "method not allowed\n");
    return 0;
}

/* h2o 2.2 accepts request heads up to ~400 KB; nothing leadloop serves needs more than this. */
#define MAX_TARGET_BYTES 8192
#define MAX_HEADER_BYTES 8192       /* one header's name and value */
#define MAX_HEADERS_TOTAL 32768     /* all of them */

static int head_too_large(h2o_req_t *req)
{
    if (req->path.len > MAX_TARGET_BYTES) {
        ll__metrics_reject(REJ_TOO_LARGE);
        ll__respond_text(req, EP_OTHER, 414, "URI Too Long", "request target too long\n");
        return 1;
    }
    size_t total = 0;
    for (size_t i = 0; i < req->headers.size; i++) {
        size_t n = req->headers.entries[i].name->len + req->headers.entries[i].value.len;
        total += n;
        if (n > MAX_HEADER_BYTES || total > MAX_HEADERS_TOTAL) {
            ll__metrics_reject(REJ_TOO_LARGE);
            ll__respond_text(req, EP_OTHER, 431, "Request Header Fields Too Large", "request header fields too large\n");
            return 1;
        }
    }
    return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    if (head_too_large(req))
        return 0;
    /* The path without its query: query_at is SIZE_MAX when there is none. */
    h2o_iovec_t path = req->path;
    if (req->query_at != SIZE_MAX)
        path.len = req->query_at;
    h2o_iovec_t tail;
    int get = method_is(req, "GET") || method_is(req, "HEAD");

    if (path_tail(path, "/c/", &tail))
        return get ? ll__on_click(req, tail) : not_allowed(req, EP_CLICK, "GET, HEAD");
    if (path_tail(path, "/o/", &tail))
        return get ? ll__on_open(req, tail) : not_allowed(req, EP_OPEN, "GET, HEAD");
    if (path_tail(path, "/u/", &tail)) {
        if (get || method_is(req, "POST"))
            return ll__on_unsub(req, tail, !get);
        return not_allowed(req, EP_OTHER, "GET, HEAD, POST");
    }
    if (path_is(path, "/e")) {
        if (method_is(req, "OPTIONS")) {
            ll__cors(req);
            ll__respond_text(req, EP_BEACON, 204, "No Content", "");
            return 0;
        }
        return method_is(req, "POST") ? ll__on_beacon(req) : not_allowed(req, EP_BEACON, "POST, OPTIONS");
    }
    if (path_is(path, "/e.gif"))
        return get ? ll__on_pixel(req) : not_allowed(req, EP_PIXEL, "GET, HEAD");
    if (path_tail(path, "/f/", &tail)) {
        if (method_is(req, "OPTIONS")) {
            ll__cors(req);
            ll__respond_text(req, EP_FORM, 204, "No Content", "");
            return 0;
        }
        return method_is(req, "POST") ? ll__on_form(req, tail) : not_allowed(req, EP_FORM, "POST, OPTIONS");
    }
    if (path_is(path, "/t.js"))
        return get ? ll__on_snippet(req) : not_allowed(req, EP_SNIPPET, "GET, HEAD");
    if (path_is(path, "/healthz")) {
        ll__respond_text(req, EP_HEALTH, 200, "OK", "ok\n");
        return 0;
    }
    if (path_is(path, "/metrics")) {
        ll_buf_t b;
        ll_buf_init(&b, 1 << 20);
        ll__metrics_render(&b);
        h2o_iovec_t body = h2o_strdup(&req->pool, b.data ? b.data : "", b.len);
        ll_buf_free(&b);
        ll__metrics_request(EP_METRICS, 200);
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
        ll__send(req, body.base, body.len);
        return 0;
    }
    ll__respond_text(req, EP_OTHER, 404, "Not Found", "not found\n");
    return 0;
}

/* ---- listeners and threads ---- */

static int parse_listen(const char *s)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    char *end;
    long port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
    if (colon == NULL || colon == s || (size_t)(colon - s) >= sizeof(host) || colon[1] == '\0' || *end != '\0' ||
        port < 1 || port > 65535)
        return -1;
    memcpy(host, s, colon - s);
    host[colon - s] = '\0';
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') {
        h[strlen(h) - 1] = '\0';
        h++;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *res;
    if (getaddrinfo(h, colon + 1, &hints, &res) != 0)
        return -1;
    memcpy(&listen_addr, res->ai_addr, res->ai_addrlen);
    listen_addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int open_listener(void)
{
    int fd = socket(listen_addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (bind(fd, (struct sockaddr *)&listen_addr, listen_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    thread_t *th = listener->data;
    if (err != NULL)
        return;
    for (int i = 0; i < 16; i++) {
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL)
            break;
        h2o_accept(&th->accept_ctx, sock);
    }
}

static void on_stop(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        free(m);
    }
}

static void *thread_main(void *arg)
{
    thread_t *th = arg;
    ll_thread_name("ll-loop-%d", (int)(th - threads) + 1);
    h2o_context_init(&th->ctx, h2o_evloop_create(), &globalconf);
    h2o_multithread_register_receiver(th->ctx.queue, &th->stop_receiver, on_stop);
    ll__loop_new(&th->ctx);
    th->accept_ctx.ctx = &th->ctx;
    th->accept_ctx.hosts = globalconf.hosts;
    th->accept_ctx.ssl_ctx = ssl_ctx;
    th->listener = h2o_evloop_socket_create(th->ctx.loop, th->fd, H2O_SOCKET_FLAG_DONT_READ);
    th->listener->data = th;
    h2o_socket_read_start(th->listener, on_accept);
    while (!atomic_load(&stopping))
        h2o_evloop_run(th->ctx.loop, 1000);
    /* Let answers for events already committed go out before the loop ends. */
    for (int i = 0; i < 10; i++)
        h2o_evloop_run(th->ctx.loop, 10);
    return NULL;
}

static void setup_tls(void)
{
    if (ll_srv.conf.tls_cert == NULL)
        return;
    ssl_ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ssl_ctx, ll_srv.conf.tls_cert) != 1)
        fatalx("%s: cannot load TLS certificate", ll_srv.conf.tls_cert);
    if (SSL_CTX_use_PrivateKey_file(ssl_ctx, ll_srv.conf.tls_key, SSL_FILETYPE_PEM) != 1)
        fatalx("%s: cannot load TLS key", ll_srv.conf.tls_key);
    if (ll_srv.conf.http2)
        h2o_ssl_register_alpn_protocols(ssl_ctx, h2o_http2_alpn_protocols);
}

static void usage(void)
{
    fprintf(stderr, "usage: leadloopd [-c FILE] [-d DATA_DIR] [-l ADDR:PORT] [-s SNIPPET.js]\n"
                    "  -c FILE       YAML configuration (every key optional; see deploy/leadloop.example.yaml)\n"
                    "  -d DATA_DIR   data directory (default var)\n"
                    "  -l ADDR:PORT  listen address (default 127.0.0.1:8080)\n"
                    "  -s FILE       the built snippet to serve as /t.js (default build/ll.min.js)\n");
    exit(2);
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = ll_malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int main(int argc, char **argv)
{
    const char *conf_path = NULL, *data_dir = NULL, *listen_at = NULL, *snippet = NULL;
    char err[512];
    int ch;
    while ((ch = getopt(argc, argv, "c:d:l:s:h")) != -1) {
        switch (ch) {
        case 'c': conf_path = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'l': listen_at = optarg; break;
        case 's': snippet = optarg; break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();

    ll_config_defaults(&ll_srv.conf);
    if (conf_path != NULL && ll_config_load(&ll_srv.conf, conf_path, err, sizeof(err)) != 0)
        fatalx("%s", err);
    if (data_dir != NULL) {
        free(ll_srv.conf.data_dir);
        ll_srv.conf.data_dir = ll_strdup(data_dir);
    }
    if (listen_at != NULL) {
        free(ll_srv.conf.listen);
        ll_srv.conf.listen = ll_strdup(listen_at);
    }
    ll_log_level = ll_srv.conf.log_level;
    if (parse_listen(ll_srv.conf.listen) != 0)
        fatalx("listen: '%s' is not ADDR:PORT with a numeric address", ll_srv.conf.listen);

    signal(SIGPIPE, SIG_IGN);
    int store_flags = ll_srv.conf.ack == LL_ACK_AFTER_JOURNAL ? LL_STORE_NOMETASYNC : 0;
    if (ll_store_open(ll_srv.conf.data_dir, ll_srv.conf.map_size, store_flags, &ll_srv.store, err, sizeof(err)) != 0)
        fatalx("%s", err);
    char *keypath = path_join(ll_srv.conf.data_dir, "keys");
    if (ll_keyring_open(keypath, &ll_srv.keys, err, sizeof(err)) != 0)
        fatalx("%s", err);
    free(keypath);
    const char *country_db = ll_srv.conf.geo_country_db ? ll_srv.conf.geo_country_db : "build/geo/country.mmdb";
    if (ll_geo_open(country_db, ll_srv.conf.geo_city_db, ll_srv.conf.geo_asn_db, &ll_srv.geo, err, sizeof(err)) != 0) {
        if (ll_srv.conf.geo_country_db != NULL || ll_srv.conf.geo_city_db != NULL || ll_srv.conf.geo_asn_db != NULL)
            fatalx("%s", err);
        log_warnx("%s (geo lookups disabled; run make to build it)", err);
        ll_srv.geo = NULL;
    }
    ll__cookie_init();
    ll__json_hooks_init();
    if (ll__snippet_load(snippet ? snippet : "build/ll.min.js") != 0)
        fatalx("%s: cannot read the snippet (run make)", snippet ? snippet : "build/ll.min.js");

    h2o_config_init(&globalconf);
    globalconf.server_name = h2o_iovec_init(H2O_STRLIT("leadloop"));
    globalconf.max_request_entity_size = ll_srv.conf.max_body;
    globalconf.http1.upgrade_to_http2 = ll_srv.conf.http2;
    h2o_hostconf_t *host = h2o_config_register_host(&globalconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = on_req;
    setup_tls();

    if (ll_scorer_open(ll_srv.store, ll_srv.conf.score, &ll_srv.scorer, err, sizeof(err)) != 0)
        fatalx("%s", err);
    if (ll_judge_open(ll_srv.store, &ll_srv.conf, &ll_srv.judge, err, sizeof(err)) != 0)
        fatalx("%s", err);
    if (err[0] != '\0')
        log_warnx("%s: scanner lists off (opens and clicks are judged on timing, sweeps and the honeypot)", err);
    else if (ll_srv.conf.scanner_lists != NULL)
        log_debug("scanner lists: %zu entries from %s", ll_judge_list_entries(ll_srv.judge), ll_srv.conf.scanner_lists);
    if (ll__admin_start(err, sizeof(err)) != 0)
        fatalx("%s", err);
    if (ll__notify_start() != 0)
        fatalx("cannot start the notifier thread");
    if (ll__writer_start(err, sizeof(err)) != 0)
        fatalx("%s", err);

    /* Signals go to this thread only: the loops run with them blocked. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    int n = ll_srv.conf.threads > 0 ? ll_srv.conf.threads : 1;
    threads = ll_calloc(n, sizeof(*threads));
    for (int i = 0; i < n; i++) {
        if ((threads[i].fd = open_listener()) < 0)
            fatalx("cannot listen on %s: %s", ll_srv.conf.listen, strerror(errno));
    }
    for (int i = 0; i < n; i++)
        pthread_create(&threads[i].tid, NULL, thread_main, &threads[i]);
    log_info("listening on %s (%s%s), data in %s, %d thread(s)", ll_srv.conf.listen, ssl_ctx ? "https" : "http",
             ll_srv.conf.http2 ? ", http/2 enabled" : "", ll_srv.conf.data_dir, n);

    int sig;
    sigwait(&sigs, &sig);
    log_info("signal %d: stopping", sig);
    atomic_store(&stopping, 1);
    for (int i = 0; i < n; i++) {
        h2o_multithread_message_t *m = ll_calloc(1, sizeof(*m));
        h2o_multithread_send_message(&threads[i].stop_receiver, m);
    }
    ll__writer_stop();
    for (int i = 0; i < n; i++)
        pthread_join(threads[i].tid, NULL);
    ll__notify_stop();
    ll__admin_stop();
    ll_scorer_free(ll_srv.scorer);
    ll_judge_free(ll_srv.judge);
    ll_store_close(ll_srv.store);
    log_info("stopped");
    return 0;
}
