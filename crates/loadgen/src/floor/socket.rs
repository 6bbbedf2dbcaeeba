//! The floor's sockets and users: a connection is its TCP stream and a buffer of what the
//! socket would not take yet; a user's stream numbers each event, encodes it once as a whole
//! WebSocket frame and writes it straight to every connection of the user from the task that
//! emitted it (one `write` per connection, no queue, no task switch). Only when a socket's
//! buffer is full do the bytes wait, in order, for the connection's task to write them.

use std::io::ErrorKind;
use std::sync::Arc;

use agent_protocol::{CloseCode, ErrorCode, ServerFrame};
use bytes::Bytes;
use core_context::{AgentEvent, SequencedEvent};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::wire::{self, HEADER_ROOM, Opcode};
use crate::baseline::connection::answer;
use crate::baseline::streams::{Emit, Joined, Streams};

/// Bytes a connection may have waiting for its socket before it is closed as a slow consumer
/// (agent-server's default send queue, 1 MiB, plus its headroom).
pub const MAX_PENDING: usize = (1 << 20) + 64 * 1024;

/// One open WebSocket.
#[derive(Debug)]
pub struct Conn {
    tcp: Arc<TcpStream>,
    out: Mutex<Pending>,
    /// Wakes the connection's task: bytes wait, or the connection is to close.
    wake: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Why the connection is to close (a slow consumer, a write error), once it is.
    closing: Option<CloseCode>,
}

impl Conn {
    /// A connection over `tcp`.
    pub fn new(tcp: Arc<TcpStream>) -> Self {
        Self {
            tcp,
            out: Mutex::new(Pending::default()),
            wake: Notify::new(),
        }
    }

    /// Writes `frame` after everything sent before it; `false` once the connection is
    /// closing (then nothing more is written).
    pub fn send(&self, frame: &[u8]) -> bool {
        let mut out = self.out.lock();
        if out.closing.is_some() {
            return false;
        }
        if !out.bytes.is_empty() {
            if out.bytes.len() + frame.len() > MAX_PENDING {
                out.closing = Some(CloseCode::SlowConsumer);
                self.wake.notify_one();
                return false;
            }
            out.bytes.extend_from_slice(frame);
            return true;
        }
        match self.tcp.try_write(frame) {
            Ok(n) if n == frame.len() => return true,
            Ok(n) => out.bytes.extend_from_slice(&frame[n..]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => out.bytes.extend_from_slice(frame),
            Err(_) => {
                out.closing = Some(CloseCode::Other(1006));
                self.wake.notify_one();
                return false;
            }
        }
        self.wake.notify_one();
        true
    }

    /// Writes what waits until nothing does; `Err` with the close code once the connection
    /// is to close.
    pub async fn flush(&self) -> Result<(), CloseCode> {
        loop {
            {
                let mut out = self.out.lock();
                if let Some(code) = out.closing {
                    return Err(code);
                }
                if out.bytes.is_empty() {
                    return Ok(());
                }
                match self.tcp.try_write(&out.bytes) {
                    Ok(n) => {
                        out.bytes.drain(..n);
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return Err(CloseCode::Other(1006)),
                }
            }
            if self.tcp.writable().await.is_err() {
                return Err(CloseCode::Other(1006));
            }
        }
    }

    /// Waits until bytes wait or the connection is to close.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Marks the connection closing; nothing more is written.
    pub fn close(&self) {
        self.out
            .lock()
            .closing
            .get_or_insert(CloseCode::Other(1000));
    }
}

/// A text frame carrying `frame`'s JSON.
pub fn text(frame: &ServerFrame) -> Vec<u8> {
    wire::frame(Opcode::Text, frame.to_text().as_bytes())
}

/// One user's stream.
#[derive(Debug, Default)]
pub struct FloorStream {
    inner: Mutex<StreamState>,
}

#[derive(Debug, Default)]
struct StreamState {
    seq: u64,
    next_key: u64,
    conns: Vec<(u64, Arc<Conn>)>,
}

impl FloorStream {
    /// Adds `conn`, first writing it the greeting `greet` makes of the stream's last `seq`
    /// (under the stream's lock, so no event can come before it); returns its key.
    pub fn join(&self, conn: &Arc<Conn>, greet: impl FnOnce(u64) -> ServerFrame) -> u64 {
        let mut state = self.inner.lock();
        conn.send(&text(&greet(state.seq)));
        state.next_key += 1;
        let key = state.next_key;
        state.conns.push((key, Arc::clone(conn)));
        key
    }
}

impl Joined for FloorStream {
    fn leave(&self, key: u64) -> bool {
        let mut state = self.inner.lock();
        state.conns.retain(|(k, _)| *k != key);
        state.conns.is_empty()
    }
}

impl Emit for FloorStream {
    /// Numbers `event`, encodes it once as a whole frame, writes it to every connection.
    fn emit(&self, event: AgentEvent) {
        let mut state = self.inner.lock();
        state.seq += 1;
        let event = SequencedEvent {
            seq: state.seq,
            event,
        };
        // The JSON is written after room for the frame's header, which goes in front of it.
        let mut bytes = vec![0u8; HEADER_ROOM];
        if serde_json::to_writer(&mut bytes, &event).is_err() {
            return;
        }
        let len = bytes.len() - HEADER_ROOM;
        let start = wire::header_into(&mut bytes[..HEADER_ROOM], Opcode::Text, len);
        let frame = Bytes::from(bytes).slice(start..);
        state.conns.retain(|(_, conn)| conn.send(&frame));
    }
}

/// Every user's stream, created on the user's first connection.
pub type Users = Streams<FloorStream>;

/// What the connection's reader does with one client frame: `false` ends the connection. A
/// run a `start_agent` accepted starts after its `run_accepted` is written, so that comes
/// first.
pub fn on_frame(
    conn: &Conn,
    stream: &Arc<FloorStream>,
    opcode: Opcode,
    fin: bool,
    payload: &[u8],
) -> bool {
    match opcode {
        Opcode::Text if fin => {
            let (reply, run) = match std::str::from_utf8(payload) {
                Ok(text) => answer(stream, text),
                Err(_) => (
                    ServerFrame::error(None, ErrorCode::InvalidJson, "the frame is not UTF-8"),
                    None,
                ),
            };
            let sent = conn.send(&text(&reply));
            if let Some(run) = run {
                run.start();
            }
            sent
        }
        Opcode::Binary => conn.send(&text(&ServerFrame::error(
            None,
            ErrorCode::BinaryNotSupported,
            "text frames only",
        ))),
        Opcode::Ping => conn.send(&wire::frame(Opcode::Pong, payload)),
        Opcode::Pong => true,
        Opcode::Close => {
            let _sent = conn.send(&wire::frame(Opcode::Close, payload.get(..2).unwrap_or(&[])));
            false
        }
        // The protocol's frames are small; a fragmented message is refused.
        Opcode::Text | Opcode::Continuation => {
            let _sent = conn.send(&wire::close(1003, "fragmented messages are not served"));
            false
        }
    }
}
