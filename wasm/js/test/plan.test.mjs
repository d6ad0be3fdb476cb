// planResponse and resolveRange against the RFC case table the Rust tests read
// (core/tests/data/rfc_cases.json), so the two hosts cannot drift; the read machine and the
// backfill manager driven by events; and the TypeErrors that bad arguments raise without harming
// the module.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  BackfillManager,
  ReadMachine,
  describeObject,
  objectKey,
  planResponse,
  resolveRange,
} from "../../pkg/index.js";
import * as web from "../../pkg/web.js";

const table = JSON.parse(
  readFileSync(new URL("../../../core/tests/data/rfc_cases.json", import.meta.url), "utf8"),
);
assert.equal(table.format, 1);
assert.ok(table.cases.length > 0, "the RFC table has cases");

const encoder = new TextEncoder();

/** Bytes a planned GET body sends, counted from the plan alone. */
function bodyLength(body, size) {
  switch (body.kind) {
    case "none":
      return 0;
    case "full":
      return size;
    case "range":
      return body.end - body.start;
    case "multipart":
      return (
        body.parts.reduce((n, part) => n + encoder.encode(part.head).length + part.end - part.start, 0) +
        encoder.encode(body.closing).length
      );
    default:
      throw new Error(`unknown body kind ${body.kind}`);
  }
}

function checkCase(plan, { request, object, expected }) {
  assert.equal(plan.status, expected.status, "status");
  for (const [name, value] of Object.entries(expected.headers ?? {})) {
    assert.equal(plan.headers[name], value, `header ${name}`);
  }
  for (const name of expected.absentHeaders ?? []) {
    assert.equal(plan.headers[name], undefined, `header ${name} must be absent`);
  }
  for (const [name, prefix] of Object.entries(expected.headerPrefixes ?? {})) {
    assert.ok(plan.headers[name]?.startsWith(prefix), `header ${name} starts with ${prefix}`);
  }
  assert.equal(plan.body.kind, expected.body.kind, "body kind");
  if (expected.body.kind === "range") {
    assert.deepEqual([plan.body.start, plan.body.end], [expected.body.start, expected.body.end]);
  }
  if (expected.body.kind === "multipart") {
    assert.deepEqual(
      plan.body.parts.map((p) => ({ start: p.start, end: p.end })),
      expected.body.parts.map((p) => ({ start: p.start, end: p.end })),
    );
    const { boundary } = plan.body;
    assert.equal(plan.headers["content-type"], `multipart/byteranges; boundary=${boundary}`);
    const partType = object.headers?.["content-type"];
    plan.body.parts.forEach((part, i) => {
      const range = `bytes ${part.start}-${part.end - 1}/${object.size}`;
      const typeLine = partType === undefined ? "" : `Content-Type: ${partType}\r\n`;
      assert.equal(part.head, `${i === 0 ? "" : "\r\n"}--${boundary}\r\n${typeLine}Content-Range: ${range}\r\n\r\n`);
      assert.equal(part.headers["content-range"], range);
    });
    assert.equal(plan.body.closing, `\r\n--${boundary}--\r\n`);
  }
  if (request.method === "GET" && plan.headers["content-length"] !== undefined) {
    assert.equal(Number(plan.headers["content-length"]), bodyLength(plan.body, object.size), "content-length");
  }
  if ([200, 206, 416].includes(plan.status)) {
    assert.equal(plan.headers["accept-ranges"], "bytes");
  }
}

for (const c of table.cases) {
  test(`rfc table: ${c.name} (${c.section})`, () => checkCase(planResponse(c.request, c.object), c));
}

// The cases where only the Range decides (a GET with no precondition and no If-Range) also say
// what resolveRange must give.
const rangeOnly = table.cases.filter(
  (c) =>
    c.request.method === "GET" &&
    Object.keys(c.request.headers).length === 1 &&
    c.request.headers.range !== undefined,
);

test("the table has range-only cases for resolveRange", () => {
  assert.ok(rangeOnly.length >= 5, `${rangeOnly.length} range-only cases`);
});

for (const c of rangeOnly) {
  test(`resolveRange agrees with the table: ${c.name}`, () => {
    const got = resolveRange(c.request.headers.range, c.object.size);
    const { body, status } = c.expected;
    if (status === 416) {
      assert.deepEqual(got, { kind: "unsatisfiable" });
    } else if (body.kind === "full") {
      assert.deepEqual(got, { kind: "full" });
    } else if (body.kind === "range") {
      assert.deepEqual(got, { kind: "partial", ranges: [{ start: body.start, end: body.end }] });
    } else {
      assert.deepEqual(got, { kind: "partial", ranges: body.parts.map(({ start, end }) => ({ start, end })) });
    }
  });
}

test("resolveRange: absent and invalid ranges select everything, suffixes count from the end", () => {
  assert.deepEqual(resolveRange(undefined, 10), { kind: "full" });
  assert.deepEqual(resolveRange(null, 10), { kind: "full" });
  assert.deepEqual(resolveRange("bytes=5-2", 10), { kind: "full" });
  assert.deepEqual(resolveRange("items=0-1", 10), { kind: "full" });
  assert.deepEqual(resolveRange("bytes=-3", 10), { kind: "partial", ranges: [{ start: 7, end: 10 }] });
  assert.deepEqual(resolveRange("bytes=4-", 10), { kind: "partial", ranges: [{ start: 4, end: 10 }] });
  assert.deepEqual(resolveRange("bytes=10-", 10), { kind: "unsatisfiable" });
});

test("planResponse without validators plans no ETag or Last-Modified and ignores date conditions", () => {
  const object = { size: 10 };
  const plain = planResponse({ method: "GET", headers: {} }, object);
  assert.equal(plain.status, 200);
  assert.equal(plain.headers.etag, undefined);
  assert.equal(plain.headers["last-modified"], undefined);
  // RFC 9110 §13.1.3: If-Modified-Since is ignored when there is no modification date.
  const ims = planResponse({ method: "GET", headers: { "if-modified-since": "Sun, 06 Nov 1994 08:49:37 GMT" } }, object);
  assert.equal(ims.status, 200);
  // `*` matches any current representation; a named tag matches none.
  assert.equal(planResponse({ method: "GET", headers: { "if-none-match": "*" } }, object).status, 304);
  assert.equal(planResponse({ method: "GET", headers: { "if-match": '"x"' } }, object).status, 412);
  // An If-Range with a tag never holds without one: the full object.
  const ifRange = planResponse({ method: "GET", headers: { range: "bytes=0-1", "if-range": '"x"' } }, object);
  assert.equal(ifRange.status, 200);
});

test("header names are matched case-insensitively", () => {
  const plan = planResponse({ method: "GET", headers: { Range: "bytes=0-1" } }, { size: 10, etag: '"a"' });
  assert.equal(plan.status, 206);
  assert.deepEqual(plan.body, { kind: "range", start: 0, end: 2 });
});

test("objectKey keeps 64 hex digits, hashes other keys and refuses bad namespaces", () => {
  const hex = "ab".repeat(32);
  assert.equal(objectKey("ns", hex), `ns/${hex}`);
  assert.equal(objectKey("ns", "hello"), "ns/2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
  assert.equal(objectKey("_bad", "x"), null);
  assert.equal(objectKey("a/b", "x"), null);
});

test("describeObject reads the size, the validators and the stored fields of a response", () => {
  const described = describeObject({
    "content-length": "42",
    etag: '"v1"',
    "last-modified": "Sun, 06 Nov 1994 08:49:37 GMT",
    "content-type": "text/plain",
    "set-cookie": "a=b",
    connection: "close",
  });
  assert.deepEqual(described, {
    size: 42,
    etag: '"v1"',
    lastModified: "Sun, 06 Nov 1994 08:49:37 GMT",
    headers: { "content-type": "text/plain" },
  });
  assert.deepEqual(describeObject({ "content-length": "-1", etag: "unquoted", "last-modified": "yesterday" }), {
    headers: {},
  });
});

/** Asserts that `f` throws a TypeError whose message contains `words`. */
function throwsTypeError(f, words) {
  assert.throws(f, (error) => {
    assert.ok(error instanceof TypeError, `${error} is a TypeError`);
    assert.ok(error.message.includes(words), `${JSON.stringify(error.message)} mentions ${JSON.stringify(words)}`);
    return true;
  });
}

const GET = { method: "GET", headers: {} };

test("bad arguments throw a TypeError naming the field", () => {
  throwsTypeError(() => planResponse(GET, { size: -1 }), "object.size");
  throwsTypeError(() => planResponse(GET, { size: 1.5 }), "object.size");
  throwsTypeError(() => planResponse(GET, { size: Number.NaN }), "object.size");
  throwsTypeError(() => planResponse(GET, { size: 2 ** 60 }), "object.size");
  throwsTypeError(() => planResponse(GET, { size: "10" }), "object.size must be a number");
  throwsTypeError(() => planResponse(GET, {}), "object.size");
  throwsTypeError(() => planResponse(GET, null), "object must be an object");
  throwsTypeError(() => planResponse(GET), "object must be an object");
  throwsTypeError(() => planResponse({ method: "GET", headers: { range: 5 } }, { size: 1 }), 'request.headers["range"] must be a string');
  throwsTypeError(() => planResponse({ method: "GET", headers: { "x-other": null } }, { size: 1 }), "x-other");
  throwsTypeError(() => planResponse({ method: "GET", headers: ["range"] }, { size: 1 }), "request.headers must be an object");
  throwsTypeError(() => planResponse({ headers: {} }, { size: 1 }), "request.method is missing");
  throwsTypeError(() => planResponse({ method: 7 }, { size: 1 }), "request.method must be a string");
  throwsTypeError(() => planResponse({ method: "G T" }, { size: 1 }), "request.method");
  throwsTypeError(() => planResponse({ method: "GET", headers: null }, { size: 1, etag: '"a' }), "object.etag");
  throwsTypeError(() => planResponse("GET", { size: 1 }), "request must be an object");
  throwsTypeError(() => planResponse(GET, { size: 1, etag: "v1" }), "object.etag");
  throwsTypeError(() => planResponse(GET, { size: 1, etag: 1 }), "object.etag must be a string");
  throwsTypeError(() => planResponse(GET, { size: 1, lastModified: "today" }), "object.lastModified");
  throwsTypeError(() => planResponse(GET, { size: 1, headers: { "content-type": 1 } }), "object.headers");
  throwsTypeError(() => resolveRange(5, 10), "rangeHeader must be a string");
  throwsTypeError(() => resolveRange("bytes=0-1", -1), "size");
  throwsTypeError(() => resolveRange("bytes=0-1"), "size must be a number");
  throwsTypeError(() => objectKey("ns"), "key is missing");
  throwsTypeError(() => describeObject({ etag: 1 }), "headers");
  const manager = new BackfillManager();
  throwsTypeError(() => manager.sourceRead(0, 10), "copy 0 was never issued");
  throwsTypeError(() => manager.sourceRead(-1, 10), "copy");
  throwsTypeError(() => manager.generation("bad namespace", "k"), "namespace");
  throwsTypeError(() => manager.mutationStarted("ns", "k", "rename"), "kind");
  throwsTypeError(() => manager.commitFinished(0, "yes"), "committed must be a boolean");
  throwsTypeError(() => manager.copyRequested({}, {}), "seen");
  throwsTypeError(() => new BackfillManager({ maxInFlight: -1 }), "config.maxInFlight");
  const seen = manager.generation("ns", "k");
  throwsTypeError(
    () => manager.copyRequested(seen, { namespace: "ns", key: "k", from: 1, object: { size: 1 }, mode: "eager" }),
    "request.mode",
  );
  throwsTypeError(() => manager.copyRequested(seen, { namespace: "ns", key: "k", from: 1, mode: "tee" }), "request.object");
  throwsTypeError(
    () => manager.copyRequested(seen, { namespace: "ns", key: "k", from: 1, object: { size: 1, etag: "x" }, mode: "tee" }),
    "etag",
  );
});

test("the module keeps working after any number of bad calls and odd headers", () => {
  for (let i = 0; i < 200; i++) {
    assert.throws(() => planResponse(GET, { size: -i - 1 }), TypeError);
  }
  // Odd but well-typed input is planned, never trapped on.
  const odd = ["", ",", "bytes=", "bytes=-0", "bytes=99999999999999999999999-", "W/", '"', "*", "\u0000", "bytes=0-0,".repeat(100), "é"];
  for (const a of odd) {
    for (const b of odd) {
      const headers = { range: a, "if-range": b, "if-match": b, "if-none-match": a, "if-modified-since": a, "if-unmodified-since": b };
      for (const method of ["GET", "HEAD", "POST"]) {
        const plan = planResponse({ method, headers }, { size: 100, etag: '"e"', lastModified: "Sun, 06 Nov 1994 08:49:37 GMT" });
        assert.ok([200, 206, 304, 412, 416].includes(plan.status), `${method} ${JSON.stringify(headers)} -> ${plan.status}`);
      }
      resolveRange(a, 0);
      resolveRange(b, Number.MAX_SAFE_INTEGER);
    }
  }
  assert.equal(planResponse({ method: "GET", headers: { range: "bytes=0-0" } }, { size: 1, etag: '"a"' }).status, 206);
});

test("the worker-friendly glue plans the same answers once initialised with the module", () => {
  web.initSync({ module: readFileSync(new URL("../../pkg/web/rangecache_wasm_bg.wasm", import.meta.url)) });
  for (const c of table.cases) {
    assert.deepEqual(web.planResponse(c.request, c.object), planResponse(c.request, c.object), c.name);
  }
});

test("the backfill manager dedupes a key's copies and commits only a complete one", () => {
  const manager = new BackfillManager();
  const drain = () => {
    const out = [];
    for (let a = manager.pollOutput(); a !== null; a = manager.pollOutput()) out.push(a);
    return out;
  };
  const request = { namespace: "ns", key: "k", from: 1, object: { size: 10, etag: '"v1"' }, mode: "background" };
  const start = manager.copyRequested(manager.generation("ns", "k"), request);
  assert.deepEqual(drain(), [], "a request is answered at once and queues nothing");
  assert.equal(start.type, "startCopy");
  assert.equal(start.mode, "background");
  assert.equal(start.key, objectKey("ns", "k").slice(3));
  assert.deepEqual(manager.copyRequested(manager.generation("ns", "k"), request), {
    type: "refuse",
    namespace: "ns",
    key: start.key,
    why: "deduplicated",
    copy: start.copy,
  });
  manager.sourceRead(start.copy, 10);
  manager.chunkWritten(start.copy, 10);
  assert.deepEqual(drain(), []);
  manager.sourceEnded(start.copy);
  assert.deepEqual(drain(), [{ type: "commit", copy: start.copy }]);
  manager.commitFinished(start.copy, true);
  assert.deepEqual(drain(), [{ type: "finished", copy: start.copy }]);
  const counters = manager.counters();
  assert.equal(counters.started, 1);
  assert.equal(counters.deduped, 1);
  assert.equal(counters.committed, 1);
  assert.equal(counters.inFlight, 0);
  // A write during a copy cancels it; the copy is then discarded, never committed.
  const seen = manager.generation("ns", "k");
  const second = manager.copyRequested(seen, request);
  manager.mutationStarted("ns", "k", "write");
  assert.deepEqual(drain(), [
    { type: "cancel", copy: second.copy },
    { type: "proceedWithMutation", namespace: "ns", key: start.key },
  ]);
  manager.copyStopped(second.copy);
  assert.deepEqual(drain(), [{ type: "discard", copy: second.copy, why: "superseded" }]);
  manager.mutationEnded("ns", "k", "write");
  // A read that took its generation before the write is refused.
  assert.equal(manager.copyRequested(seen, request).why, "superseded");
});

test("the raw exports never trap, whatever bytes and numbers they are given", async () => {
  const raw = await import("../../pkg/rangecache_wasm.js");
  // A small deterministic generator (xorshift), so a failure replays.
  let state = 0x9e3779b9;
  const next = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  const pieces = ["GET", "HEAD", "", "=", "\0", "=bytes=0-1", '="a"', "=*", "=W/\"a\"", "=Sun, 06 Nov 1994 08:49:37 GMT", "x", "\u00e9", "\uffff", "=-", "=bytes=-0,0-"];
  const numbers = [0, 1, 10, -1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER, 2 ** 64];
  for (let i = 0; i < 3000; i++) {
    const size = numbers[next() % numbers.length];
    let input;
    if (i % 3 === 0) {
      input = new Uint8Array(next() % 64).map(() => next() & 0xff);
    } else {
      const n = next() % 16;
      input = new TextEncoder().encode(Array.from({ length: n }, () => pieces[next() % pieces.length]).join("\0"));
    }
    // The input goes into the module's own buffer, as api.js writes it; a length past the
    // buffer must be refused too.
    const ptr = raw.inputBuffer(input.length);
    new Uint8Array(raw.memoryRaw().buffer).set(input, ptr);
    // The fixed fields' lengths, as api.js writes them: often absent, else arbitrary numbers.
    const lens = new Float64Array(raw.memoryRaw().buffer, raw.lensBuffer(), 10);
    for (let j = 0; j < lens.length; j++) lens[j] = i % 2 === 0 ? -1 : numbers[next() % numbers.length] + (next() % 8);
    const len = i % 7 === 0 ? input.length + (next() % 1_000_000) : input.length;
    const code = next() & 0xff;
    const calls = [
      // A kept object named by a number, one to keep the input's under, or none.
      ["number", () => raw.planRaw(len, size, [-1, -2, 0, 1, 2][next() % 5])],
      ["number", () => raw.resolveRaw(len, i % 2 === 0, size)],
      ["number", () => raw.objectKeyRaw(len)],
      ["number", () => raw.describeRaw(len)],
      [
        "number",
        () => {
          const read = new raw.ReadRaw(len, size);
          try {
            read.input(code, size, len, size, i % 2 === 0);
          } catch (error) {
            assert.ok(error instanceof TypeError, `${error}`);
          }
          return read.pollOutput();
        },
      ],
      [
        "undefined",
        () => {
          const manager = new raw.BackfillRaw(undefined, undefined);
          manager.copyEvent(code, size, size);
        },
      ],
    ];
    for (const [type, call] of calls) {
      try {
        assert.equal(typeof call(), type);
      } catch (error) {
        assert.ok(error instanceof TypeError, `${error} (input ${Array.from(input)}, len ${len}, size ${size})`);
      }
    }
  }
  // Still alive and right.
  assert.equal(planResponse({ method: "GET", headers: { range: "bytes=0-0" } }, { size: 1, etag: '"a"' }).status, 206);
});

test("planResponse returns stored fields of any name and non-ASCII values exactly", () => {
  const object = {
    size: 10,
    etag: '"a"',
    headers: { "x-note": "caf\u00e9 \u2603", "content-disposition": 'attachment; filename="r\u00e9sum\u00e9.txt"' },
  };
  for (const headers of [{}, { range: "bytes=0-1" }, { range: "bytes=0-1,5-6" }]) {
    const plan = planResponse({ method: "GET", headers }, object);
    assert.equal(plan.headers["x-note"], "caf\u00e9 \u2603");
    assert.equal(plan.headers["content-disposition"], 'attachment; filename="r\u00e9sum\u00e9.txt"');
    assert.equal(plan.headers.etag, '"a"');
  }
  // Text the plan writes itself holds them too: the part heads of a multipart body.
  const typed = { size: 1000, etag: '"a"', headers: { "content-type": "text/plain; name=\u00e9\u2603" } };
  const multi = planResponse({ method: "GET", headers: { range: "bytes=0-1,500-501" } }, typed);
  assert.equal(multi.body.kind, "multipart");
  for (const part of multi.body.parts) {
    assert.equal(part.headers["content-type"], "text/plain; name=\u00e9\u2603");
    assert.ok(part.head.endsWith("\r\n\r\n"));
  }
  assert.match(multi.headers["content-type"], /^multipart\/byteranges; boundary=/);
  // A value the plan does not echo (a normalised date) comes from the module, not the input.
  const dated = planResponse({ method: "GET" }, { size: 1, lastModified: "Sunday, 06-Nov-94 08:49:37 GMT" });
  assert.equal(dated.headers["last-modified"], "Sun, 06 Nov 1994 08:49:37 GMT");
});

test("planResponse plans for the object it is given, also after planning for one object again and again", async () => {
  const raw = await import("../../pkg/rangecache_wasm.js");
  const get = (range, ifRange) => ({ method: "GET", headers: ifRange ? { range, "if-range": ifRange } : { range } });
  const object = {
    size: 1000,
    etag: '"v1"',
    lastModified: "Sun, 06 Nov 1994 08:49:37 GMT",
    expires: "Mon, 01 Jan 2035 00:00:00 GMT",
    headers: { "cache-control": "max-age=60", "content-type": "text/plain" },
  };
  const check = (plan, status, fields) => {
    assert.equal(plan.status, status);
    for (const [name, value] of Object.entries(fields)) assert.equal(plan.headers[name], value, name);
  };
  // The same object, again and again (the module keeps it), then each part of it changed in
  // place: every answer is the one for the object as it is at the call.
  for (let i = 0; i < 3; i++) {
    check(planResponse(get("bytes=0-9", '"v1"'), object), 206, { etag: '"v1"', "cache-control": "max-age=60" });
  }
  object.headers["cache-control"] = "max-age=5";
  check(planResponse(get("bytes=0-9", '"v1"'), object), 206, { "cache-control": "max-age=5" });
  object.headers["x-extra"] = "1";
  check(planResponse(get("bytes=0-9"), object), 206, { "x-extra": "1", "content-type": "text/plain" });
  delete object.headers["x-extra"];
  check(planResponse(get("bytes=0-9"), object), 206, { "x-extra": undefined });
  object.etag = '"v2"';
  check(planResponse(get("bytes=0-9", '"v1"'), object), 200, { etag: '"v2"', "content-length": "1000" });
  object.lastModified = "Mon, 07 Nov 1994 08:49:37 GMT";
  check(planResponse(get("bytes=0-9"), object), 206, { "last-modified": "Mon, 07 Nov 1994 08:49:37 GMT" });
  object.expires = "Tue, 02 Jan 2035 00:00:00 GMT";
  check(planResponse(get("bytes=0-9"), object), 206, { "rangecache-expires": "Tue, 02 Jan 2035 00:00:00 GMT" });
  object.size = 5;
  check(planResponse(get("bytes=0-9"), object), 206, { "content-range": "bytes 0-4/5" });
  const { etag, lastModified, expires } = object;
  delete object.etag;
  delete object.lastModified;
  delete object.expires;
  check(planResponse(get("bytes=0-9", '"v2"'), object), 200, { etag: undefined, "last-modified": undefined });
  Object.assign(object, { etag, lastModified, expires });
  // A call that fails in between, then the kept object again.
  assert.throws(() => planResponse(get("bytes=0-1"), { ...object, etag: "not a tag" }), TypeError);
  check(planResponse(get("bytes=0-1", '"v2"'), object), 206, { etag: '"v2"', "content-range": "bytes 0-1/5" });
  // A caller of the raw exports planning for another object in between: the module no longer
  // keeps this one, and the package sends it whole again.
  const input = new TextEncoder().encode('GET\0\0\0\0\0\0\0="other"\0\0');
  new Uint8Array(raw.memoryRaw().buffer).set(input, raw.inputBuffer(input.length));
  new Float64Array(raw.memoryRaw().buffer, raw.lensBuffer(), 10)[0] = -1;
  assert.ok(raw.planRaw(input.length, 7, 0) > 0);
  const other = raw.keptObjectRaw();
  assert.ok(other > 0, "the module numbers the object it keeps");
  assert.equal(raw.planRaw(0, 7, other + 1), 0, "an object the module does not keep is refused");
  check(planResponse(get("bytes=0-1", '"v2"'), object), 206, { etag: '"v2"', "cache-control": "max-age=5" });
  assert.notEqual(raw.keptObjectRaw(), other, "each object kept gets a number of its own");
  // An object whose getters answer differently each time is planned as it was read, and what is
  // kept of it is what was read: a plain object holding the other strings is planned for itself.
  let reads = 0;
  const shifting = {
    size: 100,
    get etag() {
      reads += 1;
      return reads % 2 === 1 ? '"old"' : '"new"';
    },
  };
  const ifNoneMatch = (tag) => ({ method: "GET", headers: { "if-none-match": tag } });
  for (const tag of ['"old"', '"new"']) {
    for (const plain of ['"old"', '"new"']) {
      const plan = planResponse(ifNoneMatch(tag), shifting);
      assert.equal(plan.status, plan.headers.etag === tag ? 304 : 200, "planned as one read of it says");
      check(planResponse(ifNoneMatch(plain), { size: 100, etag: plain }), 304, { etag: plain });
    }
  }
});

/** Drains a read machine's actions into short lines, as the core's transcript tests do. */
function actions(read) {
  const out = [];
  for (let a = read.pollOutput(); a !== null; a = read.pollOutput()) {
    switch (a.type) {
      case "openTier": {
        const span = a.span.last !== undefined ? `-${a.span.last}` : `${a.span.start}-${a.span.end ?? ""}`;
        const pinned = a.conditions.ifMatch === undefined ? "" : `, if-match ${a.conditions.ifMatch}`;
        out.push(`openTier(${a.tier}, ${span}${pinned})`);
        break;
      }
      case "requestCopy":
        out.push(`requestCopy(${a.from}, ${a.mode})`);
        break;
      case "serve":
        out.push(`serve(${a.plan.status}, ${a.source.kind} ${a.source.tier ?? ""}; ${a.cacheStatus})`);
        break;
      case "sendPart":
        out.push(`sendPart(${a.index})`);
        break;
      default:
        out.push(`${a.type}(${a.tier ?? a.why})`);
    }
  }
  return out;
}

const V1 = { size: 100, etag: '"v1"', lastModified: "Sun, 06 Nov 1994 08:49:37 GMT", headers: { "content-type": "text/plain" } };
const TIERS = { tiers: ["edge", "origin"], now: Date.UTC(2024, 0, 1) };

test("the read machine walks the tiers, asks the manager for the copy and serves with Cache-Status", () => {
  const manager = new BackfillManager();
  const seen = manager.generation("ns", "k");
  const read = new ReadMachine({ method: "GET", headers: {} }, TIERS);
  assert.deepEqual(actions(read), ["openTier(0, 0-)"]);
  read.tierMissed(0);
  assert.deepEqual(actions(read), ["openTier(1, 0-)"]);
  read.tierOpened(1, V1);
  assert.deepEqual(actions(read), ["requestCopy(1, tee)"]);
  const answer = read.requestCopy(manager, seen, "ns", "k");
  assert.equal(answer.type, "startCopy");
  assert.equal(answer.mode, "tee");
  assert.equal(manager.liveCopy("ns", "k"), answer.copy);
  const [serve] = [read.pollOutput()];
  assert.equal(serve.type, "serve");
  assert.equal(serve.cacheStatus, "origin; hit, edge; fwd=uri-miss; stored");
  assert.deepEqual(serve.source, { kind: "opened", tier: 1 });
  assert.equal(serve.plan.status, 200);
  assert.equal(serve.plan.headers.etag, '"v1"');
  assert.equal(serve.plan.headers["content-type"], "text/plain");
  assert.deepEqual(serve.plan.body, { kind: "full" });
  assert.equal(read.pollOutput(), null);
  assert.equal(read.isDone(), true);
  // A second read while the copy runs is told so.
  const again = new ReadMachine({ method: "GET", headers: { range: "bytes=0-9" } }, TIERS);
  actions(again);
  again.tierMissed(0);
  actions(again);
  again.tierOpened(1, V1);
  assert.deepEqual(actions(again), ["requestCopy(1, background)"]);
  assert.equal(again.requestCopy(manager, manager.generation("ns", "k"), "ns", "k").why, "deduplicated");
  assert.deepEqual(actions(again), ["serve(206, opened 1; origin; hit, edge; fwd=uri-miss; detail=backfill-deduplicated)"]);
});

test("the read machine passes over an expired copy and a failed tier, as the native server does", () => {
  const expired = { ...V1, expires: "Sat, 30 Dec 2023 00:00:00 GMT" };
  const read = new ReadMachine({ method: "GET", headers: {} }, TIERS);
  actions(read);
  read.tierOpened(0, expired);
  assert.deepEqual(actions(read), ["openTier(1, 0-)"]);
  read.tierFailed(1);
  assert.deepEqual(actions(read), ["serve(502, nothing ; origin; fwd=miss; detail=error, edge; fwd=stale)"]);
  // A failed tier 0 is no reason not to serve from the origin, but it gets no copy.
  const failed = new ReadMachine({ method: "GET", headers: {} }, TIERS);
  actions(failed);
  failed.tierFailed(0);
  actions(failed);
  failed.tierOpened(1, V1);
  assert.deepEqual(actions(failed), ["serve(200, opened 1; origin; hit, edge; fwd=miss; detail=error)"]);
  // A copy that is still live is served, with its expiry.
  const live = new ReadMachine({ method: "GET", headers: {} }, TIERS);
  actions(live);
  live.tierOpened(0, { ...V1, expires: "Tue, 02 Jan 2024 00:00:00 GMT" });
  const [serve] = [live.pollOutput()];
  assert.equal(serve.cacheStatus, "edge; hit");
  assert.equal(serve.plan.headers["rangecache-expires"], "Tue, 02 Jan 2024 00:00:00 GMT");
});

test("the read machine resolves what a tier holds against the open it asked for", () => {
  // A store holding v1 whole: an If-Range naming v2 goes on to the origin, which has it.
  const request = { method: "GET", headers: { range: "bytes=10-19", "if-range": '"v2"' } };
  const read = new ReadMachine(request, TIERS);
  assert.deepEqual(actions(read), ["openTier(0, 10-20)"]);
  read.tierOpened(0, V1);
  assert.deepEqual(actions(read), ["openTier(1, 10-20)"]);
  read.tierOpened(1, { ...V1, etag: '"v2"' });
  assert.deepEqual(actions(read), ["requestCopy(1, background)"]);
  const manager = new BackfillManager();
  assert.equal(read.requestCopy(manager, manager.generation("ns", "k"), "ns", "k").type, "startCopy");
  const serve = read.pollOutput();
  assert.equal(serve.plan.status, 206);
  assert.deepEqual(serve.plan.body, { kind: "range", start: 10, end: 20 });
  assert.equal(serve.cacheStatus, "origin; hit, edge; fwd=request; stored");
  // A multipart body is sent part by part, each re-opened pinned to the revision planned.
  const big = { ...V1, size: 1000 };
  const multi = new ReadMachine({ method: "GET", headers: { range: "bytes=0-1,500-501" } }, { tiers: ["edge"] });
  actions(multi);
  multi.tierOpened(0, big);
  assert.deepEqual(actions(multi), ["serve(206, parts 0; edge; hit)", "sendPart(0)"]);
  multi.partSent(0);
  assert.deepEqual(actions(multi), ['openTier(0, 500-502, if-match "v1")']);
  multi.tierOpened(0, big);
  assert.deepEqual(actions(multi), ["sendPart(1)"]);
  multi.partSent(1);
  assert.deepEqual(actions(multi), []);
  assert.equal(multi.isDone(), true);
  // A HEAD holds no body; an object without an entity-tag shows none.
  const head = new ReadMachine({ method: "HEAD", headers: {} }, { tiers: ["edge"] });
  actions(head);
  head.tierOpened(0, { size: 5 }, { body: false });
  const answer = head.pollOutput();
  assert.deepEqual([answer.plan.status, answer.source.kind, answer.plan.headers.etag], [200, "nothing", undefined]);
  assert.equal(answer.plan.headers["content-length"], "5");
});

test("the read machine's arguments are checked", () => {
  throwsTypeError(() => new ReadMachine({ method: "GET" }, { tiers: [] }), "options.tiers");
  throwsTypeError(() => new ReadMachine({ method: "GET" }, { tiers: ["a", 1] }), "options.tiers[1]");
  throwsTypeError(() => new ReadMachine({ method: "GET" }, { tiers: ["a"], now: -1 }), "options.now");
  throwsTypeError(() => new ReadMachine({ method: "G T" }, { tiers: ["a"] }), "request.method");
  const read = new ReadMachine({ method: "GET" }, { tiers: ["a"] });
  assert.deepEqual(actions(read), ["openTier(0, 0-)"]);
  throwsTypeError(() => read.tierOpened(0, { size: 1, etag: "unquoted" }), "object.etag");
  throwsTypeError(() => read.tierOpened(0, { size: 1, expires: "soon" }), "object.expires");
  throwsTypeError(() => read.tierOpened(0, { size: 1 }, { body: "yes" }), "options.body");
  throwsTypeError(() => read.tierMissed(-1), "tier");
  const manager = new BackfillManager();
  throwsTypeError(() => read.requestCopy({}, manager.generation("ns", "k"), "ns", "k"), "manager");
  throwsTypeError(() => read.requestCopy(manager, manager.generation("ns", "k"), "ns", "k"), "no copy was asked for");
  // Still usable.
  read.tierOpened(0, { size: 1 });
  assert.deepEqual(actions(read), ["serve(200, opened 0; a; hit)"]);
});
