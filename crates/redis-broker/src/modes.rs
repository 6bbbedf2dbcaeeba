//! Which publish mode the nodes on one Redis run: the publish script's or the sequencer's
//! (`sequencer`). Nodes of both would write the same streams two ways, so a node announces its
//! mode under `<prefix>:{mode}:<mode>` (expiring 30 s after its last renewal, renewed every 10 s)
//! and does not start while the other mode's key lives: switching modes is a full restart. A
//! node in [`PublishMode::Auto`] (the default) runs the mode whose key lives, and the publish
//! script's where none does, so a node joins a running deployment in its mode without being
//! told which (a rolling upgrade, a node added).

use std::sync::Weak;
use std::time::Duration;

use redis::Script;

use crate::PublishMode;
use crate::conn::Conn;
use crate::shared::Shared;

/// How long a mode's key lives unrenewed.
const KEPT: Duration = Duration::from_secs(30);
/// How often a node renews it.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// `KEYS[1]` the wanted mode's key, `KEYS[2]` the other's, `ARGV[1]` how long it lives (ms),
/// `ARGV[2]` `1` when the node may run the other mode instead: while the other's key lives,
/// renews it and answers 2 if so, else answers 0; otherwise sets the wanted one and answers 1.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then
  if ARGV[2] ~= '1' then return 0 end
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  return 2
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
";

/// The mode's name and the other's.
fn names(sequencer: bool) -> (&'static str, &'static str) {
    if sequencer {
        ("sequencer", "script")
    } else {
        ("script", "sequencer")
    }
}

/// The mode a node runs: the sequencer's or the publish script's.
pub(crate) fn running(sequencer: bool) -> PublishMode {
    if sequencer {
        PublishMode::Sequencer
    } else {
        PublishMode::Script
    }
}

fn key(prefix: &str, mode: &str) -> String {
    format!("{prefix}:{{mode}}:{mode}")
}

/// Announces the mode this node runs for `mode`: `Ok(Ok(_))` that mode (`Script` or
/// `Sequencer`, never `Auto`), `Ok(Err(other))` names the other mode when nodes of it run and
/// `mode` is not `Auto`.
pub(crate) async fn claim(
    conn: &mut Conn,
    prefix: &str,
    mode: PublishMode,
) -> redis::RedisResult<Result<PublishMode, &'static str>> {
    let wanted = mode == PublishMode::Sequencer;
    let (mine, other) = names(wanted);
    let answer: u8 = Script::new(CLAIM)
        .key(key(prefix, mine))
        .key(key(prefix, other))
        .arg(u64::try_from(KEPT.as_millis()).unwrap_or(u64::MAX))
        .arg(u8::from(mode == PublishMode::Auto))
        .invoke_async(conn)
        .await?;
    Ok(match answer {
        1 => Ok(running(wanted)),
        2 => Ok(running(!wanted)),
        _ => Err(other),
    })
}

/// Keeps this node's mode announced while the broker lives.
pub(crate) async fn keep(shared: Weak<Shared>, sequencer: bool) {
    let mut ticks = tokio::time::interval(RENEW_EVERY);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (mine, _) = names(sequencer);
        let renewed: redis::RedisResult<()> = redis::cmd("SET")
            .arg(key(&shared.prefix, mine))
            .arg("1")
            .arg("PX")
            .arg(u64::try_from(KEPT.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut shared.conn.clone())
            .await;
        if let Err(error) = renewed {
            tracing::debug!(%error, "redis broker: cannot renew this node's mode yet");
        }
    }
}
