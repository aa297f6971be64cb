#!/usr/bin/env python3
"""
Scoring, hand-off and alerts through the real leadloopd (issue #4): visits, a click and a form
drive a contact over the threshold; a webhook receiver started here (http.server) checks what
arrives on the wire: the HMAC signature, the owner routing picked, exactly once, retries,
restarts, SLA escalation and the SSE stream.

Run from the repository root:  python3 tests/integration/alerts_test.py [SUBSTRING ...]
Uses the Server class of tests/integration/run.py (same LEADLOOPD / LEADLOOP variables).
The last line is "alerts: N passed, N failed".
"""
import hashlib
import hmac
import http.server
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as it  # noqa: E402
from run import Server, check, free_port, wait_until, beacon_body, new_visitor  # noqa: E402

SECRET = 's3cret-key-for-tests'
TOKEN = 'admin-token-0123456789'


class Receiver:
    """A webhook receiver on loopback; answers with self.status (or the next of self.script, for
    requests to script_path)."""

    def __init__(self, port=None, script=(), script_path='/hook'):
        self.port = port or free_port()
        self.got = []        # (time, path, headers dict lower-cased, body bytes, status answered)
        self.status = 200
        self.script = list(script)  # statuses to answer first (set before serving: no race)
        self.lock = threading.Lock()
        rcv = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(n)
                with rcv.lock:
                    st = rcv.script.pop(0) if rcv.script and self.path == script_path else rcv.status
                    rcv.got.append((time.time(), self.path, {k.lower(): v for k, v in self.headers.items()}, body, st))
                self.send_response(st)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', self.port), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def alerts(self, path='/hook'):
        with self.lock:
            return [(t, h, json.loads(b), st) for t, p, h, b, st in self.got if p == path]

    def ok_alerts(self, path='/hook'):
        return [a for a in self.alerts(path) if 200 <= a[3] < 300]


def conf_yaml(hook_port, extra='', chat_port=None):
    return f'''
scoring:
  threshold: 60
  rules:
    - {{name: pricing, event: pageview, path: "/pricing*", points: 15}}
    - {{name: page, event: pageview, points: 2}}
    - {{name: email-click, event: click, points: 10}}
    - {{name: contact-form, event: form, form: contact, points: 30}}
  fit:
    - {{name: acme-ish, field: company, match: "acme*", points: 30}}
routing:
  rules:
    - {{name: acme, company: "Acme*", to: "rita@corp.example"}}
    - {{name: everyone, group: team}}
  groups:
    team:
      - {{rep: "sam@corp.example", weight: 1}}
      - {{rep: "tom@corp.example", weight: 1}}
alerts:
  webhooks:
    - {{name: crm, url: "http://127.0.0.1:{hook_port}/hook", secret: "{SECRET}"}}
    - {{name: chat, url: "http://127.0.0.1:{chat_port or hook_port}/slack", kind: slack}}
{extra}
'''


def check_signature(h, body_bytes):
    ts = h.get('x-leadloop-timestamp')
    sig = h.get('x-leadloop-signature', '')
    check(ts and ts.isdigit() and abs(int(ts) - time.time()) < 60, f'X-Leadloop-Timestamp {ts!r}')
    want = hmac.new(SECRET.encode(), ts.encode() + b'.' + body_bytes, hashlib.sha256).hexdigest()
    check(sig == 'v1=' + want, f'X-Leadloop-Signature {sig!r}, expected v1={want}')


def drive_to_threshold(s, email, company='Acme Inc', v=None):
    """A click, two pricing visits and the contact form: 10 + 17 + 17 + 30 = 74 (threshold 60)."""
    v = v or new_visitor()
    tok = s.link('https://site.example/pricing', email)
    r = s.get('/c/' + tok, headers={'Cookie': f'_ll={v}'})
    check(r.status == 302, f'click {r.status}')
    for path in ('/pricing', '/pricing/enterprise'):
        r = s.beacon(beacon_body(v, u='https://site.example' + path))
        check(r.status == 204, f'beacon {r.status}')
    t0 = time.time()
    r = s.form('contact', {'email': email, 'name': 'Pat', 'company': company}, headers={'Cookie': f'_ll={v}'})
    check(r.status == 200, f'form {r.status} {r.body!r}')
    return t0, v


def test_threshold_alert_signed_once_to_routed_owner():
    rcv = Receiver()
    try:
        with Server(conf=conf_yaml(rcv.port)) as s:
            t0, v = drive_to_threshold(s, 'pat@example.com')
            check(wait_until(lambda: len(rcv.alerts()) >= 1, timeout=1.0), 'no alert within a second of the form')
            t, h, a, st = rcv.alerts()[0]
            check(t - t0 < 1.0, f'alert after {t - t0:.2f} s')
            body = [b for _, p, _, b, _ in rcv.got if p == '/hook'][0]
            check_signature(h, body)
            check(h.get('content-type') == 'application/json', f'Content-Type {h.get("content-type")}')
            check(h.get('idempotency-key') == a['id'] + ':crm', f'Idempotency-Key {h.get("idempotency-key")!r}')
            check(a['alert'] == 'sales_ready', f'alert {a}')
            check(a['owner'] == 'rita@corp.example' and a['to'] == 'rita@corp.example', f'owner {a}')
            check(a['routing_rule'] == 'acme', f'routing rule {a}')
            check(a['score'] == 74 and a['threshold'] == 60 and a['grade'] == 'B' and a['fit'] == 30, f'score {a}')
            check(a['contact']['email'] == 'pat@example.com', f'contact {a["contact"]}')
            types = [e['type'] for e in a['last_events']]
            check(types[:4] == ['form', 'pageview', 'pageview', 'click'], f'last_events {types}')
            check('threshold 60' in a['why'], f'why {a["why"]!r}')
            wait_until(lambda: len(rcv.alerts('/slack')) >= 1, timeout=1.0)  # posted concurrently
            slack = rcv.alerts('/slack')
            check(len(slack) == 1 and 'sales_ready' in slack[0][2]['text'] and 'pat@example.com' in slack[0][2]['text'],
                  f'slack: {slack}')
            # More visits: no second hand-off.
            s.beacon(beacon_body(v, u='https://site.example/pricing/again'))
            time.sleep(1.2)
            check(len(rcv.alerts()) == 1, f'{len(rcv.alerts())} alerts, expected exactly one')
            # The score explained, and the lead.
            out = s.cli('score', 'pat@example.com').stdout.decode()
            for word in ('pricing', 'email-click', 'contact-form', 'fit:acme-ish', 'sales-ready', 'rita@corp.example'):
                check(word in out, f'leadloop score lacks {word!r}:\n{out}')
            j = json.loads(s.cli('score', 'pat@example.com', '--json').stdout)
            check(round(j['score']) == 91 and j['stage'] == 'mql' and len(j['ledger']) == 9, f'score --json {j}')
            leads = [json.loads(x) for x in s.cli('lead', 'list', '--json').stdout.decode().splitlines()]
            check(len(leads) == 1 and leads[0]['owner'] == 'rita@corp.example' and leads[0]['stage'] == 'mql',
                  f'lead list {leads}')
            # A click by a lead that has an owner: an owner_click alert.
            tok = s.link('https://site.example/case-study', 'pat@example.com')
            s.get('/c/' + tok, headers={'Cookie': f'_ll={v}'})
            check(wait_until(lambda: len(rcv.alerts()) == 2, timeout=1.0), f'no owner_click alert: {rcv.alerts()}')
            check(rcv.alerts()[1][2]['alert'] == 'owner_click', f'second alert {rcv.alerts()[1][2]}')
            # Accept; rescore rebuilds the same score from the log.
            s.cli('lead', 'accept', 'pat@example.com')
            before = json.loads(s.cli('score', 'pat@example.com', '--json').stdout)
            s.cli('rescore')
            after = json.loads(s.cli('score', 'pat@example.com', '--json').stdout)
            check(after['ledger'] == before['ledger'] and after['stage'] == 'accepted', f'rescore: {before} vs {after}')
    finally:
        rcv.stop()


def test_bots_never_score_or_alert():
    rcv = Receiver()
    try:
        with Server(conf=conf_yaml(rcv.port)) as s:
            tok = s.link('https://site.example/pricing', 'bot-target@example.com')
            for ua in ('curl/8.0', 'Mozilla/5.0 (compatible; Googlebot/2.1)', None):
                for _ in range(5):
                    s.get('/c/' + tok, ua=ua)
            s.get('/c/' + tok, headers={'Sec-Purpose': 'prefetch'})
            evs = [e for e in s.events() if e['type'] == 'click']
            check(len(evs) == 16 and all(e['class'] != 'human' for e in evs), f'classes {[e["class"] for e in evs]}')
            j = json.loads(s.cli('score', 'bot-target@example.com', '--json').stdout)
            check(j['score'] == 0 and j['ledger'] == [], f'bot clicks scored: {j}')
            time.sleep(0.5)
            check(rcv.got == [], f'alerts for bots: {rcv.got}')
    finally:
        rcv.stop()


def test_sla_breach_escalates_and_reassigns():
    rcv = Receiver()
    extra = 'sla:\n  accept_seconds: 1\n  escalate_to: "boss@corp.example"\n  reassign: true\n'
    try:
        with Server(conf=conf_yaml(rcv.port, extra)) as s:
            drive_to_threshold(s, 'quinn@example.com', company='Globex')
            check(wait_until(lambda: len(rcv.alerts()) >= 1, timeout=1.0), 'no sales_ready alert')
            first = rcv.alerts()[0][2]
            check(first['routing_rule'] == 'everyone' and first['owner'] in ('sam@corp.example', 'tom@corp.example'),
                  f'round robin {first}')
            check(wait_until(lambda: len(rcv.alerts()) >= 2, timeout=4.0), f'no SLA alert: {rcv.alerts()}')
            a = rcv.alerts()[1][2]
            check(a['alert'] == 'sla_breach' and a['to'] == 'boss@corp.example', f'sla alert {a}')
            other = ({'sam@corp.example', 'tom@corp.example'} - {first['owner']}).pop()
            check(a['owner'] == other and first['owner'] in a['why'], f'reassigned {a}')
            leads = [json.loads(x) for x in s.cli('lead', 'list', '--json').stdout.decode().splitlines()]
            check(leads[0]['owner'] == other, f'lead list {leads}')
            # The new owner accepts in time: no further escalation.
            s.cli('lead', 'accept', 'quinn@example.com')
            time.sleep(2.0)
            check(len(rcv.alerts()) == 2, f'escalated again after accept: {[x[2]["alert"] for x in rcv.alerts()]}')
    finally:
        rcv.stop()


def test_reassigned_at_most_reassign_max_times():
    """Nobody accepts: the lead is reassigned once (reassign_max: 1), the next breach alerts the
    manager once more and keeps its owner, and then the alerts stop."""
    rcv = Receiver()
    extra = ('sla:\n  accept_seconds: 1\n  escalate_to: "boss@corp.example"\n  reassign: true\n'
             '  reassign_max: 1\n')
    try:
        with Server(conf=conf_yaml(rcv.port, extra)) as s:
            drive_to_threshold(s, 'rory@example.com', company='Globex')
            check(wait_until(lambda: len(rcv.alerts()) >= 3, timeout=6.0), f'two breaches: {rcv.alerts()}')
            ready, moved, kept = (a[2] for a in rcv.alerts()[:3])
            check(ready['alert'] == 'sales_ready' and moved['alert'] == kept['alert'] == 'sla_breach',
                  f'alerts {[ready, moved, kept]}')
            check(moved['owner'] != ready['owner'] and 'reassigned to' in moved['why'], f'reassigned {moved}')
            check(kept['owner'] == moved['owner'] and 'reassigned 1 time, not again' in kept['why'],
                  f'kept {kept}')
            time.sleep(2.5)  # more than two deadlines
            check(len(rcv.alerts()) == 3, f'alerts after the last breach: {[a[2]["why"] for a in rcv.alerts()]}')
            leads = [json.loads(x) for x in s.cli('lead', 'list', '--json').stdout.decode().splitlines()]
            check(leads[0]['owner'] == moved['owner'] and leads[0]['stage'] == 'mql' and leads[0]['escalated']
                  and leads[0]['reassigned'] == 1, f'lead list {leads}')
    finally:
        rcv.stop()


def test_decay_is_lazy_with_fake_time():
    """Events at a pinned time; the CLI a half-life later shows half the engagement."""
    rcv = Receiver()
    t0 = 1795000000
    os.environ['LEADLOOP_FAKE_TIME'] = str(t0)
    try:
        conf = conf_yaml(rcv.port).replace('  threshold: 60\n', '  threshold: 60\n  half_life_days: 2\n')
        with Server(conf=conf) as s:
            drive_to_threshold(s, 'val@example.com')
            check(wait_until(lambda: len(rcv.alerts()) == 1, timeout=1.0), 'no alert at the pinned time')
            j = json.loads(s.cli('score', 'val@example.com', '--json').stdout)
            check(abs(j['score'] - 74) < 1e-6, f'score at t0: {j["score"]}')
            os.environ['LEADLOOP_FAKE_TIME'] = str(t0 + 2 * 86400)
            j = json.loads(s.cli('score', 'val@example.com', '--json').stdout)
            check(abs(j['score'] - 37) < 1e-6 and j['fit'] == 30, f'score a half-life later: {j}')
            out = s.cli('score', 'val@example.com').stdout.decode()
            check('decay' in out and 'score 37.0' in out, f'leadloop score shows no decay line:\n{out}')
            os.environ['LEADLOOP_FAKE_TIME'] = str(t0)
    finally:
        os.environ.pop('LEADLOOP_FAKE_TIME', None)
        rcv.stop()


def test_rep_away_at_runtime():
    rcv = Receiver()
    try:
        with Server(conf=conf_yaml(rcv.port)) as s:
            p = s.cli('rep', 'away', 'sam@corp.example')
            check(b'away' in p.stdout, f'rep away: {p.stdout!r}')
            for i in range(3):
                drive_to_threshold(s, f'w{i}@example.com', company='Initech')
            check(wait_until(lambda: len(rcv.alerts()) == 3, timeout=2.0), f'alerts {len(rcv.alerts())}')
            owners = [a[2]['owner'] for a in rcv.alerts()]
            check(owners == ['tom@corp.example'] * 3, f'owners while sam is away: {owners}')
            out = s.cli('rep', 'list').stdout.decode()
            check('sam@corp.example' in out and 'away' in out, f'rep list:\n{out}')
            s.cli('rep', 'back', 'sam@corp.example')
            drive_to_threshold(s, 'w9@example.com', company='Initech')
            check(wait_until(lambda: len(rcv.alerts()) == 4, timeout=2.0), 'fourth alert')
            check(rcv.alerts()[3][2]['owner'] == 'sam@corp.example', f'after back: {rcv.alerts()[3][2]["owner"]}')
            r = s.cli('rep', 'away', 'nobody@corp.example', ok=False)
            check(r.returncode == 1, f'unknown rep: exit {r.returncode}')
    finally:
        rcv.stop()


def test_receiver_down_then_back_gets_it_once():
    port = free_port()
    s = Server(conf=conf_yaml(port))
    with s:
        drive_to_threshold(s, 'rae@example.com')
        time.sleep(1.5)  # a refused connection or two, backing off
        rows = s.cli('outbox').stdout.decode()
        check('crm' in rows and 'attempts' in rows, f'outbox while down:\n{rows}')
        rcv = Receiver(port, script=[503])  # and one more failure after it comes back
        try:
            check(wait_until(lambda: len(rcv.ok_alerts()) == 1, timeout=12.0), f'not delivered: {rcv.got}')
            time.sleep(2.5)
            got = rcv.alerts()
            check(len(rcv.ok_alerts()) == 1 and len(got) == 2, f'{len(got)} posts, {len(rcv.ok_alerts())} answered 2xx')
            check(got[0][1]['idempotency-key'] == got[1][1]['idempotency-key'], 'the retry changed its Idempotency-Key')
            check(wait_until(lambda: 'crm' not in s.cli('outbox').stdout.decode(), timeout=2.0), 'row left in the outbox')
        finally:
            rcv.stop()


def test_failing_receiver_is_backed_off_as_a_whole():
    """Five alerts queued for a receiver that answers 503: after the first failures it gets one
    probe per backoff step (1 s, 2 s, 4 s), not every row on every retry; once it answers 2xx,
    every alert arrives exactly once, the oldest first (it is the probe; the rest then go side by
    side, so they may arrive in any order)."""
    rcv = Receiver()
    rcv.status = 503
    try:
        with Server(conf=conf_yaml(rcv.port)) as s:
            t0 = time.time()
            for i in range(5):
                drive_to_threshold(s, f'bo{i}@example.com')
            check(wait_until(lambda: len(rcv.alerts()) >= 1, timeout=5.0), 'no attempt at all')
            time.sleep(max(0.0, t0 + 6.5 - time.time()))
            during = len(rcv.alerts())
            # Each row on its own backoff would have been posted at 0, 1, 2 and 4 s: 20 posts.
            check(2 <= during <= 9, f'{during} posts to a failing receiver in 6.5 s (rows retried one by one?)')
            rcv.status = 200
            check(wait_until(lambda: len(rcv.ok_alerts()) == 5, timeout=15.0), f'delivered {len(rcv.ok_alerts())} of 5')
            time.sleep(1.5)
            ok = [a[2]['contact']['email'] for a in rcv.ok_alerts()]
            check(sorted(ok) == [f'bo{i}@example.com' for i in range(5)], f'delivered {ok}')
            check(ok[0] == 'bo0@example.com', f'the oldest alert did not go first: {ok}')
    finally:
        rcv.stop()


def test_hung_receiver_does_not_hold_up_the_others():
    """The crm receiver takes the connection and never answers (each post waits for its 10 s
    timeout): the chat receiver and the live feed still get every alert at once, including
    those raised while crm's posts hang, and crm's rows stay queued for a later retry."""
    hung = socket.socket()
    hung.bind(('127.0.0.1', 0))
    hung.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
    rcv = Receiver()
    aport = free_port()
    extra = f'  admin_listen: "127.0.0.1:{aport}"\n  admin_token: "{TOKEN}"\n'
    try:
        with Server(conf=conf_yaml(hung.getsockname()[1], extra, chat_port=rcv.port)) as s:
            feed = socket.create_connection(('127.0.0.1', aport), timeout=5)
            feed.sendall(f'GET /alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n'.encode())
            check(feed.recv(4096).startswith(b'HTTP/1.1 200'), 'no SSE stream')
            got = [b'']

            def fed(email):
                while email.encode() not in got[0]:
                    try:
                        got[0] += feed.recv(65536)
                    except socket.timeout:
                        return False
                return True

            for i, email in enumerate(('hal@example.com', 'ivy@example.com', 'joe@example.com')):
                t0, _ = drive_to_threshold(s, email, company='Globex')
                check(wait_until(lambda: any(email in a[2]['text'] for a in rcv.ok_alerts('/slack')), timeout=1.0),
                      f'alert {i + 1} not at the chat receiver within a second while crm hangs: '
                      f'{[a[2] for a in rcv.alerts("/slack")]}')
                feed.settimeout(max(0.05, t0 + 1.0 - time.time()))
                check(fed(email), f'alert {i + 1} not on the live feed within a second while crm hangs')
                time.sleep(1.0)
            feed.close()
            check(len(rcv.alerts('/slack')) == 3, f'{len(rcv.alerts("/slack"))} posts to chat for 3 alerts')
        rows = s.cli('outbox').stdout.decode()
        check(rows.count(' crm ') == 3, f'crm rows after the stop (3 expected):\n{rows}')
    finally:
        rcv.stop()
        hung.close()


def test_receiver_back_after_a_backlog_gets_every_alert():
    """crm is down (nothing listens) while five alerts are raised and chat takes each at once;
    passes then read the outbox from past crm's queued rows. When crm comes back, its probe
    still finds the first of them and every one arrives once, that one first (the rest go side by
    side after it: up to 16 posts to one receiver, so their order of arrival is not theirs)."""
    crm_port = free_port()
    rcv = Receiver()
    try:
        with Server(conf=conf_yaml(crm_port, chat_port=rcv.port)) as s:
            for i in range(5):
                drive_to_threshold(s, f'bk{i}@example.com', company='Globex')
                email = f'bk{i}@example.com'
                check(wait_until(lambda: any(email in a[2]['text'] for a in rcv.ok_alerts('/slack')), timeout=1.0),
                      f'alert {i + 1} not at chat within a second while crm is down')
            time.sleep(1.0)
            rows = s.cli('outbox').stdout.decode()
            check(rows.count(' crm ') == 5 and ' chat ' not in rows, f'outbox while crm is down:\n{rows}')
            crm = Receiver(crm_port)
            try:
                check(wait_until(lambda: len(crm.ok_alerts()) == 5, timeout=20.0),
                      f'crm got {len(crm.ok_alerts())} of 5 after coming back')
                time.sleep(1.0)
                got = [a[2]['contact']['email'] for a in crm.ok_alerts()]
                check(sorted(got) == [f'bk{i}@example.com' for i in range(5)], f'crm got {got}')
                check(got[0] == 'bk0@example.com', f'the oldest alert did not go first: {got}')
            finally:
                crm.stop()
    finally:
        rcv.stop()


def test_kill9_before_delivery_delivers_after_restart():
    port = free_port()
    s = Server(conf=conf_yaml(port))
    s.start()
    drive_to_threshold(s, 'sid@example.com')
    time.sleep(0.3)
    s.kill9()  # committed, not delivered (nobody listens yet)
    rcv = Receiver(port)
    try:
        s.start()
        check(wait_until(lambda: len(rcv.ok_alerts()) == 1, timeout=5.0), f'not delivered after restart: {rcv.got}')
        time.sleep(1.5)
        check(len(rcv.ok_alerts()) == 1, f'delivered {len(rcv.ok_alerts())} times')
        check(rcv.ok_alerts()[0][2]['contact']['email'] == 'sid@example.com', 'wrong alert')
        s.stop()
    finally:
        rcv.stop()


def test_sse_stream_on_admin_listener():
    rcv = Receiver()
    aport = free_port()
    extra = f'  admin_listen: "127.0.0.1:{aport}"\n  admin_token: "{TOKEN}"\n'
    try:
        with Server(conf=conf_yaml(rcv.port, extra)) as s:
            c = socket.create_connection(('127.0.0.1', aport), timeout=5)
            c.sendall(b'GET /alerts HTTP/1.1\r\nHost: x\r\n\r\n')
            check(c.recv(4096).startswith(b'HTTP/1.1 401'), 'no token: not 401')
            c.close()
            c = socket.create_connection(('127.0.0.1', aport), timeout=5)
            c.sendall(f'GET /alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n'.encode())
            head = c.recv(4096)
            check(head.startswith(b'HTTP/1.1 200') and b'text/event-stream' in head, f'SSE head {head[:200]!r}')
            drive_to_threshold(s, 'uma@example.com')
            buf = b''
            end = time.time() + 3
            while b'\n\n' not in buf.split(b'data: ', 1)[-1] and time.time() < end:
                buf += c.recv(65536)
            c.close()
            line = [ln for ln in buf.split(b'\n') if ln.startswith(b'data: ')]
            check(line, f'no SSE event: {buf[:300]!r}')
            a = json.loads(line[0][6:])
            check(a['alert'] == 'sales_ready' and a['contact']['email'] == 'uma@example.com', f'SSE alert {a}')
            names = it.threads_of(s.proc.pid)
            check('ll-admin' in names, f'no thread named ll-admin: {sorted(names)}')
    finally:
        rcv.stop()


def main():
    it.run_suite('alerts', globals())


if __name__ == '__main__':
    main()
