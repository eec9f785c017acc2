//! The alert keys (`ALERT_*`, the same variables for both services), declared once with
//! [`alert_keys!`](crate::alert_keys) and parsed once by [`AlertConfig::parse`].

use std::time::Duration;

use lettre::message::Mailbox;

use super::texts::Texts;
use crate::breaker::BreakerConfig;
use crate::config::{ConfigError, Source};

/// Declares the alert keys (append them to a service's key table with `concat_keys`).
#[macro_export]
macro_rules! alert_keys {
    () => {
        [
            $crate::config::Key { name: "alert.smtp_url", env: "ALERT_SMTP_URL", help: "e-mail alerts: smtp://host:25, smtp://user@host:587?tls=required (STARTTLS), smtps://user@host:465 (implicit TLS); unset = alerts off" },
            $crate::config::Key { name: "alert.smtp_password_file", env: "ALERT_SMTP_PASSWORD_FILE", help: "file holding the SMTP password of the URL's user (trimmed; %d/<name> = systemd credential)" },
            $crate::config::Key { name: "alert.smtp_ca_file", env: "ALERT_SMTP_CA_FILE", help: "PEM certificate(s) to trust for the SMTP server besides the public roots (a private CA)" },
            $crate::config::Key { name: "alert.from", env: "ALERT_FROM", help: "sender address, e.g. \"Kitchen <printer@example.com>\" (required with ALERT_SMTP_URL)" },
            $crate::config::Key { name: "alert.to", env: "ALERT_TO", help: "recipients, comma-separated (required with ALERT_SMTP_URL)" },
            $crate::config::Key { name: "alert.language", env: "ALERT_LANGUAGE", help: "language of the mails: de or en, or one of ALERT_LABELS_FILE (default de)" },
            $crate::config::Key { name: "alert.labels_file", env: "ALERT_LABELS_FILE", help: "TOML file overriding or adding alert texts per language (see deploy/alert-labels.example.toml)" },
            $crate::config::Key { name: "alert.restaurant_name", env: "ALERT_RESTAURANT_NAME", help: "the restaurant's name in every mail (default none)" },
            $crate::config::Key { name: "alert.throttle_secs", env: "ALERT_THROTTLE_SECS", help: "at most one mail per alert kind per (default 3600; 0 = no throttling)" },
            $crate::config::Key { name: "alert.digest_secs", env: "ALERT_DIGEST_SECS", help: "alerts raised within this window go out as one digest mail (default 30; 0 = at once)" },
            $crate::config::Key { name: "alert.send_timeout_ms", env: "ALERT_SEND_TIMEOUT_MS", help: "bound of one whole SMTP send, connect to accept (default 30000)" },
            $crate::config::Key { name: "alert.retry_first_ms", env: "ALERT_RETRY_FIRST_MS", help: "first wait after a failed send, doubling (default 5000)" },
            $crate::config::Key { name: "alert.retry_max_ms", env: "ALERT_RETRY_MAX_MS", help: "longest wait between sends of a failing alert (default 600000)" },
            $crate::config::Key { name: "alert.max_attempts", env: "ALERT_MAX_ATTEMPTS", help: "sends of one alert before it is failed (default 200; 0 = never give up)" },
            $crate::config::Key { name: "alert.smtp_breaker_failures", env: "ALERT_SMTP_BREAKER_FAILURES", help: "failed sends that open the smtp circuit breaker (default 2)" },
            $crate::config::Key { name: "alert.smtp_breaker_open_ms", env: "ALERT_SMTP_BREAKER_OPEN_MS", help: "how long the open smtp breaker sends nothing before the next mail is its probe (default 120000)" },
            $crate::config::Key { name: "alert.smtp_breaker_successes", env: "ALERT_SMTP_BREAKER_SUCCESSES", help: "good sends after the probe that close the smtp breaker (default 1)" },
        ]
    };
}

/// Mail settings; `None` from [`AlertConfig::parse`] = alerts off.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// As configured (no password in it: refused).
    pub smtp_url: String,
    /// `scheme://host:port` for `GetStatus` and logs.
    pub smtp_display: String,
    pub user: Option<String>,
    pub password: Option<crate::auth::Secret>,
    /// DER certificates to trust besides the public roots.
    pub ca: Vec<Vec<u8>>,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    pub language: String,
    pub texts: Texts,
    pub restaurant: String,
    pub throttle: Duration,
    pub digest: Duration,
    pub send_timeout: Duration,
    pub retry: crate::backoff::Backoff,
    pub max_attempts: u32,
    pub breaker: BreakerConfig,
    pub time_zone: jiff::tz::TimeZone,
}

impl AlertConfig {
    /// Reads the `ALERT_*` keys. Every key is checked even when `ALERT_SMTP_URL` is unset
    /// (a mistake shows before the day mail is switched on); `Ok(None)` = off.
    pub fn parse(src: &Source, time_zone: jiff::tz::TimeZone) -> Result<Option<AlertConfig>, ConfigError> {
        let secs = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            let s: u64 = src.parse(name, default)?;
            if s > 7 * 24 * 3600 {
                return Err(src.invalid(name, "must be at most a week (604800)"));
            }
            Ok(Duration::from_secs(s))
        };
        let throttle = secs("alert.throttle_secs", 3600)?;
        let digest = secs("alert.digest_secs", 30)?;
        let send_timeout = src.millis("alert.send_timeout_ms", 30_000)?;
        if send_timeout.is_zero() {
            return Err(src.invalid("alert.send_timeout_ms", "must be greater than 0"));
        }
        let first = src.millis("alert.retry_first_ms", 5_000)?;
        let max = src.millis("alert.retry_max_ms", 600_000)?;
        let retry = crate::backoff::Backoff::exponential(first, 2.0, max, 0.25)
            .map_err(|e| src.invalid(if first.is_zero() { "alert.retry_first_ms" } else { "alert.retry_max_ms" }, e))?;
        let max_attempts: u32 = src.parse("alert.max_attempts", 200)?;
        let breaker = BreakerConfig::SMTP.from_source(src, "alert.smtp_breaker")?;
        let texts = match src.path("alert.labels_file") {
            None => Texts::builtin(),
            Some(path) => Texts::load(&path).map_err(|e| src.invalid("alert.labels_file", e))?,
        };
        let language = src.string("alert.language", "de").to_lowercase();
        if !texts.has(&language) {
            return Err(src.invalid(
                "alert.language",
                format!("{language:?} has no alert texts (built in: de, en; others from ALERT_LABELS_FILE)"),
            ));
        }
        let restaurant = src.string("alert.restaurant_name", "");
        let from = src
            .get("alert.from")
            .map(|s| s.parse::<Mailbox>().map_err(|e| src.invalid("alert.from", format!("not an address: {e}"))))
            .transpose()?;
        let to = src
            .get("alert.to")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(|a| {
                        a.parse::<Mailbox>()
                            .map_err(|e| src.invalid("alert.to", format!("{a:?} is not an address: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let ca = match src.path("alert.smtp_ca_file") {
            None => Vec::new(),
            Some(path) => read_pem_certs(&path).map_err(|e| src.invalid("alert.smtp_ca_file", e))?,
        };
        let Some(url) = src.get("alert.smtp_url") else {
            return Ok(None);
        };
        let (smtp_display, user) = check_url(url).map_err(|e| src.invalid("alert.smtp_url", e))?;
        let from = from.ok_or_else(|| src.invalid("alert.from", "is required with ALERT_SMTP_URL"))?;
        let to =
            to.filter(|t| !t.is_empty()).ok_or_else(|| src.invalid("alert.to", "is required with ALERT_SMTP_URL"))?;
        let password = match src.get("alert.smtp_password_file") {
            None => None,
            Some(raw) => {
                let creds = std::env::var("CREDENTIALS_DIRECTORY").ok();
                let path = crate::auth::credential_path(raw, creds.as_deref())
                    .map_err(|e| src.invalid("alert.smtp_password_file", e))?;
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    src.invalid("alert.smtp_password_file", format!("cannot read {}: {e}", path.display()))
                })?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(src.invalid("alert.smtp_password_file", format!("{} is empty", path.display())));
                }
                Some(crate::auth::Secret::from_password(text))
            }
        };
        if password.is_some() && user.is_none() {
            return Err(src.invalid(
                "alert.smtp_url",
                "has no user for the password of ALERT_SMTP_PASSWORD_FILE (smtp://user@host)",
            ));
        }
        if user.is_some() && password.is_none() {
            return Err(src.invalid("alert.smtp_password_file", "is required when ALERT_SMTP_URL names a user"));
        }
        Ok(Some(AlertConfig {
            smtp_url: url.to_owned(),
            smtp_display,
            user,
            password,
            ca,
            from,
            to,
            language,
            texts,
            restaurant,
            throttle,
            digest,
            send_timeout,
            retry,
            max_attempts,
            breaker,
            time_zone,
        }))
    }

    /// What `GetStatus` shows: "on: smtp://host:port (to a@b, c@d)".
    pub fn describe(&self) -> String {
        let to = self.to.iter().map(|m| m.email.to_string()).collect::<Vec<_>>().join(", ");
        format!("on: {} (to {to})", self.smtp_display)
    }
}

/// `GetStatus`'s `alerts` field.
pub fn describe(config: Option<&AlertConfig>) -> String {
    config.map_or_else(|| "off".to_owned(), AlertConfig::describe)
}

/// Checks the URL the way lettre will read it; returns what may be shown and the user.
fn check_url(url: &str) -> Result<(String, Option<String>), String> {
    let (scheme, rest) = url.split_once("://").ok_or("must start with smtp:// or smtps://")?;
    if scheme != "smtp" && scheme != "smtps" {
        return Err(format!("scheme {scheme:?}: must be smtp or smtps"));
    }
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = authority.split('/').next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if hostport.is_empty() {
        return Err("has no host".into());
    }
    if userinfo.is_some_and(|u| u.contains(':')) {
        return Err("must not hold a password: put it in ALERT_SMTP_PASSWORD_FILE".into());
    }
    let mut tls = "";
    if let Some(q) = query {
        for pair in q.split('&') {
            match pair {
                "tls=required" => tls = "?tls=required",
                "tls=opportunistic" => tls = "?tls=opportunistic",
                other => return Err(format!("unknown parameter {other:?} (only tls=required or tls=opportunistic)")),
            }
        }
        if scheme == "smtps" && !tls.is_empty() {
            return Err("smtps:// is implicit TLS already; tls= is for smtp:// (STARTTLS)".into());
        }
    }
    lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url).map_err(|e| e.to_string())?;
    let user = userinfo.filter(|u| !u.is_empty()).map(percent_decode);
    Ok((format!("{scheme}://{hostport}{tls}"), user))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_pem_certs(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(env: &'static [(&'static str, &'static str)]) -> Source {
        static KEYS: &[crate::config::Key] = &crate::alert_keys!();
        Source::load_with(KEYS, None, |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())).unwrap()
    }

    fn parse(env: &'static [(&'static str, &'static str)]) -> Result<Option<AlertConfig>, String> {
        AlertConfig::parse(&source(env), jiff::tz::TimeZone::UTC).map_err(|e| e.to_string())
    }

    #[test]
    fn off_without_url_and_defaults() {
        assert!(parse(&[]).unwrap().is_none());
        let c = parse(&[
            ("ALERT_SMTP_URL", "smtp://127.0.0.1:2525"),
            ("ALERT_FROM", "a@b.ch"),
            ("ALERT_TO", "c@d.ch, Ö <e@f.ch>"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.throttle, Duration::from_secs(3600));
        assert_eq!(c.digest, Duration::from_secs(30));
        assert_eq!(c.send_timeout, Duration::from_secs(30));
        assert_eq!(c.breaker, BreakerConfig::SMTP);
        assert_eq!(c.to.len(), 2);
        assert_eq!(c.describe(), "on: smtp://127.0.0.1:2525 (to c@d.ch, e@f.ch)");
        assert_eq!(c.language, "de");
    }

    #[test]
    fn errors_name_the_key() {
        for (env, key) in [
            (&[("ALERT_SMTP_URL", "http://x")][..], "ALERT_SMTP_URL"),
            (
                &[("ALERT_SMTP_URL", "smtp://u:pw@x"), ("ALERT_FROM", "a@b.ch"), ("ALERT_TO", "c@d.ch")][..],
                "ALERT_SMTP_URL",
            ),
            (&[("ALERT_SMTP_URL", "smtp://x"), ("ALERT_TO", "c@d.ch")][..], "ALERT_FROM"),
            (&[("ALERT_SMTP_URL", "smtp://x"), ("ALERT_FROM", "a@b.ch"), ("ALERT_TO", "nope")][..], "ALERT_TO"),
            (&[("ALERT_FROM", "not an address")][..], "ALERT_FROM"),
            (&[("ALERT_LANGUAGE", "fr")][..], "ALERT_LANGUAGE"),
            (&[("ALERT_SEND_TIMEOUT_MS", "0")][..], "ALERT_SEND_TIMEOUT_MS"),
            (&[("ALERT_THROTTLE_SECS", "x")][..], "ALERT_THROTTLE_SECS"),
            (&[("ALERT_SMTP_BREAKER_FAILURES", "0")][..], "ALERT_SMTP_BREAKER_FAILURES"),
            (
                &[("ALERT_SMTP_URL", "smtp://u@x"), ("ALERT_FROM", "a@b.ch"), ("ALERT_TO", "c@d.ch")][..],
                "ALERT_SMTP_PASSWORD_FILE",
            ),
        ] {
            let env: &'static [(&'static str, &'static str)] = Box::leak(env.to_vec().into_boxed_slice());
            let e = parse(env).unwrap_err();
            assert!(e.contains(key), "{env:?}: {e}");
        }
    }
}
