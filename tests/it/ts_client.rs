//! The TypeScript client (`clients/typescript`, `@agent-engine/client`): its own tests, run by
//! Node's test runner against real servers they start. The servers are this test binary
//! serving (`process_support::child_server`, named by `AGENT_IT_EXE`), so nothing else has to
//! be built. `npm ci --prefix clients/typescript` installs the client's tools (`.ci/run`
//! does); `npm test` there builds it (`tsc`) and runs `test/*.test.mjs`.

use std::path::PathBuf;
use std::process::Command;

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript")
}

#[test]
fn the_typescript_clients_tests_pass_against_real_servers() {
    let dir = client_dir();
    assert!(
        dir.join("node_modules/typescript").exists(),
        "the TypeScript client's tools are not installed: npm ci --prefix clients/typescript (.ci/run does)"
    );
    let output = Command::new("npm")
        .arg("test")
        .current_dir(&dir)
        .env("AGENT_IT_EXE", std::env::current_exe().unwrap())
        .env_remove("AGENT_SERVER_BIN")
        .output()
        .expect("npm runs (apt-get install nodejs npm)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "npm test in clients/typescript failed:\n{stdout}\n{stderr}"
    );
    // Node's runner ends with its counts; a run that found no test would pass silently.
    let passed = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(passed >= 10, "only {passed} tests passed:\n{stdout}");
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
