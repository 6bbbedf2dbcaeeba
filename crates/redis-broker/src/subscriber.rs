//! The node's live connection: subscribes to the channels of the users it holds
//! connections of, hands their frames to the bridge's listeners in seq order, and after
//! losing the connection reconnects with backoff, resubscribes, and fetches from the log
//! what it missed.
//!
//! Each followed user's [`Attached`] remembers the epoch and the last seq it delivered, so
//! a frame seen twice (a live one the log fetch already gave) is dropped, a gap is filled
//! from the log before the frame after it is delivered, and a new epoch or a gap the log can
//! no longer fill closes the user's connections here with
//! [`CloseReason::StreamReset`](ws_bridge::CloseReason::StreamReset).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use backon::BackoffBuilder;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use ws_bridge::Frame;
use ws_bridge::broker::{Epoch, StreamPosition};

use crate::attached::{Attached, Offer};
use crate::publisher::RETRY;
use crate::scripts::parse_live;
use crate::shared::Shared;

/// What the broker asks of the subscriber task.
pub(crate) enum Command {
    /// Subscribe to a user's channel; the reply says when Redis confirmed it.
    Subscribe {
        channel: String,
        reply: oneshot::Sender<redis::RedisResult<()>>,
    },
    /// Unsubscribe, unless the user was attached again since.
    Unsubscribe { channel: String },
    /// Fetch from the log what a user's listener missed.
    CatchUp { channel: String },
    /// Reply once every message Redis sent before this command was handed to listeners.
    Sync {
        reply: oneshot::Sender<redis::RedisResult<()>>,
    },
}

/// Fetches from the log what `attached`'s listener missed and delivers it; closes its
/// connections if the log cannot fill the gap. A Redis error leaves it for the next try.
async fn catch_up(shared: &Shared, attached: &Attached) {
    let Some((epoch, last_seq)) = attached.live_position() else {
        return;
    };
    let replay = match shared.replay(&attached.keys, &epoch, last_seq).await {
        Ok(replay) => replay,
        Err(error) => {
            tracing::warn!(%error, channel = %attached.keys.channel, "redis broker: cannot fetch missed frames yet");
            return;
        }
    };
    match replay.outcome {
        Ok(frames) => {
            for frame in &frames {
                if attached.offer(&epoch, frame) == Offer::Delivered {
                    shared
                        .stats
                        .frames_recovered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        Err(_) => reset(shared, attached, replay.position),
    }
}

/// Closes `attached`'s connections on this node and goes on from `position`, counted in
/// [`BrokerStats::stream_resets`](crate::shared::BrokerStats::stream_resets).
fn reset(shared: &Shared, attached: &Attached, position: StreamPosition) {
    shared
        .stats
        .stream_resets
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    attached.reset(position);
}

/// A live message: hands its frame to the user's listener, filling a gap from the log first.
async fn on_message(shared: &Shared, message: &redis::Msg) {
    let channel = message.get_channel_name();
    if channel == shared.node_channel {
        match crate::node_requests::parse_node_request(message.get_payload_bytes()) {
            Some(request) => {
                if let Some(requests) = &*shared.cancels.lock() {
                    let _ = requests.send(request);
                }
            }
            None => tracing::error!(
                "redis broker: a node message is neither `cancel\\n<user>\\n<run>` nor `steer\\n<json>`; ignored"
            ),
        }
        return;
    }
    let Some(attached) = shared.attached.lock().get(channel).cloned() else {
        return;
    };
    let Some((epoch, seq, text)) = parse_live(message.get_payload_bytes()) else {
        tracing::error!(%channel, "redis broker: a live message is not `<epoch>\\n<frame>`; ignored");
        return;
    };
    let epoch = Epoch::new(epoch);
    let frame = Arc::new(Frame {
        seq,
        text: Arc::from(text),
        published: std::time::Instant::now(),
    });
    if attached.offer(&epoch, &frame) == Offer::Gap {
        catch_up(shared, &attached).await;
        if attached.offer(&epoch, &frame) == Offer::Gap {
            let position = StreamPosition {
                epoch,
                last_seq: frame.seq,
            };
            reset(shared, &attached, position);
        }
    }
}

/// How long Redis has to confirm the live connection's subscriptions. Past it the connection
/// is dropped and opened again after a pause: a subscription Redis refuses (an ACL without
/// the channels, answered with NOPERM) is otherwise never confirmed at all.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Followed users whose missed frames are fetched at once after the live connection comes
/// back.
const CATCH_UP_AT_ONCE: usize = 64;

/// A live connection that lasted this long resets the reconnect pauses; one lost sooner is
/// reopened after the next pause.
const STABLE: Duration = Duration::from_secs(5);

/// Runs until the broker is dropped (its command sender closes). `live` are the clients it
/// may follow through (a cluster's seeds): the first, and the next one each time one fails.
pub(crate) async fn run(
    shared: Arc<Shared>,
    live: Vec<redis::Client>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    // The pauses between failed attempts, from the first failure to the next success.
    let mut retries = RETRY.build();
    let mut connected_before = false;
    let mut clients = live.iter().cycle();
    loop {
        let Some(client) = clients.next() else {
            tracing::error!("redis broker: no Redis to follow");
            return;
        };
        let (mut sink, mut stream) = match open(&shared, client).await {
            Ok(opened) => opened,
            Err(error) => {
                // A connection Redis refuses, or a SUBSCRIBE it refuses, is not tried again
                // at once.
                let pause = retries.next().unwrap_or(SUBSCRIBE_TIMEOUT);
                tracing::warn!(%error, ?pause, "redis broker: cannot open the live connection; retrying");
                if !wait_refusing(&mut commands, pause, &error.to_string()).await {
                    return;
                }
                continue;
            }
        };
        let connected_at = std::time::Instant::now();
        if connected_before {
            let followed: Vec<_> = shared.attached.lock().values().cloned().collect();
            tracing::info!(
                users = followed.len(),
                "redis broker: live connection back; fetching what was missed"
            );
            // Users apart at once (each user's own frames stay in order within its catch-up):
            // a Redis that answers slowly costs one timeout per batch, not one per user.
            futures::stream::iter(followed)
                .for_each_concurrent(CATCH_UP_AT_ONCE, |attached| {
                    let shared = &shared;
                    async move { catch_up(shared, &attached).await }
                })
                .await;
        }
        connected_before = true;
        shared.live_up.store(true, Ordering::Relaxed);
        if !follow(&shared, &mut sink, &mut stream, &mut commands).await {
            return;
        }
        shared.live_up.store(false, Ordering::Relaxed);
        shared
            .stats
            .subscriber_disconnects
            .fetch_add(1, Ordering::Relaxed);
        if connected_at.elapsed() < STABLE {
            // Lost again soon after it was made: wait the next pause before reconnecting, so
            // a Redis that accepts and drops connections is not hammered.
            let pause = retries.next().unwrap_or(SUBSCRIBE_TIMEOUT);
            tracing::warn!(
                ?pause,
                "redis broker: live connection lost again; reconnecting after a pause"
            );
            let why = "its live connection to Redis was lost; reconnecting";
            if !wait_refusing(&mut commands, pause, why).await {
                return;
            }
        } else {
            retries = RETRY.build();
            tracing::warn!("redis broker: live connection lost; reconnecting");
        }
    }
}

/// Opens a live connection subscribed to the node's channel and every followed user's.
async fn open(
    shared: &Shared,
    client: &redis::Client,
) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    let mut channels: Vec<String> = shared.attached.lock().keys().cloned().collect();
    channels.push(shared.node_channel.clone());
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
        sink.subscribe(&channels).await?;
        confirm_node_channel(shared, client).await
    })
    .await
    .unwrap_or_else(|_| Err(unconfirmed()))?;
    Ok((sink, stream))
}

/// Serves the broker's commands and Redis's messages on a live connection until it drops
/// (true) or the broker is dropped (false).
async fn follow(
    shared: &Shared,
    sink: &mut redis::aio::PubSubSink,
    stream: &mut redis::aio::PubSubStream,
    commands: &mut mpsc::UnboundedReceiver<Command>,
) -> bool {
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return false,
                Some(Command::Sync { reply }) => {
                    // Redis answers the ping after every message it sent before it.
                    let pong = sink.ping::<redis::Value>().await.map(drop);
                    while let Some(Some(message)) = stream.next().now_or_never() {
                        on_message(shared, &message).await;
                    }
                    let _ = reply.send(pong);
                }
                Some(command) => handle(shared, sink, command).await,
            },
            message = stream.next() => match message {
                Some(message) => on_message(shared, &message).await,
                None => return true,
            },
        }
    }
}

/// Checks that the live connection really follows this node's channel. The client library
/// reports a SUBSCRIBE that Redis refused (NOPERM: the node's Redis user lacks the channel
/// in its ACL) as done, so the count of the channel's subscribers, which only this node's
/// live connection subscribes, is asked on another connection to the same Redis (a
/// cluster's nodes count only their own subscribers).
async fn confirm_node_channel(shared: &Shared, client: &redis::Client) -> redis::RedisResult<()> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&shared.node_channel)
        .query_async(&mut conn)
        .await?;
    if counts.first().is_some_and(|(_, count)| *count > 0) {
        return Ok(());
    }
    tracing::warn!(channel = %shared.node_channel, "redis broker: SUBSCRIBE answered but the channel has no subscriber (NOPERM?)");
    Err(redis::RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
        "NOPERM",
        format!(
            "the node's Redis user needs &{}:* in its ACL",
            shared.prefix
        ),
    )))
}

/// The error of a SUBSCRIBE Redis did not confirm within [`SUBSCRIBE_TIMEOUT`].
fn unconfirmed() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Io,
        "Redis did not confirm the subscription",
        format!("no answer within {SUBSCRIBE_TIMEOUT:?}"),
    ))
}

async fn handle(shared: &Shared, sink: &mut redis::aio::PubSubSink, command: Command) {
    match command {
        Command::Subscribe { channel, reply } => {
            let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channel))
                .await
                .unwrap_or_else(|_| Err(unconfirmed()));
            let _ = reply.send(subscribed);
        }
        Command::Unsubscribe { channel } => {
            if !shared.attached.lock().contains_key(&channel)
                && let Err(error) = sink.unsubscribe(&channel).await
            {
                tracing::debug!(%error, %channel, "redis broker: unsubscribe failed (the connection is going)");
            }
        }
        Command::CatchUp { channel } => {
            let attached = shared.attached.lock().get(&channel).cloned();
            if let Some(attached) = attached {
                catch_up(shared, &attached).await;
            }
        }
        Command::Sync { reply } => {
            let _ = reply.send(sink.ping::<redis::Value>().await.map(drop));
        }
    }
}

/// Waits `pause` while disconnected, refusing subscriptions meanwhile (a connection that
/// cannot be followed is refused, not left without events). False when the broker is gone.
async fn wait_refusing(
    commands: &mut mpsc::UnboundedReceiver<Command>,
    pause: Duration,
    why: &str,
) -> bool {
    let sleep = tokio::time::sleep(pause);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return true,
            command = commands.recv() => match command {
                None => return false,
                Some(Command::Subscribe { reply, .. } | Command::Sync { reply }) => {
                    let _ = reply.send(Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "unavailable",
                        why.to_owned(),
                    ))));
                }
                // Resubscribing after the reconnect reads the attached set, and catches up.
                Some(Command::Unsubscribe { .. } | Command::CatchUp { .. }) => {}
            },
        }
    }
}

/// Keeps the streams of followed users from expiring while their connections are open and
/// idle: renews their keys' TTL every third of the replay age (at most every minute).
pub(crate) async fn renew_keys(shared: Weak<Shared>) {
    let every = match shared.upgrade() {
        Some(shared) => {
            (shared.bounds.max_age / 3).clamp(Duration::from_millis(5), Duration::from_secs(60))
        }
        None => return,
    };
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let ttl = i64::try_from(shared.ttl_ms()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        for attached in shared.attached.lock().values() {
            pipe.pexpire(&attached.keys.meta, ttl).ignore();
            pipe.pexpire(&attached.keys.log, ttl).ignore();
        }
        if pipe.is_empty() {
            continue;
        }
        if let Err(error) = pipe.query_async::<()>(&mut shared.conn.clone()).await {
            tracing::debug!(%error, "redis broker: cannot renew followed streams yet");
        }
    }
}
