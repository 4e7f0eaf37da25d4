//! The C ABI (SPEC sections 2-4): NT types, argument checks, the panic guard,
//! handle and pointer validation, and translation onto the Rust API. No logic
//! that a Rust user would also need lives here.

pub(crate) mod api;
pub(crate) mod guard;
pub(crate) mod registry;
pub mod types;

pub use api::*;
pub use types::*;

#[cfg(not(target_pointer_width = "64"))]
compile_error!("libmps's C ABI assumes 64-bit pointers (MPS_HANDLE carries a 64-bit tagged value)");
