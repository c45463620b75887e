//! `sluice validate JOB_DIR` (or `JOB_DIR/job.toml`): every problem at once, secrets masked.

use std::path::Path;
use std::process::ExitCode;

use sluice_platform::spec::{JOB_FILE, load_job};

pub fn validate(job_dir: &Path) -> anyhow::Result<ExitCode> {
    match load_job(job_dir) {
        Ok(spec) => {
            println!(
                "{}: ok (job {:?}, {} output columns, writes to {})",
                spec.dir.join(JOB_FILE).display(),
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
