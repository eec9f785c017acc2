//! What a new order version means on paper: the pure decision core of wix-print.
//!
//! [`plan`] takes what the store knows (the order's paper state, its jobs, the version the
//! paper shows) and the new version, and returns a [`Plan`]: the jobs to insert, the jobs to
//! cancel, the waiting tickets that now print the new version, and the order's new paper
//! state. The store loads, calls it, and executes the plan in one transaction. [`after_doubt`]
//! decides what a ticket whose outcome became unknown turns into.
//!
//! The rules (ARCHITECTURE.md, "paper follows Wix's sequence"):
//! - the first approved version creates the receipt set; an unapproved one prints nothing;
//!   an order of another app is filtered; a version older than the latest changes nothing;
//! - a printable change: tickets never sent simply print the new version; a ticket that may
//!   be on paper (printed, in flight, uncertain, or sent before being held) gets a change slip,
//!   which the queue prints only after that ticket is finished (see [`JobState::OPEN`]);
//! - a cancellation: every waiting or held job is cancelled; if anything may be on paper,
//!   STORNO slips are queued (after any ticket still in flight); a ticket whose fate is unknown
//!   never prints after its order was cancelled ([`after_doubt`]);
//! - payment and fulfilment changes print nothing (optionally, a driver slip paid after it
//!   printed is reprinted).
//!
//! Must never: touch the database, the clock or the printer.

use wixprint_shared::proto::order::{Order, OrderSource, OrderStatus, PaymentStatus};
use wixprint_shared::proto::print::ReceiptType;

use crate::job::{JobKind, JobState};

/// Per-job queue settings from config.
#[derive(Debug, Clone)]
pub struct QueuePolicy {
    pub receipt_types: Vec<ReceiptType>,
    /// Receipt types that get a STORNO slip when a printed order is cancelled.
    pub storno_types: Vec<ReceiptType>,
    pub max_attempts: u32,
    /// Printer per receipt type; a type not listed prints on `default_printer`.
    pub routes: Vec<(ReceiptType, String)>,
    pub default_printer: String,
    /// Copies of the receipt set's tickets per type (default 1); slips print once.
    pub copies: Vec<(ReceiptType, u32)>,
    /// Queue priorities (allergy → CRITICAL, big orders → HIGH).
    pub priority: crate::priority::Rules,
    /// Print only orders with a line item from this app (Wix Restaurants); `None` prints all.
    pub restaurant_app_id: Option<String>,
    /// Reprint the driver slip when an order printed as unpaid becomes paid.
    pub reprint_driver_when_paid: bool,
    /// An order print.db should have known (its earlier versions are missing: the database
    /// was lost and rebuilt) prints only if it was placed at most this long ago, with the
    /// KOPIE banner; an older one is recorded, not printed.
    pub late_window_ms: i64,
}

impl QueuePolicy {
    pub fn printer_for(&self, t: ReceiptType) -> &str {
        self.routes.iter().find(|(r, _)| *r == t).map_or(self.default_printer.as_str(), |(_, p)| p)
    }

    pub fn copies_of(&self, t: ReceiptType) -> u32 {
        self.copies.iter().find(|(r, _)| *r == t).map_or(1, |(_, n)| *n)
    }

    /// Whether this order is one this printer prints at all. Local (phone) orders always are.
    pub fn prints(&self, order: &Order) -> bool {
        match &self.restaurant_app_id {
            None => true,
            Some(_) if order.source == OrderSource::Local as i32 => true,
            Some(app) => order.catalog_app_ids.iter().any(|a| a == app),
        }
    }
}

/// What a version meant (stored with the version; the admin API shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// This version created the order's receipt set.
    Queued,
    /// Nothing printable changed: payment, fulfilment, an older version, after a STORNO.
    Recorded,
    /// Not (yet) approved: nothing prints.
    NotPrintable,
    /// Not an order of the configured app.
    Filtered,
    /// Cancelled: waiting tickets cancelled, STORNO slips for what may be on paper.
    Cancelled,
    /// A printable change: slips queued, or waiting tickets now print this version.
    Changed,
    /// print.db has no record of the order's earlier versions (rebuilt) and the order is older
    /// than the late window: recorded, not printed.
    TooOld,
}

impl Disposition {
    const ALL: [Disposition; 7] = [
        Disposition::Queued,
        Disposition::Recorded,
        Disposition::NotPrintable,
        Disposition::Filtered,
        Disposition::Cancelled,
        Disposition::Changed,
        Disposition::TooOld,
    ];

    /// The value stored in `order_versions.disposition` (the proto enum's number, so rows
    /// written before this type existed read the same).
    pub fn as_sql(self) -> i32 {
        match self {
            Disposition::Queued => 1,
            Disposition::NotPrintable => 3,
            Disposition::Recorded => 4,
            Disposition::Cancelled => 5,
            Disposition::Changed => 6,
            Disposition::Filtered => 7,
            Disposition::TooOld => 8,
        }
    }

    pub fn from_sql(v: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_sql() == v)
    }
}

/// The order's paper state (`orders` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderPaper {
    pub latest_version: i64,
    /// The version that created the receipt set.
    pub set_version: Option<i64>,
    /// The version the paper shows (the base of the next change slip).
    pub paper_version: Option<i64>,
    /// Cancelled: nothing more prints.
    pub storno: bool,
}

/// A job as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobView {
    pub id: i64,
    pub kind: JobKind,
    pub receipt_type: ReceiptType,
    pub state: JobState,
    pub version: i64,
    pub attempts: u32,
}

impl JobView {
    /// Bytes of this job may have reached paper: it printed, or it was sent at least once.
    pub fn may_be_on_paper(&self) -> bool {
        self.state == JobState::Printed || self.attempts > 0
    }

    /// Waiting (or held) and never sent: it can print another version, or nothing, unseen.
    pub fn never_sent(&self) -> bool {
        self.attempts == 0 && matches!(self.state, JobState::Queued | JobState::Held | JobState::Failed)
    }
}

/// A job to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewJob {
    pub receipt_type: ReceiptType,
    pub kind: JobKind,
    pub copy: u32,
    /// For a change slip: the version the paper showed.
    pub base_version: Option<i64>,
    /// Prints with the KOPIE banner from its first attempt (it may have printed before print.db
    /// was lost).
    pub reprint: bool,
}

/// How a version arrives, besides its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Arrival {
    /// Ingest forwarded earlier versions of this order that print.db has no record of: the
    /// database was lost and rebuilt since (or the order's history is otherwise gone).
    pub missed_history: bool,
    /// Now, on the wall clock (the late window is about when the order was placed).
    pub now_ms: i64,
}

/// What a new version causes, executed by the store in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub disposition: Disposition,
    pub inserts: Vec<NewJob>,
    /// Jobs to cancel, with the state they leave.
    pub cancels: Vec<(i64, JobState)>,
    /// Tickets never sent that now print this version.
    pub retargets: Vec<i64>,
    /// The order's paper state after this version.
    pub paper: OrderPaper,
}

/// Decides what `order` at `version` means on paper, given the order's paper state (`None`
/// for a new order), its jobs, and the order the paper shows (`base`: the stored version
/// `paper_version`, else `set_version`; needed once the receipt set exists).
pub fn plan(
    known: Option<OrderPaper>,
    jobs: &[JobView],
    base: Option<&Order>,
    order: &Order,
    version: i64,
    arrival: Arrival,
    policy: &QueuePolicy,
) -> Plan {
    let known = known.unwrap_or_default();
    let mut paper = OrderPaper { latest_version: known.latest_version.max(version), ..known };
    let mut inserts = Vec::new();
    let mut cancels = Vec::new();
    let mut retargets = Vec::new();
    let approved = order.status == OrderStatus::Approved as i32;
    let cancelled = order.status == OrderStatus::Canceled as i32;

    let disposition = if version < known.latest_version {
        // Ingest forwards versions in order; an older one changes nothing.
        Disposition::Recorded
    } else {
        match known.set_version {
            None if !approved => Disposition::NotPrintable,
            None if !policy.prints(order) => Disposition::Filtered,
            None => {
                paper.set_version = Some(version);
                paper.paper_version = Some(version);
                // An order print.db lost track of: it may be on paper already. A recent one
                // prints with the banner; an old one (a payment or fulfilment event of last
                // week's order) must not bring a whole receipt set back to the kitchen.
                let placed_ms = order.created_at.as_ref().map(wixprint_shared::time::ms_from_timestamp);
                let too_old = placed_ms.is_none_or(|t| arrival.now_ms.saturating_sub(t) > policy.late_window_ms);
                if arrival.missed_history && too_old {
                    Disposition::TooOld
                } else {
                    for &t in &policy.receipt_types {
                        for copy in 1..=policy.copies_of(t) {
                            inserts.push(NewJob {
                                receipt_type: t,
                                kind: JobKind::Ticket,
                                copy,
                                base_version: None,
                                reprint: arrival.missed_history,
                            });
                        }
                    }
                    Disposition::Queued
                }
            }
            Some(_) if known.storno => Disposition::Recorded,
            Some(_) if cancelled => {
                for j in jobs.iter().filter(|j| JobState::WAITING.contains(&j.state) || j.state == JobState::Held) {
                    cancels.push((j.id, j.state));
                }
                // In flight jobs finish on their own; if their outcome becomes unknown they
                // are cancelled then (`after_doubt`), never reprinted.
                if jobs.iter().any(|j| j.kind != JobKind::Storno && j.may_be_on_paper()) {
                    for &t in &policy.storno_types {
                        inserts.push(NewJob {
                            receipt_type: t,
                            kind: JobKind::Storno,
                            copy: 1,
                            base_version: None,
                            reprint: false,
                        });
                    }
                }
                paper.storno = true;
                Disposition::Cancelled
            }
            Some(_) if !approved => Disposition::Recorded,
            Some(set) => match base {
                None => Disposition::Recorded,
                Some(base) => {
                    let base_version = known.paper_version.unwrap_or(set);
                    let changes = crate::changes::diff(base, order);
                    let mut any = false;
                    let follow =
                        |t: ReceiptType, kind: JobKind, retargets: &mut Vec<i64>, inserts: &mut Vec<NewJob>| {
                            let tickets = jobs.iter().filter(|j| j.receipt_type == t && j.kind == JobKind::Ticket);
                            let mut on_paper = false;
                            for j in tickets {
                                if j.never_sent() {
                                    if !retargets.contains(&j.id) {
                                        retargets.push(j.id);
                                    }
                                } else if j.may_be_on_paper() {
                                    on_paper = true;
                                }
                            }
                            if on_paper {
                                let base_version = matches!(kind, JobKind::Change { .. }).then_some(base_version);
                                inserts.push(NewJob { receipt_type: t, kind, copy: 1, base_version, reprint: false });
                            }
                        };
                    for &t in &policy.receipt_types {
                        let relevant = changes.iter().any(|c| match t {
                            ReceiptType::Driver => c.concerns_driver(),
                            ReceiptType::Customer => false,
                            _ => c.concerns_kitchen(),
                        });
                        if relevant {
                            any = true;
                            follow(t, JobKind::Change { version }, &mut retargets, &mut inserts);
                        }
                    }
                    // Optionally, a driver slip paid after it printed is reprinted, so the
                    // driver does not collect cash twice.
                    let paid = |o: &Order| o.payment_status == PaymentStatus::Paid as i32;
                    if policy.reprint_driver_when_paid
                        && paid(order)
                        && !paid(base)
                        && policy.receipt_types.contains(&ReceiptType::Driver)
                    {
                        any = true;
                        follow(ReceiptType::Driver, JobKind::PaidReprint { version }, &mut retargets, &mut inserts);
                    }
                    if any {
                        paper.paper_version = Some(version);
                        Disposition::Changed
                    } else {
                        Disposition::Recorded
                    }
                }
            },
        }
    };
    Plan { disposition, inserts, cancels, retargets, paper }
}

/// What a job becomes when the printer's word on it did not come (connection lost, no
/// confirmation, a restart while it was in flight): a reprint with the KOPIE banner, dead when
/// its attempts are used up, and cancelled when its order was cancelled meanwhile (the STORNO
/// queued then covers whatever may be on paper; a copy after the STORNO would cook a
/// cancelled order).
pub fn after_doubt(order_cancelled: bool, attempts: u32, max_attempts: u32) -> JobState {
    if order_cancelled {
        JobState::Cancelled
    } else if attempts >= max_attempts {
        JobState::Dead
    } else {
        JobState::Uncertain
    }
}

/// A policy for tests: these receipt and STORNO types on one printer "main", 5 attempts.
#[cfg(test)]
pub(crate) fn test_policy(receipt_types: &[ReceiptType], storno_types: &[ReceiptType]) -> QueuePolicy {
    QueuePolicy {
        receipt_types: receipt_types.to_vec(),
        storno_types: storno_types.to_vec(),
        max_attempts: 5,
        routes: vec![],
        default_printer: "main".into(),
        copies: vec![],
        priority: Default::default(),
        restaurant_app_id: None,
        reprint_driver_when_paid: false,
        late_window_ms: 2 * 3_600_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wixprint_shared::proto::order::LineItem;

    const K: ReceiptType = ReceiptType::Kitchen;
    const D: ReceiptType = ReceiptType::Driver;
    const C: ReceiptType = ReceiptType::Customer;

    fn policy() -> QueuePolicy {
        test_policy(&[K, D, C], &[K, D])
    }

    fn order(status: OrderStatus, quantity: u32) -> Order {
        Order {
            id: "o-1".into(),
            number: "10001".into(),
            status: status as i32,
            line_items: vec![LineItem { id: "li-1".into(), name: "Pad Thai".into(), quantity, ..Default::default() }],
            ..Default::default()
        }
    }

    fn approved(q: u32) -> Order {
        order(OrderStatus::Approved, q)
    }

    fn set_at(v: i64) -> OrderPaper {
        OrderPaper { latest_version: v, set_version: Some(v), paper_version: Some(v), storno: false }
    }

    fn job(id: i64, t: ReceiptType, state: JobState, attempts: u32) -> JobView {
        JobView { id, kind: JobKind::Ticket, receipt_type: t, state, version: 1, attempts }
    }

    /// The receipt set of version 1, every ticket in `state` with `attempts`.
    fn set(state: JobState, attempts: u32) -> Vec<JobView> {
        vec![job(1, K, state, attempts), job(2, D, state, attempts), job(3, C, state, attempts)]
    }

    fn kinds(p: &Plan) -> Vec<(ReceiptType, JobKind)> {
        p.inserts.iter().map(|j| (j.receipt_type, j.kind)).collect()
    }

    #[test]
    fn first_approved_version_creates_the_receipt_set_with_copies() {
        let mut pol = policy();
        pol.copies = vec![(C, 2)];
        let p = plan(None, &[], None, &approved(1), 1, Arrival::default(), &pol);
        assert_eq!(p.disposition, Disposition::Queued);
        let got: Vec<_> = p.inserts.iter().map(|j| (j.receipt_type, j.kind, j.copy)).collect();
        assert_eq!(
            got,
            vec![(K, JobKind::Ticket, 1), (D, JobKind::Ticket, 1), (C, JobKind::Ticket, 1), (C, JobKind::Ticket, 2)]
        );
        assert_eq!(p.paper, set_at(1));
    }

    #[test]
    fn an_unapproved_order_prints_nothing_and_an_other_apps_order_is_filtered() {
        let p = plan(None, &[], None, &order(OrderStatus::Initialized, 1), 1, Arrival::default(), &policy());
        assert_eq!((p.disposition, p.inserts.len(), p.paper.set_version), (Disposition::NotPrintable, 0, None));
        let mut pol = policy();
        pol.restaurant_app_id = Some("restaurants".into());
        let p = plan(None, &[], None, &approved(1), 1, Arrival::default(), &pol);
        assert_eq!((p.disposition, p.inserts.len()), (Disposition::Filtered, 0));
        let mut local = approved(1);
        local.source = OrderSource::Local as i32;
        assert_eq!(plan(None, &[], None, &local, 1, Arrival::default(), &pol).disposition, Disposition::Queued);
    }

    #[test]
    fn an_older_version_changes_nothing() {
        let p = plan(
            Some(set_at(5)),
            &set(JobState::Printed, 1),
            Some(&approved(1)),
            &approved(3),
            4,
            Arrival::default(),
            &policy(),
        );
        assert_eq!(p.disposition, Disposition::Recorded);
        assert!(p.inserts.is_empty() && p.cancels.is_empty() && p.retargets.is_empty());
        assert_eq!(p.paper, set_at(5));
    }

    #[test]
    fn a_change_to_printed_tickets_queues_slips_for_the_types_it_concerns() {
        let p = plan(
            Some(set_at(1)),
            &set(JobState::Printed, 1),
            Some(&approved(1)),
            &approved(3),
            2,
            Arrival::default(),
            &policy(),
        );
        assert_eq!(p.disposition, Disposition::Changed);
        // A quantity concerns the kitchen only; customers get no slips.
        assert_eq!(kinds(&p), vec![(K, JobKind::Change { version: 2 })]);
        assert_eq!(p.inserts[0].base_version, Some(1));
        assert_eq!(p.paper.paper_version, Some(2));
        assert!(p.retargets.is_empty());
    }

    #[test]
    fn a_change_to_tickets_never_sent_prints_the_new_version_instead_of_a_slip() {
        for state in [JobState::Queued, JobState::Held] {
            let p = plan(
                Some(set_at(1)),
                &set(state, 0),
                Some(&approved(1)),
                &approved(3),
                2,
                Arrival::default(),
                &policy(),
            );
            assert_eq!(p.disposition, Disposition::Changed, "{state}");
            assert!(p.inserts.is_empty(), "{state}: no slip before the ticket it changes");
            assert_eq!(p.retargets, vec![1], "{state}");
        }
    }

    #[test]
    fn a_change_to_a_ticket_whose_fate_is_unknown_queues_a_slip_that_follows_it() {
        // Uncertain (will reprint v1 with KOPIE), in flight, or held after being sent: the
        // slip is queued and the queue prints it after the ticket (JobState::OPEN).
        for (state, attempts) in [
            (JobState::Uncertain, 1),
            (JobState::Sending, 1),
            (JobState::AwaitingConfirm, 1),
            (JobState::Held, 1),
            (JobState::Queued, 2),
        ] {
            let p = plan(
                Some(set_at(1)),
                &set(state, attempts),
                Some(&approved(1)),
                &approved(3),
                2,
                Arrival::default(),
                &policy(),
            );
            assert_eq!(kinds(&p), vec![(K, JobKind::Change { version: 2 })], "{state}");
            assert!(p.retargets.is_empty(), "{state}: a ticket that may be on paper keeps its version");
            assert!(state.is_open() || state == JobState::Printed);
        }
    }

    #[test]
    fn a_second_copy_never_sent_prints_the_new_version_while_the_printed_one_gets_a_slip() {
        let jobs = [job(1, K, JobState::Printed, 1), job(2, K, JobState::Queued, 0)];
        let p = plan(Some(set_at(1)), &jobs, Some(&approved(1)), &approved(3), 2, Arrival::default(), &policy());
        assert_eq!(p.retargets, vec![2]);
        assert_eq!(kinds(&p), vec![(K, JobKind::Change { version: 2 })]);
    }

    #[test]
    fn a_change_slip_takes_the_version_the_paper_shows_as_its_base() {
        let known = OrderPaper { latest_version: 3, set_version: Some(1), paper_version: Some(3), storno: false };
        let p = plan(
            Some(known),
            &set(JobState::Printed, 1),
            Some(&approved(3)),
            &approved(4),
            4,
            Arrival::default(),
            &policy(),
        );
        assert_eq!(p.inserts[0].base_version, Some(3));
    }

    #[test]
    fn payment_and_fulfilment_print_nothing_unless_a_paid_driver_reprint_is_wanted() {
        let mut paid = approved(1);
        paid.payment_status = PaymentStatus::Paid as i32;
        let p = plan(
            Some(set_at(1)),
            &set(JobState::Printed, 1),
            Some(&approved(1)),
            &paid,
            2,
            Arrival::default(),
            &policy(),
        );
        assert_eq!((p.disposition, p.inserts.len()), (Disposition::Recorded, 0));
        assert_eq!(p.paper.paper_version, Some(1));
        let mut pol = policy();
        pol.reprint_driver_when_paid = true;
        let p =
            plan(Some(set_at(1)), &set(JobState::Printed, 1), Some(&approved(1)), &paid, 2, Arrival::default(), &pol);
        assert_eq!(kinds(&p), vec![(D, JobKind::PaidReprint { version: 2 })]);
        // A driver slip not printed yet simply prints as paid.
        let p =
            plan(Some(set_at(1)), &set(JobState::Queued, 0), Some(&approved(1)), &paid, 2, Arrival::default(), &pol);
        assert_eq!((p.disposition, p.inserts.len(), p.retargets.clone()), (Disposition::Changed, 0, vec![2]));
    }

    #[test]
    fn a_cancellation_before_anything_was_sent_cancels_silently() {
        for state in [JobState::Queued, JobState::Held, JobState::Failed] {
            let p = plan(
                Some(set_at(1)),
                &set(state, 0),
                Some(&approved(1)),
                &order(OrderStatus::Canceled, 1),
                2,
                Arrival::default(),
                &policy(),
            );
            assert_eq!(p.disposition, Disposition::Cancelled);
            assert_eq!(p.cancels, vec![(1, state), (2, state), (3, state)]);
            assert!(p.inserts.is_empty(), "{state}: nothing on paper, no STORNO");
            assert!(p.paper.storno);
        }
    }

    #[test]
    fn a_cancellation_after_a_ticket_may_have_reached_paper_queues_storno_slips() {
        let cancel = order(OrderStatus::Canceled, 1);
        for (state, attempts, cancelled) in [
            (JobState::Printed, 1, false),
            (JobState::Sending, 1, false),
            (JobState::AwaitingConfirm, 1, false),
            (JobState::Dead, 5, false),
            (JobState::Uncertain, 1, true),
            (JobState::Held, 1, true),
        ] {
            let jobs = [job(1, K, state, attempts), job(2, D, JobState::Queued, 0)];
            let p = plan(Some(set_at(1)), &jobs, Some(&approved(1)), &cancel, 2, Arrival::default(), &policy());
            assert_eq!(kinds(&p), vec![(K, JobKind::Storno), (D, JobKind::Storno)], "{state}");
            let mut expected = vec![(2, JobState::Queued)];
            if cancelled {
                expected.insert(0, (1, state));
            }
            assert_eq!(p.cancels, expected, "{state}: in flight jobs are left to the dispatcher");
        }
    }

    #[test]
    fn after_a_storno_nothing_more_prints() {
        let known = OrderPaper { storno: true, ..set_at(2) };
        for o in [approved(7), order(OrderStatus::Canceled, 1)] {
            let p = plan(
                Some(known),
                &set(JobState::Cancelled, 0),
                Some(&approved(1)),
                &o,
                3,
                Arrival::default(),
                &policy(),
            );
            assert_eq!((p.disposition, p.inserts.len(), p.cancels.len()), (Disposition::Recorded, 0, 0));
        }
    }

    #[test]
    fn a_doubtful_ticket_of_a_cancelled_order_is_cancelled_not_reprinted() {
        assert_eq!(after_doubt(false, 1, 5), JobState::Uncertain);
        assert_eq!(after_doubt(false, 5, 5), JobState::Dead);
        assert_eq!(after_doubt(true, 1, 5), JobState::Cancelled);
        assert_eq!(after_doubt(true, 5, 5), JobState::Cancelled);
    }

    #[test]
    fn an_order_print_db_lost_track_of_prints_with_the_banner_only_if_recent() {
        let now = 1_800_000_000_000;
        let placed = |ago_ms: i64| {
            let mut o = approved(1);
            o.created_at = Some(wixprint_shared::time::timestamp_from_ms(now - ago_ms));
            o
        };
        let lost = Arrival { missed_history: true, now_ms: now };
        // Placed an hour ago (window 2 h): the set prints, every ticket with the KOPIE banner.
        let p = plan(None, &[], None, &placed(3_600_000), 5, lost, &policy());
        assert_eq!(p.disposition, Disposition::Queued);
        assert!(p.inserts.len() == 3 && p.inserts.iter().all(|j| j.reprint), "{:?}", p.inserts);
        // Placed three hours ago, or at an unknown time: recorded, nothing prints, and the
        // order counts as set so later versions print no set either.
        for o in [placed(3 * 3_600_000), {
            let mut o = approved(1);
            o.created_at = None;
            o
        }] {
            let p = plan(None, &[], None, &o, 5, lost, &policy());
            assert_eq!((p.disposition, p.inserts.len()), (Disposition::TooOld, 0));
            assert_eq!(p.paper.set_version, Some(5));
        }
        // A history print.db has (the normal case) prints without a banner whatever the age.
        let p = plan(
            None,
            &[],
            None,
            &placed(30 * 86_400_000),
            1,
            Arrival { missed_history: false, now_ms: now },
            &policy(),
        );
        assert!(p.inserts.len() == 3 && p.inserts.iter().all(|j| !j.reprint));
    }

    #[test]
    fn a_later_version_of_an_order_whose_paper_was_pruned_prints_nothing() {
        // The retention deleted the order's versions and jobs but kept its paper state.
        let p = plan(Some(set_at(3)), &[], None, &approved(9), 4, Arrival::default(), &policy());
        assert_eq!((p.disposition, p.inserts.len()), (Disposition::Recorded, 0));
        let p = plan(Some(set_at(3)), &[], None, &order(OrderStatus::Canceled, 1), 4, Arrival::default(), &policy());
        assert_eq!((p.disposition, p.inserts.len()), (Disposition::Cancelled, 0), "nothing on paper that we know of");
    }

    #[test]
    fn dispositions_keep_their_stored_numbers() {
        use wixprint_shared::proto::print::Disposition as Pb;
        for (d, pb) in [
            (Disposition::Queued, Pb::Queued),
            (Disposition::Recorded, Pb::Recorded),
            (Disposition::NotPrintable, Pb::NotPrintable),
            (Disposition::Filtered, Pb::Filtered),
            (Disposition::Cancelled, Pb::Cancelled),
            (Disposition::Changed, Pb::Changed),
            (Disposition::TooOld, Pb::TooOld),
        ] {
            assert_eq!(d.as_sql(), pb as i32);
            assert_eq!(Disposition::from_sql(d.as_sql()), Some(d));
        }
    }
}
