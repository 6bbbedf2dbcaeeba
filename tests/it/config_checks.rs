//! A `--config` file is checked like flags: an unknown key is refused naming the closest
//! setting, a bad value naming the key, the value and the range, and neither message shows a
//! secret the file holds.

use crate::config::{load, scratch, write};

/// Loads a file holding `text`: refused with a message that holds every needle (`{file}`
/// stands for the file's path) and none of the `absent` secrets.
fn check_file(text: &str, needles: &[&str], absent: &[&str]) {
    let dir = scratch("refused");
    let file = write(&dir, "agent.toml", text);
    let message = match load(&["serve", "--config", &file]) {
        Ok(_) => panic!("{text:?} was accepted"),
        Err(message) => message,
    };
    for needle in needles {
        let needle = needle.replace("{file}", &file);
        assert!(
            message.contains(&needle),
            "{text:?}: {message:?} lacks {needle:?}"
        );
    }
    for secret in absent {
        assert!(
            !message.contains(secret),
            "{text:?}: {message:?} shows {secret:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_keys_are_refused_with_the_closest_setting() {
    let table: &[(&str, &[&str])] = &[
        (
            "max_run_per_user = 5\n",
            &[
                "--config {file}: unknown setting `max_run_per_user`",
                "did you mean `max_runs_per_user`?",
                "the settings are: addr, jwt_secret,",
                "flood_burst, flood_window_secs",
            ],
        ),
        (
            "max-runs-per-user = 5\n",
            &["unknown setting `max-runs-per-user`; did you mean `max_runs_per_user`?"],
        ),
        (
            "[server]\naddr = \"127.0.0.1:0\"\n",
            &["unknown setting `server`"],
        ),
        ("config = \"other.toml\"\n", &["unknown setting `config`"]),
        ("zzz = 1\n", &["unknown setting `zzz` (the settings are:"]),
    ];
    for (text, needles) in table {
        check_file(text, needles, &[]);
    }
}

#[test]
fn bad_values_are_refused_naming_key_value_and_range() {
    let table: &[(&str, &[&str], &[&str])] = &[
        (
            "max_runs_per_user = 0\n",
            &["--config {file}: `max_runs_per_user = 0` is refused: 0 is not in 1..=1000"],
            &[],
        ),
        (
            "flood_burst = 100001\n",
            &["`flood_burst = 100001` is refused: 100001 is not in 1..=100000"],
            &[],
        ),
        (
            "max_threads_per_user = -1\n",
            &["`max_threads_per_user = -1` is refused: -1 is not in 1..=1000000"],
            &[],
        ),
        (
            "max_runs_per_user = \"five\"\n",
            &["`max_runs_per_user = \"five\"` is refused: expected an integer, not a string"],
            &[],
        ),
        (
            "max_runs_per_user = \"5\"\n",
            &["write it without quotes: max_runs_per_user = 5"],
            &[],
        ),
        (
            "log_format = \"xml\"\n",
            &["`log_format = \"xml\"` is refused: use one of text, json"],
            &[],
        ),
        (
            "synthetic_agent = 1\n",
            &["`synthetic_agent = 1` is refused: expected true or false, not an integer"],
            &[],
        ),
        (
            "addr = \"localhost\"\n",
            &["`addr = \"localhost\"` is refused: invalid socket address syntax"],
            &[],
        ),
        (
            "history_max_age = \"soon\"\n",
            &["`history_max_age = \"soon\"` is refused", "`90d`, `12h`"],
            &[],
        ),
        (
            "jwt_secret = 123456789\n",
            &["`jwt_secret = <hidden>` is refused: expected a string, not an integer"],
            &["123456789"],
        ),
        (
            "jwt_secret = \"short-secret\"\n",
            &["is 12 bytes; use at least 32"],
            &["short-secret"],
        ),
        (
            "broker = \"memory://:hunter2@cache\"\n",
            &["\"memory://<credentials>@cache\" is neither `in-process` nor a Redis URL"],
            &["hunter2"],
        ),
        (
            "mcp_env = [[\"gh:TOKEN=hunter3\"]]\n",
            &["`mcp_env = <hidden>` is refused: expected a string, not an array"],
            &["hunter3"],
        ),
        (
            "max_runs_per_user = \n",
            &["--config {file}: TOML parse error at line 1"],
            &[],
        ),
    ];
    for (text, needles, absent) in table {
        check_file(text, needles, absent);
    }
    let missing = load(&["serve", "--config", "/nonexistent/agent.toml"]).map(|_| ());
    let message = missing.unwrap_err();
    assert!(
        message.starts_with("--config /nonexistent/agent.toml: "),
        "{message}"
    );
}
