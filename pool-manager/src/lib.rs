//! warmpool's core: the pool model and its state machine, the `Store` and
//! `Cloud` traits, and the tasks that keep pools warm and hand instances out.
//!
//! This crate knows nothing of gRPC, HTTP servers or config files; the
//! `server` crate maps its API onto [`PoolManager`]'s methods.

// Docs link internal items on purpose: they resolve under --document-private-items, the mode these docs are built in.
#![allow(rustdoc::private_intra_doc_links)]

mod allocator;
pub mod changes;
pub mod cloud;
pub mod error;
pub mod events;
pub mod gate;
mod manager;
pub mod model;
pub mod openstack;
pub mod probe;
mod reconciler;
mod replenisher;
pub mod schedule;
pub mod sizing;
pub mod store;
pub mod text;

pub use allocator::{
    cleanup_budget, failure_outcome, validate_order, AllocateRequest, CLEANUP_FLOOR,
    DEFAULT_ALLOCATE_TIMEOUT, DEFAULT_COLD_BOOT_TIMEOUT, MAX_DISCARDED_PER_PURCHASE,
    MAX_REQUEST_ID_LEN,
};
pub use error::{ManagerError, ManagerResult};
pub use manager::{state_name, ManagerSettings, PoolManager, PoolStatus, FORGET_EVERY};
pub use reconciler::{LeftAlone, LATE_CREATE_GRACE};
pub use replenisher::BootError;
