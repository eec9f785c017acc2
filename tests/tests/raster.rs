//! Thai, CJK and emoji reach the paper as image lines: a fixture order with a Thai dish and
//! an emoji note, rendered in Font A and Font B and sent to the printer simulator, arrives as
//! text lines plus one `GS v 0` image per such line, pixel for pixel the bundled font's
//! rendering, with no unknown command and no real-time command hidden in the image data.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use wix_print::glyphs::{RasterAlign, RasterStyle, render_line};
use wix_print::receipt::{Align, Layout, Size, render};
use wixprint_shared::proto::print::ReceiptType;
use wixprint_tests::sim::PrinterSim;
use wixprint_tests::webhook::{fixture, order_mut};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thai_dish_and_emoji_note_print_as_image_lines() {
    let mut ev = fixture("order_created.pickup.json");
    let mut order = wix_ingest::wix::map_order(order_mut(&mut ev).unwrap()).unwrap();
    order.line_items[0].name = "ต้มยำกุ้ง Tom Yum".into();
    order.buyer_note = "extra scharf 🌶🌶 bitte 🙏".into();
    let sim = PrinterSim::start("127.0.0.1:0").await.unwrap();
    let mut printed = 0;
    // Font A (48 columns of 12x24 dots) and Font B (64 of 9x17): both 576 dots wide.
    let runs = [48, 64].into_iter().flat_map(|width| [(width, ReceiptType::Kitchen), (width, ReceiptType::Customer)]);
    for (width, kind) in runs {
        let layout = Layout::new(width);
        let cell = if width > 56 { RasterStyle::FONT_B } else { RasterStyle::FONT_A };
        let doc = render(&order, kind, &layout, None);
        let text = doc.to_text(&layout);
        assert!(!text.contains('?'), "{text}");
        let mut conn = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
        conn.write_all(&doc.to_escpos(&layout)).await.unwrap();
        conn.shutdown().await.unwrap();
        printed += 1;
        let ticket = sim.wait_for_tickets(printed, Duration::from_secs(10)).await.unwrap().remove(printed - 1);
        assert!(ticket.complete && ticket.unknown_commands == 0, "{width} {kind:?}:\n{}", ticket.text);

        // One printed line per document line; image lines where the text has no code page.
        // The feed before the cut prints as blank lines: not part of the document.
        let mut printed_lines: Vec<&str> = ticket.lines.iter().map(|l| l.text.as_str()).collect();
        while printed_lines.last().is_some_and(|l| l.trim().is_empty()) {
            printed_lines.pop();
        }
        let mut expected: Vec<&str> = text.lines().collect();
        while expected.last().is_some_and(|l| l.trim().is_empty()) {
            expected.pop();
        }
        assert_eq!(printed_lines.len(), expected.len(), "{width} {kind:?}:\n{}\n---\n{text}", ticket.text);
        let mut images = ticket.images.iter();
        let mut image_texts = Vec::new();
        for (doc_line, (got, want)) in doc.lines.iter().zip(printed_lines.iter().zip(&expected)) {
            if want.chars().all(|c| layout.code_page.can_encode(c)) {
                assert_eq!(got.trim(), want.trim(), "{width} {kind:?}");
                continue;
            }
            image_texts.push(doc_line.text.as_str());
            let image = images.next().expect("an image for the line");
            assert_eq!(got, &format!("[IMAGE {}x{}]", image.width, image.height));
            let (width_mult, height_mult) = match doc_line.size {
                Size::Normal => (1, 1),
                Size::DoubleHeight => (1, 2),
                Size::DoubleWidth => (2, 1),
                Size::Double => (2, 2),
            };
            let style = RasterStyle {
                line_width: layout.width * cell.cell_width,
                width_mult,
                height_mult,
                bold: doc_line.bold,
                reverse: doc_line.reverse,
                align: match doc_line.align {
                    Align::Left => RasterAlign::Left,
                    Align::Center => RasterAlign::Center,
                    Align::Right => RasterAlign::Right,
                },
                ..cell
            };
            let mut want_bitmap = render_line(&doc_line.text, &style).data;
            for i in 0..want_bitmap.len().saturating_sub(1) {
                if want_bitmap[i] == 0x10 && matches!(want_bitmap[i + 1], 0x04 | 0x05 | 0x14) {
                    want_bitmap[i] = 0;
                }
            }
            assert_eq!((image.width, image.height), (576, cell.cell_height * height_mult), "{width} {kind:?}");
            assert_eq!(image.data, want_bitmap, "{width} {kind:?}: the image is the font's rendering of {want:?}");
            assert!(image.ink() > 0);
            let realtime = |w: &[u8]| w[0] == 0x10 && matches!(w[1], 0x04 | 0x05 | 0x14);
            assert!(!image.data.windows(2).any(realtime), "{width} {kind:?}: DLE EOT/ENQ/DC4 in {want:?}");
        }
        assert!(images.next().is_none(), "no extra images");
        assert!(image_texts.iter().any(|t| t.contains("ต้มยำกุ้ง")), "{width} {kind:?}: {image_texts:?}");
        if kind == ReceiptType::Kitchen {
            assert!(image_texts.iter().any(|t| t.contains("🌶🌶")), "{image_texts:?}");
            assert!(image_texts.iter().any(|t| t.contains('🙏')), "{image_texts:?}");
        }
    }
}
