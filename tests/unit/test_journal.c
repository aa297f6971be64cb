/*
 * Unit tests for the write-ahead journal (tracker/journal.c, journal.h): records read back in
 * order, a torn or damaged record ends the scan, a record that does not follow on (what an
 * earlier round left past a rewind) ends it too, appends go on after a scan, and the file is made
 * anew at another size. Each test works in a fresh mkdtemp directory, removed at the end.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include "leadloop/common.h"
#include "leadloop/journal.h"
#include "test.h"

#define SIZE 65536

static char dir[64], path[128];

static void fresh(void)
{
    char cmd[128];
    if (dir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "test_journal: cannot remove %s\n", dir);
    }
    snprintf(dir, sizeof(dir), "/tmp/ll-journal-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/edge.journal", dir);
}

/* What a scan saw: each record's first item, items and the body's first byte. */
struct seen {
    size_t n;
    uint64_t first[64];
    uint32_t items[64];
    uint8_t tag[64];
};

static int collect(uint64_t first, uint32_t items, const uint8_t *body, size_t len, void *ctx)
{
    struct seen *s = ctx;
    if (s->n < 64) {
        s->first[s->n] = first;
        s->items[s->n] = items;
        s->tag[s->n] = len > 0 ? body[0] : 0;
    }
    s->n++;
    return 0;
}

static ll_journal_t *open_scanned(struct seen *s, uint64_t *last)
{
    ll_journal_t *j = NULL;
    char err[256];
    CHECK_EQ_INT(ll_journal_open(path, SIZE, &j, err, sizeof(err)), 0);
    memset(s, 0, sizeof(*s));
    if (j != NULL)
        CHECK_EQ_INT(ll_journal_scan(j, collect, s, last), 0);
    return j;
}

static void append_tagged(ll_journal_t *j, uint64_t first, uint32_t items, uint8_t tag, size_t len)
{
    uint8_t body[8192];
    memset(body, tag, len);
    CHECK_EQ_INT(ll_journal_append(j, first, items, body, len), 0);
}

static void test_records_in_order_and_appends_go_on(void)
{
    fresh();
    struct seen s;
    uint64_t last = 99;
    ll_journal_t *j = open_scanned(&s, &last);
    CHECK_EQ_INT(s.n, 0); /* a new file: zeros */
    CHECK_EQ_INT(last, 0);
    append_tagged(j, 1, 3, 'a', 100);
    append_tagged(j, 4, 1, 'b', 1);
    ll_journal_close(j);
    j = open_scanned(&s, &last);
    CHECK_EQ_INT(s.n, 2);
    CHECK(s.first[0] == 1 && s.items[0] == 3 && s.tag[0] == 'a');
    CHECK(s.first[1] == 4 && s.items[1] == 1 && s.tag[1] == 'b');
    CHECK_EQ_INT(last, 4);
    /* After a scan the next record goes after the last whole one. */
    append_tagged(j, 5, 2, 'c', 10);
    CHECK_EQ_INT(ll_journal_used(j), 3 * LL_JOURNAL_HEADER + 111);
    ll_journal_close(j);
    j = open_scanned(&s, &last);
    CHECK_EQ_INT(s.n, 3);
    CHECK_EQ_INT(last, 6);
    ll_journal_close(j);
}

static void damage(off_t at)
{
    int fd = open(path, O_RDWR);
    uint8_t b = 0;
    CHECK(pread(fd, &b, 1, at) == 1);
    b ^= 0x40;
    CHECK(pwrite(fd, &b, 1, at) == 1);
    close(fd);
}

static void test_damaged_record_ends_the_scan(void)
{
    fresh();
    struct seen s;
    uint64_t last;
    ll_journal_t *j = open_scanned(&s, &last);
    append_tagged(j, 1, 1, 'a', 50);
    append_tagged(j, 2, 1, 'b', 50);
    append_tagged(j, 3, 1, 'c', 50);
    ll_journal_close(j);
    /* A byte of the second record's body (a torn write), then of its header's item count. */
    damage(LL_JOURNAL_HEADER + 50 + LL_JOURNAL_HEADER + 7);
    j = open_scanned(&s, &last);
    CHECK_EQ_INT(s.n, 1);
    CHECK_EQ_INT(last, 1);
    /* The next append overwrites the damaged record; the third is then not next in line. */
    append_tagged(j, 2, 1, 'B', 50);
    ll_journal_close(j);
    j = open_scanned(&s, &last);
    CHECK_EQ_INT(s.n, 3);
    CHECK(s.tag[1] == 'B');
    ll_journal_close(j);
    damage(LL_JOURNAL_HEADER + 50 + 19); /* the second record's item count */
    j = open_scanned(&s, &last);
    CHECK_EQ_INT(s.n, 1);
    ll_journal_close(j);
}

static void test_rewind_and_what_an_earlier_round_left(void)
{
    fresh();
    struct seen s;
    uint64_t last;
    ll_journal_t *j = open_scanned(&s, &last);
    append_tagged(j, 1, 10, 'a', 8000);
    append_tagged(j, 11, 10, 'b', 8000);
    append_tagged(j, 21, 10, 'c', 8000);
    ll_journal_rewind(j);
    CHECK_EQ_INT(ll_journal_used(j), 0);
    /* A shorter record at 0 leaves the old ones' bytes behind it; one exactly as long leaves the
     * next old record whole, but its items do not follow on. */
    append_tagged(j, 31, 2, 'd', 8000);
    ll_journal_close(j);
    j = open_scanned(&s, &last);
    CHECK_EQ_INT(s.n, 1);
    CHECK(s.first[0] == 31 && s.tag[0] == 'd');
    CHECK_EQ_INT(last, 32);
    ll_journal_rewind(j);
    append_tagged(j, 33, 1, 'e', 10);
    ll_journal_close(j);
    j = open_scanned(&s, &last);
    CHECK_EQ_INT(s.n, 1);
    CHECK_EQ_INT(last, 33);
    ll_journal_close(j);
}

static void test_full_and_too_big(void)
{
    fresh();
    struct seen s;
    uint64_t last;
    ll_journal_t *j = open_scanned(&s, &last);
    uint64_t first = 1;
    size_t n = 0;
    while (ll_journal_fits(j, 8000)) {
        append_tagged(j, first, 1, 'x', 8000);
        first++, n++;
    }
    CHECK_EQ_INT(n, SIZE / (8000 + LL_JOURNAL_HEADER));
    uint8_t body[8000] = {0};
    CHECK_EQ_INT(ll_journal_append(j, first, 1, body, sizeof(body)), LL_ETOOBIG);
    uint8_t *huge = ll_calloc(1, SIZE);
    ll_journal_rewind(j);
    CHECK_EQ_INT(ll_journal_append(j, first, 1, huge, SIZE - LL_JOURNAL_HEADER + 1), LL_ETOOBIG);
    CHECK_EQ_INT(ll_journal_append(j, first, 1, huge, SIZE - LL_JOURNAL_HEADER), 0); /* exactly full */
    CHECK(!ll_journal_fits(j, 0));
    free(huge);
    ll_journal_close(j);
    j = open_scanned(&s, &last);
    CHECK_EQ_INT(s.n, 1);
    CHECK_EQ_INT(last, first);
    ll_journal_close(j);
}

static void test_other_size_is_made_anew(void)
{
    fresh();
    struct seen s;
    uint64_t last;
    ll_journal_t *j = open_scanned(&s, &last);
    append_tagged(j, 1, 1, 'a', 10);
    ll_journal_close(j);
    char err[256] = "";
    CHECK_EQ_INT(ll_journal_open(path, 2 * SIZE, &j, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll_journal_scan(j, collect, &s, &last), 0);
    CHECK_EQ_INT(s.n, 0);
    ll_journal_close(j);
    CHECK_EQ_INT(ll_journal_open(path, 4095 * 16, &j, err, sizeof(err)), LL_EINVAL);
    CHECK(strstr(err, path) != NULL);
    char bad[160];
    snprintf(bad, sizeof(bad), "%s/missing/edge.journal", dir);
    CHECK_EQ_INT(ll_journal_open(bad, SIZE, &j, err, sizeof(err)), LL_EIO);
    CHECK(strstr(err, bad) != NULL);
}

int main(void)
{
    RUN(test_records_in_order_and_appends_go_on);
    RUN(test_damaged_record_ends_the_scan);
    RUN(test_rewind_and_what_an_earlier_round_left);
    RUN(test_full_and_too_big);
    RUN(test_other_size_is_made_anew);
    if (dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "test_journal: cannot remove %s\n", dir);
    }
    return TEST_DONE("test_journal");
}
