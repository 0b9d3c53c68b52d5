//! One line for an error and its causes, for messages that must say what
//! went wrong where the error's own text does not (reqwest's "error sending
//! request", tokio-postgres's "db error").
//!
//! Errors keep their sources; this is only how they are shown.

use std::error::Error;

/// `error: cause: cause of the cause ...`, leaving out a cause whose text
/// the message already quotes.
pub(crate) fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("quoting: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_error_once() {
        let io = || std::io::Error::other("disk full");
        assert_eq!(error_chain(&Outer(io())), "outer: disk full");
        assert_eq!(error_chain(&Quoting(io())), "quoting: disk full");
    }
}
