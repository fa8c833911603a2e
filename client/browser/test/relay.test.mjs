// The client (src/veil-relay.js) against the stand-in server (a test double of the filter and
// keyservice written with node:crypto, see standin-server.mjs): round trips, the wire shows
// no plaintext, and each row of the protocol's error table is handled as the doc says.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRelay, VeilRelayError } from '../src/veil-relay.js';
import { StandIn } from './standin-server.mjs';

const BASE = 'http://relay.test/veil';

function echoServer() {
  const seen = [];
  const s = new StandIn(async (req) => {
    seen.push(req);
    if (req.path === '/app/empty') return { status: 204, headers: [['x-app', 'none']], body: null };
    return {
      status: req.path.startsWith('/app/missing') ? 404 : 200,
      headers: [['content-type', 'application/json'], ['etag', '"e1"'], ['set-cookie', 'sid=1'], ['x-app', 'a'], ['x-app', 'b']],
      body: Buffer.from(JSON.stringify({ method: req.method, path: req.path, headers: req.headers, body: req.body === null ? null : req.body.toString('base64') })),
    };
  });
  return { s, seen };
}

function relayFor(s, opts = {}) {
  return createRelay({ url: BASE, fetch: s.fetch, storage: opts.storage, pairs: opts.pairs });
}

test('GET and POST/PUT/DELETE with JSON, text and binary bodies round trip', async () => {
  const { s, seen } = echoServer();
  const relay = relayFor(s);
  const r1 = await relay.fetch('/app/echo?q=1&x=%20y', { headers: [['accept', 'application/json'], ['x-trace', 't1'], ['x-trace', 't2']] });
  assert.equal(r1.status, 200);
  assert.equal(r1.headers.get('content-type'), 'application/json');
  assert.equal(r1.headers.get('etag'), '"e1"');
  assert.equal(r1.headers.get('x-app'), 'a, b');
  const j1 = await r1.json();
  assert.deepEqual(j1, { method: 'GET', path: '/app/echo?q=1&x=%20y', headers: [['accept', 'application/json'], ['x-trace', 't1'], ['x-trace', 't2']], body: null });

  const bin = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 31) & 0xff);
  const cases = [
    ['POST', JSON.stringify({ a: [1, 2], ü: 'ß' }), 'text/plain;charset=UTF-8'],
    ['PUT', 'plain text body', 'text/plain;charset=UTF-8'],
    ['POST', bin, null],
    ['DELETE', '', 'text/plain;charset=UTF-8'],
  ];
  for (const [method, body, ct] of cases) {
    const r = await relay.fetch(`${BASE.replace('/veil', '')}/app/echo/${method}`, { method, body });
    const j = await r.json();
    assert.equal(j.method, method);
    assert.equal(j.path, `/app/echo/${method}`);
    assert.deepEqual(Buffer.from(j.body, 'base64'), Buffer.from(body));
    assert.deepEqual(j.headers, ct ? [['content-type', ct]] : []);
  }
  assert.equal(seen.length, 5);

  // Null-body status and HEAD-like answers, and an upstream 404 is an answer, not an error.
  const e = await relay.fetch('/app/empty', { method: 'POST', body: new Uint8Array(0) });
  assert.equal(e.status, 204);
  assert.equal(e.body, null);
  assert.equal(e.headers.get('x-app'), 'none');
  assert.equal((await relay.fetch('/app/missing')).status, 404);

  // The wire: paths, headers and bodies never in plaintext.
  const wire = s.log.filter((l) => l.url.includes('/veil/x/'));
  assert.equal(wire.length, 7);
  for (const l of wire) {
    const text = l.url + JSON.stringify(l.headers) + (l.body ? l.body.toString('latin1') : '');
    for (const secret of ['/app/', 'q=1&x', 'x-trace', 'accept', 'plain text body', '{"a":[1,2]', 'text/plain']) {
      assert.ok(!text.includes(secret), `${secret} visible on the wire`);
    }
    if (l.body !== null) assert.deepEqual(l.headers.find(([n]) => n === 'content-type'), ['content-type', 'application/octet-stream']);
  }
  assert.equal(s.log.filter((l) => l.url.endsWith('/veil/pair')).length, 1);
});

test('requests spread over the pool; sequence numbers are per pair and never reused', async () => {
  const { s } = echoServer();
  const relay = relayFor(s, { pairs: 3 });
  await Promise.all(Array.from({ length: 9 }, (_, i) => relay.fetch(`/app/echo/${i}`).then((r) => r.arrayBuffer())));
  const ctl = s.log.filter((l) => l.url.includes('/veil/x/')).map((l) => new Map(l.headers).get('x-veil-relay').split(','));
  const byPair = new Map();
  for (const [, , pair, seq] of ctl) byPair.set(pair, [...(byPair.get(pair) ?? []), Number(seq)]);
  assert.equal(byPair.size, 3);
  for (const seqs of byPair.values()) assert.deepEqual([...seqs].sort((a, b) => a - b), [1, 2, 3]);
  assert.deepEqual(relay.pairIds().sort(), [...byPair.keys()].sort());
});

test('the client id is kept per relay in storage and reused by a new client', async () => {
  const { s } = echoServer();
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) };
  const a = relayFor(s, { storage });
  await (await a.fetch('/app/echo')).arrayBuffer();
  assert.deepEqual([...store.keys()], [`veil-relay:client-id:${BASE}`]);
  const id = store.get(`veil-relay:client-id:${BASE}`);
  const b = relayFor(s, { storage });
  await (await b.fetch('/app/echo')).arrayBuffer();
  assert.equal(b.stats().clientId, id);
  const discover = s.log.filter((l) => l.url.endsWith('/veil/relay'));
  assert.equal(new Map(discover[1].headers).get('x-veil-client-id'), id);
});

test('pair unknown (keyservice lost its sessions) → transparent re-pair and one retry', async () => {
  const { s, seen } = echoServer();
  const relay = relayFor(s);
  await (await relay.fetch('/app/echo')).arrayBuffer();
  const before = relay.pairIds();
  s.forgetPairs();
  const r = await relay.fetch('/app/echo', { method: 'POST', body: 'after restart' });
  assert.equal(r.status, 200);
  assert.equal(Buffer.from((await r.json()).body, 'base64').toString(), 'after restart');
  const st = relay.stats();
  assert.equal(st.retries, 1);
  assert.equal(st.repairs, 1);
  assert.equal(st.dropped, 1);
  assert.ok(relay.pairIds().every((p) => !before.includes(p)), 'the old batch is gone');
  assert.equal(seen.length, 2); // the refused attempt never reached the upstream
});

test('bad client id → re-validate, re-pair, retry once', async () => {
  const { s } = echoServer();
  const relay = relayFor(s);
  await (await relay.fetch('/app/echo')).arrayBuffer();
  const id = relay.stats().clientId;
  s.inject.push('relay-bad-client-id');
  const r = await relay.fetch('/app/echo');
  assert.equal(r.status, 200);
  assert.equal(relay.stats().revalidations, 1);
  assert.equal(relay.stats().clientId, id); // still valid at the stand-in: re-validation keeps it
  assert.equal(s.log.filter((l) => l.url.endsWith('/veil/relay')).length, 2);
  assert.equal(s.log.filter((l) => l.url.endsWith('/veil/pair')).length, 2);
});

test('decode failed → re-pair and retry; replay → retry on a fresh seq', async () => {
  const { s } = echoServer();
  const relay = relayFor(s);
  s.inject.push('relay-decode-failed');
  assert.equal((await relay.fetch('/app/echo')).status, 200);
  assert.equal(relay.stats().dropped, 1);
  s.inject.push('relay-replay');
  assert.equal((await relay.fetch('/app/echo')).status, 200);
  const seqs = s.log.filter((l) => l.url.includes('/veil/x/')).slice(-2).map((l) => new Map(l.headers).get('x-veil-relay').split(',').slice(2, 4).join(','));
  assert.notEqual(seqs[0], seqs[1]);
  assert.equal(relay.stats().retries, 2);
});

test('one retry only, and give-up codes are not retried', async () => {
  const { s, seen } = echoServer();
  const relay = relayFor(s);
  s.inject.push('relay-pair-unknown', 'relay-pair-unknown');
  await assert.rejects(relay.fetch('/app/echo'), (e) => e instanceof VeilRelayError && e.code === 'relay-pair-unknown' && e.status === 401);
  for (const code of ['relay-route-not-allowed', 'relay-too-large', 'relay-unavailable']) {
    const n = s.log.length;
    s.inject.push(code);
    await assert.rejects(relay.fetch('/app/echo'), (e) => e.code === code && e.problem.code === code);
    assert.equal(s.log.length, n + 1, `${code} retried`);
  }
  assert.equal(seen.length, 0);
  assert.equal((await relay.fetch('/app/echo')).status, 200);
});

test('an answer that is not encoded, for another request, or tampered, is refused (fail closed)', async () => {
  const { s } = echoServer();
  const relay = relayFor(s);
  await (await relay.fetch('/app/echo')).arrayBuffer();
  const tampers = [
    ['client-response-decode-failed', (p) => { p.body[0] ^= 1; }],
    ['client-response-decode-failed', (p) => { p.eh[3] ^= 1; }],
    ['client-response-decode-failed', (p) => { p.control = p.control.replace(/,hb$/, ',h'); }],
    ['client-response-mismatch', (p) => { p.control = p.control.replace(/,(\d+),/, (_, n) => `,${Number(n) + 1},`); }],
  ];
  for (const [code, t] of tampers) {
    s.tamper = t;
    await assert.rejects(relay.fetch('/app/echo'), (e) => e.code === code, code);
  }
  s.tamper = null;
  const plain = createRelay({ url: BASE, fetch: async (u, init) => (u.includes('/veil/x/') ? new Response('plaintext!') : s.fetch(u, init)) });
  await assert.rejects(plain.fetch('/app/echo'), (e) => e.code === 'client-response-not-encoded');
});

test('fetch semantics: other origins, x-veil-* headers and GET bodies are refused like fetch would', async () => {
  const { s } = echoServer();
  const relay = relayFor(s);
  await assert.rejects(relay.fetch('http://elsewhere.test/app/echo'), TypeError);
  await assert.rejects(relay.fetch('/app/echo', { headers: { 'x-veil-relay': 'x' } }), TypeError);
  await assert.rejects(relay.fetch('/app/echo', { method: 'GET', body: 'x' }), TypeError);
  // A Request object works as input, with its method, headers and body.
  const r = await relay.fetch(new Request(`${BASE.replace('/veil', '')}/app/echo/req`, { method: 'PATCH', body: 'r', headers: { 'x-one': '1' } }));
  const j = await r.json();
  assert.equal(j.method, 'PATCH');
  assert.deepEqual(j.headers, [['content-type', 'text/plain;charset=UTF-8'], ['x-one', '1']]);
});

test('browser-controlled headers (origin, referer, sec-*) never travel sealed, even where fetch lets a script set them', async () => {
  // A browser's fetch drops these itself; Node's does not, so this is the module's own rule:
  // a sealed header would replace the browser's wire header of the same name (CSRF).
  const { s } = echoServer();
  const relay = relayFor(s);
  const r = await relay.fetch('/app/echo/forged', {
    headers: [['Origin', 'https://evil.example'], ['referer', 'https://evil.example/'], ['sec-fetch-site', 'same-origin'],
      ['sec-ch-ua', '"x"'], ['x-ok', '1'], ['secret', 's']],
  });
  assert.equal(r.status, 200);
  const j = await r.json();
  assert.deepEqual(j.headers, [['x-ok', '1'], ['secret', 's']]);
  // and the stand-in (which refuses them like the filter) saw no refusal
  assert.equal(s.log.filter((l) => l.url.includes('/veil/x/')).length, 1);
});

test('a pair whose sequence numbers are used up, or that is about to expire, is replaced', async () => {
  const { s } = echoServer();
  let now = Date.now();
  const relay = createRelay({ url: BASE, fetch: s.fetch, pairs: 1, now: () => now });
  await (await relay.fetch('/app/echo')).arrayBuffer();
  const first = relay.pairIds()[0];
  relay.pool[0].seq = Number.MAX_SAFE_INTEGER;
  await (await relay.fetch('/app/echo')).arrayBuffer();
  const second = relay.pairIds()[0];
  assert.notEqual(second, first);
  now += 3600 * 1000; // the stand-in's pairs live an hour
  await (await relay.fetch('/app/echo')).arrayBuffer();
  assert.notEqual(relay.pairIds()[0], second);
  assert.equal(relay.stats().pairings, 3);
  assert.equal(relay.stats().retries, 0);
});
