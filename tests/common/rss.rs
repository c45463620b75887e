//! Resident memory and CPU time of a process tree, sampled from `/proc`: what the
//! benchmarks report as peak RSS and CPU (a program plus every process it started, e.g.
//! the platform and its function instances).

/// Resident memory of `root` and all its descendants, KiB (0 for processes gone meanwhile).
pub fn tree_rss_kib(root: u32) -> u64 {
    tree_pids(root)
        .iter()
        .map(|&pid| status_kib(pid, "VmRSS:"))
        .sum()
}

/// `root` and every process descended from it that is running now.
pub fn tree_pids(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![root];
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        index += 1;
    }
    tree
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:`, `VmHWM:`), 0 when the process is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One sample of a process tree: `root` and every process descended from it.
pub struct TreeUsage {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// How many of the processes are Python interpreters.
    pub pythons: usize,
    /// CPU time used so far: user and system time of each process, plus that of the
    /// children each has already waited for (so a function instance that ended still
    /// counts once its parent reaped it).
    pub cpu_seconds: f64,
}

/// Samples the tree under `root`, walking `/proc` once.
pub fn tree_usage(root: u32) -> TreeUsage {
    // SAFETY: sysconf only reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let tree = tree_pids(root);
    let pythons = tree
        .iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with("python"))
        })
        .count();
    let ticks: u64 = tree.iter().map(|&pid| cpu_ticks(pid)).sum();
    TreeUsage {
        rss_kib: tree.iter().map(|&pid| status_kib(pid, "VmRSS:")).sum(),
        pythons,
        cpu_seconds: ticks as f64 / ticks_per_second,
    }
}

/// utime + stime + cutime + cstime of `pid` in clock ticks (0 once it is gone).
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command's closing parenthesis start at the state (field
            // 3): utime, stime, cutime and cstime are fields 14 to 17.
            stat.rsplit(')').next().map(|rest| {
                rest.split_whitespace()
                    .skip(11)
                    .take(4)
                    .filter_map(|field| field.parse::<u64>().ok())
                    .sum()
            })
        })
        .unwrap_or(0)
}
