// The JavaScript side of the planResponse bench (benches/benches/wasm_plan.rs runs it and the
// native side in one run): nanoseconds per planResponse call, median of several batches, and
// the size of the optimised module. Prints one JSON line.
import { statSync } from "node:fs";

import { planResponse } from "../../pkg/index.js";

// The same request and object as the native side.
export const request = {
  method: "GET",
  headers: {
    host: "edge.example",
    "user-agent": "rangecache-bench/1",
    accept: "*/*",
    range: "bytes=1048576-2097151",
    "if-range": '"5d41402abc4b2a76b9719d911017c592"',
  },
};
export const object = {
  size: 1 << 30,
  etag: '"5d41402abc4b2a76b9719d911017c592"',
  lastModified: "Tue, 14 Nov 2023 22:13:20 GMT",
  headers: { "cache-control": "max-age=3600", "content-type": "application/octet-stream" },
};

const batches = Number(process.env.BATCHES ?? 7);
const perBatch = Number(process.env.PER_BATCH ?? 50_000);
let sink = 0;
for (let i = 0; i < perBatch; i++) sink += planResponse(request, object).status;
const samples = [];
for (let b = 0; b < batches; b++) {
  const started = process.hrtime.bigint();
  for (let i = 0; i < perBatch; i++) sink += planResponse(request, object).status;
  samples.push(Number(process.hrtime.bigint() - started) / perBatch);
}
samples.sort((a, b) => a - b);
const wasmBytes = statSync(new URL("../../pkg/rangecache_wasm_bg.wasm", import.meta.url)).size;
const plan = planResponse(request, object);
console.log(
  JSON.stringify({ nsPerCall: samples[samples.length >> 1], samples, wasmBytes, status: plan.status, sink: sink > 0 }),
);
