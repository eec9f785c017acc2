//! The customer receipt: the restaurant (name, address, phone, VAT number), what was bought
//! and what it cost, in the order's own currency (`price_summary.currency`, never a
//! configured or guessed one), then the restaurant's footer and QR code. Only what the
//! restaurant configured prints; an unconfigured layout prints no header or footer lines.

use wixprint_shared::proto::order::{LineItem, Order, PriceSummary};

use super::builder::{Builder, Style};
use super::common::{self, modifier_text, quantity_prefix};
use super::document::Size;
use super::facts;
use super::labels::Labels;
use super::money::Money;
use super::text::{self, printable};

/// Sub-lines (unit price, modifiers) sit two columns in; their wrapped names four.
const SUB_INDENT: usize = 2;
const SUB_WRAP_INDENT: usize = 4;

pub(crate) fn render(b: &mut Builder, order: &Order, labels: &Labels) {
    header(b, labels);
    b.text(&labels.customer_receipt, Style::NORMAL.center());
    b.text(&format!("{} {}", labels.order, facts::number(order)), Style::NORMAL.size(Size::DoubleHeight).bold());
    common::created(b, order, labels);
    let fulfillment = facts::fulfillment_label(order, labels);
    if let Some(time) = facts::promised(order, &b.layout().time_zone, labels) {
        b.text(&format!("{fulfillment} {time}"), Style::NORMAL);
    } else {
        b.text(&fulfillment, Style::NORMAL);
    }
    if facts::is_canceled(order) {
        b.text(&labels.canceled, Style::BANNER);
    }
    b.rule('=');

    for line in &order.line_items {
        item(b, line);
    }
    b.rule('-');

    let currency = facts::currency(order);
    let empty = PriceSummary::default();
    let p = order.price_summary.as_ref().unwrap_or(&empty);
    summary(b, p, labels);
    b.rule('=');
    if let Some(total) = Money::parse(&p.total) {
        b.columns(
            &labels.total,
            &facts::with_currency(&currency, total),
            Style::NORMAL.size(Size::DoubleHeight).bold(),
            0,
            0,
        );
    }
    payment(b, order, p, labels, &currency);
    footer(b, order);
}

/// The restaurant's name (big, bold), address lines, phone and VAT number, centered; each
/// only when configured.
fn header(b: &mut Builder, labels: &Labels) {
    let restaurant = &b.layout().restaurant;
    b.text(&restaurant.name, Style::NORMAL.size(Size::DoubleHeight).bold().center());
    for line in &restaurant.address {
        b.text(line, Style::NORMAL.center());
    }
    labelled_value(b, &labels.phone, &restaurant.phone);
    labelled_value(b, &labels.vat_id, &restaurant.vat_id);
}

/// "<label> <value>" centered; nothing when the value is blank.
fn labelled_value(b: &mut Builder, label: &str, value: &str) {
    let value = value.trim();
    if !value.is_empty() {
        b.text(&format!("{label} {value}"), Style::NORMAL.center());
    }
}

/// After a blank line: the footer lines centered, then the QR code with the order's number
/// and id filled in. Nothing (not even the blank line) when neither prints anything.
fn footer(b: &mut Builder, order: &Order) {
    let restaurant = &b.layout().restaurant;
    let cp = b.layout().code_page;
    let lines: Vec<&String> = restaurant.footer.iter().filter(|l| !printable(l, cp).trim().is_empty()).collect();
    let qr = fill(&restaurant.qr, &[("{order_number}", order.number.trim()), ("{order_id}", order.id.trim())]);
    let qr = text::qr_data(&qr);
    if lines.is_empty() && qr.is_empty() {
        return;
    }
    b.blank();
    for line in lines {
        b.text(line, Style::NORMAL.center());
    }
    b.qr(&qr);
}

/// `template` with each placeholder of `values` replaced by its value, in one pass (a value
/// that contains a placeholder stays as it is).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        match values.iter().find(|(placeholder, _)| rest.starts_with(placeholder)) {
            Some((placeholder, value)) => {
                out.push_str(value);
                rest = &rest[placeholder.len()..];
            }
            None => {
                out.push('{');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// "3 x Nam Tok .... 78.00", "  3 x 26.00" when more than one, then the modifiers (with
/// their price when they cost something).
fn item(b: &mut Builder, line: &LineItem) {
    let unit = Money::parse(&line.unit_price);
    // Wix always sends the line total; computing it is only the fallback.
    let total = Money::parse(&line.line_total).or_else(|| unit.and_then(|u| u.checked_mul(line.quantity)));
    let prefix = quantity_prefix(line.quantity);
    let amount = total.map(|t| t.to_string()).unwrap_or_default();
    b.columns(&format!("{prefix}{}", line.name.trim()), &amount, Style::NORMAL, 0, prefix.len());
    if line.quantity > 1
        && let Some(unit) = unit
    {
        b.indented(&format!("{}{unit}", quantity_prefix(line.quantity)), Style::NORMAL, SUB_INDENT, SUB_INDENT);
    }
    for m in &line.modifiers {
        let price = Money::parse_nonzero(&m.price).map(|p| p.to_string()).unwrap_or_default();
        b.columns(&modifier_text(m), &price, Style::NORMAL, SUB_INDENT, SUB_WRAP_INDENT);
    }
}

/// Subtotal, then the adjustments that are non-zero, then the tax: "inkl. MwSt." when the
/// total already contains it (the parts add up to the total without it), "MwSt." otherwise.
fn summary(b: &mut Builder, p: &PriceSummary, labels: &Labels) {
    let subtotal = Money::parse(&p.subtotal);
    let discount = Money::parse_nonzero(&p.discount).map(Money::abs);
    let shipping = Money::parse_nonzero(&p.shipping);
    let fees = Money::parse_nonzero(&p.fees);
    let tax = Money::parse_nonzero(&p.tax);
    let normal = Style::NORMAL;
    if let Some(s) = subtotal {
        b.columns(&labels.subtotal, &s.to_string(), normal, 0, 0);
    }
    if let Some(d) = discount {
        b.columns(&labels.discount, &d.negated().to_string(), normal, 0, 0);
    }
    if let Some(s) = shipping {
        b.columns(&labels.delivery_fee, &s.to_string(), normal, 0, 0);
    }
    if let Some(f) = fees {
        b.columns(&labels.fees, &f.to_string(), normal, 0, 0);
    }
    if let Some(t) = tax {
        let without_tax = [subtotal, discount.map(Money::negated), shipping, fees]
            .into_iter()
            .try_fold(Money::ZERO, |sum, part| sum.checked_add(part.unwrap_or(Money::ZERO)));
        let included = subtotal.is_some() && without_tax.is_some() && without_tax == Money::parse(&p.total);
        b.columns(if included { &labels.tax_included } else { &labels.tax }, &t.to_string(), normal, 0, 0);
    }
}

/// "BEZAHLT", or what was paid and what is still open.
fn payment(b: &mut Builder, order: &Order, p: &PriceSummary, labels: &Labels, currency: &str) {
    if facts::is_paid(order) {
        b.text(&labels.paid, Style::NORMAL.size(Size::DoubleHeight).bold().center());
        return;
    }
    if let Some(paid) = Money::parse_nonzero(&p.paid) {
        b.columns(&labels.paid_amount, &facts::with_currency(currency, paid), Style::NORMAL, 0, 0);
    }
    if let Some(due) = facts::amount_due(order) {
        b.columns(&labels.balance_due, &facts::with_currency(currency, due), Style::NORMAL.bold(), 0, 0);
    }
}
