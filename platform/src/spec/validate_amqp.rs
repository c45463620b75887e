//! The `[trigger.amqp]` section: broker URL (with the rule that keeps passwords out of the
//! file), queue, optional declaration and bindings, prefetch.
//!
//! Password rule: the URL as written may hold a password only as a `${NAME}` reference
//! (`amqp://app:${AMQP_PASSWORD}@host/vhost`), or be one reference as a whole
//! (`"${AMQP_URL}"`). The one literal allowed is RabbitMQ's default `guest:guest`, which
//! RabbitMQ accepts only from localhost. Errors never show the expanded URL's password.

use sluice_connectors::SourceError;
use sluice_connectors::amqp::{DEFAULT_PREFETCH, parse_broker_url};

use super::checker::Checker;
use super::raw::RawAmqpTrigger;
use super::secret::shown;
use super::types::AmqpTriggerSpec;
use super::units::is_env_reference;

/// Query parameters the AMQP client understands.
const URL_PARAMETERS: &[&str] = &[
    "heartbeat",
    "channel_max",
    "frame_max",
    "connection_timeout",
    "auth_mechanism",
];

/// Values of the `auth_mechanism` parameter.
const AUTH_MECHANISMS: &[&str] = &["plain", "amqplain", "anonymous", "external"];

/// Longest queue, exchange or routing key AMQP allows (a short string), in bytes.
const MAX_NAME_BYTES: usize = 255;

impl Checker<'_> {
    pub(super) fn amqp(&mut self, raw: &RawAmqpTrigger) -> Option<AmqpTriggerSpec> {
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
        let exchange = raw
            .exchange
            .as_deref()
            .and_then(|exchange| self.amqp_exchange(exchange, declare));
        let routing_keys = raw.routing_keys.clone().unwrap_or_default();
        if !routing_keys.is_empty() && raw.exchange.is_none() {
            self.error(
                "trigger.amqp.routing_keys",
                "routing keys need an exchange to bind the queue to; set exchange (with declare = true)",
            );
        }
        for key in &routing_keys {
            self.amqp_name_length("trigger.amqp.routing_keys", "routing key", key);
        }
        let prefetch = self.integer(
            "trigger.amqp.prefetch",
            raw.prefetch,
            u64::from(DEFAULT_PREFETCH),
            1,
            u64::from(u16::MAX),
        );
        Some(AmqpTriggerSpec {
            url: url?,
            queue: queue?,
            declare,
            exchange,
            routing_keys,
            // Bounded to 1..=65535 above.
            prefetch: u16::try_from(prefetch).unwrap_or(DEFAULT_PREFETCH),
        })
    }

    /// Checks a broker URL (the password rule above) and expands it.
    pub(super) fn amqp_url(&mut self, field: &str, raw: &str) -> Option<String> {
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

    /// Checks the URL's query parameters (what the client understands, with values in
    /// range); each error names the parameter. False when any is wrong.
    fn amqp_url_parameters(&mut self, field: &str, url: &str) -> bool {
        let Ok(parsed) = url::Url::parse(url) else {
            // Reported by the URL check that follows.
            return true;
        };
        let mut valid = true;
        for (key, value) in parsed.query_pairs() {
            let problem = match key.as_ref() {
                "heartbeat" | "channel_max" => value
                    .parse::<u16>()
                    .err()
                    .map(|_| format!("a whole number from 0 to {}", u16::MAX)),
                "frame_max" => value
                    .parse::<u32>()
                    .err()
                    .map(|_| format!("a whole number from 0 to {}", u32::MAX)),
                "connection_timeout" => value
                    .parse::<u64>()
                    .err()
                    .map(|_| "a whole number of milliseconds".to_owned()),
                "auth_mechanism" => (!AUTH_MECHANISMS.contains(&value.as_ref()))
                    .then(|| format!("one of {}", AUTH_MECHANISMS.join(", "))),
                _ => {
                    self.error(
                        field,
                        format!(
                            "unknown URL parameter {}; allowed: {}",
                            shown(&key),
                            URL_PARAMETERS.join(", ")
                        ),
                    );
                    valid = false;
                    continue;
                }
            };
            if let Some(allowed) = problem {
                self.error(
                    field,
                    format!(
                        "URL parameter {key}: invalid value {}; allowed: {allowed}",
                        shown(&value)
                    ),
                );
                valid = false;
            }
        }
        valid
    }

    pub(super) fn amqp_queue(&mut self, field: &str, queue: &str, declare: bool) -> Option<String> {
        if queue.is_empty() {
            self.error(field, "empty queue name; name the queue");
            return None;
        }
        if declare && queue.starts_with("amq.") {
            self.error(
                field,
                format!(
                    "{} cannot be declared: names starting with \"amq.\" are reserved by the broker",
                    super::secret::shown(queue)
                ),
            );
            return None;
        }
        self.amqp_name_length(field, "queue name", queue)
            .then(|| queue.to_owned())
    }

    fn amqp_exchange(&mut self, exchange: &str, declare: bool) -> Option<String> {
        const FIELD: &str = "trigger.amqp.exchange";
        if !declare {
            self.error(
                FIELD,
                "bindings are only made for a queue Sluice declares; set declare = true, or bind the queue yourself and omit exchange",
            );
            return None;
        }
        if exchange.is_empty() {
            self.error(
                FIELD,
                "the default exchange (\"\") cannot be bound; it already routes by queue name, so omit exchange",
            );
            return None;
        }
        self.amqp_name_length(FIELD, "exchange name", exchange)
            .then(|| exchange.to_owned())
    }

    /// Records an error and returns false when `name` is longer than AMQP allows.
    fn amqp_name_length(&mut self, field: &str, what: &str, name: &str) -> bool {
        if name.len() > MAX_NAME_BYTES {
            self.error(
                field,
                format!(
                    "{what} is {} bytes long; AMQP allows at most {MAX_NAME_BYTES}",
                    name.len()
                ),
            );
            return false;
        }
        true
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
