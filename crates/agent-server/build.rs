//! Records the git revision the server is built from, for `/version` and `--version`.

use std::process::Command;

fn main() {
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|rev| rev.trim().to_owned())
        .filter(|rev| !rev.is_empty());
    if let Some(revision) = &revision {
        println!("cargo:rustc-env=AGENT_SERVER_GIT_REVISION={revision}");
    }
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let revision = revision.as_deref().unwrap_or("unknown");
    println!("cargo:rustc-env=AGENT_SERVER_LONG_VERSION={version} (git {revision})");
    // A new commit changes the revision: rebuild when HEAD moves.
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
}
