// The package's functions over the raw exports of either glue (Node's or the web one).
//
// This file checks arguments and translates shapes; it decides nothing. Arguments cross into
// wasm as plain strings and numbers, and each answer comes back as one string of fields
// separated by NUL (wasm/src/plan.rs describes the layouts), because building the result
// object field by field from Rust costs a boundary crossing and a UTF-8 decode per name and
// value, which is ten times the cost of the plan itself. planResponse, the call made for every
// request, goes further: its input is encoded straight into a buffer in wasm memory and its
// answer read from there as numbers and one short text, so the call allocates nothing at the
// boundary and decodes only what the plan did not echo from the object.

const SEP = "\0";

// Strings the wire sends as a code (see KNOWN in wasm/src/plan.rs, same order): constant
// strings make the headers object as cheap to build as a literal.
const KNOWN = [
  "accept-ranges",
  "content-length",
  "content-range",
  "content-type",
  "etag",
  "last-modified",
  "cache-control",
  "expires",
  "bytes",
];

/** The public functions, bound to the raw exports `raw` of an instantiated glue. */
export function bind(raw) {
  // The module's memory and the buffers planRaw shares with this file (wasm/src/lib.rs): views
  // are made again when the memory grew, which detaches the old ones. Taken on first use, since
  // the web glue is initialised after bind().
  let memory = null;
  let bytes = null;
  let nums = null;
  let input = null;
  let inputPtr = 0;
  let inputCap = 0;
  // Index in `nums` of the lengths of the input's fixed fields (see Boundary in lib.rs).
  let lensAt = -1;
  let inputSize = 0;
  // The object's strings as encoded, which an answer refers to instead of sending them back:
  // entity-tag, date, then each stored name and value.
  const refs = [];

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

  /** Checks `request` and `object` and encodes them into the input buffer; returns the length. */
  function encodeInput(request, object) {
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
    checkObject(object, "object");
    inputSize = checkSize(object.size, "object.size");
    const etag = optionalString(object.etag, "object.etag");
    const lastModified = optionalString(object.lastModified, "object.lastModified");
    refs.length = 0;
    refs.push(etag, lastModified);
    const stored = encodeFields(object.headers, "object.headers", refs);
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
      SEP +
      stored;
    // Three bytes per UTF-16 unit is the most UTF-8 can take.
    const need = text.length * 3;
    if (need > inputCap) {
      inputCap = Math.max(need, 1024);
      inputPtr = raw.inputBuffer(inputCap);
      bytes = null;
    }
    views();
    const { written } = encoder.encodeInto(text, input);
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
    } else {
      n[l] = -1;
    }
    return written;
  }

  function planResponse(request, object) {
    const len = encodeInput(request, object);
    const at = raw.planRaw(len, inputSize) / 8;
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
      case 0:
        body = { kind: "none" };
        break;
      case 1:
        body = { kind: "full" };
        break;
      case 2:
        body = { kind: "range", start: n[i + 1], end: n[i + 2] };
        break;
      case 3: {
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

  function isDefinitive(request, object) {
    const len = encodeInput(request, object);
    return raw.definitiveRaw(len, inputSize);
  }

  function copyMode(method, from, body) {
    checkString(method, "method");
    checkSize(from, "from");
    checkObject(body, "body");
    const kind = BODY_KINDS.indexOf(body.kind);
    if (kind < 0) {
      throw new TypeError(`body.kind must be "none", "full", "range" or "multipart", got ${JSON.stringify(body.kind)}`);
    }
    return COPY_MODES[raw.copyModeRaw(method, from, kind)];
  }

  function resolveRange(rangeHeader, size) {
    const range = optionalString(rangeHeader, "rangeHeader");
    const checked = checkSize(size, "size");
    const fields = raw.resolveRaw(range, checked).split(SEP);
    if (fields[0] !== "partial") return { kind: fields[0] };
    const ranges = [];
    for (let i = 1; i < fields.length; i += 2) {
      ranges.push({ start: Number(fields[i]), end: Number(fields[i + 1]) });
    }
    return { kind: "partial", ranges };
  }

  function objectKey(namespace, key) {
    checkString(namespace, "namespace");
    checkString(key, "key");
    return raw.objectKeyRaw(namespace, key) ?? null;
  }

  function describeObject(headers) {
    const fields = new Fields(raw.describeRaw(encodeFields(headers, "headers")));
    const out = {};
    const size = fields.next();
    const etag = fields.next();
    const lastModified = fields.next();
    if (size !== "") out.size = Number(size);
    if (etag !== "") out.etag = etag;
    if (lastModified !== "") out.lastModified = lastModified;
    out.headers = fields.fields();
    return out;
  }

  /**
   * The backfill manager of SPEC §4 over the raw class: each event method checks its arguments
   * and pushes one input; `pollOutput()` answers one action at a time, `null` when none is left.
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
    }

    free() {
      this.#raw.free();
    }

    generation(namespace, key) {
      checkString(namespace, "namespace");
      checkString(key, "key");
      return this.#raw.generation(namespace, key);
    }

    copyRequested(seen, request) {
      if (!(seen instanceof raw.Seen)) {
        throw new TypeError(`seen must be what generation() returned, got ${describe(seen)}`);
      }
      checkObject(request, "request");
      checkString(request.namespace, "request.namespace");
      checkString(request.key, "request.key");
      const from = checkSize(request.from, "request.from");
      checkObject(request.object, "request.object");
      const size = checkSize(request.object.size, "request.object.size");
      const etag = optionalString(request.object.etag, "request.object.etag");
      const lastModified = optionalString(request.object.lastModified, "request.object.lastModified");
      if (request.mode !== "tee" && request.mode !== "background") {
        throw new TypeError(`request.mode must be "tee" or "background", got ${JSON.stringify(request.mode)}`);
      }
      const background = request.mode === "background";
      return decodeAction(
        this.#raw.copyRequested(seen, request.namespace, request.key, from, size, etag, lastModified, background),
      );
    }

    sourceRead(copy, bytes) {
      this.#event(0, copy, checkSize(bytes, "bytes"));
    }
    chunkWritten(copy, bytes) {
      this.#event(1, copy, checkSize(bytes, "bytes"));
    }
    sourceEnded(copy) {
      this.#event(2, copy, 0);
    }
    sourceFailed(copy) {
      this.#event(3, copy, 0);
    }
    writerFailed(copy) {
      this.#event(4, copy, 0);
    }
    clientClosed(copy) {
      this.#event(5, copy, 0);
    }
    copyStopped(copy) {
      this.#event(6, copy, 0);
    }
    commitFinished(copy, committed) {
      if (typeof committed !== "boolean") {
        throw new TypeError(`committed must be a boolean, got ${describe(committed)}`);
      }
      this.#event(committed ? 7 : 8, copy, 0);
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
      checkString(namespace, "namespace");
      checkString(key, "key");
      const code = MUTATION_KINDS.indexOf(kind);
      if (code < 0) throw new TypeError(`kind must be "write", "delete" or "invalidate", got ${JSON.stringify(kind)}`);
      this.#raw.mutation(ended, namespace, key, code);
    }

    shutdownRequested() {
      this.#raw.shutdownRequested();
    }

    pollOutput() {
      const wire = this.#raw.pollOutput();
      return wire === undefined ? null : decodeAction(wire);
    }

    counters() {
      const fields = new Fields(this.#raw.counters());
      const out = {
        started: fields.number(),
        deduped: fields.number(),
        committed: fields.number(),
        cancelled: fields.number(),
        skipped: fields.number(),
        inFlight: fields.number(),
        discarded: {},
      };
      while (fields.at < fields.wire.length) {
        const why = fields.next();
        out.discarded[why] = fields.number();
      }
      return out;
    }

    liveCopy(namespace, key) {
      checkString(namespace, "namespace");
      checkString(key, "key");
      return this.#raw.liveCopy(namespace, key) ?? null;
    }

    isShuttingDown() {
      return this.#raw.isShuttingDown();
    }

    isStopped() {
      return this.#raw.isStopped();
    }
  }

  return {
    planResponse,
    resolveRange,
    isDefinitive,
    copyMode,
    objectKey,
    describeObject,
    BackfillManager,
    Seen: raw.Seen,
  };
}

const BODY_KINDS = ["none", "full", "range", "multipart"];
const COPY_MODES = [null, "tee", "background"];

const MUTATION_KINDS = ["write", "delete", "invalidate"];

/** One action of the backfill manager, from its wire form (see wasm/src/backfill.rs). */
function decodeAction(wire) {
  const fields = new Fields(wire);
  const type = fields.next();
  switch (type) {
    case "startCopy":
      return {
        type,
        copy: fields.number(),
        namespace: fields.next(),
        key: fields.next(),
        from: fields.number(),
        mode: fields.next(),
      };
    case "refuse": {
      const out = { type, namespace: fields.next(), key: fields.next(), why: fields.next() };
      const copy = fields.next();
      if (copy !== "") out.copy = Number(copy);
      return out;
    }
    case "cancel":
    case "commit":
    case "finished":
      return { type, copy: fields.number() };
    case "discard":
      return { type, copy: fields.number(), why: fields.next() };
    case "proceedWithMutation":
      return { type, namespace: fields.next(), key: fields.next() };
    case "shutdownComplete":
      return { type };
    default:
      throw new Error(`rangecache-wasm: unknown backfill action ${JSON.stringify(type)}`);
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Reads a wire string field by field (faster than `split`, which copies them all at once). */
class Fields {
  constructor(wire) {
    this.wire = wire;
    this.at = 0;
  }
  next() {
    const { wire, at } = this;
    let end = wire.indexOf(SEP, at);
    if (end < 0) end = wire.length;
    this.at = end + 1;
    return wire.slice(at, end);
  }
  number() {
    return Number(this.next());
  }
  /** A field name: one of KNOWN when sent as U+0001 and a letter, else as sent. */
  name() {
    const { wire, at } = this;
    if (wire.charCodeAt(at) === 1) {
      this.at = at + 3;
      return KNOWN[wire.charCodeAt(at + 1) - 97];
    }
    return this.next();
  }
  /** `n, n × (name, value)`; names are unique (the core plans each once, and `encodeFields`
   * joins repeated ones). */
  fields() {
    const out = {};
    for (let n = this.number(); n > 0; n--) {
      const name = this.name();
      out[name] = this.next();
    }
    return out;
  }
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
 * out: it is no valid field (RFC 9110 §5.5), and the core would drop it.
 */
function encodeFields(map, what, refs) {
  if (map === undefined || map === null) return "";
  checkObject(map, what);
  let out = "";
  let lowerCase = true;
  for (const name of Object.keys(map)) {
    const value = map[name];
    if (typeof value !== "string") {
      throw new TypeError(`${what}[${JSON.stringify(name)}] must be a string, got ${describe(value)}`);
    }
    if (name === "" || name.includes(SEP) || value.includes(SEP)) continue;
    lowerCase &&= name === name.toLowerCase();
    out += out === "" ? `${name}${SEP}${value}` : `${SEP}${name}${SEP}${value}`;
    refs?.push(name, value);
  }
  if (lowerCase) return out; // the keys of an object are unique: no field repeats
  if (refs) refs.length = 2;
  // Names that differ only in case are one field, joined (RFC 9110 §5.3).
  const joined = Object.create(null);
  for (const name of Object.keys(map)) {
    const value = map[name];
    if (name === "" || name.includes(SEP) || value.includes(SEP)) continue;
    const low = name.toLowerCase();
    joined[low] = low in joined ? `${joined[low]}, ${value}` : value;
  }
  const entries = Object.entries(joined);
  for (const [name, value] of entries) refs?.push(name, value);
  return entries.map(([name, value]) => `${name}${SEP}${value}`).join(SEP);
}

/**
 * One optional value of planRaw's input: a separator, then nothing when absent or `=` and the
 * value. A NUL inside a value becomes U+0001: either makes the field invalid (RFC 9110 §5.5), so
 * the core answers the same, and the separator stays unambiguous.
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
