//! The packaging in `Dockerfile` and `contrib/`: the systemd unit passes `systemd-analyze
//! verify`, and the Dockerfile, which no test builds (there is no Docker daemon where the
//! suites run), is read for what it promises: a multi-stage build whose runtime stage runs as
//! a non-root user, with the packaged configuration, and the disk tier's directory on a volume.
//! The packaged configuration itself passes `rangecache check-config`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{binary, tempdir};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_owned()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Where the unit and the image put the binary and the configuration.
const INSTALLED_BINARY: &str = "/usr/local/bin/rangecache";
const INSTALLED_CONFIG: &str = "/etc/rangecache/rangecache.toml";

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = read("contrib/rangecache.service");
    let exec_start = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    assert_eq!(exec_start, format!("{INSTALLED_BINARY} serve --config {INSTALLED_CONFIG}"));
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("skipped systemd-analyze verify: systemd-analyze is not installed here");
        return;
    }
    // verify insists that the command exists: the unit is checked with the binary under test in
    // place of the installed one, and nothing else changed.
    let dir = tempdir();
    let path = dir.join("rangecache.service");
    let binary = binary();
    std::fs::write(&path, unit.replace(INSTALLED_BINARY, binary.to_str().unwrap())).unwrap();
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify failed:\n{complaints}");
    // An unknown or misspelt directive is only a warning to verify, and must fail here.
    let about_the_unit: Vec<&str> =
        complaints.lines().filter(|line| line.contains("rangecache.service")).collect();
    assert!(about_the_unit.is_empty(), "systemd-analyze verify complained:\n{complaints}");
}

/// The instructions of a Dockerfile, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()) {
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .map(|line| match line.split_once(char::is_whitespace) {
            Some((keyword, rest)) => (keyword.to_ascii_uppercase(), rest.trim().to_owned()),
            None => (line.to_ascii_uppercase(), String::new()),
        })
        .collect()
}

#[test]
fn the_dockerfile_runs_a_non_root_server_with_the_disk_tier_on_a_volume() {
    let dockerfile = instructions(&read("Dockerfile"));
    let stages = dockerfile.iter().filter(|(keyword, _)| keyword == "FROM").count();
    assert!(stages >= 2, "a multi-stage build");
    let last_from = dockerfile.iter().rposition(|(keyword, _)| keyword == "FROM").unwrap();
    let runtime = &dockerfile[last_from..];
    let value = |wanted: &str| -> Vec<&str> {
        runtime.iter().filter(|(k, _)| k == wanted).map(|(_, v)| v.as_str()).collect()
    };

    let user = *value("USER").last().expect("the runtime stage names a USER");
    let user_name = user.split(':').next().unwrap();
    assert!(!matches!(user_name, "root" | "0"), "runs as a non-root user, not {user}");

    // The disk tier of the packaged configuration is the volume, owned by that user.
    let config = read("contrib/rangecache.toml");
    let disk_path = config
        .lines()
        .find_map(|line| line.trim().strip_prefix("path = \"")?.split('"').next())
        .expect("the packaged configuration has a disk tier");
    let volumes = value("VOLUME").join(" ");
    assert!(volumes.contains(&format!("\"{disk_path}\"")), "VOLUME {volumes} holds {disk_path}");
    assert!(
        value("COPY")
            .iter()
            .any(|copy| copy.contains(&format!("--chown={user}")) && copy.ends_with(disk_path)),
        "the volume's directory is owned by {user}"
    );

    // The packaged configuration is what the server is started with.
    assert!(
        value("COPY").contains(&format!("contrib/rangecache.toml {INSTALLED_CONFIG}").as_str())
    );
    let entrypoint = value("ENTRYPOINT").join(" ");
    let cmd = value("CMD").join(" ");
    assert!(entrypoint.contains(INSTALLED_BINARY), "{entrypoint}");
    assert!(cmd.contains("\"--config\", \"/etc/rangecache/rangecache.toml\""), "{cmd}");
    assert!(
        value("ENV").join(" ").contains("RANGECACHE_LISTEN=0.0.0.0:"),
        "listens beyond loopback"
    );

    // Every file copied from the build context exists, and build outputs stay out of it.
    for (_, copy) in dockerfile.iter().filter(|(k, _)| k == "COPY") {
        if copy.starts_with("--from") {
            continue;
        }
        let source = copy.split_whitespace().find(|w| !w.starts_with("--")).unwrap();
        assert!(root().join(source).exists(), "COPY {source}: no such file");
    }
    let ignored = read(".dockerignore");
    assert!(ignored.lines().any(|l| l == "target"), ".dockerignore leaves target/ out");
}

#[test]
fn the_packaged_configuration_passes_check_config() {
    // The same file with its disk tier in a scratch directory, since the check creates it.
    let dir = tempdir();
    let config = read("contrib/rangecache.toml")
        .replace("\"/var/lib/rangecache\"", &format!("\"{}\"", dir.join("disk").display()));
    let path = dir.join("rangecache.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
    assert!(output.status.success(), "{output:?}");
}
