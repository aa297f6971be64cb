#!/usr/bin/env python3
"""
Integration suite: starts the real leadloopd on loopback and checks the bytes on the wire,
then what `leadloop events --json` / `leadloop contact show` say was stored.

Run from the repository root:  python3 tests/integration/run.py [SUBSTRING ...]
  LEADLOOPD      server binary (default bin/leadloopd)
  LEADLOOP       CLI binary (default bin/leadloop)
  LL_TEST_LEAKS  1: keep LeakSanitizer on (default: ASAN_OPTIONS gets detect_leaks=0)
  LL_TEST_KEEP   1: keep every temporary directory (failed tests always keep theirs)
  LL_TEST_PORTS  LOW-HIGH: take loopback ports from this range (default: any free port)

Each test is a function test_*, run in definition order; output is "ok NAME" or
"FAIL NAME: reason" followed by the traceback and leadloopd's stderr, and the last line is
"integration: N passed, N failed". Exit status 1 when anything failed.
Python 3 standard library only.
"""
import base64
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse

LEADLOOPD = os.environ.get('LEADLOOPD', 'bin/leadloopd')
LEADLOOP = os.environ.get('LEADLOOP', 'bin/leadloop')
CHROME_UA = ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
             'Chrome/126.0.0.0 Safari/537.36')
HEX32 = re.compile(r'[0-9a-f]{32}\Z')
SET_COOKIE = re.compile(r'_ll=([0-9a-f]{32}); Path=/; Max-Age=(\d+); HttpOnly; SameSite=Lax\Z')
SANITIZER_MARKS = ('AddressSanitizer', 'LeakSanitizer', 'UndefinedBehaviorSanitizer', 'ThreadSanitizer',
                   'MemorySanitizer', 'runtime error:', 'SUMMARY: ', 'Segmentation fault', 'stack smashing',
                   'double free', 'free(): ', 'malloc(): ', 'corrupted ', 'Aborted', 'assertion', 'Assertion')
GIF_LEN = 43

# Forms most tests configure.
FORMS = {
    'contact': {'fields': ['name', 'company'], 'email_field': 'email', 'honeypot': '_hp',
                'thank_you': 'https://site.example/thanks'},
    'nothanks': {'fields': ['name'], 'email_field': 'email', 'honeypot': '_hp'},
}


class TestFailure(AssertionError):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


LSAN_SUPP = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lsan.supp')


def child_env():
    """Under SANITIZE builds, leaks are reported (minus the library caches in tests/lsan.supp)
    and fail the test; LL_TEST_LEAKS=0 turns that off."""
    env = dict(os.environ)
    opts = env.get('LSAN_OPTIONS', '')
    env['LSAN_OPTIONS'] = (opts + ':' if opts else '') + 'suppressions=' + os.path.abspath(LSAN_SUPP)
    if os.environ.get('LL_TEST_LEAKS') == '0':
        opts = env.get('ASAN_OPTIONS', '')
        env['ASAN_OPTIONS'] = (opts + ':' if opts else '') + 'detect_leaks=0'
    return env


def free_port():
    """A free loopback port: any, or one in LL_TEST_PORTS=LOW-HIGH when set (a shared machine)."""
    lo, _, hi = os.environ.get('LL_TEST_PORTS', '').partition('-')
    candidates = random.sample(range(int(lo), int(hi) + 1), int(hi) + 1 - int(lo)) if hi else [0]
    for port in candidates:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(('127.0.0.1', port))
            return s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
    raise OSError(f'no free port in LL_TEST_PORTS={lo}-{hi}')


def yaml_str(s):
    return json.dumps(s)  # a JSON string is a YAML double-quoted scalar


def forms_yaml(forms):
    lines = ['forms:']
    for fid, f in forms.items():
        lines.append(f'  {fid}:')
        for k, v in f.items():
            if isinstance(v, list):
                lines.append(f'    {k}: [{", ".join(yaml_str(x) for x in v)}]')
            else:
                lines.append(f'    {k}: {yaml_str(v)}')
    return '\n'.join(lines)


def new_visitor():
    return '%032x' % random.getrandbits(128)


def b64d(s):
    return base64.urlsafe_b64decode(s + '=' * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).decode().rstrip('=')


def beacon_body(visitor=None, events=None, **ev):
    if events is None:
        events = [dict({'t': 'pageview', 'u': 'https://site.example/'}, **ev)]
    d = {}
    if visitor is not None:
        d['v'] = visitor
    d['e'] = events
    return json.dumps(d)


# ---- HTTP ----

class Resp:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def cookie(self):
        """The visitor id of the _ll Set-Cookie, checking its attributes; None when absent."""
        for v in self.all('Set-Cookie'):
            if v.startswith('_ll='):
                m = SET_COOKIE.match(v)
                check(m, f'Set-Cookie is not "_ll=<32 hex>; Path=/; Max-Age=N; HttpOnly; SameSite=Lax": {v!r}')
                return m.group(1)
        return None

    def __repr__(self):
        return f'<{self.status} {self.reason} {self.headers} {self.body[:200]!r}>'


def http_request(port, method, path, body=None, headers=None, ua=CHROME_UA, timeout=10):
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        h = {}
        if ua is not None:
            h['User-Agent'] = ua
        h.update(headers or {})
        h = {k: v.encode() if isinstance(v, str) else v for k, v in h.items()}  # UTF-8, not latin-1
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.getheaders(), data)
    finally:
        conn.close()


def raw_exchange(port, data, timeout=10, rst=False):
    """Sends raw bytes, reads until the server closes. Returns (response bytes, how it ended)."""
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    chunks, ended = [], 'closed'
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            ended = 'reset while sending'
        while True:
            try:
                c = s.recv(65536)
            except ConnectionResetError:
                ended = 'reset'
                break
            except socket.timeout:
                ended = 'timeout'
                break
            if not c:
                break
            chunks.append(c)
    finally:
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        s.close()
    return b''.join(chunks), ended


def parse_raw(data):
    """(status, [(name, value)] as bytes, head bytes, body) of the first response in data."""
    head, sep, body = data.partition(b'\r\n\r\n')
    check(sep, f'no complete response head in {data[:300]!r}')
    lines = head.split(b'\r\n')
    m = re.match(rb'HTTP/1\.[01] (\d{3})', lines[0])
    check(m, f'bad status line {lines[0][:200]!r}')
    headers = []
    for ln in lines[1:]:
        name, colon, value = ln.partition(b':')
        check(colon, f'malformed response header line {ln[:200]!r}')
        headers.append((name.strip(), value.strip()))
    return int(m.group(1)), headers, head, body


def expect_refused(port, data, what, allow_statuses=range(400, 500)):
    """A hostile request must get a 4xx (or the connection closed), never a 2xx/3xx/5xx or a hang."""
    resp, ended = raw_exchange(port, data, timeout=10)
    if ended == 'timeout' and not resp:
        raise TestFailure(f'{what}: no answer within 10 s and the connection stayed open')
    if not resp:
        return None  # closed or reset without an answer: acceptable
    status = int(resp[9:12]) if resp.startswith(b'HTTP/1.') and len(resp) >= 12 and resp[9:12].isdigit() else None
    check(status is not None, f'{what}: garbage answer {resp[:200]!r}')
    check(status in allow_statuses, f'{what}: expected 4xx or a closed connection, got {resp[:300]!r}')
    return status


# ---- the server under test ----

SERVERS = []  # started during the current test (for cleanup and stderr on failure)


class Server:
    def __init__(self, conf='', forms=FORMS, data_dir=None, tmp=None, rate=1000):
        self.tmp = tmp or tempfile.mkdtemp(prefix='ll-it-')
        self.data = data_dir or os.path.join(self.tmp, 'data')
        self.conf_extra = conf
        self.forms = forms
        self.rate = rate
        self.tls_context = None  # an ssl.SSLContext when the server speaks TLS
        self.embedded = False    # True: no -c, the embedded default configuration (as `make run`)
        self.proc = None
        self.port = None
        self.stderr_files = []
        self.notes = []
        SERVERS.append(self)

    @property
    def base(self):
        return f'http://127.0.0.1:{self.port}'

    @property
    def conf(self):
        return os.path.join(self.tmp, 'leadloop.yaml')

    def write_conf(self):
        parts = [f'public_url: {yaml_str(self.base)}']
        if self.rate is not None and 'form_rate_per_min' not in self.conf_extra:
            parts.append(f'form_rate_per_min: {self.rate}')
        if self.conf_extra:
            parts.append(self.conf_extra.strip('\n'))
        if self.forms:
            parts.append(forms_yaml(self.forms))
        with open(self.conf, 'w') as f:
            f.write('\n'.join(parts) + '\n')

    def start(self, timeout=10):
        self.port = free_port()
        self.write_conf()
        errpath = os.path.join(self.tmp, f'leadloopd.{len(self.stderr_files)}.stderr')
        self.stderr_files.append(errpath)
        with open(errpath, 'wb') as errf:
            conf = [] if self.embedded else ['-c', self.conf]
            self.proc = subprocess.Popen([LEADLOOPD, *conf, '-d', self.data, '-l', f'127.0.0.1:{self.port}'],
                                         stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, env=child_env())
        deadline = time.time() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise TestFailure(f'leadloopd exited with {rc} before answering /healthz:\n{self.stderr_tail()}')
            try:
                if self.healthz(timeout=1) == 200:
                    return self
            except OSError:
                pass
            if time.time() > deadline:
                raise TestFailure(f'leadloopd did not answer GET /healthz with 200 within {timeout} s')
            time.sleep(0.05)

    def stderr_text(self):
        out = []
        for p in self.stderr_files:
            try:
                with open(p, 'rb') as f:
                    out.append(f.read().decode('utf-8', 'replace'))
            except OSError:
                pass
        return ''.join(out)

    def stderr_tail(self, n=6000):
        t = self.stderr_text()
        return t if len(t) <= n else '...' + t[-n:]

    def sanitizer_problems(self):
        t = self.stderr_text()
        return [m for m in SANITIZER_MARKS if m in t]

    def healthz(self, timeout):
        if self.tls_context is None:
            return http_request(self.port, 'GET', '/healthz', timeout=timeout).status
        conn = http.client.HTTPSConnection('127.0.0.1', self.port, timeout=timeout, context=self.tls_context)
        try:
            conn.request('GET', '/healthz')
            return conn.getresponse().status
        finally:
            conn.close()

    def stop(self, problems=None):
        """SIGTERM; the server must have been healthy, exit 0 within 10 s, and print no crash report."""
        own = problems is None
        problems = [] if own else problems
        if self.proc is not None:
            rc = self.proc.poll()
            if rc is not None:
                problems.append(f'leadloopd died during the test (exit status {rc})')
            else:
                try:
                    st = self.healthz(timeout=5)
                    if st != 200:
                        problems.append(f'GET /healthz at the end answered {st}')
                except OSError as e:
                    problems.append(f'GET /healthz at the end failed: {e!r}')
                self.proc.send_signal(signal.SIGTERM)
                try:
                    rc = self.proc.wait(10)
                    if rc != 0:
                        problems.append(f'leadloopd exited with {rc} after SIGTERM (expected 0)')
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    problems.append('leadloopd did not exit within 10 s of SIGTERM')
            self.proc = None
        marks = self.sanitizer_problems()
        if marks:
            problems.append(f'leadloopd stderr shows a crash or sanitizer report ({", ".join(marks)})')
        if own and problems:
            raise TestFailure('; '.join(problems) + '\n--- leadloopd stderr ---\n' + self.stderr_tail())
        return problems

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def cleanup(self):
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(10)
            except Exception:
                pass
            self.proc = None

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self.stop()
        else:
            self.notes.extend(self.stop(problems=[]))
        return False

    # -- HTTP --
    def req(self, method, path, body=None, headers=None, **kw):
        return http_request(self.port, method, path, body, headers, **kw)

    def get(self, path, headers=None, **kw):
        return self.req('GET', path, None, headers, **kw)

    def post(self, path, body, ctype, headers=None, **kw):
        h = {'Content-Type': ctype}
        h.update(headers or {})
        return self.req('POST', path, body, h, **kw)

    def beacon(self, body, headers=None, **kw):
        return self.post('/e', body, 'text/plain;charset=UTF-8', headers, **kw)

    def form(self, fid, body, ctype='application/x-www-form-urlencoded', mode='cors', headers=None, **kw):
        h = {}
        if mode == 'cors':
            h.update({'Sec-Fetch-Mode': 'cors', 'Accept': '*/*'})
        elif mode == 'navigate':
            h.update({'Sec-Fetch-Mode': 'navigate', 'Accept': 'text/html,application/xhtml+xml,*/*;q=0.8'})
        h.update(headers or {})
        if isinstance(body, dict):
            body = urllib.parse.urlencode(body)
        return self.post(f'/f/{fid}', body, ctype, h, **kw)

    def raw(self, data, **kw):
        return raw_exchange(self.port, data, **kw)

    def metrics(self):
        r = self.get('/metrics')
        check(r.status == 200, f'GET /metrics answered {r.status}')
        return r.body.decode()

    def metric(self, series, text=None):
        text = self.metrics() if text is None else text
        for line in text.splitlines():
            if line.startswith(series + ' '):
                return float(line.split()[-1])
        return 0.0

    # -- CLI --
    def cli(self, *args, ok=True, data_dir=None, timeout=30):
        conf = [] if self.embedded else ['-c', self.conf]
        p = subprocess.run([LEADLOOP, '-d', data_dir or self.data, *conf, *args], capture_output=True,
                           timeout=timeout, env=child_env())
        if ok and p.returncode != 0:
            raise TestFailure(f'leadloop {" ".join(args)!r} exited {p.returncode}: {p.stderr.decode(errors="replace")}')
        return p

    def events(self, *extra):
        p = self.cli('events', '--json', *extra)
        out = []
        for line in p.stdout.decode('utf-8').splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    raise TestFailure(f'events --json printed a line that is not JSON: {line[:300]!r}')
        return out

    def contact_show(self, email):
        return self.cli('contact', 'show', email).stdout.decode('utf-8')

    def contact_json(self, email):
        p = self.cli('contact', 'show', email, '--json')
        return json.loads(p.stdout.decode('utf-8'))

    def link(self, url, to, send=None, data_dir=None):
        args = ['link', url, '--to', to] + (['--send', str(send)] if send is not None else [])
        p = self.cli(*args, data_dir=data_dir)
        line = [ln for ln in p.stdout.decode().splitlines() if ln.strip()][-1].strip()
        check(line.startswith(self.base + '/c/'), f'leadloop link printed {p.stdout!r}, not {self.base}/c/TOKEN')
        return line[len(self.base) + 3:]

    def pixel(self, to, send=None):
        args = ['pixel', '--to', to] + (['--send', str(send)] if send is not None else [])
        p = self.cli(*args)
        line = [ln for ln in p.stdout.decode().splitlines() if ln.strip()][-1].strip()
        check(line.startswith(self.base + '/o/') and line.endswith('.gif'),
              f'leadloop pixel printed {p.stdout!r}, not {self.base}/o/TOKEN.gif')
        return line[len(self.base) + 3:-4]


def new_events(before, after):
    seqs = {e['seq'] for e in before}
    return [e for e in after if e['seq'] not in seqs]


def one(evs, what):
    check(len(evs) == 1, f'expected exactly one {what} event, got {len(evs)}: {evs}')
    return evs[0]


def check_gif(r, what):
    check(r.status == 200, f'{what}: status {r.status}, expected 200')
    check(r.body[:6] == b'GIF89a' and len(r.body) == GIF_LEN, f'{what}: not the 43-byte GIF: {r.body[:60]!r}')
    check('no-store' in (r.header('Cache-Control') or ''), f'{what}: Cache-Control {r.header("Cache-Control")!r}')


def check_unchanged(s, before, what):
    after = s.events()
    check(after == before, f'{what}: something was stored: {new_events(before, after)[:5]}')


def wait_until(pred, timeout=5.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# =====================================================================================
# The contract
# =====================================================================================

def test_healthz_and_metrics():
    with Server() as s:
        r = s.get('/healthz')
        check(r.status == 200, f'GET /healthz: {r.status}')
        text = s.metrics()
        for name in ('leadloop_requests_total', 'leadloop_events_stored_total', 'leadloop_rejects_total',
                     'leadloop_batch_events_bucket', 'leadloop_commit_seconds_bucket'):
            check(name in text, f'/metrics has no {name}')
        for line in text.splitlines():
            check(line.startswith('#') or re.match(r'[a-z_]+(\{[^}]*\})? [0-9.e+-]+$', line) or line == '',
                  f'/metrics line is not Prometheus text: {line!r}')
        stored0 = s.metric('leadloop_events_stored_total{type="pageview"}', text)
        r = s.beacon(beacon_body(new_visitor()))
        check(r.status == 204, f'beacon: {r.status} {r.body!r}')
        text = s.metrics()
        check(s.metric('leadloop_events_stored_total{type="pageview"}', text) == stored0 + 1,
              'leadloop_events_stored_total{type="pageview"} did not go up by 1 after one beacon')
        check(s.metric('leadloop_requests_total{endpoint="beacon",status="204"}', text) >= 1,
              'leadloop_requests_total{endpoint="beacon",status="204"} not counted')
        check(s.metric('leadloop_batch_events_count', text) >= 1, 'leadloop_batch_events_count is 0 after a commit')
        check('leadloop_journal' not in text, '/metrics shows journal series under ack: commit')


def test_snippet_etag():
    with Server() as s:
        r = s.get('/t.js')
        check(r.status == 200, f'GET /t.js: {r.status}')
        check((r.header('Content-Type') or '').startswith('application/javascript'),
              f'Content-Type {r.header("Content-Type")!r}')
        etag = r.header('ETag')
        check(etag, 'no ETag')
        check('public' in (r.header('Cache-Control') or ''), f'Cache-Control {r.header("Cache-Control")!r}')
        check(len(r.body) > 100, 'the snippet is empty')
        r2 = s.get('/t.js', {'If-None-Match': etag})
        check(r2.status == 304, f'If-None-Match with the ETag: {r2.status}, expected 304')
        check(r2.body == b'', '304 with a body')
        r3 = s.get('/t.js', {'If-None-Match': '"something-else"'})
        check(r3.status == 200 and r3.body == r.body, f'If-None-Match with another tag: {r3.status}')


def test_click_redirects_and_records():
    with Server() as s:
        tok = s.link('https://dest.example/landing?a=1#frag', 'alice@example.com', send=42)
        tok2 = s.link('https://dest.example/p', 'alice@example.com', send=42)
        cid = s.contact_json('alice@example.com')['contact']['id']
        before = s.events()
        r = s.get('/c/' + tok)
        check(r.status == 302, f'GET /c/<valid>: {r.status} {r.body!r}')
        v = r.cookie()
        check(v, f'no _ll Set-Cookie on the click: {r.headers}')
        loc = r.header('Location')
        check(loc == f'https://dest.example/landing?a=1&_llv={v}#frag',
              f'Location {loc!r}, expected https://dest.example/landing?a=1&_llv={v}#frag')
        r2 = s.get('/c/' + tok2)
        v2 = r2.cookie()
        check(r2.status == 302 and r2.header('Location') == f'https://dest.example/p?_llv={v2}',
              f'second link: {r2.status} Location {r2.header("Location")!r}')
        evs = new_events(before, s.events())
        check(len(evs) == 2, f'expected 2 click events, got {evs}')
        e = evs[0]
        check(e['type'] == 'click', f'type {e["type"]}')
        check(e['visitor'] == v, f'visitor {e["visitor"]} != cookie {v}')
        check(e['contact'] == cid and e.get('email') == 'alice@example.com', f'contact: {e}')
        check(e.get('send') == 42 and 'link' in e, f'send/link: {e}')
        check(e.get('url') == 'https://dest.example/landing?a=1#frag', f'url {e.get("url")!r}')
        # An email click (it names a send) from a browser: likely-human, provisional until the
        # judge settles it (judge.h); no JavaScript ran after it here.
        check(e['class'] == 'likely-human' and e.get('provisional'), f'class {e["class"]} for a Chrome user agent: {e}')


def test_cookie_attributes_and_handoff():
    """The visitor cookie carries the configured domain and lifetime; the hand-off goes before a
    fragment whether or not the URL has a query."""
    with Server(conf='cookie_domain: example.test\ncookie_days: 30\ncookie_name: lv') as s:
        tok = s.link('https://dest.example/doc#top', 'dora@example.com', send=7)
        r = s.get('/c/' + tok)
        cookies = [v for v in r.all('Set-Cookie') if v.startswith('lv=')]
        check(r.status == 302 and len(cookies) == 1, f'click: {r.status} {r.headers}')
        m = re.fullmatch(r'lv=([0-9a-f]{32}); Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax; Domain=example\.test',
                         cookies[0])
        check(m, f'Set-Cookie {cookies[0]!r}')
        loc = r.header('Location')
        check(m and loc == f'https://dest.example/doc?_llv={m.group(1)}#top', f'Location {loc!r}')


def test_keep_alive_across_responses():
    """Every kind of answer keeps an HTTP/1.1 connection open: a click's 302, a bad token's 404,
    a beacon's 204, the pixel and the snippet (h2o 2.2 closes after a non-200 without a length)."""
    with Server() as s:
        tok = s.link('https://dest.example/', 'ka@example.com')
        conn = http.client.HTTPConnection('127.0.0.1', s.port, timeout=10)
        try:
            sock = None
            for method, path, body, want in (('GET', '/c/' + tok, None, 302), ('GET', '/c/nope', None, 404),
                                             ('POST', '/e', beacon_body(new_visitor()), 204),
                                             ('GET', '/c/' + tok, None, 302), ('GET', '/t.js', None, 200),
                                             ('HEAD', '/c/' + tok, None, 302)):
                conn.request(method, path, body=body, headers={'User-Agent': CHROME_UA, 'Content-Type': 'text/plain'})
                r = conn.getresponse()
                r.read()
                check(r.status == want, f'{method} {path[:12]}: {r.status}, expected {want}')
                check(not r.will_close, f'{method} {path[:12]} ({r.status}) closes the connection: {r.getheaders()}')
                check(sock is None or conn.sock is sock, f'{method} {path[:12]} ran on a new connection')
                sock = conn.sock
        finally:
            conn.close()


def test_click_bad_tokens_404():
    with Server() as s:
        url = 'https://dest.example/offer?x=1'
        tok = s.link(url, 'alice@example.com', send=7)
        open_tok = s.pixel('alice@example.com', send=7)
        other_data = os.path.join(s.tmp, 'other-data')
        other_tok = s.link(url, 'alice@example.com', send=7, data_dir=other_data)
        check(other_tok != tok, 'two key rings signed the same token')
        raw = b64d(tok)
        alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
        cands = []
        for i in range(len(raw)):  # every byte of the payload and the tag
            b = bytearray(raw)
            b[i] ^= 0x01
            cands.append((f'decoded byte {i} flipped', b64e(bytes(b))))
        for i, c in enumerate(tok):  # every character of the wire form
            for delta in (1, 32):
                alt = alphabet[(alphabet.index(c) ^ delta) if delta == 32 else (alphabet.index(c) + 1) % 64]
                cands.append((f'char {i} {c!r}->{alt!r}', tok[:i] + alt + tok[i + 1:]))
        for n in (1, 2, 3, 4, 16, len(tok) // 2):
            cands.append((f'truncated by {n}', tok[:-n]))
        cands += [('first char only', tok[:1]), ('extra A', tok + 'A'), ('padding =', tok + '='),
                  ('padding ==', tok + '=='), ('trailing slash', tok + '/'), ('path below', tok + '/x'),
                  ('NUL', tok + '%00'), ('another key ring', other_tok), ('an open token at /c/', open_tok),
                  ('garbage', '!!!!'), ('dots', '..%2f..%2fetc'), ('5000 A', 'A' * 5000),
                  ('standard base64 chars', tok.replace('-', '+').replace('_', '/') if ('-' in tok or '_' in tok)
                   else '+/' + tok[2:])]
        before = s.events()
        bad0 = s.metric('leadloop_rejects_total{reason="bad_token"}')
        wrong = []
        for what, t in cands:
            if t == tok:
                continue
            r = s.get('/c/' + t)
            if r.status != 404 or r.header('Location') is not None:
                wrong.append(f'{what}: {r.status} Location={r.header("Location")!r}')
        check(not wrong, f'{len(wrong)} bad token(s) not answered 404 without Location:\n  ' + '\n  '.join(wrong[:20]))
        check_unchanged(s, before, 'bad tokens')
        bad1 = s.metric('leadloop_rejects_total{reason="bad_token"}')
        n = len([c for c in cands if c[1] != tok])
        check(bad1 - bad0 >= n, f'leadloop_rejects_total{{reason="bad_token"}} went up by {bad1 - bad0}, expected {n}')
        r = s.req('HEAD', '/c/' + tok[:-3])
        check(r.status == 404 and r.header('Location') is None, f'HEAD with a bad token: {r.status}')
        r = s.get('/c/' + tok)
        check(r.status == 302, f'the valid token no longer works: {r.status}')


def test_open_pixel():
    with Server() as s:
        tok = s.pixel('bob@example.com', send=9)
        click_tok = s.link('https://dest.example/', 'bob@example.com', send=9)
        cid = s.contact_json('bob@example.com')['contact']['id']
        before = s.events()
        r = s.get(f'/o/{tok}.gif')
        check_gif(r, 'valid open')
        e = one(new_events(before, s.events()), 'open')
        check(e['type'] == 'open' and e['contact'] == cid and e.get('send') == 9, f'open event: {e}')
        before = s.events()
        raw = bytearray(b64d(tok))
        raw[len(raw) // 2] ^= 0x40
        for what, path in [('changed byte', f'/o/{b64e(bytes(raw))}.gif'), ('truncated', f'/o/{tok[:-2]}.gif'),
                           ('no .gif', f'/o/{tok}'), ('click token', f'/o/{click_tok}.gif'),
                           ('garbage', '/o/zzz.gif'), ('just .gif', '/o/.gif')]:
            check_gif(s.get(path), what)
        check_unchanged(s, before, 'invalid open tokens')


def test_beacon_stores_pageview():
    with Server() as s:
        v = new_visitor()
        body = ('{"v":"%s","e":[{"t":"pageview","u":"https://site/p?utm_source=news&utm_campaign=q4",'
                '"r":"https://ref/","ti":"Title"}]}' % v)
        before = s.events()
        r = s.beacon(body)
        check(r.status == 204, f'POST /e: {r.status} {r.body!r}')
        check(r.body == b'', '204 with a body')
        e = one(new_events(before, s.events()), 'pageview')
        check(e['type'] == 'pageview', f'type {e["type"]}')
        check(e['visitor'] == v, f'visitor {e["visitor"]}, expected {v}')
        check(e.get('url') == 'https://site/p?utm_source=news&utm_campaign=q4', f'url {e.get("url")!r}')
        check(e.get('utm_source') == 'news' and e.get('utm_campaign') == 'q4', f'utm: {e}')
        check(e.get('referrer') == 'https://ref/' and e.get('title') == 'Title', f'referrer/title: {e}')
        # Several event types in one batch, with their data objects.
        before = s.events()
        body = beacon_body(v, [{'t': 'pageview', 'u': 'https://site/a'},
                               {'t': 'engage', 'u': 'https://site/a', 'd': {'engaged_ms': 1234, 'scroll': 80}},
                               {'t': 'download', 'u': 'https://site/a', 'd': {'file': 'https://site/x.pdf'}},
                               {'t': 'outbound', 'u': 'https://site/a', 'd': {'href': 'https://other/'}},
                               {'t': 'custom', 'u': 'https://site/a', 'd': {'name': 'calc', 'plan': 'pro'}}])
        r = s.beacon(body)
        check(r.status == 204, f'5-event beacon: {r.status} {r.body!r}')
        evs = new_events(before, s.events())
        check([e['type'] for e in evs] == ['pageview', 'engage', 'download', 'outbound', 'custom'],
              f'stored types {[e["type"] for e in evs]}')
        check(evs[1].get('data') == {'engaged_ms': 1234, 'scroll': 80}, f'engage data {evs[1].get("data")!r}')
        check(evs[4].get('data', {}).get('name') == 'calc', f'custom data {evs[4].get("data")!r}')
        check(all(e['visitor'] == v for e in evs), 'visitor not kept on every event of the batch')
        # Escapes, numbers and key order come through as the browser's JSON.stringify meant them.
        before = s.events()
        many = {f'k{i}': i for i in range(40)}
        body = ('{"v":"%s","e":[{"t":"custom","u":"https://site/a","ti":"Say \\"hi\\" \\\\u0000 caf\\u00e9 \\ud83d\\ude00",'
                '"d":{"z":1,"a":0.1,"big":1e20,"neg":-2.5e-7,"t":true,"n":null,"l":[1,"x"],"o":{"b":2}}},'
                '{"t":"custom","u":"https://site/a","d":%s}]}' % (v, json.dumps(many)))
        r = s.beacon(body.encode())
        check(r.status == 204, f'beacon with escapes and numbers: {r.status} {r.body!r}')
        evs = new_events(before, s.events())
        check(len(evs) == 2, f'{len(evs)} events stored, expected 2')
        check(evs[0].get('title') == 'Say "hi" \\u0000 caf\u00e9 \U0001f600', f'title {evs[0].get("title")!r}')
        want = {'z': 1, 'a': 0.1, 'big': 1e20, 'neg': -2.5e-7, 't': True, 'n': None, 'l': [1, 'x'], 'o': {'b': 2}}
        check(evs[0].get('data') == want and list(evs[0]['data']) == list(want), f'data {evs[0].get("data")!r}')
        check(evs[1].get('data') == many, f'data of 40 keys {evs[1].get("data")!r}')


def test_beacon_rejects_bad_batches():
    with Server() as s:
        v = new_visitor()
        pv = {'t': 'pageview', 'u': 'https://site/'}
        cases = [
            ('"e" an object', json.dumps({'v': v, 'e': {'t': 'pageview'}})),
            ('"e" a string', json.dumps({'v': v, 'e': 'pageview'})),
            ('"e" missing', json.dumps({'v': v})),
            ('51 events', beacon_body(v, [pv] * 51)),
            ('unknown type', beacon_body(v, [{'t': 'nope', 'u': 'https://site/'}])),
            ('server-only type click', beacon_body(v, [{'t': 'click', 'u': 'https://site/'}])),
            ('server-only type form', beacon_body(v, [{'t': 'form', 'u': 'https://site/'}])),
            ('server-only type open', beacon_body(v, [{'t': 'open'}])),
            ('no type', beacon_body(v, [{'u': 'https://site/'}])),
            ('numeric type', beacon_body(v, [{'t': 1}])),
            ('event not an object', beacon_body(v, ['pageview'])),
            ('one good, one unknown', beacon_body(v, [pv, {'t': 'nope'}])),
            # What the JSON grammar refuses and a lax parser may take (the beacon's is cJSON).
            ('text after the object', beacon_body(v, [pv]) + ' x'),
            ('a second object', beacon_body(v, [pv]) + beacon_body(v, [pv])),
            ('raw control character in a string', '{"v":"%s","e":[{"t":"pageview","u":"https://site/\x01"}]}' % v),
            ('NUL escape in a string', '{"v":"%s","e":[{"t":"pageview","u":"https://site/\\u0000x"}]}' % v),
            ('lone surrogate escape', '{"v":"%s","e":[{"t":"pageview","ti":"\\ud800"}]}' % v),
            ('key twice at the top', '{"v":"%s","e":[{"t":"pageview"}],"e":[{"t":"pageview"}]}' % v),
            ('key twice in an event', '{"v":"%s","e":[{"t":"pageview","t":"engage"}]}' % v),
            ('key twice in data', '{"v":"%s","e":[{"t":"custom","d":{"a":1,"b":{"c":1,"c":2}}}]}' % v),
            ('key twice in data of 40 keys', '{"v":"%s","e":[{"t":"custom","d":{%s,"k7":0}}]}'
             % (v, ','.join(f'"k{i}":{i}' for i in range(40)))),
            ('infinite number', '{"v":"%s","e":[{"t":"custom","d":{"n":1e999}}]}' % v),
            ('single quotes', "{'v':'%s','e':[{'t':'pageview'}]}" % v),
            ('trailing comma', '{"v":"%s","e":[{"t":"pageview"},]}' % v),
        ]
        before = s.events()
        wrong = []
        for what, body in cases:
            r = s.beacon(body)
            if r.status != 400:
                wrong.append(f'{what}: {r.status} {r.body[:80]!r}')
        check(not wrong, 'expected 400:\n  ' + '\n  '.join(wrong))
        check_unchanged(s, before, 'rejected batches')
        r = s.beacon(beacon_body(v, [pv] * 50))
        check(r.status == 204, f'50 events (the maximum): {r.status} {r.body!r}')
        check(len(new_events(before, s.events())) == 50, '50-event batch not stored whole')


def test_pixel_e_gif():
    with Server() as s:
        before = s.events()
        q = urllib.parse.urlencode({'t': 'pageview', 'u': 'https://site/nojs?utm_source=news&utm_campaign=q4',
                                    'r': 'https://ref/', 'ti': 'No JS'})
        r = s.get('/e.gif?' + q)
        check_gif(r, 'GET /e.gif')
        e = one(new_events(before, s.events()), 'pageview')
        check(e['type'] == 'pageview' and e.get('url') == 'https://site/nojs?utm_source=news&utm_campaign=q4',
              f'event {e}')
        check(e.get('utm_source') == 'news' and e.get('title') == 'No JS' and e.get('referrer') == 'https://ref/',
              f'event {e}')
        v = r.cookie()
        check(v is None or e['visitor'] == v, 'visitor differs from the cookie issued')


def _form_checks(s, email, before, secrets, fields_expected):
    evs = new_events(before, s.events())
    e = one(evs, 'form')
    check(e['type'] == 'form' and e.get('form') == 'contact', f'form event {e}')
    check(e.get('email') == email.lower(), f'email {e.get("email")!r}')
    fields = e.get('fields') or {}
    check(isinstance(fields, dict), f'fields is not an object: {fields!r}')
    check(set(fields) <= {'email', 'name', 'company'}, f'unconfigured fields kept: {sorted(fields)}')
    for k, val in fields_expected.items():
        check(fields.get(k) == val, f'field {k}: {fields.get(k)!r}, expected {val!r}')
    check(e['contact'] != 0, 'the form event has no contact')
    events_text = s.cli('events', '--json').stdout.decode()
    show = s.contact_show(email)
    show_json = s.cli('contact', 'show', email, '--json').stdout.decode()
    with open(os.path.join(s.data, 'data.mdb'), 'rb') as f:
        mdb = f.read()
    for sec in secrets:
        check(sec not in events_text, f'{sec!r} appears in events --json')
        check(sec not in show and sec not in show_json, f'{sec!r} appears in contact show')
        check(sec.encode() not in mdb, f'{sec!r} is in data.mdb')
    check('form' in show, f'contact show does not list the form event:\n{show}')
    for val in fields_expected.values():
        check(val in show, f'contact show does not list the profile field {val!r}:\n{show}')
    cj = json.loads(show_json)
    check(any(x.get('seq') == e['seq'] for x in cj.get('events', [])), 'the form event is not in the timeline')
    for k, val in fields_expected.items():
        check(cj['contact']['fields'].get(k) == val, f'profile field {k}: {cj["contact"]["fields"]}')
    return e


def test_form_urlencoded():
    with Server() as s:
        before = s.events()
        body = {'email': 'Carol@Example.com', 'name': 'Carol', 'company': 'ACME Corp', 'password': 'pw-Zq81-secret',
                'card': '4111111111111111', 'other': 'dropme-9x'}
        r = s.form('contact', body)
        check(r.status == 200, f'POST /f/contact (fetch): {r.status} {r.body!r}')
        check((r.header('Content-Type') or '').startswith('application/json'), f'Content-Type {r.header("Content-Type")}')
        check(json.loads(r.body).get('ok') is True, f'body {r.body!r}')
        _form_checks(s, 'carol@example.com', before, ['pw-Zq81-secret', '4111111111111111', 'dropme-9x'],
                     {'name': 'Carol', 'company': 'ACME Corp'})


def test_form_multipart():
    with Server() as s:
        before = s.events()
        b = '----llboundary7MA4YWxkTrZu0gW'
        parts = [('email', 'dan@example.com'), ('name', 'Dan Ü'), ('company', 'Dan & Co'),
                 ('password', 'pw-mp-77-secret'), ('card', '5500005555555559')]
        body = ''.join(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in parts)
        body += (f'--{b}\r\nContent-Disposition: form-data; name="name"; filename="evil.txt"\r\n'
                 f'Content-Type: text/plain\r\n\r\nfile-content-zz91\r\n--{b}--\r\n')
        r = s.form('contact', body.encode(), ctype=f'multipart/form-data; boundary={b}')
        check(r.status == 200, f'multipart post: {r.status} {r.body!r}')
        check(json.loads(r.body).get('ok') is True, f'body {r.body!r}')
        _form_checks(s, 'dan@example.com', before, ['pw-mp-77-secret', '5500005555555559', 'file-content-zz91'],
                     {'name': 'Dan Ü', 'company': 'Dan & Co'})


def test_form_json():
    with Server() as s:
        before = s.events()
        body = json.dumps({'email': 'erin@example.com', 'name': 'Erin', 'company': 'E Inc',
                           'password': 'pw-json-55-secret', 'card': '340000000000009', 'age': 42})
        r = s.form('contact', body, ctype='application/json')
        check(r.status == 200, f'JSON post: {r.status} {r.body!r}')
        check(json.loads(r.body).get('ok') is True, f'body {r.body!r}')
        _form_checks(s, 'erin@example.com', before, ['pw-json-55-secret', '340000000000009'],
                     {'name': 'Erin', 'company': 'E Inc'})


def test_form_browser_post_redirects():
    with Server() as s:
        r = s.form('contact', {'email': 'fay@example.com', 'name': 'Fay'}, mode='navigate')
        check(r.status == 303, f'browser post: {r.status}, expected 303')
        check(r.header('Location') == 'https://site.example/thanks', f'Location {r.header("Location")!r}')
        r = s.form('contact', {'email': 'fay@example.com', 'name': 'Fay'}, mode=None,
                   headers={'Accept': 'text/html,application/xhtml+xml'})
        check(r.status == 303 and r.header('Location') == 'https://site.example/thanks',
              f'browser post without Sec-Fetch-Mode (Accept: text/html): {r.status} {r.header("Location")!r}')
        r = s.form('contact', {'email': 'fay@example.com', 'name': 'Fay'}, mode='cors')
        check(r.status == 200, f'fetch post: {r.status}')
        check((r.header('Content-Type') or '').startswith('application/json'), f'Content-Type {r.header("Content-Type")}')
        j = json.loads(r.body)
        check(j.get('ok') is True, f'fetch body {r.body!r}')
        check(len([e for e in s.events() if e['type'] == 'form']) == 3, 'not every post was stored')


def test_form_unknown_id():
    with Server() as s:
        before = s.events()
        wrong = []
        for fid in ('nope', 'CONTACT', 'contact2', 'contac', 'contact%00', 'x' * 5000, '..%2f..%2fetc',
                    'contact%20', '%ff%fe'):
            r = s.form(fid, {'email': 'gus@example.com', 'name': 'Gus'})
            if r.status != 404:
                wrong.append(f'/f/{fid[:40]}: {r.status}')
        check(not wrong, 'unknown form ids not 404: ' + ', '.join(wrong))
        check_unchanged(s, before, 'unknown form ids')


def test_form_honeypot():
    with Server() as s:
        before = s.events()
        r = s.form('contact', {'email': 'bot-hp-1@example.com', 'name': 'Bot', '_hp': 'http://spam.example/'})
        check(r.status == 200, f'honeypot (fetch): {r.status}, expected the usual 200')
        r = s.form('contact', {'email': 'bot-hp-2@example.com', 'name': 'Bot', '_hp': 'x'}, mode='navigate')
        check(r.status in (200, 303), f'honeypot (browser): {r.status}, expected a success status')
        check_unchanged(s, before, 'honeypot posts')
        with open(os.path.join(s.data, 'data.mdb'), 'rb') as f:
            check(b'bot-hp-' not in f.read(), 'the honeypot email reached data.mdb')


def test_form_rate_limit():
    with Server(conf='form_rate_per_min: 3', rate=None) as s:
        if time.time() % 60 > 55:  # a fixed one-minute window: start the posts inside one minute
            time.sleep(60.5 - time.time() % 60)
        for i in range(3):
            r = s.form('contact', {'email': f'rl{i}@example.com', 'name': 'R'})
            check(r.status == 200, f'post {i + 1} of 3: {r.status} {r.body!r}')
        r = s.form('contact', {'email': 'rl3@example.com', 'name': 'R'})
        check(r.status == 429, f'4th post within the minute: {r.status}, expected 429')
        ra = r.header('Retry-After')
        check(ra is not None and ra.isdigit() and int(ra) > 0, f'Retry-After {ra!r}')
        check(len([e for e in s.events() if e['type'] == 'form']) == 3, 'the refused post was stored')


def test_form_invalid_email():
    with Server() as s:
        before = s.events()
        wrong = []
        for bad in ('not-an-email', 'a@b', 'a b@example.com', '@example.com', 'x@', 'x@example.com\r\nBcc: y@z.com',
                    'x@@example.com', 'x' * 300 + '@example.com'):
            r = s.form('contact', {'email': bad, 'name': 'N'})
            if r.status != 400:
                wrong.append(f'{bad[:40]!r}: {r.status}')
        check(not wrong, 'invalid emails not refused with 400: ' + ', '.join(wrong))
        check_unchanged(s, before, 'invalid emails')


def test_form_wrong_method():
    with Server() as s:
        for method, path, want in [('GET', '/f/contact', 'POST'), ('GET', '/f/x', 'POST'), ('PUT', '/f/contact', 'POST'),
                                   ('GET', '/e', 'POST'), ('POST', '/c/abc', 'GET'), ('DELETE', '/t.js', 'GET')]:
            r = s.req(method, path, b'' if method in ('PUT', 'POST') else None)
            check(r.status == 405, f'{method} {path}: {r.status}, expected 405')
            allow = r.header('Allow') or ''
            check(want in allow, f'{method} {path}: Allow {allow!r} does not name {want}')


def test_cli_contact_add():
    with Server() as s:
        s.cli('contact', 'add', 'Hal@Example.com', 'name=Hal', 'plan=pro')
        show = s.contact_show('hal@example.com')
        check('Hal' in show and 'pro' in show, f'contact show after contact add:\n{show}')
        j = s.contact_json('hal@example.com')
        check(j['contact']['email'] == 'hal@example.com' and j['contact']['fields'].get('plan') == 'pro', f'{j}')
        p = s.cli('contact', 'add', 'not-an-email', ok=False)
        check(p.returncode != 0, 'contact add accepted an invalid email')


# ---- identity ----

def test_identity_click_binds_cookie():
    with Server() as s:
        tok = s.link('https://dest.example/x', 'ann@example.com', send=1)
        cid = s.contact_json('ann@example.com')['contact']['id']
        r = s.get('/c/' + tok)
        check(r.status == 302, f'click {r.status}')
        v = r.cookie()
        m = re.search(r'[?&]_llv=([0-9a-f]{32})', r.header('Location') or '')
        check(m and m.group(1) == v, f'_llv in Location {r.header("Location")!r} vs cookie {v}')
        before = s.events()
        r = s.beacon(beacon_body(None, u='https://site.example/after-click'), {'Cookie': f'_ll={v}'})
        check(r.status == 204, f'beacon with the cookie: {r.status}')
        e = one(new_events(before, s.events()), 'pageview')
        check(e['visitor'] == v and e['contact'] == cid and e.get('email') == 'ann@example.com',
              f'beacon with Cookie _ll: visitor/contact {e}')
        before = s.events()
        r = s.beacon(beacon_body(m.group(1), u='https://other-domain.example/landing'))
        check(r.status == 204, f'beacon with v: {r.status}')
        e = one(new_events(before, s.events()), 'pageview')
        check(e['visitor'] == v and e['contact'] == cid, f'beacon with "v" from _llv: {e}')


def test_identity_attribution():
    with Server() as s:
        v = new_visitor()
        r = s.beacon(beacon_body(v, u='https://site.example/pricing-before-form'))
        check(r.status == 204, f'anonymous pageview {r.status}')
        pv = [e for e in s.events() if e.get('url') == 'https://site.example/pricing-before-form']
        check(len(pv) == 1 and pv[0]['contact'] == 0, f'anonymous pageview: {pv}')
        r = s.form('contact', {'email': 'ivy@example.com', 'name': 'Ivy'}, headers={'Cookie': f'_ll={v}'})
        check(r.status == 200, f'form {r.status} {r.body!r}')
        form = [e for e in s.events() if e['type'] == 'form']
        check(len(form) == 1 and form[0]['visitor'] == v, f'form event visitor: {form}')
        cj = s.contact_json('ivy@example.com')
        seqs = [e['seq'] for e in cj['events']]
        check(pv[0]['seq'] in seqs, f'contact show timeline {seqs} lacks the earlier pageview {pv[0]["seq"]}')
        show = s.contact_show('ivy@example.com')
        check('pageview' in show, f'contact show text lacks the pageview:\n{show}')
        # And later events of that visitor get the contact.
        r = s.beacon(beacon_body(v, u='https://site.example/after-form'))
        e = [e for e in s.events() if e.get('url') == 'https://site.example/after-form']
        check(len(e) == 1 and e[0]['contact'] == cj['contact']['id'], f'pageview after the form: {e}')


def test_identity_forward():
    with Server() as s:
        tok_a = s.link('https://dest.example/a', 'amy@example.com', send=1)
        tok_b = s.link('https://dest.example/b', 'ben@example.com', send=1)
        ida = s.contact_json('amy@example.com')['contact']['id']
        idb = s.contact_json('ben@example.com')['contact']['id']
        r = s.get('/c/' + tok_a)
        v = r.cookie()
        check(r.status == 302 and v, f'click A {r.status}')
        before = s.events()
        r = s.get('/c/' + tok_b, {'Cookie': f'_ll={v}'})
        check(r.status == 302, f'click B {r.status}')
        check(r.cookie() == v, 'the visitor cookie changed on the forwarded click')
        e = one(new_events(before, s.events()), 'click')
        check(e['contact'] == idb and e.get('email') == 'ben@example.com', f'forwarded click contact: {e}')
        check(e.get('forward') is True, f'forwarded click lacks "forward":true: {e}')
        check(e['visitor'] == v, 'forwarded click visitor')
        before = s.events()
        s.beacon(beacon_body(None, u='https://site.example/after-forward'), {'Cookie': f'_ll={v}'})
        e = one(new_events(before, s.events()), 'pageview')
        check(e['contact'] == ida, f'visitor no longer with A after the forwarded click: {e}')


# ---- client address ----

def test_xff_untrusted():
    with Server() as s:
        before = s.events()
        r = s.beacon(beacon_body(new_visitor()), {'X-Forwarded-For': '203.0.113.77'})
        check(r.status == 204, f'beacon {r.status}')
        tok = s.link('https://dest.example/', 'xff@example.com')
        s.get('/c/' + tok, {'X-Forwarded-For': '203.0.113.77'})
        evs = new_events(before, s.events())
        check(len(evs) == 2, f'events {evs}')
        for e in evs:
            check(e.get('ip') == '127.0.0.0', f'{e["type"]}: ip {e.get("ip")!r}, expected 127.0.0.0 (XFF from an '
                                              f'untrusted peer must be ignored)')


def test_xff_trusted():
    with Server(conf='trusted_proxies: ["127.0.0.1/32"]\nipv4_prefix: 24\nipv6_prefix: 48') as s:
        cases = [('203.0.113.77', '203.0.113.0'),
                 ('198.51.100.9, 203.0.113.77', '203.0.113.0'),
                 ('203.0.113.77, 127.0.0.1', '203.0.113.0'),
                 ('2001:db8:1:2:3:4:5:6', '2001:db8:1:0:0:0:0:0'),
                 ('not-an-address', '127.0.0.0')]
        wrong = []
        for xff, want in cases:
            before = s.events()
            r = s.beacon(beacon_body(new_visitor()), {'X-Forwarded-For': xff})
            check(r.status == 204, f'beacon {r.status}')
            e = one(new_events(before, s.events()), 'pageview')
            if e.get('ip') != want:
                wrong.append(f'XFF {xff!r}: ip {e.get("ip")!r}, expected {want!r}')
        check(not wrong, '; '.join(wrong))


# ---- the embedded default (make run) and stopping ----

def test_embedded_default_and_sigint():
    """No config file, as `make run`: keys are generated (0600), the default `contact` form keeps its
    fields, and SIGINT (Ctrl-C) stops the server cleanly with every answered event in the log."""
    s = Server()
    s.embedded = True
    with s:
        keys = os.path.join(s.data, 'keys')
        check(os.path.exists(keys) and (os.stat(keys).st_mode & 0o777) == 0o600,
              f'{keys} missing or not 0600')
        r = s.form('contact', 'email=Dee%40Example.com&first_name=Dee&company=Acme&password=hunter2')
        check(r.status in (200, 303), f'default form contact: {r.status} {r.body!r}')
        r = s.beacon(beacon_body(new_visitor()))
        check(r.status == 204, f'beacon {r.status}')
        s.proc.send_signal(signal.SIGINT)
        rc = s.proc.wait(10)
        s.proc = None
        check(rc == 0, f'leadloopd exited {rc} after SIGINT')
        evs = s.events()
        check([e['type'] for e in evs] == ['form', 'pageview'], f'events after SIGINT: {[e["type"] for e in evs]}')
        f = evs[0]
        check(f.get('email') == 'dee@example.com' and f.get('fields', {}).get('company') == 'Acme' and
              'password' not in f.get('fields', {}), f'default form event: {f}')
        # A restart over the same data keeps the keys: old links still verify.
        url = s.cli('link', 'https://dest.example/again', '--to', 'dee@example.com').stdout.decode().strip()
        check(url.startswith('http://127.0.0.1:8080/c/'), f'the default public_url is not http://127.0.0.1:8080: {url}')
        s.start()
        r = s.get(urllib.parse.urlsplit(url).path)
        check(r.status == 302, f'a link signed before the restart: {r.status}')


# ---- geo databases, TLS, HTTP/2 ----

def test_geo_city_and_asn():
    """With City and ASN databases configured, region, city, time zone, ASN and organisation are
    stored; the lookup uses the full address and the stored one is truncated."""
    tmp = tempfile.mkdtemp(prefix='ll-it-')
    city, asn = os.path.join(tmp, 'city.mmdb'), os.path.join(tmp, 'asn.mmdb')
    r = subprocess.run(['perl', 'deploy/build-geodb.pl', '--fixture', city, asn], capture_output=True, text=True)
    check(r.returncode == 0, f'build-geodb.pl --fixture failed: {r.stderr}')
    conf = (f'trusted_proxies: ["127.0.0.1"]\ngeo_city_db: {yaml_str(city)}\ngeo_asn_db: {yaml_str(asn)}\n'
            'ipv4_prefix: 24\nipv6_prefix: 32')
    with Server(conf=conf, tmp=tmp) as s:
        wrong = []
        for xff, want in (('198.51.100.77', {'country': 'US', 'region': 'CA', 'city': 'San Francisco',
                                              'tz': 'America/Los_Angeles', 'asn': 64500, 'org': 'Example Net',
                                              'ip': '198.51.100.0'}),
                          ('2001:db8:aa:bb::1', {'country': 'DE', 'region': 'BE', 'city': 'Berlin',
                                                 'tz': 'Europe/Berlin', 'ip': '2001:db8:0:0:0:0:0:0'})):
            before = s.events()
            r = s.beacon(beacon_body(new_visitor()), {'X-Forwarded-For': xff})
            check(r.status == 204, f'beacon {r.status}')
            e = one(new_events(before, s.events()), 'pageview')
            for k, v in want.items():
                got = e.get(k)
                if k == 'asn' and isinstance(got, str):
                    got = int(got.lstrip('AS') or 0)
                if got != v:
                    wrong.append(f'{xff}: {k} = {got!r}, expected {v!r} (event {e})')
        check(not wrong, '\n  '.join([''] + wrong))


def _self_signed(tmp):
    cert, key = os.path.join(tmp, 'cert.pem'), os.path.join(tmp, 'key.pem')
    r = subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
                        '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
                       capture_output=True, text=True)
    check(r.returncode == 0, f'openssl req failed: {r.stderr}')
    ctx = ssl.create_default_context(cafile=cert)
    return cert, key, ctx


def test_tls_and_secure_cookie():
    tmp = tempfile.mkdtemp(prefix='ll-it-')
    cert, key, ctx = _self_signed(tmp)
    s = Server(conf=f'tls_cert: {yaml_str(cert)}\ntls_key: {yaml_str(key)}', tmp=tmp)
    s.tls_context = ctx
    with s:
        tok = s.link('https://dest.example/tls', 'tls@example.com')
        conn = http.client.HTTPSConnection('127.0.0.1', s.port, timeout=10, context=ctx)
        conn.request('GET', '/c/' + tok, headers={'User-Agent': CHROME_UA})
        r = conn.getresponse()
        r.read()
        check(r.status == 302 and r.getheader('Location', '').startswith('https://dest.example/tls'),
              f'click over TLS: {r.status} {r.getheader("Location")}')
        cookie = r.getheader('Set-Cookie', '')
        check('; Secure' in cookie and 'HttpOnly' in cookie, f'the visitor cookie under TLS is not Secure: {cookie!r}')
        conn.close()
        # Plain HTTP on the TLS port is refused, not served.
        resp, _ = raw_exchange(s.port, b'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', timeout=5)
        check(not resp.startswith(b'HTTP/1.1 200'), 'plain HTTP answered on the TLS port')
        # HTTP/2 is off by default: ALPN offers only http/1.1.
        ctx2 = ssl.create_default_context(cafile=cert)
        ctx2.set_alpn_protocols(['h2', 'http/1.1'])
        with socket.create_connection(('127.0.0.1', s.port), timeout=5) as raw:
            with ctx2.wrap_socket(raw, server_hostname='127.0.0.1') as tls:
                check(tls.selected_alpn_protocol() in (None, 'http/1.1'),
                      f'ALPN picked {tls.selected_alpn_protocol()} with http2 off')


def test_http2_when_enabled():
    tmp = tempfile.mkdtemp(prefix='ll-it-')
    cert, key, ctx = _self_signed(tmp)
    s = Server(conf=f'tls_cert: {yaml_str(cert)}\ntls_key: {yaml_str(key)}\nhttp2: true', tmp=tmp)
    s.tls_context = ctx
    with s:
        ctx2 = ssl.create_default_context(cafile=cert)
        ctx2.set_alpn_protocols(['h2', 'http/1.1'])
        with socket.create_connection(('127.0.0.1', s.port), timeout=5) as raw:
            with ctx2.wrap_socket(raw, server_hostname='127.0.0.1') as tls:
                check(tls.selected_alpn_protocol() == 'h2', f'ALPN picked {tls.selected_alpn_protocol()} with http2 on')
                # The HTTP/2 connection preface and an empty SETTINGS frame: the server answers SETTINGS.
                tls.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + b'\x00\x00\x00\x04\x00\x00\x00\x00\x00')
                head = tls.recv(9)
                check(len(head) == 9 and head[3] == 4, f'no SETTINGS frame from the server: {head!r}')


# ---- classification ----

def test_classification():
    with Server() as s:
        tok = s.link('https://dest.example/', 'cls@example.com')
        cases = [('curl', 'GET', {}, 'curl/8.5.0', 'bot', 'bot_ua'),
                 ('prefetch', 'GET', {'Sec-Purpose': 'prefetch'}, CHROME_UA, 'prefetch', None),
                 ('HEAD', 'HEAD', {}, CHROME_UA, 'bot', 'head'),
                 ('headless', 'GET', {}, CHROME_UA.replace('Chrome/', 'HeadlessChrome/'), 'bot', None),
                 ('Chrome', 'GET', {}, CHROME_UA, 'human', None)]
        wrong = []
        for what, method, h, ua, cls, reason in cases:
            before = s.events()
            r = s.req(method, '/c/' + tok, None, h, ua=ua)
            if r.status != 302 or not r.header('Location'):
                wrong.append(f'{what}: {r.status}, Location {r.header("Location")!r}')
                continue
            evs = new_events(before, s.events())
            if len(evs) != 1:
                wrong.append(f'{what}: {len(evs)} events')
                continue
            e = evs[0]
            if e['class'] != cls or (reason and reason not in e['reasons']):
                wrong.append(f'{what}: class {e["class"]} reasons {e["reasons"]}, expected {cls}'
                             + (f' with {reason}' if reason else ''))
        check(not wrong, '; '.join(wrong))


# =====================================================================================
# Bad input it must survive
# =====================================================================================

def test_oversized_body():
    with Server(conf='max_body: 65536') as s:
        before = s.events()
        big = b'{"e":[{"t":"pageview","u":"https://site/' + b'a' * 100000 + b'"}]}'
        hdr = b'POST /e HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nConnection: close\r\n'
        expect_refused(s.port, hdr + b'Content-Length: %d\r\n\r\n' % len(big) + big, '100 KB beacon', [413] + list(range(400, 500)))
        chunked = b''.join(b'%x\r\n%s\r\n' % (len(big[i:i + 8192]), big[i:i + 8192]) for i in range(0, len(big), 8192))
        expect_refused(s.port, hdr + b'Transfer-Encoding: chunked\r\n\r\n' + chunked + b'0\r\n\r\n', '100 KB chunked beacon')
        expect_refused(s.port, hdr + b'Content-Length: 1073741824\r\n\r\n' + big[:1000], 'declared 1 GB body')
        form = urllib.parse.urlencode({'email': 'big@example.com', 'name': 'x' * 200000}).encode()
        expect_refused(s.port, b'POST /f/contact HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
                       b'Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n' % len(form) + form,
                       '200 KB form')
        check_unchanged(s, before, 'oversized bodies')
        ok = beacon_body(new_visitor(), [{'t': 'pageview', 'u': 'https://site/' + 'b' * 1100}] * 50)
        check(len(ok) < 65536, 'test bug')
        r = s.beacon(ok)
        check(r.status == 204, f'a {len(ok)}-byte beacon (under max_body): {r.status} {r.body!r}')


def test_oversized_headers():
    with Server() as s:
        def req(extra, path=b'/healthz', method=b'GET'):
            return method + b' ' + path + b' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' + extra + b'\r\n'
        expect_refused(s.port, req(b'X-Big: ' + b'a' * 100 * 1024 + b'\r\n'), '100 KB header')
        expect_refused(s.port, req(b'X-Big: ' + b'a' * 500 * 1024 + b'\r\n'), '500 KB header')
        expect_refused(s.port, req(b'Cookie: _ll=' + b'a' * 100 * 1024 + b'\r\nContent-Length: 2\r\n', b'/e', b'POST')
                       + b'{}', '100 KB cookie')
        expect_refused(s.port, req(b''.join(b'X-H%d: v\r\n' % i for i in range(5000))), '5000 headers')
        expect_refused(s.port, req(b'', b'/c/' + b'A' * 200 * 1024), '200 KB request target')
        r = s.get('/healthz')
        check(r.status == 200, f'healthz after oversized headers: {r.status}')


def test_malformed_json():
    with Server() as s:
        before = s.events()
        v = new_visitor()
        bodies = ['{', '{"v":', 'null', '[]', '"str"', '42', '{"e":[{"t":"pageview"}]} trailing',
                  "{'e':[{'t':'pageview'}]}", '{"e":[{"t":"pageview"}],}', '[' * 60000, '{"e":' + '[' * 5000,
                  '{"e":[{"t":"pageview","u":NaN}]}', '{"e":[{"t":"pageview","x":1e999999}]}',
                  '{"e":[{"t":"pageview","u":"\\ud800"}]}', '{"e":[{"t":"pageview","u":"a\\u0000b"}]}',
                  '{"e":[{"t":"pageview"}],"e":[{"t":"pageview"}]}', '\x00', ' ', '{"v":"%s","e":[{"t":"pageview",' % v]
        wrong = []
        for b in bodies:
            r = s.beacon(b)
            if r.status != 400:
                wrong.append(f'beacon {b[:40]!r}: {r.status}')
        for b in ['{', '[]', '"x"', 'null', '[' * 60000, '{"email":"j@example.com",}', '{"email":"j@example.com"']:
            r = s.form('contact', b, ctype='application/json')
            if r.status != 400:
                wrong.append(f'form JSON {b[:40]!r}: {r.status}')
        for b, ct in [('--x\r\nContent-Disposition: form-data; name="email"\r\n\r\nj@example.com', 'multipart/form-data; boundary=x'),
                      ('no boundary at all', 'multipart/form-data; boundary=zzz'),
                      ('--x\r\n\r\n', 'multipart/form-data; boundary=x'),
                      ('--x\r\nContent-Disposition: form-data; name="email"\r\n\r\nj@example.com\r\n--x--\r\n',
                       'multipart/form-data')]:
            r = s.form('contact', b, ctype=ct)
            if r.status != 400:
                wrong.append(f'multipart {b[:30]!r} ({ct}): {r.status}')
        check(not wrong, 'expected 400:\n  ' + '\n  '.join(wrong))
        check_unchanged(s, before, 'malformed JSON')


def test_invalid_utf8():
    with Server() as s:
        before = s.events()
        bad0 = s.metric('leadloop_rejects_total{reason="bad_utf8"}')
        v = new_visitor().encode()
        wrong = []
        for seq in (b'\xff\xfe', b'\xc0\xaf', b'\xed\xa0\x80', b'\xe2\x82', b'\xf8\x88\x80\x80\x80', b'\x80'):
            body = b'{"v":"' + v + b'","e":[{"t":"pageview","u":"https://site/' + seq + b'"}]}'
            r = s.beacon(body)
            if r.status != 400:
                wrong.append(f'beacon with {seq!r}: {r.status}')
        r = s.form('contact', 'email=u8%40example.com&name=%ff%fe')
        if r.status != 400:
            wrong.append(f'urlencoded %ff: {r.status}')
        mp = (b'--b\r\nContent-Disposition: form-data; name="email"\r\n\r\nu8@example.com\r\n'
              b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\n\xc0\xaf\r\n--b--\r\n')
        r = s.form('contact', mp, ctype='multipart/form-data; boundary=b')
        if r.status != 400:
            wrong.append(f'multipart raw \\xc0\\xaf: {r.status}')
        r = s.form('contact', b'{"email":"u8@example.com","name":"\xff"}', ctype='application/json')
        if r.status != 400:
            wrong.append(f'JSON form raw \\xff: {r.status}')
        check(not wrong, 'expected 400:\n  ' + '\n  '.join(wrong))
        r = s.get('/e.gif?t=pageview&u=https%3A%2F%2Fsite%2F%FF%FE')
        check_gif(r, '/e.gif with invalid UTF-8')
        check_unchanged(s, before, 'invalid UTF-8')
        check(s.metric('leadloop_rejects_total{reason="bad_utf8"}') > bad0, 'bad_utf8 rejects not counted')


def test_open_redirect():
    with Server() as s:
        refused = []
        for url in ('javascript:alert(1)', 'JAVASCRIPT:alert(1)', 'http://a/\r\nSet-Cookie: x', 'ftp://files.example/x',
                    'data:text/html,<script>alert(1)</script>', '//evil.example/', 'http://a/\nLocation: http://evil/',
                    'http://a/ b', 'http://a/\tb', 'http://a\\@evil.example/', ' http://evil.example/',
                    'http:evil.example', 'https://' + 'a' * 3000 + '.example/', 'vbscript:msgbox(1)', 'file:///etc/passwd'):
            p = s.cli('link', url, '--to', 'or@example.com', ok=False)
            if p.returncode == 0 or b'/c/' in p.stdout:
                refused.append(f'{url[:50]!r} -> exit {p.returncode} {p.stdout[:120]!r}')
        check(not refused, 'leadloop link signed a dangerous destination:\n  ' + '\n  '.join(refused))
        url = 'https://good.example/path?q=1'
        tok = s.link(url, 'or@example.com')
        r = s.get('/c/' + tok)
        check(r.status == 302 and (r.header('Location') or '').startswith(url + '&_llv='),
              f'valid token: {r.status} {r.header("Location")!r}')
        raw = b64d(tok)
        at = raw.find(url.encode())
        region = range(at, at + len(url)) if at >= 0 else range(len(raw))
        before = s.events()
        wrong = []
        forged = []
        for i in region:  # change each byte of the destination inside the signed token
            b = bytearray(raw)
            b[i] = ord('x') if b[i] != ord('x') else ord('y')
            forged.append(b64e(bytes(b)))
        if at >= 0:
            for evil in ('https://evil.example/pa', 'javascript:alert(1)//x', 'https://good.example/path?q=2'):
                e = evil.encode()[:len(url)].ljust(len(url), b'/')
                forged.append(b64e(raw[:at] + e + raw[at + len(url):]))
        for t in forged:
            r = s.get('/c/' + t)
            if r.status != 404 or r.header('Location') is not None:
                wrong.append(f'{r.status} Location={r.header("Location")!r}')
        check(not wrong, f'{len(wrong)} forged destination(s) not 404: {wrong[:5]}')
        check_unchanged(s, before, 'forged destinations')


def test_crlf_not_echoed():
    with Server() as s:
        def post_form(extra_headers, fid='nothanks'):
            body = b'email=crlf%40example.com&name=C'
            req = (b'POST /f/' + fid.encode() + b' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
                   b'Content-Type: application/x-www-form-urlencoded\r\nSec-Fetch-Mode: navigate\r\n'
                   b'Accept: text/html\r\nUser-Agent: ' + CHROME_UA.encode() + b'\r\n' + extra_headers +
                   b'Content-Length: %d\r\n\r\n' % len(body) + body)
            return s.raw(req)

        def check_head(resp, what):
            if not resp:
                return None
            status, headers, head, _ = parse_raw(resp)
            for name, value in headers:
                check(b'\r' not in value and b'\n' not in value, f'{what}: CR/LF in header {name!r}')
                check(not (name.lower() == b'set-cookie' and b'evil' in value), f'{what}: injected Set-Cookie {value!r}')
                check(name.lower() not in (b'x-injected', b'evil'), f'{what}: injected header {name!r}')
                if name.lower() == b'location':
                    check(value.startswith(b'http://') or value.startswith(b'https://'),
                          f'{what}: Location {value!r} is not http(s)')
            return status, dict((n.lower(), v) for n, v in headers)

        resp, _ = post_form(b'Referer: http://site.example/p?x=%0d%0aSet-Cookie:%20evil=1&y=%0D%0AX-Injected:%201\r\n')
        st, h = check_head(resp, 'Referer with %0d%0a')
        check(st in (200, 303), f'Referer with %0d%0a: status {st}')
        if st == 303:
            check(h[b'location'] == b'http://site.example/p?x=%0d%0aSet-Cookie:%20evil=1&y=%0D%0AX-Injected:%201',
                  f'Location {h[b"location"]!r}')
        resp, _ = post_form(b'Referer: http://site.example/a\rSet-Cookie: evil=1\r\n')
        check_head(resp, 'Referer with a bare CR')
        resp, _ = post_form(b'Referer: http://site.example/a\nX-Injected: 1\r\n')
        check_head(resp, 'Referer with a bare LF')
        for ref in (b'javascript:alert(1)', b'data:text/html,x', b'//evil.example/', b'ftp://evil.example/'):
            resp, _ = post_form(b'Referer: ' + ref + b'\r\n')
            r = check_head(resp, f'Referer {ref!r}')
            check(r is None or b'location' not in r[1], f'Referer {ref!r} used as Location {r and r[1].get(b"location")!r}')
        for ref in (b'http://site.example/\x01x', b'http://site.example/\xff', b'http://a b/', b'http://a/\tb'):
            resp, _ = post_form(b'Referer: ' + ref + b'\r\n')
            check_head(resp, f'Referer {ref!r}')
        # Origin: a good one is echoed, junk never.
        good = s.beacon(beacon_body(new_visitor()), {'Origin': 'https://site.example'})
        check(good.header('Access-Control-Allow-Origin') == 'https://site.example',
              f'a well-formed Origin is not echoed: {good.headers}')
        junk = [b'javascript:alert(1)', b'null', b'http://a b', b'http://a\x01b', b'http://' + b'a' * 300,
                b'http://ex\xffample', b'file://', b'http://a\tb', b'*']
        for origin in junk + [b'http://x%0d%0aSet-Cookie:evil=1']:
            body = beacon_body(new_visitor()).encode()
            for path in (b'/e', b'/f/contact'):
                req = (b'POST ' + path + b' HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\n'
                       b'Origin: ' + origin + b'\r\nContent-Length: %d\r\n\r\n' % len(body) + body)
                resp, _ = s.raw(req)
                r = check_head(resp, f'Origin {origin!r} on {path!r}')
                if r and origin in junk:
                    acao = r[1].get(b'access-control-allow-origin')
                    check(acao is None, f'junk Origin {origin!r} echoed on {path!r}: {acao!r}')
        # Control characters stored from a beacon come back as valid JSON.
        v = new_visitor()
        r = s.beacon(json.dumps({'v': v, 'e': [{'t': 'pageview', 'u': 'https://site/x\r\nSet-Cookie: evil=1\u0001',
                                                'ti': 'T\u2028'}]}))
        check(r.status == 204, f'beacon with escaped controls: {r.status}')
        evs = [e for e in s.events() if e['visitor'] == v]
        check(len(evs) == 1 and evs[0].get('url') == 'https://site/x\r\nSet-Cookie: evil=1\u0001',
              f'control characters did not round-trip through events --json: {evs}')


def test_garbage_cookies():
    with Server() as s:
        tok = s.link('https://dest.example/', 'cookie@example.com')
        garbage = ['_ll=../../x', '_ll=' + 'a' * 33, '_ll=' + 'b' * 31, '_ll=' + 'g' * 32, '_ll=' + 'c' * 7000,
                   'x=1; ' + 'y' * 9000 + '; _ll=' + 'd' * 32, '_ll=; _ll=zz', '_ll="' + 'e' * 32 + '"',
                   '_ll=' + 'f' * 32 + 'ff', '_ll=%' + '0' * 31, '_ll=' + ' ' * 32]
        wrong = []
        for c in garbage:
            for what in ('beacon', 'click'):
                before = s.events()
                if what == 'beacon':
                    r = s.beacon(beacon_body(None), {'Cookie': c})
                    ok = r.status == 204
                else:
                    r = s.get('/c/' + tok, {'Cookie': c})
                    ok = r.status == 302
                if not ok:
                    if not (len(c) > 8192 and 400 <= r.status < 500):
                        wrong.append(f'{what} with {c[:30]!r}...: {r.status}')
                    continue
                try:
                    v = r.cookie()
                except TestFailure as e:
                    wrong.append(f'{what} with {c[:30]!r}: {e}')
                    continue
                if v is None:
                    wrong.append(f'{what} with {c[:30]!r}: no fresh _ll cookie issued')
                    continue
                if v in c:
                    wrong.append(f'{what} with {c[:30]!r}: the garbage was kept as the visitor ({v})')
                evs = new_events(before, s.events())
                if len(evs) != 1 or evs[0]['visitor'] != v:
                    wrong.append(f'{what} with {c[:30]!r}: stored visitor {[e["visitor"] for e in evs]} != cookie {v}')
        check(not wrong, '\n  '.join([''] + wrong))


def test_client_disconnects_before_commit():
    with Server() as s:
        v = new_visitor()
        n = 200
        for i in range(n):
            body = beacon_body(v, u=f'https://site.example/gone?m={i}').encode()
            req = (b'POST /e HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n' % len(body)
                   + body)
            sock = socket.create_connection(('127.0.0.1', s.port), timeout=5)
            sock.sendall(req)
            if i % 2:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            sock.close()
        time.sleep(0.5)
        r = s.get('/healthz')
        check(r.status == 200, f'healthz after 200 abandoned beacons: {r.status}')
        r = s.beacon(beacon_body(v, u='https://site.example/after'))
        check(r.status == 204, f'a beacon after the abandoned ones: {r.status}')
        evs = [e for e in s.events() if e['visitor'] == v]
        gone = [e for e in evs if e.get('url', '').startswith('https://site.example/gone?m=')]
        check(len(gone) <= n, f'{len(gone)} events stored for {n} requests')
        seen = set()
        for e in gone:
            m = int(e['url'].split('=')[1])
            check(0 <= m < n and m not in seen and e['type'] == 'pageview', f'bad or duplicate event {e}')
            seen.add(m)
        check(any(e.get('url') == 'https://site.example/after' for e in evs), 'the last beacon is not stored')


def _beacons_until_kill9(s, tag, workers=8, seconds=1.2):
    """Posts beacons from several connections, kills leadloopd with SIGKILL mid-load, and returns
    the markers of the beacons answered 204 (each marker sent once)."""
    v = new_visitor()
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def worker(i):
        conn, n = None, 0
        while not stop.is_set():
            marker = f'{tag}w{i}n{n}'
            n += 1
            body = beacon_body(v, u=f'https://site.example/load?m={marker}')
            try:
                if conn is None:
                    conn = http.client.HTTPConnection('127.0.0.1', s.port, timeout=5)
                conn.request('POST', '/e', body=body, headers={'Content-Type': 'text/plain', 'User-Agent': CHROME_UA})
                r = conn.getresponse()
                r.read()
                if r.status == 204:
                    with lock:
                        acked.append(marker)
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.02)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    s.kill9()
    time.sleep(0.8)
    stop.set()
    for t in threads:
        t.join(10)
    with lock:
        out = list(acked)
    check(len(out) > 20, f'only {len(out)} beacons acknowledged before the kill: the test proves nothing')
    return out


def _stored_markers(s):
    """Every load marker in the store, with repeats."""
    return [e['url'].split('=', 1)[1] for e in s.events()
            if (e.get('url') or '').startswith('https://site.example/load?m=')]


def _check_all_stored_once(s, acked, what):
    stored = _stored_markers(s)
    have = set(stored)
    missing = [m for m in acked if m not in have]
    check(not missing, f'{len(missing)} of {len(acked)} acknowledged beacons lost after {what}: {missing[:10]}')
    twice = sorted({m for m in stored if stored.count(m) > 1}) if len(have) != len(stored) else []
    check(not twice, f'{len(twice)} beacons stored twice after {what}: {twice[:10]}')


def test_kill9_under_load():
    s = Server()
    s.start()
    acked = _beacons_until_kill9(s, 'c')
    with s:  # restart on the same data directory (new port)
        _check_all_stored_once(s, acked, 'kill -9')
        r = s.beacon(beacon_body(new_visitor(), u='https://site.example/after-restart'))
        check(r.status == 204, f'beacon after restart: {r.status}')


def _undo_last_commit(data_dir):
    """Makes the store open at the commit before its last, as after a power cut that lost the
    last commit's meta page: ack: journal commits with MDB_NOMETASYNC (store.h). LMDB keeps two
    meta pages and opens at the one with the higher transaction id; the other is overwritten by
    it (the older meta in both slots: the state the lost write leaves). Returns the txn id undone."""
    path = os.path.join(data_dir, 'data.mdb')
    with open(path, 'r+b') as f:
        head = f.read(4096)
        psize = struct.unpack_from('<I', head, 40)[0]  # the free db's md_pad holds the page size
        f.seek(0)
        metas = f.read(2 * psize)
        txn = [struct.unpack_from('<Q', metas, i * psize + 144)[0] for i in (0, 1)]  # mm_txnid
        new = 0 if txn[0] > txn[1] else 1
        old = 1 - new
        f.seek(new * psize + 16)  # after the page header (its page number stays)
        f.write(metas[old * psize + 16:(old + 1) * psize])
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(os.path.join(data_dir, 'lock.mdb')):
        os.unlink(os.path.join(data_dir, 'lock.mdb'))
    return txn[new]


def test_journal_kill9_and_lost_commit():
    """ack: journal: every beacon answered 204 is stored exactly once after kill -9 mid-load, even
    when the store's last commit is undone as a power cut undoes it (its meta page lost). Then a
    journal small enough to start over many times under load (journal_kb: 64; made anew at that
    size from the default one), fed by two event loops, killed again: a start under ack: commit
    replays what it holds and removes it."""
    s = Server(conf='ack: journal')
    s.start()
    acked = _beacons_until_kill9(s, 'j')
    # The default journal (32 MiB) does not fill in this test: the writer never synced the store
    # on its own, so its last commit is one a power cut can undo.
    _undo_last_commit(s.data)
    stored = set(_stored_markers(s))
    check(any(m not in stored for m in acked),
          'after the kill and the undone commit every answered beacon was in the store already: nothing for the '
          'journal to bring back, the test proves nothing')
    with s:
        check('not in the store were stored from' in s.stderr_text(), 'the start did not report replaying the journal')
        _check_all_stored_once(s, acked, 'kill -9 and an undone commit under ack: journal')
    small = Server(conf='ack: journal\njournal_kb: 64\nthreads: 2', data_dir=s.data, tmp=s.tmp)
    small.start()
    check(os.path.getsize(os.path.join(s.data, 'edge.journal')) == 65536, 'edge.journal is not journal_kb long')
    acked += _beacons_until_kill9(small, 'k')
    with Server(conf='ack: commit', data_dir=s.data, tmp=s.tmp) as c:
        _check_all_stored_once(c, acked, 'kill -9 under ack: journal with journal_kb: 64, restarted under ack: commit')
        check(not os.path.exists(os.path.join(s.data, 'edge.journal')), 'edge.journal left after a start under ack: commit')


def _small_store_server(conf=''):
    """A started server on the smallest map size it starts with, to fill."""
    tmp = tempfile.mkdtemp(prefix='ll-it-')
    tried = []
    for size in ('1m', '2m', '4m', '8m', '16m', '32m', '64m'):
        cand = Server(conf=f'map_size: {size}\n{conf}', tmp=tmp, data_dir=os.path.join(tmp, 'data-' + size))
        try:
            return cand.start()
        except TestFailure as e:
            tried.append(f'{size}: {str(e).splitlines()[0][:200]}')
            cand.cleanup()
    raise TestFailure('no map_size from 1m to 64m lets leadloopd start: ' + '; '.join(tried))


def _lost_total(s, text=None):
    text = s.metrics() if text is None else text
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith('leadloop_events_lost_total{'))


def _answers_before_commit(conf):
    """Opens, clicks and snippet events are answered, a form after its commit, and all are stored."""
    with Server(conf=conf) as s:
        tok = s.link('https://dest.example/q', 'queued@example.com', send=3)
        pix = s.pixel('queued@example.com', send=3)
        v = new_visitor()
        before = s.events()
        r = s.get('/c/' + tok)
        check(r.status == 302 and (r.header('Location') or '').startswith('https://dest.example/q?_llv='),
              f'click: {r.status} Location {r.header("Location")!r}')
        check_gif(s.get(f'/o/{pix}.gif'), 'open')
        r = s.beacon(beacon_body(v, u='https://site.example/queued'))
        check(r.status == 204, f'beacon: {r.status} {r.body!r}')
        check_gif(s.get('/e.gif?t=pageview&u=https%3A%2F%2Fsite.example%2Fnojs'), 'GET /e.gif')
        r = s.form('contact', {'email': 'queued-form@example.com', 'name': 'Q'})
        check(r.status == 200, f'form: {r.status} {r.body!r}')
        # Answered before their commit, still stored: the form's answer came after its commit,
        # and the writer commits in queue order, so all are in by now or within a commit or two.
        want = ['click', 'open', 'pageview', 'pageview', 'form']
        got = []

        def stored():
            got[:] = [e['type'] for e in new_events(before, s.events())]
            return len(got) >= len(want)
        wait_until(stored)
        check(sorted(got) == sorted(want), f'stored {got}, expected {want}')


def _full_store_answers(conf):
    """On a full store snippet events are answered (204, the image) and counted lost, where ack:
    commit answers 503 (test_store_full); forms still get 503."""
    s = _small_store_server(conf)
    with s:
        v = new_visitor()
        deadline = time.time() + 40
        i, full, bad = 0, False, []
        while time.time() < deadline and not full:
            body = beacon_body(v, [{'t': 'pageview', 'u': f'https://site.example/fill/{i}/{j}?' + 'p' * 150}
                                   for j in range(50)])
            r = s.beacon(body)
            if r.status != 204:
                bad.append(r.status)
                break
            i += 1
            if i % 20 == 0:
                full = _lost_total(s) > 0
        check(not bad, f'a beacon under {conf} answered {bad[0] if bad else 0}, expected 204 even when full')
        check(full, f'the store did not fill (no leadloop_events_lost_total) after {i} beacons in 40 s')
        statuses = set()
        for k in range(400):
            statuses.add(s.beacon(beacon_body(v, u=f'https://site.example/small/{k}')).status)
            rf = s.form('contact', {'email': f'qfull{k}@example.com', 'name': 'F'})
            if rf.status == 503:
                break
        check(statuses == {204}, f'beacons on a filling store under {conf}: {statuses}, expected only 204')
        check(rf.status == 503, f'form on the full store under {conf}: {rf.status}, expected 503')
        lost, counted = _lost_total(s), False
        for k in range(50):  # the last free bytes of a page may still take a small event
            check_gif(s.get(f'/e.gif?t=pageview&u=https%3A%2F%2Fsite.example%2Flate%2F{k}%3F' + 'q' * 1000),
                      '/e.gif on the full store')
            counted = wait_until(lambda: _lost_total(s) > lost, timeout=0.5)
            if counted:
                break
        check(counted, '50 /e.gif events on the full store were neither stored nor counted lost')
        check(s.get('/healthz').status == 200, 'healthz on the full store')


def test_ack_queued():
    """ack: queued answers opens, clicks and snippet events once queued; forms still wait."""
    _answers_before_commit('ack: queued')
    _full_store_answers('ack: queued')


def test_ack_journal():
    """ack: journal answers opens, clicks and snippet events once journaled; forms after their
    commit; a full store counts the journaled events lost as ack: queued does."""
    _answers_before_commit('ack: journal')
    _full_store_answers('ack: journal')


def threads_of(pid):
    """{name: scheduling policy} of the process's threads: /proc/PID/task/TID/comm, and field 41
    of its stat (counted after the command name's closing parenthesis): 0 SCHED_OTHER, 3
    SCHED_BATCH. A name two threads share is listed once; a thread that ends meanwhile is left out."""
    out = {}
    for tid in os.listdir(f'/proc/{pid}/task'):
        try:
            with open(f'/proc/{pid}/task/{tid}/comm') as f:
                name = f.read().strip()
            with open(f'/proc/{pid}/task/{tid}/stat') as f:
                out[name] = int(f.read().rsplit(')', 1)[1].split()[38])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def test_thread_names_and_policies():
    """Every thread is named for its work (top -H, perf), and one runs under SCHED_BATCH, as
    writer.c says: the journal thread under ack: journal, the writer under ack: commit (a loop
    that wakes either keeps its CPU); none under ack: queued."""
    for conf, batch in (('ack: journal', ['ll-journal']), ('ack: commit', ['ll-writer']), ('ack: queued', [])):
        with Server(conf=conf + '\nthreads: 2') as s:
            check_gif(s.get(f'/o/{s.pixel("policy@example.com", send=5)}.gif'), 'open')
            th = threads_of(s.proc.pid)
            want = {'leadloopd', 'll-loop-1', 'll-loop-2', 'll-writer', 'll-notify'} | set(batch)
            check(want <= set(th) and ('ll-journal' in th) == (conf == 'ack: journal'),
                  f'{conf}: threads {sorted(th)}, expected {sorted(want)}')
            got = sorted(n for n, pol in th.items() if pol == 3)
            check(got == batch, f'{conf}: under SCHED_BATCH (3): {got}, expected {batch}')


def test_ack_journal_details():
    """Under ack: journal: a form's answer means it is in the store; pipelined requests on one
    connection are answered in order; a clean stop stores everything answered and leaves nothing
    to replay; a request too large for the journal gets 503 and a log line naming journal_kb."""
    with Server(conf='ack: journal\njournal_kb: 64\nmax_body: 1M') as s:
        r = s.form('contact', {'email': 'journal-form@example.com', 'name': 'J'})
        check(r.status == 200, f'form: {r.status} {r.body!r}')
        check('journal-form@example.com' in s.contact_show('journal-form@example.com'),
              'the form was answered but its contact is not in the store yet')
        v = new_visitor()
        n = 60
        reqs = b''
        for i in range(n):
            body = beacon_body(v, u=f'https://site.example/piped/{i}').encode()
            reqs += (f'POST /e HTTP/1.1\r\nHost: x\r\nUser-Agent: {CHROME_UA}\r\nContent-Type: text/plain\r\n'
                     f'Content-Length: {len(body)}\r\n\r\n').encode() + body
        sock = socket.create_connection(('127.0.0.1', s.port))
        sock.sendall(reqs)
        codes = _read_responses(sock, n)
        sock.close()
        check(codes == [204] * n, f'{n} pipelined beacons answered {codes[:5]}... ({len(codes)} answers)')
        text = s.metrics()
        for line in text.splitlines():
            check(line.startswith('#') or re.match(r'[a-z_]+(\{[^}]*\})? [0-9.e+-]+$', line) or line == '',
                  f'/metrics line is not Prometheus text: {line!r}')
        check(s.metric('leadloop_journal_batch_requests_sum', text) == n + 1,
              f'leadloop_journal_batch_requests_sum {s.metric("leadloop_journal_batch_requests_sum", text)}, '
              f'expected {n + 1} (the form and the beacons)')
        check(1 <= s.metric('leadloop_journal_write_seconds_count', text) <= n + 1, 'no journal writes counted')
        check(s.metric('leadloop_journal_bytes_total', text) > n * 100, 'leadloop_journal_bytes_total too small')
        big = beacon_body(v, [{'t': 'pageview', 'u': f'https://site.example/big/{j}?' + 'b' * 1900,
                               'r': 'https://ref.example/?' + 'r' * 1900} for j in range(50)])
        r = s.beacon(big)
        check(r.status == 503, f'a beacon larger than the journal answered {r.status}, expected 503')
        check(wait_until(lambda: 'larger than journal_kb' in s.stderr_text(), timeout=5),
              'no log line about a request larger than journal_kb')
        for i in range(30):
            check_gif(s.get(f'/e.gif?t=pageview&u=https%3A%2F%2Fsite.example%2Fat-stop%2F{i}',
                            headers={'User-Agent': CHROME_UA}), 'GET /e.gif')
        s.stop()
        urls = [e.get('url', '') for e in s.events()]
        check(sum('/at-stop/' in u for u in urls) == 30, 'pageviews answered before SIGTERM are not all stored')
        check(sum('/piped/' in u for u in urls) == n, 'the pipelined beacons are not all stored')
        check(not any('/big/' in u for u in urls), 'the beacon answered 503 was stored')
        s.start()
        check('not in the store were stored from' not in s.stderr_text(),
              'a start after a clean stop replayed the journal')


class _WriteLock:
    """The store's LMDB write lock, taken as another writer (the mailer, the CLI) takes it:
    leadloopd's writer waits for it until release()."""
    def __init__(self, data_dir):
        import ctypes
        lib = ctypes.CDLL('liblmdb.so.0')
        lib.mdb_env_open.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]
        lib.mdb_txn_begin.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p]
        lib.mdb_txn_abort.argtypes = lib.mdb_env_close.argtypes = [ctypes.c_void_p]
        self.lib, self.env, self.txn = lib, ctypes.c_void_p(), ctypes.c_void_p()
        check(lib.mdb_env_create(ctypes.byref(self.env)) == 0, 'mdb_env_create failed')
        rc = lib.mdb_env_open(self.env, data_dir.encode(), 0x200000, 0o600)  # MDB_NOTLS, as leadloopd
        check(rc == 0, f'mdb_env_open({data_dir}) returned {rc}')
        rc = lib.mdb_txn_begin(self.env, None, 0, ctypes.byref(self.txn))
        check(rc == 0, f'mdb_txn_begin returned {rc}')

    def release(self):
        if self.txn:
            self.lib.mdb_txn_abort(self.txn)
            self.txn = None
            self.lib.mdb_env_close(self.env)


def _until_unanswered(conn, limit, status, send):
    """Sends request after request on conn (send(i) sends the i-th) while each is answered with
    status within the connection's timeout. Returns (how many were answered, whether one was not)."""
    for i in range(limit):
        send(i)
        try:
            r = conn.getresponse()
        except socket.timeout:
            return i, True
        r.read()
        check(r.status == status, f'request {i} with the writer blocked answered {r.status}, expected {status}')
    return limit, False


def _waiting_answer(conn, status, what):
    """Reads the answer to the request left waiting on conn by _until_unanswered, then closes it."""
    conn.sock.settimeout(10)
    head = conn.sock.recv(4096)
    check(head.startswith(f'HTTP/1.1 {status}'.encode()), f'{what}: {head[:100]!r}')
    conn.close()


def test_journal_stall_keeps_serving():
    """Under ack: journal, with the journal full and the writer unable to make room (the store's
    write lock held elsewhere, as a long CLI transaction would), the event loop does not wait for
    it: a click is redirected after click_deadline_ms, /healthz answers; once the lock is
    released the beacon that waited is answered and everything answered is stored."""
    with Server(conf='ack: journal\njournal_kb: 64\nclick_deadline_ms: 300') as s:
        tok = s.link('https://dest.example/stall', 'stall@example.com', send=3)
        lock = _WriteLock(s.data)
        v = new_visitor()
        conn = http.client.HTTPConnection('127.0.0.1', s.port, timeout=2)
        try:
            n, stalled = _until_unanswered(conn, 2000, 204, lambda i: conn.request(
                'POST', '/e', body=beacon_body(v, u=f'https://site.example/stall/{i}?' + 'x' * 300),
                headers={'Content-Type': 'text/plain', 'User-Agent': CHROME_UA}))
            acked = list(range(n))
            check(stalled, f'{n} beacons with the writer blocked were all answered: the journal never filled')
            check(len(acked) > 50, f'only {len(acked)} beacons answered before the journal filled')
            t0 = time.time()
            r = s.get('/c/' + tok)
            took = time.time() - t0
            check(r.status == 302 and (r.header('Location') or '').startswith('https://dest.example/stall'),
                  f'click while the journal is full: {r.status}')
            check(took < 1.5, f'the click took {took:.2f} s with click_deadline_ms: 300')
            check(s.get('/healthz').status == 200, '/healthz while the journal is full')
        finally:
            lock.release()
        _waiting_answer(conn, 204, 'the waiting beacon, once the writer made room')
        check(s.metric('leadloop_journal_rewinds_total') >= 1, 'the journal was full and no rewind was counted')
        want = set(acked) | {len(acked)}

        def stored():
            got = {int(e['url'].split('/stall/')[1].split('?')[0]) for e in s.events()
                   if '/stall/' in (e.get('url') or '')}
            return want <= got
        check(wait_until(stored, timeout=10), 'not every answered beacon was stored after the lock was released')
        check(wait_until(lambda: any(e['type'] == 'click' for e in s.events()), timeout=10),
              'the click answered at its deadline was not stored')


def test_queued_commit_gathers():
    """Under ack: queued the writer gathers what comes in queued_commit_ms into one commit; a
    request that waits for its commit (a form) ends the gathering at once; SIGTERM commits what
    was gathered."""
    with Server(conf='ack: queued\nqueued_commit_ms: 1000') as s:
        conn = http.client.HTTPConnection('127.0.0.1', s.port, timeout=10)
        commits0 = s.metric('leadloop_batch_events_count')
        for i in range(40):
            conn.request('GET', f'/e.gif?t=pageview&u=https%3A%2F%2Fsite.example%2Fgather%2F{i}',
                         headers={'User-Agent': CHROME_UA})
            r = conn.getresponse()
            r.read()
            check(r.status == 200, f'/e.gif {i} answered {r.status}')
        conn.close()

        def gathered():
            return sum(1 for e in s.events() if '/gather/' in e.get('url', '')) == 40
        check(wait_until(gathered, timeout=10), 'the 40 pageviews were not stored within 10 s')
        commits = s.metric('leadloop_batch_events_count') - commits0
        check(commits <= 2, f'40 pageviews within the 1 s window took {commits:.0f} commits, expected 1 (2 if split)')

        # A form waits for its commit: the writer commits at once, with what it had gathered.
        for i in range(5):
            check_gif(s.get(f'/e.gif?t=pageview&u=https%3A%2F%2Fsite.example%2Fbefore-form%2F{i}',
                            headers={'User-Agent': CHROME_UA}), 'GET /e.gif')
        t0 = time.time()
        r = s.form('contact', {'email': 'gather-form@example.com', 'name': 'G'})
        took = time.time() - t0
        check(r.status == 200, f'form: {r.status} {r.body!r}')
        check(took < 0.5, f'the form waited {took:.2f} s: held back by the 1 s gathering window')
        urls = [e.get('url', '') for e in s.events()]
        n = sum(1 for u in urls if '/before-form/' in u)
        check(n == 5, f'{n} of the 5 pageviews queued before the form were stored with it')

        # Stopping commits what was gathered and answered.
        for i in range(7):
            check_gif(s.get(f'/e.gif?t=pageview&u=https%3A%2F%2Fsite.example%2Fat-stop%2F{i}',
                            headers={'User-Agent': CHROME_UA}), 'GET /e.gif')
        s.stop()
        n = sum(1 for e in s.events() if '/at-stop/' in e.get('url', ''))
        check(n == 7, f'{n} of 7 pageviews answered just before SIGTERM were stored')


def test_ack_queued_backlog():
    """Past 1024 queued items (QUEUE_EARLY_MAX in writer.c) ack: queued answers after the commit:
    a writer that is behind holds clients back rather than dropping their events."""
    # queued_commit_ms: 0, so that the writer takes the first item alone before it blocks (with
    # a gathering window it would hold all that came in the window, and the count below varies).
    # The first request goes alone and the rest only after a pause: on a busy machine the writer
    # woke late and took every request answered meanwhile (1053 answered once).
    with Server(conf='ack: queued\nqueued_commit_ms: 0') as s:
        lock = _WriteLock(s.data)
        conn = http.client.HTTPConnection('127.0.0.1', s.port, timeout=2)

        def send(i):
            conn.request('GET', f'/e.gif?t=pageview&u=https%3A%2F%2Fsite.example%2Fbacklog%2F{i}',
                         headers={'User-Agent': CHROME_UA})
        try:
            first, waiting = _until_unanswered(conn, 1, 200, send)
            check(first == 1 and not waiting, 'the first /e.gif with the writer blocked was not answered at once')
            time.sleep(0.5)  # the writer takes it, then waits for the lock
            answered, waiting = _until_unanswered(conn, 1300, 200, lambda i: send(i + 1))
            answered += 1
            # The writer holds the first item; 1024 more fill the queue.
            check(waiting, f'all {answered} /e.gif with the writer blocked were answered at once')
            check(answered == 1025,
                  f'{answered} /e.gif answered with the writer blocked, expected 1025 (the writer holds one)')
            check(_lost_total(s) == 0, 'events counted lost while the writer was blocked')
        finally:
            lock.release()
        _waiting_answer(conn, 200, 'the waiting /e.gif, once the writer committed')

        def all_stored():
            return sum(1 for e in s.events() if '/backlog/' in e.get('url', '')) == answered + 1
        check(wait_until(all_stored, timeout=10), f'not all {answered + 1} events stored after the lock was released')
        check(_lost_total(s) == 0, 'events counted lost after the writer caught up')


def _cpu_ticks(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _read_responses(sock, n, timeout=10):
    """The status codes of the next n HTTP/1.1 responses on sock (each with a Content-Length or none)."""
    sock.settimeout(timeout)
    buf, codes = b'', []
    while len(codes) < n:
        head_end = buf.find(b'\r\n\r\n')
        if head_end >= 0:
            head = buf[:head_end].decode('latin-1')
            m = re.search(r'(?im)^content-length:\s*(\d+)', head)
            total = head_end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) >= total:
                codes.append(int(head.split(' ', 2)[1]))
                buf = buf[total:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return codes


def test_pipelined_while_committing():
    """While a request waits for its commit, leadloopd keeps its connection's socket readable
    (writer.c, keep_reading) instead of h2o's stop-and-restart: what the client sends ahead is
    answered afterwards, in order; a client that half-closes, or sends more than 16 KiB ahead,
    stops the reading, and none of it spins the loop."""
    with Server() as s:
        beacon = beacon_body(new_visitor(), u='https://site.example/pipelined')
        post = (f'POST /e HTTP/1.1\r\nHost: x\r\nUser-Agent: {CHROME_UA}\r\nContent-Type: text/plain\r\n'
                f'Content-Length: {len(beacon)}\r\n\r\n{beacon}').encode()
        health = b'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'
        ahead = 2000  # about 80 KiB of requests sent ahead: past the 16 KiB reading stops at
        lock = _WriteLock(s.data)
        try:
            a = socket.create_connection(('127.0.0.1', s.port))
            a.sendall(post + health)
            b = socket.create_connection(('127.0.0.1', s.port))
            b.sendall(post)
            b.shutdown(socket.SHUT_WR)  # the peer's end of file arrives while the beacon waits
            c = socket.create_connection(('127.0.0.1', s.port))
            c.sendall(post)
            time.sleep(0.2)
            c.setblocking(False)
            try:
                c.sendall(health * ahead)
            except BlockingIOError:
                pass  # the socket buffers filled: reading stopped
            c.setblocking(True)
            time.sleep(0.3)
            t0 = _cpu_ticks(s.proc.pid)
            time.sleep(1.0)
            spent = _cpu_ticks(s.proc.pid) - t0
            check(spent < 50, f'leadloopd used {spent} ticks of CPU in 1 s while its requests waited for the commit')
            a.settimeout(0.2)
            try:
                early = a.recv(4096)
            except socket.timeout:
                early = b''
            check(early == b'', f'an answer before the commit: {early[:80]!r}')
        finally:
            lock.release()
        check(_read_responses(a, 2) == [204, 200], 'the beacon and the /healthz sent behind it, in order')
        check(_read_responses(b, 1) == [204], 'the beacon of the half-closed connection')
        codes = _read_responses(c, 1 + ahead, timeout=20)
        check(len(codes) == 1 + ahead and codes[0] == 204 and set(codes[1:]) == {200},
              f'{len(codes)} answers of {1 + ahead} on the connection that sent ahead: {codes[:3]}')
        for x in (a, b, c):
            x.close()
        n = sum(1 for e in s.events() if e.get('url') == 'https://site.example/pipelined')
        check(n == 3, f'{n} of 3 beacons stored')


def test_settle_in_chunks():
    """More provisional opens come due at once than one settling transaction takes (512,
    SETTLE_CHUNK in writer.c): the writer settles them chunk after chunk, all of them."""
    with Server(conf='provisional_s: 1\nack: queued') as s:
        pix = s.pixel('settle@example.com', send=9)
        conn = http.client.HTTPConnection('127.0.0.1', s.port, timeout=10)
        n = 1300
        for _ in range(n):
            conn.request('GET', f'/o/{pix}.gif', headers={'User-Agent': CHROME_UA})
            r = conn.getresponse()
            r.read()
            check(r.status == 200, f'open answered {r.status}')
        conn.close()
        opens = []

        def settled():
            opens[:] = [e for e in s.events('--type', 'open') if e.get('send') == 9]
            return len(opens) == n and not any(e.get('provisional') for e in opens)
        ok = wait_until(settled, timeout=20, step=0.5)
        left = sum(1 for e in opens if e.get('provisional'))
        check(ok, f'{len(opens)} of {n} opens stored, {left} still provisional 20 s after they came due')


def test_store_full():
    s = _small_store_server()
    with s:
        tok = s.link('https://dest.example/full', 'full@example.com', send=5)
        pix = s.pixel('full@example.com', send=5)
        v = new_visitor()
        statuses, events_sent, first_fail = [], 0, None
        deadline = time.time() + 40
        i = 0
        while time.time() < deadline and i < 20000:
            body = beacon_body(v, [{'t': 'pageview', 'u': f'https://site.example/fill/{i}/{j}?' + 'p' * 150}
                                   for j in range(50)])
            r = s.beacon(body)
            statuses.append(r.status)
            i += 1
            if r.status != 204:
                first_fail = r
                break
            events_sent += 50
        check(first_fail is not None, f'the store did not fill after {events_sent} events in 40 s')
        check(first_fail.status == 503, f'beacon on a full store: {first_fail.status} {first_fail.body!r}, expected 503')
        # Fill the last pages with small writes, until both beacons and forms are refused.
        beacon_refused = form_refused = False
        bad = []
        for k in range(400):
            rb = s.beacon(beacon_body(v, u=f'https://site.example/small/{k}'))
            rf = s.form('contact', {'email': f'full{k}@example.com', 'name': 'F'})
            if rb.status not in (204, 503) or rf.status not in (200, 503):
                bad.append((rb.status, rf.status))
            beacon_refused, form_refused = rb.status == 503, rf.status == 503
            if beacon_refused and form_refused:
                break
        check(not bad, f'unexpected statuses (beacon, form) on a filling store: {bad[:5]}')
        check(beacon_refused and form_refused, 'small beacons and forms still stored after 400 tries on a full store')
        r = s.beacon(beacon_body(v, u='https://site.example/after-full'))
        check(r.status == 503, f'beacon on the full store: {r.status}')
        r = s.form('contact', {'email': 'late@example.com', 'name': 'L'})
        check(r.status == 503, f'form on the full store: {r.status}')
        r = s.form('contact', {'email': 'late2@example.com', 'name': 'L'}, mode='navigate')
        check(r.status == 503, f'browser form on the full store: {r.status}')
        t0 = time.time()
        r = s.get('/c/' + tok)
        check(r.status == 302 and (r.header('Location') or '').startswith('https://dest.example/full?_llv='),
              f'click on the full store: {r.status} Location {r.header("Location")!r}')
        check(time.time() - t0 < 3, f'click on the full store took {time.time() - t0:.1f} s')
        check_gif(s.get(f'/o/{pix}.gif'), 'open on the full store')
        text = s.metrics()
        lost = _lost_total(s, text)
        failed = s.metric('leadloop_rejects_total{reason="store_failed"}', text)
        check(lost > 0 or failed > 0, 'neither leadloop_events_lost_total nor rejects store_failed counted the loss')
        check(s.get('/healthz').status == 200, 'healthz on the full store')
        s.events()  # the log still reads


def _run_server_expect_exit(args, what, timeout=10):
    p = subprocess.Popen([LEADLOOPD] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=child_env())
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise TestFailure(f'{what}: leadloopd kept running ({timeout} s) instead of exiting; stderr: {err.decode()[:500]}')
    text = (out + err).decode('utf-8', 'replace')
    marks = [m for m in SANITIZER_MARKS if m in text]
    check(not marks, f'{what}: crash/sanitizer report: {text[:2000]}')
    return p.returncode, text


def _bad_conf(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, 'w') as f:
        f.write(text)
    return path


def test_bad_config_unknown_key():
    tmp = tempfile.mkdtemp(prefix='ll-it-')
    SERVERS.append(Server(tmp=tmp))  # for cleanup of tmp
    path = _bad_conf(tmp, 'BAD.yaml', 'public_url: "http://127.0.0.1:1"\nlisen: 127.0.0.1:8080\n')
    rc, text = _run_server_expect_exit(['-c', path, '-d', os.path.join(tmp, 'data'), '-l', f'127.0.0.1:{free_port()}'],
                                       'unknown key')
    check(rc != 0, f'leadloopd -c BAD.yaml (unknown key lisen) exited 0: {text}')
    check('BAD.yaml' in text, f'the message does not name the file: {text!r}')
    check(re.search(r'BAD\.yaml:2\b|line 2\b', text), f'the message does not name line 2: {text!r}')
    check('lisen' in text, f'the message does not name the key: {text!r}')


def test_bad_config_values():
    tmp = tempfile.mkdtemp(prefix='ll-it-')
    SERVERS.append(Server(tmp=tmp))
    cases = [('map_size', 'map_size: lots'), ('max_body', 'max_body: -5'), ('trusted_proxies',
             'trusted_proxies: ["300.0.0.1/8"]'), ('ipv4_prefix', 'ipv4_prefix: 40'), ('listen', 'listen: [1, 2]'),
             ('form_rate_per_min', 'form_rate_per_min: many'), ('public_url', 'public_url: "javascript:alert(1)"'),
             ('fieldz', 'forms:\n  f1:\n    fieldz: [a]')]
    wrong = []
    for i, (key, line) in enumerate(cases):
        path = _bad_conf(tmp, f'bad{i}.yaml', 'log_level: 1\n' + line + '\n')
        rc, text = _run_server_expect_exit(['-c', path, '-d', os.path.join(tmp, 'data'), '-l',
                                            f'127.0.0.1:{free_port()}'], key)
        want_line = 2 if key != 'fieldz' else 4
        if rc == 0:
            wrong.append(f'{line!r}: exit 0')
        elif f'bad{i}.yaml' not in text or key not in text or not re.search(rf'bad{i}\.yaml:{want_line}\b|line {want_line}\b', text):
            wrong.append(f'{line!r}: message does not name file, line {want_line} and key: {text.strip()[:200]!r}')
    path = _bad_conf(tmp, 'syntax.yaml', 'public_url: "unterminated\nlisten: x\n')
    rc, text = _run_server_expect_exit(['-c', path, '-d', os.path.join(tmp, 'data')], 'YAML syntax error')
    if rc == 0 or 'syntax.yaml' not in text:
        wrong.append(f'YAML syntax error: exit {rc}, {text.strip()[:200]!r}')
    rc, text = _run_server_expect_exit(['-c', os.path.join(tmp, 'missing.yaml'), '-d', os.path.join(tmp, 'data')],
                                       'missing file')
    if rc == 0 or 'missing.yaml' not in text:
        wrong.append(f'missing config file: exit {rc}, {text.strip()[:200]!r}')
    check(not wrong, '\n  '.join([''] + wrong))


def test_bad_listen_address():
    tmp = tempfile.mkdtemp(prefix='ll-it-')
    SERVERS.append(Server(tmp=tmp))
    wrong = []
    for addr in ('nonsense', '127.0.0.1', '256.1.1.1:80', '127.0.0.1:99999', '127.0.0.1:-1', '127.0.0.1:http',
                 'localhost:8080', ':8080', '[::1', '127.0.0.1:80:80', ''):
        rc, text = _run_server_expect_exit(['-d', os.path.join(tmp, 'data'), '-l', addr], f'-l {addr!r}', timeout=5)
        if rc == 0:
            wrong.append(f'-l {addr!r}: exit 0')
    check(not wrong, '; '.join(wrong))


def test_stored_fields_bounded():
    with Server() as s:
        v = new_visitor()
        url = 'https://site.example/' + 'é' * 6000  # JSON-escaped, the body stays under max_body
        title = 'ü' * 1000 + 'x'
        r = s.beacon(beacon_body(v, [{'t': 'pageview', 'u': url, 'ti': title, 'r': 'https://r/' + '€' * 1000}]),
                     ua='Mozilla/5.0 ' + 'ж' * 3000 + ' Chrome/126.0.0.0')  # 6 KB, under the 8 KB header cap
        check(r.status == 204, f'beacon with long fields: {r.status} {r.body!r}')
        e = one([e for e in s.events() if e['visitor'] == v], 'pageview')
        for key, sent, limit in (('url', url, 2048), ('title', title, 300), ('ua', None, 512), ('referrer', None, 2048)):
            val = e.get(key, '')
            n = len(val.encode())
            check(n <= limit, f'{key} stored {n} bytes (bound {limit})')
            check('\ufffd' not in val, f'{key} was cut inside a UTF-8 sequence')
            if sent is not None:
                check(sent.startswith(val) and n > limit // 2, f'{key} is not a prefix of what was sent')


# =====================================================================================

def run_suite(suite, namespace, binaries=None, before=None, after=None):
    """Runs the test_* functions of namespace (those naming an argv substring, if any), each
    with fresh SERVERS; prints "ok NAME" or "FAIL NAME: reason" with leadloopd's stderr, then
    "SUITE: N passed, N failed", and exits 1 on a failure. before() runs once first; after()
    after each test (even a failed one), before the servers are cleaned up."""
    only = sys.argv[1:]
    tests = [(n, f) for n, f in list(namespace.items()) if n.startswith('test_') and callable(f)]
    if only:
        tests = [(n, f) for n, f in tests if any(o in n for o in only)]
    passed = failed = 0
    missing = [b for b in (binaries or (LEADLOOPD, LEADLOOP)) if not os.access(b, os.X_OK)]
    if before is not None and not missing:
        before()
    for name, fn in tests:
        SERVERS.clear()
        t0 = time.time()
        err = None
        if missing:
            err = f'missing {", ".join(missing)} (run make)'
        else:
            try:
                fn()
            except Exception as e:
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                err = f'{first}\n{traceback.format_exc()}'
        if after is not None:
            after()
        for s in SERVERS:
            s.cleanup()
        if err is None:
            passed += 1
            print(f'ok {name}', flush=True)
            if os.environ.get('LL_TEST_VERBOSE'):
                print(f'# {name}: {time.time() - t0:.1f} s', flush=True)
            if os.environ.get('LL_TEST_KEEP') != '1':
                for s in SERVERS:
                    shutil.rmtree(s.tmp, ignore_errors=True)
        else:
            failed += 1
            reason, _, rest = err.partition('\n')
            print(f'FAIL {name}: {reason}', flush=True)
            body = rest
            for s in SERVERS:
                if s.notes:
                    body += '\nwhile stopping: ' + '; '.join(s.notes)
                if s.stderr_files:
                    body += f'\n--- leadloopd stderr ({s.tmp}) ---\n' + s.stderr_tail(3000)
            for line in body.rstrip().splitlines():
                print('    ' + line)
            sys.stdout.flush()
    print(f'{suite}: {passed} passed, {failed} failed', flush=True)
    sys.exit(1 if failed else 0)


def main():
    run_suite('integration', globals())


if __name__ == '__main__':
    main()
