//! Overrides from the environment, for containers: every top-level key of the file and every
//! key of its `[limits]`, `[auth]` and `[tls]` tables can be set as `RANGECACHE_` followed by
//! the key's path in capitals, dots as underscores: `RANGECACHE_LISTEN`,
//! `RANGECACHE_LIMITS_MAX_CONNECTIONS`, `RANGECACHE_AUTH_WRITE_TOKEN_FILE`. A variable wins over
//! the file; `--listen` wins over both. The tiers, an array, are the file's alone.
//!
//! A token and its `_file` form are one setting: overriding either drops the other from the
//! file, so `RANGECACHE_AUTH_WRITE_TOKEN_FILE` replaces a `write_token` written in the TOML.

use super::{ConfigError, FileAuth, FileConfig, FileLimits, FileTls, err};

/// Every key the environment can set, as written in the file.
pub const KEYS: [&str; 13] = [
    "listen",
    "max_object_size",
    "log_format",
    "shutdown_delay",
    "limits.header_timeout",
    "limits.body_timeout",
    "limits.max_connections",
    "auth.read_token",
    "auth.read_token_file",
    "auth.write_token",
    "auth.write_token_file",
    "tls.cert",
    "tls.key",
];

/// The variable that sets `key`, e.g. `RANGECACHE_LIMITS_MAX_CONNECTIONS`.
pub fn variable(key: &str) -> String {
    format!("RANGECACHE_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The values the environment sets, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    set: Vec<(&'static str, String)>,
}

impl Overrides {
    /// The overrides in this process's environment.
    pub fn from_env() -> Overrides {
        Overrides::from_lookup(|name| std::env::var(name).ok())
    }

    /// The overrides `lookup` finds, asked for each variable of [`KEYS`] by name.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Overrides {
        let set = KEYS.iter().filter_map(|key| Some((*key, lookup(&variable(key))?))).collect();
        Overrides { set }
    }

    /// The keys set, in the order of [`KEYS`].
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.set.iter().map(|(key, _)| *key)
    }

    /// True if the environment sets `key`.
    pub fn sets(&self, key: &str) -> bool {
        self.set.iter().any(|(k, _)| *k == key)
    }

    /// Writes every override into the file's values, before they are checked.
    pub(super) fn apply(&self, file: &mut FileConfig) -> Result<(), ConfigError> {
        for (key, text) in &self.set {
            let value = Some(text.clone());
            match *key {
                "listen" => file.listen = value,
                "max_object_size" => file.max_object_size = value,
                "log_format" => file.log_format = value,
                "shutdown_delay" => file.shutdown_delay = value,
                "limits.header_timeout" => file_limits(&mut file.limits).header_timeout = value,
                "limits.body_timeout" => file_limits(&mut file.limits).body_timeout = value,
                "limits.max_connections" => {
                    let n = text.trim().parse().map_err(|_| {
                        err(
                            format!("{key} (from {})", variable(key)),
                            format!("{text:?} is not a whole number"),
                        )
                    })?;
                    file_limits(&mut file.limits).max_connections = Some(n);
                }
                "auth.read_token" => {
                    let auth = file.auth.get_or_insert_with(FileAuth::default);
                    (auth.read_token, auth.read_token_file) = (value, None);
                }
                "auth.read_token_file" => {
                    let auth = file.auth.get_or_insert_with(FileAuth::default);
                    (auth.read_token, auth.read_token_file) = (None, value);
                }
                "auth.write_token" => {
                    let auth = file.auth.get_or_insert_with(FileAuth::default);
                    (auth.write_token, auth.write_token_file) = (value, None);
                }
                "auth.write_token_file" => {
                    let auth = file.auth.get_or_insert_with(FileAuth::default);
                    (auth.write_token, auth.write_token_file) = (None, value);
                }
                "tls.cert" => file.tls.get_or_insert_with(FileTls::default).cert = value,
                "tls.key" => file.tls.get_or_insert_with(FileTls::default).key = value,
                other => unreachable!("{other} is in KEYS but has no override"),
            }
        }
        Ok(())
    }

    /// `error`, its field followed by the variable that set it, if one did.
    pub(super) fn name_source(&self, mut error: ConfigError) -> ConfigError {
        if let Some(key) = self.keys().find(|key| error.field == *key) {
            error.field = format!("{} (from {})", error.field, variable(key));
        }
        error
    }
}

fn file_limits(limits: &mut Option<FileLimits>) -> &mut FileLimits {
    limits.get_or_insert_with(FileLimits::default)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::super::{Config, LogFormat};
    use super::*;

    const MEMORY: &str = "[[tier]]\nname='m'\nkind='memory'\nmax_size='1MiB'\n";

    fn overrides(vars: &[(&str, &str)]) -> Overrides {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Overrides::from_lookup(|name| vars.get(name).cloned())
    }

    fn effective(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rangecache.toml");
        std::fs::write(&path, text).unwrap();
        Config::from_sources(Some(&path), &overrides(vars), None)
    }

    /// The keys serde accepts in one table, read from the message of an unknown key.
    fn accepted_keys(table: &str) -> Vec<String> {
        let text = match table {
            "" => format!("bogus_key = 1\n{MEMORY}"),
            table => format!("[{table}]\nbogus_key = 1\n{MEMORY}"),
        };
        let error = Config::parse(&text, None).expect_err("an unknown key");
        // serde says "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`, `c`".
        let (_, expected) = error.message.split_once("expected ").expect(&error.message);
        let expected = expected.trim_start_matches("one of ");
        expected
            .split(", ")
            .flat_map(|keys| keys.split(" or "))
            .map(|key| key.trim_matches('`').to_owned())
            .collect()
    }

    #[test]
    fn every_key_of_the_file_but_the_tiers_has_a_variable() {
        let mut missing = Vec::new();
        for key in accepted_keys("") {
            match key.as_str() {
                "tier" => {} // an array of tables: the file's alone
                "limits" | "auth" | "tls" => {
                    for inner in accepted_keys(&key) {
                        let path = format!("{key}.{inner}");
                        if !KEYS.contains(&path.as_str()) {
                            missing.push(path);
                        }
                    }
                }
                _ if KEYS.contains(&key.as_str()) => {}
                _ => missing.push(key),
            }
        }
        assert!(missing.is_empty(), "keys the environment cannot set: {missing:?}");
    }

    #[test]
    fn variables_override_the_file_and_the_command_line_overrides_them() {
        let text = format!("listen = '127.0.0.1:1'\nmax_object_size = '1MiB'\n{MEMORY}");
        let config = effective(
            &text,
            &[
                ("RANGECACHE_LISTEN", "0.0.0.0:9000"),
                ("RANGECACHE_LOG_FORMAT", "json"),
                ("RANGECACHE_LIMITS_MAX_CONNECTIONS", "12"),
                ("RANGECACHE_SHUTDOWN_DELAY", "5s"),
                ("RANGECACHE_UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.max_object_size, 1 << 20, "a key no variable sets keeps the file's");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.limits.max_connections, 12);
        assert_eq!(config.shutdown_delay, Duration::from_secs(5));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rangecache.toml");
        std::fs::write(&path, &text).unwrap();
        let vars = overrides(&[("RANGECACHE_LISTEN", "0.0.0.0:9000")]);
        let listen = "127.0.0.1:7".parse().unwrap();
        let config = Config::from_sources(Some(&path), &vars, Some(listen)).unwrap();
        assert_eq!(config.listen, listen);
    }

    #[test]
    fn a_token_file_from_the_environment_replaces_the_files_token() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("write-token");
        std::fs::write(&token, "from-a-file\n").unwrap();
        let text = format!("[auth]\nwrite_token = 'in-the-toml'\n{MEMORY}");
        let config =
            effective(&text, &[("RANGECACHE_AUTH_WRITE_TOKEN_FILE", token.to_str().unwrap())])
                .unwrap();
        let auth = config.auth.expect("auth");
        assert_eq!(auth.write_token, "from-a-file", "read without its newline");
        let config = effective(MEMORY, &[("RANGECACHE_AUTH_WRITE_TOKEN", "w")]).unwrap();
        assert_eq!(config.auth.expect("[auth] made by the variable").write_token, "w");
    }

    #[test]
    fn errors_name_the_variable_that_set_the_key() {
        let error = effective(MEMORY, &[("RANGECACHE_LISTEN", "nowhere")]).unwrap_err();
        assert_eq!(error.field, "listen (from RANGECACHE_LISTEN)");
        let error =
            effective(MEMORY, &[("RANGECACHE_LIMITS_MAX_CONNECTIONS", "many")]).unwrap_err();
        assert_eq!(error.field, "limits.max_connections (from RANGECACHE_LIMITS_MAX_CONNECTIONS)");
        let error =
            effective(MEMORY, &[("RANGECACHE_AUTH_WRITE_TOKEN_FILE", "/nonexistent")]).unwrap_err();
        assert_eq!(error.field, "auth.write_token_file (from RANGECACHE_AUTH_WRITE_TOKEN_FILE)");
        let error = effective(MEMORY, &[("RANGECACHE_TLS_CERT", "/nonexistent")]).unwrap_err();
        assert_eq!(error.field, "tls.key", "[tls] needs both files: {error}");
    }
}
