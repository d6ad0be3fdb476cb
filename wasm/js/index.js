// rangecache-wasm for Node and other hosts that can read the module from disk: the glue of
// wasm-bindgen's `experimental-nodejs-module` target, which instantiates the module on import.
export {
  planResponse,
  resolveRange,
  objectKey,
  describeObject,
  BackfillManager,
  Seen,
} from "./rangecache_wasm.js";
