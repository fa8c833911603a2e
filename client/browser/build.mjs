// Bundles src/veil-relay.js (with @noble/post-quantum) into dist/veil-relay.js, the file the
// filter embeds and serves at /public/veil-relay.js, and writes its subresource-integrity
// hash to dist/veil-relay.integrity (the filter's etag and x-veil-integrity come from it)
// and into docs/relay-browser.md.
//   node build.mjs          build and write dist/
//   node build.mjs --check  build in memory; fail if dist/ differs (the committed bundle is stale)
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'dist/veil-relay.js');
const sriOut = join(here, 'dist/veil-relay.integrity');
// The usage doc states the current integrity value for `<script integrity>`; the build keeps it current.
const doc = join(here, '../../docs/relay-browser.md');

export async function bundle() {
  const r = await build({
    entryPoints: [join(here, 'src/veil-relay.js')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2022'],
    minify: true,
    legalComments: 'eof',
    charset: 'utf8',
    write: false,
    logLevel: 'warning',
  });
  const js = Buffer.from(r.outputFiles[0].contents);
  const integrity = 'sha384-' + createHash('sha384').update(js).digest('base64');
  return { js, integrity };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { js, integrity } = await bundle();
  if (process.argv.includes('--check')) {
    const same = (p, want) => {
      try {
        return Buffer.compare(readFileSync(p), want) === 0;
      } catch {
        return false;
      }
    };
    if (!same(out, js) || !same(sriOut, Buffer.from(integrity))) {
      console.error('client/browser/dist is not the build of src/: run `npm run build` there and commit dist/');
      process.exit(1);
    }
    console.log(`dist/veil-relay.js is current (${js.length} bytes, ${integrity})`);
  } else {
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, js);
    writeFileSync(sriOut, integrity);
    try {
      const text = readFileSync(doc, 'utf8');
      writeFileSync(doc, text.replace(/sha384-[A-Za-z0-9+/=]{64}/g, integrity));
    } catch {
      /* no doc next to this checkout: nothing to update */
    }
    console.log(`dist/veil-relay.js: ${js.length} bytes, ${integrity}`);
  }
}
