// rangecache-wasm for module workers and bundlers: the `web` glue, instantiated from the
// compiled module that the runtime hands to a `.wasm` import (workerd, wrangler and esbuild's
// `copy`/`file` loaders configured for it). Hosts that load the bytes themselves import
// "rangecache-wasm/web" and call `initSync({ module })` instead.
import { initSync } from "./web/rangecache_wasm.js";
import module from "./web/rangecache_wasm_bg.wasm";

initSync({ module });

export {
  planResponse,
  resolveRange,
  objectKey,
  describeObject,
  BackfillManager,
  Seen,
} from "./web/rangecache_wasm.js";
