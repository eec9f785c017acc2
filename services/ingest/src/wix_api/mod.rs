//! The HTTP client for Wix's eCommerce Orders REST API (`/ecom/v1/orders`), used by the order-sync
//! safety net to find orders whose webhooks never arrived.
//!
//! It owns exactly one thing: turning "search orders updated since T" and "get order X" into HTTP
//! requests and turning the answers into [`SearchPage`]s, order JSON or a typed [`ApiError`] the
//! caller can decide on. It has no database, does no mapping (orders stay `serde_json::Value`;
//! `crate::wix::map_order` is the only reader of Wix's field names) and has no retry loop: one
//! call is one request, and the caller owns backoff, using [`ApiError::class`] (the failure
//! class: waiting, transient, permanent) and the `Retry-After` hint.
//!
//! It must never log or echo the API key: the key lives in [`ApiKey`], whose `Debug`/`Display`
//! print `***`, the header carrying it is marked sensitive, redirects are not followed (so the
//! key is never replayed to another host) and error messages copied from response bodies are
//! scrubbed of it before they reach a log line or the admin UI.

#[cfg(test)]
mod tests;

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use wixprint_shared::failure::FailureClass;

/// Wix's public API host.
pub const DEFAULT_BASE_URL: &str = "https://www.wixapis.com";

/// Largest `cursorPaging.limit` Wix accepts (SDK `CursorPaging.limit`, max 100).
pub const MAX_PAGE_SIZE: u32 = 100;

/// A search page of 100 full orders is a few MB at most; anything far bigger is not a page of
/// orders, and reading it unbounded would let a misbehaving upstream exhaust memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Error bodies are only read for their message; no need to buffer more.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Error messages copied from Wix end up in logs and in the admin UI's error state: keep them
/// readable.
const MAX_MESSAGE_CHARS: usize = 300;

/// The Wix API key. Its `Debug` and `Display` print `***` so it can sit in config structs and
/// error contexts without leaking; [`ApiKey::expose`] is the one deliberate way to read it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Surrounding whitespace is dropped: keys are pasted into env files and secret files, where
    /// a trailing newline is common and would make the header value invalid.
    pub fn new(key: impl Into<String>) -> Self {
        let key = key.into();
        let trimmed = key.trim();
        if trimmed.len() == key.len() { Self(key) } else { Self(trimmed.to_owned()) }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What went wrong with one call. The variants follow what the caller must do about it, not
/// the HTTP status alone: see [`ApiError::is_retryable`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// HTTP 429. `retry_after` is Wix's `Retry-After` hint (seconds or an HTTP date), if it sent
    /// a readable one.
    #[error("Wix rate limit reached (HTTP 429){}", retry_after_suffix(.retry_after))]
    RateLimited { retry_after: Option<Duration> },
    /// HTTP 5xx: Wix-side trouble, try again later.
    #[error("Wix server error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    /// HTTP 401/403: the key is wrong, revoked or lacks the orders scope. Retrying cannot fix
    /// it; the caller shows `message` to a human.
    #[error("Wix rejected the credentials (HTTP {status}): {message}")]
    Auth { status: u16, message: String },
    /// Any other non-success status (400, 404, 409, an unexpected redirect...). `status` is 0
    /// when the request was refused before anything was sent (bad base URL, key or site id).
    #[error("Wix rejected the request (HTTP {status}): {message}")]
    Request { status: u16, message: String },
    /// A success status with a body that is not the documented JSON.
    #[error("unexpected response from Wix: {0}")]
    Malformed(String),
    /// The connection could not be made (refused, DNS, TLS handshake): nothing was sent.
    #[error("could not reach Wix: {0}")]
    Unreachable(String),
    /// No complete HTTP answer after the request went out: connection reset or closed
    /// mid-request or mid-body, timeout.
    #[error("lost the connection to Wix: {0}")]
    Transport(String),
}

impl ApiError {
    /// Whether the same call may succeed later without anyone changing the configuration.
    /// A malformed body counts as retryable: it is far more often a truncated or proxied answer
    /// than a permanent format change, and the caller's backoff bounds the cost of being wrong.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Server { .. }
            | Self::Transport(_)
            | Self::Unreachable(_)
            | Self::Malformed(_) => true,
            Self::Auth { .. } | Self::Request { .. } => false,
        }
    }

    /// The failure class of this error on its own (issue 11):
    /// - waiting: [`ApiError::Unreachable`]: nothing was sent, Wix or the way to it is down
    ///   (like an unreachable printer); it uses no try and never counts for the breaker;
    /// - transient: 429, 5xx, a connection lost or timed out mid-request, a malformed body
    ///   (far more often a truncated answer than a format change): retried with backoff,
    ///   counted by the breaker;
    /// - permanent: 401/403 (the key) and every other 4xx or refused request: not retried.
    ///
    /// The order sync adds what only it knows: while the internet monitor says offline, any
    /// transport failure is waiting too (`sync::classify`).
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Unreachable(_) => FailureClass::Waiting,
            Self::RateLimited { .. } | Self::Server { .. } | Self::Transport(_) | Self::Malformed(_) => {
                FailureClass::Transient
            }
            Self::Auth { .. } | Self::Request { .. } => FailureClass::Permanent,
        }
    }

    /// The delay Wix asked for, if any (only [`ApiError::RateLimited`] carries one).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

fn retry_after_suffix(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(", retry after {}s", d.as_secs()),
        None => String::new(),
    }
}

/// What to search for. Only used for the first page: later pages carry nothing but the cursor,
/// because Wix's cursor already encodes the filter and sort of the search that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// `updatedDate >= this` (Unix ms), or no date filter.
    pub updated_since_ms: Option<i64>,
    /// `status $in [...]`; empty means no status filter (Wix then omits PENDING and REJECTED).
    pub statuses: Vec<String>,
    /// Page size; clamped to `1..=`[`MAX_PAGE_SIZE`] when sent.
    pub limit: u32,
}

impl SearchQuery {
    /// The safety net's query: approved and cancelled orders updated since `updated_since_ms`,
    /// full pages.
    pub fn approved_or_canceled_since(updated_since_ms: i64) -> Self {
        Self {
            updated_since_ms: Some(updated_since_ms),
            statuses: vec!["APPROVED".to_owned(), "CANCELED".to_owned()],
            limit: MAX_PAGE_SIZE,
        }
    }

    /// The exact JSON body of `POST /ecom/v1/orders/search` for the first page (`cursor` None)
    /// or a follow-up page.
    pub fn body(&self, cursor: Option<&str>) -> Value {
        let limit = self.limit.clamp(1, MAX_PAGE_SIZE);
        if let Some(cursor) = cursor {
            return json!({"search": {"cursorPaging": {"limit": limit, "cursor": cursor}}});
        }
        let mut filter = serde_json::Map::new();
        if let Some(ms) = self.updated_since_ms {
            filter.insert("updatedDate".into(), json!({"$gte": rfc3339_ms(ms)}));
        }
        if !self.statuses.is_empty() {
            filter.insert("status".into(), json!({"$in": self.statuses}));
        }
        let mut search = serde_json::Map::new();
        if !filter.is_empty() {
            search.insert("filter".into(), Value::Object(filter));
        }
        // Always ascending by updatedDate, whatever the filter: the caller advances its
        // watermark page by page, which is only sound if later pages hold later updates.
        search.insert("sort".into(), json!([{"fieldName": "updatedDate", "order": "ASC"}]));
        search.insert("cursorPaging".into(), json!({"limit": limit}));
        json!({ "search": search })
    }
}

/// One page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// Full Wix order objects, unmapped.
    pub orders: Vec<Value>,
    /// `metadata.cursors.next`, if Wix sent a non-empty one.
    pub next_cursor: Option<String>,
    /// `metadata.hasNext`. When true, `next_cursor` is guaranteed to be `Some`.
    pub has_next: bool,
}

#[derive(Deserialize)]
struct SearchResponse {
    #[serde(default)]
    orders: Option<Vec<Value>>,
    #[serde(default)]
    metadata: Option<PagingMetadata>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PagingMetadata {
    #[serde(default)]
    cursors: Option<Cursors>,
    #[serde(default)]
    has_next: Option<bool>,
}

#[derive(Deserialize)]
struct Cursors {
    #[serde(default)]
    next: Option<String>,
}

/// A client for one Wix site. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct WixApi {
    client: reqwest::Client,
    base_url: Url,
    site_id: String,
    /// Kept only to scrub it from error bodies; the request header is built once in `new`.
    api_key: ApiKey,
}

impl fmt::Debug for WixApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WixApi")
            .field("base_url", &self.base_url.as_str())
            .field("site_id", &self.site_id)
            .field("api_key", &self.api_key)
            .finish()
    }
}

impl WixApi {
    /// Builds the client. `timeout` bounds each whole call (connect, send, read the body).
    /// Configuration mistakes (unparsable URL, empty or non-ASCII key or site id, zero timeout)
    /// are reported as `ApiError::Request { status: 0, .. }`: not retryable, nothing was sent.
    pub fn new(base_url: &str, api_key: ApiKey, site_id: &str, timeout: Duration) -> Result<Self, ApiError> {
        let invalid = |message: String| ApiError::Request { status: 0, message };
        let base_url = Url::parse(base_url.trim()).map_err(|e| invalid(format!("Wix base URL {base_url:?}: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() || base_url.host().is_none() {
            return Err(invalid(format!("Wix base URL {:?} must be an http(s) URL with a host", base_url.as_str())));
        }
        let site_id = site_id.trim().to_owned();
        if site_id.is_empty() {
            return Err(invalid("Wix site id is empty".into()));
        }
        if api_key.expose().is_empty() {
            return Err(invalid("Wix API key is empty".into()));
        }
        if timeout.is_zero() {
            return Err(invalid("Wix API timeout must be greater than zero".into()));
        }

        // The key goes in raw, without "Bearer ": that is what Wix's own SDK sends in API-key
        // mode. Marked sensitive so reqwest/hyper never print it in debug output.
        let mut auth = HeaderValue::from_str(api_key.expose())
            .map_err(|_| invalid("Wix API key contains characters not allowed in an HTTP header".into()))?;
        auth.set_sensitive(true);
        let site = HeaderValue::from_str(&site_id)
            .map_err(|_| invalid("Wix site id contains characters not allowed in an HTTP header".into()))?;
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, auth);
        headers.insert("wix-site-id", site);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));

        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("wix-ingest/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            // Wix's API does not redirect; following one would replay the key to wherever it
            // points. A 3xx surfaces as a Request error instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("building the HTTP client: {}", error_chain(&e))))?;
        Ok(Self { client, base_url, site_id, api_key })
    }

    /// One page of `POST /ecom/v1/orders/search`. `query` shapes the first page (`cursor` None);
    /// for later pages pass the previous page's `next_cursor` (only `query.limit` is used then).
    pub async fn search_orders(&self, query: &SearchQuery, cursor: Option<&str>) -> Result<SearchPage, ApiError> {
        let url = self.url(&["ecom", "v1", "orders", "search"]);
        let body = self.call(self.client.post(url).json(&query.body(cursor)), "search orders").await?;
        let response: SearchResponse = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Malformed(format!("search orders: {e} (body: {})", snippet(&body))))?;

        let (next_cursor, has_next) = match response.metadata {
            Some(m) => (m.cursors.and_then(|c| c.next).filter(|c| !c.is_empty()), m.has_next.unwrap_or(false)),
            None => (None, false),
        };
        // Both checks keep the caller's "while has_next" loop finite: without a cursor there is
        // no next page to ask for, and a cursor that points at itself would repeat forever.
        if has_next && next_cursor.is_none() {
            return Err(ApiError::Malformed("search orders: hasNext is true but there is no next cursor".into()));
        }
        if has_next && cursor.is_some() && next_cursor.as_deref() == cursor {
            return Err(ApiError::Malformed("search orders: the next cursor is the one just requested".into()));
        }
        Ok(SearchPage { orders: response.orders.unwrap_or_default(), next_cursor, has_next })
    }

    /// `GET /ecom/v1/orders/{id}`: the order object (the `order` field of the response).
    /// A missing order is `ApiError::Request { status: 404, .. }`.
    pub async fn get_order(&self, id: &str) -> Result<Value, ApiError> {
        // Pushed as a path segment, so the id is percent-encoded and cannot reshape the path.
        let url = self.url(&["ecom", "v1", "orders", id]);
        let body = self.call(self.client.get(url), "get order").await?;
        let mut response: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Malformed(format!("get order: {e} (body: {})", snippet(&body))))?;
        match response.get_mut("order").map(Value::take) {
            Some(order @ Value::Object(_)) => Ok(order),
            _ => Err(ApiError::Malformed(format!("get order: no \"order\" object (body: {})", snippet(&body)))),
        }
    }

    /// The base URL with `segments` appended, keeping any path prefix the base URL has (a proxy
    /// or a test server may mount the API below `/`).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends one request and returns the body of a 2xx answer, or the classified error.
    async fn call(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Vec<u8>, ApiError> {
        let started = tokio::time::Instant::now();
        let mut response = request.send().await.map_err(|e| transport(what, &e))?;
        let status = response.status();
        tracing::debug!(
            call = what,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Wix API answered"
        );

        if status.is_success() {
            let (body, complete) = read_capped(&mut response, MAX_BODY_BYTES).await.map_err(|e| transport(what, &e))?;
            if !complete {
                return Err(ApiError::Malformed(format!("{what}: response body larger than {MAX_BODY_BYTES} bytes")));
            }
            return Ok(body);
        }

        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, wixprint_shared::time::now_ms()));
            return Err(ApiError::RateLimited { retry_after });
        }

        // The body only feeds the message; if reading it fails, the status still says enough.
        let body = read_capped(&mut response, MAX_ERROR_BODY_BYTES).await.map(|(b, _)| b).unwrap_or_default();
        let message = error_message(&body, status, &self.api_key);
        let status = status.as_u16();
        Err(match status {
            401 | 403 => ApiError::Auth { status, message },
            500..=599 => ApiError::Server { status, message },
            _ => ApiError::Request { status, message },
        })
    }
}

/// Reads at most `cap` bytes of the body; the flag says whether the whole body fit.
async fn read_capped(response: &mut reqwest::Response, cap: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            body.extend_from_slice(&chunk[..cap - body.len()]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// A timeout is `Transport` even while connecting (the call's deadline ran out: the request
/// may be on its way); a connection that could not be made at all is `Unreachable`.
fn transport(what: &str, e: &reqwest::Error) -> ApiError {
    if e.is_timeout() {
        ApiError::Transport(format!("{what}: timed out: {}", error_chain(e)))
    } else if e.is_connect() {
        ApiError::Unreachable(format!("{what}: connection failed: {}", error_chain(e)))
    } else {
        ApiError::Transport(format!("{what}: request failed: {}", error_chain(e)))
    }
}

/// reqwest's own message is terse ("error sending request"); the cause is in the source chain.
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The human-readable reason from a Wix error body (`{"message": ..., "details":
/// {"applicationError": {"code", "description"}}}`), falling back to the raw text, then to
/// the status's reason phrase. Scrubbed of the key, single-line, truncated.
fn error_message(body: &[u8], status: StatusCode, key: &ApiKey) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(json) => {
            let app = &json["details"]["applicationError"];
            let message = [&json["message"], &app["description"]]
                .into_iter()
                .filter_map(Value::as_str)
                .find(|s| !s.trim().is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| json.to_string());
            match app["code"].as_str().filter(|c| !c.is_empty() && !message.contains(*c)) {
                Some(code) => format!("{code}: {message}"),
                None => message,
            }
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let text = if text.trim().is_empty() { status.canonical_reason().unwrap_or("no message").to_owned() } else { text };
    let text = if key.expose().is_empty() { text } else { text.replace(key.expose(), "***") };
    truncate_one_line(&text, MAX_MESSAGE_CHARS)
}

/// The start of a body, for Malformed messages.
fn snippet(body: &[u8]) -> String {
    truncate_one_line(&String::from_utf8_lossy(body), 120)
}

/// Collapses whitespace and control characters (messages go into single log lines and a UI
/// field) and cuts at `max` characters, on a character boundary.
fn truncate_one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()) {
        for c in (!out.is_empty()).then_some(' ').into_iter().chain(word.chars()) {
            if chars == max {
                out.push('…');
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

/// `Retry-After` is either delay-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the past
/// means "now". Unreadable values give `None`, and the caller falls back to its own backoff.
fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at_ms = parse_imf_fixdate_ms(value)?;
    Some(Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0)))
}

/// Parses the preferred HTTP date format, IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
/// (through `jiff`; always 29 characters). The obsolete RFC 850 and asctime forms are not
/// accepted; servers must not send them.
fn parse_imf_fixdate_ms(value: &str) -> Option<i64> {
    if value.len() != 29 {
        return None;
    }
    let at = jiff::civil::DateTime::strptime("%a, %d %b %Y %H:%M:%S GMT", value).ok()?;
    Some(at.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp().as_millisecond())
}

/// Unix milliseconds as RFC 3339 UTC with exactly three fractional digits, the form Wix's own
/// dates use (`2025-09-24T17:53:25.532Z`). Clamped to years 0000..=9999, the range RFC 3339 can
/// express (civil date-time arithmetic in `jiff`).
fn rfc3339_ms(ms: i64) -> String {
    const MIN_MS: i64 = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
    const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z
    let epoch = jiff::civil::date(1970, 1, 1).at(0, 0, 0, 0);
    let at = epoch.checked_add(jiff::SignedDuration::from_millis(ms.clamp(MIN_MS, MAX_MS))).unwrap_or(epoch);
    at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
