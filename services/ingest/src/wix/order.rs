//! Wix eCommerce order JSON (REST shape, as in webhooks and `orders/search`) → domain [`Order`].
//!
//! Tolerant where Wix is loose (absent fields, new enum values, numbers sent as strings) and
//! strict only where a wrong value would print a wrong ticket or break a key: the order id, line
//! item quantities, and sizes no restaurant order reaches.

use serde_json::Value;
use wixprint_shared::proto::order::{
    Address, Contact, Fulfillment, FulfillmentType, LineItem, Modifier, Order, OrderSource, OrderStatus, PaymentStatus,
    PriceSummary,
};

use super::json::{MAX_ID_CHARS, amount, array, at, at_opt, localized, object, shown, text, timestamp, type_name};

pub use wixprint_shared::validate::{MAX_LINE_ITEMS, MAX_MODIFIERS, MAX_QUANTITY};

/// Why a Wix order could not be mapped. Messages name the offending field, because they are
/// returned to the HTTP caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("order is not a JSON object (found {found})")]
    NotAnObject { found: &'static str },
    #[error("order has no `id`")]
    MissingId,
    #[error("order `id` is not a plausible id: {reason}")]
    ImplausibleId { reason: String },
    #[error("{field}: expected a JSON object, found {found}")]
    NotObject { field: String, found: &'static str },
    #[error("{field}: {value} is not a valid quantity (expected a whole number from 0 to {max})", max = MAX_QUANTITY)]
    InvalidQuantity { field: String, value: String },
    #[error("{field}: {count} entries are more than the {max} allowed")]
    TooMany { field: String, count: usize, max: usize },
    /// Mapped, but not an order wix-print can print (`shared::validate`, the same rules
    /// `SubmitOrder` applies): refused here, so nothing is acknowledged that cannot print.
    #[error("{0}")]
    Unprintable(wixprint_shared::validate::Invalid),
}

/// Maps one Wix order JSON object to the domain [`Order`].
///
/// Left for the caller: `source` (UNSPECIFIED here; the store sets it from how the order
/// arrived) and `entity_event_sequence` (0 here; the webhook path sets it from the event).
///
/// Every string is sanitised (control characters removed, cut to
/// [`MAX_TEXT_CHARS`](super::MAX_TEXT_CHARS) characters); money stays the decimal string Wix
/// sent; unknown `status`/`paymentStatus` strings map to UNSPECIFIED with the raw string kept in
/// `status_raw`/`payment_status_raw`.
///
/// Errors: no `id`; a quantity that is not a whole number from 0 to [`MAX_QUANTITY`]; more than
/// [`MAX_LINE_ITEMS`] line items or [`MAX_MODIFIERS`] modifiers on one line; a line item that is
/// not an object; an order that breaks the shared order rules (`shared::validate::check_order`:
/// no line item, a missing or zero quantity, ...), which wix-print would refuse.
pub fn map_order(json: &Value) -> Result<Order, MapError> {
    if !json.is_object() {
        return Err(MapError::NotAnObject { found: type_name(json) });
    }
    let id = order_id(json.get("id"))?;
    let (status, status_raw) = order_status(json.get("status"));
    let (payment_status, payment_status_raw) = payment_status(json.get("paymentStatus"));
    let (line_items, catalog_app_ids) = line_items(json)?;
    let order = Order {
        id,
        number: text(json.get("number")),
        source: OrderSource::Unspecified as i32,
        created_at: timestamp(json.get("createdDate")),
        updated_at: timestamp(json.get("updatedDate")),
        status: status as i32,
        payment_status: payment_status as i32,
        fulfillment: Some(fulfillment(json)),
        line_items,
        buyer_note: text(json.get("buyerNote")),
        price_summary: Some(price_summary(json, payment_status)),
        buyer_language: text(json.get("buyerLanguage")),
        site_language: text(json.get("siteLanguage")),
        entity_event_sequence: 0,
        status_raw,
        payment_status_raw,
        catalog_app_ids,
    };
    wixprint_shared::validate::check_order(&order).map_err(MapError::Unprintable)?;
    Ok(order)
}

/// The order id is the idempotency key end to end, so it is refused rather than repaired: a
/// cleaned or shortened id could collide with another order's.
fn order_id(value: Option<&Value>) -> Result<String, MapError> {
    match value {
        None | Some(Value::Null) => Err(MapError::MissingId),
        Some(Value::String(s)) if s.trim().is_empty() => Err(MapError::MissingId),
        Some(Value::String(s)) => {
            if s.chars().count() > MAX_ID_CHARS {
                Err(MapError::ImplausibleId { reason: format!("longer than {MAX_ID_CHARS} characters") })
            } else if s.chars().any(char::is_control) {
                Err(MapError::ImplausibleId {
                    reason: format!("{} contains control characters", shown(&Value::from(s.as_str()))),
                })
            } else {
                Ok(s.clone())
            }
        }
        Some(other) => {
            Err(MapError::ImplausibleId { reason: format!("expected a string, found {}", type_name(other)) })
        }
    }
}

/// A Wix enum string, upper-cased for matching (Wix sends upper case; older shapes used lower
/// case). `(matched, raw)`: `raw` is the sanitised original, for keeping when nothing matched.
fn enum_string(value: Option<&Value>) -> (String, String) {
    let raw = match value {
        Some(Value::String(_)) | Some(Value::Number(_)) => text(value),
        Some(Value::Null) | None => String::new(),
        Some(other) => shown(other),
    };
    (raw.to_ascii_uppercase(), raw)
}

fn order_status(value: Option<&Value>) -> (OrderStatus, String) {
    let (key, raw) = enum_string(value);
    let status = match key.as_str() {
        "INITIALIZED" => OrderStatus::Initialized,
        "APPROVED" => OrderStatus::Approved,
        "CANCELED" => OrderStatus::Canceled,
        "PENDING" => OrderStatus::Pending,
        "REJECTED" => OrderStatus::Rejected,
        "" => return (OrderStatus::Unspecified, String::new()),
        _ => return (OrderStatus::Unspecified, raw),
    };
    (status, String::new())
}

fn payment_status(value: Option<&Value>) -> (PaymentStatus, String) {
    let (key, raw) = enum_string(value);
    let status = match key.as_str() {
        "UNSPECIFIED" | "" => PaymentStatus::Unspecified,
        "NOT_PAID" => PaymentStatus::NotPaid,
        "PAID" => PaymentStatus::Paid,
        "PARTIALLY_REFUNDED" => PaymentStatus::PartiallyRefunded,
        "FULLY_REFUNDED" => PaymentStatus::FullyRefunded,
        "PENDING" => PaymentStatus::Pending,
        "PARTIALLY_PAID" => PaymentStatus::PartiallyPaid,
        "PENDING_MERCHANT" => PaymentStatus::PendingMerchant,
        "CANCELED" => PaymentStatus::Canceled,
        "DECLINED" => PaymentStatus::Declined,
        _ => return (PaymentStatus::Unspecified, raw),
    };
    (status, String::new())
}

/// A quantity as a whole number from 0 to [`MAX_QUANTITY`]. Wix sends an integer, but a string
/// ("3") or an integral float (3.0) is read too. `absent` is what a missing value means.
fn quantity(value: Option<&Value>, absent: u32, field: impl FnOnce() -> String) -> Result<u32, MapError> {
    let parsed: Option<i128> = match value {
        None | Some(Value::Null) => return Ok(absent),
        Some(Value::Number(n)) => {
            n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)).or_else(|| whole(n.as_f64()))
        }
        Some(Value::String(s)) => {
            let s = s.trim();
            s.parse::<i128>().ok().or_else(|| whole(s.parse::<f64>().ok()))
        }
        Some(_) => None,
    };
    match parsed.and_then(|q| u32::try_from(q).ok()) {
        Some(q) if q <= MAX_QUANTITY => Ok(q),
        _ => Err(MapError::InvalidQuantity { field: field(), value: value.map(shown).unwrap_or_default() }),
    }
}

/// An integral, finite float as an integer (saturating; the range check follows).
fn whole(f: Option<f64>) -> Option<i128> {
    f.filter(|f| f.is_finite() && f.fract() == 0.0).map(|f| f as i128)
}

fn too_many(field: impl Into<String>, count: usize, max: usize) -> Result<(), MapError> {
    if count > max { Err(MapError::TooMany { field: field.into(), count, max }) } else { Ok(()) }
}

/// Line items plus the distinct `catalogReference.appId`s (in first-seen order), which tell a
/// restaurant order from a shop order.
fn line_items(json: &Value) -> Result<(Vec<LineItem>, Vec<String>), MapError> {
    let items = array(json.get("lineItems"));
    too_many("lineItems", items.len(), MAX_LINE_ITEMS)?;
    let mut out = Vec::with_capacity(items.len());
    let mut app_ids: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if !item.is_object() {
            return Err(MapError::NotObject { field: format!("lineItems[{i}]"), found: type_name(item) });
        }
        let app_id = text(at(item, &["catalogReference", "appId"]));
        if !app_id.is_empty() && !app_ids.contains(&app_id) {
            app_ids.push(app_id);
        }
        let line_total = match amount(item.get("lineItemPrice")) {
            total if total.is_empty() => amount(item.get("totalPriceAfterTax")),
            total => total,
        };
        out.push(LineItem {
            id: text(item.get("id")),
            name: localized(item.get("productName")),
            // A missing quantity stays 0 ("unknown") rather than a guessed 1.
            quantity: quantity(item.get("quantity"), 0, || format!("lineItems[{i}].quantity"))?,
            unit_price: amount(item.get("price")),
            line_total,
            modifiers: modifiers(item, i)?,
        });
    }
    Ok((out, app_ids))
}

/// A line's modifiers. `modifierGroups` is the structured form (group, label, quantity, price)
/// and comes first. `descriptionLines` (name + plain text or colour) are added after it, except
/// lines that repeat a group or a modifier already taken from the groups: Wix can render the
/// same choice both ways, and a kitchen ticket must neither lose a choice ("Größe: Groß") nor
/// show one twice. Lines without text are skipped; their `name` alone says nothing.
fn modifiers(item: &Value, i: usize) -> Result<Vec<Modifier>, MapError> {
    let groups = array(item.get("modifierGroups"));
    too_many(format!("lineItems[{i}].modifierGroups"), groups.len(), MAX_MODIFIERS)?;
    let mut out: Vec<Modifier> = Vec::new();
    let mut group_names: Vec<String> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let group_name = localized(group.get("name"));
        let choices = array(group.get("modifiers"));
        too_many(format!("lineItems[{i}].modifierGroups[{g}].modifiers"), choices.len(), MAX_MODIFIERS)?;
        for (m, choice) in choices.iter().enumerate() {
            let name = localized(choice.get("label"));
            if name.is_empty() {
                continue;
            }
            let quantity = quantity(choice.get("quantity"), 1, || {
                format!("lineItems[{i}].modifierGroups[{g}].modifiers[{m}].quantity")
            })?;
            out.push(Modifier { group: group_name.clone(), name, quantity, price: amount(choice.get("price")) });
            too_many(format!("lineItems[{i}] modifiers"), out.len(), MAX_MODIFIERS)?;
        }
        if !group_name.is_empty() {
            group_names.push(group_name);
        }
    }
    let from_groups = out.len();
    let lines = array(item.get("descriptionLines"));
    too_many(format!("lineItems[{i}].descriptionLines"), lines.len(), MAX_MODIFIERS)?;
    for line in lines {
        let group = localized(line.get("name"));
        let name = ["plainText", "colorInfo", "plainTextValue"]
            .iter()
            .map(|key| localized(line.get(*key)))
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        let repeats_group = !group.is_empty() && group_names.contains(&group);
        let repeats_choice = out[..from_groups].iter().any(|m| m.name == name);
        if repeats_group || repeats_choice {
            continue;
        }
        out.push(Modifier { group, name, quantity: 1, price: String::new() });
        too_many(format!("lineItems[{i}] modifiers"), out.len(), MAX_MODIFIERS)?;
    }
    Ok(out)
}

/// Pickup or delivery, decided by which branch of `shippingInfo.logistics` is present (the
/// title is the merchant's own wording and only shown). For pickup the address is the
/// restaurant's, still filled so a ticket can show it.
fn fulfillment(json: &Value) -> Fulfillment {
    let shipping = object(json.get("shippingInfo"));
    let logistics = object(at_opt(shipping, &["logistics"]));
    let pickup = object(at_opt(logistics, &["pickupDetails"]));
    let destination = object(at_opt(logistics, &["shippingDestination"]));
    let (kind, address) = match (pickup, destination) {
        (Some(p), _) => (FulfillmentType::Pickup, address(p.get("address"))),
        (None, Some(d)) => (FulfillmentType::Delivery, address(d.get("address"))),
        (None, None) => (FulfillmentType::Unspecified, None),
    };
    Fulfillment {
        r#type: kind as i32,
        title: text(at_opt(shipping, &["title"])),
        address,
        contact: contact(json, destination),
        promised_from: timestamp(at_opt(logistics, &["deliveryTimeSlot", "from"])),
        promised_to: timestamp(at_opt(logistics, &["deliveryTimeSlot", "to"])),
        promised_text: text(at_opt(logistics, &["deliveryTime"])),
        // `PICKUP|ASAP` is what a real restaurant order carried; undocumented, so only a hint.
        asap: text(at_opt(shipping, &["code"])).to_ascii_uppercase().contains("ASAP"),
        instructions: text(at_opt(logistics, &["instructions"])),
    }
}

/// `buyerInfo` carries no name or phone, so the person comes from the first of the delivery
/// destination, the recipient and the billing contact that names anyone (taken whole, so that
/// one person's name is never paired with another's phone); the e-mail from `buyerInfo`.
fn contact(json: &Value, destination: Option<&Value>) -> Option<Contact> {
    let sources = [
        at_opt(destination, &["contactDetails"]),
        at(json, &["recipientInfo", "contactDetails"]),
        at(json, &["billingInfo", "contactDetails"]),
    ];
    let mut contact = sources
        .into_iter()
        .find_map(|details| {
            let details = object(details)?;
            let c = Contact {
                first_name: text(details.get("firstName")),
                last_name: text(details.get("lastName")),
                phone: text(details.get("phone")),
                company: text(details.get("company")),
                email: String::new(),
            };
            let names_anyone = [&c.first_name, &c.last_name, &c.phone, &c.company].iter().any(|s| !s.is_empty());
            names_anyone.then_some(c)
        })
        .unwrap_or_default();
    contact.email = text(at(json, &["buyerInfo", "email"]));
    (contact != Contact::default()).then_some(contact)
}

/// A Wix address. `addressLine` is the REST name (`addressLine1` in the SDK); a structured
/// `streetAddress {name, number}` stands in when neither is there.
fn address(value: Option<&Value>) -> Option<Address> {
    let a = object(value)?;
    let mut line1 = text(a.get("addressLine"));
    if line1.is_empty() {
        line1 = text(a.get("addressLine1"));
    }
    if line1.is_empty() {
        let street = text(at(a, &["streetAddress", "name"]));
        let number = text(at(a, &["streetAddress", "number"]));
        line1 = format!("{street} {number}").trim().to_owned();
    }
    let address = Address {
        line1,
        line2: text(a.get("addressLine2")),
        postal_code: text(a.get("postalCode")),
        city: text(a.get("city")),
        subdivision: text(a.get("subdivision")),
        country: text(a.get("country")),
    };
    (address != Address::default()).then_some(address)
}

/// Totals as Wix computed them; nothing is recomputed here. For an unpaid order without a
/// `balanceSummary` the balance due is the total (Wix: for NOT_PAID, balance = total).
fn price_summary(json: &Value, payment_status: PaymentStatus) -> PriceSummary {
    let summary = |key: &str| amount(at(json, &["priceSummary", key]));
    let total = summary("total");
    let mut balance_due = amount(at(json, &["balanceSummary", "balance"]));
    if balance_due.is_empty() && payment_status == PaymentStatus::NotPaid {
        balance_due = total.clone();
    }
    PriceSummary {
        subtotal: summary("subtotal"),
        discount: summary("discount"),
        shipping: summary("shipping"),
        fees: summary("totalAdditionalFees"),
        tax: summary("tax"),
        total,
        balance_due,
        currency: text(json.get("currency")),
        paid: amount(at(json, &["balanceSummary", "paid"])),
    }
}
