//! The one error type of the Rust API.

use std::fmt;

/// Everything that can go wrong when using a cluster handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A setting, an argument or a callback's answer at join is unusable.
    Config(String),
    /// A network operation failed (e.g. the listen address is taken).
    Io(String),
    /// A wait ran out of time.
    Timeout(String),
    /// The handle has left the cluster.
    Closed,
    /// A callback failed where the engine needed its answer (at join).
    Callback {
        /// The callback's name.
        callback: &'static str,
        /// What it said, or how it failed.
        message: String,
    },
    /// An argument is out of range or the call is not allowed here.
    InvalidArgument(String),
    /// No member accepts this node and some refuse it (a wrong cookie,
    /// cluster name or version, or not in their member list): it is part of
    /// no cluster. The message names the members and what they said.
    Misconfigured(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) => write!(f, "configuration error: {m}"),
            Error::Io(m) => write!(f, "I/O error: {m}"),
            Error::Timeout(m) => write!(f, "timed out: {m}"),
            Error::Closed => f.write_str("the cluster handle has left"),
            Error::Callback { callback, message } => {
                write!(f, "the {callback} callback failed: {message}")
            }
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::Misconfigured(m) => write!(f, "misconfigured: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::core::ConfigError> for Error {
    fn from(e: crate::core::ConfigError) -> Error {
        Error::Config(e.to_string())
    }
}

impl From<crate::core::AddressError> for Error {
    fn from(e: crate::core::AddressError) -> Error {
        Error::Config(e.to_string())
    }
}

/// Why a callback failed: whatever the application says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackError(pub String);

impl fmt::Display for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallbackError {}

impl From<String> for CallbackError {
    fn from(s: String) -> CallbackError {
        CallbackError(s)
    }
}

impl From<&str> for CallbackError {
    fn from(s: &str) -> CallbackError {
        CallbackError(s.to_owned())
    }
}

impl From<Box<dyn std::error::Error + Send + Sync>> for CallbackError {
    fn from(e: Box<dyn std::error::Error + Send + Sync>) -> CallbackError {
        CallbackError(e.to_string())
    }
}
