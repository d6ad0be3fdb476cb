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
  /** When this revision expires, as an HTTP date: an expired copy is never served, and every
   * answer names the expiry (`rangecache-expires`). */
  expires?: string;
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
 * The storage key of `/{namespace}/{key}`: `namespace/` and 64 hex digits (a key of 64 hex
 * digits is kept, any other is hashed with SHA-256); `null` for an invalid namespace.
 */
export function objectKey(namespace: string, key: string): string | null;

/** An origin response described from its fields: size from Content-Length, the validators
 * that parse, the expiry a rangecache origin names (`rangecache-expires`), and the end-to-end
 * fields a cache stores. */
export function describeObject(headers: Fields): {
  size?: number;
  etag?: string;
  lastModified?: string;
  expires?: string;
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

/** The bytes an open asks for: from `start` to `end` (`null`: to the end), or the last `last`. */
export type Span = { start: number; end: number | null } | { last: number };

/** An action the read machine asks for; carry out each before the next event. */
export type ReadOutput =
  | {
      /** Open tier `tier` (drop any body held before) and report `tierOpened`, `tierMissed` or
       * `tierFailed`. A tier holding whole objects evaluates nothing itself: the machine resolves
       * `span` and `conditions` against the object reported. */
      type: "openTier";
      tier: number;
      span: Span;
      conditions: { ifMatch?: string; ifNoneMatch?: string; ifModifiedSince?: string; ifUnmodifiedSince?: string };
    }
  | {
      /** Ask for a copy into tier 0 with `requestCopy(manager, seen, namespace, key)`. */
      type: "requestCopy";
      from: number;
      mode: "tee" | "background";
    }
  | {
      /** Answer: `plan` and the `cache-status` field; the body is the plan's bytes of the body
       * held from tier `source.tier` (`opened`), the parts asked for by `sendPart` (`parts`), or
       * none. */
      type: "serve";
      plan: ResponsePlan;
      source: { kind: "nothing" | "opened" | "parts"; tier: number | null };
      cacheStatus: string;
    }
  | {
      /** Write part `index` of the multipart body (its `head`, then its bytes), then report
       * `partSent`; after the last part, write the plan's `closing`. */
      type: "sendPart";
      index: number;
    }
  | {
      /** Stop the response mid-body: the bytes promised cannot be delivered. */
      type: "abort";
      why: "revisionChanged" | "tierFailed";
    }
  | {
      /** Drop the body just reported from `tier`. */
      type: "dropBody";
      tier: number;
    };

/**
 * The core's tiered read (SPEC §4), as the native server runs it: one per GET or HEAD, over
 * tiers nearest first. Report what each tier answered; the machine decides which answer
 * stands, passes over expired copies, asks for the copy into tier 0, and plans the response
 * with its Cache-Status. After each event method, call `pollOutput()` until it returns `null`
 * and carry out every action.
 */
export class ReadMachine {
  /** `options.tiers`: the tiers' names for Cache-Status, nearest first; `options.now`: the
   * clock in milliseconds since the epoch (default `Date.now()`). */
  constructor(request: PlanRequest, options: { tiers: string[]; now?: number });
  free(): void;
  pollOutput(): ReadOutput | null;
  /** The tier holds `object`; its body is in hand unless `options.body` is false (HEAD). */
  tierOpened(tier: number, object: ObjectDescription, options?: { body?: boolean }): void;
  tierMissed(tier: number): void;
  tierFailed(tier: number): void;
  partSent(index: number): void;
  /** Hands the copy asked for to `manager`; the machine is told the answer, returned too. */
  requestCopy(manager: BackfillManager, seen: Seen, namespace: string, key: string): CopyAnswer;
  isDone(): boolean;
}
