//! The rules an order keeps to be stored and printed, written once for both services.
//!
//! - wix-ingest's Wix mapping reads Wix JSON with these bounds ([`MAX_LINE_ITEMS`],
//!   [`MAX_QUANTITY`], [`MAX_MODIFIERS`], [`MAX_TEXT_CHARS`], [`MAX_ID_CHARS`], amounts through
//!   [`Money::parse_plain`], times through [`try_ms_from_timestamp`]); it cuts long text rather
//!   than losing the order.
//! - `SubmitLocalOrder` cleans the phone order, applies its own tighter bounds, then
//!   [`check_order`].
//! - wix-print's `SubmitOrder` refuses with [`check_order`] whatever breaks a rule
//!   (`InvalidArgument` naming the field) before anything is stored.
//!
//! [`check_order`] checks, it never repairs: a refused order is the sender's to fix.

use prost_types::Timestamp;

use crate::money::{MAX_PLAIN_CHARS, Money};
use crate::proto::order::{Order, PriceSummary};
use crate::time::try_ms_from_timestamp;

/// Most line items one order may have.
pub const MAX_LINE_ITEMS: usize = 1000;
/// Largest quantity of one line item or modifier.
pub const MAX_QUANTITY: u32 = 10_000;
/// Most modifiers one line item may have.
pub const MAX_MODIFIERS: usize = 200;
/// Longest text field (names, address lines, instructions ...), in characters.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Longest buyer note, in characters (phone orders may carry up to this; Wix's are cut to
/// [`MAX_TEXT_CHARS`]).
pub const MAX_NOTE_CHARS: usize = 2000;
/// Longest id (order id, line item id, event id).
pub const MAX_ID_CHARS: usize = 256;
/// Longest amount string.
pub const MAX_AMOUNT_CHARS: usize = MAX_PLAIN_CHARS;
/// Most catalog app ids one order may name.
pub const MAX_APP_IDS: usize = 100;

/// A broken rule: the field (proto path, `line_items[2].quantity`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

fn invalid<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid { field: field.into(), reason: reason.into() })
}

/// An amount a receipt can print exactly: empty (unknown), or a plain decimal
/// (`-?digits(.digits)?`, at most [`MAX_AMOUNT_CHARS`] characters, at most 6 fraction digits).
pub fn check_amount(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() || Money::parse_plain(value).is_some() {
        return Ok(());
    }
    let shown: String = value.chars().take(40).collect();
    invalid(
        field,
        format!(
            "{shown:?} is not a decimal amount (digits, an optional '-' and '.', at most {MAX_AMOUNT_CHARS} characters and 6 decimals)"
        ),
    )
}

/// A text of at most `max` characters.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    // `len` bounds the character count from above: only long strings are counted.
    if value.len() > max && value.chars().count() > max {
        return invalid(field, format!("longer than {max} characters ({} characters)", value.chars().count()));
    }
    Ok(())
}

/// A time whose milliseconds fit and that a ticket can show (see [`try_ms_from_timestamp`]).
pub fn check_timestamp(field: &str, value: Option<&Timestamp>) -> Result<(), Invalid> {
    match value.map(try_ms_from_timestamp) {
        Some(Err(e)) => invalid(field, e.to_string()),
        _ => Ok(()),
    }
}

fn check_id(field: &str, value: &str) -> Result<(), Invalid> {
    check_text(field, value, MAX_ID_CHARS)?;
    if value.chars().any(char::is_control) {
        return invalid(field, "contains control characters");
    }
    Ok(())
}

fn check_count(field: &str, count: usize, max: usize) -> Result<(), Invalid> {
    if count > max {
        return invalid(field, format!("{count} entries are more than the {max} allowed"));
    }
    Ok(())
}

/// Every rule an order must keep to be printed: an id; 1..=[`MAX_LINE_ITEMS`] line items,
/// each with a quantity of 1..=[`MAX_QUANTITY`] and at most [`MAX_MODIFIERS`] modifiers;
/// texts within [`MAX_TEXT_CHARS`] (the note within [`MAX_NOTE_CHARS`]); amounts a receipt can
/// print; times whose milliseconds fit. The first broken rule is the error.
pub fn check_order(o: &Order) -> Result<(), Invalid> {
    if o.id.trim().is_empty() {
        return invalid("order.id", "is required");
    }
    check_id("order.id", &o.id)?;
    check_order_content(o)
}

/// [`check_order`] without the id, for an order whose id is given later (a phone order gets
/// its `L-<day>-<n>` when it is stored).
pub fn check_order_content(o: &Order) -> Result<(), Invalid> {
    check_text("order.number", &o.number, MAX_ID_CHARS)?;
    check_timestamp("order.created_at", o.created_at.as_ref())?;
    check_timestamp("order.updated_at", o.updated_at.as_ref())?;
    if o.line_items.is_empty() {
        return invalid("order.line_items", "an order needs at least one line item");
    }
    check_count("order.line_items", o.line_items.len(), MAX_LINE_ITEMS)?;
    for (i, item) in o.line_items.iter().enumerate() {
        let at = |name: &str| format!("order.line_items[{i}].{name}");
        check_text(&at("id"), &item.id, MAX_ID_CHARS)?;
        check_text(&at("name"), &item.name, MAX_TEXT_CHARS)?;
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return invalid(at("quantity"), format!("{} is outside 1..={MAX_QUANTITY}", item.quantity));
        }
        check_amount(&at("unit_price"), &item.unit_price)?;
        check_amount(&at("line_total"), &item.line_total)?;
        check_count(&at("modifiers"), item.modifiers.len(), MAX_MODIFIERS)?;
        for (j, m) in item.modifiers.iter().enumerate() {
            let at = |name: &str| format!("order.line_items[{i}].modifiers[{j}].{name}");
            check_text(&at("group"), &m.group, MAX_TEXT_CHARS)?;
            check_text(&at("name"), &m.name, MAX_TEXT_CHARS)?;
            if m.quantity > MAX_QUANTITY {
                return invalid(at("quantity"), format!("{} is more than {MAX_QUANTITY}", m.quantity));
            }
            check_amount(&at("price"), &m.price)?;
        }
    }
    check_text("order.buyer_note", &o.buyer_note, MAX_NOTE_CHARS)?;
    for (name, v) in [
        ("buyer_language", &o.buyer_language),
        ("site_language", &o.site_language),
        ("status_raw", &o.status_raw),
        ("payment_status_raw", &o.payment_status_raw),
    ] {
        check_text(&format!("order.{name}"), v, MAX_TEXT_CHARS)?;
    }
    check_count("order.catalog_app_ids", o.catalog_app_ids.len(), MAX_APP_IDS)?;
    for (i, id) in o.catalog_app_ids.iter().enumerate() {
        check_text(&format!("order.catalog_app_ids[{i}]"), id, MAX_ID_CHARS)?;
    }
    if let Some(f) = &o.fulfillment {
        for (name, v) in [("title", &f.title), ("promised_text", &f.promised_text), ("instructions", &f.instructions)] {
            check_text(&format!("order.fulfillment.{name}"), v, MAX_TEXT_CHARS)?;
        }
        check_timestamp("order.fulfillment.promised_from", f.promised_from.as_ref())?;
        check_timestamp("order.fulfillment.promised_to", f.promised_to.as_ref())?;
        if let Some(a) = &f.address {
            for (name, v) in [
                ("line1", &a.line1),
                ("line2", &a.line2),
                ("postal_code", &a.postal_code),
                ("city", &a.city),
                ("subdivision", &a.subdivision),
                ("country", &a.country),
            ] {
                check_text(&format!("order.fulfillment.address.{name}"), v, MAX_TEXT_CHARS)?;
            }
        }
        if let Some(c) = &f.contact {
            for (name, v) in [
                ("first_name", &c.first_name),
                ("last_name", &c.last_name),
                ("phone", &c.phone),
                ("company", &c.company),
                ("email", &c.email),
            ] {
                check_text(&format!("order.fulfillment.contact.{name}"), v, MAX_TEXT_CHARS)?;
            }
        }
    }
    if let Some(p) = &o.price_summary {
        check_price_summary(p)?;
    }
    Ok(())
}

fn check_price_summary(p: &PriceSummary) -> Result<(), Invalid> {
    for (name, v) in [
        ("subtotal", &p.subtotal),
        ("discount", &p.discount),
        ("shipping", &p.shipping),
        ("fees", &p.fees),
        ("tax", &p.tax),
        ("total", &p.total),
        ("balance_due", &p.balance_due),
        ("paid", &p.paid),
    ] {
        check_amount(&format!("order.price_summary.{name}"), v)?;
    }
    check_text("order.price_summary.currency", &p.currency, 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::order::{Fulfillment, LineItem, Modifier};

    fn order() -> Order {
        Order {
            id: "o-1".into(),
            created_at: Some(Timestamp { seconds: 1_758_738_240, nanos: 0 }),
            line_items: vec![LineItem {
                name: "Pad Thai".into(),
                quantity: 2,
                unit_price: "19.50".into(),
                line_total: "39.00".into(),
                modifiers: vec![Modifier { name: "scharf".into(), quantity: 1, ..Default::default() }],
                ..Default::default()
            }],
            price_summary: Some(PriceSummary { total: "39.00".into(), currency: "CHF".into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn field_of(o: &Order) -> String {
        check_order(o).unwrap_err().field
    }

    #[test]
    fn a_plain_order_passes() {
        assert_eq!(check_order(&order()), Ok(()));
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        type Breaker = Box<dyn Fn(&mut Order)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("order.id", Box::new(|o| o.id = " ".into())),
            ("order.id", Box::new(|o| o.id = "a\u{0}b".into())),
            ("order.line_items", Box::new(|o| o.line_items.clear())),
            ("order.line_items", Box::new(|o| o.line_items = vec![o.line_items[0].clone(); MAX_LINE_ITEMS + 1])),
            ("order.line_items[0].quantity", Box::new(|o| o.line_items[0].quantity = 0)),
            ("order.line_items[0].quantity", Box::new(|o| o.line_items[0].quantity = MAX_QUANTITY + 1)),
            ("order.line_items[0].name", Box::new(|o| o.line_items[0].name = "x".repeat(MAX_TEXT_CHARS + 1))),
            ("order.line_items[0].unit_price", Box::new(|o| o.line_items[0].unit_price = "12,50 €".into())),
            ("order.line_items[0].line_total", Box::new(|o| o.line_items[0].line_total = "9".repeat(41))),
            ("order.line_items[0].line_total", Box::new(|o| o.line_items[0].line_total = "1.0000001".into())),
            (
                "order.line_items[0].modifiers",
                Box::new(|o| o.line_items[0].modifiers = vec![Modifier::default(); MAX_MODIFIERS + 1]),
            ),
            ("order.line_items[0].modifiers[0].price", Box::new(|o| o.line_items[0].modifiers[0].price = "1e3".into())),
            ("order.buyer_note", Box::new(|o| o.buyer_note = "ä".repeat(MAX_NOTE_CHARS + 1))),
            ("order.buyer_note", Box::new(|o| o.buyer_note = "n".repeat(1_300_000))),
            ("order.created_at", Box::new(|o| o.created_at = Some(Timestamp { seconds: i64::MAX, nanos: 0 }))),
            (
                "order.fulfillment.promised_to",
                Box::new(|o| {
                    o.fulfillment = Some(Fulfillment {
                        promised_to: Some(Timestamp { seconds: i64::MIN, nanos: 0 }),
                        ..Default::default()
                    })
                }),
            ),
            ("order.price_summary.total", Box::new(|o| o.price_summary.as_mut().unwrap().total = "abc".into())),
        ];
        for (field, break_it) in cases {
            let mut o = order();
            break_it(&mut o);
            assert_eq!(field_of(&o), field);
            assert!(check_order(&o).unwrap_err().to_string().starts_with(field));
        }
    }

    #[test]
    fn bounds_are_inclusive_and_empty_amounts_are_unknown_not_wrong() {
        let mut o = order();
        o.line_items[0].quantity = MAX_QUANTITY;
        o.line_items[0].name = "ä".repeat(MAX_TEXT_CHARS);
        o.buyer_note = "ß".repeat(MAX_NOTE_CHARS);
        o.line_items[0].unit_price.clear();
        o.line_items[0].modifiers[0].quantity = 0;
        o.price_summary.as_mut().unwrap().total = "-0.50".into();
        assert_eq!(check_order(&o), Ok(()));
        let err = check_order(&Order { created_at: Some(Timestamp { seconds: i64::MAX, nanos: 0 }), ..order() });
        assert!(err.unwrap_err().reason.contains("9223372036854775807"));
    }
}
