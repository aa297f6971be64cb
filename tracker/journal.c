/* The write-ahead journal (journal.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/uio.h>
#include "leadloop/common.h"
#include "leadloop/journal.h"
#include "leadloop/store.h"

static const char magic[8] = "LLJRNL01";

struct st_ll_journal_t {
    int fd;
    size_t size;
    size_t off; /* where the next record goes */
};

/* The checksum only has to tell a whole record from a torn or foreign one, and runs over every
 * byte the loop journals: eight bytes a step (a byte a step was 1.4% of the loop's time). */
static uint64_t mix(uint64_t h, const uint8_t *p, size_t n)
{
    uint64_t w;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    for (; n > 0; p++, n--)
        h = (h ^ *p) * 0x100000001b3ull;
    return h;
}

static uint64_t record_sum(const uint8_t *hdr, const uint8_t *body, size_t len)
{
    return mix(mix(0xcbf29ce484222325ull, hdr + 8, 16), body, len);
}

int ll_journal_open(const char *path, size_t size, ll_journal_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (size < 65536 || size % 4096 != 0)
        return ll_err(err, errlen, LL_EINVAL, "%s: a journal of %zu bytes (a multiple of 4096, at least 64 KiB)", path,
                      size);
    int fd = open(path, O_RDWR | O_DSYNC | O_CLOEXEC);
    off_t have = fd >= 0 ? lseek(fd, 0, SEEK_END) : -1;
    if (have != (off_t)size) {
        /* Missing, or another size: a journal made for another size was emptied into the store
         * by the stop that preceded the change (ll_journal_rewind's contract) or is replayed
         * first by the caller; one cut short while it was made never held an acknowledged record. */
        if (fd >= 0)
            close(fd);
        fd = -1;
        if (ll_file_make_zeroed(path, size) == 0)
            fd = open(path, O_RDWR | O_DSYNC | O_CLOEXEC);
    }
    if (fd < 0)
        return ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(errno ? errno : EIO));
    ll_journal_t *j = ll_calloc(1, sizeof(*j));
    j->fd = fd;
    j->size = size;
    *out = j;
    return 0;
}

void ll_journal_close(ll_journal_t *j)
{
    if (j == NULL)
        return;
    close(j->fd);
    free(j);
}

int ll_journal_scan(ll_journal_t *j, ll_journal_cb cb, void *ctx, uint64_t *last)
{
    uint8_t hdr[LL_JOURNAL_HEADER];
    uint8_t *body = NULL;
    size_t off = 0, cap = 0;
    uint64_t next = 0; /* the first item the next record must carry; 0: any (the first record) */
    int rc = 0;
    *last = 0;
    while (off + LL_JOURNAL_HEADER <= j->size) {
        if (pread(j->fd, hdr, sizeof(hdr), (off_t)off) != (ssize_t)sizeof(hdr) || memcmp(hdr, magic, 8) != 0)
            break;
        uint64_t first = ll_be64_get(hdr + 8);
        uint32_t items = ll_be32_get(hdr + 16), len = ll_be32_get(hdr + 20);
        if (first == 0 || items == 0 || (next != 0 && first != next) || len > j->size - off - LL_JOURNAL_HEADER)
            break;
        if (len > cap) {
            free(body);
            body = ll_malloc(cap = len);
        }
        if (pread(j->fd, body, len, (off_t)(off + LL_JOURNAL_HEADER)) != (ssize_t)len ||
            ll_be64_get(hdr + 24) != record_sum(hdr, body, len))
            break;
        if ((rc = cb(first, items, body, len, ctx)) != 0)
            break;
        next = first + items;
        *last = next - 1;
        off += LL_JOURNAL_HEADER + len;
    }
    free(body);
    j->off = off;
    return rc;
}

int ll_journal_fits(const ll_journal_t *j, size_t len)
{
    return len <= j->size - LL_JOURNAL_HEADER && j->off + LL_JOURNAL_HEADER + len <= j->size;
}

int ll_journal_append(ll_journal_t *j, uint64_t first, uint32_t items, const void *body, size_t len)
{
    if (!ll_journal_fits(j, len))
        return LL_ETOOBIG;
    uint8_t hdr[LL_JOURNAL_HEADER];
    memcpy(hdr, magic, 8);
    ll_be64_put(hdr + 8, first);
    ll_be32_put(hdr + 16, items);
    ll_be32_put(hdr + 20, (uint32_t)len);
    ll_be64_put(hdr + 24, record_sum(hdr, body, len));
    struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)body, len}}, *v = iov;
    size_t at = j->off;
    for (int n = len > 0 ? 2 : 1; n > 0;) {
        ssize_t w = pwritev(j->fd, v, n, (off_t)at);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return LL_EIO; /* j->off stays: the next append goes over it */
        at += (size_t)w;
        /* A short write (a signal, a full disk) goes on from where it stopped. */
        for (size_t left = (size_t)w; left > 0;) {
            size_t k = left < v->iov_len ? left : v->iov_len;
            v->iov_base = (uint8_t *)v->iov_base + k;
            v->iov_len -= k;
            left -= k;
            if (v->iov_len == 0)
                v++, n--;
        }
    }
    j->off = at;
    return 0;
}

void ll_journal_rewind(ll_journal_t *j)
{
    j->off = 0;
}

size_t ll_journal_used(const ll_journal_t *j)
{
    return j->off;
}
