/*
 * A write-ahead journal in front of the LMDB store: leadloopd's `ack: journal` (server/writer.c).
 *
 * Why: under `ack: commit` a tracking request is answered after its LMDB commit, two device
 * flushes over about nine scattered pages (1.1 ms on the benchmark VM). One O_DSYNC write of a
 * batch's events to blocks already allocated is one flush (0.13-0.3 ms). leadloopd answers once
 * the batch is in the journal and commits it to LMDB behind, in larger batches, with
 * MDB_NOMETASYNC (one flush a commit; a crash may undo the last commit, never corrupt the store).
 * At start, what the journal holds past the store's high-water mark is ingested again.
 *
 * The file (DATA_DIR/edge.journal): `size` bytes, zero-filled and synced when made, written
 * with O_DSYNC from offset 0 up, one record per write, no padding:
 *   "LLJRNL01" | first item (be64) | items (be32) | body bytes (be32) |
 *   checksum of bytes 8..24 and the body (be64, journal.c) | body
 * Items are numbered from 1 and never reused: a record's first item is the previous record's
 * first plus its items. A scan from offset 0 stops at the first record that is not whole (a torn
 * write, never acknowledged: only the last write can be torn, as the next starts after it
 * returned) or whose first item does not follow on (what an earlier round left past the end of
 * this one). When the file is full, the writer makes the store durable up to the last item
 * written (mdb_env_sync) and the next record goes at offset 0 again (ll_journal_rewind).
 *
 * The body's layout is the caller's; records are read back only by the process that wrote them
 * or its successor on the same machine (native byte order inside the body is allowed).
 *
 * Not thread-safe: one thread appends; scans happen before appending starts.
 */
#ifndef LEADLOOP_JOURNAL_H
#define LEADLOOP_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct st_ll_journal_t ll_journal_t;

#define LL_JOURNAL_HEADER 32

/**
 * Opens path, making it (zero-filled, synced) when it is missing or not `size` bytes long
 * (size: a multiple of 4096, at least 64 KiB). On failure err names the file.
 */
int ll_journal_open(const char *path, size_t size, ll_journal_t **out, char *err, size_t errlen);
void ll_journal_close(ll_journal_t *j);

/** Called for each whole record, in order; a non-zero return stops the scan and is returned. */
typedef int (*ll_journal_cb)(uint64_t first, uint32_t items, const uint8_t *body, size_t len, void *ctx);

/**
 * Reads the records from offset 0 (see above), calls cb for each, and leaves the journal to
 * append after the last whole one. *last: the last item number found (0: none).
 */
int ll_journal_scan(ll_journal_t *j, ll_journal_cb cb, void *ctx, uint64_t *last);

/** 1 when a record with a body of len bytes fits after what is written. */
int ll_journal_fits(const ll_journal_t *j, size_t len);

/**
 * Writes one record (header and body in one O_DSYNC write) and returns once it is on disk.
 * LL_ETOOBIG when it does not fit (rewind first, or it is larger than the file), LL_EIO when the
 * write failed (the next append goes at the same offset).
 */
int ll_journal_append(ll_journal_t *j, uint64_t first, uint32_t items, const void *body, size_t len);

/** The next record goes at offset 0: every record written is durably in the store. */
void ll_journal_rewind(ll_journal_t *j);

/** Bytes written since the last rewind. */
size_t ll_journal_used(const ll_journal_t *j);

#endif
