//! `sluice validate JOB_DIR`.

use std::path::Path;
use std::process::ExitCode;

use sluice_platform::spec::load_job;

pub fn validate(job_dir: &Path) -> anyhow::Result<ExitCode> {
    match load_job(job_dir) {
        Ok(spec) => {
            println!(
                "{}: ok (job {:?}, {} output columns, writes to {})",
                job_dir.join("job.toml").display(),
                spec.name,
                spec.output.schema.columns().len(),
                spec.output.url
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            Ok(ExitCode::FAILURE)
        }
    }
}
