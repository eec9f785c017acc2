//! Receipt tests on hand-built domain orders mirroring the Wix fixtures in
//! tests/fixtures/wix (order_created.pickup.json, order_approved.delivery.json).

use jiff::tz::{self, TimeZone};
use wixprint_shared::codepage::CodePage;
use wixprint_shared::proto::order::{
    Address, Contact, Fulfillment, FulfillmentType, LineItem, Modifier, Order, OrderStatus, PaymentStatus, PriceSummary,
};
use wixprint_shared::proto::print::ReceiptType;

use super::builder::{MAX_LINES, MAX_RASTER_LINES, MAX_TEXT_CHARS};
use super::text::{columns, columns_of, needs_raster, printable, wrap};
use super::{Align, Document, Font, Layout, Line, Restaurant, Size, render};

const KINDS: [ReceiptType; 4] =
    [ReceiptType::Kitchen, ReceiptType::Driver, ReceiptType::Customer, ReceiptType::Unspecified];
const BANNER: &str = "KOPIE / REPRINT";

fn ts(rfc3339: &str) -> prost_types::Timestamp {
    let t: jiff::Timestamp = rfc3339.parse().unwrap();
    prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() }
}

fn item(name: &str, quantity: u32, unit: &str, total: &str, modifiers: Vec<Modifier>) -> LineItem {
    LineItem {
        id: format!("li-{name}"),
        name: name.into(),
        quantity,
        unit_price: unit.into(),
        line_total: total.into(),
        modifiers,
    }
}

fn modifier(group: &str, name: &str, quantity: u32, price: &str) -> Modifier {
    Modifier { group: group.into(), name: name.into(), quantity, price: price.into() }
}

/// order_created.pickup.json as a domain order.
fn pickup() -> Order {
    Order {
        id: "6d6062d8-0000-4000-8000-0000000000a1".into(),
        number: "10033".into(),
        created_at: Some(ts("2025-09-24T17:53:25.532Z")),
        updated_at: Some(ts("2025-09-24T17:53:25.532Z")),
        status: OrderStatus::Approved as i32,
        payment_status: PaymentStatus::NotPaid as i32,
        fulfillment: Some(Fulfillment {
            r#type: FulfillmentType::Pickup as i32,
            title: "Abholung".into(),
            address: None,
            contact: Some(Contact {
                first_name: "Max".into(),
                last_name: "Muster".into(),
                phone: "+41790000000".into(),
                ..Default::default()
            }),
            promised_from: Some(ts("2025-09-24T18:24:00Z")),
            promised_to: None,
            promised_text: "24.09.25 20:24".into(),
            asap: false,
            instructions: String::new(),
        }),
        line_items: vec![
            item("Nam Tok", 3, "26.00", "78.00", vec![modifier("", "Ente", 1, "")]),
            item("Som Tam", 3, "18.00", "54.00", vec![]),
        ],
        buyer_note: "Bitte ohne Koriander".into(),
        price_summary: Some(PriceSummary {
            subtotal: "132.00".into(),
            discount: "0.00".into(),
            shipping: "0.00".into(),
            fees: String::new(),
            tax: "0.00".into(),
            total: "132.00".into(),
            balance_due: "132.00".into(),
            currency: "CHF".into(),
            paid: "0".into(),
        }),
        buyer_language: "de".into(),
        site_language: "de".into(),
        ..Default::default()
    }
}

const LONG_NAME: &str = "Käsespätzle mit Röstzwiebeln und extra großer Portion Bergkäse";

/// order_approved.delivery.json as a domain order.
fn delivery() -> Order {
    Order {
        id: "a1b2c3d4-0000-4000-8000-0000000000b2".into(),
        number: "10034".into(),
        created_at: Some(ts("2025-09-24T18:05:11.101Z")),
        status: OrderStatus::Approved as i32,
        payment_status: PaymentStatus::Paid as i32,
        fulfillment: Some(Fulfillment {
            r#type: FulfillmentType::Delivery as i32,
            title: "Lieferung".into(),
            address: Some(Address {
                line1: "Sendlinger Straße 7".into(),
                line2: "3. Stock, Hinterhaus".into(),
                postal_code: "80331".into(),
                city: "München".into(),
                country: "DE".into(),
                ..Default::default()
            }),
            contact: Some(Contact {
                first_name: "Jürgen".into(),
                last_name: "Jäger".into(),
                phone: "+49 89 0000000".into(),
                ..Default::default()
            }),
            promised_from: Some(ts("2025-09-24T18:40:00Z")),
            promised_to: Some(ts("2025-09-24T18:50:00Z")),
            promised_text: "24.09.25 20:50".into(),
            asap: true,
            instructions: "Hintereingang benutzen".into(),
        }),
        line_items: vec![
            item(
                LONG_NAME,
                2,
                "12.90",
                "25.80",
                vec![
                    modifier("Größe", "Groß", 1, ""),
                    modifier("Extras", "Speck", 1, "1.50"),
                    modifier("Extras", "Spiegelei", 2, "1.00"),
                ],
            ),
            item("Weißbier 0,5 l", 1, "4.90", "4.90", vec![]),
            item("Reis (Beilage)", 1, "3.00", "3.00", vec![modifier("Hinweis", "kein Salz", 1, "")]),
        ],
        buyer_note: "Allergie: Erdnüsse! Bitte klingeln bei Jäger, 3. Stock".into(),
        price_summary: Some(PriceSummary {
            subtotal: "33.70".into(),
            discount: "2.00".into(),
            shipping: "3.50".into(),
            fees: String::new(),
            tax: "5.94".into(),
            total: "35.20".into(),
            balance_due: "0.00".into(),
            currency: "EUR".into(),
            paid: "35.20".into(),
        }),
        buyer_language: "de".into(),
        site_language: "de".into(),
        ..Default::default()
    }
}

/// The restaurant's layout: 80 mm, Zurich summer time (UTC+2 on the fixtures' date), only the
/// restaurant's name configured.
fn layout(width: usize) -> Layout {
    Layout {
        time_zone: TimeZone::fixed(tz::offset(2)),
        restaurant: Restaurant { name: "Thai Take-Away Zürich".into(), ..Restaurant::default() },
        ..Layout::new(width)
    }
}

fn text(order: &Order, kind: ReceiptType) -> String {
    let l = layout(48);
    render(order, kind, &l, None).to_text(&l)
}

/// Every line fits the width in printer columns (double-width sizes count twice), is in
/// printable form (a text line one byte per char; a line with characters the code page
/// lacks is an image line), and carries no control characters or trailing spaces.
fn assert_fits(doc: &Document, layout: &Layout) {
    let cp = layout.code_page;
    for line in &doc.lines {
        let cols = columns_of(&line.text, cp);
        assert!(
            cols * line.size.column_factor() <= layout.width,
            "{:?} line of {cols} columns is wider than {} columns: {:?}",
            line.size,
            layout.width,
            line.text
        );
        assert!(!line.text.chars().any(char::is_control), "control character in {:?}", line.text);
        assert_eq!(line.text, printable(&line.text, cp), "not in printable form: {:?}", line.text);
        if !needs_raster(&line.text, cp) {
            assert_eq!(
                cp.encode(&line.text).len(),
                line.text.chars().count(),
                "not one byte per char: {:?}",
                line.text
            );
        }
        assert_eq!(line.text.trim_end(), line.text, "trailing spaces: {:?}", line.text);
    }
    let text = doc.to_text(layout);
    assert_eq!(text.lines().count(), doc.lines.len());
    for l in text.lines() {
        assert!(columns_of(l, cp) <= layout.width, "to_text line too long: {l:?}");
    }
    // Image data never carries a real-time command the printer would execute.
    assert_no_realtime_in_images(&doc.to_escpos(layout));
}

/// Walks the ESC/POS of a document: inside every `GS v 0` image, no `10 04|05|14`.
fn assert_no_realtime_in_images(bytes: &[u8]) {
    let mut i = 0;
    while i + 8 <= bytes.len() {
        if bytes[i] == 0x1D && bytes[i + 1] == b'v' && bytes[i + 2] == b'0' {
            let row = usize::from(u16::from_le_bytes([bytes[i + 4], bytes[i + 5]]));
            let rows = usize::from(u16::from_le_bytes([bytes[i + 6], bytes[i + 7]]));
            let data = &bytes[i + 8..(i + 8 + row * rows).min(bytes.len())];
            for w in data.windows(2) {
                assert!(!(w[0] == 0x10 && matches!(w[1], 0x04 | 0x05 | 0x14)), "real-time command inside an image");
            }
            i += 8 + row * rows;
        } else {
            i += 1;
        }
    }
}

/// The document's text without any whitespace: wrapping only ever inserts whitespace, so a
/// value that was printed completely is a substring of this.
fn squeezed(doc: &Document) -> String {
    doc.lines.iter().flat_map(|l| l.text.chars()).filter(|c| !c.is_whitespace()).collect()
}

fn squeeze(s: &str, cp: CodePage) -> String {
    printable(s, cp).chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn kitchen_ticket_shows_what_to_cook_and_no_prices() {
    let t = text(&pickup(), ReceiptType::Kitchen);
    for word in [
        "10033",
        "ABHOLUNG",
        "KÜCHE",
        "3 x Nam Tok",
        "+ Ente",
        "3 x Som Tam",
        "NOTIZ:",
        "Bitte ohne Koriander",
        "Artikel: 6",
        "Kunde: Max Muster",
    ] {
        assert!(t.contains(word), "kitchen ticket lacks {word:?}:\n{t}");
    }
    // Promised 18:24 UTC is 20:24 in Zurich; ordered 19:53 local.
    assert!(t.contains("20:24"), "{t}");
    assert!(t.contains("Bestellt: 24.09.2025 19:53"), "{t}");
    for price in ["26.00", "18.00", "54.00", "78.00", "132.00", "CHF"] {
        assert!(!t.contains(price), "kitchen ticket shows a price ({price}):\n{t}");
    }
    let doc = render(&pickup(), ReceiptType::Kitchen, &layout(48), None);
    let number = doc.lines.iter().find(|l| l.text == "#10033").expect("number line");
    assert_eq!(number.size, Size::Double);
    let item = doc.lines.iter().find(|l| l.text == "3 x Nam Tok").expect("item line");
    assert!(item.bold && item.size == Size::DoubleHeight);
    let time = doc.lines.iter().find(|l| l.text == "20:24").expect("promised time line");
    assert_eq!(time.size, Size::Double);
}

#[test]
fn kitchen_ticket_of_the_delivery_order_has_modifier_groups_and_no_prices() {
    let t = text(&delivery(), ReceiptType::Kitchen);
    for word in [
        "LIEFERUNG",
        "+ Größe: Groß",
        "+ Extras: Speck",
        "+ Extras: 2 x Spiegelei",
        "+ Hinweis: kein Salz",
        "Erdnüsse",
        "Artikel: 4",
        "SOFORT",
    ] {
        assert!(t.contains(word), "kitchen ticket lacks {word:?}:\n{t}");
    }
    // A slot prints as a range.
    assert!(t.contains("20:40-20:50 SOFORT"), "{t}");
    for price in ["12.90", "25.80", "1.50", "35.20", "EUR"] {
        assert!(!t.contains(price), "kitchen ticket shows a price ({price}):\n{t}");
    }
}

#[test]
fn customer_receipt_prices_everything_in_the_orders_currency() {
    let t = text(&pickup(), ReceiptType::Customer);
    assert!(t.contains("132.00") && t.contains("CHF"), "{t}");
    assert!(!t.contains("EUR"), "foreign currency on the receipt:\n{t}");
    assert!(t.contains("  3 x 26.00"), "{t}");
    assert!(t.contains("Thai Take-Away Zürich"), "{t}");
    // Zero adjustments are left out.
    for absent in ["Rabatt", "Liefergebühr", "MwSt.", "Gebühren", "BEZAHLT"] {
        assert!(!t.contains(absent), "{absent:?} on the receipt:\n{t}");
    }
    let lines: Vec<&str> = t.lines().collect();
    let item = lines.iter().find(|l| l.starts_with("3 x Nam Tok")).expect("item line");
    assert!(item.ends_with(" 78.00") && item.chars().count() == 48, "{item:?}");
    let total = lines.iter().find(|l| l.starts_with("TOTAL")).expect("total line");
    assert!(total.ends_with("CHF 132.00") && total.chars().count() == 48, "{total:?}");
    let due = lines.iter().find(|l| l.starts_with("Offener Betrag")).expect("balance line");
    assert!(due.ends_with("CHF 132.00"), "{due:?}");
    let doc = render(&pickup(), ReceiptType::Customer, &layout(48), None);
    let total = doc.lines.iter().find(|l| l.text.starts_with("TOTAL")).unwrap();
    assert!(total.bold && total.size == Size::DoubleHeight);
}

#[test]
fn customer_receipt_of_the_paid_delivery_order() {
    let t = text(&delivery(), ReceiptType::Customer);
    assert!(!t.contains("CHF"), "{t}");
    let lines: Vec<&str> = t.lines().collect();
    let ends = |label: &str, amount: &str| {
        let line = lines.iter().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no {label:?} line:\n{t}"));
        assert!(line.ends_with(amount) && line.chars().count() == 48, "{line:?}");
    };
    ends("Zwischensumme", " 33.70");
    ends("Rabatt", " -2.00");
    ends("Liefergebühr", " 3.50");
    ends("inkl. MwSt.", " 5.94");
    ends("TOTAL", " EUR 35.20");
    ends("  + Extras: Speck", " 1.50");
    ends("  + Extras: 2 x Spiegelei", " 1.00");
    assert!(t.contains("BEZAHLT"), "{t}");
    assert!(!t.contains("Offener Betrag"), "{t}");
    // The long name wraps under itself and its amount ends its last line.
    let first = lines.iter().position(|l| l.starts_with("2 x Käsespätzle")).expect("item line");
    assert!(!lines[first].contains("25.80"), "{t}");
    let last = lines[first..].iter().find(|l| l.ends_with(" 25.80")).expect("amount line");
    assert!(last.starts_with("    "), "continuation not indented: {last:?}");
    let doc = render(&delivery(), ReceiptType::Customer, &layout(48), None);
    assert!(squeezed(&doc).contains(&squeeze(LONG_NAME, CodePage::Pc858)), "{t}");
}

#[test]
fn tax_not_contained_in_the_total_is_labelled_plainly() {
    let mut o = delivery();
    o.price_summary.as_mut().unwrap().total = "41.14".into();
    let t = text(&o, ReceiptType::Customer);
    assert!(t.contains("MwSt.") && !t.contains("inkl. MwSt."), "{t}");
}

#[test]
fn driver_slip_collects_cash_for_the_unpaid_pickup_order() {
    let t = text(&pickup(), ReceiptType::Driver);
    for word in
        ["ABHOLSCHEIN", "BAR ZU KASSIEREN", "CHF 132.00", "Max Muster", "+41790000000", "20:24", "Bitte ohne Koriander"]
    {
        assert!(t.contains(word), "driver slip lacks {word:?}:\n{t}");
    }
    assert!(!t.contains("BEZAHLT"), "{t}");
    assert!(!t.contains("26.00"), "{t}");
    // The number at the top and again at the bottom.
    assert_eq!(t.matches("#10033").count(), 2, "{t}");
    let doc = render(&pickup(), ReceiptType::Driver, &layout(48), None);
    for word in ["BAR ZU KASSIEREN", "CHF 132.00"] {
        assert_eq!(doc.lines.iter().find(|l| l.text == word).map(|l| l.size), Some(Size::Double), "{word}");
    }
    assert_eq!(doc.lines.last().map(|l| l.text.as_str()), Some("#10033"));
}

#[test]
fn driver_slip_of_the_paid_delivery_order() {
    let t = text(&delivery(), ReceiptType::Driver);
    for word in [
        "FAHRER",
        "LIEFERUNG",
        "BEZAHLT",
        "Jürgen Jäger",
        "Tel. +49 89 0000000",
        "Sendlinger Straße 7",
        "3. Stock, Hinterhaus",
        "80331 München",
        "Hintereingang benutzen",
        "SOFORT",
    ] {
        assert!(t.contains(word), "driver slip lacks {word:?}:\n{t}");
    }
    assert!(!t.contains("KASSIEREN"), "{t}");
    assert!(!t.contains("35.20"), "{t}");
}

#[test]
fn driver_slip_collects_the_balance_rather_than_the_total() {
    let mut o = delivery();
    o.payment_status = PaymentStatus::PartiallyPaid as i32;
    o.price_summary.as_mut().unwrap().balance_due = "15.2".into();
    let t = text(&o, ReceiptType::Driver);
    assert!(t.contains("BAR ZU KASSIEREN") && t.contains("EUR 15.20"), "{t}");
    o.price_summary.as_mut().unwrap().balance_due = String::new();
    let t = text(&o, ReceiptType::Driver);
    assert!(t.contains("EUR 35.20"), "{t}");
}

#[test]
fn english_labels_unless_the_buyer_speaks_german() {
    let mut o = pickup();
    o.buyer_language = "en".into();
    let t = text(&o, ReceiptType::Driver);
    assert!(t.contains("PICKUP") && t.contains("CASH TO COLLECT") && t.contains("CHF 132.00"), "{t}");
    assert!(text(&o, ReceiptType::Kitchen).contains("NOTE:"));
    // The site language decides only when the buyer's is unknown.
    o.buyer_language = String::new();
    assert!(text(&o, ReceiptType::Driver).contains("BAR ZU KASSIEREN"));
    o.buyer_language = "de-CH".into();
    o.site_language = "en".into();
    assert!(text(&o, ReceiptType::Kitchen).contains("NOTIZ:"));
    let paid = text(&Order { buyer_language: "fr".into(), ..delivery() }, ReceiptType::Driver);
    assert!(paid.contains("PAID") && paid.contains("DELIVERY"), "{paid}");
}

#[test]
fn every_line_fits_every_width() {
    for width in [64, 48, 42, 32, 24] {
        for l in [layout(width), full_layout(width)] {
            for order in [pickup(), delivery(), Order::default()] {
                for kind in KINDS {
                    for banner in [None, Some(BANNER)] {
                        assert_fits(&render(&order, kind, &l, banner), &l);
                    }
                }
            }
        }
    }
}

#[test]
fn the_reprint_banner_is_at_the_very_top_and_bottom() {
    let l = layout(48);
    for kind in KINDS {
        let doc = render(&pickup(), kind, &l, Some(BANNER));
        for line in [doc.lines.first().unwrap(), doc.lines.last().unwrap()] {
            assert_eq!(line.text, BANNER);
            assert!(line.reverse && line.bold && line.size == Size::Double && line.align == Align::Center);
        }
        assert_eq!(doc.lines.iter().filter(|l| l.text.contains("KOPIE")).count(), 2);
        assert!(!render(&pickup(), kind, &l, None).to_text(&l).contains("KOPIE"));
    }
    // Centered in 24 double-width columns.
    let t = render(&pickup(), ReceiptType::Kitchen, &l, Some(BANNER)).to_text(&l);
    assert!(t.starts_with("    KOPIE / REPRINT\n"), "{t}");
}

#[test]
fn escpos_frames_the_ticket_and_encodes_pc858() {
    let l = layout(48);
    let doc = render(&delivery(), ReceiptType::Driver, &l, None);
    let bytes = doc.to_escpos(&l);
    assert!(bytes.starts_with(&[0x1B, 0x40, 0x1B, 0x74, 0x13]), "{:02X?}", &bytes[..8]);
    assert!(bytes.ends_with(&[0x1B, 0x64, 0x03, 0x1D, 0x56, 0x42, 0x00]));
    // "Jürgen": ü is 0x81 on PC858.
    assert!(bytes.windows(6).any(|w| w == [b'J', 0x81, b'r', b'g', b'e', b'n']));
    // No confirmation request: the printer driver appends its own after the cut.
    assert!(!bytes.windows(3).any(|w| w == [0x1D, 0x28, 0x48]), "GS ( H in the body");
    assert!(!bytes.windows(2).any(|w| w == [0x1D, 0x72]), "GS r in the body");
    // One LF per line, each line preceded by its full style.
    assert_eq!(bytes.iter().filter(|&&b| b == 0x0A).count(), doc.lines.len());
    let paid = doc.lines.iter().position(|l| l.text == "BEZAHLT").unwrap();
    let mut styled = vec![0x1D, 0x21, 0x11, 0x1B, 0x45, 0x01, 0x1D, 0x42, 0x00, 0x1B, 0x61, 0x00];
    styled.extend_from_slice(b"BEZAHLT\n");
    assert!(bytes.windows(styled.len()).any(|w| w == styled.as_slice()), "line {paid} not styled as expected");

    let wpc = Layout { code_page: CodePage::Wpc1252, ..layout(48) };
    let bytes = render(&delivery(), ReceiptType::Driver, &wpc, None).to_escpos(&wpc);
    assert!(bytes.starts_with(&[0x1B, 0x40, 0x1B, 0x74, 16]));
    assert!(bytes.windows(2).any(|w| w == [b'J', 0xFC]));
}

#[test]
fn escpos_text_is_the_preview_text() {
    // What the printer receives decodes to what the preview shows (alignment aside).
    let l = layout(42);
    let doc = render(&delivery(), ReceiptType::Customer, &l, Some(BANNER));
    let text = doc.to_text(&l);
    let bytes = doc.to_escpos(&l);
    for (line, shown) in doc.lines.iter().zip(text.lines()) {
        let encoded = l.code_page.encode(&line.text);
        assert!(
            bytes.windows(encoded.len() + 1).any(|w| w[..encoded.len()] == encoded[..] && w[encoded.len()] == 0x0A)
        );
        assert_eq!(l.code_page.decode(&encoded), line.text);
        assert_eq!(shown.trim_start(), line.text.trim_start());
    }
}

#[test]
fn to_text_aligns_in_the_lines_effective_width() {
    let line = |text: &str, size, align| Line { text: text.into(), size, bold: false, reverse: false, align, qr: None };
    let doc = Document {
        lines: vec![
            line("ab", Size::Normal, Align::Center),
            line("ab", Size::Double, Align::Center),
            line("ab", Size::DoubleWidth, Align::Right),
            line("ab", Size::DoubleHeight, Align::Right),
            line("", Size::Normal, Align::Center),
            line("a\u{0}b\u{1b}", Size::Normal, Align::Left),
        ],
    };
    let l = Layout::new(10);
    assert_eq!(doc.to_text(&l), "    ab\n ab\n   ab\n        ab\n\nab\n");
    assert_eq!(Document { lines: vec![] }.to_text(&l), "");
    // Hand-made lines with control characters never leak them to the printer.
    let bytes = doc.to_escpos(&l);
    assert!(bytes.windows(3).any(|w| w == b"ab\n"));
}

#[test]
fn layout_new_defaults() {
    let l = Layout::new(32);
    assert_eq!((l.width, l.code_page, &l.restaurant), (32, CodePage::Pc858, &Restaurant::default()));
    assert_eq!(l.time_zone, TimeZone::UTC);
    // UTC: the pickup promise prints as 18:24.
    assert!(render(&pickup(), ReceiptType::Kitchen, &l, None).to_text(&l).contains("18:24"));
}

#[test]
fn wrapping_never_cuts_anything_off() {
    let cp = CodePage::Pc858;
    assert_eq!(wrap("aaa bbb ccc", cp, 7, 0, 0), ["aaa bbb", "ccc"]);
    assert_eq!(wrap("abcdefghij", cp, 4, 0, 0), ["abcd", "efgh", "ij"]);
    assert_eq!(wrap("3 x abcdefghij", cp, 8, 0, 4), ["3 x abcd", "    efgh", "    ij"]);
    assert_eq!(wrap("3 x abc defg", cp, 8, 0, 4), ["3 x abc", "    defg"], "a word that fits a fresh line moves there");
    assert_eq!(wrap("+ a b", cp, 5, 2, 4), ["  + a", "  b"], "indents are clamped to half the width");
    assert_eq!(wrap("eins\n\n\nzwei\r\ndrei", cp, 20, 0, 0), ["eins", "zwei", "drei"]);
    assert_eq!(wrap("  \n\t ", cp, 20, 0, 0), Vec::<String>::new());
    assert_eq!(wrap("ab", cp, 0, 5, 5), ["a", "b"]);
    assert_eq!(columns("Nam Tok", "78.00", cp, 16, 0, 0), ["Nam Tok    78.00"]);
    assert_eq!(columns("aaaa bbbb cccc", "1.00", cp, 14, 0, 2), ["aaaa bbbb", "  cccc    1.00"]);
    assert_eq!(columns("", "1.00", cp, 8, 0, 0), ["    1.00"]);
    // An amount too long for a column gets its own right-aligned lines.
    assert_eq!(columns("TOTAL", "CHF 132.00", cp, 12, 0, 0), ["TOTAL", "  CHF 132.00"]);
    assert_eq!(columns("x", "123456", cp, 4, 0, 0), ["x", "1234", "  56"]);
}

#[test]
fn text_is_made_printable() {
    let cp = CodePage::Pc858;
    assert_eq!(printable("Mu\u{308}ller Cafe\u{301}", cp), "Müller Café");
    assert_eq!(printable("a\u{0}b\u{1b}c\u{7f}\td", cp), "abc d");
    assert_eq!(printable("„Hi“ – ok…", cp), "\"Hi\" - ok...");
    // Emoji keep their glyph (printed as an image line); skin tones and VS16 are invisible.
    assert_eq!(printable("Pizza 🍕 👍🏽 ❤️", cp), "Pizza 🍕 👍 ❤");
    assert_eq!(printable("zero\u{200B}width\u{00AD}", cp), "zerowidth");
    assert_eq!(printable("\u{308}x\u{301}", cp), "x");
    assert_eq!(printable("中文", cp), "中文");
    assert_eq!(printable("ต้มยำกุ้ง", cp), "ต้มยำกุ้ง", "Thai keeps its vowel and tone marks");
    assert_eq!(printable("\u{E000}\u{10FFFD}", cp), "??", "private use has no glyph");
}

#[test]
fn hostile_input_never_panics_and_never_overflows() {
    let long = "Ä".repeat(10_000);
    let mut o = pickup();
    o.number = "\u{0}1\u{1b}@0033\u{7}".into();
    o.line_items[0].name = long.clone();
    o.line_items[0].quantity = u32::MAX;
    o.line_items[0].unit_price = "99999999999999999999".into();
    o.line_items[0].line_total = String::new();
    o.line_items[1].name = format!("{} Tom Yum", "x".repeat(5000));
    o.line_items[1].modifiers = vec![modifier(&"G".repeat(300), &"\n".repeat(100), 7, "-0.5"), modifier("", "", 0, "")];
    o.buyer_note = "\u{0}\n\r\t\u{1b}@\u{1d}V".repeat(100);
    o.price_summary.as_mut().unwrap().currency = "\u{1b}\u{0}".repeat(10);
    o.price_summary.as_mut().unwrap().total = "1".repeat(27);
    o.fulfillment.as_mut().unwrap().promised_from = Some(prost_types::Timestamp { seconds: i64::MAX, nanos: -5 });
    o.created_at = Some(prost_types::Timestamp { seconds: i64::MIN, nanos: i32::MAX });
    for width in [64, 48, 32, 24, 3, 1, 0] {
        let mut l = full_layout(width);
        l.restaurant.footer.push(long.clone());
        l.restaurant.qr = format!("\u{0}{}{{order_number}}{{order_id}}\u{1b}", "\u{1d}V".repeat(1000));
        l.buzzer = true;
        for kind in KINDS {
            let doc = render(&o, kind, &l, Some(&"KOPIE".repeat(50)));
            if width > 0 {
                assert_fits(&doc, &l);
            }
            let _ = doc.to_escpos(&l);
            // A long name prints up to the cap and says it was cut (at width 1 the ticket's
            // own line cap comes first).
            let (kept, marked) = ("Ä".repeat(MAX_TEXT_CHARS - 50), "Ä...(truncated)");
            let sq = squeezed(&doc);
            assert!(
                (sq.contains(&kept) && sq.contains(marked) && !sq.contains(&"Ä".repeat(MAX_TEXT_CHARS + 1)))
                    || kind == ReceiptType::Driver
                    || width < 24,
                "{width} {kind:?}: the long name was not cut and marked: {}",
                doc.to_text(&l)
            );
            // The cap, its marker, and the closing banner (250 characters: at 3 columns a line each).
            assert!(doc.lines.len() <= MAX_LINES + 20 + 250, "{width} {kind:?}: {} lines", doc.lines.len());
            assert!(squeezed(&doc).contains("#1@0033"), "control characters not stripped from the number");
        }
    }
    let l = layout(48);
    let kitchen = render(&o, ReceiptType::Kitchen, &l, None);
    assert!(kitchen.lines.iter().any(|l| l.text.starts_with("4294967295 x ÄÄÄ")));
    assert!(squeezed(&kitchen).contains("+GGGG"), "modifier group lost");
}

/// Image lines (`GS v 0`) in a ticket's ESC/POS.
fn raster_images(bytes: &[u8]) -> usize {
    bytes.windows(3).filter(|w| w == &[0x1D, b'v', b'0']).count()
}

#[test]
fn a_huge_note_prints_a_bounded_ticket_quickly() {
    let mut o = pickup();
    o.buyer_note = "Bitte klingeln. ".repeat(81_250); // 1.3 million characters
    let l = full_layout(48);
    let started = std::time::Instant::now();
    for kind in KINDS {
        let doc = render(&o, kind, &l, Some(BANNER));
        assert_fits(&doc, &l);
        let text = doc.to_text(&l);
        let bytes = doc.to_escpos(&l);
        if matches!(kind, ReceiptType::Kitchen | ReceiptType::Unspecified) {
            assert!(text.contains("... (truncated)"), "{kind:?}: no truncation marker");
        }
        assert!(doc.lines.len() < 120, "{kind:?}: {} lines for one note", doc.lines.len());
        assert!(bytes.len() < 16_000, "{kind:?}: {} bytes", bytes.len());
        assert_eq!(doc.lines.last().map(|l| l.text.as_str()), Some(BANNER), "{kind:?}: closing banner lost");
    }
    // Debug builds included: rendering a 1.3 MB note is a matter of milliseconds, not minutes.
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn a_ticket_is_cut_at_max_lines_marked_and_keeps_its_closing_banner() {
    let mut o = pickup();
    let mods: Vec<Modifier> = (0..20).map(|i| modifier("Extra", &format!("Zutat {i}"), 1, "")).collect();
    o.line_items = (0..1000).map(|i| item(&format!("Gericht {i}"), 1, "1.00", "1.00", mods.clone())).collect();
    let l = layout(48);
    let doc = render(&o, ReceiptType::Kitchen, &l, Some(BANNER));
    assert_fits(&doc, &l);
    let n = doc.lines.len();
    assert!(n <= MAX_LINES + 2, "{n} lines");
    assert_eq!(doc.lines[n - 1].text, BANNER);
    assert_eq!(printable(&doc.lines[n - 2].text, l.code_page), "... (truncated)");
    assert_eq!(doc.lines[0].text, BANNER);
    // Without a banner the marker is the last line.
    let doc = render(&o, ReceiptType::Kitchen, &l, None);
    assert_eq!(printable(&doc.lines.last().unwrap().text, l.code_page), "... (truncated)");
    // A ticket under the caps is untouched: no marker.
    assert!(!text(&pickup(), ReceiptType::Kitchen).contains("truncated"));
}

#[test]
fn image_lines_per_ticket_are_capped_and_later_ones_print_as_text() {
    let mut o = pickup();
    o.line_items = (0..400).map(|i| item(&format!("ผัดไทย 麻婆豆腐 {i}"), 1, "1.00", "1.00", vec![])).collect();
    let l = layout(48);
    let doc = render(&o, ReceiptType::Kitchen, &l, None);
    assert_fits(&doc, &l);
    let bytes = doc.to_escpos(&l);
    assert_eq!(raster_images(&bytes), MAX_RASTER_LINES);
    let text = doc.to_text(&l);
    assert!(text.contains("ผัดไทย 麻婆豆腐 0"), "the first ones are images of the real text");
    // Thai: 5 columns (the vowel mark takes none), CJK: 4 glyphs of 2 columns.
    assert!(text.contains("1 x ????? ???????? 399"), "later ones keep their columns as '?'");
}

#[test]
fn an_empty_order_still_renders() {
    let l = layout(48);
    for kind in KINDS {
        let doc = render(&Order::default(), kind, &l, None);
        assert!(doc.to_text(&l).contains("#?"));
        let bytes = doc.to_escpos(&l);
        assert!(bytes.ends_with(&[0x1D, 0x56, 0x42, 0x00]));
    }
    let driver = render(&Order::default(), ReceiptType::Driver, &l, None).to_text(&l);
    assert!(driver.contains("CASH TO COLLECT"), "English without a language: {driver}");
}

#[test]
fn times_fall_back_and_name_the_day_when_it_is_not_today() {
    let l = layout(48);
    let mut o = pickup();
    o.fulfillment.as_mut().unwrap().promised_from = Some(ts("2025-09-26T10:00:00Z"));
    assert!(render(&o, ReceiptType::Kitchen, &l, None).to_text(&l).contains("26.09.2025 12:00"));
    o.fulfillment.as_mut().unwrap().promised_from = None;
    assert!(render(&o, ReceiptType::Kitchen, &l, None).to_text(&l).contains("24.09.25 20:24"));
    o.fulfillment.as_mut().unwrap().promised_text = String::new();
    o.fulfillment.as_mut().unwrap().asap = true;
    let t = render(&o, ReceiptType::Kitchen, &l, None).to_text(&l);
    assert!(t.contains("SOFORT") && t.contains("Abholzeit:"), "{t}");
}

#[test]
fn a_canceled_order_says_so() {
    let mut o = pickup();
    o.status = OrderStatus::Canceled as i32;
    let l = layout(48);
    for kind in KINDS {
        let doc = render(&o, kind, &l, None);
        assert!(doc.lines.iter().any(|l| l.text == "STORNIERT" && l.reverse), "{kind:?}");
    }
}

/// Minimal LCG (Knuth's MMIX constants): reproducible pseudo-random input without a crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "Nam",
            "Tok",
            "Käse",
            "Spätzle",
            "Größe",
            "ß",
            "ü",
            "€",
            " ",
            " ",
            "  ",
            "\n",
            "\r\n",
            "\t",
            "\u{0}",
            "\u{1b}",
            "\u{1d}V",
            "\u{7f}",
            "😀",
            "👍🏽",
            "❤️",
            "中",
            "ก",
            "ต้มยำกุ้ง",
            "\u{E49}",
            "拉面拉面拉面拉面拉面拉面拉面拉面拉面拉面拉面拉面拉面拉面拉面拉面拉面",
            "🌶🌶",
            "🇨🇭",
            "🫩",
            "नमस्ते",
            "Привет",
            "e\u{301}",
            "\u{308}",
            "\u{200d}",
            "…",
            "–",
            "\u{a0}",
            "?",
            "Donaudampfschifffahrtsgesellschaftskapitänsmütze",
            "1",
            "x",
            "-",
            ":",
            "(",
            "'",
        ];
        let n = self.below(12);
        let mut s: String = (0..n).map(|_| PIECES[self.below(PIECES.len())]).collect();
        if self.below(10) == 0 {
            s.push_str(&"W".repeat(self.below(300)));
        }
        s
    }

    fn money(&mut self) -> String {
        const MONEY: &[&str] = &["", "0", "0.00", "12.5", "-3.2", "132", "abc", "1e3", "99999999999999999999.99", ".5"];
        MONEY[self.below(MONEY.len())].to_owned()
    }
}

/// A restaurant with arbitrary text in every field (often empty) and a QR template with
/// the placeholders somewhere in it.
fn random_restaurant(r: &mut Lcg) -> Restaurant {
    let lines = |r: &mut Lcg| (0..r.below(4)).map(|_| r.string()).collect();
    let qr = match r.below(4) {
        0 => String::new(),
        1 => r.string(),
        _ => format!("{}{{order_number}}{}{{order_id}}{}", r.string(), r.string(), r.string()),
    };
    Restaurant { name: r.string(), address: lines(r), phone: r.string(), vat_id: r.string(), footer: lines(r), qr }
}

fn random_order(r: &mut Lcg) -> Order {
    let items = (0..r.below(5))
        .map(|_| LineItem {
            id: r.string(),
            name: r.string(),
            quantity: [0, 1, 2, 17, u32::MAX][r.below(5)],
            unit_price: r.money(),
            line_total: r.money(),
            modifiers: (0..r.below(4))
                .map(|_| Modifier {
                    group: r.string(),
                    name: r.string(),
                    quantity: r.below(4) as u32,
                    price: r.money(),
                })
                .collect(),
        })
        .collect();
    let fulfillment = (r.below(4) != 0).then(|| Fulfillment {
        r#type: r.below(4) as i32,
        title: r.string(),
        address: (r.below(2) == 0).then(|| Address {
            line1: r.string(),
            line2: r.string(),
            postal_code: r.string(),
            city: r.string(),
            ..Default::default()
        }),
        contact: (r.below(2) == 0).then(|| Contact {
            first_name: r.string(),
            last_name: r.string(),
            phone: r.string(),
            company: r.string(),
            email: r.string(),
        }),
        promised_from: (r.below(2) == 0)
            .then(|| prost_types::Timestamp { seconds: 1_758_738_240 + r.below(1_000_000) as i64, nanos: 0 }),
        promised_to: (r.below(3) == 0)
            .then(|| prost_types::Timestamp { seconds: 1_758_738_240 + r.below(1_000_000) as i64, nanos: 0 }),
        promised_text: r.string(),
        asap: r.below(2) == 0,
        instructions: r.string(),
    });
    Order {
        id: r.string(),
        number: r.string(),
        created_at: (r.below(2) == 0).then_some(prost_types::Timestamp { seconds: 1_758_736_405, nanos: 0 }),
        status: r.below(7) as i32,
        payment_status: r.below(11) as i32,
        fulfillment,
        line_items: items,
        buyer_note: r.string(),
        price_summary: (r.below(4) != 0).then(|| PriceSummary {
            subtotal: r.money(),
            discount: r.money(),
            shipping: r.money(),
            fees: r.money(),
            tax: r.money(),
            total: r.money(),
            balance_due: r.money(),
            currency: r.string(),
            paid: r.money(),
        }),
        buyer_language: ["de", "en", "", "DE-ch", "ü"][r.below(5)].into(),
        site_language: r.string(),
        ..Default::default()
    }
}

#[test]
fn pseudo_random_orders_always_fit_and_lose_no_text() {
    let mut r = Lcg(0x5EED_0F13);
    for round in 0..400 {
        let order = random_order(&mut r);
        let width = [64, 48, 42, 32, 24][round % 5];
        let mut l = layout(width);
        l.code_page = if round % 3 == 0 { CodePage::Wpc1252 } else { CodePage::Pc858 };
        l.restaurant = random_restaurant(&mut r);
        l.buzzer = r.below(2) == 0;
        l.language = [None, Some("en"), Some("de-CH"), Some(""), Some("\u{0}")][r.below(5)].map(String::from);
        let banner = (r.below(3) == 0).then(|| r.string());
        for kind in KINDS {
            let doc = render(&order, kind, &l, banner.as_deref());
            assert_fits(&doc, &l);
            let bytes = doc.to_escpos(&l);
            let font = if width > 56 { 1 } else { 0 };
            assert!(bytes.starts_with(&[0x1B, 0x40, 0x1B, 0x74, l.code_page.escpos_table(), 0x1B, 0x4D, font]));
            assert!(bytes.ends_with(&[0x1D, 0x56, 0x42, 0x00]));
            for data in doc.lines.iter().filter_map(|l| l.qr.as_deref()) {
                assert!(!data.is_empty() && data.len() <= 300 && !data.chars().any(char::is_control), "{data:?}");
                assert!(contains(&bytes, &qr_bytes(data.as_bytes())), "round {round}: QR {data:?} not sent");
            }
            if kind == ReceiptType::Customer {
                for text in [&l.restaurant.name, &l.restaurant.phone, &l.restaurant.vat_id]
                    .into_iter()
                    .chain(&l.restaurant.address)
                    .chain(&l.restaurant.footer)
                {
                    let text = squeeze(text, l.code_page);
                    assert!(squeezed(&doc).contains(&text), "round {round}: restaurant text {text:?} cut off");
                }
            }
            let all = squeezed(&doc);
            if kind != ReceiptType::Driver {
                for item in &order.line_items {
                    let name = squeeze(&item.name, l.code_page);
                    assert!(all.contains(&name), "round {round}, {kind:?}: item name {name:?} cut off");
                }
            }
            if kind != ReceiptType::Customer {
                let note = squeeze(&order.buyer_note, l.code_page);
                assert!(all.contains(&note), "round {round}, {kind:?}: note {note:?} cut off");
            }
        }
    }
}

/// The kitchen ticket's lines from the allergy banner up to the '=' rule above the items.
fn allergy_block(doc: &Document) -> Option<&[Line]> {
    let start = doc.lines.iter().position(|l| l.text == "ALLERGIE" || l.text == "ALLERGY")?;
    let end = doc.lines[start..].iter().position(|l| l.text.starts_with("====")).map_or(doc.lines.len(), |i| start + i);
    Some(&doc.lines[start..end])
}

#[test]
fn the_delivery_kitchen_ticket_has_the_allergy_block_above_the_items() {
    let l = layout(48);
    let doc = render(&delivery(), ReceiptType::Kitchen, &l, None);
    let block = allergy_block(&doc).unwrap_or_else(|| panic!("no allergy block:\n{}", doc.to_text(&l)));
    let label = &block[0];
    assert!(label.reverse && label.bold && label.size == Size::Double, "{label:?}");
    let body = &block[1..];
    assert!(!body.is_empty() && body.iter().all(|l| l.bold && !l.reverse), "{body:?}");
    let text: String = body.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join(" ");
    assert_eq!(text, "Allergie: Erdnüsse! Bitte klingeln bei Jäger, 3. Stock");
    // Only the note matched: not "kein Salz", "Reis (Beilage)" or "Spiegelei".
    for absent in ["Salz", "Reis", "Spiegelei"] {
        assert!(!text.contains(absent), "{absent:?} in the allergy block: {text}");
    }
    // Under the header and the times, above the items; the note section stays as it was.
    let position = |text: &str| doc.lines.iter().position(|l| l.text.starts_with(text)).unwrap();
    let allergy = position("ALLERGIE");
    assert!(position("#10034") < allergy && position("Bestellt:") < allergy && allergy < position("2 x Käsespätzle"));
    let t = doc.to_text(&l);
    assert!(t.contains("NOTIZ:\nAllergie: Erdnüsse! Bitte klingeln bei Jäger, 3.\nStock\n"), "{t}");
    assert_eq!(t.matches("ALLERGIE").count(), 1, "{t}");
    // English label for an English buyer.
    let en = Order { buyer_language: "en".into(), ..delivery() };
    assert!(allergy_block(&render(&en, ReceiptType::Kitchen, &l, None)).is_some_and(|b| b[0].text == "ALLERGY"));
}

#[test]
fn no_allergy_block_without_an_allergy_word() {
    let l = layout(48);
    for order in [pickup(), Order::default()] {
        let doc = render(&order, ReceiptType::Kitchen, &l, None);
        assert!(allergy_block(&doc).is_none(), "{}", doc.to_text(&l));
    }
    // The delivery order without its note: "Hinweis: kein Salz", "Reis (Beilage)" and
    // "Spiegelei" do not trigger.
    let o = Order { buyer_note: "Bitte klingeln bei Jäger".into(), ..delivery() };
    let doc = render(&o, ReceiptType::Kitchen, &l, None);
    assert!(allergy_block(&doc).is_none(), "{}", doc.to_text(&l));
    // Item names are dish names, not allergies.
    let mut o = pickup();
    o.line_items[0].name = "Erdnuss-Curry mit Ei".into();
    assert!(allergy_block(&render(&o, ReceiptType::Kitchen, &l, None)).is_none());
    // No configured words, no block.
    let none = Layout { allergy_words: Vec::new(), ..layout(48) };
    assert!(allergy_block(&render(&delivery(), ReceiptType::Kitchen, &none, None)).is_none());
    // Only the kitchen ticket has it.
    for kind in [ReceiptType::Driver, ReceiptType::Customer] {
        assert!(!render(&delivery(), kind, &l, None).to_text(&l).contains("ALLERGIE"), "{kind:?}");
    }
}

#[test]
fn a_modifier_naming_an_allergen_is_listed_with_its_dish() {
    let l = layout(48);
    let mut o = pickup();
    o.line_items[1].modifiers.push(modifier("Allergie", "ohne Erdnüsse", 1, ""));
    o.line_items[0].modifiers.push(modifier("Hinweis", "gluten-free please", 1, ""));
    let doc = render(&o, ReceiptType::Kitchen, &l, None);
    let block = allergy_block(&doc).unwrap_or_else(|| panic!("{}", doc.to_text(&l)));
    let texts: Vec<&str> = block.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["ALLERGIE", "Nam Tok + Hinweis: gluten-free please", "Som Tam + Allergie: ohne Erdnüsse"]);
    // The note did not match and is not repeated; the modifiers still print under their items.
    let t = doc.to_text(&l);
    assert_eq!(t.matches("Bitte ohne Koriander").count(), 1, "{t}");
    assert!(t.contains("  + Allergie: ohne Erdnüsse"), "{t}");
}

#[test]
fn the_allergy_block_fits_every_width() {
    let mut o = delivery();
    o.line_items[0].modifiers.push(modifier(&"Allergie ".repeat(20), LONG_NAME, 3, ""));
    o.line_items[1].modifiers.push(modifier("", &format!("{} Nüsse", "Ä".repeat(200)), 1, ""));
    for width in [48, 42, 32, 24, 3, 1] {
        let l = layout(width);
        for order in [delivery(), o.clone()] {
            for banner in [None, Some(BANNER)] {
                let doc = render(&order, ReceiptType::Kitchen, &l, banner);
                assert_fits(&doc, &l);
                // Below 16 columns the double-width label wraps.
                assert!(width < 16 || allergy_block(&doc).is_some(), "{width}: no allergy block");
                let all = squeezed(&doc);
                assert!(all.contains("ALLERGIE") && all.contains("Erdnüsse"), "{width}");
                // At 1 and 3 columns a character a line reaches the ticket's line cap.
                if width >= 24 {
                    assert_eq!(all.matches(&squeeze(&order.buyer_note, l.code_page)).count(), 2, "{width}");
                }
            }
        }
        let doc = render(&o, ReceiptType::Kitchen, &l, None);
        assert!(width < 24 || squeezed(&doc).matches(&"Ä".repeat(200)).count() == 2, "{width}: modifier cut off");
    }
}

const QR_TEMPLATE: &str = "https://example.ch/feedback?o={order_number}";

/// `layout(width)` with every restaurant field configured.
fn full_layout(width: usize) -> Layout {
    let mut l = layout(width);
    l.restaurant = Restaurant {
        name: "Thai Take-Away Zürich".into(),
        address: vec!["Bahnhofstrasse 1".into(), "8001 Zürich".into()],
        phone: "+41 44 000 00 00".into(),
        vat_id: "CHE-123.456.789 MWST".into(),
        footer: vec!["Vielen Dank!".into(), "Thank you!".into()],
        qr: QR_TEMPLATE.into(),
    };
    l
}

fn position(doc: &Document, text: &str) -> usize {
    doc.lines.iter().position(|l| l.text == text).unwrap_or_else(|| panic!("no line {text:?}"))
}

/// The `GS ( k` commands of a QR code of `data`, as the spec of the TM-m30III has them.
fn qr_bytes(data: &[u8]) -> Vec<u8> {
    let len = data.len() + 3;
    let mut b = vec![0x1D, 0x28, 0x6B, 0x04, 0x00, 0x31, 0x41, 0x32, 0x00];
    b.extend([0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x43, 0x06]);
    b.extend([0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x45, 0x31]);
    b.extend([0x1D, 0x28, 0x6B, (len % 256) as u8, (len / 256) as u8, 0x31, 0x50, 0x30]);
    b.extend(data);
    b.extend([0x1D, 0x28, 0x6B, 0x03, 0x00, 0x31, 0x51, 0x30]);
    b
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_customer_receipt_has_the_restaurants_header_and_footer_when_configured() {
    let l = full_layout(48);
    let doc = render(&pickup(), ReceiptType::Customer, &l, None);
    let t = doc.to_text(&l);
    let header = [
        "Thai Take-Away Zürich",
        "Bahnhofstrasse 1",
        "8001 Zürich",
        "Tel. +41 44 000 00 00",
        "MWST-Nr. CHE-123.456.789 MWST",
        "BELEG",
    ];
    let at: Vec<usize> = header.iter().map(|h| position(&doc, h)).collect();
    assert_eq!(at, (0..header.len()).collect::<Vec<_>>(), "{t}");
    for i in 0..header.len() {
        assert_eq!(doc.lines[i].align, Align::Center, "{:?}", doc.lines[i]);
    }
    let name = &doc.lines[0];
    assert!(name.bold && name.size == Size::DoubleHeight);
    assert!(doc.lines[1..5].iter().all(|l| !l.bold && l.size == Size::Normal));
    // After the payment: a blank line, the footer, the QR code; all centered.
    let due = doc.lines.iter().position(|l| l.text.starts_with("Offener Betrag")).unwrap();
    let tail: Vec<&str> = doc.lines[due + 1..].iter().map(|l| l.text.as_str()).collect();
    assert_eq!(tail, ["", "Vielen Dank!", "Thank you!", ""], "{t}");
    let qr = doc.lines.last().unwrap();
    assert_eq!(qr.qr.as_deref(), Some("https://example.ch/feedback?o=10033"));
    assert!(doc.lines[due + 2..].iter().all(|l| l.align == Align::Center));
    assert!(t.ends_with("\n    [QR https://example.ch/feedback?o=10033]\n"), "{t}");
    // English labels for an English buyer.
    let en = Order { buyer_language: "en".into(), ..pickup() };
    let t = render(&en, ReceiptType::Customer, &l, None).to_text(&l);
    assert!(t.contains("Phone +41 44 000 00 00") && t.contains("VAT no. CHE-123.456.789 MWST"), "{t}");
    // The reprint banner stays the very last line.
    let doc = render(&pickup(), ReceiptType::Customer, &l, Some(BANNER));
    assert_eq!(doc.lines.last().unwrap().text, BANNER);
    assert!(doc.lines[doc.lines.len() - 2].qr.is_some());
    // Only the customer receipt has them.
    for kind in [ReceiptType::Kitchen, ReceiptType::Driver] {
        let t = render(&pickup(), kind, &l, None).to_text(&l);
        for absent in ["Bahnhofstrasse", "MWST-Nr.", "Vielen Dank", "[QR", "+41 44"] {
            assert!(!t.contains(absent), "{kind:?} shows {absent:?}:\n{t}");
        }
    }
}

#[test]
fn an_unconfigured_or_blank_restaurant_prints_no_header_or_footer_lines() {
    let plain = layout(48);
    let doc = render(&pickup(), ReceiptType::Customer, &plain, None);
    assert_eq!(doc.lines[1].text, "BELEG");
    assert!(doc.lines.iter().all(|l| l.qr.is_none() && !l.text.is_empty()));
    let t = doc.to_text(&plain);
    for absent in ["Tel.", "MWST-Nr.", "[QR"] {
        assert!(!t.contains(absent), "{absent:?}:\n{t}");
    }
    // Blank fields are not configured.
    let mut blank = layout(48);
    blank.restaurant.address = vec![String::new(), " \n\t".into()];
    blank.restaurant.phone = "  ".into();
    blank.restaurant.vat_id = "\n".into();
    blank.restaurant.footer = vec![String::new(), " ".into(), "\u{0}\u{1b}".into()];
    blank.restaurant.qr = " \u{7} ".into();
    assert_eq!(render(&pickup(), ReceiptType::Customer, &blank, None), doc);
    // Each field on its own.
    let with = |f: &dyn Fn(&mut Restaurant)| {
        let mut l = layout(48);
        f(&mut l.restaurant);
        render(&pickup(), ReceiptType::Customer, &l, None).to_text(&l)
    };
    let t = with(&|r| r.vat_id = "CHE-1".into());
    assert!(t.contains("MWST-Nr. CHE-1") && !t.contains("Tel.") && !t.contains("[QR"), "{t}");
    let t = with(&|r| r.footer = vec!["Danke".into()]);
    assert!(t.ends_with("\n\n                     Danke\n"), "{t}");
    let t = with(&|r| r.qr = "{order_id}".into());
    assert!(t.ends_with("\n\n   [QR 6d6062d8-0000-4000-8000-0000000000a1]\n"), "{t}");
}

#[test]
fn the_qr_code_is_sent_as_gs_k_with_its_length() {
    let l = full_layout(48);
    let bytes = render(&pickup(), ReceiptType::Customer, &l, None).to_escpos(&l);
    // Centered, plain, then the code and a line feed.
    let mut expected = vec![0x1D, 0x21, 0x00, 0x1B, 0x45, 0x00, 0x1D, 0x42, 0x00, 0x1B, 0x61, 0x01];
    expected.extend(qr_bytes(b"https://example.ch/feedback?o=10033"));
    expected.push(0x0A);
    assert!(contains(&bytes, &expected), "{bytes:02X?}");
    assert_eq!(expected[12 + 25 + 3], 38, "pL = 35 bytes + 3");
    assert!(bytes.ends_with(&[0x1B, 0x64, 0x03, 0x1D, 0x56, 0x42, 0x00]));
    // Both placeholders, control characters dropped, UTF-8 bytes as they are.
    let mut l = full_layout(48);
    l.restaurant.qr = " a\u{1b}b?n={order_number}&id={order_id}&x={other}&ü=\u{0}1 ".into();
    let doc = render(&pickup(), ReceiptType::Customer, &l, None);
    let data = "ab?n=10033&id=6d6062d8-0000-4000-8000-0000000000a1&x={other}&ü=1";
    assert_eq!(doc.lines.last().unwrap().qr.as_deref(), Some(data));
    assert!(contains(&doc.to_escpos(&l), &qr_bytes(data.as_bytes())));
    // A value that contains a placeholder is not filled in again.
    let o = Order { number: "{order_id}".into(), ..pickup() };
    assert_eq!(
        render(&o, ReceiptType::Customer, &l, None).lines.last().unwrap().qr.as_deref().map(|d| &d[..20]),
        Some("ab?n={order_id}&id=6")
    );
    // Long data is cut to 300 bytes (pH = 1) at a character boundary.
    l.restaurant.qr = format!("{}{{order_number}}", "ü".repeat(200));
    let doc = render(&pickup(), ReceiptType::Customer, &l, None);
    let data = "ü".repeat(150);
    assert_eq!(doc.lines.last().unwrap().qr.as_deref(), Some(data.as_str()));
    let expected = qr_bytes(data.as_bytes());
    assert_eq!(expected[25..30], [0x1D, 0x28, 0x6B, 0x2F, 0x01], "303 = 0x012F");
    assert!(contains(&doc.to_escpos(&l), &expected));
}

#[test]
fn a_qr_preview_never_exceeds_the_width() {
    let mut l = full_layout(32);
    let doc = render(&pickup(), ReceiptType::Customer, &l, None);
    assert_fits(&doc, &l);
    let t = doc.to_text(&l);
    let last = t.lines().last().unwrap();
    assert_eq!(last, "[QR https://example.ch/feedb...]");
    for width in [12, 8, 7, 3, 1] {
        l.width = width;
        let last = render(&pickup(), ReceiptType::Customer, &l, None).to_text(&l);
        let last = last.lines().last().unwrap();
        assert!(last.chars().count() <= width && last.starts_with(&"[QR "[..width.min(4)]), "{width}: {last:?}");
    }
    // A hand-made QR line is sanitised on both outputs.
    let line = Line {
        text: String::new(),
        size: Size::Normal,
        bold: false,
        reverse: false,
        align: Align::Left,
        qr: Some("a\nb\u{1b}".into()),
    };
    let doc = Document { lines: vec![line] };
    let l = Layout::new(48);
    assert_eq!(doc.to_text(&l), "[QR ab]\n");
    assert!(contains(&doc.to_escpos(&l), &qr_bytes(b"ab")));
    let empty = Document { lines: vec![Line { qr: Some("\u{0}".into()), ..doc.lines[0].clone() }] };
    assert_eq!(empty.to_text(&l), "\n");
    assert!(!contains(&empty.to_escpos(&l), &[0x1D, 0x28, 0x6B]));
}

#[test]
fn font_b_gives_64_columns() {
    assert_eq!(
        [56, 57, 64, 48, 42, 32].map(|w| Layout::new(w).font),
        [Font::A, Font::B, Font::B, Font::A, Font::A, Font::A]
    );
    let l = full_layout(64);
    assert_eq!(l.font, Font::B);
    for order in [pickup(), delivery(), Order::default()] {
        for kind in KINDS {
            let doc = render(&order, kind, &l, Some(BANNER));
            assert_fits(&doc, &l);
            let bytes = doc.to_escpos(&l);
            assert!(bytes.starts_with(&[0x1B, 0x40, 0x1B, 0x74, 0x13, 0x1B, 0x4D, 0x01]), "{:02X?}", &bytes[..8]);
        }
    }
    // The rules and the amounts use all 64 columns.
    let t = render(&delivery(), ReceiptType::Customer, &l, None).to_text(&l);
    assert!(t.lines().any(|l| l == "=".repeat(64)), "{t}");
    let total = t.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert!(total.ends_with("EUR 35.20") && total.chars().count() == 64, "{total:?}");
    let first = t.lines().find(|l| l.starts_with("2 x Käsespätzle")).unwrap();
    assert!(first.chars().count() <= 64 && !first.contains("25.80"), "{first:?}");
    // Font A is selected explicitly.
    for width in [48, 42, 32] {
        let l = layout(width);
        let bytes = render(&pickup(), ReceiptType::Kitchen, &l, None).to_escpos(&l);
        assert!(bytes.starts_with(&[0x1B, 0x40, 0x1B, 0x74, 0x13, 0x1B, 0x4D, 0x00]), "{width}");
    }
}

#[test]
fn the_buzzer_sounds_before_the_cut_only_when_enabled() {
    const BUZZER: [u8; 9] = [0x1B, 0x28, 0x41, 0x04, 0x00, 0x30, 0x31, 0x02, 0x05];
    let quiet = layout(48);
    let loud = Layout { buzzer: true, ..layout(48) };
    for kind in KINDS {
        let doc = render(&delivery(), kind, &quiet, None);
        assert!(!contains(&doc.to_escpos(&quiet), &[0x1B, 0x28, 0x41]), "{kind:?}");
        let bytes = doc.to_escpos(&loud);
        let mut end = BUZZER.to_vec();
        end.extend([0x1B, 0x64, 0x03, 0x1D, 0x56, 0x42, 0x00]);
        assert!(bytes.ends_with(&end), "{kind:?}");
        assert_eq!(bytes.windows(3).filter(|w| w == &[0x1B, 0x28, 0x41]).count(), 1);
        assert_eq!(doc.to_text(&loud), doc.to_text(&quiet));
        assert_eq!(bytes[..bytes.len() - end.len()], doc.to_escpos(&quiet)[..bytes.len() - end.len()]);
    }
}

#[test]
fn labels_come_from_the_book_and_the_configured_language() {
    use super::LabelBook;
    use std::sync::Arc;
    let book = |text: &str| Arc::new(LabelBook::from_toml_str(text).unwrap());
    // One German key changed: only that line differs.
    let custom = Layout { labels: book("[de]\ncash_to_collect = \"BAR KASSIEREN\""), ..layout(48) };
    let before = render(&pickup(), ReceiptType::Driver, &layout(48), None);
    let after = render(&pickup(), ReceiptType::Driver, &custom, None);
    assert_eq!(before.lines.len(), after.lines.len());
    let changed: Vec<(&str, &str)> = before
        .lines
        .iter()
        .zip(&after.lines)
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (a.text.as_str(), b.text.as_str()))
        .collect();
    assert_eq!(changed, [("BAR ZU KASSIEREN", "BAR KASSIEREN")]);
    // A French table based on German, for a French buyer.
    let fr = Layout { labels: book("[fr]\nbase = \"de\"\nkitchen = \"CUISINE\""), ..layout(48) };
    let o = Order { buyer_language: "fr".into(), ..pickup() };
    let t = render(&o, ReceiptType::Kitchen, &fr, None).to_text(&fr);
    assert!(t.contains("CUISINE") && t.contains("NOTIZ:") && !t.contains("KÜCHE"), "{t}");
    // Without the table French buyers get English.
    assert!(text(&o, ReceiptType::Kitchen).contains("KITCHEN"));
    // The configured language wins over the order's.
    let en = Layout { language: Some("en".into()), ..layout(48) };
    for kind in KINDS {
        let t = render(&pickup(), kind, &en, None).to_text(&en);
        assert!(!t.contains("ABHOLUNG") && t.contains("PICKUP"), "{kind:?}: {t}");
    }
    let t = render(&pickup(), ReceiptType::Driver, &en, None).to_text(&en);
    assert!(t.contains("CASH TO COLLECT") && t.contains("PICKUP SLIP"), "{t}");
    let storno = super::render_storno(&pickup(), ReceiptType::Kitchen, &en, None).to_text(&en);
    assert!(storno.contains("Order cancelled - do not prepare"), "{storno}");
    // "de-CH" picks "de", configured or from the order.
    let de_ch = Layout { language: Some("de-CH".into()), ..layout(48) };
    let english = Order { buyer_language: "en".into(), ..pickup() };
    assert!(render(&english, ReceiptType::Kitchen, &de_ch, None).to_text(&de_ch).contains("KÜCHE"));
    let swiss = Order { buyer_language: "de-CH".into(), ..pickup() };
    assert!(render(&swiss, ReceiptType::Kitchen, &custom, None).to_text(&custom).contains("KÜCHE"));
    assert!(render(&swiss, ReceiptType::Driver, &custom, None).to_text(&custom).contains("BAR KASSIEREN"));
}

// ---------------------------------------------------------------------------------------------
// Characters no code page has: Thai, CJK, emoji ... print as raster image lines.

const THAI: &str = "ต้มยำกุ้ง";
const EMOJI_NOTE: &str = "extra scharf 🌶🌶 bitte 🙏";

/// An image as sent: dots wide, rows, data.
type SentImage<'a> = (usize, usize, &'a [u8]);

/// The `GS v 0` images in ESC/POS bytes, in order, as (dots wide, rows, data), and the number
/// of LF bytes outside them. Only for documents without QR codes and buzzer (whose parameter
/// bytes are not skipped here).
fn images_and_lfs(bytes: &[u8]) -> (Vec<SentImage<'_>>, usize) {
    let (mut images, mut lfs, mut i) = (Vec::new(), 0, 0);
    while i < bytes.len() {
        if bytes[i..].starts_with(&[0x1D, b'v', b'0']) && i + 8 <= bytes.len() {
            let row = usize::from(u16::from_le_bytes([bytes[i + 4], bytes[i + 5]]));
            let rows = usize::from(u16::from_le_bytes([bytes[i + 6], bytes[i + 7]]));
            let end = (i + 8 + row * rows).min(bytes.len());
            images.push((row * 8, rows, &bytes[i + 8..end]));
            i = end;
        } else {
            lfs += usize::from(bytes[i] == 0x0A);
            i += 1;
        }
    }
    (images, lfs)
}

fn raster_style(line: &Line, layout: &Layout) -> crate::glyphs::RasterStyle {
    use crate::glyphs::{RasterAlign, RasterStyle};
    let cell = if layout.font == Font::B { RasterStyle::FONT_B } else { RasterStyle::FONT_A };
    RasterStyle {
        line_width: layout.width * cell.cell_width,
        width_mult: line.size.column_factor(),
        height_mult: if matches!(line.size, Size::DoubleHeight | Size::Double) { 2 } else { 1 },
        bold: line.bold,
        reverse: line.reverse,
        align: match line.align {
            Align::Left => RasterAlign::Left,
            Align::Center => RasterAlign::Center,
            Align::Right => RasterAlign::Right,
        },
        ..cell
    }
}

#[test]
fn thai_cjk_and_emoji_print_as_image_lines_never_as_question_marks() {
    let mut o = pickup();
    o.line_items[0].name = format!("{THAI} Tom Yum");
    o.buyer_note = EMOJI_NOTE.into();
    for width in [64, 48, 42, 32] {
        let l = layout(width);
        let (cell_w, cell_h) = if width > 56 { (9, 17) } else { (12, 24) };
        for kind in [ReceiptType::Kitchen, ReceiptType::Customer] {
            let doc = render(&o, kind, &l, None);
            assert_fits(&doc, &l);
            let text = doc.to_text(&l);
            assert!(text.contains(&format!("{THAI} Tom Yum")), "{width} {kind:?}:\n{text}");
            if kind == ReceiptType::Kitchen {
                assert!(text.contains("scharf 🌶🌶 bitte 🙏"), "{width}:\n{text}");
            }
            assert!(!text.contains('?'), "{width} {kind:?}:\n{text}");

            // One image per line with characters the code page lacks, in order, as wide as the
            // layout and one text line high; every other line is text ending in LF.
            let bytes = doc.to_escpos(&l);
            let (images, lfs) = images_and_lfs(&bytes);
            let raster: Vec<&Line> = doc.lines.iter().filter(|line| needs_raster(&line.text, l.code_page)).collect();
            assert!(!raster.is_empty() && raster.len() + 2 <= doc.lines.len(), "{width} {kind:?}:\n{text}");
            assert!(raster.iter().any(|line| line.text.contains(THAI)));
            assert_eq!(images.len(), raster.len(), "{width} {kind:?}");
            assert_eq!(lfs, doc.lines.len() - raster.len(), "no LF after an image: {width} {kind:?}");
            for ((w, h, data), line) in images.iter().zip(&raster) {
                let height_mult = if matches!(line.size, Size::DoubleHeight | Size::Double) { 2 } else { 1 };
                assert_eq!((*w, *h), (width * cell_w, cell_h * height_mult), "{line:?}");
                let mut want = crate::glyphs::render_line(&line.text, &raster_style(line, &l)).data;
                super::document::sanitize_raster(&mut want);
                assert_eq!(*data, &want[..], "{line:?}");
            }
            if kind == ReceiptType::Kitchen && width == 48 {
                // Kitchen item names and the note are double height: 48 rows.
                assert!(images.iter().all(|&(_, h, _)| h == 48), "{images:?}");
            }
            for line in doc.lines.iter().filter(|line| !needs_raster(&line.text, l.code_page)) {
                let mut encoded = l.code_page.encode(&line.text);
                encoded.push(0x0A);
                assert!(contains(&bytes, &encoded), "text line {:?} not sent as text", line.text);
            }
        }
    }
}

#[test]
fn latin_text_stays_text_and_marks_survive_only_for_scripts_that_need_them() {
    let cp = CodePage::Pc858;
    // Transliteration keeps priority: typographic characters stay text.
    let latin = printable("„Grüße“ — 5 € • ‘ok’ … x\u{2009}y", cp);
    assert!(!needs_raster(&latin, cp), "{latin:?}");
    assert_eq!(printable("Nai\u{308}ve Cafe\u{301}\u{323}", cp), "Naïve Café", "Latin marks compose or go");
    // Thai marks are kept and take no column; wide glyphs take two.
    assert_eq!(columns_of(THAI, cp), 6);
    assert_eq!(columns_of("拉面 🌶", cp), 7);
    assert_eq!(columns_of("Привет Ελλάδα", cp), 13);
    // Invisible characters go (skin tones, VS16, ZWJ, the Arabic letter mark, Hangul filler).
    assert_eq!(printable("👍🏽❤️\u{200D}\u{3164}ا\u{61C}ب", cp), "👍❤اب");
    // Neither code page, transliteration nor glyph: '?'.
    assert_eq!(printable("a\u{F8FF}b", cp), "a?b");
}

#[test]
fn to_text_pads_image_lines_by_columns_and_the_image_aligns_the_same() {
    let l = layout(48);
    for (align, pad) in [(Align::Left, 0), (Align::Center, 21), (Align::Right, 42)] {
        let line = Line { text: THAI.into(), size: Size::Normal, bold: true, reverse: false, align, qr: None };
        let doc = Document { lines: vec![line.clone()] };
        assert_eq!(doc.to_text(&l), format!("{}{THAI}\n", " ".repeat(pad)), "{align:?}");
        let bytes = doc.to_escpos(&l);
        let (images, lfs) = images_and_lfs(&bytes);
        assert_eq!(lfs, 0);
        let image = crate::glyphs::render_line(THAI, &raster_style(&line, &l));
        assert_eq!(images, [(576, 24, &image.data[..])], "{align:?}");
        // The ink starts where the preview's text starts: `pad` columns of 12 dots in.
        let first_ink = (0..image.width).find(|&x| (0..image.height).any(|y| image.get(x, y))).unwrap();
        assert!((pad * 12..pad * 12 + 12).contains(&first_ink), "{align:?}: ink from dot {first_ink}");
    }
}

#[test]
fn a_cjk_word_longer_than_the_line_breaks_between_whole_glyphs() {
    let cp = CodePage::Pc858;
    let word = "拉面".repeat(20);
    for width in [9, 10, 15, 32] {
        let lines = wrap(&word, cp, width, 0, 0);
        assert!(lines.len() > 1);
        for line in &lines[..lines.len() - 1] {
            // An odd width leaves its last column empty rather than splitting a glyph.
            assert_eq!(columns_of(line, cp), width / 2 * 2, "{width}: {line:?}");
        }
        assert_eq!(lines.concat(), word, "nothing lost");
    }
    // After Latin text, the wide word starts on the same line and breaks at a column boundary.
    let lines = wrap(&format!("3 x {word}"), cp, 9, 0, 4);
    assert_eq!(lines[0], "3 x 拉面");
    assert!(lines.iter().all(|l| columns_of(l, cp) <= 9), "{lines:?}");
    // Emoji are wide too.
    assert_eq!(wrap("🌶🌶🌶", cp, 5, 0, 0), ["🌶🌶", "🌶"]);
    // An indent that leaves one column for a wide glyph is dropped on that line.
    assert_eq!(wrap("中中", cp, 2, 1, 1), ["中", "中"]);
    assert_eq!(wrap("a 中", cp, 3, 0, 1), ["a", " 中"]);
    assert_eq!(wrap("a 中", cp, 2, 0, 1), ["a", "中"]);
    // Only a line of one column cannot hold it: it is printed alone rather than lost.
    assert_eq!(wrap("中a", cp, 1, 0, 0), ["中", "a"]);
}

#[test]
fn a_hard_break_never_separates_a_letter_from_its_marks() {
    let cp = CodePage::Pc858;
    let is_mark = |c: char| columns_of(&c.to_string(), cp) == 0;
    for width in 1..=20 {
        for text in [THAI.repeat(5), "กุ้".repeat(30), format!("ab{}", "ก้ำ".repeat(9)), format!("拉{}", THAI.repeat(3))]
        {
            let lines = wrap(&text, cp, width, 0, 0);
            assert_eq!(lines.concat(), text, "{width}: nothing lost");
            for line in &lines {
                assert!(!line.starts_with(is_mark), "{width}: line starts with a mark: {line:?}");
                // A line of 1 column cannot hold a wide glyph: it gets one alone.
                let single_wide = line.chars().filter(|&c| !is_mark(c)).count() == 1;
                assert!(columns_of(line, cp) <= width || single_wide, "{width}: {line:?}");
            }
        }
    }
    // A mark after a space (no letter to sit on) is a word of 0 columns: kept, never a panic.
    assert_eq!(wrap("a \u{E49} b", cp, 3, 0, 0), ["a \u{E49}", "b"]);
}

#[test]
fn pseudo_random_text_wraps_within_the_width_in_columns() {
    let mut r = Lcg(0x7A1_C0DE);
    for round in 0..3000 {
        let text = r.string();
        let cp = if round % 2 == 0 { CodePage::Pc858 } else { CodePage::Wpc1252 };
        let width = [64, 48, 42, 32, 24, 16, 5, 2][round % 8];
        let (first, rest) = (r.below(8), r.below(8));
        let lines = wrap(&text, cp, width, first, rest);
        let squeezed: String = lines.iter().flat_map(|l| l.chars()).filter(|c| !c.is_whitespace()).collect();
        assert_eq!(squeezed, squeeze(&text, cp), "round {round}: text lost");
        for line in &lines {
            assert!(columns_of(line, cp) <= width, "round {round}, width {width}: {line:?}");
            assert_eq!(line, &printable(line, cp), "round {round}: not printable: {line:?}");
        }
        let right = r.string();
        for line in columns(&text, &right, cp, width, first, rest) {
            assert!(columns_of(&line, cp) <= width, "round {round}, width {width}: {line:?}");
        }
    }
}

#[test]
fn every_code_page_character_is_one_column_in_the_image_font_too() {
    // A line mixing code-page text and Thai is measured with 1 column per code-page char;
    // the image renders it in the font's columns: they must agree or the image clips.
    for cp in [CodePage::Pc858, CodePage::Wpc1252] {
        for b in 0x20..=0xFFu8 {
            let c = cp.decode_byte(b);
            // What the printable form keeps (a soft hyphen, U+00AD, is dropped as invisible).
            if cp.can_encode(c) && printable(&c.to_string(), cp) == c.to_string() && c != ' ' {
                assert_eq!(crate::glyphs::columns(c), 1, "{cp:?} {b:#04X} {c:?}");
                assert!(crate::glyphs::has_glyph(c), "{cp:?} {b:#04X} {c:?}");
            }
        }
    }
}

#[test]
fn a_qr_preview_shows_the_real_characters_and_cuts_at_a_column_boundary() {
    let data = format!("https://x.th/{THAI}/拉面/🙏");
    let line =
        Line { text: String::new(), size: Size::Normal, bold: false, reverse: false, align: Align::Left, qr: None };
    let doc = Document { lines: vec![Line { qr: Some(data.clone()), ..line }] };
    let mut l = layout(48);
    assert_eq!(doc.to_text(&l), format!("[QR {data}]\n"));
    for width in 1..=40 {
        l.set_width(width);
        let text = doc.to_text(&l);
        let preview = text.trim_end_matches('\n');
        assert!(columns_of(preview, l.code_page) <= width, "{width}: {preview:?}");
        if width > 8 && preview != format!("[QR {data}]") {
            let kept = preview.strip_prefix("[QR ").and_then(|p| p.strip_suffix("...]"));
            let kept = kept.unwrap_or_else(|| panic!("{width}: {preview:?}"));
            assert!(data.starts_with(kept), "{width}: cut inside a character cluster: {preview:?}");
            let next = data[kept.len()..].chars().next().unwrap();
            assert!(columns_of(&next.to_string(), l.code_page) > 0, "{width}: a mark left behind: {preview:?}");
        }
    }
}

#[test]
fn image_data_never_carries_a_real_time_command() {
    let mut data = vec![0x10, 0x04, 0x01, 0x10, 0x05, 0x10, 0x14, 0x10, 0x10, 0x04, 0x10, 0x06];
    super::document::sanitize_raster(&mut data);
    assert_eq!(data, [0x00, 0x04, 0x01, 0x00, 0x05, 0x00, 0x14, 0x10, 0x00, 0x04, 0x10, 0x06]);

    // A bitmap crafted to hold DLE EOT / ENQ / DC4, one across a row boundary: 3 bytes a row.
    #[rustfmt::skip]
    let crafted = crate::glyphs::Bitmap {
        width: 24,
        height: 4,
        data: vec![
            0x10, 0x04, 0x10,
            0x05, 0x10, 0x14,
            0x10, 0x10, 0x04,
            0x10, 0x06, 0x10,
        ],
    };
    let bytes = super::document::image_bytes(&crafted);
    let plain = crafted.to_escpos();
    assert_eq!(bytes[..8], plain[..8], "the header is untouched");
    assert_eq!(bytes[..8], [0x1D, 0x76, 0x30, 0x00, 3, 0, 4, 0]);
    let sent = &bytes[8..];
    assert!(!sent.windows(2).any(|w| w[0] == 0x10 && matches!(w[1], 0x04 | 0x05 | 0x14)), "{sent:02X?}");
    assert_eq!(sent, [0x00, 0x04, 0x00, 0x05, 0x00, 0x14, 0x10, 0x00, 0x04, 0x10, 0x06, 0x10]);
    let changed_dots: u32 = sent.iter().zip(&crafted.data).map(|(a, b)| (a ^ b).count_ones()).sum();
    assert_eq!(changed_dots, 4, "one dot per sequence");

    // A real line: "丸丸丸丸" in Font B (64 columns) renders with `10 04|05|14` in its data.
    let l = layout(64);
    let line =
        Line {
            text: "丸丸丸丸".into(), size: Size::Normal, bold: false, reverse: false, align: Align::Left, qr: None
        };
    let raw = crate::glyphs::render_line(&line.text, &raster_style(&line, &l));
    let is_realtime = |w: &[u8]| w[0] == 0x10 && matches!(w[1], 0x04 | 0x05 | 0x14);
    assert!(raw.data.windows(2).any(is_realtime), "the font no longer draws such a line: pick another");
    let bytes = Document { lines: vec![line] }.to_escpos(&l);
    assert_no_realtime_in_images(&bytes);
    let (images, _) = images_and_lfs(&bytes);
    let [(576, 17, sent)] = images[..] else { panic!("{images:?}") };
    let changed: Vec<(u8, u8)> = raw.data.iter().zip(sent).filter(|(a, b)| a != b).map(|(&a, &b)| (a, b)).collect();
    assert!(!changed.is_empty() && changed.iter().all(|&c| c == (0x10, 0x00)), "{changed:02X?}");
}

#[test]
fn no_emoji_prints_as_a_question_mark() {
    let cp = CodePage::Pc858;
    // The emoji outside the emoji blocks (Emoji=Yes in Unicode's emoji data, ASCII aside).
    let bmp = "©®‼⁉™ℹ↔↕↖↗↘↙↩↪⌚⌛⌨⏏⏩⏪⏫⏬⏭⏮⏯⏰⏱⏲⏳⏸⏹⏺Ⓜ▪▫▶◀◻◼◽◾⤴⤵⬅⬆⬇⬛⬜⭐⭕〰〽㊗㊙";
    // The emoji blocks whole: unassigned code points are future emoji.
    let blocks = ('\u{2600}'..='\u{27BF}').chain('\u{1F000}'..='\u{1FAFF}').chain('\u{1FC00}'..='\u{1FFFD}');
    for c in bmp.chars().chain(blocks) {
        let p = printable(&c.to_string(), cp);
        assert!(!p.contains('?'), "{c:?} U+{:04X} prints as {p:?}", u32::from(c));
    }
    // Unicode 16 emoji are newer than the font: kept (the preview shows them), and the image
    // draws an empty box of 2 columns for each, in the ink of the line.
    let newer = "🫩🪉 ok";
    assert_eq!(printable(newer, cp), newer);
    assert_eq!(columns_of(newer, cp), 7);
    let l = layout(48);
    let doc = render_note(newer, &l);
    assert!(doc.to_text(&l).contains(newer), "{}", doc.to_text(&l));
    let line = doc.lines.iter().find(|line| line.text.contains(newer)).unwrap();
    let image = crate::glyphs::render_line(&line.text, &raster_style(line, &l));
    let ink_in = |from: usize, to: usize| (from..to).any(|x| (0..image.height).any(|y| image.get(x, y)));
    assert!(ink_in(0, 24) && ink_in(24, 48), "a box for each");
    let bytes = doc.to_escpos(&l);
    let (images, _) = images_and_lfs(&bytes);
    let mut want = image.data.clone();
    super::document::sanitize_raster(&mut want);
    assert!(images.iter().any(|&(w, _, data)| w == 576 && data == want), "the line is sent as that image");
}

/// A pickup kitchen ticket whose buyer's note is `note`.
fn render_note(note: &str, l: &Layout) -> Document {
    let mut o = pickup();
    o.buyer_note = note.into();
    render(&o, ReceiptType::Kitchen, l, None)
}
