//! The floor: the least a server on this box can do per event, to measure agent-server's
//! cost against. `loadgen floor-server` speaks the same wire as the baseline (the same
//! authentication, greeting, `run_accepted` and event frames of the same synthetic runs, so
//! loadgen verifies it the same way), but with no framework under it:
//!
//! - the HTTP upgrade is read and answered by hand ([`handshake`]), the WebSocket framing
//!   is the few lines the protocol's frames need ([`wire`]);
//! - an event is serialized once, straight behind room for its frame header, and the same
//!   bytes are written to each connection of its user from the task that emitted it, with
//!   one `write` each: no per-connection queue, no task switch, no copy ([`socket`]);
//! - each connection has one task, which reads the client's frames and writes only what a
//!   full socket buffer made wait.
//!
//! What it leaves out, because a server cannot do less per event: nothing. What it leaves out
//! that a real server needs (and agent-server and the baseline do): pings and the idle
//! timeout, per-message deflate, fragmented messages, a graceful close of slow consumers.

pub mod handshake;
pub mod socket;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use agent_protocol::{Epoch, ServerFrame, Timestamp};
use clap::Args;
use core_context::{ConnectionId, UserId};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::baseline::TokenCheck;
use handshake::Request;
use socket::{Conn, FloorStream, Users};

/// Flags of `loadgen floor-server`.
#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// HS256 secret the clients' tokens are signed with.
    #[arg(long, env = "LOADGEN_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

/// The floor's shared state.
struct Floor {
    tokens: TokenCheck,
    users: Users,
    epoch: Epoch,
}

/// `loadgen floor-server`: listens, prints its address and pid, serves until Ctrl-C or
/// SIGTERM.
pub async fn serve(args: FloorArgs) -> Result<(), String> {
    let floor = Arc::new(Floor {
        tokens: TokenCheck::new(&args.jwt_secret),
        users: Users::default(),
        epoch: Epoch::new(&format!("ep_floor_{}", std::process::id())),
    });
    let listener = crate::baseline::listen(args.addr, "floor-server").await?;
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    // As in agent-server: small frames leave at once.
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(connection(Arc::clone(&floor), tcp));
                }
                // Out of file descriptors and the like: the client sees its connect fail.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    };
    tokio::select! {
        () = accept => Ok(()),
        () = crate::baseline::shutdown_signal() => Ok(()),
    }
}

/// One accepted socket: the request head, then, for an upgrade, the WebSocket.
async fn connection(floor: Arc<Floor>, mut tcp: TcpStream) {
    let request = match handshake::read(&mut tcp, &floor.tokens).await {
        Ok(Some(request)) => request,
        Ok(None) | Err(_) => return,
    };
    let Request::Upgrade { user, key } = request else {
        let _answered = handshake::answer(&mut tcp, &request).await;
        return;
    };
    if tcp
        .write_all(handshake::switching(&key).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let tcp = Arc::new(tcp);
    let conn = Arc::new(Conn::new(Arc::clone(&tcp)));
    let stream = floor.users.of(&user);
    let key = stream.join(&conn, |last_seq| greeting(&floor, &user, last_seq));
    websocket(&tcp, &conn, &stream).await;
    conn.close();
    floor.users.leave(&user, key);
}

fn greeting(floor: &Floor, user: &UserId, last_seq: u64) -> ServerFrame {
    ServerFrame::ConnectionEstablished {
        connection_id: ConnectionId::generate(),
        user_id: user.clone(),
        epoch: floor.epoch.clone(),
        last_seq,
        server_time: Timestamp::now(),
        resume: None,
    }
}

/// Reads the client's frames and answers them, and writes what waits, until either side
/// ends the connection.
async fn websocket(tcp: &TcpStream, conn: &Conn, stream: &Arc<FloorStream>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            ready = tcp.readable() => {
                if ready.is_err() {
                    return;
                }
                let read = {
                    let mut chunk = [0u8; 4096];
                    match tcp.try_read(&mut chunk) {
                        Ok(0) => return,
                        Ok(n) => {
                            buf.extend_from_slice(&chunk[..n]);
                            true
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                        Err(_) => return,
                    }
                };
                if read && !frames(conn, stream, &mut buf) {
                    let _flushed = conn.flush().await;
                    return;
                }
            }
            () = conn.woken() => {
                if conn.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Handles every whole client frame in `buf` and keeps the rest; `false` ends the connection.
fn frames(conn: &Conn, stream: &Arc<FloorStream>, buf: &mut Vec<u8>) -> bool {
    let mut at = 0;
    let open = loop {
        match wire::parse_client(&mut buf[at..]) {
            Ok(Some(frame)) => {
                let payload = at + frame.payload.start..at + frame.payload.end;
                let open = socket::on_frame(conn, stream, frame.opcode, frame.fin, &buf[payload]);
                at += frame.len;
                if !open {
                    break false;
                }
            }
            Ok(None) => break true,
            Err(error) => {
                let _sent = conn.send(&wire::close(1002, &error.to_string()));
                break false;
            }
        }
    };
    buf.drain(..at);
    open
}
