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
    /// Subscribed, position not read yet: frames wait here.
    Joining(Vec<(Epoch, Arc<Frame>)>),
    /// Delivering: the epoch and the last seq handed to the listener.
    Live { epoch: Epoch, last_seq: u64 },
}

/// What to do with one frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Delivered,
    Duplicate,
    /// Frames between the last delivered and this one are missing.
    Gap,
    Waiting,
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
            delivery: Mutex::new(Delivery::Joining(Vec::new())),
        }
    }

    /// Starts delivering after `position`, with the frames that came while joining. Returns
    /// whether frames are missing (the caller asks for a catch-up).
    pub(crate) fn go_live(&self, position: &StreamPosition) -> bool {
        let mut delivery = self.delivery.lock();
        let waiting = match std::mem::replace(
            &mut *delivery,
            Delivery::Live {
                epoch: position.epoch.clone(),
                last_seq: position.last_seq,
            },
        ) {
            Delivery::Joining(waiting) => waiting,
            live @ Delivery::Live { .. } => {
                *delivery = live;
                return false;
            }
        };
        let mut gap = false;
        for (epoch, frame) in waiting {
            gap |= self.offer_locked(&mut delivery, &epoch, &frame) == Offer::Gap;
        }
        gap
    }

    pub(crate) fn offer(&self, epoch: &Epoch, frame: &Arc<Frame>) -> Offer {
        self.offer_locked(&mut self.delivery.lock(), epoch, frame)
    }

    /// Delivers `frame` if it is the next one; the lock is held while the listener takes it,
    /// which keeps one user's frames in order and never concurrent.
    fn offer_locked(&self, delivery: &mut Delivery, epoch: &Epoch, frame: &Arc<Frame>) -> Offer {
        match delivery {
            Delivery::Joining(waiting) => {
                waiting.push((epoch.clone(), Arc::clone(frame)));
                Offer::Waiting
            }
            Delivery::Live {
                epoch: current,
                last_seq,
            } => {
                if epoch != current {
                    // The stream started again: this node's connections read a lost one.
                    self.listener.close(CloseReason::StreamReset);
                    *current = epoch.clone();
                    *last_seq = frame.seq;
                    self.listener.deliver(frame);
                    return Offer::Delivered;
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

    /// Gives up on the frames the listener missed: closes its connections and goes on from
    /// where the stream stands. The caller counts it (`BrokerStats::stream_resets`).
    pub(crate) fn reset(&self, position: StreamPosition) {
        tracing::warn!(user = %self.user, epoch = %position.epoch, last_seq = position.last_seq, "redis broker: a user's stream was lost; closing their connections here so they resume");
        self.listener.close(CloseReason::StreamReset);
        *self.delivery.lock() = Delivery::Live {
            epoch: position.epoch,
            last_seq: position.last_seq,
        };
    }

    pub(crate) fn live_position(&self) -> Option<(Epoch, u64)> {
        match &*self.delivery.lock() {
            Delivery::Live { epoch, last_seq } => Some((epoch.clone(), *last_seq)),
            Delivery::Joining(_) => None,
        }
    }
}
