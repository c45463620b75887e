//! The bucket connector's table in `job.toml`, `[trigger.bucket]`: the serde struct that
//! mirrors it and the checks that turn it into a [`BucketTriggerConfig`] — where input
//! objects appear, how they are found (listing, or notifications from the HTTP endpoint,
//! `[trigger.bucket.amqp]` or `[trigger.bucket.kafka]`) and how they become records.
//! The nested feed tables are the AMQP and Kafka connectors' trigger tables, checked by
//! them and reported under the names written here.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::feed::NotificationFeed;
use super::webhook::WebhookToken;
use super::{BucketDiscovery, BucketTriggerConfig, InputCompression, InputFormat};
use crate::amqp::table::RawAmqpTrigger;
use crate::config_check::raw::{RawDuration, RawOptions};
use crate::config_check::secret::shown;
use crate::config_check::units::is_env_reference;
use crate::config_check::{Checker, DAY};
use crate::kafka::table::RawKafkaTrigger;
use crate::registry::TriggerTable;
use crate::trigger::Trigger;

/// `[trigger.bucket]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucketTrigger {
    /// Where input objects appear (required): `s3://bucket/prefix`, `file:///abs/path`, or a
    /// folder path relative to the job folder (`"inbox"`). `${NAME}` is expanded.
    pub url: Option<String>,
    /// How objects are found: `"listing"` (default: poll the prefix, with a durable cursor
    /// beside the output) or `"notifications"` (S3 event notifications POSTed to `listen`,
    /// or published on the queue of `[trigger.bucket.amqp]` or the topic of
    /// `[trigger.bucket.kafka]`).
    pub mode: Option<String>,
    /// Notifications: the address the HTTP endpoint listens on (default `127.0.0.1:9400`);
    /// not with `[trigger.bucket.amqp]` or `[trigger.bucket.kafka]`.
    pub listen: Option<String>,
    /// Notifications: the shared token the HTTP endpoint requires, as a `${NAME}`
    /// reference (`Authorization: Bearer <token>`, or `?token=<token>` in the endpoint
    /// URL); default none: any request is accepted.
    pub token: Option<String>,
    /// Notifications: read them from an AMQP queue instead of the HTTP endpoint; the same
    /// fields as `[trigger.amqp]`.
    pub amqp: Option<RawAmqpTrigger>,
    /// Notifications: read them from a Kafka topic instead of the HTTP endpoint; the same
    /// fields as `[trigger.kafka]` (the group defaults to `sluice-<name>`).
    pub kafka: Option<RawKafkaTrigger>,
    /// Notifications: event-name prefixes to process (default `["ObjectCreated:"]`).
    pub events: Option<Vec<String>>,
    /// Notifications: only keys starting with this.
    pub prefix: Option<String>,
    /// Notifications: only keys ending with this.
    pub suffix: Option<String>,
    /// How an object becomes records: `"auto"` (default: `.csv` → csv, `.json` → json,
    /// otherwise lines), `"lines"` (NDJSON or text), `"csv"` (header row), `"json"` (an
    /// array or one object), `"raw"` (one record: the bytes).
    pub format: Option<String>,
    /// `"auto"` (default: by `.gz` / `.zst` suffix), `"none"`, `"gzip"`, `"zstd"`.
    pub compression: Option<String>,
    /// How often the prefix is listed for new objects (default 1s).
    pub poll_interval: Option<RawDuration>,
    /// Notifications: how long a notified object may be missing before its notification
    /// is dead-lettered and leaves the spool (default 5m).
    pub missing_timeout: Option<RawDuration>,
    /// Object-store options for the input, like `[output.options]`.
    #[serde(default)]
    pub options: RawOptions,
}

impl TriggerTable for RawBucketTrigger {
    fn check(&self, checker: &mut Checker<'_>, job: Option<&str>) -> Option<Arc<dyn Trigger>> {
        checker
            .bucket(self, job)
            .map(|config| Arc::new(config) as Arc<dyn Trigger>)
    }
}

impl Checker<'_> {
    pub(crate) fn bucket(
        &mut self,
        raw: &RawBucketTrigger,
        job_name: Option<&str>,
    ) -> Option<BucketTriggerConfig> {
        let url = match &raw.url {
            None => {
                self.missing(
                    "trigger.bucket.url",
                    "url = \"s3://landing/clicks\" or url = \"./inbox\"",
                );
                None
            }
            Some(url) => self
                .expand("trigger.bucket.url", url)
                .and_then(|url| self.store_url("trigger.bucket.url", &url)),
        };
        let discovery = match raw.mode.as_deref() {
            None | Some("listing") => {
                for (field, set) in [
                    ("listen", raw.listen.is_some()),
                    ("token", raw.token.is_some()),
                    ("events", raw.events.is_some()),
                    ("prefix", raw.prefix.is_some()),
                    ("suffix", raw.suffix.is_some()),
                    ("amqp", raw.amqp.is_some()),
                    ("kafka", raw.kafka.is_some()),
                ] {
                    if set {
                        self.error(
                            format!("trigger.bucket.{field}"),
                            "only used with mode = \"notifications\"",
                        );
                    }
                }
                Some(BucketDiscovery::Listing)
            }
            Some("notifications") => self.notifications(raw, job_name),
            Some(other) => {
                self.error(
                    "trigger.bucket.mode",
                    format!(
                        "unknown mode {}; allowed: \"listing\", \"notifications\"",
                        shown(other)
                    ),
                );
                None
            }
        };
        let format = self.choice(
            "trigger.bucket.format",
            raw.format.as_deref(),
            InputFormat::Auto,
            &[
                ("auto", InputFormat::Auto),
                ("lines", InputFormat::Lines),
                ("csv", InputFormat::Csv),
                ("json", InputFormat::Json),
                ("raw", InputFormat::Raw),
            ],
            &[],
        );
        let compression = self.choice(
            "trigger.bucket.compression",
            raw.compression.as_deref(),
            InputCompression::Auto,
            &[
                ("auto", InputCompression::Auto),
                ("none", InputCompression::None),
                ("gzip", InputCompression::Gzip),
                ("zstd", InputCompression::Zstd),
            ],
            &[],
        );
        let poll_interval = self.duration(
            "trigger.bucket.poll_interval",
            raw.poll_interval.as_ref(),
            Duration::from_secs(1),
            Duration::from_millis(10),
            DAY,
        );
        let missing_timeout = self.duration(
            "trigger.bucket.missing_timeout",
            raw.missing_timeout.as_ref(),
            Duration::from_secs(300),
            Duration::from_millis(10),
            7 * DAY,
        );
        let options = self.options("trigger.bucket.options", &raw.options, true);
        Some(BucketTriggerConfig {
            url: url?,
            discovery: discovery?,
            format,
            compression,
            poll_interval,
            missing_timeout,
            options,
        })
    }
}

impl Checker<'_> {
    fn notifications(
        &mut self,
        raw: &RawBucketTrigger,
        job_name: Option<&str>,
    ) -> Option<BucketDiscovery> {
        let feed = self.notification_feed(raw, job_name);
        let events = raw
            .events
            .clone()
            .unwrap_or_else(|| vec!["ObjectCreated:".to_owned()]);
        if events.is_empty() {
            self.error(
                "trigger.bucket.events",
                "no event names; omit it for [\"ObjectCreated:\"]",
            );
        }
        Some(BucketDiscovery::Notifications {
            feed: Box::new(feed?),
            events,
            prefix: raw.prefix.clone().unwrap_or_default(),
            suffix: raw.suffix.clone().unwrap_or_default(),
        })
    }
}

impl Checker<'_> {
    /// The webhook (default), `[trigger.bucket.amqp]` or `[trigger.bucket.kafka]`.
    fn notification_feed(
        &mut self,
        raw: &RawBucketTrigger,
        job_name: Option<&str>,
    ) -> Option<NotificationFeed> {
        match (&raw.amqp, &raw.kafka) {
            (Some(_), Some(_)) => {
                self.error(
                    "trigger.bucket",
                    "both [trigger.bucket.amqp] and [trigger.bucket.kafka] declared; notifications come from one of them (or, with neither, from the HTTP endpoint on listen)",
                );
                None
            }
            (Some(amqp), None) => {
                self.feed_without_listen(raw, "amqp");
                self.nested("trigger.amqp", "trigger.bucket.amqp", |checker| {
                    checker.amqp(amqp, job_name)
                })
                .map(NotificationFeed::Amqp)
            }
            (None, Some(kafka)) => {
                self.feed_without_listen(raw, "kafka");
                self.nested("trigger.kafka", "trigger.bucket.kafka", |checker| {
                    checker.kafka(kafka, job_name)
                })
                .map(NotificationFeed::Kafka)
            }
            (None, None) => {
                let token = self.webhook_token(raw.token.as_deref());
                let listen = raw.listen.as_deref().unwrap_or("127.0.0.1:9400");
                match listen.parse() {
                    Ok(listen) => Some(NotificationFeed::Webhook {
                        listen,
                        token: token?,
                    }),
                    Err(_) => {
                        self.error(
                            "trigger.bucket.listen",
                            format!("{} is not an address; write ip:port, e.g. \"127.0.0.1:9400\" or \"0.0.0.0:9400\"", shown(listen)),
                        );
                        None
                    }
                }
            }
        }
    }

    fn feed_without_listen(&mut self, raw: &RawBucketTrigger, feed: &str) {
        for (field, set) in [
            ("listen", raw.listen.is_some()),
            ("token", raw.token.is_some()),
        ] {
            if set {
                self.error(
                    format!("trigger.bucket.{field}"),
                    format!("only used for the HTTP endpoint; notifications come from [trigger.bucket.{feed}], so omit {field}"),
                );
            }
        }
    }

    /// The endpoint's token: a `${NAME}` reference to a value of at least 16 characters.
    /// `Some(None)`: no token; `None`: an error was recorded.
    fn webhook_token(&mut self, raw: Option<&str>) -> Option<Option<WebhookToken>> {
        const FIELD: &str = "trigger.bucket.token";
        let Some(raw) = raw else {
            return Some(None);
        };
        if !is_env_reference(raw) {
            self.error(
                FIELD,
                "holds a secret, which must come from the environment: write it as a reference such as \"${WEBHOOK_TOKEN}\"",
            );
            return None;
        }
        let token = self.expand(FIELD, raw)?;
        self.secrets.insert(&token);
        if token.chars().count() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            self.error(
                FIELD,
                "the token is too weak or malformed; allowed: at least 16 characters without spaces or control characters",
            );
            return None;
        }
        Some(Some(WebhookToken::new(token)))
    }
}
