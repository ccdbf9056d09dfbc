//! What a test can read about a process group in `/proc`: its processes,
//! their threads and the CPU time they used.

use std::time::Duration;

/// One process of a group, from `/proc/PID/stat`.
#[derive(Clone, Copy, Debug)]
pub struct Proc {
    pub pid: i32,
    /// `num_threads`.
    pub threads: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
}

/// The processes whose process group is `pgid` (a server started in a
/// group of its own, and its forked children).
pub fn group(pgid: i32) -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .filter(|(pgrp, _)| *pgrp == pgid)
        .map(|(_, p)| p)
        .collect()
}

/// (process group, the process) from `/proc/PID/stat`; `None` once gone
/// or a zombie.
fn stat(pid: i32) -> Option<(i32, Proc)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] = state (field 3), f[2] = pgrp (5), f[11] utime (14), f[12] stime (15),
    // f[17] num_threads (20).
    if f.first() == Some(&"Z") {
        return None;
    }
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    let p = Proc { pid, threads: num(17)? as u32, cpu_ticks: num(11)? + num(12)? };
    Some((f.get(2)?.parse().ok()?, p))
}

/// CPU time used by the group's live processes so far.
pub fn group_cpu(pgid: i32) -> Duration {
    let ticks: u64 = group(pgid).iter().map(|p| p.cpu_ticks).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Threads of all the group's processes.
pub fn group_threads(pgid: i32) -> u32 {
    group(pgid).iter().map(|p| p.threads).sum()
}
