//! The webhook envelope: checks that a body is a JWT signed by Wix and unwraps its layers.
//!
//! Wix posts the event as a compact JWT (RS256, checked with the app's public key; there is no
//! HMAC header). Inside are three layers, each inner one a JSON *string*:
//!
//! ```text
//! claims  {"data": "<L2>", "iat", "exp"}
//! L2      {"eventType": "wix.ecom.v1.order_created", "instanceId", "identity": "<string>", "data": "<L3>"}
//! L3      {"id" (event id), "entityFqdn", "slug", "entityId" (order id), "eventTime",
//!          "entityEventSequence"?, one of createdEvent | updatedEvent | actionEvent}
//! ```
//!
//! Errors are split by what the HTTP handler answers: [`WebhookError::Unauthorized`] (401) when
//! the token is not Wix's (bad signature, wrong key, not RS256, expired) and
//! [`WebhookError::BadRequest`] (400) when the body is not a well-formed event. Shape checks on
//! the JWT itself (segments, base64, header JSON) run before the signature check so that a
//! plain JSON body gets a 400 that says what is wrong rather than a bare 401.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use prost_types::Timestamp;
use serde_json::Value;
use wixprint_shared::proto::order::Order;

use super::json::{MAX_ID_CHARS, at, clean, shown, text, timestamp, type_name};
use super::order::map_order;

/// Clock skew tolerated on `exp`, in seconds (a Raspberry Pi's clock can be off for a while
/// after boot).
const EXP_LEEWAY_SECS: f64 = 60.0;

/// Smallest RSA modulus accepted for the verification key. Wix app keys are 2048 bits.
const MIN_KEY_BITS: usize = 2048;

/// The Wix entity name of eCommerce orders (`L3.entityFqdn`).
const ORDER_ENTITY_FQDN: &str = "wix.ecom.v1.order";

/// The configured key is unusable. Raised at start-up, so a wrong key file stops the service
/// before it answers any webhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a PEM RSA public key: {reason}")]
pub struct KeyError {
    reason: String,
}

impl KeyError {
    fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

/// Why a webhook was refused. The message is returned to the caller in the HTTP body, so it
/// names what was wrong and never echoes more than a short piece of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Answer 401: the token does not come from Wix (signature, key, algorithm) or has expired.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Answer 400: the body is not a well-formed Wix event.
    #[error("bad request: {0}")]
    BadRequest(String),
}

fn unauthorized(reason: impl Into<String>) -> WebhookError {
    WebhookError::Unauthorized(reason.into())
}

fn bad(reason: impl Into<String>) -> WebhookError {
    WebhookError::BadRequest(reason.into())
}

/// What an event means for an order, from the L2 `eventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Created,
    Approved,
    Updated,
    Canceled,
    PaymentStatusUpdated,
    Fulfilled,
    /// Any other event type (recorded, never acted on).
    Other,
}

impl EventKind {
    pub fn from_event_type(event_type: &str) -> Self {
        match event_type {
            "wix.ecom.v1.order_created" => Self::Created,
            "wix.ecom.v1.order_approved" => Self::Approved,
            "wix.ecom.v1.order_updated" => Self::Updated,
            "wix.ecom.v1.order_canceled" => Self::Canceled,
            "wix.ecom.v1.order_payment_status_updated" => Self::PaymentStatusUpdated,
            "wix.ecom.v1.order_fulfilled" => Self::Fulfilled,
            _ => Self::Other,
        }
    }
}

/// A verified, unwrapped webhook.
#[derive(Debug, Clone)]
pub struct WebhookEvent {
    /// L3 `id`: unique per event, the key that makes redeliveries harmless. Never empty.
    pub event_id: String,
    /// L2 `eventType`, e.g. `wix.ecom.v1.order_created`. Never empty.
    pub event_type: String,
    /// L2 `instanceId`: which site (app instance) the event is about.
    pub instance_id: String,
    /// L3 `entityId` (the order id for order events); may be empty.
    pub entity_id: String,
    pub slug: String,
    /// L3 `entityEventSequence`: increases per entity, orders versions that arrive out of order.
    pub sequence: Option<i64>,
    pub event_time: Option<Timestamp>,
    /// The mapped order, for events that carry one. Always `Some` for the six order event kinds;
    /// its `entity_event_sequence` is `sequence` (0 when absent) and its `source` is left
    /// UNSPECIFIED for the caller to set.
    pub order: Option<Order>,
    /// The L3 JSON text as received (re-serialised when Wix sent an object instead of a string).
    pub payload: String,
}

impl WebhookEvent {
    pub fn kind(&self) -> EventKind {
        EventKind::from_event_type(&self.event_type)
    }
}

/// Verifies and unwraps webhooks. Build once at start-up: the key is parsed and checked here,
/// not per request.
pub struct WebhookVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier").field("algorithm", &Algorithm::RS256).finish_non_exhaustive()
    }
}

impl WebhookVerifier {
    /// Reads the app's public key as Wix shows it (`-----BEGIN PUBLIC KEY-----`, SPKI); a PKCS#1
    /// `RSA PUBLIC KEY` is accepted too. A private key or a certificate is refused with a
    /// message saying so, because both are easy to paste by mistake.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let text = std::str::from_utf8(pem).map_err(|_| KeyError::new("the key is not text (PEM is ASCII)"))?;
        let label = pem_label(text).ok_or_else(|| KeyError::new("no `-----BEGIN …-----` line found"))?;
        match label {
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
            l if l.contains("PRIVATE KEY") => {
                return Err(KeyError::new(format!(
                    "found a private key (`{l}`); configure the app's public key from the Wix dashboard"
                )));
            }
            l => return Err(KeyError::new(format!("found a PEM `{}` block, expected `PUBLIC KEY`", clean(l)))),
        }
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| match e.kind() {
            ErrorKind::InvalidKeyFormat => {
                KeyError::new("the PEM block does not hold an RSA key (other key type or damaged base64)")
            }
            _ => KeyError::new(e.to_string()),
        })?;
        // `from_rsa_pem` only unwraps the PEM; the RSA structure itself would first be parsed at
        // the first webhook. Reading the modulus now makes a broken key fail at start-up.
        let jwk = Jwk::from_decoding_key(&key, Some(Algorithm::RS256)).map_err(|e| KeyError::new(e.to_string()))?;
        let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
            return Err(KeyError::new("the key is not an RSA key"));
        };
        let bits = decode_base64url(&rsa.n).map(|n| bit_length(&n)).map_err(KeyError::new)?;
        if bits < MIN_KEY_BITS {
            return Err(KeyError::new(format!("the RSA key has {bits} bits, at least {MIN_KEY_BITS} are required")));
        }

        let mut validation = Validation::new(Algorithm::RS256);
        // Wix sends `iat` and `exp` but documents neither as required, and its own SDK checks
        // neither `aud` nor `iss` for webhooks. `exp` is honoured in `verify_at`, where the
        // error can say when the token expired.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Ok(Self { key, validation })
    }

    /// Verifies `body` (the raw request body) and unwraps it into a [`WebhookEvent`].
    ///
    /// Checked: RS256 signature with the configured key; `exp` when present (60 s leeway; a
    /// token without `exp` is accepted, as Wix's SDK does). Not checked: `iat`, `nbf`, `aud`,
    /// `iss` (Wix's SDK does not check them for webhooks either).
    ///
    /// For the six order event kinds the order must be present and map (see [`map_order`]);
    /// other event types are accepted with the order mapped only if possible.
    pub fn verify(&self, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.verify_at(body, now)
    }

    /// [`verify`](Self::verify) with the current time (Unix seconds) given, for tests.
    pub(super) fn verify_at(&self, body: &[u8], now: u64) -> Result<WebhookEvent, WebhookError> {
        let token = jwt_shape(body)?;
        let claims = self.verified_claims(token)?;
        if let Some(exp) = claims.get("exp").filter(|v| !v.is_null()) {
            let exp =
                exp.as_f64().ok_or_else(|| bad(format!("JWT claim `exp` is {}, not a number", type_name(exp))))?;
            if exp + EXP_LEEWAY_SECS < now as f64 {
                return Err(unauthorized(format!(
                    "token expired at {} (now {})",
                    unix_time(exp),
                    unix_time(now as f64)
                )));
            }
        }
        let (l2, _) = layer(claims.get("data"), "JWT claim `data`")?;
        let event_type = text(l2.get("eventType"));
        if event_type.is_empty() {
            return Err(bad("L2 has no `eventType`"));
        }
        let (l3, payload) = layer(l2.get("data"), "L2 `data`")?;
        let event_id = event_id(l3.get("id"))?;
        let sequence = sequence(l3.get("entityEventSequence"))?;
        let kind = EventKind::from_event_type(&event_type);
        let order = match (kind, order_json(&l3)?) {
            (EventKind::Other, found) => {
                // Unknown events are only recorded, so their order is mapped on a best-effort
                // basis (and only when the event says it is about an order).
                let about_orders = text(l3.get("entityFqdn")) == ORDER_ENTITY_FQDN;
                found.filter(|_| about_orders).and_then(|(json, _)| map_order(&json).ok())
            }
            (_, Some((json, path))) => Some(map_order(&json).map_err(|e| bad(format!("{path}: {e}")))?),
            (_, None) => {
                return Err(bad(format!(
                    "{event_type} event carries no order (expected `{}`)",
                    expected_order_path(kind)
                )));
            }
        };
        let order = order.map(|mut order| {
            order.entity_event_sequence = sequence.unwrap_or(0);
            order
        });
        Ok(WebhookEvent {
            event_id,
            event_type,
            instance_id: text(l2.get("instanceId")),
            entity_id: text(l3.get("entityId")),
            slug: text(l3.get("slug")),
            sequence,
            event_time: timestamp(l3.get("eventTime")),
            order,
            payload,
        })
    }

    /// Checks the signature (and the algorithm) and returns the claims object.
    fn verified_claims(&self, token: &str) -> Result<Value, WebhookError> {
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => unauthorized("signature does not verify with the configured public key"),
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => unauthorized("token is not signed with RS256"),
            ErrorKind::Base64(err) => bad(format!("body is not a JWT: a segment is not base64url: {err}")),
            ErrorKind::Json(err) => explain_json_error(token, err),
            ErrorKind::Utf8(_) => bad("JWT claims are not valid UTF-8"),
            ErrorKind::InvalidToken => bad("body is not a JWT"),
            _ => unauthorized(format!("token rejected: {e}")),
        })?;
        match data.claims {
            claims @ Value::Object(_) => Ok(claims),
            other => Err(bad(format!("JWT claims are {}, not a JSON object", type_name(&other)))),
        }
    }
}

/// Checks that `body` looks like a compact JWT whose header asks for RS256, and returns it as
/// text. Everything here is about form, so it is a 400, except an algorithm other than RS256:
/// that is a token we will not trust (401), including `none`.
fn jwt_shape(body: &[u8]) -> Result<&str, WebhookError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| bad(format!("body is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to())))?;
    // A trailing newline (added by a proxy or a hand-made curl request) is not part of the token.
    let token = text.trim();
    if token.is_empty() {
        return Err(bad("body is empty; expected a JWT"));
    }
    // Counted before splitting: a hostile body of dots must not become a vector of a million
    // slices.
    let count = token.split('.').count();
    if count != 3 {
        let hint = if token.starts_with('{') { " (the body looks like JSON; Wix sends a signed JWT)" } else { "" };
        return Err(bad(format!("body is not a JWT: expected 3 dot-separated segments, found {count}{hint}")));
    }
    let mut segments = token.splitn(3, '.');
    let (header, payload, signature) = match (segments.next(), segments.next(), segments.next()) {
        (Some(h), Some(p), Some(s)) => (h, p, s),
        _ => return Err(bad("body is not a JWT")),
    };
    let header = decode_base64url(header)
        .map_err(|e| bad(format!("body is not a JWT: the header segment is not base64url: {e}")))?;
    let header: Value = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("body is not a JWT: the header is not valid JSON: {e}")))?;
    let Some(alg) = header.get("alg") else {
        return Err(bad("body is not a JWT: the header has no `alg`"));
    };
    if alg.as_str() != Some("RS256") {
        return Err(unauthorized(format!("token algorithm is {}, only \"RS256\" is accepted", shown(alg))));
    }
    if payload.is_empty() {
        return Err(bad("body is not a JWT: the payload segment is empty"));
    }
    if signature.is_empty() {
        return Err(unauthorized("token has no signature"));
    }
    Ok(token)
}

/// jsonwebtoken reports a header it cannot read and claims that are not an object alike, and in
/// its own terms; this says which it was, in ours.
fn explain_json_error(token: &str, err: &serde_json::Error) -> WebhookError {
    let payload = token.split('.').nth(1).unwrap_or_default();
    match decode_base64url(payload).map(|bytes| serde_json::from_slice::<Value>(&bytes)) {
        Ok(Ok(claims)) if claims.is_object() => bad(format!("body is not a JWT: the header cannot be read: {err}")),
        Ok(Ok(claims)) => bad(format!("JWT claims are {}, not a JSON object", type_name(&claims))),
        Ok(Err(e)) => bad(format!("JWT claims are not valid JSON: {e}")),
        Err(e) => bad(format!("body is not a JWT: the payload segment is not base64url: {e}")),
    }
}

/// One inner layer: Wix sends it as a JSON string; an object is accepted too. Returns the
/// object and its JSON text.
fn layer(value: Option<&Value>, what: &str) -> Result<(Value, String), WebhookError> {
    let (parsed, text) = match value {
        None | Some(Value::Null) => return Err(bad(format!("{what} is missing"))),
        Some(Value::String(s)) => {
            let parsed: Value = serde_json::from_str(s).map_err(|e| bad(format!("{what} is not valid JSON: {e}")))?;
            (parsed, s.clone())
        }
        Some(v @ Value::Object(_)) => (v.clone(), v.to_string()),
        Some(other) => return Err(bad(format!("{what} is {}, expected a JSON string or object", type_name(other)))),
    };
    if !parsed.is_object() {
        return Err(bad(format!("{what} is {}, not a JSON object", type_name(&parsed))));
    }
    Ok((parsed, text))
}

/// The event id is the delivery dedupe key, so it is refused rather than cleaned: a changed id
/// could make two events one.
fn event_id(value: Option<&Value>) -> Result<String, WebhookError> {
    match value {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            if s.chars().count() > MAX_ID_CHARS || s.chars().any(char::is_control) {
                Err(bad(format!("event `id` {} is not a plausible event id", shown(&Value::from(s.as_str())))))
            } else {
                Ok(s.clone())
            }
        }
        Some(v @ (Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::Object(_))) => {
            Err(bad(format!("event `id` is {}, expected a string", type_name(v))))
        }
        _ => Err(bad("event has no `id`")),
    }
}

/// `entityEventSequence`: a string counter ("3"); a number is read too. Absent is fine; anything
/// that is not a non-negative integer is refused, because versions are ordered by it.
fn sequence(value: Option<&Value>) -> Result<Option<i64>, WebhookError> {
    let parsed = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        Some(_) => None,
    };
    match parsed {
        Some(n) if n >= 0 => Ok(Some(n)),
        _ => Err(bad(format!(
            "event `entityEventSequence` {} is not a non-negative integer",
            value.map(shown).unwrap_or_default()
        ))),
    }
}

/// Finds the order in L3 and where it was (for error messages). Object forms first; the
/// `*AsJson` string forms, which the SDK typings name, are parsed when the object is absent.
fn order_json(l3: &Value) -> Result<Option<(Value, &'static str)>, WebhookError> {
    const PLACES: [(&str, &str, &str); 3] = [
        ("createdEvent", "entity", "entityAsJson"),
        ("updatedEvent", "currentEntity", "currentEntityAsJson"),
        ("actionEvent", "body", "bodyAsJson"),
    ];
    for (event, object_key, json_key) in PLACES {
        let found = match (at(l3, &[event, object_key]), at(l3, &[event, json_key])) {
            (Some(v @ Value::Object(_)), _) => Some((v.clone(), place(event, object_key))),
            (_, Some(Value::String(s))) => {
                let parsed: Value = serde_json::from_str(s)
                    .map_err(|e| bad(format!("{} is not valid JSON: {e}", place(event, json_key))))?;
                Some((parsed, place(event, json_key)))
            }
            _ => None,
        };
        let Some((value, path)) = found else { continue };
        if event != "actionEvent" {
            return Ok(Some((value, path)));
        }
        // An action event's body wraps the order with details of the action.
        return Ok(match value.get("order") {
            Some(order) if !order.is_null() => Some((order.clone(), action_order_place(path))),
            _ => None,
        });
    }
    Ok(None)
}

fn place(event: &str, key: &str) -> &'static str {
    match (event, key) {
        ("createdEvent", "entity") => "createdEvent.entity",
        ("createdEvent", _) => "createdEvent.entityAsJson",
        ("updatedEvent", "currentEntity") => "updatedEvent.currentEntity",
        ("updatedEvent", _) => "updatedEvent.currentEntityAsJson",
        (_, "body") => "actionEvent.body",
        _ => "actionEvent.bodyAsJson",
    }
}

fn action_order_place(body_path: &str) -> &'static str {
    if body_path == "actionEvent.body" { "actionEvent.body.order" } else { "actionEvent.bodyAsJson.order" }
}

fn expected_order_path(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Created => "createdEvent.entity",
        EventKind::Updated => "updatedEvent.currentEntity",
        _ => "actionEvent.body.order",
    }
}

/// The label of the first PEM block (`PUBLIC KEY` in `-----BEGIN PUBLIC KEY-----`).
fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &text[start..];
    let end = rest.find("-----")?;
    Some(rest[..end].trim())
}

/// Unix seconds as RFC 3339 for messages; raw seconds when out of a sensible range.
fn unix_time(secs: f64) -> String {
    if (0.0..=253_402_300_799.0).contains(&secs) {
        Timestamp { seconds: secs as i64, nanos: 0 }.to_string()
    } else {
        format!("{secs} (Unix seconds)")
    }
}

/// Number of significant bits of a big-endian unsigned integer.
fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|b| *b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}

/// Base64url without padding (RFC 7515 §2), as JWT segments use. Hand-written because the crate
/// has no base64 dependency of its own; only the header and the key modulus go through it.
fn decode_base64url(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 4 == 1 {
        return Err(format!("invalid length {}", s.len()));
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for (i, c) in s.char_indices() {
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '-' => 62,
            '_' => 63,
            _ => return Err(format!("invalid character {c:?} at offset {i}")),
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_decodes_unpadded_input_and_names_bad_characters() {
        assert_eq!(decode_base64url("eyJhbGciOiJSUzI1NiJ9").unwrap(), br#"{"alg":"RS256"}"#);
        assert_eq!(decode_base64url("").unwrap(), b"");
        assert_eq!(decode_base64url("-_8").unwrap(), [0xfb, 0xff]);
        assert!(decode_base64url("abc=").unwrap_err().contains("'='"));
        assert!(decode_base64url("abcde").unwrap_err().contains("length"));
        assert!(decode_base64url("ab€d").is_err());
    }

    #[test]
    fn bit_length_ignores_leading_zeros() {
        assert_eq!(bit_length(&[0, 0x01, 0x00]), 9);
        assert_eq!(bit_length(&[0x80; 256]), 2048);
        assert_eq!(bit_length(&[0, 0]), 0);
    }

    #[test]
    fn event_kind_follows_the_event_type_exactly() {
        assert_eq!(EventKind::from_event_type("wix.ecom.v1.order_created"), EventKind::Created);
        assert_eq!(
            EventKind::from_event_type("wix.ecom.v1.order_payment_status_updated"),
            EventKind::PaymentStatusUpdated
        );
        assert_eq!(EventKind::from_event_type("wix.ecom.v1.order_fulfilled"), EventKind::Fulfilled);
        assert_eq!(EventKind::from_event_type("wix.restaurants.v3.order_canceled"), EventKind::Other);
        assert_eq!(EventKind::from_event_type("wix.ecom.v1.order_committed"), EventKind::Other);
    }

    #[test]
    fn sequence_reads_strings_and_numbers_and_refuses_garbage() {
        assert_eq!(sequence(Some(&Value::from("3"))), Ok(Some(3)));
        assert_eq!(sequence(Some(&Value::from(4))), Ok(Some(4)));
        assert_eq!(sequence(None), Ok(None));
        assert!(matches!(sequence(Some(&Value::from("x"))), Err(WebhookError::BadRequest(_))));
        assert!(matches!(sequence(Some(&Value::from(-1))), Err(WebhookError::BadRequest(_))));
    }
}
