#!/usr/bin/env python3
"""
People or machines (issue #5): scripted traffic against the real leadloopd and leadloop-mailer
(aiosmtpd stores the messages), and the label and reasons leadloopd gives each open and click.

  - a gateway sweep of 8 links 3 seconds after delivery (and its pixel fetch);
  - the same sweep 90 seconds after delivery from a Microsoft (Exchange Online Protection) range;
  - an Apple Mail Privacy Protection open (Apple's proxy range);
  - a hit on the hidden honeypot link, then a visible link of the same message;
  - a HEAD request on a link;
  - a browser click 5 seconds after delivery that never runs the snippet;
  - a person who opens after 20 minutes and clicks one link from a browser that then runs the
    snippet (its beacon carries the click's visitor id).

Only the person's events score; one alert (a signed webhook to a receiver started here) says so.
`leadloop stats` and /metrics count what was set aside, and why. The table of traffic against
labels is the README's accuracy table: this test fails when they differ, and rewrites it with
LL_ACCURACY_WRITE=1.

Run from the repository root:  /usr/bin/python3 tests/integration/scanner_test.py
Last line: "scanner: N passed, N failed".
"""
import json
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as it  # noqa: E402
import mailer_test as mt  # noqa: E402
from alerts_test import Receiver  # noqa: E402
from run import check, beacon_body, CHROME_UA  # noqa: E402

README = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'README.md')
LISTS = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'deploy', 'lists')
APPLE_MAIL_UA = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko)'

LINKS = '\n'.join(f'<p><a href="https://site.example/page{i}">Link {i}</a></p>' for i in range(1, 9))
TEMPLATE = f'''Subject: Eight links for {{{{first_name|you}}}}
--- html
<html><body>
{LINKS}
<p><a href="{{{{unsubscribe_url}}}}">Unsubscribe</a></p>
</body></html>
--- text
Visit https://site.example/page1
'''


def conf(hook_port, lists):
    return f'''trusted_proxies: ["127.0.0.1"]
scanner_lists: {it.yaml_str(lists)}
provisional_s: 4
sweep_window_s: 10
fast_after_send_s: 120
scoring:
  threshold: 60
  rules:
    - {{name: email-click, event: click, points: 70}}
    - {{name: email-open, event: open, points: 5}}
routing:
  rules:
    - {{name: all, group: team}}
  groups:
    team:
      - {{rep: "rita@corp.example", weight: 1}}
alerts:
  webhooks:
    - {{name: crm, url: "http://127.0.0.1:{hook_port}/hook"}}
'''


class Msg:
    """One delivered message: its visible links, the honeypot and the pixel, as edge paths."""

    def __init__(self, env, m):
        lp = mt.LinkParser()
        htm = m.get_body(('html',)).get_content()
        lp.feed(htm)
        base = len(env.server.base)
        self.send = int(m['X-Leadloop-Send'])
        self.links = [h[base:] for h in lp.hrefs if h.startswith(env.server.base + '/c/')]
        self.honeypot = [h[base:] for h in lp.hidden]
        self.pixel = [i[base:] for i in lp.imgs if '/o/' in i][0]


def fetch(env, path, ip, ua=CHROME_UA, method='GET'):
    r = env.server.req(method, path, None, {'X-Forwarded-For': ip}, ua=ua)
    check(r.status in (200, 302), f'{method} {path[:30]}: {r.status}')
    return r


def row_of(events):
    """The labels of a group of events, and the reasons every one of them carries."""
    labels = sorted({e['class'] for e in events})
    common = set(events[0]['reasons'])
    for e in events[1:]:
        common &= set(e['reasons'])
    return labels, sorted(common)


def accuracy_table(rows):
    out = ['| Traffic | Events | Label leadloop gives | Reasons on every event |', '|---|---|---|---|']
    for what, n, labels, reasons in rows:
        out.append(f'| {what} | {n} | {", ".join(labels)} | {", ".join(reasons)} |')
    return '\n'.join(out) + '\n'


def check_readme(table):
    begin, end = '<!-- accuracy:begin (tests/integration/scanner_test.py) -->\n', '<!-- accuracy:end -->'
    with open(README) as f:
        text = f.read()
    m = re.search(re.escape(begin) + r'(.*?)' + re.escape(end), text, re.S)
    if os.environ.get('LL_ACCURACY_WRITE') == '1':
        new = text[:m.start(1)] + table + text[m.end(1):] if m else text
        with open(README, 'w') as f:
            f.write(new)
        return
    check(m is not None, f'README.md has no accuracy section between {begin.strip()} and {end}')
    check(m.group(1) == table, 'README accuracy table differs from what the test measured '
          f'(LL_ACCURACY_WRITE=1 rewrites it):\n{table}')


def test_people_and_machines():
    rcv = Receiver()
    lists = tempfile.mkdtemp(prefix='ll-lists-')  # the shipped lists, in a copy this test may edit
    for name in os.listdir(LISTS):
        shutil.copy(os.path.join(LISTS, name), lists)
    env = mt.Env(tls=False, templates={'step1.tpl': TEMPLATE}, steps='      - template: step1.tpl',
                 conf_extra=conf(rcv.port, lists))
    try:
        now = time.time()
        # The person's message went out 20 minutes ago, the Microsoft-scanned one 90 s ago.
        env.cli(now - 1300, 'enroll', 'pat@example.com', 'nurture')
        env.mailer(now - 1200)
        env.cli(now - 100, 'enroll', 'ms@example.com', 'nurture')
        env.mailer(now - 90)
        machines = ('gw', 'mpp', 'hp', 'head', 'quick')
        for who in machines:
            env.cli(now, 'enroll', f'{who}@example.com', 'nurture')
        env.mailer(time.time())
        sent = time.time()
        msgs = {m['To'].addresses[0].addr_spec.split('@')[0]: Msg(env, m) for m in env.smtp.messages()}
        check(sorted(msgs) == sorted(machines + ('pat', 'ms')), f'messages to {sorted(msgs)}')
        for who, m in msgs.items():
            check(len(m.links) == 8 and len(m.honeypot) == 1, f'{who}: {len(m.links)} links, {len(m.honeypot)} honeypots')

        time.sleep(max(0.0, sent + 3 - time.time()))
        for path in msgs['gw'].links[:8]:  # a gateway: every link in document order, then the pixel
            fetch(env, path, '198.51.100.20')
            time.sleep(0.05)
        fetch(env, msgs['gw'].pixel, '198.51.100.20')
        for path in msgs['ms'].links[:8]:  # the same from Exchange Online Protection, 90 s after delivery
            fetch(env, path, '40.92.10.20')
            time.sleep(0.05)
        fetch(env, msgs['mpp'].pixel, '17.58.63.10', ua='Mozilla/5.0')  # Apple's privacy proxy
        fetch(env, msgs['hp'].honeypot[0], '198.51.100.30')  # the hidden link, then a visible one
        time.sleep(1.5)
        fetch(env, msgs['hp'].links[3], '198.51.100.30')
        fetch(env, msgs['head'].links[0], '198.51.100.40', method='HEAD')
        fetch(env, msgs['quick'].links[1], '198.51.100.50')  # a browser, 5 s in, no JavaScript after
        # The person: reads it 20 minutes after delivery, clicks one link, the page runs the snippet.
        fetch(env, msgs['pat'].pixel, '203.0.113.9', ua=APPLE_MAIL_UA)
        time.sleep(1)
        r = fetch(env, msgs['pat'].links[2], '203.0.113.9')
        visitor = r.cookie()
        check(visitor, f'no visitor cookie on the click: {r.headers}')
        b = env.server.beacon(beacon_body(visitor, u='https://site.example/page3'), {'X-Forwarded-For': '203.0.113.9'})
        check(b.status == 204, f'beacon {b.status}')
        # Provisional events settle after provisional_s (4 s) on the writer's next tick.
        it.wait_until(lambda: not any(e.get('provisional') for e in json_events(env)), timeout=15)
        evs = json_events(env)
        check(not any(e.get('provisional') for e in evs), 'events still provisional after the window')

        def of(who, typ):
            return [e for e in evs if e.get('email') == f'{who}@example.com' and e['type'] == typ]

        rows = [
            ('Gateway sweep: 8 links in document order, 3 s after delivery', of('gw', 'click')),
            ('The same gateway fetching the open pixel, after its sweep', of('gw', 'open')),
            ('Sweep of 8 links 90 s after delivery from Exchange Online Protection (40.92.0.0/15)', of('ms', 'click')),
            ('Apple Mail Privacy Protection pixel fetch (17.0.0.0/8, "Mozilla/5.0")', of('mpp', 'open')),
            ('Hidden honeypot link, then a visible link of the same message 1.5 s later', of('hp', 'click')),
            ('HEAD request on a link', of('head', 'click')),
            ('A browser click 5 s after delivery that never runs the page\'s JavaScript', of('quick', 'click')),
            ('A person opening 20 min after delivery (Apple Mail, home address)', of('pat', 'open')),
            ('The person clicking one link; the page then runs the snippet', of('pat', 'click')),
        ]
        want = [(['scanner'], ['fast_after_send', 'sweep']), (['scanner'], ['sweep']),
                (['scanner'], ['ip_list', 'sweep']), (['prefetch'], ['ip_list']), (['scanner'], ['honeypot_link']),
                (['bot'], ['head']), (['scanner'], ['fast_after_send', 'no_js_after']), (['likely-human'], ['late']),
                (['human'], ['js_after', 'late'])]
        table, wrong = [], []
        for (what, group), (labels, reasons) in zip(rows, want):
            check(group, f'no events for: {what}')
            got_labels, got_reasons = row_of(group)
            table.append((what, len(group), got_labels, got_reasons))
            if got_labels != labels or not set(reasons) <= set(got_reasons):
                wrong.append(f'{what}: {got_labels} {got_reasons}, expected {labels} with {reasons}')
        check(not wrong, '\n'.join(wrong))
        check(len(of('gw', 'click')) == 8 and len(of('ms', 'click')) == 8, 'sweeps not stored whole')
        check(all(e.get('send') for e in evs if e['type'] in ('open', 'click')), 'an open or click without its send')
        ms_data = of('ms', 'click')[0].get('data', {})
        check(ms_data.get('list') == 'microsoft-eop' and 'since_delivery_s' in ms_data, f'evidence {ms_data}')

        # Only the person scores, and one alert says so.
        for who in machines + ('ms',):
            j = json.loads(env.cli(time.time(), 'score', f'{who}@example.com', '--json').stdout)
            check(j['score'] == 0 and j['ledger'] == [], f'{who} scored: {j}')
        j = json.loads(env.cli(time.time(), 'score', 'pat@example.com', '--json').stdout)
        check(j['score'] >= 60, f'the person did not score: {j}')
        check(it.wait_until(lambda: len(rcv.ok_alerts()) >= 1, timeout=5), 'no alert for the person')
        time.sleep(1)
        alerts = rcv.ok_alerts()
        check(len(alerts) == 1 and alerts[0][2]['contact']['email'] == 'pat@example.com',
              f'alerts: {[a[2]["contact"]["email"] for a in alerts]}')

        # What was set aside, and why: leadloop stats, per send, and /metrics.
        st = json.loads(env.cli(time.time(), 'stats', '--json').stdout)['email']
        machine = sum(1 for e in evs if e['type'] in ('open', 'click') and e['class'] in ('scanner', 'prefetch', 'bot'))
        check(st['set_aside'] == machine and st['total'] == machine + 2, f'stats {st}, {machine} machine events')
        for reason in ('sweep', 'honeypot_link', 'ip_list', 'head', 'js_after', 'fast_after_send'):
            check(st['reasons'].get(reason, 0) > 0, f'stats has no {reason}: {st}')
        per = json.loads(env.cli(time.time(), 'stats', '--send', str(msgs['gw'].send), '--json').stdout)
        check(per['classes']['scanner'] == 9 and per['set_aside'] == 9, f'stats --send: {per}')
        text = env.cli(time.time(), 'stats').stdout.decode()
        check(f'{machine} set aside as machines' in text, text)
        metrics = env.server.metrics()
        check(f'leadloop_email_events{{class="scanner"}} {st["classes"]["scanner"]}' in metrics,
              f'/metrics: {[ln for ln in metrics.splitlines() if "email" in ln]}')
        check_readme(accuracy_table(table))

        # A list edited while leadloopd runs is used within a second or two, without a restart;
        # a broken edit is reported and the previous lists stay.
        with open(os.path.join(lists, 'test-gateway.txt'), 'w') as f:
            f.write('# class: scanner\n# source: https://example.test/ (this test)\nip 198.51.100.60/32 Test gateway\n')
        time.sleep(2.5)
        fetch(env, msgs['pat'].links[5], '198.51.100.60')
        with open(os.path.join(lists, 'broken.txt'), 'w') as f:
            f.write('# class: robot\n')
        time.sleep(2.5)
        fetch(env, msgs['pat'].links[6], '198.51.100.60')
        time.sleep(0.5)
        late = [e for e in json_events(env) if e.get('email') == 'pat@example.com' and e['type'] == 'click'][-2:]
        check(all(e['class'] == 'scanner' and 'ip_list' in e['reasons'] and e['data'].get('list') == 'test-gateway'
                  for e in late), f'after the list edits: {late}')
        log = env.server.stderr_tail(4000)
        check('scanner lists reloaded' in log and 'broken.txt:1' in log, f'leadloopd log: {log}')
    finally:
        env.close()
        rcv.stop()


def json_events(env):
    out = env.cli(time.time(), 'events', '--json').stdout.decode()
    return [json.loads(ln) for ln in out.splitlines() if ln.strip()]


def stop_smtp_servers():
    for s in mt.SMTPS:
        s.stop()
    mt.SMTPS.clear()


def main():
    it.run_suite('scanner', globals(), binaries=(it.LEADLOOPD, it.LEADLOOP, mt.MAILER), before=mt.make_certs,
                 after=stop_smtp_servers)


if __name__ == '__main__':
    main()
