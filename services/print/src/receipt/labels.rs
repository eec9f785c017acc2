//! The fixed words on receipts, in German and English. German when the buyer's language
//! (else the site's) starts with "de", English otherwise.

use wixprint_shared::proto::order::Order;

/// Every fixed word a layout prints. Labels ending in ':' are followed by a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    // Receipt titles.
    pub kitchen: &'static str,
    pub driver: &'static str,
    pub pickup_slip: &'static str,
    pub customer_receipt: &'static str,
    // Fulfillment.
    pub pickup: &'static str,
    pub delivery: &'static str,
    pub pickup_time: &'static str,
    pub delivery_time: &'static str,
    pub asap: &'static str,
    // Order.
    pub order: &'static str,
    pub ordered_at: &'static str,
    pub canceled: &'static str,
    pub note: &'static str,
    /// Heads the kitchen ticket's allergy block.
    pub allergy: &'static str,
    pub instructions: &'static str,
    pub items: &'static str,
    pub customer: &'static str,
    pub phone: &'static str,
    pub address: &'static str,
    // Money.
    pub subtotal: &'static str,
    pub discount: &'static str,
    pub delivery_fee: &'static str,
    pub fees: &'static str,
    pub tax: &'static str,
    pub tax_included: &'static str,
    pub total: &'static str,
    pub paid: &'static str,
    pub paid_amount: &'static str,
    pub balance_due: &'static str,
    pub cash_to_collect: &'static str,
    // Change and cancellation slips.
    pub change: &'static str,
    pub storno: &'static str,
    pub storno_detail: &'static str,
    pub added: &'static str,
    pub removed: &'static str,
    pub quantity: &'static str,
    pub new_time: &'static str,
    pub new_note: &'static str,
    pub new_address: &'static str,
    pub new_phone: &'static str,
}

impl Labels {
    pub const DE: Labels = Labels {
        kitchen: "KÜCHE",
        driver: "FAHRER",
        pickup_slip: "ABHOLSCHEIN",
        customer_receipt: "BELEG",
        pickup: "ABHOLUNG",
        delivery: "LIEFERUNG",
        pickup_time: "Abholzeit:",
        delivery_time: "Lieferzeit:",
        asap: "SOFORT",
        order: "Bestellung",
        ordered_at: "Bestellt:",
        canceled: "STORNIERT",
        note: "NOTIZ:",
        allergy: "ALLERGIE",
        instructions: "Hinweis:",
        items: "Artikel:",
        customer: "Kunde:",
        phone: "Tel.",
        address: "Adresse:",
        subtotal: "Zwischensumme",
        discount: "Rabatt",
        delivery_fee: "Liefergebühr",
        fees: "Gebühren",
        tax: "MwSt.",
        tax_included: "inkl. MwSt.",
        total: "TOTAL",
        paid: "BEZAHLT",
        paid_amount: "Bezahlt",
        balance_due: "Offener Betrag",
        cash_to_collect: "BAR ZU KASSIEREN",
        change: "ÄNDERUNG",
        storno: "STORNO",
        storno_detail: "Bestellung storniert - nicht zubereiten",
        added: "NEU:",
        removed: "WEG:",
        quantity: "MENGE:",
        new_time: "NEUE ZEIT:",
        new_note: "NEUE NOTIZ:",
        new_address: "NEUE ADRESSE:",
        new_phone: "NEUE TEL.:",
    };

    pub const EN: Labels = Labels {
        kitchen: "KITCHEN",
        driver: "DRIVER",
        pickup_slip: "PICKUP SLIP",
        customer_receipt: "RECEIPT",
        pickup: "PICKUP",
        delivery: "DELIVERY",
        pickup_time: "Pickup time:",
        delivery_time: "Delivery time:",
        asap: "ASAP",
        order: "Order",
        ordered_at: "Ordered:",
        canceled: "CANCELED",
        note: "NOTE:",
        allergy: "ALLERGY",
        instructions: "Instructions:",
        items: "Items:",
        customer: "Customer:",
        phone: "Phone",
        address: "Address:",
        subtotal: "Subtotal",
        discount: "Discount",
        delivery_fee: "Delivery fee",
        fees: "Fees",
        tax: "Tax",
        tax_included: "incl. tax",
        total: "TOTAL",
        paid: "PAID",
        paid_amount: "Paid",
        balance_due: "Balance due",
        cash_to_collect: "CASH TO COLLECT",
        change: "CHANGE",
        storno: "CANCELLED",
        storno_detail: "Order cancelled - do not prepare",
        added: "ADDED:",
        removed: "REMOVED:",
        quantity: "QUANTITY:",
        new_time: "NEW TIME:",
        new_note: "NEW NOTE:",
        new_address: "NEW ADDRESS:",
        new_phone: "NEW PHONE:",
    };

    /// The labels for `order`: the buyer's language decides, the site's when the buyer's is
    /// unknown.
    pub fn for_order(order: &Order) -> &'static Labels {
        let buyer = order.buyer_language.trim();
        let language = if buyer.is_empty() { order.site_language.trim() } else { buyer };
        Labels::for_language(language)
    }

    /// German for "de", "de-CH", "DE_at" ...; English for anything else.
    pub fn for_language(language: &str) -> &'static Labels {
        let german = language.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("de"));
        if german { &Labels::DE } else { &Labels::EN }
    }
}
