// Types of the edge-worker example, `rangecache-wasm/worker`.
import type { ObjectDescription } from "./index.js";

/** One stored object: its description (as for planResponse) and all of its bytes. */
export interface StoredObject {
  meta: ObjectDescription;
  body: Uint8Array;
}

/** The edge store, tier 0: `put` is called once per object, after its last byte arrived. */
export interface EdgeStore {
  get(key: string): Promise<StoredObject | null>;
  put(key: string, value: StoredObject): Promise<void>;
  delete(key: string): Promise<void>;
}

export interface Env {
  /** Base URL of the origin, tier 1. */
  ORIGIN: string;
  STORE: EdgeStore;
}

export interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
}

declare const worker: {
  fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response>;
};
export default worker;
