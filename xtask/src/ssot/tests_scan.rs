//! The rules file by file (definitions, renames, nesting, parse errors) through
//! [`check_source`](super::check_source), and which crate a path belongs to.

use std::path::{Path, PathBuf};

use super::{Config, check_source, crate_of};

fn config() -> Config {
    Config {
        engine_crate: "execution-engine".to_owned(),
        engine_type: "UserExecutionEngine".to_owned(),
        alias_allowed_in: vec!["compat".to_owned()],
        patterns: [
            "*ExecutionEngine*",
            "*ExecEngine*",
            "*AgentEngine*",
            "Engine",
        ]
        .map(String::from)
        .to_vec(),
        exclude: vec![PathBuf::from("xtask/fixtures")],
    }
}

/// Checks `source` as `lib.rs` of `crate_name` and compares the findings, one per line as
/// `line:col kind name`, with `expected`.
#[track_caller]
fn check(crate_name: &str, source: &str, expected: &str) {
    let findings = check_source(crate_name, "lib.rs", source, &config());
    let actual: Vec<String> = findings
        .iter()
        .map(|f| {
            format!("{}:{} {} {}", f.line, f.column, f.kind, f.name)
                .trim_end()
                .to_owned()
        })
        .collect();
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(actual, expected, "crate `{crate_name}`, source:\n{source}");
}

#[test]
fn definitions_outside_the_engine_crate() {
    check(
        "ws-bridge",
        "pub struct ShadowExecutionEngine;",
        "1:12 struct ShadowExecutionEngine",
    );
    check(
        "ws-bridge",
        "enum ExecEngineKind { A }",
        "1:6 enum ExecEngineKind",
    );
    check("ws-bridge", "union Engine { a: u8 }", "1:7 union Engine");
    check(
        "ws-bridge",
        "pub trait AgentEngine {}",
        "1:11 trait AgentEngine",
    );
    check(
        "ws-bridge",
        "trait AgentEngineExt = Send;",
        "1:7 trait alias AgentEngineExt",
    );
    check(
        "ws-bridge",
        "type LegacyExecutionEngine = Box<dyn Fn()>;",
        "1:6 type LegacyExecutionEngine",
    );
    // The engine's own name is an engine name even if no pattern matched it.
    check(
        "tests",
        "struct UserExecutionEngine;",
        "1:8 struct UserExecutionEngine",
    );
    check("xtask", "struct r#Engine;", "1:8 struct Engine");
}

#[test]
fn names_that_are_not_engines() {
    // Patterns match whole, case-sensitive identifiers; functions, fields, variants,
    // modules and generic parameters are not types of their own.
    check(
        "ws-bridge",
        "
            struct EngineHandle; struct Engines; struct engine; struct AgentWebSocketBridge;
            enum Kind { ExecutionEngine } fn execution_engine() {} mod engine {}
            struct S<Engine> { engine: Engine }
            trait Runtime { type Engine; }
            ",
        "",
    );
}

#[test]
fn nested_items_are_seen() {
    check(
        "agent-registry",
        "
            mod inner { mod deeper { pub struct NestedExecutionEngine; } }
            fn build() { struct LocalExecutionEngine; }
            impl S { fn f() { trait InnerAgentEngine {} } }
            const _: () = { enum ConstExecEngine {} };
            ",
        "
            2:49 struct NestedExecutionEngine
            3:33 struct LocalExecutionEngine
            4:37 trait InnerAgentEngine
            5:34 enum ConstExecEngine
            ",
    );
}

#[test]
fn the_engine_crate_may_define_anything() {
    check(
        "execution-engine",
        "
            pub struct UserExecutionEngine; pub struct ExecutionEngineFactory;
            pub trait AgentEngine {} type Engine = UserExecutionEngine;
            use self::UserExecutionEngine as ExecutionEngine;
            ",
        "",
    );
}

#[test]
fn renames_of_the_engine() {
    let source = "
            pub mod legacy { pub type ExecutionEngine = execution_engine::UserExecutionEngine; }
            pub use execution_engine::UserExecutionEngine as ExecutionEngine;
            use execution_engine::{UserExecutionEngine as Runner, UserExecutionEngine as _};
            type Plain = (UserExecutionEngine);
            use execution_engine::UserExecutionEngine as UserExecutionEngine;
            ";
    check("compat", source, "");
    check(
        "ws-bridge",
        source,
        "
            2:39 type rename ExecutionEngine
            3:62 use rename ExecutionEngine
            4:59 use rename Runner
            5:18 type rename Plain
            ",
    );
}

#[test]
fn other_renames_to_engine_names() {
    let source = "use legacy::Runner as AgentEngine; use std::io::Result as IoResult;";
    check("compat", source, "");
    check("tests", source, "1:23 use rename AgentEngine");
}

#[test]
fn a_type_alias_named_like_an_engine_in_compat_is_a_definition() {
    // Only aliases of the engine itself are renames; this is a second engine in disguise.
    check(
        "compat",
        "pub type ExecutionEngine = Box<dyn Fn()>;",
        "1:10 type ExecutionEngine",
    );
}

#[test]
fn unparsable_files_are_findings() {
    check("ws-bridge", "pub struct Broken {", "1:19 parse error");
    check("ws-bridge", "fn f() {}\nfn g( {}", "2:5 parse error");
}

#[test]
fn crate_of_a_path() {
    #[track_caller]
    fn check_crate(path: &str, expected: &str) {
        assert_eq!(crate_of(Path::new(path)), expected, "{path}");
    }
    check_crate("crates/ws-bridge/src/lib.rs", "ws-bridge");
    check_crate("crates/compat/tests/legacy.rs", "compat");
    check_crate("tests/it/main.rs", "tests");
    check_crate("xtask/src/ssot/mod.rs", "xtask");
}
