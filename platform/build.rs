//! Builds the init program of a preloaded instance's PID namespace
//! (`src/function/namespace_init/main.rs`) as a static executable for the target,
//! with the `rustc` that builds this crate, into `$OUT_DIR/sluice-namespace-init`, which
//! the platform embeds (`function::init_program`).
//!
//! A separate program rather than part of this crate: the preload process (a Python
//! interpreter) starts it with `posix_spawn`, so it must be an executable of its own;
//! static, so it runs wherever the platform does, whatever the host's C library.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/function/namespace_init/main.rs";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let output = out_dir.join("sluice-namespace-init");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let mut command = Command::new(rustc);
    command
        .args([
            "--edition=2024",
            "--crate-type=bin",
            "--crate-name=sluice_namespace_init",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "opt-level=s",
            "-C",
            "debuginfo=0",
        ])
        .args(["-C", "strip=symbols", "-C", "target-feature=+crt-static"])
        .arg("-o")
        .arg(&output)
        .arg(SOURCE);
    // The linker cargo was told to use for the target, if any.
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        command.arg("-C").arg({
            let mut flag = std::ffi::OsString::from("linker=");
            flag.push(linker);
            flag
        });
    }
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("cannot run rustc to build {SOURCE}: {error}"));
    assert!(
        status.success(),
        "rustc failed to build {SOURCE} ({status})"
    );
}
