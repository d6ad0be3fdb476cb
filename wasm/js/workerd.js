// rangecache-wasm for module workers (workerd, wrangler, and bundlers set up the same way),
// where importing a `.wasm` file yields its compiled WebAssembly.Module: instantiated on import.
import module from "./web/rangecache_wasm_bg.wasm";
import { initSync } from "./web.js";

initSync({ module });

export { planResponse, resolveRange, objectKey, describeObject, BackfillManager, ReadMachine, Seen } from "./web.js";
