//! The C ABI's types (SPEC section 2). Layouts are frozen once released: every
//! struct here is checked against `include/mps.h` by `layout-check/` (the ctest
//! crate) and by the compile-time asserts at the bottom of this file.
#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_void};

/// NT status code (`int32_t`); values in the STATUS_* table.
pub type NTSTATUS = i32;
/// NT `ULONG`: 32 bits on every platform (NT is LLP64; never `unsigned long` here).
pub type ULONG = u32;
/// NT `LONG`: 32 bits.
pub type LONG = i32;
/// NT `PVOID`.
pub type PVOID = *mut c_void;
/// NT `WCHAR`: the platform `wchar_t`, so `L"Mirror"` literals compile unchanged.
pub type WCHAR = libc::wchar_t;
/// Pointer to a NUL-terminated wide string.
pub type PWCHAR = *mut WCHAR;

/// A conduit: a numbered logical channel carried on every link.
pub type CMI_CONDUIT_ID = ULONG;

/// The opaque object behind an `MPS_HANDLE`. Never defined, never dereferenced:
/// a handle is a tagged number that the library validates on every call.
pub struct MPS_FILAMENT {
    _private: [u8; 0],
}

/// A session (filament) handle, returned by `MpsOpen`. Opaque and pointer-sized.
/// A closed, stale or forged handle is detected and answered with
/// `STATUS_INVALID_HANDLE`; it is never dereferenced.
pub type MPS_HANDLE = *mut MPS_FILAMENT;
/// Pointer to a session handle (the out-parameter of `MpsOpen`).
pub type PMPS_HANDLE = *mut MPS_HANDLE;

/// `CMI_SP_ID.Sp` value of a unit's SP A.
pub const CMI_SP_A: ULONG = 0;
/// `CMI_SP_ID.Sp` value of a unit's SP B.
pub const CMI_SP_B: ULONG = 1;
/// `CMI_SP_ID.StorageUnit` and `.Sp` value that `MpsGetSpId` writes for the peer
/// of an SP whose storage unit has no second SP.
pub const CMI_SP_NONE: ULONG = 0xFFFF_FFFF;

/// A storage processor's identity: its storage unit and the SP within it
/// (`CMI_SP_A` or `CMI_SP_B`). Printed by the library as e.g. `1.A`.
/// Two ids are equal when both fields are equal.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CMI_SP_ID {
    /// The storage unit's number.
    pub StorageUnit: ULONG,
    /// `CMI_SP_A` (0) or `CMI_SP_B` (1).
    pub Sp: ULONG,
}
/// Pointer to a `CMI_SP_ID`.
pub type PCMI_SP_ID = *mut CMI_SP_ID;

/// The events a session's callback is called with. The `Data` argument points
/// to the event's structure, as named on each value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MPS_EVENT {
    /// A pending `MpsClose` completed. `Data` is a `PMPS_CLOSE_EVENT_DATA`, valid during the call.
    MpsEventCloseCompleted = 1,
    /// An asynchronous send has its final status. `Data` is a `PMPS_SEND_EVENT_DATA`,
    /// valid during the call; the buffer is the client's again.
    MpsEventMessageSent = 2,
    /// A message arrived. `Data` is a `PMPS_RECEIVED_EVENT_DATA` that belongs to the
    /// client until it passes it (or its `Ptr`) to `MpsReleaseReceivedMessage`.
    MpsEventMessageReceived = 3,
}
/// Pointer to an `MPS_EVENT`.
pub type PMPS_EVENT = *mut MPS_EVENT;

/// The client's callback: `NTSTATUS Callback(MPS_EVENT Event, PVOID Data)`.
/// Called on a library thread, never inside the client's own API call; calls
/// for one session are serialized and in event order; no library lock is held,
/// so it may call every routine. Its return value is logged when it is not a
/// success, and otherwise ignored (it is not a confirmation).
pub type PMPS_CALLBACK_ROUTINE =
    Option<unsafe extern "C" fn(Event: MPS_EVENT, Data: PVOID) -> NTSTATUS>;

/// The transmit descriptor of `MpsSynchronousSend` and `MpsAsynchronousSend`
/// (seed order). Read by the call only; it may be reused as soon as the call returns.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MPS_SEND_MESSAGE_INFO {
    /// The client's own value, echoed in `MPS_SEND_EVENT_DATA.ContextHandle`.
    pub ContextHandle: PVOID,
    /// The destination SP; the local SP's own id delivers to this SP.
    pub Destination: CMI_SP_ID,
    /// The buffer: exactly a pointer returned by `MpsAllocateMessage`.
    pub Ptr: PVOID,
    /// Bytes to send from `Ptr`: at most the buffer's allocated size.
    pub Size: ULONG,
    /// The transaction number; the target sees it as `MPS_RECEIVED_EVENT_DATA.SequenceTag`
    /// and can match it with `MpsSynchronousReceive`'s `TransactionId`.
    pub SequenceTag: ULONG,
}
/// Pointer to an `MPS_SEND_MESSAGE_INFO`.
pub type PMPS_SEND_MESSAGE_INFO = *mut MPS_SEND_MESSAGE_INFO;

/// Data of `MpsEventCloseCompleted`, valid during the callback only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MPS_CLOSE_EVENT_DATA {
    /// The session that closed; the handle is no longer valid.
    pub FilamentHandle: MPS_HANDLE,
    /// `STATUS_SUCCESS`.
    pub CloseStatus: NTSTATUS,
}
/// Pointer to an `MPS_CLOSE_EVENT_DATA`.
pub type PMPS_CLOSE_EVENT_DATA = *mut MPS_CLOSE_EVENT_DATA;

/// Data of `MpsEventMessageSent`, valid during the callback only.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MPS_SEND_EVENT_DATA {
    /// The `ContextHandle` of the send's `MPS_SEND_MESSAGE_INFO`.
    pub ContextHandle: PVOID,
    /// The final status: `STATUS_SUCCESS` (confirmed by the target) or why it failed.
    pub TransmissionStatus: NTSTATUS,
    /// Appended: the sending session.
    pub FilamentHandle: MPS_HANDLE,
    /// Appended: the send's `SequenceTag`.
    pub SequenceTag: ULONG,
    /// Appended: the buffer, which is the client's again (to reuse or free).
    pub Ptr: PVOID,
}
/// Pointer to an `MPS_SEND_EVENT_DATA`.
pub type PMPS_SEND_EVENT_DATA = *mut MPS_SEND_EVENT_DATA;

/// A received message, from `MpsSynchronousReceive` or `MpsEventMessageReceived`.
/// Owned by the client until `MpsReleaseReceivedMessage` (with this pointer or `Ptr`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MPS_RECEIVED_EVENT_DATA {
    /// The message's bytes (non-NULL and unique even when `Size` is 0).
    pub Ptr: PVOID,
    /// The SP that sent it.
    pub Sender: CMI_SP_ID,
    /// Length of the message in bytes.
    pub Size: ULONG,
    /// `STATUS_SUCCESS`: the message was accepted and confirmed to its sender.
    pub SynchronousStatus: NTSTATUS,
    /// Appended: the receiving session.
    pub FilamentHandle: MPS_HANDLE,
    /// Appended: the receiving session's `MpsOpen` Context.
    pub Context: PVOID,
    /// Appended: the sender's `SequenceTag`.
    pub SequenceTag: ULONG,
}
/// Pointer to an `MPS_RECEIVED_EVENT_DATA`.
pub type PMPS_RECEIVED_EVENT_DATA = *mut MPS_RECEIVED_EVENT_DATA;

/// A session's state at one moment, from `MpsQuerySession`: for diagnostics,
/// and for a test that must know a receiver is already waiting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MPS_SESSION_INFO {
    /// Messages queued for `MpsSynchronousReceive`, not yet taken.
    pub QueuedMessages: ULONG,
    /// Threads inside `MpsSynchronousReceive` on this session (registered to
    /// wait: an `MpsClose` from now on wakes them with `STATUS_CANCELLED`).
    pub BlockedReceivers: ULONG,
    /// Sends not finished (synchronous ones in their call, asynchronous ones
    /// until their `MpsEventMessageSent` callback has been run).
    pub OutstandingSends: ULONG,
    /// Events waiting for the session's callback.
    pub PendingCallbacks: ULONG,
    /// 1 when a close is pending, else 0.
    pub Closing: ULONG,
    /// Events waiting for the callbacks of all of this SP's sessions, not yet
    /// started. Seen as 0 from a callback, the event it runs is the last one
    /// delivered so far: the end of a batch (the completions that one
    /// confirmation frame brought, say), when to wake a thread that waits for them.
    pub SpPendingCallbacks: ULONG,
}
/// Pointer to an `MPS_SESSION_INFO`.
pub type PMPS_SESSION_INFO = *mut MPS_SESSION_INFO;

/// Log levels for `MpsSetLogLevel` and the log callback (also `MPS_LOG=error|warn|info|debug|trace`).
pub const MPS_LOG_OFF: ULONG = 0;
/// Errors: a link lost, a bad frame, a bad configuration.
pub const MPS_LOG_ERROR: ULONG = 1;
/// Warnings (the default level): every refused call says why.
pub const MPS_LOG_WARN: ULONG = 2;
/// Links coming up and going down, sessions opening and closing.
pub const MPS_LOG_INFO: ULONG = 3;
/// Per-operation detail.
pub const MPS_LOG_DEBUG: ULONG = 4;
/// Per-frame detail.
pub const MPS_LOG_TRACE: ULONG = 5;

/// The client's log sink: one call per line, `Line` NUL-terminated and valid
/// during the call only. Called on the library's log thread, one line at a
/// time, with no library lock held; a routine that blocks delays only the log.
pub type PMPS_LOG_ROUTINE =
    Option<unsafe extern "C" fn(Level: ULONG, Line: *const c_char, Context: PVOID)>;

/// Longest mailbox name accepted by `MpsOpen`, in characters (not counting the NUL).
pub const MPS_MAX_MAILBOX_NAME: ULONG = 64;

// Layout guards (wasmtime's habit): a change to a frozen layout fails the build.
// The C side asserts the same numbers in c_tests/layout_static.c.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<CMI_SP_ID>() == 8);
    assert!(offset_of!(CMI_SP_ID, Sp) == 4);
    assert!(size_of::<MPS_HANDLE>() == 8);
    assert!(size_of::<MPS_EVENT>() == 4);
    assert!(size_of::<MPS_SEND_MESSAGE_INFO>() == 32);
    assert!(offset_of!(MPS_SEND_MESSAGE_INFO, Destination) == 8);
    assert!(offset_of!(MPS_SEND_MESSAGE_INFO, Ptr) == 16);
    assert!(offset_of!(MPS_SEND_MESSAGE_INFO, Size) == 24);
    assert!(offset_of!(MPS_SEND_MESSAGE_INFO, SequenceTag) == 28);
    assert!(size_of::<MPS_CLOSE_EVENT_DATA>() == 16);
    assert!(offset_of!(MPS_CLOSE_EVENT_DATA, CloseStatus) == 8);
    assert!(size_of::<MPS_SEND_EVENT_DATA>() == 40);
    assert!(offset_of!(MPS_SEND_EVENT_DATA, TransmissionStatus) == 8);
    assert!(offset_of!(MPS_SEND_EVENT_DATA, FilamentHandle) == 16);
    assert!(offset_of!(MPS_SEND_EVENT_DATA, SequenceTag) == 24);
    assert!(offset_of!(MPS_SEND_EVENT_DATA, Ptr) == 32);
    assert!(size_of::<MPS_RECEIVED_EVENT_DATA>() == 48);
    assert!(offset_of!(MPS_RECEIVED_EVENT_DATA, Sender) == 8);
    assert!(offset_of!(MPS_RECEIVED_EVENT_DATA, Size) == 16);
    assert!(offset_of!(MPS_RECEIVED_EVENT_DATA, SynchronousStatus) == 20);
    assert!(offset_of!(MPS_RECEIVED_EVENT_DATA, FilamentHandle) == 24);
    assert!(offset_of!(MPS_RECEIVED_EVENT_DATA, Context) == 32);
    assert!(offset_of!(MPS_RECEIVED_EVENT_DATA, SequenceTag) == 40);
    assert!(size_of::<MPS_SESSION_INFO>() == 24);
    assert!(offset_of!(MPS_SESSION_INFO, SpPendingCallbacks) == 20);
    assert!(offset_of!(MPS_SESSION_INFO, BlockedReceivers) == 4);
    assert!(offset_of!(MPS_SESSION_INFO, Closing) == 16);
};
