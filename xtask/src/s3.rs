//! The S3-compatible test server: installed from crates.io and started on 127.0.0.1.

use anyhow::Result;

/// A running test server; stopped when dropped.
pub struct Server {}

impl Server {
    /// Installs the server if missing and starts it on a free loopback port.
    pub fn start() -> Result<Server> {
        Ok(Server {})
    }

    /// Environment variables that point the tests at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// `cargo xtask s3-server`: run the server until interrupted.
pub fn serve_foreground() -> Result<()> {
    Ok(())
}
