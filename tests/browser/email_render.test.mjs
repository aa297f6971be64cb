/*
 * The browser half of email_render.py (run that, not this): opens each HTML part the mailer
 * delivered in headless Chromium (playwright-core driving Debian's /usr/bin/chromium) and
 *   1. checks it rendered: the personalised greeting (and, for the rich template, the title
 *      and heading with the company escaped by the mailer and shown as text), no placeholder
 *      or doubly escaped entity left, and the open pixel fetched from leadloopd as a 1x1 GIF,
 *      which puts an `open` with the message's send id on that contact's timeline only;
 *   2. clicks every signed link as a person would: leadloopd answers 302 and the browser lands
 *      on the destination (the driver's site on localhost) with the visitor in `_llv`; then
 *      `leadloop contact show EMAIL` shows the click with that send id, and the other
 *      contact's timeline does not;
 *   3. follows the unsubscribe link: a confirmation page, and the contact stays subscribed.
 *
 * Usage: node email_render.test.mjs SPEC.json (written by email_render.py: edge, site, data,
 * conf, messages). Env: LEADLOOP (bin/leadloop), CHROMIUM (/usr/bin/chromium).
 * Prints TAP and a last line "browser: N passed, N failed", which the driver totals.
 */
import { chromium } from 'playwright-core';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const LEADLOOP = path.resolve(process.env.LEADLOOP || path.join(ROOT, 'bin/leadloop'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/* A desktop Chrome user agent, as in snippet.test.mjs: "HeadlessChrome" is a machine to the edge. */
const USER_AGENT = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36';

const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const EDGE = spec.edge;
let passed = 0, failed = 0, n = 0;

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

function cli(...args) {
  return new Promise((resolve, reject) => {
    execFile(LEADLOOP, ['-d', spec.data, '-c', spec.conf, ...args], { cwd: ROOT, maxBuffer: 64 << 20, timeout: 20000 },
      (err, stdout, stderr) => err ? reject(new Error(`leadloop ${args.join(' ')}: ${err.message}\n${stderr}`)) : resolve(stdout));
  });
}

async function timeline(email) {
  return JSON.parse(await cli('contact', 'show', email, '--json'));
}

const others = email => [...new Set(spec.messages.map(m => m.email))].filter(e => e !== email);
const count = (tl, type, send) => tl.events.filter(e => e.type === type && e.send === send).length;

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  try {
    const ctx = await browser.newContext({ userAgent: USER_AGENT });
    for (const m of spec.messages) {
      const where = `message ${m.send} (${m.kind}) to ${m.email}`;
      const url = pathToFileURL(m.file).href;

      await test(`${where} renders and its pixel records an open`, async check => {
        const page = await ctx.newPage();
        const pixel = page.waitForResponse(r => r.url().startsWith(`${EDGE}/o/`), { timeout: 10000 });
        const before = await timeline(m.email);
        await page.goto(url, { waitUntil: 'load' });
        const r = await pixel;
        check(r.status() === 200 && /^image\/gif/.test(r.headers()['content-type'] || ''),
          `pixel answered ${r.status()} ${r.headers()['content-type']}`);
        const text = await page.evaluate(() => document.body.innerText);
        check(text.includes(m.greeting), `the page does not show ${JSON.stringify(m.greeting)}:\n${text}`);
        check(!/\{\{|\}\}|&amp;|&lt;|&#39;/.test(text), `a placeholder or an escaped entity shows:\n${text}`);
        if (m.title) check(await page.title() === m.title, `title ${JSON.stringify(await page.title())}, want ${JSON.stringify(m.title)}`);
        if (m.heading) {
          const h = page.locator('#heading');
          check(await h.isVisible() && (await h.innerText()) === m.heading, `heading ${JSON.stringify(await h.innerText())}`);
        }
        const img = await page.evaluate(edge => [...document.images].filter(i => i.src.startsWith(edge + '/o/'))
          .map(i => ({ done: i.complete, w: i.naturalWidth, h: i.naturalHeight })), EDGE);
        check(img.length === 1 && img[0].done && img[0].w === 1 && img[0].h === 1, `pixel image ${JSON.stringify(img)}`);
        /* Visible signed links, and the honeypot (judge.h): present, hidden from people. */
        const links = await page.locator(`a[href^="${EDGE}/c/"]:not([aria-hidden="true"])`).count();
        check(links === Object.keys(m.links).length && links > 0, `${links} signed links, the message has ${Object.keys(m.links).length}`);
        const pot = page.locator(`a[href^="${EDGE}/c/"][aria-hidden="true"]`);
        check(await pot.count() === 1 && !(await pot.isVisible()), 'the honeypot link is missing or visible');
        const after = await timeline(m.email);
        check(count(after, 'open', m.send) === count(before, 'open', m.send) + 1,
          `no new open with send ${m.send} on ${m.email}: ${JSON.stringify(after.events.filter(e => e.type === 'open'))}`);
        for (const o of others(m.email))
          check(count(await timeline(o), 'open', m.send) === 0, `${o}'s timeline has the open of send ${m.send}`);
        await page.close();
      });

      for (const [href, dest] of Object.entries(m.links)) {
        await test(`${where}: clicking the link to ${dest} lands there and on the timeline`, async check => {
          const page = await ctx.newPage();
          await page.goto(url, { waitUntil: 'load' });
          const before = await timeline(m.email);
          const link = page.locator(`a[href="${href}"]`);
          check(await link.isVisible(), 'the link is not visible');
          const destNoQuery = dest.split('?')[0];
          const [resp] = await Promise.all([
            page.waitForNavigation({ url: u => u.href.startsWith(destNoQuery), timeout: 10000 }),
            link.click(),
          ]);
          /* The browser went through the edge: a 302 from /c/TOKEN to the destination. */
          const hop = resp.request().redirectedFrom();
          check(hop && hop.url() === href, `not redirected from the signed link: ${hop && hop.url()}`);
          const hopResp = hop && await hop.response();
          check(hopResp && hopResp.status() === 302, `the edge answered ${hopResp && hopResp.status()}`);
          check(resp.status() === 200, `the destination answered ${resp.status()}`);
          const landed = new URL(page.url());
          const want = new URL(dest);
          check(landed.origin + landed.pathname === want.origin + want.pathname, `landed on ${page.url()}, want ${dest}`);
          for (const [k, v] of want.searchParams)
            check(landed.searchParams.get(k) === v, `query ${k}=${landed.searchParams.get(k)}, want ${v}`);
          check(/^[0-9a-f]{32}$/.test(landed.searchParams.get('_llv') || ''), `no visitor handed over: ${page.url()}`);
          check(await page.locator('#landed').isVisible(), 'the destination page did not load');

          const after = await timeline(m.email);
          const clicks = after.events.filter(e => e.type === 'click' && e.send === m.send);
          check(clicks.length === count(before, 'click', m.send) + 1, `clicks with send ${m.send}: ${JSON.stringify(clicks)}`);
          const last = clicks[clicks.length - 1];
          check(last && last.url === dest, `the click records ${last && last.url}, want ${dest}`);
          const show = await cli('contact', 'show', m.email);
          const line = show.split('\n').filter(l => /\bclick\b/.test(l) && l.includes(`send=${m.send}`));
          check(line.length === clicks.length, `leadloop contact show ${m.email} lists ${line.length} clicks with send=${m.send}:\n${show}`);
          for (const o of others(m.email))
            check(count(await timeline(o), 'click', m.send) === 0, `${o}'s timeline has a click of send ${m.send}`);
          await page.close();
        });
      }
    }

    const first = spec.messages.find(m => m.kind === 'rich');
    await test(`the unsubscribe link in message ${first.send} only asks (a GET changes nothing)`, async check => {
      const page = await ctx.newPage();
      await page.goto(pathToFileURL(first.file).href, { waitUntil: 'load' });
      const [resp] = await Promise.all([page.waitForNavigation({ timeout: 10000 }), page.locator('#unsub').click()]);
      check(resp.status() === 200 && page.url().startsWith(`${EDGE}/u/`), `${resp.status()} ${page.url()}`);
      check(await page.locator('form[method="post"]').count() === 1, 'no confirmation form');
      const tl = await timeline(first.email);
      check(tl.contact.flags.length === 0, `flags after a GET: ${tl.contact.flags}`);
      await page.close();
    });
    await ctx.close();
  } finally {
    await browser.close();
  }
}

main().then(() => 0, e => {
  failed++;
  console.log(`not ok ${++n} - browser setup`);
  console.log('  # ' + String(e && e.stack || e).replace(/\n/g, '\n  # '));
  return 1;
}).then(code => {
  console.log(`1..${n}`);
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(code || (failed > 0 ? 1 : 0));
});
