//! The bridge's connection queues, against every broker (`bridge::bridges`): a slow consumer
//! is closed without growing or hurting others, the per-user connection cap, one encoding
//! shared by a user's connections, idle eviction, and batches that keep order and arrive
//! before a shutdown's close.

use std::sync::Arc;
use std::time::Duration;

use core_context::EventSink;
use ws_bridge::{
    BridgeConfig, BridgeError, CloseReason, ResumeFailure, ResumeOutcome, ResumeRequest,
};

use crate::bridge::{bridges, read, sample_event};
use crate::support::user_id;

#[tokio::test]
async fn a_slow_consumer_is_closed_without_growing_or_hurting_others() {
    let config = BridgeConfig {
        send_queue_events: 16,
        send_queue_bytes: 64 * 1024,
        ..BridgeConfig::default()
    };
    let under_test = bridges(&config).await;
    for (broker, bridge) in under_test.each() {
        eprintln!("broker under test: {broker}");
        let (alice, bob) = (user_id("alice"), user_id("bob"));
        let stalled = bridge.subscribe(&alice, None).await.unwrap();
        let reader = bridge.subscribe(&bob, None).await.unwrap();
        for i in 0..100 {
            bridge.emit(&alice, sample_event()).unwrap();
            bridge.emit(&bob, sample_event()).unwrap();
            assert!(
                stalled.queued().0 <= 16,
                "the stalled queue grew to {:?}",
                stalled.queued()
            );
            if i % 10 == 9 {
                read(&reader, 10).await;
            }
        }
        assert_eq!(stalled.recv().await.unwrap_err(), CloseReason::SlowConsumer);
        assert_eq!(
            agent_server::wire::close_code(CloseReason::SlowConsumer).code(),
            4008
        );
        assert_eq!(bridge.connection_count(&alice), 0);
        assert_eq!(bridge.connection_count(&bob), 1);
        // The stalled client can resume and get everything the log kept.
        let again = bridge
            .subscribe(
                &alice,
                Some(&ResumeRequest {
                    epoch: stalled.epoch().clone(),
                    after_seq: 0,
                }),
            )
            .await
            .unwrap();
        assert_eq!(again.resume(), Some(&ResumeOutcome::Ok { replayed: 100 }));
    }

    // The byte bound applies too.
    let tight_config = BridgeConfig {
        send_queue_bytes: 1_000,
        ..BridgeConfig::default()
    };
    let alice = user_id("alice");
    let under_test = bridges(&tight_config).await;
    for (_, tight) in under_test.each() {
        let sub = tight.subscribe(&alice, None).await.unwrap();
        for _ in 0..10 {
            tight.emit(&alice, sample_event()).unwrap();
        }
        tight.flush().await.unwrap();
        assert!(sub.queued().1 <= 1_000);
        assert_eq!(tight.connection_count(&alice), 0);
    }
}

#[tokio::test]
async fn connection_cap_frame_sharing_eviction_and_shutdown() {
    let config = BridgeConfig {
        max_connections_per_user: 2,
        replay_max_age: Duration::from_millis(30),
        ..BridgeConfig::default()
    };
    let under_test = bridges(&config).await;
    for (broker, bridge) in under_test.each() {
        eprintln!("broker under test: {broker}");
        let alice = user_id("alice");
        let a = bridge.subscribe(&alice, None).await.unwrap();
        let b = bridge.subscribe(&alice, None).await.unwrap();
        assert_eq!(
            bridge.subscribe(&alice, None).await.unwrap_err(),
            BridgeError::TooManyConnections { max: 2 }
        );
        bridge.emit(&alice, sample_event()).unwrap();
        let (fa, fb) = (a.recv().await.unwrap(), b.recv().await.unwrap());
        assert!(Arc::ptr_eq(&fa, &fb), "the frame was encoded twice");

        bridge.emit(&alice, sample_event()).unwrap();
        bridge.flush().await.unwrap();
        bridge.close_all();
        // Frames queued before shutdown still arrive, then the close.
        assert_eq!(a.recv().await.unwrap().seq, 2);
        assert_eq!(a.recv().await.unwrap_err(), CloseReason::Shutdown);
        let epoch = a.epoch().clone();
        drop((a, b));

        tokio::time::sleep(Duration::from_millis(50)).await;
        // The in-process broker forgets the idle stream when asked; Redis has expired its
        // keys by itself (they live for the replay age after the last event).
        let evicted = if broker.starts_with("redis") { 0 } else { 1 };
        assert_eq!(bridge.evict_idle(), evicted);
        assert_eq!(bridge.user_count(), 0);
        // History is gone: a resume reports the epoch change instead of silently missing events.
        let c = bridge
            .subscribe(
                &alice,
                Some(&ResumeRequest {
                    epoch,
                    after_seq: 2,
                }),
            )
            .await
            .unwrap();
        assert_eq!(
            c.resume(),
            Some(&ResumeOutcome::Failed {
                reason: ResumeFailure::EpochChanged,
                oldest_seq: 1
            })
        );
        assert_eq!(c.last_seq(), 0);
    }
}

/// A writer that takes what is queued in batches (the server's connection loop) gets every
/// frame once, in seq order, never more than it asked for at a time, and still gets what was
/// queued before a shutdown ahead of the close.
#[tokio::test]
async fn batches_keep_order_and_deliver_before_the_close() {
    let under_test = bridges(&BridgeConfig::default()).await;
    for (broker, bridge) in under_test.each() {
        eprintln!("broker under test: {broker}");
        let alice = user_id("alice");
        let sub = bridge.subscribe(&alice, None).await.unwrap();
        for _ in 0..10 {
            bridge.emit(&alice, sample_event()).unwrap();
        }
        let mut batch = Vec::new();
        let mut seqs = Vec::new();
        while seqs.len() < 10 {
            sub.recv_batch(&mut batch, 4).await.unwrap();
            assert!((1..=4).contains(&batch.len()), "a batch of {}", batch.len());
            seqs.extend(batch.drain(..).map(|f| f.seq));
        }
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        assert_eq!(sub.queued(), (0, 0));

        // Everything queued joins one batch, up to the room asked for.
        for _ in 0..5 {
            bridge.emit(&alice, sample_event()).unwrap();
        }
        bridge.flush().await.unwrap();
        sub.recv_batch(&mut batch, 3).await.unwrap();
        assert_eq!(batch.len(), 3);
        sub.recv_batch(&mut batch, 64).await.unwrap();
        let seqs: Vec<u64> = batch.drain(..).map(|f| f.seq).collect();
        assert_eq!(seqs, [11, 12, 13, 14, 15]);

        bridge.emit(&alice, sample_event()).unwrap();
        bridge.emit(&alice, sample_event()).unwrap();
        bridge.flush().await.unwrap();
        bridge.close_all();
        sub.recv_batch(&mut batch, 64).await.unwrap();
        assert_eq!(batch.iter().map(|f| f.seq).collect::<Vec<_>>(), [16, 17]);
        batch.clear();
        assert_eq!(
            sub.recv_batch(&mut batch, 64).await.unwrap_err(),
            CloseReason::Shutdown
        );
    }
}
