//! libmps: the Message Passing Service. Peer applications on storage
//! processors (SPs) open named sessions and exchange confirmed messages,
//! synchronously or asynchronously, over one API whatever the distance.
//!
//! The tree follows the seed's FIG. 16: [`ffi`] (the C ABI) over [`mps`] (the
//! service: sessions, sends, confirmations, callbacks) over [`cmi`] (the
//! transport: links, frames, handshake, heartbeats), with [`config`] saying who
//! this SP is. The Rust API is [`Mps`]; the C API is `include/mps.h`.

pub mod cmi;
pub mod config;
pub mod ffi;
#[doc(hidden)]
pub mod fuzzing;
pub mod log;
pub mod mps;
pub mod sp_id;
pub mod status;
pub(crate) mod sync;
mod unwind;

pub use cmi::LinkInfo;
pub use config::{Address, Config, ConfigError};
pub use mps::{Callback, CloseOutcome, Event, MessageBuf, Mps, ReceivedMessage, SessionId, SessionInfo, Timeout};
pub use sp_id::SpId;
pub use status::Status;
