// Types of the rangecache-wasm package. Every function throws a TypeError on a bad argument
// (a missing field, a value of the wrong type, a negative size); none of them aborts the module.

/** Header fields by lower-case name (names are matched case-insensitively on input). */
export type Fields = Record<string, string>;

/** A request as `planResponse` reads it: the method and the raw field values. */
export interface PlanRequest {
  method: string;
  headers?: Fields;
}

/** One revision of an object. */
export interface ObjectDescription {
  /** Length in bytes: a non-negative integer up to Number.MAX_SAFE_INTEGER. */
  size: number;
  /** The entity-tag as sent in an ETag field, quotes included: `"v1"` or `W/"v1"`. */
  etag?: string;
  /** Last-Modified as an HTTP date, such as `Sun, 06 Nov 1994 08:49:37 GMT`. */
  lastModified?: string;
  /** End-to-end fields stored with the object and returned on reads (content-type, ...). */
  headers?: Fields;
}

/** One part of a `multipart/byteranges` body. */
export interface Part {
  /** First byte of the part's window. */
  start: number;
  /** One past the last byte of the window. */
  end: number;
  /** The part's fields (content-type, content-range). */
  headers: Fields;
  /** The exact text written before the window: delimiter, fields and blank line. */
  head: string;
}

/** What the body of a planned response carries; windows are half-open `[start, end)`. */
export type PlanBody =
  | { kind: "none" }
  | { kind: "full" }
  | { kind: "range"; start: number; end: number }
  | { kind: "multipart"; boundary: string; parts: Part[]; closing: string };

/** The planned answer. Send `headers` as they are; `content-length` counts the planned body. */
export interface ResponsePlan {
  status: number;
  headers: Fields;
  body: PlanBody;
}

/** Status, headers and body for a GET or HEAD of `object` (RFC 9110 §13.2.2, §14). */
export function planResponse(request: PlanRequest, object: ObjectDescription): ResponsePlan;

/** What a Range selects from `size` bytes; an absent or invalid Range selects everything. */
export type ResolvedRange =
  | { kind: "full" }
  | { kind: "partial"; ranges: { start: number; end: number }[] }
  | { kind: "unsatisfiable" };

export function resolveRange(rangeHeader: string | null | undefined, size: number): ResolvedRange;

/**
 * Whether `planResponse(request, object)` is the final answer of a tier holding `object`
 * (SPEC §4): false when that revision fails the request's validators (the plan is 412, or an
 * If-Range with a strong entity-tag names another version). Then ask the next tier for the
 * version named, and let this answer stand only when none has it.
 */
export function isDefinitive(request: PlanRequest, object: ObjectDescription): boolean;

/**
 * How a read that serves `body` (a plan's body) from tier `from` copies the object into tier 0:
 * "tee" for a GET sending the whole object, "background" for a GET sending a range or parts,
 * `null` for no copy (tier 0 itself, HEAD, or no body).
 */
export function copyMode(method: string, from: number, body: PlanBody): "tee" | "background" | null;

/**
 * The storage key of `/{namespace}/{key}`: `namespace/` and 64 hex digits (a key of 64 hex
 * digits is kept, any other is hashed with SHA-256); `null` for an invalid namespace.
 */
export function objectKey(namespace: string, key: string): string | null;

/** An origin response described from its fields: size from Content-Length, the validators
 * that parse, and the end-to-end fields a cache stores. */
export function describeObject(headers: Fields): {
  size?: number;
  etag?: string;
  lastModified?: string;
  headers: Fields;
};

/** A key's generation, taken before a read opens any tier. */
export class Seen {
  private constructor();
  free(): void;
}

/** Why a copy was thrown away. */
export type DiscardReason =
  | "early_close"
  | "source_failed"
  | "writer_failed"
  | "size_mismatch"
  | "lagging"
  | "superseded"
  | "shutting_down"
  | "stale";

/** The backfill manager's answer to a copy request: the copy started, or why not. */
export type CopyAnswer =
  | { type: "startCopy"; copy: number; namespace: string; key: string; from: number; mode: "tee" | "background" }
  | {
      type: "refuse";
      namespace: string;
      key: string;
      why:
        | "deduplicated"
        | "tooManyInFlight"
        | "keyChanging"
        | "superseded"
        | "tooLarge"
        | "shuttingDown";
      /** For `deduplicated`: the copy already in flight. */
      copy?: number;
    };

/** An action the backfill manager asks for; carry out each before the next event. */
export type BackfillOutput =
  | { type: "cancel"; copy: number }
  | { type: "commit"; copy: number }
  | { type: "finished"; copy: number }
  | { type: "discard"; copy: number; why: DiscardReason }
  | { type: "proceedWithMutation"; namespace: string; key: string }
  | { type: "shutdownComplete" };

export interface CopyRequest {
  namespace: string;
  key: string;
  /** The tier the bytes come from (> 0; tier 0 is the nearest). */
  from: number;
  object: ObjectDescription;
  /** "tee" for a full read being streamed, "background" for a copy started by a ranged read. */
  mode: "tee" | "background";
}

/**
 * The backfill manager of SPEC §4: at most one copy per key, commit only of a complete copy of
 * a key that did not change meanwhile. A copy request is answered at once; after each event
 * method, call `pollOutput()` until it returns `null` and carry out every action.
 */
export class BackfillManager {
  constructor(config?: { maxInFlight?: number; maxBacklogBytes?: number });
  free(): void;
  generation(namespace: string, key: string): Seen;
  copyRequested(seen: Seen, request: CopyRequest): CopyAnswer;
  sourceRead(copy: number, bytes: number): void;
  chunkWritten(copy: number, bytes: number): void;
  sourceEnded(copy: number): void;
  sourceFailed(copy: number): void;
  writerFailed(copy: number): void;
  clientClosed(copy: number): void;
  copyStopped(copy: number): void;
  commitFinished(copy: number, committed: boolean): void;
  mutationStarted(namespace: string, key: string, kind: "write" | "delete" | "invalidate"): void;
  mutationEnded(namespace: string, key: string, kind: "write" | "delete" | "invalidate"): void;
  shutdownRequested(): void;
  pollOutput(): BackfillOutput | null;
  counters(): {
    started: number;
    deduped: number;
    committed: number;
    cancelled: number;
    skipped: number;
    discarded: Record<DiscardReason, number>;
    inFlight: number;
  };
  liveCopy(namespace: string, key: string): number | null;
  isShuttingDown(): boolean;
  isStopped(): boolean;
}
