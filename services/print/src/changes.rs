//! What changed between the order the paper shows and a newer version of it, in the terms
//! the kitchen and the driver care about. Pure: no I/O, no rendering.
//!
//! Items are matched by line-item id (by name when Wix sends no id); modifiers are compared as
//! the text they print as. Payment and fulfilment states are not printable changes.

use wixprint_shared::proto::order::{LineItem, Order};

/// One printable difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added { quantity: u32, name: String, modifiers: Vec<String> },
    Removed { quantity: u32, name: String },
    Quantity { name: String, from: u32, to: u32 },
    Modifiers { name: String, added: Vec<String>, removed: Vec<String> },
    Note { to: String },
    Time,
    Address,
    Phone { to: String },
}

impl Change {
    /// Does the kitchen ticket show this?
    pub fn concerns_kitchen(&self) -> bool {
        !matches!(self, Change::Address | Change::Phone { .. })
    }

    /// Does the driver / pickup slip show this?
    pub fn concerns_driver(&self) -> bool {
        matches!(self, Change::Note { .. } | Change::Time | Change::Address | Change::Phone { .. })
    }
}

fn key(item: &LineItem) -> String {
    if item.id.trim().is_empty() { format!("name:{}", item.name.trim()) } else { format!("id:{}", item.id) }
}

fn modifier_texts(item: &LineItem) -> Vec<String> {
    item.modifiers
        .iter()
        .map(|m| {
            let name =
                if m.quantity > 1 { format!("{} x {}", m.quantity, m.name.trim()) } else { m.name.trim().to_owned() };
            if m.group.trim().is_empty() { name } else { format!("{}: {name}", m.group.trim()) }
        })
        .filter(|t| !t.trim().is_empty())
        .collect()
}

/// The printable changes from `old` to `new`, items first.
pub fn diff(old: &Order, new: &Order) -> Vec<Change> {
    let mut out = Vec::new();
    for n in &new.line_items {
        match old.line_items.iter().find(|o| key(o) == key(n)) {
            None => {
                out.push(Change::Added { quantity: n.quantity, name: n.name.clone(), modifiers: modifier_texts(n) })
            }
            Some(o) => {
                if o.quantity != n.quantity {
                    out.push(Change::Quantity { name: n.name.clone(), from: o.quantity, to: n.quantity });
                }
                let (om, nm) = (modifier_texts(o), modifier_texts(n));
                let added: Vec<String> = nm.iter().filter(|m| !om.contains(m)).cloned().collect();
                let removed: Vec<String> = om.iter().filter(|m| !nm.contains(m)).cloned().collect();
                if !added.is_empty() || !removed.is_empty() {
                    out.push(Change::Modifiers { name: n.name.clone(), added, removed });
                }
            }
        }
    }
    for o in &old.line_items {
        if !new.line_items.iter().any(|n| key(n) == key(o)) {
            out.push(Change::Removed { quantity: o.quantity, name: o.name.clone() });
        }
    }
    if old.buyer_note.trim() != new.buyer_note.trim() {
        out.push(Change::Note { to: new.buyer_note.trim().to_owned() });
    }
    let (of, nf) = (old.fulfillment.clone().unwrap_or_default(), new.fulfillment.clone().unwrap_or_default());
    if of.promised_from != nf.promised_from || of.promised_to != nf.promised_to || of.promised_text != nf.promised_text
    {
        out.push(Change::Time);
    }
    if of.address != nf.address || of.instructions != nf.instructions || of.r#type != nf.r#type {
        out.push(Change::Address);
    }
    let (oc, nc) = (of.contact.unwrap_or_default(), nf.contact.unwrap_or_default());
    if oc.phone.trim() != nc.phone.trim() {
        out.push(Change::Phone { to: nc.phone.trim().to_owned() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wixprint_shared::proto::order::{Fulfillment, Modifier, PaymentStatus};

    fn item(id: &str, name: &str, qty: u32) -> LineItem {
        LineItem { id: id.into(), name: name.into(), quantity: qty, ..Default::default() }
    }

    fn order(items: Vec<LineItem>) -> Order {
        Order { id: "o".into(), line_items: items, fulfillment: Some(Fulfillment::default()), ..Default::default() }
    }

    #[test]
    fn quantity_change_is_named_and_concerns_only_the_kitchen() {
        let old = order(vec![item("1", "Nam Tok", 3), item("2", "Som Tam", 3)]);
        let new = order(vec![item("1", "Nam Tok", 3), item("2", "Som Tam", 4)]);
        let d = diff(&old, &new);
        assert_eq!(d, vec![Change::Quantity { name: "Som Tam".into(), from: 3, to: 4 }]);
        assert!(d[0].concerns_kitchen() && !d[0].concerns_driver());
    }

    #[test]
    fn payment_alone_is_not_a_printable_change() {
        let old = order(vec![item("1", "Nam Tok", 3)]);
        let mut new = old.clone();
        new.payment_status = PaymentStatus::Paid as i32;
        new.price_summary = Some(Default::default());
        assert!(diff(&old, &new).is_empty());
    }

    #[test]
    fn added_removed_and_modifier_changes() {
        let mut a = item("1", "Curry", 1);
        a.modifiers.push(Modifier { group: "Schärfe".into(), name: "mild".into(), quantity: 1, price: String::new() });
        let old = order(vec![a.clone(), item("2", "Reis", 1)]);
        let mut b = a.clone();
        b.modifiers[0].name = "scharf".into();
        let new = order(vec![b, item("3", "Bier", 2)]);
        let d = diff(&old, &new);
        assert!(d.contains(&Change::Modifiers {
            name: "Curry".into(),
            added: vec!["Schärfe: scharf".into()],
            removed: vec!["Schärfe: mild".into()]
        }));
        assert!(d.contains(&Change::Added { quantity: 2, name: "Bier".into(), modifiers: vec![] }));
        assert!(d.contains(&Change::Removed { quantity: 1, name: "Reis".into() }));
    }
}
