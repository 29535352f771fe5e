//! The client's one error type: a kind every caller matches on (NotFound is handled the same way
//! by every resource) plus the message vSphere or the network gave.

/// What went wrong, in the terms callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object does not exist (any more).
    NotFound,
    /// An object with that name already exists.
    AlreadyExists,
    /// vSphere rejected an argument.
    InvalidArgument,
    /// Bad credentials or an expired session.
    Auth,
    /// The user may not do this.
    Permission,
    /// Another SOAP fault.
    Fault,
    /// A task finished in error.
    Task,
    /// The connection failed (refused, reset, DNS, ...).
    Transport,
    /// The server's certificate was not trusted (or did not match the pinned thumbprint).
    Tls,
    /// The endpoint answered, but not as a vSphere SOAP API.
    NotVsphere,
    /// The response could not be decoded.
    Decode,
    /// No answer within the API timeout.
    Timeout,
    /// Stopped on request (StopProvider, Ctrl-C).
    Cancelled,
}

/// An error from the vSphere client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The SOAP fault type, e.g. `InvalidLogin`, when the server sent a fault.
    pub fault: Option<String>,
    /// A message for humans: what vSphere or the network said.
    pub message: String,
    /// How long a busy server asked to be left alone (`Retry-After`), when it said.
    pub retry_after: Option<std::time::Duration>,
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            fault: None,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An error from a SOAP fault, classified by its fault type.
    pub fn from_fault(fault: &str, message: impl Into<String>) -> Self {
        let kind = match fault {
            "ManagedObjectNotFound" | "NotFound" | "FileNotFound" => ErrorKind::NotFound,
            "DuplicateName" | "AlreadyExists" | "FileAlreadyExists" => ErrorKind::AlreadyExists,
            "InvalidArgument" | "InvalidRequest" | "InvalidType" | "InvalidName" => {
                ErrorKind::InvalidArgument
            }
            "InvalidLogin" | "NotAuthenticated" | "InvalidLocale" => ErrorKind::Auth,
            "NoPermission" | "RestrictedVersion" => ErrorKind::Permission,
            "RequestCanceled" => ErrorKind::Cancelled,
            _ => ErrorKind::Fault,
        };
        Self {
            kind,
            fault: Some(fault.to_string()),
            message: message.into(),
            retry_after: None,
        }
    }

    /// Whether the object was not found.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// Whether a write that failed this way may still have happened (the connection broke,
    /// or the wait for its task ended before the task did): the caller must look before it
    /// tries again or reports that nothing was made.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Transport | ErrorKind::Timeout | ErrorKind::Cancelled
        )
    }
}

/// How many times a write whose answer was lost, and which surely did not happen, is sent
/// again.
pub const LOST_CALL_RETRIES: u32 = 3;

/// The client's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_faults() {
        assert_eq!(Error::from_fault("InvalidLogin", "x").kind, ErrorKind::Auth);
        assert_eq!(
            Error::from_fault("ManagedObjectNotFound", "x").kind,
            ErrorKind::NotFound
        );
        let e = Error::from_fault("HostConfigFault", "boom");
        assert_eq!(e.kind, ErrorKind::Fault);
        assert_eq!(e.fault.as_deref(), Some("HostConfigFault"));
    }
}
