//! Which pointers the C client holds: buffers from `MpsAllocateMessage`, and
//! received messages not yet released. Every pointer from C is looked up here
//! before it is used, so a foreign, freed or double-freed pointer is refused
//! with a status instead of being dereferenced.

use super::types::*;
use crate::mps::{MessageBuf, ReceivedMessage};
use crate::status::Status;
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::HashMap;

struct BufEntry {
    buf: MessageBuf,
    /// Lent to a send in flight.
    lent: bool,
}

static BUFFERS: Lazy<Mutex<HashMap<usize, BufEntry>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// Registers a new buffer; returns the address the client gets.
pub(crate) fn allocate(size: usize) -> Result<PVOID, Status> {
    let buf = MessageBuf::new(size)?;
    let p = buf.as_ptr() as usize;
    BUFFERS.lock().insert(p, BufEntry { buf, lent: false });
    Ok(p as PVOID)
}

/// Forgets a buffer (`MpsFreeMessage`).
pub(crate) fn free(p: PVOID) -> Result<(), Status> {
    let mut b = BUFFERS.lock();
    match b.get(&(p as usize)) {
        None => Err(Status::STATUS_INVALID_PARAMETER),
        Some(e) if e.lent => Err(Status::STATUS_DEVICE_BUSY),
        Some(_) => {
            b.remove(&(p as usize));
            Ok(())
        }
    }
}

/// Marks a buffer lent to a send and returns it.
pub(crate) fn lend(p: PVOID) -> Result<MessageBuf, Status> {
    let mut b = BUFFERS.lock();
    match b.get_mut(&(p as usize)) {
        None => Err(Status::STATUS_INVALID_USER_BUFFER),
        Some(e) if e.lent => Err(Status::STATUS_DEVICE_BUSY),
        Some(e) => {
            e.lent = true;
            Ok(e.buf.clone())
        }
    }
}

/// The send is over: the buffer is the client's again.
pub(crate) fn give_back(p: *const u8) {
    if let Some(e) = BUFFERS.lock().get_mut(&(p as usize)) {
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
