//! The kitchen ticket: what to cook and by when. Never a price or a currency: the kitchen
//! does not need them, and a ticket with prices on it gets handed to customers.

use wixprint_shared::proto::order::Order;

use super::allergy;
use super::builder::{Builder, Style};
use super::common::{self, modifier_text, quantity_prefix};
use super::document::Size;
use super::facts;
use super::labels::Labels;

/// Modifiers sit two columns in, their continuation lines under the modifier's name.
const MODIFIER_INDENT: usize = 2;
const MODIFIER_WRAP_INDENT: usize = 4;

pub(crate) fn render(b: &mut Builder, order: &Order, labels: &Labels) {
    common::header(b, order, labels, &labels.kitchen);
    common::promised_time(b, order, labels, Size::Double);
    common::created(b, order, labels);
    allergy::block(b, order, labels);
    b.rule('=');

    let item = Style::NORMAL.size(Size::DoubleHeight).bold();
    let modifier = Style::NORMAL.size(Size::DoubleHeight);
    for line in &order.line_items {
        let prefix = quantity_prefix(line.quantity);
        b.indented(&format!("{prefix}{}", line.name.trim()), item, 0, prefix.len());
        for m in &line.modifiers {
            b.indented(&modifier_text(m), modifier, MODIFIER_INDENT, MODIFIER_WRAP_INDENT);
        }
    }
    b.rule('-');

    if !order.buyer_note.trim().is_empty() {
        common::labelled_block(b, &labels.note, &order.buyer_note, Style::NORMAL.size(Size::DoubleHeight).bold());
        b.rule('-');
    }
    b.text(&format!("{} {}", labels.items, facts::item_count(order)), Style::NORMAL.bold());
    let name = facts::customer_name(order);
    if !name.is_empty() {
        b.text(&format!("{} {name}", labels.customer), Style::NORMAL);
    }
}
