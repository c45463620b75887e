//! The `[trigger.bucket]` section: where input objects appear and how they become records.

use std::time::Duration;

use super::checker::{Checker, DAY};
use super::raw::RawBucketTrigger;
use super::types::{
    BucketDiscovery, BucketTriggerConfig, InputCompression, InputFormat, NotificationFeed,
};
use super::units::is_env_reference;
use sluice_connectors::bucket::webhook::WebhookToken;

impl Checker<'_> {
    pub(super) fn bucket(
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
                        super::secret::shown(other)
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
                            format!("{} is not an address; write ip:port, e.g. \"127.0.0.1:9400\" or \"0.0.0.0:9400\"", super::secret::shown(listen)),
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

    /// Runs a section's checks for a table nested elsewhere, so its errors name the
    /// field where it is written (`trigger.bucket.amqp.queue`, not `trigger.amqp.queue`).
    fn nested<T>(
        &mut self,
        checked_as: &str,
        written_as: &str,
        check: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<T> {
        let before = self.errors.len();
        let checked = check(self);
        for error in &mut self.errors[before..] {
            if let Some(rest) = error.field.strip_prefix(checked_as) {
                error.field = format!("{written_as}{rest}");
            }
        }
        checked
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::spec::{InputCompression, InputFormat, SpecErrors, parse_job};

    fn parse(trigger: &str) -> Result<crate::spec::JobSpec, SpecErrors> {
        let text = format!(
            r#"name = "files"
{trigger}
[function]
command = ["cat"]
[output]
url = "lake"
schema = {{ id = "int64" }}
"#
        );
        parse_job(
            &text,
            Path::new("/jobs/files/job.toml"),
            Path::new("/jobs/files"),
            &|_| None,
        )
    }

    fn field_error(trigger: &str, field: &str) -> String {
        let errors = parse(trigger).unwrap_err();
        match errors.for_field(field) {
            Some(error) => error.to_string(),
            None => panic!("no error for {field}; got:\n{errors}"),
        }
    }

    #[test]
    fn a_folder_is_a_bucket_with_defaults() {
        let job = parse("[trigger.bucket]\nurl = \"inbox\"").unwrap();
        let Some(bucket) = job.trigger.config::<crate::spec::BucketTriggerConfig>() else {
            panic!("expected a bucket trigger")
        };
        assert_eq!(bucket.url, "file:///jobs/files/inbox");
        assert_eq!(bucket.format, InputFormat::Auto);
        assert_eq!(bucket.compression, InputCompression::Auto);
        assert_eq!(bucket.poll_interval, Duration::from_secs(1));
        assert_eq!(bucket.discovery, crate::spec::BucketDiscovery::Listing);
    }

    #[test]
    fn notifications_have_an_endpoint_and_filters() {
        let job = parse("[trigger.bucket]\nurl = \"s3://landing\"\nmode = \"notifications\"\nlisten = \"0.0.0.0:9500\"\nsuffix = \".csv\"").unwrap();
        let Some(bucket) = job.trigger.config::<crate::spec::BucketTriggerConfig>() else {
            panic!("expected a bucket trigger")
        };
        assert_eq!(
            bucket.discovery,
            crate::spec::BucketDiscovery::Notifications {
                feed: Box::new(crate::spec::NotificationFeed::Webhook {
                    listen: "0.0.0.0:9500".parse().unwrap(),
                    token: None,
                }),
                events: vec!["ObjectCreated:".into()],
                prefix: String::new(),
                suffix: ".csv".into(),
            }
        );
    }

    #[test]
    fn every_field_is_read() {
        let job = parse(
            "[trigger.bucket]\nurl = \"s3://landing/clicks\"\nmode = \"listing\"\nformat = \"csv\"\ncompression = \"gzip\"\npoll_interval = \"5s\"\n[trigger.bucket.options]\nregion = \"eu-west-1\"",
        )
        .unwrap();
        let Some(bucket) = job.trigger.config::<crate::spec::BucketTriggerConfig>() else {
            panic!("expected a bucket trigger")
        };
        assert_eq!(bucket.url, "s3://landing/clicks");
        assert_eq!(bucket.format, InputFormat::Csv);
        assert_eq!(bucket.compression, InputCompression::Gzip);
        assert_eq!(bucket.poll_interval, Duration::from_secs(5));
        assert_eq!(
            bucket.options.get("region").map(String::as_str),
            Some("eu-west-1")
        );
    }

    #[test]
    fn mistakes_name_their_field() {
        assert!(
            field_error("[trigger.bucket]\nformat = \"csv\"", "trigger.bucket.url")
                .contains("required")
        );
        assert!(
            field_error(
                "[trigger.bucket]\nurl = \"x\"\nmode = \"push\"",
                "trigger.bucket.mode"
            )
            .contains("notifications")
        );
        assert!(
            field_error(
                "[trigger.bucket]\nurl = \"x\"\nmode = \"notifications\"\nlisten = \"nine\"",
                "trigger.bucket.listen"
            )
            .contains("ip:port")
        );
        assert!(
            field_error(
                "[trigger.bucket]\nurl = \"x\"\nprefix = \"in/\"",
                "trigger.bucket.prefix"
            )
            .contains("notifications")
        );
        assert!(
            field_error(
                "[trigger.bucket]\nurl = \"x\"\nformat = \"xml\"",
                "trigger.bucket.format"
            )
            .contains("csv")
        );
        assert!(
            field_error(
                "[trigger.bucket]\nurl = \"x\"\ncompression = \"bz2\"",
                "trigger.bucket.compression"
            )
            .contains("zstd")
        );
        assert!(
            field_error(
                "[trigger.bucket]\nurl = \"ftp://x/y\"",
                "trigger.bucket.url"
            )
            .contains("ftp")
        );
        field_error(
            "[trigger.bucket]\nurl = \"x\"\nwatch = true",
            "trigger.bucket.watch",
        );
    }

    #[test]
    fn notifications_can_arrive_on_a_queue_or_a_topic() {
        let job = parse(
            "[trigger.bucket]\nurl = \"s3://landing\"\nmode = \"notifications\"\n[trigger.bucket.amqp]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\nqueue = \"landing-events\"\ndeclare = true\nexchange = \"s3\"\nrouting_keys = [\"#\"]",
        )
        .unwrap();
        let Some(bucket) = job.trigger.config::<crate::spec::BucketTriggerConfig>() else {
            panic!("expected a bucket trigger")
        };
        let crate::spec::BucketDiscovery::Notifications { feed, .. } = &bucket.discovery else {
            panic!("expected notifications, got {:?}", bucket.discovery)
        };
        let crate::spec::NotificationFeed::Amqp(amqp) = feed.as_ref() else {
            panic!("expected an amqp feed, got {:?}", bucket.discovery)
        };
        assert_eq!(amqp.queue, "landing-events");
        assert!(amqp.declare);
        assert_eq!(amqp.exchange.as_deref(), Some("s3"));
        assert_eq!(amqp.routing_keys, ["#"]);

        let job = parse(
            "[trigger.bucket]\nurl = \"s3://landing\"\nmode = \"notifications\"\n[trigger.bucket.kafka]\nbrokers = \"127.0.0.1:9092\"\ntopic = \"landing-events\"",
        )
        .unwrap();
        let Some(bucket) = job.trigger.config::<crate::spec::BucketTriggerConfig>() else {
            panic!("expected a bucket trigger")
        };
        let crate::spec::BucketDiscovery::Notifications { feed, .. } = &bucket.discovery else {
            panic!("expected notifications, got {:?}", bucket.discovery)
        };
        let crate::spec::NotificationFeed::Kafka(kafka) = feed.as_ref() else {
            panic!("expected a kafka feed, got {:?}", bucket.discovery)
        };
        assert_eq!(kafka.topic, "landing-events");
        assert_eq!(kafka.group, "sluice-files");
    }

    #[test]
    fn feed_mistakes_name_the_nested_field() {
        let notifications = "[trigger.bucket]\nurl = \"x\"\nmode = \"notifications\"\n";
        assert!(
            field_error(
                &format!("{notifications}[trigger.bucket.amqp]\nurl = \"amqp://127.0.0.1\""),
                "trigger.bucket.amqp.queue"
            )
            .contains("required")
        );
        assert!(
            field_error(
                &format!(
                    "{notifications}[trigger.bucket.amqp]\nurl = \"amqp://app:hunter2@127.0.0.1\"\nqueue = \"q\""
                ),
                "trigger.bucket.amqp.url"
            )
            .contains("AMQP_PASSWORD")
        );
        assert!(
            field_error(
                &format!("{notifications}[trigger.bucket.kafka]\nbrokers = \"127.0.0.1:9092\"\ntopic = \"a b\""),
                "trigger.bucket.kafka.topic"
            )
            .contains("letters")
        );
        assert!(
            field_error(
                &format!(
                    "{notifications}listen = \"127.0.0.1:9400\"\n[trigger.bucket.kafka]\nbrokers = \"h:9092\"\ntopic = \"t\""
                ),
                "trigger.bucket.listen"
            )
            .contains("[trigger.bucket.kafka]")
        );
        assert!(
            field_error(
                &format!(
                    "{notifications}[trigger.bucket.kafka]\nbrokers = \"h:9092\"\ntopic = \"t\"\n[trigger.bucket.amqp]\nurl = \"amqp://127.0.0.1\"\nqueue = \"q\""
                ),
                "trigger.bucket"
            )
            .contains("one of them")
        );
        assert!(
            field_error(
                "[trigger.bucket]\nurl = \"x\"\n[trigger.bucket.amqp]\nurl = \"amqp://127.0.0.1\"\nqueue = \"q\"",
                "trigger.bucket.amqp"
            )
            .contains("mode = \"notifications\"")
        );
        field_error(
            &format!(
                "{notifications}[trigger.bucket.kafka]\nbrokers = \"h:9092\"\ntopic = \"t\"\ngroupp = \"g\""
            ),
            "trigger.bucket.kafka.groupp",
        );
    }
}
