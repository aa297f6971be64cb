/*
 * Scanner lists (see lists.h).
 *
 * A file is read whole into one buffer and parsed in place: values and labels are cut out of
 * it with NULs, so a set owns one allocation per file plus its three indexes, and a hit's
 * strings point into them. The directory's stamps (name, inode, size, mtime) are kept with the
 * set; ll_lists_maybe_reload() compares a fresh scan with them, which costs a readdir and a
 * stat per file once a second.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "leadloop/lists.h"

#define SEC 1000000ULL

typedef struct st_list_t {
    char *name;
    char *text; /* the file's bytes; values and labels point into it */
    int cls;
    unsigned applies;
} list_t;

typedef struct st_ip_entry_t {
    uint8_t net[16]; /* masked to plen; v4 in the first 4 bytes */
    uint8_t plen;
    uint32_t list, order; /* order: load order, for ties */
    const char *label;
} ip_entry_t;

typedef struct st_asn_entry_t {
    uint32_t asn, list, order;
    const char *label;
} asn_entry_t;

typedef struct st_ua_entry_t {
    const char *s; /* lowercase */
    size_t len;
    uint32_t list;
    const char *label;
} ua_entry_t;

/* One table of CIDR ranges: sorted by prefix length (longest first), address, load order.
 * top16 has a bit for each value of an address's first 16 bits that some range covers: most
 * addresses are in no list, and one bit rules them out before a search per prefix length (those
 * searches were a tenth of the writer's time per event in the capture benchmark). */
typedef struct st_ip_table_t {
    ip_entry_t *v;
    size_t n, cap;
    size_t alen; /* 4 or 16 */
    size_t ngroups;
    struct {
        uint8_t plen;
        size_t begin, end;
    } groups[129];
    uint64_t top16[65536 / 64];
} ip_table_t;

typedef struct st_stamp_t {
    char *name;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim;
} stamp_t;

typedef struct st_stamps_t {
    stamp_t *v;
    size_t n;
} stamps_t;

struct st_ll_lists_t {
    char *dir;
    list_t *lists;
    size_t nlists;
    ip_table_t v4, v6;
    asn_entry_t *asn;
    size_t nasn, asncap;
    ua_entry_t *ua;
    size_t nua, uacap;
    uint32_t *ua_by_first; /* ua indexes grouped by first byte: ua_by_first[ua_first[c] .. ua_first[c + 1]) */
    uint32_t ua_first[257];
    ll_memo_t *ua_memo;     /* ll_lists_match_ua's answers: the entry's index, or UINT64_MAX */
    size_t count;
    stamps_t stamps;        /* the files this set was loaded from */
    stamps_t failed;        /* the files of the last failed reload, not reported again */
    int have_failed, scan_failed;
    uint64_t checked_us;
    int checked;
};

/* ---- directory stamps ---- */

static void stamps_free(stamps_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].name);
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

static int stamp_cmp(const void *a, const void *b)
{
    return strcmp(((const stamp_t *)a)->name, ((const stamp_t *)b)->name);
}

static int stamps_equal(const stamps_t *a, const stamps_t *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        const stamp_t *x = &a->v[i], *y = &b->v[i];
        if (strcmp(x->name, y->name) != 0 || x->dev != y->dev || x->ino != y->ino || x->size != y->size ||
            x->mtim.tv_sec != y->mtim.tv_sec || x->mtim.tv_nsec != y->mtim.tv_nsec)
            return 0;
    }
    return 1;
}

static int is_list_name(const char *n)
{
    size_t len = strlen(n);
    return n[0] != '.' && len > 4 && memcmp(n + len - 4, ".txt", 4) == 0;
}

/* The *.txt regular files of dir (symlinks followed), sorted by name. */
static int scan_dir(const char *dir, stamps_t *out, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t cap = 0;
    int rc = 0;

    out->v = NULL;
    out->n = 0;
    if (d == NULL) {
        if (errno == ENOENT || errno == ENOTDIR)
            return ll_err(err, errlen, LL_ENOTFOUND, "%s: no such directory", dir);
        return ll_err(err, errlen, LL_EIO, "%s: %s", dir, strerror(errno));
    }
    while ((errno = 0, de = readdir(d)) != NULL) {
        if (!is_list_name(de->d_name))
            continue;
        struct stat st;
        size_t plen = strlen(dir) + 1 + strlen(de->d_name) + 1;
        char *path = ll_malloc(plen);
        snprintf(path, plen, "%s/%s", dir, de->d_name);
        int r = stat(path, &st);
        free(path);
        if (r != 0 || !S_ISREG(st.st_mode))
            continue; /* a dangling link or a directory is not a list */
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            out->v = ll_realloc(out->v, cap * sizeof(*out->v));
        }
        stamp_t *s = &out->v[out->n++];
        s->name = ll_strdup(de->d_name);
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        s->size = st.st_size;
        s->mtim = st.st_mtim;
    }
    if (errno != 0) {
        rc = ll_err(err, errlen, LL_EIO, "%s: %s", dir, strerror(errno));
        stamps_free(out);
    }
    closedir(d);
    if (rc == 0 && out->n > 1)
        qsort(out->v, out->n, sizeof(*out->v), stamp_cmp);
    return rc;
}

/* ---- parsing ---- */

static int read_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
    struct stat st;
    char *buf = NULL;
    size_t len = 0;

    if (fd < 0)
        return ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(errno));
        goto leave;
    }
    if ((uint64_t)st.st_size > LL_LISTS_FILE_MAX) {
        rc = ll_err(err, errlen, LL_ETOOBIG, "%s: larger than %u bytes", path, LL_LISTS_FILE_MAX);
        goto leave;
    }
    /* read to EOF with a cap: the file may grow while we read it */
    size_t cap = (size_t)st.st_size + 1;
    buf = ll_malloc(cap + 1);
    for (;;) {
        if (len == cap) {
            if (cap > LL_LISTS_FILE_MAX) {
                rc = ll_err(err, errlen, LL_ETOOBIG, "%s: larger than %u bytes", path, LL_LISTS_FILE_MAX);
                goto leave;
            }
            cap *= 2;
            buf = ll_realloc(buf, cap + 1);
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = ll_err(err, errlen, LL_EIO, "%s: %s", path, strerror(errno));
            goto leave;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    buf = NULL;
leave:
    free(buf);
    close(fd);
    return rc;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

static char *skip_space(char *p)
{
    while (is_space(*p))
        p++;
    return p;
}

/* Cuts trailing blanks off [p, end) in place and returns p (a NUL-terminated label). */
static char *trim_label(char *p, char *end)
{
    while (end > p && is_space(end[-1]))
        end--;
    *end = '\0';
    return p;
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* The key of a "# key: value" header line, or NULL when the comment is only a comment. */
static char *header_value(char *line, const char *key)
{
    size_t kl = strlen(key);
    char *p = skip_space(line + 1);
    if (strncmp(p, key, kl) != 0 || p[kl] != ':')
        return NULL;
    return skip_space(p + kl + 1);
}

static int parse_class(const char *v, size_t n)
{
    if (n == 7 && memcmp(v, "scanner", 7) == 0)
        return LL_CLASS_SCANNER;
    if (n == 8 && memcmp(v, "prefetch", 8) == 0)
        return LL_CLASS_PREFETCH;
    if (n == 3 && memcmp(v, "bot", 3) == 0)
        return LL_CLASS_BOT;
    return -1;
}

/* Parses "click,open" (blanks allowed around names) into a bit set; 0 on an unknown name. */
static unsigned parse_applies(char *v, char **bad)
{
    unsigned bits = 0;
    for (char *p = v; *p != '\0';) {
        p = skip_space(p);
        char *e = p;
        while (*e != '\0' && *e != ',' && !is_space(*e))
            e++;
        int t = ll_event_type_parse(p, (size_t)(e - p));
        if (t == 0) {
            *e = '\0';
            *bad = p;
            return 0;
        }
        bits |= 1u << t;
        p = skip_space(e);
        if (*p == ',')
            p++;
        else if (*p != '\0') {
            *bad = p;
            return 0;
        }
    }
    return bits;
}

/* A v4 or v6 CIDR into net (masked) and *plen; -1 when malformed. */
static int parse_cidr(const char *s, uint8_t net[16], uint8_t *plen, size_t *alen)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    int v6 = memchr(s, ':', n) != NULL;
    unsigned long max = v6 ? 128 : 32, bits = max;

    if (n == 0 || n >= sizeof(addr))
        return -1;
    memcpy(addr, s, n);
    addr[n] = '\0';
    memset(net, 0, 16);
    if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, net) != 1)
        return -1;
    if (slash != NULL) {
        const char *d = slash + 1;
        if (*d < '0' || *d > '9' || strlen(d) > 3)
            return -1;
        bits = 0;
        for (; *d != '\0'; d++) {
            if (*d < '0' || *d > '9')
                return -1;
            bits = bits * 10 + (unsigned long)(*d - '0');
        }
        if (bits > max)
            return -1;
    }
    for (size_t i = 0; i < 16; i++) {
        size_t lo = i * 8;
        if (lo >= bits)
            net[i] = 0;
        else if (bits - lo < 8)
            net[i] &= (uint8_t)(0xff << (8 - (bits - lo)));
    }
    *plen = (uint8_t)bits;
    *alen = v6 ? 16 : 4;
    return 0;
}

static int parse_asn(const char *s, uint32_t *out)
{
    uint64_t v = 0;
    if ((s[0] == 'A' || s[0] == 'a') && (s[1] == 'S' || s[1] == 's'))
        s += 2;
    if (*s == '\0' || strlen(s) > 10)
        return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (v == 0 || v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/*
 * Cuts the value that starts at p: a bare word, or a "quoted" string with \" and \\ escapes
 * (unescaped in place). Sets *rest past it. NULL when a quote is not closed or the value is not
 * followed by a blank or the end.
 */
static char *cut_value(char *p, char **rest)
{
    if (*p != '"') {
        char *e = p;
        while (*e != '\0' && !is_space(*e))
            e++;
        *rest = *e != '\0' ? e + 1 : e;
        *e = '\0';
        return p;
    }
    char *w = p, *r = p + 1;
    for (; *r != '"'; r++) {
        if (*r == '\0')
            return NULL;
        if (*r == '\\' && (r[1] == '"' || r[1] == '\\'))
            r++;
        *w++ = *r;
    }
    r++;
    if (*r != '\0' && !is_space(*r))
        return NULL;
    *rest = *r != '\0' ? r + 1 : r;
    *w = '\0';
    return p;
}

#define GROW(v, n, cap)                                                                                                \
    do {                                                                                                               \
        if ((n) == (cap)) {                                                                                            \
            (cap) = (cap) ? (cap) * 2 : 64;                                                                            \
            (v) = ll_realloc((v), (cap) * sizeof(*(v)));                                                               \
        }                                                                                                              \
    } while (0)

/* Parses one file (already read into li->text) into li and the set's tables. */
static int parse_list(ll_lists_t *l, uint32_t idx, const char *path, size_t textlen, char *err, size_t errlen)
{
    list_t *li = &l->lists[idx];
    char *p = li->text, *end = li->text + textlen;
    unsigned lineno = 0, sources = 0, applies_line = 0;
    int cls = -1;

    li->applies = ~0u;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p)), *line = p;
        char *eol = nl ? nl : end;
        p = nl ? nl + 1 : end;
        lineno++;
        if (memchr(line, '\0', (size_t)(eol - line)) != NULL)
            return ll_err(err, errlen, LL_EINVAL, "%s:%u: NUL byte", path, lineno);
        if (eol > line && eol[-1] == '\r')
            eol--;
        *eol = '\0';
        line = skip_space(line);
        if (*line == '\0')
            continue;
        if (*line == '#') {
            char *v;
            if ((v = header_value(line, "class")) != NULL) {
                if (cls >= 0)
                    return ll_err(err, errlen, LL_EINVAL, "%s:%u: a second class line", path, lineno);
                trim_label(v, eol);
                if ((cls = parse_class(v, strlen(v))) < 0)
                    return ll_err(err, errlen, LL_EINVAL, "%s:%u: class '%.32s': not scanner, prefetch or bot", path,
                                  lineno, v);
            } else if ((v = header_value(line, "applies")) != NULL) {
                char *bad = NULL;
                if (applies_line != 0)
                    return ll_err(err, errlen, LL_EINVAL, "%s:%u: a second applies line", path, lineno);
                applies_line = lineno;
                trim_label(v, eol);
                if ((li->applies = parse_applies(v, &bad)) == 0)
                    return ll_err(err, errlen, LL_EINVAL, "%s:%u: applies: '%.32s' is not an event type", path,
                                  lineno, bad != NULL ? bad : v);
            } else if ((v = header_value(line, "source")) != NULL) {
                if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0)
                    return ll_err(err, errlen, LL_EINVAL, "%s:%u: source: not an http(s) URL", path, lineno);
                sources++;
            }
            continue;
        }

        char *kind = line, *rest;
        while (*line != '\0' && !is_space(*line))
            line++;
        size_t kl = (size_t)(line - kind);
        line = skip_space(line);
        if (!((kl == 2 && memcmp(kind, "ip", 2) == 0) || (kl == 3 && memcmp(kind, "asn", 3) == 0) ||
              (kl == 2 && memcmp(kind, "ua", 2) == 0)))
            return ll_err(err, errlen, LL_EINVAL, "%s:%u: unknown entry kind '%.*s' (ip, asn or ua)", path, lineno,
                          (int)(kl > 32 ? 32 : kl), kind);
        if (*line == '\0')
            return ll_err(err, errlen, LL_EINVAL, "%s:%u: %.*s without a value", path, lineno, (int)kl, kind);
        char *value = cut_value(line, &rest);
        if (value == NULL)
            return ll_err(err, errlen, LL_EINVAL, "%s:%u: unclosed or misplaced quote", path, lineno);
        rest = skip_space(rest);
        const char *label = trim_label(rest, rest + strlen(rest));
        if (l->count >= LL_LISTS_ENTRIES_MAX)
            return ll_err(err, errlen, LL_ETOOBIG, "%s:%u: more than %u entries in all lists", path, lineno,
                          (unsigned)LL_LISTS_ENTRIES_MAX);

        if (kind[0] == 'i') {
            uint8_t net[16], plen;
            size_t alen;
            if (parse_cidr(value, net, &plen, &alen) != 0)
                return ll_err(err, errlen, LL_EINVAL, "%s:%u: '%.64s' is not an IPv4 or IPv6 CIDR range", path,
                              lineno, value);
            ip_table_t *t = alen == 4 ? &l->v4 : &l->v6;
            GROW(t->v, t->n, t->cap);
            ip_entry_t *e = &t->v[t->n++];
            memcpy(e->net, net, 16);
            e->plen = plen;
            e->list = idx;
            e->order = (uint32_t)l->count;
            e->label = label;
        } else if (kind[0] == 'a') {
            uint32_t asn;
            if (parse_asn(value, &asn) != 0)
                return ll_err(err, errlen, LL_EINVAL, "%s:%u: '%.32s' is not an AS number", path, lineno, value);
            GROW(l->asn, l->nasn, l->asncap);
            l->asn[l->nasn++] = (asn_entry_t){asn, idx, (uint32_t)l->count, label};
        } else {
            size_t n = strlen(value);
            if (n < 3)
                return ll_err(err, errlen, LL_EINVAL, "%s:%u: ua '%s' is shorter than 3 bytes", path, lineno, value);
            if (n > LL_LISTS_UA_SCAN)
                return ll_err(err, errlen, LL_EINVAL, "%s:%u: ua longer than the %u bytes matched", path, lineno,
                              (unsigned)LL_LISTS_UA_SCAN);
            for (size_t i = 0; i < n; i++)
                value[i] = lower(value[i]);
            GROW(l->ua, l->nua, l->uacap);
            l->ua[l->nua++] = (ua_entry_t){value, n, idx, label};
        }
        l->count++;
    }
    if (cls < 0)
        return ll_err(err, errlen, LL_EINVAL, "%s:%u: no '# class:' line", path, lineno);
    if (sources == 0)
        return ll_err(err, errlen, LL_EINVAL, "%s:%u: no '# source:' line naming where the entries come from", path,
                      lineno);
    li->cls = cls;
    return 0;
}

/* ---- indexes ---- */

/* v4 nets are zero past their 4 bytes, so all 16 compare for either family */
static int ip_entry_cmp(const void *a, const void *b)
{
    const ip_entry_t *x = a, *y = b;
    if (x->plen != y->plen)
        return x->plen > y->plen ? -1 : 1;
    int c = memcmp(x->net, y->net, 16);
    if (c != 0)
        return c;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void index_ip(ip_table_t *t, size_t alen)
{
    t->alen = alen;
    if (t->n > 1)
        qsort(t->v, t->n, sizeof(*t->v), ip_entry_cmp);
    t->ngroups = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->ngroups == 0 || t->groups[t->ngroups - 1].plen != t->v[i].plen) {
            t->groups[t->ngroups].plen = t->v[i].plen;
            t->groups[t->ngroups].begin = i;
            t->ngroups++;
        }
        t->groups[t->ngroups - 1].end = i + 1;
        unsigned first = (unsigned)t->v[i].net[0] << 8 | t->v[i].net[1];
        unsigned span = t->v[i].plen >= 16 ? 1u : 1u << (16 - t->v[i].plen);
        for (unsigned b = first; b < first + span; b++)
            t->top16[b / 64] |= 1ull << (b % 64);
    }
}

static int asn_entry_cmp(const void *a, const void *b)
{
    const asn_entry_t *x = a, *y = b;
    if (x->asn != y->asn)
        return x->asn < y->asn ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static void index_ua(ll_lists_t *l)
{
    size_t count[256] = {0}, pos[256];
    for (size_t i = 0; i < l->nua; i++)
        count[(unsigned char)l->ua[i].s[0]]++;
    for (size_t c = 0, at = 0; c < 256; c++) {
        l->ua_first[c] = (uint32_t)at;
        pos[c] = at;
        at += count[c];
    }
    l->ua_first[256] = (uint32_t)l->nua;
    l->ua_by_first = ll_malloc((l->nua ? l->nua : 1) * sizeof(*l->ua_by_first));
    for (size_t i = 0; i < l->nua; i++) /* in load order within a bucket */
        l->ua_by_first[pos[(unsigned char)l->ua[i].s[0]]++] = (uint32_t)i;
    l->ua_memo = ll_memo_new(256);
}

/* ---- sets ---- */

void ll_lists_free(ll_lists_t *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->nlists; i++) {
        free(l->lists[i].name);
        free(l->lists[i].text);
    }
    free(l->lists);
    free(l->v4.v);
    free(l->v6.v);
    free(l->asn);
    free(l->ua);
    free(l->ua_by_first);
    ll_memo_free(l->ua_memo);
    stamps_free(&l->stamps);
    stamps_free(&l->failed);
    free(l->dir);
    free(l);
}

/* Loads the files named by stamps (taken away into the set on success). */
static int load(const char *dir, stamps_t *stamps, ll_lists_t **out, char *err, size_t errlen)
{
    ll_lists_t *l = ll_calloc(1, sizeof(*l));
    int rc = 0;

    l->dir = ll_strdup(dir);
    l->lists = ll_calloc(stamps->n ? stamps->n : 1, sizeof(*l->lists));
    for (size_t i = 0; i < stamps->n; i++) {
        const char *name = stamps->v[i].name;
        size_t plen = strlen(dir) + 1 + strlen(name) + 1, textlen = 0;
        char *path = ll_malloc(plen);
        snprintf(path, plen, "%s/%s", dir, name);
        list_t *li = &l->lists[l->nlists++];
        li->name = ll_strndup(name, strlen(name) - 4);
        if ((rc = read_file(path, &li->text, &textlen, err, errlen)) == 0)
            rc = parse_list(l, (uint32_t)i, path, textlen, err, errlen);
        free(path);
        if (rc != 0)
            goto leave;
    }
    index_ip(&l->v4, 4);
    index_ip(&l->v6, 16);
    if (l->nasn > 1)
        qsort(l->asn, l->nasn, sizeof(*l->asn), asn_entry_cmp);
    index_ua(l);
    l->stamps = *stamps;
    stamps->v = NULL;
    stamps->n = 0;
    *out = l;
    l = NULL;
leave:
    ll_lists_free(l);
    return rc;
}

int ll_lists_open(const char *dir, ll_lists_t **out, char *err, size_t errlen)
{
    stamps_t st;
    int rc;

    if ((rc = scan_dir(dir, &st, err, errlen)) != 0)
        return rc;
    rc = load(dir, &st, out, err, errlen);
    stamps_free(&st);
    return rc;
}

int ll_lists_maybe_reload(ll_lists_t **lp, uint64_t now_us, char *err, size_t errlen)
{
    ll_lists_t *l = *lp, *nl = NULL;
    stamps_t st;
    int rc;

    if (l == NULL)
        return 0;
    if (l->checked && now_us >= l->checked_us && now_us - l->checked_us < SEC)
        return 0;
    l->checked = 1;
    l->checked_us = now_us;
    if ((rc = scan_dir(l->dir, &st, err, errlen)) != 0) {
        if (l->scan_failed)
            return 0;
        l->scan_failed = 1;
        return rc;
    }
    l->scan_failed = 0;
    if (stamps_equal(&st, &l->stamps) || (l->have_failed && stamps_equal(&st, &l->failed))) {
        if (stamps_equal(&st, &l->stamps)) { /* a bad edit undone: a new one is worth reporting */
            stamps_free(&l->failed);
            l->have_failed = 0;
        }
        stamps_free(&st);
        return 0;
    }
    if ((rc = load(l->dir, &st, &nl, err, errlen)) != 0) {
        stamps_free(&l->failed);
        l->failed = st;
        l->have_failed = 1;
        return rc;
    }
    nl->checked = 1;
    nl->checked_us = now_us;
    ll_lists_free(l);
    *lp = nl;
    return 1;
}

size_t ll_lists_count(const ll_lists_t *l)
{
    return l != NULL ? l->count : 0;
}

static void fill(const ll_lists_t *l, uint32_t list, const char *label, ll_list_hit_t *hit)
{
    hit->cls = l->lists[list].cls;
    hit->list = l->lists[list].name;
    hit->label = label;
    hit->applies = l->lists[list].applies;
}

/* The first entry of [begin, end) whose net equals key (zero-padded to 16 bytes), or NULL. */
static const ip_entry_t *ip_find(const ip_table_t *t, size_t begin, size_t end, const uint8_t *key)
{
    size_t lo = begin, hi = end;
    while (lo < hi) { /* lower bound: ties keep their load order */
        size_t mid = lo + (hi - lo) / 2;
        if (memcmp(t->v[mid].net, key, 16) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < end && memcmp(t->v[lo].net, key, 16) == 0 ? &t->v[lo] : NULL;
}

int ll_lists_match_ip(const ll_lists_t *l, const ll_ip_t *ip, ll_list_hit_t *hit)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const ip_table_t *t;
    const uint8_t *addr = ip->addr;

    if (l == NULL)
        return 0;
    if (ip->family == AF_INET) {
        t = &l->v4;
    } else if (ip->family == AF_INET6) {
        t = &l->v6;
        if (memcmp(addr, mapped, sizeof(mapped)) == 0)
            t = &l->v4, addr += 12;
    } else {
        return 0;
    }
    unsigned top = (unsigned)addr[0] << 8 | addr[1];
    if (!(t->top16[top / 64] & 1ull << (top % 64)))
        return 0;
    for (size_t g = 0; g < t->ngroups; g++) {
        uint8_t key[16] = {0};
        unsigned bits = t->groups[g].plen;
        for (size_t i = 0; i < t->alen && bits > 0; i++) {
            unsigned b = bits >= 8 ? 8 : bits;
            key[i] = addr[i] & (uint8_t)(0xff << (8 - b));
            bits -= b;
        }
        const ip_entry_t *e = ip_find(t, t->groups[g].begin, t->groups[g].end, key);
        if (e != NULL) {
            fill(l, e->list, e->label, hit);
            return 1;
        }
    }
    return 0;
}

int ll_lists_match_asn(const ll_lists_t *l, uint32_t asn, ll_list_hit_t *hit)
{
    if (l == NULL)
        return 0;
    size_t begin = 0, end = l->nasn;
    while (begin < end) {
        size_t mid = begin + (end - begin) / 2;
        if (l->asn[mid].asn < asn)
            begin = mid + 1;
        else
            end = mid;
    }
    if (begin == l->nasn || l->asn[begin].asn != asn)
        return 0;
    fill(l, l->asn[begin].list, l->asn[begin].label, hit);
    return 1;
}

/* The earliest entry (load order) found in the first LL_LISTS_UA_SCAN bytes, or UINT64_MAX. */
static uint64_t find_ua(const ll_lists_t *l, const char *ua, size_t len)
{
    char buf[LL_LISTS_UA_SCAN];
    size_t best = SIZE_MAX;

    if (len > sizeof(buf))
        len = sizeof(buf);
    for (size_t i = 0; i < len; i++)
        buf[i] = lower(ua[i]);
    for (size_t at = 0; at + 2 < len; at++) { /* every entry is at least 3 bytes */
        unsigned char c = (unsigned char)buf[at];
        for (uint32_t k = l->ua_first[c]; k < l->ua_first[c + 1]; k++) {
            size_t i = l->ua_by_first[k];
            if (i >= best)
                break; /* load order within a bucket: nothing earlier here */
            const ua_entry_t *e = &l->ua[i];
            /* the second byte rules out most candidates without a call */
            if (e->len <= len - at && buf[at + 1] == e->s[1] && memcmp(buf + at, e->s, e->len) == 0) {
                best = i;
                break;
            }
        }
        if (best == 0)
            break;
    }
    return best == SIZE_MAX ? UINT64_MAX : best;
}

int ll_lists_match_ua(const ll_lists_t *l, const char *ua, size_t len, ll_list_hit_t *hit)
{
    uint64_t best;

    if (l == NULL || l->nua == 0 || ua == NULL)
        return 0;
    if (!ll_memo_get(l->ua_memo, ua, len, &best)) {
        best = find_ua(l, ua, len);
        ll_memo_put(l->ua_memo, ua, len, best);
    }
    if (best == UINT64_MAX)
        return 0;
    fill(l, l->ua[best].list, l->ua[best].label, hit);
    return 1;
}
