//! The baseline's socket loop and runs: one task per socket that writes the user's queued
//! frames and answers the client (`start_agent` → `run_accepted` then a run task, `ping` →
//! `pong`), with the server's ping interval and idle timeout; and the run task, which plays a
//! synthetic run's script into the user's stream with the same pauses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_protocol::{
    ClientFrame, CloseCode, ErrorCode, ServerFrame, StartAgent, Timestamp, parse_client_frame,
};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use core_context::{ConnectionId, RunId, RunScope, ThreadId, UserId};
use serde_json::Value;

use crate::baseline::Baseline;
use crate::baseline::script::{Step, run_script};
use crate::baseline::streams::{Emit, UserStream};
use crate::shape::{AGENT, Shape};

/// The server's defaults: a ping every 20 s, closed after 60 s without a frame.
const PING_INTERVAL: Duration = Duration::from_secs(20);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A socket write that takes longer than this closes the connection (as in the server).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one authenticated socket of `user`.
pub async fn serve(baseline: Arc<Baseline>, user: UserId, mut socket: WebSocket) {
    let stream = baseline.streams.of(&user);
    let (key, mut queue, last_seq) = stream.join();
    let established = ServerFrame::ConnectionEstablished {
        connection_id: ConnectionId::generate(),
        user_id: user.clone(),
        epoch: baseline.epoch.clone(),
        last_seq,
        server_time: Timestamp::now(),
        resume: None,
    };
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    if send(&mut socket, Message::Text(established.to_text().into())).await {
        loop {
            tokio::select! {
                frame = queue.recv() => match frame {
                    Some(text) => if !send(&mut socket, Message::Text(text)).await { break },
                    None => {
                        close(&mut socket, CloseCode::SlowConsumer).await;
                        break;
                    }
                },
                message = socket.recv() => {
                    let Some(Ok(message)) = message else { break };
                    last_heard = Instant::now();
                    if !on_message(&mut socket, &stream, message).await {
                        break;
                    }
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_TIMEOUT {
                        close(&mut socket, CloseCode::IdleTimeout).await;
                        break;
                    }
                    if !send(&mut socket, Message::Ping(Vec::new().into())).await { break }
                }
            }
        }
    }
    baseline.streams.leave(&user, key);
}

/// Answers one client message; `false` ends the connection.
async fn on_message(socket: &mut WebSocket, stream: &Arc<UserStream>, message: Message) -> bool {
    let text = match message {
        Message::Text(text) => text,
        Message::Close(_) => return false,
        Message::Ping(_) | Message::Pong(_) => return true,
        Message::Binary(_) => {
            let reply = ServerFrame::error(None, ErrorCode::BinaryNotSupported, "text frames only");
            return send(socket, Message::Text(reply.to_text().into())).await;
        }
    };
    let (reply, run) = answer(stream, text.as_str());
    let sent = send(socket, Message::Text(reply.to_text().into())).await;
    // The run starts once its `run_accepted` is written, so that comes before its events.
    if let Some(run) = run {
        run.start();
    }
    sent
}

/// A synthetic run accepted and not yet started.
pub struct Run<S> {
    stream: Arc<S>,
    scope: RunScope,
    script: Vec<Step>,
    pause: Duration,
}

impl<S: Emit> Run<S> {
    /// Starts playing the run's script into its user's stream, on a task of its own.
    pub fn start(self) {
        tokio::spawn(play(self.stream, self.scope, self.script, self.pause));
    }
}

/// The answer to one client text frame of a user whose events go to `stream`, and the run a
/// `start_agent` accepted: the caller writes the answer, then starts the run.
pub fn answer<S: Emit>(stream: &Arc<S>, text: &str) -> (ServerFrame, Option<Run<S>>) {
    let reply = match parse_client_frame(text, AGENT) {
        Err(error) => ServerFrame::from(error),
        Ok(ClientFrame::Ping) => ServerFrame::Pong {
            server_time: Timestamp::now(),
        },
        Ok(ClientFrame::CancelRun { request_id, .. }) => ServerFrame::error(
            request_id,
            ErrorCode::RunNotFound,
            "the baseline does not cancel runs",
        ),
        Ok(ClientFrame::ResolveApproval { request_id, .. }) => ServerFrame::error(
            request_id,
            ErrorCode::ApprovalNotFound,
            "the baseline pauses no runs for approval",
        ),
        Ok(ClientFrame::StartAgent {
            request_id,
            payload,
        }) => return start(stream, request_id, &payload),
    };
    (reply, None)
}

/// Accepts a synthetic run: its `run_accepted` and the run, or the error.
fn start<S: Emit>(
    stream: &Arc<S>,
    request_id: Option<String>,
    payload: &StartAgent,
) -> (ServerFrame, Option<Run<S>>) {
    if payload.agent != AGENT {
        let refusal = ServerFrame::error(
            request_id,
            ErrorCode::UnknownAgent,
            format!("the baseline serves only the {AGENT} agent"),
        );
        return (refusal, None);
    }
    let input = payload.input.clone().map_or(Value::Null, Value::Object);
    let shape = match Shape::parse(&input.to_string()) {
        Ok(shape) => shape,
        Err(message) => {
            return (
                ServerFrame::error(request_id, ErrorCode::InvalidField, message),
                None,
            );
        }
    };
    let run_id = RunId::generate();
    let thread_id = ThreadId::generate();
    let scope = RunScope {
        run_id: run_id.clone(),
        parent_run_id: None,
        thread_id: thread_id.clone(),
        agent_name: Arc::from(AGENT),
    };
    let tag = run_id.as_str().trim_start_matches(RunId::PREFIX);
    let script = run_script(&shape, &payload.message, tag);
    let accepted = ServerFrame::RunAccepted {
        request_id,
        run_id,
        thread_id,
        queued: false,
        position: None,
        steered: false,
    };
    let run = Run {
        stream: Arc::clone(stream),
        scope,
        script,
        pause: shape.pause(),
    };
    (accepted, Some(run))
}

/// Emits the script's events into the user's stream, pausing where it says.
async fn play<S: Emit>(stream: Arc<S>, scope: RunScope, script: Vec<Step>, pause: Duration) {
    for step in script {
        match step {
            Step::Emit(kind) => stream.emit(scope.event(kind)),
            Step::Pause if !pause.is_zero() => tokio::time::sleep(pause).await,
            Step::Pause => {}
        }
    }
}

async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

async fn close(socket: &mut WebSocket, code: CloseCode) {
    let frame = CloseFrame {
        code: code.code(),
        reason: code.default_reason().into(),
    };
    let _sent = send(socket, Message::Close(Some(frame))).await;
}
