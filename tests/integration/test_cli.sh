#!/bin/sh
# The operator CLI (bin/leadloop) against a fresh data directory: contacts, signed links,
# events, stats, keys, and its error messages and exit codes. When leadloopd and the snippet
# are built (make) and curl is installed, it also starts leadloopd on a free loopback port over
# the same data directory and follows the links the CLI prints: a click redirects to its
# destination, a changed byte gives 404, a pixel answers a GIF, both are in the timeline, and a
# key added by `keys rotate` signs links leadloopd accepts once restarted.
# Run from the repository root. Last line: "cli: N passed, N failed".
LEADLOOP=${LEADLOOP:-bin/leadloop}
LEADLOOPD=${LEADLOOPD:-bin/leadloopd}
dir=$(mktemp -d /tmp/test_cli.XXXXXX) || exit 1
pass=0 fail=0 pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
unset LEADLOOP_FAKE_TIME

bad() {
    fail=$((fail + 1))
    echo "FAIL: $*"
}

# t DESC EXIT OUT-REGEX ERR-REGEX ARGS...: runs leadloop -d DIR ARGS; "-" skips a regex,
# EMPTY wants no output at all.
t() {
    desc=$1 want=$2 outpat=$3 errpat=$4
    shift 4
    "$LEADLOOP" -d "$dir/data" "$@" >"$dir/out" 2>"$dir/err"
    rc=$?
    if [ "$rc" -ne "$want" ]; then
        bad "$desc: exit $rc, wanted $want"
        sed 's/^/  | /' "$dir/err"
    elif [ "$outpat" != - ] && ! grep -Eq -- "$outpat" "$dir/out"; then
        bad "$desc: stdout has no /$outpat/"
        sed 's/^/  | /' "$dir/out"
    elif [ "$errpat" = EMPTY ] && [ -s "$dir/err" ]; then
        bad "$desc: stderr is not empty"
        sed 's/^/  | /' "$dir/err"
    elif [ "$errpat" != - ] && [ "$errpat" != EMPTY ] && ! grep -Eq -- "$errpat" "$dir/err"; then
        bad "$desc: stderr has no /$errpat/"
        sed 's/^/  | /' "$dir/err"
    else
        pass=$((pass + 1))
    fi
}

# py DESC SCRIPT: runs a python3 check over $dir/out (exit status decides).
py() {
    if python3 -c "$2" <"$dir/out"; then pass=$((pass + 1)); else bad "$1"; sed 's/^/  | /' "$dir/out"; fi
}

[ -x "$LEADLOOP" ] || { echo "FAIL: $LEADLOOP not built (make)"; echo "cli: 0 passed, 1 failed"; exit 1; }

# ---- usage ----
t "no command" 2 - '^usage: leadloop'
t "help" 2 - '^usage: leadloop'
t "unknown command" 2 - "^leadloop: unknown command 'frob'" frob
t "unknown option" 2 - "^leadloop: events: unknown option '--nope'" events --nope

# ---- nothing stored yet: reads refuse a directory without a store, and create nothing ----
t "events, no store" 1 - "^leadloop: events: $dir/data: no store here" events
t "contact list, no store" 1 - 'no store here' contact list
if [ -e "$dir/data" ]; then bad "a read created $dir/data"; else pass=$((pass + 1)); fi

# ---- contacts ----
t "contact add creates" 0 '^created contact 1 ann@example\.com$' - contact add ' Ann@Example.COM ' name=Ann company='Acme Inc'
t "contact add updates" 0 '^updated contact 1 ann@example\.com$' - contact add ann@example.com phone=+49-1
t "contact add, bad email" 1 - "^leadloop: contact add: 'ann' is not an email address$" contact add ann
t "contact add, field without =" 1 - "^leadloop: contact add: 'noeq'" contact add ann@example.com noeq
t "contact add, empty name" 1 - "^leadloop: contact add: '=x'" contact add ann@example.com =x
t "contact add, bad name" 1 - "^leadloop: contact add: 'a/b=x'" contact add ann@example.com a/b=x
t "contact show" 0 '^           phone=\+49-1$' - contact show ann@example.com
t "contact show timeline" 0 'identify +unknown +- +\{"phone":"\+49-1"\}' - contact show ann@example.com
t "contact show --json" 0 - - contact show ann@example.com --json
py "contact show --json is one object" '
import json, sys
o = json.loads(sys.stdin.read())
c = o["contact"]
assert c["id"] == 1 and c["email"] == "ann@example.com", c
assert c["fields"] == {"name": "Ann", "company": "Acme Inc", "phone": "+49-1"}, c
assert [e["type"] for e in o["events"]] == ["identify", "identify"], o["events"]
assert all(e["email"] == "ann@example.com" for e in o["events"])'
t "contact show, unknown" 1 - "^leadloop: contact show: 'nobody@example\.com': no such contact" contact show nobody@example.com

# ---- signed links ----
t "link" 0 '^http://127\.0\.0\.1:8080/c/[A-Za-z0-9_-]+$' '^leadloop: link: created contact 2 bob@example\.com$' \
    link 'https://example.com/pricing?x=1' --to bob@example.com --send 5 --link 2
t "link, contact exists" 0 '/c/' EMPTY link https://example.com/ --to bob@example.com
t "link, javascript:" 1 - '^leadloop: link: destination must be an http\(s\) URL without spaces or control characters$' \
    link 'javascript:alert(1)' --to bob@example.com
t "link, space" 1 - 'destination must be' link 'https://example.com/a b' --to bob@example.com
t "link, no --to" 2 - '^leadloop: link: --to' link https://example.com/
t "link, bad --send" 1 - "^leadloop: link: --send: 'x' is not a number" link https://example.com/ --to bob@example.com --send x
t "pixel" 0 '^http://127\.0\.0\.1:8080/o/[A-Za-z0-9_-]+\.gif$' - pixel --to ann@example.com --send 7
t "unsubscribe-link" 0 '^http://127\.0\.0\.1:8080/u/[A-Za-z0-9_-]+$' - unsubscribe-link --to ann@example.com
t "contact list" 0 '^2 +bob@example\.com' - contact list
t "contact list --json" 0 - - contact list --json
py "contact list --json lines" '
import json, sys
rows = [json.loads(l) for l in sys.stdin]
assert [r["email"] for r in rows] == ["ann@example.com", "bob@example.com"], rows
assert rows[0]["events"] == 2 and rows[1]["events"] == 0, rows'

# ---- events ----
t "events" 0 '^2 +[0-9T:-]+Z +identify +unknown +ann@example\.com' - events
t "events --json" 0 - - events --json
py "events --json: one object a line, with emails" '
import json, sys
ev = [json.loads(l) for l in sys.stdin]
assert [e["seq"] for e in ev] == [1, 2], ev
assert all(e["email"] == "ann@example.com" and e["contact"] == 1 for e in ev), ev'
t "events --type --limit" 0 - - events --type identify --limit 1 --json
py "one event" 'import sys; assert len(sys.stdin.readlines()) == 1'
t "events --since 1h" 0 - - events --since 1h --json
py "recent events" 'import sys; assert len(sys.stdin.readlines()) == 2'
t "events --since future" 0 - - events --since 2999-01-01 --json
py "no events" 'import sys; assert sys.stdin.read() == ""'
t "events --since unix" 0 - - events --since 0 --json
py "all events" 'import sys; assert len(sys.stdin.readlines()) == 2'
t "events --since bad" 1 - "^leadloop: events: --since: cannot parse '2026-13-01'$" events --since 2026-13-01
t "events --type bad" 1 - "^leadloop: events: --type: unknown event type 'nope'" events --type nope
t "events --contact unknown" 1 - "nobody@example\.com': no such contact" events --contact nobody@example.com
t "stats" 0 '^contacts +2$' - stats
t "stats --json" 0 - - stats --json
py "stats --json" '
import json, sys
s = json.load(sys.stdin)
assert s["events"] == 2 and s["last_seq"] == 2 and s["types"]["identify"] == 2 and s["contacts"] == 2, s'

# ---- keys ----
t "keys list" 0 '^1 +[0-9a-f]{16} +signs' - keys list
if grep -q '[0-9a-f]\{64\}' "$dir/out"; then bad "keys list prints key material"; else pass=$((pass + 1)); fi
t "keys, no subcommand" 2 - '^leadloop: keys: missing subcommand' keys

# ---- through leadloopd ----
if [ -x "$LEADLOOPD" ] && [ -f build/ll.min.js ] && command -v curl >/dev/null 2>&1; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    base=http://127.0.0.1:$port
    start() {
        "$LEADLOOPD" -d "$dir/data" -l "127.0.0.1:$port" 2>>"$dir/leadloopd.log" &
        pid=$!
        i=0
        until curl -s -o /dev/null "$base/e.gif" || [ $i -ge 50 ]; do sleep 0.1; i=$((i + 1)); done
    }
    stop() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=; }
    start
    link=$("$LEADLOOP" -d "$dir/data" link 'https://example.com/p?x=1' --to dan@example.com --send 3 --link 1 2>/dev/null)
    path=${link#http://127.0.0.1:8080}
    got=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$base$path")
    case $got in
    "302 https://example.com/p?x=1&_llv="*) pass=$((pass + 1)) ;;
    *) bad "click: got '$got'" ;;
    esac
    tampered=$(printf '%s' "$path" | python3 -c 'import sys; p = sys.stdin.read(); i = len(p) - 5; print(p[:i] + ("A" if p[i] != "A" else "B") + p[i + 1:])')
    got=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$base$tampered")
    [ "$got" = "404 " ] && pass=$((pass + 1)) || bad "tampered click: got '$got'"
    pixel=$("$LEADLOOP" -d "$dir/data" pixel --to dan@example.com --send 3)
    got=$(curl -s -o /dev/null -w '%{http_code} %{content_type}' "$base${pixel#http://127.0.0.1:8080}")
    [ "$got" = "200 image/gif" ] && pass=$((pass + 1)) || bad "pixel: got '$got'"
    t "timeline after click and open" 0 - - events --contact dan@example.com --json
    py "click and open recorded" '
import json, sys
ev = [json.loads(l) for l in sys.stdin]
ty = [e["type"] for e in ev]
assert ty == ["click", "open"], ty
assert ev[0]["url"] == "https://example.com/p?x=1" and ev[0]["send"] == 3 and ev[0]["link"] == 1, ev[0]
assert all(e["email"] == "dan@example.com" for e in ev), ev'
    t "keys rotate" 0 'restart leadloopd' - keys rotate
    link=$("$LEADLOOP" -d "$dir/data" link https://example.com/new --to dan@example.com)
    got=$(curl -s -o /dev/null -w '%{http_code}' "$base${link#http://127.0.0.1:8080}")
    [ "$got" = 404 ] && pass=$((pass + 1)) || bad "new key before restart: got '$got' (update the keys rotate message?)"
    stop
    start
    got=$(curl -s -o /dev/null -w '%{http_code}' "$base${link#http://127.0.0.1:8080}")
    [ "$got" = 302 ] && pass=$((pass + 1)) || bad "new key after restart: got '$got'"
    got=$(curl -s -o /dev/null -w '%{http_code}' "$base$path")
    [ "$got" = 302 ] && pass=$((pass + 1)) || bad "old key after rotation: got '$got'"
    stop
else
    echo "skip: leadloopd, build/ll.min.js or curl missing: links not followed"
fi

echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
