//! Configuration (SPEC §5): a TOML file read through serde with unknown keys refused, the
//! command line through clap, and the defaults used when no file is given.
//!
//! Every error names the offending field in one line, so that `main` can print it and exit 2.
//!
//! For containers, the environment overrides the file (`RANGECACHE_LISTEN`, see [`env`]),
//! tokens may be read from files (`write_token_file`) so no secret sits in the TOML, and
//! [`show`] prints the configuration in effect with its secrets masked
//! (`rangecache check-config`).

pub mod env;
pub mod show;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Listen address used when neither the file nor the command line names one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Largest object accepted when the file does not say (8 GiB).
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 8 * 1024 * 1024 * 1024;
/// Size of the default memory tier (256 MiB).
pub const DEFAULT_MEMORY_SIZE: u64 = 256 * 1024 * 1024;
/// Size of the default disk tier (10 GiB).
pub const DEFAULT_DISK_SIZE: u64 = 10 * 1024 * 1024 * 1024;
/// Directory of the default disk tier.
pub const DEFAULT_DISK_PATH: &str = "./rangecache-data";
/// How long a copy taken from a remote tier lives when the upstream does not say when its
/// object expires (a cachew server sends no `Rangecache-Expires`): one hour.
pub const DEFAULT_COPY_TTL: Duration = Duration::from_secs(3600);

/// How long a request's head may take to arrive when the file does not say; it is also how
/// long an idle keep-alive connection is kept (hyper's default).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an upload may send nothing when the file does not say (nginx's
/// `client_body_timeout`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Most connections served at once when the file does not say; more wait in the kernel's
/// accept queue.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The configuration used when no file is given: a memory tier in front of a disk tier.
pub const DEFAULT_FILE: &str = r#"
[[tier]]
name = "memory"
kind = "memory"
max_size = "256MiB"

[[tier]]
name = "disk"
kind = "disk"
path = "./rangecache-data"
max_size = "10GiB"
"#;

/// A configuration that was read and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest object a write may store, in bytes.
    pub max_object_size: u64,
    /// Bounds on what a client may hold of the server.
    pub limits: Limits,
    /// Bearer tokens; `None` leaves the server open.
    pub auth: Option<Auth>,
    /// Tiers, nearest first; the last is authoritative.
    pub tiers: Vec<TierConfig>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The certificate and key to serve HTTPS with; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// After SIGTERM, how long the server keeps serving with `/readyz` answering 503 before it
    /// stops accepting, so that load balancers take it out of rotation first.
    pub shutdown_delay: Duration,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Human,
    /// One JSON object per line, for a log shipper.
    Json,
}

impl LogFormat {
    /// Parses `human` or `json`.
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text {
            "human" => Some(LogFormat::Human),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    /// The name `parse` reads.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

/// The server's certificate chain and private key, both PEM files (`[tls]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Bounds on what a client may hold of the server: time to send a request and connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A request's whole head must arrive within this, counted from when the server starts
    /// waiting for it (the connection's start, or the end of the previous response), so it
    /// also closes idle keep-alive connections; a client trickling its head byte by byte is
    /// cut off at the deadline.
    pub header_timeout: Duration,
    /// An upload that sends no byte for this long is abandoned and stores nothing.
    pub body_timeout: Duration,
    /// Most connections served at once; past it the server accepts no more until one closes.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Bearer tokens (SPEC §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// Token for GET and HEAD (the write token is accepted too); `None` leaves reads open.
    pub read_token: Option<String>,
    /// Token for PUT, POST, DELETE and invalidate.
    pub write_token: String,
}

/// One tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierConfig {
    /// Name used in Cache-Status, metrics and stats.
    pub name: String,
    /// Capacity in bytes, for the tiers that bound it.
    pub max_size: Option<u64>,
    /// Longest time an object may live in this tier; a write's Time-To-Live is capped by it.
    pub max_ttl: Option<Duration>,
    /// What backs the tier.
    pub kind: TierKind,
}

/// What backs a tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TierKind {
    /// A size-bounded LRU in memory.
    Memory,
    /// A directory.
    Disk {
        /// The directory (created if missing).
        path: PathBuf,
    },
    /// An S3-compatible bucket; credentials come from the AWS_* environment variables.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Endpoint URL; `None` for AWS.
        endpoint: Option<String>,
        /// Region.
        region: String,
        /// Prefix of every object key.
        prefix: String,
        /// PEM certificates trusted beside the system's roots when the endpoint is HTTPS.
        ca_file: Option<PathBuf>,
    },
    /// Another rangecache or cachew server over `/api/v1`.
    Remote {
        /// Base URL, e.g. `http://127.0.0.1:8081`.
        url: String,
        /// Bearer token sent with every request.
        token: Option<String>,
        /// Lifetime of a copy of an object whose expiry the upstream does not announce.
        copy_ttl: Duration,
        /// PEM certificates trusted beside the system's roots when the URL is HTTPS.
        ca_file: Option<PathBuf>,
    },
    /// Another kind with faults injected into it, for testing (`kind = "faulty"`, `wraps` the
    /// other kind); accepted only by a build with the `faults` feature.
    Faulty {
        /// The tier under the faults; never itself `Faulty`.
        inner: Box<TierKind>,
        /// What is injected.
        faults: FaultConfig,
    },
}

/// The faults a `faulty` tier injects (`[tier.faults]`): at each step of an operation (an
/// open, a stat, each chunk read, a create, each chunk written, a commit, a delete), or only at
/// the `steps` named, one of them happens with the given probability, drawn from a generator
/// seeded with `seed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultConfig {
    /// Seed of the draws.
    pub seed: u64,
    /// The step fails (a commit or delete half the time after the wrapped tier carried it out,
    /// as when an acknowledgement is lost), in parts per million.
    pub error_ppm: u32,
    /// The step waits first, up to `stall_for`, in parts per million.
    pub stall_ppm: u32,
    /// The longest stall.
    pub stall_for: Duration,
    /// A body read ends early without an error, or a write stores part of its chunk and fails,
    /// in parts per million.
    pub truncate_ppm: u32,
    /// The steps faults are injected at (`open`, `stat`, `read`, `create`, `write`, `commit`,
    /// `delete`); empty for all of them.
    pub steps: Vec<String>,
}

/// The steps of [`FaultConfig::steps`].
pub const FAULT_STEPS: [&str; 7] = ["open", "stat", "read", "create", "write", "commit", "delete"];

/// A configuration error: the field it concerns and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The offending field, e.g. `tier[1].max_size`.
    pub field: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl Config {
    /// The configuration used when no file is given: memory + disk under `./rangecache-data`
    /// ([`DEFAULT_FILE`]).
    pub fn default_with(listen: Option<SocketAddr>) -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_FILE, listen)
    }

    /// The configuration in effect: the file at `path` (or [`DEFAULT_FILE`]), then what the
    /// environment overrides, then `listen` from the command line. An error about a key the
    /// environment set names the variable.
    pub fn from_sources(
        path: Option<&Path>,
        overrides: &env::Overrides,
        listen: Option<SocketAddr>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => read_file(path)?,
            None => DEFAULT_FILE.to_owned(),
        };
        let mut file: FileConfig = toml::from_str(&text).map_err(|e| toml_error(&text, &e))?;
        overrides.apply(&mut file)?;
        file.check(listen).map_err(|e| overrides.name_source(e))
    }

    /// Reads and checks a TOML file; `listen` overrides the file's address.
    pub fn load(path: &Path, listen: Option<SocketAddr>) -> Result<Config, ConfigError> {
        Config::parse(&read_file(path)?, listen)
    }

    /// Parses and checks the text of a TOML file.
    pub fn parse(text: &str, listen: Option<SocketAddr>) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        file.check(listen)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    max_object_size: Option<String>,
    limits: Option<FileLimits>,
    auth: Option<FileAuth>,
    #[serde(default)]
    tier: Vec<FileTier>,
    log_format: Option<String>,
    shutdown_delay: Option<String>,
    tls: Option<FileTls>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuth {
    read_token: Option<String>,
    write_token: Option<String>,
    read_token_file: Option<String>,
    write_token_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTier {
    name: Option<String>,
    kind: Option<String>,
    max_size: Option<String>,
    max_ttl: Option<String>,
    path: Option<String>,
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    prefix: Option<String>,
    url: Option<String>,
    token: Option<String>,
    token_file: Option<String>,
    ca_file: Option<String>,
    copy_ttl: Option<String>,
    wraps: Option<String>,
    faults: Option<FileFaults>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFaults {
    seed: Option<u64>,
    error: Option<f64>,
    stall: Option<f64>,
    stall_for: Option<String>,
    truncate: Option<f64>,
    steps: Option<Vec<String>>,
}

impl FileConfig {
    fn check(self, listen: Option<SocketAddr>) -> Result<Config, ConfigError> {
        let listen = match (listen, &self.listen) {
            (Some(addr), _) => addr,
            (None, Some(text)) => text.parse().map_err(|e| {
                err("listen", format!("{text:?} is not an address like 127.0.0.1:8080 ({e})"))
            })?,
            (None, None) => DEFAULT_LISTEN.parse().expect("a valid address"),
        };
        let max_object_size = match &self.max_object_size {
            Some(text) => parse_size("max_object_size", text)?,
            None => DEFAULT_MAX_OBJECT_SIZE,
        };
        let limits = match self.limits {
            None => Limits::default(),
            Some(limits) => limits.check()?,
        };
        let auth = match self.auth {
            None => None,
            Some(auth) => {
                let write_token =
                    token_or_file("auth.write_token", auth.write_token, auth.write_token_file)?
                        .ok_or_else(|| {
                            err("auth.write_token", "required when [auth] is present")
                        })?;
                let read_token =
                    token_or_file("auth.read_token", auth.read_token, auth.read_token_file)?;
                Some(Auth { read_token, write_token })
            }
        };
        let log_format = match &self.log_format {
            None => LogFormat::default(),
            Some(text) => LogFormat::parse(text)
                .ok_or_else(|| err("log_format", format!("{text:?} is not human or json")))?,
        };
        let shutdown_delay = match &self.shutdown_delay {
            None => Duration::ZERO,
            Some(text) => humantime::parse_duration(text.trim()).map_err(|e| {
                err("shutdown_delay", format!("{text:?} is not a duration like \"10s\" ({e})"))
            })?,
        };
        let tls = self.tls.map(FileTls::check).transpose()?;
        if self.tier.is_empty() {
            return Err(err("tier", "at least one [[tier]] is required"));
        }
        let mut tiers: Vec<TierConfig> = Vec::with_capacity(self.tier.len());
        for (idx, tier) in self.tier.into_iter().enumerate() {
            let tier = tier.check(idx)?;
            if tiers.iter().any(|t| t.name == tier.name) {
                return Err(err(
                    format!("tier[{idx}].name"),
                    format!("{:?} is used by another tier", tier.name),
                ));
            }
            tiers.push(tier);
        }
        Ok(Config { listen, max_object_size, limits, auth, tiers, log_format, tls, shutdown_delay })
    }
}

impl FileLimits {
    fn check(self) -> Result<Limits, ConfigError> {
        let duration = |field: &str, text: Option<String>, default: Duration| match text {
            Some(text) => parse_duration(field, &text),
            None => Ok(default),
        };
        let max_connections = match self.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| err("limits.max_connections", format!("{n} is not at least 1")))?,
        };
        Ok(Limits {
            header_timeout: duration(
                "limits.header_timeout",
                self.header_timeout,
                DEFAULT_HEADER_TIMEOUT,
            )?,
            body_timeout: duration("limits.body_timeout", self.body_timeout, DEFAULT_BODY_TIMEOUT)?,
            max_connections,
        })
    }
}

impl FileTier {
    fn check(self, idx: usize) -> Result<TierConfig, ConfigError> {
        let field = |name: &str| format!("tier[{idx}].{name}");
        let name = self.name.ok_or_else(|| err(field("name"), "required"))?;
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(err(field("name"), format!("{name:?}: use letters, digits, '_' or '-'")));
        }
        let kind =
            self.kind.ok_or_else(|| err(field("kind"), "required (memory, disk, s3 or remote)"))?;
        // A faulty tier is the kind it wraps, with that kind's keys, plus its faults.
        let (kind, faults) = match (kind.as_str(), self.wraps, self.faults) {
            ("faulty", wraps, faults) => {
                if !cfg!(feature = "faults") {
                    return Err(err(
                        field("kind"),
                        "\"faulty\" needs a build with the faults feature (--features faults)",
                    ));
                }
                let wraps =
                    wraps.ok_or_else(|| err(field("wraps"), "required for a faulty tier"))?;
                if wraps == "faulty" {
                    return Err(err(field("wraps"), "a faulty tier cannot wrap another"));
                }
                let faults = faults.unwrap_or(FileFaults {
                    seed: None,
                    error: None,
                    stall: None,
                    stall_for: None,
                    truncate: None,
                    steps: None,
                });
                (wraps, Some(faults.check(&field("faults"))?))
            }
            (_, Some(_), _) => return Err(err(field("wraps"), "only a faulty tier wraps another")),
            (_, None, Some(_)) => {
                return Err(err(field("faults"), "only a faulty tier has faults"));
            }
            (_, None, None) => (kind, None),
        };
        let max_size = self.max_size.map(|s| parse_size(&field("max_size"), &s)).transpose()?;
        let max_ttl = self.max_ttl.map(|s| parse_duration(&field("max_ttl"), &s)).transpose()?;
        // Each kind takes only its own keys, so a misplaced key is reported, not ignored.
        let present = [
            ("path", self.path.is_some()),
            ("bucket", self.bucket.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("region", self.region.is_some()),
            ("prefix", self.prefix.is_some()),
            ("url", self.url.is_some()),
            ("token", self.token.is_some()),
            ("token_file", self.token_file.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("copy_ttl", self.copy_ttl.is_some()),
        ];
        let only = |own: &[&str]| -> Result<(), ConfigError> {
            match present.iter().find(|(key, is_set)| *is_set && !own.contains(key)) {
                Some((key, _)) => Err(err(field(key), format!("not used by a {kind} tier"))),
                None => Ok(()),
            }
        };
        let kind = match kind.as_str() {
            "memory" => {
                only(&[])?;
                if max_size.is_none() {
                    return Err(err(field("max_size"), "required for a memory tier"));
                }
                TierKind::Memory
            }
            "disk" => {
                only(&["path"])?;
                let path = PathBuf::from(
                    self.path.ok_or_else(|| err(field("path"), "required for a disk tier"))?,
                );
                check_directory(&field("path"), &path)?;
                TierKind::Disk { path }
            }
            "s3" => {
                only(&["bucket", "endpoint", "region", "prefix", "ca_file"])?;
                let bucket =
                    self.bucket.ok_or_else(|| err(field("bucket"), "required for an s3 tier"))?;
                if let Some(endpoint) = &self.endpoint {
                    check_url(&field("endpoint"), endpoint)?;
                }
                TierKind::S3 {
                    bucket,
                    endpoint: self.endpoint,
                    region: self.region.unwrap_or_else(|| "us-east-1".into()),
                    prefix: self.prefix.unwrap_or_default(),
                    ca_file: check_ca_file(&field("ca_file"), self.ca_file)?,
                }
            }
            "remote" => {
                only(&["url", "token", "token_file", "ca_file", "copy_ttl"])?;
                let url =
                    self.url.ok_or_else(|| err(field("url"), "required for a remote tier"))?;
                check_url(&field("url"), &url)?;
                let token = token_or_file(&field("token"), self.token, self.token_file)?;
                let copy_ttl = match &self.copy_ttl {
                    Some(text) => parse_duration(&field("copy_ttl"), text)?,
                    None => DEFAULT_COPY_TTL,
                };
                TierKind::Remote {
                    url: url.trim_end_matches('/').to_owned(),
                    token,
                    copy_ttl,
                    ca_file: check_ca_file(&field("ca_file"), self.ca_file)?,
                }
            }
            other => {
                return Err(err(
                    field(if faults.is_some() { "wraps" } else { "kind" }),
                    format!("{other:?} is not one of memory, disk, s3, remote"),
                ));
            }
        };
        let kind = match faults {
            Some(faults) => TierKind::Faulty { inner: Box::new(kind), faults },
            None => kind,
        };
        Ok(TierConfig { name, max_size, max_ttl, kind })
    }
}

impl FileTls {
    fn check(self) -> Result<TlsFiles, ConfigError> {
        let cert = self.cert.ok_or_else(|| err("tls.cert", "required when [tls] is present"))?;
        let key = self.key.ok_or_else(|| err("tls.key", "required when [tls] is present"))?;
        let files = TlsFiles { cert: cert.into(), key: key.into() };
        // Loaded once here so that a bad file stops start-up (and check-config) naming it.
        crate::tls::server_config(&files)?;
        Ok(files)
    }
}

/// A token given in the file or read from `{field}_file` (its content without surrounding
/// whitespace, so a trailing newline does not count), never both.
fn token_or_file(
    field: &str,
    token: Option<String>,
    file: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let token = match (token, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(err(
                format!("{field}_file"),
                format!("give {field} or {field}_file, not both"),
            ));
        }
        (Some(token), None) => {
            check_token(field, &token)?;
            token
        }
        (None, Some(path)) => {
            let field = format!("{field}_file");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err(&field, format!("cannot read {path}: {e}")))?;
            let token = text.trim().to_owned();
            check_token(&field, &token)
                .map_err(|e| err(e.field, format!("{path}: {}", e.message)))?;
            token
        }
    };
    Ok(Some(token))
}

fn check_ca_file(field: &str, path: Option<String>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(path) = path else { return Ok(None) };
    let path = PathBuf::from(path);
    crate::tls::extra_roots(&path).map_err(|message| err(field, message))?;
    Ok(Some(path))
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        field: "--config".into(),
        message: format!("cannot read {}: {e}", path.display()),
    })
}

impl FileFaults {
    fn check(self, field: &str) -> Result<FaultConfig, ConfigError> {
        let ppm = |name: &str, value: Option<f64>| -> Result<u32, ConfigError> {
            let value = value.unwrap_or(0.0);
            if !(0.0..=1.0).contains(&value) {
                return Err(err(format!("{field}.{name}"), "must be a probability from 0 to 1"));
            }
            // Exact for every probability a test names; a millionth is finer than any needs.
            Ok((value * 1_000_000.0).round() as u32)
        };
        let config = FaultConfig {
            seed: self.seed.unwrap_or(0),
            error_ppm: ppm("error", self.error)?,
            stall_ppm: ppm("stall", self.stall)?,
            stall_for: match &self.stall_for {
                Some(text) => parse_duration(&format!("{field}.stall_for"), text)?,
                None => Duration::from_millis(100),
            },
            truncate_ppm: ppm("truncate", self.truncate)?,
            steps: self.steps.unwrap_or_default(),
        };
        if let Some(step) = config.steps.iter().find(|s| !FAULT_STEPS.contains(&s.as_str())) {
            return Err(err(
                format!("{field}.steps"),
                format!("{step:?} is not one of {}", FAULT_STEPS.join(", ")),
            ));
        }
        if config.error_ppm + config.stall_ppm + config.truncate_ppm > 1_000_000 {
            return Err(err(field, "error + stall + truncate must not exceed 1"));
        }
        Ok(config)
    }
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

fn parse_size(field: &str, text: &str) -> Result<u64, ConfigError> {
    let size: bytesize::ByteSize = text
        .trim()
        .parse()
        .map_err(|e| err(field, format!("{text:?} is not a size like \"256MiB\" ({e})")))?;
    if size.as_u64() == 0 {
        return Err(err(field, "must be more than zero bytes"));
    }
    Ok(size.as_u64())
}

fn parse_duration(field: &str, text: &str) -> Result<Duration, ConfigError> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| err(field, format!("{text:?} is not a duration like \"8h\" ({e})")))?;
    if duration.is_zero() {
        return Err(err(field, "must be longer than zero"));
    }
    Ok(duration)
}

fn check_token(field: &str, token: &str) -> Result<(), ConfigError> {
    // A token travels in an Authorization header, so it must be a valid header value.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err(field, "must be non-empty printable ASCII without spaces"));
    }
    Ok(())
}

fn check_url(field: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        Ok(_) => Err(err(field, format!("{url:?} is not an http(s) URL"))),
        Err(e) => Err(err(field, format!("{url:?} is not a URL ({e})"))),
    }
}

fn check_directory(field: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::create_dir_all(path)
        .map_err(|e| err(field, format!("cannot create directory {}: {e}", path.display())))?;
    let probe = path.join(".rangecache-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| err(field, format!("directory {} is not writable: {e}", path.display())))
}

/// Turns a TOML error into one line naming the key and the line of the file.
fn toml_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().replace('\n', " ");
    let span_line =
        error.span().map(|span| text[..span.start.min(text.len())].matches('\n').count());
    // An unknown key is reported at its table; find the key itself from there on.
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    let line_of = |name: &str, from: usize| {
        text.lines().enumerate().skip(from).find_map(|(idx, line)| {
            let rest = line.trim_start().strip_prefix(name)?;
            rest.trim_start().starts_with('=').then_some(idx)
        })
    };
    let field = match (unknown, span_line) {
        (Some(name), from) => match line_of(&name, from.unwrap_or(0)) {
            Some(idx) => format!("{name} (line {})", idx + 1),
            None => name,
        },
        (None, Some(idx)) => {
            let source = text.lines().nth(idx).unwrap_or("").trim();
            let key = source.split('=').next().unwrap_or("").trim();
            if key.is_empty() || key.starts_with('[') {
                format!("line {}", idx + 1)
            } else {
                format!("{key} (line {})", idx + 1)
            }
        }
        (None, None) => "config".into(),
    };
    ConfigError { field, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_error(text: &str, expect_field: &str) {
        let got = Config::parse(text, None).expect_err("the configuration is wrong");
        assert_eq!(got.field, expect_field, "error was: {got}");
        assert!(!got.to_string().contains('\n'), "one line: {got}");
    }

    #[test]
    fn the_example_of_the_spec_parses() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
listen = "127.0.0.1:8080"
max_object_size = "8GiB"
[auth]
read_token = "r-secret"
write_token = "w-secret"
[[tier]]
name = "memory"
kind = "memory"
max_size = "256MiB"
[[tier]]
name = "disk"
kind = "disk"
path = "{}"
max_size = "10GiB"
max_ttl = "8h"
[[tier]]
name = "shared"
kind = "s3"
bucket = "cache"
endpoint = "http://127.0.0.1:9000"
region = "us-east-1"
prefix = "rangecache/"
"#,
            dir.path().display()
        );
        let config = Config::parse(&text, None).unwrap();
        assert_eq!(config.max_object_size, 8 << 30);
        assert_eq!(config.tiers.len(), 3);
        assert_eq!(config.tiers[0].max_size, Some(256 << 20));
        assert_eq!(config.tiers[1].max_ttl, Some(Duration::from_secs(8 * 3600)));
        assert_eq!(
            config.auth,
            Some(Auth { read_token: Some("r-secret".into()), write_token: "w-secret".into() })
        );
    }

    #[test]
    fn a_remote_tier_bounds_its_copies_by_default() {
        let remote = |extra: &str| {
            let text = format!("[[tier]]\nname='r'\nkind='remote'\nurl='http://x/'\n{extra}");
            Config::parse(&text, None).unwrap().tiers.remove(0).kind
        };
        let kind = TierKind::Remote {
            url: "http://x".into(),
            token: None,
            copy_ttl: DEFAULT_COPY_TTL,
            ca_file: None,
        };
        assert_eq!(remote(""), kind);
        let kind = TierKind::Remote {
            url: "http://x".into(),
            token: None,
            copy_ttl: Duration::from_secs(90),
            ca_file: None,
        };
        assert_eq!(remote("copy_ttl = '90s'"), kind);
    }

    #[test]
    fn each_kind_refuses_the_keys_only_other_kinds_use() {
        let memory = "[[tier]]\nname='t'\nkind='memory'\nmax_size='1MiB'\n";
        check_error(&format!("{memory}endpoint='http://x'"), "tier[0].endpoint");
        let disk = "[[tier]]\nname='t'\nkind='disk'\npath='/tmp'\n";
        check_error(&format!("{disk}bucket='b'"), "tier[0].bucket");
        check_error(&format!("{disk}token='t'"), "tier[0].token");
        let s3 = "[[tier]]\nname='t'\nkind='s3'\nbucket='b'\nregion='r'\nprefix='p/'\n";
        check_error(&format!("{s3}path='/tmp'"), "tier[0].path");
        check_error(&format!("{s3}url='http://x'"), "tier[0].url");
        check_error(&format!("{s3}copy_ttl='1h'"), "tier[0].copy_ttl");
        let remote = "[[tier]]\nname='t'\nkind='remote'\nurl='http://x'\ntoken='t'\n";
        check_error(&format!("{remote}region='r'"), "tier[0].region");
        check_error(&format!("{remote}prefix='p/'"), "tier[0].prefix");
        // The first misplaced key in the order of the tier's fields is the one reported.
        check_error(&format!("{memory}copy_ttl='1h'\npath='/tmp'"), "tier[0].path");
    }

    #[cfg(feature = "faults")]
    #[test]
    fn a_faulty_tier_is_the_kind_it_wraps_with_its_faults() {
        let text = "[[tier]]\nname='m'\nkind='faulty'\nwraps='memory'\nmax_size='1MiB'\n\
                    [tier.faults]\nseed=7\nerror=0.01\nstall=0.02\nstall_for='50ms'\ntruncate=0.5\n";
        let tier = Config::parse(text, None).unwrap().tiers.remove(0);
        let faults = FaultConfig {
            seed: 7,
            error_ppm: 10_000,
            stall_ppm: 20_000,
            stall_for: Duration::from_millis(50),
            truncate_ppm: 500_000,
            steps: Vec::new(),
        };
        assert_eq!(tier.kind, TierKind::Faulty { inner: Box::new(TierKind::Memory), faults });
        assert_eq!(tier.max_size, Some(1 << 20));
        let faulty = "[[tier]]\nname='m'\nkind='faulty'\nmax_size='1MiB'\n";
        check_error(faulty, "tier[0].wraps");
        check_error(&format!("{faulty}wraps='faulty'"), "tier[0].wraps");
        check_error(&format!("{faulty}wraps='tape'"), "tier[0].wraps");
        // The wrapped kind's own keys are checked as for that kind.
        check_error(&format!("{faulty}wraps='memory'\nurl='http://x'"), "tier[0].url");
        check_error(
            &format!("{faulty}wraps='memory'\n[tier.faults]\nerror=1.5"),
            "tier[0].faults.error",
        );
        check_error(
            &format!("{faulty}wraps='memory'\n[tier.faults]\nerror=0.6\nstall=0.6"),
            "tier[0].faults",
        );
        check_error(
            &format!("{faulty}wraps='memory'\n[tier.faults]\nsteps=['create', 'flush']"),
            "tier[0].faults.steps",
        );
        check_error(
            "[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'\nwraps='memory'",
            "tier[0].wraps",
        );
        check_error(
            "[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'\n[tier.faults]\nseed=1",
            "tier[0].faults",
        );
    }

    #[cfg(not(feature = "faults"))]
    #[test]
    fn a_faulty_tier_needs_the_faults_feature() {
        check_error(
            "[[tier]]\nname='m'\nkind='faulty'\nwraps='memory'\nmax_size='1MiB'",
            "tier[0].kind",
        );
    }

    #[test]
    fn logs_shutdown_delay_tls_and_token_files_are_read_and_checked() {
        let memory = "[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'\n";
        let config =
            Config::parse(&format!("log_format='json'\nshutdown_delay='15s'\n{memory}"), None)
                .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.shutdown_delay, Duration::from_secs(15));
        let config = Config::parse(memory, None).unwrap();
        assert_eq!((config.log_format, config.shutdown_delay), (LogFormat::Human, Duration::ZERO));
        assert_eq!(config.tls, None);
        check_error(&format!("log_format='xml'\n{memory}"), "log_format");
        check_error(&format!("shutdown_delay='soon'\n{memory}"), "shutdown_delay");
        check_error(&format!("[tls]\nkey='/k'\n{memory}"), "tls.cert");
        check_error(&format!("[tls]\ncert='/absent.pem'\nkey='/k'\n{memory}"), "tls.cert");

        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "  t-from-file\n").unwrap();
        let token = token.display();
        let remote =
            format!("[[tier]]\nname='r'\nkind='remote'\nurl='https://x'\ntoken_file='{token}'\n");
        let TierKind::Remote { token: read, .. } =
            Config::parse(&remote, None).unwrap().tiers.remove(0).kind
        else {
            unreachable!("a remote tier")
        };
        assert_eq!(read.as_deref(), Some("t-from-file"));
        check_error(&format!("{remote}token='t'"), "tier[0].token_file");
        check_error(&format!("{remote}ca_file='/absent.pem'"), "tier[0].ca_file");
        check_error(&format!("{memory}ca_file='/absent.pem'"), "tier[0].ca_file");
        check_error(
            &format!("[auth]\nwrite_token='w'\nwrite_token_file='{token}'\n{memory}"),
            "auth.write_token_file",
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        check_error(
            &format!("[auth]\nwrite_token_file='{}'\n{memory}", empty.display()),
            "auth.write_token_file",
        );
    }

    #[test]
    fn errors_name_the_field() {
        check_error(
            "bogus = 1\n[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'",
            "bogus (line 1)",
        );
        check_error("", "tier");
        check_error("[[tier]]\nname='m'\nkind='memory'\nmax_size='lots'", "tier[0].max_size");
        check_error(
            "[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'\nmax_ttl='soon'",
            "tier[0].max_ttl",
        );
        check_error("[[tier]]\nname='m'\nkind='tape'", "tier[0].kind");
        check_error(
            "[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'\npath='/x'",
            "tier[0].path",
        );
        check_error("[[tier]]\nname='r'\nkind='remote'\nurl='ftp://x'", "tier[0].url");
        check_error(
            "[[tier]]\nname='r'\nkind='remote'\nurl='http://x'\ncopy_ttl='0s'",
            "tier[0].copy_ttl",
        );
        check_error(
            "[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'\ncopy_ttl='1h'",
            "tier[0].copy_ttl",
        );
        check_error(
            "listen='nowhere'\n[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'",
            "listen",
        );
        let memory = "[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'";
        check_error(&format!("[limits]\nheader_timeout='soon'\n{memory}"), "limits.header_timeout");
        check_error(&format!("[limits]\nbody_timeout='0s'\n{memory}"), "limits.body_timeout");
        check_error(&format!("[limits]\nmax_connections=0\n{memory}"), "limits.max_connections");
        check_error(&format!("[limits]\nidle=1\n{memory}"), "idle (line 2)");
        let limits = Config::parse(
            &format!("[limits]\nheader_timeout='2s'\nmax_connections=10\n{memory}"),
            None,
        )
        .expect("valid")
        .limits;
        assert_eq!(
            limits,
            Limits {
                header_timeout: Duration::from_secs(2),
                body_timeout: DEFAULT_BODY_TIMEOUT,
                max_connections: 10,
            }
        );
        check_error(
            "[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'\n[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'",
            "tier[1].name",
        );
        check_error(
            "[auth]\nread_token='r'\n[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'",
            "auth.write_token",
        );
        check_error(
            "[[tier]]\nname='d'\nkind='disk'\npath='/proc/rangecache-cannot-be-here'",
            "tier[0].path",
        );
    }
}
