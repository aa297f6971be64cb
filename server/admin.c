/*
 * The admin listener: a live Server-Sent Events stream of alerts at GET /alerts, on its own
 * address (alerts.admin_listen, loopback by default) and only with
 * "Authorization: Bearer <alerts.admin_token>"; without a token it does not listen at all.
 *
 * One thread, poll() over the listener, the clients and a wake-up pipe; sockets are
 * non-blocking and a client whose socket buffer is full is dropped rather than waited for
 * (a stream, not a queue: the webhooks are the durable path). Requests are read into a
 * fixed 4 KB buffer; anything longer or slower than 5 s is closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <openssl/crypto.h>
#include "leadloop/score.h"
#include "server.h"

#define MAX_CLIENTS 32
#define REQ_MAX 4096

typedef struct {
    int fd;
    int streaming;
    uint64_t since_us;
    size_t len;
    char req[REQ_MAX];
} client_t;

static struct {
    pthread_t thread;
    int started, lfd, wake[2];
    pthread_mutex_t mutex;
    ll_buf_t pending; /* events to broadcast, guarded by mutex */
    int stopping;
    client_t clients[MAX_CLIENTS];
} a = {.mutex = PTHREAD_MUTEX_INITIALIZER, .lfd = -1, .wake = {-1, -1}};

void ll__admin_publish(const char *json, size_t len)
{
    if (!a.started)
        return;
    pthread_mutex_lock(&a.mutex);
    /* SSE data lines cannot hold a newline; the JSON has none (compact, escaped). */
    if (memchr(json, '\n', len) == NULL && ll_buf_appends(&a.pending, "event: alert\ndata: ") == 0 &&
        ll_buf_append(&a.pending, json, len) == 0)
        ll_buf_appends(&a.pending, "\n\n");
    pthread_mutex_unlock(&a.mutex);
    if (write(a.wake[1], "x", 1) < 0) {
        /* the pipe is full: the loop is awake anyway */
    }
}

static void drop(client_t *c)
{
    close(c->fd);
    c->fd = -1;
}

static void send_all(client_t *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w <= 0) {
            drop(c);
            return;
        }
        s += w, n -= (size_t)w;
    }
}

static void on_request(client_t *c)
{
    const char *tok = ll_srv.conf.score->admin_token;
    char want[300];
    snprintf(want, sizeof(want), "authorization: bearer %s\r\n", tok);
    /* Find the Authorization header, case-insensitively on the name and scheme. */
    int ok = 0;
    size_t wl = strlen(want);
    for (char *p = c->req; (p = strstr(p, "\r\n")) != NULL; p += 2) {
        if (strncasecmp(p + 2, want, 22) == 0 && strlen(p + 2) >= wl &&
            CRYPTO_memcmp(p + 2 + 22, want + 22, wl - 22) == 0) {
            ok = 1;
            break;
        }
    }
    if (strncmp(c->req, "GET /alerts ", 12) != 0 && strncmp(c->req, "GET /alerts?", 12) != 0) {
        const char *r = "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n";
        send_all(c, r, strlen(r));
    } else if (!ok) {
        const char *r = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 13\r\n"
                        "Connection: close\r\n\r\nunauthorized\n";
        send_all(c, r, strlen(r));
    } else {
        const char *r = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                        "Connection: close\r\n\r\n: leadloop alerts\n\n";
        send_all(c, r, strlen(r));
        if (c->fd >= 0)
            c->streaming = 1;
        return;
    }
    if (c->fd >= 0)
        drop(c);
}

static void *admin_main(void *arg)
{
    ll_thread_name("ll-admin");
    struct pollfd pfd[MAX_CLIENTS + 2];
    for (;;) {
        size_t np = 0;
        pfd[np++] = (struct pollfd){a.wake[0], POLLIN, 0};
        pfd[np++] = (struct pollfd){a.lfd, POLLIN, 0};
        int idx[MAX_CLIENTS];
        for (int i = 0; i < MAX_CLIENTS; i++) {
            if (a.clients[i].fd < 0)
                continue;
            idx[np - 2] = i;
            pfd[np++] = (struct pollfd){a.clients[i].fd, POLLIN, 0};
        }
        poll(pfd, np, 1000);
        pthread_mutex_lock(&a.mutex);
        int stop = a.stopping;
        ll_buf_t out = a.pending;
        ll_buf_init(&a.pending, 1 << 20);
        pthread_mutex_unlock(&a.mutex);
        if (stop) {
            ll_buf_free(&out);
            break;
        }
        if (pfd[0].revents & POLLIN) {
            char junk[256];
            while (read(a.wake[0], junk, sizeof(junk)) > 0) {
            }
        }
        if (out.len > 0)
            for (int i = 0; i < MAX_CLIENTS; i++)
                if (a.clients[i].fd >= 0 && a.clients[i].streaming)
                    send_all(&a.clients[i], out.data, out.len);
        ll_buf_free(&out);
        if (pfd[1].revents & POLLIN) {
            int fd = accept4(a.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            int slot = -1;
            for (int i = 0; fd >= 0 && i < MAX_CLIENTS && slot < 0; i++)
                if (a.clients[i].fd < 0)
                    slot = i;
            if (fd >= 0 && slot < 0) {
                close(fd);
            } else if (fd >= 0) {
                memset(&a.clients[slot], 0, sizeof(a.clients[slot]));
                a.clients[slot].fd = fd;
                a.clients[slot].since_us = ll_now_us();
            }
        }
        for (size_t k = 2; k < np; k++) {
            client_t *c = &a.clients[idx[k - 2]];
            if (c->fd < 0 || !(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (c->streaming) {
                char junk[256];
                ssize_t r = recv(c->fd, junk, sizeof(junk), MSG_DONTWAIT);
                if (r == 0 || (r < 0 && errno != EAGAIN))
                    drop(c);
                continue;
            }
            ssize_t r = recv(c->fd, c->req + c->len, REQ_MAX - 1 - c->len, MSG_DONTWAIT);
            if (r <= 0) {
                if (r == 0 || errno != EAGAIN)
                    drop(c);
                continue;
            }
            c->len += (size_t)r;
            c->req[c->len] = '\0';
            if (strstr(c->req, "\r\n\r\n") != NULL)
                on_request(c);
            else if (c->len >= REQ_MAX - 1)
                drop(c);
        }
        uint64_t now = ll_now_us();
        for (int i = 0; i < MAX_CLIENTS; i++)
            if (a.clients[i].fd >= 0 && !a.clients[i].streaming && now - a.clients[i].since_us > 5000000)
                drop(&a.clients[i]);
    }
    for (int i = 0; i < MAX_CLIENTS; i++)
        if (a.clients[i].fd >= 0)
            drop(&a.clients[i]);
    return NULL;
}

int ll__admin_start(char *err, size_t errlen)
{
    const ll_score_conf_t *c = ll_srv.conf.score;
    if (c->admin_token == NULL || c->admin_listen == NULL)
        return 0;
    char host[128];
    const char *colon = strrchr(c->admin_listen, ':');
    if (colon == NULL || (size_t)(colon - c->admin_listen) >= sizeof(host))
        return ll_err(err, errlen, LL_EINVAL, "alerts.admin_listen: '%s' is not ADDR:PORT", c->admin_listen);
    memcpy(host, c->admin_listen, colon - c->admin_listen);
    host[colon - c->admin_listen] = '\0';
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']')
        h[strlen(h) - 1] = '\0', h++;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *res;
    if (getaddrinfo(h, colon + 1, &hints, &res) != 0)
        return ll_err(err, errlen, LL_EINVAL, "alerts.admin_listen: '%s' is not ADDR:PORT", c->admin_listen);
    int on = 1;
    a.lfd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(a.lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    int ok = a.lfd >= 0 && bind(a.lfd, res->ai_addr, res->ai_addrlen) == 0 && listen(a.lfd, 16) == 0;
    freeaddrinfo(res);
    if (!ok)
        return ll_err(err, errlen, LL_EIO, "cannot listen on %s (alerts.admin_listen): %s", c->admin_listen,
                      strerror(errno));
    if (pipe2(a.wake, O_NONBLOCK | O_CLOEXEC) != 0)
        return ll_err(err, errlen, LL_EIO, "pipe: %s", strerror(errno));
    for (int i = 0; i < MAX_CLIENTS; i++)
        a.clients[i].fd = -1;
    ll_buf_init(&a.pending, 1 << 20);
    if (pthread_create(&a.thread, NULL, admin_main, NULL) != 0)
        return ll_err(err, errlen, LL_EIO, "cannot start the admin thread");
    a.started = 1;
    return 0;
}

void ll__admin_stop(void)
{
    if (!a.started)
        return;
    pthread_mutex_lock(&a.mutex);
    a.stopping = 1;
    pthread_mutex_unlock(&a.mutex);
    if (write(a.wake[1], "x", 1) < 0) {
    }
    pthread_join(a.thread, NULL);
    a.started = 0;
    close(a.lfd);
    close(a.wake[0]);
    close(a.wake[1]);
    ll_buf_free(&a.pending);
}
