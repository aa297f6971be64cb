/*
 * Templates: loading and checking at start, rendering per message. Links in the HTML part are
 * found with libgumbo (attribute positions in the source), never with patterns; links in the
 * text part are URLs by syntax (they have no markup to parse).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <gumbo.h>
#include <jansson.h>
#include "leadloop/judge.h"
#include "mailer.h"

#define LINK_TAG_ATTR "data-ll-tag" /* <a href=... data-ll-tag="pricing">: the click carries the tag */
#define MAX_LINKS 256 /* links of an HTML part signed; a template with more is refused at load */

/* Fields any template may use besides the profile fields of the configured forms. */
static const char *const base_fields[] = {"email", "unsubscribe_url", "first_name", "last_name", "name", "company",
                                          "title", "phone", "country", "city", "tz", NULL};

static int known_field(const ll_config_t *conf, const char *name, size_t n)
{
    for (size_t i = 0; base_fields[i] != NULL; i++)
        if (strlen(base_fields[i]) == n && memcmp(base_fields[i], name, n) == 0)
            return 1;
    for (size_t f = 0; f < conf->num_forms; f++)
        for (size_t i = 0; i < conf->forms[f].num_fields; i++)
            if (strlen(conf->forms[f].fields[i]) == n && memcmp(conf->forms[f].fields[i], name, n) == 0)
                return 1;
    return 0;
}

static void plan_free(struct st_ll_tpl_plan_t *pl);
static struct st_ll_tpl_plan_t *make_plan(const ll_tpl_t *t, const GumboOutput *g);

void ll__tpl_free(ll_tpl_t *t)
{
    if (t == NULL)
        return;
    free(t->path);
    free(t->subject);
    free(t->html);
    free(t->text);
    plan_free(t->plan);
    free(t);
}

/* One placeholder's inside: "name" or "name|fallback". */
typedef struct {
    const char *name;
    size_t name_len;
    const char *fallback;
    size_t fallback_len;
} ph_t;

static void ph_split(const char *s, size_t n, ph_t *p)
{
    while (n > 0 && *s == ' ')
        s++, n--;
    while (n > 0 && s[n - 1] == ' ')
        n--;
    const char *bar = memchr(s, '|', n);
    p->name = s;
    p->name_len = bar ? (size_t)(bar - s) : n;
    while (p->name_len > 0 && s[p->name_len - 1] == ' ')
        p->name_len--;
    p->fallback = bar ? bar + 1 : "";
    p->fallback_len = bar ? n - (size_t)(bar + 1 - s) : 0;
}

/* Checks the placeholders of a part that starts at line `line` of the file. */
static int check_placeholders(const ll_tpl_t *t, const ll_config_t *conf, const char *s, int line, char *err,
                              size_t errlen)
{
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\n') {
            line++;
            continue;
        }
        if (p[0] != '{' || p[1] != '{')
            continue;
        const char *end = strstr(p + 2, "}}"), *nl = strchr(p + 2, '\n');
        if (end == NULL || (nl != NULL && nl < end))
            return ll_err(err, errlen, LL_EINVAL, "%s:%d: unclosed placeholder '{{' (no '}}' on the line)", t->path, line);
        ph_t ph;
        ph_split(p + 2, (size_t)(end - p - 2), &ph);
        if (ph.name_len == 0)
            return ll_err(err, errlen, LL_EINVAL, "%s:%d: empty placeholder", t->path, line);
        if (!known_field(conf, ph.name, ph.name_len))
            return ll_err(err, errlen, LL_EINVAL, "%s:%d: unknown field '%.*s'", t->path, line, (int)ph.name_len,
                          ph.name);
        p = end + 1;
    }
    return 0;
}

/* Elements a template must close itself (HTML lets the parser close the others). */
static int needs_end_tag(GumboTag tag)
{
    switch (tag) {
    case GUMBO_TAG_A: case GUMBO_TAG_B: case GUMBO_TAG_I: case GUMBO_TAG_U: case GUMBO_TAG_S: case GUMBO_TAG_EM:
    case GUMBO_TAG_STRONG: case GUMBO_TAG_SPAN: case GUMBO_TAG_DIV: case GUMBO_TAG_TABLE: case GUMBO_TAG_UL:
    case GUMBO_TAG_OL: case GUMBO_TAG_H1: case GUMBO_TAG_H2: case GUMBO_TAG_H3: case GUMBO_TAG_H4: case GUMBO_TAG_H5:
    case GUMBO_TAG_H6: case GUMBO_TAG_FONT: case GUMBO_TAG_CENTER: case GUMBO_TAG_BLOCKQUOTE: case GUMBO_TAG_PRE:
    case GUMBO_TAG_CODE: case GUMBO_TAG_SMALL: case GUMBO_TAG_TITLE: case GUMBO_TAG_STYLE: case GUMBO_TAG_SCRIPT:
    case GUMBO_TAG_SECTION: case GUMBO_TAG_HEADER: case GUMBO_TAG_FOOTER: case GUMBO_TAG_BUTTON:
        return 1;
    default:
        return 0;
    }
}

/* An element opened in the source but never closed. */
static int is_unclosed(const GumboElement *e)
{
    return e->original_tag.length > 0 && e->original_end_tag.length == 0 && needs_end_tag(e->tag);
}

/* An element with a data-ll-tag that is not a valid link tag. */
static int has_bad_tag(const GumboElement *e)
{
    GumboAttribute *a = gumbo_get_attribute(&e->attributes, LINK_TAG_ATTR);
    return a != NULL && ll_link_tag_check(a->value, strlen(a->value)) != 0;
}

/* The first element (document order) for which pred holds, or NULL. */
static const GumboNode *find_element(const GumboNode *n, int (*pred)(const GumboElement *), int depth)
{
    if (n->type != GUMBO_NODE_ELEMENT || depth > 200)
        return NULL;
    const GumboElement *e = &n->v.element;
    if (pred(e))
        return n;
    for (unsigned i = 0; i < e->children.length; i++) {
        const GumboNode *u = find_element(e->children.data[i], pred, depth + 1);
        if (u != NULL)
            return u;
    }
    return NULL;
}

static size_t count_links(const GumboNode *n, int depth)
{
    if (n->type != GUMBO_NODE_ELEMENT || depth > 400)
        return 0;
    const GumboElement *e = &n->v.element;
    size_t c = (e->tag == GUMBO_TAG_A || e->tag == GUMBO_TAG_AREA) && gumbo_get_attribute(&e->attributes, "href");
    for (unsigned i = 0; i < e->children.length; i++)
        c += count_links(e->children.data[i], depth + 1);
    return c;
}

/* Checks the HTML part; when it passes, makes its plan from the same parse. */
static int check_html(ll_tpl_t *t, char *err, size_t errlen)
{
    GumboOutput *out = gumbo_parse_with_options(&kGumboDefaultOptions, t->html, strlen(t->html));
    if (out == NULL)
        return ll_err(err, errlen, LL_EINVAL, "%s:%d: the HTML part cannot be parsed", t->path, t->html_line);
    const GumboNode *u = find_element(out->root, is_unclosed, 0);
    int rc = 0;
    if (u != NULL)
        rc = ll_err(err, errlen, LL_EINVAL, "%s:%u: unclosed tag <%s>", t->path,
                    t->html_line + u->v.element.start_pos.line - 1, gumbo_normalized_tagname(u->v.element.tag));
    const GumboNode *bt = rc == 0 ? find_element(out->root, has_bad_tag, 0) : NULL;
    if (bt != NULL)
        rc = ll_err(err, errlen, LL_EINVAL, "%s:%u: " LINK_TAG_ATTR " \"%.40s\": a link tag is 1 to %d of a-z, 0-9, '_', "
                    "'.', '-'", t->path, t->html_line + bt->v.element.start_pos.line - 1,
                    gumbo_get_attribute(&bt->v.element.attributes, LINK_TAG_ATTR)->value, LL_TOKEN_LINK_TAG_MAX);
    size_t links = rc == 0 ? count_links(out->root, 0) : 0;
    if (links > MAX_LINKS)
        rc = ll_err(err, errlen, LL_EINVAL, "%s:%d: the HTML part has %zu links; a message signs at most %d", t->path,
                    t->html_line, links, MAX_LINKS);
    /* A tag cut off by the end of the part ("<a href=x" and nothing after) never makes an element. */
    const char *lt = strrchr(t->html, '<');
    if (rc == 0 && lt != NULL && strchr(lt, '>') == NULL) {
        int line = t->html_line;
        for (const char *p = t->html; p < lt; p++)
            line += *p == '\n';
        rc = ll_err(err, errlen, LL_EINVAL, "%s:%d: unclosed tag (no '>')", t->path, line);
    }
    if (rc == 0)
        t->plan = make_plan(t, out);
    gumbo_destroy_output(&kGumboDefaultOptions, out);
    return rc;
}

int ll__tpl_load(const char *path, const ll_config_t *conf, ll_tpl_t **out, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "rb");
    *out = NULL;
    if (fp == NULL)
        return ll_err(err, errlen, LL_EIO, "%s: cannot open: %s", path, strerror(errno));
    ll_tpl_t *t = ll_calloc(1, sizeof(*t));
    t->path = ll_strdup(path);
    ll_buf_t part[3]; /* subject, html, text */
    for (int i = 0; i < 3; i++)
        ll_buf_init(&part[i], LL_TPL_MAX);
    char line[8192];
    int lineno = 0, cur = -1, rc = 0, subject_line = 1;
    while (fgets(line, sizeof(line), fp) != NULL) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof(line) - 1 && line[n - 1] != '\n') {
            rc = ll_err(err, errlen, LL_ETOOBIG, "%s:%d: line longer than %zu bytes", path, lineno, sizeof(line) - 2);
            goto out;
        }
        if (!ll_utf8_valid(line, n)) {
            rc = ll_err(err, errlen, LL_EINVAL, "%s:%d: not UTF-8", path, lineno);
            goto out;
        }
        char *trim = line;
        while (n > 0 && (trim[n - 1] == '\n' || trim[n - 1] == '\r'))
            trim[--n] = '\0';
        if (strncmp(trim, "--- ", 4) == 0) {
            if (strcmp(trim + 4, "html") == 0)
                cur = 1, t->html_line = lineno + 1;
            else if (strcmp(trim + 4, "text") == 0)
                cur = 2, t->text_line = lineno + 1;
            else {
                rc = ll_err(err, errlen, LL_EINVAL, "%s:%d: unknown section '%s' (--- html or --- text)", path, lineno,
                            trim + 4);
                goto out;
            }
            if (part[cur].len != 0) {
                rc = ll_err(err, errlen, LL_EINVAL, "%s:%d: section '%s' appears twice", path, lineno, trim + 4);
                goto out;
            }
            continue;
        }
        if (cur < 0) {
            if (n == 0 || trim[0] == '#')
                continue;
            if (strncasecmp(trim, "Subject:", 8) != 0 || part[0].len != 0) {
                rc = ll_err(err, errlen, LL_EINVAL, "%s:%d: expected 'Subject: ...' and then '--- html' or '--- text'",
                            path, lineno);
                goto out;
            }
            const char *s = trim + 8;
            while (*s == ' ')
                s++;
            for (const char *p = s; *p != '\0'; p++)
                if ((unsigned char)*p < 0x20) {
                    rc = ll_err(err, errlen, LL_EINVAL, "%s:%d: control character in the subject", path, lineno);
                    goto out;
                }
            if (ll_buf_appends(&part[0], s) != 0 || part[0].len > 900) {
                rc = ll_err(err, errlen, LL_ETOOBIG, "%s:%d: subject too long", path, lineno);
                goto out;
            }
            subject_line = lineno;
            continue;
        }
        if (ll_buf_append(&part[cur], trim, n) != 0 || ll_buf_append(&part[cur], "\n", 1) != 0) {
            rc = ll_err(err, errlen, LL_ETOOBIG, "%s:%d: the part is larger than %d bytes", path, lineno, LL_TPL_MAX);
            goto out;
        }
    }
    if (ferror(fp)) {
        rc = ll_err(err, errlen, LL_EIO, "%s: read error", path);
        goto out;
    }
    if (part[0].len == 0) {
        rc = ll_err(err, errlen, LL_EINVAL, "%s:1: no 'Subject:' line", path);
        goto out;
    }
    if (part[1].len == 0 && part[2].len == 0) {
        rc = ll_err(err, errlen, LL_EINVAL, "%s:%d: no '--- html' or '--- text' part", path, lineno);
        goto out;
    }
    t->subject = ll_strdup(part[0].data);
    t->html = ll_strdup(part[1].len ? part[1].data : "");
    t->text = ll_strdup(part[2].len ? part[2].data : "");
    if (part[1].len == 0)
        t->html_line = 0;
    if ((rc = check_placeholders(t, conf, t->subject, subject_line, err, errlen)) != 0 ||
        (rc = check_placeholders(t, conf, t->html, t->html_line, err, errlen)) != 0 ||
        (rc = check_placeholders(t, conf, t->text, t->text_line, err, errlen)) != 0)
        goto out;
    if (part[1].len != 0 && (rc = check_html(t, err, errlen)) != 0)
        goto out;
out:
    for (int i = 0; i < 3; i++)
        ll_buf_free(&part[i]);
    fclose(fp);
    if (rc != 0)
        ll__tpl_free(t);
    else
        *out = t;
    return rc;
}

/* ---- rendering ---- */

static int append_html_escaped(ll_buf_t *b, const char *s, size_t n)
{
    int rc = 0;
    size_t from = 0; /* the run of characters that need no escape, appended at once */
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *e;
        switch (s[i]) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&quot;"; break;
        case '\'': e = "&#39;"; break;
        case '\0': e = ""; break; /* a NUL in a value would end the part where it lands */
        default: continue;
        }
        if ((rc = ll_buf_append(b, s + from, i - from)) == 0)
            rc = ll_buf_appends(b, e);
        from = i + 1;
    }
    return rc == 0 ? ll_buf_append(b, s + from, n - from) : rc;
}

/* Substitutes placeholders. mode 0: text, 1: HTML (escaped), 2: a header (controls dropped). */
/* Where profile values landed in a substituted part: a URL that starts inside one came from a
 * contact (a form anyone can fill in), not from the template's author, and is never signed
 * into a click link (that would make the edge redirect to wherever a stranger typed). */
typedef struct {
    struct {
        size_t from, to;
    } v[128];
    size_t n;
    int overflow; /* more values than v holds: no URL is signed after the last recorded one */
} spans_t;

static int in_span(const spans_t *sp, size_t off)
{
    if (sp == NULL)
        return 0;
    for (size_t i = 0; i < sp->n; i++)
        if (off >= sp->v[i].from && off < sp->v[i].to)
            return 1;
    return sp->overflow && sp->n > 0 && off >= sp->v[sp->n - 1].to;
}

/* The next placeholder in [p, end): its "{{" and "}}", or NULL. */
static const char *next_placeholder(const char *p, const char *end, const char **close)
{
    const char *open = memmem(p, (size_t)(end - p), "{{", 2);
    *close = open ? memmem(open + 2, (size_t)(end - open - 2), "}}", 2) : NULL;
    return *close != NULL ? open : NULL;
}

/* Substitutes the placeholders of s[0, n). */
static int substitute_n(const char *s, size_t n, ll_render_t *r, json_t *fields, int mode, ll_buf_t *out,
                        spans_t *sp)
{
    int rc = 0;
    const char *end = s + n;
    for (const char *p = s; p < end && rc == 0;) {
        const char *close, *open = next_placeholder(p, end, &close);
        if (open == NULL) {
            rc = ll_buf_append(out, p, (size_t)(end - p));
            break;
        }
        if ((rc = ll_buf_append(out, p, (size_t)(open - p))) != 0)
            break;
        ph_t ph;
        ph_split(open + 2, (size_t)(close - open - 2), &ph);
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)ph.name_len, ph.name);
        const char *v = NULL;
        char num[64];
        size_t vl = 0;
        if (strcmp(name, "email") == 0) {
            v = r->email;
        } else if (strcmp(name, "unsubscribe_url") == 0) {
            v = r->unsub_url;
        } else {
            json_t *j = json_object_get(fields, name);
            if (json_is_string(j))
                v = json_string_value(j), vl = json_string_length(j);
            else if (json_is_integer(j) || json_is_real(j)) {
                if (json_is_integer(j))
                    snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(j));
                else
                    snprintf(num, sizeof(num), "%g", json_real_value(j));
                v = num;
            }
        }
        if (v != NULL && vl == 0)
            vl = strlen(v);
        int from_contact = v != NULL && vl > 0 && v != r->unsub_url;
        if (v == NULL || vl == 0)
            v = ph.fallback, vl = ph.fallback_len;
        size_t start = out->len;
        if (mode == 1) {
            rc = append_html_escaped(out, v, vl);
        } else if (mode == 2) {
            for (size_t i = 0; i < vl && rc == 0; i++)
                rc = (unsigned char)v[i] < 0x20 ? ll_buf_append(out, " ", 1) : ll_buf_append(out, v + i, 1);
        } else {
            for (size_t i = 0, k; i < vl && rc == 0; i += k + 1) { /* without NULs, as above */
                k = strnlen(v + i, vl - i);
                rc = ll_buf_append(out, v + i, k);
            }
        }
        if (from_contact && sp != NULL) {
            if (sp->n < sizeof(sp->v) / sizeof(sp->v[0]))
                sp->v[sp->n].from = start, sp->v[sp->n++].to = out->len;
            else
                sp->overflow = 1;
        }
        p = close + 2;
    }
    return rc;
}

static int substitute(const char *s, ll_render_t *r, json_t *fields, int mode, ll_buf_t *out, spans_t *sp)
{
    return substitute_n(s, strlen(s), r, fields, mode, out, sp);
}

/* The signed click URL for dest; 0, or LL_EINVAL when dest cannot be signed (left as is). */
static int click_url(ll_render_t *r, const char *dest, size_t n, uint32_t link, const char *tag, ll_buf_t *out)
{
    ll_token_t tok;
    char b64[LL_TOKEN_B64_MAX];
    if (n > LL_TOKEN_URL_MAX || ll_url_check_destination(dest, n) != 0)
        return LL_EINVAL;
    memset(&tok, 0, sizeof(tok));
    tok.kind = LL_TOK_CLICK;
    tok.send = r->send;
    tok.contact = r->contact;
    tok.link = link;
    memcpy(tok.url, dest, n);
    tok.url[n] = '\0';
    tok.url_len = n;
    if (tag != NULL)
        snprintf(tok.link_tag, sizeof(tok.link_tag), "%s", tag);
    if (ll_token_sign(r->keys, &tok, b64, sizeof(b64)) != 0)
        return LL_EINVAL;
    return ll_buf_printf(out, "%s/c/%s", r->public_url, b64);
}

/* Our own URLs (unsubscribe, already signed) are never wrapped. */
static int is_own(ll_render_t *r, const char *url, size_t n)
{
    size_t pl = strlen(r->public_url);
    return n > pl + 3 && memcmp(url, r->public_url, pl) == 0 &&
           (memcmp(url + pl, "/u/", 3) == 0 || memcmp(url + pl, "/c/", 3) == 0 || memcmp(url + pl, "/o/", 3) == 0);
}

typedef struct {
    size_t off, len;  /* the attribute value in the source, quotes included */
    const char *value; /* decoded */
    const char *tag;   /* data-ll-tag, checked at load; NULL none */
    int from_contact;  /* the value starts inside a profile value (never signed) */
} href_t;

static void collect_hrefs(const GumboNode *n, href_t *out, size_t *nout, size_t cap, int depth)
{
    if (n->type != GUMBO_NODE_ELEMENT || depth > 400)
        return;
    const GumboElement *e = &n->v.element;
    if ((e->tag == GUMBO_TAG_A || e->tag == GUMBO_TAG_AREA) && *nout < cap) {
        GumboAttribute *a = gumbo_get_attribute(&e->attributes, "href");
        if (a != NULL && a->original_value.length > 0) {
            out[*nout].off = a->value_start.offset;
            out[*nout].len = a->original_value.length;
            out[*nout].value = a->value;
            GumboAttribute *t = gumbo_get_attribute(&e->attributes, LINK_TAG_ATTR);
            out[*nout].tag = t != NULL && ll_link_tag_check(t->value, strlen(t->value)) == 0 ? t->value : NULL;
            out[*nout].from_contact = 0;
            (*nout)++;
        }
    }
    for (unsigned i = 0; i < e->children.length; i++)
        collect_hrefs(e->children.data[i], out, nout, cap, depth + 1);
}

/* Where the honeypot goes (after <body ...>, else at the start) and the pixel (before </body>,
 * else at the end). */
static void body_bounds(const GumboOutput *g, size_t len, const href_t *h, size_t nh, size_t *start, size_t *end)
{
    const GumboVector *kids = &g->root->v.element.children;
    *start = 0, *end = len;
    for (unsigned i = 0; i < kids->length; i++) {
        const GumboNode *k = kids->data[i];
        if (k->type != GUMBO_NODE_ELEMENT || k->v.element.tag != GUMBO_TAG_BODY)
            continue;
        if (k->v.element.original_tag.length > 0)
            *start = k->v.element.start_pos.offset + k->v.element.original_tag.length;
        if (k->v.element.original_end_tag.length > 0)
            *end = k->v.element.end_pos.offset;
    }
    if (*start > len || (nh > 0 && *start > h[0].off))
        *start = 0;
}

/* Tagged HTML links, so that the text part's link to the same destination carries the tag. */
typedef struct {
    struct {
        char *url;
        char tag[LL_TOKEN_LINK_TAG_MAX + 1];
    } v[64];
    size_t n;
} tagmap_t;

/*
 * Writes the HTML part: src with each href in h signed, the honeypot after body_start and the
 * pixel at body_end. subst 0: src is already substituted; 1: src is the template's HTML and what
 * is copied of it is substituted on the way (the plan, below).
 */
static int emit_html(ll_render_t *r, const char *src, size_t len, int subst, json_t *fields, const href_t *h,
                     size_t nh, size_t body_start, size_t body_end, uint32_t *link, tagmap_t *tags, ll_buf_t *out)
{
    size_t pos = body_start;
    ll_buf_t url;
    ll_buf_init(&url, LL_TOKEN_B64_MAX + 1024);
#define COPY(from, n) (subst ? substitute_n(src + (from), (n), r, fields, 1, out, NULL) : ll_buf_append(out, src + (from), (n)))
    /* The honeypot (judge.h): a link no person sees, first in the body, where a scanner that
     * follows every link finds it; its click marks the message's burst as a machine's. */
    int rc = COPY(0, body_start);
    if (rc == 0 && click_url(r, r->public_url, strlen(r->public_url), LL_LINK_HONEYPOT, NULL, &url) == 0)
        rc = ll_buf_printf(out, "<a href=\"%s\" style=\"display:none;font-size:0;line-height:0;max-height:0;"
                                "overflow:hidden;mso-hide:all\" aria-hidden=\"true\" tabindex=\"-1\"></a>",
                           url.data);
    for (size_t i = 0; i < nh && rc == 0; i++) {
        const char *v = h[i].value;
        size_t vl = v != NULL ? strlen(v) : 0;
        if (v == NULL || h[i].off < pos || h[i].off + h[i].len > len || is_own(r, v, vl) || h[i].from_contact)
            continue;
        ll_buf_reset(&url);
        if (click_url(r, v, vl, *link, h[i].tag, &url) != 0)
            continue; /* mailto:, tel:, #anchors stay as they are */
        if (h[i].tag != NULL && tags->n < sizeof(tags->v) / sizeof(tags->v[0])) {
            tags->v[tags->n].url = ll_strdup(v);
            snprintf(tags->v[tags->n++].tag, sizeof(tags->v[0].tag), "%s", h[i].tag);
        }
        (*link)++;
        rc = COPY(pos, h[i].off - pos);
        if (rc == 0)
            rc = ll_buf_printf(out, "\"%s\"", url.data); /* base64url and the base URL need no escaping */
        pos = h[i].off + h[i].len;
    }
    if (rc == 0 && body_end >= pos)
        rc = COPY(pos, body_end - pos), pos = body_end;
    if (rc == 0)
        rc = ll_buf_printf(out, "<img src=\"%s\" width=\"1\" height=\"1\" alt=\"\" style=\"border:0\">", r->pixel_url);
    if (rc == 0)
        rc = COPY(pos, len - pos);
#undef COPY
    ll_buf_free(&url);
    return rc;
}

/* The HTML part parsed per message (a template without a plan). */
static int rewrite_html(ll_render_t *r, const char *src, const spans_t *sp, uint32_t *link, tagmap_t *tags,
                        ll_buf_t *out)
{
    size_t len = strlen(src), nh = 0, body_start, body_end;
    href_t *h = ll_calloc(MAX_LINKS, sizeof(*h));
    GumboOutput *g = gumbo_parse_with_options(&kGumboDefaultOptions, src, len);
    collect_hrefs(g->root, h, &nh, MAX_LINKS, 0);
    for (size_t i = 0; i < nh; i++)
        h[i].from_contact = in_span(sp, h[i].off) || in_span(sp, h[i].off + 1);
    body_bounds(g, len, h, nh, &body_start, &body_end);
    int rc = emit_html(r, src, len, 0, NULL, h, nh, body_start, body_end, link, tags, out);
    gumbo_destroy_output(&kGumboDefaultOptions, g);
    free(h);
    return rc;
}

/*
 * The plan: the HTML part's links and body taken from one parse of the template at load.
 * Parsing every message's HTML was a third of the mailer's instructions (BENCHMARKS.md).
 * Substituted values are HTML-escaped, so they never make or end markup; where they land
 * decides whether they can change what the parser builds. When every placeholder of the HTML
 * sits in a quoted attribute value (not of <input>, whose type moves it in a table), or in text
 * whose parent element is <title> or was opened by its own tag inside <body> (not a table's
 * rows or sections, where text is moved, nor foreign content), every message parses into the
 * same links, in the same order, and the same body: their offsets in the template are kept,
 * and rendering copies the template, substituting on the way. An href with a placeholder inside
 * is substituted and decoded per message. Any other template is parsed per message.
 * tests/fuzz/fuzz_template.c checks that both ways render the same bytes.
 */
struct st_ll_tpl_plan_t {
    href_t *h;      /* value and tag owned (NULL value: a placeholder inside) */
    size_t nh;
    size_t body_start, body_end;
};

static void plan_free(struct st_ll_tpl_plan_t *pl)
{
    if (pl == NULL)
        return;
    for (size_t i = 0; i < pl->nh; i++) {
        free((char *)pl->h[i].value);
        free((char *)pl->h[i].tag);
    }
    free(pl->h);
    free(pl);
}

typedef struct {
    size_t from, to;
} range_t;

typedef struct {
    const char *src;
    range_t v[1024];
    size_t n;
    int over;
} ranges_t;

static void add_range(ranges_t *rs, size_t from, size_t len)
{
    if (rs->n == sizeof(rs->v) / sizeof(rs->v[0]))
        rs->over = 1;
    else
        rs->v[rs->n].from = from, rs->v[rs->n++].to = from + len;
}

/* Text under parent cannot change the tree, whatever a placeholder in it becomes (above). */
static int text_stays(const GumboElement *parent, int in_body)
{
    if (parent->tag_namespace != GUMBO_NAMESPACE_HTML)
        return 0;
    if (parent->tag == GUMBO_TAG_TITLE)
        return 1;
    if (!in_body || parent->original_tag.length == 0)
        return 0;
    switch (parent->tag) {
    case GUMBO_TAG_TABLE: case GUMBO_TAG_TBODY: case GUMBO_TAG_THEAD: case GUMBO_TAG_TFOOT: case GUMBO_TAG_TR:
    case GUMBO_TAG_COLGROUP: case GUMBO_TAG_SELECT: case GUMBO_TAG_HTML: case GUMBO_TAG_HEAD:
    case GUMBO_TAG_FRAMESET: case GUMBO_TAG_TEMPLATE: case GUMBO_TAG_NOSCRIPT:
        return 0;
    default:
        return 1;
    }
}

/* The source ranges where a placeholder may sit for the plan to hold. */
static void safe_ranges(const GumboNode *n, int in_body, ranges_t *rs, int depth)
{
    if (n->type != GUMBO_NODE_ELEMENT || depth > 400)
        return;
    const GumboElement *e = &n->v.element;
    in_body |= e->tag == GUMBO_TAG_BODY;
    for (unsigned i = 0; i < e->attributes.length && e->tag != GUMBO_TAG_INPUT; i++) {
        const GumboAttribute *a = e->attributes.data[i];
        const GumboStringPiece *ov = &a->original_value;
        if (ov->length >= 2 && (ov->data[0] == '"' || ov->data[0] == '\'') && ov->data >= rs->src &&
            (size_t)(ov->data - rs->src) == a->value_start.offset)
            add_range(rs, a->value_start.offset, ov->length);
    }
    for (unsigned i = 0; i < e->children.length; i++) {
        const GumboNode *c = e->children.data[i];
        if ((c->type == GUMBO_NODE_TEXT || c->type == GUMBO_NODE_WHITESPACE) && text_stays(e, in_body))
            add_range(rs, c->v.text.start_pos.offset, c->v.text.original_text.length);
        safe_ranges(c, in_body, rs, depth + 1);
    }
}

/* The plan of t's HTML part from its parse g, or NULL when a placeholder sits where it could
 * change the parse. */
static struct st_ll_tpl_plan_t *make_plan(const ll_tpl_t *t, const GumboOutput *g)
{
    const char *src = t->html, *end = src + strlen(src), *close;
    ranges_t *rs = ll_calloc(1, sizeof(*rs));
    rs->src = src;
    safe_ranges(g->root, 0, rs, 0);
    int ok = !rs->over;
    size_t nph = 0;
    for (const char *p = src, *open; ok && (open = next_placeholder(p, end, &close)) != NULL; p = close + 2) {
        size_t from = (size_t)(open - src), to = (size_t)(close + 2 - src), i;
        for (i = 0; i < rs->n && !(rs->v[i].from <= from && to <= rs->v[i].to); i++)
            ;
        /* Inside a safe range, and few enough that an href's spans never overflow (spans_t). */
        ok = i < rs->n && ++nph <= sizeof(((spans_t *)0)->v) / sizeof(((spans_t *)0)->v[0]);
    }
    struct st_ll_tpl_plan_t *pl = NULL;
    if (ok) {
        pl = ll_calloc(1, sizeof(*pl));
        pl->h = ll_calloc(MAX_LINKS, sizeof(*pl->h));
        collect_hrefs(g->root, pl->h, &pl->nh, MAX_LINKS, 0);
        body_bounds(g, (size_t)(end - src), pl->h, pl->nh, &pl->body_start, &pl->body_end);
        for (size_t i = 0; i < pl->nh; i++) {
            href_t *h = &pl->h[i];
            int inside = h->off + h->len <= (size_t)(end - src) && memmem(src + h->off, h->len, "{{", 2) != NULL;
            h->value = inside ? NULL : ll_strdup(h->value); /* out of the source: skipped, as when parsed */
            h->tag = h->tag != NULL ? ll_strdup(h->tag) : NULL;
        }
    }
    free(rs);
    return pl;
}

/* A quoted attribute value as the parser decodes it (character references, NUL, CR). */
static char *attr_value(const char *quoted, size_t n)
{
    if (n < 2)
        return NULL;
    if (memchr(quoted, '&', n) == NULL && memchr(quoted, '\r', n) == NULL && memchr(quoted, '\0', n) == NULL)
        return ll_strndup(quoted + 1, n - 2);
    ll_buf_t b;
    ll_buf_init(&b, n + 16);
    char *v = NULL;
    if (ll_buf_appends(&b, "<a href=") == 0 && ll_buf_append(&b, quoted, n) == 0 && ll_buf_appends(&b, ">") == 0) {
        GumboOutput *g = gumbo_parse_with_options(&kGumboDefaultOptions, b.data, b.len);
        href_t h;
        size_t nh = 0;
        collect_hrefs(g->root, &h, &nh, 1, 0);
        v = nh == 1 ? ll_strdup(h.value) : NULL;
        gumbo_destroy_output(&kGumboDefaultOptions, g);
    }
    ll_buf_free(&b);
    return v;
}

/* The HTML part from the plan: no parse, but of an href with a placeholder inside. */
static int render_plan(ll_render_t *r, const ll_tpl_t *t, json_t *fields, uint32_t *link, tagmap_t *tags,
                       ll_buf_t *out)
{
    const struct st_ll_tpl_plan_t *pl = t->plan;
    href_t *h = ll_calloc(pl->nh + 1, sizeof(*h));
    ll_buf_t val;
    ll_buf_init(&val, LL_TPL_MAX);
    int rc = 0;
    for (size_t i = 0; i < pl->nh && rc == 0; i++) {
        h[i] = pl->h[i];
        if (h[i].value != NULL)
            continue;
        spans_t sp = {.n = 0};
        ll_buf_reset(&val);
        if ((rc = substitute_n(t->html + h[i].off, h[i].len, r, fields, 1, &val, &sp)) == 0) {
            h[i].value = attr_value(val.data, val.len);
            h[i].from_contact = in_span(&sp, 0) || in_span(&sp, 1);
        }
    }
    if (rc == 0)
        rc = emit_html(r, t->html, strlen(t->html), 1, fields, h, pl->nh, pl->body_start, pl->body_end, link, tags,
                       out);
    for (size_t i = 0; i < pl->nh; i++)
        if (pl->h[i].value == NULL)
            free((char *)h[i].value);
    ll_buf_free(&val);
    free(h);
    return rc;
}

static int url_char(unsigned char c)
{
    return c > 0x20 && c != 0x7f && c != '<' && c != '>' && c != '"' && c != '\'' && c != '`' && c != '\\';
}

static int rewrite_text(ll_render_t *r, const char *src, const spans_t *sp, uint32_t *link, const tagmap_t *tags,
                        ll_buf_t *out)
{
    int rc = 0;
    const char *p = src;
    ll_buf_t url;
    ll_buf_init(&url, LL_TOKEN_B64_MAX + 1024);
    while (rc == 0 && *p != '\0') {
        const char *a = strstr(p, "http"), *s;
        if (a == NULL || (strncmp(a, "http://", 7) != 0 && strncmp(a, "https://", 8) != 0) ||
            (a > src && (isalnum((unsigned char)a[-1])))) {
            size_t n = a == NULL ? strlen(p) : (size_t)(a - p) + 4;
            rc = ll_buf_append(out, p, n);
            p += n;
            continue;
        }
        for (s = a; url_char((unsigned char)*s); s++)
            ;
        /* Sentence punctuation and a closing bracket after a URL are not part of it. */
        while (s > a && strchr(".,;:!?)]", s[-1]) != NULL)
            s--;
        size_t n = (size_t)(s - a);
        if ((rc = ll_buf_append(out, p, (size_t)(a - p))) != 0)
            break;
        ll_buf_reset(&url);
        const char *tag = NULL;
        for (size_t i = 0; i < tags->n && tag == NULL; i++)
            if (strlen(tags->v[i].url) == n && memcmp(tags->v[i].url, a, n) == 0)
                tag = tags->v[i].tag;
        if (!is_own(r, a, n) && !in_span(sp, (size_t)(a - src)) && click_url(r, a, n, *link, tag, &url) == 0) {
            (*link)++;
            rc = ll_buf_append(out, url.data, url.len);
        } else {
            rc = ll_buf_append(out, a, n);
        }
        p = s;
    }
    ll_buf_free(&url);
    return rc;
}

int ll__tpl_render(const ll_tpl_t *t, ll_render_t *r, char **subject, char **html, char **text)
{
    json_t *fields = r->fields;
    ll_buf_t b[5];
    int rc;
    uint32_t link = 1;
    tagmap_t *tags = ll_calloc(1, sizeof(*tags));
    for (int i = 0; i < 5; i++)
        ll_buf_init(&b[i], LL_TPL_MAX * 2);
    *subject = *html = *text = NULL;
    spans_t *sp = ll_calloc(2, sizeof(*sp)); /* [0] the HTML part, [1] the text part */
    if ((rc = substitute(t->subject, r, fields, 2, &b[0], NULL)) == 0 &&
        (rc = substitute(t->text, r, fields, 0, &b[2], &sp[1])) == 0 && t->html[0] != '\0') {
        if (t->plan != NULL)
            rc = render_plan(r, t, fields, &link, tags, &b[3]);
        else if ((rc = substitute(t->html, r, fields, 1, &b[1], &sp[0])) == 0)
            rc = rewrite_html(r, b[1].data, &sp[0], &link, tags, &b[3]);
    }
    if (rc == 0 && t->text[0] != '\0')
        rc = rewrite_text(r, b[2].data, &sp[1], &link, tags, &b[4]);
    free(sp);
    if (rc != 0)
        goto out;
    *subject = ll_strdup(b[0].data ? b[0].data : "");
    *html = ll_strdup(b[3].data ? b[3].data : "");
    *text = ll_strdup(b[4].data ? b[4].data : "");
out:
    for (int i = 0; i < 5; i++)
        ll_buf_free(&b[i]);
    for (size_t i = 0; i < tags->n; i++)
        free(tags->v[i].url);
    free(tags);
    return rc;
}
