//! The exported routines. Each validates every argument before use and runs
//! inside `guard!`, so a panic returns `STATUS_INTERNAL_ERROR` instead of
//! crossing into C.
#![allow(non_snake_case)]

use super::guard::{guard, initialize, instance, require_non_null, shutdown, status_of, Need};
use super::registry;
use super::types::*;
use crate::config::Config;
use crate::log::{self, log, Level};
use crate::mps::{Callback, Event, SessionId, MAX_MAILBOX_NAME};
use crate::sp_id::SpId;
use crate::status::Status;
use std::ffi::{c_char, CStr, CString};
use std::sync::Arc;
use std::time::Duration;

fn session_of(h: MPS_HANDLE) -> SessionId {
    SessionId(h as usize as u64)
}

fn sp_of(id: &CMI_SP_ID) -> SpId {
    SpId { unit: id.StorageUnit, sp: id.Sp }
}

/// Reads a NUL-terminated wide string of at most `MAX_MAILBOX_NAME` characters.
///
/// # Safety
/// `p` is non-NULL and points at a NUL-terminated string, or at least
/// `MAX_MAILBOX_NAME + 1` readable characters.
unsafe fn mailbox_name(p: PWCHAR) -> Result<String, &'static str> {
    let mut chars: Vec<u32> = Vec::with_capacity(16);
    for i in 0..=MAX_MAILBOX_NAME {
        // SAFETY: the caller guarantees the characters up to the NUL (or
        // MAX_MAILBOX_NAME + 1 of them) are readable; we stop at the first NUL.
        let c = unsafe { *p.add(i) };
        if c == 0 {
            if chars.is_empty() {
                return Err("the mailbox name is empty");
            }
            return widestring::U32Str::from_slice(&chars)
                .to_string()
                .map_err(|_| "the mailbox name is not valid Unicode");
        }
        chars.push(c as u32);
    }
    Err("the mailbox name is longer than MPS_MAX_MAILBOX_NAME characters (or not NUL-terminated)")
}

/// Calls the client's C callback with an event's C structure.
fn dispatch_to_c(f: unsafe extern "C" fn(MPS_EVENT, PVOID) -> NTSTATUS, ev: Event) {
    let r = match ev {
        Event::CloseCompleted { session, status } => {
            let mut d = MPS_CLOSE_EVENT_DATA { FilamentHandle: session.0 as usize as MPS_HANDLE, CloseStatus: status.0 };
            // SAFETY: `f` is the client's callback as given to MpsOpen; `d`
            // lives until the call returns, as documented for close data.
            unsafe { f(MPS_EVENT::MpsEventCloseCompleted, (&mut d as *mut MPS_CLOSE_EVENT_DATA).cast()) }
        }
        Event::MessageSent { session, context, status, tag, buffer } => {
            let ptr = buffer.as_ptr();
            // The buffer is the client's again before it hears so (once no
            // link still writes it: see registry::give_back).
            registry::give_back(buffer);
            let mut d = MPS_SEND_EVENT_DATA {
                ContextHandle: context as PVOID,
                TransmissionStatus: status.0,
                FilamentHandle: session.0 as usize as MPS_HANDLE,
                SequenceTag: tag,
                Ptr: ptr as PVOID,
            };
            // SAFETY: as above; `d` lives until the call returns.
            unsafe { f(MPS_EVENT::MpsEventMessageSent, (&mut d as *mut MPS_SEND_EVENT_DATA).cast()) }
        }
        Event::MessageReceived(m) => {
            let p = registry::hand_out(m);
            // SAFETY: `p` is a live record owned by the client from now until
            // it calls MpsReleaseReceivedMessage.
            unsafe { f(MPS_EVENT::MpsEventMessageReceived, p.cast()) }
        }
    };
    if !Status(r).is_success() {
        log!(Level::Debug, "a callback returned {}", Status(r));
    }
}

/// Opens a session on `Conduit` named (`DomainName`, `*pMailboxName`) and
/// writes its handle to `*pFilamentHandle`.
///
/// `Callback` may be NULL: the session then cannot send asynchronously, and the
/// asynchronous messages it receives are queued for `MpsSynchronousReceive`.
/// `pMailboxName` is a NUL-terminated wide string of 1 to
/// `MPS_MAX_MAILBOX_NAME` characters. `Context` is echoed in every received
/// message's `Context`. Returns `STATUS_INVALID_PARAMETER` (NULL or bad name,
/// unconfigured conduit), `STATUS_OBJECT_NAME_COLLISION` (already open in this
/// SP), `STATUS_DEVICE_CONFIGURATION_ERROR` (the first call could not
/// initialize) or `STATUS_DEVICE_NOT_READY` (no SP since `MpsShutdown`: call
/// `MpsInitialize`).
///
/// # Safety
///
/// `pMailboxName`, when not NULL, points to readable wide characters up to and
/// including a NUL, or to at least `MPS_MAX_MAILBOX_NAME + 1` of them (no more
/// are read). `pFilamentHandle`, when not NULL, points to one writable
/// `MPS_HANDLE`. Either one NULL is refused with `STATUS_INVALID_PARAMETER`; a
/// non-NULL pointer that is not valid cannot be detected.
#[no_mangle]
pub unsafe extern "C" fn MpsOpen(
    Callback: PMPS_CALLBACK_ROUTINE,
    Conduit: CMI_CONDUIT_ID,
    DomainName: ULONG,
    pMailboxName: PWCHAR,
    Context: PVOID,
    pFilamentHandle: PMPS_HANDLE,
) -> NTSTATUS {
    guard!("MpsOpen", {
        require_non_null!("MpsOpen", pMailboxName);
        require_non_null!("MpsOpen", pFilamentHandle);
        // SAFETY: non-NULL; the header documents the NUL-termination rule.
        let name = match unsafe { mailbox_name(pMailboxName) } {
            Ok(n) => n,
            Err(why) => {
                log!(Level::Warn, "MpsOpen: {why}");
                return Status::STATUS_INVALID_PARAMETER.0;
            }
        };
        let mps = match instance("MpsOpen", Need::Sp) {
            Ok(m) => m,
            Err(s) => return s.0,
        };
        let cb: Option<Callback> = Callback.map(|f| Arc::new(move |ev: Event| dispatch_to_c(f, ev)) as Callback);
        match mps.open(cb, Conduit, DomainName, &name, Context as usize) {
            Ok(id) => {
                // SAFETY: non-NULL (checked); the client passes a writable MPS_HANDLE.
                unsafe { *pFilamentHandle = id.0 as usize as MPS_HANDLE };
                Status::STATUS_SUCCESS.0
            }
            Err(s) => s.0,
        }
    })
}

/// Closes a session. `STATUS_SUCCESS`: closed now, no callback follows.
/// `STATUS_PENDING`: sends or receives were outstanding; new sends and receives
/// get `STATUS_PIPE_CLOSING`, blocked receives return `STATUS_CANCELLED`, and
/// once the last outstanding send has its final status the session closes and
/// (if it has a callback) gets exactly one `MpsEventCloseCompleted`. Messages
/// queued and never received are discarded. `STATUS_PIPE_CLOSING` if a close
/// is already pending; `STATUS_INVALID_HANDLE` for a closed or unknown handle
/// (and for every handle once `MpsShutdown` has stopped the SP).
#[no_mangle]
pub extern "C" fn MpsClose(FilamentHandle: MPS_HANDLE) -> NTSTATUS {
    guard!("MpsClose", {
        let mps = match instance("MpsClose", Need::Handle) {
            Ok(m) => m,
            Err(s) => return s.0,
        };
        match mps.close(session_of(FilamentHandle)) {
            Ok(o) => o.status().0,
            Err(s) => s.0,
        }
    })
}

/// Allocates a message buffer of `Size` bytes (zero allowed: the pointer is
/// still unique and non-NULL) and writes its address to `*Ptr`. The buffer is
/// zero-filled and aligned to 16 bytes, like `malloc`'s. It is the client's,
/// to read and write through `*Ptr`, until `MpsFreeMessage`, except while lent
/// to a send: from the send call until `MpsSynchronousSend` returns or the
/// asynchronous send's `MpsEventMessageSent` callback, the client must not
/// write it (the library reads it in place, never copying it; it hands it
/// back only once no link is writing it any more).
/// `STATUS_INSUFFICIENT_RESOURCES` when memory is short or `Size` is over
/// the 256 MiB ceiling.
///
/// # Safety
///
/// `Ptr`, when not NULL, points to one writable `PVOID`. NULL is refused with
/// `STATUS_INVALID_PARAMETER`; a non-NULL pointer that is not valid cannot be
/// detected.
#[no_mangle]
pub unsafe extern "C" fn MpsAllocateMessage(Size: ULONG, Ptr: *mut PVOID) -> NTSTATUS {
    guard!("MpsAllocateMessage", {
        require_non_null!("MpsAllocateMessage", Ptr);
        if Size > crate::config::MAX_MESSAGE_SIZE_CEILING {
            log!(Level::Warn, "MpsAllocateMessage: {Size} bytes is over the 256 MiB ceiling");
            return Status::STATUS_INSUFFICIENT_RESOURCES.0;
        }
        match registry::allocate(Size as usize) {
            Ok(p) => {
                // SAFETY: non-NULL (checked); the client passes a writable PVOID.
                unsafe { *Ptr = p };
                Status::STATUS_SUCCESS.0
            }
            Err(s) => s.0,
        }
    })
}

/// Frees a buffer from `MpsAllocateMessage`. `STATUS_DEVICE_BUSY` while it is
/// lent to a send; `STATUS_INVALID_PARAMETER` for NULL, a foreign pointer, a
/// freed one, or a received message (release those instead).
#[no_mangle]
pub extern "C" fn MpsFreeMessage(Ptr: PVOID) -> NTSTATUS {
    guard!("MpsFreeMessage", {
        require_non_null!("MpsFreeMessage", Ptr);
        let r = registry::free(Ptr);
        if let Err(s) = r {
            log!(Level::Warn, "MpsFreeMessage({Ptr:p}): {s}");
        }
        status_of(r)
    })
}

/// The checks and conversions both sends share. Returns the buffer, lent.
///
/// # Safety
/// `info` is non-NULL and points at a readable MPS_SEND_MESSAGE_INFO.
unsafe fn read_send_info(routine: &str, info: PMPS_SEND_MESSAGE_INFO) -> Result<(MPS_SEND_MESSAGE_INFO, crate::mps::MessageBuf), Status> {
    // SAFETY: guaranteed by the caller; copied out so the client may reuse it.
    let i = unsafe { *info };
    let buf = registry::lend(i.Ptr).inspect_err(|s| {
        log!(Level::Warn, "{routine}: buffer {:p}: {s}", i.Ptr);
    })?;
    Ok((i, buf))
}

/// Sends a message and returns at once. `STATUS_PENDING`: accepted; exactly
/// one `MpsEventMessageSent` follows with the final status, and the buffer is
/// lent to the library until then. Any other status: refused, no callback, the
/// buffer is still the client's. Refusals: `STATUS_INVALID_PARAMETER` (NULL
/// info, or the session has no callback), `STATUS_INVALID_USER_BUFFER`,
/// `STATUS_DEVICE_BUSY`, `STATUS_INVALID_HANDLE`, `STATUS_INVALID_BUFFER_SIZE`,
/// `STATUS_PIPE_CLOSING`, `STATUS_INSUFFICIENT_RESOURCES` (past
/// `async_sends_per_session`), `STATUS_INVALID_ADDRESS`, `STATUS_HOST_UNREACHABLE`.
/// Never blocks on a slow link.
///
/// # Safety
///
/// `pSendMessageInfo`, when not NULL, points to one readable
/// `MPS_SEND_MESSAGE_INFO`, which is copied at the call. Its `Ptr` is checked
/// against the buffers `MpsAllocateMessage` handed out and not freed; any
/// other pointer there is refused, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn MpsAsynchronousSend(FilamentHandle: MPS_HANDLE, pSendMessageInfo: PMPS_SEND_MESSAGE_INFO) -> NTSTATUS {
    guard!("MpsAsynchronousSend", {
        require_non_null!("MpsAsynchronousSend", pSendMessageInfo);
        // SAFETY: non-NULL (checked); the client passes a readable descriptor.
        let (i, buf) = match unsafe { read_send_info("MpsAsynchronousSend", pSendMessageInfo) } {
            Ok(x) => x,
            Err(s) => return s.0,
        };
        let mps = match instance("MpsAsynchronousSend", Need::Handle) {
            Ok(m) => m,
            Err(s) => {
                registry::give_back(buf);
                return s.0;
            }
        };
        match mps.send_async(session_of(FilamentHandle), sp_of(&i.Destination), buf, i.Size as usize, i.SequenceTag, i.ContextHandle as usize) {
            Ok(()) => Status::STATUS_PENDING.0,
            Err((s, buf)) => {
                registry::give_back(buf);
                s.0
            }
        }
    })
}

/// Sends a message and blocks the calling thread until the target confirms.
/// Returns `STATUS_SUCCESS`, the target's rejection
/// (`STATUS_OBJECT_NAME_NOT_FOUND`, `STATUS_PIPE_CLOSING`,
/// `STATUS_INSUFFICIENT_RESOURCES`), `STATUS_CONNECTION_DISCONNECTED` (link lost
/// before the confirmation), or a refusal as for `MpsAsynchronousSend`. The
/// buffer is the client's again on return. May be called from a callback.
///
/// # Safety
///
/// `pSendMessageInfo`, when not NULL, points to one readable
/// `MPS_SEND_MESSAGE_INFO`, which is copied at the call. Its `Ptr` is checked
/// against the buffers `MpsAllocateMessage` handed out and not freed; any
/// other pointer there is refused, never dereferenced.
#[no_mangle]
pub unsafe extern "C" fn MpsSynchronousSend(FilamentHandle: MPS_HANDLE, pSendMessageInfo: PMPS_SEND_MESSAGE_INFO) -> NTSTATUS {
    guard!("MpsSynchronousSend", {
        require_non_null!("MpsSynchronousSend", pSendMessageInfo);
        // SAFETY: non-NULL (checked); the client passes a readable descriptor.
        let (i, buf) = match unsafe { read_send_info("MpsSynchronousSend", pSendMessageInfo) } {
            Ok(x) => x,
            Err(s) => return s.0,
        };
        let r = instance("MpsSynchronousSend", Need::Handle).and_then(|mps| {
            mps.send_sync(session_of(FilamentHandle), sp_of(&i.Destination), &buf, i.Size as usize, i.SequenceTag)
        });
        registry::give_back(buf);
        status_of(r)
    })
}

/// Takes the oldest message queued for synchronous receive, or waits for one.
/// `Timeout` < 0 waits forever, 0 only tests, > 0 waits that many seconds.
/// A test never misses a message confirmed to its sender before the call: it
/// waits for those a link has accepted but not yet queued (at most the time a
/// link takes to queue one read's messages), never for later ones.
/// `TransactionId` 0 takes any message, otherwise only one whose
/// `SequenceTag` equals it. On success `*pReceivedEventData` is the message,
/// the client's until `MpsReleaseReceivedMessage`; otherwise it is set to NULL.
/// `STATUS_TIMEOUT`, `STATUS_CANCELLED` (woken by `MpsClose`),
/// `STATUS_PIPE_CLOSING`, `STATUS_INVALID_HANDLE`, `STATUS_INVALID_PARAMETER`.
/// Several threads may wait on one session; each message goes to one of them.
///
/// # Safety
///
/// `pReceivedEventData`, when not NULL, points to one writable
/// `PMPS_RECEIVED_EVENT_DATA`. NULL is refused with
/// `STATUS_INVALID_PARAMETER`; a non-NULL pointer that is not valid cannot be
/// detected.
#[no_mangle]
pub unsafe extern "C" fn MpsSynchronousReceive(
    FilamentHandle: MPS_HANDLE,
    Timeout: LONG,
    TransactionId: ULONG,
    pReceivedEventData: *mut PMPS_RECEIVED_EVENT_DATA,
) -> NTSTATUS {
    guard!("MpsSynchronousReceive", {
        require_non_null!("MpsSynchronousReceive", pReceivedEventData);
        // SAFETY: non-NULL (checked); the client passes a writable pointer.
        unsafe { *pReceivedEventData = std::ptr::null_mut() };
        let mps = match instance("MpsSynchronousReceive", Need::Handle) {
            Ok(m) => m,
            Err(s) => return s.0,
        };
        match mps.receive(session_of(FilamentHandle), crate::mps::Timeout::from_long(Timeout), TransactionId) {
            Ok(m) => {
                // SAFETY: as above.
                unsafe { *pReceivedEventData = registry::hand_out(m) };
                Status::STATUS_SUCCESS.0
            }
            Err(s) => s.0,
        }
    })
}

/// Releases a received message, by its `PMPS_RECEIVED_EVENT_DATA` or its `Ptr`.
/// `STATUS_INVALID_PARAMETER` for NULL, a foreign pointer or a second release.
#[no_mangle]
pub extern "C" fn MpsReleaseReceivedMessage(Ptr: PVOID) -> NTSTATUS {
    guard!("MpsReleaseReceivedMessage", {
        require_non_null!("MpsReleaseReceivedMessage", Ptr);
        let r = registry::release(Ptr);
        if r.is_err() {
            log!(Level::Warn, "MpsReleaseReceivedMessage({Ptr:p}): not a received message held by the client");
        }
        status_of(r)
    })
}

/// Writes the local SP's id to `*pLocalCmiSpId` and its peer's (the other SP of
/// the same storage unit) to `*pPeerCmiSpId`. When the unit has no second SP
/// configured, both fields of `*pPeerCmiSpId` are `CMI_SP_NONE`. Both pointers
/// are required. `STATUS_DEVICE_NOT_READY` once `MpsShutdown` has stopped the SP.
///
/// # Safety
///
/// Each pointer, when not NULL, points to one writable `CMI_SP_ID`. NULL is
/// refused with `STATUS_INVALID_PARAMETER`; a non-NULL pointer that is not
/// valid cannot be detected.
#[no_mangle]
pub unsafe extern "C" fn MpsGetSpId(pLocalCmiSpId: PCMI_SP_ID, pPeerCmiSpId: PCMI_SP_ID) -> NTSTATUS {
    guard!("MpsGetSpId", {
        require_non_null!("MpsGetSpId", pLocalCmiSpId);
        require_non_null!("MpsGetSpId", pPeerCmiSpId);
        let mps = match instance("MpsGetSpId", Need::Sp) {
            Ok(m) => m,
            Err(s) => return s.0,
        };
        let local = mps.local_sp();
        let peer = mps.unit_partner().map(|p| CMI_SP_ID { StorageUnit: p.unit, Sp: p.sp });
        // SAFETY: both non-NULL (checked); the client passes writable ids.
        unsafe {
            *pLocalCmiSpId = CMI_SP_ID { StorageUnit: local.unit, Sp: local.sp };
            *pPeerCmiSpId = peer.unwrap_or(CMI_SP_ID { StorageUnit: CMI_SP_NONE, Sp: CMI_SP_NONE });
        }
        Status::STATUS_SUCCESS.0
    })
}

/// Extension. Starts this process's SP explicitly: from the TOML file at
/// `ConfigPath`, or from the environment when it is NULL (`MPS_CONFIG`, else
/// the embedded default of `MPS_SP` / `MPS_RUNTIME_DIR`). Without this call the
/// first API call of the process initializes from the environment; after
/// `MpsShutdown`, this call is the only way to start an SP again.
/// `STATUS_DEVICE_CONFIGURATION_ERROR` for a bad or unusable configuration,
/// including a Unix socket directory that is not the effective user's own or
/// is writable by group or others (the log names the line or the directory,
/// and the reason); a refused call changes nothing. `STATUS_OBJECT_NAME_COLLISION`
/// when an SP is already running in this process, `STATUS_PIPE_CLOSING` while
/// `MpsShutdown` tears one down.
///
/// # Safety
///
/// `ConfigPath`, when not NULL, points to a NUL-terminated string that stays
/// readable during the call. NULL means the environment; a non-NULL pointer
/// that is not valid cannot be detected.
#[no_mangle]
pub unsafe extern "C" fn MpsInitialize(ConfigPath: *const c_char) -> NTSTATUS {
    guard!("MpsInitialize", {
        let cfg = if ConfigPath.is_null() {
            Config::from_env()
        } else {
            // SAFETY: non-NULL; the client passes a NUL-terminated path.
            let path = unsafe { CStr::from_ptr(ConfigPath) };
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes_compat(path.to_bytes()));
            Config::from_file(path)
        };
        let st = status_of(initialize(cfg));
        if st != 0 {
            // The reason reaches the client's log routine before it returns
            // (bounded: the log's own thread, at most 500 ms).
            crate::log::flush(Duration::from_millis(500));
        }
        st
    })
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

/// Extension. Tears this process's SP down: every link closes (unconfirmed
/// sends fail with `STATUS_CONNECTION_DISCONNECTED`, through their callbacks),
/// blocked receives return `STATUS_CANCELLED`, every handle becomes invalid,
/// every library thread is joined. Every asynchronous send accepted
/// (`STATUS_PENDING`) before or while it runs has had its one
/// `MpsEventMessageSent` when it returns, so every buffer lent is the
/// client's again; a send it overtakes is refused (`STATUS_PIPE_CLOSING`)
/// and gets no callback. Buffers and received messages the client holds stay
/// valid. Afterwards only `MpsInitialize` starts an SP again: the
/// routines that need one return `STATUS_DEVICE_NOT_READY` (`MpsOpen`,
/// `MpsGetSpId`, `MpsWaitForPeer`, `MpsQuerySession`) or
/// `STATUS_INVALID_HANDLE` (those that take a handle); buffer and release
/// routines keep working. A call made during the teardown gets
/// `STATUS_PIPE_CLOSING`. A second `MpsShutdown` concurrent with a first
/// waits until the first one's teardown has finished, then returns
/// `STATUS_SUCCESS`; with no SP running it returns `STATUS_SUCCESS` at once.
/// Not from a callback (`STATUS_INVALID_PARAMETER`), nor from a log routine
/// (it may run on a library thread that the teardown joins).
#[no_mangle]
pub extern "C" fn MpsShutdown() -> NTSTATUS {
    guard!("MpsShutdown", { status_of(shutdown()) })
}

/// Extension. Writes the session's state at this moment to `*pInfo`: queued
/// messages, threads in `MpsSynchronousReceive`, unfinished sends, events
/// waiting for the callback, whether a close is pending. For diagnostics.
/// `STATUS_INVALID_HANDLE`, `STATUS_INVALID_PARAMETER` (NULL `pInfo`),
/// `STATUS_DEVICE_NOT_READY` once `MpsShutdown` has stopped the SP.
///
/// # Safety
///
/// `pInfo`, when not NULL, points to one writable `MPS_SESSION_INFO`. NULL is
/// refused with `STATUS_INVALID_PARAMETER`; a non-NULL pointer that is not
/// valid cannot be detected.
#[no_mangle]
pub unsafe extern "C" fn MpsQuerySession(FilamentHandle: MPS_HANDLE, pInfo: PMPS_SESSION_INFO) -> NTSTATUS {
    guard!("MpsQuerySession", {
        require_non_null!("MpsQuerySession", pInfo);
        let mps = match instance("MpsQuerySession", Need::Sp) {
            Ok(m) => m,
            Err(s) => return s.0,
        };
        match mps.session_info(session_of(FilamentHandle)) {
            Ok(i) => {
                let c = |n: usize| n.min(ULONG::MAX as usize) as ULONG;
                // SAFETY: non-NULL (checked); the client passes a writable structure.
                unsafe {
                    *pInfo = MPS_SESSION_INFO {
                        QueuedMessages: c(i.queued),
                        BlockedReceivers: c(i.receivers),
                        OutstandingSends: c(i.sends),
                        PendingCallbacks: c(i.pending_events),
                        Closing: i.closing as ULONG,
                        SpPendingCallbacks: c(i.sp_pending_events),
                    };
                }
                Status::STATUS_SUCCESS.0
            }
            Err(s) => s.0,
        }
    })
}

/// Extension. Waits until the link to `*Sp` is up: `STATUS_SUCCESS` (at once for
/// the local SP), `STATUS_TIMEOUT` after `TimeoutMilliseconds` (< 0 waits
/// forever, 0 only tests), `STATUS_INVALID_ADDRESS` when `*Sp` is not configured,
/// `STATUS_DEVICE_NOT_READY` once `MpsShutdown` has stopped the SP.
///
/// # Safety
///
/// `Sp`, when not NULL, points to one readable `CMI_SP_ID`. NULL is refused
/// with `STATUS_INVALID_PARAMETER`; a non-NULL pointer that is not valid
/// cannot be detected.
#[no_mangle]
pub unsafe extern "C" fn MpsWaitForPeer(Sp: *const CMI_SP_ID, TimeoutMilliseconds: LONG) -> NTSTATUS {
    guard!("MpsWaitForPeer", {
        require_non_null!("MpsWaitForPeer", Sp);
        // SAFETY: non-NULL (checked); the client passes a readable id.
        let sp = sp_of(unsafe { &*Sp });
        let mps = match instance("MpsWaitForPeer", Need::Sp) {
            Ok(m) => m,
            Err(s) => return s.0,
        };
        let timeout = (TimeoutMilliseconds >= 0).then(|| Duration::from_millis(TimeoutMilliseconds as u64));
        status_of(mps.wait_for_peer(sp, timeout))
    })
}

/// Extension. Sends the library's log lines to `Routine` (with `Context`)
/// instead of stderr; NULL restores stderr. The routine is called on the
/// log's own thread, one line at a time, with no library lock held (it may
/// call any MPS routine). Returns once a call of the previous routine in
/// progress has returned, waiting at most 1 s (from the routine itself, at once).
#[no_mangle]
pub extern "C" fn MpsSetLogRoutine(Routine: PMPS_LOG_ROUTINE, Context: PVOID) -> NTSTATUS {
    guard!("MpsSetLogRoutine", {
        let ctx = Context as usize;
        log::set_sink(Routine.map(|f| {
            Box::new(move |level: Level, line: &str| {
                let c = CString::new(line.replace('\0', " ")).unwrap_or_default();
                // SAFETY: `f` is the client's routine; `c` lives until it returns.
                unsafe { f(level as ULONG, c.as_ptr(), ctx as PVOID) }
            }) as log::Sink
        }));
        Status::STATUS_SUCCESS.0
    })
}

/// Extension. Sets the log level (`MPS_LOG_OFF` .. `MPS_LOG_TRACE`), overriding
/// `MPS_LOG`. `STATUS_INVALID_PARAMETER` above `MPS_LOG_TRACE`.
#[no_mangle]
pub extern "C" fn MpsSetLogLevel(Level: ULONG) -> NTSTATUS {
    guard!("MpsSetLogLevel", {
        if Level > MPS_LOG_TRACE {
            return Status::STATUS_INVALID_PARAMETER.0;
        }
        log::set_threshold(Level);
        Status::STATUS_SUCCESS.0
    })
}

static STATUS_NAMES: once_cell::sync::Lazy<Vec<(i32, CString)>> = once_cell::sync::Lazy::new(|| {
    Status::ALL.iter().map(|(n, s)| (s.0, CString::new(*n).expect("no NUL in names"))).collect()
});

/// Extension. The name of a status (`"STATUS_PIPE_CLOSING"`), or
/// `"STATUS_UNKNOWN"`. The string is static; never free it.
#[no_mangle]
pub extern "C" fn MpsStatusName(Value: NTSTATUS) -> *const c_char {
    let r = std::panic::catch_unwind(|| {
        STATUS_NAMES.iter().find(|(v, _)| *v == Value).map(|(_, n)| n.as_ptr()).unwrap_or(c"STATUS_UNKNOWN".as_ptr())
    });
    r.unwrap_or(c"STATUS_UNKNOWN".as_ptr())
}

