//! The node's live connection: subscribed to the node's own channels (its requests, its
//! events, and the announcements of streams that start), it hands the frames of the users the
//! node follows to the bridge's listeners in seq order, and after losing the connection
//! reconnects with backoff, follows its users again, and fetches from the log what it missed.
//!
//! A node follows a user by its entry in the user's stream meta (see `scripts`), which the
//! publish script reads: every batch reaches a node as one message on its events channel.
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
use crate::messages::{parse_events, parse_lease, parse_opened};
use crate::node_requests::NodeMessage;
use crate::publisher::RETRY;
use crate::shared::Shared;

/// What the broker asks of the subscriber task.
pub(crate) enum Command {
    /// Reply once the live connection is up (at once while it is; an error while it is being
    /// opened again after a failure): a user is followed only while frames can reach them.
    Live {
        reply: oneshot::Sender<redis::RedisResult<()>>,
    },
    /// Fetch from the log what a user's listener missed (by user id).
    CatchUp { user: String },
    /// Reply once every message Redis sent before this command was handed to listeners.
    Sync {
        reply: oneshot::Sender<redis::RedisResult<()>>,
    },
}

/// Fetches from the log what `attached`'s listener missed and delivers it; closes its
/// connections if the log cannot fill the gap. A Redis error leaves it for the next try, and
/// answers false.
async fn catch_up(shared: &Shared, attached: &Attached) -> bool {
    let Some((epoch, last_seq)) = attached.live_position() else {
        return true;
    };
    let replay = match shared.replay(&attached.keys, &epoch, last_seq).await {
        Ok(replay) => replay,
        Err(error) => {
            tracing::warn!(%error, user = %attached.user, "redis broker: cannot fetch missed frames yet");
            return false;
        }
    };
    match replay.outcome {
        Ok(frames) => {
            for frame in &frames {
                if attached.offer(&epoch, None, frame) == Offer::Delivered {
                    shared
                        .stats
                        .frames_recovered
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        Err(_) => reset(shared, attached, &epoch, replay.position),
    }
    true
}

/// Fetches what `attached`'s listener missed again a few times, with pauses, after Redis
/// failed the first try: a gap is filled once Redis answers, not closed for a passing error.
fn catch_up_later(shared: &Arc<Shared>, attached: Arc<Attached>) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut pauses = RETRY.build();
        for _ in 0..CATCH_UP_TRIES {
            tokio::time::sleep(pauses.next().unwrap_or(STABLE)).await;
            if catch_up(&shared, &attached).await {
                return;
            }
        }
    });
}

/// [`catch_up`], and when Redis failed it, [`catch_up_later`]; answers whether it went through.
async fn catch_up_or_later(shared: &Arc<Shared>, attached: Arc<Attached>) -> bool {
    if catch_up(shared, &attached).await {
        return true;
    }
    catch_up_later(shared, attached);
    false
}

/// How many times [`catch_up_later`] tries (the pauses grow to a second; the live
/// connection's own reconnect catches every user up after that).
const CATCH_UP_TRIES: u32 = 10;

/// Closes `attached`'s connections on this node and goes on from `position`, counted in
/// [`BrokerStats::stream_resets`](crate::shared::BrokerStats::stream_resets), unless its
/// delivery has left `from` (see [`Attached::reset`]).
fn reset(shared: &Shared, attached: &Attached, from: &Epoch, position: StreamPosition) {
    if attached.reset(from, position) {
        shared
            .stats
            .stream_resets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A message on one of the node's channels.
async fn on_message(shared: &Arc<Shared>, message: &redis::Msg) {
    let channel = message.get_channel_name();
    let payload = message.get_payload_bytes();
    let sequencer = shared.sequencer_channels.as_ref();
    if channel == shared.events_channel || sequencer.is_some_and(|(frames, _)| channel == *frames) {
        on_events(shared, payload).await;
    } else if sequencer.is_some_and(|(_, leases)| channel == *leases) {
        on_lease(shared, payload).await;
    } else if channel == shared.opened_channel {
        on_opened(shared, payload);
    } else if channel == shared.node_channel {
        if let Some(inbound) = crate::forwarded::parse(payload) {
            match (inbound, &shared.inbound) {
                (Ok(inbound), Some(publisher)) => {
                    let _ = publisher.send(inbound);
                }
                (Ok(_), None) => tracing::error!(
                    "redis broker: another node forwarded events here, but this node is not in the sequencer mode (every node must be); ignored"
                ),
                (Err(why), _) => {
                    tracing::error!(why, "redis broker: a node message is malformed; ignored");
                }
            }
            return;
        }
        match crate::node_requests::parse_node_message(payload) {
            Some(NodeMessage::Request(request)) => {
                if let Some(requests) = &*shared.cancels.lock() {
                    let _ = requests.send(request);
                }
            }
            Some(NodeMessage::SlotFreed(user, leases)) => shared.slot_waiters.wake(&user, &leases),
            None => tracing::error!(
                "redis broker: a node message is neither `cancel\\n<user>\\n<run>`, `steer\\n<json>` nor `slot\\n<user>\\n<lease>…`; ignored"
            ),
        }
    }
}

/// A batch of frames for the users this node follows: hands each to its user's listener,
/// filling a gap from the log first.
async fn on_events(shared: &Arc<Shared>, payload: &[u8]) {
    let Some(records) = parse_events(payload) else {
        // Its users' next frames find the gap and fetch these from the log.
        tracing::error!(
            "redis broker: an events message is not `<user>\\n<epoch>\\n<seq>\\n<event>` records; ignored"
        );
        return;
    };
    let followed: Vec<_> = {
        let attached = shared.attached.lock();
        records
            .into_iter()
            .filter_map(|record| Some((attached.get(record.user).cloned()?, record)))
            .collect()
    };
    let mut text = String::new();
    for (attached, record) in followed {
        let epoch = Epoch::new(record.epoch);
        record.write_frame(&mut text);
        let frame = Arc::new(Frame {
            seq: record.seq,
            text: Arc::from(text.as_str()),
            published: std::time::Instant::now(),
        });
        match attached.offer(&epoch, Some(record.lease), &frame) {
            Offer::Gap => {
                if !catch_up_or_later(shared, Arc::clone(&attached)).await {
                    // The frame is in the log (frames are sent once appended): it comes with
                    // the catch-up.
                    continue;
                }
                if attached.offer(&epoch, Some(record.lease), &frame) == Offer::Gap {
                    let position = StreamPosition {
                        epoch: epoch.clone(),
                        last_seq: frame.seq,
                    };
                    reset(shared, &attached, &epoch, position);
                }
            }
            // A stale holder's frame: the log has it if its write went through. Or a frame
            // of another epoch: the catch-up's replay finds the delivered one current (the
            // frame is a stale holder's, dropped) or resets to the stream as it stands (which
            // holds the frame).
            Offer::Stale | Offer::OtherEpoch => {
                catch_up_or_later(shared, attached).await;
            }
            Offer::Delivered | Offer::Duplicate | Offer::Waiting => {}
        }
    }
}

/// A lease of a stream was taken (sequencer mode): a follower of its user learns it (later
/// frames of older leases are stale), and fetches from the log what the old holder wrote
/// but did not send (it died, or its frames were dropped as stale).
async fn on_lease(shared: &Shared, payload: &[u8]) {
    let Some(taken) = parse_lease(payload) else {
        tracing::error!(
            "redis broker: a lease announcement is not `<user>\\n<epoch>\\n<lease>\\n<seq>`; ignored"
        );
        return;
    };
    let Some(attached) = shared.attached.lock().get(taken.user).cloned() else {
        return;
    };
    if attached.announce(&Epoch::new(taken.epoch), taken.lease, taken.last_seq) {
        catch_up(shared, &attached).await;
    }
}

/// A stream started: if this node follows its user on another epoch, the old stream was lost
/// (and this node's entry in the user's meta may have been lost with it), so it follows the
/// user again and catches up, which finds the new epoch. That is done on a task of its own:
/// a failover can reopen thousands of users' streams at once, and live frames keep flowing
/// meanwhile (a user's own frames and catch-up meet under its delivery lock).
fn on_opened(shared: &Arc<Shared>, payload: &[u8]) {
    let Some((user, epoch)) = parse_opened(payload) else {
        tracing::error!("redis broker: a stream announcement is not `<user>\\n<epoch>`; ignored");
        return;
    };
    let Some(attached) = shared.attached.lock().get(user).cloned() else {
        return;
    };
    if attached
        .live_position()
        .is_none_or(|(current, _)| current.as_str() == epoch)
    {
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        if let Err(error) = shared.follow(&attached).await {
            tracing::warn!(%error, user = %attached.user, "redis broker: cannot follow a user's new stream yet");
        }
        catch_up(&shared, &attached).await;
    });
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
            // Redis may have restarted without its data: the node's entries go back first,
            // so every frame after the catch-up reaches it live. Until they are back the
            // connection does not count as up.
            if let Err(error) = refollow(&shared, &followed).await {
                let pause = retries.next().unwrap_or(SUBSCRIBE_TIMEOUT);
                tracing::warn!(%error, ?pause, "redis broker: cannot follow the node's users again; reopening the live connection");
                drop((sink, stream));
                if !wait_refusing(&mut commands, pause, &error.to_string()).await {
                    return;
                }
                continue;
            }
            // Users apart at once (each user's own frames stay in order within its catch-up):
            // a Redis that answers slowly costs one timeout per batch, not one per user.
            futures::stream::iter(followed)
                .for_each_concurrent(CATCH_UP_AT_ONCE, |attached| {
                    let shared = &shared;
                    async move {
                        catch_up(shared, &attached).await;
                    }
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

/// Sets this node's entries in its followed users' nodes again (see [`Shared::renew`]): a
/// few tries, as the commands' connection may find Redis gone on its first try and reconnect.
async fn refollow(shared: &Shared, followed: &[Arc<Attached>]) -> redis::RedisResult<()> {
    let mut pauses = RETRY.build();
    let mut tries = 1;
    loop {
        match shared.renew(followed).await {
            Ok(_) => return Ok(()),
            Err(error) if tries >= REFOLLOW_TRIES => return Err(error),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(pauses.next().unwrap_or(STABLE)).await;
            }
        }
    }
}

/// How many times [`refollow`] tries.
const REFOLLOW_TRIES: u32 = 5;

/// Opens a live connection subscribed to the node's channels.
async fn open(
    shared: &Shared,
    client: &redis::Client,
) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
    let (mut sink, stream) = client.get_async_pubsub().await?.split();
    let mut channels = vec![
        &shared.node_channel,
        &shared.events_channel,
        &shared.opened_channel,
    ];
    if let Some((frames, leases)) = &shared.sequencer_channels {
        channels.extend([frames, leases]);
    }
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
    shared: &Arc<Shared>,
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

async fn handle(shared: &Arc<Shared>, sink: &mut redis::aio::PubSubSink, command: Command) {
    match command {
        Command::Live { reply } => {
            let _ = reply.send(Ok(()));
        }
        Command::CatchUp { user } => {
            let attached = shared.attached.lock().get(&user).cloned();
            if let Some(attached) = attached {
                catch_up_or_later(shared, attached).await;
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
                Some(Command::Live { reply } | Command::Sync { reply }) => {
                    let _ = reply.send(Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "unavailable",
                        why.to_owned(),
                    ))));
                }
                // The reconnect catches every followed user up.
                Some(Command::CatchUp { .. }) => {}
            },
        }
    }
}

/// Keeps the streams of followed users from expiring while their connections are open and
/// idle, and the node's entries in their nodes: renews them every third of the replay age (at
/// most every minute). A user whose entry was gone (their keys lost or evicted) is caught up.
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
        let followed: Vec<_> = shared.attached.lock().values().cloned().collect();
        if followed.is_empty() {
            continue;
        }
        match shared.renew(&followed).await {
            Ok(missing) => {
                for attached in missing {
                    catch_up(&shared, &attached).await;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "redis broker: cannot renew followed streams yet");
            }
        }
    }
}
