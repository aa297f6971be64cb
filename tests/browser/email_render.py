#!/usr/bin/env python3
"""
Browser test of the nurture mailer's messages (issue #3: "messages render in a browser and
every click lands on the right contact's timeline"). This driver prepares real messages with
the mailer suite's helpers (tests/integration/mailer_test.py: leadloopd, aiosmtpd storing a
Maildir, leadloop-mailer --once), then email_render.test.mjs opens each delivered HTML part in
headless Chromium, checks it rendered and that its open pixel reached leadloopd, and clicks
every signed link: leadloopd must redirect the browser to the destination (served here, on
localhost) and the click must land on that contact's timeline with the message's send id.

Two contacts, two program steps: the shipped deploy/templates/welcome-1.tpl (its destination
pointed at the local site) and a template with a title, a heading, escaped profile values and
two links.

Run from the repository root:  python3 tests/browser/email_render.py
  LEADLOOPD, LEADLOOP, LEADLOOP_MAILER, CHROMIUM, LL_TEST_PORTS  as in the other suites
Output: the TAP of the browser part, last line "browser: N passed, N failed".
"""
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
import run as it  # noqa: E402
import mailer_test as mt  # noqa: E402

T0 = mt.T0

RICH = '''Subject: Your plan, {{first_name|there}}
--- html
<!doctype html>
<html><head><meta charset="utf-8"><title>Plans for {{company|your team}}</title></head>
<body style="font-family:sans-serif">
<h1 id="heading">Pricing for {{company|your team}}</h1>
<p id="greeting">Hi {{first_name|there}}, caf\u00e9 is on us.</p>
<p>See <a id="pricing" href="{SITE}/pricing?plan=pro&amp;seats=5">our pricing</a>
or <a id="docs" href='{SITE}/docs/start'>read the docs</a>.
Questions? <a href="mailto:help@example.com">Mail us</a>.</p>
<p style="font-size:small"><a id="unsub" href="{{unsubscribe_url}}">Unsubscribe</a></p>
</body></html>
--- text
Hi {{first_name|there}},
Pricing: {SITE}/pricing?plan=pro&seats=5
Unsubscribe: {{unsubscribe_url}}
'''

PEOPLE = 'email,first_name,company\nann@example.com,Ann,"Smith & Sons <UK>"\nbob@example.com,,\n'
EXPECT = {  # what a person sees, rendered (entities decoded, values escaped and shown as text)
    'ann@example.com': {'welcome': 'Hi Ann,', 'rich': 'Hi Ann, caf\u00e9 is on us.',
                        'title': 'Plans for Smith & Sons <UK>', 'heading': 'Pricing for Smith & Sons <UK>'},
    'bob@example.com': {'welcome': 'Hi there,', 'rich': 'Hi there, caf\u00e9 is on us.',
                        'title': 'Plans for your team', 'heading': 'Pricing for your team'},
}


class Site(http.server.ThreadingHTTPServer):
    """The destinations: a small page per path, and the requests it got."""
    daemon_threads = True

    def __init__(self, port):
        self.hits = []
        super().__init__(('127.0.0.1', port), SiteHandler)


class SiteHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits.append(self.path)
        name = self.path.split('?')[0].strip('/').replace('/', ' ') or 'home'
        body = (f'<!doctype html><html><head><title>site: {name}</title></head>'
                f'<body><h1 id="landed">{name}</h1></body></html>').encode()
        self.send_response(200)
        self.send_header('Content-Type', 'text/html; charset=utf-8')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def prepare(tmp, site_base):
    """Runs the program for two contacts; returns (env, the messages as the browser part wants them)."""
    with open(os.path.join(ROOT, 'deploy', 'templates', 'welcome-1.tpl')) as f:
        welcome = f.read()
    it.check('https://www.example.com/start' in welcome, 'deploy/templates/welcome-1.tpl changed its link')
    templates = {'welcome.tpl': welcome.replace('https://www.example.com', site_base),
                 'rich.tpl': RICH.replace('{SITE}', site_base)}
    steps = '''      - template: welcome.tpl
      - template: rich.tpl
        delay: 1 hour'''
    env = mt.Env(tls=False, templates=templates, steps=steps)
    env.smtp_tls = False
    env.import_csv(T0, PEOPLE)
    env.mailer(T0)
    env.mailer(T0 + mt.HOUR)
    msgs = env.smtp.messages()
    it.check(sorted(mt.recipients(msgs)) == ['ann@example.com'] * 2 + ['bob@example.com'] * 2,
             f'delivered to {mt.recipients(msgs)}')
    out = []
    for i, msg in enumerate(msgs):
        send, text, htm = mt.check_message(env, msg)
        to = msg['To'].addresses[0].addr_spec
        kind = 'rich' if 'Your plan' in msg['Subject'] else 'welcome'
        path = os.path.join(tmp, f'message-{i + 1}-{kind}-{to}.html')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(htm)
        want = EXPECT[to]
        hrefs, _, _ = mt.links_of(env, text, htm)
        dests = {h: mt.token_payload(h[len(env.server.base) + 3:])['url']
                 for h in hrefs if h.startswith(env.server.base + '/c/')}
        out.append({'email': to, 'send': send, 'subject': msg['Subject'], 'kind': kind, 'file': path,
                    'greeting': want[kind], 'title': want['title'] if kind == 'rich' else None,
                    'heading': want['heading'] if kind == 'rich' else None, 'links': dests})
    return env, out


def main():
    tmp = tempfile.mkdtemp(prefix='ll-email-render-')
    env = site = None
    passed = failed = 0
    problems = []
    try:
        missing = [b for b in (it.LEADLOOPD, it.LEADLOOP, mt.MAILER) if not os.access(b, os.X_OK)]
        it.check(not missing, f'missing {", ".join(missing)} (run make)')
        site = Site(it.free_port())
        threading.Thread(target=site.serve_forever, daemon=True).start()
        site_base = f'http://localhost:{site.server_address[1]}'
        env, messages = prepare(tmp, site_base)
        spec = os.path.join(tmp, 'spec.json')
        with open(spec, 'w') as f:
            json.dump({'edge': env.server.base, 'site': site_base, 'data': env.server.data, 'conf': env.server.conf,
                       'messages': messages}, f)
        node = subprocess.Popen(['node', os.path.join(HERE, 'email_render.test.mjs'), spec], stdout=subprocess.PIPE,
                                env=dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD='1'), cwd=ROOT)
        counted = False
        for raw in node.stdout:
            line = raw.decode('utf-8', 'replace').rstrip('\n')
            if line.startswith('browser: '):  # the browser part's own count: totalled below
                p, f = line[len('browser: '):].split(' passed, ')
                passed, failed, counted = passed + int(p), failed + int(f.split()[0]), True
            else:
                print(line, flush=True)
        rc = node.wait()
        if not counted or (rc != 0 and failed == 0):
            problems.append(f'email_render.test.mjs exited {rc} without a result line')
        # The browser must not have found a click that did not reach the site.
        for m in messages:
            for dest in m['links'].values():
                u = urllib.parse.urlsplit(dest)
                want = u.path + ('?' + u.query if u.query else '')
                it.check(any(h.startswith(want) for h in site.hits), f'the site never got {dest} (it got {site.hits})')
    except Exception as e:
        problems.append(f'{e}\n{traceback.format_exc()}')
    finally:
        if env is not None:
            try:
                env.close()  # leadloopd must stop cleanly, with no sanitizer report
            except Exception as e:
                problems.append(f'teardown: {e}')
        if site is not None:
            site.shutdown()
    if problems:
        failed += 1
        print('not ok - email render setup or teardown')
        for p in problems:
            print('  # ' + str(p).replace('\n', '\n  # '))
        if env is not None:
            print('  # --- leadloopd stderr ---\n  # ' + env.server.stderr_tail(3000).replace('\n', '\n  # '))
    else:
        passed += 1
        print('ok - email render setup and teardown (leadloopd, aiosmtpd, mailer)')
    if not problems and failed == 0 and os.environ.get('LL_TEST_KEEP') != '1':
        shutil.rmtree(tmp, ignore_errors=True)
        if env is not None:
            shutil.rmtree(env.tmp, ignore_errors=True)
    else:
        print(f'# kept {tmp}' + (f' and {env.tmp}' if env is not None else ''))
    print(f'browser: {passed} passed, {failed} failed', flush=True)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
