//! Why a subcommand stopped short, and the exit code that tells scripts which
//! case it was. The codes are part of the contract (see `--help`).

use std::fmt;

/// Exit code: an action was attempted and failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad input (a flag, a file, the spec); nothing was changed.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no safe decision, or what was needed did not answer; nothing was changed.
pub const EXIT_REFUSED: u8 = 3;

/// A subcommand that did not complete.
#[derive(Debug)]
pub enum Stop {
    /// Bad input: one line naming the input and what is wrong.
    Usage(String),
    /// Nothing was changed because no safe decision could be made, or a
    /// server it needed did not answer.
    Refused(String),
    /// An action failed; the error's context says what state things were left in.
    Failed(anyhow::Error),
}

impl Stop {
    pub fn exit_code(&self) -> u8 {
        match self {
            Stop::Usage(_) => EXIT_USAGE,
            Stop::Refused(_) => EXIT_REFUSED,
            Stop::Failed(_) => EXIT_FAILED,
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Stop::Usage(message) | Stop::Refused(message) => f.write_str(message),
            // `{:#}` joins the context chain into one line: what failed, against
            // what, the cause, and what was left.
            Stop::Failed(error) => write!(f, "{error:#}"),
        }
    }
}

impl From<anyhow::Error> for Stop {
    fn from(error: anyhow::Error) -> Self {
        Stop::Failed(error)
    }
}

/// Shorthand for a usage error.
pub fn usage(message: impl Into<String>) -> Stop {
    Stop::Usage(message.into())
}
