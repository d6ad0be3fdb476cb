// An edge worker that serves GET and HEAD of `/{namespace}/{key}` from an edge store, filling
// it from an origin (SPEC §4 and §6). Every status and header comes from `planResponse`; every
// decision about a copy into the store (start, share, commit, discard) from the backfill
// manager. This file only moves bytes and carries out those decisions.
//
// env.ORIGIN  base URL of the origin; a miss fetches `${ORIGIN}/{namespace}/{key}` whole.
// env.STORE   the edge store: get(key) -> { meta, body } | null, put(key, { meta, body }),
//             delete(key); `meta` is an object description for `planResponse`, `body` a
//             Uint8Array. The store is tier 0 and the origin tier 1.
//
// A full read that misses is teed: the client's stream and the copy share one origin fetch,
// and the copy is put into the store only once the origin's body ended with the announced
// size; a client that closes early discards it. A ranged read that misses is served from the
// same fetch as its bytes arrive, while the rest of the object is copied in the background
// (`ctx.waitUntil`). Concurrent misses of one key join the fetch already running. Which of the
// two a read gets is the core's choice (`copyMode`), as is whether the store's copy may answer
// at all (`isDefinitive`): a copy of another version than an If-Range or If-Match names sends
// the read on to the origin for the named version (SPEC §4).
import { BackfillManager, copyMode, describeObject, isDefinitive, objectKey, planResponse } from "rangecache-wasm";

const STORE_TIER = 0;
const ORIGIN_TIER = 1;

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const segments = url.pathname.split("/");
    if (segments.length !== 3 || !segments[1] || !segments[2]) {
      return new Response(null, { status: 404 });
    }
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response(null, { status: 405, headers: { allow: "GET, HEAD" } });
    }
    let namespace, key;
    try {
      namespace = decodeURIComponent(segments[1]);
      key = decodeURIComponent(segments[2]);
    } catch {
      return new Response(null, { status: 400 });
    }
    const storeKey = objectKey(namespace, key);
    if (storeKey === null) {
      return new Response(null, { status: 400 });
    }
    const req = { method: request.method, headers: Object.fromEntries(request.headers) };
    const edge = edgeFor(env.STORE);
    // The generation is read before any tier is opened, so a copy that began before a change
    // of the key is refused (SPEC §4).
    const seen = edge.manager.generation(namespace, key);
    const entry = await env.STORE.get(storeKey);
    // The store's answer, kept when it is not definitive: it stands if the origin does not have
    // the version the request names either.
    let fallback = null;
    if (entry) {
      const plan = planResponse(req, entry.meta);
      if (isDefinitive(req, entry.meta)) {
        seen.free();
        return respond(plan, request.method, completeSource(entry.body));
      }
      fallback = { plan, source: completeSource(entry.body) };
    }
    if (request.method === "HEAD") {
      seen.free();
      return headFromOrigin(req, env, url.pathname, fallback);
    }
    let fill = edge.fills.get(storeKey);
    if (fill) {
      seen.free();
    } else {
      fill = new Fill(edge, { storeKey, namespace, key, seen, env, path: url.pathname });
      edge.fills.set(storeKey, fill);
      ctx.waitUntil(fill.done);
    }
    const head = await fill.head;
    if (head.status !== 200) {
      return originFailed(head.status, request.method, fallback);
    }
    let meta = head.meta;
    if (meta.size === undefined) {
      // Without a Content-Length nothing can be planned (or copied) before the end: read it
      // all, copied as a full read is, then plan against what arrived.
      fill.begin(copyMode(request.method, ORIGIN_TIER, { kind: "full" }));
      fill.pin();
      await fill.done;
      if (fill.failure) return originFailed(502, request.method, fallback);
      meta = { ...meta, size: fill.received };
    }
    const plan = planResponse(req, meta);
    if (fallback !== null && !isDefinitive(req, meta)) {
      // The origin does not have the named version either: the store's answer stands, and the
      // origin's object is neither sent nor copied.
      fill.begin(null);
      return respond(fallback.plan, request.method, fallback.source);
    }
    const mode = copyMode(request.method, ORIGIN_TIER, plan.body);
    fill.begin(mode);
    if (mode === "background") {
      // A fragment is never stored as the object: the rest is fetched whatever this client
      // does, and the store gets the whole object or nothing.
      fill.pin();
    }
    return respond(plan, request.method, fill);
  },
};

/**
 * The answer when the origin had no copy (`status` 404) or failed, as the core's read machine
 * gives it (core/src/read.rs, "Which answer stands"): a store's answer that was not definitive
 * stands when the origin has no copy, or despite a failure when it sends the object (the whole
 * current object for an If-Range), since that is right whatever the origin held; otherwise a
 * failure is 502.
 */
function originFailed(status, method, fallback) {
  if (fallback !== null && (status === 404 || fallback.plan.body.kind !== "none")) {
    return respond(fallback.plan, method, fallback.source);
  }
  return new Response(null, { status: status === 404 ? 404 : 502 });
}

/** What one store's worker shares between requests: its manager and the fetches running. */
const edges = new WeakMap();

function edgeFor(store) {
  let edge = edges.get(store);
  if (!edge) {
    edge = { store, manager: new BackfillManager(), fills: new Map(), copies: new Map() };
    edges.set(store, edge);
  }
  return edge;
}

/** Carries out what the manager asks for after an event, until it has nothing left. */
function drain(edge) {
  for (let action = edge.manager.pollOutput(); action !== null; action = edge.manager.pollOutput()) {
    switch (action.type) {
      case "commit":
        edge.copies.get(action.copy)?.commit();
        break;
      case "finished":
        edge.copies.delete(action.copy); // its commit was reported: nothing more comes for it
        break;
      case "cancel":
        edge.copies.get(action.copy)?.stop();
        break;
      case "discard":
        edge.copies.get(action.copy)?.discard(action.why);
        edge.copies.delete(action.copy);
        break;
      case "proceedWithMutation":
      case "shutdownComplete":
        break; // this worker never writes and never shuts down
      default:
        throw new Error(`unknown backfill action ${JSON.stringify(action)}`);
    }
  }
}

/**
 * One fetch of an object from the origin, shared by every miss of its key while it runs, and
 * the copy of it into the store when the manager allows one.
 */
class Fill {
  constructor(edge, { storeKey, namespace, key, seen, env, path }) {
    this.edge = edge;
    this.storeKey = storeKey;
    this.namespace = namespace;
    this.key = key;
    this.seen = seen;
    this.chunks = [];
    this.received = 0;
    this.ended = false;
    this.failure = null;
    this.readers = 0;
    this.pinned = false;
    this.copy = null; // the manager's copy number while the copy may still commit
    this.began = false;
    this.mode = null;
    this.wakers = [];
    this.abort = new AbortController();
    let finish;
    this.done = new Promise((resolve) => (finish = resolve));
    this.finish = finish;
    this.head = this.fetchHead(env, path);
  }

  async fetchHead(env, path) {
    let response;
    try {
      response = await fetch(new URL(path, env.ORIGIN), { signal: this.abort.signal });
    } catch {
      this.close();
      return { status: 502 };
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      this.close();
      return { status: response.status };
    }
    const meta = describeObject(Object.fromEntries(response.headers));
    this.meta = meta;
    this.response = response;
    return { status: 200, meta };
  }

  /** Called by every request that reads this fill, after planning: the first one decides the
   * copy's mode (`tee`, `background`, or `null` for none, as `copyMode` answered) and starts
   * pumping. */
  begin(mode) {
    if (this.began) return;
    this.began = true;
    this.mode = mode;
    if (mode !== null && this.meta.size !== undefined) {
      const { manager } = this.edge;
      const action = manager.copyRequested(this.seen, {
        namespace: this.namespace,
        key: this.key,
        from: ORIGIN_TIER,
        object: this.meta,
        mode,
      });
      if (action.type === "startCopy") {
        this.copy = action.copy;
        this.edge.copies.set(action.copy, this);
      }
      drain(this.edge);
    }
    this.releaseSeen();
    this.pump();
  }

  releaseSeen() {
    this.seen?.free();
    this.seen = null;
  }

  /** Keeps the fetch going when its readers leave (a background copy). */
  pin() {
    this.pinned = true;
  }

  async pump() {
    const reader = this.response.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (this.copy === null && this.readers === 0 && !this.pinned) {
          // No copy and nobody reading (every request answered without a body): stop.
          this.abort.abort();
          await reader.cancel().catch(() => {});
          this.fail(new Error("origin fetch abandoned: no reader and no copy"));
          return;
        }
        this.chunks.push({ offset: this.received, bytes: value });
        this.received += value.length;
        this.wake();
        if (this.copy !== null) {
          // The store is written at commit from these chunks, so a chunk read is also written.
          this.edge.manager.sourceRead(this.copy, value.length);
          drain(this.edge);
        }
        if (this.copy !== null) {
          this.edge.manager.chunkWritten(this.copy, value.length);
          drain(this.edge);
        }
      }
    } catch (error) {
      if (this.copy !== null) {
        this.edge.manager.sourceFailed(this.copy);
        drain(this.edge);
      }
      this.fail(error);
      return;
    }
    this.ended = true;
    if (this.meta.size !== undefined && this.received !== this.meta.size) {
      this.failure = new Error(`origin sent ${this.received} bytes of ${this.meta.size}`);
    }
    this.wake();
    if (this.copy !== null) {
      this.edge.manager.sourceEnded(this.copy);
      drain(this.edge);
    }
    if (this.copy === null) this.close();
  }

  /** Puts the whole object into the store, then reports how that went. */
  async commit() {
    const copy = this.copy;
    const body = new Uint8Array(this.received);
    for (const { offset, bytes } of this.chunks) body.set(bytes, offset);
    let committed = true;
    try {
      await this.edge.store.put(this.storeKey, { meta: this.meta, body });
    } catch {
      committed = false;
    }
    this.copy = null;
    // The manager answers with `finished`, which forgets the copy.
    this.edge.manager.commitFinished(copy, committed);
    drain(this.edge);
    this.close();
  }

  /** The manager cancelled the copy: stop fetching, then report that the task stopped. */
  stop() {
    const copy = this.copy;
    this.abort.abort();
    queueMicrotask(() => {
      this.edge.manager.copyStopped(copy);
      drain(this.edge);
    });
  }

  /** The copy will never be committed; readers still get their bytes if the fetch goes on. */
  discard() {
    this.copy = null;
    if (this.edge.fills.get(this.storeKey) === this) this.edge.fills.delete(this.storeKey);
    if (this.readers === 0 && !this.pinned) this.abort.abort();
    if (this.ended || this.failure) this.close();
  }

  fail(error) {
    this.failure = error;
    this.wake();
    this.close();
  }

  /** No more bytes will be stored from this fill; later misses start a new one. */
  close() {
    this.releaseSeen(); // when no copy was ever asked for
    if (this.edge.fills.get(this.storeKey) === this) this.edge.fills.delete(this.storeKey);
    this.finish();
  }

  attach() {
    this.readers += 1;
  }

  /** A reader left; if it was the last and nothing else wants the object, the fetch stops. */
  detach(early) {
    this.readers -= 1;
    if (!early || this.readers > 0 || this.pinned || this.ended) return;
    if (this.copy !== null) {
      this.edge.manager.clientClosed(this.copy);
      drain(this.edge);
    } else {
      this.abort.abort();
    }
  }

  wake() {
    const wakers = this.wakers;
    this.wakers = [];
    for (const wake of wakers) wake();
  }

  /** Bytes from `pos` (up to `end`) once they arrived; throws if they never will. */
  async bytesAt(pos, end) {
    for (;;) {
      if (pos < this.received) {
        const chunk = findChunk(this.chunks, pos);
        const from = pos - chunk.offset;
        return chunk.bytes.subarray(from, Math.min(chunk.bytes.length, end - chunk.offset));
      }
      if (this.failure) throw this.failure;
      if (this.ended) throw new Error(`origin body ended at ${this.received} bytes`);
      await new Promise((resolve) => this.wakers.push(resolve));
    }
  }
}

function findChunk(chunks, pos) {
  let lo = 0;
  let hi = chunks.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (chunks[mid].offset <= pos) lo = mid;
    else hi = mid - 1;
  }
  return chunks[lo];
}

/** A source over bytes already complete (a store hit). */
function completeSource(body) {
  return {
    attach() {},
    detach() {},
    async bytesAt(pos, end) {
      return body.subarray(pos, end);
    },
  };
}

/**
 * A HEAD that missed, or whose store answer was not definitive (`fallback`): the origin's HEAD,
 * planned like any other answer; nothing is stored.
 */
async function headFromOrigin(req, env, path, fallback) {
  let response;
  try {
    response = await fetch(new URL(path, env.ORIGIN), { method: "HEAD" });
  } catch {
    return originFailed(502, "HEAD", fallback);
  }
  if (response.status !== 200) {
    return originFailed(response.status === 404 ? 404 : 502, "HEAD", fallback);
  }
  const meta = describeObject(Object.fromEntries(response.headers));
  if (meta.size === undefined) {
    return originFailed(502, "HEAD", fallback);
  }
  if (fallback !== null && !isDefinitive(req, meta)) {
    return respond(fallback.plan, "HEAD", fallback.source);
  }
  return respond(planResponse(req, meta), "HEAD", completeSource(new Uint8Array()));
}

const encoder = new TextEncoder();

/** Renders a plan: its status and headers as planned, its body from `source`. */
function respond(plan, method, source) {
  const init = { status: plan.status, headers: plan.headers };
  const { body } = plan;
  if (body.kind === "none" || method === "HEAD") {
    return new Response(null, init);
  }
  let segments;
  switch (body.kind) {
    case "full":
      segments = [{ start: 0, end: Number(plan.headers["content-length"]) }];
      break;
    case "range":
      segments = [{ start: body.start, end: body.end }];
      break;
    case "multipart":
      segments = body.parts.flatMap((part) => [encoder.encode(part.head), { start: part.start, end: part.end }]);
      segments.push(encoder.encode(body.closing));
      break;
    default:
      throw new Error(`unknown body kind ${body.kind}`);
  }
  return new Response(segmentStream(segments, source), init);
}

/** A stream of literal byte segments and windows of `source`, read as the client pulls. */
function segmentStream(segments, source) {
  let index = 0;
  let pos = null;
  let finished = false;
  source.attach();
  const leave = (early) => {
    if (finished) return;
    finished = true;
    source.detach(early);
  };
  return new ReadableStream(
    {
      async pull(controller) {
        for (;;) {
          if (index >= segments.length) {
            controller.close();
            leave(false);
            return;
          }
          const segment = segments[index];
          if (segment instanceof Uint8Array) {
            index += 1;
            if (segment.length === 0) continue;
            controller.enqueue(segment);
            return;
          }
          pos ??= segment.start;
          if (pos >= segment.end) {
            index += 1;
            pos = null;
            continue;
          }
          let bytes;
          try {
            bytes = await source.bytesAt(pos, segment.end);
          } catch (error) {
            leave(false);
            controller.error(error);
            return;
          }
          pos += bytes.length;
          controller.enqueue(bytes);
          return;
        }
      },
      cancel() {
        leave(true);
      },
    },
    { highWaterMark: 0 },
  );
}
