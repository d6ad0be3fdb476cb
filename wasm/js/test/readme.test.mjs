// The twenty-line worker of wasm/README.md, run as written: its code block is copied into the
// package (where "rangecache-wasm" resolves to the package itself) and served from a store.
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { after, test } from "node:test";

import { objectKey } from "../../pkg/index.js";

const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
const example = blocks.find((code) => code.includes("export default"));
const file = new URL("../../pkg/readme-example.mjs", import.meta.url);
writeFileSync(file, example);
after(() => rmSync(file, { force: true }));
const { default: worker } = await import(file.href);

const body = new TextEncoder().encode("0123456789".repeat(10));
const meta = {
  size: body.length,
  etag: '"r1"',
  lastModified: "Tue, 14 Nov 2023 22:13:20 GMT",
  headers: { "content-type": "text/plain" },
};
const entries = new Map([[objectKey("docs", "numbers"), { meta, body }]]);
const env = { STORE: { get: async (key) => entries.get(key) ?? null } };

function request(headers = {}, method = "GET", path = "/docs/numbers") {
  return new Request(`http://edge.test${path}`, { method, headers });
}

test("the README worker is at most twenty lines", () => {
  assert.ok(example.trimEnd().split("\n").length <= 20, example);
});

test("the README worker serves whole objects, ranges, multipart, HEAD and conditionals", async () => {
  const whole = await worker.fetch(request(), env);
  assert.equal(whole.status, 200);
  assert.equal(whole.headers.get("content-type"), "text/plain");
  assert.deepEqual(new Uint8Array(await whole.arrayBuffer()), body);

  const range = await worker.fetch(request({ range: "bytes=10-19" }), env);
  assert.equal(range.status, 206);
  assert.equal(range.headers.get("content-range"), "bytes 10-19/100");
  assert.equal(await range.text(), "0123456789");

  const multi = await worker.fetch(request({ range: "bytes=0-0,-1" }), env);
  assert.equal(multi.status, 206);
  const text = await multi.text();
  assert.equal(text.length, Number(multi.headers.get("content-length")));
  assert.match(text, /Content-Range: bytes 0-0\/100\r\n\r\n0\r\n--.*\r\nContent-Type: text\/plain\r\nContent-Range: bytes 99-99\/100\r\n\r\n9\r\n/);

  const head = await worker.fetch(request({}, "HEAD"), env);
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-length"), "100");
  assert.equal(await head.text(), "");

  assert.equal((await worker.fetch(request({ "if-none-match": '"r1"' }), env)).status, 304);
  assert.equal((await worker.fetch(request({ range: "bytes=500-" }), env)).status, 416);
  assert.equal((await worker.fetch(request({}, "GET", "/docs/absent"), env)).status, 404);
  assert.equal((await worker.fetch(request({}, "GET", "/_bad/numbers"), env)).status, 404);
});
