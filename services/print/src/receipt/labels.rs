//! The fixed words on receipts: the [`Labels`] struct and its two built-in languages, German
//! and English. Which labels an order gets, and labels a restaurant edits in a file, are the
//! [`LabelBook`](super::LabelBook)'s business.
//!
//! Must never: know about orders or files. The field names are the keys of a label file, so
//! renaming one breaks every restaurant's file that sets it.

use std::borrow::Cow;

/// Defines [`Labels`] from one table of `key: "German", "English";` rows: the struct (one
/// `Cow<'static, str>` field per row), the built-in [`Labels::DE`] and [`Labels::EN`], the
/// key names ([`Labels::KEYS`]) and access by key name. One table, so a label cannot exist in
/// one language and be forgotten in the other.
macro_rules! labels {
    ($($(#[$doc:meta])* $key:ident: $de:literal, $en:literal;)*) => {
        /// Every fixed word a layout prints. Labels ending in ':' are followed by a value.
        /// Built-in texts are borrowed, texts from a label file owned.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Labels {
            $($(#[$doc])* pub $key: Cow<'static, str>,)*
        }

        impl Labels {
            pub const DE: Labels = Labels { $($key: Cow::Borrowed($de),)* };
            pub const EN: Labels = Labels { $($key: Cow::Borrowed($en),)* };
            /// The field names in declaration order: the keys of a label file.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($key),)*];

            /// The text of the label named `key`; `None` for a name that is not a label.
            pub fn get(&self, key: &str) -> Option<&str> {
                match key {
                    $(stringify!($key) => Some(&self.$key),)*
                    _ => None,
                }
            }

            /// Sets the label named `key`; false (and nothing changed) for a name that is not a
            /// label.
            pub fn set(&mut self, key: &str, text: impl Into<Cow<'static, str>>) -> bool {
                match key {
                    $(stringify!($key) => self.$key = text.into(),)*
                    _ => return false,
                }
                true
            }
        }
    };
}

labels! {
    // Receipt titles.
    kitchen: "KÜCHE", "KITCHEN";
    driver: "FAHRER", "DRIVER";
    pickup_slip: "ABHOLSCHEIN", "PICKUP SLIP";
    customer_receipt: "BELEG", "RECEIPT";
    // Fulfillment.
    pickup: "ABHOLUNG", "PICKUP";
    delivery: "LIEFERUNG", "DELIVERY";
    pickup_time: "Abholzeit:", "Pickup time:";
    delivery_time: "Lieferzeit:", "Delivery time:";
    asap: "SOFORT", "ASAP";
    // Order.
    order: "Bestellung", "Order";
    ordered_at: "Bestellt:", "Ordered:";
    canceled: "STORNIERT", "CANCELED";
    note: "NOTIZ:", "NOTE:";
    /// Heads the kitchen ticket's allergy block.
    allergy: "ALLERGIE", "ALLERGY";
    instructions: "Hinweis:", "Instructions:";
    items: "Artikel:", "Items:";
    customer: "Kunde:", "Customer:";
    /// Before the customer's phone number, and the restaurant's on the customer receipt.
    phone: "Tel.", "Phone";
    address: "Adresse:", "Address:";
    /// Before the restaurant's VAT number in the customer receipt's header.
    vat_id: "MWST-Nr.", "VAT no.";
    // Money.
    subtotal: "Zwischensumme", "Subtotal";
    discount: "Rabatt", "Discount";
    delivery_fee: "Liefergebühr", "Delivery fee";
    fees: "Gebühren", "Fees";
    tax: "MwSt.", "Tax";
    tax_included: "inkl. MwSt.", "incl. tax";
    total: "TOTAL", "TOTAL";
    paid: "BEZAHLT", "PAID";
    paid_amount: "Bezahlt", "Paid";
    balance_due: "Offener Betrag", "Balance due";
    cash_to_collect: "BAR ZU KASSIEREN", "CASH TO COLLECT";
    // Change and cancellation slips.
    change: "ÄNDERUNG", "CHANGE";
    storno: "STORNO", "CANCELLED";
    storno_detail: "Bestellung storniert - nicht zubereiten", "Order cancelled - do not prepare";
    added: "NEU:", "ADDED:";
    removed: "WEG:", "REMOVED:";
    quantity: "MENGE:", "QUANTITY:";
    new_time: "NEUE ZEIT:", "NEW TIME:";
    new_note: "NEUE NOTIZ:", "NEW NOTE:";
    new_address: "NEUE ADRESSE:", "NEW ADDRESS:";
    new_phone: "NEUE TEL.:", "NEW PHONE:";
}
