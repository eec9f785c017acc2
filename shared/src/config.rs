//! Typed configuration: a TOML file (`--config`) overlaid by environment variables, parsed key
//! by key before any port is bound. Every key has one environment variable; the environment
//! wins. A bad value is a [`ConfigError`] naming the key, its variable and the reason; the
//! binaries exit with code 78 (EX_CONFIG) on it.
//!
//! Services declare their keys as a `&[Key]` table; unknown keys in the file are errors (a typo
//! must not silently fall back to a default).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Exit code for a configuration error (sysexits.h EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

/// One configuration key: its name in the TOML file and its environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub env: &'static str,
    pub help: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config key `{key}` (env {env}): {reason}")]
    Invalid { key: &'static str, env: &'static str, reason: String },
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("command line: {0}")]
    Args(String),
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    File,
    Env,
}

/// `a` then `b` as one array (`N` = both lengths): a service's key table from its own keys and
/// shared ones (`health_keys!`), in a `static`.
pub const fn concat_keys<const N: usize>(a: &[Key], b: &[Key]) -> [Key; N] {
    assert!(a.len() + b.len() == N, "concat_keys: N must be the sum of both lengths");
    let mut out = [Key { name: "", env: "", help: "" }; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < b.len() {
        out[a.len() + j] = b[j];
        j += 1;
    }
    out
}

/// Raw values by key name, after file + environment overlay.
#[derive(Debug, Clone)]
pub struct Source {
    keys: &'static [Key],
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl Source {
    /// Reads `file` (if any) and the process environment.
    pub fn load(keys: &'static [Key], file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(keys, file, |k| std::env::var(k).ok())
    }

    /// Like [`Source::load`], with an injectable environment (for tests).
    pub fn load_with(
        keys: &'static [Key],
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut values = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::File { path: path.to_owned(), reason: e.to_string() })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::File {
                path: path.to_owned(),
                reason: e.message().to_owned(),
            })?;
            let mut flat = Vec::new();
            flatten("", &toml::Value::Table(table), &mut flat);
            for (name, value) in flat {
                let Some(key) = keys.iter().find(|k| k.name == name) else {
                    return Err(ConfigError::File { path: path.to_owned(), reason: format!("unknown key `{name}`") });
                };
                values.insert(key.name, (value, Origin::File));
            }
        }
        for key in keys {
            if let Some(v) = env(key.env) {
                values.insert(key.name, (v, Origin::Env));
            }
        }
        Ok(Self { keys, values })
    }

    fn key(&self, name: &str) -> &'static Key {
        self.keys.iter().find(|k| k.name == name).unwrap_or_else(|| panic!("config key `{name}` is not declared"))
    }

    /// An error about `name`, naming its variable.
    pub fn invalid(&self, name: &str, reason: impl fmt::Display) -> ConfigError {
        let key = self.key(name);
        let origin = match self.values.get(key.name) {
            Some((_, Origin::File)) => " (from the config file)",
            Some((_, Origin::Env)) => " (from the environment)",
            None => "",
        };
        ConfigError::Invalid { key: key.name, env: key.env, reason: format!("{reason}{origin}") }
    }

    /// The raw value, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        let key = self.key(name);
        self.values.get(key.name).map(|(v, _)| v.trim()).filter(|v| !v.is_empty())
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    pub fn required(&self, name: &str) -> Result<&str, ConfigError> {
        self.get(name).ok_or_else(|| self.invalid(name, "is required but not set"))
    }

    /// Parses the value with `FromStr`, or returns `default` when unset.
    pub fn parse<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e| self.invalid(name, format!("invalid value {v:?}: {e}"))),
        }
    }

    /// A duration in milliseconds (`*_ms` keys); must be > 0.
    pub fn millis(&self, name: &str, default_ms: u64) -> Result<Duration, ConfigError> {
        let ms: u64 = self.parse(name, default_ms)?;
        if ms == 0 {
            return Err(self.invalid(name, "must be greater than 0"));
        }
        Ok(Duration::from_millis(ms))
    }

    /// A path; optional.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(self.invalid(name, format!("invalid boolean {v:?}"))),
        }
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, String)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&name, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        toml::Value::Array(a) => out.push((
            prefix.to_owned(),
            a.iter()
                .map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        )),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// Command line of both binaries: `[--config FILE] [--check-config] [--help] [--version]`.
#[derive(Debug, Default)]
pub struct Args {
    pub config: Option<PathBuf>,
    pub check_only: bool,
    pub help: bool,
    pub version: bool,
}

impl Args {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ConfigError> {
        let mut out = Args::default();
        let mut it = args.into_iter().skip(1);
        while let Some(a) = it.next() {
            match a.as_str() {
                "--config" | "-c" => {
                    out.config =
                        Some(it.next().ok_or_else(|| ConfigError::Args("--config needs a file".into()))?.into())
                }
                s if s.starts_with("--config=") => out.config = Some(s["--config=".len()..].into()),
                "--check-config" => out.check_only = true,
                "--help" | "-h" => out.help = true,
                "--version" | "-V" => out.version = true,
                other => return Err(ConfigError::Args(format!("unknown argument {other:?}"))),
            }
        }
        Ok(out)
    }
}

/// Help text listing every key with its variable.
pub fn help(binary: &str, about: &str, keys: &[Key]) -> String {
    let mut s = format!(
        "{binary} {}\n{about}\n\nUSAGE: {binary} [--config FILE] [--check-config]\n\nKEYS (TOML key / environment variable):\n",
        crate::VERSION
    );
    for k in keys {
        s.push_str(&format!("  {:<28} {:<32} {}\n", k.name, k.env, k.help));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    static KEYS: &[Key] = &[
        Key { name: "http_addr", env: "T_HTTP_ADDR", help: "" },
        Key { name: "printer.url", env: "T_PRINTER_URL", help: "" },
    ];

    #[test]
    fn environment_overrides_the_file_and_errors_name_the_key() {
        let dir = tempdir();
        let f = dir.join("c.toml");
        std::fs::write(&f, "http_addr = \"127.0.0.1:1\"\n[printer]\nurl = \"tcp://x:9100\"\n").unwrap();
        let s = Source::load_with(KEYS, Some(&f), |k| (k == "T_HTTP_ADDR").then(|| "nope".into())).unwrap();
        assert_eq!(s.get("printer.url"), Some("tcp://x:9100"));
        let err = s.parse::<std::net::SocketAddr>("http_addr", "0.0.0.0:1".parse().unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("http_addr") && msg.contains("T_HTTP_ADDR") && msg.contains("nope"), "{msg}");
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let dir = tempdir();
        let f = dir.join("c.toml");
        std::fs::write(&f, "htp_addr = \"x\"\n").unwrap();
        let err = Source::load_with(KEYS, Some(&f), |_| None).unwrap_err();
        assert!(err.to_string().contains("unknown key `htp_addr`"));
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("wixprint-cfg-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
