//! The configuration in effect as a TOML file, secrets masked (`rangecache check-config`): every
//! key with its value after defaults and overrides, each key the environment set marked with its
//! variable. With the masked tokens replaced, the text reads back as the same configuration.

use std::fmt::Write as _;
use std::time::Duration;

use super::env::{Overrides, variable};
use super::{Config, TierConfig, TierKind};

/// What a token is shown as.
pub const MASK: &str = "********";

/// `config` as TOML; `overrides` says which keys came from the environment.
pub fn render(config: &Config, overrides: &Overrides) -> String {
    let mut out = String::new();
    // One `name = value` line of the key at `path`, marked with the variable of whichever of
    // `sources` the environment set.
    let key = |out: &mut String, path: &str, value: String, sources: &[&str]| {
        let name = path.rsplit('.').next().unwrap_or(path);
        let _ = match sources.iter().find(|source| overrides.sets(source)) {
            Some(source) => writeln!(out, "{name} = {value}  # {}", variable(source)),
            None => writeln!(out, "{name} = {value}"),
        };
    };
    let plain = |out: &mut String, path: &str, value: String| key(out, path, value, &[path]);
    plain(&mut out, "listen", quoted(&config.listen.to_string()));
    plain(&mut out, "max_object_size", quoted(&size(config.max_object_size)));
    plain(&mut out, "log_format", quoted(config.log_format.as_str()));
    plain(&mut out, "shutdown_delay", quoted(&duration(config.shutdown_delay)));

    out.push_str("\n[limits]\n");
    let limits = &config.limits;
    plain(&mut out, "limits.header_timeout", quoted(&duration(limits.header_timeout)));
    plain(&mut out, "limits.body_timeout", quoted(&duration(limits.body_timeout)));
    plain(&mut out, "limits.max_connections", limits.max_connections.to_string());

    if let Some(auth) = &config.auth {
        out.push_str("\n[auth]\n");
        // The token is shown (masked) whether it was written or read from a file.
        if auth.read_token.is_some() {
            let sources = ["auth.read_token", "auth.read_token_file"];
            key(&mut out, "auth.read_token", quoted(MASK), &sources);
        }
        let sources = ["auth.write_token", "auth.write_token_file"];
        key(&mut out, "auth.write_token", quoted(MASK), &sources);
    }

    if let Some(tls) = &config.tls {
        out.push_str("\n[tls]\n");
        plain(&mut out, "tls.cert", quoted(&tls.cert.display().to_string()));
        plain(&mut out, "tls.key", quoted(&tls.key.display().to_string()));
    }

    for tier in &config.tiers {
        out.push_str("\n[[tier]]\n");
        render_tier(&mut out, tier);
    }
    out
}

fn render_tier(out: &mut String, tier: &TierConfig) {
    let mut line = |name: &str, value: String| {
        let _ = writeln!(out, "{name} = {value}");
    };
    line("name", quoted(&tier.name));
    // A faulty tier is the kind it wraps, with that kind's keys, and its faults.
    let (kind, faults) = match &tier.kind {
        TierKind::Faulty { inner, faults } => (inner.as_ref(), Some(faults)),
        kind => (kind, None),
    };
    if faults.is_some() {
        line("kind", quoted("faulty"));
        line("wraps", quoted(kind_name(kind)));
    } else {
        line("kind", quoted(kind_name(kind)));
    }
    if let Some(max_size) = tier.max_size {
        line("max_size", quoted(&size(max_size)));
    }
    if let Some(max_ttl) = tier.max_ttl {
        line("max_ttl", quoted(&duration(max_ttl)));
    }
    match kind {
        TierKind::Memory => {}
        TierKind::Disk { path } => line("path", quoted(&path.display().to_string())),
        TierKind::S3 { bucket, endpoint, region, prefix, ca_file } => {
            line("bucket", quoted(bucket));
            if let Some(endpoint) = endpoint {
                line("endpoint", quoted(endpoint));
            }
            line("region", quoted(region));
            line("prefix", quoted(prefix));
            if let Some(ca_file) = ca_file {
                line("ca_file", quoted(&ca_file.display().to_string()));
            }
        }
        TierKind::Remote { url, token, copy_ttl, ca_file } => {
            line("url", quoted(url));
            if token.is_some() {
                line("token", quoted(MASK));
            }
            line("copy_ttl", quoted(&duration(*copy_ttl)));
            if let Some(ca_file) = ca_file {
                line("ca_file", quoted(&ca_file.display().to_string()));
            }
        }
        TierKind::Faulty { .. } => unreachable!("the configuration refuses a faulty tier in one"),
    }
    if let Some(faults) = faults {
        let probability = |ppm: u32| (f64::from(ppm) / 1_000_000.0).to_string();
        let steps: Vec<String> = faults.steps.iter().map(|step| quoted(step)).collect();
        out.push_str("[tier.faults]\n");
        let mut line = |name: &str, value: String| {
            let _ = writeln!(out, "{name} = {value}");
        };
        line("seed", faults.seed.to_string());
        line("error", probability(faults.error_ppm));
        line("stall", probability(faults.stall_ppm));
        line("stall_for", quoted(&duration(faults.stall_for)));
        line("truncate", probability(faults.truncate_ppm));
        line("steps", format!("[{}]", steps.join(", ")));
    }
}

/// The `kind` of a tier that is not faulty.
fn kind_name(kind: &TierKind) -> &'static str {
    match kind {
        TierKind::Memory => "memory",
        TierKind::Disk { .. } => "disk",
        TierKind::S3 { .. } => "s3",
        TierKind::Remote { .. } => "remote",
        TierKind::Faulty { .. } => unreachable!("the configuration refuses a faulty tier in one"),
    }
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A size in the largest binary unit that divides it exactly, e.g. `256MiB`.
fn size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

fn duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".into();
    }
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::Auth;
    use super::*;

    #[cfg(feature = "faults")]
    #[test]
    fn a_faulty_tier_reads_back_as_the_same() {
        let text = "[[tier]]\nname='m'\nkind='faulty'\nwraps='memory'\nmax_size='1MiB'\n\
                    [tier.faults]\nseed=7\nerror=0.01\nstall=0.02\nstall_for='50ms'\n\
                    truncate=0.5\nsteps=['open', 'read']\n";
        let config = Config::parse(text, None).unwrap();
        let shown = render(&config, &Overrides::default());
        assert_eq!(Config::parse(&shown, None).unwrap(), config, "read back from\n{shown}");
    }

    #[test]
    fn sizes_and_durations_are_written_as_the_file_would_write_them() {
        assert_eq!(size(8 << 30), "8GiB");
        assert_eq!(size(256 << 20), "256MiB");
        assert_eq!(size(1536), "1536B");
        assert_eq!(size(3 << 10), "3KiB");
        assert_eq!(duration(Duration::from_secs(90)), "1m 30s");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    #[test]
    fn the_shown_configuration_masks_tokens_and_reads_back_as_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("read-token");
        std::fs::write(&token_file, "r-secret-from-file\n").unwrap();
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, signing_key.serialize_pem()).unwrap();
        let text = format!(
            r#"
listen = "127.0.0.1:1"
max_object_size = "1GiB"
shutdown_delay = "10s"
[limits]
body_timeout = "90s"
[auth]
read_token_file = "{token}"
write_token = "w-secret"
[tls]
cert = "{cert}"
key = "{key}"
[[tier]]
name = "memory"
kind = "memory"
max_size = "64MiB"
[[tier]]
name = "disk"
kind = "disk"
path = "{disk}"
max_size = "1536"
max_ttl = "8h"
[[tier]]
name = "shared"
kind = "s3"
bucket = "cache"
endpoint = "https://s3.internal:9000"
ca_file = "{cert}"
[[tier]]
name = "upstream"
kind = "remote"
url = "https://cache.internal"
token = "t-secret"
ca_file = "{cert}"
"#,
            token = token_file.display(),
            cert = cert_file.display(),
            key = key_file.display(),
            disk = dir.path().join("disk").display(),
        );
        let path = dir.path().join("rangecache.toml");
        std::fs::write(&path, text).unwrap();
        let vars: HashMap<&str, &str> =
            [("RANGECACHE_LISTEN", "0.0.0.0:9000"), ("RANGECACHE_LOG_FORMAT", "json")].into();
        let overrides = Overrides::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned()));
        let config = Config::from_sources(Some(&path), &overrides, None).unwrap();
        let shown = render(&config, &overrides);

        for secret in ["r-secret-from-file", "w-secret", "t-secret"] {
            assert!(!shown.contains(secret), "{secret} shown in\n{shown}");
        }
        for line in [
            "listen = \"0.0.0.0:9000\"  # RANGECACHE_LISTEN",
            "log_format = \"json\"  # RANGECACHE_LOG_FORMAT",
            "shutdown_delay = \"10s\"",
            "body_timeout = \"1m 30s\"",
            "read_token = \"********\"",
            "max_size = \"1536B\"",
        ] {
            assert!(shown.lines().any(|l| l == line), "missing {line:?} in\n{shown}");
        }

        // With the masked tokens in the expected configuration, the text reads back as it.
        let mut masked = config.clone();
        masked.auth = Some(Auth { read_token: Some(MASK.into()), write_token: MASK.into() });
        for tier in &mut masked.tiers {
            if let TierKind::Remote { token: Some(token), .. } = &mut tier.kind {
                *token = MASK.into();
            }
        }
        assert_eq!(Config::parse(&shown, None).unwrap(), masked, "read back from\n{shown}");
    }
}
