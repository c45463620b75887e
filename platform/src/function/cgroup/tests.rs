//! Choosing cgroup directories from `/proc/self/mountinfo` and `/proc/self/cgroup`, for
//! the layouts seen in the field; and the instance lifecycle on this host's hierarchy.

use super::hierarchy::{Plan, parse_mountinfo, plan};
use super::*;

/// This host's layout: v1 controllers, a unified hierarchy without pids or memory.
const HYBRID_MOUNTS: &str = "\
27 26 0:24 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
28 27 0:25 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 27 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 27 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 27 0:32 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
36 27 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const HYBRID_MEMBERSHIP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/c051
1:cpu:/
0::/
";

#[test]
fn v1_is_used_when_the_unified_hierarchy_lacks_the_controllers() {
    let plan = plan(HYBRID_MOUNTS, HYBRID_MEMBERSHIP, |dir| {
        assert_eq!(dir, Path::new("/sys/fs/cgroup/unified"));
        Some("hugetlb\n".into())
    })
    .unwrap();
    assert_eq!(
        plan,
        Plan::V1 {
            pids: Some("/sys/fs/cgroup/pids".into()),
            memory: Some("/sys/fs/cgroup/memory/process_api/c051".into()),
        }
    );
}

#[test]
fn v2_is_used_when_it_offers_pids_and_memory() {
    let mounts = "31 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    let membership = "0::/system.slice/sluice.service\n";
    let plan = plan(mounts, membership, |dir| {
        assert_eq!(dir, Path::new("/sys/fs/cgroup/system.slice/sluice.service"));
        Some("cpuset cpu io memory pids\n".into())
    })
    .unwrap();
    assert_eq!(
        plan,
        Plan::V2 {
            own: "/sys/fs/cgroup/system.slice/sluice.service".into()
        }
    );
}

#[test]
fn a_bind_mounted_subtree_resolves_relative_to_its_root() {
    // A container that sees its own part of the host hierarchy at /sys/fs/cgroup.
    let mounts = "500 400 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
    let membership = "0::/docker/abc/app\n";
    let plan = plan(mounts, membership, |_| Some("memory pids".into())).unwrap();
    assert_eq!(
        plan,
        Plan::V2 {
            own: "/sys/fs/cgroup/app".into()
        }
    );
}

#[test]
fn no_usable_controller_is_an_error_saying_so() {
    let mounts = "36 27 0:33 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    let error = plan(mounts, "0::/\n", |_| Some("cpu io".into())).unwrap_err();
    assert!(error.contains("pids or memory"), "{error}");
}

#[test]
fn escaped_mount_points_are_decoded() {
    let mounts = "36 27 0:33 / /mnt/with\\040space rw - cgroup cgroup rw,pids\n";
    let parsed = parse_mountinfo(mounts);
    assert_eq!(parsed[0].mount_point, Path::new("/mnt/with space"));
    assert_eq!(parsed[0].fstype, "cgroup");
}

/// The host's hierarchy, when this process may use cgroups.
fn host_hierarchy() -> Option<&'static CgroupHierarchy> {
    crate::function::isolation::isolation().cgroups.as_ref()
}

/// Held by every test that sweeps: a sweep removes any stale folder it finds, including
/// the one another test has just made and not yet filled (seen in the full lib run:
/// writing its `cgroup.procs` failed with "not found").
static SWEEPING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sweeping() -> std::sync::MutexGuard<'static, ()> {
    SWEEPING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[tokio::test]
async fn an_instance_cgroup_is_created_limited_and_removed_with_its_job_directory() {
    let Some(hierarchy) = host_hierarchy() else {
        eprintln!("cgroups are not usable here; nothing to check");
        return;
    };
    let job = JobCgroup::for_job(hierarchy, "cgroup-lifecycle").unwrap();
    let same = JobCgroup::for_job(hierarchy, "cgroup-lifecycle").unwrap();
    assert!(Arc::ptr_eq(&job, &same), "one handle per job");
    drop(same);
    let limits = CgroupLimits {
        max_processes: 7,
        memory: Some(64 << 20),
    };
    let mut instance = job.create_instance("cgroup-lifecycle-1", limits).unwrap();
    let dirs = instance.dirs();
    assert!(dirs.iter().all(|dir| dir.is_dir()), "{dirs:?}");
    if let Some(dir) = &instance.pids_dir {
        assert_eq!(
            std::fs::read_to_string(dir.join("pids.max"))
                .unwrap()
                .trim(),
            "7"
        );
    }
    if let Some(dir) = &instance.memory_dir {
        let file = hierarchy.memory_limit_file();
        let limit: u64 = std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(limit, 64 << 20);
    }
    assert!(instance.processes().is_empty());
    assert_eq!(instance.events(), LimitEvents::default());

    instance.remove().await;
    assert!(dirs.iter().all(|dir| !dir.exists()), "{dirs:?}");
    let job_dirs = job.dirs();
    drop(job);
    assert!(job_dirs.iter().all(|dir| !dir.exists()), "{job_dirs:?}");
}

#[test]
fn instance_cgroup_names_carry_the_platform_pid() {
    use super::hierarchy::platform_pid_of;
    assert_eq!(platform_pid_of("clicks-3.4711.17"), Some(4711));
    assert_eq!(platform_pid_of("my.job-1.4711.2"), Some(4711));
    assert_eq!(platform_pid_of("probe.4711"), None);
    assert_eq!(platform_pid_of("clicks-3"), None);
}

#[tokio::test]
async fn cgroups_left_by_a_dead_platform_are_emptied_and_removed() {
    let Some(hierarchy) = host_hierarchy() else {
        eprintln!("cgroups are not usable here; nothing to check");
        return;
    };
    let _sweeping = sweeping();
    // A pid that is certainly gone: a child that has been reaped.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_platform = gone.id();
    gone.wait().unwrap();

    let job_dirs = hierarchy.job_dirs("stale-sweep");
    let name = format!("stale-sweep-1.{dead_platform}.1");
    let instance_dirs: Vec<PathBuf> = job_dirs.iter().map(|dir| dir.join(&name)).collect();
    for dir in &instance_dirs {
        std::fs::create_dir_all(dir).unwrap();
    }
    // A process a function left behind, still in the instance's cgroup.
    let mut orphan = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    for dir in &instance_dirs {
        std::fs::write(dir.join("cgroup.procs"), orphan.id().to_string()).unwrap();
    }
    // A live instance of this process in the same job is left alone.
    let live_name = format!("stale-sweep-2.{}.1", std::process::id());
    let live_dirs: Vec<PathBuf> = job_dirs.iter().map(|dir| dir.join(&live_name)).collect();
    for dir in &live_dirs {
        std::fs::create_dir_all(dir).unwrap();
    }

    hierarchy.sweep_stale();

    let status = orphan.wait().unwrap();
    assert!(!status.success(), "the orphan was killed: {status}");
    assert!(
        instance_dirs.iter().all(|dir| !dir.exists()),
        "{instance_dirs:?}"
    );
    assert!(live_dirs.iter().all(|dir| dir.exists()), "{live_dirs:?}");
    for dir in &live_dirs {
        std::fs::remove_dir(dir).unwrap();
    }
    for dir in &job_dirs {
        std::fs::remove_dir(dir).unwrap();
    }
}

/// Two platform processes starting at once: one probes in `probe.<its pid>` while the
/// other sweeps. The sweep must leave the probe folder of a live process alone, or that
/// process fails to join it and runs its functions without cgroups.
#[test]
fn the_sweep_leaves_the_probe_folder_of_a_live_platform_alone() {
    let Some(hierarchy) = host_hierarchy() else {
        eprintln!("cgroups are not usable here; nothing to check");
        return;
    };
    let _sweeping = sweeping();
    let mut other_platform = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let probe = format!("probe.{}", other_platform.id());
    let probe_dirs: Vec<PathBuf> = hierarchy
        .roots()
        .iter()
        .map(|root| root.join(&probe))
        .collect();
    for dir in &probe_dirs {
        std::fs::create_dir_all(dir).unwrap();
    }

    hierarchy.sweep_stale();

    let left: Vec<bool> = probe_dirs.iter().map(|dir| dir.exists()).collect();
    for dir in &probe_dirs {
        let _ = std::fs::remove_dir(dir);
    }
    other_platform.kill().unwrap();
    other_platform.wait().unwrap();
    assert!(
        left.iter().all(|&exists| exists),
        "a live process's probe folder was removed: {probe_dirs:?}"
    );
}
