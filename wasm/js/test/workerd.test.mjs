// The module-worker entry (`workerd.js`, chosen by the "workerd" and "worker" conditions) run in
// a child Node process whose `.wasm` imports yield a WebAssembly.Module, as in workerd.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";

test("the module-worker entry initialises itself from its .wasm import", () => {
  const hooks = new URL("./wasm-module-hooks.mjs", import.meta.url).href;
  const register = `data:text/javascript,import{register}from"node:module";register(${JSON.stringify(hooks)});`;
  const entry = new URL("../../pkg/workerd.js", import.meta.url).href;
  const script = `
    const { planResponse, resolveRange, BackfillManager } = await import(${JSON.stringify(entry)});
    const plan = planResponse({ method: "GET", headers: { range: "bytes=0-9" } }, { size: 100, etag: '"w"' });
    const manager = new BackfillManager();
    console.log(JSON.stringify({ plan, range: resolveRange("bytes=-1", 5), idle: manager.pollOutput() }));
  `;
  const out = execFileSync(process.execPath, ["--no-warnings", "--import", register, "--input-type=module", "-e", script], {
    encoding: "utf8",
  });
  const { plan, range, idle } = JSON.parse(out);
  assert.equal(plan.status, 206);
  assert.equal(plan.headers["content-range"], "bytes 0-9/100");
  assert.deepEqual(plan.body, { kind: "range", start: 0, end: 10 });
  assert.deepEqual(range, { kind: "partial", ranges: [{ start: 4, end: 5 }] });
  assert.equal(idle, null);
});
