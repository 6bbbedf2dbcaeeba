//! `POST /agui/{agent}`: a run for any AG-UI frontend. The body is AG-UI's `RunAgentInput`;
//! the answer is the run's events as AG-UI events, as server-sent events (the `agui-protocol` crate's `Mapper`).
//!
//! The run goes through the same path as a socket's `start_agent` (the token's user, the
//! session's rules, the engine's limits), and its events are the user's stream's: the handler
//! joins the user's stream like a connection (so it counts toward the connection limit and has
//! a connection's bounded queue) before it starts the run, and sends that run's events (and
//! its sub-runs'). A tab of the same user shows the run live, under the same run id. Closing
//! the request cancels the run; a reader too slow for its queue gets `RUN_ERROR`
//! `slow_consumer` and the run is cancelled.
//!
//! From `RunAgentInput` the server takes the last message (it must be the user's, as text) as
//! the run's message, `forwardedProps` (an object) as the agent's options, and `threadId` as
//! the run's thread when it is a valid thread id here (letters, digits and `_ - . @ + |`,
//! not a placeholder such as `test`; a UUID is one): runs with the same `threadId` share the thread, and its earlier
//! turns reach the agent from the history, as on the socket; another user's thread is refused
//! like a missing one. Any other `threadId` gets a new thread. `tools`,
//! `context` and `state` are accepted and not used: the engine's agents call the server's own
//! tools. `docs/agui.md` has the details.
//!
//! A run that pauses for approvals ends its response with `RUN_FINISHED` carrying an
//! interrupt outcome, and a later `RunAgentInput` whose `resume` answers the interrupts
//! resumes it and streams the rest of it (`agui_protocol::interrupt`, `agui_protocol::answers`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use agent_protocol::{ErrorCode, SequencedEvent};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use core_context::{RunId, ThreadId, UserId};
use run_service::{RunRequest, RunService};
use serde::Deserialize as _;
use serde_json::{Value, json};
use ws_bridge::Subscription;

use crate::app::Live;
use agui_protocol::{Mapper, Position, Positions};
use http_guard::bearer::refuse;
use server_metrics::Metrics;

/// The largest request body: a `RunAgentInput` carries the conversation so far.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// `POST /agui/{agent}`.
pub(crate) async fn run(
    State(live): State<Live>,
    Path(agent): Path<String>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let user = match live.user(&headers, &HashMap::new()).await {
        Ok(user) => user,
        Err(reason) => return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, reason),
    };
    // A body over the limit is 413, anything else wrong with it 400.
    let input = match body
        .map_err(|e| {
            let message = format!("the body is not a RunAgentInput: {}", e.body_text());
            (e.status(), message)
        })
        .and_then(|Json(body)| {
            agui_protocol::input(&body, live.config.max_frame_bytes)
                .map_err(|m| (StatusCode::BAD_REQUEST, m))
        }) {
        Ok(input) => input,
        Err((status, message)) => return refuse(status, ErrorCode::BadRequest, message),
    };
    let subscription = match live.bridge.subscribe(&user, None).await {
        Ok(subscription) => subscription,
        Err(e) => {
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyConnections,
                e.to_string(),
            );
        }
    };
    let accepted = match input.resume {
        // Subscribed first, so no event of the resumed run is missed.
        Some(answers) => resume(&live.runs, &user, answers).await,
        None => {
            let request = RunRequest {
                agent,
                message: input.message,
                thread_id: input.thread,
                input: input.options,
                request_id: None,
                multitask: input.multitask,
            };
            let connection = subscription.connection_id().clone();
            live.runs.start(&user, &connection, request).await
        }
    };
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(refusal) => {
            return crate::wire::refused_http(refusal);
        }
    };
    let mapper = Mapper::new(input.ids, accepted.run_id.as_str()).with_raw_events(input.raw_events);
    let start = subscription.last_seq();
    let opening = mapper.started(
        accepted.thread_id.as_str(),
        subscription.epoch().as_str(),
        start,
    );
    let mut positions = Positions::new(start);
    let pending = opening.into_iter().map(|e| (positions.next(start), e));
    let stream = RunStream {
        subscription,
        mapper,
        tree: HashSet::from([accepted.run_id.to_string()]),
        pending: pending.collect(),
        positions,
        done: false,
        paused: false,
        metrics: live.metrics,
        guard: CancelOnDrop {
            runs: live.runs,
            user,
            run: accepted.run_id,
            armed: true,
        },
    };
    Sse::new(stream.into_events())
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Decides a paused run's calls with a resume's answers (they must all be of one run of the
/// user's); the run resumes with the last. Refused like the socket's `resolve_approval`.
async fn resume(
    runs: &Arc<RunService>,
    user: &UserId,
    answers: Vec<agui_protocol::Answer>,
) -> Result<run_service::RunAccepted, run_service::Refusal> {
    let run = answers[0].run.clone();
    if answers.iter().any(|a| a.run != run) {
        return Err(run_service::Refusal::new(
            "invalid_field",
            "resume: the entries answer interrupts of different runs; resume one run at a time",
        ));
    }
    let waiting = runs.pending_approvals(user).await?;
    let Some(thread) = waiting
        .iter()
        .find(|w| w.run_id == run.as_str())
        .and_then(|w| ThreadId::parse(&w.thread_id).ok())
    else {
        return Err(run_service::Refusal::new(
            "approval_not_found",
            format!("no interrupt of run {run} waits for this user"),
        ));
    };
    for answer in answers {
        runs.resolve_approval(user, &run, &answer.tool_call_id, answer.decision)
            .await?;
    }
    Ok(run_service::RunAccepted {
        run_id: run,
        thread_id: thread,
        steered: false,
        queued: None,
    })
}

/// The run's events, as AG-UI events, until the run ends.
struct RunStream {
    subscription: Subscription,
    mapper: Mapper,
    /// The run and its sub-runs (a sub-run's events name their parent).
    tree: HashSet<String>,
    /// Events to send, with their positions (their `id`).
    pending: VecDeque<(Position, Value)>,
    positions: Positions,
    done: bool,
    /// The run paused for approvals: the response ends with its interrupts.
    paused: bool,
    metrics: Arc<Metrics>,
    guard: CancelOnDrop,
}

impl RunStream {
    fn into_events(self) -> impl futures::Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut stream| async move {
            loop {
                if let Some((position, event)) = stream.pending.pop_front() {
                    let event = Event::default()
                        .id(position.to_string())
                        .data(event.to_string());
                    return Some((Ok(event), stream));
                }
                if stream.done {
                    return None;
                }
                if stream.paused {
                    stream.interrupted().await;
                    continue;
                }
                match stream.subscription.recv().await {
                    Ok(frame) => stream.take(&frame.text),
                    Err(reason) => {
                        let code = match reason {
                            ws_bridge::CloseReason::SlowConsumer => {
                                stream.metrics.slow_consumer();
                                "slow_consumer"
                            }
                            _ => "shutting_down",
                        };
                        let error = json!({"type": "RUN_ERROR", "code": code,
                            "message": "the server stopped sending this run's events; the run is cancelled"});
                        stream.push(None, [error]);
                        stream.done = true;
                    }
                }
            }
        })
    }

    /// One frame of the user's stream: mapped if it is of this run's tree.
    fn take(&mut self, text: &str) {
        // The stream's frames are the server's own: one that does not decode is a bug, said
        // in the log rather than dropped unseen.
        let raw = match serde_json::from_str::<Value>(text) {
            Ok(raw) => raw,
            Err(error) => {
                tracing::warn!(run_id = %self.guard.run, %error, "agui: a frame of the stream is not JSON; not sent");
                return;
            }
        };
        // The run tree is decided from the two ids, so another run's frame is not decoded.
        let (Some(run), parent) = (raw["run_id"].as_str(), raw["parent_run_id"].as_str()) else {
            return;
        };
        if !self.tree.contains(run) {
            if !parent.is_some_and(|p| self.tree.contains(p)) {
                return;
            }
            self.tree.insert(run.to_owned());
        }
        let sequenced = match SequencedEvent::deserialize(&raw) {
            Ok(sequenced) => sequenced,
            Err(error) => {
                tracing::warn!(run_id = %self.guard.run, %error, "agui: a frame of the run is not an event; not sent");
                return;
            }
        };
        let event = &sequenced.event;
        let mapped = self.mapper.map(event, &raw);
        self.push(Some(sequenced.seq), mapped);
        if event.run_id == self.guard.run
            && matches!(
                event.kind,
                core_context::EventKind::ApprovalRequested { .. }
            )
        {
            self.paused = true;
        }
        if event.run_id == self.guard.run && event.kind.is_terminal() {
            self.done = true;
            self.guard.armed = false;
        }
    }
}

impl RunStream {
    /// Queues AG-UI events mapped from the engine event `seq` (`None`: the server's own).
    fn push(&mut self, seq: Option<u64>, events: impl IntoIterator<Item = Value>) {
        let seq = seq.unwrap_or_else(|| self.positions.seq());
        for event in events {
            self.pending.push_back((self.positions.next(seq), event));
        }
    }

    /// Ends the response of a run that paused: `RUN_FINISHED` with one interrupt per call it
    /// waits on (all saved before the first `approval_requested`). The run is not cancelled
    /// when the response ends: it waits for its answers.
    async fn interrupted(&mut self) {
        self.paused = false;
        self.done = true;
        self.guard.armed = false;
        let runs = &self.guard.runs;
        let waiting = match runs.pending_approvals(&self.guard.user).await {
            Ok(waiting) => waiting,
            Err(refusal) => {
                let error = json!({"type": "RUN_ERROR", "code": refusal.code,
                    "message": format!("the run waits for approvals, which cannot be read now: {}", refusal.message)});
                self.push(None, [error]);
                return;
            }
        };
        let tools = runs.factory().registry().list_tools();
        let interrupts: Vec<Value> = waiting
            .iter()
            .filter(|w| w.run_id == self.guard.run.as_str())
            .map(|w| {
                let parameters = tools.iter().find(|t| t.name == w.tool_name);
                let waiting = agui_protocol::Waiting {
                    run_id: &w.run_id,
                    tool_call_id: &w.tool_call_id,
                    tool_name: &w.tool_name,
                    arguments: &w.arguments,
                    expires_ms: w.expires_ms,
                };
                agui_protocol::interrupt(&waiting, parameters.map(|t| &t.parameters))
            })
            .collect();
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let end = self.mapper.interrupted(interrupts, at);
        self.push(None, end);
    }
}

/// Cancels the run when the response ends before the run did (the client went away).
struct CancelOnDrop {
    runs: Arc<RunService>,
    user: UserId,
    run: RunId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (runs, user, run) = (Arc::clone(&self.runs), self.user.clone(), self.run.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tracing::info!(run_id = %run, "agui: the client left; cancelling the run");
                let _ = runs.cancel(&user, &run).await;
            });
        }
    }
}
