// The committed bundle (what the filter embeds) is the build of src/, and its published
// integrity hash is the SHA-384 of those exact bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { bundle } from '../build.mjs';

const dist = new URL('../dist/', import.meta.url);

test('dist/veil-relay.js equals a fresh esbuild of src/ (run `npm run build` and commit dist/)', async () => {
  const { js, integrity } = await bundle();
  const committed = readFileSync(new URL('veil-relay.js', dist));
  assert.ok(Buffer.compare(committed, js) === 0, 'dist/veil-relay.js is stale');
  assert.equal(readFileSync(new URL('veil-relay.integrity', dist), 'utf8'), integrity);
});

test('dist/veil-relay.integrity is sha384 of dist/veil-relay.js', () => {
  const js = readFileSync(new URL('veil-relay.js', dist));
  const want = 'sha384-' + createHash('sha384').update(js).digest('base64');
  assert.equal(readFileSync(new URL('veil-relay.integrity', dist), 'utf8'), want);
});

test('the bundle is a self-contained ES module exporting the client', async () => {
  const js = readFileSync(new URL('veil-relay.js', dist), 'utf8');
  assert.ok(!/(^|[;}\n])\s*import\s*[{*"'a-zA-Z]/.test(js) && !/\bimport\s*\(/.test(js), 'the bundle imports nothing');
  const mod = await import('data:text/javascript;base64,' + Buffer.from(js).toString('base64'));
  assert.equal(typeof mod.createRelay, 'function');
  assert.equal(typeof mod.relayFetch, 'function');
  assert.equal(mod.default, mod.relayFetch);
  assert.equal(new mod.VeilRelayError('relay-replay', 'x').code, 'relay-replay');
});

test('docs/relay-browser.md publishes the current integrity value', () => {
  const integrity = readFileSync(new URL('veil-relay.integrity', dist), 'utf8');
  const doc = readFileSync(new URL('../../../docs/relay-browser.md', import.meta.url), 'utf8');
  const published = [...doc.matchAll(/sha384-[A-Za-z0-9+/=]{64}/g)].map((m) => m[0]);
  assert.ok(published.length >= 1, 'the doc states an integrity value');
  for (const p of published) assert.equal(p, integrity, 'docs/relay-browser.md states a stale integrity value');
});
