//! A seccomp filter that refuses the system calls a data function never needs, installed
//! in the forked child as the very last step before `exec` (after the platform's own
//! `unshare`, `mount` and `setresuid` calls for it).
//!
//! Refused with `EPERM`: tracing other processes (`ptrace`, `process_vm_readv/writev`),
//! mounting and namespaces (`mount`, `umount2`, the new mount API, `pivot_root`, `unshare`,
//! `setns`, and `clone` with any `CLONE_NEW*` flag), loading code into the kernel
//! (`bpf`, `init_module`, `finit_module`, `delete_module`, `kexec_load`,
//! `kexec_file_load`), the kernel keyring (`keyctl`, `add_key`, `request_key`), and
//! `reboot`, `swapon`, `swapoff`, `acct`, `quotactl`, `syslog`, `perf_event_open`,
//! `userfaultfd`, `open_by_handle_at`, `iopl`, `ioperm`. `clone3` answers `ENOSYS`, so the
//! C library falls back to `clone`, whose flags the filter can see. Everything else is
//! allowed: a function may run any program.
//!
//! Most of these need capabilities the function does not have anyway; the filter is the
//! second wall, and it closes what an unprivileged process could otherwise reach (user
//! namespaces, `bpf`, `perf_event_open`, `userfaultfd`, keyrings), the kernel's usual
//! attack surface.
//!
//! A preload parent ([`super::zygote`]) gets a looser filter: the same, except that
//! `mount` and `unshare` of a mount or PID namespace are allowed, which it needs to give
//! each instance it forks namespaces of its own (in its own user namespace). Each forked
//! instance inherits it and, before any function code runs, installs on top of it what
//! it lacks of the full filter, `mount` and every `unshare`
//! ([`SyscallFilter::instance_programs`]); filters stack, the strictest answer wins, so
//! the instance is under exactly the full filter. Only that difference is installed
//! because the kernel's cost of installing a filter grows with its length (it runs the
//! filter for every system call number to cache the answers): a few instructions
//! instead of the full program is about half a millisecond less per instance start.

use std::collections::BTreeMap;
use std::io;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// System calls refused outright.
/// (Numbers as `i64`: seccomp filters exist for 64-bit targets only here.)
const REFUSED: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_bpf,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// Every `CLONE_NEW*` flag: a `clone` with any of them is refused.
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// The namespaces a preload parent may still make (with `unshare`) for its instances.
const PRELOAD_NAMESPACES: libc::c_int = libc::CLONE_NEWNS | libc::CLONE_NEWPID;

/// The compiled filters, made once per platform process before any fork.
#[derive(Debug)]
pub(crate) struct SyscallFilter {
    refused: BpfProgram,
    clone3: BpfProgram,
    /// `refused` with `mount` and `unshare(CLONE_NEWNS | CLONE_NEWPID)` allowed.
    preload_parent: BpfProgram,
    /// What `preload_parent` lacks of `refused`: `mount` and `unshare` refused.
    preload_instance: BpfProgram,
}

/// Why no filter could be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the function's system call filter for {arch}: {source}")]
pub(crate) struct FilterError {
    arch: &'static str,
    #[source]
    source: seccompiler::BackendError,
}

impl SyscallFilter {
    pub(crate) fn build() -> Result<Self, FilterError> {
        let arch = std::env::consts::ARCH;
        let error = |source| FilterError { arch, source };
        let target = TargetArch::try_from(arch).map_err(error)?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            REFUSED.iter().map(|&call| (call, Vec::new())).collect();
        let clone_rules = any_flag_of(&NAMESPACE_FLAGS).map_err(error)?;
        rules.insert(libc::SYS_clone, clone_rules.clone());
        let mut preload_rules = rules.clone();
        preload_rules.remove(&libc::SYS_mount);
        let other_namespaces: Vec<libc::c_int> = NAMESPACE_FLAGS
            .into_iter()
            .filter(|flag| flag & PRELOAD_NAMESPACES == 0)
            .collect();
        preload_rules.insert(
            libc::SYS_unshare,
            any_flag_of(&other_namespaces).map_err(error)?,
        );
        let refuse = |rules, errno| {
            SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno),
                target,
            )
            .and_then(BpfProgram::try_from)
            .map_err(error)
        };
        let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
        let preload_instance = BTreeMap::from([
            (libc::SYS_mount, Vec::new()),
            (libc::SYS_unshare, Vec::new()),
        ]);
        Ok(SyscallFilter {
            refused: refuse(rules, libc::EPERM as u32)?,
            clone3: refuse(clone3, libc::ENOSYS as u32)?,
            preload_parent: refuse(preload_rules, libc::EPERM as u32)?,
            preload_instance: refuse(preload_instance, libc::EPERM as u32)?,
        })
    }

    /// The programs a preloaded instance installs on top of the preload parent's
    /// filter, which it inherits (`apply_preload_parent_in_child`), to be under the full
    /// filter: as the bytes of their `struct sock_filter` arrays (native byte order),
    /// hex-encoded.
    pub(crate) fn instance_programs(&self) -> [String; 1] {
        [&self.preload_instance].map(|program| {
            program
                .iter()
                .flat_map(|instruction| {
                    let mut bytes = [0_u8; 8];
                    bytes[..2].copy_from_slice(&instruction.code.to_ne_bytes());
                    bytes[2] = instruction.jt;
                    bytes[3] = instruction.jf;
                    bytes[4..].copy_from_slice(&instruction.k.to_ne_bytes());
                    bytes
                })
                .map(|byte| format!("{byte:02x}"))
                .collect()
        })
    }

    /// Installs the preload parent's looser filter (and the `clone3` one). In the forked
    /// child only.
    pub(crate) fn apply_preload_parent_in_child(&self) -> io::Result<()> {
        apply_in_child(&[&self.clone3, &self.preload_parent])
    }

    /// Installs both filters on the calling thread (and so on what it `exec`s). In the
    /// forked child only: two `prctl`/`seccomp` calls on prepared programs.
    pub(crate) fn apply_in_child(&self) -> io::Result<()> {
        apply_in_child(&[&self.clone3, &self.refused])
    }
}

/// Installs `programs` in order on the calling thread.
fn apply_in_child(programs: &[&BpfProgram]) -> io::Result<()> {
    for program in programs {
        seccompiler::apply_filter(program).map_err(|error| match error {
            seccompiler::Error::Prctl(error) | seccompiler::Error::Seccomp(error) => error,
            _ => io::Error::from_raw_os_error(libc::EINVAL),
        })?;
    }
    Ok(())
}

/// Rules matching a first argument with any of `flags` set.
fn any_flag_of(flags: &[libc::c_int]) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    flags
        .iter()
        .map(|&flag| {
            let flag = flag as u64;
            let condition = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?;
            SeccompRule::new(vec![condition])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few calls the full filter refuses (with `EPERM`, `clone3` with `ENOSYS`), as bits
    /// of the exit code of a child that installs `programs` and makes them: a bit is set
    /// when the call was answered as the full filter answers it. The child runs as root,
    /// so without a filter the calls fail otherwise (`ENOENT`, `EINVAL`, ...) or succeed.
    /// 255 when the programs cannot be installed.
    fn refused_in_child(programs: &[&BpfProgram]) -> i32 {
        let missing = c"/sluice-no-such-folder";
        // SAFETY: the child makes plain syscalls on constants, then `_exit`s.
        match unsafe { libc::fork() } {
            0 => unsafe {
                if apply_in_child(programs).is_err() {
                    libc::_exit(255);
                }
                let errno = || io::Error::last_os_error().raw_os_error();
                let refused = |result: libc::c_long| result == -1 && errno() == Some(libc::EPERM);
                let null = std::ptr::null::<libc::c_char>();
                let calls = [
                    refused(
                        libc::mount(
                            null,
                            missing.as_ptr(),
                            null,
                            libc::MS_BIND,
                            std::ptr::null(),
                        )
                        .into(),
                    ),
                    refused(libc::unshare(libc::CLONE_NEWNS).into()),
                    refused(libc::unshare(libc::CLONE_NEWUSER).into()),
                    refused(libc::umount2(missing.as_ptr(), 0).into()),
                    refused(libc::syscall(libc::SYS_bpf, -1, 0, 0)),
                    refused(libc::syscall(libc::SYS_ptrace, -1, 0, 0, 0)),
                    libc::syscall(libc::SYS_clone3, 0, 0) == -1 && errno() == Some(libc::ENOSYS),
                ];
                let bits = calls.iter().enumerate().fold(0, |bits, (bit, &answered)| {
                    bits | (i32::from(answered) << bit)
                });
                libc::_exit(bits)
            },
            -1 => panic!("cannot fork: {}", io::Error::last_os_error()),
            child => {
                let mut status = 0;
                // SAFETY: waits for the child forked above.
                assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
                assert!(libc::WIFEXITED(status), "child ended as {status:#x}");
                libc::WEXITSTATUS(status)
            }
        }
    }

    #[test]
    fn a_preloaded_instance_is_under_exactly_the_full_filter() {
        // SAFETY: getuid cannot fail.
        if unsafe { libc::getuid() } != 0 {
            return; // Without root, mount and unshare fail without any filter.
        }
        let filter = SyscallFilter::build().unwrap();
        let all = 0x7f;
        assert_eq!(refused_in_child(&[&filter.clone3, &filter.refused]), all);
        // The preload parent's filter lets mount and unshare(CLONE_NEWNS) through...
        let parent = refused_in_child(&[&filter.clone3, &filter.preload_parent]);
        assert_eq!(parent & 0b11, 0, "{parent:#b}");
        // ...and an instance's program on top of it refuses the rest.
        let instance = refused_in_child(&[
            &filter.clone3,
            &filter.preload_parent,
            &filter.preload_instance,
        ]);
        assert_eq!(instance, all, "{instance:#b}");
        // What the zygote sends is that program.
        let [sent] = filter.instance_programs();
        assert_eq!(sent.len(), filter.preload_instance.len() * 16);
    }
}
