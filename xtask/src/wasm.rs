//! Building the wasm package into `wasm/pkg` and running its Node tests.
//!
//! The package holds two glues of one module, both wrapped by the hand-written `api.js`:
//! `rangecache_wasm.js` (wasm-bindgen's `experimental-nodejs-module` target, which Node 20
//! imports as it is) behind the entry `index.js`, and `web/` (the `web` target) behind `web.js`
//! (initialised with `initSync`) and `workerd.js` (initialised from a `.wasm` import, as module
//! workers do). `wire.js`, the table of strings sent as numbers, is generated from the Rust
//! definitions. Both modules go through `wasm-opt` from the npm package
//! `binaryen` 132; Debian's binaryen 108 emits a module whose externref table breaks at load.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run, show};

/// The binaryen release whose `wasm-opt` the package is optimised with.
const BINARYEN_VERSION: &str = "132";

/// The glue's name: the crate's library name.
const MODULE: &str = "rangecache_wasm";

/// Files of `wasm/js` copied into the package as they are.
const PACKAGE_FILES: &[&str] = &[
    "api.js",
    "index.js",
    "index.d.ts",
    "web.js",
    "web.d.ts",
    "workerd.js",
    "worker.mjs",
    "worker.d.mts",
];

/// `cargo xtask wasm`.
pub fn build_package() -> Result<()> {
    crate::tools::ensure_rust_components()?;
    let wasm_bindgen = ensure_wasm_bindgen()?;
    let wasm_opt = ensure_wasm_opt()?;

    // One codegen unit and LTO let the linker drop what the exports never reach; opt-level "s"
    // keeps the module small (at "3" it is over 170 KiB, and a call is about a tenth faster;
    // "z" saves 4.7 KiB more but a call is a third slower). Set through the environment so the
    // workspace's release profile, which the native builds share, is left alone.
    run(cargo()
        .args(["build", "-p", "rangecache-wasm", "--release", "--target", "wasm32-unknown-unknown"])
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", wasm_rustflags())
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false"))?;
    let built = target_dir().join("wasm32-unknown-unknown/release").join(format!("{MODULE}.wasm"));

    let pkg = root().join("wasm/pkg");
    if pkg.exists() {
        fs::remove_dir_all(&pkg).with_context(|| format!("could not remove {}", pkg.display()))?;
    }
    for (target, dir) in [("experimental-nodejs-module", pkg.clone()), ("web", pkg.join("web"))] {
        run(Command::new(&wasm_bindgen)
            .args(["--target", target, "--out-name", MODULE, "--out-dir"])
            .arg(&dir)
            .arg(&built))?;
        let module = dir.join(format!("{MODULE}_bg.wasm"));
        // The features rustc enables by default for wasm32-unknown-unknown; wasm-opt must keep
        // them (reference types carry wasm-bindgen's externref table).
        run(Command::new(&wasm_opt)
            .args(["-Oz", "--converge", "--strip-debug", "--strip-producers"])
            // A fresh instance's memory is zeroed, and nothing uses its lowest kilobyte (the
            // stack comes first and grows down from 1 MiB towards it): about 1.1 KiB less.
            .args(["--zero-filled-memory", "--low-memory-unused"])
            .args([
                "--enable-reference-types",
                "--enable-bulk-memory",
                "--enable-mutable-globals",
                "--enable-nontrapping-float-to-int",
                "--enable-sign-ext",
                "--enable-multivalue",
            ])
            .arg(&module)
            .arg("-o")
            .arg(&module))?;
        check_no_env_imports(&module)?;
    }
    // wasm-bindgen writes a package.json of its own; the package's is written below.
    let _ = fs::remove_file(pkg.join("package.json"));
    let js = root().join("wasm/js");
    for file in PACKAGE_FILES {
        fs::copy(js.join(file), pkg.join(file))
            .with_context(|| format!("could not copy wasm/js/{file} into the package"))?;
    }
    write_wire_js(&pkg)?;
    fs::write(pkg.join("package.json"), package_json()).context("could not write package.json")?;
    let size = fs::metadata(pkg.join(format!("{MODULE}_bg.wasm")))?.len();
    eprintln!("wasm/pkg: {MODULE}_bg.wasm is {size} bytes ({:.1} KiB)", size as f64 / 1024.0);
    Ok(())
}

/// `wire.js`: the strings that cross the boundary as numbers, generated from the Rust table
/// (`wasm/src/wire.rs`) by the crate's `wire_js` example, so `api.js` and the module read one
/// list.
fn write_wire_js(pkg: &Path) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["run", "--quiet", "-p", "rangecache-wasm", "--example", "wire_js"]);
    let shown = show(&cmd);
    eprintln!("==> {shown}");
    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("could not start {shown}"))?;
    eprintln!("<== {shown}: {} in {:.1?}", out.status, started.elapsed());
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    fs::write(pkg.join("wire.js"), out.stdout).context("could not write wire.js")
}

/// `node --test` over the package and the edge-worker example.
pub fn test_package() -> Result<()> {
    let tests = root().join("wasm/js/test");
    let mut files: Vec<PathBuf> = fs::read_dir(&tests)
        .with_context(|| format!("could not list {}", tests.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no tests found in {}", tests.display());
    }
    run(Command::new("node").arg("--test").args(&files).current_dir(root().join("wasm")))
}

/// Rust flags of the wasm build: [`remap_registry`], and sha2's compact SHA-256 (its rounds in
/// a loop rather than unrolled), about 7 KiB smaller; only `objectKey` and the backfill
/// manager's keys hash, never a plan.
fn wasm_rustflags() -> String {
    format!("{} --cfg sha2_backend_soft=\"compact\"", remap_registry())
}

/// Rust flags that shorten the crates' source paths kept for panic locations
/// (`$CARGO_HOME/registry/src/index.crates.io-<hash>/http-1.5.0/src/...` becomes
/// `http-1.5.0/src/...`), about a kilobyte of the module. Only the wasm target gets them, so
/// native builds are not rebuilt.
fn remap_registry() -> String {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_default();
    let registry = cargo_home.join("registry/src");
    let mut flags = Vec::new();
    if let Ok(indexes) = fs::read_dir(&registry) {
        for index in indexes.flatten() {
            let prefix = index.path().display().to_string();
            // The variable is split at spaces; a path holding one is left as it is.
            if !prefix.contains(' ') {
                flags.push(format!("--remap-path-prefix={prefix}/="));
            }
        }
    }
    flags.sort();
    flags.join(" ")
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR`, else the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { root().join(dir) })
        .unwrap_or_else(|| root().join("target"))
}

/// Project-local installs, kept out of git.
fn tools_dir() -> PathBuf {
    root().join(".tools")
}

/// `wasm-bindgen` of exactly the version of the `wasm-bindgen` crate in Cargo.lock (the CLI
/// refuses a module built by another version): from `.tools/bin` or `PATH`, else installed into
/// `.tools`.
fn ensure_wasm_bindgen() -> Result<PathBuf> {
    let version = locked_version("wasm-bindgen")?;
    let wanted = format!("wasm-bindgen {version}");
    let local = tools_dir().join("bin/wasm-bindgen");
    for candidate in [local.clone(), PathBuf::from("wasm-bindgen")] {
        if version_output(&candidate).is_some_and(|out| out.trim() == wanted) {
            eprintln!("wasm-bindgen: {} is {wanted}", candidate.display());
            return Ok(candidate);
        }
    }
    // Not `--locked`: the CLI's own lock file pins crates that no longer build here.
    run(cargo()
        .args(["install", "wasm-bindgen-cli", "--version", &version, "--root"])
        .arg(tools_dir()))?;
    match version_output(&local) {
        Some(out) if out.trim() == wanted => Ok(local),
        other => bail!("installed wasm-bindgen reports {other:?}, expected {wanted}"),
    }
}

/// `wasm-opt` from the npm package `binaryen` (`BINARYEN_VERSION`), installed into
/// `.tools/binaryen` when missing.
fn ensure_wasm_opt() -> Result<PathBuf> {
    let prefix = tools_dir().join("binaryen");
    let local = prefix.join("node_modules/.bin/wasm-opt");
    let wanted = format!("version {BINARYEN_VERSION}");
    if version_output(&local).is_some_and(|out| out.contains(&wanted)) {
        eprintln!("wasm-opt: {} is {wanted}", local.display());
        return Ok(local);
    }
    if version_output(Path::new("npm")).is_none() {
        bail!("npm is needed to install binaryen {BINARYEN_VERSION}; install Node.js 20 and npm");
    }
    fs::create_dir_all(&prefix)?;
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(format!("binaryen@{BINARYEN_VERSION}")))?;
    match version_output(&local) {
        Some(out) if out.contains(&wanted) => Ok(local),
        other => bail!("installed wasm-opt reports {other:?}, expected {wanted}"),
    }
}

/// The version of `name` in the workspace's Cargo.lock.
fn locked_version(name: &str) -> Result<String> {
    let lock =
        fs::read_to_string(root().join("Cargo.lock")).context("could not read Cargo.lock")?;
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() != wanted {
            continue;
        }
        if let Some(version) = lines
            .next()
            .and_then(|l| l.trim().strip_prefix("version = \""))
            .and_then(|v| v.strip_suffix('"'))
        {
            return Ok(version.to_owned());
        }
    }
    bail!("{name} is not in Cargo.lock")
}

/// What `program --version` prints, or `None` if it does not run.
fn version_output(program: &Path) -> Option<String> {
    let started = Instant::now();
    let out = Command::new(program).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "check: {} --version -> {:?} in {:.1?}",
        program.display(),
        text.trim(),
        started.elapsed()
    );
    out.status.success().then_some(text)
}

/// Fails if the module imports anything from `"env"`: a sign that native-only code (a libc
/// call, a clock) slipped into the build.
fn check_no_env_imports(module: &Path) -> Result<()> {
    let bytes = fs::read(module).with_context(|| format!("could not read {}", module.display()))?;
    let modules = import_modules(&bytes)
        .with_context(|| format!("{} is not a well-formed wasm module", module.display()))?;
    if modules.iter().any(|m| m == "env") {
        bail!("{} imports from \"env\": native-only code reached the wasm build", module.display());
    }
    eprintln!("check: {} imports only from {modules:?}", module.display());
    Ok(())
}

/// The distinct module names of a wasm binary's imports, read from its import section.
fn import_modules(bytes: &[u8]) -> Option<Vec<String>> {
    let mut at = 8; // magic and version
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let len = leb128(bytes, &mut at)? as usize;
        let section = bytes.get(at..at.checked_add(len)?)?;
        at += len;
        if id != 2 {
            continue;
        }
        let mut pos = 0;
        let mut names = Vec::new();
        for _ in 0..leb128(section, &mut pos)? {
            let module = name(section, &mut pos)?;
            let _field = name(section, &mut pos)?;
            let kind = *section.get(pos)?;
            pos += 1;
            match kind {
                0 => drop(leb128(section, &mut pos)?), // function: type index
                1 => {
                    pos += 1; // table: element type, then limits
                    limits(section, &mut pos)?;
                }
                2 => limits(section, &mut pos)?,           // memory
                3 => pos += 2,                             // global: value type and mutability
                4 => pos += 1 + leb128_len(section, pos)?, // tag: attribute and type index
                _ => return None,
            }
            if !names.contains(&module) {
                names.push(module);
            }
        }
        return Some(names);
    }
    Some(Vec::new())
}

fn limits(bytes: &[u8], pos: &mut usize) -> Option<()> {
    let flags = *bytes.get(*pos)?;
    *pos += 1;
    leb128(bytes, pos)?;
    if flags & 1 != 0 {
        leb128(bytes, pos)?;
    }
    Some(())
}

fn name(bytes: &[u8], pos: &mut usize) -> Option<String> {
    let len = leb128(bytes, pos)? as usize;
    let text = bytes.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    String::from_utf8(text.to_vec()).ok()
}

fn leb128(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

fn leb128_len(bytes: &[u8], pos: usize) -> Option<usize> {
    let mut end = pos;
    leb128(bytes, &mut end)?;
    Some(end - pos)
}

fn package_json() -> String {
    let version = env!("CARGO_PKG_VERSION");
    format!(
        r#"{{
  "name": "rangecache-wasm",
  "version": "{version}",
  "description": "rangecache's response planning, range resolution and backfill manager for JavaScript",
  "license": "Apache-2.0",
  "type": "module",
  "main": "./index.js",
  "types": "./index.d.ts",
  "exports": {{
    ".": {{
      "types": "./index.d.ts",
      "workerd": "./workerd.js",
      "worker": "./workerd.js",
      "default": "./index.js"
    }},
    "./worker": {{
      "types": "./worker.d.mts",
      "default": "./worker.mjs"
    }},
    "./web": {{
      "types": "./web.d.ts",
      "default": "./web.js"
    }},
    "./web/{MODULE}_bg.wasm": "./web/{MODULE}_bg.wasm"
  }},
  "files": ["*.js", "*.mjs", "*.d.ts", "*.d.mts", "*.wasm", "web/"],
  "sideEffects": true
}}
"#
    )
}
