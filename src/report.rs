//! How the command line prints an error: the message and its causes on one line, each
//! cause once.
//!
//! Many errors print their source as part of their own message (`reading x: denied`) and
//! also return it from `source()`, so printing the chain naively shows every cause twice
//! (`reading x: denied: denied`). Here a cause whose text the line already holds is
//! skipped; every command prints errors through this.

/// The error and its causes joined with `: `, each cause once.
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if cause.is_empty() || line.contains(&cause) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&cause);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the input: {source}")]
    struct Reading {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_printed_once() {
        let error = anyhow::Error::new(Reading {
            source: std::io::Error::other("permission denied"),
        })
        .context("job clicks");
        assert_eq!(
            error_chain(&error),
            "job clicks: reading the input: permission denied"
        );
        assert_eq!(
            format!("{error:#}"),
            "job clicks: reading the input: permission denied: permission denied",
            "what the chain looks like without the fix"
        );
    }

    #[test]
    fn causes_not_in_the_message_are_kept() {
        let error = anyhow::anyhow!("connection refused").context("connecting the trigger");
        assert_eq!(
            error_chain(&error),
            "connecting the trigger: connection refused"
        );
    }
}
