//! Conversions between protobuf messages and core types, one file per type family. This is the
//! only place that knows both vocabularies; every check of a request's shape that the core does
//! not make itself (required fields, enum values, integer ranges) happens here, and each error
//! names the field at fault.

pub mod effects;
pub mod events;
pub mod explain;
pub mod model;
pub mod views;

use switchboard_core::ApplyError;
use switchboard_core::limits::ID_BYTES_MAX as ID_MAX_BYTES;

/// A request whose shape is wrong. `status.rs` answers it as `INVALID_ARGUMENT`; NATS ingest
/// rejects the message with reason `invalid`. The text names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A field of the message is missing, malformed or out of range.
    #[error("{field}: {reason}")]
    Field {
        /// The field, as a path into the request (`events[3].opened.priority`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The core's own check of the converted input (`Command::validate`) refused it.
    #[error(transparent)]
    Core(ApplyError),
}

/// An input the core's `validate` refused, its field under `prefix` (for example `events[3]`).
pub fn core_invalid(prefix: &str, error: ApplyError) -> ConvertError {
    match error {
        ApplyError::Invalid { field, reason } if prefix.is_empty() => invalid(field, reason),
        ApplyError::Invalid { field, reason } => invalid(&format!("{prefix}.{field}"), reason),
        other => ConvertError::Core(other),
    }
}

/// A field at fault, and why.
pub fn invalid(field: &str, reason: impl std::fmt::Display) -> ConvertError {
    ConvertError::Field { field: field.to_owned(), reason: reason.to_string() }
}

/// A required identifier: non-empty and at most [`ID_MAX_BYTES`] bytes.
pub fn required_id<T: From<String>>(value: String, field: &str) -> Result<T, ConvertError> {
    if value.is_empty() {
        return Err(invalid(field, "is required and must not be empty"));
    }
    if value.len() > ID_MAX_BYTES {
        return Err(invalid(field, format!("is {} bytes; the limit is {ID_MAX_BYTES}", value.len())));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, format!("{value:?} contains a control character")));
    }
    Ok(T::from(value))
}

/// An optional identifier: empty means absent.
pub fn optional_id<T: From<String>>(value: String, field: &str) -> Result<Option<T>, ConvertError> {
    if value.is_empty() { Ok(None) } else { required_id(value, field).map(Some) }
}

/// An optional free-text field: empty means absent.
pub fn optional_text(value: String) -> Option<String> {
    if value.is_empty() { None } else { Some(value) }
}

/// A required sub-message.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, ConvertError> {
    value.ok_or_else(|| invalid(field, "is required"))
}
