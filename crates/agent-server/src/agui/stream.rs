//! A run's AG-UI response: the run's events from its user's stream, as server-sent events
//! with their positions as ids, until the run ends or pauses.
//!
//! A response that ends before its run (the client went away, or its connection dropped)
//! cancels the run after a grace (`--agui-reattach-secs`) unless another response of this
//! node took the run up meanwhile (`GET /agui/runs/{run_id}`, `continuation.rs`). A reader
//! too slow for its queue gets `RUN_ERROR` `slow_consumer` and the run is cancelled.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use core_context::{RunId, UserId};
use run_service::RunService;
use serde_json::{Value, json};
use ws_bridge::Subscription;

use crate::app::Live;
use agui_protocol::{Position, Positioned, RunView};
use server_metrics::Metrics;

/// The run's events, as AG-UI events, until the run ends.
pub(crate) struct RunStream {
    subscription: Subscription,
    view: RunView,
    /// Events to send, with their positions (their `id`).
    pending: VecDeque<(Position, Value)>,
    metrics: Arc<Metrics>,
    guard: CancelOnDrop,
}

impl RunStream {
    /// A response for `user`'s run `run` that starts with `first`, then follows the run;
    /// `keep_running`: the run goes on if the response ends first.
    pub(crate) async fn new(
        live: &Live,
        subscription: Subscription,
        (view, first): (RunView, Positioned),
        (user, run): (UserId, RunId),
        keep_running: bool,
    ) -> Self {
        live.runs.watch(&user, &run).await;
        Self {
            subscription,
            view,
            pending: first.into(),
            metrics: Arc::clone(&live.metrics),
            guard: CancelOnDrop {
                runs: Arc::clone(&live.runs),
                grace: live.config.agui_reattach,
                user,
                run,
                armed: !keep_running,
            },
        }
    }

    /// The response: server-sent events until the run ends.
    pub(crate) fn into_response(mut self) -> Response {
        self.guard.armed &= !self.view.done();
        Sse::new(self.into_events())
            .keep_alive(KeepAlive::default())
            .into_response()
    }

    fn into_events(self) -> impl futures::Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut stream| async move {
            loop {
                if let Some((position, event)) = stream.pending.pop_front() {
                    let event = Event::default()
                        .id(position.to_string())
                        .data(event.to_string());
                    return Some((Ok(event), stream));
                }
                if stream.view.done() {
                    return None;
                }
                if stream.view.paused() {
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
                        stream.end(vec![error]);
                    }
                }
            }
        })
    }

    /// One frame of the user's stream: mapped if it is of this run's tree.
    pub(crate) fn take(&mut self, text: &str) {
        match self.view.take(text) {
            Ok(events) => self.pending.extend(events),
            // The stream's frames are the server's own: one that does not decode is a bug,
            // said in the log rather than dropped unseen.
            Err(error) => {
                tracing::warn!(run_id = %self.guard.run, %error, "agui: a frame of the stream is not sent");
            }
        }
        if self.view.done() {
            self.guard.armed = false;
        }
    }

    /// Ends the response with the server's own `events` (the run is cancelled, unless its
    /// client asked it to go on: `onDisconnect`).
    fn end(&mut self, events: Vec<Value>) {
        let events = self.view.own(events);
        self.pending.extend(events);
        // Nobody can continue it: the run is cancelled as the response ends, without a grace.
        self.guard.grace = Duration::ZERO;
        self.view.end();
    }

    /// Ends the response of a run that paused: `RUN_FINISHED` with one interrupt per call it
    /// waits on (all saved before the first `approval_requested`). The run is not cancelled
    /// when the response ends: it waits for its answers.
    async fn interrupted(&mut self) {
        self.guard.armed = false;
        let runs = &self.guard.runs;
        let waiting = match runs.pending_approvals(&self.guard.user).await {
            Ok(waiting) => waiting,
            Err(refusal) => {
                let error = json!({"type": "RUN_ERROR", "code": refusal.code,
                    "message": format!("the run waits for approvals, which cannot be read now: {}", refusal.message)});
                let events = self.view.own(vec![error]);
                self.pending.extend(events);
                self.view.end();
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
        let end = self.view.interrupted(interrupts, at);
        self.pending.extend(end);
    }
}

/// Cancels the run when its response ends before the run did, unless another response
/// follows it when the grace is over (of this node, or of any with a cluster).
struct CancelOnDrop {
    runs: Arc<RunService>,
    grace: Duration,
    user: UserId,
    run: RunId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let (runs, user, run) = (Arc::clone(&self.runs), self.user.clone(), self.run.clone());
        let (armed, grace) = (self.armed, self.grace);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            runs.unwatch(&user, &run).await;
            if !armed {
                return;
            }
            tokio::time::sleep(grace).await;
            if runs.watched(&user, &run).await {
                return;
            }
            tracing::info!(run_id = %run, "agui: the client left; cancelling the run");
            let _ = runs.cancel(&user, &run).await;
        });
    }
}
