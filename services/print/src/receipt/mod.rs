//! Receipt rendering: turns a domain [`Order`] into a [`Document`] (styled lines) for one
//! receipt type (kitchen ticket, driver/pickup slip, customer receipt), and a document into
//! plain text (admin previews, tests) or ESC/POS bytes (the printer).
//!
//! Owns: the layouts (the customer receipt's restaurant header and footer included), the
//! labels (German/English built in, more from a label file) and which language an order
//! gets, line wrapping, money and time formatting, QR codes, and the ESC/POS bytes of the
//! ticket body up to and including the cut (font, buzzer).
//!
//! Must never: do I/O, touch the database or the printer connection, append the printer's
//! confirmation request (`GS ( H` / `GS r`, the driver adds it after the cut), hard-code a
//! currency, use floats for money, or panic on any order (rendering happens after a job was
//! committed; a panic here would leave the job stuck forever).
//!
//! Invariant every layout relies on: every [`Line`] the builder produces is already in its
//! printable form for the layout's code page (no control characters; every character is
//! either one byte of the code page, or a character the bundled font draws, or an emoji newer
//! than the font, drawn as an empty box; a line with any of the latter two prints as one raster
//! image, `GS v 0`) and fits `layout.width` counted in printer columns, never in chars: a
//! code-page character takes 1, a drawn one [`glyphs::columns`](crate::glyphs::columns) (Thai
//! vowel and tone marks 0, CJK, Hangul and emoji 2, most others 1); double-width sizes count
//! twice. One function measures this everywhere (`text::columns_of`). A QR line has no text;
//! its data is sanitised (no control characters, at most 300 bytes).

mod allergy;
mod builder;
mod common;
mod customer;
mod document;
mod driver;
mod facts;
mod kitchen;
mod label_book;
mod labels;
mod money;
mod slips;
mod text;

#[cfg(test)]
mod tests;

pub use allergy::{allergy_matches, contains_word, default_allergy_words};
pub use document::{Align, Document, Font, Line, Size};
pub use label_book::LabelBook;
pub use labels::Labels;

use std::sync::Arc;

use jiff::tz::TimeZone;
use wixprint_shared::codepage::CodePage;
use wixprint_shared::proto::order::Order;
use wixprint_shared::proto::print::ReceiptType;

use builder::{Builder, Style};

/// How receipts are laid out on this printer.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Columns in the layout's font: Font A 48 on 80 mm paper, 42, 32 on 58 mm; Font B 64 on
    /// 80 mm. Values below 1 count as 1.
    pub width: usize,
    /// The font `width` counts in; [`Font::for_width`] is the one that fits.
    pub font: Font,
    pub code_page: CodePage,
    /// Times are printed in this zone (orders carry UTC instants).
    pub time_zone: TimeZone,
    /// Header and footer of the customer receipt; empty fields print nothing.
    pub restaurant: Restaurant,
    /// Words that put the kitchen ticket's ALLERGY block on top when the buyer's note or a
    /// modifier contains one (whole words, any case; "gluten-free" matches those two words).
    /// Empty prints no allergy block.
    pub allergy_words: Vec<String>,
    /// Sound the printer's buzzer when a ticket has printed, before the cut (so the kitchen
    /// hears a ticket arrive).
    pub buzzer: bool,
    /// Language of the labels ("de", "en", "fr", "de-CH" ...) for every order; `None` (or
    /// blank) follows the order: the buyer's language, else the site's.
    pub language: Option<String>,
    /// The label texts per language.
    pub labels: Arc<LabelBook>,
}

/// The restaurant as the customer receipt names it. Every field is optional (empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restaurant {
    /// Printed big and bold at the top.
    pub name: String,
    /// Lines under the name ("Bahnhofstrasse 1", "9470 Buchs SG").
    pub address: Vec<String>,
    /// Printed as "Tel. <phone>".
    pub phone: String,
    /// Printed as "MWST-Nr. <vat_id>" / "VAT no. <vat_id>".
    pub vat_id: String,
    /// Lines after the payment ("Danke für Ihren Besuch!").
    pub footer: Vec<String>,
    /// Content of a QR code under the footer; `{order_number}` and `{order_id}` are replaced
    /// by the order's. Empty prints no QR code.
    pub qr: String,
}

impl Layout {
    /// A layout of `width` columns in [the font that fits](Font::for_width), with PC858,
    /// UTC, no restaurant header or footer, the [default allergy words](default_allergy_words),
    /// no buzzer, the order's language and the [built-in labels](LabelBook::builtin).
    pub fn new(width: usize) -> Layout {
        Layout {
            width,
            font: Font::for_width(width),
            code_page: CodePage::Pc858,
            time_zone: TimeZone::UTC,
            restaurant: Restaurant::default(),
            allergy_words: default_allergy_words(),
            buzzer: false,
            language: None,
            labels: Arc::new(LabelBook::builtin()),
        }
    }

    /// Changes the width and picks the font that fits it (a preview at another width).
    pub fn set_width(&mut self, width: usize) {
        self.width = width;
        self.font = Font::for_width(width);
    }

    /// The labels `order` is printed with (see [`LabelBook::for_order`]).
    pub fn labels_for(&self, order: &Order) -> &Labels {
        self.labels.for_order(order, self.language.as_deref())
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
    let labels = layout.labels_for(order);
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
        b.closing(text, Style::BANNER);
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
    framed(layout, banner, |b| slips::change(b, order, kind, changes, layout.labels_for(order)))
}

/// Renders the cancellation slip for `order` on `kind`'s printer.
pub fn render_storno(order: &Order, kind: ReceiptType, layout: &Layout, banner: Option<&str>) -> Document {
    framed(layout, banner, |b| slips::storno(b, order, kind, layout.labels_for(order)))
}

fn framed(layout: &Layout, banner: Option<&str>, body: impl FnOnce(&mut Builder)) -> Document {
    let mut b = Builder::new(layout);
    let banner = banner.map(str::trim).filter(|s| !s.is_empty());
    if let Some(text) = banner {
        b.text(text, Style::BANNER);
    }
    body(&mut b);
    if let Some(text) = banner {
        b.closing(text, Style::BANNER);
    }
    b.finish()
}
