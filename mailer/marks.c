/*
 * The end-of-DATA marks (program.h: a send is LL_SEND_COMMITTED before its final "."), made
 * durable in a small journal beside the LMDB environment instead of an LMDB commit each.
 *
 * Why: a mark holds up its session's "." until it is on disk, so a session sends at most one
 * message per mark commit. An LMDB commit is two device flushes over about six scattered pages
 * (0.4-0.7 ms here); one 4 KiB write with O_DSYNC over blocks already allocated is one (0.13-0.2
 * ms). BENCHMARKS.md has the measurements.
 *
 * The files, data_dir/mailer.marks.0 to .7: LL_MARKS_BLOCKS blocks of 4096 bytes in all, block
 * i at (i / 8) * 4096 of file i % 8, written with O_DSYNC, zero-filled and synced when created
 * (so a write never allocates). A block holds one mark:
 *   "LLMARKS1" | pass (be64) | send id (be64) | FNV-1a 64 of bytes 8..24 (be64) | zeros
 * Each session writes its own mark at the next block from 0 up; the sessions' writes go to the
 * disk side by side (this measured faster here than one session writing a group of marks while
 * the others wait: BENCHMARKS.md), and to different files: synced writes to one file wait for
 * one another in ext4 (4 threads, 4 KiB O_DSYNC each: 12.1-12.8k writes a second to one file,
 * 18.2-19.4k to four). A torn or foreign block fails its checksum and is ignored (its "." was
 * never sent: the write had not returned). A file missing or of another size is made anew
 * (ll__marks_made). Builds before 2026-12-03 kept the blocks in one file, data_dir/mailer.marks:
 * a restart reads it too, and the next pass removes it.
 *
 * Passes: the mailer's claim transaction numbers each pass that sends (a key of its own in the
 * enrollments db, main.c) and leaves it open; the transaction that records the pass's outcomes
 * closes it. Blocks carry the pass, so a restart applies (INTENT -> COMMITTED, ll__marks_apply)
 * exactly the marks of a pass left open by a crash, and never an older pass's (a message
 * deferred with 4xx went back to INTENT and must be sent again). When a pass fills the blocks,
 * the marks written so far go into LMDB in one commit (a checkpoint) and the blocks start over.
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
static const char magic[8] = "LLMARKS1";

struct st_ll_marks_t {
    int fd[FILES];
    int legacy;              /* data_dir/mailer.marks of an older build, read by ll__marks_apply */
    char *path;              /* data_dir/mailer.marks, the files' names with ".N" */
    ll_nurture_t *n;
    ll_store_t *store;
    uint64_t pass;
    pthread_mutex_t mu;      /* the sessions write their marks side by side */
    pthread_cond_t idle;     /* no write under way */
    size_t writing;          /* writes under way */
    size_t next;             /* the next block to write */
    uint64_t *since;         /* ids written since the pass began or the last checkpoint */
    size_t nsince, capsince;
    int made;                /* the file was made anew at open (until a pass begins) */
};

/* FNV-1a 64 of the pass and the send id. */
static uint64_t block_sum(const uint8_t *b)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 8; i < 24; i++)
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
    for (int f = 0; f < FILES; f++)
        if (j->fd[f] >= 0)
            close(j->fd[f]);
    if (j->legacy >= 0)
        close(j->legacy);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->idle);
    free(j->since);
    free(j->path);
    free(j);
}

void ll__marks_begin(ll_marks_t *j, uint64_t pass)
{
    j->made = 0; /* what the files hold from here on is this process's */
    if (j->legacy >= 0) { /* applied by the restart that came before this pass */
        close(j->legacy);
        j->legacy = -1;
        unlink(j->path);
    }
    j->pass = pass;
    j->next = 0;
    j->nsince = 0;
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

int ll__marks_write(ll_marks_t *j, uint64_t id)
{
    uint8_t b[BLOCK];
    int rc = 0;
    pthread_mutex_lock(&j->mu);
    /* The file full: once the writes under way have landed, a checkpoint (this mark with it). */
    while (j->next == LL_MARKS_BLOCKS && j->writing > 0)
        pthread_cond_wait(&j->idle, &j->mu);
    if (j->next == LL_MARKS_BLOCKS) {
        rc = to_lmdb(j, &id, 1, 1);
        pthread_mutex_unlock(&j->mu);
        return rc;
    }
    size_t at = j->next++;
    if (j->nsince == j->capsince) {
        j->capsince = j->capsince ? j->capsince * 2 : 64;
        j->since = ll_realloc(j->since, j->capsince * sizeof(*j->since));
    }
    j->since[j->nsince++] = id;
    j->writing++;
    memset(b, 0, BLOCK);
    memcpy(b, magic, 8);
    ll_be64_put(b + 8, j->pass);
    ll_be64_put(b + 16, id);
    ll_be64_put(b + 24, block_sum(b));
    pthread_mutex_unlock(&j->mu);

    off_t off;
    int fd = block_fd(j, at, &off);
    int ok = pwrite(fd, b, BLOCK, off) == BLOCK;

    pthread_mutex_lock(&j->mu);
    if (--j->writing == 0)
        pthread_cond_broadcast(&j->idle);
    if (!ok) /* a write failed: this mark into LMDB instead (slower, as durable) */
        rc = to_lmdb(j, &id, 1, 0);
    pthread_mutex_unlock(&j->mu);
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
        if (memcmp(b, magic, 8) == 0 && ll_be64_get(b + 8) == pass && ll_be64_get(b + 24) == block_sum(b)) {
            uint64_t id = ll_be64_get(b + 16);
            rc = commit_rows(j, t, &id, 1, moved);
        }
    }
    free(b);
    return rc;
}
