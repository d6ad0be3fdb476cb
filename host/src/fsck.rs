//! `rangecache fsck`: checks the files of every configured disk tier as a server starting on
//! them would judge them ([`crate::storage::disk::inspect`]) and, asked to repair, removes
//! what is broken.
//!
//! Broken is what the tier could never serve: a header that cannot be read, a size that
//! disagrees with the bytes the file holds, an expired revision, a temporary file of a write
//! that never committed. A server removes the same files when it starts; fsck says what they
//! were first. Run it while no server uses the directory: a write in progress looks like a
//! leftover.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rangecache_core::Timestamp;

use crate::config::{Config, TierKind};
use crate::storage::disk::{self, Finding};

/// What a check found, over every disk tier.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Disk tiers checked.
    pub n_tiers: usize,
    /// Object files a server would serve.
    pub n_intact: usize,
    /// Broken files found.
    pub n_broken: usize,
    /// Broken files removed (with `repair`).
    pub n_removed: usize,
    /// Directories that could not be listed and files that could not be removed.
    pub n_failures: usize,
}

/// Checks every disk tier of `config` at `now`, removing broken files when `repair` is set,
/// and writes one line per broken file, one per tier and a last line with the totals to `out`.
pub fn run(
    config: &Config,
    now: Timestamp,
    repair: bool,
    out: &mut impl Write,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    for tier in &config.tiers {
        let Some(root) = disk_path(&tier.kind) else {
            writeln!(out, "{}: not a disk tier, nothing to check", tier.name)?;
            continue;
        };
        summary.n_tiers += 1;
        let findings = match disk::inspect(root, now) {
            Ok(findings) => findings,
            Err(e) => {
                summary.n_failures += 1;
                writeln!(out, "{}: cannot read {}: {e}", tier.name, root.display())?;
                continue;
            }
        };
        let (intact, mut broken): (Vec<Finding>, Vec<Finding>) =
            findings.into_iter().partition(|f| f.state.is_intact());
        broken.sort_by(|a, b| a.path.cmp(&b.path));
        summary.n_intact += intact.len();
        summary.n_broken += broken.len();
        for finding in &broken {
            let shown = relative(root, &finding.path);
            let fate = if !repair {
                String::new()
            } else {
                match std::fs::remove_file(&finding.path) {
                    Ok(()) => {
                        summary.n_removed += 1;
                        "; removed".to_owned()
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        summary.n_removed += 1;
                        "; already gone".to_owned()
                    }
                    Err(e) => {
                        summary.n_failures += 1;
                        format!("; cannot remove it: {e}")
                    }
                }
            };
            writeln!(out, "{}: {}: {}{fate}", tier.name, shown.display(), finding.state)?;
        }
        writeln!(
            out,
            "{}: {} intact, {} in {}",
            tier.name,
            count(intact.len(), "object"),
            count(broken.len(), "broken file"),
            root.display()
        )?;
    }
    let mut totals = format!(
        "fsck: {}, {} intact, {}",
        count(summary.n_tiers, "disk tier"),
        count(summary.n_intact, "object"),
        count(summary.n_broken, "broken file")
    );
    if repair {
        totals.push_str(&format!(", {} removed", summary.n_removed));
    } else if summary.n_broken > 0 {
        totals.push_str("; --repair removes them");
    }
    if summary.n_failures > 0 {
        totals.push_str(&format!("; {}", count(summary.n_failures, "failure")));
    }
    writeln!(out, "{totals}")?;
    Ok(summary)
}

/// The directory of a disk tier.
fn disk_path(kind: &TierKind) -> Option<&Path> {
    match kind {
        TierKind::Disk { path } => Some(path),
        TierKind::Faulty { inner, .. } => disk_path(inner),
        TierKind::Memory | TierKind::S3 { .. } | TierKind::Remote { .. } => None,
    }
}

/// `n` things, in the singular for one.
fn count(n: usize, thing: &str) -> String {
    if n == 1 { format!("1 {thing}") } else { format!("{n} {thing}s") }
}

fn relative(root: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(root).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
}
