/*
 * The mailer's templates: ll__tpl_load of a file, then ll__tpl_render of what loaded.
 * Input: the template file, optionally followed by a NUL byte and a profile value that
 * becomes first_name (so that field values reach the HTML escaping and the link rewriting).
 * The file goes through a memfd, as in fuzz_config.c.
 * Properties:
 *   - a refused template says why as "PATH:LINE: ..." (the operator has to find it);
 *   - rendering a loaded template fails only on a cap (LL_ENOMEM);
 *   - the subject has no control characters (it is a mail header), every part is UTF-8;
 *   - the HTML part carries the open pixel, and a profile value never arrives as markup
 *     (company is "<x-inject ...>": it must come out escaped);
 *   - every click link the renderer wrote verifies as a click token for this send and contact
 *     and carries a destination ll_url_check_destination accepts;
 *   - a template with a plan (its HTML's links and body parsed once at load) renders the same
 *     bytes, or fails the same way, as when each message's HTML is parsed.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <jansson.h>
#include "fuzz.h"
#include "leadloop/config.h"
#include "../../mailer/template.c"

#define EDGE "https://edge.fuzz.invalid"
#define INJECT "<x-inject a=\"1\" b='2'>&"
#define SEND 77
#define CONTACT 99

static ll_keyring_t *keys;
static ll_config_t conf;
static int fd = -1;
static char path[64];

static void init(void)
{
    setenv("LEADLOOP_FAKE_TIME", "1800000000", 1); /* tokens carry the second they were signed */
    char kp[] = "/tmp/ll-fuzz-tpl-keys-XXXXXX", err[256];
    int kfd = mkstemp(kp);
    FUZZ_CHECK(kfd >= 0);
    dprintf(kfd, "1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
    close(kfd);
    FUZZ_CHECK(ll_keyring_open(kp, &keys, err, sizeof(err)) == 0);
    unlink(kp);
    ll_config_defaults(&conf);
    fd = memfd_create("ll-fuzz-template", 0);
    FUZZ_CHECK(fd >= 0);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
}

/* Every EDGE/c/TOKEN in s verifies (s was rendered from an input that never names EDGE). */
static void check_clicks(const char *s)
{
    static const char pre[] = EDGE "/c/";
    for (const char *p = strstr(s, pre); p != NULL; p = strstr(p, pre)) {
        p += sizeof(pre) - 1;
        size_t n = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
        static ll_token_t tok;
        FUZZ_CHECK(ll_token_verify(keys, LL_TOK_CLICK, p, n, &tok) == 0);
        FUZZ_CHECK(tok.send == SEND && tok.contact == CONTACT && tok.link >= 1);
        FUZZ_CHECK(ll_url_check_destination(tok.url, tok.url_len) == 0);
        p += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    if (fd < 0)
        init();
    const uint8_t *nul = memchr(data, '\0', size);
    size_t tsize = nul != NULL ? (size_t)(nul - data) : size;
    FUZZ_CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, data, tsize, 0) == (ssize_t)tsize);

    ll_tpl_t *t = NULL;
    err[0] = '\0';
    if (ll__tpl_load(path, &conf, &t, err, sizeof(err)) != 0) {
        FUZZ_CHECK(t == NULL && memchr(err, '\0', sizeof(err)) != NULL);
        FUZZ_CHECK(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':');
        return 0;
    }
    FUZZ_CHECK(t != NULL && (t->html[0] != '\0' || t->text[0] != '\0'));

    json_t *fields = json_object();
    json_object_set_new(fields, "company", json_string(INJECT));
    if (nul != NULL) {
        json_t *v = json_stringn((const char *)nul + 1, size - tsize - 1); /* NULL unless UTF-8 */
        if (v != NULL)
            json_object_set_new(fields, "first_name", v);
    }
    ll_render_t r = {.keys = keys, .public_url = EDGE, .send = SEND, .contact = CONTACT,
                     .email = "ann@example.com", .fields = fields};
    snprintf(r.unsub_url, sizeof(r.unsub_url), EDGE "/u/UNSUB");
    snprintf(r.pixel_url, sizeof(r.pixel_url), EDGE "/o/PIXEL.gif");
    char *subject = NULL, *html = NULL, *text = NULL;
    int rc = ll__tpl_render(t, &r, &subject, &html, &text);
    FUZZ_CHECK(rc == 0 || rc == LL_ENOMEM);
    if (t->plan != NULL) {
        struct st_ll_tpl_plan_t *plan = t->plan;
        char *s2 = NULL, *h2 = NULL, *t2 = NULL;
        t->plan = NULL;
        FUZZ_CHECK(ll__tpl_render(t, &r, &s2, &h2, &t2) == rc);
        t->plan = plan;
        FUZZ_CHECK(rc != 0 || (strcmp(subject, s2) == 0 && strcmp(html, h2) == 0 && strcmp(text, t2) == 0));
        free(s2), free(h2), free(t2);
    }
    if (rc == 0) {
        FUZZ_CHECK(subject != NULL && html != NULL && text != NULL);
        for (const char *p = subject; *p != '\0'; p++)
            FUZZ_CHECK((unsigned char)*p >= 0x20);
        FUZZ_CHECK(ll_utf8_valid(subject, strlen(subject)) && ll_utf8_valid(html, strlen(html)) &&
                   ll_utf8_valid(text, strlen(text)));
        if (t->html[0] != '\0')
            FUZZ_CHECK(strstr(html, "<img src=\"" EDGE "/o/PIXEL.gif\"") != NULL);
        if (strstr(t->html, "<x-inject") == NULL)
            FUZZ_CHECK(strstr(html, "<x-inject") == NULL);
        if (memmem(data, size, "edge.fuzz", 9) == NULL) { /* our own links are never wrapped */
            check_clicks(html);
            check_clicks(text);
        }
    } else {
        FUZZ_CHECK(subject == NULL && html == NULL && text == NULL);
    }
    free(subject);
    free(html);
    free(text);
    json_decref(fields);
    ll__tpl_free(t);
    return 0;
}
