// Veil Relay encodings shared by the protocol (docs/relay-protocol.md): UTF-8, base64url,
// header lists and the request header rules, and WebCrypto key import. The key schedule,
// nonces, associated data and control headers are in wire-v2.js.
// Pure functions of their inputs, so node tests can check them byte for byte.

/** Part numbers: `byte(part)` of the nonces and associated data. */
export const Part = Object.freeze({
  RequestUrl: 1,
  RequestHeaders: 2,
  RequestBody: 3,
  ResponseHeaders: 4,
  ResponseBody: 5,
});

/**
 * Request header names the filter refuses inside the sealed header list (§3): framing and
 * hop-by-hop headers, and the browser-controlled `origin` and `referer` (with every `sec-*`
 * name, below): a sealed header replaces the wire header of the same name, so a page must
 * not be able to override what the browser itself put on the wire.
 */
const FORBIDDEN_REQUEST_HEADERS = new Set([
  'host',
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'te',
  'upgrade',
  'proxy-connection',
  'origin',
  'referer',
]);

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

export function encodeUtf8(s) {
  return utf8.encode(s);
}

export function decodeUtf8(bytes) {
  return utf8Strict.decode(bytes);
}

export function concatBytes(...parts) {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const B64URL = /^[A-Za-z0-9_-]*$/;

/** base64url without padding (RFC 4648 §5). */
export function b64urlEncode(bytes) {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Strict base64url decoding: no padding, no other alphabet, no impossible length. */
export function b64urlDecode(text) {
  if (typeof text !== 'string' || !B64URL.test(text) || text.length % 4 === 1) {
    throw new TypeError('not base64url without padding');
  }
  const bin = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  // Non-canonical trailing bits would decode too; re-encoding catches them.
  if (b64urlEncode(out) !== text) throw new TypeError('non-canonical base64url');
  return out;
}

/** True for a name the protocol keeps out of the sealed request headers. */
export function isForbiddenRequestHeader(name) {
  return name.startsWith(':') || name.startsWith('x-veil-') || name.startsWith('sec-') || FORBIDDEN_REQUEST_HEADERS.has(name);
}

/** `headers_json`: a JSON array of `[name, value]` pairs (names lowercase), as bytes. */
export function encodeHeaders(list) {
  return encodeUtf8(JSON.stringify(list.map(([n, v]) => [String(n), String(v)])));
}

/** Opens a decoded `headers_json`; throws on anything but an array of string pairs. */
export function decodeHeaders(bytes) {
  const v = JSON.parse(decodeUtf8(bytes));
  if (!Array.isArray(v)) throw new TypeError('headers: not an array');
  for (const e of v) {
    if (!Array.isArray(e) || e.length !== 2 || typeof e[0] !== 'string' || typeof e[1] !== 'string') {
      throw new TypeError('headers: not a [name, value] string pair');
    }
  }
  return v;
}

const subtle = () => {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) throw new TypeError('veil-relay needs WebCrypto (a secure context: https or localhost)');
  return s;
};

/** Imports a 32-byte key as a non-extractable AES-256-GCM key. */
export async function importAesKey(raw, usage) {
  return subtle().importKey('raw', raw, { name: 'AES-GCM' }, false, [usage]);
}
