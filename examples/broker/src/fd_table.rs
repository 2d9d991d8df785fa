//! Growing the process's file descriptor table once, at start-up.
//!
//! Linux doubles a process's file descriptor table when a new descriptor does not fit (at
//! 256, 512, 1,024, … open files), and when the process has more than one thread it then
//! waits for an RCU grace period (`expand_fdtable` calls `synchronize_rcu`), about 10 ms,
//! inside the `accept` that needed the room, while every connection in flight waits. A fresh
//! broker taking 3,000 connections stalled 9–14 ms in each of the `accept4` calls that
//! returned descriptors 256, 512, 1,024 and 2,048 (`strace -f -ttt`): a third of the time it
//! took to connect them all, and the tail of their CONNECT → CONNACK latency. mosquitto, one
//! thread, never waits there.
//!
//! [`reserve`] asks once, before the runtime starts its threads, for a descriptor numbered
//! just below the highest the broker may open (`RLIMIT_NOFILE`'s soft limit, at most
//! 65,536), which grows the table to that size while the process has one thread, and closes
//! it at once: the table stays. Its cost is kernel memory, 8 bytes per slot plus two bits
//! (about 520 KiB at 65,536 slots), not counted in the broker's RSS.

use std::os::fd::RawFd;

/// The most slots reserved: enough for tens of thousands of clients, bounded memory.
const MAX_SLOTS: u64 = 65_536;

/// Below this, the kernel's first tables (64 slots, then 256) cover the limit without a
/// stall worth avoiding.
const MIN_SLOTS: u64 = 512;

/// Grows the file descriptor table to `min(RLIMIT_NOFILE soft limit, 65,536)` slots;
/// returns that count, or `None` when there was nothing to do (a limit below 512) or the
/// kernel refused (the table then grows on demand, as before).
pub(crate) fn reserve() -> Option<usize> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let slots = limit.min(MAX_SLOTS);
    if slots < MIN_SLOTS {
        return None;
    }
    let highest = RawFd::try_from(slots - 1).ok()?;
    let null = std::fs::File::open("/dev/null").ok()?;
    // The descriptor itself is closed when dropped here.
    rustix::io::fcntl_dupfd_cloexec(&null, highest).ok()?;
    usize::try_from(slots).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's size, as `/proc/self/status` reports it (`FDSize`).
    fn fd_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("FDSize:"))
            .expect("an FDSize line");
        line["FDSize:".len()..].trim().parse().unwrap()
    }

    #[test]
    fn the_table_is_grown_to_the_limit_at_most_65536_and_stays() {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        match reserve() {
            Some(slots) => {
                assert_eq!(slots as u64, limit.min(MAX_SLOTS));
                assert!(fd_size() >= slots as u64, "FDSize {} < {slots}", fd_size());
                // The reserved descriptor itself was closed.
                let highest = format!("/proc/self/fd/{}", slots - 1);
                assert!(
                    !std::path::Path::new(&highest).exists(),
                    "{highest} is open"
                );
            }
            None => assert!(limit < MIN_SLOTS, "refused with a limit of {limit}"),
        }
    }
}
