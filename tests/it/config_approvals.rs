//! `--approve-tools` and `--approval-timeout`: by flag (repeated or comma-separated) and by
//! the `--config` file's keys, checked: a bad pattern is named, approvals without a store to
//! keep paused runs in are refused, a timeout out of range is refused.

use std::time::Duration;

use crate::config::{load, scratch, write};

#[test]
fn approvals_come_from_flags_and_the_file_and_are_checked() {
    let (config, _, _) = load(&[
        "serve",
        "--approve-tools",
        "calculator",
        "--approve-tools",
        "mcp_*,text_stat?",
        "--approval-timeout",
        "30m",
    ])
    .unwrap();
    assert_eq!(
        config.engine.approve_tools.patterns().collect::<Vec<_>>(),
        ["calculator", "mcp_*", "text_stat?"]
    );
    assert_eq!(config.engine.approval_timeout, Duration::from_secs(30 * 60));

    let (defaults, _, _) = load(&["serve"]).unwrap();
    assert!(defaults.engine.approve_tools.is_empty());
    assert_eq!(
        defaults.engine.approval_timeout,
        Duration::from_secs(24 * 3600)
    );

    let dir = scratch("approvals");
    let file = write(
        &dir,
        "agent.toml",
        "approve_tools = [\"calculator\", \"mcp_github_*\"]\napproval_timeout = \"2h\"\n",
    );
    let (from_file, _, _) = load(&["serve", "--config", &file]).unwrap();
    assert_eq!(
        from_file
            .engine
            .approve_tools
            .patterns()
            .collect::<Vec<_>>(),
        ["calculator", "mcp_github_*"]
    );
    assert_eq!(
        from_file.engine.approval_timeout,
        Duration::from_secs(7_200)
    );

    let refused: [(&[&str], &str); 4] = [
        (
            &["serve", "--approve-tools", "Calc.*"],
            "approve-tools pattern \"Calc.*\" is not a tool-name pattern",
        ),
        (
            &["serve", "--approve-tools", "calculator", "--store", "none"],
            "--approve-tools needs a history store",
        ),
        (&["serve", "--approval-timeout", "0s"], "outside 1s to 366d"),
        (
            &["serve", "--approval-timeout", "soon"],
            "--approval-timeout",
        ),
    ];
    for (argv, wanted) in refused {
        let error = load(argv).unwrap_err();
        assert!(error.contains(wanted), "{argv:?}: {error}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
