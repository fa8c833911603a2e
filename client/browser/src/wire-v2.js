// Veil Relay v2 (docs/relay-protocol.md): the server's key configuration (RFC 9458 §3),
// the pairing transcript and labeled key schedule (RFC 9180 §4 shape) with its key
// confirmation, request and answer associated data, per-answer keys from the response
// nonce, and the control headers. Pure functions over WebCrypto, checked byte for byte
// against core/tests/vectors/relay-v2.json (test/vectors-v2.test.mjs).
import { concatBytes, encodeUtf8, b64urlDecode, b64urlEncode } from './wire.js';

export const LABEL = encodeUtf8('veil-relay/v2');
export const KEM_ID = 0x647a;
export const KDF_ID = 0x0001;
export const AEAD_ID = 0x0002;
export const SUITE_ID = new Uint8Array([0x64, 0x7a, 0x00, 0x01, 0x00, 0x02]);
export const PUBLIC_KEY_LEN = 1216;
export const KEY_CONFIG_LEN = 1 + 2 + PUBLIC_KEY_LEN + 2 + 4;

/** Part numbers (the AD's `byte(part)`); 6 is the relay's own error code. */
export const Part = Object.freeze({
  RequestUrl: 1,
  RequestHeaders: 2,
  RequestBody: 3,
  ResponseHeaders: 4,
  ResponseBody: 5,
  Error: 6,
});

const subtle = () => {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) throw new TypeError('veil-relay needs WebCrypto (a secure context: https or localhost)');
  return s;
};

const u16 = (n) => new Uint8Array([(n >>> 8) & 0xff, n & 0xff]);
const u32 = (n) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
};
const u64 = (n) => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
};
/** `lp(x) = u32be(len(x)) || x`. */
const lp = (x) => concatBytes(u32(x.length), x);
const text = (s) => encodeUtf8(s);

/**
 * Reads a pinned key configuration: base64url text (what `veil-keyservice relay-key show`
 * prints) or bytes. Accepts a configuration listing several symmetric suites when
 * HKDF-SHA256 + AES-256-GCM is among them; returns `{ keyId, publicKey, bytes }` with
 * `bytes` the canonical one-suite encoding the transcript hashes.
 */
export function parseKeyConfig(input) {
  const b = typeof input === 'string' ? b64urlDecode(input.trim()) : input;
  if (!(b instanceof Uint8Array) || b.length < 3 + PUBLIC_KEY_LEN + 2) throw new TypeError('relay key config is truncated');
  const keyId = b[0];
  const kem = (b[1] << 8) | b[2];
  if (kem !== KEM_ID) throw new TypeError(`relay key config: KEM 0x${kem.toString(16)} is not X-Wing`);
  const publicKey = b.slice(3, 3 + PUBLIC_KEY_LEN);
  let at = 3 + PUBLIC_KEY_LEN;
  const symLen = (b[at] << 8) | b[at + 1];
  at += 2;
  if (symLen === 0 || symLen % 4 !== 0) throw new TypeError('relay key config: bad symmetric algorithm list');
  if (b.length !== at + symLen) throw new TypeError('relay key config: wrong length');
  let supported = false;
  for (let i = at; i < at + symLen; i += 4) {
    const kdf = (b[i] << 8) | b[i + 1];
    const aead = (b[i + 2] << 8) | b[i + 3];
    if (kdf === KDF_ID && aead === AEAD_ID) supported = true;
  }
  if (!supported) throw new TypeError('relay key config does not offer HKDF-SHA256 with AES-256-GCM');
  const bytes = concatBytes(new Uint8Array([keyId]), u16(KEM_ID), publicKey, u16(4), u16(KDF_ID), u16(AEAD_ID));
  return { keyId, publicKey, bytes };
}

async function hmac(key, ...msg) {
  const k = await subtle().importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await subtle().sign('HMAC', k, concatBytes(...msg)));
}

/** `HKDF-Extract(salt, LABEL || SUITE_ID || label || ikm)`. */
export async function labeledExtract(salt, label, ikm) {
  return hmac(salt, LABEL, SUITE_ID, text(label), ikm);
}

/** `HKDF-Expand(prk, u16be(L) || LABEL || SUITE_ID || label || info, L)`, L ≤ 32. */
export async function labeledExpand(prk, label, info, length) {
  if (length > 32) throw new RangeError('labeledExpand: at most one block here');
  const t1 = await hmac(prk, u16(length), LABEL, SUITE_ID, text(label), info, new Uint8Array([1]));
  return t1.slice(0, length);
}

/** The exact bytes of the pairing transcript; `th` is their SHA-256. */
export function transcriptInput({ keyConfig, clientId, pairId, encServer, ephemeralPk, encEphemeral, expiresAt }) {
  return concatBytes(
    LABEL, SUITE_ID, text('pair'),
    lp(keyConfig), lp(text(clientId)), lp(text(pairId)), lp(encServer), lp(ephemeralPk), lp(encEphemeral),
    u64(expiresAt),
  );
}

export async function transcriptHash(t) {
  return new Uint8Array(await subtle().digest('SHA-256', transcriptInput(t)));
}

/** `secret = LabeledExtract(th, "secret", ss_s || ss_e)`; `c2s`, `s2c`, `confirm` from it. */
export async function keySchedule(ssServer, ssEphemeral, th) {
  const secret = await labeledExtract(th, 'secret', concatBytes(ssServer, ssEphemeral));
  const empty = new Uint8Array(0);
  return {
    secret,
    c2s: await labeledExpand(secret, 'c2s', empty, 32),
    s2c: await labeledExpand(secret, 's2c', empty, 32),
    confirm: await labeledExpand(secret, 'confirm', empty, 32),
  };
}

/** Constant-time comparison of two byte strings of equal length. */
export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

const head = (part, pairId, seq) => [LABEL, new Uint8Array([part]), lp(text(pairId)), u64(seq)];

/** Request AD: `LABEL || byte(part) || lp(pair_id) || u64be(seq) || lp(method) || lp(scheme) || lp(authority) || lp(flags)`. */
export function requestAd({ pairId, seq, method, scheme, authority, flags }, part) {
  return concatBytes(...head(part, pairId, seq), lp(text(method)), lp(text(scheme)), lp(text(authority)), lp(text(flags)));
}

/** Request nonce: `u32be(part) || u64be(seq)`. */
export function requestNonce(part, seq) {
  return concatBytes(u32(part), u64(seq));
}

/** Answer AD: `LABEL || byte(part) || lp(pair_id) || u64be(seq) || lp(flags) || u16be(status) || binding`. */
export function answerAd({ pairId, seq, flags, status, binding }, part) {
  if (!Number.isInteger(status) || status < 100 || status > 999) throw new TypeError('an answer part needs a 3-digit status');
  return concatBytes(...head(part, pairId, seq), lp(text(flags)), u16(status), binding);
}

/** `binding = tag(part 1) || tag(part 2)`: the last 16 bytes of each sealed request part. */
export function requestBinding(sealedUrl, sealedHeaders) {
  return concatBytes(sealedUrl.slice(sealedUrl.length - 16), sealedHeaders.slice(sealedHeaders.length - 16));
}

/** One answer's key (raw) and base nonce from `s2c` and its response nonce. */
export async function answerKeyBytes(s2c, responseNonce) {
  const rs = await labeledExtract(responseNonce, 'response', s2c);
  return {
    rs,
    key: await labeledExpand(rs, 'key', new Uint8Array(0), 32),
    baseNonce: await labeledExpand(rs, 'nonce', new Uint8Array(0), 12),
  };
}

/** `base XOR (0^11 || byte(part))`. */
export function answerNonce(baseNonce, part) {
  const n = baseNonce.slice();
  n[11] ^= part;
  return n;
}

/** The request's `x-veil-relay`: `v2,client_id,pair_id,seq,flags`. */
export function requestControl({ clientId, pairId, seq, flags }) {
  return `v2,${clientId},${pairId},${seq},${flags}`;
}

/** Parses an answer's `x-veil-relay` (`v2,pair_id,seq,b64url(rn),flags`); null if malformed. */
export function parseResponseControl(value) {
  if (typeof value !== 'string') return null;
  const f = value.split(',');
  if (f.length !== 5 || f[0] !== 'v2') return null;
  const [, pairId, seqText, rnText, flags] = f;
  if (!/^[A-Za-z0-9_-]{22}$/.test(pairId)) return null;
  if (!/^[1-9][0-9]{0,15}$/.test(seqText)) return null;
  const seq = Number(seqText);
  if (!Number.isSafeInteger(seq)) return null;
  let responseNonce;
  try {
    responseNonce = b64urlDecode(rnText);
  } catch {
    return null;
  }
  if (responseNonce.length !== 32) return null;
  if (flags !== 'h' && flags !== 'hb' && flags !== 'e') return null;
  return { pairId, seq, responseNonce, flags };
}

/** `b64url(bytes)`, re-exported for callers of this module. */
export { b64urlEncode };
