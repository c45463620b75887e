//! `sluice init NAME --template python|python-arrow|exec`: a new job folder to start
//! from — a job.toml that validates, the function, sample events, a README — that
//! `sluice invoke` runs as it is.
//!
//! The Python templates carry a copy of the Python SDK (`sluice_fn/`, the version this
//! binary was built with), so the folder needs no `pip install` and speaks the same
//! protocol version as the platform that runs it. An existing path is never touched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A job folder to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// A per-record Python function with the SDK's `@records`, stream mode.
    Python,
    /// A vectorised pyarrow function with the SDK's `@batches`, `encoding = "arrow"`.
    PythonArrow,
    /// Any program reading NDJSON on stdin, one process per batch (a plain Python script).
    Exec,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "invalid job name {0:?} (the folder's name); allowed: lowercase letters, digits, '_' and '-', starting with a letter or digit, at most 63 characters"
    )]
    Name(String),
    #[error("{} already exists; init only creates new folders", .0.display())]
    Exists(PathBuf),
    #[error("could not create {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The Python SDK, as copied into the Python templates' `sluice_fn/`.
const SDK: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../python/sluice_fn/__init__.py"),
    ),
    ("_arrow.py", include_str!("../python/sluice_fn/_arrow.py")),
    ("_codec.py", include_str!("../python/sluice_fn/_codec.py")),
    (
        "_envelope.py",
        include_str!("../python/sluice_fn/_envelope.py"),
    ),
    ("_frames.py", include_str!("../python/sluice_fn/_frames.py")),
    (
        "_records.py",
        include_str!("../python/sluice_fn/_records.py"),
    ),
    ("arrow.py", include_str!("../python/sluice_fn/arrow.py")),
    ("testing.py", include_str!("../python/sluice_fn/testing.py")),
];

const PYTHON: &[(&str, &str)] = &[
    ("job.toml", include_str!("init/python/job.toml")),
    ("transform.py", include_str!("init/python/transform.py")),
    (
        "test_transform.py",
        include_str!("init/python/test_transform.py"),
    ),
    ("events.ndjson", include_str!("init/python/events.ndjson")),
    ("README.md", include_str!("init/python/README.md")),
    (".gitignore", include_str!("init/python/gitignore")),
];

const PYTHON_ARROW: &[(&str, &str)] = &[
    ("job.toml", include_str!("init/python-arrow/job.toml")),
    (
        "transform.py",
        include_str!("init/python-arrow/transform.py"),
    ),
    (
        "events.ndjson",
        include_str!("init/python-arrow/events.ndjson"),
    ),
    ("README.md", include_str!("init/python-arrow/README.md")),
    (".gitignore", include_str!("init/python-arrow/gitignore")),
];

const EXEC: &[(&str, &str)] = &[
    ("job.toml", include_str!("init/exec/job.toml")),
    ("transform.py", include_str!("init/exec/transform.py")),
    ("events.ndjson", include_str!("init/exec/events.ndjson")),
    ("README.md", include_str!("init/exec/README.md")),
    (".gitignore", include_str!("init/exec/gitignore")),
];

pub fn init(dir: &Path, template: Template) -> anyhow::Result<ExitCode> {
    match scaffold(dir, template) {
        Ok(files) => {
            println!(
                "created {} ({}); try: sluice invoke {} --input {}",
                dir.display(),
                files.join(", "),
                dir.display(),
                dir.join("events.ndjson").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("sluice init: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Creates the job folder `dir` from `template`; returns the files written (relative).
pub fn scaffold(dir: &Path, template: Template) -> Result<Vec<String>, InitError> {
    let name = dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    if !is_job_name(name) {
        return Err(InitError::Name(name.to_owned()));
    }
    if dir.symlink_metadata().is_ok() {
        return Err(InitError::Exists(dir.to_owned()));
    }
    let files = match template {
        Template::Python => PYTHON,
        Template::PythonArrow => PYTHON_ARROW,
        Template::Exec => EXEC,
    };
    let with_sdk = template != Template::Exec;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| InitError::Write {
            path: parent.to_owned(),
            source,
        })?;
    }
    // create_dir (not _all): fails if the folder appeared meanwhile, so nothing is overwritten.
    std::fs::create_dir(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => InitError::Exists(dir.to_owned()),
        _ => InitError::Write {
            path: dir.to_owned(),
            source,
        },
    })?;
    let shown = dir.display().to_string();
    let mut written = Vec::new();
    for (file, text) in files {
        let text = text.replace("{name}", name).replace("{dir}", &shown);
        write(&dir.join(file), &text)?;
        written.push((*file).to_owned());
    }
    if with_sdk {
        let sdk = dir.join("sluice_fn");
        std::fs::create_dir(&sdk).map_err(|source| InitError::Write {
            path: sdk.clone(),
            source,
        })?;
        for (file, text) in SDK {
            write(&sdk.join(file), text)?;
        }
        written.push("sluice_fn/".to_owned());
    }
    Ok(written)
}

fn write(path: &Path, text: &str) -> Result<(), InitError> {
    std::fs::write(path, text).map_err(|source| InitError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The job-name rule of `job.toml` (spec validation), checked before anything is created.
fn is_job_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_module_is_copied_into_python_templates() {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/sluice_fn");
        let mut on_disk: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".py"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = SDK.iter().map(|(name, _)| *name).collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn refuses_an_existing_folder_and_a_bad_name() {
        let root = tempfile::tempdir().unwrap();
        let existing = root.path().join("taken");
        std::fs::create_dir(&existing).unwrap();
        std::fs::write(existing.join("job.toml"), "mine").unwrap();
        assert!(matches!(
            scaffold(&existing, Template::Python),
            Err(InitError::Exists(_))
        ));
        assert_eq!(
            std::fs::read_to_string(existing.join("job.toml")).unwrap(),
            "mine"
        );
        assert!(matches!(
            scaffold(&root.path().join("Bad Name"), Template::Exec),
            Err(InitError::Name(_))
        ));
        assert!(!root.path().join("Bad Name").exists());
    }
}
