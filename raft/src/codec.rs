//! What this crate stores, encoded with postcard (serde; a frozen wire format), and the
//! conversions of ringtide's errors into openraft's.

use std::fmt::Display;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::NodeId;

/// Encodes `value` (postcard).
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

/// Decodes `bytes` (postcard), which must hold exactly one value.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(postcard::Error::DeserializeBadEncoding)
    }
}

/// An error as openraft's storage error about `subject`, failing at `verb`.
pub(crate) fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: impl Display,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::error(error)).into()
}

/// An error of reading or writing the log.
pub(crate) fn log_error(verb: ErrorVerb, error: impl Display) -> StorageError<NodeId> {
    storage_error(ErrorSubject::Logs, verb, error)
}

/// An error of reading or writing the vote (or the state file that holds it).
pub(crate) fn vote_error(verb: ErrorVerb, error: impl Display) -> StorageError<NodeId> {
    storage_error(ErrorSubject::Vote, verb, error)
}

/// An error of reading or writing the state machine.
pub(crate) fn sm_error(verb: ErrorVerb, error: impl Display) -> StorageError<NodeId> {
    storage_error(ErrorSubject::StateMachine, verb, error)
}

/// An error of reading or writing a snapshot.
pub(crate) fn snapshot_error(verb: ErrorVerb, error: impl Display) -> StorageError<NodeId> {
    storage_error(ErrorSubject::Snapshot(None), verb, error)
}
