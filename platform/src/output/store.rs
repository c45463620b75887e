//! Opening the object store an output URL points at: `file:///abs/dir`, `memory://[prefix]`
//! or `s3://bucket[/prefix]`.
//!
//! Invariants: every object of the job lives under [`OutputLocation::prefix`] in
//! [`OutputLocation::store`]; relative names are joined verbatim (no re-encoding), so the
//! Hive-escaped names of [`super::partition`] reach the store unchanged. Local files are
//! written with fsync, so a completed write survives a crash, like an S3 PUT.
//!
//! S3 settings, lowest precedence first: the standard `AWS_*` environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, …), the
//! bucket from the URL, then the job's `[output.options]` (`endpoint`, `region`,
//! `access_key_id`, `secret_access_key`, `session_token`, `allow_http`,
//! `virtual_hosted_style_request`, or any other key object_store's `AmazonS3ConfigKey`
//! accepts). Requests are path-style unless `virtual_hosted_style_request` is set; an
//! `http://` endpoint allows plain HTTP unless `allow_http` says otherwise; the region
//! defaults to `us-east-1`. Opening does no network I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;

// Percent-decoding the URL path is the same operation as unescaping a Hive value.
use super::partition::unescape_partition_value as percent_decode;

/// Where a job's output goes: the store and the prefix inside it (empty for `file://`,
/// whose store is rooted at the folder, and for a bare `memory://`). The connectors' type,
/// so a trigger keeps its state below the output without a conversion.
pub use sluice_connectors::trigger::StoreLocation as OutputLocation;

/// The output URL cannot be opened. The job's configuration is at fault (or, for
/// `CreateFolder`, the local file system); retrying without a change does not help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("output url {url:?} is not a valid url: {message}")]
    InvalidUrl { url: String, message: String },
    #[error(
        "output url {url:?}: unsupported scheme {scheme:?}; use file:///abs/dir, s3://bucket/prefix or memory://"
    )]
    UnsupportedScheme { url: String, scheme: String },
    #[error(
        "output url {url:?}: unknown option {key:?}; use endpoint, region, access_key_id, secret_access_key, session_token, allow_http, virtual_hosted_style_request or another object_store S3 setting"
    )]
    UnknownOption { url: String, key: String },
    #[error(
        "output url {url:?}: options {keys:?} are not accepted for {scheme}:// outputs; only s3:// takes options"
    )]
    OptionsNotAccepted {
        url: String,
        scheme: String,
        keys: Vec<String>,
    },
    #[error("output url {url:?}: failed to create the output folder {folder:?}: {source}")]
    CreateFolder {
        url: String,
        folder: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("output url {url:?}: {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
}

/// Opens the store of an output URL with the job's store options. Creates a `file://`
/// folder when missing (blocking file-system calls, done once at start).
pub fn open_store(
    url: &str,
    options: &BTreeMap<String, String>,
) -> Result<OutputLocation, StoreError> {
    let parsed = url::Url::parse(url).map_err(|e| StoreError::InvalidUrl {
        url: url.into(),
        message: e.to_string(),
    })?;
    let scheme = parsed.scheme().to_string();
    if scheme != "s3" && !options.is_empty() {
        return Err(StoreError::OptionsNotAccepted {
            url: url.into(),
            scheme,
            keys: options.keys().cloned().collect(),
        });
    }
    match scheme.as_str() {
        "file" => open_local(url, &parsed),
        "memory" => open_memory(url),
        "s3" => open_s3(url, &parsed, options),
        _ => Err(StoreError::UnsupportedScheme {
            url: url.into(),
            scheme,
        }),
    }
}

fn open_local(url: &str, parsed: &url::Url) -> Result<OutputLocation, StoreError> {
    let invalid = |message: &str| StoreError::InvalidUrl {
        url: url.into(),
        message: message.into(),
    };
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("file urls take no query or fragment"));
    }
    let folder = parsed.to_file_path().map_err(|()| {
        invalid("a file url must name an absolute local folder, e.g. file:///data/out")
    })?;
    std::fs::create_dir_all(&folder).map_err(|source| StoreError::CreateFolder {
        url: url.into(),
        folder: folder.clone(),
        source,
    })?;
    let store = LocalFileSystem::new_with_prefix(&folder)
        .map_err(|source| StoreError::Store {
            url: url.into(),
            source,
        })?
        .with_fsync(true);
    Ok(OutputLocation {
        store: Arc::new(store),
        prefix: Path::ROOT,
        url: url.into(),
    })
}

fn open_memory(url: &str) -> Result<OutputLocation, StoreError> {
    let rest = url
        .strip_prefix("memory://")
        .ok_or_else(|| StoreError::InvalidUrl {
            url: url.into(),
            message: "memory urls are written memory://[prefix]".into(),
        })?;
    let prefix = parse_prefix(url, rest)?;
    Ok(OutputLocation {
        store: Arc::new(InMemory::new()),
        prefix,
        url: url.into(),
    })
}

fn open_s3(
    url: &str,
    parsed: &url::Url,
    options: &BTreeMap<String, String>,
) -> Result<OutputLocation, StoreError> {
    let bucket =
        parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| StoreError::InvalidUrl {
                url: url.into(),
                message: "an s3 url names a bucket: s3://bucket/prefix".into(),
            })?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(StoreError::InvalidUrl {
            url: url.into(),
            message: "s3 urls take no query or fragment; put settings in [output.options]".into(),
        });
    }
    let decoded_path = percent_decode(parsed.path()).ok_or_else(|| StoreError::InvalidUrl {
        url: url.into(),
        message: "the prefix is not valid percent-encoded utf-8".into(),
    })?;
    let prefix = parse_prefix(url, &decoded_path)?;

    let mut builder = AmazonS3Builder::from_env();
    // `from_env` reads AWS_ENDPOINT_URL and AWS_ENDPOINT in no set order; the AWS CLI's
    // AWS_ENDPOINT_URL wins.
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        builder = builder.with_config(AmazonS3ConfigKey::Endpoint, endpoint);
    }
    builder = builder.with_config(AmazonS3ConfigKey::Bucket, bucket);
    let mut allow_http_set = std::env::var_os("AWS_ALLOW_HTTP").is_some();
    for (key, value) in options {
        let config_key: AmazonS3ConfigKey = key.parse().map_err(|_| StoreError::UnknownOption {
            url: url.into(),
            key: key.clone(),
        })?;
        if matches!(
            config_key,
            AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)
        ) {
            allow_http_set = true;
        }
        builder = builder.with_config(config_key, value);
    }
    if !allow_http_set {
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        if endpoint.is_some_and(|e| e.starts_with("http://")) {
            builder = builder.with_allow_http(true);
        }
    }
    let store = builder.build().map_err(|source| StoreError::Store {
        url: url.into(),
        source,
    })?;
    Ok(OutputLocation {
        store: Arc::new(store),
        prefix,
        url: url.into(),
    })
}

/// A `/`-separated prefix, leading and trailing separators ignored.
fn parse_prefix(url: &str, raw: &str) -> Result<Path, StoreError> {
    Path::parse(raw.trim_matches('/')).map_err(|e| StoreError::InvalidUrl {
        url: url.into(),
        message: format!("bad prefix {raw:?}: {e}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on unexpected errors
mod tests {
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;

    fn no_options() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[tokio::test]
    async fn file_urls_create_the_folder_and_root_the_store_there() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("nested/out");
        let url = url::Url::from_file_path(&folder).unwrap().to_string();
        let location = open_store(&url, &no_options()).unwrap();
        assert!(folder.is_dir());
        assert_eq!(location.prefix, Path::ROOT);
        assert_eq!(location.url, url);
        let object = location.object_path("a=1/x.parquet").unwrap();
        location
            .store
            .put(&object, PutPayload::from_static(b"hi"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(folder.join("a=1/x.parquet")).unwrap(), b"hi");
    }

    #[test]
    fn relative_file_urls_are_rejected() {
        let error = open_store("file://relative/dir", &no_options()).unwrap_err();
        assert!(matches!(error, StoreError::InvalidUrl { .. }), "{error}");
        assert!(error.to_string().contains("file://relative/dir"));
    }

    #[tokio::test]
    async fn memory_urls_keep_their_prefix() {
        let location = open_store("memory://", &no_options()).unwrap();
        assert_eq!(location.prefix, Path::ROOT);
        let location = open_store("memory://lake/clicks/", &no_options()).unwrap();
        assert_eq!(location.prefix.as_ref(), "lake/clicks");
        let object = location.object_path("d=%2F/f").unwrap();
        assert_eq!(object.as_ref(), "lake/clicks/d=%2F/f", "no re-encoding");
        location
            .store
            .put(&object, PutPayload::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(location.store.head(&object).await.unwrap().size, 1);
    }

    #[test]
    fn object_paths_cannot_escape() {
        let location = open_store("memory://p", &no_options()).unwrap();
        assert!(location.object_path("../x").is_err());
        assert!(location.object_path("a//b").is_err());
        assert!(location.object_path("a/\n").is_err());
    }

    #[test]
    fn unknown_schemes_and_options_are_named() {
        let error = open_store("ftp://host/x", &no_options()).unwrap_err();
        assert!(error.to_string().contains("\"ftp\""), "{error}");

        let options = BTreeMap::from([("endpoint".to_string(), "http://x".to_string())]);
        let error = open_store("memory://", &options).unwrap_err();
        assert!(error.to_string().contains("endpoint"), "{error}");

        let options = BTreeMap::from([("endpiont".to_string(), "http://x".to_string())]);
        let error = open_store("s3://bucket/p", &options).unwrap_err();
        assert!(matches!(error, StoreError::UnknownOption { ref key, .. } if key == "endpiont"));
        assert!(error.to_string().contains("s3://bucket/p"), "{error}");
    }

    #[test]
    fn s3_urls_build_with_options() {
        let options = BTreeMap::from([
            ("endpoint".to_string(), "http://127.0.0.1:8333".to_string()),
            ("region".to_string(), "eu-west-1".to_string()),
            ("access_key_id".to_string(), "key".to_string()),
            ("secret_access_key".to_string(), "secret".to_string()),
        ]);
        let location = open_store("s3://lake/clicks/daily", &options).unwrap();
        assert_eq!(location.prefix.as_ref(), "clicks/daily");
        // The store names its bucket; the prefix is not part of it.
        assert!(
            location.store.to_string().contains("lake"),
            "{}",
            location.store
        );

        let error = open_store("s3:///nobucket", &no_options()).unwrap_err();
        assert!(matches!(error, StoreError::InvalidUrl { .. }), "{error}");
    }

    #[test]
    fn s3_option_values_are_checked() {
        let options = BTreeMap::from([("allow_http".to_string(), "maybe".to_string())]);
        let error = open_store("s3://lake/p", &options).unwrap_err();
        assert!(matches!(error, StoreError::Store { .. }), "{error}");
    }
}
