// Byte-level pieces of the wire format, each against bytes written out from the protocol doc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { b64urlDecode, b64urlEncode, decodeHeaders, encodeHeaders, isForbiddenRequestHeader } from '../src/wire.js';


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
