//! Store URLs a job declares (an output, a bucket to read, dead letters): `s3://`,
//! `file://`, `memory://`, or a folder path that becomes a `file://` URL. Credentials
//! never ride in the URL.

use std::path::{Component, Path, PathBuf};

use super::Checker;
use super::secret::shown;

impl Checker<'_> {
    /// Accepts `file://`, `s3://`, `memory://` URLs, and plain folder paths (relative ones
    /// resolve against the job folder), which become `file://` URLs. Used for every
    /// store URL a job declares (`output.url`, `dead_letter.url`, `trigger.bucket.url`).
    pub fn store_url(&mut self, field: &str, url: &str) -> Option<String> {
        let allowed = "allowed: s3://bucket/prefix, file:///absolute/path, memory://name, or a folder path such as \"./out\"";
        if has_userinfo(url) {
            // Never echoed: the userinfo is an access key and its secret.
            self.error(
                field,
                "holds credentials in the URL (user:password@); remove them and set access_key_id and secret_access_key = \"${NAME}\" in the options table",
            );
            return None;
        }
        let Some((scheme, _)) = url.split_once("://") else {
            if url.trim().is_empty() {
                self.error(field, format!("empty url; {allowed}"));
                return None;
            }
            let path = normalize(&self.context.dir.join(url));
            return match url::Url::from_file_path(&path) {
                Ok(file_url) => Some(file_url.to_string()),
                Err(()) => {
                    self.error(
                        field,
                        format!("cannot turn {} into a file URL; {allowed}", shown(url)),
                    );
                    None
                }
            };
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => match url::Url::parse(url)
                .ok()
                .filter(|parsed| parsed.to_file_path().is_ok())
            {
                Some(parsed) => Some(parsed.to_string()),
                None => {
                    self.error(
                        field,
                        format!("invalid file URL {}; write file:///absolute/path, or a plain folder path", shown(url)),
                    );
                    None
                }
            },
            "s3" => match url::Url::parse(url) {
                Ok(parsed) if parsed.host_str().is_some_and(|bucket| !bucket.is_empty()) => {
                    Some(url.to_string())
                }
                _ => {
                    self.error(
                        field,
                        format!("invalid S3 URL {}; write s3://bucket/prefix", shown(url)),
                    );
                    None
                }
            },
            "memory" => match url::Url::parse(url) {
                Ok(parsed) => Some(parsed.to_string()),
                Err(error) => {
                    self.error(
                        field,
                        format!(
                            "invalid memory URL {} ({error}); write memory://name",
                            shown(url)
                        ),
                    );
                    None
                }
            },
            "gs" | "gcs" | "az" | "azure" | "abfs" | "abfss" => {
                self.error(
                    field,
                    format!("{}:// is not supported yet in this build; supported: s3://, file://, memory://, or a folder path", shown(scheme)),
                );
                None
            }
            _ => {
                self.error(
                    field,
                    format!("unsupported scheme {}; {allowed}", shown(scheme)),
                );
                None
            }
        }
    }
}

/// Whether a `scheme://…` URL carries userinfo (`user[:password]@`) before its host.
fn has_userinfo(url: &str) -> bool {
    url.split_once("://").is_some_and(|(_, rest)| {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        rest[..authority_end].contains('@')
    })
}

/// Removes `.` and resolves `..` components without touching the file system (the folder
/// may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut normalized = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normalized.pop();
            }
            other => normalized.push(other),
        }
    }
    normalized
}
