//! Change slips and cancellation (STORNO) slips: short tickets that tell the kitchen or the
//! driver what is different about an order they already have on paper.

use wixprint_shared::proto::order::Order;
use wixprint_shared::proto::print::ReceiptType;

use super::builder::{Builder, Style};
use super::common::{self, quantity_prefix};
use super::document::Size;
use super::facts;
use super::labels::Labels;
use crate::changes::Change;

pub(crate) fn change(b: &mut Builder, order: &Order, kind: ReceiptType, changes: &[Change], labels: &Labels) {
    b.text(&labels.change, Style::BANNER);
    common::header(b, order, labels, title(kind, labels));
    b.rule('=');
    let big = Style::NORMAL.size(Size::DoubleHeight).bold();
    for c in changes {
        match c {
            Change::Added { quantity, name, modifiers } => {
                b.text(&labels.added, Style::NORMAL.bold());
                let prefix = quantity_prefix(*quantity);
                b.indented(&format!("{prefix}{}", name.trim()), big, 0, prefix.len());
                for m in modifiers {
                    b.indented(&format!("+ {m}"), Style::NORMAL.size(Size::DoubleHeight), 2, 4);
                }
            }
            Change::Removed { quantity, name } => {
                b.text(&labels.removed, Style::NORMAL.bold());
                let prefix = quantity_prefix(*quantity);
                b.indented(&format!("{prefix}{}", name.trim()), big, 0, prefix.len());
            }
            Change::Quantity { name, from, to } => {
                b.text(&labels.quantity, Style::NORMAL.bold());
                b.indented(&format!("{} {from} -> {to}", name.trim()), big, 0, 2);
            }
            Change::Modifiers { name, added, removed } => {
                b.text(&format!("{} {}", labels.change, name.trim()), Style::NORMAL.bold());
                for m in removed {
                    b.indented(&format!("- {m}"), Style::NORMAL.size(Size::DoubleHeight), 2, 4);
                }
                for m in added {
                    b.indented(&format!("+ {m}"), Style::NORMAL.size(Size::DoubleHeight), 2, 4);
                }
            }
            Change::Note { to } => common::labelled_block(b, &labels.new_note, to, big),
            Change::Time => {
                b.text(&labels.new_time, Style::NORMAL.bold());
                common::promised_time(b, order, labels, Size::Double);
            }
            Change::Address => {
                b.text(&labels.new_address, Style::NORMAL.bold());
                if let Some(a) = order.fulfillment.as_ref().and_then(|f| f.address.as_ref()) {
                    for line in [a.line1.as_str(), a.line2.as_str(), &format!("{} {}", a.postal_code, a.city)] {
                        b.text(line.trim(), big);
                    }
                }
                if let Some(f) = order.fulfillment.as_ref() {
                    b.text(f.instructions.trim(), Style::NORMAL);
                }
            }
            Change::Phone { to } => {
                b.text(&labels.new_phone, Style::NORMAL.bold());
                b.text(to, big);
            }
        }
        b.rule('-');
    }
}

pub(crate) fn storno(b: &mut Builder, order: &Order, kind: ReceiptType, labels: &Labels) {
    b.text(&labels.storno, Style::BANNER);
    common::header(b, order, labels, title(kind, labels));
    b.text(&labels.storno_detail, Style::NORMAL.size(Size::DoubleHeight).bold());
    b.rule('=');
    for line in &order.line_items {
        let prefix = quantity_prefix(line.quantity);
        b.indented(&format!("{prefix}{}", line.name.trim()), Style::NORMAL, 0, prefix.len());
    }
    b.rule('-');
    let name = facts::customer_name(order);
    if !name.is_empty() {
        b.text(&format!("{} {name}", labels.customer), Style::NORMAL);
    }
    b.text(&labels.storno, Style::BANNER);
}

fn title(kind: ReceiptType, labels: &Labels) -> &str {
    match kind {
        ReceiptType::Driver => &labels.driver,
        ReceiptType::Customer => &labels.customer_receipt,
        _ => &labels.kitchen,
    }
}
