//! What the bench reads of a process from Linux's `/proc`: peak RSS, CPU time, and CPU and
//! run-queue time per thread name.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

/// Per thread name, seconds on a CPU and seconds runnable but waiting for one.
pub type ThreadSched = BTreeMap<String, (f64, f64)>;

/// The text of `/proc/{pid}/status` (empty if the process is gone).
pub fn status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// The first word after `key` (such as `"VmRSS:"`) in a `status` text: `?` if the line has
/// none, empty if there is no such line.
pub fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        .unwrap_or_default()
}

/// Peak resident set size (VmHWM) of process `pid`, in bytes.
pub fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmHWM:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse()?;
            return Ok(kb * 1024);
        }
    }
    bail!("no VmHWM for pid {pid}")
}

/// CPU time (user + system) process `pid` has used so far, in seconds (0 if it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th
    // of them, in clock ticks (USER_HZ, 100 on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time of process `pid`'s threads whose name starts with `prefix`, in seconds.
pub fn threads_cpu_seconds(pid: u32, prefix: &str) -> f64 {
    sched_by_thread_name(pid)
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, (cpu, _))| cpu)
        .sum()
}

/// Per thread name of process `pid`, seconds on a CPU and seconds runnable but waiting for
/// one (the first two fields of each thread's `schedstat`, in nanoseconds; `stat` counts
/// 10 ms ticks).
pub fn sched_by_thread_name(pid: u32) -> ThreadSched {
    let mut out = ThreadSched::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(t.path().join("comm")),
            std::fs::read_to_string(t.path().join("schedstat")),
        ) else {
            continue;
        };
        let mut f = stat
            .split_whitespace()
            .map(|v| v.parse::<f64>().unwrap_or(0.0) / 1e9);
        let (cpu, wait) = (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0));
        let e: &mut (f64, f64) = out.entry(name.trim().to_string()).or_default();
        e.0 += cpu;
        e.1 += wait;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(peak_rss(me).unwrap() > 0);
        let status = status(me);
        assert_eq!(status_field(&status, "Pid:"), me.to_string());
        assert_eq!(status_field(&status, "NoSuchKey:"), "");
        // Spinning uses CPU, so the 10 ms ticks of `stat` soon show some.
        let started = std::time::Instant::now();
        while cpu_seconds(me) == 0.0 {
            assert!(
                started.elapsed().as_secs() < 5,
                "no CPU time in /proc/{me}/stat"
            );
        }
        assert!(sched_by_thread_name(me).values().any(|(cpu, _)| *cpu > 0.0));
    }
}
