//! rangecache-wasm: the core's decisions exported to JavaScript.
