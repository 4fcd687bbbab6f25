//! One trace id from the HTTP request to the applied row. The gateway gives every request a W3C
//! `traceparent` (keeping a valid incoming one); each service's HTTP layer reads it and runs the
//! handler with its trace id in a task-local ([`scope`]), so the auth-service's outbox insert
//! stores it beside the event without any handler passing it along ([`current`]); the relay
//! sends it as the `traceparent` AMQP header, and each consumer logs it when it applies.
//!
//! `traceparent` is `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`; an id of zeros is
//! invalid (W3C Trace Context, level 1).

use std::future::Future;

/// The W3C header (HTTP and AMQP alike).
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static TRACE_ID: String;
}

/// The trace id of the request this task serves, if any.
pub fn current() -> Option<String> {
    TRACE_ID.try_with(Clone::clone).ok()
}

/// Runs `work` with `trace_id` as [`current`] (unchanged when `None`).
pub async fn scope<F: Future>(trace_id: Option<String>, work: F) -> F::Output {
    match trace_id {
        Some(id) => TRACE_ID.scope(id, work).await,
        None => work.await,
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && s.bytes().any(|b| b != b'0')
}

/// The trace id of a valid `traceparent`, else `None`.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let known = version == "00" && parts.next().is_none();
    let future = is_hex(version, 2) && version != "ff";
    ((known || future)
        && is_hex(trace, 32)
        && is_hex(parent, 16)
        && flags.len() == 2
        && flags.bytes().all(|b| b.is_ascii_hexdigit()))
    .then_some(trace)
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    // A zero id is invalid; the odds are nil, but the rule is cheap to keep.
    if buf.iter().all(|b| *b == 0) {
        buf[0] = 1;
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new trace (sampled).
pub fn new_traceparent() -> String {
    format!("00-{}-{}-01", random_hex(16), random_hex(8))
}

/// A `traceparent` continuing `trace_id` from a new span of ours.
pub fn child_of(trace_id: &str) -> String {
    format!("00-{trace_id}-{}-01", random_hex(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_traceparents_give_their_trace_id_and_others_none() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01")),
            Some(id)
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
        let fresh = new_traceparent();
        let trace = trace_id_of(&fresh).unwrap();
        assert_eq!(trace_id_of(&child_of(trace)), Some(trace));
    }

    #[tokio::test]
    async fn the_trace_id_is_current_inside_its_scope_only() {
        assert_eq!(current(), None);
        let inside = scope(Some("abc".into()), async { current() }).await;
        assert_eq!(inside.as_deref(), Some("abc"));
        assert_eq!(scope(None, async { current() }).await, None);
    }
}
