//! The benchmark's scenarios: what loadgen does in each, and which server limits it needs
//! raised. `--quick` runs a small version of each, about a minute in all.

/// The synthetic run of every load scenario (issue 9's): 17 events, about 600 ms.
pub const SHAPE: &str = r#"{"thinking":4,"tools":3,"chunks":5,"sleep_ms":50}"#;

/// One scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// A short name, used in progress lines, file names and `--only`.
    pub name: &'static str,
    /// The group its row belongs to in the table (`idle` and `scaling` have several sizes).
    pub group: &'static str,
    /// What it does, in words, for the table.
    pub what: String,
    /// loadgen's arguments after the URL, secret and pid.
    pub loadgen: Vec<String>,
    /// agent-server's extra `serve` flags (the baseline has no limits to raise).
    pub server: Vec<&'static str>,
    /// agent-server nodes the scenario runs on (the multi-node runs' second side, the wide
    /// run's only side).
    pub nodes: usize,
    /// Flags of the Redis broker on those nodes (beside `--broker`).
    pub broker: Vec<&'static str>,
}

/// Limits raised for load scenarios: the start rate is a per-user abuse guard, and a steady
/// load restarts runs on the same users faster than 30 a minute.
const LOAD_LIMITS: &[&str] = &["--start-rate-per-minute", "100000"];

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn burst(name: &'static str, connections: u64, runs: u64) -> Scenario {
    let (c, r) = (connections.to_string(), runs.to_string());
    Scenario {
        name,
        group: name,
        what: format!(
            "{} users × 1 connection, {} runs at once",
            thousands(connections),
            thousands(runs)
        ),
        loadgen: args(&["burst", "--connections", &c, "--runs", &r, "--shape", SHAPE]),
        server: LOAD_LIMITS.to_vec(),
        nodes: 1,
        broker: Vec::new(),
    }
}

fn steady(
    name: &'static str,
    group: &'static str,
    connections: u64,
    in_flight: u64,
    secs: u64,
) -> Scenario {
    let (c, f, d) = (
        connections.to_string(),
        in_flight.to_string(),
        secs.to_string(),
    );
    Scenario {
        name,
        group,
        what: format!(
            "{} connections, {} runs in flight, started steadily for {secs} s",
            thousands(connections),
            thousands(in_flight)
        ),
        loadgen: args(&[
            "steady",
            "--connections",
            &c,
            "--in-flight",
            &f,
            "--duration",
            &d,
            "--shape",
            SHAPE,
        ]),
        server: LOAD_LIMITS.to_vec(),
        nodes: 1,
        broker: Vec::new(),
    }
}

fn idle(name: &'static str, connections: u64) -> Scenario {
    let c = connections.to_string();
    Scenario {
        name,
        group: "idle",
        what: format!("{} idle connections", thousands(connections)),
        loadgen: args(&["idle", "--connections", &c]),
        server: Vec::new(),
        nodes: 1,
        broker: Vec::new(),
    }
}

/// The group of the multi-node scenarios: each runs on one node (in-process broker) and on
/// two nodes sharing a private Redis, with every user's two connections on different nodes.
pub const MULTI_NODE: &str = "multi-node";

/// A multi-node scenario: `users` users with one connection on each of two nodes; a user's
/// runs are started on either connection in turn, so every run's events reach one connection
/// on the node running it and one on the other node.
fn cross_node(name: &'static str, users: u64, mut base: Scenario) -> Scenario {
    let (c, u) = ((2 * users).to_string(), users.to_string());
    for (flag, value) in [("--connections", &c)] {
        if let Some(i) = base.loadgen.iter().position(|a| a == flag) {
            base.loadgen[i + 1] = value.clone();
        }
    }
    base.loadgen.extend(["--users".to_owned(), u]);
    base.what = format!(
        "{} users × 2 connections (one per node), {}",
        thousands(users),
        base.what.split(", ").skip(1).collect::<Vec<_>>().join(", ")
    );
    Scenario {
        name,
        group: MULTI_NODE,
        nodes: 2,
        ..base
    }
}

/// [`cross_node`] with the nodes in the Redis broker's sequencer mode (`--broker-sequencer`).
fn sequenced(name: &'static str, mut base: Scenario) -> Scenario {
    base.name = name;
    base.what = format!("{}, sequencer mode", base.what);
    base.broker = vec!["--broker-sequencer"];
    base
}

/// A cross-node burst of 8 runs a user, past the per-user limit (3 at once by default): most
/// runs wait in their user's queue, which spans the nodes, for a slot another run gives back.
fn queued(mut base: Scenario) -> Scenario {
    base.what = format!("{}, 8 a user: 3 run at once, 5 queue", base.what);
    base
}

/// The group of the wide run: more connections than one process may hold, over several
/// nodes on one Redis, each node loaded by its own loadgen at once.
pub const WIDE: &str = "wide";

/// The replay logs' bound on each node of the wide run: small, so that the steady load
/// reaches it within seconds and the run shows the memory flat from then on.
const WIDE_REPLAY_BYTES: &str = "16777216";

/// `nodes` nodes with `per_node` connections (one user each) and `in_flight` runs in flight
/// on each, for `secs` seconds. In the full run every user runs about once a minute, so three
/// minutes show whether memory stays flat once every user has run.
fn wide(name: &'static str, nodes: usize, per_node: u64, in_flight: u64, secs: u64) -> Scenario {
    let mut base = steady(name, WIDE, per_node, in_flight, secs);
    let n = nodes as u64;
    base.what = format!(
        "{} connections ({nodes} nodes × {}, one user each) on one Redis, {} runs in flight, \
         started steadily for {secs} s, replay logs bounded to 16 MiB per node",
        thousands(n * per_node),
        thousands(per_node),
        thousands(n * in_flight)
    );
    base.server
        .extend(["--replay-max-bytes", WIDE_REPLAY_BYTES]);
    base.nodes = nodes;
    base
}

/// Whether `scenario` also runs on the floor (`loadgen floor-server`): the single-node loads
/// whose CPU per event is long enough to measure (not the light one, whose CPU is a few
/// clock ticks).
pub fn has_floor(scenario: &Scenario) -> bool {
    scenario.group == "burst" || scenario.group == "steady"
}

/// The group of the history scenarios: each runs with no store (`--store none`, as every
/// other agent-server run here) and with the SQLite store on.
pub const HISTORY: &str = "history";

/// The scenarios, full or quick.
pub fn scenarios(quick: bool) -> Vec<Scenario> {
    let mut all = single_node(quick);
    let mut with_store = if quick {
        vec![
            burst("burst-store", 500, 1_000),
            steady("steady-store", HISTORY, 1_000, 100, 3),
        ]
    } else {
        vec![
            burst("burst-store", 5_000, 10_000),
            steady("steady-store", HISTORY, 10_000, 1_000, 20),
        ]
    };
    for scenario in &mut with_store {
        scenario.group = HISTORY;
    }
    all.extend(with_store);
    all.extend(if quick {
        vec![
            cross_node("cross-burst", 200, burst("", 0, 400)),
            sequenced("cross-burst-seq", cross_node("", 200, burst("", 0, 400))),
            queued(cross_node("cross-burst-queued", 200, burst("", 0, 1_600))),
            cross_node("cross-steady", 500, steady("", "", 0, 100, 3)),
            sequenced(
                "cross-steady-seq",
                cross_node("", 500, steady("", "", 0, 100, 3)),
            ),
            wide("c100k", 3, 500, 30, 3),
        ]
    } else {
        vec![
            cross_node("cross-burst", 2_000, burst("", 0, 4_000)),
            sequenced(
                "cross-burst-seq",
                cross_node("", 2_000, burst("", 0, 4_000)),
            ),
            queued(cross_node(
                "cross-burst-queued",
                2_000,
                burst("", 0, 16_000),
            )),
            cross_node("cross-steady", 5_000, steady("", "", 0, 500, 20)),
            sequenced(
                "cross-steady-seq",
                cross_node("", 5_000, steady("", "", 0, 500, 20)),
            ),
            wide("c100k", 6, 16_667, 167, 180),
        ]
    });
    all
}

fn single_node(quick: bool) -> Vec<Scenario> {
    if quick {
        return vec![
            burst("burst", 500, 1_000),
            steady("steady", "steady", 1_000, 100, 3),
            burst("light", 200, 10),
            idle("idle-100", 100),
            idle("idle-1k", 1_000),
            idle("idle-1.9k", 1_900),
            steady("scaling-100", "scaling", 100, 100, 3),
            steady("scaling-1.9k", "scaling", 1_900, 100, 3),
        ];
    }
    vec![
        burst("burst", 5_000, 10_000),
        steady("steady", "steady", 10_000, 1_000, 20),
        burst("light", 2_000, 100),
        idle("idle-1k", 1_000),
        idle("idle-10k", 10_000),
        idle("idle-19k", 19_000),
        steady("scaling-1k", "scaling", 1_000, 1_000, 20),
        steady("scaling-19k", "scaling", 19_000, 1_000, 20),
    ]
}

/// `12345` as `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_quick_have_the_same_scenarios_by_group() {
        let groups = |quick| {
            let mut g: Vec<&str> = scenarios(quick).iter().map(|s| s.group).collect();
            g.dedup();
            g
        };
        assert_eq!(
            groups(false),
            [
                "burst", "steady", "light", "idle", "scaling", HISTORY, MULTI_NODE, WIDE
            ]
        );
        assert_eq!(groups(true), groups(false));
    }

    #[test]
    fn the_full_scenarios_are_issue_9s() {
        let all = scenarios(false);
        let line = |name: &str| {
            let s = all.iter().find(|s| s.name == name).expect("scenario");
            format!("{}: {}", s.what, s.loadgen.join(" "))
        };
        assert_eq!(
            line("burst"),
            format!(
                "5,000 users × 1 connection, 10,000 runs at once: burst --connections 5000 --runs 10000 --shape {SHAPE}"
            )
        );
        assert!(line("steady").contains("steady --connections 10000 --in-flight 1000"));
        assert!(line("idle-19k").ends_with("idle --connections 19000"));
        assert!(line("scaling-19k").contains("--connections 19000 --in-flight 1000"));
        assert_eq!(
            line("cross-burst"),
            format!(
                "2,000 users × 2 connections (one per node), 4,000 runs at once: burst --connections 4000 --runs 4000 --shape {SHAPE} --users 2000"
            )
        );
        assert!(line("cross-steady").contains("steady --connections 10000 --in-flight 500"));
        assert_eq!(
            line("c100k"),
            format!(
                "100,002 connections (6 nodes × 16,667, one user each) on one Redis, 1,002 runs in flight, started steadily for 180 s, replay logs bounded to 16 MiB per node: steady --connections 16667 --in-flight 167 --duration 180 --shape {SHAPE}"
            )
        );
    }

    #[test]
    fn thousands_separators() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (19_000, "19,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }
}
