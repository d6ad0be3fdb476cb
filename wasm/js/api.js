// The package's functions over the raw exports of either glue (Node's or the web one).
//
// This file checks arguments and translates shapes; it decides nothing. Every call has the one
// layout of wasm/src/wire.rs: the call's strings are encoded straight into a buffer in wasm
// memory (fields separated by NUL), its numbers passed as arguments, and the answer read from
// wasm memory as numbers and one short text, so a call allocates nothing at the boundary and
// decodes only what is not a known constant. The strings that cross as numbers (field names,
// answer types, reasons, event codes) come from `wire.js`, which `cargo xtask wasm` generates
// from the Rust table, so this file and the module cannot disagree on them.
import { CODE, KNOWN } from "./wire.js";

const SEP = "\0";

// Codes this file compares against on every call, held as constants.
const BODY_NONE = CODE.none;
const BODY_FULL = CODE.full;
const BODY_RANGE = CODE.range;
const BODY_MULTIPART = CODE.multipart;

/** The public functions, bound to the raw exports `raw` of an instantiated glue. */
export function bind(raw) {
  // The module's memory and the buffers shared with it (wasm/src/lib.rs): views are made again
  // when the memory grew, which detaches the old ones. Taken on first use, since the web glue is
  // initialised after bind().
  let memory = null;
  let bytes = null;
  let nums = null;
  let input = null;
  let inputPtr = 0;
  let inputCap = 0;
  // Index in `nums` of the lengths of planRaw's fixed fields (see Boundary in lib.rs).
  let lensAt = -1;
  let inputSize = 0;
  // The object's strings as encoded, which a plan refers to instead of sending them back:
  // entity-tag, date, expiry, then each stored name and value.
  const refs = [];
  // The last object a plan succeeded for, as it was read: the number the module gave it, its
  // validators' and expiry's values, and its stored fields' names and values in order. While the
  // module keeps it parsed (`kept`), a plan for an object holding exactly these strings sends the
  // request alone and names the object by its number (planRaw's `kept` in lib.rs).
  const last = { kept: false, id: 0, etag: undefined, lastModified: undefined, expires: undefined, names: [], values: [] };
  // planRaw's `kept` for the input encodeInput wrote: the kept object's number when the input
  // holds the request alone, else 0.
  let objectArg = 0;
  // The raw manager behind each BackfillManager, for ReadMachine.requestCopy.
  const managers = new WeakMap();

  function views() {
    if (memory === null) {
      memory = raw.memoryRaw();
      lensAt = raw.lensBuffer() / 8;
    }
    if (bytes === null || bytes.byteLength === 0) {
      bytes = new Uint8Array(memory.buffer);
      nums = new Float64Array(memory.buffer);
      input = bytes.subarray(inputPtr, inputPtr + inputCap);
    }
  }

  /** Encodes `text` into the input buffer; returns the number of bytes written. */
  function encode(text) {
    // Three bytes per UTF-16 unit is the most UTF-8 can take.
    const need = text.length * 3;
    if (need > inputCap) {
      inputCap = Math.max(need, 1024);
      inputPtr = raw.inputBuffer(inputCap);
      bytes = null;
    }
    views();
    return encoder.encodeInto(text, input).written;
  }

  /** Reads an answer (see wire.rs) from the address `ptr` the module returned. */
  const reader = {
    n: null,
    at: 0,
    textPtr: 0,
    textLen: 0,
    text: null,
    start(ptr) {
      views();
      this.n = nums;
      this.at = ptr / 8 + 2;
      this.textPtr = nums[ptr / 8];
      this.textLen = nums[ptr / 8 + 1];
      this.text = null;
      return this;
    },
    num() {
      return this.n[this.at++];
    },
    /** A string, or undefined when absent. */
    str() {
      const a = this.n[this.at];
      const b = this.n[this.at + 1];
      this.at += 2;
      if (a === -1) return KNOWN[b];
      if (a === -2) return refs[b];
      if (a < 0) return undefined;
      if (this.text === null) {
        this.text = this.textLen === 0 ? "" : decoder.decode(bytes.subarray(this.textPtr, this.textPtr + this.textLen));
      }
      // Byte offsets are offsets into the decoded text when it is all ASCII.
      if (this.text.length === this.textLen) return this.text.slice(a, a + b);
      return decoder.decode(bytes.subarray(this.textPtr + a, this.textPtr + a + b));
    },
    /** A code, as the string it stands for. */
    code() {
      return KNOWN[this.n[this.at++]];
    },
  };

  /** A plan (status, headers, body) from the reader (see wasm/src/plan.rs). */
  function readPlan(r) {
    const status = r.num();
    const headers = {};
    for (let count = r.num(); count > 0; count--) {
      const name = r.str();
      headers[name] = r.str();
    }
    return { status, headers, body: readBody(r) };
  }

  function readBody(r) {
    switch (r.num()) {
      case BODY_NONE:
        return { kind: "none" };
      case BODY_FULL:
        return { kind: "full" };
      case BODY_RANGE:
        return { kind: "range", start: r.num(), end: r.num() };
      case BODY_MULTIPART: {
        const boundary = r.str();
        const closing = r.str();
        const parts = [];
        for (let count = r.num(); count > 0; count--) {
          const start = r.num();
          const end = r.num();
          const head = r.str();
          parts.push({ start, end, headers: partFields(head), head });
        }
        return { kind: "multipart", boundary, parts, closing };
      }
      default:
        throw new Error("rangecache-wasm: unknown body kind");
    }
  }

  /** The manager's answer to a copy request (see wasm/src/backfill.rs). */
  function readCopyAnswer(ptr) {
    const r = reader.start(ptr);
    const type = r.code();
    if (type === "startCopy") {
      return { type, copy: r.num(), namespace: r.str(), key: r.str(), from: r.num(), mode: r.str() };
    }
    const out = { type, namespace: r.str(), key: r.str(), why: r.str() };
    const copy = r.num();
    if (copy >= 0) out.copy = copy;
    return out;
  }

  /** True if `object` holds exactly the strings of the last object planned (`last`). */
  function sameAsLast(object) {
    if (!last.kept || (object.etag ?? undefined) !== last.etag) return false;
    if ((object.lastModified ?? undefined) !== last.lastModified) return false;
    if ((object.expires ?? undefined) !== last.expires) return false;
    const map = object.headers;
    if (map === undefined || map === null) return last.names.length === 0;
    if (typeof map !== "object" || Array.isArray(map)) return false;
    const names = Object.keys(map);
    if (names.length !== last.names.length) return false;
    for (let i = 0; i < names.length; i++) {
      if (names[i] !== last.names[i] || map[names[i]] !== last.values[i]) return false;
    }
    return true;
  }

  /** Checks `request` and `object` and encodes them into the input buffer (the request alone
   * when the object is the last one planned); returns the length. */
  function encodeInput(request, object) {
    const fields = requestFields(request);
    checkObject(object, "object");
    inputSize = checkSize(object.size, "object.size");
    const same = sameAsLast(object);
    last.kept = false;
    if (same) {
      objectArg = last.id;
      return encodeRequest(fields, undefined, undefined, undefined, "");
    }
    objectArg = 0;
    const etag = optionalString(object.etag, "object.etag");
    const lastModified = optionalString(object.lastModified, "object.lastModified");
    const expires = optionalString(object.expires, "object.expires");
    refs.length = 0;
    refs.push(etag, lastModified, expires);
    // What is encoded is remembered as read (`last.names` and `last.values` by encodeFields).
    const stored = encodeFields(object.headers, "object.headers", refs, last);
    last.etag = etag;
    last.lastModified = lastModified;
    last.expires = expires;
    return encodeRequest(fields, etag, lastModified, expires, SEP + stored);
  }

  /** Encodes the request `fields`, then the object's validators, expiry and `stored` fields
   * (each given or absent); returns the length. */
  function encodeRequest(fields, etag, lastModified, expires, stored) {
    const [method, ifMatch, ifNoneMatch, ifModifiedSince, ifUnmodifiedSince, range, ifRange] = fields;
    const text =
      method +
      field(ifMatch) +
      field(ifNoneMatch) +
      field(ifModifiedSince) +
      field(ifUnmodifiedSince) +
      field(range) +
      field(ifRange) +
      field(etag) +
      field(lastModified) +
      field(expires) +
      stored;
    const written = encode(text);
    // Where each fixed field ends is known here, in UTF-16 units: the module's byte offsets
    // when the text is all ASCII (any other character takes more bytes than units).
    const n = nums;
    const l = lensAt;
    if (written === text.length) {
      n[l] = method.length;
      n[l + 1] = ifMatch === undefined ? -1 : ifMatch.length;
      n[l + 2] = ifNoneMatch === undefined ? -1 : ifNoneMatch.length;
      n[l + 3] = ifModifiedSince === undefined ? -1 : ifModifiedSince.length;
      n[l + 4] = ifUnmodifiedSince === undefined ? -1 : ifUnmodifiedSince.length;
      n[l + 5] = range === undefined ? -1 : range.length;
      n[l + 6] = ifRange === undefined ? -1 : ifRange.length;
      n[l + 7] = etag === undefined ? -1 : etag.length;
      n[l + 8] = lastModified === undefined ? -1 : lastModified.length;
      n[l + 9] = expires === undefined ? -1 : expires.length;
    } else {
      n[l] = -1;
    }
    return written;
  }

  function planResponse(request, object) {
    let at = raw.planRaw(encodeInput(request, object), inputSize, objectArg) / 8;
    if (at === 0) {
      // The module no longer keeps this object (another caller of the raw exports planned in
      // between): send it whole.
      at = raw.planRaw(encodeInput(request, object), inputSize, objectArg) / 8;
    }
    if (objectArg === 0) last.id = raw.keptObjectRaw();
    last.kept = true;
    views();
    const n = nums;
    const textPtr = n[at];
    const textLen = n[at + 1];
    const text = textLen === 0 ? "" : decoder.decode(bytes.subarray(textPtr, textPtr + textLen));
    // Byte offsets are offsets into the decoded text when it is all ASCII (any other character
    // takes more bytes than UTF-16 units); else each string is decoded on its own.
    const ascii = text.length === textLen;
    // A string of the answer: from the text, a constant, or one of the object's own.
    const str = (a, b) =>
      a >= 0
        ? ascii
          ? text.slice(a, a + b)
          : decoder.decode(bytes.subarray(textPtr + a, textPtr + a + b))
        : a === -1
          ? KNOWN[b]
          : refs[b];
    const status = n[at + 2];
    const headers = {};
    let i = at + 4;
    for (let count = n[at + 3]; count > 0; count--, i += 4) {
      headers[str(n[i], n[i + 1])] = str(n[i + 2], n[i + 3]);
    }
    let body;
    switch (n[i]) {
      case BODY_NONE:
        body = { kind: "none" };
        break;
      case BODY_FULL:
        body = { kind: "full" };
        break;
      case BODY_RANGE:
        body = { kind: "range", start: n[i + 1], end: n[i + 2] };
        break;
      case BODY_MULTIPART: {
        const boundary = str(n[i + 1], n[i + 2]);
        const closing = str(n[i + 3], n[i + 4]);
        const parts = [];
        i += 6;
        for (let count = n[i - 1]; count > 0; count--, i += 4) {
          const head = str(n[i + 2], n[i + 3]);
          parts.push({ start: n[i], end: n[i + 1], headers: partFields(head), head });
        }
        body = { kind: "multipart", boundary, parts, closing };
        break;
      }
      default:
        throw new Error(`rangecache-wasm: unknown body kind ${n[i]}`);
    }
    return { status, headers, body };
  }

  function resolveRange(rangeHeader, size) {
    const range = optionalString(rangeHeader, "rangeHeader");
    const checked = checkSize(size, "size");
    const len = range === undefined ? 0 : encode(range);
    const r = reader.start(raw.resolveRaw(len, range !== undefined, checked));
    const kind = r.code();
    if (kind !== "partial") return { kind };
    const ranges = [];
    for (let count = r.num(); count > 0; count--) ranges.push({ start: r.num(), end: r.num() });
    return { kind, ranges };
  }

  function objectKey(namespace, key) {
    checkString(namespace, "namespace");
    checkString(key, "key");
    return reader.start(raw.objectKeyRaw(encode(namespace + SEP + key))).str() ?? null;
  }

  function describeObject(headers) {
    const r = reader.start(raw.describeRaw(encode(encodeFields(headers, "headers"))));
    const out = {};
    const size = r.num();
    const etag = r.str();
    const lastModified = r.str();
    const expires = r.str();
    if (size >= 0) out.size = size;
    if (etag !== undefined) out.etag = etag;
    if (lastModified !== undefined) out.lastModified = lastModified;
    if (expires !== undefined) out.expires = expires;
    out.headers = {};
    for (let count = r.num(); count > 0; count--) {
      const name = r.str();
      out.headers[name] = r.str();
    }
    return out;
  }

  /** The key `namespace, key` of a call, checked and encoded; returns the length. */
  function encodeKey(namespace, key, what) {
    checkString(namespace, `${what}namespace`);
    checkString(key, `${what}key`);
    return encode(namespace + SEP + key);
  }

  /**
   * The backfill manager of SPEC §4 over the raw class: a copy request is answered at once;
   * each event method checks its arguments and pushes one input; `pollOutput()` answers one
   * action at a time, `null` when none is left.
   */
  class BackfillManager {
    #raw;

    constructor(config) {
      let maxInFlight, maxBacklogBytes;
      if (config !== undefined && config !== null) {
        checkObject(config, "config");
        if (config.maxInFlight !== undefined) maxInFlight = checkSize(config.maxInFlight, "config.maxInFlight");
        if (config.maxBacklogBytes !== undefined) {
          maxBacklogBytes = checkSize(config.maxBacklogBytes, "config.maxBacklogBytes");
        }
      }
      this.#raw = new raw.BackfillRaw(maxInFlight, maxBacklogBytes);
      managers.set(this, this.#raw);
    }

    free() {
      this.#raw.free();
    }

    generation(namespace, key) {
      return this.#raw.generation(encodeKey(namespace, key, ""));
    }

    copyRequested(seen, request) {
      checkSeen(seen);
      checkObject(request, "request");
      checkString(request.namespace, "request.namespace");
      checkString(request.key, "request.key");
      const from = checkSize(request.from, "request.from");
      checkObject(request.object, "request.object");
      const size = checkSize(request.object.size, "request.object.size");
      if (request.mode !== "tee" && request.mode !== "background") {
        throw new TypeError(`request.mode must be "tee" or "background", got ${JSON.stringify(request.mode)}`);
      }
      const len = encode(request.namespace + SEP + request.key + SEP + validators(request.object, "request.object"));
      return readCopyAnswer(this.#raw.copyRequested(seen, len, from, size, request.mode === "background"));
    }

    sourceRead(copy, bytes) {
      this.#event(CODE.sourceRead, copy, checkSize(bytes, "bytes"));
    }
    chunkWritten(copy, bytes) {
      this.#event(CODE.chunkWritten, copy, checkSize(bytes, "bytes"));
    }
    sourceEnded(copy) {
      this.#event(CODE.sourceEnded, copy, 0);
    }
    sourceFailed(copy) {
      this.#event(CODE.sourceFailed, copy, 0);
    }
    writerFailed(copy) {
      this.#event(CODE.writerFailed, copy, 0);
    }
    clientClosed(copy) {
      this.#event(CODE.clientClosed, copy, 0);
    }
    copyStopped(copy) {
      this.#event(CODE.copyStopped, copy, 0);
    }
    commitFinished(copy, committed) {
      if (typeof committed !== "boolean") {
        throw new TypeError(`committed must be a boolean, got ${describe(committed)}`);
      }
      this.#event(CODE.commitFinished, copy, committed ? 1 : 0);
    }

    #event(code, copy, bytes) {
      this.#raw.copyEvent(code, checkSize(copy, "copy"), bytes);
    }

    mutationStarted(namespace, key, kind) {
      this.#mutation(false, namespace, key, kind);
    }
    mutationEnded(namespace, key, kind) {
      this.#mutation(true, namespace, key, kind);
    }

    #mutation(ended, namespace, key, kind) {
      if (!MUTATION_KINDS.includes(kind)) {
        throw new TypeError(`kind must be "write", "delete" or "invalidate", got ${JSON.stringify(kind)}`);
      }
      this.#raw.mutation(ended, encodeKey(namespace, key, ""), CODE[kind]);
    }

    shutdownRequested() {
      this.#raw.shutdownRequested();
    }

    pollOutput() {
      const ptr = this.#raw.pollOutput();
      if (ptr === 0) return null;
      const r = reader.start(ptr);
      const type = r.code();
      switch (type) {
        case "cancel":
        case "commit":
        case "finished":
          return { type, copy: r.num() };
        case "discard":
          return { type, copy: r.num(), why: r.str() };
        case "proceedWithMutation":
          return { type, namespace: r.str(), key: r.str() };
        case "shutdownComplete":
          return { type };
        default:
          throw new Error(`rangecache-wasm: unknown backfill action ${JSON.stringify(type)}`);
      }
    }

    counters() {
      const r = reader.start(this.#raw.counters());
      const out = {
        started: r.num(),
        deduped: r.num(),
        committed: r.num(),
        cancelled: r.num(),
        skipped: r.num(),
        inFlight: r.num(),
        discarded: {},
      };
      for (let count = r.num(); count > 0; count--) {
        const why = r.str();
        out.discarded[why] = r.num();
      }
      return out;
    }

    liveCopy(namespace, key) {
      return this.#raw.liveCopy(encodeKey(namespace, key, "")) ?? null;
    }

    isShuttingDown() {
      return this.#raw.isShuttingDown();
    }

    isStopped() {
      return this.#raw.isStopped();
    }
  }

  /**
   * The core's tiered read (SPEC §4) over the raw class: the host opens the tiers it is asked to
   * open and reports what each answered; the machine decides which answer stands, what is
   * copied into tier 0, and the response with its Cache-Status. After each event method, call
   * `pollOutput()` until it returns `null` and carry out every action.
   */
  class ReadMachine {
    #raw;

    constructor(request, options) {
      const [method, ...conditions] = requestFields(request).slice();
      checkObject(options, "options");
      const { tiers } = options;
      if (!Array.isArray(tiers) || tiers.length === 0) {
        throw new TypeError(`options.tiers must be a non-empty array of tier names, got ${describe(tiers)}`);
      }
      tiers.forEach((name, i) => {
        checkString(name, `options.tiers[${i}]`);
        if (name === "" || name.includes(SEP)) throw new TypeError(`options.tiers[${i}] is no tier name`);
      });
      const now = options.now === undefined ? Date.now() : checkSize(options.now, "options.now");
      const len = encode(method + conditions.map(field).join("") + SEP + tiers.join(SEP));
      this.#raw = new raw.ReadRaw(len, now);
    }

    free() {
      this.#raw.free();
    }

    pollOutput() {
      const ptr = this.#raw.pollOutput();
      if (ptr === 0) return null;
      const r = reader.start(ptr);
      const type = r.code();
      switch (type) {
        case "openTier": {
          const tier = r.num();
          const start = r.num();
          const end = r.num();
          const span = start >= 0 ? { start, end: end < 0 ? null : end } : { last: end };
          const conditions = {};
          const ifMatch = r.str();
          const ifNoneMatch = r.str();
          const ifModifiedSince = r.str();
          const ifUnmodifiedSince = r.str();
          if (ifMatch !== undefined) conditions.ifMatch = ifMatch;
          if (ifNoneMatch !== undefined) conditions.ifNoneMatch = ifNoneMatch;
          if (ifModifiedSince !== undefined) conditions.ifModifiedSince = ifModifiedSince;
          if (ifUnmodifiedSince !== undefined) conditions.ifUnmodifiedSince = ifUnmodifiedSince;
          return { type, tier, span, conditions };
        }
        case "requestCopy":
          return { type, from: r.num(), mode: r.str() };
        case "serve": {
          const kind = r.str();
          const tier = r.num();
          const cacheStatus = r.str();
          const plan = readPlan(r);
          return { type, plan, source: { kind, tier: tier < 0 ? null : tier }, cacheStatus };
        }
        case "sendPart":
          return { type, index: r.num() };
        case "abort":
          return { type, why: r.str() };
        case "dropBody":
          return { type, tier: r.num() };
        default:
          throw new Error(`rangecache-wasm: unknown read action ${JSON.stringify(type)}`);
      }
    }

    /** Tier `tier` holds `object`; `options.body` false when no body of it is in hand (HEAD). */
    tierOpened(tier, object, options) {
      checkSize(tier, "tier");
      checkObject(object, "object");
      const size = checkSize(object.size, "object.size");
      let body = true;
      if (options !== undefined && options !== null) {
        checkObject(options, "options");
        if (options.body !== undefined) {
          if (typeof options.body !== "boolean") throw new TypeError(`options.body must be a boolean, got ${describe(options.body)}`);
          body = options.body;
        }
      }
      let text = validators(object, "object");
      const stored = encodeFields(object.headers, "object.headers");
      if (stored !== "") text += SEP + stored;
      this.#raw.input(CODE.tierOpened, tier, encode(text), size, body);
    }

    tierMissed(tier) {
      this.#raw.input(CODE.tierMissed, checkSize(tier, "tier"), 0, 0, false);
    }

    tierFailed(tier) {
      this.#raw.input(CODE.tierFailed, checkSize(tier, "tier"), 0, 0, false);
    }

    partSent(index) {
      this.#raw.input(CODE.partSent, checkSize(index, "index"), 0, 0, false);
    }

    /**
     * Hands the copy the latest `requestCopy` action asked for to `manager`, with the
     * generation `seen` of `namespace`/`key` taken before any tier was opened; the machine is
     * told the answer, which is returned as `copyRequested` returns it.
     */
    requestCopy(manager, seen, namespace, key) {
      const managerRaw = managers.get(manager);
      if (managerRaw === undefined) {
        throw new TypeError(`manager must be a BackfillManager, got ${describe(manager)}`);
      }
      checkSeen(seen);
      const len = encodeKey(namespace, key, "");
      return readCopyAnswer(this.#raw.requestCopy(managerRaw, seen, len));
    }

    isDone() {
      return this.#raw.isDone();
    }
  }

  function checkSeen(seen) {
    if (!(seen instanceof raw.Seen)) {
      throw new TypeError(`seen must be what generation() returned, got ${describe(seen)}`);
    }
  }

  return {
    planResponse,
    resolveRange,
    objectKey,
    describeObject,
    BackfillManager,
    ReadMachine,
    Seen: raw.Seen,
  };
}

const MUTATION_KINDS = ["write", "delete", "invalidate"];

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What `requestFields` answers, reused from call to call (planResponse runs per request). */
const FIELDS = new Array(7);

/** The method and the six fields a read depends on, checked, names matched case-insensitively;
 * the array is reused by the next call. */
function requestFields(request) {
  checkObject(request, "request");
  const { method } = request;
  if (method === undefined || method === null) {
    throw new TypeError('request.method is missing; expected a string such as "GET"');
  }
  checkString(method, "request.method");
  let ifMatch, ifNoneMatch, ifModifiedSince, ifUnmodifiedSince, range, ifRange;
  const { headers } = request;
  if (headers !== undefined && headers !== null) {
    checkObject(headers, "request.headers");
    for (const name of Object.keys(headers)) {
      const value = headers[name];
      if (typeof value !== "string") {
        throw new TypeError(`request.headers[${JSON.stringify(name)}] must be a string, got ${describe(value)}`);
      }
      // Names are matched case-insensitively; a repeated field is joined (RFC 9110 §5.3).
      // Only names of the six lengths below can matter.
      switch (name.length) {
        case 5:
        case 8:
        case 13:
        case 17:
        case 19:
          break;
        default:
          continue;
      }
      switch (name.toLowerCase()) {
        case "if-match":
          ifMatch = join(ifMatch, value);
          break;
        case "if-none-match":
          ifNoneMatch = join(ifNoneMatch, value);
          break;
        case "if-modified-since":
          ifModifiedSince = join(ifModifiedSince, value);
          break;
        case "if-unmodified-since":
          ifUnmodifiedSince = join(ifUnmodifiedSince, value);
          break;
        case "range":
          range = join(range, value);
          break;
        case "if-range":
          ifRange = join(ifRange, value);
          break;
      }
    }
  }
  FIELDS[0] = method;
  FIELDS[1] = ifMatch;
  FIELDS[2] = ifNoneMatch;
  FIELDS[3] = ifModifiedSince;
  FIELDS[4] = ifUnmodifiedSince;
  FIELDS[5] = range;
  FIELDS[6] = ifRange;
  return FIELDS;
}

/** An object's entity-tag, Last-Modified and expiry as three optional input fields. */
function validators(object, what) {
  const etag = optionalString(object.etag, `${what}.etag`);
  const lastModified = optionalString(object.lastModified, `${what}.lastModified`);
  const expires = optionalString(object.expires, `${what}.expires`);
  return field(etag).slice(1) + field(lastModified) + field(expires);
}

/** The fields of a part's head (`--boundary` line, then `Name: value` lines), names lower-cased. */
function partFields(head) {
  const out = {};
  for (const line of head.split("\r\n")) {
    const colon = line.indexOf(": ");
    if (colon > 0) out[line.slice(0, colon).toLowerCase()] = line.slice(colon + 2);
  }
  return out;
}

/**
 * A plain object of string values as `name NUL value NUL ...`, each name and value also pushed
 * onto `refs` when given. A field whose name is empty or whose name or value holds NUL is left
 * out: it is no valid field (RFC 9110 §5.5), and the core would drop it. Each value is read once,
 * into `seen` (its `names` and `values`, in order), so that what is encoded is what `seen` says
 * even of an object whose getters answer differently each time.
 */
function encodeFields(map, what, refs, seen = { names: [], values: [] }) {
  const { names, values } = seen;
  names.length = 0;
  values.length = 0;
  if (map === undefined || map === null) return "";
  checkObject(map, what);
  for (const name of Object.keys(map)) {
    const value = map[name];
    if (typeof value !== "string") {
      throw new TypeError(`${what}[${JSON.stringify(name)}] must be a string, got ${describe(value)}`);
    }
    names.push(name);
    values.push(value);
  }
  let out = "";
  let lowerCase = true;
  const first = refs?.length;
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    const value = values[i];
    if (!isField(name, value)) continue;
    lowerCase &&= name === name.toLowerCase();
    out += out === "" ? `${name}${SEP}${value}` : `${SEP}${name}${SEP}${value}`;
    refs?.push(name, value);
  }
  if (lowerCase) return out; // the keys of an object are unique: no field repeats
  if (refs) refs.length = first;
  // Names that differ only in case are one field, joined (RFC 9110 §5.3).
  const joined = Object.create(null);
  for (let i = 0; i < names.length; i++) {
    const name = names[i];
    const value = values[i];
    if (!isField(name, value)) continue;
    const low = name.toLowerCase();
    joined[low] = low in joined ? `${joined[low]}, ${value}` : value;
  }
  const entries = Object.entries(joined);
  for (const [name, value] of entries) refs?.push(name, value);
  return entries.map(([name, value]) => `${name}${SEP}${value}`).join(SEP);
}

/** False for a field encodeFields leaves out: an empty name, or NUL in the name or value. */
function isField(name, value) {
  return name !== "" && !name.includes(SEP) && !value.includes(SEP);
}

/**
 * One optional input field: a separator, then nothing when absent or `=` and the value. A NUL
 * inside a value becomes U+0001: either makes the field invalid (RFC 9110 §5.5), so the core
 * answers the same, and the separator stays unambiguous.
 */
function field(value) {
  if (value === undefined) return SEP;
  return `${SEP}=${value.includes(SEP) ? value.replaceAll(SEP, "\u0001") : value}`;
}

function join(joined, value) {
  return joined === undefined ? value : `${joined}, ${value}`;
}

function checkObject(value, what) {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(`${what} must be an object, got ${describe(value)}`);
  }
}

function checkString(value, what) {
  if (value === undefined || value === null) throw new TypeError(`${what} is missing`);
  if (typeof value !== "string") throw new TypeError(`${what} must be a string, got ${describe(value)}`);
}

function optionalString(value, what) {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw new TypeError(`${what} must be a string, got ${describe(value)}`);
  return value;
}

function checkSize(value, what) {
  if (typeof value !== "number") throw new TypeError(`${what} must be a number, got ${describe(value)}`);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`${what} must be a non-negative integer no larger than Number.MAX_SAFE_INTEGER, got ${value}`);
  }
  return value;
}

function describe(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "number") return `the number ${value}`;
  if (typeof value === "boolean") return `the boolean ${value}`;
  return typeof value;
}
