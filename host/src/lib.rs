//! rangecache: the native server that carries out the core's decisions with warp, opendal and
//! tokio. The binary is `src/main.rs`; this library holds everything it drives so the
//! integration tests and benches can reach it.
#![forbid(unsafe_code)]

pub mod storage;
