//! Sections more than one layout prints the same way.

use wixprint_shared::proto::order::{Modifier, Order};

use super::builder::{Builder, Style};
use super::document::Size;
use super::facts;
use super::labels::Labels;

/// Receipt title (small, centered), order number and fulfillment type (big), and the
/// canceled banner when the order was canceled after it was queued.
pub(crate) fn header(b: &mut Builder, order: &Order, labels: &Labels, title: &str) {
    b.text(title, Style::NORMAL.center());
    b.text(&facts::number(order), Style::NORMAL.size(Size::Double).bold());
    b.text(&facts::fulfillment_label(order, labels), Style::NORMAL.size(Size::Double).bold());
    if facts::is_canceled(order) {
        b.text(&labels.canceled, Style::BANNER);
    }
}

/// "Abholzeit:" and the promised time in `size`; nothing when no time is known.
pub(crate) fn promised_time(b: &mut Builder, order: &Order, labels: &Labels, size: Size) {
    if let Some(time) = facts::promised(order, &b.layout().time_zone, labels) {
        b.text(facts::time_label(order, labels), Style::NORMAL);
        b.text(&time, Style::NORMAL.size(size).bold());
    }
}

/// "Bestellt: 24.09.2025 19:53".
pub(crate) fn created(b: &mut Builder, order: &Order, labels: &Labels) {
    if let Some(created) = facts::created(order, &b.layout().time_zone) {
        b.text(&format!("{} {created}", labels.ordered_at), Style::NORMAL);
    }
}

/// A bold label and its (wrapped) text below, e.g. the buyer's note; nothing when empty.
pub(crate) fn labelled_block(b: &mut Builder, label: &str, text: &str, style: Style) {
    if text.trim().is_empty() {
        return;
    }
    b.text(label, Style::NORMAL.bold());
    b.text(text, style);
}

/// "+ Extras: 2 x Spiegelei" (group and quantity only when present); empty when the
/// modifier names nothing.
pub(crate) fn modifier_text(m: &Modifier) -> String {
    let (group, name) = (m.group.trim(), m.name.trim());
    let name = if m.quantity > 1 && !name.is_empty() { format!("{} x {name}", m.quantity) } else { name.to_owned() };
    match (group.is_empty(), name.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!("+ {name}"),
        (false, true) => format!("+ {group}"),
        (false, false) => format!("+ {group}: {name}"),
    }
}

/// "<qty> x " of a line item: the hanging indent of the item's wrapped name.
pub(crate) fn quantity_prefix(quantity: u32) -> String {
    format!("{quantity} x ")
}
