/* The YAML configuration: defaults, every key type, forms, CIDRs, and errors naming file, line and key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include "leadloop/config.h"
#include "test.h"

static char path[64], err[512];

/* Writes text to a temporary file and loads it over the defaults; the result is kept in *c. */
static int load(ll_config_t *c, const char *text)
{
    strcpy(path, "/tmp/ll-test-config-XXXXXX");
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

/* Loads text, expects a failure whose message names the file, line and key. */
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

static void test_defaults(void)
{
    ll_config_t c;
    ll_config_defaults(&c);
    CHECK_EQ_STR(c.listen, "127.0.0.1:8080");
    CHECK_EQ_STR(c.data_dir, "var");
    CHECK_EQ_STR(c.public_url, "http://127.0.0.1:8080");
    CHECK_EQ_INT(c.max_body, 65536);
    CHECK_EQ_INT(c.map_size, 1 << 30);
    CHECK_EQ_INT(c.ipv4_prefix, 24);
    CHECK_EQ_INT(c.ipv6_prefix, 48);
    CHECK(c.cookie_domain == NULL && c.tls_cert == NULL && c.http2 == 0 && c.ack == LL_ACK_AFTER_COMMIT && c.journal_kb == 32768);
    CHECK_EQ_INT(c.queued_commit_ms, 10);
    const ll_form_t *f = ll_config_form(&c, "contact", 7);
    CHECK(f != NULL);
    CHECK(ll_config_form(&c, "contac", 6) == NULL);
    if (f != NULL) {
        CHECK_EQ_STR(f->email_field, "email");
        CHECK_EQ_STR(f->honeypot, "_hp");
        CHECK(f->thank_you == NULL);
    }
    ll_config_free(&c);
}

static void test_every_type(void)
{
    ll_config_t c;
    int rc = load(&c, "# a comment\n"
                      "listen: \"[::1]:9000\"\n"
                      "public_url: https://edge.example.com/\n"
                      "threads: 4\n"
                      "http2: yes\n"
                      "max_body: 128K\n"
                      "map_size: 2 GiB\n"
                      "log_level: debug\n"
                      "ack: queued\n"
                      "queued_commit_ms: 0\n"
                      "cookie_domain: example.com\n"
                      "cookie_name: ll_v\n"
                      "trusted_proxies: [10.0.0.0/8, \"::1\", 192.168.1.7]\n"
                      "download_exts: .PDF, zip\n"
                      "honor_dnt: off\n");
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_STR(c.listen, "[::1]:9000");
    CHECK_EQ_STR(c.public_url, "https://edge.example.com"); /* trailing slash removed */
    CHECK_EQ_INT(c.threads, 4);
    CHECK_EQ_INT(c.http2, 1);
    CHECK_EQ_INT(c.max_body, 128 * 1024);
    CHECK_EQ_INT(c.map_size, 2ULL << 30);
    CHECK_EQ_INT(c.log_level, 2);
    CHECK_EQ_INT(c.ack, LL_ACK_AFTER_QUEUE);
    CHECK_EQ_INT(c.queued_commit_ms, 0);
    CHECK_EQ_STR(c.cookie_domain, "example.com");
    CHECK_EQ_STR(c.cookie_name, "ll_v");
    CHECK_EQ_INT(c.num_trusted_proxies, 3);
    CHECK_EQ_STR(c.download_exts, "PDF,zip");
    CHECK_EQ_INT(c.honor_dnt, 0);
    CHECK_EQ_INT(c.honor_gpc, 1); /* untouched default */
    CHECK_EQ_STR(c.path, path);
    ll_config_free(&c);
}

static void test_forms(void)
{
    ll_config_t c;
    int rc = load(&c, "forms:\n"
                      "  demo:\n"
                      "    fields: [name, company]\n"
                      "    email_field: work_email\n"
                      "    honeypot: \"\"\n"
                      "    thank_you: /thanks\n"
                      "  bare:\n");
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(c.num_forms, 2);
    CHECK(ll_config_form(&c, "contact", 7) == NULL); /* forms: replaces the default */
    const ll_form_t *f = ll_config_form(&c, "demo", 4);
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK_EQ_INT(f->num_fields, 3); /* the email field is always kept */
        CHECK_EQ_STR(f->fields[2], "work_email");
        CHECK_EQ_STR(f->honeypot, "");
        CHECK_EQ_STR(f->thank_you, "/thanks");
    }
    f = ll_config_form(&c, "bare", 4);
    CHECK(f != NULL && f->num_fields == 1 && strcmp(f->fields[0], "email") == 0);
    ll_config_free(&c);
}

static void test_errors_name_file_line_key(void)
{
    CHECK(fails_at("threads: 2\nlisen: 127.0.0.1:1\n", 2, "lisen"));
    CHECK(fails_at("threads: 0\n", 1, "threads"));
    CHECK(fails_at("threads: 2x\n", 1, "threads"));
    CHECK(fails_at("map_size: lots\n", 1, "map_size"));
    CHECK(fails_at("max_body: -5\n", 1, "max_body"));
    CHECK(fails_at("max_body: 1T\n", 1, "max_body"));
    CHECK(fails_at("http2: maybe\n", 1, "http2"));
    CHECK(fails_at("\nack: later\n", 2, "ack"));
    CHECK(fails_at("ack: [commit]\n", 1, "ack"));
    CHECK(fails_at("ack: journal\njournal_kb: 32\n", 2, "journal_kb"));
    CHECK(fails_at("ack: queued\nqueued_commit_ms: 1001\n", 2, "queued_commit_ms"));
    CHECK(fails_at("queued_commit_ms: -1\n", 1, "queued_commit_ms"));
    CHECK(fails_at("ipv4_prefix: 33\n", 1, "ipv4_prefix"));
    CHECK(fails_at("listen: [1, 2]\n", 1, "listen"));
    CHECK(fails_at("listen: 127.0.0.1:99999\n", 1, "listen"));
    CHECK(fails_at("listen: localhost:80\n", 1, "listen"));
    CHECK(fails_at("public_url: \"javascript:alert(1)\"\n", 1, "public_url"));
    CHECK(fails_at("public_url: \"http://a b/\"\n", 1, "public_url"));
    CHECK(fails_at("cookie_domain: \"a\\r\\nb\"\n", 1, "cookie_domain"));
    CHECK(fails_at("cookie_domain: \"example.com; Secure\"\n", 1, "cookie_domain"));
    CHECK(fails_at("cookie_name: \"\"\n", 1, "cookie_name"));
    CHECK(fails_at("cookie_name: \"a=b\"\n", 1, "cookie_name"));
    CHECK(fails_at("\n\ntrusted_proxies: [10.0.0.0/8, 300.0.0.1/8]\n", 3, "trusted_proxies"));
    CHECK(fails_at("trusted_proxies: [\"10.0.0.0/33\"]\n", 1, "trusted_proxies"));
    CHECK(fails_at("download_exts: [pdf, \"../x\"]\n", 1, "download_exts"));
    CHECK(fails_at("forms:\n  f1:\n    fieldz: [a]\n", 3, "fieldz"));
    CHECK(fails_at("forms:\n  \"bad id!\":\n    fields: [a]\n", 2, "forms"));
    CHECK(fails_at("forms:\n  f1:\n    fields: [\"a b\"]\n", 3, "fields"));
    CHECK(fails_at("forms:\n  f1:\n    thank_you: \"javascript:x\"\n", 3, "thank_you"));
    CHECK(fails_at("forms:\n  f1:\n    email_field: \"\"\n", 3, "email_field"));
    CHECK(fails_at("forms:\n  f1: {}\n  f1: {}\n", 3, "forms"));
    CHECK(fails_at("forms: [a]\n", 1, "forms"));
}

static void test_other_errors(void)
{
    ll_config_t c;
    CHECK(load(&c, "tls_cert: /x.pem\n") != 0 && strstr(err, "tls_key") != NULL);
    ll_config_free(&c);
    CHECK(load(&c, "public_url: \"unterminated\nlisten: x\n") != 0 && strstr(err, "YAML syntax error") != NULL &&
          strstr(err, path) != NULL);
    ll_config_free(&c);
    CHECK(load(&c, "- a\n- b\n") != 0 && strstr(err, "mapping") != NULL);
    ll_config_free(&c);
    CHECK_EQ_INT(load(&c, ""), 0); /* an empty file is all defaults */
    CHECK_EQ_STR(c.listen, "127.0.0.1:8080");
    ll_config_free(&c);
    ll_config_defaults(&c);
    CHECK(ll_config_load(&c, "/nonexistent/leadloop.yaml", err, sizeof(err)) != 0 &&
          strstr(err, "/nonexistent/leadloop.yaml") != NULL);
    ll_config_free(&c);
}

static void test_example_file_loads(void)
{
    ll_config_t c, d;
    ll_config_defaults(&c);
    ll_config_defaults(&d);
    int rc = ll_config_load(&c, "deploy/leadloop.example.yaml", err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "  %s\n", err);
    CHECK_EQ_INT(rc, 0);
    /* The example documents the defaults: loading it changes none of them. */
    CHECK_EQ_STR(c.listen, d.listen);
    CHECK_EQ_STR(c.public_url, d.public_url);
    CHECK_EQ_INT(c.map_size, d.map_size);
    CHECK_EQ_INT(c.max_body, d.max_body);
    CHECK_EQ_STR(c.download_exts, d.download_exts);
    CHECK_EQ_INT(c.num_forms, d.num_forms);
    CHECK_EQ_INT(c.ack, d.ack);
    CHECK_EQ_INT(c.queued_commit_ms, d.queued_commit_ms);
    CHECK_EQ_INT(c.journal_kb, d.journal_kb);
    CHECK_EQ_INT(c.forms[0].num_fields, d.forms[0].num_fields);
    ll_config_free(&c);
    ll_config_free(&d);
}

static void test_cidr(void)
{
    ll_cidr_t c;
    uint8_t a[16];
    CHECK_EQ_INT(ll_cidr_parse("10.1.0.0/16", &c), 0);
    inet_pton(AF_INET, "10.1.255.3", a);
    CHECK(ll_cidr_match(&c, AF_INET, a));
    inet_pton(AF_INET, "10.2.0.1", a);
    CHECK(!ll_cidr_match(&c, AF_INET, a));
    CHECK_EQ_INT(ll_cidr_parse("192.168.0.0/23", &c), 0);
    inet_pton(AF_INET, "192.168.1.200", a);
    CHECK(ll_cidr_match(&c, AF_INET, a));
    inet_pton(AF_INET, "192.168.2.1", a);
    CHECK(!ll_cidr_match(&c, AF_INET, a));
    CHECK_EQ_INT(ll_cidr_parse("2001:db8::/32", &c), 0);
    inet_pton(AF_INET6, "2001:db8:ffff::1", a);
    CHECK(ll_cidr_match(&c, AF_INET6, a));
    CHECK(!ll_cidr_match(&c, AF_INET, a));
    CHECK_EQ_INT(ll_cidr_parse("::1", &c), 0);
    CHECK_EQ_INT(c.bits, 128);
    CHECK_EQ_INT(ll_cidr_parse("0.0.0.0/0", &c), 0);
    inet_pton(AF_INET, "8.8.8.8", a);
    CHECK(ll_cidr_match(&c, AF_INET, a));
    const char *bad[] = {"", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/8x", "host", "::1/129",
                         "1.2.3.4.5", "10.0.0.0/8/8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(ll_cidr_parse(bad[i], &c) != 0);
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_every_type);
    RUN(test_forms);
    RUN(test_errors_name_file_line_key);
    RUN(test_other_errors);
    RUN(test_example_file_loads);
    RUN(test_cidr);
    return TEST_DONE("config");
}
