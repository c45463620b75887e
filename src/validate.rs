//! `sluice validate JOB_DIR` (or `JOB_DIR/job.toml`): every problem at once, secrets masked.

use std::path::Path;
use std::process::ExitCode;

use sluice_platform::function::missing_protections;
use sluice_platform::spec::{IsolationLevel, JOB_FILE, load_job};

pub fn validate(job_dir: &Path) -> anyhow::Result<ExitCode> {
    match load_job(job_dir) {
        Ok(spec) => {
            let file = spec.dir.join(JOB_FILE);
            // What this host can give the function: with strict isolation (the default), a
            // missing protection keeps the job from running here.
            let missing = missing_protections(&spec.function);
            let strict = spec.function.isolation == IsolationLevel::Strict;
            for protection in &missing {
                eprintln!(
                    "{}: function.isolation: this host cannot give the function {protection}",
                    file.display()
                );
            }
            if strict && !missing.is_empty() {
                eprintln!(
                    "{}: function.isolation: \"strict\" refuses to start the function here; set \"best_effort\" to run it without these protections",
                    file.display()
                );
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "{}: ok (job {:?}, {} output columns, writes to {})",
                file.display(),
                spec.name,
                spec.output.schema.columns().len(),
                spec.redact(&spec.output.url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(ExitCode::FAILURE)
        }
    }
}
