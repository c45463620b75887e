//! What an AMQP trigger needs to know, checked without any I/O.
//!
//! [`AmqpSourceConfig::broker_uri`] validates every field and produces the connection
//! address lapin connects to. Invariants of a validated configuration:
//!
//! - the URL is `amqp://` (this build has no TLS), and its host is kept exactly as written
//!   (IP addresses included);
//! - the queue, exchange, routing keys and URL parameters follow the rules of
//!   [`super::rules`] (short strings, reserved names, bindings only for a queue Sluice
//!   declares), the same rules `sluice validate` reports;
//! - the password never appears in anything this module formats: logs and errors use
//!   [`AmqpSourceConfig::redacted_url`].

use std::time::Duration;

use lapin::uri::AMQPUri;

use super::rules::{self, Problem};
use crate::source::SourceError;

/// Default `prefetch`: deliveries the broker may have outstanding (unacknowledged) on the
/// source's channel. The platform holds every delivery until the output derived from it is
/// durable; once half the window is processed the source reports ack pressure and the
/// platform commits without waiting for `output.max_file_age` (see the platform's
/// `commit/design.md`), so a larger window means larger commits, not a higher rate bound.
/// It should be at least `batch.max_records`, else batches are only cut by
/// `batch.max_wait`.
pub const DEFAULT_PREFETCH: u16 = 10_000;

/// First wait before reconnecting after the connection or channel is lost.
pub const DEFAULT_MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts (the backoff doubles up to it).
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A job's AMQP trigger: one queue, consumed with manual acknowledgements.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpSourceConfig {
    /// The job's name; the connection is named `sluice-<job>` (visible in the broker's
    /// connection list) and logs carry it.
    pub job: String,
    /// `amqp://user:password@host:port/vhost` (vhost percent-encoded: `/` is `%2f`; no
    /// path means the default vhost `/`). Query parameters lapin knows (`heartbeat`,
    /// `frame_max`, `channel_max`, `connection_timeout`, `auth_mechanism`) are honoured.
    pub url: String,
    /// The queue to consume.
    pub queue: String,
    /// Declare the queue (durable, no arguments) before consuming, and bind it; when
    /// false the queue must exist.
    pub declare: bool,
    /// With `declare`: an existing exchange to bind the queue to.
    pub exchange: Option<String>,
    /// With `exchange`: one binding per routing key (`""` when empty).
    pub routing_keys: Vec<String>,
    /// Most unacknowledged deliveries the broker sends (`basic.qos`), 1 to 65535. See
    /// [`DEFAULT_PREFETCH`].
    pub prefetch: u16,
    /// First wait before reconnecting; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// Never shows the password.
impl std::fmt::Debug for AmqpSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSourceConfig")
            .field("job", &self.job)
            .field("url", &self.redacted_url())
            .field("queue", &self.queue)
            .field("declare", &self.declare)
            .field("exchange", &self.exchange)
            .field("routing_keys", &self.routing_keys)
            .field("prefetch", &self.prefetch)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

impl AmqpSourceConfig {
    /// A configuration consuming an existing `queue`, with the defaults for the rest.
    pub fn new(job: impl Into<String>, url: impl Into<String>, queue: impl Into<String>) -> Self {
        Self {
            job: job.into(),
            url: url.into(),
            queue: queue.into(),
            declare: false,
            exchange: None,
            routing_keys: Vec::new(),
            prefetch: DEFAULT_PREFETCH,
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// The connection name shown by the broker: `sluice-<job>`.
    pub fn connection_name(&self) -> String {
        format!("sluice-{}", self.job)
    }

    /// The URL with the password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Checks every field (no I/O; the rules of [`super::rules`]) and returns the address
    /// to connect to.
    pub fn broker_uri(&self) -> Result<AMQPUri, SourceError> {
        let problem = |problem: Problem| config_error(problem.to_string());
        rules::check_queue(&self.queue, self.declare).map_err(problem)?;
        if let Some(exchange) = &self.exchange {
            rules::check_exchange(exchange, self.declare).map_err(problem)?;
        }
        if let Some(first) = rules::check_routing_keys(self.exchange.is_some(), &self.routing_keys)
            .into_iter()
            .next()
        {
            return Err(problem(first));
        }
        if self.prefetch == 0 {
            return Err(config_error(
                "prefetch is 0, which AMQP reads as unlimited; give 1 to 65535",
            ));
        }
        if self.min_backoff.is_zero() || self.max_backoff < self.min_backoff {
            return Err(config_error(format!(
                "reconnect backoff {:?}..{:?} is not a positive, increasing range",
                self.min_backoff, self.max_backoff
            )));
        }
        parse_broker_url(&self.url)
    }
}

/// Parses an `amqp://` URL, keeping the host as written: lapin's own parser replaces a
/// host that is an IP address with `localhost`. Its query parameters must follow
/// [`rules::check_url_parameters`]. Errors show the URL without its password.
pub fn parse_broker_url(text: &str) -> Result<AMQPUri, SourceError> {
    let redacted = redact_url(text);
    if let Some(first) = rules::check_url_parameters(text).into_iter().next() {
        return Err(config_error(format!("url {redacted}: {first}")));
    }
    let url = url::Url::parse(text)
        .map_err(|error| config_error(format!("url {redacted} is not a valid URL: {error}")))?;
    match url.scheme() {
        "amqp" => {}
        "amqps" => {
            return Err(config_error(format!(
                "url {redacted}: amqps (TLS) is not supported in this build; use amqp://"
            )));
        }
        other => {
            return Err(config_error(format!(
                "url {redacted}: scheme `{other}` is not AMQP; write amqp://user:password@host:5672/vhost"
            )));
        }
    }
    let host = match url.host() {
        Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => {
            return Err(config_error(format!(
                "url {redacted} has no host; write amqp://user:password@host:5672/vhost"
            )));
        }
    };
    let mut uri: AMQPUri = text
        .parse()
        .map_err(|error: String| config_error(format!("url {redacted}: {error}")))?;
    uri.authority.host = host;
    Ok(uri)
}

/// Replaces the password of a URL with `***`. Text that is not a URL is shown only up to
/// its scheme, as it could hold a password in a form the parser did not recognise.
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have credentials, which have none.
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => match text.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…"),
            None => "(not a URL)".to_owned(),
        },
    }
}

fn config_error(message: impl Into<String>) -> SourceError {
    SourceError::Config {
        connector: "amqp",
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AmqpSourceConfig {
        AmqpSourceConfig::new("clicks", "amqp://app:s3cret@10.1.2.3:5673/prod", "clicks")
    }

    #[test]
    fn keeps_ip_hosts_port_credentials_and_vhost() {
        let uri = config().broker_uri().unwrap();
        assert_eq!(uri.authority.host, "10.1.2.3");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.authority.userinfo.username, "app");
        assert_eq!(uri.authority.userinfo.password, "s3cret");
        assert_eq!(uri.vhost, "prod");
    }

    #[test]
    fn default_vhost_and_encoded_slash() {
        let mut config = config();
        config.url = "amqp://guest:guest@rabbit.local".into();
        let uri = config.broker_uri().unwrap();
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.authority.port, 5672);
        assert_eq!(uri.authority.host, "rabbit.local");
        config.url = "amqp://guest:guest@[::1]:5672/%2f?heartbeat=10".into();
        let uri = config.broker_uri().unwrap();
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.authority.host, "::1");
        assert_eq!(uri.query.heartbeat, Some(10));
    }

    #[test]
    fn rejects_bad_urls_without_showing_the_password() {
        for url in [
            "amqps://app:s3cret@host/v",
            "http://app:s3cret@host/v",
            "amqp://app:s3cret@:5672/v",
            "not a url s3cret",
            "amqp://app:s3cret@host:99999/v",
        ] {
            let mut config = config();
            config.url = url.into();
            let err = config.broker_uri().unwrap_err();
            assert!(matches!(err, SourceError::Config { .. }), "{url}: {err}");
            assert!(!err.to_string().contains("s3cret"), "{url}: {err}");
        }
    }

    #[test]
    fn redacts_passwords_in_debug_and_logs() {
        let config = config();
        assert_eq!(config.redacted_url(), "amqp://app:***@10.1.2.3:5673/prod");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(
            redact_url("amqp://host:5672/%2f"),
            "amqp://host:5672/%2f",
            "nothing to hide"
        );
    }

    #[test]
    fn checks_names_bindings_and_prefetch() {
        type Change = fn(&mut AmqpSourceConfig);
        let cases: [(&str, Change); 9] = [
            ("empty queue name", |c| c.queue = String::new()),
            ("at most 255", |c| c.queue = "q".repeat(256)),
            ("reserved", |c| {
                c.declare = true;
                c.queue = "amq.mine".into();
            }),
            ("set declare = true", |c| c.exchange = Some("ex".into())),
            ("default exchange", |c| {
                c.declare = true;
                c.exchange = Some(String::new());
            }),
            ("need an exchange", |c| c.routing_keys = vec!["k".into()]),
            ("unknown URL parameter", |c| {
                c.url = "amqp://app:s3cret@10.1.2.3:5673/prod?hearbeat=5".into();
            }),
            ("routing key is 256", |c| {
                c.declare = true;
                c.exchange = Some("ex".into());
                c.routing_keys = vec!["k".repeat(256)];
            }),
            ("prefetch is 0", |c| c.prefetch = 0),
        ];
        for (expected, change) in cases {
            let mut config = config();
            change(&mut config);
            let err = config.broker_uri().unwrap_err();
            assert!(err.to_string().contains(expected), "{expected}: {err}");
        }
        let mut bound = config();
        bound.declare = true;
        bound.exchange = Some("events".into());
        bound.routing_keys = vec!["click.#".into(), String::new()];
        bound.broker_uri().unwrap();
        assert_eq!(bound.connection_name(), "sluice-clicks");
    }
}
