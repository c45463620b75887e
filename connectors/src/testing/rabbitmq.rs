//! The test RabbitMQ (`SLUICE_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), and dropping a client's connection from the
//! server side with `rabbitmqctl`.

/// The test broker's URL.
pub fn broker_url() -> String {
    std::env::var("SLUICE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Closes, from the server side, every connection whose client-provided name is `name`
/// (a job's connection is named `sluice-<job name>`); returns how many there were.
///
/// `rabbitmqctl`'s JSON output shows pids in a form `close_connection` does not take, so
/// the table output is read: one line per connection, the pid, a tab, then the client
/// properties, with the name quoted.
pub async fn close_connections_named(name: &str) -> usize {
    let listed = rabbitmqctl(&[
        "list_connections",
        "pid",
        "client_properties",
        "--no-table-headers",
        "--silent",
    ])
    .await;
    let quoted = format!("\"{name}\"");
    let mut closed = 0;
    for line in listed.lines() {
        let Some((pid, properties)) = line.split_once('\t') else {
            continue;
        };
        if !properties.contains(&quoted) {
            continue;
        }
        rabbitmqctl(&["close_connection", pid.trim(), "test drops the connection"]).await;
        closed += 1;
    }
    closed
}

/// Runs `rabbitmqctl ARGS` and returns its standard output; panics, with its standard
/// error, when it fails.
pub async fn rabbitmqctl(args: &[&str]) -> String {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
