//! End-to-end tests of the Wix edge: fixtures wrapped and signed the way Wix does it, then
//! verified and mapped. One RSA key pair per test process (generation is the slow part).

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use prost_types::Timestamp;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};
use wixprint_shared::proto::order::{FulfillmentType, Modifier, OrderSource, OrderStatus, PaymentStatus};

use super::*;

const CREATED_PICKUP: &str = include_str!("../../../../tests/fixtures/wix/order_created.pickup.json");
const APPROVED_DELIVERY: &str = include_str!("../../../../tests/fixtures/wix/order_approved.delivery.json");
const UPDATED_PICKUP: &str = include_str!("../../../../tests/fixtures/wix/order_updated.pickup.json");
const CANCELED_PICKUP: &str = include_str!("../../../../tests/fixtures/wix/order_canceled.pickup.json");
const PAYMENT_PICKUP: &str = include_str!("../../../../tests/fixtures/wix/order_payment_status_updated.pickup.json");
const SEARCH_RESPONSE: &str = include_str!("../../../../tests/fixtures/wix/search_orders.response.json");

const RESTAURANTS_APP_ID: &str = "9a5d83fd-8570-482e-81ab-cfa88942ee60";
const INSTANCE_ID: &str = "6a1e0000-0000-4000-8000-00000000beef";

struct Keys {
    public_pem: String,
    private_pem: String,
    encoding: EncodingKey,
}

impl Keys {
    fn generate() -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key generation");
        let private_pem = private.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM").to_string();
        let public_pem = private.to_public_key().to_public_key_pem(LineEnding::LF).expect("SPKI PEM");
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("encoding key");
        Self { public_pem, private_pem, encoding }
    }

    fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &self.encoding).expect("signing")
    }
}

/// The key pair the verifier trusts.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(Keys::generate)
}

/// A second key pair: what a forger would sign with.
fn other_keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(Keys::generate)
}

fn verifier() -> &'static WebhookVerifier {
    static VERIFIER: OnceLock<WebhookVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| WebhookVerifier::from_pem(keys().public_pem.as_bytes()).expect("test public key"))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

/// L2 around an L3 given as JSON text, as Wix builds it.
fn l2(event_type: &str, l3_text: &str) -> Value {
    json!({
        "eventType": event_type,
        "instanceId": INSTANCE_ID,
        "identity": "{\"identityType\":\"ANONYMOUS_VISITOR\",\"anonymousVisitorId\":\"764e1c51\"}",
        "data": l3_text,
    })
}

/// Claims around an L2, valid for an hour.
fn claims(l2: &Value) -> Value {
    json!({ "data": l2.to_string(), "iat": now(), "exp": now() + 3600 })
}

/// A fixture (L3 text) wrapped and signed like a real delivery; the event type follows its slug.
fn sign_l3_text(l3_text: &str) -> String {
    let slug = serde_json::from_str::<Value>(l3_text).expect("fixture is JSON")["slug"]
        .as_str()
        .unwrap_or("created")
        .to_owned();
    keys().sign(&claims(&l2(&format!("wix.ecom.v1.order_{slug}"), l3_text)))
}

fn sign_l3(l3: &Value) -> String {
    sign_l3_text(&l3.to_string())
}

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

/// The order object inside a fixture, for editing.
fn order_of(event: &mut Value) -> &mut Value {
    if event.get("createdEvent").is_some() {
        &mut event["createdEvent"]["entity"]
    } else if event.get("updatedEvent").is_some() {
        &mut event["updatedEvent"]["currentEntity"]
    } else {
        &mut event["actionEvent"]["body"]["order"]
    }
}

fn verify(token: &str) -> Result<WebhookEvent, WebhookError> {
    verifier().verify(token.as_bytes())
}

fn bad_request(result: Result<WebhookEvent, WebhookError>) -> String {
    match result {
        Err(WebhookError::BadRequest(reason)) => reason,
        other => panic!("expected BadRequest, got {other:?}"),
    }
}

fn unauthorized(result: Result<WebhookEvent, WebhookError>) -> String {
    match result {
        Err(WebhookError::Unauthorized(reason)) => reason,
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

fn ts(s: &str) -> Option<Timestamp> {
    Some(Timestamp::from_str(s).expect("test timestamp"))
}

fn modifier(group: &str, name: &str, quantity: u32, price: &str) -> Modifier {
    Modifier { group: group.into(), name: name.into(), quantity, price: price.into() }
}

// ---- fixtures ----------------------------------------------------------------------------

#[test]
fn every_fixture_verifies_and_maps_with_its_sequence() {
    let cases = [
        (CREATED_PICKUP, EventKind::Created, 1, OrderStatus::Approved, PaymentStatus::NotPaid),
        (APPROVED_DELIVERY, EventKind::Approved, 2, OrderStatus::Approved, PaymentStatus::Paid),
        (UPDATED_PICKUP, EventKind::Updated, 3, OrderStatus::Approved, PaymentStatus::NotPaid),
        (PAYMENT_PICKUP, EventKind::PaymentStatusUpdated, 4, OrderStatus::Approved, PaymentStatus::Paid),
        (CANCELED_PICKUP, EventKind::Canceled, 5, OrderStatus::Canceled, PaymentStatus::NotPaid),
    ];
    for (text, kind, seq, status, payment) in cases {
        let l3 = fixture(text);
        let event = verify(&sign_l3_text(text)).unwrap_or_else(|e| panic!("{}: {e}", l3["slug"]));
        assert_eq!(event.kind(), kind);
        assert_eq!(event.event_id, l3["id"].as_str().unwrap());
        assert_eq!(event.entity_id, l3["entityId"].as_str().unwrap());
        assert_eq!(event.slug, l3["slug"].as_str().unwrap());
        assert_eq!(event.instance_id, INSTANCE_ID);
        assert_eq!(event.sequence, Some(seq));
        assert_eq!(event.payload, text, "payload is the L3 text as received");
        assert_eq!(event.event_time, ts(l3["eventTime"].as_str().unwrap()));
        let order = event.order.expect("order events carry the order");
        assert_eq!(order.id, event.entity_id);
        assert_eq!(order.entity_event_sequence, seq);
        assert_eq!(order.status(), status, "{kind:?}");
        assert_eq!(order.payment_status(), payment, "{kind:?}");
        assert_eq!(order.source(), OrderSource::Unspecified, "the caller sets the source");
        assert_eq!(order.catalog_app_ids, [RESTAURANTS_APP_ID]);
    }
}

#[test]
fn created_pickup_fixture_maps_to_the_domain_order() {
    let event = verify(&sign_l3_text(CREATED_PICKUP)).unwrap();
    assert_eq!(event.event_type, "wix.ecom.v1.order_created");
    let order = event.order.unwrap();
    assert_eq!(order.id, "6d6062d8-0000-4000-8000-0000000000a1");
    assert_eq!(order.number, "10033");
    assert_eq!(order.status(), OrderStatus::Approved);
    assert_eq!(order.payment_status(), PaymentStatus::NotPaid);
    assert_eq!((order.status_raw.as_str(), order.payment_status_raw.as_str()), ("", ""));
    assert_eq!(order.created_at, ts("2025-09-24T17:53:25.532Z"));
    assert_eq!(order.updated_at, ts("2025-09-24T17:53:25.532Z"));
    assert_eq!(order.buyer_note, "Bitte ohne Koriander");
    assert_eq!((order.buyer_language.as_str(), order.site_language.as_str()), ("de", "de"));
    assert_eq!(order.entity_event_sequence, 1);

    assert_eq!(order.line_items.len(), 2);
    let nam_tok = &order.line_items[0];
    assert_eq!(nam_tok.id, "00000000-0000-0000-0000-000000000001");
    assert_eq!(nam_tok.name, "Nam Tok");
    assert_eq!(nam_tok.quantity, 3);
    assert_eq!(nam_tok.unit_price, "26.00");
    assert_eq!(nam_tok.line_total, "78.00");
    assert_eq!(nam_tok.modifiers, [modifier("", "Ente", 1, "")], "unnamed description line, once");
    let som_tam = &order.line_items[1];
    assert_eq!((som_tam.name.as_str(), som_tam.quantity, som_tam.line_total.as_str()), ("Som Tam", 3, "54.00"));
    assert!(som_tam.modifiers.is_empty());

    let prices = order.price_summary.unwrap();
    assert_eq!(prices.currency, "CHF");
    assert_eq!(prices.subtotal, "132.00");
    assert_eq!(prices.total, "132.00");
    assert_eq!(prices.discount, "0.00");
    assert_eq!(prices.shipping, "0.00");
    assert_eq!(prices.tax, "0.00");
    assert_eq!(prices.fees, "");
    assert_eq!(prices.balance_due, "132.00");
    assert_eq!(prices.paid, "0");

    let f = order.fulfillment.unwrap();
    assert_eq!(f.r#type(), FulfillmentType::Pickup);
    assert_eq!(f.title, "Abholung");
    assert!(f.asap, "code PICKUP|ASAP");
    assert_eq!(f.promised_from, ts("2025-09-24T18:24:00Z"));
    assert_eq!(f.promised_to, ts("2025-09-24T18:24:00Z"));
    assert_eq!(f.promised_text, "24.09.25 20:24");
    assert_eq!(f.instructions, "");
    let address = f.address.unwrap();
    assert_eq!(address.line1, "Musterstrasse 22", "the restaurant's address");
    assert_eq!((address.postal_code.as_str(), address.city.as_str()), ("9470", "Buchs"));
    assert_eq!((address.subdivision.as_str(), address.country.as_str()), ("SG", "CH"));
    let contact = f.contact.unwrap();
    assert_eq!((contact.first_name.as_str(), contact.last_name.as_str()), ("Max", "Muster"));
    assert_eq!(contact.phone, "+41790000000");
    assert_eq!(contact.email, "guest@example.com");
}

#[test]
fn approved_delivery_fixture_maps_address_groups_and_discount() {
    let event = verify(&sign_l3_text(APPROVED_DELIVERY)).unwrap();
    assert_eq!(event.kind(), EventKind::Approved);
    let order = event.order.unwrap();
    assert_eq!(order.number, "10034");
    assert_eq!(order.payment_status(), PaymentStatus::Paid);
    assert_eq!(order.buyer_note, "Allergie: Erdnüsse! Bitte klingeln bei Jäger, 3. Stock");

    let f = order.fulfillment.unwrap();
    assert_eq!(f.r#type(), FulfillmentType::Delivery);
    assert_eq!(f.title, "Lieferung");
    assert_eq!(f.instructions, "Hintereingang benutzen");
    assert_eq!(f.promised_from, ts("2025-09-24T18:40:00Z"));
    assert_eq!(f.promised_to, ts("2025-09-24T18:50:00Z"));
    let address = f.address.unwrap();
    assert_eq!(address.line1, "Sendlinger Straße 7");
    assert_eq!(address.line2, "3. Stock, Hinterhaus");
    assert_eq!(
        (address.postal_code.as_str(), address.city.as_str(), address.country.as_str()),
        ("80331", "München", "DE")
    );
    let contact = f.contact.unwrap();
    assert_eq!((contact.first_name.as_str(), contact.last_name.as_str()), ("Jürgen", "Jäger"));
    assert_eq!(contact.email, "kunde@example.org");

    let spaetzle = &order.line_items[0];
    assert_eq!(spaetzle.name, "Käsespätzle mit Röstzwiebeln und extra großer Portion Bergkäse");
    assert_eq!((spaetzle.quantity, spaetzle.unit_price.as_str(), spaetzle.line_total.as_str()), (2, "12.90", "25.80"));
    assert_eq!(
        spaetzle.modifiers,
        [
            modifier("Extras", "Speck", 1, "1.50"),
            modifier("Extras", "Spiegelei", 2, "1.00"),
            // A description line that is not a repeat of a group still reaches the kitchen.
            modifier("Größe", "Groß", 1, ""),
        ]
    );
    assert_eq!(order.line_items[2].modifiers, [modifier("Hinweis", "kein Salz", 1, "")]);

    let prices = order.price_summary.unwrap();
    assert_eq!(prices.currency, "EUR");
    assert_eq!(
        [&prices.subtotal, &prices.discount, &prices.shipping, &prices.tax, &prices.total],
        ["33.70", "2.00", "3.50", "5.94", "35.20"]
    );
    assert_eq!((prices.balance_due.as_str(), prices.paid.as_str()), ("0.00", "35.20"));
}

#[test]
fn search_response_orders_map_too() {
    let page = fixture(SEARCH_RESPONSE);
    let orders = page["orders"].as_array().expect("orders");
    assert!(!orders.is_empty());
    for json in orders {
        let order = map_order(json).unwrap();
        assert_eq!(order.entity_event_sequence, 0, "no event, no sequence");
        assert!(!order.line_items.is_empty());
    }
}

// ---- envelope variants --------------------------------------------------------------------

#[test]
fn as_json_string_forms_of_the_inner_entity_are_accepted() {
    let mut created = fixture(CREATED_PICKUP);
    let entity = created["createdEvent"]["entity"].take();
    created["createdEvent"] = json!({ "entityAsJson": entity.to_string() });

    let mut updated = fixture(UPDATED_PICKUP);
    let entity = updated["updatedEvent"]["currentEntity"].take();
    updated["updatedEvent"] = json!({ "currentEntityAsJson": entity.to_string() });

    let mut canceled = fixture(CANCELED_PICKUP);
    let body = canceled["actionEvent"]["body"].take();
    canceled["actionEvent"] = json!({ "bodyAsJson": body.to_string() });

    for (l3, number, seq) in [(created, "10033", 1), (updated, "10033", 3), (canceled, "10033", 5)] {
        let event = verify(&sign_l3(&l3)).unwrap();
        let order = event.order.unwrap_or_else(|| panic!("{} carries an order", event.slug));
        assert_eq!(order.number, number);
        assert_eq!(order.entity_event_sequence, seq);
    }
}

#[test]
fn inner_layers_sent_as_objects_instead_of_strings_are_accepted() {
    let l3 = fixture(CREATED_PICKUP);
    let l2 = json!({ "eventType": "wix.ecom.v1.order_created", "instanceId": INSTANCE_ID, "data": l3 });
    let token = keys().sign(&json!({ "data": l2, "iat": now(), "exp": now() + 60 }));
    let event = verify(&token).unwrap();
    assert_eq!(event.order.unwrap().number, "10033");
    assert_eq!(serde_json::from_str::<Value>(&event.payload).unwrap(), l3, "payload is the L3 JSON");
}

#[test]
fn surrounding_whitespace_is_not_part_of_the_token() {
    let token = format!("{}\r\n", sign_l3_text(CREATED_PICKUP));
    assert!(verify(&token).is_ok());
}

#[test]
fn unknown_event_type_parses_without_an_order() {
    let l3 = json!({
        "id": "9f0c6a52-0000-4000-8000-0000000000f0",
        "entityFqdn": "wix.ecom.v1.order",
        "slug": "imported_order_deleted",
        "entityId": "6d6062d8-0000-4000-8000-0000000000a1",
        "eventTime": "2025-09-24T19:00:00Z",
        "actionEvent": { "body": {} }
    });
    let token = keys().sign(&claims(&l2("wix.ecom.v1.order_imported_order_deleted", &l3.to_string())));
    let event = verify(&token).unwrap();
    assert_eq!(event.kind(), EventKind::Other);
    assert_eq!(event.sequence, None);
    assert!(event.order.is_none());
}

#[test]
fn unknown_event_type_about_another_entity_is_not_mapped_as_an_order() {
    let l3 =
        json!({ "id": "e-1", "entityFqdn": "wix.stores.v1.product", "createdEvent": { "entity": { "id": "p-1" } } });
    let token = keys().sign(&claims(&l2("wix.stores.v1.product_created", &l3.to_string())));
    let event = verify(&token).unwrap();
    assert!(event.order.is_none());
}

#[test]
fn token_without_exp_is_accepted() {
    let l2 = l2("wix.ecom.v1.order_created", CREATED_PICKUP);
    let token = keys().sign(&json!({ "data": l2.to_string() }));
    assert!(verify(&token).is_ok());
}

#[test]
fn aud_and_iss_are_not_checked() {
    let l2 = l2("wix.ecom.v1.order_created", CREATED_PICKUP);
    let token = keys().sign(&json!({ "data": l2.to_string(), "aud": "someone-else", "iss": "not-wix" }));
    assert!(verify(&token).is_ok());
}

// ---- refusals: 401 --------------------------------------------------------------------------

#[test]
fn forged_signature_is_unauthorized() {
    let token = sign_l3_text(CREATED_PICKUP);
    let sig_start = token.rfind('.').unwrap() + 1;
    let i = sig_start + (token.len() - sig_start) / 2;
    let flipped = if &token[i..=i] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &token[..i], &token[i + 1..]);
    let reason = unauthorized(verify(&forged));
    assert_eq!(reason, "signature does not verify with the configured public key");
}

#[test]
fn payload_changed_after_signing_is_unauthorized() {
    let token = sign_l3_text(CREATED_PICKUP);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    // Swap in the payload of another (equally well-formed) token: only the signature can tell.
    let other = sign_l3_text(APPROVED_DELIVERY);
    parts[1] = other.split('.').nth(1).unwrap().to_owned();
    unauthorized(verify(&parts.join(".")));
}

#[test]
fn token_signed_by_another_key_is_unauthorized() {
    let l2 = l2("wix.ecom.v1.order_created", CREATED_PICKUP);
    let token = other_keys().sign(&claims(&l2));
    let reason = unauthorized(verify(&token));
    assert!(reason.contains("signature does not verify"), "{reason}");
}

#[test]
fn expired_token_is_unauthorized_and_says_when_it_expired() {
    let l2 = l2("wix.ecom.v1.order_created", CREATED_PICKUP);
    let token = keys().sign(&json!({ "data": l2.to_string(), "iat": 1_758_736_000, "exp": 1_758_736_406 }));
    let reason = unauthorized(verify(&token));
    assert!(reason.starts_with("token expired at 2025-09-24T17:53:26Z"), "{reason}");
}

#[test]
fn exp_within_the_clock_skew_leeway_is_accepted() {
    let l2 = l2("wix.ecom.v1.order_created", CREATED_PICKUP);
    let token = keys().sign(&json!({ "data": l2.to_string(), "exp": 1_000_000 }));
    assert!(verifier().verify_at(token.as_bytes(), 1_000_030).is_ok());
    unauthorized(verifier().verify_at(token.as_bytes(), 1_000_061));
}

#[test]
fn other_algorithms_are_unauthorized() {
    let l2 = l2("wix.ecom.v1.order_created", CREATED_PICKUP);
    // The classic confusion attack: HMAC keyed with the public key the verifier trusts.
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&l2),
        &EncodingKey::from_secret(keys().public_pem.as_bytes()),
    )
    .unwrap();
    let reason = unauthorized(verify(&hs256));
    assert!(reason.contains("\"HS256\""), "{reason}");

    let rs256 = sign_l3_text(CREATED_PICKUP);
    let payload = rs256.split('.').nth(1).unwrap();
    // {"alg":"none"} with an empty signature.
    let none = format!("eyJhbGciOiJub25lIn0.{payload}.");
    unauthorized(verify(&none));
}

#[test]
fn empty_signature_is_unauthorized() {
    let token = sign_l3_text(CREATED_PICKUP);
    let unsigned = &token[..=token.rfind('.').unwrap()];
    let reason = unauthorized(verify(unsigned));
    assert_eq!(reason, "token has no signature");
}

// ---- refusals: 400 --------------------------------------------------------------------------

#[test]
fn plain_json_body_is_a_bad_request() {
    let reason = bad_request(verify(r#"{"data": {"orderId": "42"}}"#));
    assert_eq!(
        reason,
        "body is not a JWT: expected 3 dot-separated segments, found 1 (the body looks like JSON; Wix sends a signed JWT)"
    );
    let reason = bad_request(verify(CREATED_PICKUP));
    assert!(reason.starts_with("body is not a JWT: expected 3 dot-separated segments"), "{reason}");
    // JSON that happens to contain two dots is still not a JWT.
    let reason = bad_request(verify(r#"{"note": "a.b.c"}"#));
    assert!(reason.contains("header segment is not base64url"), "{reason}");
}

#[test]
fn truncated_token_is_a_bad_request() {
    // Cut in the middle of the payload: the signature segment is gone, so this is malformed
    // (400), not a forgery (401).
    let token = sign_l3_text(CREATED_PICKUP);
    let payload_start = token.find('.').unwrap() + 1;
    let payload_end = token.rfind('.').unwrap();
    let cut = &token[..payload_start + (payload_end - payload_start) / 2];
    let reason = bad_request(verify(cut));
    assert_eq!(reason, "body is not a JWT: expected 3 dot-separated segments, found 2");
}

#[test]
fn invalid_utf8_and_empty_bodies_are_bad_requests() {
    let reason = bad_request(verifier().verify(b"eyJ\xff\xfe.abc.def"));
    assert!(reason.starts_with("body is not valid UTF-8"), "{reason}");
    assert_eq!(bad_request(verifier().verify(b"")), "body is empty; expected a JWT");
    assert_eq!(bad_request(verifier().verify(b" \n")), "body is empty; expected a JWT");
}

#[test]
fn bad_header_is_a_bad_request() {
    let reason = bad_request(verify("!!!.abc.def"));
    assert!(reason.contains("header segment is not base64url"), "{reason}");
    // "bm90IGpzb24" is base64url for "not json".
    let reason = bad_request(verify("bm90IGpzb24.abc.def"));
    assert!(reason.contains("header is not valid JSON"), "{reason}");
    // "e30" is base64url for "{}".
    let reason = bad_request(verify("e30.abc.def"));
    assert!(reason.contains("no `alg`"), "{reason}");
}

#[test]
fn bad_base64_in_the_signature_is_a_bad_request() {
    let token = sign_l3_text(CREATED_PICKUP);
    let reason = bad_request(verify(&format!("{token}*")));
    assert!(reason.contains("not base64url"), "{reason}");
}

#[test]
fn missing_or_malformed_layers_are_bad_requests() {
    let no_data = keys().sign(&json!({ "iat": now() }));
    assert_eq!(bad_request(verify(&no_data)), "JWT claim `data` is missing");

    let l2_not_json = keys().sign(&json!({ "data": "{not json" }));
    assert!(bad_request(verify(&l2_not_json)).starts_with("JWT claim `data` is not valid JSON: "));

    let l3_not_json = keys().sign(&claims(&l2("wix.ecom.v1.order_created", "{\"id\": ")));
    assert!(bad_request(verify(&l3_not_json)).starts_with("L2 `data` is not valid JSON: "));

    let l3_array = keys().sign(&claims(&l2("wix.ecom.v1.order_created", "[1, 2]")));
    assert_eq!(bad_request(verify(&l3_array)), "L2 `data` is an array, not a JSON object");

    let no_event_type = keys().sign(&json!({ "data": json!({ "data": CREATED_PICKUP }).to_string() }));
    assert_eq!(bad_request(verify(&no_event_type)), "L2 has no `eventType`");

    let claims_not_object = keys().sign(&json!("just a string"));
    let reason = bad_request(verify(&claims_not_object));
    assert_eq!(reason, "JWT claims are a string, not a JSON object");

    // A header jsonwebtoken cannot read (a number where a string belongs) is named as such.
    let token = keys().sign(&claims(&l2("wix.ecom.v1.order_created", CREATED_PICKUP)));
    let (_, rest) = token.split_once('.').unwrap();
    // {"alg":"RS256","kid":5}
    let odd_header = format!("eyJhbGciOiJSUzI1NiIsImtpZCI6NX0.{rest}");
    let reason = bad_request(verify(&odd_header));
    assert!(reason.starts_with("body is not a JWT: the header cannot be read: "), "{reason}");
}

#[test]
fn missing_event_id_is_a_bad_request() {
    let mut l3 = fixture(CREATED_PICKUP);
    l3.as_object_mut().unwrap().remove("id");
    assert_eq!(bad_request(verify(&sign_l3(&l3))), "event has no `id`");
    l3["id"] = json!("   ");
    assert_eq!(bad_request(verify(&sign_l3(&l3))), "event has no `id`");
    l3["id"] = json!(42);
    assert_eq!(bad_request(verify(&sign_l3(&l3))), "event `id` is a number, expected a string");
    l3["id"] = json!("a\u{0}b");
    assert!(bad_request(verify(&sign_l3(&l3))).contains("not a plausible event id"));
}

#[test]
fn order_without_id_is_a_bad_request() {
    let mut l3 = fixture(CREATED_PICKUP);
    order_of(&mut l3).as_object_mut().unwrap().remove("id");
    assert_eq!(bad_request(verify(&sign_l3(&l3))), "createdEvent.entity: order has no `id`");

    let mut l3 = fixture(CANCELED_PICKUP);
    order_of(&mut l3)["id"] = json!("");
    assert_eq!(bad_request(verify(&sign_l3(&l3))), "actionEvent.body.order: order has no `id`");
}

#[test]
fn order_event_without_an_order_is_a_bad_request() {
    let mut l3 = fixture(APPROVED_DELIVERY);
    l3["actionEvent"]["body"].as_object_mut().unwrap().remove("order");
    let reason = bad_request(verify(&sign_l3(&l3)));
    assert_eq!(reason, "wix.ecom.v1.order_approved event carries no order (expected `actionEvent.body.order`)");
}

#[test]
fn malformed_entity_as_json_is_a_bad_request() {
    let mut l3 = fixture(CREATED_PICKUP);
    l3["createdEvent"] = json!({ "entityAsJson": "{\"id\":" });
    assert!(bad_request(verify(&sign_l3(&l3))).starts_with("createdEvent.entityAsJson is not valid JSON"));
}

#[test]
fn negative_quantity_is_a_bad_request_naming_the_field() {
    let mut l3 = fixture(CREATED_PICKUP);
    order_of(&mut l3)["lineItems"][1]["quantity"] = json!(-2);
    let reason = bad_request(verify(&sign_l3(&l3)));
    assert!(reason.starts_with("createdEvent.entity: lineItems[1].quantity: -2 is not a valid quantity"), "{reason}");
}

#[test]
fn implausible_sequence_is_a_bad_request() {
    let mut l3 = fixture(UPDATED_PICKUP);
    l3["entityEventSequence"] = json!("three");
    let reason = bad_request(verify(&sign_l3(&l3)));
    assert_eq!(reason, "event `entityEventSequence` \"three\" is not a non-negative integer");
}

#[test]
fn absent_sequence_is_none_and_zero_on_the_order() {
    let mut l3 = fixture(UPDATED_PICKUP);
    l3.as_object_mut().unwrap().remove("entityEventSequence");
    let event = verify(&sign_l3(&l3)).unwrap();
    assert_eq!(event.sequence, None);
    assert_eq!(event.order.unwrap().entity_event_sequence, 0);
}

// ---- map_order --------------------------------------------------------------------------

fn created_order() -> Value {
    fixture(CREATED_PICKUP)["createdEvent"]["entity"].take()
}

#[test]
fn unknown_status_strings_are_tolerated_and_kept_raw() {
    let mut json = created_order();
    json["status"] = json!("ON_HOLD");
    json["paymentStatus"] = json!("AUTHORIZED_ONLY");
    let order = map_order(&json).unwrap();
    assert_eq!(order.status(), OrderStatus::Unspecified);
    assert_eq!(order.status_raw, "ON_HOLD");
    assert_eq!(order.payment_status(), PaymentStatus::Unspecified);
    assert_eq!(order.payment_status_raw, "AUTHORIZED_ONLY");

    json["paymentStatus"] = json!("UNSPECIFIED");
    let order = map_order(&json).unwrap();
    assert_eq!((order.payment_status(), order.payment_status_raw.as_str()), (PaymentStatus::Unspecified, ""));
}

#[test]
fn quantities_are_read_from_numbers_and_strings_and_bounded() {
    let mut json = created_order();
    for (value, expected) in [(json!("4"), 4), (json!(2.0), 2), (json!(10_000), 10_000)] {
        json["lineItems"][0]["quantity"] = value.clone();
        assert_eq!(map_order(&json).unwrap().line_items[0].quantity, expected, "{value}");
    }
    // Zero or missing ("unknown") is read, then refused: wix-print cannot print it, so Wix is
    // told (400) instead of an order being acknowledged that never prints.
    for value in [json!(0), json!(null)] {
        json["lineItems"][0]["quantity"] = value.clone();
        let err = map_order(&json).unwrap_err();
        assert!(
            matches!(&err, MapError::Unprintable(i) if i.field == "order.line_items[0].quantity"),
            "{value}: {err}"
        );
    }
    for value in
        [json!(-1), json!("-2"), json!(10_001), json!(1.5), json!("drei"), json!(true), json!(1e300), json!([])]
    {
        json["lineItems"][0]["quantity"] = value.clone();
        let err = map_order(&json).unwrap_err();
        assert!(
            matches!(&err, MapError::InvalidQuantity { field, .. } if field == "lineItems[0].quantity"),
            "{value}: {err}"
        );
    }
    json["lineItems"][0]["quantity"] = json!(-2);
    assert_eq!(
        map_order(&json).unwrap_err().to_string(),
        "lineItems[0].quantity: -2 is not a valid quantity (expected a whole number from 0 to 10000)"
    );
}

#[test]
fn too_many_line_items_are_refused() {
    let mut json = created_order();
    let item = json["lineItems"][1].clone();
    json["lineItems"] = Value::Array(vec![item; 1001]);
    assert_eq!(map_order(&json).unwrap_err().to_string(), "lineItems: 1001 entries are more than the 1000 allowed");
    json["lineItems"].as_array_mut().unwrap().pop();
    assert_eq!(map_order(&json).unwrap().line_items.len(), 1000);
}

#[test]
fn modifier_quantities_are_checked_too() {
    let mut json = fixture(APPROVED_DELIVERY)["actionEvent"]["body"]["order"].take();
    json["lineItems"][0]["modifierGroups"][0]["modifiers"][1]["quantity"] = json!(-1);
    let err = map_order(&json).unwrap_err();
    assert!(err.to_string().starts_with("lineItems[0].modifierGroups[0].modifiers[1].quantity: -1"), "{err}");
}

#[test]
fn description_lines_of_every_shape_become_modifiers() {
    let mut json = created_order();
    json["lineItems"][0]["descriptionLines"] = json!([
        { "name": { "original": "Farbe", "translated": "Farbe" }, "colorInfo": { "original": "Rot", "code": "#f00" } },
        { "name": { "original": "Schärfe" }, "plainTextValue": { "original": "scharf" } },
        { "name": { "original": "Leer" }, "plainText": { "original": "", "translated": "" } },
        { "plainText": { "original": "Extra Reis" } },
        "not an object",
        null
    ]);
    let order = map_order(&json).unwrap();
    assert_eq!(
        order.line_items[0].modifiers,
        [modifier("Farbe", "Rot", 1, ""), modifier("Schärfe", "scharf", 1, ""), modifier("", "Extra Reis", 1, "")]
    );
}

#[test]
fn description_lines_repeating_modifier_groups_are_not_printed_twice() {
    let mut json = fixture(APPROVED_DELIVERY)["actionEvent"]["body"]["order"].take();
    json["lineItems"][0]["descriptionLines"] = json!([
        { "name": { "original": "Extras" }, "plainText": { "original": "Speck, 2 x Spiegelei" } },
        { "name": { "original": "" }, "plainText": { "original": "Speck" } },
        { "name": { "original": "Größe" }, "plainText": { "original": "Groß" } }
    ]);
    let names: Vec<String> = map_order(&json).unwrap().line_items[0].modifiers.iter().map(|m| m.name.clone()).collect();
    assert_eq!(names, ["Speck", "Spiegelei", "Groß"]);
}

#[test]
fn delivery_address_falls_back_to_address_line1_and_street_address() {
    let mut json = fixture(APPROVED_DELIVERY)["actionEvent"]["body"]["order"].take();
    let address = &mut json["shippingInfo"]["logistics"]["shippingDestination"]["address"];
    address.as_object_mut().unwrap().remove("addressLine");
    address["addressLine1"] = json!("Marienplatz 1");
    let order = map_order(&json).unwrap();
    assert_eq!(order.fulfillment.unwrap().address.unwrap().line1, "Marienplatz 1");

    let address = &mut json["shippingInfo"]["logistics"]["shippingDestination"]["address"];
    address.as_object_mut().unwrap().remove("addressLine1");
    address["streetAddress"] = json!({ "name": "Kaufingerstraße", "number": "12a" });
    let order = map_order(&json).unwrap();
    assert_eq!(order.fulfillment.unwrap().address.unwrap().line1, "Kaufingerstraße 12a");
}

#[test]
fn contact_comes_from_recipient_then_billing_and_email_from_buyer() {
    let mut json = created_order();
    json["recipientInfo"]["contactDetails"] = json!({});
    json["billingInfo"]["contactDetails"] =
        json!({ "firstName": "Erika", "phone": "+41 79 111 11 11", "company": "ACME" });
    let contact = map_order(&json).unwrap().fulfillment.unwrap().contact.unwrap();
    assert_eq!((contact.first_name.as_str(), contact.last_name.as_str()), ("Erika", ""));
    assert_eq!((contact.phone.as_str(), contact.company.as_str()), ("+41 79 111 11 11", "ACME"));
    assert_eq!(contact.email, "guest@example.com");
}

#[test]
fn balance_due_falls_back_to_the_total_for_unpaid_orders() {
    let mut json = created_order();
    json.as_object_mut().unwrap().remove("balanceSummary");
    let prices = map_order(&json).unwrap().price_summary.unwrap();
    assert_eq!((prices.balance_due.as_str(), prices.paid.as_str()), ("132.00", ""));

    json["paymentStatus"] = json!("PAID");
    assert_eq!(map_order(&json).unwrap().price_summary.unwrap().balance_due, "");
}

#[test]
fn line_total_falls_back_to_total_price_after_tax() {
    let mut json = created_order();
    json["lineItems"][0].as_object_mut().unwrap().remove("lineItemPrice");
    assert_eq!(map_order(&json).unwrap().line_items[0].line_total, "78.00");
}

#[test]
fn strings_are_stripped_of_control_characters_and_cut_to_the_limit() {
    let mut json = created_order();
    json["buyerNote"] = json!("ohne\u{0} Koriander\u{1B}d0\nbitte");
    json["lineItems"][0]["productName"] = json!({ "original": "x".repeat(5000) });
    json["number"] = json!(10033);
    let order = map_order(&json).unwrap();
    assert_eq!(order.buyer_note, "ohne Korianderd0 bitte");
    assert_eq!(order.line_items[0].name.chars().count(), MAX_TEXT_CHARS);
    assert_eq!(order.number, "10033", "a numeric number is kept");
}

#[test]
fn minimal_order_needs_only_an_id_and_one_line_item() {
    let order = map_order(&json!({ "id": "o-1", "lineItems": [{ "quantity": 1 }] })).unwrap();
    assert_eq!(order.id, "o-1");
    assert_eq!(order.line_items.len(), 1);
    assert_eq!(order.status(), OrderStatus::Unspecified);
    let f = order.fulfillment.unwrap();
    assert_eq!(f.r#type(), FulfillmentType::Unspecified);
    assert!(f.address.is_none() && f.contact.is_none());
    // Nothing to cook is not an order wix-print can print.
    let err = map_order(&json!({ "id": "o-1" })).unwrap_err();
    assert_eq!(err.to_string(), "order.line_items: an order needs at least one line item");
}

#[test]
fn implausible_order_ids_are_refused() {
    assert_eq!(map_order(&json!({})), Err(MapError::MissingId));
    assert_eq!(map_order(&json!({ "id": null })), Err(MapError::MissingId));
    assert!(matches!(map_order(&json!({ "id": 7 })), Err(MapError::ImplausibleId { .. })));
    assert!(matches!(map_order(&json!({ "id": "x".repeat(300) })), Err(MapError::ImplausibleId { .. })));
    assert!(matches!(map_order(&json!({ "id": "a\nb" })), Err(MapError::ImplausibleId { .. })));
    assert_eq!(map_order(&json!([1])), Err(MapError::NotAnObject { found: "an array" }));
    assert!(matches!(
        map_order(&json!({ "id": "o-1", "lineItems": [null] })),
        Err(MapError::NotObject { ref field, .. }) if field == "lineItems[0]"
    ));
}

/// Every field of a real order, replaced in turn by values of every JSON type: mapping may
/// refuse but must never panic.
#[test]
fn hostile_values_in_any_field_never_panic() {
    let hostile = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e300),
        json!(u64::MAX),
        json!(""),
        json!("\u{0}\u{1B}\u{202E}"),
        json!("9999-99-99T99:99:99Z"),
        json!([]),
        json!([null, 1, "x", {}]),
        json!({}),
        json!({ "amount": "NaN", "original": 5, "translated": [] }),
    ];
    let base = fixture(APPROVED_DELIVERY)["actionEvent"]["body"]["order"].take();
    let mut paths = Vec::new();
    collect_paths(&base, &mut Vec::new(), &mut paths);
    assert!(paths.len() > 100, "walks the whole order");
    for path in &paths {
        for value in &hostile {
            let mut json = base.clone();
            *json.pointer_mut(path).unwrap() = value.clone();
            let _ = map_order(&json);
        }
    }
}

fn collect_paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<String>) {
    let here = |p: &Vec<String>| p.iter().map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1"))).collect();
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(k.clone());
                out.push(here(prefix));
                collect_paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(i.to_string());
                out.push(here(prefix));
                collect_paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

#[test]
fn hostile_bodies_never_panic() {
    let token = sign_l3_text(CREATED_PICKUP);
    let bodies: Vec<Vec<u8>> = vec![
        b"...".to_vec(),
        b"..".to_vec(),
        b"a.b.c.d".to_vec(),
        vec![0; 64],
        b"\xff".repeat(100),
        "€.€.€".as_bytes().to_vec(),
        token.as_bytes()[..token.len() - 1].to_vec(),
        token.as_bytes()[1..].to_vec(),
        token.replace('.', "..").into_bytes(),
        format!("{token}.{token}").into_bytes(),
    ];
    for body in bodies {
        assert!(verifier().verify(&body).is_err(), "{:?}", String::from_utf8_lossy(&body));
    }
}

// ---- key ----------------------------------------------------------------------------------

#[test]
fn from_pem_refuses_what_is_not_an_rsa_public_key() {
    let err = |pem: &[u8]| WebhookVerifier::from_pem(pem).unwrap_err().to_string();
    assert!(err(b"").starts_with("not a PEM RSA public key: "));
    assert!(err(b"hello").contains("BEGIN"));
    assert!(err(b"\xff\xfe").contains("not text"));
    assert!(err(keys().private_pem.as_bytes()).contains("private key"), "{}", err(keys().private_pem.as_bytes()));
    assert!(err(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").contains("CERTIFICATE"));
    let damaged = keys().public_pem.replace("MII", "!!!");
    assert!(err(damaged.as_bytes()).starts_with("not a PEM RSA public key: "));
}

#[test]
fn from_pem_refuses_short_rsa_keys() {
    let small = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let pem = small.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    let message = WebhookVerifier::from_pem(pem.as_bytes()).unwrap_err().to_string();
    assert_eq!(message, "not a PEM RSA public key: the RSA key has 1024 bits, at least 2048 are required");
}

#[test]
fn from_pem_accepts_pkcs1_public_keys() {
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::DecodePrivateKey;
    let private = rsa::RsaPrivateKey::from_pkcs8_pem(&keys().private_pem).unwrap();
    let pem = private.to_public_key().to_pkcs1_pem(LineEnding::LF).unwrap();
    let verifier = WebhookVerifier::from_pem(pem.as_bytes()).unwrap();
    assert!(verifier.verify(sign_l3_text(CREATED_PICKUP).as_bytes()).is_ok());
}
