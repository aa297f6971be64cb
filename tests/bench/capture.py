#!/usr/bin/env python3
"""
Capture benchmark (issue #6, parts 1 and 2): leadloopd's open pixel, click and beacon, each
answered after a durable (synced) group commit, against nginx empty_gif (access log off, and
on to a file) and a bare libh2o server answering the same GIF (tests/bench/bare_h2o.c).
Part 2, the durability cost, runs in the same alternation: the open pixel, click and beacon
answered once queued (`ack: queued`, the events still committed by the writer behind the
answers), the pixel with the sync removed (LD_PRELOAD nosync.so), and the pixel answered at once
with no event at all (a token that does not verify): the floor.

Every round starts each server afresh (leadloopd from a copy of the same seeded data
directory), warms it up, then loads it with wrk (keep-alive) for --seconds, targets in turn:
A B C ... A B C ... Server CPU per request is utime+stime of all its processes (and
threads) from /proc/PID/stat over the measured run, divided by the requests wrk completed.
The server is pinned to --server-cpu, wrk to --client-cpu (taskset).

Run by tests/bench/run.sh, which builds bare_h2o and nosync.so into BENCH_DIR and passes them.
Prints a Markdown table; --json FILE keeps every run.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf('SC_CLK_TCK')
# Every target gets the same request headers: a desktop browser's, so that leadloopd classifies
# the hits as human (a click binds the browser to the contact, as a real one does).
BROWSER_UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36'
HERE = os.path.dirname(os.path.abspath(__file__))

NGINX_CONF = '''daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    {access_log}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            empty_gif;
            add_header Cache-Control "no-store, max-age=0";
        }}
    }}
}}
'''


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait_port(port, proc, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f'server exited with {proc.returncode} before listening on {port}')
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f'nothing listens on {port} after {timeout}s')


def descendants(pid):
    """pid and every process below it (nginx's workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f'/proc/{p}/task/{p}/children') as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f'/proc/{p}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except OSError:
            pass
    return total


def system_busy_ticks():
    """Busy ticks of all CPUs (every /proc/stat column but idle and iowait)."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]


def to_us(s):
    m = re.match(r'([\d.]+)(us|ms|s)$', s)
    v = float(m.group(1))
    return v * {'us': 1, 'ms': 1000, 's': 1e6}[m.group(2)]


def parse_wrk(text):
    r = {}
    m = re.search(r'(\d+) requests in ([\d.]+)(\w+)', text)
    r['requests'] = int(m.group(1))
    m = re.search(r'Requests/sec:\s+([\d.]+)', text)
    r['rps'] = float(m.group(1))
    for pct in ('50', '99'):
        m = re.search(r'^\s+' + pct + r'%\s+(\S+)', text, re.M)
        r['p' + pct + '_us'] = to_us(m.group(1))
    m = re.search(r'Non-2xx or 3xx responses: (\d+)', text)
    r['bad'] = int(m.group(1)) if m else 0
    m = re.search(r'Socket errors: (.*)', text)
    r['socket_errors'] = m.group(1).strip() if m else ''
    return r


class Target:
    """One server set-up and the request wrk sends to it."""

    def __init__(self, name, kind, path, lua=None, env=None, binary=None, conf=''):
        self.name, self.kind, self.path, self.lua, self.env, self.binary = name, kind, path, lua, env, binary
        self.conf = conf  # extra leadloop.yaml lines


class Bench:
    def __init__(self, a):
        self.a = a
        self.dir = os.path.abspath(a.dir)
        self.port = a.port
        self.seed = os.path.join(self.dir, 'seed')
        self.conf = os.path.join(self.dir, 'leadloop.yaml')

    def taskset(self, cpu):
        return ['taskset', '-c', str(cpu)] if cpu is not None and shutil.which('taskset') else []

    # ---- leadloopd ----

    def write_conf(self, data_dir, extra=''):
        with open(self.conf, 'w') as f:
            f.write(f'listen: 127.0.0.1:{self.port}\npublic_url: http://127.0.0.1:{self.port}\n'
                    f'data_dir: {data_dir}\nmap_size: 8G\nlog_level: warn\n{extra}')

    def prepare(self):
        """A seeded data directory (keys, one contact) and the signed URLs every run reuses."""
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.write_conf(self.seed)
        cli = [self.a.leadloop, '-c', self.conf]
        out = subprocess.run(cli + ['pixel', '--to', 'bench@example.com', '--send', '1'], check=True,
                             capture_output=True, text=True).stdout.strip()
        self.open_path = out[out.index('/o/'):]
        out = subprocess.run(cli + ['link', 'https://www.example.com/pricing', '--to', 'bench@example.com',
                                    '--send', '1', '--link', '0'], check=True, capture_output=True, text=True).stdout.strip()
        self.click_path = out[out.index('/c/'):]
        # Same length, last tag character changed: verification fails, the GIF goes out at once.
        last = self.open_path[-5]
        self.bad_open_path = self.open_path[:-5] + ('A' if last != 'A' else 'B') + '.gif'
        lua = os.path.join(self.dir, 'beacon.lua')
        shutil.copy(os.path.join(HERE, 'beacon.lua'), lua)
        self.beacon_lua = lua

    def start_leadloopd(self, t):
        data = os.path.join(self.dir, 'data')
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(self.seed, data)
        self.write_conf(data, t.conf)
        env = dict(os.environ)
        env.update(t.env or {})
        binary = os.path.abspath(t.binary or self.a.leadloopd)
        # Run where that build's tree is (bin/..): the snippet and the country database it
        # loads by default live in its build/.
        return subprocess.Popen(self.taskset(self.a.server_cpu) + [binary, '-c', self.conf],
                                cwd=os.path.dirname(os.path.dirname(binary)), env=env, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(self.dir, 'leadloopd.log'), 'ab'))

    # ---- references ----

    def start_nginx(self, with_log):
        d = os.path.join(self.dir, 'nginx')
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, 'tmp'))
        access = f'access_log {d}/access.log combined;' if with_log else 'access_log off;'
        conf = os.path.join(d, 'nginx.conf')
        with open(conf, 'w') as f:
            f.write(NGINX_CONF.format(dir=d, port=self.port, access_log=access))
        return subprocess.Popen(self.taskset(self.a.server_cpu) + [self.a.nginx, '-c', conf, '-p', d + '/', '-e',
                                                                     d + '/error.log'],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, 'nginx.log'), 'ab'))

    def start_bare(self):
        return subprocess.Popen(self.taskset(self.a.server_cpu) + [self.a.bare_h2o, '127.0.0.1', str(self.port)],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, 'bare.log'), 'ab'))

    def start(self, t):
        if t.kind == 'leadloopd':
            return self.start_leadloopd(t)
        if t.kind == 'nginx-off':
            return self.start_nginx(False)
        if t.kind == 'nginx-log':
            return self.start_nginx(True)
        return self.start_bare()

    # ---- one measured run ----

    def wrk(self, t, seconds, path):
        cmd = self.taskset(self.a.client_cpu) + ['wrk', f'-t{self.a.threads}', f'-c{self.a.conns}', f'-d{seconds}s',
                                                 '--latency', '-H', 'User-Agent: ' + BROWSER_UA,
                                                 '-H', 'Accept: image/avif,image/webp,*/*']
        if t.lua:
            cmd += ['-s', t.lua]
        cmd.append(f'http://127.0.0.1:{self.port}{path}')
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def run_one(self, t):
        proc = self.start(t)
        try:
            wait_port(self.port, proc)
            self.wrk(t, self.a.warmup, t.path)
            pids = descendants(proc.pid)
            c0, w0, s0, k0 = cpu_ticks(pids), time.time(), system_busy_ticks(), os.times()
            out = self.wrk(t, self.a.seconds, t.path)
            c1, w1, s1, k1 = cpu_ticks(pids), time.time(), system_busy_ticks(), os.times()
            r = parse_wrk(out)
            client = (k1.children_user + k1.children_system) - (k0.children_user + k0.children_system)
            r['client_util'] = client / (w1 - w0)
            # What the server and wrk did not use of the busy time: other processes on the machine.
            r['other_util'] = max(0.0, (s1 - s0) / CLK_TCK - (c1 - c0) / CLK_TCK - client) / (w1 - w0)
            r['cpu_s'] = (c1 - c0) / CLK_TCK
            r['cpu_us_per_req'] = (c1 - c0) / CLK_TCK * 1e6 / max(r['requests'], 1)
            r['cpu_util'] = (c1 - c0) / CLK_TCK / (w1 - w0)
            if t.kind == 'leadloopd':
                r['metrics'] = self.metrics()
            return r, out
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def metrics(self):
        with socket.create_connection(('127.0.0.1', self.port), timeout=5) as s:
            s.sendall(b'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n')
            data = b''
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        text = data.decode('utf-8', 'replace')
        out = {}
        for key in ('leadloop_batch_events_sum', 'leadloop_batch_events_count', 'leadloop_commit_seconds_sum',
                    'leadloop_commit_seconds_count'):
            m = re.search('^' + key + r' (\S+)', text, re.M)
            out[key] = float(m.group(1)) if m else None
        out['stored'] = sum(float(v) for v in re.findall(r'^leadloop_events_stored_total\{[^}]*\} (\S+)', text, re.M))
        out['lost'] = sum(float(v) for v in re.findall(r'^leadloop_events_lost_total\{[^}]*\} (\S+)', text, re.M))
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dir', default='build/bench/capture')
    ap.add_argument('--leadloopd', default='bin/leadloopd')
    ap.add_argument('--leadloop', default='bin/leadloop')
    ap.add_argument('--bare-h2o', required=True)
    ap.add_argument('--nosync', help='LD_PRELOAD library that makes fsync/fdatasync/msync/O_DSYNC no-ops')
    ap.add_argument('--nginx', default=shutil.which('nginx') or '/usr/sbin/nginx')
    ap.add_argument('--port', type=int, default=18080)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--seconds', type=int, default=10)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--conns', type=int, default=64)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--server-cpu', default='1')
    ap.add_argument('--client-cpu', default='0')
    ap.add_argument('--only', default='', help='comma-separated target names')
    ap.add_argument('--extra-leadloopd', action='append', default=[], metavar='LABEL=PATH',
                    help='another leadloopd build (a candidate fix): its open pixel and click join the alternation')
    ap.add_argument('--json')
    a = ap.parse_args()
    if (os.cpu_count() or 1) < 2:
        a.server_cpu = a.client_cpu = None
    b = Bench(a)
    b.prepare()
    targets = [
        Target('nginx empty_gif, access_log off', 'nginx-off', '/o/x.gif'),
        Target('nginx empty_gif, access log to a file', 'nginx-log', '/o/x.gif'),
        Target('bare h2o GIF', 'bare', '/o/x.gif'),
        Target('leadloopd open pixel', 'leadloopd', b.open_path),
        Target('leadloopd click', 'leadloopd', b.click_path),
        Target('leadloopd beacon (POST /e)', 'leadloopd', '/e', lua=b.beacon_lua),
    ]
    targets += [
        Target('leadloopd open pixel, ack: queued', 'leadloopd', b.open_path, conf='ack: queued\n'),
        Target('leadloopd click, ack: queued', 'leadloopd', b.click_path, conf='ack: queued\n'),
        Target('leadloopd beacon (POST /e), ack: queued', 'leadloopd', '/e', lua=b.beacon_lua, conf='ack: queued\n'),
    ]
    if a.nosync:
        targets.append(Target('leadloopd open, commit without sync', 'leadloopd', b.open_path,
                              env={'LD_PRELOAD': os.path.abspath(a.nosync)}))
    targets.append(Target('leadloopd open, answered at once (bad token, no event)', 'leadloopd', b.bad_open_path))
    for extra in a.extra_leadloopd:
        label, path = extra.split('=', 1)
        targets.append(Target(f'leadloopd open pixel [{label}]', 'leadloopd', b.open_path, binary=os.path.abspath(path)))
        targets.append(Target(f'leadloopd click [{label}]', 'leadloopd', b.click_path, binary=os.path.abspath(path)))
    if a.only:
        keep = a.only.split(',')
        targets = [t for t in targets if any(k in t.name for k in keep)]

    runs = {t.name: [] for t in targets}
    for r in range(a.rounds):
        for t in targets:
            res, out = b.run_one(t)
            runs[t.name].append(res)
            log(f'round {r + 1}/{a.rounds}  {t.name:58s} {res["rps"]:9.0f} req/s  {res["cpu_us_per_req"]:6.2f} µs CPU/req'
                f'  p50 {res["p50_us"] / 1000:6.2f} ms  p99 {res["p99_us"] / 1000:6.2f} ms'
                f'  CPU: server {100 * res["cpu_util"]:3.0f}% wrk {100 * res["client_util"]:3.0f}% other {100 * res["other_util"]:3.0f}%'
                f'{"  NON-2XX/3XX " + str(res["bad"]) if res["bad"] else ""}'
                f'{"  socket errors: " + res["socket_errors"] if res["socket_errors"] else ""}')

    med = {}
    for name, rs in runs.items():
        med[name] = {k: statistics.median(x[k] for x in rs) for k in ('rps', 'cpu_us_per_req', 'p50_us', 'p99_us',
                                                                      'cpu_util', 'client_util', 'other_util')}
        med[name]['bad'] = sum(x['bad'] for x in rs)
        ms = [x['metrics'] for x in rs if 'metrics' in x]
        if ms and ms[0]['leadloop_batch_events_count']:
            med[name]['batch'] = statistics.median(m['leadloop_batch_events_sum'] / m['leadloop_batch_events_count']
                                                   for m in ms)
            med[name]['commit_ms'] = statistics.median(1000 * m['leadloop_commit_seconds_sum'] /
                                                       m['leadloop_commit_seconds_count'] for m in ms)
            med[name]['lost'] = sum(m['lost'] for m in ms)

    print(f'Capture: wrk -t{a.threads} -c{a.conns} keep-alive, {a.seconds} s runs after {a.warmup} s warm-up, '
          f'{a.rounds} rounds alternating, medians; server on CPU {a.server_cpu}, wrk on CPU {a.client_cpu}.\n')
    print('| target | req/s | server CPU µs/req | p50 ms | p99 ms | CPU use: server / wrk / other processes | events/commit | commit ms |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    for name, m in med.items():
        batch = f'{m["batch"]:.1f}' if 'batch' in m else ''
        commit = f'{m["commit_ms"]:.2f}' if 'commit_ms' in m else ''
        print(f'| {name} | {m["rps"]:.0f} | {m["cpu_us_per_req"]:.2f} | {m["p50_us"] / 1000:.2f} | {m["p99_us"] / 1000:.2f} | '
              f'{100 * m["cpu_util"]:.0f}% / {100 * m["client_util"]:.0f}% / {100 * m["other_util"]:.0f}% | {batch} | {commit} |')
    refs = [n for n in med if not n.startswith('leadloopd')]
    ours = [n for n in med if n.startswith('leadloopd')]
    if refs and ours:
        print('\nRatios, leadloopd ÷ reference (req/s; CPU µs per request):\n')
        print('| leadloopd | ' + ' | '.join(f'req/s ÷ {r}' for r in refs) + ' | ' +
              ' | '.join(f'CPU ÷ {r}' for r in refs) + ' |')
        print('|---|' + '---:|' * (2 * len(refs)))
        for o in ours:
            print(f'| {o} | ' + ' | '.join(f'{med[o]["rps"] / med[r]["rps"]:.2f}' for r in refs) + ' | ' +
                  ' | '.join(f'{med[o]["cpu_us_per_req"] / med[r]["cpu_us_per_req"]:.2f}' for r in refs) + ' |')
    bad = {n: m['bad'] for n, m in med.items() if m['bad']}
    if bad:
        print(f'\nwarning: non-2xx/3xx responses: {bad}')
    lost = {n: m['lost'] for n, m in med.items() if m.get('lost')}
    if lost:
        print(f'\nwarning: events lost (leadloop_events_lost_total): {lost}')
    try:
        with open(os.path.join(b.dir, 'leadloopd.log')) as f:
            warnings = sorted(set(line.strip() for line in f if 'warning' in line))
    except OSError:
        warnings = []
    for w in warnings:
        print(f'\nwarning from leadloopd: {w}')
    if a.json:
        with open(a.json, 'w') as f:
            json.dump({'args': vars(a), 'runs': runs, 'medians': med}, f, indent=1)


if __name__ == '__main__':
    main()
