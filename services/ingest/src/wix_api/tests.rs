//! The client against a fake Wix: a tiny axum server on 127.0.0.1:0 that records every request
//! and answers with whatever the test scripts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode as HttpStatus};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::*;

const SEARCH_RESPONSE: &str = include_str!("../../../../tests/fixtures/wix/search_orders.response.json");
const KEY: &str = "IST.eyJraWQiOiJ0ZXN0In0.not-a-real-key";
const SITE: &str = "0b6b2d5e-0000-4000-8000-00000000517e";

// ---- fake Wix -------------------------------------------------------------------------------

/// One request as the fake received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    /// The body parsed as JSON, `Null` when empty or not JSON.
    body: Value,
}

/// What the fake answers.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self::raw(status, &body.to_string()).header("content-type", "application/json")
    }

    fn raw(status: u16, body: &str) -> Self {
        Self { status, headers: Vec::new(), body: body.to_owned(), delay: Duration::ZERO }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Responder = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

#[derive(Clone)]
struct FakeState {
    seen: Arc<Mutex<Vec<Seen>>>,
    respond: Responder,
}

struct FakeWix {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeWix {
    async fn start(respond: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake");
        let addr = listener.local_addr().expect("fake address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = FakeState { seen: seen.clone(), respond: Arc::new(respond) };
        let app = axum::Router::new().fallback(handle).with_state(state);
        // Dropped with the test's runtime; nothing to shut down explicitly.
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{addr}"), seen }
    }

    fn api(&self) -> WixApi {
        self.api_with_timeout(Duration::from_secs(5))
    }

    fn api_with_timeout(&self, timeout: Duration) -> WixApi {
        WixApi::new(&self.url, ApiKey::new(KEY), SITE, timeout).expect("client")
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(State(state): State<FakeState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    let reply = (state.respond)(&seen);
    state.seen.lock().unwrap().push(seen);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (HttpStatus::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

fn page(orders: Value, next: Option<&str>, has_next: bool) -> Value {
    let count = orders.as_array().map_or(0, Vec::len);
    json!({"orders": orders, "metadata": {"count": count, "cursors": {"next": next}, "hasNext": has_next}})
}

fn query() -> SearchQuery {
    SearchQuery::approved_or_canceled_since(1_758_736_405_532)
}

// ---- request shape --------------------------------------------------------------------------

#[test]
fn first_page_body_filters_by_date_and_status_sorted_ascending() {
    assert_eq!(
        query().body(None),
        json!({"search": {
            "filter": {
                "updatedDate": {"$gte": "2025-09-24T17:53:25.532Z"},
                "status": {"$in": ["APPROVED", "CANCELED"]}
            },
            "sort": [{"fieldName": "updatedDate", "order": "ASC"}],
            "cursorPaging": {"limit": 100}
        }})
    );
}

#[test]
fn later_page_body_carries_only_limit_and_cursor() {
    assert_eq!(query().body(Some("c2")), json!({"search": {"cursorPaging": {"limit": 100, "cursor": "c2"}}}));
}

#[test]
fn empty_query_parts_are_left_out_and_limit_is_clamped() {
    let q = SearchQuery { updated_since_ms: None, statuses: vec![], limit: 500 };
    assert_eq!(
        q.body(None),
        json!({"search": {"sort": [{"fieldName": "updatedDate", "order": "ASC"}], "cursorPaging": {"limit": 100}}})
    );
    let q = SearchQuery { limit: 0, ..q };
    assert_eq!(q.body(Some("c")), json!({"search": {"cursorPaging": {"limit": 1, "cursor": "c"}}}));
}

#[test]
fn timestamps_are_rfc3339_with_milliseconds() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(1_709_251_199_000), "2024-02-29T23:59:59.000Z");
    assert_eq!(rfc3339_ms(1_758_736_405_532), "2025-09-24T17:53:25.532Z");
    assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    assert_eq!(rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
    assert_eq!(rfc3339_ms(i64::MIN), "0000-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn search_sends_the_exact_bodies_for_first_and_cursor_pages() {
    let fake = FakeWix::start(|seen| {
        let next = if seen.body["search"]["cursorPaging"]["cursor"].is_null() { Some("c2") } else { None };
        Reply::json(200, page(json!([]), next, next.is_some()))
    })
    .await;
    let api = fake.api();

    let first = api.search_orders(&query(), None).await.unwrap();
    assert_eq!(first.next_cursor.as_deref(), Some("c2"));
    let second = api.search_orders(&query(), first.next_cursor.as_deref()).await.unwrap();
    assert!(!second.has_next);

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/ecom/v1/orders/search"));
        assert_eq!(r.headers["content-type"], "application/json");
    }
    assert_eq!(requests[0].body, query().body(None));
    assert_eq!(requests[1].body, json!({"search": {"cursorPaging": {"limit": 100, "cursor": "c2"}}}));
}

#[tokio::test]
async fn requests_carry_the_raw_api_key_and_the_site_id() {
    let fake = FakeWix::start(|seen| match seen.method.as_str() {
        "GET" => Reply::json(200, json!({"order": {"id": "o1"}})),
        _ => Reply::json(200, page(json!([]), None, false)),
    })
    .await;
    let api = fake.api();
    api.search_orders(&query(), None).await.unwrap();
    api.get_order("o1").await.unwrap();

    for r in fake.requests() {
        assert_eq!(r.headers["authorization"], KEY, "raw key, no Bearer prefix");
        assert_eq!(r.headers["wix-site-id"], SITE);
    }
}

// ---- response parsing -----------------------------------------------------------------------

#[tokio::test]
async fn the_fixture_page_parses_into_orders_and_paging() {
    let fake = FakeWix::start(|_| Reply::raw(200, SEARCH_RESPONSE).header("content-type", "application/json")).await;
    let page = fake.api().search_orders(&query(), None).await.unwrap();

    let fixture: Value = serde_json::from_str(SEARCH_RESPONSE).unwrap();
    let orders = fixture["orders"].as_array().unwrap();
    assert_eq!(page.orders.len(), orders.len());
    assert_eq!(&page.orders, orders, "orders are passed through unmapped");
    assert_eq!(page.next_cursor.as_deref(), fixture["metadata"]["cursors"]["next"].as_str());
    assert_eq!(page.has_next, fixture["metadata"]["hasNext"].as_bool().unwrap());
    for order in &page.orders {
        crate::wix::map_order(order).expect("the caller can map what the client returns");
    }
}

#[tokio::test]
async fn a_page_with_more_to_come_exposes_the_next_cursor() {
    let fake =
        FakeWix::start(|_| Reply::json(200, page(json!([{"id": "a"}, {"id": "b"}]), Some("opaque=="), true))).await;
    let page = fake.api().search_orders(&query(), None).await.unwrap();
    assert_eq!(page.orders.len(), 2);
    assert_eq!(page.next_cursor.as_deref(), Some("opaque=="));
    assert!(page.has_next);
}

#[tokio::test]
async fn an_empty_answer_is_a_last_empty_page() {
    let fake = FakeWix::start(|_| Reply::json(200, json!({}))).await;
    let page = fake.api().search_orders(&query(), None).await.unwrap();
    assert!(page.orders.is_empty());
    assert!(!page.has_next);
    assert_eq!(page.next_cursor, None);
}

#[tokio::test]
async fn has_next_without_a_cursor_is_malformed_so_paging_cannot_loop_forever() {
    for cursors in [json!({}), json!({"next": null}), json!({"next": ""})] {
        let body = json!({"orders": [], "metadata": {"count": 0, "cursors": cursors, "hasNext": true}});
        let fake = FakeWix::start(move |_| Reply::json(200, body.clone())).await;
        let err = fake.api().search_orders(&query(), None).await.unwrap_err();
        assert!(matches!(err, ApiError::Malformed(_)), "{cursors}: {err:?}");
        assert!(err.is_retryable());
    }
}

#[tokio::test]
async fn a_cursor_pointing_at_itself_is_malformed() {
    let fake = FakeWix::start(|_| Reply::json(200, page(json!([]), Some("same"), true))).await;
    let err = fake.api().search_orders(&query(), Some("same")).await.unwrap_err();
    assert!(matches!(err, ApiError::Malformed(_)), "{err:?}");
}

#[tokio::test]
async fn a_success_status_with_invalid_json_is_malformed() {
    for body in ["<html>gateway</html>", "", r#"{"orders": 5}"#] {
        let fake = FakeWix::start(move |_| Reply::raw(200, body)).await;
        let err = fake.api().search_orders(&query(), None).await.unwrap_err();
        assert!(matches!(err, ApiError::Malformed(_)), "{body:?}: {err:?}");
        assert!(err.is_retryable());
    }
}

// ---- errors ---------------------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_reports_the_retry_after_seconds() {
    let fake = FakeWix::start(|_| Reply::json(429, json!({"message": "slow down"})).header("retry-after", "7")).await;
    let err = fake.api().search_orders(&query(), None).await.unwrap_err();
    assert!(matches!(err, ApiError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(7)), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn rate_limit_without_a_readable_retry_after_has_no_hint() {
    let fake = FakeWix::start(|_| Reply::raw(429, "").header("retry-after", "soon")).await;
    let err = fake.api().search_orders(&query(), None).await.unwrap_err();
    assert!(matches!(err, ApiError::RateLimited { retry_after: None }), "{err:?}");
}

#[test]
fn retry_after_accepts_seconds_and_http_dates() {
    let now = 784_111_777_000; // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
    assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
    assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO), "past means now");
    assert_eq!(parse_retry_after("Thu, 29 Feb 2024 23:59:59 GMT", 1_709_251_199_000), Some(Duration::ZERO));
    for junk in ["", "-1", "1.5", "soon", "Sun, 06 Nov 1994 08:49:37 CET", "Sunday, 06-Nov-94 08:49:37 GMT"] {
        assert_eq!(parse_retry_after(junk, now), None, "{junk:?}");
    }
}

#[tokio::test]
async fn server_errors_are_retryable() {
    let fake = FakeWix::start(|_| Reply::json(500, json!({"message": "internal error"}))).await;
    let err = fake.api().search_orders(&query(), None).await.unwrap_err();
    assert!(matches!(&err, ApiError::Server { status: 500, message } if message == "internal error"), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn unauthorized_and_forbidden_are_auth_errors_with_wix_message() {
    for status in [401, 403] {
        let fake = FakeWix::start(move |_| {
            Reply::json(
                status,
                json!({"message": "Missing required permission",
                       "details": {"applicationError": {"code": "PERMISSION_DENIED", "description": "x"}}}),
            )
        })
        .await;
        let err = fake.api().search_orders(&query(), None).await.unwrap_err();
        match &err {
            ApiError::Auth { status: s, message } => {
                assert_eq!(*s, status);
                assert_eq!(message, "PERMISSION_DENIED: Missing required permission");
            }
            other => panic!("{status}: expected Auth, got {other:?}"),
        }
        assert!(!err.is_retryable(), "a bad key must not be retried in a loop");
        assert!(err.to_string().contains("Missing required permission"));
    }
}

#[tokio::test]
async fn error_messages_are_truncated_single_line_and_never_echo_the_key() {
    let body = format!("bad key {KEY}\n{}", "x".repeat(5_000));
    let fake = FakeWix::start(move |_| Reply::raw(401, &body)).await;
    let err = fake.api().search_orders(&query(), None).await.unwrap_err();
    let ApiError::Auth { message, .. } = &err else { panic!("{err:?}") };
    assert!(message.starts_with("bad key *** xxx"), "{message}");
    assert!(message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    assert!(!message.contains('\n'));
    assert!(!format!("{err} {err:?}").contains(KEY));
}

#[tokio::test]
async fn an_error_without_a_body_falls_back_to_the_reason_phrase() {
    let fake = FakeWix::start(|_| Reply::raw(403, "")).await;
    let err = fake.api().get_order("o1").await.unwrap_err();
    assert!(matches!(&err, ApiError::Auth { status: 403, message } if message == "Forbidden"), "{err:?}");
}

#[tokio::test]
async fn other_client_errors_and_redirects_are_request_errors() {
    for status in [400, 409, 302] {
        let fake =
            FakeWix::start(move |_| Reply::json(status, json!({"message": "nope"})).header("location", "http://evil/"))
                .await;
        let err = fake.api().search_orders(&query(), None).await.unwrap_err();
        assert!(matches!(&err, ApiError::Request { status: s, .. } if *s == status), "{err:?}");
        assert!(!err.is_retryable());
        assert_eq!(fake.requests().len(), 1, "redirects are not followed");
    }
}

#[tokio::test]
async fn a_slow_server_is_a_transport_timeout() {
    let fake =
        FakeWix::start(|_| Reply::json(200, page(json!([]), None, false)).delayed(Duration::from_secs(30))).await;
    let api = fake.api_with_timeout(Duration::from_millis(200));
    let err = api.search_orders(&query(), None).await.unwrap_err();
    assert!(matches!(&err, ApiError::Transport(m) if m.contains("timed out")), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.class(), FailureClass::Transient);
}

#[tokio::test]
async fn a_refused_connection_is_unreachable_and_waits() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let api = WixApi::new(&format!("http://{addr}"), ApiKey::new(KEY), SITE, Duration::from_secs(5)).unwrap();
    let err = api.get_order("o1").await.unwrap_err();
    assert!(matches!(err, ApiError::Unreachable(_)), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.class(), FailureClass::Waiting, "nothing was sent: waiting, not a failure");
}

#[tokio::test]
async fn a_connection_closed_mid_request_is_transient() {
    // Accepts, reads a little of the request, hangs up without an answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    let api = WixApi::new(&format!("http://{addr}"), ApiKey::new(KEY), SITE, Duration::from_secs(5)).unwrap();
    let err = api.search_orders(&query(), None).await.unwrap_err();
    assert!(matches!(err, ApiError::Transport(_)), "{err:?}");
    assert_eq!(err.class(), FailureClass::Transient);
}

#[test]
fn every_error_has_its_failure_class() {
    let s = || String::from("x");
    for (err, class) in [
        (ApiError::Unreachable(s()), FailureClass::Waiting),
        (ApiError::Transport(s()), FailureClass::Transient),
        (ApiError::RateLimited { retry_after: None }, FailureClass::Transient),
        (ApiError::Server { status: 503, message: s() }, FailureClass::Transient),
        (ApiError::Malformed(s()), FailureClass::Transient),
        (ApiError::Auth { status: 401, message: s() }, FailureClass::Permanent),
        (ApiError::Auth { status: 403, message: s() }, FailureClass::Permanent),
        (ApiError::Request { status: 400, message: s() }, FailureClass::Permanent),
        (ApiError::Request { status: 404, message: s() }, FailureClass::Permanent),
    ] {
        assert_eq!(err.class(), class, "{err:?}");
    }
}

// ---- get order ------------------------------------------------------------------------------

#[tokio::test]
async fn get_order_returns_the_order_object() {
    let fake =
        FakeWix::start(|seen| Reply::json(200, json!({"order": {"id": seen.path.rsplit('/').next().unwrap()}}))).await;
    let order = fake.api().get_order("6d6062d8-0000-4000-8000-0000000000a1").await.unwrap();
    assert_eq!(order, json!({"id": "6d6062d8-0000-4000-8000-0000000000a1"}));
    let r = &fake.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/ecom/v1/orders/6d6062d8-0000-4000-8000-0000000000a1"));
}

#[tokio::test]
async fn get_order_percent_encodes_the_id() {
    let fake = FakeWix::start(|_| Reply::json(200, json!({"order": {}}))).await;
    fake.api().get_order("../a b/?x").await.unwrap();
    assert_eq!(fake.requests()[0].path, "/ecom/v1/orders/..%2Fa%20b%2F%3Fx");
}

#[tokio::test]
async fn a_missing_order_is_a_request_error() {
    let fake = FakeWix::start(|_| Reply::json(404, json!({"message": "Order not found"}))).await;
    let err = fake.api().get_order("nope").await.unwrap_err();
    assert!(matches!(&err, ApiError::Request { status: 404, message } if message == "Order not found"), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn get_order_without_an_order_object_is_malformed() {
    let fake = FakeWix::start(|_| Reply::json(200, json!({"orders": []}))).await;
    let err = fake.api().get_order("o1").await.unwrap_err();
    assert!(matches!(err, ApiError::Malformed(_)), "{err:?}");
}

#[tokio::test]
async fn a_base_url_path_prefix_is_kept() {
    let fake = FakeWix::start(|_| Reply::json(200, json!({"order": {}}))).await;
    let api = WixApi::new(&format!("{}/proxy/", fake.url), ApiKey::new(KEY), SITE, Duration::from_secs(5)).unwrap();
    api.get_order("o1").await.unwrap();
    assert_eq!(fake.requests()[0].path, "/proxy/ecom/v1/orders/o1");
}

// ---- construction and secrets -----------------------------------------------------------------

#[test]
fn the_api_key_never_prints() {
    let key = ApiKey::new(format!("  {KEY}\n"));
    assert_eq!(key.expose(), KEY, "surrounding whitespace is trimmed");
    assert_eq!(format!("{key:?}"), "***");
    assert_eq!(format!("{key}"), "***");
    let api = WixApi::new(DEFAULT_BASE_URL, key, SITE, Duration::from_secs(5)).unwrap();
    let debug = format!("{api:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(debug.contains(SITE));
}

#[test]
fn bad_configuration_is_refused_before_anything_is_sent() {
    let ok = Duration::from_secs(5);
    let cases = [
        WixApi::new("not a url", ApiKey::new(KEY), SITE, ok),
        WixApi::new("ftp://www.wixapis.com", ApiKey::new(KEY), SITE, ok),
        WixApi::new(DEFAULT_BASE_URL, ApiKey::new("  "), SITE, ok),
        WixApi::new(DEFAULT_BASE_URL, ApiKey::new("a\u{7f}b"), SITE, ok),
        WixApi::new(DEFAULT_BASE_URL, ApiKey::new(KEY), "", ok),
        WixApi::new(DEFAULT_BASE_URL, ApiKey::new(KEY), SITE, Duration::ZERO),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let err = case.unwrap_err();
        assert!(matches!(err, ApiError::Request { status: 0, .. }), "case {i}: {err:?}");
        assert!(!err.is_retryable());
        assert!(!err.to_string().contains(KEY));
    }
}
