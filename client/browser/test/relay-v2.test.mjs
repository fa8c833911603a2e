// The browser client speaking protocol v2 (createRelay({ serverKey })) against a stand-in
// relay written here with the v2 wire functions: round trip, a man in the middle refused at
// pairing, a forged error that must not make a POST run twice, an authenticated refusal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRelay, VeilRelayError } from '../src/veil-relay.js';
import { generateKeyPair, encapsulate, decapsulate } from '../src/kem.js';
import { b64urlDecode, b64urlEncode, concatBytes, decodeHeaders, encodeHeaders, encodeUtf8 } from '../src/wire.js';
import * as v2 from '../src/wire-v2.js';

const subtle = globalThis.crypto.subtle;
const aes = (raw, usage) => subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, [usage]);

function keyConfig(keyId, publicKey) {
  return concatBytes(new Uint8Array([keyId, 0x64, 0x7a]), publicKey, new Uint8Array([0, 4, 0, 1, 0, 2]));
}

/**
 * A v2 relay in a function: `mode.mitm`, `mode.forge` (a code answered in plaintext after the
 * upstream ran); `expiresAt` (seconds) is what the pairs it makes announce.
 */
function standIn() {
  const server = generateKeyPair(new Uint8Array(32).fill(5));
  const config = keyConfig(1, server.publicKey);
  const st = { pairs: new Map(), runs: [], encoded: 0, mode: {}, config, pin: b64urlEncode(config) };
  const clientId = 'cid-of-the-stand-in';
  let n = 0;
  const plainError = (code, status) =>
    Response.json({ code, status }, { status, headers: { 'x-veil-relay-error': code, 'content-type': 'application/problem+json' } });
  st.fetch = async (url, init = {}) => {
    const u = new URL(url);
    if (u.pathname === '/veil/relay') return Response.json({ version: 2, client_id: clientId, max_pairs: 2 });
    if (u.pathname === '/veil/pair') {
      const body = JSON.parse(init.body);
      const out = [];
      for (const e of body.pairs) {
        const pairId = String(++n).padStart(22, 'A');
        const expiresAt = st.expiresAt ?? 4102444800;
        let encS = b64urlDecode(e.enc);
        if (st.mode.mitm) {
          // the hop pairs with the relay under its own encapsulation
          encS = encapsulate(server.publicKey).ciphertext;
        }
        const ssS = decapsulate(encS, server.secretKey);
        const pk = b64urlDecode(e.pk);
        const toClient = encapsulate(pk);
        const th = await v2.transcriptHash({ keyConfig: config, clientId, pairId, encServer: encS, ephemeralPk: pk, encEphemeral: toClient.ciphertext, expiresAt });
        const k = await v2.keySchedule(ssS, toClient.sharedSecret, th);
        st.pairs.set(pairId, k);
        out.push({ pair_id: pairId, enc: b64urlEncode(toClient.ciphertext), expires_at: expiresAt, confirm: b64urlEncode(k.confirm) });
      }
      return Response.json({ pairs: out });
    }
    st.encoded += 1;
    const h = new Headers(init.headers);
    const [, , pairId, seqText, flags] = h.get('x-veil-relay').split(',');
    const seq = Number(seqText);
    const k = st.pairs.get(pairId);
    if (!k) return plainError('relay-pair-unknown', 401);
    const ctx = { pairId, seq, method: init.method, scheme: u.protocol.replace(':', ''), authority: u.host, flags };
    const c2s = await aes(k.c2s, 'decrypt');
    const open = async (part, ct) =>
      new Uint8Array(await subtle.decrypt({ name: 'AES-GCM', iv: v2.requestNonce(part, seq), additionalData: v2.requestAd(ctx, part) }, c2s, ct));
    const sealedUrl = b64urlDecode(u.pathname.slice('/veil/x/'.length));
    const sealedEh = b64urlDecode(h.get('x-veil-relay-eh'));
    const pq = new TextDecoder().decode(await open(1, sealedUrl));
    const headers = decodeHeaders(await open(2, sealedEh));
    const body = flags === 'uhb' ? await open(3, init.body) : null;
    st.runs.push([init.method, pq]);
    if (st.mode.plain) {
      st.mode.plain = false;
      return new Response('plaintext!', { status: 200 });
    }
    if (st.mode.forge) {
      const code = st.mode.forge;
      st.mode.forge = null;
      return plainError(code, 401);
    }
    const binding = v2.requestBinding(sealedUrl, sealedEh);
    const rn = crypto.getRandomValues(new Uint8Array(32));
    const ak = await v2.answerKeyBytes(k.s2c, rn);
    const key = await aes(ak.key, 'encrypt');
    if (st.mode.refuse) st.refused = (st.refused ?? 0) + 1;
    const status = st.mode.refuse ? 409 : 200;
    const rflags = st.mode.refuse ? 'e' : 'hb';
    const seal = async (part, m) =>
      new Uint8Array(
        await subtle.encrypt(
          { name: 'AES-GCM', iv: v2.answerNonce(ak.baseNonce, part), additionalData: v2.answerAd({ pairId, seq, flags: rflags, status, binding }, part) },
          key,
          m,
        ),
      );
    const control = `v2,${pairId},${seq},${b64urlEncode(rn)},${rflags}`;
    if (st.mode.refuse) {
      st.mode.refuse = false;
      return new Response(JSON.stringify({ code: 'relay-replay' }), {
        status,
        headers: { 'x-veil-relay': control, 'x-veil-relay-eh': b64urlEncode(await seal(6, encodeUtf8('relay-replay'))), 'x-veil-relay-error': 'relay-replay' },
      });
    }
    const echo = encodeUtf8(JSON.stringify({ method: init.method, pq, headers, body: body && b64urlEncode(body) }));
    const sealedBody = await seal(5, echo);
    if (st.mode.tamper) {
      st.mode.tamper = false;
      sealedBody[3] ^= 1;
    }
    return new Response(sealedBody, {
      status,
      headers: {
        'x-veil-relay': control,
        'x-veil-relay-eh': b64urlEncode(await seal(4, encodeHeaders([['content-type', 'application/json']]))),
        'content-type': 'application/octet-stream',
      },
    });
  };
  return st;
}

const memory = () => {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), removeItem: (k) => m.delete(k) };
};

test('v2: requests round trip when the server key is pinned', async () => {
  const st = standIn();
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 2, fetch: st.fetch, storage: memory(), serverKey: st.pin });
  const r = await relay.fetch('/app/echo?x=1', { headers: { 'x-app': '1' } });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'application/json');
  const e = await r.json();
  assert.deepEqual([e.method, e.pq, e.headers], ['GET', '/app/echo?x=1', [['x-app', '1']]]);
  const p = await (await relay.fetch('/app/items', { method: 'POST', body: 'hello' })).json();
  assert.equal(Buffer.from(p.body, 'base64url').toString(), 'hello');
  assert.equal(relay.stats().retries, 0);
});

test('v2: a man in the middle is refused at pairing and nothing is sent', async () => {
  const st = standIn();
  st.mode.mitm = true;
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage: memory(), serverKey: st.pin });
  await assert.rejects(relay.fetch('/app/echo'), (e) => e instanceof VeilRelayError && e.code === 'relay-server-auth-failed');
  assert.equal(st.encoded, 0);
  // a wrong pin fails the same way against the genuine relay
  const other = keyConfig(1, generateKeyPair(new Uint8Array(32).fill(6)).publicKey);
  const st2 = standIn();
  const wrong = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st2.fetch, storage: memory(), serverKey: other });
  await assert.rejects(wrong.fetch('/app/echo'), (e) => e.code === 'relay-server-auth-failed');
  assert.equal(st2.encoded, 0);
});

test('v2: a forged error after the upstream ran does not make a POST run twice', async () => {
  const st = standIn();
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage: memory(), serverKey: st.pin });
  await relay.fetch('/warm-up');
  st.runs.length = 0;
  st.mode.forge = 'relay-pair-unknown';
  await assert.rejects(relay.fetch('/app/pay', { method: 'POST', body: '1' }), (e) => e.code === 'relay-pair-unknown' && !e.authenticated);
  assert.equal(st.runs.length, 1);
  // a GET is re-paired and sent again (running twice is harmless)
  st.mode.forge = 'relay-pair-unknown';
  assert.equal((await relay.fetch('/app/x')).status, 200);
  assert.equal(st.runs.length, 3);
});

test('v2: an authenticated refusal carries its code', async () => {
  const st = standIn();
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage: memory(), serverKey: st.pin });
  st.mode.refuse = true;
  await assert.rejects(relay.fetch('/app/x', { method: 'PATCH', body: '1' }), (e) => e.code === 'relay-replay' && e.authenticated && e.status === 409);
  assert.throws(() => createRelay({ url: 'http://relay.test/veil', serverKey: 'AAAA' }));
});

test('v2: the pin is required', () => {
  assert.throws(() => createRelay({ url: 'http://relay.test/veil' }), TypeError);
  assert.throws(() => createRelay({ url: 'http://relay.test/veil', serverKey: null }), TypeError);
});

test('v2: pairs the relay lost: a GET re-pairs and is sent again, a POST is reported once and the next one works', async () => {
  const st = standIn();
  const storage = memory();
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage, serverKey: st.pin });
  await relay.fetch('/warm-up');
  assert.equal(storage.getItem('veil-relay:client-id:http://relay.test/veil'), 'cid-of-the-stand-in');
  const first = relay.pairIds();
  st.pairs.clear(); // the keyservice lost its sessions
  assert.equal((await relay.fetch('/app/get')).status, 200);
  assert.equal(relay.stats().retries, 1);
  assert.notDeepEqual(relay.pairIds(), first, 'on a new pair');
  st.pairs.clear();
  st.runs.length = 0;
  await assert.rejects(relay.fetch('/app/post', { method: 'POST', body: 'x' }), (e) => e.code === 'relay-pair-unknown');
  assert.equal(relay.stats().retries, 1, 'the POST was not retried');
  assert.equal((await relay.fetch('/app/post', { method: 'POST', body: 'y' })).status, 200, 'the dead pair was dropped');
  assert.equal(st.runs.length, 1, 'only the second POST ran');
});

test('v2: an authenticated replay refusal on a GET is retried on a fresh seq', async () => {
  const st = standIn();
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage: memory(), serverKey: st.pin });
  st.mode.refuse = true;
  assert.equal((await relay.fetch('/app/x')).status, 200);
  assert.equal(st.refused, 1);
  assert.equal(relay.stats().retries, 1);
  assert.equal(relay.stats().repairs, 0, 'same pair, fresh seq');
});

test('v2: an answer changed on the way is refused, not returned', async () => {
  const st = standIn();
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage: memory(), serverKey: st.pin });
  st.mode.tamper = true;
  await assert.rejects(relay.fetch('/app/x', { method: 'POST', body: '1' }), (e) => e.code === 'client-response-decode-failed');
});

test('v2 fetch semantics: other origins, x-veil-* headers and GET bodies are refused like fetch would; a Request works as input', async () => {
  const st = standIn();
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage: memory(), serverKey: st.pin });
  await assert.rejects(relay.fetch('http://elsewhere.test/app/echo'), TypeError);
  await assert.rejects(relay.fetch('/app/echo', { headers: { 'x-veil-relay': 'x' } }), TypeError);
  await assert.rejects(relay.fetch('/app/echo', { method: 'GET', body: 'x' }), TypeError);
  assert.equal(st.encoded, 0, 'nothing refused was sent');
  // A Request object works as input, with its method, headers and body.
  const r = await relay.fetch(new Request('http://relay.test/app/echo/req?q=1', { method: 'PATCH', body: 'r', headers: { 'x-one': '1' } }));
  const j = await r.json();
  assert.deepEqual([j.method, j.pq], ['PATCH', '/app/echo/req?q=1']);
  assert.deepEqual(j.headers, [['content-type', 'text/plain;charset=UTF-8'], ['x-one', '1']]);
  assert.equal(Buffer.from(j.body, 'base64url').toString(), 'r');
});

test('v2: browser-controlled headers (origin, referer, sec-*) never travel sealed, even where fetch lets a script set them', async () => {
  // A browser's fetch drops these itself; Node's does not, so this is the module's own rule:
  // a sealed header would replace the browser's wire header of the same name (CSRF).
  const st = standIn();
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage: memory(), serverKey: st.pin });
  const r = await relay.fetch('/app/echo/forged', {
    headers: [['Origin', 'https://evil.example'], ['referer', 'https://evil.example/'], ['sec-fetch-site', 'same-origin'],
      ['sec-ch-ua', '"x"'], ['x-ok', '1'], ['secret', 's']],
  });
  assert.equal(r.status, 200);
  assert.deepEqual((await r.json()).headers, [['x-ok', '1'], ['secret', 's']]);
});

test('v2: a pair whose sequence numbers are used up is replaced before use', async () => {
  const st = standIn();
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage: memory(), serverKey: st.pin });
  await relay.fetch('/warm-up');
  const first = relay.pairIds()[0];
  relay.pool[0].seq = Number.MAX_SAFE_INTEGER; // the protocol's last seq (2^53 - 1) was used
  assert.equal((await relay.fetch('/app/x')).status, 200);
  assert.notEqual(relay.pairIds()[0], first);
  assert.equal(relay.stats().pairings, 2);
  assert.equal(relay.stats().retries, 0, 'replaced before use, not after a refusal');
});

test('v2: a pair past its lifetime is replaced before use', async () => {
  const st = standIn();
  let now = 1_900_000_000_000;
  st.expiresAt = now / 1000 + 3600; // the stand-in's pairs live an hour
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage: memory(), serverKey: st.pin, now: () => now });
  await relay.fetch('/warm-up');
  const first = relay.pairIds()[0];
  now += 1800 * 1000; // half way: still used
  await relay.fetch('/app/x');
  assert.equal(relay.pairIds()[0], first);
  now += 1800 * 1000; // at its end of life
  st.expiresAt = now / 1000 + 3600;
  const encodedBefore = st.encoded;
  assert.equal((await relay.fetch('/app/x')).status, 200);
  assert.notEqual(relay.pairIds()[0], first);
  assert.equal(st.encoded, encodedBefore + 1, 'the expired pair was not tried first');
  assert.equal(relay.stats().pairings, 2);
  assert.equal(relay.stats().retries, 0);
});

test('v2: an answer that is not encoded is refused; give-up codes are reported without a retry', async () => {
  const st = standIn();
  const relay = createRelay({ url: 'http://relay.test/veil', pairs: 1, fetch: st.fetch, storage: memory(), serverKey: st.pin });
  await relay.fetch('/warm-up');
  st.mode.plain = true; // a hop answers in the relay's place, in plaintext, without any relay header
  await assert.rejects(relay.fetch('/app/x'), (e) => e instanceof VeilRelayError && e.code === 'client-response-not-encoded');
  for (const code of ['relay-route-not-allowed', 'relay-too-large']) {
    const n = st.encoded;
    st.mode.forge = code;
    await assert.rejects(relay.fetch('/app/x'), (e) => e.code === code && !e.authenticated);
    assert.equal(st.encoded, n + 1, `${code} retried`);
  }
  assert.equal(relay.stats().retries, 0);
  assert.equal((await relay.fetch('/app/x')).status, 200);
});
