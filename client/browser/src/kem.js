// X-Wing (draft-connolly-cfrg-xwing-kem-06) from @noble/post-quantum: its `ml_kem768_x25519`
// is X-Wing (ML-KEM-768 + X25519, SHA3-256 combiner with the `\.//^\` label); the draft's
// test vectors check that in test/kem.test.mjs.
import { ml_kem768_x25519 as xwing } from '@noble/post-quantum/hybrid.js';

export const PUBLIC_KEY_LEN = 1216;
export const CIPHERTEXT_LEN = 1120;

/** A fresh key pair; `seed` (32 bytes) only for known-answer tests. */
export function generateKeyPair(seed) {
  const { secretKey, publicKey } = seed === undefined ? xwing.keygen() : xwing.keygen(seed);
  return { secretKey, publicKey };
}

/** The 32-byte shared secret of `ciphertext` under `secretKey` (the 32-byte X-Wing seed). */
export function decapsulate(ciphertext, secretKey) {
  if (ciphertext.length !== CIPHERTEXT_LEN) throw new TypeError('X-Wing ciphertext must be 1120 bytes');
  return xwing.decapsulate(ciphertext, secretKey);
}

/** Server side of the KEM, for tests that stand in for the keyservice. */
export function encapsulate(publicKey, eseed) {
  const { cipherText, sharedSecret } =
    eseed === undefined ? xwing.encapsulate(publicKey) : xwing.encapsulate(publicKey, eseed);
  return { ciphertext: cipherText, sharedSecret };
}
