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
                Offer::Gap | Offer::Stale
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
                    // The stream started again: this node's connections read a lost one.
                    self.listener.close(CloseReason::StreamReset);
                    *current = epoch.clone();
                    *last_seq = frame.seq;
                    *known = lease.unwrap_or(0);
                    self.listener.deliver(frame);
                    return Offer::Delivered;
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

    /// Gives up on the frames the listener missed: closes its connections and goes on from
    /// where the stream stands. The caller counts it (`BrokerStats::stream_resets`).
    pub(crate) fn reset(&self, position: StreamPosition) {
        tracing::warn!(user = %self.user, epoch = %position.epoch, last_seq = position.last_seq, "redis broker: a user's stream was lost; closing their connections here so they resume");
        self.listener.close(CloseReason::StreamReset);
        let mut delivery = self.delivery.lock();
        let lease = match &*delivery {
            Delivery::Live { epoch, lease, .. } if *epoch == position.epoch => *lease,
            _ => 0,
        };
        *delivery = Delivery::Live {
            epoch: position.epoch,
            last_seq: position.last_seq,
            lease,
        };
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
