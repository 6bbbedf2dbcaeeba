//! Per-user session rules: how often a user may start runs, which threads are theirs, and
//! which of their runs are active (so `cancel_run` finds only their own).
//!
//! **Architecture Invariant:** every entry is keyed by the authenticated user id, and every
//! map is bounded: threads per user (`--max-threads-per-user`, [`MAX_THREADS_PER_USER`] by
//! default, oldest forgotten first), and users with no active run are dropped by
//! [`Sessions::evict_idle`].

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use core_context::{RunId, ThreadId, UserId};
use execution_engine::UserExecutionEngine;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use parking_lot::Mutex;

/// Threads remembered per user (oldest forgotten first) unless `--max-threads-per-user`
/// says otherwise.
pub const MAX_THREADS_PER_USER: usize = 1_000;

/// Why a `start_agent` was refused before any engine was involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The user started too many runs lately.
    #[error(
        "start_agent is limited to {per_minute} per minute per user; retry in {retry_in_secs} s"
    )]
    RateLimited {
        /// The configured rate.
        per_minute: u32,
        /// Whole seconds until the next start is allowed.
        retry_in_secs: u64,
    },
    /// The thread is another user's (told apart from nothing else).
    #[error("no thread {0} for this user")]
    ThreadNotFound(ThreadId),
}

impl Refusal {
    /// The error code (`rate_limited`, `thread_not_found`).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::ThreadNotFound(_) => "thread_not_found",
        }
    }
}

/// One user's server-side state.
struct Session {
    runs: HashMap<RunId, UserExecutionEngine>,
    threads: VecDeque<ThreadId>,
    last_active: Instant,
}

impl Session {
    fn new() -> Self {
        Self {
            runs: HashMap::new(),
            threads: VecDeque::new(),
            last_active: Instant::now(),
        }
    }
}

struct Users {
    sessions: HashMap<UserId, Session>,
    thread_owner: HashMap<ThreadId, UserId>,
    /// Threads remembered per user; under the same lock as the threads it bounds.
    max_threads: usize,
}

/// All users' sessions on this node.
pub struct Sessions {
    users: Mutex<Users>,
    starts: DefaultKeyedRateLimiter<UserId>,
    starts_per_minute: u32,
    clock: DefaultClock,
}

impl Sessions {
    /// Sessions whose users may start `starts_per_minute` runs per minute (a burst of that
    /// many, refilled evenly over the minute), each remembering at most `max_threads` threads
    /// (at least one; a user past it forgets their oldest at their next new thread).
    pub fn new(starts_per_minute: NonZeroU32, max_threads: usize) -> Self {
        Self {
            users: Mutex::new(Users {
                sessions: HashMap::new(),
                thread_owner: HashMap::new(),
                max_threads: max_threads.max(1),
            }),
            starts: DefaultKeyedRateLimiter::keyed(Quota::per_minute(starts_per_minute)),
            starts_per_minute: starts_per_minute.get(),
            clock: DefaultClock::default(),
        }
    }

    /// Admits a run of `user`: counts it against the start rate, then claims `thread` (a new
    /// one when `None`) for the user. Returns the run's thread.
    pub fn admit(&self, user: &UserId, thread: Option<ThreadId>) -> Result<ThreadId, Refusal> {
        if let Err(not_until) = self.starts.check_key(user) {
            let wait = not_until.wait_time_from(self.clock.now());
            return Err(Refusal::RateLimited {
                per_minute: self.starts_per_minute,
                retry_in_secs: wait.as_secs_f64().ceil() as u64,
            });
        }
        let thread = thread.unwrap_or_else(ThreadId::generate);
        let mut guard = self.users.lock();
        let users = &mut *guard;
        let session = users
            .sessions
            .entry(user.clone())
            .or_insert_with(Session::new);
        session.last_active = Instant::now();
        match users.thread_owner.get(&thread) {
            Some(owner) if owner != user => return Err(Refusal::ThreadNotFound(thread)),
            Some(_) => {}
            None => {
                users.thread_owner.insert(thread.clone(), user.clone());
                session.threads.push_back(thread.clone());
                while session.threads.len() > users.max_threads {
                    if let Some(old) = session.threads.pop_front() {
                        users.thread_owner.remove(&old);
                    }
                }
            }
        }
        Ok(thread)
    }

    /// Records `run` of `user` as active on `engine`.
    pub fn track(&self, user: &UserId, run: RunId, engine: UserExecutionEngine) {
        // A resumed run may have no session on this node yet (its decision came over HTTP).
        let mut users = self.users.lock();
        let session = users
            .sessions
            .entry(user.clone())
            .or_insert_with(Session::new);
        session.runs.insert(run, engine);
    }

    /// Records that `run` of `user` ended.
    pub fn finished(&self, user: &UserId, run: &RunId) {
        if let Some(session) = self.users.lock().sessions.get_mut(user) {
            session.runs.remove(run);
            session.last_active = Instant::now();
        }
    }

    /// The engine of `user`'s active run `run`; `None` for a run that is another user's,
    /// finished or unknown alike.
    pub fn active_run(&self, user: &UserId, run: &RunId) -> Option<UserExecutionEngine> {
        self.users
            .lock()
            .sessions
            .get(user)
            .and_then(|s| s.runs.get(run).cloned())
    }

    /// Forgets users with no active run and no start for `idle` (their threads with them),
    /// and rate-limit states that have fully refilled.
    pub fn evict_idle(&self, idle: Duration) {
        let mut guard = self.users.lock();
        let users = &mut *guard;
        let owners = &mut users.thread_owner;
        users.sessions.retain(|_, s| {
            let keep = !s.runs.is_empty() || s.last_active.elapsed() < idle;
            if !keep {
                for thread in &s.threads {
                    owners.remove(thread);
                }
            }
            keep
        });
        drop(guard);
        self.starts.retain_recent();
        self.starts.shrink_to_fit();
    }

    /// Users with a session.
    pub fn user_count(&self) -> usize {
        self.users.lock().sessions.len()
    }

    /// How close users are to `limit` concurrent runs on this node.
    pub fn run_load(&self, limit: usize) -> RunLoad {
        let users = self.users.lock();
        let mut load = RunLoad::default();
        for session in users.sessions.values() {
            let runs = session.runs.len();
            load.users_with_runs += usize::from(runs > 0);
            load.users_at_limit += usize::from(runs > 0 && runs >= limit);
        }
        load
    }
}

/// See [`Sessions::run_load`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunLoad {
    /// Users with at least one active run.
    pub users_with_runs: usize,
    /// Users whose active runs reach the limit.
    pub users_at_limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn the_start_rate_is_per_user_and_says_when_to_retry() {
        let sessions = Sessions::new(NonZeroU32::new(3).unwrap(), MAX_THREADS_PER_USER);
        for _ in 0..3 {
            sessions.admit(&user("alice"), None).unwrap();
        }
        let refused = sessions.admit(&user("alice"), None).unwrap_err();
        assert_eq!(refused.code(), "rate_limited");
        let Refusal::RateLimited { retry_in_secs, .. } = refused else {
            panic!("{refused:?}")
        };
        // Three a minute refill one every 20 s.
        assert!((1..=20).contains(&retry_in_secs), "{retry_in_secs}");
        assert!(refused.to_string().contains("3 per minute per user"));
        sessions.admit(&user("bob"), None).unwrap();
    }

    /// With a cap of `max`, a user's `max` newest threads stay theirs and older ones are
    /// forgotten (another user may then take them).
    #[test]
    fn threads_per_user_are_capped_oldest_first() {
        for max in [1, 2, 5] {
            let sessions = Sessions::new(NonZeroU32::new(100).unwrap(), max);
            let threads: Vec<ThreadId> = (0..max + 2)
                .map(|_| sessions.admit(&user("alice"), None).unwrap())
                .collect();
            for (i, thread) in threads.iter().enumerate() {
                let forgotten = i < 2;
                let taken = sessions.admit(&user("bob"), Some(thread.clone()));
                assert_eq!(taken.is_ok(), forgotten, "cap {max}, thread {i}: {taken:?}");
            }
        }
    }

    #[test]
    fn threads_belong_to_one_user_and_idle_users_are_forgotten() {
        let sessions = Sessions::new(NonZeroU32::new(100).unwrap(), MAX_THREADS_PER_USER);
        let thread = sessions.admit(&user("alice"), None).unwrap();
        assert_eq!(
            sessions
                .admit(&user("alice"), Some(thread.clone()))
                .unwrap(),
            thread
        );
        assert_eq!(
            sessions.admit(&user("bob"), Some(thread.clone())),
            Err(Refusal::ThreadNotFound(thread.clone()))
        );
        sessions.evict_idle(Duration::ZERO);
        assert_eq!(sessions.user_count(), 0);
        // Once alice is forgotten, her thread is no longer hers.
        assert_eq!(
            sessions.admit(&user("bob"), Some(thread.clone())).unwrap(),
            thread
        );
    }
}
