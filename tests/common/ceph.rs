//! Ceph RADOS Gateway fixtures (started by `scripts/ceph.sh`): its S3 endpoint and
//! credentials from `SLUICE_TEST_RGW_*`, and `scripts/ceph_probe.py` to point a bucket's
//! notifications at an endpoint.
#![allow(dead_code, clippy::unwrap_used)]

use std::process::Command;

use object_store::aws::{AmazonS3, AmazonS3Builder};

use super::notices::put_clicks;
use super::{JobToml, repo_root};

/// How many objects a Ceph test uploads, and how many clicks each holds.
pub const OBJECTS: usize = 50;
pub const PER_OBJECT: usize = 10;

/// Uploads the [`OBJECTS`] of a Ceph test to the gateway's bucket under `base/`, named
/// with spaces, unicode and `+`.
pub async fn upload_clicks(store: &AmazonS3, base: &str) {
    for n in 0..OBJECTS {
        let key = format!("{base}/día {n} + más.ndjson");
        put_clicks(store, &key, n, PER_OBJECT).await;
    }
}

/// The one RabbitMQ exchange every test's gateway topic publishes to. The gateway keeps
/// one AMQP connection per broker, bound to the exchange of the first topic that used it,
/// and refuses topics naming another ("AMQP connect: exchange mismatch" in its log): a
/// second test with an exchange of its own would get no notifications. Each test binds a
/// queue of its own to it; the exchange is never deleted.
pub const RGW_EXCHANGE: &str = "sluice-test-rgw";

pub struct Rgw {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

pub fn rgw() -> Rgw {
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    Rgw {
        endpoint: var("SLUICE_TEST_RGW_ENDPOINT", "http://127.0.0.1:7480"),
        bucket: var("SLUICE_TEST_RGW_BUCKET", "sluice-notify"),
        access_key: var("SLUICE_TEST_RGW_ACCESS_KEY_ID", "sluice"),
        secret_key: var("SLUICE_TEST_RGW_SECRET_ACCESS_KEY", "sluice-secret-key"),
        region: var("SLUICE_TEST_RGW_REGION", "us-east-1"),
    }
}

impl Rgw {
    /// The clickstream example on notifications for the gateway bucket's `base/` objects,
    /// read with the gateway's endpoint and region; `mode` and the notification feed are
    /// the caller's to set.
    pub fn clickstream_job(&self, base: &str) -> JobToml {
        JobToml::clickstream(base)
            .bucket(&format!("s3://{}/{base}", self.bucket))
            .set("trigger.bucket", "mode", "notifications")
            .set("trigger.bucket.options", "endpoint", &self.endpoint)
            .set("trigger.bucket.options", "region", &self.region)
            .set("batch", "max_wait", "200ms")
    }

    /// Runs `ceph_probe.py COMMAND <endpoint, bucket, credentials> ARGS…`; returns stdout.
    pub fn probe(&self, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg(repo_root().join("scripts/ceph_probe.py"))
            .arg(args[0])
            .args([
                &self.endpoint,
                &self.bucket,
                &self.access_key,
                &self.secret_key,
                &self.region,
            ])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ceph_probe {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// The gateway's bucket as an object store.
    pub fn store(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .build()
            .unwrap()
    }
}
