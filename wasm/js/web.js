// rangecache-wasm over wasm-bindgen's `web` glue, for hosts that obtain the module themselves:
// call `initSync({ module })` with a WebAssembly.Module or the bytes of
// `web/rangecache_wasm_bg.wasm` (or await `init(...)`) before the first call.
import { bind } from "./api.js";
import * as raw from "./web/rangecache_wasm.js";

export { default as init, initSync } from "./web/rangecache_wasm.js";
export const { planResponse, resolveRange, objectKey, describeObject, BackfillManager, ReadMachine, Seen } = bind(raw);
