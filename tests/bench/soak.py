#!/usr/bin/env python3
"""
Soak (issue #6, part 5's peak memory over time): leadloopd's memory, threads and open files
through a long run with alerts going out, sampled every --interval seconds.

One leadloopd with scoring, routing, an SLA and a webhook (writer.py's configuration, plus
`sla: accept_seconds` short enough that every lead breaches it during the run, and the live
feed on `alerts.admin_listen` with one client reading it), under two paced wrk loads:
- beacons, one pageview each from 100,000 returning visitors (beacon.lua), at --background a
  second;
- first clicks of one link sent to --recipients contacts (tokens), at --click-rate a second:
  each click is worth 100 points (threshold 60), so each makes a lead sales-ready, which routes
  it, posts an alert to the webhook receiver here and to the live feed, and --sla seconds later
  (nobody accepts it) an SLA breach that alerts again (escalate_to, without `reassign`: with it,
  each lead would breach up to reassign_max + 1 times, and the alerts a second would depend on
  how many leads are still being passed round rather than on the clicks alone).

A leak or a table that only grows shows as anonymous memory (RssAnon: the heap and the threads'
stacks; the store is a file mapping and counts as RssFile) or open descriptors rising with the
events. Prints a Markdown table of the samples and the growth from the end of the first
quarter (everything warm) to the end; --json FILE keeps the samples.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capture import BROWSER_UA, CLICKS_LUA, HERE, cpu_ticks, CLK_TCK, log, parse_wrk, stop_server, wait_port  # noqa: E402
from writer import PACE_LUA, SCORING, receiver  # noqa: E402

TOKEN = 'soak-admin-token-0123456789abcdef'


def status(pid):
    """VmRSS, RssAnon, RssFile, VmHWM (kB) and Threads from /proc/PID/status; open descriptors."""
    r = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in ('VmRSS', 'RssAnon', 'RssFile', 'VmHWM', 'Threads'):
                r[k] = int(v.split()[0])
    r['fds'] = len(os.listdir(f'/proc/{pid}/fd'))
    return r


def thread_cpu_s(pid, name):
    """CPU seconds of the thread of pid named name (ll-notify: the outbox's walks and posts)."""
    for tid in os.listdir(f'/proc/{pid}/task'):
        try:
            with open(f'/proc/{pid}/task/{tid}/comm') as f:
                if f.read().strip() != name:
                    continue
            with open(f'/proc/{pid}/task/{tid}/stat') as f:
                v = f.read().rsplit(')', 1)[1].split()
            return (int(v[11]) + int(v[12])) / CLK_TCK
        except OSError:
            pass
    return 0.0


def feed(port, counter, stop):
    """The live feed's one client: counts the `data:` lines of the event stream."""
    while not stop.is_set():
        try:
            s = socket.create_connection(('127.0.0.1', port), timeout=2)
        except OSError:
            time.sleep(0.2)
            continue
        s.sendall(f'GET /alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n'.encode())
        s.settimeout(1)
        buf = b''
        while not stop.is_set():
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b'\n')
            counter[0] += sum(1 for ln in lines if ln.startswith(b'data:'))
        s.close()
        counter[1] += 1  # connections made


class Soak:
    def __init__(self, a):
        self.a = a
        self.dir = os.path.abspath(a.dir)
        self.conf = os.path.join(self.dir, 'leadloop.yaml')
        self.data = os.path.join(self.dir, 'data')

    def taskset(self, cpu):
        return ['taskset', '-c', str(cpu)] if cpu not in (None, '') and shutil.which('taskset') else []

    def prepare(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        with open(self.conf, 'w') as f:
            f.write(f'listen: 127.0.0.1:{self.a.port}\npublic_url: http://127.0.0.1:{self.a.port}\n'
                    f'data_dir: {self.data}\nmap_size: 8G\nlog_level: {self.a.log_level}\n')
            f.write(SCORING.format(hook_port=self.a.hook_port))
            if self.a.down_hook:
                f.write(f'    - {{name: down, url: "http://127.0.0.1:{self.a.down_port}/hook"}}\n')
            f.write(f'  admin_listen: 127.0.0.1:{self.a.admin_port}\n  admin_token: {TOKEN}\n')
            f.write(f'sla:\n  accept_seconds: {self.a.sla}\n  escalate_to: manager@example.com\n')
        subprocess.run([self.a.leadloop, '-c', self.conf, 'keys', 'list'], check=True, capture_output=True)  # makes the keys
        paths = os.path.join(self.dir, 'clicks.txt')
        with open(paths, 'w') as f:
            subprocess.run([self.a.tokens, self.data, str(self.a.recipients), 'https://www.example.com/pricing', '1'],
                           check=True, stdout=f)
        self.clicks_lua = os.path.join(self.dir, 'clicks.lua')
        with open(self.clicks_lua, 'w') as f:
            f.write(CLICKS_LUA.replace('PATHS', paths) + PACE_LUA.format(rate=self.a.click_rate))
        self.beacon_lua = os.path.join(self.dir, 'beacon.lua')
        with open(os.path.join(HERE, 'beacon.lua')) as src, open(self.beacon_lua, 'w') as f:
            f.write(src.read() + PACE_LUA.format(rate=self.a.background))

    def wrk(self, lua, path, conns):
        cmd = self.taskset(self.a.client_cpu) + ['wrk', '-t1', f'-c{conns}', f'-d{self.a.seconds}s', '--latency',
                                                 '-H', 'User-Agent: ' + BROWSER_UA, '-s', lua,
                                                 f'http://127.0.0.1:{self.a.port}{path}']
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stored(self):
        import http.client
        c = http.client.HTTPConnection('127.0.0.1', self.a.port, timeout=10)
        c.request('GET', '/metrics')
        body = c.getresponse().read().decode()
        c.close()
        r = {}
        for line in body.splitlines():
            if line.startswith('leadloop_events_stored_total{type="'):
                t = line.split('"')[1]
                r[t] = float(line.rsplit(' ', 1)[1])
        return r

    def run(self, srv, lock):
        proc = subprocess.Popen(self.taskset(self.a.server_cpu) + [os.path.abspath(self.a.leadloopd), '-c', self.conf],
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(self.a.leadloopd))),
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, 'leadloopd.log'), 'ab'))
        stop, fed = threading.Event(), [0, 0]
        ft = None
        loads = []
        samples = []
        try:
            wait_port(self.a.port, proc)
            wait_port(self.a.admin_port, proc)
            ft = threading.Thread(target=feed, args=(self.a.admin_port, fed, stop), daemon=True)
            ft.start()
            loads = [self.wrk(self.beacon_lua, '/e', 64), self.wrk(self.clicks_lua, '/c', 32)]
            t0, c0 = time.time(), cpu_ticks([proc.pid])
            while True:
                time.sleep(max(0.0, t0 + (len(samples) + 1) * self.a.interval - time.time()))
                if proc.poll() is not None:
                    raise RuntimeError(f'leadloopd exited with {proc.returncode} during the soak')
                s = status(proc.pid)
                ev = self.stored()
                with lock:
                    hooks = sum(srv.kinds.values())
                    kinds = dict(srv.kinds)
                s.update(t=time.time() - t0, events=sum(ev.values()), clicks=ev.get('click', 0), hooks=hooks,
                         feed=fed[0], kinds=kinds, cpu_s=(cpu_ticks([proc.pid]) - c0) / CLK_TCK,
                         notify_cpu_s=thread_cpu_s(proc.pid, 'll-notify'))
                samples.append(s)
                log(f'soak {s["t"]:6.0f} s  events {s["events"]:9.0f}  clicks {s["clicks"]:7.0f}  alerts: webhook '
                    f'{hooks:7d} feed {fed[0]:7d}  RssAnon {s["RssAnon"] / 1024:6.1f} MB  VmRSS '
                    f'{s["VmRSS"] / 1024:6.1f} MB  threads {s["Threads"]}  fds {s["fds"]}  CPU {s["cpu_s"]:.1f} s '
                    f'(ll-notify {s["notify_cpu_s"]:.1f})')
                if all(w.poll() is not None for w in loads) or s['t'] >= self.a.seconds + 2 * self.a.interval:
                    break
            outs = [parse_wrk(w.communicate()[0]) for w in loads]
            return samples, outs, fed[1]
        finally:
            stop.set()
            for w in loads:
                if w.poll() is None:
                    w.kill()
                    w.communicate()
            stop_server(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--dir', default='build/bench/soak')
    ap.add_argument('--leadloopd', default='bin/leadloopd')
    ap.add_argument('--leadloop', default='bin/leadloop')
    ap.add_argument('--tokens', default='build/bench/tokens')
    ap.add_argument('--port', type=int, default=18080)
    ap.add_argument('--hook-port', type=int, default=18090)
    ap.add_argument('--admin-port', type=int, default=18081)
    ap.add_argument('--seconds', type=int, default=600)
    ap.add_argument('--interval', type=int, default=30)
    ap.add_argument('--background', type=int, default=2000, help='beacons a second')
    ap.add_argument('--click-rate', type=int, default=50, help='first clicks (sales-ready leads) a second')
    ap.add_argument('--recipients', type=int, default=100000)
    ap.add_argument('--sla', type=int, default=5, help='sla.accept_seconds')
    ap.add_argument('--server-cpu', default='1')
    ap.add_argument('--client-cpu', default='0')
    ap.add_argument('--down-hook', action='store_true',
                    help='a second webhook whose receiver is down (nothing listens on --down-port): its alerts '
                         'pile up in the outbox, backed off, while the first receiver\'s go out')
    ap.add_argument('--down-port', type=int, default=18091)
    ap.add_argument('--log-level', default='warn')
    ap.add_argument('--json')
    a = ap.parse_args()
    if (os.cpu_count() or 1) < 2:
        a.server_cpu = a.client_cpu = None
    if a.click_rate * a.seconds > a.recipients:
        ap.error(f'--click-rate x --seconds ({a.click_rate * a.seconds}) must not pass --recipients '
                 f'({a.recipients}): every click is a first click')
    s = Soak(a)
    srv, got, lock = receiver(a.hook_port)
    try:
        s.prepare()
        samples, outs, feed_conns = s.run(srv, lock)
    finally:
        srv.shutdown()
    left = {}
    for line in subprocess.run([a.leadloop, '-c', s.conf, 'outbox'], check=True, capture_output=True,
                               text=True).stdout.splitlines():
        if len(line.split()) > 2:
            left[line.split()[2]] = left.get(line.split()[2], 0) + 1

    print(f'Soak: {a.seconds} s of beacons paced at {a.background}/s and first clicks at {a.click_rate}/s (each a '
          f'sales-ready lead: routed, a webhook alert and a live-feed event, then an SLA breach {a.sla} s later that '
          f'alerts again); leadloopd on CPU {a.server_cpu}, sampled every {a.interval} s. Beacons '
          f'measured {outs[0]["rps"]:.0f}/s (p99 {outs[0]["p99_us"] / 1000:.1f} ms, {outs[0]["bad"]} non-2xx), '
          f'clicks {outs[1]["rps"]:.0f}/s (p99 {outs[1]["p99_us"] / 1000:.1f} ms, {outs[1]["bad"]} non-3xx); the live '
          f'feed\'s client connected {feed_conns or 1} time(s).\n')
    print('| s | events | clicks | webhook alerts | feed alerts | RssAnon MB | RssFile MB | VmHWM MB | threads | '
          'open fds | CPU s | ll-notify CPU s |')
    print('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for x in samples:
        print(f'| {x["t"]:.0f} | {x["events"]:.0f} | {x["clicks"]:.0f} | {x["hooks"]} | {x["feed"]} | '
              f'{x["RssAnon"] / 1024:.1f} | {x["RssFile"] / 1024:.1f} | {x["VmHWM"] / 1024:.1f} | {x["Threads"]} | '
              f'{x["fds"]} | {x["cpu_s"]:.1f} | {x["notify_cpu_s"]:.1f} |')
    q = samples[max(0, len(samples) // 4 - 1)]
    e = samples[-1]
    grown = (e['RssAnon'] - q['RssAnon']) / 1024
    per_m = grown / max(1.0, (e['events'] - q['events']) / 1e6)
    print(f'\nFrom {q["t"]:.0f} s to {e["t"]:.0f} s ({e["events"] - q["events"]:.0f} events, '
          f'{e["hooks"] - q["hooks"]} webhook alerts): anonymous memory {q["RssAnon"] / 1024:.1f} → '
          f'{e["RssAnon"] / 1024:.1f} MB ({grown:+.1f} MB, {per_m:+.2f} MB a million events), open descriptors '
          f'{q["fds"]} → {e["fds"]}, threads {q["Threads"]} → {e["Threads"]}. Left in the outbox after the stop: '
          + (', '.join(f'{v} for {k}' for k, v in sorted(left.items())) or 'nothing') + '.')
    if a.json:
        with open(a.json, 'w') as f:
            json.dump({'args': vars(a), 'samples': samples, 'wrk': outs}, f, indent=1)


if __name__ == '__main__':
    main()
