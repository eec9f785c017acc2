//! Golden receipts: every Wix fixture × receipt type × width 48 and 32 renders to the
//! checked-in text in `tests/golden/`, and the ESC/POS bytes, decoded by the printer simulator
//! (PC858), read back as that same text. `UPDATE_GOLDEN=1 cargo test --test golden` rewrites
//! the files after an intended layout change (review the diff).

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use wix_print::receipt::{Layout, render};
use wixprint_shared::proto::print::ReceiptType;
use wixprint_tests::sim::PrinterSim;
use wixprint_tests::webhook::{FIXTURES, fixture, order_mut};

const TYPES: [(ReceiptType, &str); 3] =
    [(ReceiptType::Kitchen, "kitchen"), (ReceiptType::Driver, "driver"), (ReceiptType::Customer, "customer")];

fn layout(width: usize) -> Layout {
    let mut l = Layout::new(width);
    l.time_zone = jiff::tz::TimeZone::get("Europe/Zurich").expect("tz");
    l.restaurant.name = "Thai Garden Buchs".into();
    l
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden").join(name)
}

fn trimmed(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_renders_to_its_golden_text_and_the_bytes_decode_back_to_it() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let sim = PrinterSim::start("127.0.0.1:0").await.unwrap();
    let mut mismatches = Vec::new();
    let mut printed = 0;
    for (file, _) in FIXTURES {
        let mut ev = fixture(file);
        let order =
            wix_ingest::wix::map_order(order_mut(&mut ev).expect("fixture carries an order")).expect("fixture maps");
        let stem = file.trim_end_matches(".json");
        for (kind, kind_name) in TYPES {
            for width in [48, 32] {
                let l = layout(width);
                let doc = render(&order, kind, &l, None);
                let text = doc.to_text(&l);
                for line in text.lines() {
                    assert!(line.chars().count() <= width, "{stem} {kind_name} {width}: line too wide: {line:?}");
                }
                let name = format!("{stem}.{kind_name}.{width}.txt");
                let path = golden_path(&name);
                if update {
                    std::fs::write(&path, &text).unwrap();
                } else {
                    match std::fs::read_to_string(&path) {
                        Ok(expected) if expected == text => {}
                        Ok(_) => mismatches.push(format!("{name} differs:\n{text}")),
                        Err(_) => mismatches.push(format!("{name} is missing (UPDATE_GOLDEN=1 writes it)")),
                    }
                }
                // The bytes the printer gets decode back to the same text.
                let mut conn = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
                conn.write_all(&doc.to_escpos(&l)).await.unwrap();
                conn.shutdown().await.unwrap();
                printed += 1;
                let tickets = sim.wait_for_tickets(printed, Duration::from_secs(10)).await.unwrap();
                let ticket = &tickets[printed - 1];
                assert!(ticket.complete && ticket.code_table == Some(19) && ticket.unknown_commands == 0, "{name}");
                assert_eq!(trimmed(&ticket.text), trimmed(&text), "{name}: ESC/POS decodes to different text");
                for line in &ticket.lines {
                    assert!(line.columns() <= width, "{name}: printed line wider than {width}: {:?}", line.text);
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}
