/*
 * The end-of-DATA marks (program.h: a send is LL_SEND_COMMITTED before its final "."), made
 * durable in a small journal beside the LMDB environment instead of an LMDB commit each.
 *
 * Why: a mark holds up its session's "." until it is on disk. An LMDB commit is two device
 * flushes over about six scattered pages (0.4-0.7 ms here); one 4 KiB write with O_DSYNC over
 * blocks already allocated is one (0.13-0.2 ms). BENCHMARKS.md has the measurements.
 *
 * The files, data_dir/mailer.marks.0 to .7: LL_MARKS_BLOCKS blocks of 4096 bytes in all, block
 * i at (i / 8) * 4096 of file i % 8, written with O_DSYNC, zero-filled and synced when created
 * (so a write never allocates). A block holds the marks of up to GROUP sends:
 *   "LLMARKS2" | pass (be64) | n (be32) | n send ids (be64 each) | FNV-1a 64 of bytes 8..20+8n
 *   (be64) | zeros
 * Earlier builds wrote one mark a block, "LLMARKS1" | pass | send id | FNV-1a 64 of
 * bytes 8..24 | zeros; a restart reads those too.
 *
 * Who writes: a session queues its message's mark early (ll__mark_start, when the server has
 * answered the message before it: smtp.c) and waits for it just before the "." (ll__mark_finish).
 * The marks thread ("ll-marks") writes whatever is queued when its last write returns as the
 * next block, so the sessions' marks share device writes, and the writes overlap the sessions'
 * round trips instead of holding up their "." (2026-12-03, BENCHMARKS.md: +15% messages a
 * second and 12% less CPU a message, where one synced block per mark at the "." had measured
 * faster than a group formed there). Where the thread cannot be started, each session writes its
 * own mark at the "." (write_marks), side by side; that is why there are eight files: synced
 * writes to one file wait for one another in ext4 (4 threads, 4 KiB O_DSYNC each: 12.1-12.8k
 * writes a second to one file, 18.2-19.4k to four). A torn or foreign block fails its checksum
 * and is ignored (none of its "."s was sent: the write had not returned). A file missing or of
 * another size is made anew (ll__marks_made). Builds before 2026-12-03 kept the blocks in one
 * file, data_dir/mailer.marks: a restart reads it too, and the next pass removes it.
 *
 * Passes: the mailer's claim transaction numbers each pass that sends (a key of its own in the
 * enrollments db, main.c) and leaves it open; the transaction that records the pass's outcomes
 * closes it. Blocks carry the pass, so a restart applies (INTENT -> COMMITTED, ll__marks_apply)
 * exactly the marks of a pass left open by a crash, and never an older pass's (a message
 * deferred with 4xx went back to INTENT and must be sent again). When a pass fills the blocks,
 * the marks written so far go into LMDB in one commit (a checkpoint) and the blocks start over.
 * A session waits for its last mark before it ends (ll__mark_free), so every mark of a pass is
 * on disk before its outcomes are recorded and the next pass begins.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "mailer.h"

#define BLOCK 4096
#define FILES 8
#define FILE_BLOCKS (LL_MARKS_BLOCKS / FILES)
#define GROUP 500 /* marks a block holds */
static const char magic1[8] = "LLMARKS1", magic[8] = "LLMARKS2";

struct st_ll_marks_t {
    int fd[FILES];
    int legacy;              /* data_dir/mailer.marks of an older build, read by ll__marks_apply */
    char *path;              /* data_dir/mailer.marks, the files' names with ".N" */
    ll_nurture_t *n;
    ll_store_t *store;
    uint64_t pass;
    pthread_mutex_t mu;
    pthread_cond_t idle;     /* no write under way */
    size_t writing;          /* block writes under way */
    size_t next;             /* the next block to write */
    uint64_t *since;         /* ids written since the pass began or the last checkpoint */
    size_t nsince, capsince;
    int made;                /* the file was made anew at open (until a pass begins) */
    /* The marks thread: the sessions queue their marks, it writes what is queued as a block. */
    pthread_t tid;
    int thread;              /* 1 running, -1 could not be started (the sessions write) */
    int quit;
    pthread_cond_t work, durable;
    uint64_t *queue;
    size_t nqueue, capqueue;
    uint64_t queued, written; /* marks queued in all, and the first of them not yet durable */
    uint64_t fail_lo, fail_hi; /* the last group whose write failed and whose LMDB commit did too */
    int fail_rc;
};

/* FNV-1a 64 of b[8, end). */
static uint64_t block_sum(const uint8_t *b, size_t end)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 8; i < end; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The file that holds block at, and where. */
static int block_fd(const ll_marks_t *j, size_t at, off_t *off)
{
    *off = (off_t)(at / FILES) * BLOCK;
    return j->fd[at % FILES];
}

int ll__marks_open(const char *data_dir, ll_nurture_t *n, ll_store_t *store, ll_marks_t **out, char *err,
                   size_t errlen)
{
    ll_marks_t *j = ll_calloc(1, sizeof(*j));
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->idle, NULL);
    pthread_cond_init(&j->work, NULL);
    pthread_cond_init(&j->durable, NULL);
    for (int f = 0; f < FILES; f++)
        j->fd[f] = -1;
    size_t plen = strlen(data_dir) + sizeof("/mailer.marks.N");
    char *name = ll_malloc(plen);
    j->path = ll_malloc(plen);
    sprintf(j->path, "%s/mailer.marks", data_dir);
    j->n = n;
    j->store = store;
    j->legacy = open(j->path, O_RDONLY | O_CLOEXEC);
    for (int f = 0; f < FILES; f++) {
        snprintf(name, plen, "%s.%d", j->path, f);
        j->fd[f] = open(name, O_RDWR | O_DSYNC | O_CLOEXEC);
        off_t size = j->fd[f] >= 0 ? lseek(j->fd[f], 0, SEEK_END) : -1;
        if (size != (off_t)FILE_BLOCKS * BLOCK) {
            /* Missing, or cut short by a crash while it was made: nothing in it can be trusted to
             * be whole, and a pass it served has its marks in no other place; make it anew. */
            if (j->fd[f] >= 0)
                close(j->fd[f]);
            j->fd[f] = -1;
            if (ll_file_make_zeroed(name, (size_t)FILE_BLOCKS * BLOCK) == 0)
                j->fd[f] = open(name, O_RDWR | O_DSYNC | O_CLOEXEC);
            j->made = j->legacy < 0; /* a first start after an upgrade: the marks are in the old file */
        }
        if (j->fd[f] < 0) {
            snprintf(err, errlen, "%s: %s", name, strerror(errno ? errno : EIO));
            free(name);
            ll__marks_close(j);
            return LL_EIO;
        }
    }
    free(name);
    *out = j;
    return 0;
}

int ll__marks_made(const ll_marks_t *j)
{
    return j->made;
}

void ll__marks_close(ll_marks_t *j)
{
    if (j == NULL)
        return;
    if (j->thread == 1) {
        pthread_mutex_lock(&j->mu);
        j->quit = 1;
        pthread_cond_signal(&j->work);
        pthread_mutex_unlock(&j->mu);
        pthread_join(j->tid, NULL);
    }
    for (int f = 0; f < FILES; f++)
        if (j->fd[f] >= 0)
            close(j->fd[f]);
    if (j->legacy >= 0)
        close(j->legacy);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->idle);
    pthread_cond_destroy(&j->work);
    pthread_cond_destroy(&j->durable);
    free(j->queue);
    free(j->since);
    free(j->path);
    free(j);
}

void ll__marks_begin(ll_marks_t *j, uint64_t pass)
{
    pthread_mutex_lock(&j->mu);
    j->made = 0; /* what the files hold from here on is this process's */
    if (j->legacy >= 0) { /* applied by the restart that came before this pass */
        close(j->legacy);
        j->legacy = -1;
        unlink(j->path);
    }
    j->pass = pass;
    j->next = 0;
    j->nsince = 0;
    pthread_mutex_unlock(&j->mu);
}

/* Moves sends still in INTENT to LL_SEND_COMMITTED, in t. */
static int commit_rows(ll_marks_t *j, ll_txn_t *t, const uint64_t *ids, size_t n, size_t *moved)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        ll_send_t row;
        if ((rc = ll_send_get(j->n, t, ids[i], &row)) == LL_ENOTFOUND) {
            rc = 0;
            continue;
        }
        if (rc == 0 && row.state == LL_SEND_INTENT) {
            row.state = LL_SEND_COMMITTED;
            rc = ll_send_put(j->n, t, &row);
            if (moved != NULL)
                (*moved)++;
        }
    }
    return rc;
}

/* ids into LMDB in one commit; with all, the marks since the last checkpoint too, and the file
 * starts over (a checkpoint). Under j->mu. */
static int to_lmdb(ll_marks_t *j, const uint64_t *ids, size_t n, int all)
{
    ll_txn_t t;
    int rc = ll_txn_begin(j->store, 0, &t);
    if (rc == 0 && all)
        rc = commit_rows(j, &t, j->since, j->nsince, NULL);
    if (rc == 0)
        rc = commit_rows(j, &t, ids, n, NULL);
    if (rc == 0)
        rc = ll_txn_commit(&t);
    ll_txn_abort(&t);
    if (rc == 0 && all)
        j->next = 0, j->nsince = 0;
    return rc;
}

/* Takes the next block for the marks of ids, under j->mu: *at, and a write under way. When the
 * file is full, a checkpoint once the writes under way have landed (these marks with it): *at =
 * NO_BLOCK, the marks durable (or the LMDB error returned). */
#define NO_BLOCK ((size_t)-1)
static int claim_block(ll_marks_t *j, const uint64_t *ids, size_t n, size_t *at)
{
    while (j->next == LL_MARKS_BLOCKS && j->writing > 0)
        pthread_cond_wait(&j->idle, &j->mu);
    if (j->next == LL_MARKS_BLOCKS) {
        *at = NO_BLOCK;
        return to_lmdb(j, ids, n, 1);
    }
    *at = j->next++;
    if (j->nsince + n > j->capsince) {
        while (j->nsince + n > j->capsince)
            j->capsince = j->capsince ? j->capsince * 2 : 512;
        j->since = ll_realloc(j->since, j->capsince * sizeof(*j->since));
    }
    memcpy(j->since + j->nsince, ids, n * sizeof(*ids));
    j->nsince += n;
    j->writing++;
    return 0;
}

/* Writes block at of pass, holding ids (n <= GROUP), synced; j->mu not held. */
static int write_block(const ll_marks_t *j, uint64_t pass, size_t at, const uint64_t *ids, size_t n)
{
    uint8_t b[BLOCK];
    memset(b, 0, BLOCK);
    memcpy(b, magic, 8);
    ll_be64_put(b + 8, pass);
    ll_be32_put(b + 16, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        ll_be64_put(b + 20 + 8 * i, ids[i]);
    ll_be64_put(b + 20 + 8 * n, block_sum(b, 20 + 8 * n));
    off_t off;
    int fd = block_fd(j, at, &off);
    return pwrite(fd, b, BLOCK, off) == BLOCK;
}

/* A claimed block's write has ended (ok: on disk), under j->mu. */
static int release_block(ll_marks_t *j, const uint64_t *ids, size_t n, int ok)
{
    if (--j->writing == 0)
        pthread_cond_broadcast(&j->idle);
    return ok ? 0 : to_lmdb(j, ids, n, 0); /* a write failed: into LMDB instead (slower, as durable) */
}

/* ids durable, each write a block: under j->mu, which it lets go while writing. */
static int write_marks(ll_marks_t *j, const uint64_t *ids, size_t n)
{
    size_t at;
    int rc = claim_block(j, ids, n, &at);
    if (at == NO_BLOCK)
        return rc;
    uint64_t pass = j->pass;
    pthread_mutex_unlock(&j->mu);
    int ok = write_block(j, pass, at, ids, n);
    pthread_mutex_lock(&j->mu);
    return release_block(j, ids, n, ok);
}

/* The marks thread: whatever marks are queued when a write ends go out in the next block. */
static void *marks_thread(void *arg)
{
    ll_marks_t *j = arg;
    uint64_t group[GROUP];
    ll_thread_name("ll-marks");
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (j->nqueue == 0 && !j->quit)
            pthread_cond_wait(&j->work, &j->mu);
        if (j->nqueue == 0)
            break;
        size_t n = j->nqueue < GROUP ? j->nqueue : GROUP;
        memcpy(group, j->queue, n * sizeof(*group));
        memmove(j->queue, j->queue + n, (j->nqueue - n) * sizeof(*group));
        j->nqueue -= n;
        int rc = write_marks(j, group, n);
        if (rc != 0)
            j->fail_lo = j->written, j->fail_hi = j->written + n, j->fail_rc = rc;
        j->written += n;
        pthread_cond_broadcast(&j->durable);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* ---- a session's mark, written while its message is on the wire ---- */

struct st_ll_mark_t {
    ll_marks_t *j;
    uint64_t id;     /* the send whose mark was queued; 0: none */
    uint64_t ticket; /* its place in the queue */
};

ll_mark_t *ll__mark_new(ll_marks_t *j)
{
    ll_mark_t *mk = ll_calloc(1, sizeof(*mk));
    mk->j = j;
    return mk;
}

void ll__mark_free(ll_mark_t *mk)
{
    if (mk == NULL)
        return;
    if (mk->id != 0) /* a mark whose "." never came: durable in this pass all the same */
        ll__mark_finish(mk, mk->id);
    free(mk);
}

void ll__mark_start(ll_mark_t *mk, uint64_t id)
{
    ll_marks_t *j = mk->j;
    if (mk->id == id)
        return;
    pthread_mutex_lock(&j->mu);
    if (j->thread == 0)
        j->thread = pthread_create(&j->tid, NULL, marks_thread, j) == 0 ? 1 : -1;
    if (j->thread == 1) {
        if (j->nqueue == j->capqueue) {
            j->capqueue = j->capqueue ? j->capqueue * 2 : 64;
            j->queue = ll_realloc(j->queue, j->capqueue * sizeof(*j->queue));
        }
        j->queue[j->nqueue++] = id;
        mk->id = id;
        mk->ticket = j->queued++;
        pthread_cond_signal(&j->work);
    }
    pthread_mutex_unlock(&j->mu);
}

int ll__mark_finish(ll_mark_t *mk, uint64_t id)
{
    ll_marks_t *j = mk->j;
    int rc = 0;
    if (mk->id != id)
        ll__mark_start(mk, id);
    pthread_mutex_lock(&j->mu);
    if (mk->id != id) /* no writer thread: this session writes its mark itself */
        rc = write_marks(j, &id, 1);
    else {
        while (j->written <= mk->ticket)
            pthread_cond_wait(&j->durable, &j->mu);
        if (mk->ticket >= j->fail_lo && mk->ticket < j->fail_hi)
            rc = j->fail_rc;
    }
    pthread_mutex_unlock(&j->mu);
    mk->id = 0;
    return rc;
}

int ll__marks_apply(ll_marks_t *j, ll_txn_t *t, uint64_t pass, size_t *moved)
{
    uint8_t *b = ll_malloc(BLOCK);
    int rc = 0;
    *moved = 0;
    /* The files' blocks, then an older build's file's (as many as it holds whole). */
    for (size_t i = 0; i < 2 * LL_MARKS_BLOCKS && rc == 0; i++) {
        off_t off;
        int fd = i < LL_MARKS_BLOCKS ? block_fd(j, i, &off) : j->legacy;
        if (i >= LL_MARKS_BLOCKS)
            off = (off_t)(i - LL_MARKS_BLOCKS) * BLOCK;
        if (fd < 0)
            break;
        if (pread(fd, b, BLOCK, off) != BLOCK) {
            if (fd != j->legacy)
                rc = LL_EIO;
            break;
        }
        if (ll_be64_get(b + 8) != pass)
            continue;
        if (memcmp(b, magic1, 8) == 0 && ll_be64_get(b + 24) == block_sum(b, 24)) { /* one mark */
            uint64_t id = ll_be64_get(b + 16);
            rc = commit_rows(j, t, &id, 1, moved);
        }
        uint32_t n = ll_be32_get(b + 16);
        if (memcmp(b, magic, 8) == 0 && n <= GROUP && ll_be64_get(b + 20 + 8 * n) == block_sum(b, 20 + 8 * n))
            for (uint32_t k = 0; k < n && rc == 0; k++) {
                uint64_t id = ll_be64_get(b + 20 + 8 * k);
                rc = commit_rows(j, t, &id, 1, moved);
            }
    }
    free(b);
    return rc;
}
