//! What the kernel says about a process and the machine: resident memory
//! (`/proc/<pid>/status` `VmRSS`), CPU time (`/proc/<pid>/stat` `utime` + `stime`), the
//! machine's busy time (`/proc/stat`), and the open-file limit (`RLIMIT_NOFILE`).
//!
//! The parsers take the files' text, so the tests feed them recorded samples; the readers
//! around them add the IO and say which file failed.

use std::time::Duration;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// A `/proc` figure that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {path}: {problem}")]
pub struct ProcError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub problem: String,
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|e| ProcError {
        path: path.to_owned(),
        problem: e.to_string(),
    })
}

fn malformed(path: &str, what: &str) -> ProcError {
    ProcError {
        path: path.to_owned(),
        problem: format!("no {what} in it (not a Linux /proc file?)"),
    }
}

/// `VmRSS` of a `/proc/<pid>/status` text, in KiB.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// `utime + stime` of a `/proc/<pid>/stat` text, in clock ticks.
///
/// The second field (the command name) is in parentheses and may itself hold spaces and
/// parentheses, so fields are counted from the last `)`: `utime` and `stime` are fields 14
/// and 15 of the line, the 12th and 13th after the name.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's CPU ticks from a `/proc/stat` text: busy = user + nice + system + irq +
/// softirq; steal (time the hypervisor gave to other guests) is counted apart, because it is
/// not this machine's work.
pub fn parse_machine_ticks(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let field = |i: usize| values.get(i).copied().unwrap_or(0);
    let total: u64 = values.iter().take(8).sum();
    if values.len() < 4 {
        return None;
    }
    let (idle, iowait, steal) = (field(3), field(4), field(7));
    Some(MachineTicks {
        busy: total - idle - iowait - steal,
        steal,
        total,
    })
}

/// CPU ticks of the whole machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    /// Ticks spent doing something (user, system, interrupts, ...).
    pub busy: u64,
    /// Ticks the hypervisor took for other guests.
    pub steal: u64,
    /// All ticks, idle included (so `total` grows by cores × ticks per second).
    pub total: u64,
}

impl MachineTicks {
    /// The busy share of the machine between `earlier` and `self` (0.0 to 1.0).
    pub fn busy_since(&self, earlier: &MachineTicks) -> f64 {
        share(self.busy, earlier.busy, self.total, earlier.total)
    }

    /// The stolen share of the machine between `earlier` and `self` (0.0 to 1.0).
    pub fn steal_since(&self, earlier: &MachineTicks) -> f64 {
        share(self.steal, earlier.steal, self.total, earlier.total)
    }

    /// Cores' worth of ticks between `earlier` and `self` over `seconds` of wall time.
    pub fn cores_since(&self, earlier: &MachineTicks, seconds: f64) -> f64 {
        let ticks = self.total.saturating_sub(earlier.total) as f64;
        ticks / rustix::param::clock_ticks_per_second().max(1) as f64 / seconds.max(1e-9)
    }
}

fn share(now: u64, then: u64, total_now: u64, total_then: u64) -> f64 {
    let total = total_now.saturating_sub(total_then);
    if total == 0 {
        return 0.0;
    }
    now.saturating_sub(then) as f64 / total as f64
}

/// `ListenOverflows` of a `/proc/net/netstat` text: SYNs or handshakes the kernel dropped
/// because a listener's accept queue was full.
pub fn parse_listen_overflows(netstat: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace();
    let values = lines.next()?.split_whitespace();
    names
        .zip(values)
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
}

/// Listen queue overflows so far in this network namespace.
pub fn listen_overflows() -> Option<u64> {
    parse_listen_overflows(&std::fs::read_to_string("/proc/net/netstat").ok()?)
}

/// Reads a process's figures from `/proc`. `pid` `None` means this process (`/proc/self`).
#[derive(Debug, Clone)]
pub struct ProcessProbe {
    dir: String,
    ticks_per_second: u64,
}

impl ProcessProbe {
    /// A probe of process `pid`, or of this process.
    pub fn new(pid: Option<u32>) -> Self {
        let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
        Self {
            dir,
            ticks_per_second: rustix::param::clock_ticks_per_second().max(1),
        }
    }

    /// Whether the process exists (its `/proc` directory does).
    pub fn exists(&self) -> bool {
        std::path::Path::new(&self.dir).exists()
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> Result<u64, ProcError> {
        let path = format!("{}/status", self.dir);
        parse_rss_kib(&read(&path)?).ok_or_else(|| malformed(&path, "VmRSS line"))
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(&self) -> Result<Duration, ProcError> {
        let path = format!("{}/stat", self.dir);
        let ticks =
            parse_cpu_ticks(&read(&path)?).ok_or_else(|| malformed(&path, "utime and stime"))?;
        Ok(Duration::from_secs_f64(
            ticks as f64 / self.ticks_per_second as f64,
        ))
    }

    /// Threads of the process (the `Threads:` line of its status).
    pub fn threads(&self) -> Result<u64, ProcError> {
        let path = format!("{}/status", self.dir);
        read(&path)?
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| malformed(&path, "Threads line"))
    }
}

/// The machine's CPU ticks now.
pub fn machine_ticks() -> Result<MachineTicks, ProcError> {
    parse_machine_ticks(&read("/proc/stat")?).ok_or_else(|| malformed("/proc/stat", "cpu line"))
}

/// This process's open-file limit after trying to raise the soft limit to the hard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The soft limit in force (what `open` and `connect` run into).
    pub soft: u64,
    /// The hard limit (the most an unprivileged process can raise the soft one to).
    pub hard: u64,
}

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit and returns both.
pub fn raise_file_limit() -> FileLimit {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    // An unlimited hard limit still stops at the kernel's `nr_open`.
    let target = maximum.or_else(|| {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    });
    if target.is_some() && current != target {
        // Failing to raise it is reported by the figures themselves: the limit stays lower.
        let _raised = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: target,
                maximum,
            },
        );
    }
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    FileLimit {
        soft: current.unwrap_or(u64::MAX),
        hard: maximum.unwrap_or(u64::MAX),
    }
}

/// The machine: CPU model and count from `/proc/cpuinfo`, and the kernel from
/// `/proc/sys/kernel/osrelease`.
pub fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tagent-server\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  912344 kB\nVmRSS:\t   13804 kB\nRssAnon:\t    6164 kB\nThreads:\t3\n";

    #[test]
    fn rss_comes_from_the_vmrss_line() {
        assert_eq!(parse_rss_kib(STATUS), Some(13_804));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
        assert_eq!(parse_rss_kib("VmRSS:\t lots kB\n"), None);
    }

    #[test]
    fn cpu_ticks_count_fields_after_the_command_name() {
        // A command name with spaces and a `)` inside must not shift the fields.
        let stat = "4242 (agent server (x)) S 1 4242 4242 0 -1 4194560 1843 0 0 0 \
                    1500 250 0 0 20 0 3 0 123456 912344512 3451 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1_750));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn machine_busy_share() {
        let before = parse_machine_ticks(
            "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\n",
        )
        .expect("parses");
        assert_eq!(
            before,
            MachineTicks {
                busy: 200,
                steal: 0,
                total: 1000
            }
        );
        let after = parse_machine_ticks("cpu  250 0 150 800 100 0 0 30 0 0\n").expect("parses");
        assert_eq!(after.steal, 30);
        assert!((after.busy_since(&before) - 200.0 / 330.0).abs() < 1e-9);
        assert!((after.steal_since(&before) - 30.0 / 330.0).abs() < 1e-9);
        assert_eq!(parse_machine_ticks("cpu  1 2\n"), None);
        assert_eq!(parse_machine_ticks("intr 1 2 3\n"), None);
    }

    #[test]
    fn listen_overflows_come_from_the_tcpext_lines() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                       TcpExt: 0 412 412\n\
                       IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_listen_overflows(netstat), Some(412));
        assert_eq!(
            parse_listen_overflows("IpExt: InNoRoutes\nIpExt: 0\n"),
            None
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let me = ProcessProbe::new(None);
        assert!(me.exists());
        assert!(me.rss_kib().expect("rss") > 0);
        assert!(me.threads().expect("threads") >= 1);
        me.cpu_time().expect("cpu time");
        let missing = ProcessProbe::new(Some(u32::MAX));
        assert!(!missing.exists());
        let err = missing.rss_kib().expect_err("no such process");
        assert!(err.to_string().contains("/proc/4294967295/status"), "{err}");
    }

    #[test]
    fn the_file_limit_is_read_and_raising_it_is_idempotent() {
        let limit = raise_file_limit();
        assert!(limit.soft <= limit.hard, "{limit:?}");
        assert_eq!(raise_file_limit(), limit, "raising twice changes nothing");
    }
}
