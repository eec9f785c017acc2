//! The print queue's vocabulary: job states and job kinds, each with the one mapping to and
//! from its SQL value (the store writes and reads them only through these), and the state
//! sets the queue's questions are made of ("waiting", "in flight", "finished").
//!
//! Must never: touch a database or the printer. The store uses these; the pure decision
//! core (`paper`) reasons with them.

use std::fmt;

use wixprint_shared::proto::print as api;

/// Job lifecycle (design §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Sending,
    AwaitingConfirm,
    Printed,
    Uncertain,
    Failed,
    Dead,
    Cancelled,
    /// Kept but not printed: the rest of a cancelled recovery, until an operator resumes it.
    Held,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Sending,
        JobState::AwaitingConfirm,
        JobState::Printed,
        JobState::Uncertain,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
        JobState::Held,
    ];

    /// Waiting for the dispatcher (due once `next_attempt` has passed).
    pub const WAITING: [JobState; 3] = [JobState::Queued, JobState::Uncertain, JobState::Failed];
    /// Bytes may be on their way to the printer; only the dispatcher moves these on.
    pub const IN_FLIGHT: [JobState; 2] = [JobState::Sending, JobState::AwaitingConfirm];
    /// Not finished: waiting, in flight or held. A later job of the same order and receipt
    /// type never prints before these.
    pub const OPEN: [JobState; 6] = [
        JobState::Queued,
        JobState::Uncertain,
        JobState::Failed,
        JobState::Sending,
        JobState::AwaitingConfirm,
        JobState::Held,
    ];

    /// The value stored in `jobs.state` (and `job_transitions`).
    pub fn as_sql(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Sending => "sending",
            JobState::AwaitingConfirm => "awaiting_confirm",
            JobState::Printed => "printed",
            JobState::Uncertain => "uncertain",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Held => "held",
        }
    }

    pub fn from_sql(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_sql() == s)
    }

    /// The name operators see (logs, admin API details): the SQL value.
    pub fn as_str(self) -> &'static str {
        self.as_sql()
    }

    /// `'a', 'b'` for an SQL `IN (...)` list: the only way state sets reach the SQL.
    pub fn sql_list(states: &[JobState]) -> String {
        states.iter().map(|s| format!("'{}'", s.as_sql())).collect::<Vec<_>>().join(", ")
    }

    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }

    pub fn to_proto(self) -> api::JobState {
        match self {
            JobState::Queued => api::JobState::Queued,
            JobState::Sending => api::JobState::Sending,
            JobState::AwaitingConfirm => api::JobState::AwaitingConfirm,
            JobState::Printed => api::JobState::Printed,
            JobState::Uncertain => api::JobState::Uncertain,
            JobState::Failed => api::JobState::Failed,
            JobState::Dead => api::JobState::Dead,
            JobState::Cancelled => api::JobState::Cancelled,
            JobState::Held => api::JobState::Held,
        }
    }

    pub fn from_proto(s: api::JobState) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.to_proto() == s)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

/// What a job is for. Its SQL value is part of the job's fingerprint
/// `(order id, kind, receipt type, copy)`, so each distinct slip has a distinct kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// A receipt of the order's set.
    Ticket,
    /// A change slip for `version`: what changed since the version the paper showed
    /// (`jobs.base_version`).
    Change { version: i64 },
    /// The driver slip reprinted because the order became paid after it printed.
    PaidReprint { version: i64 },
    /// A cancellation slip.
    Storno,
}

impl JobKind {
    /// The value stored in `jobs.kind`.
    pub fn to_sql(self) -> String {
        match self {
            JobKind::Ticket => "ticket".into(),
            JobKind::Change { version } => format!("change:{version}"),
            JobKind::PaidReprint { version } => format!("paid:{version}"),
            JobKind::Storno => "storno".into(),
        }
    }

    pub fn from_sql(s: &str) -> Option<Self> {
        let version = |v: &str| v.parse::<i64>().ok();
        match s.split_once(':') {
            None if s == "ticket" => Some(JobKind::Ticket),
            None if s == "storno" => Some(JobKind::Storno),
            Some(("change", v)) => Some(JobKind::Change { version: version(v)? }),
            Some(("paid", v)) => Some(JobKind::PaidReprint { version: version(v)? }),
            _ => None,
        }
    }

    /// The kind's name without its version, for the admin API (`ticket`, `change`, `paid`, `storno`).
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Ticket => "ticket",
            JobKind::Change { .. } => "change",
            JobKind::PaidReprint { .. } => "paid",
            JobKind::Storno => "storno",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sql())
    }
}

/// A recovery session's state (see `recovery.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RecoveryState {
    /// The backlog is fixed; the printer's status is read once more.
    #[default]
    Validating,
    /// The dispatcher drains the backlog.
    Processing,
    /// Printer lost, or an operator asked; `paused_reason` says which.
    Paused,
    Completed,
    /// Cancelled by an operator: the rest of the backlog is kept as `held`.
    Cancelled,
    /// wix-print stopped during the session; a new session took over its jobs.
    Interrupted,
}

impl RecoveryState {
    pub const ALL: [RecoveryState; 6] = [
        RecoveryState::Validating,
        RecoveryState::Processing,
        RecoveryState::Paused,
        RecoveryState::Completed,
        RecoveryState::Cancelled,
        RecoveryState::Interrupted,
    ];

    /// The value stored in `recovery_sessions.state` and shown by the admin API.
    pub fn as_sql(self) -> &'static str {
        match self {
            RecoveryState::Validating => "validating",
            RecoveryState::Processing => "processing",
            RecoveryState::Paused => "paused",
            RecoveryState::Completed => "completed",
            RecoveryState::Cancelled => "cancelled",
            RecoveryState::Interrupted => "interrupted",
        }
    }

    pub fn from_sql(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_sql() == s)
    }

    pub fn as_str(self) -> &'static str {
        self.as_sql()
    }

    /// Still running (an operator may pause, resume or cancel it).
    pub fn is_active(self) -> bool {
        matches!(self, RecoveryState::Validating | RecoveryState::Processing | RecoveryState::Paused)
    }
}

impl fmt::Display for RecoveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_sql())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_sql_and_proto() {
        for s in JobState::ALL {
            assert_eq!(JobState::from_sql(s.as_sql()), Some(s));
            assert_eq!(JobState::from_proto(s.to_proto()), Some(s));
        }
        assert_eq!(JobState::from_sql("printing"), None);
        assert_eq!(JobState::sql_list(&JobState::IN_FLIGHT), "'sending', 'awaiting_confirm'");
    }

    #[test]
    fn every_kind_round_trips_through_sql() {
        for k in [
            JobKind::Ticket,
            JobKind::Storno,
            JobKind::Change { version: 7 },
            JobKind::PaidReprint { version: 1_700_000_000_123 },
        ] {
            assert_eq!(JobKind::from_sql(&k.to_sql()), Some(k), "{k}");
        }
        for bad in ["", "change", "change:", "change:x", "paid:1:2", "tickets", "storno:1"] {
            assert_eq!(JobKind::from_sql(bad), None, "{bad:?}");
        }
        assert_eq!(JobKind::Change { version: 3 }.name(), "change");
    }

    #[test]
    fn every_recovery_state_round_trips_through_sql() {
        for s in RecoveryState::ALL {
            assert_eq!(RecoveryState::from_sql(s.as_sql()), Some(s));
        }
        assert_eq!(RecoveryState::from_sql("done"), None);
        assert!(RecoveryState::Paused.is_active() && !RecoveryState::Cancelled.is_active());
    }

    #[test]
    fn open_states_are_waiting_in_flight_or_held() {
        for s in JobState::ALL {
            let expected = JobState::WAITING.contains(&s) || JobState::IN_FLIGHT.contains(&s) || s == JobState::Held;
            assert_eq!(s.is_open(), expected, "{s}");
        }
    }
}
