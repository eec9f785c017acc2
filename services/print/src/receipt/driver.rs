//! The driver slip (delivery) / pickup slip: who gets the order, where, when, and whether
//! money is to be collected. The amount to collect is the only price it shows.

use wixprint_shared::proto::order::{FulfillmentType, Order};

use super::builder::{Builder, Style};
use super::common;
use super::document::Size;
use super::facts;
use super::labels::Labels;

pub(crate) fn render(b: &mut Builder, order: &Order, labels: &Labels) {
    let delivery = facts::is_delivery(order);
    let title = match facts::fulfillment_type(order) {
        FulfillmentType::Pickup => &labels.pickup_slip,
        FulfillmentType::Delivery | FulfillmentType::Unspecified => &labels.driver,
    };
    common::header(b, order, labels, title);
    b.rule('=');

    let big = Style::NORMAL.size(Size::DoubleHeight);
    let name = facts::customer_name(order);
    let phone = facts::phone(order);
    if !name.is_empty() || !phone.is_empty() {
        b.text(&labels.customer, Style::NORMAL);
        b.text(&name, big.bold());
        if !phone.is_empty() {
            b.text(&format!("{} {phone}", labels.phone), big);
        }
    }
    if delivery {
        let address = facts::address_lines(order);
        if !address.is_empty() {
            b.text(&labels.address, Style::NORMAL);
            for line in &address {
                b.text(line, big.bold());
            }
        }
    }
    common::labelled_block(b, &labels.instructions, facts::instructions(order), big);
    common::labelled_block(b, &labels.note, &order.buyer_note, big);
    common::promised_time(b, order, labels, Size::Double);
    b.rule('-');

    let double = Style::NORMAL.size(Size::Double).bold();
    if facts::is_paid(order) {
        b.text(&labels.paid, double);
    } else {
        b.text(&labels.cash_to_collect, double);
        if let Some(amount) = facts::amount_due(order) {
            b.text(&facts::with_currency(&facts::currency(order), amount), double);
        }
    }
    b.rule('-');
    b.text(&facts::number(order), double);
}
