//! One vocabulary for failures: may trying again succeed, or is every retry doomed?
//!
//! Every error the data path retries (a source's, the output store's, the commit
//! protocol's, a dead-letter destination's, the function's) implements [`Classify`], and
//! every retry loop asks [`Classify::is_transient`] alone. The rule for each error lives
//! beside the error, once.
//!
//! | [`Retry`]     | meaning                                             | the platform        |
//! |---------------|-----------------------------------------------------|---------------------|
//! | `Transient`   | the store or broker was unreachable or slow, or the | tries again (with   |
//! |               | function failed on this batch: a later try may pass | backoff)            |
//! | `Permanent`   | configuration, a missing program, broken invariants | stops, or gives up  |
//! |               | or data that no retry changes                       | on the records      |

/// Whether trying the same operation again can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A later try may succeed: nothing the user must fix.
    Transient,
    /// Every try fails the same way until the configuration, the program or the data
    /// changes.
    Permanent,
}

impl Retry {
    /// `Transient` when `transient`, else `Permanent`.
    pub fn when(transient: bool) -> Self {
        if transient {
            Retry::Transient
        } else {
            Retry::Permanent
        }
    }
}

/// An error that says whether a retry can help. See the module docs.
pub trait Classify: std::fmt::Display {
    /// Whether trying the failed operation again can succeed.
    fn retry(&self) -> Retry;

    /// True when [`Classify::retry`] is [`Retry::Transient`].
    fn is_transient(&self) -> bool {
        self.retry() == Retry::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_maps_the_flag_to_the_class() {
        assert_eq!(Retry::when(true), Retry::Transient);
        assert_eq!(Retry::when(false), Retry::Permanent);
    }

    #[test]
    fn a_source_retries_outages_and_acks_but_not_configuration_or_bugs() {
        let (connector, message) = ("kafka", String::from("boom"));
        let transient = [
            crate::SourceError::Unavailable {
                connector,
                message: message.clone(),
            },
            crate::SourceError::Ack {
                connector,
                positions: "kafka:t/0 [1..=2]".into(),
                message: message.clone(),
            },
        ];
        let permanent = [
            crate::SourceError::Config {
                connector,
                message: message.clone(),
            },
            crate::SourceError::Internal { connector, message },
        ];
        assert!(transient.iter().all(Classify::is_transient));
        assert!(
            permanent
                .iter()
                .all(|error| error.retry() == Retry::Permanent)
        );
    }
}
