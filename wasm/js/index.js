// rangecache-wasm for Node and other hosts that read the module from disk: the glue of
// wasm-bindgen's `experimental-nodejs-module` target, which instantiates the module on import.
import { bind } from "./api.js";
import * as raw from "./rangecache_wasm.js";

export const { planResponse, resolveRange, objectKey, describeObject, BackfillManager, ReadMachine, Seen } = bind(raw);
