//! Which runs a client follows, on any node: an AG-UI response counts itself on its run's
//! record while it is open, so the node executing a run whose response was cut can tell
//! whether the client came back through another node before it cancels the run. The count
//! lives on the run's record (`<prefix>:{<user>}:run:<run>`), which goes with the run.
//! [`ClusterRuns`](crate::ClusterRuns) calls these with the record's key.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionLike;
use ws_bridge::broker::BrokerError;

use crate::shared::broker_error;

/// Adds `ARGV[1]` to the record's `followers`, only while the record exists (a run that has
/// ended gets no record back); answers the count, or -1 without a record.
const FOLLOW: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], 'followers', ARGV[1])
";

static FOLLOW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FOLLOW));

/// Counts a client that began (`true`) or stopped following the run of `record`.
pub(crate) async fn follow(
    conn: &mut (impl ConnectionLike + Send),
    record: String,
    began: bool,
) -> Result<(), BrokerError> {
    let _count: i64 = FOLLOW_SCRIPT
        .key(record)
        .arg(if began { 1 } else { -1 })
        .invoke_async(conn)
        .await
        .map_err(|e| broker_error(&e))?;
    Ok(())
}

/// Whether a client follows the run of `record` from any node.
pub(crate) async fn followed(
    conn: &mut (impl ConnectionLike + Send),
    record: String,
) -> Result<bool, BrokerError> {
    let count: Option<i64> = redis::cmd("HGET")
        .arg(record)
        .arg("followers")
        .query_async(conn)
        .await
        .map_err(|e| broker_error(&e))?;
    Ok(count.unwrap_or(0) > 0)
}
