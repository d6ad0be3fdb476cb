//! The host's layering, checked on its sources (ARCHITECTURE.md, host/): the HTTP layer sits on
//! top, so nothing in `storage/` or `tiered/` may import from `http/`; the tiered driver speaks
//! its own `tiered::Error`, which only `http/` turns into an HTTP answer.

use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
    found
}

#[test]
fn storage_and_tiered_import_nothing_from_http() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for layer in ["storage", "tiered"] {
        for file in sources(&src.join(layer)) {
            let text = fs::read_to_string(&file).expect("a readable source");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                assert!(
                    !code.contains("crate::http") && !code.contains("super::http"),
                    "{}:{}: {line}",
                    file.display(),
                    n + 1
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} files checked: is the layout still the one described?");
}
