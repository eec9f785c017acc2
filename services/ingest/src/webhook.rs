//! `POST /webhooks/wix`: the only door Wix knocks on.
//!
//! Order of work, each step a reason to refuse: size (413), time (408), completeness (400),
//! the in-flight body budget (503) → verify and unwrap (401/400) → app instance
//! (`WIX_INSTANCE_ID`, 401) → commit (503 on failure) → 200. Refusals a forger can provoke
//! (4xx) are logged at a bounded rate. A refusal stores nothing; a 200 means the order is on disk.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use tracing::field::Empty;

use wixprint_shared::proto::order::OrderSource;
use wixprint_shared::ratelimit::{LogDecision, LogLimiter};
use wixprint_shared::traces::{self, SPANS};

use crate::store::{Recorded, Store};
use crate::wix::{WebhookError, WebhookVerifier};

#[derive(Clone)]
pub struct WebhookState {
    pub verifier: Arc<WebhookVerifier>,
    pub store: Store,
    /// Wakes the outbox forwarder when a new version is committed.
    pub outbox_wake: Arc<Notify>,
    pub max_body_bytes: usize,
    /// A body not complete within this is answered 408.
    pub body_timeout: Duration,
    /// Bytes of bodies held at once across all requests (one permit per byte).
    pub body_budget: Arc<Semaphore>,
    /// How long an order event after a sequence gap waits for the events before it.
    pub reorder_window_ms: i64,
    /// `WIX_INSTANCE_ID`: the app instances whose events are accepted (empty = any).
    pub instance_ids: Arc<Vec<String>>,
    /// Bounds the log lines of refused requests (anyone can send forged ones).
    pub refusal_log: Arc<LogLimiter>,
}

/// At most this many log lines a minute for refused webhooks (4xx); the rest are counted.
pub const REFUSAL_LOG_LINES_PER_MINUTE: u32 = 10;

pub fn router(state: WebhookState) -> Router {
    Router::new().route("/webhooks/wix", post(receive)).route("/healthz", get(|| async { "ok\n" })).with_state(state)
}

/// What a stored webhook came to (`Recorded::outcome`), for the metrics.
#[derive(Clone, Copy)]
struct Outcome(&'static str);

async fn receive(state: State<WebhookState>, body: Body) -> Response {
    let started = std::time::Instant::now();
    // The root of the order's trace (built only when sampled; nothing with traces off).
    let trace = traces::hop(None, || {
        tracing::info_span!(target: SPANS, "webhook", otel.kind = "server", otel.status_code = Empty,
            webhook.result = Empty, wix.event_id = Empty, order.id = Empty, order.number = Empty, order.version = Empty)
    });
    let span = trace.span().clone();
    let response = receive_inner(state, body, &trace).instrument(span.clone()).await;
    let status = response.status();
    let result = match response.extensions().get::<Outcome>() {
        Some(o) => o.0,
        None => status.as_str(),
    };
    crate::metrics::webhook(result, started);
    span.record("webhook.result", result);
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

async fn receive_inner(State(state): State<WebhookState>, body: Body, trace: &traces::Hop) -> Response {
    // Held until the answer: the body's bytes count against the global budget meanwhile.
    let (bytes, _budget) = match read_body(body, state.max_body_bytes, state.body_timeout, &state.body_budget).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(seen)) => {
            return refuse(
                &state,
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body is larger than {} bytes ({seen} bytes or more received)", state.max_body_bytes),
            );
        }
        Err(BodyError::TimedOut(seen)) => {
            return refuse(
                &state,
                StatusCode::REQUEST_TIMEOUT,
                format!("body not complete within {} ms ({seen} bytes received)", state.body_timeout.as_millis()),
            );
        }
        Err(BodyError::Incomplete(e)) => {
            return refuse(&state, StatusCode::BAD_REQUEST, format!("body incomplete: {e}"));
        }
        Err(BodyError::Busy) => {
            return refuse(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "too many webhook bodies in flight; retry later".to_owned(),
            );
        }
    };
    let started = std::time::Instant::now();
    let event = match state.verifier.verify(&bytes) {
        Ok(e) => e,
        Err(WebhookError::Unauthorized(reason)) => return refuse(&state, StatusCode::UNAUTHORIZED, reason),
        Err(WebhookError::BadRequest(reason)) => return refuse(&state, StatusCode::BAD_REQUEST, reason),
    };
    // Signed by Wix for this app, but possibly for another site (app instance): not ours.
    if !state.instance_ids.is_empty() && !state.instance_ids.contains(&event.instance_id) {
        let shown: String = event.instance_id.chars().take(100).collect();
        let reason = format!("app instance {shown:?} is not in WIX_INSTANCE_ID");
        return refuse(&state, StatusCode::UNAUTHORIZED, reason);
    }
    let verified = started.elapsed();
    let event_id = event.event_id.clone();
    let event_type = event.event_type.clone();
    let span = trace.span();
    span.record("wix.event_id", event_id.as_str());
    if let Some(order) = &event.order {
        span.record("order.id", order.id.as_str());
        span.record("order.number", order.number.as_str());
    }
    // Stored with the outbox row: forwarding continues this trace.
    let traceparent = trace.traceparent();
    let commit = trace.child(|| {
        tracing::info_span!(target: SPANS, "sqlite.commit", db.system.name = "sqlite",
            db.operation.name = "record_webhook")
    });
    let stored = state
        .store
        .record_webhook(event, OrderSource::WixWebhook, state.reorder_window_ms, traceparent)
        .instrument(commit);
    match stored.await {
        Ok(recorded) => {
            if let Recorded::Applied { version, .. } = &recorded {
                span.record("order.version", *version);
            }
            tracing::info!(%event_id, %event_type, outcome = recorded.outcome(),
                verify_us = verified.as_micros() as u64, commit_us = (started.elapsed() - verified).as_micros() as u64, "webhook stored");
            let mut body = json!({ "status": recorded.outcome(), "event_id": event_id });
            match &recorded {
                Recorded::Applied { order_id, version } => {
                    body["order_id"] = json!(order_id);
                    body["version"] = json!(version);
                }
                Recorded::Held { order_id } | Recorded::Stale { order_id } => body["order_id"] = json!(order_id),
                _ => {}
            }
            // New versions to forward, or a held event whose release the forwarder must time.
            if matches!(recorded, Recorded::Applied { .. } | Recorded::Held { .. }) {
                state.outbox_wake.notify_one();
            }
            let mut response = (StatusCode::OK, axum::Json(body)).into_response();
            response.extensions_mut().insert(Outcome(recorded.outcome()));
            response
        }
        Err(e) => {
            tracing::error!(%event_id, error = format!("{e:#}"), "could not store webhook; answering 503 so Wix retries");
            refuse(&state, StatusCode::SERVICE_UNAVAILABLE, format!("could not store the event: {e:#}"))
        }
    }
}

/// Why a body was not read.
#[derive(Debug)]
enum BodyError {
    /// Larger than the limit (how much arrived).
    TooLarge(usize),
    /// Not complete within the body timeout (how much arrived): 408, Wix retries.
    TimedOut(usize),
    /// The stream broke, e.g. the connection closed before `Content-Length` bytes arrived.
    Incomplete(String),
    /// The global in-flight body budget is spent: 503, Wix retries.
    Busy,
}

/// Reads at most `limit` bytes within `timeout`, each byte counted against `budget` until
/// the returned permit is dropped. A larger body is read on and discarded (up to 16 ×
/// `limit`, within the same timeout) so the sender gets its 413 instead of a broken pipe.
/// A body that ends early (fewer bytes than its `Content-Length`) is never returned.
async fn read_body(
    body: Body,
    limit: usize,
    timeout: Duration,
    budget: &Arc<Semaphore>,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), BodyError> {
    use tokio_stream::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    let mut held: Option<OwnedSemaphorePermit> = None;
    let drain_cap = limit.saturating_mul(16);
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| BodyError::Incomplete(e.to_string()))?;
            total += chunk.len();
            if total <= limit {
                let n = u32::try_from(chunk.len()).map_err(|_| BodyError::TooLarge(total))?;
                let permit = budget.clone().try_acquire_many_owned(n).map_err(|_| BodyError::Busy)?;
                match held.as_mut() {
                    Some(h) => h.merge(permit),
                    None => held = Some(permit),
                }
                buf.extend_from_slice(&chunk);
            } else if total > drain_cap {
                break;
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Err(e)) => Err(e),
        _ if total > limit => Err(BodyError::TooLarge(total)),
        Err(_) => Err(BodyError::TimedOut(total)),
        Ok(Ok(())) => Ok((buf, held)),
    }
}

/// Answers a refusal. Client errors (what a forger can provoke at will) are logged at most
/// [`REFUSAL_LOG_LINES_PER_MINUTE`] times a minute, with the count of the suppressed ones.
fn refuse(state: &WebhookState, status: StatusCode, reason: String) -> Response {
    if status.is_server_error() {
        tracing::error!(%status, %reason, "webhook not accepted");
    } else {
        match state.refusal_log.check() {
            LogDecision::Log { suppressed } => tracing::warn!(%status, %reason, suppressed, "webhook refused"),
            LogDecision::LogLast => tracing::warn!(
                %status,
                %reason,
                "webhook refused; further refusals are suppressed for this minute"
            ),
            LogDecision::Suppress => {}
        }
    }
    (status, axum::Json(json!({ "error": reason }))).into_response()
}
