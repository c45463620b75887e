//! End to end over real services: 5,000 click events on a durable RabbitMQ queue
//! (persistent messages) → the example job → Parquet on the S3 endpoint, with the RabbitMQ
//! broker itself restarted (`rabbitmqctl stop_app` / `start_app`) in the middle of
//! consumption.
//!
//! The producer sets `message_id`, so the deliveries the broker redelivers after the
//! restart — those unacknowledged when it went down, whose output may already be
//! committed — are recognised and not run again: every event lands exactly once. Sluice
//! keeps running through the outage, reconnects once the broker is back, and leaves
//! nothing unacknowledged.
//!
//! This restarts the shared broker, so it is a test binary of its own: Cargo runs test
//! binaries one after another, so no other AMQP test of this repository runs meanwhile.
//! Whatever happens, the broker is started again before the test ends (see
//! [`BrokerRestart`]).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::amqp::{AmqpAdmin, MidConsumption};
use common::*;

const EVENTS: usize = 5_000;
/// Small enough that consumption takes several commits, so the restart lands in the
/// middle with deliveries in flight.
const PREFETCH: usize = 500;
/// Bound on the broker answering again after `start_app`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `rabbitmqctl ARGS`; panics with its output when it fails.
fn rabbitmqctl(args: &[&str]) {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The broker stopped; dropping this starts it again and waits (bounded) until it
/// answers, so other tests find it running even if this one fails.
///
/// By default only the RabbitMQ application stops (`rabbitmqctl stop_app`, the node stays
/// up); with `SLUICE_TEST_RABBITMQ_RESTART=node` the whole node stops (`rabbitmqctl stop`)
/// and starts again as `rabbitmq-server -detached`, as on a Debian machine.
struct BrokerRestart {
    whole_node: bool,
    started: bool,
}

impl BrokerRestart {
    fn stop() -> BrokerRestart {
        let whole_node = std::env::var("SLUICE_TEST_RABBITMQ_RESTART").as_deref() == Ok("node");
        rabbitmqctl(&[if whole_node { "stop" } else { "stop_app" }]);
        BrokerRestart {
            whole_node,
            started: false,
        }
    }

    fn start(&mut self) {
        self.started = true;
        if self.whole_node {
            let status = std::process::Command::new("rabbitmq-server")
                .arg("-detached")
                .status()
                .expect("rabbitmq-server runs");
            assert!(status.success(), "rabbitmq-server -detached: {status}");
        } else {
            rabbitmqctl(&["start_app"]);
        }
        let timeout = STARTUP_TIMEOUT.as_secs().to_string();
        rabbitmqctl(&["await_startup", "--timeout", &timeout]);
    }
}

impl Drop for BrokerRestart {
    fn drop(&mut self) {
        if !self.started {
            let start = if self.whole_node {
                std::process::Command::new("rabbitmq-server")
                    .arg("-detached")
                    .status()
            } else {
                std::process::Command::new("rabbitmqctl")
                    .arg("start_app")
                    .status()
            };
            let _ = start;
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["await_startup", "--timeout", "120"])
                .status();
        }
    }
}

/// Connects to the broker, retrying until it accepts connections again.
async fn admin_when_up(env: &Env) -> AmqpAdmin {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let connected =
            lapin::Connection::connect(&env.amqp_url, lapin::ConnectionProperties::default()).await;
        if let Ok(connection) = connected {
            let _ = connection.close(200, "OK".into()).await;
            return AmqpAdmin::connect(env).await;
        }
        assert!(Instant::now() < deadline, "rabbitmq did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_nothing() {
    // In the middle: some messages acknowledged (gone from the queue), many still there.
    let MidConsumption {
        env,
        admin,
        queue,
        clicks,
        job,
        mut sluice,
    } = MidConsumption::start("clicks-restart", EVENTS, PREFETCH).await;
    drop(admin);

    let mut restart = BrokerRestart::stop();
    // While the broker is down (long enough for the reconnection backoff to grow and for
    // commits to fall into the outage), Sluice keeps running and keeps trying.
    wait_for(
        "sluice to retry the connection a few times",
        Duration::from_secs(60),
        async || {
            sluice.assert_running();
            sluice.logs().matches("amqp reconnection failed").count() >= 5
        },
    )
    .await;
    sluice.assert_running();
    restart.start();
    let admin = admin_when_up(&env).await;

    // The queue and its persistent messages survived; Sluice reconnects and finishes.
    admin
        .finish_after_reconnection(&queue, &job, &mut sluice, &clicks)
        .await;
    admin.delete_queue(&queue).await;
}
