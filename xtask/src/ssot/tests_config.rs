//! The configuration table: every way it can be wrong says which key and what to write; and
//! the `*` globs of its patterns.

use super::{Config, glob_matches};

#[test]
fn glob_patterns() {
    #[track_caller]
    fn check_glob(pattern: &str, name: &str, expected: bool) {
        assert_eq!(glob_matches(pattern, name), expected, "{pattern} vs {name}");
    }
    check_glob("Engine", "Engine", true);
    check_glob("Engine", "Engines", false);
    check_glob("Engine", "engine", false);
    check_glob("*Engine", "RunEngine", true);
    check_glob("*Engine", "EngineRun", false);
    check_glob("Engine*", "EngineRun", true);
    check_glob("*ExecutionEngine*", "ExecutionEngine", true);
    check_glob("*ExecutionEngine*", "LegacyExecutionEngineFactory", true);
    check_glob("*ExecutionEngine*", "ExecutionEngin", false);
    check_glob("A*B*C", "ABC", true);
    check_glob("A*B*C", "AxxBxxC", true);
    check_glob("A*B*C", "ACB", false);
    check_glob("A*A", "A", false);
    check_glob("*", "", true);
    check_glob("**", "x", true);
}

const VALID: &str = r#"
        [workspace]
        [workspace.metadata.ssot-check]
        engine-crate = "execution-engine"
        engine-type = "UserExecutionEngine"
        alias-allowed-in = ["compat"]
        patterns = ["*ExecutionEngine*", "Engine"]
        exclude = ["xtask/fixtures"]
    "#;

/// Parses `VALID` with the line starting with `key` replaced by `replacement` (or removed
/// when it is empty) and checks the error message, or that there is none.
#[track_caller]
fn check_config(key: &str, replacement: &str, expected_error: &str) {
    let manifest: Vec<&str> = VALID
        .lines()
        .map(|l| {
            if l.trim() == key || l.trim_start().starts_with(&format!("{key} ")) {
                replacement
            } else {
                l
            }
        })
        .collect();
    let actual = match Config::parse(&manifest.join("\n")) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    assert!(
        expected_error.is_empty() == actual.is_empty() && actual.contains(expected_error),
        "expected an error containing {expected_error:?}, got {actual:?}"
    );
}

#[test]
fn configuration() {
    check_config("patterns", r#"patterns = ["Engine"]"#, "");
    check_config("exclude", "exclude = []", "");
    check_config("engine-type", "", "missing key `engine-type`");
    check_config("engine-crate", "", "missing key `engine-crate`");
    check_config("alias-allowed-in", "", "missing key `alias-allowed-in`");
    check_config("exclude", "", "missing key `exclude`");
    check_config(
        "patterns",
        "patterns = []",
        "key `patterns` in [workspace.metadata.ssot-check] is empty",
    );
    check_config(
        "patterns",
        r#"patterns = "Engine""#,
        "key `patterns` in [workspace.metadata.ssot-check] must be a list of strings, found a string",
    );
    check_config(
        "patterns",
        r#"patterns = ["Engine", 3]"#,
        "key `patterns` in [workspace.metadata.ssot-check] must be a list of strings, but item 2 is an integer",
    );
    check_config(
        "engine-type",
        "engine-type = 7",
        "key `engine-type` in [workspace.metadata.ssot-check] must be a string",
    );
    check_config(
        "engine-type",
        r#"engine-type = " ""#,
        "key `engine-type` in [workspace.metadata.ssot-check] is empty",
    );
    check_config(
        "exclude",
        r#"exclude = ["/abs"]"#,
        "key `exclude` in [workspace.metadata.ssot-check] has `/abs`",
    );
    check_config("exclude", r#"exclude = ["../up"]"#, "has `../up`");
    check_config("exclude", r#"exclud = []"#, "unknown key `exclud`");
    check_config("[workspace.metadata.ssot-check]", "", "missing table");
    check_config(
        "engine-crate",
        "engine-crate = [",
        "the manifest is not valid TOML",
    );
}

#[test]
fn configuration_without_the_table() {
    let error = Config::parse("[workspace]\nmembers = []\n").map(|_| ());
    assert_eq!(
        error.map_err(|e| e.to_string()),
        Err(
            "missing table [workspace.metadata.ssot-check]; add it with the keys \
                 engine-crate, engine-type, alias-allowed-in, patterns, exclude"
                .to_owned()
        )
    );
}
