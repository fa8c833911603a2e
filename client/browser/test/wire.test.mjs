// Byte-level pieces of the wire format, each against bytes written out from the protocol doc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  associatedData, b64urlDecode, b64urlEncode, decodeHeaders, deriveKeyBytes, encodeHeaders, importAesKey,
  isForbiddenRequestHeader, nonce, openPart, parseResponseControl, requestControl, sealPart, transcriptHash, Part,
} from '../src/wire.js';

const hex = (b) => Buffer.from(b).toString('hex');
const PAIR = 'AAECAwQFBgcICQoLDA0ODw'; // b64url of bytes 0..15

test('b64url: RFC 4648 §10 vectors without padding, strict decoding', () => {
  const cases = [['', ''], ['f', 'Zg'], ['fo', 'Zm8'], ['foo', 'Zm9v'], ['foob', 'Zm9vYg'], ['fooba', 'Zm9vYmE'], ['foobar', 'Zm9vYmFy']];
  for (const [plain, enc] of cases) {
    assert.equal(b64urlEncode(new TextEncoder().encode(plain)), enc);
    assert.equal(new TextDecoder().decode(b64urlDecode(enc)), plain);
  }
  assert.equal(b64urlEncode(Uint8Array.from([0xfb, 0xff, 0xbf])), '-_-_');
  for (const bad of ['Zg==', 'Zm9v+', 'Z', 'Zh', 'a/b']) assert.throws(() => b64urlDecode(bad), TypeError, bad);
  const big = Uint8Array.from({ length: 100_000 }, (_, i) => i * 7);
  assert.deepEqual(b64urlDecode(b64urlEncode(big)), big);
});

test('nonce = u32be(part) || u64be(seq)', () => {
  assert.equal(hex(nonce(1, 1)), '00000001' + '0000000000000001');
  assert.equal(hex(nonce(5, 0x0102030405060708n)), '00000005' + '0102030405060708');
  assert.equal(hex(nonce(3, 300)), '00000003' + '000000000000012c');
});

test('associated data of request and response parts', () => {
  const req = associatedData({ pairId: PAIR, seq: 42, method: 'POST', flags: 'uhb' }, Part.RequestBody);
  assert.equal(
    hex(req),
    hex(Buffer.concat([Buffer.from(`veil-relay/v1\0${PAIR}\x0042\0POST\0uhb\0`), Buffer.from([3])])),
  );
  const res = associatedData({ pairId: PAIR, seq: 7, method: 'GET', flags: 'hb', status: 204 }, Part.ResponseHeaders);
  assert.equal(hex(res), hex(Buffer.concat([Buffer.from(`veil-relay/v1\0${PAIR}\x007\0GET\0hb\0`), Buffer.from([4]), Buffer.from('\x00204')])));
  assert.throws(() => associatedData({ pairId: PAIR, seq: 7, method: 'GET', flags: 'h' }, Part.ResponseBody), TypeError);
});

test('control headers', () => {
  assert.equal(requestControl({ clientId: 'c.d', pairId: PAIR, seq: 9, flags: 'uh' }), `v1,c.d,${PAIR},9,uh`);
  assert.deepEqual(parseResponseControl(`v1,${PAIR},9,hb`), { pairId: PAIR, seq: 9, flags: 'hb' });
  for (const bad of [`v2,${PAIR},9,h`, `v1,${PAIR},09,h`, `v1,${PAIR},0,h`, `v1,${PAIR},9,uh`, `v1,${PAIR},9`, `v1,short,9,h`, `v1,${PAIR},99999999999999999999,h`, null]) {
    assert.equal(parseResponseControl(bad), null, String(bad));
  }
});

test('headers_json: compact JSON array of pairs, order and repeats kept; decoding is strict', () => {
  const list = [['accept', 'application/json'], ['x-a', '1'], ['x-a', '2'], ['x-q', 'say "hi" \\ ü']];
  const bytes = encodeHeaders(list);
  assert.equal(Buffer.from(bytes).toString(), '[["accept","application/json"],["x-a","1"],["x-a","2"],["x-q","say \\"hi\\" \\\\ ü"]]');
  assert.deepEqual(decodeHeaders(bytes), list);
  for (const bad of ['{}', '[["a"]]', '[["a",1]]', '[1]', 'nope']) assert.throws(() => decodeHeaders(Buffer.from(bad)));
  assert.throws(() => decodeHeaders(Uint8Array.from([0x5b, 0xff, 0x5d])), TypeError); // not UTF-8
});

test('forbidden request header names', () => {
  for (const n of [':path', 'host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'upgrade', 'proxy-connection', 'x-veil-relay',
    'origin', 'referer', 'sec-fetch-site', 'sec-fetch-mode', 'sec-fetch-dest', 'sec-ch-ua', 'sec-ch-ua-platform']) {
    assert.ok(isForbiddenRequestHeader(n), n);
  }
  for (const n of ['accept', 'content-type', 'authorization', 'x-veilx', 'cookie', 'origin-x', 'x-origin', 'referrer', 'secret', 'x-sec-fetch']) {
    assert.ok(!isForbiddenRequestHeader(n), n);
  }
});

test('HKDF-SHA256 through WebCrypto: RFC 5869 test case 1 (the call deriveKeyBytes makes)', async () => {
  const s = crypto.subtle;
  const ikm = Buffer.from('0b'.repeat(22), 'hex');
  const k = await s.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  const okm = await s.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: Buffer.from('000102030405060708090a0b0c', 'hex'), info: Buffer.from('f0f1f2f3f4f5f6f7f8f9', 'hex') }, k, 42 * 8);
  assert.equal(hex(okm), '3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
});

test('transcript hash and key derivation follow §2', async () => {
  const { createHash, hkdfSync } = await import('node:crypto');
  const pk = Uint8Array.from({ length: 1216 }, (_, i) => i & 0xff);
  const ct = Uint8Array.from({ length: 1120 }, (_, i) => (i * 3) & 0xff);
  const ss = Uint8Array.from({ length: 32 }, (_, i) => 0x40 + i);
  const th = createHash('sha256').update(Buffer.concat([Buffer.from(`veil-relay/v1/pair\0cid\0${PAIR}\0`), pk, ct])).digest();
  assert.equal(hex(await transcriptHash('cid', PAIR, pk, ct)), hex(th));
  const k = await deriveKeyBytes(ss, 'cid', PAIR, pk, ct);
  assert.equal(hex(k.c2s), hex(hkdfSync('sha256', ss, th, 'veil-relay/v1 c2s', 32)));
  assert.equal(hex(k.s2c), hex(hkdfSync('sha256', ss, th, 'veil-relay/v1 s2c', 32)));
  assert.notEqual(hex(k.c2s), hex(k.s2c));
});

test('AES-256-GCM part sealing matches node:crypto and binds nonce and AD', async () => {
  const { createCipheriv } = await import('node:crypto');
  const raw = Uint8Array.from({ length: 32 }, (_, i) => i);
  const ctx = { pairId: PAIR, seq: 3, method: 'PUT', flags: 'uhb' };
  const pt = Buffer.from('hello relay');
  const c = createCipheriv('aes-256-gcm', raw, nonce(Part.RequestBody, 3));
  c.setAAD(associatedData(ctx, Part.RequestBody));
  const want = Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
  const sealed = await sealPart(await importAesKey(raw, 'encrypt'), Part.RequestBody, ctx, pt);
  assert.equal(hex(sealed), hex(want));
  const dk = await importAesKey(raw, 'decrypt');
  assert.equal(Buffer.from(await openPart(dk, Part.RequestBody, ctx, sealed)).toString(), 'hello relay');
  await assert.rejects(openPart(dk, Part.RequestHeaders, ctx, sealed)); // other part
  await assert.rejects(openPart(dk, Part.RequestBody, { ...ctx, seq: 4 }, sealed)); // other seq
  await assert.rejects(openPart(dk, Part.RequestBody, { ...ctx, method: 'POST' }, sealed)); // other method
  const empty = await sealPart(await importAesKey(raw, 'encrypt'), Part.RequestBody, ctx, new Uint8Array(0));
  assert.equal(empty.length, 16);
});
