//! Script calls made at once: a batch's or a renewal's items grouped in calls (one per slot
//! of a Redis Cluster, of at most so many items each), and calls that stand alone answered
//! by a deadline.

use redis::RedisResult;

/// Script calls in flight at once on a Redis Cluster (one per slot of a batch: the
/// publisher's, the followed users' renewals). Run-lease renewals go all at once instead
/// ([`answers_by`]).
pub(crate) const CALLS_AT_ONCE: usize = 32;

/// What [`answers_by`] heard by its deadline.
#[derive(Debug)]
pub(crate) struct Heard<T> {
    /// The answers of the calls that went through, in the order they came.
    pub(crate) answers: Vec<T>,
    /// How many calls failed, and the last error.
    pub(crate) failed: usize,
    pub(crate) error: Option<redis::RedisError>,
    /// How many calls were still out at the deadline: they go on, each on its task.
    pub(crate) late: usize,
}

impl<T> Heard<T> {
    /// The answers, `Err` only when none came: the last error, or a timeout when every call
    /// was late. Calls that failed or were late beside answers are logged as `what`.
    pub(crate) fn answers(self, what: &str) -> RedisResult<Vec<T>> {
        let (failed, late) = (self.failed, self.late);
        if failed + late == 0 {
            return Ok(self.answers);
        }
        if self.answers.is_empty() {
            return Err(self.error.unwrap_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "no answer by the deadline",
                    format!("{late} calls"),
                ))
            }));
        }
        let through = self.answers.len();
        let error = self.error.map(|e| e.to_string()).unwrap_or_default();
        tracing::warn!(through, failed, late, %error, "redis broker: part of the {what} did not go through by its deadline (part of the cluster does not answer); the others did");
        Ok(self.answers)
    }
}

/// Makes `calls` all at once, each on a task of its own, and returns what was heard by
/// `deadline`. For calls that stand alone (renewals, one per slot on a Redis Cluster): a
/// master that does not answer holds up neither the other masters' calls nor the caller past
/// its deadline, and a call is never dropped once sent (a late answer is still handled by
/// its call: a renewal's taken runs are ended all the same).
pub(crate) async fn answers_by<T, F>(
    calls: impl IntoIterator<Item = F>,
    deadline: tokio::time::Instant,
) -> Heard<T>
where
    T: Send + 'static,
    F: Future<Output = RedisResult<T>> + Send + 'static,
{
    use futures::StreamExt;
    let mut out: futures::stream::FuturesUnordered<_> =
        calls.into_iter().map(tokio::spawn).collect();
    let mut heard = Heard {
        answers: Vec::with_capacity(out.len()),
        failed: 0,
        error: None,
        late: 0,
    };
    loop {
        match tokio::time::timeout_at(deadline, out.next()).await {
            Ok(None) => return heard,
            Err(_) => {
                heard.late = out.len();
                return heard;
            }
            Ok(Some(Ok(Ok(answer)))) => heard.answers.push(answer),
            Ok(Some(Ok(Err(error)))) => {
                heard.failed += 1;
                heard.error = Some(error);
            }
            Ok(Some(Err(panicked))) => {
                heard.failed += 1;
                heard.error = Some(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "a call's task failed",
                    panicked.to_string(),
                )));
            }
        }
    }
}

/// `items` in groups whose scripts can run as one call: one group on one Redis; on a Redis
/// Cluster (`cluster`), one per slot of the item's user, each in `items`' order. Every key of
/// a user has the user's id as its hash tag, and an id holds no braces, so the id alone names
/// the slot: no key is built for it.
pub(crate) fn by_slot<T>(cluster: bool, items: &[T], user: impl Fn(&T) -> &str) -> Vec<Vec<&T>> {
    if !cluster {
        return vec![items.iter().collect()];
    }
    let mut groups: Vec<(redis::cluster_routing::Slot, Vec<&T>)> = Vec::new();
    for item in items {
        let slot = redis::cluster_routing::Slot::for_key(user(item));
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(item),
            None => groups.push((slot, vec![item])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// Items renewed in one script call at most (followed users' keys, run leases).
pub(crate) const RENEWED_PER_CALL: usize = 256;

/// `items` in calls of at most `max` items: grouped by slot as [`by_slot`], each group cut in
/// turn. For work whose calls need no order between them (renewals): Redis runs one script at
/// a time, and one call renewing a node's 20,000 followed users held it for 93 to 97 ms
/// (measured on the 2-core box; in calls of 256 the longest took 2 ms), every other node's
/// publishes waiting behind it.
pub(crate) fn in_calls<T>(
    cluster: bool,
    items: &[T],
    user: impl Fn(&T) -> &str,
    max: usize,
) -> Vec<Vec<&T>> {
    let groups = by_slot(cluster, items, user);
    groups
        .iter()
        .flat_map(|group| group.chunks(max.max(1)).map(<[&T]>::to_vec))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{answers_by, by_slot, in_calls};

    #[test]
    fn a_batch_is_one_call_on_one_redis_and_one_per_slot_in_order_on_a_cluster() {
        let users = ["ann", "bob", "ann", "cy", "bob", "ann"];
        fn user<'a>(id: &'a &str) -> &'a str {
            id
        }
        assert_eq!(
            by_slot(false, &users, user),
            vec![users.iter().collect::<Vec<_>>()]
        );
        // An id's slot is that of every key tagged with it.
        for id in ["ann", "lg-00042", "a.b@c+d|e_f"] {
            assert_eq!(
                redis::cluster_routing::Slot::for_key(id),
                redis::cluster_routing::Slot::for_key(format!("agentws:{{{id}}}:meta"))
            );
        }
        let groups: Vec<Vec<&str>> = by_slot(true, &users, user)
            .into_iter()
            .map(|group| group.into_iter().copied().collect())
            .collect();
        // Each user's keys share a slot (the hash tag); a user's items keep their order.
        assert!(groups.contains(&vec!["ann", "ann", "ann"]), "{groups:?}");
        assert!(groups.contains(&vec!["bob", "bob"]), "{groups:?}");
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), users.len());
    }

    #[test]
    fn renewals_are_cut_in_calls_of_at_most_the_maximum_each_of_one_slot() {
        let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        fn user(id: &String) -> &str {
            id
        }
        let single = in_calls(false, &users, user, 256);
        assert_eq!(
            single.iter().map(Vec::len).collect::<Vec<_>>(),
            [256, 256, 256, 232]
        );
        let flat: Vec<&String> = single.into_iter().flatten().collect();
        assert_eq!(flat, users.iter().collect::<Vec<_>>());
        let calls = in_calls(true, &users, user, 3);
        assert!(calls.iter().all(|call| (1..=3).contains(&call.len())));
        assert_eq!(calls.iter().map(Vec::len).sum::<usize>(), users.len());
        for call in &calls {
            let slot = redis::cluster_routing::Slot::for_key(call[0].as_str());
            assert!(
                call.iter()
                    .all(|u| redis::cluster_routing::Slot::for_key(u.as_str()) == slot)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_by_a_deadline_leave_the_late_calls_running_and_fail_only_when_none_came() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;
        let deadline = || tokio::time::Instant::now() + Duration::from_secs(1);
        let handled = Arc::new(AtomicUsize::new(0));
        // A call that answers in 5 s (a master that does not answer), one that fails, two
        // that answer at once.
        let call = |answer: redis::RedisResult<u32>, after: u64| {
            let handled = Arc::clone(&handled);
            async move {
                tokio::time::sleep(Duration::from_secs(after)).await;
                handled.fetch_add(1, Ordering::SeqCst);
                answer
            }
        };
        let failure = || Err(redis::RedisError::from((redis::ErrorKind::Io, "gone")));
        let heard = answers_by(
            [
                call(Ok(1), 5),
                call(failure(), 0),
                call(Ok(2), 0),
                call(Ok(3), 0),
            ],
            deadline(),
        )
        .await;
        assert_eq!((heard.failed, heard.late), (1, 1));
        let mut answers = heard.answers("leases").expect("answers");
        answers.sort_unstable();
        assert_eq!(answers, [2, 3]);
        // The late call was not dropped: it goes on and is handled when its answer comes.
        assert_eq!(handled.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(handled.load(Ordering::SeqCst), 4);
        // None through: the last error, or a timeout when every call was late.
        let error = answers_by([call(failure(), 0), call(Ok(4), 9)], deadline())
            .await
            .answers("leases")
            .expect_err("none through");
        assert!(error.to_string().contains("gone"), "{error}");
        let error = answers_by([call(Ok(5), 9)], deadline())
            .await
            .answers("leases")
            .expect_err("none through");
        assert!(
            error.to_string().contains("no answer by the deadline"),
            "{error}"
        );
        assert_eq!(
            answers_by(
                Vec::<std::future::Ready<redis::RedisResult<u32>>>::new(),
                deadline()
            )
            .await
            .answers("leases")
            .expect("no calls, no error"),
            Vec::<u32>::new()
        );
    }
}
