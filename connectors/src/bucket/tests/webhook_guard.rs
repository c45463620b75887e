//! The notification endpoint's guards: a token, and a bounded spool that answers 503.

use super::*;

/// A webhook with a token and spool limits.
fn guarded_webhook_config(
    folders: &Folders,
    token: Option<&str>,
    limits: super::spool::SpoolLimits,
) -> BucketSourceConfig {
    let state = Arc::new(LocalFileSystem::new_with_prefix(&folders.state).unwrap());
    BucketSourceConfig {
        discovery: Discovery::Notifications {
            feed: Box::new(NotificationFeed::Webhook {
                listen: "127.0.0.1:0".parse().unwrap(),
                token: token.map(super::webhook::WebhookToken::new),
            }),
            filter: NoticeFilter::default(),
            spool: NoticeSpool::new(state, Path::from("_sluice/bucket/notices"))
                .with_limits(limits),
        },
        ..config(folders, false)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_endpoint() {
    let folders = folders();
    std::fs::write(folders.inbox.join("a.ndjson"), "{\"n\":1}\n").unwrap();
    let token = "s3cr3t-webhook-token-0123";
    let config = guarded_webhook_config(&folders, Some(token), Default::default());
    let mut source = BucketSource::connect(config).await.unwrap();
    let address = source.notification_address().unwrap();
    let body = aws_body("a.ndjson", "e1");
    assert_eq!(post(address, &body).await, 401, "no token");
    let wrong = "Authorization: Bearer not-the-token\r\n";
    assert_eq!(post_to(address, "/notify", wrong, &body).await, 401);
    assert_eq!(
        spooled(&folders).await,
        0,
        "nothing kept from refused requests"
    );
    let bearer = format!("Authorization: Bearer {token}\r\n");
    assert_eq!(post_to(address, "/notify", &bearer, &body).await, 200);
    let events = next(&mut source).await.expect("the notified object");
    assert_eq!(key_of(&events[0]), "a.ndjson");
    let in_query = format!("/notify?token={token}");
    assert_eq!(
        post_to(address, &in_query, "", &aws_body("b.ndjson", "e2")).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_so_the_sender_retries() {
    let folders = folders();
    let limits = super::spool::SpoolLimits {
        max_entries: 2,
        max_bytes: 1 << 20,
    };
    let source = BucketSource::connect(guarded_webhook_config(&folders, None, limits))
        .await
        .unwrap();
    let address = source.notification_address().unwrap();
    assert_eq!(
        post(address, &aws_body("missing-1.ndjson", "m1")).await,
        200
    );
    assert_eq!(
        post(address, &aws_body("missing-2.ndjson", "m2")).await,
        200
    );
    assert_eq!(
        post(address, &aws_body("missing-3.ndjson", "m3")).await,
        503,
        "full"
    );
    assert_eq!(spooled(&folders).await, 2);
    assert_eq!(
        post(address, &aws_body("missing-1.ndjson", "m1")).await,
        200,
        "a repeat rewrites its entry"
    );
    drop(source);

    // The bound counts what an earlier run left in the spool.
    let source = BucketSource::connect(guarded_webhook_config(&folders, None, limits))
        .await
        .unwrap();
    let address = source.notification_address().unwrap();
    assert_eq!(
        post(address, &aws_body("missing-4.ndjson", "m4")).await,
        503
    );

    let bytes = super::spool::SpoolLimits {
        max_entries: 100,
        max_bytes: 10,
    };
    let folders = self::folders();
    let source = BucketSource::connect(guarded_webhook_config(&folders, None, bytes))
        .await
        .unwrap();
    let address = source.notification_address().unwrap();
    assert_eq!(
        post(address, &aws_body("a.ndjson", "e1")).await,
        503,
        "bytes bound"
    );
}
