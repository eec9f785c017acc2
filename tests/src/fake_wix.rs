//! A fake of the Wix eCommerce Orders REST API (on 127.0.0.1, or any address with `start_on`),
//! for the tests, the demo and the compose stack (`fake-wix` binary).
//!
//! It is a test double that speaks the real protocol, not a mock of our own client: the same
//! paths (`POST /ecom/v1/orders/search`, `GET /ecom/v1/orders/{id}`), the same auth headers
//! (`Authorization: <raw API key>`, `wix-site-id: <site id>`), the same request body
//! (`{"search": {"filter", "sort", "cursorPaging"}}`) and the same response shapes
//! (`{"orders", "metadata": {"count", "cursors": {"next", "prev"}, "hasNext"}}`,
//! `{"order"}`, error bodies `{"message", "details"}`). A poller that works against this fake
//! should work against `www.wixapis.com`; one that sends Stores-v2 syntax or a `Bearer` token
//! should fail here the way it fails there.
//!
//! Owns: an in-memory order table, a queue of injected faults and a log of every request with
//! the status it was answered with. Must never: panic on any request (bad JSON, bad operators and
//! bad cursors are answered 400 with a message, like Wix), sleep except for an injected
//! `Fault::Slow`, or know anything about our services.
//!
//! Behaviour worth knowing, and where it is a choice rather than documented Wix behaviour:
//! - Auth is checked in this order: `Authorization` must equal the key byte for byte (so
//!   `Bearer <key>` is a 401, like a wrong key), then `wix-site-id` must equal the site id
//!   (wrong or missing: **403** `PERMISSION_DENIED`; a chosen answer, Wix documents 403 for a
//!   key that may not act on the site).
//! - `cursorPaging.limit` defaults to 100 (the SDK's documented default) and a limit above 100 is
//!   a 400, never clamped. A limit of 0 means "unset", as in proto JSON.
//! - `INITIALIZED`, `PENDING` and `REJECTED` orders are left out of search results unless the
//!   filter names that status positively (`"status": "X"`, `$eq`, `$in`, `$hasSome`). Real Wix
//!   never returns `INITIALIZED` from search; the escape hatch exists for tests.
//! - Cursors are opaque hex of a small JSON holding the filter, the sort and the sort key of the
//!   last order served (keyset paging, not an offset): a cursor stays valid while orders are
//!   added, and an order inserted before the cursor's position is not served twice nor shifts the
//!   rest. The filter is re-evaluated on every page, so an order updated after it was served can
//!   show up again on a later page of an `updatedDate ASC` scan, as it can with Wix. A request
//!   with a cursor must not also carry `filter` or `sort` (400): the cursor carries them.
//!   `cursors.prev` is always `null` (we never page backwards).
//! - Unknown keys are ignored, as Wix does, so a filter put at the top level instead of inside
//!   `search` silently filters nothing: the bug the Python predecessor had.
//! - `Fault::ResetMidResponse` answers 200 and cuts the connection after the first body bytes
//!   (logged with status 200: the status line went out).
//! - Injected faults are consumed one per request, in arrival order, by any request (before auth).
//! - A request is logged when it is answered; `requests()` lists answered requests in arrival
//!   order. A request whose client went away before the answer is logged with status 499.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, anyhow};
use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const SEARCH_PATH: &str = "/ecom/v1/orders/search";
const ORDER_PATH_PREFIX: &str = "/ecom/v1/orders/";
/// Wix's `CursorPaging.limit` bounds (SDK `meta.d.ts`: max 100; default 100).
const MAX_LIMIT: u64 = 100;
const DEFAULT_LIMIT: u64 = 100;
/// `CursorPaging.cursor` has `maxLength 16000` in the SDK schema.
const MAX_CURSOR_LEN: usize = 16_000;
/// Larger bodies are refused rather than buffered: a search request is a few hundred bytes.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Statuses search leaves out unless the filter asks for them by name.
const HIDDEN_STATUSES: [&str; 3] = ["INITIALIZED", "PENDING", "REJECTED"];
/// Fields whose values compare as instants, not as strings.
const DATE_FIELDS: [&str; 3] = ["createdDate", "updatedDate", "purchasedDate"];
/// Fields Wix lets a search sort by (supported-filters-and-sorting page).
const SORTABLE_FIELDS: [&str; 8] = [
    "createdDate",
    "updatedDate",
    "number",
    "status",
    "paymentStatus",
    "fulfillmentStatus",
    "buyerInfo.email",
    "channelInfo.type",
];
/// What a client that hung up before its answer is logged with (nginx's "client closed request").
const STATUS_CLIENT_GONE: u16 = 499;

/// A failure the fake answers with instead of doing its job, for the next request(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After: <secs>` and a `RESOURCE_EXHAUSTED` body.
    RateLimited { retry_after_secs: u32 },
    /// 500 with an `INTERNAL` body.
    ServerError,
    /// 503 with an `UNAVAILABLE` body (a Wix gateway in trouble).
    Unavailable,
    /// 200 with headers and the start of a body, then the connection is cut mid-response.
    ResetMidResponse,
    /// Waits this long, then answers normally.
    Slow { millis: u64 },
    /// 200 with a body that is not valid JSON.
    Malformed,
    /// 401, whatever key was sent.
    Unauthorized,
}

/// One request as the fake saw it, with the status it was answered with.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The URI path, without the query string.
    pub path: String,
    /// Header names are lower case (as HTTP/1 parsing leaves them); values are lossy UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body as lossy UTF-8.
    pub body: String,
    pub status: u16,
    /// When the request arrived (monotonic), to measure retry delays.
    pub at: std::time::Instant,
}

impl RecordedRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A running fake Wix. Clones share the same server; the server stops on `shutdown()` or when the
/// last clone is dropped, so a failing test does not leak a listener into the next one.
#[derive(Clone)]
pub struct FakeWix {
    inner: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// State shared between the handle and the server task.
struct Shared {
    api_key: String,
    site_id: String,
    data: Mutex<Data>,
    /// Woken whenever a request has been answered, for `wait_for_requests`.
    answered: Notify,
}

#[derive(Default)]
struct Data {
    /// Orders in insertion order; `index` maps an id to its position.
    orders: Vec<Value>,
    index: HashMap<String, usize>,
    faults: VecDeque<Fault>,
    /// One slot per request in arrival order, filled when it is answered.
    log: Vec<Option<RecordedRequest>>,
    answered: usize,
    search_calls: usize,
}

impl Shared {
    /// The lock is only held for short, non-panicking sections; should a test thread panic while
    /// holding it anyway, the data is still consistent enough to keep answering.
    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for FakeWix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeWix").field("addr", &self.inner.addr).finish_non_exhaustive()
    }
}

impl FakeWix {
    /// Binds 127.0.0.1 on a free port and serves until `shutdown()` or the last clone is dropped.
    pub async fn start(api_key: &str, site_id: &str) -> anyhow::Result<FakeWix> {
        FakeWix::start_on("127.0.0.1:0", api_key, site_id).await
    }

    /// [`FakeWix::start`] on a given address (the `fake-wix` binary in the compose stack binds
    /// its container's network).
    pub async fn start_on(addr: &str, api_key: &str, site_id: &str) -> anyhow::Result<FakeWix> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the fake Wix API on {addr}"))?;
        let addr = listener.local_addr().context("reading the fake Wix API's address")?;
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            site_id: site_id.to_owned(),
            data: Mutex::new(Data::default()),
            answered: Notify::new(),
        });
        let stop = CancellationToken::new();
        let app = Router::new().fallback(handle_request).with_state(Arc::clone(&shared));
        let stopped = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                tracing::warn!(error = %err, "fake Wix API stopped with an error");
            }
        });
        tracing::debug!(%addr, "fake Wix API listening");
        Ok(FakeWix { inner: Arc::new(Handle { shared, addr, stop }) })
    }

    /// `http://127.0.0.1:PORT`, to use where the real client has `https://www.wixapis.com`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Adds the order, or replaces the one with the same `id` (keeping its place).
    ///
    /// # Panics
    /// When the order lacks a string `id` or `status`, or a `createdDate`/`updatedDate` that parses
    /// as RFC 3339: that is a broken test, and search could not answer faithfully for it.
    pub fn upsert_order(&self, order: Value) {
        let id = order.get("id").and_then(Value::as_str).expect("a fake Wix order needs a string \"id\"").to_owned();
        assert!(order.get("status").and_then(Value::as_str).is_some(), "fake Wix order {id} needs a string \"status\"");
        for field in ["createdDate", "updatedDate"] {
            let date = order.get(field).and_then(Value::as_str);
            assert!(
                date.and_then(parse_instant).is_some(),
                "fake Wix order {id} needs an RFC 3339 {field:?}, got {date:?}"
            );
        }
        let mut data = self.inner.shared.lock();
        match data.index.get(&id) {
            Some(&at) => data.orders[at] = order,
            None => {
                let at = data.orders.len();
                data.orders.push(order);
                data.index.insert(id, at);
            }
        }
    }

    /// Every order, in insertion order.
    pub fn orders(&self) -> Vec<Value> {
        self.inner.shared.lock().orders.clone()
    }

    /// Queues `fault` for the next `times` requests, after any faults already queued.
    pub fn inject(&self, fault: Fault, times: u32) {
        let mut data = self.inner.shared.lock();
        data.faults.extend(std::iter::repeat_n(fault, times as usize));
    }

    /// Every answered request, in arrival order, with the status it got.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.shared.lock().log.iter().flatten().cloned().collect()
    }

    /// How many `POST /ecom/v1/orders/search` requests arrived (answered or not, whatever status).
    pub fn search_calls(&self) -> usize {
        self.inner.shared.lock().search_calls
    }

    /// Waits until at least `n` requests have been answered.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let shared = &self.inner.shared;
        let reached = async {
            loop {
                // Register for the wake-up *before* looking at the count: `notify_waiters` only
                // wakes futures that already exist, so an answer landing between the check and the
                // await would otherwise be missed.
                let mut answered = pin!(shared.answered.notified());
                answered.as_mut().enable();
                if shared.lock().answered >= n {
                    return;
                }
                answered.await;
            }
        };
        tokio::time::timeout(timeout, reached).await.map_err(|_| {
            let got = shared.lock().answered;
            anyhow!("fake Wix: {got} of {n} requests answered within {timeout:?}")
        })
    }

    /// Stops accepting connections; requests in flight are still answered.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }
}

/// Builds a Wix order (REST shape) from a fixture, with a new id, number, status and dates, e.g. to
/// place 250 orders in the fake. The template may be a bare order, a search response (its first
/// order), a `{"order": ...}` body or a decoded webhook event (`createdEvent.entity`,
/// `updatedEvent.currentEntity`, `actionEvent.body.order`). `createdDate`, `purchasedDate` and the
/// activities' dates are set to `updated_rfc3339` too: an order created when it was last updated.
pub fn order_from_template(template: &Value, id: &str, number: &str, status: &str, updated_rfc3339: &str) -> Value {
    let source =
        ["/createdEvent/entity", "/updatedEvent/currentEntity", "/actionEvent/body/order", "/orders/0", "/order"]
            .iter()
            .find_map(|pointer| template.pointer(pointer).filter(|v| v.is_object()))
            .unwrap_or(template);
    let mut order = match source {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    order.insert("id".into(), json!(id));
    order.insert("number".into(), json!(number));
    order.insert("status".into(), json!(status));
    for field in ["createdDate", "updatedDate", "purchasedDate"] {
        order.insert(field.into(), json!(updated_rfc3339));
    }
    if let Some(Value::Array(activities)) = order.get_mut("activities") {
        for activity in activities.iter_mut().filter_map(Value::as_object_mut) {
            activity.insert("createdDate".into(), json!(updated_rfc3339));
        }
    }
    Value::Object(order)
}

// ---------------------------------------------------------------------------------------------
// Request handling

/// Fills the request's log slot when dropped, so a request is logged even when its client hangs
/// up mid-answer (axum then drops the handler future) and `wait_for_requests` is not left hanging.
struct LogEntry {
    shared: Arc<Shared>,
    slot: usize,
    request: Option<RecordedRequest>,
}

impl Drop for LogEntry {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            let (method, path, status) = (&request.method, &request.path, request.status);
            tracing::debug!(%method, %path, status, "fake Wix answered");
            let mut data = self.shared.lock();
            data.log[self.slot] = Some(request);
            data.answered += 1;
            drop(data);
            self.shared.answered.notify_waiters();
        }
    }
}

/// The one handler: routing by hand keeps fault injection, auth and logging in one place, the
/// order Wix's gateway applies them in (throttling, then auth, then the endpoint).
async fn handle_request(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let (slot, fault) = {
        let mut data = shared.lock();
        let slot = data.log.len();
        data.log.push(None);
        if method == Method::POST && path == SEARCH_PATH {
            data.search_calls += 1;
        }
        (slot, data.faults.pop_front())
    };
    let mut entry = LogEntry {
        shared: Arc::clone(&shared),
        slot,
        request: Some(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            headers: recorded_headers(&parts.headers),
            body: String::new(),
            status: STATUS_CLIENT_GONE,
            at: std::time::Instant::now(),
        }),
    };

    if let Some(Fault::Slow { millis }) = fault {
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await;
    let response = match body {
        Err(_) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_ARGUMENT", "request body unreadable or over 1 MiB")
                .into_response()
        }
        Ok(body) => {
            if let Some(request) = entry.request.as_mut() {
                request.body = String::from_utf8_lossy(&body).into_owned();
            }
            answer(&shared, fault, &method, &path, &parts.headers, &body)
        }
    };
    if let Some(request) = entry.request.as_mut() {
        request.status = response.status().as_u16();
    }
    drop(entry);
    response
}

fn recorded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect()
}

fn answer(
    shared: &Shared,
    fault: Option<Fault>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    match fault {
        Some(Fault::RateLimited { retry_after_secs }) => {
            let error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", "rate limit exceeded");
            return ([(header::RETRY_AFTER, retry_after_secs.to_string())], error).into_response();
        }
        Some(Fault::ServerError) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error").into_response();
        }
        Some(Fault::Unavailable) => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "service unavailable")
                .into_response();
        }
        Some(Fault::ResetMidResponse) => {
            // The head and a first chunk go out, then the body stream fails: hyper aborts the
            // connection, and the client sees a body cut short.
            let chunks: Vec<Result<&'static [u8], std::io::Error>> = vec![
                Ok(br#"{"orders": [{"id": "6d6062d8"#),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset")),
            ];
            let body = axum::body::Body::from_stream(tokio_stream::iter(chunks));
            return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        Some(Fault::Malformed) => {
            // Cut off mid-document, the way a proxy hiccup truncates a real response.
            let truncated = r#"{"orders": [{"id": "6d6062d8-0000-4000-8000-0000000000a1", "number": "100"#;
            return (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], truncated).into_response();
        }
        Some(Fault::Unauthorized) => {
            return ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "injected fault: not authenticated")
                .into_response();
        }
        Some(Fault::Slow { .. }) | None => {}
    }
    if let Err(error) = check_auth(shared, headers) {
        return error.into_response();
    }
    let result = if path == SEARCH_PATH {
        if method == Method::POST { search_orders(&shared.lock(), body) } else { Err(method_not_allowed(method, path)) }
    } else if let Some(id) = path.strip_prefix(ORDER_PATH_PREFIX).filter(|id| !id.is_empty() && !id.contains('/')) {
        if method == Method::GET { get_order(&shared.lock(), id) } else { Err(method_not_allowed(method, path)) }
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no such endpoint: {method} {path}")))
    };
    match result {
        Ok(json) => (StatusCode::OK, Json(json)).into_response(),
        Err(error) => error.into_response(),
    }
}

fn check_auth(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if key != Some(shared.api_key.as_bytes()) {
        let message = match key {
            None => "missing Authorization header".to_owned(),
            Some(k) if k.starts_with(b"Bearer ") => {
                "invalid API key: send the raw key in Authorization, without a \"Bearer \" prefix".to_owned()
            }
            Some(_) => "invalid API key".to_owned(),
        };
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message));
    }
    let site = headers.get("wix-site-id").map(|v| v.as_bytes());
    if site != Some(shared.site_id.as_bytes()) {
        let message = if site.is_none() { "missing wix-site-id header" } else { "API key has no access to this site" };
        return Err(ApiError::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message));
    }
    Ok(())
}

fn method_not_allowed(method: &Method, path: &str) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", format!("{method} is not supported on {path}"))
}

fn get_order(data: &Data, id: &str) -> Result<Value, ApiError> {
    match data.index.get(id) {
        Some(&at) => Ok(json!({ "order": data.orders[at] })),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("order {id} not found"))),
    }
}

/// A Wix error body: `{"message", "details": {"applicationError" | "validationError"}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Set for request validation errors: the offending field, reported as a field violation.
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None }
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_ARGUMENT",
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let details = match &self.field {
            Some(field) => json!({ "validationError": { "fieldViolations": [
                { "field": field, "description": self.message, "violatedRule": "OTHER" }
            ] } }),
            None => json!({ "applicationError": { "code": self.code, "description": self.message, "data": {} } }),
        };
        (self.status, Json(json!({ "message": self.message, "details": details }))).into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// Search

/// A parsed `SearchOrdersRequest`: either a first page (filter + sort) or a cursor's continuation.
struct Search {
    filter: Value,
    sort: Vec<SortSpec>,
    after: Option<Position>,
    limit: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SortSpec {
    field: String,
    desc: bool,
}

/// Where the previous page ended: the last order's sort key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    keys: Vec<SortValue>,
    id: String,
}

/// What a cursor decodes to. Versioned so a stale cursor from another build is a clean 400.
#[derive(Serialize, Deserialize)]
struct Cursor {
    v: u8,
    filter: Value,
    sort: Vec<SortSpec>,
    after: Position,
}

const CURSOR_VERSION: u8 = 1;

fn search_orders(data: &Data, body: &[u8]) -> Result<Value, ApiError> {
    let search = parse_search(body)?;
    let filter = compile_filter(&search.filter, "search.filter")?;
    let mut named = Vec::new();
    filter.named_statuses(&mut named);
    let hidden: Vec<&str> = HIDDEN_STATUSES.into_iter().filter(|s| !named.contains(s)).collect();

    let mut rows: Vec<(Position, &Value)> = data
        .orders
        .iter()
        .filter(|order| !order.get("status").and_then(Value::as_str).is_some_and(|s| hidden.contains(&s)))
        .filter(|order| filter.matches(order))
        .map(|order| (position_of(order, &search.sort), order))
        .collect();
    rows.sort_by(|a, b| compare_positions(&a.0, &b.0, &search.sort));
    if let Some(after) = &search.after {
        rows.retain(|(position, _)| compare_positions(position, after, &search.sort) == Ordering::Greater);
    }
    let has_next = rows.len() > search.limit;
    rows.truncate(search.limit);

    let next = match rows.last() {
        Some((last, _)) if has_next => {
            let cursor = Cursor { v: CURSOR_VERSION, filter: search.filter, sort: search.sort, after: last.clone() };
            Value::String(encode_cursor(&cursor))
        }
        _ => Value::Null,
    };
    let orders: Vec<Value> = rows.iter().map(|(_, order)| (*order).clone()).collect();
    Ok(json!({
        "orders": orders,
        "metadata": { "count": orders.len(), "cursors": { "next": next, "prev": null }, "hasNext": has_next },
    }))
}

fn parse_search(body: &[u8]) -> Result<Search, ApiError> {
    // An empty body is an empty request message, as with any proto-JSON endpoint.
    let root: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid("body", format!("request body is not valid JSON: {e}")))?
    };
    let Value::Object(root) = root else {
        return Err(ApiError::invalid("body", "request body must be a JSON object"));
    };
    let empty = Map::new();
    let search = object_at(&root, "search", "search")?.unwrap_or(&empty);
    let paging = object_at(search, "cursorPaging", "search.cursorPaging")?.unwrap_or(&empty);
    let limit = parse_limit(paging.get("limit"))?;
    let filter = object_at(search, "filter", "search.filter")?;
    let sort = match search.get("sort") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(parse_sort(items)?),
        Some(_) => return Err(ApiError::invalid("search.sort", "sort must be an array of {fieldName, order}")),
    };
    let cursor = match paging.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ApiError::invalid("search.cursorPaging.cursor", "cursor must be a string")),
    };

    match cursor {
        None => Ok(Search {
            filter: filter.map_or_else(|| json!({}), |f| Value::Object(f.clone())),
            // An empty sort list is "no sort given": Wix's default order.
            sort: sort
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| vec![SortSpec { field: "createdDate".into(), desc: true }]),
            after: None,
            limit,
        }),
        Some(cursor) => {
            if filter.is_some() || sort.is_some() {
                return Err(ApiError::invalid(
                    "search.cursorPaging.cursor",
                    "filter and sort must not be sent with a cursor: the cursor carries them",
                ));
            }
            let cursor = decode_cursor(cursor)?;
            Ok(Search { filter: cursor.filter, sort: cursor.sort, after: Some(cursor.after), limit })
        }
    }
}

/// `map[key]` as an object; absent and `null` are `None`, anything else is a 400.
fn object_at<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(ApiError::invalid(field, format!("{field} must be an object"))),
    }
}

fn parse_limit(limit: Option<&Value>) -> Result<usize, ApiError> {
    const FIELD: &str = "search.cursorPaging.limit";
    let limit = match limit {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => {
            n.as_u64().ok_or_else(|| ApiError::invalid(FIELD, "limit must be a non-negative integer"))?
        }
        // Proto JSON accepts integers as strings too.
        Some(Value::String(s)) => {
            s.parse().map_err(|_| ApiError::invalid(FIELD, "limit must be a non-negative integer"))?
        }
        Some(_) => return Err(ApiError::invalid(FIELD, "limit must be a non-negative integer")),
    };
    if limit > MAX_LIMIT {
        return Err(ApiError::invalid(FIELD, format!("limit must be at most {MAX_LIMIT}, got {limit}")));
    }
    let limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
    // At most 100, so the conversion cannot fail; the fallback only keeps this panic-free.
    Ok(usize::try_from(limit).unwrap_or(usize::MAX))
}

fn parse_sort(items: &[Value]) -> Result<Vec<SortSpec>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("search.sort[{i}]");
            let field_name = item
                .get("fieldName")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid(&field, "each sort entry needs a string fieldName"))?;
            if !SORTABLE_FIELDS.contains(&field_name) {
                return Err(ApiError::invalid(&field, format!("cannot sort by {field_name:?}")));
            }
            let desc = match item.get("order") {
                None | Some(Value::Null) => false,
                Some(Value::String(o)) if o == "ASC" => false,
                Some(Value::String(o)) if o == "DESC" => true,
                Some(other) => {
                    return Err(ApiError::invalid(&field, format!("order must be \"ASC\" or \"DESC\", got {other}")));
                }
            };
            Ok(SortSpec { field: field_name.to_owned(), desc })
        })
        .collect()
}

fn encode_cursor(cursor: &Cursor) -> String {
    // Serializing plain JSON values and derived structs cannot fail.
    let json = serde_json::to_vec(cursor).unwrap_or_default();
    json.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str) -> Result<Cursor, ApiError> {
    const FIELD: &str = "search.cursorPaging.cursor";
    let invalid = || ApiError::invalid(FIELD, "invalid cursor");
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(ApiError::invalid(FIELD, format!("cursor is longer than {MAX_CURSOR_LEN} characters")));
    }
    if !cursor.len().is_multiple_of(2) || !cursor.is_ascii() {
        return Err(invalid());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&cursor[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if cursor.v != CURSOR_VERSION || cursor.after.keys.len() != cursor.sort.len() {
        return Err(invalid());
    }
    Ok(cursor)
}

// ---------------------------------------------------------------------------------------------
// Sorting

/// A sort key component. Missing fields sort first in ascending order; dates and numeric order
/// numbers compare as integers (nanoseconds / the number), everything else as strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum SortValue {
    Missing,
    Int(i64),
    Str(String),
}

fn position_of(order: &Value, sort: &[SortSpec]) -> Position {
    let keys = sort.iter().map(|spec| sort_value(order, &spec.field)).collect();
    let id = order.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    Position { keys, id }
}

fn sort_value(order: &Value, field: &str) -> SortValue {
    let mut leaves = Vec::new();
    collect_leaves(order, &field.split('.').collect::<Vec<_>>(), &mut leaves);
    match leaves.into_iter().find(|v| !v.is_null()) {
        None => SortValue::Missing,
        Some(Value::String(s)) => {
            let as_int = if DATE_FIELDS.contains(&field) { parse_instant(s) } else { s.parse().ok() };
            as_int.map_or_else(|| SortValue::Str(s.clone()), SortValue::Int)
        }
        Some(Value::Number(n)) => n.as_i64().map_or_else(|| SortValue::Str(n.to_string()), SortValue::Int),
        Some(other) => SortValue::Str(other.to_string()),
    }
}

/// Sort order with the id as the last tie-breaker (always ascending), so paging is deterministic.
fn compare_positions(a: &Position, b: &Position, sort: &[SortSpec]) -> Ordering {
    for (spec, (ka, kb)) in sort.iter().zip(a.keys.iter().zip(&b.keys)) {
        let ordering = if spec.desc { kb.cmp(ka) } else { ka.cmp(kb) };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    a.id.cmp(&b.id)
}

// ---------------------------------------------------------------------------------------------
// Filtering (Wix's MongoDB-like query language)

#[derive(Debug)]
enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Field { path: Vec<String>, cond: Cond },
}

#[derive(Debug)]
enum Cond {
    Eq(Operand),
    Ne(Operand),
    In(Vec<Operand>),
    Nin(Vec<Operand>),
    Cmp(CmpOp, Operand),
    Exists(bool),
    HasAll(Vec<Operand>),
    StartsWith(String),
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A filter operand, typed once when the filter is compiled.
#[derive(Debug)]
enum Operand {
    /// Nanoseconds since the Unix epoch (operands of date fields).
    Instant(i64),
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
}

fn compile_filter(value: &Value, field: &str) -> Result<Filter, ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::invalid(field, format!("{field} must be an object")));
    };
    let mut parts = Vec::with_capacity(map.len());
    for (key, value) in map {
        let at = format!("{field}.{key}");
        parts.push(match key.as_str() {
            "$and" => Filter::And(compile_list(value, &at)?),
            "$or" => Filter::Or(compile_list(value, &at)?),
            "$not" => Filter::Not(Box::new(compile_filter(value, &at)?)),
            op if op.starts_with('$') => return Err(ApiError::invalid(&at, format!("unsupported operator {op}"))),
            path => compile_field(path, value, &at)?,
        });
    }
    Ok(Filter::And(parts))
}

fn compile_list(value: &Value, field: &str) -> Result<Vec<Filter>, ApiError> {
    match value {
        Value::Array(items) if !items.is_empty() => {
            items.iter().enumerate().map(|(i, item)| compile_filter(item, &format!("{field}[{i}]"))).collect()
        }
        _ => Err(ApiError::invalid(field, format!("{field} must be a non-empty array of filters"))),
    }
}

fn compile_field(path: &str, value: &Value, field: &str) -> Result<Filter, ApiError> {
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(ApiError::invalid(field, format!("invalid field name {path:?}")));
    }
    let is_date = DATE_FIELDS.contains(&path);
    let conds = match value {
        Value::Object(ops) if !ops.is_empty() && ops.keys().all(|k| k.starts_with('$')) => ops
            .iter()
            .map(|(op, arg)| compile_condition(op, arg, is_date, &format!("{field}.{op}")))
            .collect::<Result<Vec<_>, _>>()?,
        Value::Object(_) | Value::Array(_) => {
            return Err(ApiError::invalid(field, "a field's filter must be a value or an object of $operators"));
        }
        scalar => vec![Cond::Eq(operand(scalar, is_date, field)?)],
    };
    let mut filters: Vec<Filter> =
        conds.into_iter().map(|cond| Filter::Field { path: segments.clone(), cond }).collect();
    Ok(if filters.len() == 1 { filters.remove(0) } else { Filter::And(filters) })
}

fn compile_condition(op: &str, arg: &Value, is_date: bool, field: &str) -> Result<Cond, ApiError> {
    let one = || operand(arg, is_date, field);
    let many = || match arg {
        Value::Array(items) => items.iter().map(|item| operand(item, is_date, field)).collect::<Result<Vec<_>, _>>(),
        _ => Err(ApiError::invalid(field, format!("{op} needs an array"))),
    };
    Ok(match op {
        "$eq" => Cond::Eq(one()?),
        "$ne" => Cond::Ne(one()?),
        "$in" | "$hasSome" => Cond::In(many()?),
        "$nin" => Cond::Nin(many()?),
        "$hasAll" => Cond::HasAll(many()?),
        "$gt" => Cond::Cmp(CmpOp::Gt, one()?),
        "$gte" => Cond::Cmp(CmpOp::Gte, one()?),
        "$lt" => Cond::Cmp(CmpOp::Lt, one()?),
        "$lte" => Cond::Cmp(CmpOp::Lte, one()?),
        "$exists" => match arg {
            Value::Bool(b) => Cond::Exists(*b),
            _ => return Err(ApiError::invalid(field, "$exists needs true or false")),
        },
        "$startsWith" => match arg {
            Value::String(s) => Cond::StartsWith(s.clone()),
            _ => return Err(ApiError::invalid(field, "$startsWith needs a string")),
        },
        _ => return Err(ApiError::invalid(field, format!("unsupported operator {op}"))),
    })
}

fn operand(value: &Value, is_date: bool, field: &str) -> Result<Operand, ApiError> {
    if is_date {
        return value
            .as_str()
            .and_then(parse_instant)
            .map(Operand::Instant)
            .ok_or_else(|| ApiError::invalid(field, format!("expected an RFC 3339 date-time, got {value}")));
    }
    match value {
        Value::Null => Ok(Operand::Null),
        Value::Bool(b) => Ok(Operand::Bool(*b)),
        Value::Number(n) => n.as_f64().map(Operand::Num).ok_or_else(|| ApiError::invalid(field, "number out of range")),
        Value::String(s) => Ok(Operand::Str(s.clone())),
        Value::Array(_) | Value::Object(_) => Err(ApiError::invalid(field, format!("expected a value, got {value}"))),
    }
}

impl Filter {
    fn matches(&self, order: &Value) -> bool {
        match self {
            Filter::And(parts) => parts.iter().all(|p| p.matches(order)),
            Filter::Or(parts) => parts.iter().any(|p| p.matches(order)),
            Filter::Not(inner) => !inner.matches(order),
            Filter::Field { path, cond } => {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                let mut leaves = Vec::new();
                collect_leaves(order, &path, &mut leaves);
                cond.matches(&leaves)
            }
        }
    }

    /// Statuses the filter asks for by name, which un-hides them (see the module docs).
    fn named_statuses<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Filter::And(parts) | Filter::Or(parts) => parts.iter().for_each(|p| p.named_statuses(out)),
            Filter::Not(_) => {}
            Filter::Field { path, cond } if path.len() == 1 && path[0] == "status" => match cond {
                Cond::Eq(Operand::Str(s)) => out.push(s),
                Cond::In(values) => out.extend(values.iter().filter_map(|v| match v {
                    Operand::Str(s) => Some(s.as_str()),
                    _ => None,
                })),
                _ => {}
            },
            Filter::Field { .. } => {}
        }
    }
}

impl Cond {
    /// `leaves` are the field's values (several when the path crosses an array, none when absent);
    /// a condition holds when some value satisfies it, and the negations are "none does".
    fn matches(&self, leaves: &[&Value]) -> bool {
        let equal = |operand: &Operand| match operand {
            Operand::Null => leaves.is_empty() || leaves.iter().any(|v| v.is_null()),
            _ => leaves.iter().any(|v| compare(v, operand) == Some(Ordering::Equal)),
        };
        match self {
            Cond::Eq(operand) => equal(operand),
            Cond::Ne(operand) => !equal(operand),
            Cond::In(operands) => operands.iter().any(equal),
            Cond::Nin(operands) => !operands.iter().any(equal),
            Cond::HasAll(operands) => operands.iter().all(equal),
            Cond::Cmp(op, operand) => leaves.iter().filter_map(|v| compare(v, operand)).any(|ordering| match op {
                CmpOp::Gt => ordering == Ordering::Greater,
                CmpOp::Gte => ordering != Ordering::Less,
                CmpOp::Lt => ordering == Ordering::Less,
                CmpOp::Lte => ordering != Ordering::Greater,
            }),
            Cond::Exists(wanted) => leaves.iter().any(|v| !v.is_null()) == *wanted,
            Cond::StartsWith(prefix) => {
                leaves.iter().any(|v| v.as_str().is_some_and(|s| s.starts_with(prefix.as_str())))
            }
        }
    }
}

/// Compares a field value with an operand; `None` when they are not comparable (then only
/// `$ne`/`$nin` can hold). Numbers and numeric strings compare as numbers, since Wix sends order
/// `number`s and amounts as strings.
fn compare(value: &Value, operand: &Operand) -> Option<Ordering> {
    match operand {
        Operand::Instant(t) => value.as_str().and_then(parse_instant).map(|v| v.cmp(t)),
        Operand::Num(n) => numeric(value).and_then(|v| v.partial_cmp(n)),
        Operand::Str(s) => match (numeric(value), numeric_str(s)) {
            (Some(v), Some(n)) => v.partial_cmp(&n),
            _ => value.as_str().map(|v| v.cmp(s.as_str())),
        },
        Operand::Bool(b) => value.as_bool().map(|v| v.cmp(b)),
        Operand::Null => value.is_null().then_some(Ordering::Equal),
    }
}

fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => numeric_str(s),
        _ => None,
    }
}

/// Plain decimal numbers only: `"inf"` or `"NaN"` are strings, not numbers.
fn numeric_str(s: &str) -> Option<f64> {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    if plain { s.parse().ok() } else { None }
}

/// Every value at `path`, looking through arrays on the way (`lineItems.catalogReference.appId`
/// yields one value per line item).
fn collect_leaves<'a>(value: &'a Value, path: &[&str], out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| collect_leaves(item, path, out)),
        _ => match path.split_first() {
            None => out.push(value),
            Some((head, rest)) => {
                if let Some(child) = value.get(head) {
                    collect_leaves(child, rest, out);
                }
            }
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Dates

/// Parses an RFC 3339 date-time (`2025-09-24T17:53:25.532Z`, any fraction, `Z` or `±hh:mm`)
/// into nanoseconds since the Unix epoch, through jiff. `None` when malformed or outside what an
/// `i64` holds (years 1678..2261), which no order date is.
fn parse_instant(s: &str) -> Option<i64> {
    let t: jiff::Timestamp = s.parse().ok()?;
    i64::try_from(t.as_nanosecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "IST.test-api-key";
    const SITE: &str = "3f1c2d4e-0000-4000-8000-00000000site";

    fn fixture_order() -> Value {
        let page: Value = serde_json::from_str(include_str!("../fixtures/wix/search_orders.response.json")).unwrap();
        page["orders"][0].clone()
    }

    /// `2025-09-24T18:00:00.000Z` plus `secs` seconds.
    fn at(secs: usize) -> String {
        format!("2025-09-24T{:02}:{:02}:{:02}.000Z", 18 + secs / 3600, (secs / 60) % 60, secs % 60)
    }

    fn place(fake: &FakeWix, id: &str, status: &str, updated_secs: usize) {
        fake.upsert_order(order_from_template(
            &fixture_order(),
            id,
            &format!("{}", 10_000 + updated_secs),
            status,
            &at(updated_secs),
        ));
    }

    async fn started() -> FakeWix {
        FakeWix::start(KEY, SITE).await.unwrap()
    }

    fn search_request(fake: &FakeWix, body: &Value) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(format!("{}/ecom/v1/orders/search", fake.base_url()))
            .header("Authorization", KEY)
            .header("wix-site-id", SITE)
            .json(body)
    }

    async fn search(fake: &FakeWix, body: Value) -> Value {
        let response = search_request(fake, &body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "search {body} failed");
        response.json().await.unwrap()
    }

    async fn search_status(fake: &FakeWix, body: Value) -> (u16, Value) {
        let response = search_request(fake, &body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    fn ids(page: &Value) -> Vec<String> {
        page["orders"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_owned()).collect()
    }

    #[tokio::test]
    async fn search_filters_by_updated_date_gte_and_status_in() {
        let fake = started().await;
        place(&fake, "a", "APPROVED", 10);
        place(&fake, "b", "APPROVED", 20);
        place(&fake, "c", "CANCELED", 30);
        place(&fake, "d", "APPROVED", 40);
        fake.upsert_order(order_from_template(&fixture_order(), "e", "1", "PENDING", &at(50)));
        let page = search(
            &fake,
            json!({ "search": {
                // Same instant as order b, written with an offset: dates compare as instants.
                "filter": {
                    "updatedDate": { "$gte": "2025-09-24T20:00:20+02:00" },
                    "status": { "$in": ["APPROVED", "CANCELED"] }
                },
                "sort": [{ "fieldName": "updatedDate", "order": "ASC" }],
                "cursorPaging": { "limit": 100 }
            }}),
        )
        .await;
        assert_eq!(ids(&page), ["b", "c", "d"]);
        assert_eq!(
            page["metadata"],
            json!({ "count": 3, "cursors": { "next": null, "prev": null }, "hasNext": false })
        );

        let page = search(
            &fake,
            json!({ "search": { "filter": {
            "$or": [{ "updatedDate": { "$lt": at(15) } }, { "status": "CANCELED" }]
        }, "sort": [{ "fieldName": "updatedDate" }] } }),
        )
        .await;
        assert_eq!(ids(&page), ["a", "c"]);

        let page = search(
            &fake,
            json!({ "search": { "filter": { "id": { "$in": ["d", "a"] }, "status": { "$ne": "CANCELED" } } } }),
        )
        .await;
        assert_eq!(ids(&page), ["d", "a"], "default sort is createdDate DESC");
    }

    #[tokio::test]
    async fn search_hides_initialized_orders_unless_the_filter_names_them() {
        let fake = started().await;
        place(&fake, "approved", "APPROVED", 1);
        place(&fake, "initialized", "INITIALIZED", 2);
        let page = search(&fake, json!({ "search": {} })).await;
        assert_eq!(ids(&page), ["approved"]);
        let page = search(&fake, json!({ "search": { "filter": { "status": { "$ne": "APPROVED" } } } })).await;
        assert!(ids(&page).is_empty(), "$ne does not name INITIALIZED, so it stays hidden");
        let page = search(&fake, json!({ "search": { "filter": { "status": "INITIALIZED" } } })).await;
        assert_eq!(ids(&page), ["initialized"]);
        let page =
            search(&fake, json!({ "search": { "filter": { "status": { "$in": ["INITIALIZED", "APPROVED"] } } } }))
                .await;
        assert_eq!(ids(&page), ["initialized", "approved"]);
    }

    #[tokio::test]
    async fn search_sorts_ascending_with_ties_broken_by_id() {
        let fake = started().await;
        place(&fake, "z", "APPROVED", 5);
        place(&fake, "m", "APPROVED", 7);
        place(&fake, "b", "APPROVED", 5);
        place(&fake, "a", "APPROVED", 9);
        let body = |order: &str| json!({ "search": { "sort": [{ "fieldName": "updatedDate", "order": order }] } });
        assert_eq!(ids(&search(&fake, body("ASC")).await), ["b", "z", "m", "a"]);
        assert_eq!(ids(&search(&fake, body("DESC")).await), ["a", "m", "b", "z"]);
        let (status, error) =
            search_status(&fake, json!({ "search": { "sort": [{ "fieldName": "buyerNote" }] } })).await;
        assert_eq!(status, 400, "{error}");
    }

    #[tokio::test]
    async fn paging_250_orders_takes_three_cursor_only_pages_without_gaps_or_repeats() {
        let fake = started().await;
        for i in 0..250 {
            place(&fake, &format!("order-{i:03}"), "APPROVED", i);
        }
        let first = json!({ "search": {
            "filter": { "updatedDate": { "$gte": at(0) }, "status": { "$in": ["APPROVED", "CANCELED"] } },
            "sort": [{ "fieldName": "updatedDate", "order": "ASC" }],
            "cursorPaging": { "limit": 100 }
        }});
        let mut page = search(&fake, first).await;
        let mut seen = Vec::new();
        let mut counts = Vec::new();
        loop {
            counts.push(page["metadata"]["count"].as_u64().unwrap());
            seen.extend(ids(&page));
            if !page["metadata"]["hasNext"].as_bool().unwrap() {
                assert!(page["metadata"]["cursors"]["next"].is_null());
                break;
            }
            let cursor = page["metadata"]["cursors"]["next"].as_str().unwrap().to_owned();
            page = search(&fake, json!({ "search": { "cursorPaging": { "limit": 100, "cursor": cursor } } })).await;
        }
        assert_eq!(counts, [100, 100, 50]);
        let expected: Vec<String> = (0..250).map(|i| format!("order-{i:03}")).collect();
        assert_eq!(seen, expected, "every order once, in updatedDate order");
        assert_eq!(fake.search_calls(), 3);
        let later = &fake.requests()[1];
        let body: Value = serde_json::from_str(&later.body).unwrap();
        assert!(body["search"].get("filter").is_none(), "later pages carry only the cursor");
    }

    #[tokio::test]
    async fn cursor_stays_valid_while_orders_are_added() {
        let fake = started().await;
        for i in 0..5 {
            place(&fake, &format!("o{i}"), "APPROVED", i * 10);
        }
        let sort = json!([{ "fieldName": "updatedDate", "order": "ASC" }]);
        let page = search(&fake, json!({ "search": { "sort": sort, "cursorPaging": { "limit": 2 } } })).await;
        assert_eq!(ids(&page), ["o0", "o1"]);
        // One order lands before the cursor's position, one after it.
        place(&fake, "early", "APPROVED", 5);
        place(&fake, "late", "APPROVED", 45);
        let cursor = page["metadata"]["cursors"]["next"].as_str().unwrap().to_owned();
        let page = search(&fake, json!({ "search": { "cursorPaging": { "limit": 10, "cursor": cursor } } })).await;
        assert_eq!(ids(&page), ["o2", "o3", "o4", "late"]);
    }

    #[tokio::test]
    async fn limit_over_100_is_a_400_not_clamped() {
        let fake = started().await;
        let (status, error) = search_status(&fake, json!({ "search": { "cursorPaging": { "limit": 101 } } })).await;
        assert_eq!(status, 400);
        assert!(error["message"].as_str().unwrap().contains("at most 100"), "{error}");
        assert_eq!(error["details"]["validationError"]["fieldViolations"][0]["field"], "search.cursorPaging.limit");
    }

    #[tokio::test]
    async fn bad_requests_are_400_with_a_message() {
        let fake = started().await;
        let client = reqwest::Client::new();
        let url = format!("{}/ecom/v1/orders/search", fake.base_url());
        for body in ["{not json", "[1,2]", "\u{0}\u{ff}", r#"{"search": 7}"#] {
            let response = client
                .post(&url)
                .header("Authorization", KEY)
                .header("wix-site-id", SITE)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 400, "body {body:?}");
            let error: Value = response.json().await.unwrap();
            assert!(error["message"].is_string(), "{error}");
        }
        for body in [
            json!({ "search": { "filter": { "status": { "$regex": "A.*" } } } }),
            json!({ "search": { "filter": { "updatedDate": { "$gte": "yesterday" } } } }),
            json!({ "search": { "filter": { "$or": [] } } }),
            json!({ "search": { "cursorPaging": { "cursor": "not-a-cursor" } } }),
            json!({ "search": { "cursorPaging": { "limit": -1 } } }),
        ] {
            let (status, _) = search_status(&fake, body.clone()).await;
            assert_eq!(status, 400, "body {body}");
        }
        // A cursor already carries the filter: sending both is refused.
        for i in 0..3 {
            place(&fake, &format!("o{i}"), "APPROVED", i);
        }
        let page = search(&fake, json!({ "search": { "cursorPaging": { "limit": 1 } } })).await;
        let cursor = page["metadata"]["cursors"]["next"].as_str().unwrap();
        let (status, _) = search_status(
            &fake,
            json!({ "search": {
                "filter": { "status": "APPROVED" },
                "cursorPaging": { "limit": 1, "cursor": cursor }
            } }),
        )
        .await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn misplaced_top_level_filter_is_ignored_like_wix_does() {
        let fake = started().await;
        place(&fake, "old", "APPROVED", 1);
        place(&fake, "new", "APPROVED", 100);
        let page = search(&fake, json!({ "filter": { "updatedDate": { "$gte": at(50) } } })).await;
        assert_eq!(ids(&page), ["new", "old"]);
    }

    #[tokio::test]
    async fn auth_takes_the_raw_key_and_refuses_bearer_and_other_sites() {
        let fake = started().await;
        let client = reqwest::Client::new();
        let url = format!("{}/ecom/v1/orders/search", fake.base_url());
        let send = |authorization: Option<&str>, site: Option<&str>| {
            let mut request = client.post(&url).json(&json!({ "search": {} }));
            if let Some(a) = authorization {
                request = request.header("Authorization", a);
            }
            if let Some(s) = site {
                request = request.header("wix-site-id", s);
            }
            request.send()
        };
        assert_eq!(send(Some(KEY), Some(SITE)).await.unwrap().status().as_u16(), 200);
        let bearer = send(Some(&format!("Bearer {KEY}")), Some(SITE)).await.unwrap();
        assert_eq!(bearer.status().as_u16(), 401);
        let error: Value = bearer.json().await.unwrap();
        assert!(error["message"].as_str().unwrap().contains("Bearer"), "{error}");
        assert_eq!(send(Some("wrong"), Some(SITE)).await.unwrap().status().as_u16(), 401);
        assert_eq!(send(None, Some(SITE)).await.unwrap().status().as_u16(), 401);
        let other_site = send(Some(KEY), Some("another-site")).await.unwrap();
        assert_eq!(other_site.status().as_u16(), 403);
        let error: Value = other_site.json().await.unwrap();
        assert_eq!(error["details"]["applicationError"]["code"], "PERMISSION_DENIED");
        assert_eq!(send(Some(KEY), None).await.unwrap().status().as_u16(), 403);
    }

    #[tokio::test]
    async fn get_order_returns_the_order_and_404_when_unknown() {
        let fake = started().await;
        let order = order_from_template(&fixture_order(), "abc", "10099", "INITIALIZED", &at(3));
        fake.upsert_order(order.clone());
        let client = reqwest::Client::new();
        let get = |id: &str| {
            client
                .get(format!("{}/ecom/v1/orders/{id}", fake.base_url()))
                .header("Authorization", KEY)
                .header("wix-site-id", SITE)
                .send()
        };
        let response = get("abc").await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({ "order": order }),
            "GET returns INITIALIZED orders too"
        );
        let missing = get("nope").await.unwrap();
        assert_eq!(missing.status().as_u16(), 404);
        assert_eq!(missing.json::<Value>().await.unwrap()["details"]["applicationError"]["code"], "NOT_FOUND");
    }

    #[tokio::test]
    async fn upsert_replaces_by_id_in_place() {
        let fake = started().await;
        place(&fake, "a", "APPROVED", 1);
        place(&fake, "b", "APPROVED", 2);
        place(&fake, "a", "CANCELED", 3);
        let orders = fake.orders();
        assert_eq!(orders.len(), 2);
        assert_eq!((orders[0]["id"].as_str(), orders[0]["status"].as_str()), (Some("a"), Some("CANCELED")));
    }

    #[tokio::test]
    async fn injected_faults_answer_in_queue_order_then_recover() {
        let fake = started().await;
        place(&fake, "a", "APPROVED", 1);
        fake.inject(Fault::RateLimited { retry_after_secs: 7 }, 1);
        fake.inject(Fault::ServerError, 2);
        fake.inject(Fault::Malformed, 1);
        fake.inject(Fault::Unauthorized, 1);
        let body = json!({ "search": {} });

        let limited = search_request(&fake, &body).send().await.unwrap();
        assert_eq!(limited.status().as_u16(), 429);
        assert_eq!(limited.headers()["retry-after"], "7");
        for _ in 0..2 {
            assert_eq!(search_request(&fake, &body).send().await.unwrap().status().as_u16(), 500);
        }
        let malformed = search_request(&fake, &body).send().await.unwrap();
        assert_eq!(malformed.status().as_u16(), 200);
        assert!(serde_json::from_str::<Value>(&malformed.text().await.unwrap()).is_err());
        assert_eq!(
            search_request(&fake, &body).send().await.unwrap().status().as_u16(),
            401,
            "right key, still refused"
        );
        assert_eq!(ids(&search(&fake, body).await), ["a"]);
        let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 500, 500, 200, 401, 200]);
    }

    #[tokio::test]
    async fn slow_fault_delays_the_answer() {
        let fake = started().await;
        fake.inject(Fault::Slow { millis: 200 }, 1);
        let started_at = std::time::Instant::now();
        let page = search(&fake, json!({ "search": {} })).await;
        assert!(started_at.elapsed() >= Duration::from_millis(200));
        assert_eq!(page["metadata"]["count"], 0);
    }

    #[tokio::test]
    async fn requests_are_recorded_with_headers_body_and_status() {
        let fake = started().await;
        let waiter = {
            let fake = fake.clone();
            tokio::spawn(async move { fake.wait_for_requests(2, Duration::from_secs(10)).await })
        };
        let body = json!({ "search": { "cursorPaging": { "limit": 5 } } });
        search(&fake, body.clone()).await;
        let unknown = reqwest::Client::new()
            .get(format!("{}/ecom/v1/orders/missing", fake.base_url()))
            .header("Authorization", "Bearer x")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status().as_u16(), 401);
        waiter.await.unwrap().unwrap();

        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            (requests[0].method.as_str(), requests[0].path.as_str(), requests[0].status),
            ("POST", SEARCH_PATH, 200)
        );
        assert_eq!(requests[0].header("authorization"), Some(KEY));
        assert_eq!(requests[0].header("Wix-Site-Id"), Some(SITE));
        assert_eq!(serde_json::from_str::<Value>(&requests[0].body).unwrap(), body);
        assert_eq!((requests[1].method.as_str(), requests[1].status), ("GET", 401));
        assert_eq!(fake.search_calls(), 1);

        let err = fake.wait_for_requests(3, Duration::from_millis(50)).await.unwrap_err();
        assert!(err.to_string().contains("2 of 3"), "{err}");
    }

    #[test]
    fn order_from_template_accepts_webhook_events() {
        let event: Value = serde_json::from_str(include_str!("../fixtures/wix/order_created.pickup.json")).unwrap();
        let order = order_from_template(&event, "new-id", "20001", "APPROVED", "2026-01-02T03:04:05.678Z");
        assert_eq!(order["id"], "new-id");
        assert_eq!(order["number"], "20001");
        assert_eq!(order["createdDate"], "2026-01-02T03:04:05.678Z");
        assert_eq!(order["lineItems"], event["createdEvent"]["entity"]["lineItems"]);
        assert!(order.get("createdEvent").is_none());
    }

    #[test]
    fn rfc3339_parses_to_instants() {
        assert_eq!(parse_instant("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_instant("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_instant("2025-09-24T17:53:25.532Z"), Some(1_758_736_405_532_000_000));
        assert_eq!(parse_instant("2025-09-24T19:53:25.532+02:00"), parse_instant("2025-09-24T17:53:25.532Z"));
        assert_eq!(parse_instant("2024-02-29T00:00:00Z").map(|n| n / 1_000_000_000), Some(1_709_164_800));
        for bad in [
            "",
            "2025-02-29T00:00:00Z",
            "2025-09-24T17:53:25",
            "2025-09-24T17:53:25.Z",
            "2025-13-01T00:00:00Z",
            "2025-09-24T17:53:25Zjunk",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad:?}");
        }
    }
}
