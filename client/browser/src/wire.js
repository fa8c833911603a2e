// Veil Relay v1 wire format (docs/relay-protocol.md): base64url, nonces, associated data,
// control headers, header lists, and the WebCrypto calls that seal and open parts.
// Pure functions of their inputs, so node tests can check them byte for byte.

/** `LABEL` of the protocol: every derivation and every part's associated data starts with it. */
export const LABEL = 'veil-relay/v1';

/** Part numbers: the first byte of a part's nonce and the last byte of its associated data. */
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

/** `nonce(part) = u32be(part) || u64be(seq)`. */
export function nonce(part, seq) {
  const n = new Uint8Array(12);
  const v = new DataView(n.buffer);
  v.setUint32(0, part);
  v.setBigUint64(4, BigInt(seq));
  return n;
}

/**
 * `ad(part) = LABEL 0 pair_id 0 seq 0 method 0 flags 0 byte(part)`, and for response parts
 * `0 status` (3 decimal digits) appended. `seq` is written in decimal, as in the control header.
 */
export function associatedData({ pairId, seq, method, flags, status }, part) {
  const text = (s) => encodeUtf8(s);
  const zero = new Uint8Array([0]);
  const pieces = [
    text(LABEL), zero,
    text(pairId), zero,
    text(String(seq)), zero,
    text(method), zero,
    text(flags), zero,
    new Uint8Array([part]),
  ];
  if (part >= Part.ResponseHeaders) {
    if (!Number.isInteger(status) || status < 100 || status > 999) {
      throw new TypeError('a response part needs a 3-digit status');
    }
    pieces.push(zero, text(String(status)));
  }
  return concatBytes(...pieces);
}

/** The `x-veil-relay` request header: `v1,client_id,pair_id,seq,flags`. */
export function requestControl({ clientId, pairId, seq, flags }) {
  return `v1,${clientId},${pairId},${seq},${flags}`;
}

/**
 * Parses the response's `x-veil-relay` header (`v1,pair_id,seq,flags`, flags `h` or `hb`).
 * Returns null when it is not well formed.
 */
export function parseResponseControl(value) {
  if (typeof value !== 'string') return null;
  const f = value.split(',');
  if (f.length !== 4 || f[0] !== 'v1') return null;
  const [, pairId, seqText, flags] = f;
  if (!/^[A-Za-z0-9_-]{22}$/.test(pairId)) return null;
  if (!/^[1-9][0-9]{0,19}$/.test(seqText)) return null;
  // The client's own sequence numbers stay below 2^53, so a larger one is not an answer to it.
  const seq = Number(seqText);
  if (!Number.isSafeInteger(seq)) return null;
  if (flags !== 'h' && flags !== 'hb') return null;
  return { pairId, seq, flags };
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

export async function sha256(bytes) {
  return new Uint8Array(await subtle().digest('SHA-256', bytes));
}

/** `th = SHA-256(LABEL "/pair" 0 client_id 0 pair_id 0 pk ct)`. */
export async function transcriptHash(clientId, pairId, pk, ct) {
  const zero = new Uint8Array([0]);
  return sha256(
    concatBytes(encodeUtf8(LABEL + '/pair'), zero, encodeUtf8(clientId), zero, encodeUtf8(pairId), zero, pk, ct),
  );
}

/**
 * `c2s`/`s2c` as raw bytes: HKDF-SHA256 with salt `th`, ikm `ss`, info `LABEL " c2s"` /
 * `LABEL " s2c"`. Only tests keep the bytes; the client imports them and drops them.
 */
export async function deriveKeyBytes(ss, clientId, pairId, pk, ct) {
  const th = await transcriptHash(clientId, pairId, pk, ct);
  const ikm = await subtle().importKey('raw', ss, 'HKDF', false, ['deriveBits']);
  const expand = async (dir) =>
    new Uint8Array(
      await subtle().deriveBits(
        { name: 'HKDF', hash: 'SHA-256', salt: th, info: encodeUtf8(`${LABEL} ${dir}`) },
        ikm,
        256,
      ),
    );
  return { th, c2s: await expand('c2s'), s2c: await expand('s2c') };
}

/** Imports a 32-byte key as a non-extractable AES-256-GCM key. */
export async function importAesKey(raw, usage) {
  return subtle().importKey('raw', raw, { name: 'AES-GCM' }, false, [usage]);
}

/** `seal(part, m)` with the direction's key; returns ciphertext || tag. */
export async function sealPart(key, part, ctx, plaintext) {
  const ct = await subtle().encrypt(
    { name: 'AES-GCM', iv: nonce(part, ctx.seq), additionalData: associatedData(ctx, part), tagLength: 128 },
    key,
    plaintext,
  );
  return new Uint8Array(ct);
}

/** Opens a part; throws (WebCrypto's OperationError) when it does not authenticate. */
export async function openPart(key, part, ctx, ciphertext) {
  const pt = await subtle().decrypt(
    { name: 'AES-GCM', iv: nonce(part, ctx.seq), additionalData: associatedData(ctx, part), tagLength: 128 },
    key,
    ciphertext,
  );
  return new Uint8Array(pt);
}
