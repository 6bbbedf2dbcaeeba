//! The history API's bodies (threads, runs, approvals) as TypeScript declarations, for the
//! TypeScript client (`clients/typescript/src/history.ts`), made from these types by
//! [`ts_rs`]. `tests/it/ts_types.rs` compares them with the committed file and fails, naming
//! the command that writes it again (`cargo xtask ts-types`), when they differ.

use ts_rs::{Config, TS};

use crate::approvals::{ApprovalRecord, ApprovalStatus};
use crate::conversation::ThreadConversation;
use crate::model::{RunDetail, RunStatus, RunSummary, ThreadDetail, ThreadPage, ThreadSummary};

/// Where the declarations are committed, from the workspace root.
pub const TYPESCRIPT_PATH: &str = "clients/typescript/src/history.ts";

/// The whole `history.ts`.
pub fn declarations() -> String {
    // i64 times (Unix ms) are JSON numbers, far below 2^53.
    let cfg = Config::new().with_large_int("number");
    let mut out = String::from(
        "// The history API's bodies (docs/protocol.md, \"History\" and \"Approvals\") as TypeScript\n\
         // types. Generated from the Rust types of crates/history: do not edit. `cargo xtask\n\
         // ts-types` writes it again; tests/it/ts_types.rs fails when it differs.\n\n\
         import type { AgentEvent, JsonValue } from \"./protocol.js\";\n\n",
    );
    macro_rules! declare_all {
        ($($t:ty),* $(,)?) => {$(
            if let Some(docs) = <$t>::docs() {
                out.push_str(&docs);
            }
            out.push_str("export ");
            out.push_str(&<$t>::decl(&cfg));
            out.push_str("\n\n");
        )*};
    }
    declare_all!(
        RunStatus,
        ThreadSummary,
        ThreadPage,
        RunSummary,
        ThreadDetail,
        RunDetail,
        ThreadConversation,
        ApprovalStatus,
        ApprovalRecord,
    );
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}
