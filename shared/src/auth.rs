//! Bearer tokens for the gRPC services (`authorization: Bearer <token>`).
//!
//! Three tokens, each its own file: the admin token of each service (`INGEST_ADMIN_TOKEN_FILE`,
//! `PRINT_ADMIN_TOKEN_FILE`) and the submit token (`PRINT_SUBMIT_TOKEN_FILE`) that wix-ingest
//! presents to wix-print's `PrintService/SubmitOrder`. A token guards exactly one service, so the
//! admin token cannot inject orders and the submit token cannot read orders.
//!
//! Rules: file contents are trimmed; shorter than [`MIN_TOKEN_LEN`] or not printable ASCII is a
//! configuration error (exit 78). A path `%d/<name>` is read from `$CREDENTIALS_DIRECTORY`
//! (systemd `LoadCredential=`). Comparison is constant-time; a token is never logged or shown
//! (`Secret`'s `Debug` is redacted). A service without a token leaves that service open, which
//! only a loopback address allows ([`require_unless_loopback`]). Health and reflection are never
//! guarded: only the services wrapped in [`ServerAuth`] are.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::config::{ConfigError, Source};
use crate::ratelimit::{LogDecision, LogLimiter};

/// Shortest token accepted (characters after trimming).
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 4096;

/// A token: never printed, compared in constant time.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// Checks a token's shape: length and printable ASCII (it travels in an HTTP/2 header).
    pub fn new(token: &str) -> Result<Self, String> {
        let t = token.trim();
        if t.is_empty() {
            return Err("the token is empty".into());
        }
        if t.len() < MIN_TOKEN_LEN {
            return Err(format!("the token is shorter than {MIN_TOKEN_LEN} characters"));
        }
        if t.len() > MAX_TOKEN_LEN {
            return Err(format!("the token is longer than {MAX_TOKEN_LEN} characters"));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces".into());
        }
        Ok(Self(t.into()))
    }

    /// Constant-time comparison with what a client presented.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// The `authorization` header value a client sends (marked sensitive).
    pub fn bearer_header(&self) -> AsciiMetadataValue {
        let mut v: AsciiMetadataValue =
            MetadataValue::try_from(format!("Bearer {}", self.0)).expect("checked printable ASCII in Secret::new");
        v.set_sensitive(true);
        v
    }

    /// A password (the SMTP password of alerts): any non-empty text, never printed. Only
    /// [`Secret::new`] checks a bearer token's shape.
    pub fn from_password(password: &str) -> Self {
        Self(password.into())
    }

    /// The secret itself, for the one place that must hand it over (an SMTP login).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether two secrets are the same token (constant-time).
    pub fn same_as(&self, other: &Secret) -> bool {
        self.matches(other.0.as_bytes())
    }
}

/// Resolves a token path: `%d/<name>` (and `$CREDENTIALS_DIRECTORY/<name>`, expanded by the shell
/// or not) is the credential `<name>` of systemd's `LoadCredential=`.
pub fn credential_path(raw: &str, credentials_dir: Option<&str>) -> Result<PathBuf, String> {
    for prefix in ["%d/", "$CREDENTIALS_DIRECTORY/", "${CREDENTIALS_DIRECTORY}/"] {
        if let Some(name) = raw.strip_prefix(prefix) {
            let dir = credentials_dir.filter(|d| !d.is_empty()).ok_or_else(|| {
                format!("{raw:?} names a systemd credential but CREDENTIALS_DIRECTORY is not set (LoadCredential=)")
            })?;
            return Ok(PathBuf::from(dir).join(name));
        }
    }
    Ok(PathBuf::from(raw))
}

/// Reads the token file named by config key `key`, if set. Errors name the key.
pub fn token_from_source(src: &Source, key: &str) -> Result<Option<Secret>, ConfigError> {
    let Some(raw) = src.get(key) else { return Ok(None) };
    let creds = std::env::var("CREDENTIALS_DIRECTORY").ok();
    let path = credential_path(raw, creds.as_deref()).map_err(|e| src.invalid(key, e))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| src.invalid(key, format!("cannot read token file {}: {e}", path.display())))?;
    Secret::new(&text).map(Some).map_err(|e| src.invalid(key, format!("{}: {e}", path.display())))
}

/// A service listening on a non-loopback address must have its token.
pub fn require_unless_loopback(
    src: &Source,
    key: &str,
    token: &Option<Secret>,
    loopback: bool,
    why: &str,
) -> Result<(), ConfigError> {
    if token.is_none() && !loopback {
        return Err(src.invalid(key, format!("is required: {why} is not a loopback address")));
    }
    Ok(())
}

/// Refuses two keys holding the same token (one token per service).
pub fn require_distinct(
    src: &Source,
    key: &str,
    a: &Option<Secret>,
    other_key_env: &str,
    b: &Option<Secret>,
) -> Result<(), ConfigError> {
    if let (Some(a), Some(b)) = (a, b)
        && a.same_as(b)
    {
        return Err(src.invalid(key, format!("holds the same token as {other_key_env}; each service needs its own")));
    }
    Ok(())
}

pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Whether `url` (`http://host:port/...`) names this machine: `localhost` or a loopback IP.
pub fn url_is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Server side: refuses calls without the right bearer token with `UNAUTHENTICATED`; open
/// when no token is configured. Refusals are logged at most ten lines a minute.
#[derive(Clone)]
pub struct ServerAuth {
    token: Option<Secret>,
    service: &'static str,
    log: Arc<LogLimiter>,
}

impl ServerAuth {
    pub fn new(service: &'static str, token: Option<Secret>) -> Self {
        Self { token, service, log: Arc::new(LogLimiter::per_minute(10)) }
    }

    fn refuse(&self, reason: &'static str) -> Status {
        match self.log.check() {
            LogDecision::Log { suppressed } => {
                tracing::warn!(service = self.service, reason, suppressed, "gRPC call refused")
            }
            LogDecision::LogLast => tracing::warn!(
                service = self.service,
                reason,
                "gRPC call refused; further refusals are suppressed for this minute"
            ),
            LogDecision::Suppress => {}
        }
        Status::unauthenticated(format!("{}: {reason}", self.service))
    }
}

impl Interceptor for ServerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else { return Ok(req) };
        let Some(value) = req.metadata().get("authorization") else {
            return Err(self.refuse("missing `authorization: Bearer <token>`"));
        };
        let bytes = value.as_bytes();
        let presented = match bytes.get(..7) {
            Some(p) if p.eq_ignore_ascii_case(b"bearer ") => bytes[7..].trim_ascii(),
            _ => return Err(self.refuse("the authorization header is not `Bearer <token>`")),
        };
        if !token.matches(presented) {
            return Err(self.refuse("wrong token"));
        }
        Ok(req)
    }
}

/// Client side: adds `authorization: Bearer <token>` when a token is configured.
#[derive(Clone, Debug, Default)]
pub struct ClientAuth {
    header: Option<AsciiMetadataValue>,
}

impl ClientAuth {
    pub fn new(token: Option<&Secret>) -> Self {
        Self { header: token.map(Secret::bearer_header) }
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_checked_and_never_shown() {
        let s = Secret::new("  0123456789abcdef\n").unwrap();
        assert!(s.matches(b"0123456789abcdef"));
        assert!(!s.matches(b"0123456789abcdeX"));
        assert!(!s.matches(b"0123456789abcde"));
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(Secret::new(" \n").unwrap_err().contains("empty"));
        assert!(Secret::new("short").unwrap_err().contains("shorter than 16"));
        assert!(Secret::new("0123456789 abcdef").unwrap_err().contains("printable"));
    }

    #[test]
    fn credential_paths_follow_systemd() {
        assert_eq!(
            credential_path("%d/print-admin", Some("/run/credentials/x")).unwrap(),
            PathBuf::from("/run/credentials/x/print-admin")
        );
        assert_eq!(credential_path("$CREDENTIALS_DIRECTORY/t", Some("/c")).unwrap(), PathBuf::from("/c/t"));
        assert!(credential_path("%d/t", None).unwrap_err().contains("CREDENTIALS_DIRECTORY"));
        assert_eq!(credential_path("/etc/t", None).unwrap(), PathBuf::from("/etc/t"));
    }

    #[test]
    fn loopback_urls() {
        for u in ["http://127.0.0.1:50052", "http://localhost:1", "https://[::1]:5/x", "http://127.1.2.3:9"] {
            assert!(url_is_loopback(u), "{u}");
        }
        for u in ["http://10.0.0.2:50052", "http://print.lan:1", "http://[fe80::1]:5", "http://0.0.0.0:1"] {
            assert!(!url_is_loopback(u), "{u}");
        }
    }

    #[test]
    fn the_interceptor_wants_the_exact_bearer_token() {
        let token = Secret::new("0123456789abcdef").unwrap();
        let mut auth = ServerAuth::new("test", Some(token.clone()));
        let req = |h: Option<&str>| {
            let mut r = Request::new(());
            if let Some(h) = h {
                r.metadata_mut().insert("authorization", h.parse().unwrap());
            }
            r
        };
        assert!(auth.call(req(Some("Bearer 0123456789abcdef"))).is_ok());
        assert!(auth.call(req(Some("bearer 0123456789abcdef"))).is_ok());
        for bad in [None, Some("Bearer nope"), Some("0123456789abcdef"), Some("Basic 0123456789abcdef")] {
            assert_eq!(auth.call(req(bad)).unwrap_err().code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let mut client = ClientAuth::new(Some(&token));
        assert!(auth.call(client.call(req(None)).unwrap()).is_ok());
        assert!(ServerAuth::new("open", None).call(req(None)).is_ok());
    }
}
