/* leadloop contact add|show|list. */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "leadloop/ingest.h"
#include "cli.h"

#define FIELD_NAME_MAX 64

/* The profile as one JSON object; events < 0 leaves the event count out. */
static json_t *contact_json(const ll_contact_t *c, long long events)
{
    char created[32], updated[32];
    json_error_t jerr;
    ll__cli_iso(c->created_us, created);
    ll__cli_iso(c->updated_us, updated);
    json_t *flags = json_array();
    if (c->flags & LL_CF_UNSUBSCRIBED)
        json_array_append_new(flags, json_string("unsubscribed"));
    if (c->flags & LL_CF_BOUNCED)
        json_array_append_new(flags, json_string("bounced"));
    if (c->flags & LL_CF_DO_NOT_CONTACT)
        json_array_append_new(flags, json_string("do-not-contact"));
    json_t *fields = json_loads(c->fields_json ? c->fields_json : "{}", 0, &jerr);
    if (fields == NULL)
        fields = json_object();
    json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:o, s:o}", "id", (json_int_t)c->id, "email", c->email, "created",
                          created, "updated", updated, "flags", flags, "fields", fields);
    if (o != NULL && events >= 0)
        json_object_set_new(o, "events", json_integer(events));
    return o;
}

/* Prints a JSON value from jansson on one line; 0 or LL_CLI_FAIL. */
static int put_json(const char *cmd, json_t *o)
{
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (text == NULL)
        return ll__cli_fail(cmd, "cannot format JSON");
    fputs(text, stdout);
    free(text);
    return 0;
}

static int store_failed(ll_cli_t *cli, const char *cmd, int rc)
{
    if (rc == LL_EFULL)
        return ll__cli_fail(cmd, "%s: the store is full (raise map_size in the configuration)", cli->data_dir);
    return ll__cli_fail(cmd, "%s: cannot update the store: %s", cli->data_dir, ll_strerror(rc));
}

/* NAME=VALUE into fields; 0 or LL_CLI_FAIL naming the argument. */
static int add_field(const char *cmd, json_t *fields, const char *arg)
{
    char name[FIELD_NAME_MAX + 1];
    const char *eq = strchr(arg, '=');
    if (eq == NULL)
        return ll__cli_fail(cmd, "'%s': a field is NAME=VALUE", arg);
    size_t nl = (size_t)(eq - arg);
    if (nl == 0)
        return ll__cli_fail(cmd, "'%s': the field name is empty", arg);
    if (nl > FIELD_NAME_MAX)
        return ll__cli_fail(cmd, "'%s': the field name is longer than %d bytes", arg, FIELD_NAME_MAX);
    for (size_t i = 0; i < nl; i++) {
        char c = arg[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return ll__cli_fail(cmd, "'%s': a field name has only letters, digits, '_', '.' and '-'", arg);
    }
    memcpy(name, arg, nl);
    name[nl] = '\0';
    json_t *v = json_string(eq + 1);
    if (v == NULL)
        return ll__cli_fail(cmd, "'%s': the value is not valid UTF-8", arg);
    json_object_set_new(fields, name, v);
    return 0;
}

static int contact_add(ll_cli_t *cli, int argc, char **argv)
{
    static const char cmd[] = "contact add";
    const ll_cli_opt_t opts[] = {{NULL, 0, NULL}};
    char **pos = ll_calloc((size_t)argc + 1, sizeof(*pos));
    char email[256], *fields_text = NULL;
    json_t *fields = json_object();
    ll_buf_t rec;
    ll_txn_t t = {0};
    uint64_t id = 0;
    int npos, created = 0, rc;

    ll_buf_init(&rec, LL_EVENT_MAX);
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, argc, &npos)) != 0)
        goto out;
    if (npos < 1) {
        rc = ll__cli_usage(cmd, "missing EMAIL");
        goto out;
    }
    if ((rc = ll__cli_email(cmd, NULL, pos[0], email)) != 0)
        goto out;
    for (int i = 1; i < npos; i++)
        if ((rc = add_field(cmd, fields, pos[i])) != 0)
            goto out;
    if (json_object_size(fields) != 0) {
        fields_text = json_dumps(fields, JSON_COMPACT | JSON_PRESERVE_ORDER);
        /* The identify event carries the fields whole, or it would record a broken object. */
        if (fields_text == NULL || strlen(fields_text) > ll_event_field_limit(LL_F_FIELDS)) {
            rc = ll__cli_fail(cmd, "the fields take more than %zu bytes as JSON", ll_event_field_limit(LL_F_FIELDS));
            goto out;
        }
    }
    if ((rc = ll__cli_store(cli, cmd, 1)) != 0)
        goto out;

    if ((rc = ll_txn_begin(cli->store, 0, &t)) != 0) {
        rc = store_failed(cli, cmd, rc);
        goto out;
    }
    if ((rc = ll_contact_upsert(&t, email, fields_text, &id, &created)) != 0) {
        rc = store_failed(cli, cmd, rc);
        goto out;
    }
    ll_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = LL_EV_IDENTIFY;
    ev.cls = LL_CLASS_UNKNOWN;
    ev.time_us = ll_now_us();
    ev.contact = id;
    if (fields_text != NULL)
        ev.f[LL_F_FIELDS] = ll_str(fields_text, strlen(fields_text));
    ll_ingest_t in;
    memset(&in, 0, sizeof(in));
    if ((rc = ll_event_encode(&ev, &rec)) != 0) {
        rc = ll__cli_fail(cmd, "cannot encode the identify event: %s", ll_strerror(rc));
        goto out;
    }
    in.rec = (uint8_t *)rec.data;
    in.len = rec.len;
    if ((rc = ll_ingest(&t, &in)) != 0 || (rc = ll_txn_commit(&t)) != 0) {
        rc = store_failed(cli, cmd, rc);
        goto out;
    }
    printf("%s contact %llu %s\n", created ? "created" : "updated", (unsigned long long)id, email);
out:
    ll_txn_abort(&t);
    ll_buf_free(&rec);
    free(fields_text);
    json_decref(fields);
    free(pos);
    return rc;
}

typedef struct {
    int json;
    const char *email;
    long long n;
    ll_buf_t buf;
    int rc;
} timeline_t;

static int on_timeline(const ll_event_t *ev, void *p)
{
    timeline_t *tl = p;
    if (tl->json) {
        ll_buf_reset(&tl->buf);
        if ((tl->rc = ll_event_to_json(ev, tl->email, &tl->buf)) != 0)
            return 1;
        if (tl->n != 0)
            fputc(',', stdout);
        fwrite(tl->buf.data, 1, tl->buf.len, stdout);
    } else {
        char when[32];
        ll__cli_iso(ev->time_us, when);
        char hex[33] = "-";
        if (!ll_visitor_is_zero(&ev->visitor))
            ll_visitor_to_hex(&ev->visitor, hex);
        hex[8] = '\0'; /* enough to tell the visitors listed above apart */
        printf("  %s  %-11s %-8s %-8s ", when, ll_event_type_name(ev->type), ll_class_name(ev->cls), hex);
        ll__cli_put_event_what(stdout, ev);
        fputc('\n', stdout);
    }
    tl->n++;
    return ll__cli_out_failed();
}

/* The visitors (browsers) seen on a contact's timeline, bound to it or not. */
#define SHOW_MAX_VISITORS 64
typedef struct {
    ll_visitor_id_t v[SHOW_MAX_VISITORS];
    size_t n;
} visitors_t;

static int on_visitor(const ll_event_t *ev, void *p)
{
    visitors_t *vs = p;
    if (ll_visitor_is_zero(&ev->visitor) || vs->n == SHOW_MAX_VISITORS)
        return 0;
    for (size_t i = 0; i < vs->n; i++)
        if (memcmp(&vs->v[i], &ev->visitor, sizeof(ev->visitor)) == 0)
            return 0;
    vs->v[vs->n++] = ev->visitor;
    return 0;
}

/* Prints the visitors as text lines or as a JSON array; 0 or an LL_E* code. */
static int put_visitors(ll_txn_t *t, uint64_t contact, int json)
{
    visitors_t vs = {.n = 0};
    int rc = ll_events_of_contact(t, contact, on_visitor, &vs);
    if (rc != 0)
        return rc;
    fputs(json ? ",\"visitors\":[" : (vs.n ? "visitors\n" : "visitors\n  (none)\n"), stdout);
    for (size_t i = 0; i < vs.n; i++) {
        char hex[33], first[32] = "-", last[32] = "-";
        ll_visitor_rec_t rec = {0};
        int have = ll_visitor_get(t, &vs.v[i], &rec) == 0;
        ll_visitor_to_hex(&vs.v[i], hex);
        if (have) {
            ll__cli_iso(rec.first_us, first);
            ll__cli_iso(rec.last_us, last);
        }
        const char *state = !have || rec.contact == 0 ? "unbound" : rec.contact == contact ? "bound" : "bound elsewhere";
        if (json)
            printf("%s{\"id\":\"%s\",\"state\":\"%s\",\"first\":\"%s\",\"last\":\"%s\"}", i ? "," : "", hex, state,
                   first, last);
        else
            printf("  %s  %-15s first %s  last %s\n", hex, state, first, last);
    }
    if (json)
        fputc(']', stdout);
    return 0;
}

static void put_fields_text(const char *fields_json)
{
    json_error_t jerr;
    json_t *fields = json_loads(fields_json ? fields_json : "{}", 0, &jerr), *v;
    const char *key;
    int first = 1;
    printf("  fields   ");
    json_object_foreach(fields, key, v) {
        if (!first)
            printf("           ");
        ll__cli_put_text(stdout, key, strlen(key), 64);
        fputc('=', stdout);
        if (json_is_string(v)) {
            ll__cli_put_text(stdout, json_string_value(v), json_string_length(v), 200);
        } else {
            char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
            if (text != NULL)
                fputs(text, stdout);
            free(text);
        }
        fputc('\n', stdout);
        first = 0;
    }
    if (first)
        printf("-\n");
    json_decref(fields);
}

static int contact_show(ll_cli_t *cli, int argc, char **argv)
{
    static const char cmd[] = "contact show";
    const char *json = NULL;
    const ll_cli_opt_t opts[] = {{"--json", 0, &json}, {NULL, 0, NULL}};
    char *pos[1], email[256];
    ll_contact_t c;
    ll_txn_t t = {0};
    timeline_t tl = {0};
    uint64_t id;
    int npos, rc;

    memset(&c, 0, sizeof(c));
    ll_buf_init(&tl.buf, 1 << 20);
    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 1, &npos)) != 0)
        goto out;
    if (npos != 1) {
        rc = ll__cli_usage(cmd, "missing EMAIL");
        goto out;
    }
    if ((rc = ll__cli_email(cmd, NULL, pos[0], email)) != 0 ||
        (rc = ll__cli_contact_id(cli, cmd, NULL, email, &id)) != 0)
        goto out;
    if ((rc = ll_txn_begin(cli->store, 1, &t)) != 0 || (rc = ll_contact_get(&t, id, &c)) != 0) {
        rc = ll__cli_fail(cmd, "%s: cannot read contact %llu: %s", cli->data_dir, (unsigned long long)id,
                          ll_strerror(rc));
        goto out;
    }
    tl.json = json != NULL;
    tl.email = c.email;
    if (tl.json) {
        json_t *o = contact_json(&c, -1);
        fputs("{\"contact\":", stdout);
        rc = put_json(cmd, o);
        json_decref(o);
        if (rc != 0 || (rc = put_visitors(&t, id, 1)) != 0)
            goto out;
        fputs(",\"events\":[", stdout);
    } else {
        char created[32], updated[32], flags[64];
        ll__cli_iso(c.created_us, created);
        ll__cli_iso(c.updated_us, updated);
        ll__cli_contact_flags(c.flags, flags, sizeof(flags));
        printf("contact %llu ", (unsigned long long)c.id);
        ll__cli_put_text(stdout, c.email, strlen(c.email), sizeof(c.email));
        printf("\n  created  %s\n  updated  %s\n  flags    %s\n", created, updated, flags);
        put_fields_text(c.fields_json);
        if ((rc = put_visitors(&t, id, 0)) != 0)
            goto out;
        printf("timeline\n");
    }
    if ((rc = ll_events_of_contact(&t, id, on_timeline, &tl)) != 0 || (rc = tl.rc) != 0) {
        rc = ll__cli_fail(cmd, "%s: cannot read the timeline: %s", cli->data_dir, ll_strerror(rc));
        goto out;
    }
    if (tl.json)
        fputs("]}\n", stdout);
    else if (tl.n == 0)
        printf("  (no events)\n");
out:
    ll_txn_abort(&t);
    ll_contact_clear(&c);
    ll_buf_free(&tl.buf);
    return rc;
}

static int contact_list(ll_cli_t *cli, int argc, char **argv)
{
    static const char cmd[] = "contact list";
    const char *json = NULL;
    const ll_cli_opt_t opts[] = {{"--json", 0, &json}, {NULL, 0, NULL}};
    char *pos[1];
    ll_txn_t t = {0};
    MDB_cursor *cur = NULL, *evcur = NULL;
    MDB_val k, v;
    int npos, rc, mrc;

    if ((rc = ll__cli_parse(cmd, argc, argv, opts, pos, 0, &npos)) != 0 || (rc = ll__cli_store(cli, cmd, 0)) != 0)
        goto out;
    if ((rc = ll_txn_begin(cli->store, 1, &t)) != 0 ||
        (rc = ll_store_err(mdb_cursor_open(t.txn, ll_store_dbi(cli->store, LL_DB_CONTACTS), &cur))) != 0 ||
        (rc = ll_store_err(mdb_cursor_open(t.txn, ll_store_dbi(cli->store, LL_DB_CONTACT_EVENTS), &evcur))) != 0) {
        rc = ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, ll_strerror(rc));
        goto out;
    }
    if (json == NULL)
        printf("%-6s %-32s %-20s %7s  %s\n", "ID", "EMAIL", "CREATED", "EVENTS", "FLAGS");
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && !ll__cli_out_failed();
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        ll_contact_t c;
        if (k.mv_size != 8 || ll_contact_get(&t, ll_be64_get(k.mv_data), &c) != 0)
            continue;
        size_t events = 0;
        MDB_val ek = {8, k.mv_data}, ev;
        if (mdb_cursor_get(evcur, &ek, &ev, MDB_SET) == 0)
            mdb_cursor_count(evcur, &events);
        if (json != NULL) {
            json_t *o = contact_json(&c, (long long)events);
            rc = put_json(cmd, o);
            json_decref(o);
            fputc('\n', stdout);
        } else {
            char created[32], flags[64];
            ll__cli_iso(c.created_us, created);
            ll__cli_contact_flags(c.flags, flags, sizeof(flags));
            printf("%-6llu ", (unsigned long long)c.id);
            ll__cli_put_text(stdout, c.email, strlen(c.email), sizeof(c.email));
            size_t el = strlen(c.email);
            printf("%*s %-20s %7llu  %s\n", el < 32 ? (int)(32 - el) : 0, "", created, (unsigned long long)events,
                   flags);
        }
        ll_contact_clear(&c);
        if (rc != 0)
            goto out;
    }
    if (mrc != 0 && mrc != MDB_NOTFOUND)
        rc = ll__cli_fail(cmd, "%s: cannot read the store: %s", cli->data_dir, mdb_strerror(mrc));
out:
    if (evcur != NULL)
        mdb_cursor_close(evcur);
    if (cur != NULL)
        mdb_cursor_close(cur);
    ll_txn_abort(&t);
    return rc;
}

int ll__cli_contact(ll_cli_t *cli, int argc, char **argv)
{
    if (argc < 1)
        return ll__cli_usage("contact", "missing subcommand (add, show or list)");
    if (strcmp(argv[0], "add") == 0)
        return contact_add(cli, argc - 1, argv + 1);
    if (strcmp(argv[0], "show") == 0)
        return contact_show(cli, argc - 1, argv + 1);
    if (strcmp(argv[0], "list") == 0)
        return contact_list(cli, argc - 1, argv + 1);
    if (strcmp(argv[0], "import") == 0)
        return ll__cli_contact_import(cli, argc - 1, argv + 1);
    return ll__cli_usage("contact", "unknown subcommand '%s' (add, show, list or import)", argv[0]);
}
