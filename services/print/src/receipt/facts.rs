//! What the layouts read from an order, in printable words: number, fulfillment type,
//! customer, times, payment. Missing data gives `None`/empty, never a panic.

use jiff::Zoned;
use jiff::tz::TimeZone;
use wixprint_shared::proto::order::{Contact, Fulfillment, FulfillmentType, Order, OrderStatus, PaymentStatus};

use super::labels::Labels;
use super::money::Money;

/// "#10033"; the order id when Wix gave no number (a ticket must name its order somehow).
pub(crate) fn number(order: &Order) -> String {
    let number = order.number.trim();
    let number = if number.is_empty() { order.id.trim() } else { number };
    if number.is_empty() { "#?".to_owned() } else { format!("#{number}") }
}

pub(crate) fn fulfillment_type(order: &Order) -> FulfillmentType {
    order
        .fulfillment
        .as_ref()
        .and_then(|f| FulfillmentType::try_from(f.r#type).ok())
        .unwrap_or(FulfillmentType::Unspecified)
}

pub(crate) fn is_delivery(order: &Order) -> bool {
    fulfillment_type(order) == FulfillmentType::Delivery
}

/// "ABHOLUNG" / "LIEFERUNG"; the merchant's own title for an unknown type; empty if none.
pub(crate) fn fulfillment_label(order: &Order, labels: &Labels) -> String {
    match fulfillment_type(order) {
        FulfillmentType::Pickup => labels.pickup.to_string(),
        FulfillmentType::Delivery => labels.delivery.to_string(),
        FulfillmentType::Unspecified => {
            order.fulfillment.as_ref().map(|f| f.title.trim().to_uppercase()).unwrap_or_default()
        }
    }
}

/// "Abholzeit:" / "Lieferzeit:" (pickup wording when the type is unknown).
pub(crate) fn time_label<'a>(order: &Order, labels: &'a Labels) -> &'a str {
    if is_delivery(order) { &labels.delivery_time } else { &labels.pickup_time }
}

pub(crate) fn contact(order: &Order) -> Option<&Contact> {
    order.fulfillment.as_ref().and_then(|f| f.contact.as_ref())
}

/// "First Last"; the company when no person is named; empty when unknown.
pub(crate) fn customer_name(order: &Order) -> String {
    let Some(c) = contact(order) else { return String::new() };
    let name =
        [c.first_name.trim(), c.last_name.trim()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    if name.is_empty() { c.company.trim().to_owned() } else { name }
}

pub(crate) fn phone(order: &Order) -> String {
    contact(order).map(|c| c.phone.trim().to_owned()).unwrap_or_default()
}

/// Address lines: line1, line2, "postal code city". Empty parts are left out.
pub(crate) fn address_lines(order: &Order) -> Vec<String> {
    let Some(a) = order.fulfillment.as_ref().and_then(|f| f.address.as_ref()) else { return Vec::new() };
    let city =
        [a.postal_code.trim(), a.city.trim()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    [a.line1.trim().to_owned(), a.line2.trim().to_owned(), city].into_iter().filter(|s| !s.is_empty()).collect()
}

pub(crate) fn instructions(order: &Order) -> &str {
    order.fulfillment.as_ref().map_or("", |f| f.instructions.trim())
}

pub(crate) fn is_canceled(order: &Order) -> bool {
    matches!(OrderStatus::try_from(order.status), Ok(OrderStatus::Canceled | OrderStatus::Rejected))
}

/// True when nothing is left to collect. A partial refund follows a full payment, so it
/// counts as paid; everything else (not paid, pending, partially paid ...) may need money.
pub(crate) fn is_paid(order: &Order) -> bool {
    matches!(PaymentStatus::try_from(order.payment_status), Ok(PaymentStatus::Paid | PaymentStatus::PartiallyRefunded))
}

/// The order's own currency, as printed before amounts; empty when unknown (never guessed).
pub(crate) fn currency(order: &Order) -> String {
    let raw = order.price_summary.as_ref().map_or("", |p| p.currency.as_str());
    raw.chars().filter(|c| !c.is_control()).collect::<String>().trim().to_owned()
}

/// "CHF 132.00", or "132.00" when the currency is unknown.
pub(crate) fn with_currency(currency: &str, amount: Money) -> String {
    if currency.is_empty() { amount.to_string() } else { format!("{currency} {amount}") }
}

/// What is still to be paid: the balance due, else the total.
pub(crate) fn amount_due(order: &Order) -> Option<Money> {
    let p = order.price_summary.as_ref()?;
    Money::parse(&p.balance_due).or_else(|| Money::parse(&p.total))
}

/// The instant of a proto timestamp in `tz`. Unset, the Unix epoch (a default-initialised
/// message, not a real order time) and out-of-range values are `None`.
pub(crate) fn zoned(ts: Option<&prost_types::Timestamp>, tz: &TimeZone) -> Option<Zoned> {
    let ts = ts?;
    if ts.seconds == 0 && ts.nanos == 0 {
        return None;
    }
    jiff::Timestamp::new(ts.seconds, ts.nanos).ok().map(|t| t.to_zoned(tz.clone()))
}

pub(crate) fn date_time(z: &Zoned) -> String {
    z.strftime("%d.%m.%Y %H:%M").to_string()
}

fn time(z: &Zoned) -> String {
    z.strftime("%H:%M").to_string()
}

/// "24.09.2025 19:53" in the layout's zone.
pub(crate) fn created(order: &Order, tz: &TimeZone) -> Option<String> {
    zoned(order.created_at.as_ref(), tz).map(|z| date_time(&z))
}

/// When the customer was promised the food: "20:24" on the day of the order, with the date
/// on any other day (pre-orders); "20:40-20:50" for a slot; Wix's own text when no instant is
/// known; followed by "SOFORT"/"ASAP" for an as-soon-as-possible order. `None` when nothing
/// is known.
pub(crate) fn promised(order: &Order, tz: &TimeZone, labels: &Labels) -> Option<String> {
    let f: &Fulfillment = order.fulfillment.as_ref()?;
    let created = zoned(order.created_at.as_ref(), tz);
    let from = zoned(f.promised_from.as_ref(), tz);
    let mut text = match &from {
        Some(from) => {
            let same_day = created.as_ref().is_some_and(|c| c.date() == from.date());
            let mut s = if same_day { time(from) } else { date_time(from) };
            if let Some(to) = zoned(f.promised_to.as_ref(), tz).filter(|to| to.timestamp() > from.timestamp()) {
                s.push('-');
                s.push_str(&if to.date() == from.date() { time(&to) } else { date_time(&to) });
            }
            s
        }
        None => f.promised_text.trim().to_owned(),
    };
    if f.asap {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&labels.asap);
    }
    (!text.is_empty()).then_some(text)
}

/// Sum of the line items' quantities (what the kitchen counts off).
pub(crate) fn item_count(order: &Order) -> u64 {
    order.line_items.iter().map(|i| u64::from(i.quantity)).sum()
}
