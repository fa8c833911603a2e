// Veil Relay browser client: a `fetch`-compatible function whose requests travel end to end
// encoded between the page and Veil's filter (docs/relay-protocol.md, docs/relay-browser.md).
//
//   import { createRelay } from 'https://api.example.com/public/veil-relay.js';
//   const relay = createRelay({ url: 'https://api.example.com/veil', serverKey: PINNED_KEY });
//   const res = await relay.fetch('/app/orders', { method: 'POST', body: JSON.stringify(order) });
//
// `serverKey` is required: the relay's key configuration (`veil-keyservice relay-key show`),
// shipped by the page from its own origin — this module passes the same hops the relay
// protects against, so it cannot carry the pin (docs/relay-browser.md).
//
// Keys: per pair, a secret encapsulated to the pinned key and an ephemeral X-Wing key pair
// (kept only until the pairing is confirmed); AES-256-GCM keys imported into WebCrypto as
// non-extractable. The client id is kept per relay in the page origin's localStorage.
import { decapsulate, encapsulate, generateKeyPair, CIPHERTEXT_LEN } from './kem.js';
import * as v2 from './wire-v2.js';
import { Part, b64urlDecode, b64urlEncode, decodeHeaders, encodeHeaders, encodeUtf8, importAesKey, isForbiddenRequestHeader } from './wire.js';

export { Part } from './wire.js';

/** Pairs the client asks for when the caller does not say (the protocol's default). */
const DEFAULT_PAIRS = 5;
/** A pair this close to its `expires_at` is not used for a new request. */
const EXPIRY_MARGIN_MS = 30_000;
/** Statuses whose responses never have a body (the Response constructor refuses one). */
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

/**
 * A relay failure: the filter's refusal (`code` is the protocol's `x-veil-relay-error`,
 * `status` and `problem` its problem+json answer) or a response that is not a valid encoded
 * answer (`code` starts with `client-`). Requests rejected with it reached no upstream,
 * except `client-response-*` ones (the answer came back but did not open).
 */
export class VeilRelayError extends Error {
  constructor(code, message, { status = 0, problem = null, cause, authenticated = false } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'VeilRelayError';
    this.code = code;
    this.status = status;
    this.problem = problem;
    // Protocol v2: the refusal opened under this request's keys (the relay wrote it).
    this.authenticated = authenticated;
  }
}

/** RFC 9110 §9.2.2: the methods that may be sent twice (docs/relay-protocol.md §6). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** What the client does on each refusal code (§6): re-validate, re-pair, retry, or give up. */
const RECOVERY = {
  'relay-bad-client-id': 'revalidate',
  'relay-pair-unknown': 'repair',
  'relay-decode-failed': 'repair',
  'relay-replay': 'retry',
};

function memoryStorage() {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, String(v)),
    removeItem: (k) => void m.delete(k),
  };
}

function defaultStorage() {
  try {
    // Reading it can throw (storage disabled, opaque origins).
    const s = globalThis.localStorage;
    if (s) return s;
  } catch {
    /* fall through */
  }
  return memoryStorage();
}

function defaultBase() {
  // The module is served by the filter at `/public/veil-relay.js`: its own origin, default prefix.
  try {
    return new URL('/veil', import.meta.url).href;
  } catch {
    return undefined;
  }
}

function httpTrim(v) {
  return String(v).replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, '');
}

/**
 * The request's headers in the order the application set them (repeated names kept), limited
 * to what the fetch `Request` accepted (so a page cannot send through the relay a header the
 * browser refuses to let it set), plus what fetch adds itself (a body's content-type).
 */
function orderedHeaders(init, req) {
  const given = init && init.headers;
  let list;
  if (Array.isArray(given)) {
    list = given.map(([n, v]) => [String(n).toLowerCase(), httpTrim(v)]);
  } else if (given && typeof given === 'object' && !(given instanceof Headers) && !(Symbol.iterator in given)) {
    list = Object.entries(given).map(([n, v]) => [n.toLowerCase(), httpTrim(v)]);
  } else {
    list = [...req.headers];
  }
  list = list.filter(([n]) => req.headers.has(n));
  const ct = req.headers.get('content-type');
  if (ct !== null && !list.some(([n]) => n === 'content-type')) list.push(['content-type', ct]);
  for (const [n] of list) {
    if (n.startsWith('x-veil-')) throw new TypeError(`veil-relay: the application may not set ${n}`);
  }
  return list.filter(([n]) => !isForbiddenRequestHeader(n));
}

/** Refusal or not: reads the filter's problem+json when the answer carries a relay error. */
async function refusalOf(res) {
  const code = res.headers.get('x-veil-relay-error');
  if (code === null) return null;
  let problem = null;
  try {
    problem = await res.json();
  } catch {
    /* a refusal without a readable body still has its code */
  }
  const detail = problem && typeof problem.detail === 'string' ? `: ${problem.detail}` : '';
  return new VeilRelayError(code, `veil-relay: ${code} (${res.status})${detail}`, { status: res.status, problem });
}

class Relay {
  constructor(options = {}) {
    const base = options.url ?? defaultBase();
    if (base === undefined) throw new TypeError('veil-relay: options.url (the relay prefix URL) is required');
    const u = new URL(base, globalThis.location ? globalThis.location.href : undefined);
    if (u.search || u.hash) throw new TypeError('veil-relay: the relay URL has no query or fragment');
    this.prefix = u.href.replace(/\/+$/, '');
    this.origin = u.origin;
    const pairs = options.pairs ?? DEFAULT_PAIRS;
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > 16) throw new RangeError('veil-relay: pairs must be 1..16');
    this.wantPairs = pairs;
    // The relay's pinned server key (docs/relay-protocol.md §0): the page ships it from its
    // own origin; this module, served through the hops, cannot.
    if (options.serverKey === undefined || options.serverKey === null) {
      throw new TypeError("veil-relay: options.serverKey (the relay's key configuration, `veil-keyservice relay-key show`) is required");
    }
    this.serverKey = v2.parseKeyConfig(options.serverKey);
    this.scheme = u.protocol.replace(/:$/, '');
    this.authority = u.host;
    this.storage = options.storage ?? defaultStorage();
    this.storageKey = `veil-relay:client-id:${this.prefix}`;
    this.transport = options.fetch ?? ((...a) => globalThis.fetch(...a));
    this.now = options.now ?? (() => Date.now());
    // Tests only (protocol vectors): where the X-Wing key pairs come from.
    this.keygen = options.keygen ?? (() => generateKeyPair());
    this.clientId = null;
    this.maxPairs = pairs;
    this.validated = null; // in-flight or done `GET P/relay`
    this.pairing = null; // in-flight `POST P/pair`
    this.pool = [];
    this.batches = 0;
    this.next = 0;
    // repairs: pairings after the first; dropped: batches dropped after a refusal.
    this.counters = { requests: 0, pairings: 0, repairs: 0, retries: 0, revalidations: 0, dropped: 0 };
    // A bound function, so `relay.fetch` can be handed around like `fetch`.
    this.fetch = (input, init) => this.request(input, init);
  }

  /** Ids of the pairs in the pool (tests assert re-pairing with them). */
  pairIds() {
    return this.pool.map((p) => p.id);
  }

  stats() {
    return { ...this.counters, clientId: this.clientId, pairs: this.pairIds() };
  }

  /** Drops every pair and the client id in memory (the stored id is kept). */
  reset() {
    this.pool = [];
    this.validated = null;
  }

  async validate(signal) {
    if (!this.validated) {
      this.validated = (async () => {
        const held = this.storage.getItem(this.storageKey);
        const headers = held ? { 'x-veil-client-id': held } : {};
        const res = await this.transport(`${this.prefix}/relay`, {
          method: 'GET',
          headers,
          cache: 'no-store',
          signal,
        });
        const refused = await refusalOf(res);
        if (refused) throw refused;
        if (res.status !== 200) throw new VeilRelayError('client-bad-discovery', `veil-relay: GET ${this.prefix}/relay answered ${res.status}`, { status: res.status });
        const body = await res.json();
        const want = 2;
        if (!body || body.version !== want || typeof body.client_id !== 'string') {
          throw new VeilRelayError('client-bad-discovery', `veil-relay: not a v${want} relay`);
        }
        this.clientId = body.client_id;
        if (Number.isInteger(body.max_pairs) && body.max_pairs >= 1) this.maxPairs = body.max_pairs;
        this.storage.setItem(this.storageKey, body.client_id);
      })();
      this.validated.catch(() => {
        this.validated = null;
      });
    }
    return this.validated;
  }

  /** `POST P/pair` for `n` fresh pairs, added to the pool (one pairing at a time). */
  async pair(n, signal) {
    if (this.pairing) return this.pairing;
    this.pairing = (async () => {
      await this.validate(signal);
      const kps = Array.from({ length: n }, () => this.keygen());
      // a secret encapsulated to the pinned key per pair, next to the ephemeral key
      const toServer = kps.map(() => encapsulate(this.serverKey.publicKey));
      const pairBody = { key_id: this.serverKey.keyId, pairs: kps.map((k, i) => ({ enc: b64urlEncode(toServer[i].ciphertext), pk: b64urlEncode(k.publicKey) })) };
      try {
        const res = await this.transport(`${this.prefix}/pair`, {
          method: 'POST',
          headers: { 'x-veil-client-id': this.clientId, 'content-type': 'application/json' },
          body: JSON.stringify(pairBody),
          cache: 'no-store',
          signal,
        });
        const refused = await refusalOf(res);
        if (refused) throw refused;
        if (res.status !== 200) throw new VeilRelayError('client-bad-pairing', `veil-relay: pairing answered ${res.status}`, { status: res.status });
        const body = await res.json();
        if (!body || !Array.isArray(body.pairs) || body.pairs.length !== n) {
          throw new VeilRelayError('client-bad-pairing', 'veil-relay: pairing answer has the wrong number of pairs');
        }
        const batch = ++this.batches;
        const fresh = [];
        for (let i = 0; i < n; i++) {
          const opened = await this.openPairV2(body.pairs[i], kps[i], toServer[i]);
          fresh.push({ ...opened, batch });
        }
        if (this.counters.pairings > 0) this.counters.repairs += 1;
        this.counters.pairings += 1;
        this.pool.push(...fresh);
        return batch;
      } finally {
        for (const k of kps) k.secretKey.fill(0);
        for (const e of toServer) e.sharedSecret.fill(0);
      }
    })();
    try {
      return await this.pairing;
    } finally {
      this.pairing = null;
    }
  }

  /**
   * v2: checks the key confirmation only the holder of the pinned key can compute; a
   * mismatch is `relay-server-auth-failed` (a hop answered in the relay's place).
   */
  async openPairV2(entry, kp, toServer) {
    const fail = (why, cause) =>
      new VeilRelayError('relay-server-auth-failed', `veil-relay: relay-server-auth-failed: ${why}`, { cause });
    if (!entry || typeof entry.pair_id !== 'string' || !/^[A-Za-z0-9_-]{22}$/.test(entry.pair_id) || !Number.isSafeInteger(entry.expires_at)) {
      throw fail('bad pairing entry');
    }
    let enc;
    let confirm;
    try {
      enc = b64urlDecode(entry.enc);
      confirm = b64urlDecode(entry.confirm);
    } catch (e) {
      throw fail('enc or confirm is not base64url', e);
    }
    if (enc.length !== CIPHERTEXT_LEN) throw fail('enc is not 1120 bytes');
    const ssE = decapsulate(enc, kp.secretKey);
    const th = await v2.transcriptHash({
      keyConfig: this.serverKey.bytes,
      clientId: this.clientId,
      pairId: entry.pair_id,
      encServer: toServer.ciphertext,
      ephemeralPk: kp.publicKey,
      encEphemeral: enc,
      expiresAt: entry.expires_at,
    });
    const k = await v2.keySchedule(toServer.sharedSecret, ssE, th);
    try {
      if (!v2.equalBytes(k.confirm, confirm)) throw fail('the key confirmation does not verify');
      return {
        id: entry.pair_id,
        c2s: await importAesKey(k.c2s, 'encrypt'),
        // Each answer's key derives from s2c and its response nonce, so s2c stays as bytes.
        s2cRaw: k.s2c,
        seq: 0,
        expiresAtMs: entry.expires_at * 1000,
        inflight: 0,
      };
    } finally {
      ssE.fill(0);
      k.secret.fill(0);
      k.c2s.fill(0);
      k.confirm.fill(0);
    }
  }

  /**
   * An idle pair if there is one (round robin), else the least busy; pairs when the pool is
   * empty. `fresh`: pair now and use a pair of that new batch (after a pair was refused).
   */
  async acquire(signal, fresh = false) {
    const now = this.now();
    // Pairs near their end of life, or whose sequence numbers are used up (the protocol's
    // 2^53 − 1), are not used for a new request.
    this.pool = this.pool.filter((p) => p.expiresAtMs - EXPIRY_MARGIN_MS > now && p.seq < Number.MAX_SAFE_INTEGER);
    const want = Math.min(this.wantPairs, this.maxPairs);
    let from = this.pool;
    if (fresh || this.pool.length === 0) {
      const batch = await this.pair(Math.max(1, want - this.pool.length), signal);
      from = this.pool.filter((p) => p.batch === batch);
    } else if (this.pool.length < want && !this.pairing) {
      // Top up in the background; the request goes on an existing pair.
      this.pair(want - this.pool.length).catch(() => {});
    }
    if (from.length === 0) throw new VeilRelayError('client-no-pair', 'veil-relay: no pair available');
    let best = null;
    for (let i = 0; i < from.length; i++) {
      const p = from[(this.next + i) % from.length];
      if (best === null || p.inflight < best.inflight) best = p;
      if (p.inflight === 0) break;
    }
    this.next = (from.indexOf(best) + 1) % from.length;
    return best;
  }

  async request(input, init) {
    // A Request gives fetch's own normalization: method case, header checks, body to bytes.
    const url = new URL(input instanceof Request ? input.url : String(input instanceof URL ? input.href : input), this.prefix + '/');
    if (url.origin !== this.origin) {
      throw new TypeError(`veil-relay: ${url.origin} is not the relay's origin ${this.origin}`);
    }
    const req = new Request(input instanceof Request ? input : url.href, init);
    const method = req.method;
    const pathAndQuery = url.pathname + url.search;
    const headers = orderedHeaders(input instanceof Request ? undefined : init, req);
    const hasBody = req.body !== null;
    const body = hasBody ? new Uint8Array(await req.arrayBuffer()) : null;
    const signal = (init && init.signal) || (input instanceof Request ? input.signal : undefined);
    const wireInit = { signal };
    for (const k of ['credentials', 'mode', 'referrer', 'referrerPolicy', 'keepalive', 'priority']) {
      if (init && init[k] !== undefined) wireInit[k] = init[k];
    }
    this.counters.requests += 1;

    let fresh = false;
    for (let attempt = 0; ; attempt++) {
      let pair = null;
      try {
        pair = await this.acquire(signal, fresh);
        return await this.send(pair, { method, pathAndQuery, headers, body, wireInit });
      } catch (e) {
        const how = e instanceof VeilRelayError ? RECOVERY[e.code] : undefined;
        if (!how || attempt >= 1) throw e;
        // A non-idempotent request is never sent twice (a hop may have let it run and
        // answered the error in the relay's place); a pair the relay did not know or could
        // not open is still dropped, so the caller's next request pairs afresh.
        if (!IDEMPOTENT.has(method)) {
          if (how === 'repair' && pair !== null) this.pool = this.pool.filter((p) => p.batch !== pair.batch);
          throw e;
        }
        this.counters.retries += 1;
        fresh = false;
        if (how === 'revalidate') {
          // Pairs are bound to the client id: a new id needs new pairs.
          this.counters.revalidations += 1;
          this.validated = null;
          this.pool = [];
        } else if (how === 'repair' && pair !== null) {
          // The pairs of one pairing share their fate (expiry, a keyservice that lost them).
          this.pool = this.pool.filter((p) => p.batch !== pair.batch);
          this.counters.dropped += 1;
          fresh = true;
        }
      }
    }
  }

  async send(pair, request) {
    return this.sendV2(pair, request);
  }

  async sendV2(pair, { method, pathAndQuery, headers, body, wireInit }) {
    pair.inflight += 1;
    try {
      const seq = ++pair.seq;
      const flags = body === null ? 'uh' : 'uhb';
      const ctx = { pairId: pair.id, seq, method, scheme: this.scheme, authority: this.authority, flags };
      const seal = async (part, m) =>
        new Uint8Array(
          await globalThis.crypto.subtle.encrypt(
            { name: 'AES-GCM', iv: v2.requestNonce(part, seq), additionalData: v2.requestAd(ctx, part), tagLength: 128 },
            pair.c2s,
            m,
          ),
        );
      const path = await seal(Part.RequestUrl, encodeUtf8(pathAndQuery));
      const eh = await seal(Part.RequestHeaders, encodeHeaders(headers));
      const binding = v2.requestBinding(path, eh);
      const wireHeaders = {
        'x-veil-relay': v2.requestControl({ clientId: this.clientId, pairId: pair.id, seq, flags }),
        'x-veil-relay-eh': b64urlEncode(eh),
      };
      let wireBody;
      if (body !== null) {
        wireHeaders['content-type'] = 'application/octet-stream';
        wireBody = await seal(Part.RequestBody, body);
      }
      const res = await this.transport(`${this.prefix}/x/${b64urlEncode(path)}`, {
        ...wireInit,
        method,
        headers: wireHeaders,
        body: wireBody,
      });
      return await this.decodeResponseV2(res, pair, { seq, method, binding });
    } finally {
      pair.inflight -= 1;
    }
  }

  /** v2: every answer on this pair opens under its own key and this request's binding. */
  async decodeResponseV2(res, pair, req) {
    const control = res.headers.get('x-veil-relay');
    if (control === null) {
      // at best a refusal the relay could not authenticate (or a hop's)
      const refused = await refusalOf(res);
      if (refused) throw refused;
      throw new VeilRelayError('client-response-not-encoded', `veil-relay: answer ${res.status} is not encoded`, { status: res.status });
    }
    const c = v2.parseResponseControl(control);
    if (c === null || c.pairId !== pair.id || c.seq !== req.seq) {
      throw new VeilRelayError('client-response-mismatch', 'veil-relay: the answer is for another request', { status: res.status });
    }
    const k = await v2.answerKeyBytes(pair.s2cRaw, c.responseNonce);
    const key = await importAesKey(k.key, 'decrypt');
    k.key.fill(0);
    k.rs.fill(0);
    const open = async (part, sealed) =>
      new Uint8Array(
        await globalThis.crypto.subtle.decrypt(
          {
            name: 'AES-GCM',
            iv: v2.answerNonce(k.baseNonce, part),
            additionalData: v2.answerAd({ pairId: pair.id, seq: req.seq, flags: c.flags, status: res.status, binding: req.binding }, part),
            tagLength: 128,
          },
          key,
          sealed,
        ),
      );
    let sealed;
    let bodyBytes = null;
    try {
      const eh = b64urlDecode(res.headers.get('x-veil-relay-eh') ?? '');
      if (c.flags === 'e') {
        const code = new TextDecoder('utf-8', { fatal: true }).decode(await open(v2.Part.Error, eh));
        const refused = await refusalOf(res);
        sealed = { code, problem: refused ? refused.problem : null };
      } else {
        sealed = decodeHeaders(await open(Part.ResponseHeaders, eh));
        const wire = new Uint8Array(await res.arrayBuffer());
        if (c.flags === 'hb') bodyBytes = await open(Part.ResponseBody, wire);
        else if (wire.length !== 0) throw new TypeError('a body without the b flag');
      }
    } catch (e) {
      throw new VeilRelayError('client-response-decode-failed', 'veil-relay: the answer does not open', { status: res.status, cause: e });
    }
    if (c.flags === 'e') {
      throw new VeilRelayError(sealed.code, `veil-relay: ${sealed.code} (${res.status}, authenticated)`, {
        status: res.status,
        problem: sealed.problem,
        authenticated: true,
      });
    }
    return this.rebuild(res, sealed, bodyBytes, req.method);
  }

  /** The upstream's response: visible wire headers, then the sealed ones, and the body. */
  rebuild(res, sealed, bodyBytes, method) {
    const out = new Headers();
    for (const [n, v] of res.headers) {
      // The wire's own content headers describe the ciphertext.
      if (n.startsWith('x-veil-') || n === 'content-type' || n === 'content-length' || n === 'content-encoding') continue;
      out.append(n, v);
    }
    for (const [n, v] of sealed) {
      try {
        out.append(n, v);
      } catch {
        // A header a Response may not carry (e.g. set-cookie in some engines) is left out.
      }
    }
    const nullBody = NULL_BODY_STATUS.has(res.status) || method === 'HEAD';
    return new Response(nullBody ? null : bodyBytes ?? new Uint8Array(0), {
      status: res.status,
      statusText: res.statusText,
      headers: out,
    });
  }
}

/**
 * A relay client for the relay prefix `options.url` (default: `/veil` where this module came
 * from), pinned to `options.serverKey` (required).
 */
export function createRelay(options) {
  return new Relay(options);
}

let shared = null;

/**
 * `fetch` through the default relay (`/veil` on the origin that served this module), pinned
 * to `globalThis.veilRelayServerKey`, which the page sets from its own origin before the
 * first call (a page that creates its own relay uses `createRelay({ serverKey })`).
 */
export function relayFetch(input, init) {
  if (shared === null) shared = createRelay({ serverKey: globalThis.veilRelayServerKey });
  return shared.fetch(input, init);
}

export default relayFetch;
