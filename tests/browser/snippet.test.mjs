/*
 * Browser test of the website snippet (js/ll.js) against the real edge server.
 *
 * Starts bin/leadloopd on a free loopback port with a temporary config and data directory, a
 * small static site (tests/browser/site/) on another port, and headless Chromium through
 * playwright-core (Debian's /usr/bin/chromium; nothing downloads a browser). Then:
 *   1. the minified snippet stays under 4096 bytes;
 *   2. a person clicks a signed email link (leadloop link ... --to alice@example.com), lands on
 *      the site with the visitor handed over in ?_llv=, moves around (a page, an SPA route, a
 *      hash-only change, a download, a custom event, an outbound link), submits the contact
 *      form and closes the page; `leadloop events --json` must then hold every one of those
 *      events under the same visitor and alice's contact, and never the password;
 *   3. with Global Privacy Control on, and 4. with Do Not Track on, the page sends and stores
 *      nothing.
 *
 * Env: LEADLOOPD, LEADLOOP (default bin/leadloopd, bin/leadloop), CHROMIUM (/usr/bin/chromium),
 * LL_TEST_PORTS (LOW-HIGH: loopback ports from this range).
 * Prints TAP and a last line "browser: N passed, N failed"; exits 1 on any failure.
 */
import { chromium } from 'playwright-core';
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const SITE = path.join(HERE, 'site');
const bin = (env, def) => path.resolve(process.env[env] || path.join(ROOT, def));
const LEADLOOPD = bin('LEADLOOPD', 'bin/leadloopd');
const LEADLOOP = bin('LEADLOOP', 'bin/leadloop');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  /* navigator.webdriver off: the snippet reports it, and the edge labels such a browser a bot. */
  '--disable-blink-features=AutomationControlled'];
/* A desktop Chrome user agent: the edge marks "HeadlessChrome" as a machine, and machines never
 * get bound to a person by a click. This test is about the snippet, not the classifier. */
const USER_AGENT = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36';
const EMAIL = 'alice@example.com';
const PASSWORD = 'pw-Zq81-never-log-this';
const CARD = '4111111111111111';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'll-browser-'));
const cleanups = [];
let passed = 0, failed = 0, n = 0;

function log(...a) { console.log('#', ...a); }

async function test(name, fn) {
  n++;
  const problems = [];
  const check = (cond, what) => { if (!cond) problems.push(what); return !!cond; };
  try {
    await fn(check);
  } catch (e) {
    problems.push('threw: ' + (e && e.stack || e));
  }
  if (problems.length === 0) {
    passed++;
    console.log(`ok ${n} - ${name}`);
  } else {
    failed++;
    console.log(`not ok ${n} - ${name}`);
    for (const p of problems) console.log('  # ' + String(p).replace(/\n/g, '\n  # '));
  }
}

function tryPort(port) {
  return new Promise(resolve => {
    const s = net.createServer();
    s.on('error', () => resolve(null));
    s.listen(port, '127.0.0.1', () => { const a = s.address(); s.close(() => resolve(a.port)); });
  });
}

/* Any free loopback port, or one in LL_TEST_PORTS=LOW-HIGH when set (a shared machine). */
async function freePort() {
  const m = /^(\d+)-(\d+)$/.exec(process.env.LL_TEST_PORTS || '');
  if (!m) return tryPort(0);
  const lo = +m[1], hi = +m[2];
  for (let i = 0; i < 200; i++) {
    const port = await tryPort(lo + Math.floor(Math.random() * (hi - lo + 1)));
    if (port) return port;
  }
  throw new Error(`no free port in LL_TEST_PORTS=${lo}-${hi}`);
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

function run(file, args) {
  return new Promise(resolve => {
    execFile(file, args, { cwd: ROOT, maxBuffer: 64 << 20, timeout: 20000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr, err }));
  });
}

/* ---- the static site ---- */

function startSite(port, edge) {
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (u.pathname === '/files/whitepaper.pdf') {
      res.writeHead(200, { 'Content-Type': 'application/pdf', 'Content-Disposition': 'attachment; filename="whitepaper.pdf"' });
      return res.end('%PDF-1.4\n%%EOF\n');
    }
    /* /app/<route> is the SPA's deep link: the same page. Posts (the form) read like gets. */
    let name = u.pathname === '/' ? 'index.html' : u.pathname.startsWith('/app/') ? 'app.html' : u.pathname.slice(1);
    const file = path.join(SITE, path.normalize(name));
    if (!file.startsWith(SITE + path.sep) || !fs.existsSync(file)) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      return res.end('not found\n');
    }
    req.resume();
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(fs.readFileSync(file, 'utf8').replaceAll('{{EDGE}}', edge));
  });
  return new Promise(resolve => server.listen(port, '127.0.0.1', () => resolve(server)));
}

/* ---- the edge ---- */

async function startEdge(edgePort, sitePort, snippet) {
  const conf = path.join(tmp, 'leadloop.yaml');
  const data = path.join(tmp, 'data');
  fs.mkdirSync(data, { recursive: true });
  fs.writeFileSync(conf, [
    `public_url: http://127.0.0.1:${edgePort}`,
    'forms:',
    '  contact:',
    '    fields: [email, name, company]',
    `    thank_you: http://localhost:${sitePort}/thanks.html`,
    '',
  ].join('\n'));
  const logFile = path.join(tmp, 'leadloopd.log');
  const out = fs.openSync(logFile, 'a');
  const child = spawn(LEADLOOPD, ['-c', conf, '-d', data, '-l', `127.0.0.1:${edgePort}`, '-s', snippet],
    { cwd: ROOT, stdio: ['ignore', out, out] });
  let exited = null;
  child.on('exit', (code, sig) => { exited = `exited with ${code ?? sig}`; });
  cleanups.push(() => { if (exited === null) child.kill('SIGTERM'); });
  const deadline = Date.now() + 15000;
  for (;;) {
    if (exited) throw new Error(`leadloopd ${exited}:\n${fs.readFileSync(logFile, 'utf8')}`);
    const ok = await new Promise(resolve => {
      const r = http.get(`http://127.0.0.1:${edgePort}/healthz`, res => { res.resume(); resolve(res.statusCode === 200); });
      r.on('error', () => resolve(false));
      r.setTimeout(1000, () => { r.destroy(); resolve(false); });
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`leadloopd not healthy after 15 s:\n${fs.readFileSync(logFile, 'utf8')}`);
    await sleep(100);
  }
  const cli = args => run(LEADLOOP, ['-d', data, '-c', conf, ...args]);
  return { conf, data, logFile, cli, child };
}

async function events(edge) {
  const r = await edge.cli(['events', '--json']);
  if (r.code !== 0) throw new Error(`leadloop events --json failed (${r.code}): ${r.stderr}`);
  return r.stdout.split('\n').filter(l => l.trim()).map(l => ({ raw: l, ev: JSON.parse(l) }));
}

/* ---- the browser ---- */

async function browser() {
  const dir = fs.mkdtempSync(path.join(tmp, 'profile-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, userAgent: USER_AGENT,
    acceptDownloads: true, viewport: { width: 1000, height: 700 },
  });
  cleanups.push(() => ctx.close().catch(() => {}));
  /* No request ever leaves the machine: anything not on loopback is answered here. */
  await ctx.route(u => !/^https?:\/\/(127\.0\.0\.1|localhost)[:/]/.test(u.href) && !u.href.startsWith('data:'), route =>
    route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>elsewhere</title><p>elsewhere</p>' }));
  return ctx;
}

/* Records what the page sends to the edge. */
function watch(ctx, edgeBase) {
  const sent = [];
  ctx.on('request', r => {
    if (r.url().startsWith(edgeBase + '/e') || r.url().startsWith(edgeBase + '/f/'))
      sent.push({ url: r.url(), method: r.method(), body: r.postData() || '' });
  });
  return sent;
}

async function snippetReady(page) {
  /* The snippet replaces the pasted queueing stub with its own function once it has started. */
  await page.waitForFunction(() => typeof window.ll === 'function' && !/ll\.q/.test(String(window.ll)), null, { timeout: 10000 });
}

/* ---- tests ---- */

async function main() {
  const watchdog = setTimeout(() => { console.log('# watchdog: the test took more than 180 s'); finish(1); }, 180000);
  watchdog.unref();

  const snippet = path.join(tmp, 'll.min.js');
  const build = await run('sh', [path.join(ROOT, 'js/build.sh'), path.join(ROOT, 'js/ll.js'), snippet]);

  await test('minified snippet builds and is under 4096 bytes', check => {
    check(build.code === 0, `js/build.sh failed: ${build.stderr}`);
    if (build.code !== 0) return;
    const size = fs.statSync(snippet).size;
    log(`ll.min.js: ${size} bytes`);
    check(size < 4096, `ll.min.js is ${size} bytes`);
    check(fs.readFileSync(snippet, 'utf8').split('__LL_CONFIG__').length === 2, 'the config placeholder appears exactly once');
  });

  const missing = [LEADLOOPD, LEADLOOP].filter(f => !fs.existsSync(f));
  if (missing.length || build.code !== 0) {
    for (const name of ['email click to form: every event under one visitor and contact', 'Global Privacy Control: nothing sent or stored', 'Do Not Track: nothing sent or stored'])
      await test(name, check => check(false, missing.length ? `missing ${missing.join(', ')} (run make)` : 'no snippet'));
    return;
  }

  const [edgePort, sitePort] = [await freePort(), await freePort()];
  /* Two hosts, as in a real deployment: the edge and the site keep separate cookie jars. */
  const EDGE = `http://127.0.0.1:${edgePort}`, SITEURL = `http://localhost:${sitePort}`;
  const site = await startSite(sitePort, EDGE);
  cleanups.push(() => new Promise(r => { site.closeAllConnections(); site.close(r); }));
  const edge = await startEdge(edgePort, sitePort, snippet);
  log(`edge ${EDGE}, site ${SITEURL}, data ${edge.data}`);

  await test('email click to form: every event under one visitor and contact', async check => {
    const link = await edge.cli(['link', `${SITEURL}/index.html`, '--to', EMAIL]);
    check(link.code === 0, `leadloop link failed (${link.code}): ${link.stderr}`);
    const clickUrl = link.stdout.trim().split('\n').pop().trim();
    check(clickUrl.startsWith(EDGE + '/'), `leadloop link printed ${JSON.stringify(link.stdout)}`);

    const ctx = await browser();
    const sent = watch(ctx, EDGE);
    const page = await ctx.newPage();
    let handedOver = null;
    page.on('response', r => {
      if (r.url() === clickUrl && r.status() === 302) {
        const m = /[?&]_llv=([0-9a-f]{32})/.exec(r.headers().location || '');
        handedOver = m && m[1];
      }
    });

    /* 1. The email click: edge 302 -> site with ?_llv=; the snippet adopts it and cleans the URL. */
    await page.goto(clickUrl);
    await snippetReady(page);
    check(handedOver, 'the click redirect hands the visitor over as ?_llv=<32 hex>');
    check(page.url() === `${SITEURL}/index.html`, `the address bar is cleaned of _llv: ${page.url()}`);
    const stored = await page.evaluate(() => [localStorage.getItem('_llv'), document.cookie]);
    check(stored[0] === handedOver, `localStorage _llv is the handed-over id (${stored[0]} vs ${handedOver})`);
    check(stored[1].includes('_llv=' + handedOver), `the first-party cookie holds it: ${stored[1]}`);
    const visitor = handedOver || stored[0];
    await page.waitForTimeout(300);

    /* 2. Another page, then an SPA route change and a hash-only change (not a page view). */
    await Promise.all([page.waitForURL(`${SITEURL}/app.html`), page.click('#app')]);
    await snippetReady(page);
    await page.mouse.move(50, 50);
    await page.waitForTimeout(400);
    await page.click('#pricing');
    await page.waitForURL(`${SITEURL}/app/pricing`);
    await page.click('#hash');
    await page.waitForTimeout(300);

    /* 3. Back on the home page: a download, a custom event, then an outbound link. */
    await page.goto(`${SITEURL}/index.html`);
    await snippetReady(page);
    await page.waitForTimeout(300);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    await download.cancel().catch(() => {});
    await page.evaluate(() => window.ll('event', 'signup_started', { plan: 'pro' }));
    await page.waitForTimeout(700);
    await Promise.all([page.waitForURL('http://example.invalid/**'), page.click('#outbound')]);

    /* 4. The contact form: password and card fields must never leave the page. */
    await page.goto(`${SITEURL}/index.html`);
    await snippetReady(page);
    await page.fill('input[name=email]', EMAIL);
    await page.fill('input[name=name]', 'Alice Doe');
    await page.fill('input[name=company]', 'Acme');
    await page.fill('input[name=password]', PASSWORD);
    await page.fill('input[name=card_number]', CARD);
    await Promise.all([page.waitForURL(`${SITEURL}/thanks.html`), page.click('#send')]);
    await snippetReady(page);
    await page.mouse.move(60, 60);
    await page.waitForTimeout(500);

    /* 5. Closing the page flushes the last engaged time. */
    await page.close({ runBeforeUnload: true });
    await sleep(300);
    await ctx.close();

    /* The log, polled until every expected event is there (up to about 5 s). */
    const want = {
      click: e => e.type === 'click',
      'pageview index.html': e => e.type === 'pageview' && /\/index\.html$/.test(e.url || ''),
      'pageview /app/pricing': e => e.type === 'pageview' && /\/app\/pricing$/.test(e.url || ''),
      'download pdf': e => e.type === 'download' && e.data && e.data.ext === 'pdf' && /whitepaper\.pdf$/.test(e.data.href || ''),
      outbound: e => e.type === 'outbound' && e.data && /^http:\/\/example\.invalid\//.test(e.data.href || ''),
      'custom signup_started': e => e.type === 'custom' && e.data && e.data.name === 'signup_started' && e.data.plan === 'pro',
      form: e => e.type === 'form',
      engage: e => e.type === 'engage' && e.data && e.data.ms > 0 && e.data.scroll >= 0,
      'engage of app.html (SPA route change)': e => e.type === 'engage' && /\/app\.html$/.test(e.url || ''),
    };
    let evs = [], missingKinds = [];
    for (const end = Date.now() + 5000; ;) {
      evs = await events(edge);
      missingKinds = Object.keys(want).filter(k => !evs.some(x => want[k](x.ev)));
      if (missingKinds.length === 0 || Date.now() > end) break;
      await sleep(250);
    }
    log(`${evs.length} events: ` + evs.map(x => x.ev.type).join(' '));
    check(missingKinds.length === 0, `missing events: ${missingKinds.join(', ')}\n` + evs.map(x => x.raw).join('\n'));
    check(!evs.some(x => x.ev.type === 'pageview' && /#details/.test(x.ev.url || '')), 'a hash-only change is not a page view');
    check(!evs.some(x => /_llv=/.test(x.ev.url || '')), 'no event URL keeps the _llv parameter');
    const mine = evs.filter(x => Object.values(want).some(f => f(x.ev)));
    for (const { ev, raw } of mine) {
      check(ev.visitor === visitor, `visitor ${ev.visitor} != ${visitor}: ${raw}`);
      check(typeof ev.contact === 'number' && ev.contact !== 0, `no contact: ${raw}`);
      check(ev.email === EMAIL, `email is not ${EMAIL}: ${raw}`);
    }
    const all = evs.map(x => x.raw).join('\n');
    check(!all.includes(PASSWORD), 'the password reached the event log');
    check(!all.includes(CARD), 'the card number reached the event log');
    check(!sent.some(s => s.body.includes(PASSWORD) || s.body.includes(CARD)), 'the password or card number was sent to the edge');
    check(sent.some(s => s.url === `${EDGE}/f/contact` && s.body.includes('_llv=' + visitor)), 'the form post carries _llv');
    for (const s of sent.filter(s => s.url === `${EDGE}/e`)) {
      let b = null;
      try { b = JSON.parse(s.body); } catch (e) { /* reported below */ }
      check(b && b.v === visitor && Array.isArray(b.e) && b.e.length >= 1 && b.e.length <= 20 &&
        b.e.every(e => typeof e.t === 'string' && typeof e.u === 'string' && typeof e.ts === 'number'),
      `a batch is not {"v":visitor,"e":[{"t","u","ts"}...]}: ${s.body}`);
    }
    /* What the README's tour promises: `leadloop contact show` has one visitor bound to the
     * contact, and its page views, click and form in order. */
    const show = await edge.cli(['contact', 'show', EMAIL, '--json']);
    let prof = null;
    try { prof = JSON.parse(show.stdout); } catch (e) { /* reported below */ }
    check(prof && Array.isArray(prof.visitors) && prof.visitors.length === 1 && prof.visitors[0].id === visitor &&
      prof.visitors[0].state === 'bound', `contact show: not one bound visitor: ${show.stdout.slice(0, 400)} ${show.stderr}`);
    if (prof && Array.isArray(prof.events)) {
      const kinds = prof.events.map(e => e.type), seqs = prof.events.map(e => e.seq);
      check(kinds[0] === 'click' && kinds.includes('pageview') && kinds.indexOf('form') > kinds.indexOf('pageview'),
        `contact show timeline is not click, page views, form: ${kinds.join(' ')}`);
      check(seqs.every((q, i) => i === 0 || q > seqs[i - 1]), `contact show timeline is not in order: ${seqs.join(' ')}`);
    }
  });

  for (const [name, init] of [
    ['Global Privacy Control: nothing sent or stored', () => Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true, configurable: true })],
    ['Do Not Track: nothing sent or stored', () => Object.defineProperty(Navigator.prototype, 'doNotTrack', { get: () => '1', configurable: true })],
  ]) {
    await test(name, async check => {
      const before = (await events(edge)).length;
      const ctx = await browser();
      await ctx.addInitScript(init);
      const sent = watch(ctx, EDGE);
      const page = await ctx.newPage();
      await page.goto(`${SITEURL}/index.html`);
      await page.waitForFunction(() => typeof window.ll === 'function' && String(window.ll).indexOf('ll.q') < 0, null, { timeout: 10000 });
      await page.evaluate(() => window.ll('event', 'signup_started', {}));
      await page.fill('input[name=email]', 'bob@example.com');
      await Promise.all([page.waitForURL(`${SITEURL}/thanks.html`), page.click('#send')]);
      const stored = await page.evaluate(() => [localStorage.getItem('_llv'), document.cookie]);
      await page.close({ runBeforeUnload: true });
      await ctx.close();
      await sleep(1000);
      const after = await events(edge);
      check(after.length === before, `new events: ${after.slice(before).map(x => x.raw).join('\n')}`);
      check(sent.length === 0, `requests to the edge: ${sent.map(s => s.url).join(', ')}`);
      check(stored[0] === null && !/_llv=/.test(stored[1]), `stored: ${JSON.stringify(stored)}`);
    });
  }

  await test('a returning visitor\'s old id is sent once as alias; fetch fallback; middle click', async check => {
    const ctx = await browser();
    /* No sendBeacon: batches must still arrive, by fetch. */
    await ctx.addInitScript(() => { delete Navigator.prototype.sendBeacon; });
    const sent = watch(ctx, EDGE);
    const page = await ctx.newPage();
    /* An anonymous visit first: the snippet makes its own id. */
    await page.goto(`${SITEURL}/index.html`);
    await snippetReady(page);
    const anon = await page.evaluate(() => localStorage.getItem('_llv'));
    check(/^[0-9a-f]{32}$/.test(anon || ''), `a new visitor id is 32 hex: ${anon}`);
    /* time first (6 bytes of ms), as the edge mints ids: they sort by first visit */
    const minted = parseInt((anon || '').slice(0, 12), 16);
    check(Math.abs(minted - Date.now()) < 600000, `a new visitor id starts with the time in ms: ${anon}`);
    await page.waitForTimeout(800);
    /* Later an email click: the edge hands over its own id, which replaces the snippet's. */
    const link = await edge.cli(['link', `${SITEURL}/index.html?utm_source=mail`, '--to', 'bob@example.com']);
    check(link.code === 0, `leadloop link failed: ${link.stderr}`);
    await page.goto(link.stdout.trim().split('\n').pop().trim());
    await snippetReady(page);
    const adopted = await page.evaluate(() => localStorage.getItem('_llv'));
    check(page.url() === `${SITEURL}/index.html?utm_source=mail`, `only _llv is removed from the URL: ${page.url()}`);
    check(adopted && adopted !== anon, `the handed-over id replaces the old one (${anon} -> ${adopted})`);
    await page.waitForTimeout(800);
    await page.click('#outbound', { button: 'middle' });
    await page.waitForTimeout(800);
    await page.close({ runBeforeUnload: true });
    await ctx.close();

    const batches = sent.filter(s => s.url === `${EDGE}/e`).map(s => { try { return JSON.parse(s.body); } catch (e) { return {}; } });
    const after = batches.filter(b => b.v === adopted);
    check(batches.length >= 3, `batches sent by fetch: ${batches.length}`);
    check(batches.some(b => b.v === anon) && !batches.some(b => b.v === anon && b.a), 'the anonymous visit is sent without alias');
    check(after.length >= 2 && after[0].a === anon, `the first batch after the handover carries "a": the old id: ${JSON.stringify(after[0])}`);
    check(after.slice(1).every(b => !('a' in b)), 'the alias is sent only once');
    check(after.some(b => b.e.some(e => e.t === 'outbound' && /example\.invalid/.test(e.d && e.d.href))), 'a middle click on an outbound link is an outbound event');
  });
}

let finishing = false;
async function finish(code) {
  if (finishing) return;
  finishing = true;
  for (const c of cleanups.reverse()) {
    try { await Promise.race([c(), sleep(5000)]); } catch (e) { /* best effort */ }
  }
  if (failed > 0 && fs.existsSync(path.join(tmp, 'leadloopd.log'))) {
    const tail = fs.readFileSync(path.join(tmp, 'leadloopd.log'), 'utf8').split('\n').slice(-30).join('\n# ');
    if (tail.trim()) console.log('# leadloopd log (tail):\n# ' + tail);
  }
  if (!process.env.KEEP) fs.rmSync(tmp, { recursive: true, force: true });
  console.log(`1..${n}`);
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(code || (failed > 0 ? 1 : 0));
}

main().then(() => finish(0), e => {
  failed++;
  console.log(`not ok ${++n} - setup`);
  console.log('  # ' + String(e && e.stack || e).replace(/\n/g, '\n  # '));
  finish(1);
});
