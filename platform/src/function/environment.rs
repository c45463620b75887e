//! The environment a function instance starts with: nothing of the platform's but `PATH`
//! and `LANG`, the job's declared `env`, and the `SLUICE_*` variables. With a private
//! `/tmp` (a mount namespace of its own), `HOME` and `TMPDIR` point there.

use std::ffi::OsString;

use super::isolation::isolation;
use super::sandbox::InstanceContext;
use crate::spec::FunctionMode;

/// `PATH` for the function when the platform has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The private `/tmp` of an instance in its own mount namespace.
const PRIVATE_TMP: &str = "/tmp";

/// The environment of an instance: `PATH` (the platform's, or a default), `HOME` and
/// `LANG` when the platform has them, the job's declared `env`, and the `SLUICE_*`
/// variables. Spawned and forked instances get exactly this.
pub(crate) fn instance_environment(context: &InstanceContext<'_>) -> Vec<(OsString, OsString)> {
    let spec = context.spec;
    let mut env = vec![(
        OsString::from("PATH"),
        std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    )];
    let private_tmp = context.sandbox.is_some() && isolation().mount_namespaces;
    for inherited in ["HOME", "LANG"] {
        if let Some(value) = std::env::var_os(inherited)
            && !(private_tmp && inherited == "HOME")
        {
            env.push((inherited.into(), value));
        }
    }
    if private_tmp {
        // The platform's home is not the function's; its scratch space is.
        env.push(("HOME".into(), PRIVATE_TMP.into()));
        env.push(("TMPDIR".into(), PRIVATE_TMP.into()));
    }
    env.extend(
        spec.env
            .iter()
            .map(|(name, value)| (name.into(), value.into())),
    );
    let mode = match spec.mode {
        FunctionMode::Exec => "exec",
        FunctionMode::Stream => "stream",
    };
    for (name, value) in [
        ("SLUICE_JOB", context.job),
        ("SLUICE_INSTANCE", context.instance),
        ("SLUICE_MODE", mode),
        ("SLUICE_ENCODING", spec.encoding.name()),
    ] {
        env.push((name.into(), value.into()));
    }
    env
}
