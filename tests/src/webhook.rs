//! Signing webhooks the way Wix does (RS256 JWT around three JSON layers), with a key pair
//! generated for the run, and the Wix fixtures embedded in the test kit.

use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};

/// The Wix fixtures (decoded inner events), embedded so every binary of the kit has them.
pub const FIXTURES: &[(&str, &str)] = &[
    ("order_created.pickup.json", include_str!("../fixtures/wix/order_created.pickup.json")),
    ("order_approved.delivery.json", include_str!("../fixtures/wix/order_approved.delivery.json")),
    ("order_updated.pickup.json", include_str!("../fixtures/wix/order_updated.pickup.json")),
    ("order_canceled.pickup.json", include_str!("../fixtures/wix/order_canceled.pickup.json")),
    (
        "order_payment_status_updated.pickup.json",
        include_str!("../fixtures/wix/order_payment_status_updated.pickup.json"),
    ),
];

/// A fixture as JSON. Panics on an unknown name (a typo in a test).
pub fn fixture(name: &str) -> Value {
    let text = FIXTURES.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no fixture {name}")).1;
    serde_json::from_str(text).expect("fixture is JSON")
}

/// An RSA key pair in PEM form.
pub struct KeyPair {
    pub private_pem: String,
    pub public_pem: String,
    encoding: EncodingKey,
}

impl KeyPair {
    pub fn generate() -> Self {
        let mut rng = rsa::rand_core::OsRng;
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA key generation");
        let private_pem = private.to_pkcs8_pem(LineEnding::LF).expect("PKCS#8 PEM").to_string();
        let public_pem = private.to_public_key().to_public_key_pem(LineEnding::LF).expect("SPKI PEM");
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("encoding key");
        Self { private_pem, public_pem, encoding }
    }

    /// The key pair of a PKCS#8 private key in PEM (`openssl genpkey -algorithm RSA`), e.g. the
    /// one the compose stack's wix-ingest has the public half of.
    pub fn from_private_pem(private_pem: &str) -> anyhow::Result<Self> {
        use rsa::pkcs8::DecodePrivateKey;
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(private_pem)
            .map_err(|e| anyhow::anyhow!("not a PKCS#8 RSA private key: {e}"))?;
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?;
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes())?;
        Ok(Self { private_pem: private_pem.to_owned(), public_pem, encoding })
    }

    /// One key pair per process: generating RSA keys is slow.
    pub fn shared() -> &'static KeyPair {
        static KEYS: OnceLock<KeyPair> = OnceLock::new();
        KEYS.get_or_init(KeyPair::generate)
    }

    /// Wraps a decoded inner event (L3) as Wix does and signs it: L2 = {eventType, instanceId,
    /// data: "<L3>"}, claims = {data: "<L2>", iat, exp}.
    pub fn sign_event(&self, event: &Value) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        self.sign_event_at(event, now)
    }

    /// [`KeyPair::sign_event`], issued at `now` (Unix seconds): for a service whose wall clock
    /// a test moved.
    pub fn sign_event_at(&self, event: &Value, now: u64) -> String {
        let slug = event["slug"].as_str().unwrap_or("created");
        let l2 = json!({
            "eventType": format!("wix.ecom.v1.order_{slug}"),
            "instanceId": "00000000-0000-4000-8000-00000000beef",
            "identity": "{\"identityType\":\"ANONYMOUS_VISITOR\"}",
            "data": event.to_string(),
        });
        self.sign_claims(&json!({ "data": l2.to_string(), "iat": now, "exp": now + 3600 }))
    }

    pub fn sign_claims(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &self.encoding).expect("signing")
    }
}

/// A fixture turned into a distinct order: new event id, order id and number, so that load
/// tests and demos can send many.
pub fn distinct_order(name: &str, n: u64) -> Value {
    let mut ev = fixture(name);
    let order_id = format!("{:08x}-0000-4000-8000-{:012x}", rand::random::<u32>(), n);
    ev["id"] = json!(format!("{:08x}-0000-4000-8000-{:012x}", rand::random::<u32>(), n));
    ev["entityId"] = json!(order_id);
    if let Some(order) = order_mut(&mut ev) {
        order["id"] = json!(order_id);
        order["number"] = json!(format!("{}", 20000 + n));
    }
    ev
}

/// The order object inside an inner event, whichever form carries it.
pub fn order_mut(ev: &mut Value) -> Option<&mut Value> {
    if ev.get("createdEvent").is_some() {
        return ev.get_mut("createdEvent").and_then(|c| c.get_mut("entity"));
    }
    if ev.get("updatedEvent").is_some() {
        return ev.get_mut("updatedEvent").and_then(|c| c.get_mut("currentEntity"));
    }
    ev.get_mut("actionEvent").and_then(|c| c.get_mut("body")).and_then(|b| b.get_mut("order"))
}

/// The `order_approved` event Wix sends after `created` for the same order: a new event id,
/// the next sequence, the order inside `actionEvent.body`.
pub fn approved_after(created: &Value) -> Value {
    let mut ev = created.clone();
    let order = order_mut(&mut ev).cloned().unwrap_or(Value::Null);
    let seq: i64 = created["entityEventSequence"].as_str().and_then(|s| s.parse().ok()).unwrap_or(1);
    let obj = ev.as_object_mut().expect("event object");
    obj.remove("createdEvent");
    obj.insert("slug".into(), json!("approved"));
    obj.insert("id".into(), json!(format!("{}-approved", created["id"].as_str().unwrap_or("event"))));
    obj.insert("entityEventSequence".into(), json!((seq + 1).to_string()));
    obj.insert("actionEvent".into(), json!({ "body": { "order": order } }));
    ev
}
