//! The rules of an AMQP trigger's names and URL, stated once: `sluice validate` reports
//! each broken rule on the field it concerns, and [`super::AmqpSourceConfig::broker_uri`]
//! refuses a configuration that breaks one. Pure, no I/O.
//!
//! | rule                                                                 | problem                          |
//! |----------------------------------------------------------------------|----------------------------------|
//! | a queue has a name                                                   | [`Problem::EmptyQueue`]          |
//! | a queue, exchange or routing key fits a short string (255 bytes)     | [`Problem::TooLong`]             |
//! | a queue named `amq.…` is the broker's: Sluice cannot declare it      | [`Problem::ReservedQueue`]       |
//! | an exchange is bound only to a queue Sluice declares                 | [`Problem::ExchangeWithoutDeclare`] |
//! | the default exchange (`""`) is never bound                           | [`Problem::DefaultExchange`]     |
//! | routing keys come with an exchange                                   | [`Problem::KeysWithoutExchange`] |
//! | URL query parameters are ones the client knows, with valid values    | [`Problem::UnknownParameter`], [`Problem::ParameterValue`] |

use std::fmt;

use crate::text::shown;

/// Longest queue, exchange or routing-key name AMQP 0-9-1 allows (a short string).
pub const MAX_NAME_BYTES: usize = 255;

/// Query parameters the AMQP client understands.
pub const URL_PARAMETERS: &[&str] = &[
    "heartbeat",
    "channel_max",
    "frame_max",
    "connection_timeout",
    "auth_mechanism",
];

/// Values of the `auth_mechanism` parameter.
const AUTH_MECHANISMS: &[&str] = &["plain", "amqplain", "anonymous", "external"];

/// A broken rule; its `Display` is the message shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    EmptyQueue,
    /// `what` (`queue name`, `exchange name`, `routing key`) is `bytes` long.
    TooLong {
        what: &'static str,
        bytes: usize,
    },
    ReservedQueue {
        queue: String,
    },
    ExchangeWithoutDeclare,
    DefaultExchange,
    KeysWithoutExchange,
    UnknownParameter {
        key: String,
    },
    ParameterValue {
        key: String,
        value: String,
        allowed: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::EmptyQueue => f.write_str("empty queue name; name the queue"),
            Problem::TooLong { what, bytes } => write!(
                f,
                "{what} is {bytes} bytes long; AMQP allows at most {MAX_NAME_BYTES}"
            ),
            Problem::ReservedQueue { queue } => write!(
                f,
                "{} cannot be declared: names starting with \"amq.\" are reserved by the broker",
                shown(queue)
            ),
            Problem::ExchangeWithoutDeclare => f.write_str(
                "bindings are only made for a queue Sluice declares; set declare = true, or bind the queue yourself and omit exchange",
            ),
            Problem::DefaultExchange => f.write_str(
                "the default exchange (\"\") cannot be bound; it already routes by queue name, so omit exchange",
            ),
            Problem::KeysWithoutExchange => f.write_str(
                "routing keys need an exchange to bind the queue to; set exchange (with declare = true)",
            ),
            Problem::UnknownParameter { key } => write!(
                f,
                "unknown URL parameter {}; allowed: {}",
                shown(key),
                URL_PARAMETERS.join(", ")
            ),
            Problem::ParameterValue {
                key,
                value,
                allowed,
            } => write!(
                f,
                "URL parameter {key}: invalid value {}; allowed: {allowed}",
                shown(value)
            ),
        }
    }
}

/// The queue to consume (or publish dead letters to), declared by Sluice or not.
pub fn check_queue(queue: &str, declare: bool) -> Result<(), Problem> {
    if queue.is_empty() {
        return Err(Problem::EmptyQueue);
    }
    if declare && queue.starts_with("amq.") {
        return Err(Problem::ReservedQueue {
            queue: queue.to_owned(),
        });
    }
    check_length("queue name", queue)
}

/// An exchange to bind the queue to.
pub fn check_exchange(exchange: &str, declare: bool) -> Result<(), Problem> {
    if !declare {
        return Err(Problem::ExchangeWithoutDeclare);
    }
    if exchange.is_empty() {
        return Err(Problem::DefaultExchange);
    }
    check_length("exchange name", exchange)
}

/// The routing keys of the bindings, given an exchange or not.
pub fn check_routing_keys(has_exchange: bool, keys: &[String]) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !keys.is_empty() && !has_exchange {
        problems.push(Problem::KeysWithoutExchange);
    }
    problems.extend(
        keys.iter()
            .filter_map(|key| check_length("routing key", key).err()),
    );
    problems
}

/// The query parameters of a broker URL: each one the client knows, with a value in
/// range. A text that is not a URL has none (the URL check reports it).
pub fn check_url_parameters(url: &str) -> Vec<Problem> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for (key, value) in parsed.query_pairs() {
        let allowed = match key.as_ref() {
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
                problems.push(Problem::UnknownParameter {
                    key: key.into_owned(),
                });
                continue;
            }
        };
        if let Some(allowed) = allowed {
            problems.push(Problem::ParameterValue {
                key: key.into_owned(),
                value: value.into_owned(),
                allowed,
            });
        }
    }
    problems
}

fn check_length(what: &'static str, name: &str) -> Result<(), Problem> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Problem::TooLong {
            what,
            bytes: name.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_needs_a_name_within_a_short_string() {
        assert_eq!(check_queue("", false), Err(Problem::EmptyQueue));
        assert_eq!(
            check_queue(&"q".repeat(256), false),
            Err(Problem::TooLong {
                what: "queue name",
                bytes: 256
            })
        );
        assert_eq!(check_queue(&"q".repeat(255), false), Ok(()));
        assert_eq!(check_queue("orders/1", true), Ok(()));
    }

    #[test]
    fn only_a_queue_sluice_declares_may_not_be_the_brokers() {
        assert_eq!(check_queue("amq.gen-1", false), Ok(()));
        assert!(matches!(
            check_queue("amq.mine", true),
            Err(Problem::ReservedQueue { .. })
        ));
    }

    #[test]
    fn an_exchange_is_bound_only_to_a_declared_queue_and_never_the_default() {
        assert_eq!(
            check_exchange("events", false),
            Err(Problem::ExchangeWithoutDeclare)
        );
        assert_eq!(check_exchange("", true), Err(Problem::DefaultExchange));
        assert_eq!(check_exchange("events", true), Ok(()));
        assert_eq!(
            check_routing_keys(false, &["k".into()]),
            vec![Problem::KeysWithoutExchange]
        );
        assert_eq!(
            check_routing_keys(true, &["k".repeat(256), String::new()]),
            vec![Problem::TooLong {
                what: "routing key",
                bytes: 256
            }]
        );
    }

    #[test]
    fn url_parameters_are_known_and_in_range() {
        assert!(check_url_parameters("amqp://h/%2f?heartbeat=10&auth_mechanism=plain").is_empty());
        let problems = check_url_parameters("amqp://h/?hearbeat=1&frame_max=-1&auth_mechanism=x");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0]
                .to_string()
                .contains("unknown URL parameter \"hearbeat\"")
        );
        assert!(
            problems[1]
                .to_string()
                .starts_with("URL parameter frame_max: invalid value \"-1\"")
        );
        assert!(problems[2].to_string().contains("one of plain, amqplain"));
        assert!(check_url_parameters("not a url").is_empty());
    }
}
