//! The command a spawned instance runs: its program, working directory, environment,
//! pipes and process group, and the setup its child makes before `exec`
//! ([`ChildSetup`]): namespaces, cgroup, limits, identity and system call filter.

use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::bundle::InstanceView;
use super::cgroup::InstanceCgroup;
use super::environment::instance_environment;
use super::isolation::{ChildSetup, isolation};
use super::protocol::InvokeError;
use super::sandbox::InstanceContext;
use super::user_namespace::UserNamespace;

/// Builds the sandboxed command for `context` (stdio piped, nothing started yet), and
/// the scratch folder made for it, if any. The child joins `cgroup` before `exec`.
pub(super) fn build_command(
    context: &InstanceContext<'_>,
    cgroup: Option<&InstanceCgroup>,
) -> Result<(Command, Option<PathBuf>), InvokeError> {
    let spec = context.spec;
    let Some((program, args)) = spec.command.split_first() else {
        return Err(InvokeError::Spawn {
            command: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "function command is empty"),
        });
    };
    let isolation = isolation();
    let InstanceView {
        workdir,
        mounts,
        scratch,
    } = InstanceView::prepare(context, isolation.mount_namespaces)?;
    let mut command = Command::new(resolve_program(&workdir, program));
    command
        .args(args)
        .current_dir(&workdir)
        .env_clear()
        .envs(instance_environment(context))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(scratch) = &scratch {
        command.env("HOME", scratch).env("TMPDIR", scratch);
    }

    let memory_by_cgroup = cgroup.is_some_and(InstanceCgroup::limits_memory);
    // A PID namespace needs its own /proc, so a mount namespace. Not for a zygote (the
    // only process spawned with `preload`): the pids it reports for the instances it
    // forks must be the platform's.
    let new_pids = mounts.is_some() && isolation.pid_namespaces && spec.preload.is_empty();
    // A zygote whose instances get namespaces of their own makes them in a user
    // namespace of its own.
    let identity = context.sandbox.map(|sandbox| sandbox.identity);
    let user_namespace = match identity {
        Some(identity)
            if !spec.preload.is_empty()
                && mounts.is_some()
                && isolation.forks_get_namespaces(true) =>
        {
            Some(
                UserNamespace::new(identity).map_err(|error| InvokeError::Sandbox {
                    reason: format!("cannot prepare the preload process's user namespace: {error}"),
                })?,
            )
        }
        _ => None,
    };
    // Init and the relay as a program of their own, so neither keeps a copy of the
    // platform's memory; without the memory file they are forks of the platform.
    let init_program = match new_pids.then(super::init_program::sealed) {
        Some(Ok(fd)) => Some(fd.as_raw_fd()),
        Some(Err(reason)) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(%reason, "instances keep a relay that is a fork of the platform (each holds a copy of the platform's memory)");
            });
            None
        }
        None => None,
    };
    let setup = ChildSetup {
        new_pids,
        init_program,
        parent: nix::unistd::getpid(),
        cgroup_procs: cgroup
            .map(|cgroup| cgroup.procs_files().to_vec())
            .unwrap_or_default(),
        new_network: !spec.network && isolation.network_namespaces,
        address_space: spec.memory.filter(|_| !memory_by_cgroup),
        open_files: spec.open_files,
        // RLIMIT_CPU counts whole seconds; round up so a limit is never tighter.
        cpu_seconds: spec
            .cpu_time
            .map(|cpu| (cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0)).max(1)),
        drop_capabilities: isolation.drop_capabilities,
        mounts,
        identity,
        user_namespace,
        syscall_filter: isolation.syscall_filter.as_ref().ok(),
    };
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe operations are allowed. `apply_in_child` makes plain syscalls
    // (prctl, getppid, open/write/close, unshare, socket/ioctl, getrlimit/setrlimit,
    // capset, unshare/mount/chdir, setgroups/setresgid/setresuid, seccomp) through thin wrappers that neither allocate nor lock, reads only data moved
    // into the closure before the fork, and builds errors without allocating.
    unsafe {
        command.pre_exec(move || setup.apply_in_child());
    }
    Ok((command, scratch))
}

fn resolve_program(dir: &Path, program: &str) -> PathBuf {
    let path = Path::new(program);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let in_job_folder = dir.join(path);
    if program.contains('/') || in_job_folder.is_file() {
        in_job_folder
    } else {
        path.to_path_buf()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_against_the_job_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("transform.py"), "").unwrap();
        assert_eq!(
            resolve_program(dir.path(), "./bin/run"),
            dir.path().join("./bin/run")
        );
        assert_eq!(
            resolve_program(dir.path(), "transform.py"),
            dir.path().join("transform.py")
        );
        assert_eq!(
            resolve_program(dir.path(), "python3"),
            PathBuf::from("python3")
        );
        assert_eq!(
            resolve_program(dir.path(), "/bin/sh"),
            PathBuf::from("/bin/sh")
        );
    }
}
