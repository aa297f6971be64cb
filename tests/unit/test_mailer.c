/*
 * The mailer's pure parts: the program configuration (delays, windows, conditions, errors with
 * file and line), templates (checks and rendering with signed links), quoted-printable and
 * the message headers, and the nurture state in a real LMDB environment.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/stat.h>
#include "leadloop/judge.h"
#include "../../mailer/template.c"
#include "../../mailer/mime.c"
#include "../../mailer/dkim.c"
#include "../../mailer/marks.c"
#include "leadloop/program.h"
#include "test.h"

static char path[64], err[512];

static int load(ll_config_t *c, const char *text)
{
    strcpy(path, "/tmp/ll-test-mailer-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        return -100;
    close(fd);
    ll_config_defaults(c);
    err[0] = '\0';
    int rc = ll_config_load(c, path, err, sizeof(err));
    unlink(path);
    return rc;
}

static int fails_at(const char *text, int line, const char *key)
{
    ll_config_t c;
    int rc = load(&c, text);
    ll_config_free(&c);
    char want[128];
    snprintf(want, sizeof(want), "%s:%d: key '%s'", path, line, key);
    if (rc == 0 || strstr(err, want) == NULL) {
        fprintf(stderr, "  wanted an error with \"%s\", got rc %d: %s\n", want, rc, err);
        return 0;
    }
    return 1;
}

static void test_program_config(void)
{
    ll_config_t c;
    int rc = load(&c, "smtp:\n  host: mx.example.com\n  port: 2525\n  starttls: required\n"
                      "mailer:\n  from: News@Example.com\n  connections: 4\n  rate_per_hour: 100\n"
                      "programs:\n"
                      "  p1:\n"
                      "    steps:\n"
                      "      - template: a.tpl\n"
                      "      - {template: b.tpl, delay: 90m, if: {not_clicked: 1}}\n"
                      "      - {template: c.tpl, delay: 2 months, after: enrolment, if: {field: country, equals: FR}}\n"
                      "      - {template: d.tpl, delay: 3 days, if: {score_below: 40}}\n"
                      "    window: {hours: '9-12,14-17', days: mon-fri, tz_field: tz, tz: Europe/Paris}\n"
                      "    exit: [form:demo, sales_ready, unsubscribed]\n"
                      "    reentry: true\n"
                      "enroll_rules:\n  - {form: contact, program: p1}\n  - {field: stage, equals: lead, program: p1}\n");
    if (rc != 0)
        fprintf(stderr, "  %s\n", err);
    CHECK_EQ_INT(rc, 0);
    ll_mail_conf_t *m = c.mail;
    CHECK_EQ_STR(m->smtp_host, "mx.example.com");
    CHECK_EQ_INT(m->smtp_port, 2525);
    CHECK_EQ_INT(m->smtp_starttls, 2);
    CHECK_EQ_STR(m->from, "news@example.com");
    CHECK_EQ_INT(m->connections, 4);
    CHECK_EQ_INT(m->num_programs, 1);
    const ll_program_t *p = ll_mail_program(m, "p1");
    CHECK(p != NULL && ll_mail_program(m, "p2") == NULL);
    if (p != NULL) {
        CHECK_EQ_INT(p->num_steps, 4);
        CHECK_EQ_INT(p->steps[1].delay_s, 5400);
        CHECK_EQ_INT(p->steps[1].cond, LL_COND_NOT_CLICKED);
        CHECK_EQ_INT(p->steps[2].delay_months, 2);
        CHECK_EQ_INT(p->steps[2].after_enrolment, 1);
        CHECK_EQ_INT(p->steps[2].cond, LL_COND_FIELD_EQ);
        CHECK_EQ_INT(p->steps[3].cond, LL_COND_SCORE_BELOW);
        CHECK_EQ_INT(p->window_hours, 0x3de00); /* 9-12 and 14-17 */
        CHECK_EQ_INT(p->window_days, 0x3e);      /* Monday to Friday */
        CHECK_EQ_STR(p->window_tz, "Europe/Paris");
        CHECK_EQ_STR(p->exit_form, "demo");
        CHECK_EQ_INT(p->exit_sales_ready, 1);
        CHECK_EQ_INT(p->reentry, 1);
        /* Delays: step 2 after step 1; step 3 two calendar months after enrolment (31 Jan -> 31 Mar). */
        uint64_t jan31 = 1800000000ULL * 1000000 + 0; /* 2027-01-15T08:00Z */
        CHECK_EQ_INT(ll_program_step_due(p, 1, jan31, jan31 + 10), jan31 + 10 + 5400ULL * 1000000);
        uint64_t e = 1801728000ULL * 1000000; /* 2027-02-04T08:00Z: a 4th stays a 4th */
        CHECK_EQ_INT(ll_program_step_due(p, 2, e, 0), (1801728000ULL + (28 + 31) * 86400ULL) * 1000000);
    }
    CHECK_EQ_INT(m->num_rules, 2);
    ll_config_free(&c);
}

static void test_program_config_errors(void)
{
    CHECK(fails_at("programs:\n  p:\n    steps:\n      - delay: 1 day\n", 4, "steps"));
    CHECK(fails_at("programs:\n  p:\n    steps:\n      - {template: a, delay: soon}\n", 4, "delay"));
    CHECK(fails_at("programs:\n  p:\n    steps:\n      - {template: a, if: {not_clicked: 1}}\n", 4, "if"));
    CHECK(fails_at("programs:\n  p:\n    steps: [{template: a}]\n    window: {hours: 9-25}\n", 4, "hours"));
    CHECK(fails_at("programs:\n  p:\n    steps: [{template: a}]\n    exit: [whenever]\n", 4, "exit"));
    CHECK(fails_at("programs:\n  p:\n    steps: [{template: a}]\n    colour: blue\n", 4, "colour"));
    CHECK(fails_at("programs:\n  \"bad id\":\n    steps: [{template: a}]\n", 2, "programs"));
    CHECK(fails_at("smtp:\n  port: 0\n", 2, "port"));
    CHECK(fails_at("mailer:\n  from: nobody\n", 2, "from"));
    CHECK(fails_at("enroll_rules:\n  - {program: p}\n", 2, "enroll_rules"));
}

static int write_file(const char *p, const char *text)
{
    FILE *f = fopen(p, "w");
    if (f == NULL)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int tpl_fails(const char *text, const char *want)
{
    ll_config_t c;
    ll_tpl_t *t;
    char p[] = "/tmp/ll-test-tpl-XXXXXX";
    int fd = mkstemp(p);
    close(fd);
    write_file(p, text);
    ll_config_defaults(&c);
    int rc = ll__tpl_load(p, &c, &t, err, sizeof(err));
    ll_config_free(&c);
    unlink(p);
    char full[128];
    snprintf(full, sizeof(full), "%s:%s", p, want);
    if (rc == 0 || strstr(err, full) == NULL) {
        fprintf(stderr, "  wanted \"%s\", got rc %d: %s\n", full, rc, err);
        ll__tpl_free(rc == 0 ? t : NULL);
        return 0;
    }
    return 1;
}

static void test_template_errors(void)
{
    CHECK(tpl_fails("--- text\nhi\n", "1: no 'Subject:' line"));
    CHECK(tpl_fails("Subject: x\n", "1: no '--- html' or '--- text' part"));
    CHECK(tpl_fails("# c\nSubject: {{nick}}\n--- html\n<p>x</p>\n", "2: unknown field 'nick'")); /* not the html's line */
    CHECK(tpl_fails("Subject: {{shoe_size}}\n--- text\nx\n", "1: unknown field 'shoe_size'"));
    CHECK(tpl_fails("Subject: x\n--- text\na\nb {{name\n", "4: unclosed placeholder"));
    CHECK(tpl_fails("Subject: x\n--- html\n<p>a</p>\n<div><b>x</b>\n\n", "4: unclosed tag <div>"));
    CHECK(tpl_fails("Subject: x\n--- html\n<p>a</p>\n<a href=\"https://x.example/\"\n", "4: unclosed tag"));
    CHECK(tpl_fails("Subject: x\n--- pdf\n", "2: unknown section"));
    CHECK(tpl_fails("Subject: x\n--- text\n{{}}\n", "3: empty placeholder"));
    CHECK(tpl_fails("Subject: x\n--- html\n<p>a</p>\n<a href=\"https://x.example/\" data-ll-tag=\"Big Deal\">x</a>\n",
                    "4: data-ll-tag \"Big Deal\": a link tag is"));
    char many[300 * 40 + 64];
    size_t o = (size_t)snprintf(many, sizeof(many), "Subject: x\n--- html\n");
    for (int i = 0; i < 257; i++)
        o += (size_t)snprintf(many + o, sizeof(many) - o, "<a href=\"https://x.example/%d\">l</a>\n", i);
    CHECK(tpl_fails(many, "3: the HTML part has 257 links; a message signs at most 256"));
}

/* A template file rendered for send 7, contact 9, with fields_json, through a fresh key ring. */
typedef struct {
    ll_keyring_t *keys;
    char *subject, *html, *text;
    int planned; /* the template had a plan (template.c); its rendering was checked against a parse */
} rendered_t;

static int render_file(const char *tpl, const char *fields_json, rendered_t *out)
{
    ll_config_t c;
    ll_tpl_t *t = NULL;
    char p[] = "/tmp/ll-test-tpl-XXXXXX", kp[] = "/tmp/ll-test-keys-XXXXXX";
    int rc = -1;
    memset(out, 0, sizeof(*out));
    close(mkstemp(p));
    close(mkstemp(kp));
    unlink(kp);
    write_file(p, tpl);
    ll_config_defaults(&c);
    CHECK_EQ_INT(ll__tpl_load(p, &c, &t, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll_keyring_open(kp, &out->keys, err, sizeof(err)), 0);
    json_t *fields = json_loads(fields_json, 0, NULL);
    CHECK(fields != NULL);
    ll_render_t r = {.keys = out->keys, .public_url = "https://e.example", .send = 7, .contact = 9,
                     .email = "ann@example.com", .fields = fields};
    snprintf(r.unsub_url, sizeof(r.unsub_url), "https://e.example/u/TOKEN");
    snprintf(r.pixel_url, sizeof(r.pixel_url), "https://e.example/o/PIX.gif");
    if (t != NULL && out->keys != NULL)
        rc = ll__tpl_render(t, &r, &out->subject, &out->html, &out->text);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0 && t->plan != NULL) {
        /* The plan renders exactly what a parse of each message does. Tokens carry the second
         * they were signed in: when one passed in between, the plan renders again. */
        struct st_ll_tpl_plan_t *plan = t->plan;
        char *s2, *h2, *t2;
        out->planned = 1;
        t->plan = NULL;
        CHECK_EQ_INT(ll__tpl_render(t, &r, &s2, &h2, &t2), 0);
        t->plan = plan;
        if (strcmp(out->html, h2) != 0 || strcmp(out->text, t2) != 0) {
            free(out->subject), free(out->html), free(out->text);
            CHECK_EQ_INT(ll__tpl_render(t, &r, &out->subject, &out->html, &out->text), 0);
        }
        CHECK_EQ_STR(out->subject, s2);
        CHECK_EQ_STR(out->html, h2);
        CHECK_EQ_STR(out->text, t2);
        free(s2), free(h2), free(t2);
    }
    ll__tpl_free(t);
    ll_config_free(&c);
    json_decref(fields);
    unlink(p);
    unlink(kp);
    return rc;
}

static void rendered_free(rendered_t *o)
{
    ll_keyring_free(o->keys);
    free(o->subject);
    free(o->html);
    free(o->text);
}

static void test_render(void)
{
    rendered_t o;
    if (render_file("Subject: Hi {{first_name|there}}\n"
                    "--- html\n<html><body><p>Hi {{first_name|there}} &amp; {{company}}</p>\n"
                    "<a href=\"https://a.example/x?a=1&amp;b=2\" data-ll-tag=\"pricing\">A</a> <a href=mailto:x@y.example>M</a>\n"
                    "<a href='{{unsubscribe_url}}'>U</a></body></html>\n"
                    "--- text\nHi {{first_name}}: https://a.example/x?a=1&b=2, (https://b.example/y).\n",
                    "{\"first_name\":\"<Ann>\",\"company\":\"A&B\"}", &o) == 0) {
        const char *subject = o.subject, *html = o.html, *text = o.text;
        ll_keyring_t *keys = o.keys;
        CHECK_EQ_STR(subject, "Hi <Ann>");
        CHECK(strstr(html, "Hi &lt;Ann&gt; &amp; A&amp;B") != NULL);
        CHECK(strstr(html, "a.example") == NULL);      /* the link is signed, its URL inside the token */
        CHECK(strstr(html, "href=mailto:x@y.example") != NULL);
        CHECK(strstr(html, "href='https://e.example/u/TOKEN'") != NULL);
        CHECK(strstr(html, "<img src=\"https://e.example/o/PIX.gif\"") < strstr(html, "</body>"));
        /* The honeypot first in the body: hidden, signed, with its own link index. */
        const char *hp = strstr(html, "<body><a href=\"https://e.example/c/");
        CHECK(hp != NULL && strstr(html, "aria-hidden=\"true\" tabindex=\"-1\"></a>") != NULL);
        if (hp != NULL) {
            const char *tok = hp + strlen("<body><a href=\"https://e.example/c/");
            ll_token_t v;
            CHECK_EQ_INT(ll_token_verify(keys, LL_TOK_CLICK, tok, strcspn(tok, "\""), &v), 0);
            CHECK_EQ_INT(v.link, LL_LINK_HONEYPOT);
            CHECK_EQ_STR(v.url, "https://e.example");
        }
        const char *c1 = hp != NULL ? strstr(hp + 10, "href=\"https://e.example/c/") : NULL;
        CHECK(c1 != NULL);
        if (c1 != NULL) {
            const char *tok = c1 + strlen("href=\"https://e.example/c/");
            size_t n = strcspn(tok, "\"");
            ll_token_t v;
            CHECK_EQ_INT(ll_token_verify(keys, LL_TOK_CLICK, tok, n, &v), 0);
            CHECK_EQ_STR(v.url, "https://a.example/x?a=1&b=2"); /* the entity decoded by the parser */
            CHECK_EQ_INT(v.send, 7);
            CHECK_EQ_INT(v.contact, 9);
            CHECK_EQ_INT(v.link, 1);
            CHECK_EQ_STR(v.link_tag, "pricing");
        }
        CHECK(strncmp(text, "Hi <Ann>: https://e.example/c/", 30) == 0);
        /* The text part's link to the same destination carries the same tag; the other none. */
        for (int i = 0; i < 2; i++) {
            const char *tok = strstr(text, "https://e.example/c/");
            for (int j = 0; j < i && tok != NULL; j++)
                tok = strstr(tok + 1, "https://e.example/c/");
            ll_token_t v;
            CHECK(tok != NULL);
            if (tok == NULL)
                break;
            tok += strlen("https://e.example/c/");
            CHECK_EQ_INT(ll_token_verify(keys, LL_TOK_CLICK, tok, strcspn(tok, ",)"), &v), 0);
            CHECK_EQ_STR(v.link_tag, i == 0 ? "pricing" : "");
        }
        CHECK(strstr(text, ", (https://e.example/c/") != NULL && strstr(text, ").\n") != NULL);
        CHECK(strstr(text, "b.example") == NULL);
    }
    rendered_free(&o);
}

/* A URL typed into a form (a profile value) is never signed into a click link: the edge would
 * redirect anyone to it under its own name. The author's links still are. */
static void test_profile_urls_are_not_signed(void)
{
    rendered_t o;
    if (render_file("Subject: x\n--- html\n<p>{{company}}</p> <a href=\"{{title}}\">t</a> "
                    "<a href=\"https://a.example/?c={{company}}\">ok</a>\n"
                    "--- text\nSee {{company}} and https://a.example/ok\n",
                    "{\"company\":\"https://evil.example/x\",\"title\":\"https://evil.example/t\"}", &o) == 0) {
        CHECK(strstr(o.text, "See https://evil.example/x and https://e.example/c/") != NULL);
        CHECK(strstr(o.html, "href=\"https://evil.example/t\"") != NULL);
        /* the author's link with a value in its query is signed: honeypot + that one */
        size_t signed_links = 0;
        for (const char *q = o.html; (q = strstr(q, "https://e.example/c/")) != NULL; q++)
            signed_links++;
        CHECK_EQ_INT(signed_links, 2);
    }
    rendered_free(&o);
}

/* Which templates get a plan (template.c), and that it renders what a parse of each message
 * does (render_file compares the two) whatever the values: empty, text, markup, URLs. */
static void test_plan(void)
{
    static const struct {
        const char *html;
        int planned;
    } cases[] = {
        {"<html><head><title>{{company}}</title></head><body style=\"x\"><p>Hi {{first_name|there}},</p>"
         "<a href=\"https://a.example/?c={{company}}&amp;x=1\" title=\"{{company}}\">a</a>"
         "<table><tr><td>{{company}} <a href='{{unsubscribe_url}}'>u</a></td></tr></table>"
         "<a href=\"{{title}}\">t</a> <a href=\"https://b.example/\" data-ll-tag=\"b\">b</a></body></html>", 1},
        {"<p>{{first_name}}</p><a href=\"https://a.example/\">a</a>", 1},       /* no <body> tag */
        {"<div><b>{{first_name}}</b><a href=https://a.example/>a</a></div>", 1},  /* an unquoted static href */
        {"<body>{{first_name}}<a href=\"https://a.example/\">a</a></body>", 1},   /* text in an explicit body */
        {"{{first_name}}<a href=\"https://a.example/\">a</a>", 0},               /* text that opens the body */
        {"<html><head></head>{{first_name}}<body><a href=\"https://a.example/\">a</a></body></html>", 0},
        {"<table>{{first_name}}<tr><td><a href=\"https://a.example/\">a</a></td></tr></table>", 0},
        {"<a href={{title}}>t</a><a href=\"https://a.example/\">a</a>", 0},     /* unquoted attribute */
        {"<body><input type=\"{{title}}\"><a href=\"https://a.example/\">a</a></body>", 0},
        {"<body><svg><text>{{first_name}}</text></svg><a href=\"https://a.example/\">a</a></body>", 0},
    };
    static const char *const values[] = {
        "{}",
        "{\"first_name\":\"Ann\",\"company\":\"A&B <x-inject a=\\\"1\\\">\",\"title\":\"https://evil.example/t\"}",
        "{\"first_name\":\" \",\"company\":\"\",\"title\":\"mailto:x@y.example\"}",
        "{\"first_name\":\"x\",\"company\":\"https://evil.example/?a=1&b=2\",\"title\":\"&amp;https://a.example/\"}",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
            char tpl[2048];
            rendered_t o;
            snprintf(tpl, sizeof(tpl), "Subject: x\n--- html\n%s\n--- text\nhttps://a.example/\n", cases[i].html);
            render_file(tpl, values[v], &o);
            if (o.planned != cases[i].planned)
                fprintf(stderr, "  case %zu: planned %d, wanted %d\n", i, o.planned, cases[i].planned);
            CHECK_EQ_INT(o.planned, cases[i].planned);
            rendered_free(&o);
        }
    /* More placeholders than a part's spans hold: parsed per message. */
    char many[8192];
    size_t n = (size_t)snprintf(many, sizeof(many), "Subject: x\n--- html\n<body><p>");
    for (int i = 0; i < 129; i++)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "{{first_name}}");
    snprintf(many + n, sizeof(many) - n, "</p></body>\n");
    rendered_t o;
    render_file(many, "{}", &o);
    CHECK_EQ_INT(o.planned, 0);
    rendered_free(&o);
}

static void test_qp_and_headers(void)
{
    ll_buf_t b;
    ll_buf_init(&b, 1 << 16);
    ll__mime_qp("caf\xc3\xa9 = ok \n.dot\ntrailing \n", 27, &b);
    CHECK_EQ_STR(b.data, "caf=C3=A9 =3D ok=20\r\n=2Edot\r\ntrailing=20\r\n");
    ll_buf_reset(&b);
    char longline[200];
    memset(longline, 'x', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    ll__mime_qp(longline, strlen(longline), &b);
    for (char *line = b.data, *nl; (nl = strstr(line, "\r\n")) != NULL; line = nl + 2)
        CHECK(nl - line <= 76);
    ll_buf_reset(&b);
    ll_mime_in_t in = {"news@example.com", "Caf\xc3\xa9 News", "ann@example.com", "Hello \xe2\x80\x94 caf\xc3\xa9",
                       "<p>x</p>", "x", "https://e.example/u/T", "unsub@example.com", "T", 42, 1800000000ULL * 1000000};
    CHECK_EQ_INT(ll__mime_build(&in, &b), 0);
    CHECK(strstr(b.data, "Subject: =?UTF-8?B?SGVsbG8g4oCUIGNhZsOp?=\r\n") != NULL);
    CHECK(strstr(b.data, "From: =?UTF-8?B?Q2Fmw6kgTmV3cw==?= <news@example.com>\r\n") != NULL);
    CHECK(strstr(b.data, "Date: Fri, 15 Jan 2027 08:00:00 +0000\r\n") != NULL);
    CHECK(strstr(b.data, "List-Unsubscribe: <https://e.example/u/T>, <mailto:unsub@example.com?subject=unsubscribe%20T>\r\n") != NULL);
    CHECK(strstr(b.data, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n") != NULL);
    CHECK(strstr(b.data, "Message-ID: <ll.42.") != NULL);
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] == '\n')
            CHECK(i > 0 && b.data[i - 1] == '\r');
    ll_buf_free(&b);
}

/* Quoted-printable, checked as a reader would: decoding gives back the text (line ends as CRLF),
 * and no line is longer than 76, starts with ".", ends with a blank or holds a byte outside
 * printable ASCII. Random texts of the bytes that matter, and the cases at a line's room. */
static int qp_hex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void check_qp(const char *in, size_t n)
{
    ll_buf_t b, want;
    ll_buf_init(&b, 1 << 16);
    ll_buf_init(&want, 1 << 16);
    CHECK_EQ_INT(ll__mime_qp(in, n, &b), 0);
    for (size_t i = 0; i < n; i++)
        if (!(in[i] == '\r' && i + 1 < n && in[i + 1] == '\n'))
            ll_buf_append(&want, in + i, 1);
    if (want.len == 0 || want.data[want.len - 1] != '\n')
        ll_buf_append(&want, "\n", 1);
    char *got = malloc(b.len + 1);
    size_t g = 0, col = 0;
    int ok = 1;
    for (size_t i = 0; i < b.len && ok; i++) {
        char c = b.data[i];
        if (c == '\r') {
            ok = i + 1 < b.len && b.data[i + 1] == '\n' && col <= 76 &&
                 (col == 0 || (b.data[i - 1] != ' ' && b.data[i - 1] != '\t'));
            got[g++] = '\n', col = 0, i++;
            continue;
        }
        ok = (c >= 32 && c <= 126) || c == '\t';
        if (col == 0 && c == '.')
            ok = 0;
        col++;
        if (c == '=' && ok) {
            if (i + 2 < b.len && b.data[i + 1] == '\r' && b.data[i + 2] == '\n') {
                ok = col <= 76;
                i += 2, col = 0;
            } else if (i + 2 < b.len && qp_hex(b.data[i + 1]) >= 0 && qp_hex(b.data[i + 2]) >= 0) {
                got[g++] = (char)(qp_hex(b.data[i + 1]) << 4 | qp_hex(b.data[i + 2]));
                i += 2, col += 2;
            } else {
                ok = 0;
            }
        } else {
            got[g++] = c;
        }
    }
    CHECK(ok);
    CHECK(g == want.len && memcmp(got, want.data, g) == 0);
    if (!ok || g != want.len || memcmp(got, want.data, g) != 0)
        fprintf(stderr, "  qp of %zu bytes gave:\n%s\n", n, b.data);
    free(got);
    ll_buf_free(&b);
    ll_buf_free(&want);
}

static void test_qp_round_trip(void)
{
    static const char alphabet[] = "ab .=\t\n\r\xc3\xa9-";
    char text[400];
    unsigned x = 12345;
    for (int t = 0; t < 3000; t++) {
        size_t n = (size_t)t % sizeof(text);
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            /* mostly letters, so lines reach their room */
            text[i] = (x >> 16) % 3 ? 'x' : alphabet[(x >> 8) % (sizeof(alphabet) - 1)];
        }
        check_qp(text, n);
    }
    /* At the room: a "." that a soft break puts first, blanks and "=" around the 75th column. */
    char line[200];
    for (size_t k = 70; k < 80; k++)
        for (const char *tail = ".y\0 \n\0 y\0=y\0\t\0.\0"; *tail != '\0'; tail += strlen(tail) + 1) {
            memset(line, 'x', k);
            snprintf(line + k, sizeof(line) - k, "%s", tail);
            check_qp(line, strlen(line));
        }
}

/* Makes a 2048-bit key at dir/name.pem and appends its record for sel._domainkey.example.com to
 * the key records file (libopendkim's test query method reads it). */
static void make_dkim_key(const char *dir, const char *name, const char *sel, const char *records, char *key,
                          size_t keylen)
{
    char cmd[512], pub[2048] = "";
    snprintf(key, keylen, "%s/%s.pem", dir, name);
    snprintf(cmd, sizeof(cmd), "openssl genrsa -out %s 2048 2>/dev/null && openssl rsa -in %s -pubout -outform DER "
                               "2>/dev/null | base64 -w0", key, key);
    FILE *pp = popen(cmd, "r");
    CHECK(pp != NULL && fgets(pub, sizeof(pub), pp) != NULL);
    if (pp != NULL)
        pclose(pp);
    FILE *kf = fopen(records, "a");
    fprintf(kf, "%s._domainkey.example.com v=DKIM1; k=rsa; p=%s\n", sel, pub);
    fclose(kf);
}

/* libopendkim's verdict on a signed message, the keys taken from the records file. */
static DKIM_STAT dkim_verdict(const char *records, const ll_buf_t *b)
{
    DKIM_LIB *lib = dkim_init(NULL, NULL);
    int qm = DKIM_QUERY_FILE;
    DKIM_STAT st;
    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_QUERYMETHOD, &qm, sizeof(qm));
    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_QUERYINFO, (void *)records, strlen(records));
    DKIM *v = dkim_verify(lib, (const unsigned char *)"v", NULL, &st);
    if (v != NULL) {
        dkim_chunk(v, (unsigned char *)b->data, b->len);
        dkim_chunk(v, NULL, 0);
        st = dkim_eom(v, NULL);
        dkim_free(v);
    } else {
        st = DKIM_STAT_INTERNAL;
    }
    dkim_close(lib);
    return st;
}

/* A message to ann@example.com whose text says body, signed by d. */
static int signed_message(ll_dkim_t *d, const char *body, ll_buf_t *b)
{
    ll_buf_init(b, 1 << 20);
    ll_mime_in_t in = {"news@example.com", NULL, "ann@example.com", "Hello", "<p>Hi <a href=\"x\">there</a></p>",
                       body, "https://e.example/u/T", "news@example.com", "T", 7, 1800000000ULL * 1000000};
    int rc = ll__mime_build(&in, b);
    return rc != 0 ? rc : ll__dkim_sign(d, 7, b);
}

/* Signs a message, then verifies it with libopendkim against a key record from a file (its
 * test query method), and checks that a changed body fails. */
static void test_dkim(void)
{
    char dir[] = "/tmp/ll-test-dkim-XXXXXX", cmd[512], key[128], keys[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(keys, sizeof(keys), "%s/keys.txt", dir);
    make_dkim_key(dir, "key", "sel", keys, key, sizeof(key));

    ll_dkim_t *d = NULL;
    CHECK_EQ_INT(ll__dkim_open("/nonexistent/key.pem", "sel", "example.com", &d, err, sizeof(err)), LL_EIO);
    CHECK_EQ_INT(ll__dkim_open(key, "sel", "example.com", &d, err, sizeof(err)), 0);
    if (d == NULL)
        return;
    ll_buf_t b;
    CHECK_EQ_INT(signed_message(d, "Hi there", &b), 0);
    CHECK(strncmp(b.data, "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel;", 73) == 0);
    for (size_t i = 0; i < b.len; i++)
        if (b.data[i] == '\n')
            CHECK(i > 0 && b.data[i - 1] == '\r');
    CHECK_EQ_INT(dkim_verdict(keys, &b), DKIM_STAT_OK);
    char *hi = strstr(b.data, "Hi there");
    CHECK(hi != NULL);
    if (hi != NULL)
        hi[0] = 'h';
    CHECK(dkim_verdict(keys, &b) != DKIM_STAT_OK);
    ll_buf_free(&b);
    ll__dkim_free(d);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_EQ_INT(system(cmd), 0);
}

typedef struct {
    ll_dkim_t *d;
    const char *records;
    int bad;
} dkim_worker_t;

static void *dkim_worker(void *arg)
{
    dkim_worker_t *w = arg;
    for (int i = 0; i < 8; i++) {
        ll_buf_t b;
        char body[64];
        snprintf(body, sizeof(body), "message %d of %p", i, (void *)w);
        if (signed_message(w->d, body, &b) != 0 || dkim_verdict(w->records, &b) != DKIM_STAT_OK)
            w->bad++;
        ll_buf_free(&b);
    }
    return NULL;
}

/* The key parsed once (dkim.c): each handle's signatures use its own key, from one thread or
 * several at once, and libopendkim gets the parsed key instead of decoding the PEM again. */
static void test_dkim_kept_key(void)
{
    char dir[] = "/tmp/ll-test-dkim-XXXXXX", cmd[512], key1[128], key2[128], keys[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(keys, sizeof(keys), "%s/keys.txt", dir);
    make_dkim_key(dir, "one", "one", keys, key1, sizeof(key1));
    make_dkim_key(dir, "two", "two", keys, key2, sizeof(key2));
    ll_dkim_t *d1 = NULL, *d2 = NULL;
    CHECK_EQ_INT(ll__dkim_open(key1, "one", "example.com", &d1, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll__dkim_open(key2, "two", "example.com", &d2, err, sizeof(err)), 0);
    if (d1 == NULL || d2 == NULL)
        return;

    size_t hits = ll__dkim_key_hits();
    ll_buf_t b;
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(signed_message(i ? d2 : d1, "Hi there", &b), 0);
        CHECK(strstr(b.data, i ? "s=two;" : "s=one;") != NULL);
        CHECK_EQ_INT(dkim_verdict(keys, &b), DKIM_STAT_OK);
        ll_buf_free(&b);
    }
    CHECK_EQ_INT(ll__dkim_key_hits(), hits + 2);

    dkim_worker_t w[4];
    pthread_t tid[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (dkim_worker_t){i % 2 ? d2 : d1, keys, 0};
        CHECK(pthread_create(&tid[i], NULL, dkim_worker, &w[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(tid[i], NULL);
        CHECK_EQ_INT(w[i].bad, 0);
    }
    CHECK_EQ_INT(ll__dkim_key_hits(), hits + 2 + 32);

    /* The text of an open handle's key gets its parsed key; once the handle is freed, the text
     * is decoded again (and other texts always are). */
    BIO *bio = BIO_new_mem_buf(d1->key, (int)d1->keylen);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    CHECK(k == d1->pkey);
    EVP_PKEY_free(k);
    BIO_free(bio);
    ll_buf_t text = {0};
    ll_buf_init(&text, 64 * 1024);
    ll_buf_append(&text, d1->key, d1->keylen);
    ll__dkim_free(d1);
    hits = ll__dkim_key_hits();
    bio = BIO_new_mem_buf(text.data, (int)text.len);
    k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    CHECK(k != NULL && k != d2->pkey);
    CHECK_EQ_INT(ll__dkim_key_hits(), hits);
    EVP_PKEY_free(k);
    BIO_free(bio);
    ll_buf_free(&text);
    ll__dkim_free(d2);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_EQ_INT(system(cmd), 0);
}

static void test_nurture_state(void)
{
    char dir[] = "/tmp/ll-test-nurture-XXXXXX";
    ll_store_t *s;
    ll_nurture_t n;
    ll_txn_t t;
    ll_config_t c;
    CHECK(mkdtemp(dir) != NULL);
    CHECK_EQ_INT(ll_store_open(dir, 0, LL_STORE_NOSYNC, &s, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll_nurture_open(s, &n), 0);
    CHECK_EQ_INT(load(&c, "programs:\n  p:\n    steps:\n      - {template: a, delay: 1h}\n      - {template: b, delay: 1d}\n"), 0);
    const ll_program_t *p = ll_mail_program(c.mail, "p");
    uint64_t id, id2, now = 1800000000ULL * 1000000;
    int created;
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll_contact_upsert(&t, "a@example.com", NULL, &id, &created), 0);
    CHECK_EQ_INT(ll_contact_upsert(&t, "b@example.com", NULL, &id2, &created), 0);
    CHECK_EQ_INT(ll_nurture_enroll(&n, &t, id, p, now), 0);
    CHECK_EQ_INT(ll_nurture_enroll(&n, &t, id, p, now), LL_EEXIST);
    CHECK_EQ_INT(ll_nurture_enroll(&n, &t, id2, p, now + 10), 0);
    ll_enrollment_t e;
    CHECK_EQ_INT(ll_enrollment_get(&n, &t, id, "p", &e), 0);
    CHECK_EQ_INT(e.state, LL_ENR_ACTIVE);
    CHECK_EQ_INT(e.next_us, now + 3600ULL * 1000000);
    /* Opt-outs leave every program. */
    CHECK_EQ_INT(ll_nurture_exit_all(&n, &t, id2, LL_EXIT_UNSUBSCRIBED), 0);
    CHECK_EQ_INT(ll_enrollment_get(&n, &t, id2, "p", &e), 0);
    CHECK_EQ_INT(e.state, LL_ENR_EXITED);
    CHECK_EQ_INT(e.exit_reason, LL_EXIT_UNSUBSCRIBED);
    CHECK_EQ_INT(ll_nurture_exit(&n, &t, id2, "p", LL_EXIT_UNENROLLED), LL_ENOTFOUND);
    /* Sends: ids increase; rows round-trip. */
    ll_send_t row = {0}, back;
    CHECK_EQ_INT(ll_send_next_id(&n, &t, &row.id), 0);
    CHECK_EQ_INT(row.id, 1);
    row.state = LL_SEND_COMMITTED, row.contact = id, row.step = 1, row.accepted_us = 5;
    strcpy(row.program, "p");
    CHECK_EQ_INT(ll_send_put(&n, &t, &row), 0);
    CHECK_EQ_INT(ll_send_next_id(&n, &t, &row.id), 0);
    CHECK_EQ_INT(row.id, 2);
    CHECK_EQ_INT(ll_send_get(&n, &t, 1, &back), 0);
    CHECK_EQ_INT(back.state, LL_SEND_COMMITTED);
    CHECK_EQ_STR(back.program, "p");
    CHECK_EQ_INT(back.accepted_us, 5);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    ll_config_free(&c);
    ll_store_close(s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_EQ_INT(system(cmd), 0);
}

static int send_state(ll_store_t *s, ll_nurture_t *n, uint64_t id)
{
    ll_txn_t t;
    ll_send_t row = {0};
    if (ll_txn_begin(s, 1, &t) != 0 || ll_send_get(n, &t, id, &row) != 0)
        row.state = -1;
    ll_txn_abort(&t);
    return (int)row.state;
}

static size_t apply_marks(ll_store_t *s, ll_marks_t *j, uint64_t pass, int keep)
{
    ll_txn_t t;
    size_t moved = 99;
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    CHECK_EQ_INT(ll__marks_apply(j, &t, pass, &moved), 0);
    if (keep)
        CHECK_EQ_INT(ll_txn_commit(&t), 0);
    ll_txn_abort(&t);
    return moved;
}

/* Sends first .. first + count - 1 in INTENT, as a claim leaves them. */
static void put_intents(ll_store_t *s, ll_nurture_t *n, uint64_t first, uint64_t count)
{
    ll_txn_t t;
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    for (uint64_t id = first; id < first + count; id++) {
        ll_send_t row = {.id = id, .state = LL_SEND_INTENT, .contact = 1};
        strcpy(row.program, "p");
        CHECK_EQ_INT(ll_send_put(n, &t, &row), 0);
    }
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
}

/* One mark made durable, as a session does at its "." without having queued it. */
static int mark1(ll_marks_t *j, uint64_t id)
{
    ll_mark_t *mk = ll__mark_new(j);
    int rc = ll__mark_finish(mk, id);
    ll__mark_free(mk);
    return rc;
}

typedef struct {
    ll_marks_t *j;
    uint64_t first;
    int n, rc;
} marks_arg_t;

/* A session: each message's mark queued when the one before is done, waited for at its ".";
 * every seventh message refused on the way (its mark queued, never waited for). */
static void *session_thread(void *arg)
{
    marks_arg_t *a = arg;
    ll_mark_t *mk = ll__mark_new(a->j);
    ll__mark_start(mk, a->first);
    for (int i = 0; i < a->n && a->rc == 0; i++) {
        if (i % 7 != 3)
            a->rc = ll__mark_finish(mk, a->first + (uint64_t)i);
        if (i + 1 < a->n)
            ll__mark_start(mk, a->first + (uint64_t)i + 1);
    }
    ll__mark_free(mk);
    return NULL;
}

/* THREADS sessions of EACH marks over pass from first: every mark ends in LMDB or the files;
 * those of refused messages too when queued early (with the marks thread). */
static void sessions_side_by_side(ll_store_t *s, ll_nurture_t *n, ll_marks_t *j, uint64_t pass, uint64_t first,
                                  int early)
{
    enum { THREADS = 6, EACH = 300 };
    put_intents(s, n, first, THREADS * EACH);
    ll__marks_begin(j, pass);
    marks_arg_t args[THREADS];
    pthread_t tids[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (marks_arg_t){j, first + (uint64_t)i * EACH, EACH, 0};
        CHECK(pthread_create(&tids[i], NULL, session_thread, &args[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(tids[i], NULL);
        CHECK_EQ_INT(args[i].rc, 0);
    }
    size_t in_lmdb = 0, marked = 0;
    for (uint64_t id = first; id < first + THREADS * EACH; id++) {
        in_lmdb += send_state(s, n, id) == LL_SEND_COMMITTED;
        marked += early || (id - first) % EACH % 7 != 3;
    }
    /* A block holds a mark of each session at most, so EACH > LL_MARKS_BLOCKS made a checkpoint. */
    CHECK(in_lmdb >= LL_MARKS_BLOCKS);
    CHECK_EQ_INT(apply_marks(s, j, pass, 1), marked - in_lmdb);
    for (uint64_t id = first; id < first + THREADS * EACH; id++)
        CHECK_EQ_INT(send_state(s, n, id),
                     early || (id - first) % EACH % 7 != 3 ? LL_SEND_COMMITTED : LL_SEND_INTENT);
}

/* The end-of-DATA marks journal (marks.c): what a restart applies, and what it must not. */
static void test_marks(void)
{
    char dir[] = "/tmp/ll-test-marks-XXXXXX", file[64], fpath[80];
    ll_store_t *s;
    ll_nurture_t n;
    ll_txn_t t;
    ll_marks_t *j;
    struct stat st;
    CHECK(mkdtemp(dir) != NULL);
    snprintf(file, sizeof(file), "%s/mailer.marks.0", dir);
    CHECK_EQ_INT(ll_store_open(dir, 0, LL_STORE_NOSYNC, &s, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll_nurture_open(s, &n), 0);
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    for (uint64_t id = 1; id <= 4; id++) {
        ll_send_t row = {.id = id, .state = id == 4 ? LL_SEND_ACCEPTED : LL_SEND_INTENT, .contact = 1};
        strcpy(row.program, "p");
        CHECK_EQ_INT(ll_send_put(&n, &t, &row), 0);
    }
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    CHECK_EQ_INT(ll__marks_open(dir, &n, s, &j, err, sizeof(err)), 0);
    for (int f = 0; f < FILES; f++) { /* the blocks over eight files */
        snprintf(fpath, sizeof(fpath), "%s/mailer.marks.%d", dir, f);
        CHECK(stat(fpath, &st) == 0 && st.st_size == FILE_BLOCKS * 4096);
    }
    CHECK_EQ_INT(ll__marks_made(j), 1);

    /* Pass 7 marks 1 and 4: only pass 7 applies them, and only to a row still in INTENT. */
    ll__marks_begin(j, 7);
    CHECK_EQ_INT(ll__marks_made(j), 0); /* from here on the file holds this process's marks */
    CHECK_EQ_INT(mark1(j, 1), 0);
    CHECK_EQ_INT(mark1(j, 4), 0);
    CHECK_EQ_INT(apply_marks(s, j, 6, 0), 0);
    CHECK_EQ_INT(apply_marks(s, j, 8, 0), 0);
    CHECK_EQ_INT(apply_marks(s, j, 7, 1), 1);
    CHECK_EQ_INT(send_state(s, &n, 1), LL_SEND_COMMITTED);
    CHECK_EQ_INT(send_state(s, &n, 4), LL_SEND_ACCEPTED);
    CHECK_EQ_INT(send_state(s, &n, 2), LL_SEND_INTENT);

    /* A block that does not check out (torn, or not ours) is ignored; the next one counts. */
    CHECK_EQ_INT(mark1(j, 2), 0); /* block 2: the first of the third file */
    snprintf(fpath, sizeof(fpath), "%s/mailer.marks.2", dir);
    int fd = open(fpath, O_RDWR);
    CHECK(fd >= 0 && pwrite(fd, "\3", 1, 27) == 1); /* its one id, now 3 */
    CHECK_EQ_INT(apply_marks(s, j, 7, 0), 0);
    CHECK(pwrite(fd, "\2", 1, 27) == 1);
    CHECK_EQ_INT(apply_marks(s, j, 7, 0), 1);
    close(fd);

    /* A pass that fills the file puts its marks into LMDB (a checkpoint) and starts over. */
    ll__marks_begin(j, 9);
    for (size_t i = 0; i < LL_MARKS_BLOCKS; i++)
        CHECK_EQ_INT(mark1(j, i == 0 ? 2 : 3), 0);
    CHECK_EQ_INT(send_state(s, &n, 2), LL_SEND_INTENT); /* still only in the file */
    CHECK_EQ_INT(mark1(j, 3), 0);
    CHECK_EQ_INT(send_state(s, &n, 2), LL_SEND_COMMITTED);
    CHECK_EQ_INT(send_state(s, &n, 3), LL_SEND_COMMITTED);
    CHECK_EQ_INT(j->next, 0);

    /* A block holds the marks of several sessions; one whose count is past what a block holds,
     * or whose sum fails, is ignored. */
    put_intents(s, &n, 20, 3);
    ll__marks_begin(j, 13);
    uint64_t three[] = {20, 21, 22};
    pthread_mutex_lock(&j->mu);
    CHECK_EQ_INT(write_marks(j, three, 3), 0);
    pthread_mutex_unlock(&j->mu);
    CHECK_EQ_INT(apply_marks(s, j, 13, 0), 3);
    fd = open(file, O_RDWR);
    CHECK(fd >= 0 && pwrite(fd, "\x02", 1, 18) == 1); /* n = 3 + 512 */
    CHECK_EQ_INT(apply_marks(s, j, 13, 0), 0);
    CHECK(pwrite(fd, "\0", 1, 18) == 1 && pwrite(fd, "\2", 1, 19) == 1); /* n = 2: the sum no longer covers it */
    CHECK_EQ_INT(apply_marks(s, j, 13, 0), 0);
    close(fd);

    /* Sessions side by side, through checkpoints, with the marks thread and without it (each
     * session then writes its own). */
    sessions_side_by_side(s, &n, j, 10, 100, 1);
    CHECK_EQ_INT(j->thread, 1);
    ll__marks_close(j);
    CHECK_EQ_INT(ll__marks_open(dir, &n, s, &j, err, sizeof(err)), 0);
    j->thread = -1;
    sessions_side_by_side(s, &n, j, 14, 10000, 0);

    /* Files that refuse the write: the mark goes into LMDB at once instead, from the marks
     * thread and from a session writing its own. */
    put_intents(s, &n, 30, 2);
    for (int f = 0; f < FILES; f++) {
        snprintf(fpath, sizeof(fpath), "%s/mailer.marks.%d", dir, f);
        close(j->fd[f]);
        CHECK((j->fd[f] = open(fpath, O_RDONLY)) >= 0);
    }
    ll__marks_begin(j, 15);
    CHECK_EQ_INT(mark1(j, 30), 0);
    CHECK_EQ_INT(send_state(s, &n, 30), LL_SEND_COMMITTED);
    j->thread = 0;
    CHECK_EQ_INT(mark1(j, 31), 0);
    CHECK_EQ_INT(j->thread, 1);
    CHECK_EQ_INT(send_state(s, &n, 31), LL_SEND_COMMITTED);
    ll__marks_close(j);

    /* Reopened, the file keeps its marks; cut short, it is made anew, empty. */
    CHECK_EQ_INT(ll__marks_open(dir, &n, s, &j, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll__marks_made(j), 0);
    ll__marks_close(j);
    CHECK(truncate(file, 4096) == 0);
    CHECK_EQ_INT(ll__marks_open(dir, &n, s, &j, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll__marks_made(j), 1);
    CHECK(stat(file, &st) == 0 && st.st_size == FILE_BLOCKS * 4096);
    CHECK_EQ_INT(apply_marks(s, j, 9, 0), 0);
    ll__marks_close(j);
    /* An unwritable directory: the error names the file. */
    CHECK_EQ_INT(ll__marks_open("/nonexistent-ll-dir", &n, s, &j, err, sizeof(err)), LL_EIO);
    CHECK(strstr(err, "/nonexistent-ll-dir/mailer.marks.0") != NULL);

    /* An older build's single file (block i at i * 4096): a restart applies its marks too, and
     * the next pass removes it; a restart after an upgrade does not count as a lost file. */
    CHECK_EQ_INT(ll_txn_begin(s, 0, &t), 0);
    ll_send_t row5 = {.id = 5, .state = LL_SEND_INTENT, .contact = 1};
    strcpy(row5.program, "p");
    CHECK_EQ_INT(ll_send_put(&n, &t, &row5), 0);
    CHECK_EQ_INT(ll_txn_commit(&t), 0);
    snprintf(fpath, sizeof(fpath), "%s/mailer.marks", dir);
    uint8_t blk[4096];
    memset(blk, 0, sizeof(blk));
    memcpy(blk, magic1, 8); /* an older build wrote one mark a block */
    ll_be64_put(blk + 8, 11);
    ll_be64_put(blk + 16, 5);
    ll_be64_put(blk + 24, block_sum(blk, 24));
    CHECK(ll_file_make_zeroed(fpath, (size_t)LL_MARKS_BLOCKS * 4096) == 0);
    fd = open(fpath, O_RDWR);
    CHECK(fd >= 0 && pwrite(fd, blk, sizeof(blk), 17 * 4096) == (ssize_t)sizeof(blk));
    close(fd);
    for (int f = 0; f < FILES; f++) {
        snprintf(fpath, sizeof(fpath), "%s/mailer.marks.%d", dir, f);
        unlink(fpath);
    }
    CHECK_EQ_INT(ll__marks_open(dir, &n, s, &j, err, sizeof(err)), 0);
    CHECK_EQ_INT(ll__marks_made(j), 0);
    CHECK_EQ_INT(apply_marks(s, j, 11, 1), 1);
    CHECK_EQ_INT(send_state(s, &n, 5), LL_SEND_COMMITTED);
    ll__marks_begin(j, 12);
    snprintf(path, sizeof(path), "%s/mailer.marks", dir);
    CHECK(stat(path, &st) != 0);
    ll__marks_close(j);

    ll_store_close(s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK_EQ_INT(system(cmd), 0);
}

int main(void)
{
    RUN(test_program_config);
    RUN(test_program_config_errors);
    RUN(test_template_errors);
    RUN(test_render);
    RUN(test_profile_urls_are_not_signed);
    RUN(test_plan);
    RUN(test_qp_and_headers);
    RUN(test_qp_round_trip);
    RUN(test_dkim);
    RUN(test_dkim_kept_key);
    RUN(test_nurture_state);
    RUN(test_marks);
    return TEST_DONE("mailer-unit");
}
