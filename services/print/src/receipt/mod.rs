//! Receipt rendering: turns a domain [`Order`] into a [`Document`] (styled lines) for one
//! receipt type (kitchen ticket, driver/pickup slip, customer receipt), and a document into
//! plain text (admin previews, tests) or ESC/POS bytes (the printer).
//!
//! Owns: the layouts, the labels (German/English), line wrapping, money and time formatting,
//! and the ESC/POS bytes of the ticket body up to and including the cut.
//!
//! Must never: do I/O, touch the database or the printer connection, append the printer's
//! confirmation request (`GS ( H` / `GS r`, the driver adds it after the cut), hard-code a
//! currency, use floats for money, or panic on any order (rendering happens after a job was
//! committed; a panic here would leave the job stuck forever).
//!
//! Invariant every layout relies on: every [`Line`] the builder produces is already in its
//! printable form for the layout's code page (one `char` = one byte = one column, no control
//! characters) and fits `layout.width` (double-width sizes count twice).

mod allergy;
mod builder;
mod common;
mod customer;
mod document;
mod driver;
mod facts;
mod kitchen;
mod labels;
mod money;
mod slips;
mod text;

#[cfg(test)]
mod tests;

pub use allergy::{allergy_matches, contains_word, default_allergy_words};
pub use document::{Align, Document, Line, Size};
pub use labels::Labels;

use jiff::tz::TimeZone;
use wixprint_shared::codepage::CodePage;
use wixprint_shared::proto::order::Order;
use wixprint_shared::proto::print::ReceiptType;

use builder::{Builder, Style};

/// How receipts are laid out on this printer.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Columns in Font A (48 on 80 mm paper, 42, 32 on 58 mm). Values below 1 count as 1.
    pub width: usize,
    pub code_page: CodePage,
    /// Times are printed in this zone (orders carry UTC instants).
    pub time_zone: TimeZone,
    /// Header of the customer receipt; empty prints no header.
    pub restaurant_name: String,
    /// Words that put the kitchen ticket's ALLERGY block on top when the buyer's note or a
    /// modifier contains one (whole words, any case; "gluten-free" matches those two words).
    /// Empty prints no allergy block.
    pub allergy_words: Vec<String>,
}

impl Layout {
    /// A layout of `width` columns with PC858, UTC, no restaurant name and the
    /// [default allergy words](default_allergy_words).
    pub fn new(width: usize) -> Layout {
        Layout {
            width,
            code_page: CodePage::Pc858,
            time_zone: TimeZone::UTC,
            restaurant_name: String::new(),
            allergy_words: default_allergy_words(),
        }
    }
}

/// Renders `order` as a receipt of `kind`. `banner` (e.g. "KOPIE / REPRINT" for a reprint after
/// an uncertain outcome) is printed big and reversed at the very top and the very bottom, so a
/// copy is recognisable whichever end of the ticket the reader looks at.
///
/// `ReceiptType::Unspecified` renders the kitchen ticket: it shows no prices, so it is the
/// least harmful guess.
pub fn render(order: &Order, kind: ReceiptType, layout: &Layout, banner: Option<&str>) -> Document {
    let mut b = Builder::new(layout);
    let labels = Labels::for_order(order);
    let banner = banner.map(str::trim).filter(|s| !s.is_empty());
    if let Some(text) = banner {
        b.text(text, Style::BANNER);
    }
    match kind {
        ReceiptType::Kitchen | ReceiptType::Unspecified => kitchen::render(&mut b, order, labels),
        ReceiptType::Driver => driver::render(&mut b, order, labels),
        ReceiptType::Customer => customer::render(&mut b, order, labels),
    }
    if let Some(text) = banner {
        b.text(text, Style::BANNER);
    }
    b.finish()
}

/// Renders a change slip for `order` (the new version) listing `changes` for `kind`.
pub fn render_change(
    order: &Order,
    kind: ReceiptType,
    changes: &[crate::changes::Change],
    layout: &Layout,
    banner: Option<&str>,
) -> Document {
    framed(layout, banner, |b| slips::change(b, order, kind, changes, Labels::for_order(order)))
}

/// Renders the cancellation slip for `order` on `kind`'s printer.
pub fn render_storno(order: &Order, kind: ReceiptType, layout: &Layout, banner: Option<&str>) -> Document {
    framed(layout, banner, |b| slips::storno(b, order, kind, Labels::for_order(order)))
}

fn framed(layout: &Layout, banner: Option<&str>, body: impl FnOnce(&mut Builder)) -> Document {
    let mut b = Builder::new(layout);
    let banner = banner.map(str::trim).filter(|s| !s.is_empty());
    if let Some(text) = banner {
        b.text(text, Style::BANNER);
    }
    body(&mut b);
    if let Some(text) = banner {
        b.text(text, Style::BANNER);
    }
    b.finish()
}
