//! Building the wasm package into `wasm/pkg` and running its Node tests.

use anyhow::Result;

/// `cargo xtask wasm`.
pub fn build_package() -> Result<()> {
    Ok(())
}

/// `node --test` over the package and the edge-worker example.
pub fn test_package() -> Result<()> {
    Ok(())
}
