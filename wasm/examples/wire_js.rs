//! Prints the package's `wire.js`, the strings that cross the boundary as numbers, generated
//! from `wasm/src/wire.rs`; `cargo xtask wasm` writes it into the package so that `api.js` and
//! the module read one list.

fn main() {
    print!("{}", rangecache_wasm::wire::javascript());
}
