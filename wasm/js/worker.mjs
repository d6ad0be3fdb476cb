// An edge worker that serves GET and HEAD of `/{namespace}/{key}` from an edge store, filling
// it from an origin (SPEC §4 and §6). It is a driver of the core's machines, as the native
// server is: the read machine (`ReadMachine`) says which tier to open, which answer stands,
// whether the store's copy has expired, what is copied into the store and how, and the
// response with its status, headers and `Cache-Status`; the backfill manager says which copies
// start, commit or are thrown away. This file moves bytes and carries out those decisions.
//
// env.ORIGIN  base URL of the origin; a miss fetches `${ORIGIN}/{namespace}/{key}` whole.
// env.STORE   the edge store: get(key) -> { meta, body } | null, put(key, { meta, body }),
//             delete(key); `meta` is an object description (`describeObject`'s shape), `body`
//             a Uint8Array. The store is tier 0 ("edge") and the origin tier 1 ("origin").
//
// A store that fails (`get` throws) is reported as a failed tier: the read goes on to the
// origin, and the origin's answer is not copied into a store that just failed. An origin that
// cannot be reached, or answers anything but 200 or 404, is a failed tier too.
//
// The origin is always read whole, and every miss of a key while a fetch of it runs joins that
// fetch, so concurrent misses make one origin fetch. A copy the manager starts is fed from it:
// a tee of a full read is committed only once the origin's body ended with the announced size
// (a client that closes early discards it), and a background copy for a ranged read keeps the
// fetch going after the client's range was sent (`ctx.waitUntil`), so the store gets the whole
// object or nothing.
import { BackfillManager, ReadMachine, describeObject, objectKey } from "rangecache-wasm";

/** The tiers, nearest first, as named in Cache-Status. */
const TIERS = ["edge", "origin"];
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
    const edge = edgeFor(env.STORE);
    const read = new Read(request, { edge, env, ctx, namespace, key, storeKey, path: url.pathname });
    try {
      return await read.respond();
    } catch (error) {
      read.end(true);
      throw error;
    }
  },
};

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
        edge.copies.get(action.copy)?.discard();
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

/** One GET or HEAD: its read machine, driven until the response, and the body it holds. */
class Read {
  constructor(request, { edge, env, ctx, namespace, key, storeKey, path }) {
    Object.assign(this, { edge, env, ctx, namespace, key, storeKey, path });
    this.method = request.method;
    // The generation is taken before any tier is opened, so a copy that began before a change
    // of the key is refused (SPEC §4).
    this.seen = edge.manager.generation(namespace, key);
    this.machine = new ReadMachine({ method: request.method, headers: Object.fromEntries(request.headers) }, { tiers: TIERS });
    /** The body of the latest tier opened: `{ tier, source }`, or null. */
    this.held = null;
    /** The origin fetch this read joined, if it opened the origin. */
    this.fill = null;
    this.ended = false;
  }

  /** Drives the machine until it serves, and renders that answer. */
  async respond() {
    for (;;) {
      const action = this.machine.pollOutput();
      if (action === null) throw new Error("the read machine asked for nothing before serving");
      switch (action.type) {
        case "openTier":
          await this.open(action.tier);
          break;
        case "dropBody":
          this.drop(action.tier);
          break;
        case "requestCopy":
          this.requestCopy();
          break;
        case "serve":
          return this.serve(action);
        default:
          throw new Error(`the read machine asked for ${action.type} before serving`);
      }
    }
  }

  /** Opens `tier` and tells the machine what it holds; the body (whole) is kept, and the one
   * held before let go (once the new one is held, so a fetch both share goes on). */
  async open(tier) {
    const previous = this.held;
    this.held = null;
    const opened = tier === STORE_TIER ? await this.openStore() : await this.openOrigin();
    previous?.source?.release(false);
    switch (opened.kind) {
      case "missed":
        this.machine.tierMissed(tier);
        break;
      case "failed":
        this.machine.tierFailed(tier);
        break;
      case "opened":
        this.held = { tier, source: opened.source };
        this.machine.tierOpened(tier, opened.meta, { body: opened.source !== null });
        break;
    }
  }

  async openStore() {
    let entry;
    try {
      entry = await this.env.STORE.get(this.storeKey);
    } catch {
      return { kind: "failed" };
    }
    if (!entry) return { kind: "missed" };
    const source = this.method === "HEAD" ? null : completeSource(entry.body);
    return { kind: "opened", meta: entry.meta, source };
  }

  async openOrigin() {
    if (this.method === "HEAD") return headOrigin(this.env, this.path);
    // A read opens the origin again for the parts of a multipart body: the fetch it joined
    // holds the whole object already (the machine checks that it is the revision planned).
    let fill = this.fill?.failure === null ? this.fill : this.edge.fills.get(this.storeKey);
    if (!fill) {
      fill = new Fill(this.edge, this.storeKey, this.env, this.path);
      this.edge.fills.set(this.storeKey, fill);
      this.ctx.waitUntil(fill.done);
    }
    this.fill = fill;
    fill.hold();
    const head = await fill.head;
    if (head !== "opened") {
      fill.release(false);
      return { kind: head };
    }
    // Without a Content-Length nothing can be planned before the end: the whole body is read
    // first.
    const meta = await fill.complete();
    if (meta === null) {
      fill.release(false);
      return { kind: "failed" };
    }
    return { kind: "opened", meta, source: fill };
  }

  drop(tier) {
    if (this.held === null || this.held.tier !== tier) return;
    this.held.source?.release(false);
    this.held = null;
  }

  /** The machine asked for a copy: the manager answers it at once, and a copy it starts is fed
   * from the origin fetch held. */
  requestCopy() {
    const answer = this.machine.requestCopy(this.edge.manager, this.seen, this.namespace, this.key);
    if (answer.type === "startCopy") this.held.source.startCopy(answer.copy, answer.mode);
    drain(this.edge);
  }

  /** Renders the machine's answer: its plan, its Cache-Status, and the bytes its body says. */
  serve({ plan, source, cacheStatus }) {
    const init = { status: plan.status, headers: { ...plan.headers, "cache-status": cacheStatus } };
    const { body } = plan;
    if (source.kind === "nothing" || this.method === "HEAD") {
      this.end(false);
      return new Response(null, init);
    }
    const held = this.held.source;
    let chunks;
    switch (body.kind) {
      case "full":
        chunks = windowOf(held, 0, Number(plan.headers["content-length"]));
        break;
      case "range":
        chunks = windowOf(held, body.start, body.end);
        break;
      case "multipart":
        chunks = this.parts(body);
        break;
      default:
        throw new Error(`a body of kind ${body.kind} from a tier`);
    }
    return new Response(streamOf(chunks, (early) => this.end(early)), init);
  }

  /** A multipart body, part by part as the machine asks: each part after the first is opened
   * again, pinned to the revision planned. */
  async *parts(body) {
    for (;;) {
      const action = this.machine.pollOutput();
      if (action === null) {
        if (!this.machine.isDone()) throw new Error("the read machine stopped in a multipart body");
        yield encoder.encode(body.closing);
        return;
      }
      switch (action.type) {
        case "sendPart": {
          const part = body.parts[action.index];
          yield encoder.encode(part.head);
          yield* windowOf(this.held.source, part.start, part.end);
          this.machine.partSent(action.index);
          break;
        }
        case "openTier":
          await this.open(action.tier);
          break;
        case "dropBody":
          this.drop(action.tier);
          break;
        case "abort":
          throw new Error(`multipart body cut short: ${action.why}`);
        default:
          throw new Error(`the read machine asked for ${action.type} in a multipart body`);
      }
    }
  }

  /** The response is done (or abandoned, `early`): its body is let go and its machine freed. */
  end(early) {
    if (this.ended) return;
    this.ended = true;
    this.held?.source?.release(early);
    this.held = null;
    this.machine.free();
    this.seen.free();
  }
}

/** The origin's answer to a HEAD: its metadata only. */
async function headOrigin(env, path) {
  let response;
  try {
    response = await fetch(new URL(path, env.ORIGIN), { method: "HEAD" });
  } catch {
    return { kind: "failed" };
  }
  if (response.status === 404) return { kind: "missed" };
  if (response.status !== 200) return { kind: "failed" };
  const meta = describeObject(Object.fromEntries(response.headers));
  if (meta.size === undefined) return { kind: "failed" };
  return { kind: "opened", meta, source: null };
}

/**
 * One fetch of an object from the origin, shared by every miss of its key while it runs, and
 * the copy of it into the store when the manager starts one.
 */
class Fill {
  constructor(edge, storeKey, env, path) {
    this.edge = edge;
    this.storeKey = storeKey;
    this.chunks = [];
    this.received = 0;
    this.ended = false;
    this.failure = null;
    this.holders = 0;
    this.pinned = false;
    this.copy = null; // the manager's copy number while the copy may still commit
    this.closed = false;
    this.wakers = [];
    this.abort = new AbortController();
    this.reader = null; // the origin body's reader, once the head is in
    let finish;
    this.done = new Promise((resolve) => (finish = resolve));
    this.finish = finish;
    this.head = this.fetchHead(env, path);
  }

  /** What the origin answered, as the read machine hears it: "opened" (a 200, whose body is
   * then pumped), "missed" (a 404) or "failed" (unreachable, or any other answer). */
  async fetchHead(env, path) {
    let response;
    try {
      response = await fetch(new URL(path, env.ORIGIN), { signal: this.abort.signal });
    } catch {
      this.close();
      return "failed";
    }
    if (response.status !== 200) {
      await response.body?.cancel();
      this.close();
      return response.status === 404 ? "missed" : "failed";
    }
    this.meta = describeObject(Object.fromEntries(response.headers));
    this.pump(response.body.getReader());
    return "opened";
  }

  /** The object's description once its size is known: at once with a Content-Length, else at
   * the end of the body; null if the body failed before. */
  async complete() {
    if (this.meta.size !== undefined) return this.meta;
    while (!this.ended && this.failure === null) await new Promise((resolve) => this.wakers.push(resolve));
    if (this.failure !== null) return null;
    this.meta = { ...this.meta, size: this.received };
    return this.meta;
  }

  hold() {
    this.holders += 1;
  }

  /** A read let go of the fetch. One that went away `early` (its client closed) ends a tee it
   * was the last reader of (SPEC §4), or the fetch if nothing else wants it; otherwise the fetch
   * stops at its next chunk once nobody holds it and no copy runs. */
  release(early) {
    this.holders -= 1;
    if (!early || this.holders > 0 || this.pinned || this.ended || this.failure !== null) return;
    if (this.copy !== null) {
      this.edge.manager.clientClosed(this.copy);
      drain(this.edge);
      return;
    }
    this.abandon();
  }

  /** Stops the fetch; a read of its body waiting for a chunk ends at once. */
  abandon() {
    this.abort.abort();
    this.reader?.cancel().catch(() => {});
  }

  /** The manager started copy `copy` of this object: it is fed what arrived so far, then every
   * chunk; a background copy keeps the fetch going whoever reads it. */
  startCopy(copy, mode) {
    this.copy = copy;
    this.edge.copies.set(copy, this);
    if (mode === "background") this.pinned = true;
    // Chunk by chunk, as the pump reports them, so the backlog bound sees what it would have.
    for (const { bytes } of this.chunks) {
      if (this.copy !== copy) return;
      this.report((manager) => manager.sourceRead(copy, bytes.length));
      this.report((manager) => manager.chunkWritten(copy, bytes.length));
    }
    if (this.ended) this.report((manager) => manager.sourceEnded(copy));
    else if (this.failure !== null) this.report((manager) => manager.sourceFailed(copy));
  }

  async pump(reader) {
    this.reader = reader;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (this.copy === null && this.holders === 0 && !this.pinned) {
          // No copy and nobody reading: stop.
          this.abandon();
          this.fail(new Error("origin fetch abandoned: no reader and no copy"));
          return;
        }
        this.chunks.push({ offset: this.received, bytes: value });
        this.received += value.length;
        this.wake();
        // The store is written at commit from these chunks, so a chunk read is also written.
        this.report((manager, copy) => {
          manager.sourceRead(copy, value.length);
          manager.chunkWritten(copy, value.length);
        });
      }
    } catch (error) {
      this.report((manager, copy) => manager.sourceFailed(copy));
      this.fail(error);
      return;
    }
    this.ended = true;
    if (this.meta.size !== undefined && this.received !== this.meta.size) {
      this.failure = new Error(`origin sent ${this.received} bytes of ${this.meta.size}`);
    }
    this.wake();
    this.report((manager, copy) => manager.sourceEnded(copy));
    if (this.copy === null) this.close();
  }

  /** Reports an event about the copy, if one is running, and carries out what follows. */
  report(event) {
    if (this.copy === null) return;
    event(this.edge.manager, this.copy);
    drain(this.edge);
  }

  /** Puts the whole object into the store, then reports how that went. */
  async commit() {
    const copy = this.copy;
    const body = new Uint8Array(this.received);
    for (const { offset, bytes } of this.chunks) body.set(bytes, offset);
    let committed = true;
    try {
      await this.edge.store.put(this.storeKey, { meta: { ...this.meta, size: this.received }, body });
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
    this.pinned = false;
    if (this.edge.fills.get(this.storeKey) === this) this.edge.fills.delete(this.storeKey);
    if (this.holders === 0) this.abandon();
    if (this.ended || this.failure) this.close();
  }

  fail(error) {
    this.failure = error;
    this.wake();
    this.close();
  }

  /** No more bytes will be stored from this fetch; later misses start a new one. */
  close() {
    if (this.edge.fills.get(this.storeKey) === this) this.edge.fills.delete(this.storeKey);
    if (this.closed) return;
    this.closed = true;
    this.finish();
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
    release() {},
    async bytesAt(pos, end) {
      return body.subarray(pos, end);
    },
  };
}

const encoder = new TextEncoder();

/** The bytes `[start, end)` of `source`, as they arrive. */
async function* windowOf(source, start, end) {
  for (let pos = start; pos < end; ) {
    const bytes = await source.bytesAt(pos, end);
    pos += bytes.length;
    yield bytes;
  }
}

/** A stream of the chunks `chunks` yields, read as the client pulls; `done(early)` once over. */
function streamOf(chunks, done) {
  let over = false;
  const finish = (early) => {
    if (over) return;
    over = true;
    done(early);
  };
  return new ReadableStream(
    {
      async pull(controller) {
        for (;;) {
          let next;
          try {
            next = await chunks.next();
          } catch (error) {
            finish(false);
            controller.error(error);
            return;
          }
          if (next.done) {
            finish(false);
            controller.close();
            return;
          }
          if (next.value.length > 0) {
            controller.enqueue(next.value);
            return;
          }
        }
      },
      cancel() {
        finish(true);
        // Not awaited: the generator may wait for bytes that will never come.
        chunks.return().catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}
