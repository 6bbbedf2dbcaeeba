//! One user this node follows ([`Attached`]): the bridge's listener for that user on this
//! node, and where its delivery stands ([`Delivery`]), so the subscriber hands it each
//! frame once and in seq order ([`Offer`] says what became of a frame).
//!
//! It knows the stream's keys and the listener only: reading the log to fill a gap, and
//! counting resets, are the subscriber's, so this module imports no task module and not
//! `shared`.

use std::sync::Arc;

use core_context::UserId;
use parking_lot::Mutex;
use ws_bridge::broker::{AttachmentId, Epoch, FrameListener, StreamPosition};
use ws_bridge::{CloseReason, Frame};

use crate::scripts::StreamKeys;

/// Where a followed user's delivery stands.
enum Delivery {
    /// Subscribed, position not read yet: frames wait here (with the lease each was written
    /// under, `None` for frames read from the log), and the latest lease announced.
    Joining {
        waiting: Vec<(Epoch, Option<u64>, Arc<Frame>)>,
        announced: Option<(Epoch, u64, u64)>,
    },
    /// Delivering: the epoch, the last seq handed to the listener, and (sequencer mode) the
    /// latest lease of the stream seen: a live frame of an older one is a stale holder's.
    Live {
        epoch: Epoch,
        last_seq: u64,
        lease: u64,
    },
}

/// What to do with one frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Delivered,
    Duplicate,
    /// Frames between the last delivered and this one are missing.
    Gap,
    Waiting,
    /// Written under a lease the stream has left (sequencer mode): dropped; what the log
    /// holds of it comes with a catch-up.
    Stale,
    /// A live frame of another epoch than the one delivered: not delivered. Either the stream
    /// started again, or the frame is a stale holder's of an epoch that ended (sequencer
    /// mode: its transaction's append was refused, its frames went out). Epochs have no
    /// order, so only Redis can tell: the caller catches up, whose replay either finds the
    /// delivered epoch current (the frame was stale) or resets to the stream as it stands.
    OtherEpoch,
}

/// One user this node follows.
pub(crate) struct Attached {
    pub(crate) user: UserId,
    pub(crate) keys: StreamKeys,
    pub(crate) id: AttachmentId,
    listener: Arc<dyn FrameListener>,
    delivery: Mutex<Delivery>,
}

impl Attached {
    pub(crate) fn new(
        user: UserId,
        keys: StreamKeys,
        id: AttachmentId,
        listener: Arc<dyn FrameListener>,
    ) -> Self {
        Self {
            user,
            keys,
            id,
            listener,
            delivery: Mutex::new(Delivery::Joining {
                waiting: Vec::new(),
                announced: None,
            }),
        }
    }

    /// Starts delivering after `position` (`lease`: the stream's lease then, 0 outside the
    /// sequencer mode), with the frames that came while joining. Returns whether frames are
    /// missing (the caller asks for a catch-up).
    pub(crate) fn go_live(&self, position: &StreamPosition, lease: u64) -> bool {
        let mut delivery = self.delivery.lock();
        let live = Delivery::Live {
            epoch: position.epoch.clone(),
            last_seq: position.last_seq,
            lease,
        };
        let (waiting, announced) = match std::mem::replace(&mut *delivery, live) {
            Delivery::Joining { waiting, announced } => (waiting, announced),
            live @ Delivery::Live { .. } => {
                *delivery = live;
                return false;
            }
        };
        let mut gap = false;
        if let Some((epoch, lease, last_seq)) = announced {
            gap |= Self::announce_locked(&mut delivery, &epoch, lease, last_seq);
        }
        for (epoch, lease, frame) in waiting {
            gap |= matches!(
                self.offer_locked(&mut delivery, &epoch, lease, &frame),
                Offer::Gap | Offer::Stale | Offer::OtherEpoch
            );
        }
        gap
    }

    /// Offers a frame: `lease` the one it was written under (a live frame), `None` for one
    /// read from the log.
    pub(crate) fn offer(&self, epoch: &Epoch, lease: Option<u64>, frame: &Arc<Frame>) -> Offer {
        self.offer_locked(&mut self.delivery.lock(), epoch, lease, frame)
    }

    /// A lease of the stream was taken after `last_seq` (sequencer mode): live frames of
    /// older leases are stale from now on. Returns whether frames before it are missing
    /// here (the caller asks for a catch-up).
    pub(crate) fn announce(&self, epoch: &Epoch, lease: u64, last_seq: u64) -> bool {
        let mut delivery = self.delivery.lock();
        if let Delivery::Joining { announced, .. } = &mut *delivery {
            if announced
                .as_ref()
                .is_none_or(|(_, known, _)| *known < lease)
            {
                *announced = Some((epoch.clone(), lease, last_seq));
            }
            return false;
        }
        Self::announce_locked(&mut delivery, epoch, lease, last_seq)
    }

    fn announce_locked(delivery: &mut Delivery, epoch: &Epoch, lease: u64, last: u64) -> bool {
        match delivery {
            Delivery::Live {
                epoch: current,
                last_seq,
                lease: known,
            } if current == epoch => {
                *known = (*known).max(lease);
                *last_seq < last
            }
            _ => false,
        }
    }

    /// Delivers `frame` if it is the next one; the lock is held while the listener takes it,
    /// which keeps one user's frames in order and never concurrent.
    fn offer_locked(
        &self,
        delivery: &mut Delivery,
        epoch: &Epoch,
        lease: Option<u64>,
        frame: &Arc<Frame>,
    ) -> Offer {
        match delivery {
            Delivery::Joining { waiting, .. } => {
                waiting.push((epoch.clone(), lease, Arc::clone(frame)));
                Offer::Waiting
            }
            Delivery::Live {
                epoch: current,
                last_seq,
                lease: known,
            } => {
                if epoch != current {
                    return match lease {
                        // Read from the log of an epoch the delivery has left (a catch-up
                        // that began before the delivery was reset to the new stream): stale.
                        None => Offer::Duplicate,
                        Some(_) => Offer::OtherEpoch,
                    };
                }
                if let Some(lease) = lease {
                    if lease < *known {
                        return Offer::Stale;
                    }
                    *known = lease;
                }
                if frame.seq <= *last_seq {
                    Offer::Duplicate
                } else if frame.seq == *last_seq + 1 {
                    *last_seq = frame.seq;
                    self.listener.deliver(frame);
                    Offer::Delivered
                } else {
                    Offer::Gap
                }
            }
        }
    }

    /// Gives up on the frames the listener missed since `from` (the epoch it was delivering
    /// when the caller read the log): closes its connections and goes on from where the
    /// stream stands. Answers false, and does nothing, when the delivery has left `from`
    /// meanwhile: whoever moved it to another epoch closed those connections then, and the
    /// connections opened since are on the stream as it is. The caller counts a reset
    /// (`BrokerStats::stream_resets`).
    pub(crate) fn reset(&self, from: &Epoch, position: StreamPosition) -> bool {
        let mut delivery = self.delivery.lock();
        let Delivery::Live { epoch, lease, .. } = &*delivery else {
            return false;
        };
        if epoch != from {
            return false;
        }
        tracing::warn!(user = %self.user, epoch = %position.epoch, last_seq = position.last_seq, "redis broker: a user's stream was lost; closing their connections here so they resume");
        self.listener.close(CloseReason::StreamReset);
        let lease = if *epoch == position.epoch { *lease } else { 0 };
        *delivery = Delivery::Live {
            epoch: position.epoch,
            last_seq: position.last_seq,
            lease,
        };
        true
    }

    pub(crate) fn live_position(&self) -> Option<(Epoch, u64)> {
        match &*self.delivery.lock() {
            Delivery::Live {
                epoch, last_seq, ..
            } => Some((epoch.clone(), *last_seq)),
            Delivery::Joining { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// What a listener was handed: delivered seqs and closes.
    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl FrameListener for Seen {
        fn deliver(&self, frame: &Arc<Frame>) {
            self.0.lock().push(format!("{}", frame.seq));
        }

        fn close(&self, reason: CloseReason) {
            self.0.lock().push(format!("close {reason:?}"));
        }
    }

    fn frame(seq: u64) -> Arc<Frame> {
        Arc::new(Frame {
            seq,
            text: Arc::from("{}"),
            published: Instant::now(),
        })
    }

    /// Followed on `old` after seq 3.
    fn live_on(old: &Epoch) -> (Attached, Arc<Seen>) {
        let user = UserId::parse("frank").expect("valid");
        let seen = Arc::new(Seen::default());
        let listener: Arc<dyn FrameListener> = Arc::clone(&seen) as _;
        let keys = StreamKeys::new("agentws", &user);
        let attached = Attached::new(user, keys, AttachmentId::new(1), listener);
        let position = StreamPosition {
            epoch: old.clone(),
            last_seq: 3,
        };
        assert!(!attached.go_live(&position, 0));
        (attached, seen)
    }

    /// A catch-up that read the log of the old epoch answers after another catch-up moved
    /// the delivery on to the new stream (and closed the connections then): the connections
    /// opened since on the new stream are neither closed again nor handed the old log.
    #[test]
    fn a_catch_up_of_an_epoch_the_delivery_left_neither_resets_nor_delivers() {
        let (old, new) = (Epoch::new("old"), Epoch::new("new"));
        let (attached, seen) = live_on(&old);
        let lost = StreamPosition {
            epoch: new.clone(),
            last_seq: 1,
        };
        assert!(attached.reset(&old, lost.clone()), "the first catch-up");
        assert!(
            !attached.reset(&old, lost),
            "the old epoch's other catch-up"
        );
        assert_eq!(attached.offer(&old, None, &frame(4)), Offer::Duplicate);
        assert_eq!(attached.offer(&new, Some(0), &frame(2)), Offer::Delivered);
        assert_eq!(*seen.0.lock(), ["close StreamReset", "2"]);
        assert_eq!(attached.live_position(), Some((new, 2)));
    }

    /// A live frame of another epoch is not delivered, whichever epoch is the newer: a
    /// stale holder's frames of an epoch that ended (its append refused, its frames sent in
    /// the same transaction) must not take the delivery back to it. The caller catches up.
    #[test]
    fn a_live_frame_of_another_epoch_is_left_to_a_catch_up() {
        let (old, new) = (Epoch::new("old"), Epoch::new("new"));
        let (attached, seen) = live_on(&new);
        assert_eq!(
            attached.offer(&old, Some(7), &frame(105)),
            Offer::OtherEpoch
        );
        assert_eq!(attached.offer(&new, Some(0), &frame(4)), Offer::Delivered);
        assert_eq!(*seen.0.lock(), ["4"]);
        assert_eq!(attached.live_position(), Some((new, 4)));
    }

    /// A catch-up that finds its own epoch lost closes the connections once and goes on
    /// from the new stream's position.
    #[test]
    fn a_catch_up_of_the_epoch_delivered_resets_it() {
        let (old, new) = (Epoch::new("old"), Epoch::new("new"));
        let (attached, seen) = live_on(&old);
        let lost = StreamPosition {
            epoch: new.clone(),
            last_seq: 5,
        };
        assert!(attached.reset(&old, lost));
        assert_eq!(attached.offer(&new, Some(0), &frame(6)), Offer::Delivered);
        assert_eq!(*seen.0.lock(), ["close StreamReset", "6"]);
    }
}
