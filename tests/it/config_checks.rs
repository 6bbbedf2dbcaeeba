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

/// The URL flags (`--broker`, `--store`): each accepted, or refused naming the flag, the URL
/// with its credentials hidden, and what is wrong with it (for a Redis Cluster, which node).
#[test]
fn url_flags_are_checked() {
    let table: &[(&[&str], Result<(), &str>)] = &[
        (&["--broker", "in-process"], Ok(())),
        (&["--broker", "redis://127.0.0.1:6379"], Ok(())),
        (&["--broker", "redis://:pw@10.0.0.5:6379/2"], Ok(())),
        (
            &["--broker", "redis://"],
            Err("--broker (AGENT_SERVER_BROKER) \"redis://\" is neither"),
        ),
        (
            &["--broker", "http://user:secret@cache:6379"],
            Err("\"http://<credentials>@cache:6379\" is neither"),
        ),
        (&["--broker", "memory"], Err("is neither `in-process` nor")),
        (&["--broker", "rediss://:pw@cache:6380/0"], Ok(())),
        (
            &["--broker", "rediss://h:1", "--broker-ca-file", "a.pem"],
            Ok(()),
        ),
        (&["--broker", "rediss://"], Err("\"rediss://\" is neither")),
        (&["--broker", "redis+unix:///run/redis.sock"], Ok(())),
        (
            &["--broker", "redis://:pw@cache:99999"],
            Err(
                "\"redis://<credentials>@cache:99999\" is neither `in-process` nor a Redis URL (its port is not a number in 1..=65535)",
            ),
        ),
        (
            &["--broker", "redis://:6379"],
            Err("is neither `in-process` nor a Redis URL (it names no host)"),
        ),
        (&["--store", "postgres://db/agents?sslmode=require"], Ok(())),
        (&["--store", "postgresql:///agents"], Ok(())),
        (&["--store", "sqlite:data/history.db"], Ok(())),
        (
            &["--store", "postgres://u@db:5432x/agents?password=hunter2"],
            Err(
                "\"postgres://<credentials>@db:5432x/agents?password=<hidden>\" is not a store (its port is not a number in 1..=65535)",
            ),
        ),
        (
            &[
                "--llm-base-url",
                "ftp://u:pw@llm.example/v1",
                "--llm-model",
                "m",
            ],
            Err(
                "--llm-base-url (LLM_BASE_URL) \"ftp://<credentials>@llm.example/v1\" is not a model API's root (its scheme is `ftp`, not http:// or https://)",
            ),
        ),
        (
            &["--llm-base-url", "http://:8080/v1", "--llm-model", "m"],
            Err("is not a model API's root (it names no host)"),
        ),
        (&["--store", "none"], Ok(())),
        (&["--store", "sqlite://data/history.db"], Ok(())),
        (&["--store", "postgres://app:pw@db:5432/agents"], Ok(())),
        (
            &["--store", "mysql://root:secret@db/agents"],
            Err("--store (AGENT_SERVER_STORE) \"mysql://<credentials>@db/agents\" is not a store"),
        ),
        (&["--store", "sqlite://"], Err("is not a store")),
        (
            &["--broker", "redis-cluster://10.0.0.1:7000,10.0.0.2:7000"],
            Ok(()),
        ),
        (&["--broker", "rediss-cluster://:pw@a:7000,b:7000"], Ok(())),
        (
            &["--broker", "redis-cluster://:hunter2@a:7000,b"],
            Err(
                "\"redis-cluster://<credentials>@a:7000,b\" is not a Redis Cluster URL (\"b\" has no port",
            ),
        ),
        (
            &["--broker", "redis-cluster://a:7000,b:99999"],
            Err("is not a Redis Cluster URL (its port is not a number in 1..=65535)"),
        ),
        (
            &["--broker", "redis-cluster://a:7000/1"],
            Err("is not a Redis Cluster URL (a cluster has one database"),
        ),
    ];
    for (flags, expected) in table {
        let argv: Vec<&str> = std::iter::once("serve")
            .chain(flags.iter().copied())
            .collect();
        match (load(&argv).map(drop), expected) {
            (Ok(()), Ok(())) => {}
            (Err(message), Err(needle)) => {
                assert!(
                    message.contains(needle),
                    "{flags:?}: {message:?} lacks {needle:?}"
                );
                assert!(!message.contains("hunter2"), "{flags:?}: {message:?}");
            }
            (got, _) => panic!("{flags:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

/// `--llm-system-prompt` takes the prompt's text, or `@path` for a file's; a file that cannot
/// be read is named in the refusal.
#[test]
fn the_llm_system_prompt_is_its_text_or_a_files() {
    let dir = scratch("prompt");
    let file = write(&dir, "prompt.txt", "You answer in French.\n");
    let model = [
        "serve",
        "--llm-base-url",
        "http://127.0.0.1:9/v1",
        "--llm-model",
        "m",
    ];
    let prompt_of = |given: &str| {
        let mut argv = model.to_vec();
        argv.extend(["--llm-system-prompt", given]);
        load(&argv).map(|(config, _, _)| config.llm.unwrap().system_prompt)
    };
    assert_eq!(
        prompt_of("Be brief.").unwrap().as_deref(),
        Some("Be brief.")
    );
    let at_file = format!("@{file}");
    assert_eq!(
        prompt_of(&at_file).unwrap().as_deref(),
        Some("You answer in French.\n")
    );
    let missing = format!("@{}/nope.txt", dir.display());
    let refused = prompt_of(&missing).unwrap_err();
    assert!(
        refused.contains(&format!("{missing}: cannot read the file")),
        "{refused}"
    );
    assert!(prompt_of("  ").unwrap_err().contains("is empty"));
    assert_eq!(load(&model).unwrap().0.llm.unwrap().system_prompt, None);
    let _ = std::fs::remove_dir_all(&dir);
}
