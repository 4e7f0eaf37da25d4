//! Which pointers the C client holds: buffers from `MpsAllocateMessage`, and
//! received messages not yet released. Every pointer from C is looked up here
//! before it is used, so a foreign, freed or double-freed pointer is refused
//! with a status instead of being dereferenced.

use super::types::*;
use crate::log::{log, Level};
use crate::mps::{LentBytes, MessageBuf, ReceivedMessage};
use crate::status::Status;
use once_cell::sync::Lazy;
use parking_lot::{Condvar, Mutex};
use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

/// Alignment of a buffer from `MpsAllocateMessage`: `malloc`'s on 64-bit
/// Linux, so that a client may lay a structure over it.
const BUFFER_ALIGN: usize = 16;

/// A C client's buffer: memory the client writes through the pointer it was
/// given, whenever the buffer is not lent to a send.
///
/// That is why it is a raw allocation and not a `Vec` (issue 8, item 14).
/// The old registry kept an `Arc<Vec<u8>>` and gave the client
/// `Vec::as_ptr()`, a pointer Rust's rules do not let anyone write through,
/// into a `Vec` that the links shared as immutable; and it handed a buffer back
/// (the client free to write) while a link's writer could still hold a share
/// of it and a reference into its bytes. Here the client's pointer is the
/// allocator's own, the library holds the bytes only through a [`Share`], and
/// a buffer goes back to the client only once its `Share` is gone; so no
/// Rust reference to the bytes is alive while the client may write them.
struct Storage {
    ptr: NonNull<u8>,
    /// The buffer's size (the allocation has at least one byte).
    len: usize,
    layout: Layout,
    /// The library holds a [`Share`] of the buffer (from `lend` until the
    /// last clone of the send's `MessageBuf` is dropped).
    shared: Mutex<bool>,
    /// Signalled when the `Share` goes.
    released: Condvar,
}

// SAFETY: `Storage` owns a plain byte allocation (no thread affinity); who
// may read or write the bytes, and when, is the protocol described on the
// type and enforced by `lend` / `Share` / `give_back`, not by the thread.
unsafe impl Send for Storage {}
// SAFETY: as above; the only shared-access path to the bytes is `Share::bytes`.
unsafe impl Sync for Storage {}

impl Storage {
    fn new(size: usize) -> Result<Storage, Status> {
        let layout =
            Layout::from_size_align(size.max(1), BUFFER_ALIGN).map_err(|_| Status::STATUS_INSUFFICIENT_RESOURCES)?;
        // SAFETY: `layout` has a non-zero size (at least one byte).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or(Status::STATUS_INSUFFICIENT_RESOURCES)?;
        Ok(Storage { ptr, len: size, layout, shared: Mutex::new(false), released: Condvar::new() })
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed(self.layout)` and is freed only
        // here, once: the registry's entry and every `Share` hold the
        // `Storage` through an `Arc`, so nothing refers to it any more.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// The library's hold on a lent buffer's bytes (inside the send's
/// `MessageBuf`, shared with the link that writes them). One per lending.
struct Share(Arc<Storage>);

impl LentBytes for Share {
    fn bytes(&self) -> &[u8] {
        // SAFETY: the bytes are allocated (the `Arc` keeps the `Storage`) and
        // initialized (zeroed at allocation; the client only ever stores
        // bytes in them). Nobody writes them while the returned slice lives:
        // it borrows this `Share`; a `Share` exists only while the buffer is
        // lent (from `lend`), `give_back` returns the buffer to the client
        // only after the `Share` is dropped, and the client does not write a
        // lent buffer (SPEC 4: it is lent to the library until the send's
        // completion; include/mps.h says so at MpsAllocateMessage).
        unsafe { std::slice::from_raw_parts(self.0.ptr.as_ptr(), self.0.len) }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        *self.0.shared.lock() = false;
        self.0.released.notify_all();
    }
}

struct BufEntry {
    storage: Arc<Storage>,
    /// Lent to a send in flight (from `lend` until `give_back` returns).
    lent: bool,
}

static BUFFERS: Lazy<Mutex<HashMap<usize, BufEntry>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// Registers a new buffer; returns the address the client gets (aligned to
/// 16 bytes, zero-filled; unique and non-NULL even for `size` 0).
pub(crate) fn allocate(size: usize) -> Result<PVOID, Status> {
    let storage = Arc::new(Storage::new(size)?);
    let p = storage.ptr.as_ptr();
    BUFFERS.lock().insert(p as usize, BufEntry { storage, lent: false });
    Ok(p.cast())
}

/// Forgets a buffer (`MpsFreeMessage`).
pub(crate) fn free(p: PVOID) -> Result<(), Status> {
    let mut b = BUFFERS.lock();
    match b.get(&(p as usize)) {
        None => Err(Status::STATUS_INVALID_PARAMETER),
        Some(e) if e.lent => Err(Status::STATUS_DEVICE_BUSY),
        Some(_) => {
            // Not lent, so no `Share`: the allocation goes with the entry.
            b.remove(&(p as usize));
            Ok(())
        }
    }
}

/// Marks a buffer lent to a send and returns the library's hold on it.
pub(crate) fn lend(p: PVOID) -> Result<MessageBuf, Status> {
    let mut b = BUFFERS.lock();
    match b.get_mut(&(p as usize)) {
        None => Err(Status::STATUS_INVALID_USER_BUFFER),
        Some(e) if e.lent => Err(Status::STATUS_DEVICE_BUSY),
        Some(e) => {
            e.lent = true;
            *e.storage.shared.lock() = true;
            Ok(MessageBuf::lent(Box::new(Share(e.storage.clone()))))
        }
    }
}

/// The send is over: once the library has let go of the buffer's bytes
/// everywhere (`buf` is dropped here; a link's writer may still be writing
/// them out, for at most the rest of one write, or until the link ends), the
/// buffer is the client's again. The caller holds no other clone of `buf`.
pub(crate) fn give_back(buf: MessageBuf) {
    let p = buf.as_ptr() as usize;
    let storage = BUFFERS.lock().get(&p).map(|e| e.storage.clone());
    drop(buf);
    let Some(storage) = storage else { return };
    {
        let mut shared = storage.shared.lock();
        let mut said = false;
        while *shared {
            if storage.released.wait_for(&mut shared, Duration::from_secs(1)).timed_out() && !said {
                said = true;
                log!(Level::Warn, "buffer {p:#x}: its send is complete, but a link is still writing it; the completion waits for the link");
            }
        }
    }
    if let Some(e) = BUFFERS.lock().get_mut(&p) {
        e.lent = false;
    }
}

/// A received message as the client holds it: the C structure first, so a
/// pointer to the record is a pointer to its `MPS_RECEIVED_EVENT_DATA`.
#[repr(C)]
struct Record {
    data: MPS_RECEIVED_EVENT_DATA,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Received {
    /// Event-data address -> payload address.
    by_event: HashMap<usize, usize>,
    /// Payload address -> event-data address.
    by_payload: HashMap<usize, usize>,
}

static RECEIVED: Lazy<Mutex<Received>> = Lazy::new(|| Mutex::new(Received::default()));

/// Hands a received message to the client; returns its event data.
pub(crate) fn hand_out(m: ReceivedMessage) -> PMPS_RECEIVED_EVENT_DATA {
    let mut payload = m.data;
    if payload.capacity() == 0 {
        // A zero-length message still has a unique, non-NULL Ptr.
        payload.reserve_exact(1);
    }
    let rec = Box::new(Record {
        data: MPS_RECEIVED_EVENT_DATA {
            Ptr: payload.as_mut_ptr().cast(),
            Sender: CMI_SP_ID { StorageUnit: m.sender.unit, Sp: m.sender.sp },
            Size: payload.len() as ULONG,
            SynchronousStatus: Status::STATUS_SUCCESS.0,
            FilamentHandle: m.session.0 as usize as MPS_HANDLE,
            Context: m.context as PVOID,
            SequenceTag: m.tag,
        },
        payload,
    });
    let payload_addr = rec.payload.as_ptr() as usize;
    let p = Box::into_raw(rec);
    let mut r = RECEIVED.lock();
    r.by_event.insert(p as usize, payload_addr);
    r.by_payload.insert(payload_addr, p as usize);
    p.cast()
}

/// Releases a received message by either of its pointers.
pub(crate) fn release(p: PVOID) -> Result<(), Status> {
    let addr = p as usize;
    let event = {
        let mut r = RECEIVED.lock();
        if let Some(payload) = r.by_event.remove(&addr) {
            r.by_payload.remove(&payload);
            addr
        } else if let Some(event) = r.by_payload.remove(&addr) {
            r.by_event.remove(&event);
            event
        } else {
            return Err(Status::STATUS_INVALID_PARAMETER);
        }
    };
    // SAFETY: `event` came from Box::into_raw in hand_out and was in the
    // registry until the removal above, under its lock; so it is live, owned
    // by no one else, and released exactly once.
    drop(unsafe { Box::from_raw(event as *mut Record) });
    Ok(())
}
