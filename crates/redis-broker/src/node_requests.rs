//! The messages of a node's own channel (`<prefix>:node:<node id>`): `cancel_run` and
//! `steer` requests other nodes route to the runs this node executes, and
//! `slot\n<user>\n<lease>…`, which a run slot's release script sends the nodes holding the
//! user's first places in the queue (the leases of their places that may take the slot).

use core_context::{RunId, UserId};

use crate::shared::{CancelRequest, NodeRequest};

/// A message of the node channel other than forwarded events.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NodeMessage {
    /// A request for a run this node executes.
    Request(NodeRequest),
    /// A slot or a thread of this user's was given back: their claims queued here with these
    /// leases (at least one) ask again.
    SlotFreed(UserId, Vec<String>),
}

/// Reads a node channel message: `slot\n<user>\n<lease>…`, or a request (see
/// [`parse_node_request`]).
pub(crate) fn parse_node_message(payload: &[u8]) -> Option<NodeMessage> {
    if let Some(rest) = payload.strip_prefix(b"slot\n") {
        let mut lines = std::str::from_utf8(rest).ok()?.split('\n');
        let user = UserId::parse(lines.next()?).ok()?;
        let leases: Vec<String> = lines.map(str::to_owned).collect();
        if leases.is_empty() || leases.iter().any(String::is_empty) {
            return None;
        }
        return Some(NodeMessage::SlotFreed(user, leases));
    }
    parse_node_request(payload).map(NodeMessage::Request)
}

/// Reads a request: `cancel\n<user>\n<run>\n<reason>` (without the reason, from a node of
/// an earlier version: cancelled by the user), or `steer\n<json>`.
fn parse_node_request(payload: &[u8]) -> Option<NodeRequest> {
    let text = std::str::from_utf8(payload).ok()?;
    if let Some(json) = text.strip_prefix("steer\n") {
        return serde_json::from_str(json).ok().map(NodeRequest::Steer);
    }
    parse_cancel(text).map(NodeRequest::Cancel)
}

fn parse_cancel(text: &str) -> Option<CancelRequest> {
    let mut parts = text.split('\n');
    (parts.next()? == "cancel").then_some(())?;
    let user = UserId::parse(parts.next()?).ok()?;
    let run_id = RunId::parse(parts.next()?).ok()?;
    let reason = parts.next().unwrap_or(USER_CANCELLED).to_owned();
    parts.next().is_none().then_some(CancelRequest {
        user,
        run_id,
        reason,
    })
}

/// The `agent_cancelled` reason of a run its user cancelled.
pub const USER_CANCELLED: &str = "cancelled by the user";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::shared::SteerRequest;
    use core_context::ThreadId;

    #[test]
    fn node_messages_are_cancels_with_a_reason_or_messages_for_a_run() {
        let cancel = |text: &str| match parse_node_request(text.as_bytes()) {
            Some(NodeRequest::Cancel(request)) => Some(request.reason),
            _ => None,
        };
        // From a node of the previous version: cancelled by the user.
        assert_eq!(
            cancel("cancel\nalice\nrun_1").as_deref(),
            Some(USER_CANCELLED)
        );
        assert_eq!(
            cancel("cancel\nalice\nrun_1\ninterrupted").as_deref(),
            Some("interrupted")
        );
        assert_eq!(cancel("cancel\nalice\nrun_1\na\nb"), None);
        assert_eq!(cancel("stop\nalice\nrun_1"), None);
        let steer = SteerRequest {
            user: UserId::parse("alice").unwrap(),
            run_id: RunId::parse("run_1").unwrap(),
            thread_id: ThreadId::parse("thr_1").unwrap(),
            agent: "llm".into(),
            message: "two\nlines".into(),
        };
        let text = format!("steer\n{}", serde_json::to_string(&steer).unwrap());
        assert_eq!(
            parse_node_request(text.as_bytes()),
            Some(NodeRequest::Steer(steer))
        );
        assert_eq!(parse_node_request(b"steer\n{not json"), None);
    }

    #[test]
    fn a_freed_slot_names_its_user() {
        let alice = UserId::parse("alice").unwrap();
        assert_eq!(
            parse_node_message(b"slot\nalice\nL1\nL2"),
            Some(NodeMessage::SlotFreed(
                alice.clone(),
                vec!["L1".into(), "L2".into()]
            ))
        );
        assert_eq!(parse_node_message(b"slot\nalice"), None);
        assert_eq!(parse_node_message(b"slot\n"), None);
        assert_eq!(parse_node_message(b"slot\nalice\n"), None);
        assert_eq!(parse_node_message(b"slot\nal ice"), None);
        assert!(matches!(
            parse_node_message(b"cancel\nalice\nrun_1"),
            Some(NodeMessage::Request(NodeRequest::Cancel(_)))
        ));
    }
}
