//! Process measurements read from `/proc` (Linux only).

use std::fs;
use std::io;

/// Resident set size of process `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn vm_rss_kib(pid: u32) -> io::Result<u64> {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: u32, field: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// CPU time consumed by all threads of process `pid`, in nanoseconds (sum of the first field
/// of `/proc/<pid>/task/*/schedstat`).
pub fn cpu_ns(pid: u32) -> io::Result<u64> {
    sum_over_threads(pid, "schedstat", |s| {
        s.split_whitespace().next().and_then(|v| v.parse().ok())
    })
}

/// Times the threads of process `pid` went to sleep waiting for something (the sum of
/// `voluntary_ctxt_switches` in `/proc/<pid>/task/*/status`); preemptions are not counted.
pub fn voluntary_switches(pid: u32) -> io::Result<u64> {
    sum_over_threads(pid, "status", |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The sum over the threads of process `pid` of what `parse` reads in their `file` under
/// `/proc/<pid>/task/<tid>/` (0 where it reads nothing).
fn sum_over_threads(pid: u32, file: &str, parse: impl Fn(&str) -> Option<u64>) -> io::Result<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread can exit between read_dir and read.
        let Ok(s) = fs::read_to_string(task?.path().join(file)) else {
            continue;
        };
        total += parse(&s).unwrap_or(0);
    }
    Ok(total)
}

/// Number of open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The soft and hard `RLIMIT_NOFILE` of this process, as `/proc/self/limits` shows them.
pub fn nofile_limit() -> io::Result<(String, String)> {
    let limits = fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| io::Error::other("no 'Max open files' in /proc/self/limits"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().unwrap_or("?").to_owned();
    let hard = fields.next().unwrap_or("?").to_owned();
    Ok((soft, hard))
}

/// The machine: online CPUs (as `nproc` counts them without an affinity mask), CPU model
/// and the 1/5/15-minute load averages.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown", |v| v.trim_start_matches([' ', '\t', ':']));
    format!("{cpus} CPUs, \"{model}\", load average {}", load_average())
}

/// The load averages from `/proc/loadavg`.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(vm_rss_kib(pid).unwrap() > 0);
        assert!(cpu_ns(pid).unwrap() > 0);
        assert!(fd_count(pid).unwrap() >= 3);
        assert!(nofile_limit().is_ok());
    }

    #[test]
    fn counts_a_sleep_of_this_process() -> io::Result<()> {
        let pid = std::process::id();
        let before = voluntary_switches(pid)?;
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(voluntary_switches(pid)? > before);
        Ok(())
    }
}
