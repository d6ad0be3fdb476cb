// Types of `rangecache-wasm/web`: the package's functions, usable once the module is initialised.
export * from "./index.js";

export type ModuleSource = WebAssembly.Module | BufferSource;

/** Instantiates the module synchronously; call once before any other function. */
export function initSync(input: { module: ModuleSource }): unknown;

/** Instantiates the module, fetching it when given a URL. */
export default function init(input?: { module_or_path: ModuleSource | URL | string | Request | Promise<unknown> }): Promise<unknown>;
