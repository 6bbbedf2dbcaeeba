//! Scripted frame sequences through the verifier: each case is the frames one connection
//! receives (as wire text, parsed the way the load loop parses them), the runs its user
//! started, and the verdict expected.

use std::sync::Arc;

use agent_protocol::ServerMessage;
use core_context::{EventKind, RunScope, ThreadId};

use super::*;
use crate::baseline::script::{Step, run_script};
use crate::shape::Shape;

const SHAPE: Shape = Shape {
    thinking: 1,
    tools: 1,
    chunks: 1,
    sleep_ms: 0,
};

fn run(tag: &str) -> RunId {
    RunId::parse(&format!("run_{tag}")).expect("valid id")
}

/// The events of a complete run `tag` of [`SHAPE`].
fn events_of(tag: &str) -> Vec<AgentEvent> {
    let scope = RunScope {
        run_id: run(tag),
        parent_run_id: None,
        thread_id: ThreadId::parse(&format!("thr_{tag}")).expect("valid id"),
        agent_name: Arc::from("synthetic"),
    };
    run_script(&SHAPE, "load", tag)
        .into_iter()
        .filter_map(|step| match step {
            Step::Emit(kind) => Some(scope.event(kind)),
            Step::Pause => None,
        })
        .collect()
}

/// Numbers `events` from `first_seq` and encodes them as the server would.
fn frames(events: Vec<AgentEvent>, first_seq: u64) -> Vec<String> {
    events
        .into_iter()
        .zip(first_seq..)
        .map(|(event, seq)| ServerMessage::Event(SequencedEvent { seq, event }).to_text())
        .collect()
}

/// Interleaves two event lists one by one.
fn interleave(a: Vec<AgentEvent>, b: Vec<AgentEvent>) -> Vec<AgentEvent> {
    let mut out = Vec::new();
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Feeds `texts` to a verifier of a connection after `last_seq` whose user started
/// `started` (known from the start) and `confirmed_late` (known only at the end); the verdict
/// is the first violation's message, or `Ok(completed runs)`.
fn check(
    texts: &[String],
    last_seq: u64,
    started: &[&str],
    confirmed_late: &[&str],
    expected: Result<u64, &str>,
) {
    let place = Place {
        connection: 3,
        user: UserId::parse("lg-user-3").expect("valid id"),
    };
    let early: HashSet<RunId> = started.iter().map(|t| run(t)).collect();
    let mut verifier = StreamVerifier::new(place, last_seq, SHAPE.events_per_run());
    let verdict = (|| {
        for text in texts {
            let Ok(ServerMessage::Event(event)) = ServerMessage::parse(text) else {
                panic!("not an event: {text}")
            };
            verifier.on_event(event, |r| early.contains(r))?;
        }
        let all: HashSet<RunId> = early
            .iter()
            .cloned()
            .chain(confirmed_late.iter().map(|t| run(t)))
            .collect();
        verifier.finish(&all, 0)?;
        Ok::<u64, Violation>(verifier.completed())
    })()
    .map_err(|v| v.to_string());
    match (&verdict, expected) {
        (Ok(n), Ok(m)) => assert_eq!(*n, m),
        (Err(message), Err(fragment)) => {
            assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
            assert!(
                message.contains("connection 3 of user lg-user-3"),
                "{message}"
            );
        }
        _ => panic!("expected {expected:?}, got {verdict:?}"),
    }
}

#[test]
fn whole_runs_in_order_pass() {
    check(&frames(events_of("a"), 1), 0, &["a"], &[], Ok(1));
    check(&frames(events_of("a"), 42), 41, &["a"], &[], Ok(1));
    let both = interleave(events_of("a"), events_of("b"));
    check(&frames(both, 1), 0, &["a", "b"], &[], Ok(2));
}

#[test]
fn seq_must_increase_by_exactly_one() {
    let mut texts = frames(events_of("a"), 1);
    texts.remove(2);
    check(&texts, 0, &["a"], &[], Err("seq 4 where 3 was due"));
    let mut texts = frames(events_of("a"), 1);
    texts.insert(3, texts[2].clone());
    check(&texts, 0, &["a"], &[], Err("seq 3 where 4 was due"));
    check(
        &frames(events_of("a"), 1),
        5,
        &["a"],
        &[],
        Err("seq 1 where 6 was due"),
    );
}

#[test]
fn runs_of_other_users_are_wrong_user_frames() {
    let both = interleave(events_of("a"), events_of("z"));
    check(
        &frames(both, 1),
        0,
        &["a"],
        &[],
        Err("wrong-user frame: event of run run_z (seq 2)"),
    );
}

#[test]
fn a_run_accepted_on_a_sibling_connection_after_its_first_event_is_the_users() {
    check(&frames(events_of("a"), 1), 0, &[], &["a"], Ok(1));
}

#[test]
fn broken_lifecycles_and_short_runs_fail() {
    let mut no_close = events_of("a");
    no_close.retain(|e| !matches!(e.kind, EventKind::ToolCompleted { .. }));
    check(&frames(no_close, 1), 0, &["a"], &[], Err("run run_a:"));

    let mut failed = events_of("a");
    if let Some(last) = failed.last_mut() {
        last.kind = EventKind::AgentError {
            code: "timeout".into(),
            message: "too slow".into(),
        };
    }
    check(
        &frames(failed, 1),
        0,
        &["a"],
        &[],
        Err("ended with {\"type\":\"agent_error\""),
    );

    let mut short = events_of("a");
    short.retain(|e| !matches!(e.kind, EventKind::AgentResponseChunk { .. }));
    check(
        &frames(short, 1),
        0,
        &["a"],
        &[],
        Err("run run_a delivered 5 events; its shape makes 6"),
    );
}

#[test]
fn unfinished_and_missing_runs_fail_at_the_end() {
    let mut cut = events_of("a");
    cut.pop();
    check(
        &frames(cut, 1),
        0,
        &["a"],
        &[],
        Err("run run_a delivered 5 events but never its terminal"),
    );
    check(
        &frames(events_of("a"), 1),
        0,
        &["a", "b"],
        &[],
        Err("1 complete runs arrived; the user started 2"),
    );
}

/// A run `tag` whose node died after its first `kept` events: they, then `agent_error`
/// `node_lost`.
fn lost_run(tag: &str, kept: usize) -> Vec<AgentEvent> {
    let mut events = events_of(tag);
    events.truncate(kept);
    let mut end = events_of(tag).pop().expect("a terminal event");
    end.kind = EventKind::AgentError {
        code: NODE_LOST.into(),
        message: "the node running the run stopped".into(),
    };
    events.push(end);
    events
}

/// Feeds `events` from seq 1 to a verifier that tolerates node loss, for a user that
/// started `started` and lost `lost` requests; the verdict, or the runs ended `node_lost`.
fn check_tolerant(events: Vec<AgentEvent>, started: &[&str], lost: u64) -> Result<u64, String> {
    let place = Place {
        connection: 3,
        user: UserId::parse("lg-user-3").expect("valid id"),
    };
    let runs: HashSet<RunId> = started.iter().map(|t| run(t)).collect();
    let mut verifier = StreamVerifier::new(place, 0, SHAPE.events_per_run()).tolerating_node_loss();
    let mut node_lost = 0;
    for text in frames(events, 1) {
        let Ok(ServerMessage::Event(event)) = ServerMessage::parse(&text) else {
            panic!("not an event: {text}")
        };
        let ended = verifier
            .on_event(event, |r| runs.contains(r))
            .map_err(|v| v.to_string())?;
        node_lost += u64::from(ended.is_some_and(|e| e.node_lost));
    }
    verifier.finish(&runs, lost).map_err(|v| v.to_string())?;
    Ok(node_lost)
}

#[test]
fn runs_of_a_dead_node_end_node_lost_once_when_tolerated() {
    // Run b's node died after its first tool call completed: its end follows at once.
    let events = interleave(events_of("a"), lost_run("b", 4));
    assert_eq!(check_tolerant(events.clone(), &["a", "b"], 0), Ok(1));
    // Without tolerance, node_lost is a run that did not complete.
    check(
        &frames(events, 1),
        0,
        &["a", "b"],
        &[],
        Err("instead of agent_completed"),
    );
    // Its lifecycle is still checked: a call left open (the node that ends the run must
    // close it), a second agent_started, or a tool call completed that never began.
    let verdict = check_tolerant(lost_run("b", 3), &["b"], 0).expect_err("a call left open");
    assert!(
        verdict.contains("run run_b: terminal event while tool call call_b_1 is still open"),
        "{verdict}"
    );
    let mut twice = lost_run("b", 2);
    twice.insert(1, events_of("b")[0].clone());
    let verdict = check_tolerant(twice, &["b"], 0).expect_err("two agent_started");
    assert!(verdict.contains("run run_b"), "{verdict}");
    let mut unopened = lost_run("b", 5);
    unopened.retain(|e| !matches!(e.kind, EventKind::ToolExecuting { .. }));
    assert!(check_tolerant(unopened, &["b"], 0).is_err());
    // Another error code is not excused.
    let mut failed = lost_run("b", 2);
    if let Some(last) = failed.last_mut() {
        last.kind = EventKind::AgentError {
            code: "timeout".into(),
            message: "too slow".into(),
        };
    }
    let verdict = check_tolerant(failed, &["b"], 0).expect_err("not node_lost");
    assert!(verdict.contains("instead of agent_completed"), "{verdict}");
}

#[test]
fn open_runs_not_known_as_the_users_are_counted_until_they_end() {
    // What the end of a load waits on when a user lost requests: a run begun here whose
    // acceptance never came (run c), open until its `node_lost` comes.
    let place = Place {
        connection: 1,
        user: UserId::parse("lg-user-1").expect("valid id"),
    };
    let mut verifier = StreamVerifier::new(place, 0, SHAPE.events_per_run()).tolerating_node_loss();
    let known = |r: &RunId| *r == run("a");
    let lost = lost_run("c", 2);
    let (begun, end) = lost.split_at(lost.len() - 1);
    let events: Vec<AgentEvent> = interleave(events_of("a")[..2].to_vec(), begun.to_vec());
    let count = events.len() as u64;
    for text in frames(events, 1) {
        let Ok(ServerMessage::Event(event)) = ServerMessage::parse(&text) else {
            panic!("not an event: {text}")
        };
        verifier.on_event(event, known).expect("no violation");
    }
    // Runs a (known) and c (not) are open: c alone counts.
    assert_eq!(verifier.open_unconfirmed(known), 1);
    assert_eq!(verifier.open_unconfirmed(|_| true), 0);
    for text in frames(end.to_vec(), count + 1) {
        let Ok(ServerMessage::Event(event)) = ServerMessage::parse(&text) else {
            panic!("not an event: {text}")
        };
        verifier.on_event(event, known).expect("no violation");
    }
    assert_eq!(verifier.open_unconfirmed(known), 0);
}

#[test]
fn an_unconfirmed_node_lost_run_is_excused_only_by_a_lost_request() {
    // Run c's acceptance was lost with a dropped connection: excused when the user lost a
    // request, a wrong-user frame when not.
    let events = interleave(events_of("a"), lost_run("c", 2));
    assert_eq!(check_tolerant(events.clone(), &["a"], 1), Ok(1));
    let verdict = check_tolerant(events, &["a"], 0).expect_err("not excused");
    assert!(
        verdict.contains("wrong-user frame: event of run run_c"),
        "{verdict}"
    );
    // The verdict says how the run ended and what the user lost, to tell a stranger's run
    // from one a lost request started.
    assert!(
        verdict.contains("(it ended node_lost; the user lost 0 requests unanswered)"),
        "{verdict}"
    );
    // One lost request excuses one run, and never a run that completed.
    let two = interleave(lost_run("c", 2), lost_run("d", 2));
    let verdict = check_tolerant(two, &[], 1).expect_err("one excuse for two runs");
    assert!(verdict.contains("wrong-user frame"), "{verdict}");
    let verdict = check_tolerant(events_of("z"), &[], 1).expect_err("a completed stranger");
    assert!(
        verdict.contains("wrong-user frame: event of run run_z"),
        "{verdict}"
    );
    assert!(
        verdict.contains("(it ended otherwise; the user lost 1"),
        "{verdict}"
    );
}

/// Feeds `before` (from seq 1), then a failed resume whose new position is `new_last_seq`,
/// then `after` (numbered from it) to a verifier of a user who started `started` before the
/// reset and `later` after it; returns the runs the reset wrote off and the verdict
/// (`Ok((checked, written off))`).
fn check_reset(
    before: Vec<AgentEvent>,
    new_last_seq: u64,
    after: Vec<AgentEvent>,
    started: &[&str],
    later: &[&str],
) -> (Vec<RunId>, Result<(u64, u64), String>) {
    let place = Place {
        connection: 1,
        user: UserId::parse("lg-user-1").expect("valid id"),
    };
    let mut runs: HashSet<RunId> = started.iter().map(|t| run(t)).collect();
    let mut verifier = StreamVerifier::new(place, 0, SHAPE.events_per_run());
    let mut cut = Vec::new();
    let verdict = (|| {
        for text in frames(before, 1) {
            let Ok(ServerMessage::Event(event)) = ServerMessage::parse(&text) else {
                panic!("not an event: {text}")
            };
            verifier.on_event(event, |r| runs.contains(r))?;
        }
        cut = verifier.reset(new_last_seq, &runs);
        runs.extend(later.iter().map(|t| run(t)));
        for text in frames(after, new_last_seq + 1) {
            let Ok(ServerMessage::Event(event)) = ServerMessage::parse(&text) else {
                panic!("not an event: {text}")
            };
            verifier.on_event(event, |r| runs.contains(r))?;
        }
        verifier.finish(&runs, 0)?;
        Ok::<_, Violation>((verifier.completed(), verifier.written_off()))
    })()
    .map_err(|v| v.to_string());
    cut.sort_by_key(ToString::to_string);
    (cut, verdict)
}

#[test]
fn a_failed_resume_writes_off_the_runs_it_may_have_cut_and_checks_the_rest_whole() {
    // Run a was done before; b was midway (its rest comes in the new epoch, skipped); c was
    // accepted and had not begun (its events come whole after: written off all the same,
    // its start may have been among the events not replayed); d begins after the reset and
    // is checked whole.
    let b = events_of("b");
    let (b_before, b_after) = b.split_at(3);
    let before: Vec<AgentEvent> = events_of("a")
        .into_iter()
        .chain(b_before.to_vec())
        .collect();
    let after: Vec<AgentEvent> = b_after
        .iter()
        .cloned()
        .chain(interleave(events_of("c"), events_of("d")))
        .collect();
    let (cut, verdict) = check_reset(before.clone(), 40, after.clone(), &["a", "b", "c"], &["d"]);
    assert_eq!(cut, vec![run("b"), run("c")]);
    assert_eq!(verdict, Ok((2, 2)));
    // A run of another user is still a wrong-user frame after a reset.
    let (_, verdict) = check_reset(before, 40, after, &["a", "b", "c"], &[]);
    assert!(
        verdict
            .as_ref()
            .is_err_and(|m| m.contains("wrong-user frame: event of run run_d")),
        "{verdict:?}"
    );
}

#[test]
fn after_a_failed_resume_a_run_seen_without_its_start_is_written_off_and_seq_still_counts() {
    // Run e began before the reset but was not yet known here (its acceptance on the way):
    // it arrives without its start and is written off; f is checked whole.
    let e = events_of("e");
    let after: Vec<AgentEvent> = e[2..].iter().cloned().chain(events_of("f")).collect();
    // Its acceptance came after the reset (on a sibling connection).
    let (cut, verdict) = check_reset(events_of("a"), 7, after, &["a"], &["e", "f"]);
    assert!(cut.is_empty(), "{cut:?}");
    assert_eq!(verdict, Ok((2, 1)));
    // A gap in the new epoch is still a gap.
    let mut broken = frames(events_of("f"), 8);
    broken.remove(1);
    let place = Place {
        connection: 1,
        user: UserId::parse("lg-user-1").expect("valid id"),
    };
    let mut verifier = StreamVerifier::new(place, 0, SHAPE.events_per_run());
    verifier.reset(7, &HashSet::new());
    let mut failed = None;
    for text in broken {
        let Ok(ServerMessage::Event(event)) = ServerMessage::parse(&text) else {
            panic!("not an event: {text}")
        };
        if let Err(v) = verifier.on_event(event, |_| true) {
            failed = Some(v.to_string());
            break;
        }
    }
    assert!(
        failed
            .as_deref()
            .is_some_and(|m| m.contains("seq 10 where 9 was due")),
        "{failed:?}"
    );
}

#[test]
fn a_run_written_off_by_one_failed_resume_is_not_written_off_again_by_the_next() {
    // Run b is midway at the first failed resume (written off); its rest comes and ends it;
    // a second failed resume must not write it off again, or the connection counts more
    // runs than its user started.
    let place = Place {
        connection: 1,
        user: UserId::parse("lg-user-1").expect("valid id"),
    };
    let runs: HashSet<RunId> = [run("a"), run("b")].into_iter().collect();
    let mut verifier = StreamVerifier::new(place, 0, SHAPE.events_per_run());
    let b = events_of("b");
    let before: Vec<AgentEvent> = events_of("a").into_iter().chain(b[..3].to_vec()).collect();
    let feed = |verifier: &mut StreamVerifier, events: Vec<AgentEvent>, first: u64| {
        for text in frames(events, first) {
            let Ok(ServerMessage::Event(event)) = ServerMessage::parse(&text) else {
                panic!("not an event: {text}")
            };
            verifier.on_event(event, |r| runs.contains(r)).unwrap();
        }
    };
    feed(&mut verifier, before, 1);
    assert_eq!(verifier.reset(40, &runs), vec![run("b")]);
    let rest = b[3..].to_vec();
    let count = rest.len() as u64;
    feed(&mut verifier, rest, 41);
    assert!(verifier.reset(40 + count + 5, &runs).is_empty());
    assert_eq!((verifier.completed(), verifier.written_off()), (1, 1));
    assert_eq!(verifier.finish(&runs, 0).map_err(|v| v.to_string()), Ok(()));
}
