// Runs the wasm32-wasip1 build of veil-wasm-seal-bench in Node's V8 (WASI preview1).
//   node bench/wasm-seal/run-node.mjs PATH.wasm [case-filter]
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [, , wasmPath, ...rest] = process.argv;
if (!wasmPath) {
  console.error('usage: node run-node.mjs PATH.wasm [case-filter]');
  process.exit(2);
}
const wasi = new WASI({ version: 'preview1', args: ['veil-wasm-seal-bench', ...rest], env: {} });
const module = await WebAssembly.compile(await readFile(wasmPath));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
wasi.start(instance);
