// Headless Chromium (Debian's `chromium`, driven by playwright-core) uses the relay's browser
// client against a real stack: Envoy + Veil filter + keyservice + demo upstream. Started by
// tests/tests/relay_browser.rs, which gives the addresses in the environment, reads the JSON
// lines this prints, restarts the keyservice when asked, and checks its recording hop.
//
//   VEIL_ORIGIN    the origin the browser talks to (the recording hop in front of Envoy)
//   VEIL_CHROMIUM  the browser binary (default /usr/bin/chromium)
//   VEIL_DIST      client/browser/dist (to compare the served bundle with the committed one)
//   VEIL_RESTART   1: ask the driver to restart the keyservice mid-session (global replay mode)
//   VEIL_SERVER_KEY the relay's key configuration (`veil-keyservice relay-key show`): the pin
//                  the test page ships from its own origin
//
// Protocol with the driver: lines `{"need":"restart-keyservice"}` on stdout wait for one
// line on stdin; the last line is `{"done":true,...}`. Any failed check exits non-zero.
import { createRequire } from 'node:module';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';

const require = createRequire(new URL('../../client/browser/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const ORIGIN = process.env.VEIL_ORIGIN;
const CHROMIUM = process.env.VEIL_CHROMIUM ?? '/usr/bin/chromium';
const DIST = process.env.VEIL_DIST ?? new URL('../../client/browser/dist/', import.meta.url).pathname;
assert.ok(ORIGIN, 'VEIL_ORIGIN is required');
const SERVER_KEY = process.env.VEIL_SERVER_KEY;
assert.ok(SERVER_KEY && /^[A-Za-z0-9_-]+$/.test(SERVER_KEY), 'VEIL_SERVER_KEY (relay-key show) is required');

// The whole run is bounded: a hung browser or stack fails the test instead of stalling it.
const deadline = setTimeout(() => {
  console.error('relay_e2e: timed out after 150 s');
  process.exit(3);
}, 150_000);

const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();
async function ask(need) {
  say({ need });
  const { value, done } = await lines.next();
  assert.ok(!done, `driver closed stdin instead of answering ${need}`);
  assert.equal(value.trim(), 'ok', `driver answered ${value}`);
}

// Markers the driver looks for in the recording hop's bytes (they must never appear there).
const SECRETS = {
  path: 'path-secret-3f9a',
  query: 'query-secret-77c1',
  header: 'header-secret-b2d4',
  json: 'json-secret-5e61',
  text: 'text-secret-a0c8',
  binary: 'binary-secret-9d2e',
  cross: 'cross-secret-4b7f',
  response: 'response-secret-c3aa',
};

async function checkAsset() {
  const url = `${ORIGIN}/public/veil-relay.js`;
  const r = await fetch(url);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'text/javascript; charset=utf-8');
  const body = Buffer.from(await r.arrayBuffer());
  const committed = readFileSync(join(DIST, 'veil-relay.js'));
  assert.ok(Buffer.compare(body, committed) === 0, 'the served bundle is client/browser/dist/veil-relay.js');
  const integrity = 'sha384-' + createHash('sha384').update(body).digest('base64');
  assert.equal(r.headers.get('x-veil-integrity'), integrity);
  assert.equal(readFileSync(join(DIST, 'veil-relay.integrity'), 'utf8'), integrity);
  const etag = r.headers.get('etag');
  assert.equal(etag, `"${integrity}"`);
  assert.match(r.headers.get('cache-control') ?? '', /^public, max-age=\d+$/);
  assert.equal(r.headers.get('vary'), 'origin', 'a per-origin CORS answer is cached per origin');
  const again = await fetch(url, { headers: { 'if-none-match': `W/"other", ${etag}` } });
  assert.equal(again.status, 304);
  assert.equal((await again.arrayBuffer()).byteLength, 0);
  assert.equal(again.headers.get('etag'), etag);
  const other = await fetch(url, { headers: { 'if-none-match': '"not-it"' } });
  assert.equal(other.status, 200);
  await other.arrayBuffer();
  const head = await fetch(url, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('etag'), etag);
  assert.equal((await head.arrayBuffer()).byteLength, 0);
  const post = await fetch(url, { method: 'POST', body: 'x' });
  assert.equal(post.status, 405);
  await post.arrayBuffer();
  return integrity;
}

/** Runs in the page: one request through the relay, summarized for node. */
async function inPage({ path, init, bodyKind }) {
  const toB64 = (u8) => {
    let s = '';
    for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const relay = window.__relay;
  const opts = { ...init };
  if (bodyKind === 'binary') {
    const b = new Uint8Array(init.body.length);
    for (let i = 0; i < b.length; i++) b[i] = init.body.charCodeAt(i);
    opts.body = b;
  }
  const r = await relay.fetch(path, opts);
  const bytes = new Uint8Array(await r.arrayBuffer());
  return {
    status: r.status,
    headers: [...r.headers],
    bodyB64: toB64(bytes),
  };
}

function binaryBody() {
  // 96 KiB of every byte value, with a marker in the middle.
  const b = Buffer.alloc(96 * 1024);
  for (let i = 0; i < b.length; i++) b[i] = (i * 151 + 7) & 0xff;
  b.write(SECRETS.binary, 40_000, 'latin1');
  return b;
}

const header = (res, name) => res.headers.filter(([n]) => n === name).map(([, v]) => v).join(', ') || null;
const echoOf = (res) => JSON.parse(Buffer.from(res.bodyB64, 'base64').toString('utf8'));

async function suite(page, label) {
  const run = (path, init = {}, bodyKind) => page.evaluate(inPage, { path, init, bodyKind });

  // GET with query and application headers.
  const get = await run(`/app/echo/${SECRETS.path}?q=${SECRETS.query}&n=1`, {
    // `cookie` is a header a page may not set: fetch drops it, so does the relay client.
    headers: [['accept', 'application/json'], ['cookie', 'forged=1'], ['x-app-secret', SECRETS.header]],
  });
  assert.equal(get.status, 200, `${label} GET`);
  assert.equal(header(get, 'content-type'), 'application/json');
  assert.equal(header(get, 'x-veil-demo-app'), 'relayed', 'a header Envoy added to the upstream answer, sealed and decoded');
  let e = echoOf(get);
  assert.equal(e.method, 'GET');
  assert.equal(e.path, `/app/echo/${SECRETS.path}`);
  assert.equal(e.query, `q=${SECRETS.query}&n=1`);
  assert.equal(e.headers['x-app-secret'], SECRETS.header);
  assert.equal(e.headers.accept, 'application/json');
  assert.equal(e.body_base64, '');
  assert.equal(e.headers.cookie, undefined, 'a forbidden header set by the page does not pass');
  for (const n of Object.keys(e.headers)) assert.ok(!n.startsWith('x-veil-'), `upstream saw ${n}`);

  // POST JSON.
  const json = JSON.stringify({ secret: SECRETS.json, list: [1, 2, 3], nested: { ok: true } });
  const post = await run('/app/echo', { method: 'POST', headers: { 'content-type': 'application/json' }, body: json });
  assert.equal(post.status, 200);
  e = echoOf(post);
  assert.equal(e.method, 'POST');
  assert.equal(Buffer.from(e.body_base64, 'base64').toString(), json);
  assert.equal(e.headers['content-type'], 'application/json');
  assert.equal(e.headers['content-length'], String(Buffer.byteLength(json)));

  // PUT text.
  const text = `plain ${SECRETS.text} ünïcødé`;
  const put = await run('/app/echo/item/7', { method: 'PUT', body: text });
  e = echoOf(put);
  assert.equal(e.method, 'PUT');
  assert.equal(e.path, '/app/echo/item/7');
  assert.equal(Buffer.from(e.body_base64, 'base64').toString(), text);
  assert.equal(e.headers['content-type'], 'text/plain;charset=UTF-8');

  // POST binary.
  const bin = binaryBody();
  const pb = await run('/app/echo/upload', { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: bin.toString('latin1') }, 'binary');
  e = echoOf(pb);
  assert.ok(Buffer.from(e.body_base64, 'base64').equals(bin), 'binary body arrives byte for byte');

  // DELETE without a body; PATCH with an empty one.
  const del = await run('/app/echo/item/7', { method: 'DELETE' });
  e = echoOf(del);
  assert.equal(e.method, 'DELETE');
  assert.equal(e.body_base64, '');
  const patch = await run('/app/echo/item/8', { method: 'PATCH', body: '' });
  assert.equal(echoOf(patch).method, 'PATCH');

  // The original response: status, sealed headers and binary body as the upstream sent them.
  const reflected = binaryBody().subarray(0, 5000);
  reflected.write(SECRETS.response, 100, 'latin1');
  const rf = await run('/app/reflect', {
    method: 'POST',
    headers: [['x-reflect-status', '201'], ['x-reflect-content-type', 'application/x-demo'], ['x-reflect-header', `x-answer: ${SECRETS.response}`]],
    body: reflected.toString('latin1'),
  }, 'binary');
  assert.equal(rf.status, 201);
  assert.equal(header(rf, 'content-type'), 'application/x-demo');
  assert.equal(header(rf, 'x-answer'), SECRETS.response);
  assert.ok(Buffer.from(rf.bodyB64, 'base64').equals(reflected), 'response body byte for byte');
  const nf = await run('/app/reflect', { method: 'POST', headers: { 'x-reflect-status': '404', 'x-reflect-content-type': 'text/plain' }, body: 'nope' });
  assert.equal(nf.status, 404, 'an upstream 404 is an answer, not a relay error');
  assert.equal(Buffer.from(nf.bodyB64, 'base64').toString(), 'nope');

  // Concurrent requests spread over the pool.
  const many = await page.evaluate(async () => {
    const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => window.__relay.fetch(`/app/echo/c${i}`).then((r) => r.json())));
    return { paths: rs.map((r) => r.path), stats: window.__relay.stats() };
  });
  assert.deepEqual(many.paths, Array.from({ length: 12 }, (_, i) => `/app/echo/c${i}`));
  assert.ok(many.stats.pairs.length >= 2, `pool of ${many.stats.pairs.length}`);
  return many.stats;
}

const PAGE = (origin, integrity) => `<!doctype html>
<meta charset="utf-8"><title>veil relay test page</title>
<script type="module" src="${origin}/public/veil-relay.js" integrity="${integrity}" crossorigin="anonymous"
  onload="window.__loaded = true" onerror="window.__loaded = false"></script>
<script>
  // The pin ships with the page, from the page's own origin, not with the module.
  window.veilRelayServerKey = '${SERVER_KEY}';
</script>
<script type="module">
  import { createRelay } from '${origin}/public/veil-relay.js';
  window.__relay = createRelay({ url: '${origin}/veil', serverKey: window.veilRelayServerKey });
  window.__ready = true;
</script>`;

async function openPage(ctx, url, html) {
  const page = await ctx.newPage();
  page.on('pageerror', (err) => say({ pageerror: String(err) }));
  page.on('console', (m) => m.type() === 'error' && say({ console: m.text() }));
  page.on('requestfailed', (r) => say({ requestfailed: r.url(), error: r.failure()?.errorText }));
  page.on('response', (r) => r.status() >= 400 && say({ response: r.status(), url: r.url().slice(0, 120) }));
  await page.goto(url);
  if (html) await page.setContent(html);
  await page.waitForFunction(() => window.__ready === true && window.__loaded !== undefined, null, { timeout: 15_000 });
  assert.equal(await page.evaluate(() => window.__loaded), true, 'the module loads with its published integrity');
  return page;
}

const userDataDir = mkdtempSync(join(tmpdir(), 'veil-chromium-'));
let ctx;
let crossServer;
try {
  const integrity = await checkAsset();
  say({ step: 'asset', integrity });

  ctx = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
  ctx.setDefaultTimeout(20_000);

  // Same origin: a document from Envoy (the relay's own echo endpoint), then the test page in it.
  const page = await openPage(ctx, `${ORIGIN}/veil/echo`, PAGE('', integrity));
  assert.equal(await page.evaluate(() => location.origin), ORIGIN);
  const stats = await suite(page, 'same-origin');
  const stored = await page.evaluate((o) => localStorage.getItem(`veil-relay:client-id:${o}/veil`), ORIGIN);
  assert.equal(stored, stats.clientId, 'the client id is kept in localStorage');
  assert.match(stored, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.[0-9a-f]{64}$/);
  say({ step: 'same-origin', stats });

  // The default export: `fetch` through /veil on the origin that served the module.
  const viaDefault = await page.evaluate(async () => {
    const { default: relayFetch } = await import('/public/veil-relay.js');
    const r = await relayFetch('/app/echo/default?d=1', { method: 'POST', body: 'by default' });
    return { status: r.status, echo: await r.json() };
  });
  assert.equal(viaDefault.status, 200);
  assert.equal(viaDefault.echo.path, '/app/echo/default');
  assert.equal(Buffer.from(viaDefault.echo.body_base64, 'base64').toString(), 'by default');

  // A page of the same origin reloaded: same client id from storage, fresh pairs.
  await page.reload();
  await page.setContent(PAGE('', integrity));
  await page.waitForFunction(() => window.__ready === true);
  const again = await page.evaluate(async () => {
    const r = await window.__relay.fetch('/app/echo/reloaded');
    await r.arrayBuffer();
    return window.__relay.stats();
  });
  assert.equal(again.clientId, stats.clientId, 'the stored client id is reused after a reload');

  // A wrong integrity value: the browser refuses the module.
  const bad = await ctx.newPage();
  await bad.goto(`${ORIGIN}/veil/echo`);
  await bad.setContent(`<script type="module" src="/public/veil-relay.js" integrity="sha384-${Buffer.alloc(48).toString('base64')}" crossorigin="anonymous" onload="window.__loaded = true" onerror="window.__loaded = false"></script>`);
  await bad.waitForFunction(() => window.__loaded !== undefined);
  assert.equal(await bad.evaluate(() => window.__loaded), false, 'a wrong integrity hash blocks the module');
  await bad.close();

  // Recovery: the keyservice restarts (memory store: every pair is gone) mid-session.
  // Only where the driver runs the relay in global replay mode (VEIL_RESTART=1), where the
  // lost pairs are noticed on the very next request.
  if (process.env.VEIL_RESTART === '1') {
    const before = await page.evaluate(() => window.__relay.stats());
    await ask('restart-keyservice');
    const after = await page.evaluate(async () => {
      // PUT: idempotent, so the client may send it again after re-pairing (a POST would
      // be reported, never sent twice: protocol §6).
      const r = await window.__relay.fetch('/app/echo/after-restart', { method: 'PUT', body: 'still here' });
      return { status: r.status, echo: await r.json(), stats: window.__relay.stats() };
    });
    assert.equal(after.status, 200, 'the request after the keyservice restart succeeds');
    assert.equal(Buffer.from(after.echo.body_base64, 'base64').toString(), 'still here');
    assert.ok(after.stats.retries > before.retries, 'it was retried');
    assert.ok(after.stats.repairs > before.repairs, 'after a re-pair');
    assert.ok(after.stats.pairs.every((p) => !before.pairs.includes(p)), 'on new pairs');
    say({ step: 'recovery', before, after: after.stats });
  }

  // Cross origin: the page comes from another loopback origin (its own port); the module and
  // the relay requests go to Envoy with CORS (preflights for the relay's headers).
  crossServer = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(PAGE(ORIGIN, integrity));
  });
  await new Promise((ok) => crossServer.listen(0, '127.0.0.1', ok));
  const crossOrigin = `http://127.0.0.1:${crossServer.address().port}`;
  assert.notEqual(crossOrigin, ORIGIN);
  const cross = await openPage(ctx, `${crossOrigin}/page.html`);
  const xr = await cross.evaluate(async (s) => {
    const out = [];
    for (const [method, body] of [['POST', JSON.stringify({ s })], ['PUT', s], ['DELETE', undefined], ['GET', undefined]]) {
      const r = await window.__relay.fetch(`/app/echo/cross/${method}`, { method, body, headers: { 'x-cross': s } });
      out.push({ status: r.status, ct: r.headers.get('content-type'), echo: await r.json() });
    }
    return { out, origin: location.origin, stats: window.__relay.stats() };
  }, SECRETS.cross);
  assert.equal(xr.origin, crossOrigin);
  for (const [i, method] of ['POST', 'PUT', 'DELETE', 'GET'].entries()) {
    const r = xr.out[i];
    assert.equal(r.status, 200, `cross-origin ${method}`);
    assert.equal(r.ct, 'application/json');
    assert.equal(r.echo.method, method);
    assert.equal(r.echo.path, `/app/echo/cross/${method}`);
    assert.equal(r.echo.headers['x-cross'], SECRETS.cross);
    assert.equal(r.echo.headers.origin, crossOrigin, 'the upstream sees the real origin');
  }
  say({ step: 'cross-origin', origin: crossOrigin, stats: xr.stats });

  say({ done: true, secrets: SECRETS });
} finally {
  if (ctx) await ctx.close().catch(() => {});
  if (crossServer) crossServer.close();
  rmSync(userDataDir, { recursive: true, force: true });
  stdin.close();
  clearTimeout(deadline);
}
