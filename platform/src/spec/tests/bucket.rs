//! `[trigger.bucket]`: listing and notifications (from the endpoint, a queue or a topic),
//! and each mistake naming its field, nested feed tables included.

use std::path::Path;
use std::time::Duration;

use crate::spec::{SpecErrors, parse_job};
use sluice_connectors::bucket::{InputCompression, InputFormat};

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
    let Some(bucket) = job
        .trigger
        .config::<sluice_connectors::bucket::BucketTriggerConfig>()
    else {
        panic!("expected a bucket trigger")
    };
    assert_eq!(bucket.url, "file:///jobs/files/inbox");
    assert_eq!(bucket.format, InputFormat::Auto);
    assert_eq!(bucket.compression, InputCompression::Auto);
    assert_eq!(bucket.poll_interval, Duration::from_secs(1));
    assert_eq!(
        bucket.discovery,
        sluice_connectors::bucket::BucketDiscovery::Listing
    );
}

#[test]
fn notifications_have_an_endpoint_and_filters() {
    let job = parse("[trigger.bucket]\nurl = \"s3://landing\"\nmode = \"notifications\"\nlisten = \"0.0.0.0:9500\"\nsuffix = \".csv\"").unwrap();
    let Some(bucket) = job
        .trigger
        .config::<sluice_connectors::bucket::BucketTriggerConfig>()
    else {
        panic!("expected a bucket trigger")
    };
    assert_eq!(
        bucket.discovery,
        sluice_connectors::bucket::BucketDiscovery::Notifications {
            feed: Box::new(sluice_connectors::bucket::feed::NotificationFeed::Webhook {
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
    let Some(bucket) = job
        .trigger
        .config::<sluice_connectors::bucket::BucketTriggerConfig>()
    else {
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

/// The notification feed of a bucket trigger in notifications mode.
fn notification_feed(toml: &str) -> sluice_connectors::bucket::feed::NotificationFeed {
    let job = parse(toml).unwrap();
    let Some(bucket) = job
        .trigger
        .config::<sluice_connectors::bucket::BucketTriggerConfig>()
    else {
        panic!("expected a bucket trigger")
    };
    let sluice_connectors::bucket::BucketDiscovery::Notifications { feed, .. } = &bucket.discovery
    else {
        panic!("expected notifications, got {:?}", bucket.discovery)
    };
    feed.as_ref().clone()
}

#[test]
fn notifications_can_arrive_on_a_queue_or_a_topic() {
    use sluice_connectors::bucket::feed::NotificationFeed;
    let feed = notification_feed(
        "[trigger.bucket]\nurl = \"s3://landing\"\nmode = \"notifications\"\n[trigger.bucket.amqp]\nurl = \"amqp://guest:guest@127.0.0.1:5672/%2f\"\nqueue = \"landing-events\"\ndeclare = true\nexchange = \"s3\"\nrouting_keys = [\"#\"]",
    );
    let NotificationFeed::Amqp(amqp) = feed else {
        panic!("expected an amqp feed, got {feed:?}")
    };
    assert_eq!(amqp.queue, "landing-events");
    assert!(amqp.declare);
    assert_eq!(amqp.exchange.as_deref(), Some("s3"));
    assert_eq!(amqp.routing_keys, ["#"]);

    let feed = notification_feed(
        "[trigger.bucket]\nurl = \"s3://landing\"\nmode = \"notifications\"\n[trigger.bucket.kafka]\nbrokers = \"127.0.0.1:9092\"\ntopic = \"landing-events\"",
    );
    let NotificationFeed::Kafka(kafka) = feed else {
        panic!("expected a kafka feed, got {feed:?}")
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
