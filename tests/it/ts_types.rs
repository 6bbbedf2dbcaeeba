//! The TypeScript client's generated types (`clients/typescript/src/protocol.ts` and
//! `history.ts`) are what the Rust types give: the client cannot drift from the server.
//! `cargo xtask ts-types` runs this test with `AGENT_ENGINE_WRITE_TS=1`, which writes the
//! files instead of comparing them.

use std::path::PathBuf;

#[test]
fn the_committed_typescript_types_are_what_the_rust_types_give() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = [
        (
            agent_protocol::typescript::TYPESCRIPT_PATH,
            agent_protocol::typescript::declarations(),
        ),
        (
            history::typescript::TYPESCRIPT_PATH,
            history::typescript::declarations(),
        ),
    ];
    let write = std::env::var_os("AGENT_ENGINE_WRITE_TS").is_some();
    for (path, generated) in files {
        if write {
            std::fs::write(root.join(path), &generated).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(generated.lines().count()) + 1,
                |i| i + 1,
            );
        assert!(
            committed == generated,
            "{path} differs from the Rust types: run `cargo xtask ts-types` and commit it \
             (first difference at line {first_difference})"
        );
    }
}
