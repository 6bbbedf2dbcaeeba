//! The connection loop: one task per WebSocket that both reads the client's frames and writes
//! the user's stream.
//!
//! Because one task does both, a reply (`run_accepted`) is always written before any event of
//! the run it accepted reaches that connection. Events come from the connection's bounded
//! bridge queue; a client that does not read is closed as a slow consumer by the bridge, and
//! a socket write that stalls longer than [`WRITE_TIMEOUT`] closes the connection too. A
//! client that floods (`--flood-burst` frames per `--flood-window-secs`), sends a message far
//! over the frame limit, or goes silent past the idle timeout is closed with a code that says
//! so.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent_protocol::{
    ClientFrame, CloseCode, ErrorCode, ResumeParams, ServerFrame, Timestamp, parse_client_frame,
};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use core_context::{ConnectionId, UserId};
use futures::SinkExt as _;
use governor::{DefaultDirectRateLimiter, Quota};
use secrets::{Scrubber, Site};

use crate::app::Live;
use crate::wire;
use server_metrics::Metrics;
use ws_bridge::Subscription;

/// A socket write that takes longer than this closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for the client's close reply.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Frames over this many times the frame limit close the connection (1009).
pub const ABUSIVE_FRAME_FACTOR: usize = 4;
/// Queued events written with one flush at the most: what queued up while the socket was
/// busy goes out in as few `send` calls as the socket's write buffer allows.
pub const MAX_BATCH: usize = 64;

/// Counts a connection as open while it lives.
struct OpenConnection<'a>(&'a AtomicUsize);

impl<'a> OpenConnection<'a> {
    fn count(open: &'a AtomicUsize) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the loop does after handling one message from the client.
enum Next {
    Continue,
    Stop,
}

/// Serves one authenticated WebSocket of `user` until either side ends it.
pub(crate) async fn serve(
    state: Live,
    user: UserId,
    resume: Option<ResumeParams>,
    mut socket: WebSocket,
) {
    let _open = OpenConnection::count(&state.open_connections);
    let Some(subscription) = join(&state, &user, resume, &mut socket).await else {
        return;
    };
    // Everything the connection logs, and every run it starts, is within this span.
    let span = tracing::info_span!(
        "connection",
        user = %run_service::user_tag(&user),
        connection_id = %subscription.connection_id(),
    );
    tracing::Instrument::instrument(stream(&state, &user, subscription, socket), span).await;
}

/// The connection's loop once it joined the stream: client frames in, the stream out.
async fn stream(state: &Live, user: &UserId, subscription: Subscription, mut socket: WebSocket) {
    let metrics = &state.metrics;
    // Frames after this seq are live; those up to it are the resume's replay.
    let live_after = subscription.last_seq();
    let connection_id = subscription.connection_id().clone();
    let opened = Instant::now();
    tracing::info!(resume = ?subscription.resume().map(wire::resume_status), "connection opened");
    let mut ended = "the client left";
    let mut client = ClientSide {
        state,
        user,
        connection_id: &connection_id,
        last_heard: Instant::now(),
        flood: flood_guard(state.config.flood_burst, state.config.flood_window),
        closed: None,
        write_failed: false,
    };
    let mut ping = tokio::time::interval(state.config.ping_interval);
    ping.tick().await;
    // Grows on the first event: an idle connection holds no batch buffer.
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            ready = subscription.recv_batch(&mut batch, MAX_BATCH) => match ready {
                Ok(()) => {
                    // Sent at once, with whatever queued behind it. Waiting a scheduling
                    // round for more (`yield_now`) saved sends but tripled p99 under load:
                    // see docs/performance.md.
                    if !send_batch(&mut socket, &mut batch, metrics, live_after).await {
                        client.write_failed = true;
                        break;
                    }
                }
                Err(reason) => {
                    let code = wire::close_code(reason);
                    close(&mut socket, code, code.default_reason()).await;
                    client.closed = Some(code);
                    ended = match code {
                        CloseCode::SlowConsumer => "closed as a slow consumer (4008)",
                        CloseCode::StreamReset => "closed: stream reset (4009)",
                        _ => "closed by the server (1001)",
                    };
                    break;
                }
            },
            message = socket.recv() => {
                if let Next::Stop = client.on_message(message, &mut socket).await {
                    break;
                }
            },
            _ = ping.tick() => {
                if client.last_heard.elapsed() > state.config.idle_timeout {
                    let code = CloseCode::IdleTimeout;
                    close(&mut socket, code, code.default_reason()).await;
                    client.closed = Some(code);
                    ended = "closed as idle (4000)";
                    break;
                }
                if !send(&mut socket, Message::Ping(Vec::new().into())).await {
                    client.write_failed = true;
                    break;
                }
            }
        }
    }
    metrics.connection_closed(client.closed, client.write_failed);
    tracing::info!(after = ?opened.elapsed(), how = ended, "connection closed");
}

/// Joins `user`'s stream (resuming if asked) and says so to the client with
/// `connection_established`; `None` when the connection ended instead.
async fn join(
    state: &Live,
    user: &UserId,
    resume: Option<ResumeParams>,
    socket: &mut WebSocket,
) -> Option<Subscription> {
    let resume = resume.as_ref().map(wire::resume_request);
    let subscription = match state.bridge.subscribe(user, resume.as_ref()).await {
        Ok(s) => s,
        Err(e) => {
            // A racing connection past the user's limit is a policy close (1008); a broker
            // that cannot follow the stream now (Redis down, or refusing) tells the client to
            // come back later (1013). A broker's error may quote its URL: the close reason
            // goes out scrubbed.
            let (code, reason) = wire::join_refused(&e);
            tracing::warn!(error = %e, code = code.code(), "cannot join the user's stream");
            let reason = state.config.scrubber.scrub(Site::Socket, &reason);
            close(socket, code, &reason).await;
            return None;
        }
    };
    let metrics = &state.metrics;
    metrics.connection_opened();
    if let Some(outcome) = subscription.resume() {
        metrics.resumed(outcome);
    }
    let established = ServerFrame::ConnectionEstablished {
        connection_id: subscription.connection_id().clone(),
        user_id: user.clone(),
        epoch: subscription.epoch().clone(),
        last_seq: subscription.last_seq(),
        server_time: Timestamp::now(),
        resume: subscription.resume().map(wire::resume_status),
    };
    if !send_frame(socket, &state.config.scrubber, &established).await {
        metrics.connection_closed(None, true);
        return None;
    }
    Some(subscription)
}

/// The per-connection limiter of client frames.
/// A burst of `limit` frames, refilled at `limit` per `window`.
fn flood_guard(limit: u32, window: Duration) -> DefaultDirectRateLimiter {
    let burst = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(window / burst.get())
        .map_or_else(|| Quota::per_second(burst), |q| q.allow_burst(burst));
    DefaultDirectRateLimiter::direct(quota)
}

/// The client's side of one connection: what it sent, and how the server answers.
struct ClientSide<'a> {
    state: &'a Live,
    user: &'a UserId,
    connection_id: &'a ConnectionId,
    last_heard: Instant,
    flood: DefaultDirectRateLimiter,
    /// How the server closed the connection, when it did.
    closed: Option<CloseCode>,
    /// Whether a write failed or stalled.
    write_failed: bool,
}

impl ClientSide<'_> {
    async fn on_message(
        &mut self,
        message: Option<Result<Message, axum::Error>>,
        socket: &mut WebSocket,
    ) -> Next {
        let message = match message {
            None => return Next::Stop,
            Some(Err(error)) => {
                if is_too_big(error) {
                    let limit = self.state.config.max_frame_bytes * ABUSIVE_FRAME_FACTOR;
                    let reason = format!("message over {limit} bytes");
                    close(socket, CloseCode::MessageTooBig, &reason).await;
                    self.closed = Some(CloseCode::MessageTooBig);
                }
                return Next::Stop;
            }
            Some(Ok(message)) => message,
        };
        self.last_heard = Instant::now();
        if self.flood.check().is_err() {
            let reason = "too many messages: slow down and reconnect";
            close(socket, CloseCode::PolicyViolation, reason).await;
            self.closed = Some(CloseCode::PolicyViolation);
            return Next::Stop;
        }
        let reply = match message {
            Message::Text(text) => self.on_text(text.as_str()).await,
            Message::Binary(_) => Some(ServerFrame::error(
                None,
                ErrorCode::BinaryNotSupported,
                "binary frames are not part of the protocol; send JSON text frames",
            )),
            Message::Ping(_) | Message::Pong(_) => None,
            Message::Close(_) => return Next::Stop,
        };
        if let Some(ServerFrame::Error { code, .. }) = &reply {
            self.state.metrics.refused(code);
        }
        match reply {
            Some(reply) if !send_frame(socket, &self.state.config.scrubber, &reply).await => {
                self.write_failed = true;
                Next::Stop
            }
            _ => Next::Continue,
        }
    }

    async fn on_text(&self, text: &str) -> Option<ServerFrame> {
        let limit = self.state.config.max_frame_bytes;
        if text.len() > limit {
            return Some(ServerFrame::error(
                None,
                ErrorCode::FrameTooLarge,
                format!("the frame is {} bytes; the limit is {limit}", text.len()),
            ));
        }
        match parse_client_frame(text, &self.state.config.default_agent) {
            Err(error) => Some(error.into()),
            Ok(ClientFrame::Ping) => Some(ServerFrame::Pong {
                server_time: Timestamp::now(),
            }),
            Ok(ClientFrame::CancelRun {
                request_id,
                payload,
            }) => {
                // No reply on success: the run's `agent_cancelled` event is the answer.
                // Boxed, like `start`: an idle connection's task does not carry their state.
                let cancelled = Box::pin(self.state.runs.cancel(self.user, &payload.run_id)).await;
                cancelled
                    .err()
                    .map(|refusal| wire::refused(request_id, refusal))
            }
            Ok(ClientFrame::ResolveApproval {
                request_id,
                payload,
            }) => {
                // No reply on success: the run's `approval_resolved` event is the answer,
                // on every connection of the user.
                let resolved = Box::pin(self.state.runs.resolve_approval(
                    self.user,
                    &payload.run_id,
                    &payload.tool_call_id,
                    payload.decision,
                ))
                .await;
                resolved
                    .err()
                    .map(|refusal| wire::refused(request_id, refusal))
            }
            Ok(ClientFrame::StartAgent {
                request_id,
                payload,
            }) => {
                let request = wire::run_request(payload, request_id.clone());
                Some(
                    // Boxed: starting a run (the thread's history, the slot's claim) is a
                    // large future, and every idle connection's task would carry its size.
                    match Box::pin(
                        self.state
                            .runs
                            .start(self.user, self.connection_id, request),
                    )
                    .await
                    {
                        Ok(accepted) => ServerFrame::RunAccepted {
                            request_id,
                            run_id: accepted.run_id,
                            thread_id: accepted.thread_id,
                            queued: accepted.queued.is_some(),
                            position: accepted.queued.map(|ahead| ahead as u64 + 1),
                            steered: accepted.steered,
                        },
                        Err(refusal) => wire::refused(request_id, refusal),
                    },
                )
            }
        }
    }
}

async fn send(socket: &mut WebSocket, message: Message) -> bool {
    within_write_timeout(socket.send(message)).await
}

/// Whether `write` succeeded within [`WRITE_TIMEOUT`]. The timer is armed only when the
/// first poll did not finish the write (a socket with room for it finishes it at once), so
/// the usual write registers no timer.
async fn within_write_timeout<E>(write: impl Future<Output = Result<(), E>>) -> bool {
    let mut write = std::pin::pin!(write);
    match futures::poll!(write.as_mut()) {
        std::task::Poll::Ready(written) => written.is_ok(),
        std::task::Poll::Pending => {
            matches!(tokio::time::timeout(WRITE_TIMEOUT, write).await, Ok(Ok(())))
        }
    }
}

/// Writes `batch` (emptying it) with one flush at the end, all within [`WRITE_TIMEOUT`],
/// and counts it (frames after `live_after` towards the emit-to-send latency).
async fn send_batch(
    socket: &mut WebSocket,
    batch: &mut Vec<Arc<ws_bridge::Frame>>,
    metrics: &Metrics,
    live_after: u64,
) -> bool {
    let write = async {
        for frame in batch.iter() {
            socket
                .feed(Message::Text(wire::shared_text(&frame.text)))
                .await?;
        }
        socket.flush().await
    };
    let written = within_write_timeout(write).await;
    if written {
        let live = batch.iter().filter(|f| f.seq > live_after);
        metrics.delivered(batch.len(), live.map(|f| f.published));
    }
    batch.clear();
    written
}

/// Sends a frame that is not an event (events were scrubbed when emitted), scrubbed of the
/// server's secrets: an error's message may quote a failing service's own words.
async fn send_frame(socket: &mut WebSocket, scrubber: &Scrubber, frame: &ServerFrame) -> bool {
    let mut text = frame.to_text();
    scrubber.scrub_string(Site::Socket, &mut text);
    send(socket, Message::Text(text.into())).await
}

/// The longest close reason a close frame can carry, in bytes.
const MAX_CLOSE_REASON: usize = 123;

/// Sends a close frame and waits (up to [`CLOSE_LINGER`]) for the client's close reply, as
/// RFC 6455 asks: dropping the socket at once would reset the connection under a client that
/// is still answering pings, and it would never see the close code.
async fn close(socket: &mut WebSocket, code: CloseCode, reason: &str) {
    // A close frame is a control frame: 125 bytes at most, 2 of them the code.
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code: code.code(),
        reason: reason[..end].into(),
    };
    if !send(socket, Message::Close(Some(frame))).await {
        return;
    }
    let _lingered = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Whether a read failed because the client sent a message over the size limit.
fn is_too_big(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = error.into_inner();
    matches!(inner.downcast_ref::<WsError>(), Some(WsError::Capacity(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FLOOD_LIMIT, FLOOD_WINDOW};

    #[test]
    fn the_flood_guard_allows_a_burst_of_the_limit_then_refuses() {
        for limit in [FLOOD_LIMIT, 1, 7] {
            let guard = flood_guard(limit, FLOOD_WINDOW);
            for i in 0..limit {
                assert!(guard.check().is_ok(), "frame {i} of {limit} refused");
            }
            assert!(guard.check().is_err(), "frame {limit} of {limit} allowed");
        }
    }
}
