//! The error of one invocation of a function, and whether another attempt may succeed.

use std::fmt;
use std::io;
use std::time::Duration;

use sluice_connectors::{Classify, Retry};

/// Why a batch's invocation failed. The batch produced no usable output in every case; the
/// caller decides about retries (see its [`Classify`] implementation).
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(
        "batch not run: could not start function `{command}` (check function.command): {source}"
    )]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("batch failed: function exited with code {code} (function error); stderr: {}", tail_or_none(.stderr_tail))]
    Exit { code: i32, stderr_tail: String },
    #[error("batch failed: function was killed by {} (function error or resource limit); stderr: {}", signal_name(*.signal), tail_or_none(.stderr_tail))]
    Killed { signal: i32, stderr_tail: String },
    #[error(
        "batch failed: function did not finish within {after:?} (function too slow or stuck); its processes were killed"
    )]
    Timeout { after: Duration },
    #[error(
        "batch failed: function wrote more than {limit} bytes to stdout (function error, or raise function.max_output); its processes were killed"
    )]
    OutputTooLarge { limit: u64 },
    #[error(
        "batch failed: function broke the output protocol at line {line} (function error): {reason}"
    )]
    Protocol { line: usize, reason: String },
    #[error(
        "batch failed: function hit the memory limit (function.memory = {}) and {enforcement} (function error, or raise function.memory); its processes were killed; stderr: {}",
        format_bytes(*.limit),
        tail_or_none(.stderr_tail)
    )]
    MemoryLimit {
        limit: u64,
        enforcement: MemoryEnforcement,
        stderr_tail: String,
    },
    #[error(
        "batch failed: function hit the process limit (function.max_processes = {limit}; a fork bomb or a process leak, or raise function.max_processes); its processes were killed; stderr: {}",
        tail_or_none(.stderr_tail)
    )]
    ProcessLimit { limit: u64, stderr_tail: String },
    #[error(
        "batch not run: could not set up the function's sandbox: {reason} (platform problem; retrying may help)"
    )]
    Sandbox { reason: String },
    #[error("batch not run: {reason} (retrying cannot help)")]
    Refused { reason: String },
    #[error("batch failed: i/o error talking to the function: {0}")]
    Io(#[from] io::Error),
    #[error(
        "batch not run: the preload process (function.preload) {reason} ({}); stderr: {}",
        if *.permanent { "function error: fix the modules or the script" } else { "retrying may help" },
        tail_or_none(.stderr_tail)
    )]
    Preload {
        reason: String,
        stderr_tail: String,
        /// Whether every retry would fail the same way (a module that does not import).
        permanent: bool,
    },
    #[error("batch not run: {0} (input data; the batch is split to find the record)")]
    Input(#[from] super::encode_arrow::ArrowInputError),
}

/// How a memory limit was enforced when a function hit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryEnforcement {
    /// A cgroup memory limit: the kernel's OOM killer killed the function.
    Cgroup,
    /// `RLIMIT_AS`: an allocation failed and the function reported it on stderr.
    AddressSpace,
}

impl fmt::Display for MemoryEnforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryEnforcement::Cgroup => "was killed by the kernel's out-of-memory killer",
            MemoryEnforcement::AddressSpace => "failed to allocate memory",
        })
    }
}

/// `64MiB` for whole mebibytes, `1GiB` for whole gibibytes, else bytes.
fn format_bytes(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes > 0 && bytes.is_multiple_of(GIB) {
        format!("{}GiB", bytes / GIB)
    } else if bytes > 0 && bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

impl Classify for InvokeError {
    fn retry(&self) -> Retry {
        Retry::when(self.another_attempt_can_succeed())
    }
}

impl InvokeError {
    /// Whether another attempt (perhaps with a smaller batch, to isolate a poison record)
    /// can succeed. Only failures that no batch can escape are final: a program that does
    /// not exist, is not executable or is not a program at all, a module that does not
    /// import, and what the platform refuses to run ([`InvokeError::Refused`]: strict
    /// isolation this host cannot give, a job folder over the size cap).
    fn another_attempt_can_succeed(&self) -> bool {
        match self {
            InvokeError::Spawn { source, .. } => {
                let permanent_kind = matches!(
                    source.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::PermissionDenied
                        | io::ErrorKind::InvalidInput
                );
                let not_a_program = source.raw_os_error() == Some(nix::libc::ENOEXEC);
                !(permanent_kind || not_a_program)
            }
            InvokeError::Exit { .. }
            | InvokeError::Killed { .. }
            | InvokeError::Timeout { .. }
            | InvokeError::OutputTooLarge { .. }
            | InvokeError::Protocol { .. }
            | InvokeError::MemoryLimit { .. }
            | InvokeError::ProcessLimit { .. }
            | InvokeError::Sandbox { .. }
            | InvokeError::Input(_)
            | InvokeError::Io(_) => true,
            InvokeError::Refused { .. } => false,
            InvokeError::Preload { permanent, .. } => !permanent,
        }
    }
}

fn tail_or_none(tail: &str) -> &str {
    if tail.is_empty() { "(empty)" } else { tail }
}

fn signal_name(signal: i32) -> String {
    match nix::sys::signal::Signal::try_from(signal) {
        Ok(known) => known.as_str().to_owned(),
        Err(_) => format!("signal {signal}"),
    }
}
