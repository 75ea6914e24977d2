//! Conversions between protobuf messages and core types, one file per type family. This is the
//! only place that knows both vocabularies; every check of a request's shape that the core does
//! not make itself (required fields, enum values, integer ranges) happens here, and each error
//! names the field at fault.

pub(crate) mod effects;
pub(crate) mod events;
pub(crate) mod model;
pub(crate) mod views;

use switchboard_core::limits::ID_BYTES_MAX as ID_MAX_BYTES;
use tonic::Status;

/// `INVALID_ARGUMENT` for an input the core's `validate` refused, its field under `prefix`
/// (for example `events[3]`).
pub(crate) fn core_invalid(prefix: &str, error: &switchboard_core::ApplyError) -> Status {
    match error {
        switchboard_core::ApplyError::Invalid { field, reason } if prefix.is_empty() => invalid(field, reason),
        switchboard_core::ApplyError::Invalid { field, reason } => invalid(&format!("{prefix}.{field}"), reason),
        other => Status::invalid_argument(other.to_string()),
    }
}

/// `INVALID_ARGUMENT` naming `field`.
pub(crate) fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// A required identifier: non-empty and at most [`ID_MAX_BYTES`] bytes.
pub fn required_id<T: From<String>>(value: String, field: &str) -> Result<T, Status> {
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
pub(crate) fn optional_id<T: From<String>>(value: String, field: &str) -> Result<Option<T>, Status> {
    if value.is_empty() { Ok(None) } else { required_id(value, field).map(Some) }
}

/// An optional free-text field: empty means absent.
pub(crate) fn optional_text(value: String) -> Option<String> {
    if value.is_empty() { None } else { Some(value) }
}

/// A required sub-message.
pub(crate) fn required<T>(value: Option<T>, field: &str) -> Result<T, Status> {
    value.ok_or_else(|| invalid(field, "is required"))
}
