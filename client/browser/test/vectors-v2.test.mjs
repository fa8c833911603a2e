// Interop: the browser's v2 wire functions (src/wire-v2.js) reproduce
// core/tests/vectors/relay-v2.json — written by an independent Python generator and
// reproduced by the Rust core too — byte for byte: key configuration, both X-Wing
// encapsulations, transcript, key schedule and confirmation, every part's nonce, AD and
// sealed bytes, request bindings and each answer's key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { generateKeyPair, decapsulate, encapsulate } from '../src/kem.js';
import { b64urlEncode } from '../src/wire.js';
import {
  LABEL, SUITE_ID, parseKeyConfig, transcriptInput, transcriptHash, keySchedule, equalBytes, requestAd,
  requestNonce, answerAd, requestBinding, answerKeyBytes, answerNonce, requestControl, parseResponseControl,
} from '../src/wire-v2.js';

const v = JSON.parse(readFileSync(new URL('../../../core/tests/vectors/relay-v2.json', import.meta.url)));
const hex = (s) => Uint8Array.from(Buffer.from(s, 'hex'));
const toHex = (b) => Buffer.from(b).toString('hex');
const aes = async (raw, usage) => crypto.subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, [usage]);
const seal = async (raw, iv, ad, pt) =>
  new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: ad }, await aes(raw, 'encrypt'), pt));
const open = async (raw, iv, ad, ct) =>
  new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv, additionalData: ad }, await aes(raw, 'decrypt'), ct));

test('relay-v2 vectors: key configuration', () => {
  assert.equal(new TextDecoder().decode(LABEL), v.label);
  assert.equal(toHex(SUITE_ID), v.suite_id_hex);
  const server = generateKeyPair(hex(v.server_key.seed_hex));
  assert.equal(toHex(server.publicKey), v.server_key.public_key_hex);
  const c = parseKeyConfig(v.server_key.key_config_b64url);
  assert.equal(c.keyId, v.server_key.key_id);
  assert.equal(toHex(c.publicKey), v.server_key.public_key_hex);
  assert.equal(toHex(c.bytes), v.server_key.key_config_hex);
  // another KEM, a missing suite, a wrong length: refused
  const bad = hex(v.server_key.key_config_hex);
  bad[2] ^= 1;
  assert.throws(() => parseKeyConfig(bad));
  const noSuite = hex(v.server_key.key_config_hex);
  noSuite[noSuite.length - 1] = 1;
  assert.throws(() => parseKeyConfig(noSuite));
  assert.throws(() => parseKeyConfig(hex(v.server_key.key_config_hex + '00')));
});

test('relay-v2 vectors: pairing, key schedule and confirmation', async () => {
  const p = v.pairing;
  const config = parseKeyConfig(v.server_key.key_config_b64url);
  const toServer = encapsulate(config.publicKey, hex(p.client_eseed_hex));
  assert.equal(toHex(toServer.ciphertext), p.enc_server_hex);
  assert.equal(toHex(toServer.sharedSecret), p.ss_server_hex);
  const eph = generateKeyPair(hex(p.ephemeral_seed_hex));
  assert.equal(toHex(eph.publicKey), p.ephemeral_pk_hex);
  assert.equal(
    p.request_body,
    JSON.stringify({ key_id: config.keyId, pairs: [{ enc: b64urlEncode(toServer.ciphertext), pk: b64urlEncode(eph.publicKey) }] }),
  );
  const answer = JSON.parse(p.answer_body).pairs[0];
  assert.equal(answer.enc, b64urlEncode(hex(p.enc_ephemeral_hex)));
  const ssE = decapsulate(hex(p.enc_ephemeral_hex), eph.secretKey);
  assert.equal(toHex(ssE), p.ss_ephemeral_hex);
  const t = {
    keyConfig: config.bytes,
    clientId: v.client_id.client_id,
    pairId: answer.pair_id,
    encServer: toServer.ciphertext,
    ephemeralPk: eph.publicKey,
    encEphemeral: hex(p.enc_ephemeral_hex),
    expiresAt: answer.expires_at,
  };
  assert.equal(toHex(transcriptInput(t)), p.th_input_hex);
  const th = await transcriptHash(t);
  assert.equal(toHex(th), p.th_hex);
  const k = await keySchedule(toServer.sharedSecret, ssE, th);
  assert.equal(toHex(k.secret), p.secret_hex);
  assert.equal(toHex(k.c2s), p.c2s_hex);
  assert.equal(toHex(k.s2c), p.s2c_hex);
  assert.equal(toHex(k.confirm), p.confirm_hex);
  assert.ok(equalBytes(k.confirm, Buffer.from(answer.confirm, 'base64url')));
  assert.ok(!equalBytes(k.confirm, hex(p.mitm_confirm_hex)));
});

test('relay-v2 vectors: every request part, binding and answer', async () => {
  const c2s = hex(v.pairing.c2s_hex);
  const s2c = hex(v.pairing.s2c_hex);
  const pairId = v.pairing.pair_id;
  let answers = 0;
  for (const ex of v.exchanges) {
    const flags = ex.request.flags;
    assert.equal(requestControl({ clientId: v.client_id.client_id, pairId, seq: ex.seq, flags }), ex.request['x-veil-relay']);
    const sealed = [];
    for (const p of ex.request.parts) {
      const ctx = { pairId, seq: ex.seq, method: ex.method, scheme: ex.scheme, authority: ex.authority, flags };
      const iv = requestNonce(p.part, ex.seq);
      const ad = requestAd(ctx, p.part);
      assert.equal(toHex(iv), p.nonce_hex, `${ex.name} part ${p.part} nonce`);
      assert.equal(toHex(ad), p.ad_hex, `${ex.name} part ${p.part} ad`);
      const s = await seal(c2s, iv, ad, hex(p.plaintext_hex));
      assert.equal(toHex(s), p.sealed_hex, `${ex.name} part ${p.part}`);
      sealed.push(s);
    }
    assert.equal(ex.request[':path'], `${v.prefix}/x/${b64urlEncode(sealed[0])}`);
    const binding = requestBinding(sealed[0], sealed[1]);
    assert.equal(toHex(binding), ex.request_binding_hex, ex.name);
    const outs = [];
    for (const a of [ex.answer, ex.answer_again].filter(Boolean)) {
      const rc = parseResponseControl(a['x-veil-relay']);
      assert.ok(rc, a['x-veil-relay']);
      assert.deepEqual([rc.pairId, rc.seq, rc.flags, toHex(rc.responseNonce)], [pairId, ex.seq, a.flags, a.response_nonce_hex]);
      const k = await answerKeyBytes(s2c, rc.responseNonce);
      assert.equal(toHex(k.rs), a.response_secret_hex);
      assert.equal(toHex(k.key), a.answer_key_hex);
      assert.equal(toHex(k.baseNonce), a.base_nonce_hex);
      for (const p of a.parts) {
        const iv = answerNonce(k.baseNonce, p.part);
        const ad = answerAd({ pairId, seq: ex.seq, flags: rc.flags, status: a.status, binding }, p.part);
        assert.equal(toHex(iv), p.nonce_hex, `${ex.name} answer part ${p.part} nonce`);
        assert.equal(toHex(ad), p.ad_hex, `${ex.name} answer part ${p.part} ad`);
        assert.equal(toHex(await open(k.key, iv, ad, hex(p.sealed_hex))), p.plaintext_hex);
        outs.push(p.sealed_hex);
      }
      answers++;
    }
    if (ex.answer_again) assert.notEqual(outs[0], outs[ex.answer.parts.length], 'a second answer differs');
  }
  assert.equal(answers, v.exchanges.length + 1);
  assert.equal(parseResponseControl('v1,AAAAAAAAAAAAAAAAAAAAAA,1,h'), null);
});
