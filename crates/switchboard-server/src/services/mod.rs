//! The five public services, one file each. Each handler converts its request (the `convert`
//! module checks the shape and names the bad field), then takes [`crate::api::Api::write`] or
//! [`crate::api::Api::read`].

pub(crate) mod admin;
pub(crate) mod assignments;
pub(crate) mod cluster;
pub(crate) mod events;
pub(crate) mod presence;

/// Largest page a listing returns.
pub(crate) const PAGE_SIZE_MAX: u32 = 1000;
/// Page size when the request gives none.
pub(crate) const PAGE_SIZE_DEFAULT: u32 = 100;

/// A requested page size, defaulted and checked.
pub(crate) fn page_size(requested: u32, field: &str) -> Result<usize, tonic::Status> {
    match requested {
        0 => Ok(PAGE_SIZE_DEFAULT as usize),
        n if n <= PAGE_SIZE_MAX => Ok(n as usize),
        n => Err(crate::convert::invalid(field, format!("{n} exceeds the limit of {PAGE_SIZE_MAX}")).into()),
    }
}

/// `NOT_FOUND` for a workspace that was never configured.
pub(crate) fn unknown_workspace(workspace: &switchboard_core::WorkspaceId) -> tonic::Status {
    tonic::Status::not_found(format!(
        "unknown workspace {workspace}: configure it first (Admin.ConfigureWorkspace or `switchboard ctl apply`)"
    ))
}
