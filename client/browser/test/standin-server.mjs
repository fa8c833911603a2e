// A TEST DOUBLE of the filter + keyservice side of Veil Relay v1, written from
// docs/relay-protocol.md with node:crypto (not WebCrypto and not src/wire.js), so the client
// is checked against a second, independent reading of the protocol. It answers the client's
// `fetch` calls in process; `handler(req)` plays the upstream. Knobs let tests inject the
// refusals of the protocol's error table.
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import { ml_kem768_x25519 as xwing } from '@noble/post-quantum/hybrid.js';

const LABEL = 'veil-relay/v1';
const SECRET = Buffer.from('stand-in client id secret, 32+ bytes long!!');
const VISIBLE = new Set(['set-cookie', 'date', 'server', 'vary', 'cache-control', 'strict-transport-security', 'x-request-id']);
const FORBIDDEN = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'upgrade', 'proxy-connection', 'origin', 'referer']);

const b64 = (b) => Buffer.from(b).toString('base64url');
const unb64 = (s) => Buffer.from(s, 'base64url');

function issueId() {
  const uuid = randomUUID();
  return `${uuid}.${createHmac('sha256', SECRET).update(uuid).digest('hex')}`;
}
function validId(id) {
  if (typeof id !== 'string') return false;
  const [uuid, mac, extra] = id.split('.');
  return extra === undefined && /^[0-9a-f-]{36}$/.test(uuid ?? '') && mac === createHmac('sha256', SECRET).update(uuid).digest('hex');
}

function nonce(part, seq) {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(part, 0);
  n.writeBigUInt64BE(BigInt(seq), 4);
  return n;
}
function ad(pairId, seq, method, flags, part, status) {
  let s = Buffer.concat([Buffer.from(`${LABEL}\0${pairId}\0${seq}\0${method}\0${flags}\0`), Buffer.from([part])]);
  if (status !== undefined) s = Buffer.concat([s, Buffer.from(`\0${String(status).padStart(3, '0')}`)]);
  return s;
}
function seal(key, part, seq, a, pt) {
  const c = createCipheriv('aes-256-gcm', key, nonce(part, seq));
  c.setAAD(a);
  return Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
}
function open(key, part, seq, a, ct) {
  const d = createDecipheriv('aes-256-gcm', key, nonce(part, seq));
  d.setAAD(a);
  d.setAuthTag(ct.subarray(ct.length - 16));
  return Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]);
}

function problem(code, status) {
  return new Response(JSON.stringify({ type: 'about:blank', title: code, status, code }), {
    status,
    headers: { 'content-type': 'application/problem+json', 'x-veil-relay-error': code },
  });
}

export class StandIn {
  constructor(handler, { maxPairs = 5 } = {}) {
    this.handler = handler;
    this.maxPairs = maxPairs;
    this.pairs = new Map(); // pair_id -> {clientId, c2s, s2c, seen:Set}
    this.inject = []; // refusal codes to answer the next encoded requests with, in order
    this.log = []; // every wire request: {method, url, headers, body}
    this.tamper = null; // (res parts) => void, to corrupt an answer
  }

  /** Forgets every pair (a keyservice restart with a memory store). */
  forgetPairs() {
    this.pairs.clear();
  }

  fetch = async (url, init = {}) => {
    const u = new URL(url);
    const headers = new Headers(init.headers);
    const body = init.body === undefined || init.body === null ? null : Buffer.from(await new Response(init.body).arrayBuffer());
    const method = init.method ?? 'GET';
    this.log.push({ method, url: u.href, headers: [...headers], body });
    if (u.pathname === '/veil/relay') {
      const held = headers.get('x-veil-client-id');
      const id = validId(held) ? held : issueId();
      return new Response(JSON.stringify({ version: 1, client_id: id, max_pairs: this.maxPairs }), {
        headers: { 'content-type': 'application/json', 'x-veil-client-id': id, 'cache-control': 'no-store' },
      });
    }
    if (u.pathname === '/veil/pair' && method === 'POST') {
      const clientId = headers.get('x-veil-client-id');
      if (!validId(clientId)) return problem('relay-bad-client-id', 401);
      const { keys } = JSON.parse(body.toString());
      if (!Array.isArray(keys) || keys.length < 1 || keys.length > this.maxPairs) return problem('relay-bad-request', 400);
      const pairs = keys.map((k) => {
        const pk = unb64(k);
        const { cipherText: ct, sharedSecret: ss } = xwing.encapsulate(pk);
        const pairId = b64(randomBytes(16));
        const th = createHash('sha256')
          .update(Buffer.concat([Buffer.from(`${LABEL}/pair\0${clientId}\0${pairId}\0`), pk, ct]))
          .digest();
        const c2s = Buffer.from(hkdfSync('sha256', ss, th, `${LABEL} c2s`, 32));
        const s2c = Buffer.from(hkdfSync('sha256', ss, th, `${LABEL} s2c`, 32));
        this.pairs.set(pairId, { clientId, c2s, s2c, seen: new Set() });
        return { pair_id: pairId, ciphertext: b64(ct), expires_at: Math.floor(Date.now() / 1000) + 3600 };
      });
      return new Response(JSON.stringify({ pairs }), { headers: { 'content-type': 'application/json' } });
    }
    if (u.pathname.startsWith('/veil/x/')) return this.encoded(method, u, headers, body);
    return new Response('not found', { status: 404 });
  };

  async encoded(method, u, headers, body) {
    const ctl = (headers.get('x-veil-relay') ?? '').split(',');
    if (ctl.length !== 5 || ctl[0] !== 'v1' || !['uh', 'uhb'].includes(ctl[4]) || !/^[1-9][0-9]*$/.test(ctl[3])) {
      return problem('relay-bad-request', 400);
    }
    const [, clientId, pairId, seqText, flags] = ctl;
    const seq = Number(seqText);
    const injected = this.inject.shift();
    if (injected) return problem(injected, { 'relay-pair-unknown': 401, 'relay-bad-client-id': 401, 'relay-replay': 409, 'relay-decode-failed': 400, 'relay-unavailable': 503, 'relay-route-not-allowed': 404, 'relay-too-large': 413 }[injected]);
    if (!validId(clientId)) return problem('relay-bad-client-id', 401);
    const pair = this.pairs.get(pairId);
    if (!pair || pair.clientId !== clientId) return problem('relay-pair-unknown', 401);
    if (pair.seen.has(seq)) return problem('relay-replay', 409);
    pair.seen.add(seq);
    let path, reqHeaders, reqBody;
    try {
      path = open(pair.c2s, 1, seq, ad(pairId, seq, method, flags, 1), unb64(u.pathname.slice('/veil/x/'.length))).toString();
      reqHeaders = JSON.parse(open(pair.c2s, 2, seq, ad(pairId, seq, method, flags, 2), unb64(headers.get('x-veil-relay-eh') ?? '')).toString());
      if (reqHeaders.some(([n]) => n !== n.toLowerCase() || n.startsWith(':') || n.startsWith('x-veil-') || n.startsWith('sec-') || FORBIDDEN.has(n))) throw new Error('header');
      if (flags === 'uhb') {
        if (headers.get('content-type') !== 'application/octet-stream') throw new Error('content-type');
        reqBody = open(pair.c2s, 3, seq, ad(pairId, seq, method, flags, 3), body ?? Buffer.alloc(0));
      } else if (body !== null && body.length > 0) throw new Error('body without b');
    } catch {
      return problem('relay-decode-failed', 400);
    }
    const up = await this.handler({ method, path, headers: reqHeaders, body: reqBody ?? null });
    const visible = [];
    const sealed = [];
    for (const [n, v] of up.headers ?? []) (VISIBLE.has(n) || n.startsWith('access-control-') ? visible : sealed).push([n, v]);
    const rflags = up.body === null || up.body === undefined ? 'h' : 'hb';
    const st = up.status ?? 200;
    const parts = {
      eh: seal(pair.s2c, 4, seq, ad(pairId, seq, method, rflags, 4, st), Buffer.from(JSON.stringify(sealed))),
      body: rflags === 'hb' ? seal(pair.s2c, 5, seq, ad(pairId, seq, method, rflags, 5, st), Buffer.from(up.body)) : null,
      control: `v1,${pairId},${seq},${rflags}`,
    };
    if (this.tamper) this.tamper(parts);
    const out = new Headers(visible);
    out.set('x-veil-relay', parts.control);
    out.set('x-veil-relay-eh', b64(parts.eh));
    out.set('content-type', 'application/octet-stream');
    return new Response(parts.body, { status: st, headers: out });
  }
}
