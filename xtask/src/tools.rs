//! Installing what the suites need on a fresh machine, after checking it is missing.

use std::process::Command;

use anyhow::Result;

use crate::{run, succeeds};

/// The rustup target and components the checks use.
pub fn ensure_rust_components() -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output()?;
    if !String::from_utf8_lossy(&installed.stdout).contains("wasm32-unknown-unknown") {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    for component in ["rustfmt", "clippy"] {
        if !succeeds(Command::new("cargo").args([component_command(component), "--version"])) {
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

/// Debian packages whose programs the end-to-end tests run as real clients and peers.
pub fn ensure_apt_packages() -> Result<()> {
    // (program on PATH, Debian package that provides it)
    const NEEDED: &[(&str, &str)] = &[
        ("curl", "curl"),
        ("wget", "wget"),
        ("aria2c", "aria2"),
        ("nginx", "nginx"),
        ("script", "bsdutils"),
    ];
    let missing: Vec<&str> = NEEDED
        .iter()
        // nginx lives in /usr/sbin, which is not on every user's PATH.
        .filter(|(program, _)| {
            !succeeds(Command::new("which").arg(program))
                && !std::path::Path::new("/usr/sbin").join(program).exists()
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing))
}

fn component_command(component: &str) -> &'static str {
    match component {
        "rustfmt" => "fmt",
        _ => "clippy",
    }
}
