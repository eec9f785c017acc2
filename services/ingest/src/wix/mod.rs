//! The Wix edge. This module is the only place that knows the webhook envelope (an RS256 JWT
//! wrapped around three layers of JSON, each inner one a string) and the field names of Wix's
//! order JSON. Everything it returns is a domain type ([`Order`] and friends from
//! `wixprint_shared::proto::order`), so nothing downstream ever reads Wix JSON.
//!
//! It must never touch the database, the network or the file system, and it never logs: it
//! turns bytes into values or into an error whose message is safe and useful to hand back to
//! the HTTP caller. The only ambient input is the wall clock, read once per webhook to honour
//! the token's `exp`.
//!
//! Code map:
//! - [`envelope`]: [`WebhookVerifier`], which checks the signature and unwraps the layers into a
//!   [`WebhookEvent`].
//! - [`order`]: [`map_order`], Wix order JSON (REST shape) → domain [`Order`].
//! - `json`: tolerant readers for Wix JSON and the string sanitising every mapped string goes
//!   through (control characters removed, at most [`MAX_TEXT_CHARS`] characters).
//!
//! [`Order`]: wixprint_shared::proto::order::Order

pub mod envelope;
mod json;
pub mod order;

#[cfg(test)]
mod tests;

pub use envelope::{EventKind, KeyError, WebhookError, WebhookEvent, WebhookVerifier};
pub use json::MAX_TEXT_CHARS;
pub use order::{MapError, map_order};
