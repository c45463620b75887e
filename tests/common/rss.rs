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
    tree(root, &processes())
        .into_iter()
        .map(|process| process.pid)
        .collect()
}

/// A running process, from its `/proc/PID/stat`.
#[derive(Clone, Copy)]
struct Process {
    pid: u32,
    ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks.
    cpu_ticks: u64,
}

/// Every running process, each `/proc/PID/stat` read once.
fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command's closing parenthesis start at the state (field
            // 3): the parent is field 4, utime, stime, cutime and cstime fields 14 to 17.
            let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            let ppid = fields.get(1)?.parse().ok()?;
            let cpu_ticks = fields
                .get(11..15)?
                .iter()
                .filter_map(|field| field.parse::<u64>().ok())
                .sum();
            Some(Process {
                pid,
                ppid,
                cpu_ticks,
            })
        })
        .collect()
}

/// `root` (with no CPU time when it is gone) and its descendants among `processes`.
fn tree(root: u32, processes: &[Process]) -> Vec<Process> {
    let root = processes
        .iter()
        .find(|process| process.pid == root)
        .copied()
        .unwrap_or(Process {
            pid: root,
            ppid: 0,
            cpu_ticks: 0,
        });
    let mut tree = vec![root];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index].pid;
        tree.extend(processes.iter().filter(|process| process.ppid == parent));
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

/// Samples the tree under `root`, reading each process's `/proc/PID/stat` once.
pub fn tree_usage(root: u32) -> TreeUsage {
    // SAFETY: sysconf only reads a constant of the system.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let tree = tree(root, &processes());
    let pythons = tree
        .iter()
        .filter(|process| {
            std::fs::read_to_string(format!("/proc/{}/comm", process.pid))
                .is_ok_and(|comm| comm.starts_with("python"))
        })
        .count();
    let ticks: u64 = tree.iter().map(|process| process.cpu_ticks).sum();
    TreeUsage {
        rss_kib: tree
            .iter()
            .map(|process| status_kib(process.pid, "VmRSS:"))
            .sum(),
        pythons,
        cpu_seconds: ticks as f64 / ticks_per_second,
    }
}
