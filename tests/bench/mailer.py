#!/usr/bin/env python3
"""
Mailer benchmark (issue #6, part 3): messages/s from leadloop-mailer (a personalised template,
signed links, open pixel, unsubscribe headers, full MIME) into Postfix's smtp-sink, against
Postfix's smtp-source sending messages of the same size to the same sink with the same number
of parallel sessions.

Set-up: --messages contacts imported from a CSV with `leadloop contact import --enroll bench`
into a seed data directory; every round copies it and times one `leadloop-mailer --once` (its
whole run: start, claims, SMTP, outcomes). smtp-source runs twice per round: with -d (each
session keeps its connection, as the mailer's sessions do) and without (a connection per
message). Rounds alternate A B C A B C; medians. smtp-sink is pinned to --sink-cpu, the senders
to --client-cpu. A probe first sends 3 messages to a dumping sink to learn the message size.

Prints a Markdown table; --json FILE keeps every run.
"""
import argparse
import glob
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

SINK = '/usr/sbin/smtp-sink'
SOURCE = '/usr/sbin/smtp-source'

TEMPLATE = '''Subject: {{first_name|there}}, your {{company|team}} trial is ready
--- html
<!doctype html>
<html><body style="font-family:sans-serif">
<p>Hi {{first_name|there}},</p>
<p>The {{company|your company}} workspace is ready. The <a href="https://www.example.com/start?plan=pro">getting
started guide</a> takes ten minutes, and <a href="https://www.example.com/pricing">pricing</a> has not changed.</p>
<p>Questions? <a href="https://docs.example.com/faq">Read the FAQ</a> or answer this message.</p>
<p style="font-size:small;color:#666">You get this because you asked us to keep in touch.
<a href="{{unsubscribe_url}}">Unsubscribe</a>.</p>
</body></html>
--- text
Hi {{first_name|there}},

The {{company|your company}} workspace is ready. The getting started guide takes ten minutes:
https://www.example.com/start?plan=pro
Pricing: https://www.example.com/pricing
FAQ: https://docs.example.com/faq

Unsubscribe: {{unsubscribe_url}}
'''


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def taskset(cpu):
    return ['taskset', '-c', str(cpu)] if cpu not in (None, '') and shutil.which('taskset') else []


def wait_port(port, proc, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f'smtp-sink exited with {proc.returncode}')
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f'smtp-sink is not listening on {port}')


class Sink:
    """smtp-sink on loopback; dump_dir keeps each message (for the size probe)."""

    def __init__(self, port, cpu, dump_dir=None):
        args = [SINK, '-u', 'nobody']
        if dump_dir:
            args += ['-d', dump_dir + '/']
        args += [f'127.0.0.1:{port}', '1024']
        self.proc = subprocess.Popen(taskset(cpu) + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_port(port, self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def timed(cmd, **kw):
    k0, t0 = os.times(), time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    t1, k1 = time.time(), os.times()
    if p.returncode != 0:
        raise RuntimeError(f'{cmd[0]} exited with {p.returncode}: {p.stderr[-2000:]}')
    cpu = (k1.children_user + k1.children_system) - (k0.children_user + k0.children_system)
    return t1 - t0, cpu, p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dir', default='build/bench/mailer')
    ap.add_argument('--leadloop', default='bin/leadloop')
    ap.add_argument('--mailer', default='bin/leadloop-mailer')
    ap.add_argument('--port', type=int, default=18025)
    ap.add_argument('--messages', type=int, default=5000)
    ap.add_argument('--sessions', type=int, default=4)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--sink-cpu', default='1')
    ap.add_argument('--client-cpu', default='0')
    ap.add_argument('--nodelay', help='LD_PRELOAD shim that sets TCP_NODELAY on connect (a diagnostic row)')
    ap.add_argument('--nosync', help='LD_PRELOAD shim that removes fsync (with --nodelay: a second diagnostic row)')
    ap.add_argument('--extra-mailer', action='append', default=[], metavar='LABEL=PATH',
                    help='another leadloop-mailer build (a candidate fix) in the same alternation')
    ap.add_argument('--dkim', action='store_true', help='a row with DKIM signing (a 2048-bit RSA key made here)')
    ap.add_argument('--json')
    a = ap.parse_args()
    if (os.cpu_count() or 1) < 2:
        a.sink_cpu = a.client_cpu = None
    d = os.path.abspath(a.dir)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, 'templates'))
    with open(os.path.join(d, 'templates', 'bench.tpl'), 'w') as f:
        f.write(TEMPLATE)
    conf = os.path.join(d, 'leadloop.yaml')
    seed, data = os.path.join(d, 'seed'), os.path.join(d, 'data')

    dkim_key = os.path.join(d, 'dkim.pem')
    if a.dkim:
        subprocess.run(['openssl', 'genrsa', '-out', dkim_key, '2048'], check=True, capture_output=True)

    def write_conf(data_dir, port, dkim=False):
        extra = f'  dkim_key: {dkim_key}\n  dkim_selector: bench\n' if dkim else ''
        with open(conf, 'w') as f:
            f.write(f'''data_dir: {data_dir}
public_url: https://t.example.com
map_size: 4G
log_level: warn
smtp:
  host: localhost
  port: {port}
  starttls: false
  timeout: 30
mailer:
  from: news@example.com
  from_name: Example News
  templates: {d}/templates
  connections: {a.sessions}
{extra}programs:
  bench:
    steps:
      - template: bench.tpl
''')

    def seed_contacts(n, where):
        csv = os.path.join(d, f'contacts-{n}.csv')
        with open(csv, 'w') as f:
            f.write('email,first_name,company,tz\n')
            for i in range(n):
                f.write(f'user{i}@example.com,Name{i},Company {i % 977},Europe/Paris\n')
        shutil.rmtree(where, ignore_errors=True)
        write_conf(where, a.port)
        secs, _, _ = timed([a.leadloop, '-c', conf, 'contact', 'import', csv, '--enroll', 'bench'])
        return secs

    # The size of one message, from a probe of 3 into a dumping sink.
    probe_dump = os.path.join(d, 'probe-dump')
    os.makedirs(probe_dump)
    os.chmod(probe_dump, 0o777)  # smtp-sink writes as nobody
    seed_contacts(3, data)
    sink = Sink(a.port, a.sink_cpu, probe_dump)
    try:
        timed([a.mailer, '-c', conf, '--once'])
    finally:
        sink.stop()
    dumps = glob.glob(os.path.join(probe_dump, '*'))
    if not dumps:
        raise RuntimeError('the probe sent nothing: is the program due? (see leadloop-mailer output)')
    size = int(statistics.mean(os.path.getsize(p) for p in dumps))
    log(f'mailer: a message is about {size} bytes (probe of {len(dumps)})')

    import_s = seed_contacts(a.messages, seed)
    log(f'mailer: imported and enrolled {a.messages} contacts in {import_s:.1f} s')

    ours = {'leadloop-mailer --once': (a.mailer, None, False)}  # name -> (binary, LD_PRELOAD, DKIM)
    if a.dkim:
        ours['leadloop-mailer --once, DKIM-signed (RSA 2048)'] = (a.mailer, None, True)
    for e in a.extra_mailer:
        label, _, path = e.partition('=')
        ours[f'leadloop-mailer --once ({label})'] = (path, None, False)
    if a.nodelay:
        ours['leadloop-mailer, diagnostic: TCP_NODELAY (nodelay.so)'] = (a.mailer, os.path.abspath(a.nodelay), False)
        if a.nosync:
            ours['leadloop-mailer, diagnostic: TCP_NODELAY and no sync (nodelay.so nosync.so)'] = \
                (a.mailer, os.path.abspath(a.nodelay) + ' ' + os.path.abspath(a.nosync), False)
    sources = {k: None for k in ours}
    sources.update({
        f'smtp-source -d (one connection per session)': ['-d'],
        f'smtp-source (a connection per message)': [],
    })
    runs = {k: [] for k in sources}
    for r in range(a.rounds):
        for name, extra in sources.items():
            sink = Sink(a.port, a.sink_cpu)
            try:
                if extra is None:
                    shutil.rmtree(data, ignore_errors=True)
                    shutil.copytree(seed, data)
                    binary, preload, dkim = ours[name]
                    write_conf(data, a.port, dkim)
                    env = dict(os.environ)
                    if preload:
                        env['LD_PRELOAD'] = preload
                    secs, cpu, p = timed(taskset(a.client_cpu) + [binary, '-c', conf, '--once'], env=env)
                    st = json.loads(subprocess.run([a.leadloop, '-c', conf, 'stats', '--json'], capture_output=True,
                                                   text=True, check=True).stdout)
                    sent = st['types']['sent']
                    if sent != a.messages:
                        log(f'warning: leadloop-mailer sent {sent} of {a.messages} messages: {p.stderr[-1000:]}')
                else:
                    secs, cpu, p = timed(taskset(a.client_cpu) + [SOURCE] + extra +
                                         ['-s', str(a.sessions), '-m', str(a.messages), '-l', str(size), '-f',
                                          'news@example.com', '-t', 'user@example.com', f'127.0.0.1:{a.port}'])
                    sent = a.messages
            finally:
                sink.stop()
            res = {'seconds': secs, 'msgs_per_s': sent / secs, 'client_cpu_us_per_msg': cpu * 1e6 / sent}
            runs[name].append(res)
            log(f'round {r + 1}/{a.rounds}  {name:45s} {res["msgs_per_s"]:8.0f} msg/s  '
                f'{res["client_cpu_us_per_msg"]:7.1f} µs sender CPU/msg  ({secs:.2f} s)')

    med = {k: {m: statistics.median(x[m] for x in v) for m in ('msgs_per_s', 'client_cpu_us_per_msg')}
           for k, v in runs.items()}
    print(f'Mailer: {a.messages} messages of about {size} bytes, {a.sessions} parallel SMTP sessions, '
          f'Postfix smtp-sink on 127.0.0.1; {a.rounds} rounds alternating, medians; sink on CPU {a.sink_cpu}, '
          f'senders on CPU {a.client_cpu}. Import of {a.messages} contacts with --enroll: {import_s:.1f} s.\n')
    print('| sender | messages/s | sender CPU µs/message | leadloop-mailer ÷ this (medians) '
          '| leadloop-mailer ÷ this (median of each round\'s ratio) |')
    print('|---|---:|---:|---:|---:|')
    ours = med['leadloop-mailer --once']['msgs_per_s']
    ours_runs = runs['leadloop-mailer --once']
    for k, m in med.items():
        ratio = per_round = ''
        if k.startswith('smtp-source'):
            # The host's speed moves between rounds; each round's ratio compares neighbours.
            ratio = f'{ours / m["msgs_per_s"]:.2f}'
            per_round = f'{statistics.median(o["msgs_per_s"] / x["msgs_per_s"] for o, x in zip(ours_runs, runs[k])):.2f}'
        print(f'| {k} | {m["msgs_per_s"]:.0f} | {m["client_cpu_us_per_msg"]:.1f} | {ratio} | {per_round} |')
    print('\nThe diagnostic rows are not the product: LD_PRELOAD shims (tests/bench/nodelay.c, nosync.c) '
          'remove one cost each to show what bounds the mailer.')
    if a.json:
        with open(a.json, 'w') as f:
            json.dump({'args': vars(a), 'size': size, 'import_s': import_s, 'runs': runs, 'medians': med}, f, indent=1)


if __name__ == '__main__':
    main()
