// X-Wing in the bundle is draft-06 X-Wing: the draft's test vectors (as shipped by the
// RustCrypto `x-wing` 0.1.1 crate, tests/test-vectors.json) through src/kem.js.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { decapsulate, encapsulate, generateKeyPair, PUBLIC_KEY_LEN, CIPHERTEXT_LEN } from '../src/kem.js';

const vectors = JSON.parse(readFileSync(new URL('./vectors/xwing-draft06.json', import.meta.url)));
const hex = (s) => Uint8Array.from(Buffer.from(s, 'hex'));
const toHex = (b) => Buffer.from(b).toString('hex');

test('X-Wing draft-06 vectors: keygen, encapsulate, decapsulate', () => {
  assert.equal(vectors.length, 3);
  for (const v of vectors) {
    const kp = generateKeyPair(hex(v.seed));
    assert.equal(toHex(kp.secretKey), v.sk);
    assert.equal(kp.publicKey.length, PUBLIC_KEY_LEN);
    assert.equal(toHex(kp.publicKey), v.pk);
    const e = encapsulate(hex(v.pk), hex(v.eseed));
    assert.equal(e.ciphertext.length, CIPHERTEXT_LEN);
    assert.equal(toHex(e.ciphertext), v.ct);
    assert.equal(toHex(e.sharedSecret), v.ss);
    assert.equal(toHex(decapsulate(hex(v.ct), hex(v.sk))), v.ss);
  }
});

test('X-Wing: a changed ciphertext gives another shared secret (implicit rejection)', () => {
  const v = vectors[0];
  const ct = hex(v.ct);
  ct[0] ^= 1;
  assert.notEqual(toHex(decapsulate(ct, hex(v.sk))), v.ss);
  assert.throws(() => decapsulate(ct.subarray(1), hex(v.sk)), /1120/);
});

test('X-Wing: fresh key pairs differ and round trip', () => {
  const a = generateKeyPair();
  const b = generateKeyPair();
  assert.notEqual(toHex(a.publicKey), toHex(b.publicKey));
  const e = encapsulate(a.publicKey);
  assert.equal(toHex(decapsulate(e.ciphertext, a.secretKey)), toHex(e.sharedSecret));
});
