//! Queue priorities: which ticket prints first when several wait (after an outage, at the
//! Friday rush). Lower numbers print first; within a priority, the order time, then kitchen →
//! driver → customer (the `type_rank`).
//!
//! - Critical (0): the kitchen ticket (or change slip) of an order whose note or modifiers
//!   name an allergy word: the kitchen must see it before it cooks anything else.
//! - High (1): kitchen tickets, and every receipt of an order whose total reaches the
//!   configured threshold.
//! - Normal (2): driver / pickup slips.
//! - Low (3): customer receipts.

use wixprint_shared::money::Money;
use wixprint_shared::proto::order::Order;
use wixprint_shared::proto::print::ReceiptType;

/// A job's place in the queue; lower prints first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Critical,
    High,
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::Critical, Priority::High, Priority::Normal, Priority::Low];

    /// The value stored in `jobs.priority` (the queue sorts on it) and shown by the admin API.
    pub fn as_sql(self) -> i32 {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
        }
    }

    pub fn from_sql(v: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_sql() == v)
    }

    /// The name for the admin API and logs.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// What decides a job's priority besides its receipt type.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub allergy_words: Vec<String>,
    /// Orders with at least this total print every receipt at HIGH.
    pub high_total: Option<String>,
}

impl Rules {
    /// The priority of `t` for `order`, and its rank within a priority.
    pub fn of(&self, order: &Order, t: ReceiptType) -> (Priority, i32) {
        let rank = match t {
            ReceiptType::Kitchen => 1,
            ReceiptType::Driver => 2,
            ReceiptType::Customer => 3,
            ReceiptType::Unspecified => 4,
        };
        let base = match t {
            ReceiptType::Kitchen => Priority::High,
            ReceiptType::Driver => Priority::Normal,
            _ => Priority::Low,
        };
        if t == ReceiptType::Kitchen && has_allergy(order, &self.allergy_words) {
            return (Priority::Critical, rank);
        }
        let big = self.high_total.as_deref().and_then(parse_amount).is_some_and(|limit| {
            order.price_summary.as_ref().and_then(|p| parse_amount(&p.total)).is_some_and(|total| total >= limit)
        });
        (if big { base.min(Priority::High) } else { base }, rank)
    }
}

fn has_allergy(order: &Order, words: &[String]) -> bool {
    if words.is_empty() {
        return false;
    }
    let hit = |text: &str| !crate::receipt::allergy_matches(text, words).is_empty();
    hit(&order.buyer_note) || order.line_items.iter().any(|l| l.modifiers.iter().any(|m| hit(&m.group) || hit(&m.name)))
}

/// A non-negative plain decimal amount ("100", "99.5", "1234.56"); `None` when it is not one.
pub fn parse_amount(s: &str) -> Option<Money> {
    Money::parse_plain(s.trim()).filter(|m| !m.is_negative())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wixprint_shared::proto::order::{LineItem, Modifier, PriceSummary};

    fn order(note: &str, modifier: &str, total: &str) -> Order {
        Order {
            buyer_note: note.into(),
            line_items: vec![LineItem {
                name: "Erdnuss-Curry".into(),
                modifiers: vec![Modifier { group: "Extras".into(), name: modifier.into(), ..Default::default() }],
                ..Default::default()
            }],
            price_summary: Some(PriceSummary { total: total.into(), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn allergy_makes_the_kitchen_ticket_critical_only() {
        let rules = Rules { allergy_words: vec!["Erdnüsse".into(), "Gluten".into()], high_total: None };
        let o = order("Bitte keine Erdnüsse!", "", "20.00");
        assert_eq!(rules.of(&o, ReceiptType::Kitchen), (Priority::Critical, 1));
        assert_eq!(rules.of(&o, ReceiptType::Driver), (Priority::Normal, 2));
        assert_eq!(rules.of(&o, ReceiptType::Customer), (Priority::Low, 3));
        assert_eq!(rules.of(&order("", "ohne Gluten", "1"), ReceiptType::Kitchen).0, Priority::Critical);
        // Item names never trigger: "Erdnuss-Curry" is a dish, not an allergy.
        assert_eq!(rules.of(&order("", "", "1"), ReceiptType::Kitchen).0, Priority::High);
    }

    #[test]
    fn big_orders_print_everything_at_high() {
        let rules = Rules { allergy_words: vec![], high_total: Some("200".into()) };
        assert_eq!(rules.of(&order("", "", "200.00"), ReceiptType::Customer).0, Priority::High);
        assert_eq!(rules.of(&order("", "", "199.99"), ReceiptType::Customer).0, Priority::Low);
        assert_eq!(rules.of(&order("", "", "not money"), ReceiptType::Driver).0, Priority::Normal);
    }

    #[test]
    fn priorities_round_trip_and_sort_critical_first() {
        for p in Priority::ALL {
            assert_eq!(Priority::from_sql(p.as_sql()), Some(p));
        }
        assert_eq!(Priority::from_sql(9), None);
        assert!(Priority::Critical.as_sql() < Priority::Low.as_sql());
    }

    #[test]
    fn amounts_parse_strictly() {
        assert_eq!(parse_amount("100").map(|m| m.to_string()).as_deref(), Some("100.00"));
        assert_eq!(parse_amount(" 99.5 ").map(|m| m.to_string()).as_deref(), Some("99.50"));
        for bad in ["", "-1", "1e3", "1.2.3", ".5", "12,50", "1.1234567"] {
            assert_eq!(parse_amount(bad), None, "{bad}");
        }
    }
}
