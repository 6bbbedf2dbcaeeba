//! Reading a running node (or Redis) from outside: its HTTP answers, its metrics, and the
//! CPU its process has used. Shared by the bench and `xtask chaos`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `GET path` on `addr` (`host:port`): the status and the body, or `None` when it does not
/// answer within 2 s.
pub(crate) fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A node's `/metrics` text, when it answers.
pub(crate) fn metrics(addr: &str) -> Option<String> {
    match get(addr, "/metrics")? {
        (200, body) => Some(body),
        _ => None,
    }
}

/// The sum of every sample of the metric `name` (all its label sets) in `text`.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Clock ticks per second in `/proc/<pid>/stat` (Linux's USER_HZ).
pub(crate) const TICKS_PER_SECOND: f64 = 100.0;

/// CPU ticks (user + system) process `pid` has used so far.
pub(crate) fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat_ticks(&stat)?.1)
}

/// A process's or thread's `stat` line: its name (in its parentheses) and its CPU ticks
/// (user + system).
pub(crate) fn stat_ticks(stat: &str) -> Option<(&str, u64)> {
    let (head, rest) = stat.rsplit_once(") ")?;
    let name = head.split_once(" (")?.1;
    // After the name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((
        name,
        fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_add_every_label_set_of_that_name_only() {
        let text = "\
# TYPE agent_server_history_dropped counter
agent_server_history_dropped_total{why=\"queue_full\"} 2
agent_server_history_dropped_total{why=\"store_failed\"} 3
agent_server_history_dropped_totally 100
agent_server_history_writes_total 17
";
        assert_eq!(metric_sum(text, "agent_server_history_dropped_total"), 5.0);
        assert_eq!(metric_sum(text, "agent_server_history_writes_total"), 17.0);
        assert_eq!(metric_sum(text, "agent_server_nothing_total"), 0.0);
    }

    #[test]
    fn this_process_has_cpu_ticks() {
        assert!(ticks(std::process::id()).is_some());
        assert!(ticks(u32::MAX).is_none());
    }

    #[test]
    fn a_stat_line_gives_its_name_and_user_plus_system_ticks() {
        // A thread name may hold spaces and parentheses; utime 7 and stime 5.
        let stat = "42 (sqlx-sqlite (1)) S 1 42 42 0 -1 4194560 0 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(stat_ticks(stat), Some(("sqlx-sqlite (1)", 12)));
        assert_eq!(stat_ticks("42 (x) S 1"), None);
    }
}
