//! [`replay_max_bytes`]: the replay logs' byte bound a server takes: the one it is told, or
//! an eighth of the memory this process may use ([`replay_max_bytes_for_machine`]).

/// The bound where the memory cannot be read (not Linux): 512 MiB.
pub const DEFAULT_REPLAY_MAX_BYTES: usize = 512 << 20;

/// The least the derived bound is: below it a busy node keeps too little to resume from.
const AT_LEAST: usize = 64 << 20;

/// The most the derived bound is, however large the machine.
const AT_MOST: usize = 16 << 30;

/// `set` (bytes), or when it is `None` the bound for this machine
/// ([`replay_max_bytes_for_machine`]).
pub fn replay_max_bytes(set: Option<u64>) -> usize {
    set.map_or_else(replay_max_bytes_for_machine, |bytes| {
        usize::try_from(bytes).unwrap_or(usize::MAX)
    })
}

/// An eighth of the memory this process may use (the machine's, or its control group's limit
/// when lower), from 64 MiB to 16 GiB; [`DEFAULT_REPLAY_MAX_BYTES`] where the memory cannot be
/// read (not Linux).
pub fn replay_max_bytes_for_machine() -> usize {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text));
    let group = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|path| std::fs::read_to_string(path).ok())
    .and_then(|text| text.trim().parse::<u64>().ok());
    let memory = match (machine, group) {
        (Some(machine), Some(group)) => machine.min(group),
        (Some(memory), None) | (None, Some(memory)) => memory,
        (None, None) => return DEFAULT_REPLAY_MAX_BYTES,
    };
    derived(memory)
}

/// An eighth of `memory` bytes, within the bounds.
fn derived(memory: u64) -> usize {
    usize::try_from(memory / 8)
        .unwrap_or(AT_MOST)
        .clamp(AT_LEAST, AT_MOST)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eighth_of_the_memory_within_bounds() {
        let meminfo = "MemTotal:       24591072 kB\nMemFree:         1000 kB\n";
        let total = mem_total(meminfo).expect("read");
        assert_eq!(total, 24_591_072 * 1024);
        assert_eq!(derived(total), 24_591_072 * 1024 / 8);
        assert_eq!(derived(1 << 20), AT_LEAST, "a tiny machine");
        assert_eq!(derived(1 << 40), AT_MOST, "a huge one");
        assert_eq!(mem_total("nothing here"), None);
        let here = replay_max_bytes_for_machine();
        assert!((AT_LEAST..=AT_MOST).contains(&here) || here == DEFAULT_REPLAY_MAX_BYTES);
    }
}
