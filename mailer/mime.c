/*
 * The message: RFC 5322 headers, MIME multipart/alternative (RFC 2046) with UTF-8 parts in
 * quoted-printable (RFC 2045), RFC 2047 encoded words for non-ASCII header text, and the
 * one-click unsubscribe headers (RFC 2369, RFC 8058). CRLF line ends throughout.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>
#include "mailer.h"

/* Output through a small local buffer: one ll_buf_append a KiB, not one a character. */
typedef struct {
    ll_buf_t *out;
    int rc;
    size_t n;
    char b[1024];
} qp_out_t;

static inline void qp_put(qp_out_t *q, const char *s, size_t n) /* n <= QP_LINE */
{
    if (q->n + n > sizeof(q->b)) {
        if (q->rc == 0)
            q->rc = ll_buf_append(q->out, q->b, q->n);
        q->n = 0;
    }
    memcpy(q->b + q->n, s, n);
    q->n += n;
}

#define QP_LINE 75 /* characters before a soft line break's "=" (RFC 2045: 76 in all) */

/* What a byte is to the encoder: printable ASCII but "=" stays itself; a blank stays itself
 * unless a line end follows (transports strip trailing blanks); anything else is =XX. */
enum { QP_ENC, QP_LIT, QP_BLANK };
static const unsigned char qp_class[256] = {
    ['\t'] = QP_BLANK, [' '] = QP_BLANK, [33 ... 60] = QP_LIT, [62 ... 126] = QP_LIT, /* 61 is "=" */
};

int ll__mime_qp(const char *s, size_t n, ll_buf_t *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    qp_out_t q = {.out = out};
    for (size_t i = 0; i < n;) {
        /* A run that goes out as it is: up to the line's room, never a "." that starts a line
         * (some relays mangle one), never a blank before a line end. */
        size_t j = i, end = i + (QP_LINE - col) < n ? i + (QP_LINE - col) : n;
        if (col > 0 || s[i] != '.')
            while (j < end) {
                unsigned char k = qp_class[(unsigned char)s[j]];
                if (k == QP_LIT || (k == QP_BLANK && j + 1 < n && s[j + 1] != '\n' && s[j + 1] != '\r'))
                    j++;
                else
                    break;
            }
        if (j > i) {
            qp_put(&q, s + i, j - i);
            col += j - i;
            i = j;
            continue;
        }
        /* One byte the run could not take: a line end, one to encode, or one past the room. */
        unsigned char c = (unsigned char)s[i++];
        if (c == '\r' && i < n && s[i] == '\n')
            continue;
        if (c == '\n') {
            qp_put(&q, "\r\n", 2);
            col = 0;
            continue;
        }
        int at_eol = i == n || s[i] == '\n' || s[i] == '\r';
        char enc[3] = {(char)c};
        size_t el = 1;
        if (qp_class[c] == QP_ENC || (qp_class[c] == QP_BLANK && at_eol))
            enc[0] = '=', enc[1] = hex[c >> 4], enc[2] = hex[c & 15], el = 3;
        if (col + el > QP_LINE) {
            qp_put(&q, "=\r\n", 3);
            col = 0;
        }
        if (col == 0 && c == '.')
            enc[0] = '=', enc[1] = '2', enc[2] = 'E', el = 3;
        qp_put(&q, enc, el);
        col += el;
    }
    if (q.rc == 0 && q.n > 0)
        q.rc = ll_buf_append(out, q.b, q.n);
    if (q.rc == 0 && (out->len < 2 || memcmp(out->data + out->len - 2, "\r\n", 2) != 0))
        q.rc = ll_buf_append(out, "\r\n", 2);
    return q.rc;
}

static int is_ascii(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s >= 0x80 || (unsigned char)*s < 0x20)
            return 0;
    return 1;
}

/* Header text: as is when printable ASCII, else RFC 2047 base64 words of whole UTF-8 characters. */
static int put_header_text(ll_buf_t *b, const char *s)
{
    if (is_ascii(s))
        return ll_buf_appends(b, s);
    size_t n = strlen(s);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        size_t take = 0;
        /* 45 bytes make 60 base64 chars: the word stays under 75 characters. */
        while (i + take < n && take < 45) {
            unsigned char c = (unsigned char)s[i + take];
            size_t l = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 1;
            if (take + l > 45)
                break;
            take += l;
        }
        if (take == 0)
            take = 1;
        char b64[128];
        static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const unsigned char *p = (const unsigned char *)s + i;
        size_t o = 0;
        for (size_t j = 0; j < take; j += 3) {
            unsigned v = p[j] << 16 | (j + 1 < take ? p[j + 1] << 8 : 0) | (j + 2 < take ? p[j + 2] : 0);
            b64[o++] = tbl[v >> 18 & 63];
            b64[o++] = tbl[v >> 12 & 63];
            b64[o++] = j + 1 < take ? tbl[v >> 6 & 63] : '=';
            b64[o++] = j + 2 < take ? tbl[v & 63] : '=';
        }
        b64[o] = '\0';
        rc = ll_buf_printf(b, "%s=?UTF-8?B?%s?=", i ? "\r\n " : "", b64);
        i += take;
    }
    return rc;
}

static const char *domain_of(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at != NULL ? at + 1 : "localhost";
}

int ll__mime_build(const ll_mime_in_t *in, ll_buf_t *out)
{
    uint8_t rnd[12];
    char rhex[25], boundary[64], date[64];
    RAND_bytes(rnd, sizeof(rnd));
    ll_hex_encode(rhex, rnd, sizeof(rnd));
    snprintf(boundary, sizeof(boundary), "=_ll_%s", rhex);
    time_t secs = (time_t)(in->date_us / 1000000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);

    int rc = 0;
    if (in->from_name != NULL) {
        rc = ll_buf_appends(out, "From: ");
        if (rc == 0 && is_ascii(in->from_name) && strpbrk(in->from_name, "\"\\") == NULL)
            rc = ll_buf_printf(out, "\"%s\"", in->from_name);
        else if (rc == 0)
            rc = put_header_text(out, in->from_name);
        if (rc == 0)
            rc = ll_buf_printf(out, " <%s>\r\n", in->from);
    } else {
        rc = ll_buf_printf(out, "From: <%s>\r\n", in->from);
    }
    if (rc == 0)
        rc = ll_buf_printf(out, "To: <%s>\r\nSubject: ", in->to);
    if (rc == 0)
        rc = put_header_text(out, in->subject);
    if (rc == 0)
        rc = ll_buf_printf(out, "\r\nDate: %s\r\nMessage-ID: <ll.%llu.%s@%s>\r\nMIME-Version: 1.0\r\n", date,
                           (unsigned long long)in->send, rhex, domain_of(in->from));
    if (rc == 0 && in->unsub_url != NULL) /* not on alerts to the team */
        rc = ll_buf_printf(out,
                           "List-Unsubscribe: <%s>, <mailto:%s?subject=unsubscribe%%20%s>\r\n"
                           "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
                           in->unsub_url, in->unsub_mailto, in->unsub_token);
    if (rc == 0)
        rc = ll_buf_printf(out,
                           "X-Leadloop-Send: %llu\r\n"
                           "Content-Type: multipart/alternative; boundary=\"%s\"\r\n"
                           "\r\n"
                           "This is a message in MIME format.\r\n",
                           (unsigned long long)in->send, boundary);
    const char *parts[2] = {in->text, in->html}, *types[2] = {"text/plain", "text/html"};
    for (int i = 0; i < 2 && rc == 0; i++) {
        if (parts[i] == NULL || parts[i][0] == '\0')
            continue;
        rc = ll_buf_printf(out,
                           "\r\n--%s\r\n"
                           "Content-Type: %s; charset=UTF-8\r\n"
                           "Content-Transfer-Encoding: quoted-printable\r\n"
                           "\r\n",
                           boundary, types[i]);
        if (rc == 0)
            rc = ll__mime_qp(parts[i], strlen(parts[i]), out);
    }
    if (rc == 0)
        rc = ll_buf_printf(out, "\r\n--%s--\r\n", boundary);
    return rc;
}
