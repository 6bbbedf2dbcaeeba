//! The flag table: each row is a command line and what it must give, a plan or an error that
//! names the flag.

use clap::Parser;

use super::*;

/// Parses `argv` (after `loadgen`) and validates it; the plan is summarised as
/// `scenario connections users events-per-run`, errors as their message.
fn check(argv: &[&str], expected: Result<&str, &str>) {
    let got = Cli::try_parse_from(std::iter::once("loadgen").chain(argv.iter().copied()))
        .map_err(|e| e.to_string())
        .and_then(|cli| match cli.command.plan() {
            Some(plan) => plan.map(|p| {
                let detail = match p.scenario {
                    Scenario::Steady {
                        rate, in_flight, ..
                    } => format!(" {in_flight}@{rate:.0}/s"),
                    Scenario::Burst { runs } => format!(" {runs}"),
                    Scenario::Idle { hold } => format!(" {}s", hold.as_secs()),
                };
                format!(
                    "{}{detail} {} {} {}",
                    p.scenario.name(),
                    p.layout.connections,
                    p.layout.users,
                    p.shape.events_per_run()
                )
            }),
            None => Ok("baseline-server".to_owned()),
        });
    match (&got, expected) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{argv:?}"),
        (Err(m), Err(f)) => assert!(m.contains(f), "{argv:?}: {m:?} lacks {f:?}"),
        _ => panic!("{argv:?}: expected {expected:?}, got {got:?}"),
    }
}

const SECRET: &str = "--jwt-secret=0123456789abcdef0123456789abcdef";

#[test]
fn flag_table() {
    let table: &[(&[&str], Result<&str, &str>)] = &[
        (
            &["burst", SECRET, "--runs", "10"],
            Ok("burst 10 1000 1000 17"),
        ),
        (
            &[
                "burst",
                SECRET,
                "--runs",
                "10000",
                "--connections",
                "5000",
                "--users",
                "5000",
            ],
            Ok("burst 10000 5000 5000 17"),
        ),
        (
            &[
                "steady",
                SECRET,
                "--in-flight",
                "1000",
                "--duration",
                "30",
                "--connections",
                "10000",
            ],
            Ok("steady 1000@1667/s 10000 10000 17"),
        ),
        (
            &[
                "steady",
                SECRET,
                "--in-flight",
                "10",
                "--rate",
                "5",
                "--duration",
                "3",
            ],
            Ok("steady 10@5/s 1000 1000 17"),
        ),
        (
            &["idle", SECRET, "--connections", "19000"],
            Ok("idle 0s 19000 19000 17"),
        ),
        (
            &["idle", SECRET, "--hold", "5", "--shape", "{}"],
            Ok("idle 5s 1000 1000 6"),
        ),
        (&["baseline-server", SECRET], Ok("baseline-server")),
        (&["burst", "--runs", "1"], Err("--jwt-secret <JWT_SECRET>")),
        (&["burst", SECRET], Err("--runs <RUNS>")),
        (
            &["burst", SECRET, "--runs", "0"],
            Err("invalid value '0' for '--runs <RUNS>'"),
        ),
        (
            &["burst", SECRET, "--runs", "1", "--connections", "lots"],
            Err("invalid value 'lots' for '--connections <CONNECTIONS>'"),
        ),
        (
            &[
                "burst",
                SECRET,
                "--runs",
                "1",
                "--connections",
                "10",
                "--users",
                "11",
            ],
            Err("--users 11 is more than --connections 10"),
        ),
        (
            &["burst", SECRET, "--runs", "1", "--shape", r#"{"tool":1}"#],
            Err("--shape: the shape: unknown field `tool`"),
        ),
        (
            &["burst", SECRET, "--runs", "1", "--user-prefix", "bad user"],
            Err("--user-prefix \"bad user\" makes invalid user ids"),
        ),
        (
            &["burst", SECRET, "--runs", "1", "--sources", "0"],
            Err("--sources <SOURCES>"),
        ),
        (
            &["burst", SECRET, "--runs", "1", "--threads", "0"],
            Err("--threads <THREADS>"),
        ),
        (
            &["burst", "--jwt-secret=", "--runs", "1"],
            Err("--jwt-secret is empty"),
        ),
        (
            &[
                "steady",
                SECRET,
                "--in-flight",
                "10",
                "--duration",
                "3",
                "--shape",
                "{}",
            ],
            Err("--rate is needed"),
        ),
        (
            &[
                "steady",
                SECRET,
                "--in-flight",
                "10",
                "--duration",
                "3",
                "--rate=-1",
            ],
            Err("--rate -1: give runs per second"),
        ),
        (
            &["steady", SECRET, "--in-flight", "10", "--duration", "0"],
            Err("--duration <DURATION>"),
        ),
        (&["flood", SECRET], Err("unrecognized subcommand 'flood'")),
    ];
    for (argv, expected) in table {
        check(argv, *expected);
    }
}
