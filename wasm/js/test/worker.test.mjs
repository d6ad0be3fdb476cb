// The edge worker against a real origin (a Node HTTP server on 127.0.0.1) and an in-memory
// edge store. The origin can hold back the rest of a body after its first bytes, which lets the
// tests tell "served at once" from "served after the whole object arrived" without timing.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import http from "node:http";
import { after, before, test } from "node:test";

// A worker that never finishes its background work fails the test instead of hanging it.
const limits = { timeout: 30_000 };

import { objectKey } from "../../pkg/index.js";
import worker from "../../pkg/worker.mjs";

/** The origin: objects by path, a count of GETs per path, and optional held-back bodies. */
class Origin {
  constructor() {
    this.objects = new Map();
    this.gets = new Map();
    this.server = http.createServer((req, res) => this.serve(req, res));
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
  }

  async stop() {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  /** Serves `body` at `path`; with `holdAfter`, only that many bytes until `release()`; with
   * `expires`, a `rangecache-expires` field, as a rangecache origin names its object's expiry. */
  put(path, body, { etag, holdAfter, expires } = {}) {
    const object = {
      body,
      etag,
      expires,
      lastModified: new Date(Date.UTC(2024, 0, 1)).toUTCString(),
      closedEarly: null,
    };
    let released = Promise.resolve();
    if (holdAfter !== undefined) {
      released = new Promise((resolve) => (object.release = resolve));
    }
    object.hold = holdAfter === undefined ? null : { after: holdAfter, released };
    object.earlyClose = new Promise((resolve) => (object.closedEarly = resolve));
    this.objects.set(path, object);
    return object;
  }

  async serve(req, res) {
    if (req.method === "GET") this.gets.set(req.url, (this.gets.get(req.url) ?? 0) + 1);
    const object = this.objects.get(req.url);
    if (!object) {
      res.writeHead(404, { "content-length": "0" }).end();
      return;
    }
    const headers = {
      "content-length": String(object.body.length),
      "last-modified": object.lastModified,
      "content-type": "application/octet-stream",
    };
    if (object.etag) headers.etag = object.etag;
    if (object.expires) headers["rangecache-expires"] = object.expires;
    res.writeHead(200, headers);
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    res.on("close", () => {
      if (!res.writableFinished) object.closedEarly();
    });
    if (!object.hold) {
      res.end(object.body);
      return;
    }
    res.write(object.body.subarray(0, object.hold.after));
    await object.hold.released;
    if (!res.destroyed) res.end(object.body.subarray(object.hold.after));
  }
}

/** The edge store: a map, counting puts. */
class MemoryStore {
  constructor() {
    this.map = new Map();
    this.puts = 0;
  }
  async get(key) {
    return this.map.get(key) ?? null;
  }
  async put(key, value) {
    this.puts += 1;
    this.map.set(key, value);
  }
  async delete(key) {
    this.map.delete(key);
  }
}

/** A worker's execution context whose background work a test can wait for. */
function context() {
  const pending = [];
  return {
    waitUntil(promise) {
      pending.push(promise);
    },
    async settled() {
      while (pending.length > 0) await Promise.all(pending.splice(0));
    },
  };
}

const origin = new Origin();
before(() => origin.start());
after(() => origin.stop());

function get(path, headers = {}, method = "GET") {
  return new Request(`http://edge.test${path}`, { method, headers });
}

async function bytes(response) {
  return new Uint8Array(await response.arrayBuffer());
}

test("a cold ranged read is served at once and the store holds the whole object afterwards", limits, async () => {
  const body = randomBytes(256 * 1024);
  const object = origin.put("/ns/cold-range", body, { etag: '"c1"', holdAfter: 64 * 1024 });
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();

  const response = await worker.fetch(get("/ns/cold-range", { range: "bytes=100-1099" }), env, ctx);
  assert.equal(response.status, 206);
  assert.equal(response.headers.get("content-range"), `bytes 100-1099/${body.length}`);
  assert.equal(response.headers.get("content-length"), "1000");
  assert.equal(response.headers.get("etag"), '"c1"');
  // The whole range arrived while the origin still holds back three quarters of the object.
  assert.deepEqual(await bytes(response), new Uint8Array(body.subarray(100, 1100)));
  assert.equal(store.map.size, 0, "no fragment is stored");

  object.release();
  await ctx.settled();
  const stored = store.map.get(objectKey("ns", "cold-range"));
  assert.ok(stored, "the background copy filled the store");
  assert.deepEqual(stored.body, new Uint8Array(body));
  assert.equal(stored.meta.etag, '"c1"');
  assert.equal(stored.meta.size, body.length);

  // The next read is a hit: no further origin fetch.
  const hit = await worker.fetch(get("/ns/cold-range", { range: "bytes=-10" }), env, context());
  assert.equal(hit.status, 206);
  assert.deepEqual(await bytes(hit), new Uint8Array(body.subarray(body.length - 10)));
  assert.equal(origin.gets.get("/ns/cold-range"), 1);
});

test("twenty concurrent cold ranged reads make one origin fetch", limits, async () => {
  const body = randomBytes(512 * 1024);
  const object = origin.put("/ns/crowd", body, { etag: '"crowd"', holdAfter: 1000 });
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();

  const ranges = Array.from({ length: 20 }, (_, i) => [i * 20_000, i * 20_000 + 9_999]);
  // Every request is answered (status and headers) before the origin sends more than its first
  // 1000 bytes, so all twenty were misses while the first fetch was running.
  const responses = await Promise.all(
    ranges.map(([first, last]) => worker.fetch(get("/ns/crowd", { range: `bytes=${first}-${last}` }), env, ctx)),
  );
  object.release();
  for (const [i, response] of responses.entries()) {
    const [first, last] = ranges[i];
    assert.equal(response.status, 206);
    assert.deepEqual(await bytes(response), new Uint8Array(body.subarray(first, last + 1)));
  }
  await ctx.settled();
  assert.equal(origin.gets.get("/ns/crowd"), 1, "one origin fetch for twenty misses");
  assert.equal(store.puts, 1);
  assert.deepEqual(store.map.get(objectKey("ns", "crowd")).body, new Uint8Array(body));
});

test("a full read closed early leaves nothing stored", limits, async () => {
  const body = randomBytes(256 * 1024);
  const object = origin.put("/ns/early", body, { etag: '"e1"', holdAfter: 64 * 1024 });
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();

  const response = await worker.fetch(get("/ns/early"), env, ctx);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-length"), String(body.length));
  const reader = response.body.getReader();
  const first = await reader.read();
  assert.ok(!first.done && first.value.length > 0);
  await reader.cancel();

  await ctx.settled();
  await object.earlyClose; // the origin fetch was abandoned, not read to the end
  assert.equal(store.puts, 0);
  assert.equal(store.map.size, 0);

  // The discarded copy does not stand in the way of the next read, which fills the store.
  object.release();
  origin.put("/ns/early", body, { etag: '"e1"' });
  const again = await worker.fetch(get("/ns/early"), env, ctx);
  assert.deepEqual(await bytes(again), new Uint8Array(body));
  await ctx.settled();
  assert.equal(origin.gets.get("/ns/early"), 2);
  assert.deepEqual(store.map.get(objectKey("ns", "early")).body, new Uint8Array(body));
});

test("an If-Range resume across an origin change gets the whole new object", limits, async () => {
  const v1 = randomBytes(10_000);
  const v2 = randomBytes(12_000);
  origin.put("/ns/resume", v1, { etag: '"v1"' });
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();

  const part = await worker.fetch(get("/ns/resume", { range: "bytes=0-4999" }), env, ctx);
  assert.equal(part.status, 206);
  assert.equal(part.headers.get("etag"), '"v1"');
  assert.deepEqual(await bytes(part), new Uint8Array(v1.subarray(0, 5000)));
  await ctx.settled();

  // While the edge holds v1, the resume is honoured from the store.
  const held = await worker.fetch(get("/ns/resume", { range: "bytes=5000-", "if-range": '"v1"' }), env, ctx);
  assert.equal(held.status, 206);
  assert.deepEqual(await bytes(held), new Uint8Array(v1.subarray(5000)));

  // The origin changes and the edge copy is evicted; the resume names the old version.
  origin.put("/ns/resume", v2, { etag: '"v2"' });
  await store.delete(objectKey("ns", "resume"));
  const resumed = await worker.fetch(get("/ns/resume", { range: "bytes=5000-", "if-range": '"v1"' }), env, ctx);
  assert.equal(resumed.status, 200, "never a 206 of the new object");
  assert.equal(resumed.headers.get("etag"), '"v2"');
  assert.equal(resumed.headers.get("content-range"), null);
  assert.equal(resumed.headers.get("content-length"), String(v2.length));
  assert.deepEqual(await bytes(resumed), new Uint8Array(v2));
  await ctx.settled();
  assert.deepEqual(store.map.get(objectKey("ns", "resume")).body, new Uint8Array(v2));
});

test("hits answer conditionals, HEAD, multiple ranges and unsatisfiable ranges as planned", limits, async () => {
  const body = Buffer.from("0123456789".repeat(100));
  origin.put("/ns/hit", body, { etag: '"h1"' });
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();
  assert.deepEqual(await bytes(await worker.fetch(get("/ns/hit"), env, ctx)), new Uint8Array(body));
  await ctx.settled();
  assert.equal(store.puts, 1);

  const notModified = await worker.fetch(get("/ns/hit", { "if-none-match": '"h1"' }), env, ctx);
  assert.equal(notModified.status, 304);
  assert.equal(notModified.headers.get("etag"), '"h1"');
  assert.equal((await bytes(notModified)).length, 0);

  const failed = await worker.fetch(get("/ns/hit", { "if-match": '"other"' }), env, ctx);
  assert.equal(failed.status, 412);

  const head = await worker.fetch(get("/ns/hit", { range: "bytes=0-9" }, "HEAD"), env, ctx);
  assert.equal(head.status, 200, "HEAD ignores Range");
  assert.equal(head.headers.get("content-length"), String(body.length));
  assert.equal((await bytes(head)).length, 0);

  const unsatisfiable = await worker.fetch(get("/ns/hit", { range: "bytes=5000-" }), env, ctx);
  assert.equal(unsatisfiable.status, 416);
  assert.equal(unsatisfiable.headers.get("content-range"), `bytes */${body.length}`);

  const multi = await worker.fetch(get("/ns/hit", { range: "bytes=0-1,500-501" }), env, ctx);
  assert.equal(multi.status, 206);
  const type = multi.headers.get("content-type");
  assert.match(type, /^multipart\/byteranges; boundary=/);
  const boundary = type.split("boundary=")[1];
  const text = new TextDecoder().decode(await bytes(multi));
  assert.equal(text.length, Number(multi.headers.get("content-length")));
  assert.equal(
    text,
    `--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-1/1000\r\n\r\n01` +
      `\r\n--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 500-501/1000\r\n\r\n01` +
      `\r\n--${boundary}--\r\n`,
  );
  // One fetch filled the store; the failed If-Match made the only other one, since a copy that
  // fails it is not definitive and the origin is asked for the version named (SPEC §4).
  assert.equal(origin.gets.get("/ns/hit"), 2);
  assert.equal(store.puts, 1, "the origin had no better answer: nothing was copied");
});

test("an If-Range naming the origin's new version while the store holds the old one is served from the origin", limits, async () => {
  const v1 = randomBytes(10_000);
  const v2 = randomBytes(12_000);
  origin.put("/ns/newer", v1, { etag: '"v1"' });
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();
  assert.deepEqual(await bytes(await worker.fetch(get("/ns/newer"), env, ctx)), new Uint8Array(v1));
  await ctx.settled();
  assert.equal(store.map.get(objectKey("ns", "newer")).meta.etag, '"v1"');

  // The origin moves on to v2; a client that already holds part of v2 resumes it.
  origin.put("/ns/newer", v2, { etag: '"v2"' });
  const resumed = await worker.fetch(get("/ns/newer", { range: "bytes=5000-", "if-range": '"v2"' }), env, ctx);
  assert.equal(resumed.status, 206, "a 206 of the version named, not the store's whole v1");
  assert.equal(resumed.headers.get("etag"), '"v2"');
  assert.equal(resumed.headers.get("content-range"), `bytes 5000-${v2.length - 1}/${v2.length}`);
  assert.deepEqual(await bytes(resumed), new Uint8Array(v2.subarray(5000)), "never a spliced body");
  assert.equal(origin.gets.get("/ns/newer"), 2);

  // The background copy refreshed the store with the whole of v2.
  await ctx.settled();
  const stored = store.map.get(objectKey("ns", "newer"));
  assert.equal(stored.meta.etag, '"v2"');
  assert.equal(stored.meta.size, v2.length);
  assert.deepEqual(stored.body, new Uint8Array(v2));

  // So the next resume of v2 is a hit, and one naming v1, which no tier holds any more, gets the
  // whole current object from the store.
  const hit = await worker.fetch(get("/ns/newer", { range: "bytes=-100", "if-range": '"v2"' }), env, ctx);
  assert.equal(hit.status, 206);
  assert.deepEqual(await bytes(hit), new Uint8Array(v2.subarray(v2.length - 100)));
  assert.equal(origin.gets.get("/ns/newer"), 2);
  const stale = await worker.fetch(get("/ns/newer", { range: "bytes=0-9", "if-range": '"v1"' }), env, ctx);
  assert.equal(stale.status, 200);
  assert.equal(stale.headers.get("etag"), '"v2"');
  assert.deepEqual(await bytes(stale), new Uint8Array(v2));
  await ctx.settled();
  assert.equal(origin.gets.get("/ns/newer"), 3, "the origin was asked for v1 and had v2");
  assert.equal(store.puts, 2);
});

test("an If-Match the store's copy fails is answered by the origin when it holds that version", limits, async () => {
  const v1 = randomBytes(4_000);
  const v2 = randomBytes(5_000);
  origin.put("/ns/match", v1, { etag: '"m1"' });
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();
  assert.deepEqual(await bytes(await worker.fetch(get("/ns/match"), env, ctx)), new Uint8Array(v1));
  await ctx.settled();

  origin.put("/ns/match", v2, { etag: '"m2"' });
  const response = await worker.fetch(get("/ns/match", { "if-match": '"m2"' }), env, ctx);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("etag"), '"m2"');
  assert.deepEqual(await bytes(response), new Uint8Array(v2));
  await ctx.settled();
  assert.equal(store.map.get(objectKey("ns", "match")).meta.etag, '"m2"', "the full read was teed");

  // When the origin is down, a failed If-Match is 502: the origin might have held the version.
  const down = { ORIGIN: "http://127.0.0.1:9", STORE: store };
  const failed = await worker.fetch(get("/ns/match", { "if-match": '"m3"' }), down, ctx);
  assert.equal(failed.status, 502);
  await ctx.settled();
});

test("misses of absent objects, bad paths and other methods", limits, async () => {
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();
  assert.equal((await worker.fetch(get("/ns/absent"), env, ctx)).status, 404);
  assert.equal((await worker.fetch(get("/ns/absent", {}, "HEAD"), env, ctx)).status, 404);
  assert.equal((await worker.fetch(get("/_bad/key"), env, ctx)).status, 400);
  assert.equal((await worker.fetch(get("/only-one-segment"), env, ctx)).status, 404);
  const post = await worker.fetch(get("/ns/key", {}, "POST"), env, ctx);
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  await ctx.settled();
  assert.equal(store.map.size, 0);

  origin.put("/ns/head-miss", Buffer.from("abc"), { etag: '"hm"' });
  const head = await worker.fetch(get("/ns/head-miss", {}, "HEAD"), env, ctx);
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-length"), "3");
  assert.equal(head.headers.get("etag"), '"hm"');
});

test("every answer carries the core's Cache-Status, deepest tier first", limits, async () => {
  const body = Buffer.from("cache-status ".repeat(100));
  origin.put("/ns/status", body, { etag: '"s1"' });
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();
  const status = async (response) => {
    await response.arrayBuffer();
    return [response.status, response.headers.get("cache-status")];
  };
  // A cold full read is served by the origin and teed into the store.
  assert.deepEqual(await status(await worker.fetch(get("/ns/status"), env, ctx)), [200, "origin; hit, edge; fwd=uri-miss; stored"]);
  await ctx.settled();
  // Then the store answers, whatever the request.
  assert.deepEqual(await status(await worker.fetch(get("/ns/status"), env, ctx)), [200, "edge; hit"]);
  assert.deepEqual(await status(await worker.fetch(get("/ns/status", { "if-none-match": '"s1"' }), env, ctx)), [304, "edge; hit"]);
  assert.deepEqual(await status(await worker.fetch(get("/ns/status", { range: "bytes=0-9" }, "HEAD"), env, ctx)), [200, "edge; hit"]);
  // A HEAD that misses asks the origin for metadata only and copies nothing.
  origin.put("/ns/status-head", body, { etag: '"h1"' });
  assert.deepEqual(await status(await worker.fetch(get("/ns/status-head", {}, "HEAD"), env, ctx)), [200, "origin; hit, edge; fwd=uri-miss"]);
  // Nobody has it: each tier forwarded the request.
  assert.deepEqual(await status(await worker.fetch(get("/ns/nowhere"), env, ctx)), [404, "origin; fwd=uri-miss, edge; fwd=uri-miss"]);
  // A copy already running for the key is shared, and says so.
  const held = origin.put("/ns/status-shared", body, { etag: '"d1"', holdAfter: 10 });
  const first = await worker.fetch(get("/ns/status-shared"), env, ctx);
  const second = await worker.fetch(get("/ns/status-shared"), env, ctx);
  held.release();
  assert.deepEqual(await status(first), [200, "origin; hit, edge; fwd=uri-miss; stored"]);
  assert.deepEqual(await status(second), [200, "origin; hit, edge; fwd=uri-miss; detail=backfill-deduplicated"]);
  await ctx.settled();
  assert.equal(origin.gets.get("/ns/status-shared"), 1);
});

test("an expired copy in the store is never served: the origin's answer stands and refreshes it", limits, async () => {
  const old = Buffer.from("old ".repeat(50));
  const fresh = Buffer.from("fresh ".repeat(50));
  origin.put("/ns/expired", fresh, { etag: '"x2"' });
  const store = new MemoryStore();
  const past = new Date(Date.now() - 60_000).toUTCString();
  const meta = { size: old.length, etag: '"x1"', lastModified: past, expires: past, headers: {} };
  await store.put(objectKey("ns", "expired"), { meta, body: new Uint8Array(old) });
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();
  const response = await worker.fetch(get("/ns/expired"), env, ctx);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("etag"), '"x2"');
  assert.equal(response.headers.get("cache-status"), "origin; hit, edge; fwd=stale; stored");
  assert.deepEqual(await bytes(response), new Uint8Array(fresh));
  await ctx.settled();
  assert.equal(store.map.get(objectKey("ns", "expired")).meta.etag, '"x2"', "the expired copy was replaced");
  // With the origin down, the expired copy is still not served.
  await store.put(objectKey("ns", "expired"), { meta, body: new Uint8Array(old) });
  const down = { ORIGIN: "http://127.0.0.1:9", STORE: store };
  const failed = await worker.fetch(get("/ns/expired"), down, ctx);
  assert.equal(failed.status, 502);
  assert.equal(failed.headers.get("cache-status"), "origin; fwd=miss; detail=error, edge; fwd=stale");
  assert.equal((await bytes(failed)).length, 0);
  await ctx.settled();
});

test("an origin's expiry is kept with the copy and planned into every answer", limits, async () => {
  const body = Buffer.from("expiring ".repeat(20));
  const expires = new Date(Math.floor(Date.now() / 1000) * 1000 + 3_600_000).toUTCString();
  origin.put("/ns/expiring", body, { etag: '"e1"', expires });
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();
  const cold = await worker.fetch(get("/ns/expiring"), env, ctx);
  assert.equal(cold.headers.get("rangecache-expires"), expires);
  await bytes(cold);
  await ctx.settled();
  assert.equal(store.map.get(objectKey("ns", "expiring")).meta.expires, expires);
  const hit = await worker.fetch(get("/ns/expiring", { range: "bytes=0-3" }), env, ctx);
  assert.equal(hit.status, 206);
  assert.equal(hit.headers.get("cache-status"), "edge; hit");
  assert.equal(hit.headers.get("rangecache-expires"), expires);
  assert.equal(await hit.text(), "expi");
});

/** An edge store whose reads fail. */
class FailingStore extends MemoryStore {
  async get() {
    throw new Error("the store is down");
  }
}

test("a store that fails is passed over for the origin and gets no copy", limits, async () => {
  const body = randomBytes(20_000);
  origin.put("/ns/store-down", body, { etag: '"f1"' });
  const store = new FailingStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();
  const full = await worker.fetch(get("/ns/store-down"), env, ctx);
  assert.equal(full.status, 200);
  assert.equal(full.headers.get("cache-status"), "origin; hit, edge; fwd=miss; detail=error");
  assert.deepEqual(await bytes(full), new Uint8Array(body));
  const ranged = await worker.fetch(get("/ns/store-down", { range: "bytes=100-199" }), env, ctx);
  assert.equal(ranged.status, 206);
  assert.deepEqual(await bytes(ranged), new Uint8Array(body.subarray(100, 200)));
  await ctx.settled();
  assert.equal(store.puts, 0, "a store that just failed gets no copy");
  // Neither tier answering: 502, each member saying so.
  const down = { ORIGIN: "http://127.0.0.1:9", STORE: store };
  const failed = await worker.fetch(get("/ns/store-down"), down, ctx);
  assert.equal(failed.status, 502);
  assert.equal(failed.headers.get("cache-status"), "origin; fwd=miss; detail=error, edge; fwd=miss; detail=error");
  await ctx.settled();
});

test("a multipart read that misses is served part by part from one origin fetch", limits, async () => {
  const body = Buffer.from("0123456789".repeat(100));
  origin.put("/ns/parts", body, { etag: '"p1"' });
  const store = new MemoryStore();
  const env = { ORIGIN: origin.url, STORE: store };
  const ctx = context();
  const multi = await worker.fetch(get("/ns/parts", { range: "bytes=0-1,500-501" }), env, ctx);
  assert.equal(multi.status, 206);
  assert.equal(multi.headers.get("cache-status"), "origin; hit, edge; fwd=uri-miss; stored");
  const text = new TextDecoder().decode(await bytes(multi));
  assert.equal(text.length, Number(multi.headers.get("content-length")));
  assert.match(text, /Content-Range: bytes 0-1\/1000\r\n\r\n01\r\n--.*\r\nContent-Type: application\/octet-stream\r\nContent-Range: bytes 500-501\/1000\r\n\r\n01\r\n/);
  await ctx.settled();
  assert.equal(origin.gets.get("/ns/parts"), 1);
  assert.deepEqual(store.map.get(objectKey("ns", "parts")).body, new Uint8Array(body));
});
