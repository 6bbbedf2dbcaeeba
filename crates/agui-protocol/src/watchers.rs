//! Which runs the AG-UI responses of a node follow: a cut response's run waits (a grace) for
//! another response to take it up before it is cancelled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use core_context::{RunId, UserId};

/// The AG-UI responses of this node that follow each run, counted by user and run.
#[derive(Debug, Clone, Default)]
pub struct Watchers(Arc<Mutex<HashMap<(UserId, RunId), usize>>>);

impl Watchers {
    /// A response began to follow `user`'s run `run`.
    pub fn join(&self, user: &UserId, run: &RunId) {
        let mut watched = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *watched.entry((user.clone(), run.clone())).or_default() += 1;
    }

    /// A response of `user`'s run `run` ended.
    pub fn leave(&self, user: &UserId, run: &RunId) {
        let mut watched = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (user.clone(), run.clone());
        if let Some(count) = watched.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                watched.remove(&key);
            }
        }
    }

    /// Whether a response follows `user`'s run `run` now.
    pub fn watched(&self, user: &UserId, run: &RunId) -> bool {
        let watched = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        watched.contains_key(&(user.clone(), run.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_watched_while_one_of_its_responses_is_open() {
        let watchers = Watchers::default();
        let (user, run) = (UserId::parse("alice").unwrap(), RunId::generate());
        assert!(!watchers.watched(&user, &run));
        watchers.join(&user, &run);
        watchers.join(&user, &run);
        watchers.leave(&user, &run);
        assert!(watchers.watched(&user, &run));
        assert!(!watchers.watched(&UserId::parse("bobby").unwrap(), &run));
        watchers.leave(&user, &run);
        assert!(!watchers.watched(&user, &run));
    }
}
