//! The protocol's types as TypeScript declarations, for the TypeScript client
//! (`clients/typescript/src/protocol.ts`).
//!
//! The declarations are made from these types ([`ts_rs`] reads the same serde attributes
//! that make the wire form), together with the code tables ([`ErrorCode::KNOWN`],
//! [`CloseCode::KNOWN`], [`EVENT_TYPES`]). `tests/it/ts_types.rs` compares them with the
//! committed file and fails, naming the command that writes it again (`cargo xtask
//! ts-types`), when they differ, so the client's types cannot drift from the server's.

use std::fmt::Write;

use ts_rs::{Config, TS};

use crate::codes::{CloseCode, ErrorCode};
use crate::http::{
    ApprovalOutcome, CostUse, DevTokenRequest, DevTokenResponse, HttpError, TokenUse, Usage,
};
use crate::resume::{ResumeFailure, ResumeStatus};
use crate::server_frames::{CONTROL_TYPES, EVENT_TYPES, ServerFrame, THREAD_TYPES};
use crate::{CancelRun, ClientFrame, ResolveApproval, StartAgent};
use core_context::approval::Decision;
use core_context::budget::{Amount, BudgetKind, Shortfall};
use core_context::multitask::Multitask;
use core_context::{
    AgentEvent, ConnectionId, Epoch, EventKind, RunId, SequencedEvent, SequencedThreadEvent,
    ThreadChange, ThreadEvent, ThreadId, Timestamp, UserId,
};

/// Where the declarations are committed, from the workspace root.
pub const TYPESCRIPT_PATH: &str = "clients/typescript/src/protocol.ts";

/// Appends one type's declaration (with its doc comment) to `out`.
fn declare<T: TS + ?Sized>(cfg: &Config, out: &mut String) {
    if let Some(docs) = T::docs() {
        out.push_str(&docs);
    }
    out.push_str("export ");
    // A flattened `EventKind` is written out whole where it is flattened (`AgentEvent`,
    // `SequencedEvent`): name it instead, so the union is declared once.
    let kinds = EventKind::inline_flattened(cfg);
    out.push_str(&T::decl(cfg).replace(&kinds, "EventKind"));
    out.push_str("\n\n");
}

/// A list of strings as a TypeScript array literal.
fn string_array(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The whole `protocol.ts`: every frame a client sends or receives, the events, the codes.
pub fn declarations() -> String {
    // u64 fields (seq, durations, counts) are JSON numbers: `JSON.parse` gives numbers, and
    // every value the server sends is far below 2^53.
    let cfg = Config::new().with_large_int("number");
    let mut out = String::from(
        "// Wire protocol v1 (docs/protocol.md) as TypeScript types.\n\
         // Generated from the Rust types of crates/agent-protocol and crates/core-context:\n\
         // do not edit. `cargo xtask ts-types` writes it again; tests/it/ts_types.rs fails\n\
         // when it differs from what the types give.\n\n\
         /** Any JSON value. */\n\
         export type JsonValue = number | string | boolean | null | JsonValue[] | { [key: string]: JsonValue };\n\n",
    );
    macro_rules! declare_all {
        ($($t:ty),* $(,)?) => { $(declare::<$t>(&cfg, &mut out);)* };
    }
    declare_all!(
        UserId,
        ThreadId,
        RunId,
        ConnectionId,
        Epoch,
        Timestamp,
        EventKind,
        AgentEvent,
        SequencedEvent,
        ThreadChange,
        ThreadEvent,
        SequencedThreadEvent,
        BudgetKind,
        Amount,
        Shortfall,
        Decision,
        Multitask,
        StartAgent,
        CancelRun,
        ResolveApproval,
        ClientFrame,
        ErrorCode,
        ResumeFailure,
        ResumeStatus,
        ServerFrame,
        HttpError,
        DevTokenRequest,
        DevTokenResponse,
        ApprovalOutcome,
        TokenUse,
        CostUse,
        Usage,
    );
    out.push_str(
        "/** An `error` frame; a `budget_exceeded` refusal also says which budget, what remains \
         of it and when it resets. */\n\
         export type ErrorFrame = Extract<ServerFrame, { \"type\": \"error\" }> & Partial<Shortfall>;\n\n",
    );
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "/** The `type`s of the events of a user's stream. */\n\
         export const EVENT_TYPES = {} as const;\n\n\
         /** The `type`s of a user's stream's changes to threads (frames without a run). */\n\
         export const THREAD_TYPES = {} as const;\n\n\
         /** The `type`s of the server's control frames. */\n\
         export const CONTROL_TYPES = {} as const;\n\n\
         /** The `type`s of the events that end a run. */\n\
         export const TERMINAL_TYPES = {} as const;\n\n\
         /** The `code`s of `error` frames this version names. */\n\
         export const ERROR_CODES = {} as const;\n",
        string_array(EVENT_TYPES),
        string_array(THREAD_TYPES),
        string_array(CONTROL_TYPES),
        string_array(&terminal_types()),
        string_array(ErrorCode::KNOWN),
    );
    close_codes(&mut out);
    out
}

/// The close codes, and those after which a client resumes, as TypeScript constants.
fn close_codes(out: &mut String) {
    out.push_str(
        "/** The WebSocket close codes the server sends. */\nexport const CloseCode = {\n",
    );
    for (name, code) in CloseCode::KNOWN {
        let _ = writeln!(out, "  {name}: {code},");
    }
    out.push_str("} as const;\n\n");
    let resumable: Vec<String> = CloseCode::KNOWN
        .iter()
        .filter(|(_, code)| CloseCode::from_code(*code).should_resume())
        .map(|(_, code)| code.to_string())
        .collect();
    let _ = writeln!(
        out,
        "/** Close codes after which a client reconnects and resumes. */\n\
         export const RESUMABLE_CLOSE_CODES: readonly number[] = [{}];",
        resumable.join(", ")
    );
}

/// The event types that end a run, from [`EventKind::is_terminal`].
fn terminal_types() -> Vec<&'static str> {
    let sample = |kind: EventKind| kind.type_name();
    let mut names = vec![
        sample(EventKind::AgentCompleted {
            result: serde_json::Value::Null,
            duration_ms: 0,
            usage: None,
        }),
        sample(EventKind::AgentError {
            code: String::new(),
            message: String::new(),
        }),
        sample(EventKind::AgentCancelled {
            reason: String::new(),
        }),
    ];
    names.retain(|name| EVENT_TYPES.contains(name));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_in_the_event_union() {
        let ts = declarations();
        for kind in EVENT_TYPES {
            assert!(ts.contains(&format!("\"type\": \"{kind}\"")), "{kind}");
        }
        assert!(ts.contains(
            "TERMINAL_TYPES = [\"agent_completed\", \"agent_error\", \"agent_cancelled\"]"
        ));
    }
}
