//! `metav1.Condition`s with a stable `lastTransitionTime`, pure.
//!
//! The controller writes status only when it changed, so a condition must be byte-identical
//! from one refresh to the next while nothing happens: `lastTransitionTime` moves only when
//! `status` flips, times are whole seconds (what the API server stores), and the list keeps
//! its order.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types.
pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";
pub const DEGRADED: &str = "Degraded";
pub const CONVERGED: &str = "Converged";

/// Reasons used by the operator (CamelCase, as `metav1.Condition` requires).
pub mod reason {
    pub const ALL_MEMBERS_READY: &str = "AllMembersReady";
    pub const MEMBERS_NOT_READY: &str = "MembersNotReady";
    pub const NO_MEMBERS: &str = "NoMembers";
    pub const SYNCED: &str = "Synced";
    pub const SYNC_FAILED: &str = "SyncFailed";
    pub const STALLED: &str = "Stalled";
    pub const NODE_UNREACHABLE: &str = "NodeUnreachable";
    pub const CLOCK_DRIFT: &str = "ClockDrift";
    pub const EMBEDDING_MISMATCH: &str = "EmbeddingMismatch";
    pub const SELECTED_BY_TWO_POLICIES: &str = "SelectedByTwoPolicies";
    pub const NOT_STRONGLY_CONNECTED: &str = "NotStronglyConnected";
    pub const DUPLICATE_NODE_ID: &str = "DuplicateNodeId";
    pub const PAUSED: &str = "Paused";
    pub const CONVERGED: &str = "Converged";
    pub const LAGGING: &str = "Lagging";
    pub const HEALTHY: &str = "Healthy";
}

/// Upper bound of `message` in the `metav1.Condition` schema.
pub const MAX_MESSAGE_BYTES: usize = 32768;

/// `status` of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(b: bool) -> Self {
        if b {
            Status::True
        } else {
            Status::False
        }
    }
}

/// `t` truncated to whole seconds, as the API server stores `metav1.Time`.
pub fn whole_seconds(t: &Time) -> Time {
    Time(Timestamp::from_second(t.0.as_second()).unwrap_or(t.0))
}

/// Condition `type_` as of `now` (whole seconds), with a reason and message that fit the
/// schema.
pub fn new(
    type_: &str,
    status: Status,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.as_str().to_string(),
        reason: sanitize_reason(reason),
        message: truncate(message, MAX_MESSAGE_BYTES).to_string(),
        observed_generation,
        last_transition_time: whole_seconds(now),
    }
}

/// Puts `c` in place of the condition of its type in `conditions`; returns whether anything
/// changed.
///
/// The old `lastTransitionTime` stays unless the status flips; a changed reason, message or
/// generation keeps it too. Existing conditions keep their position; a new one is appended.
pub fn apply(conditions: &mut Vec<Condition>, c: Condition) -> bool {
    match conditions.iter_mut().find(|old| old.type_ == c.type_) {
        Some(old) => {
            let before = old.clone();
            if old.status != c.status {
                old.status = c.status;
                old.last_transition_time = c.last_transition_time;
            }
            old.reason = c.reason;
            old.message = c.message;
            old.observed_generation = c.observed_generation;
            *old != before
        }
        None => {
            conditions.push(c);
            true
        }
    }
}

/// Sets condition `type_` in `conditions` as [`apply`] does; returns whether anything changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: &Time,
) -> bool {
    apply(
        conditions,
        new(type_, status, reason, message, observed_generation, now),
    )
}

/// Removes condition `type_`; returns whether it was there.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when condition `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Makes `reason` match the schema (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`, at most 1024
/// bytes) so that a status write can never be refused for it.
pub fn sanitize_reason(reason: &str) -> String {
    let mut r: String = reason
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'))
        .take(1024)
        .collect();
    while r.ends_with([',', ':']) {
        r.pop();
    }
    if !r.starts_with(|c: char| c.is_ascii_alphabetic()) {
        r.insert(0, 'R');
        r.truncate(1024);
    }
    r
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: i32) -> Time {
        Time(Timestamp::new(secs, nanos).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut cs = Vec::new();
        let mut ready = |status, reason, message, generation, now: Time| {
            set(
                &mut cs,
                READY,
                status,
                reason,
                message,
                Some(generation),
                &now,
            )
        };
        assert!(ready(
            Status::False,
            "MembersNotReady",
            "0/3 ready",
            1,
            at(100, 500)
        ));
        // same everything: no change
        assert!(!ready(
            Status::False,
            "MembersNotReady",
            "0/3 ready",
            1,
            at(200, 0)
        ));
        // new message, same status: changed, but the time stays
        assert!(ready(
            Status::False,
            "MembersNotReady",
            "2/3 ready",
            1,
            at(300, 0)
        ));
        // flip: the time moves
        assert!(ready(
            Status::True,
            "AllMembersReady",
            "3/3 ready",
            2,
            at(400, 500)
        ));
        assert!(!ready(
            Status::True,
            "AllMembersReady",
            "3/3 ready",
            2,
            at(500, 0)
        ));
        let c = &cs[0];
        assert_eq!(
            c.last_transition_time,
            at(400, 0),
            "flipped at 400, whole seconds"
        );
        assert_eq!(
            (c.message.as_str(), c.observed_generation),
            ("3/3 ready", Some(2))
        );
        assert!(is_true(&cs, READY));
    }

    #[test]
    fn a_new_condition_fits_the_schema_and_apply_keeps_its_time() {
        let c = new(
            SYNCED,
            Status::True,
            "all good!",
            "m",
            Some(2),
            &at(10, 700),
        );
        assert_eq!(c.reason, "allgood");
        assert_eq!(c.last_transition_time, at(10, 0), "whole seconds");
        let mut cs = vec![c.clone()];
        let again = new(SYNCED, Status::True, "allgood", "m", Some(2), &at(50, 0));
        assert!(!apply(&mut cs, again));
        assert_eq!(cs, [c]);
    }

    #[test]
    fn order_is_kept_and_new_ones_append() {
        let mut cs = Vec::new();
        let now = at(1, 0);
        set(&mut cs, READY, Status::True, "A", "", None, &now);
        set(&mut cs, SYNCED, Status::True, "A", "", None, &now);
        set(&mut cs, DEGRADED, Status::False, "A", "", None, &now);
        set(&mut cs, READY, Status::False, "B", "", None, &at(2, 0));
        let types: Vec<&str> = cs.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, SYNCED, DEGRADED]);
        assert!(!is_true(&cs, READY) && !is_true(&cs, CONVERGED));
        assert!(remove(&mut cs, SYNCED));
        assert!(!remove(&mut cs, SYNCED));
        assert_eq!(find(&cs, DEGRADED).unwrap().status, "False");
    }

    #[test]
    fn survives_a_round_trip_through_json_unchanged() {
        let mut cs = Vec::new();
        set(
            &mut cs,
            READY,
            Status::Unknown,
            "NoMembers",
            "no pods",
            Some(3),
            &at(1_700_000_000, 999_999_999),
        );
        let back: Vec<Condition> =
            serde_json::from_value(serde_json::to_value(&cs).unwrap()).unwrap();
        assert_eq!(back, cs);
        let mut again = back.clone();
        assert!(!set(
            &mut again,
            READY,
            Status::Unknown,
            "NoMembers",
            "no pods",
            Some(3),
            &at(1_700_000_050, 0)
        ));
    }

    #[test]
    fn reasons_and_messages_fit_the_schema() {
        assert_eq!(sanitize_reason("Stalled"), "Stalled");
        assert_eq!(sanitize_reason("node unreachable!"), "nodeunreachable");
        assert_eq!(sanitize_reason("9lives:"), "R9lives");
        assert_eq!(sanitize_reason(""), "R");
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let mut cs = Vec::new();
        set(&mut cs, READY, Status::True, "X", &long, None, &at(1, 0));
        assert!(cs[0].message.len() <= MAX_MESSAGE_BYTES);
        for r in [
            reason::STALLED,
            reason::SELECTED_BY_TWO_POLICIES,
            reason::DUPLICATE_NODE_ID,
        ] {
            assert_eq!(sanitize_reason(r), r);
        }
    }
}
