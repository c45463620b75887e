//! The AMQP connector's tables in `job.toml`, `[trigger.amqp]` and `[dead_letter.amqp]`:
//! the serde structs that mirror them and the checks that turn them into
//! [`AmqpSourceConfig`] and [`AmqpDeadLetterConfig`]: broker URL (with the rule that
//! keeps passwords out of the file), queue, optional declaration and bindings, prefetch.
//! The rules of names and URL parameters are [`rules`]; this file reports them on the
//! fields of the file.
//!
//! Password rule: the URL as written may hold a password only as a `${NAME}` reference
//! (`amqp://app:${AMQP_PASSWORD}@host/vhost`), or be one reference as a whole
//! (`"${AMQP_URL}"`). The one literal allowed is RabbitMQ's default `guest:guest`, which
//! RabbitMQ accepts only from localhost. Errors never show the expanded URL's password.
//!
//! The same trigger table is read for `[trigger.bucket.amqp]`; its errors are then moved
//! to that name by the bucket connector.

use std::sync::Arc;

use serde::Deserialize;

use super::{AmqpDeadLetterConfig, AmqpSourceConfig, DEFAULT_PREFETCH, parse_broker_url, rules};
use crate::SourceError;
use crate::config_check::Checker;
use crate::config_check::raw::saturating_integer;
use crate::config_check::units::is_env_reference;
use crate::dead_letter::LetterBroker;
use crate::registry::{DeadLetterTable, TriggerTable};
use crate::trigger::Trigger;

/// `[trigger.amqp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpTrigger {
    /// Broker address (required), `amqp://user:password@host:5672/vhost` (`%2f` for the
    /// vhost `/`); `${NAME}` references are expanded. A password must be a `${NAME}`
    /// reference (or the whole URL one); only RabbitMQ's default `guest:guest` may be
    /// written literally.
    pub url: Option<String>,
    /// The queue to consume (required), at most 255 bytes.
    pub queue: Option<String>,
    /// Declare the queue (durable) before consuming, and bind it to `exchange`; default
    /// false: the queue must exist.
    pub declare: Option<bool>,
    /// With `declare = true`: an existing exchange to bind the queue to.
    pub exchange: Option<String>,
    /// With `exchange`: one binding per routing key (default: one binding with `""`).
    pub routing_keys: Option<Vec<String>>,
    /// Most unacknowledged deliveries the broker sends at once, 1 to 65535 (default
    /// 10000); must cover what arrives within `output.max_file_age`.
    #[serde(default, deserialize_with = "saturating_integer")]
    pub prefetch: Option<i64>,
}

/// `[dead_letter.amqp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmqpDeadLetter {
    /// Broker address, like `[trigger.amqp]`'s `url`; default: the AMQP trigger's `url`
    /// (required when the trigger is not AMQP).
    pub url: Option<String>,
    /// The queue dead letters are published to (required).
    pub queue: Option<String>,
    /// Declare the queue (durable) before publishing; default true. `false`: the queue
    /// must exist.
    pub declare: Option<bool>,
}

impl TriggerTable for RawAmqpTrigger {
    fn check(&self, checker: &mut Checker<'_>, job: Option<&str>) -> Option<Arc<dyn Trigger>> {
        checker
            .amqp(self, job)
            .map(|config| Arc::new(config) as Arc<dyn Trigger>)
    }
}

impl DeadLetterTable for RawAmqpDeadLetter {
    fn check(
        &self,
        checker: &mut Checker<'_>,
        trigger: Option<&dyn Trigger>,
        _job: Option<&str>,
    ) -> Option<Arc<dyn LetterBroker>> {
        checker
            .amqp_dead_letter(self, trigger)
            .map(|config| Arc::new(config) as Arc<dyn LetterBroker>)
    }
}

impl Checker<'_> {
    /// The AMQP connector's configuration for `[trigger.amqp]` (or
    /// `[trigger.bucket.amqp]`); reconnection keeps the connector's defaults.
    pub(crate) fn amqp(
        &mut self,
        raw: &RawAmqpTrigger,
        job_name: Option<&str>,
    ) -> Option<AmqpSourceConfig> {
        let url = match raw.url.as_deref() {
            None => {
                self.missing(
                    "trigger.amqp.url",
                    "url = \"amqp://app:${AMQP_PASSWORD}@rabbitmq:5672/%2f\"",
                );
                None
            }
            Some(url) => self.amqp_url("trigger.amqp.url", url),
        };
        let declare = raw.declare.unwrap_or(false);
        let queue = match raw.queue.as_deref() {
            None => {
                self.missing("trigger.amqp.queue", "queue = \"clicks\"");
                None
            }
            Some(queue) => self.amqp_queue("trigger.amqp.queue", queue, declare),
        };
        let exchange = raw.exchange.as_deref().and_then(|exchange| {
            self.amqp_rule(
                "trigger.amqp.exchange",
                rules::check_exchange(exchange, declare),
            )
            .then(|| exchange.to_owned())
        });
        let routing_keys = raw.routing_keys.clone().unwrap_or_default();
        for problem in rules::check_routing_keys(raw.exchange.is_some(), &routing_keys) {
            self.error("trigger.amqp.routing_keys", problem.to_string());
        }
        let prefetch = self.integer(
            "trigger.amqp.prefetch",
            raw.prefetch,
            u64::from(DEFAULT_PREFETCH),
            1,
            u64::from(u16::MAX),
        );
        let mut config = AmqpSourceConfig::new(job_name.unwrap_or_default(), url?, queue?);
        config.declare = declare;
        config.exchange = exchange;
        config.routing_keys = routing_keys;
        // Bounded to 1..=65535 above.
        config.prefetch = u16::try_from(prefetch).unwrap_or(DEFAULT_PREFETCH);
        Some(config)
    }

    /// Checks a broker URL (the password rule above) and expands it.
    pub(crate) fn amqp_url(&mut self, field: &str, raw: &str) -> Option<String> {
        if let Some(password) = literal_password(raw) {
            let user = url_user(raw).unwrap_or_default();
            if !(user == "guest" && password == "guest") {
                self.error(
                    field,
                    "holds a literal password, which must come from the environment: write it as \
                     amqp://user:${AMQP_PASSWORD}@host:5672/vhost, or the whole URL as \"${AMQP_URL}\" \
                     (only RabbitMQ's default guest:guest may be written as is)",
                );
                return None;
            }
        }
        let url = self.expand(field, raw)?;
        if let Ok(parsed) = url::Url::parse(&url)
            && let Some(password) = parsed.password()
        {
            self.secrets.insert(password);
            if let Ok(decoded) = percent_decode(password) {
                self.secrets.insert(&decoded);
            }
        }
        if !self.amqp_url_parameters(field, &url) {
            return None;
        }
        match parse_broker_url(&url) {
            Ok(_) => Some(url),
            Err(SourceError::Config { message, .. }) => {
                self.error(field, message);
                None
            }
            Err(other) => {
                self.error(field, other.to_string());
                None
            }
        }
    }

    /// Reports every broken rule of the URL's query parameters (what the client
    /// understands, with values in range), each naming the parameter. False when any is.
    fn amqp_url_parameters(&mut self, field: &str, url: &str) -> bool {
        let problems = rules::check_url_parameters(url);
        let valid = problems.is_empty();
        for problem in problems {
            self.error(field, problem.to_string());
        }
        valid
    }

    pub(crate) fn amqp_queue(&mut self, field: &str, queue: &str, declare: bool) -> Option<String> {
        self.amqp_rule(field, rules::check_queue(queue, declare))
            .then(|| queue.to_owned())
    }

    /// Records the problem, if any, on `field`; true when there is none.
    fn amqp_rule(&mut self, field: &str, checked: Result<(), rules::Problem>) -> bool {
        match checked {
            Ok(()) => true,
            Err(problem) => {
                self.error(field, problem.to_string());
                false
            }
        }
    }

    pub(crate) fn amqp_dead_letter(
        &mut self,
        raw: &RawAmqpDeadLetter,
        trigger: Option<&dyn Trigger>,
    ) -> Option<AmqpDeadLetterConfig> {
        const URL: &str = "dead_letter.amqp.url";
        let amqp_trigger =
            trigger.and_then(|trigger| trigger.as_any().downcast_ref::<AmqpSourceConfig>());
        let url = match (&raw.url, trigger, amqp_trigger) {
            (Some(url), _, _) => self.amqp_url(URL, url),
            (None, _, Some(amqp)) => Some(amqp.url.clone()),
            (None, None, _) => None,
            (None, Some(_), None) => {
                self.error(
                    URL,
                    "required when the trigger is not AMQP, e.g. url = \"amqp://app:${AMQP_PASSWORD}@rabbitmq:5672/%2f\"",
                );
                None
            }
        };
        let declare = raw.declare.unwrap_or(true);
        let queue = match raw.queue.as_deref() {
            None => {
                self.missing("dead_letter.amqp.queue", "queue = \"clicks-dead-letters\"");
                None
            }
            Some(queue) => self.amqp_queue("dead_letter.amqp.queue", queue, declare),
        };
        if let (Some(amqp), Some(queue)) = (amqp_trigger, &queue)
            && amqp.queue == *queue
            && raw.url.is_none()
        {
            self.error(
                "dead_letter.amqp.queue",
                "is the queue the job consumes; dead letters need a queue of their own",
            );
        }
        Some(AmqpDeadLetterConfig {
            url: url?,
            queue: queue?,
            declare,
        })
    }
}

/// A percent-encoded URL part, decoded (a password written `p%40ss` is sent as `p@ss`).
fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let decoded = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8(out)
}

/// The userinfo of a URL as written (before `${NAME}` expansion), if it has one.
fn userinfo(raw: &str) -> Option<&str> {
    let (_, rest) = raw.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, _) = rest[..authority_end].rsplit_once('@')?;
    Some(userinfo)
}

fn url_user(raw: &str) -> Option<&str> {
    userinfo(raw).map(|userinfo| userinfo.split_once(':').map_or(userinfo, |(user, _)| user))
}

/// The password written in the URL when it is not a single `${NAME}` reference.
fn literal_password(raw: &str) -> Option<&str> {
    if is_env_reference(raw) {
        return None;
    }
    let (_, password) = userinfo(raw)?.split_once(':')?;
    (!password.is_empty() && !is_env_reference(password)).then_some(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_literal_passwords_only() {
        assert_eq!(literal_password("amqp://app:s3cret@host/v"), Some("s3cret"));
        assert_eq!(
            literal_password("amqp://app:pa/ss@host/v"),
            None,
            "a '/' ends the authority: no userinfo"
        );
        assert_eq!(literal_password("amqp://app:${PASS}@host/v"), None);
        assert_eq!(literal_password("${AMQP_URL}"), None);
        assert_eq!(literal_password("amqp://app@host/v"), None);
        assert_eq!(literal_password("amqp://host:5672/%2f"), None);
        assert_eq!(literal_password("amqp://app:@host"), None);
        assert_eq!(
            literal_password("amqp://app:x${PASS}@host"),
            Some("x${PASS}")
        );
        assert_eq!(url_user("amqp://guest:guest@localhost"), Some("guest"));
        assert_eq!(url_user("amqp://localhost"), None);
    }
}
