//! Message buffers (`MpsAllocateMessage`): owned by the client, lent to the
//! library while a send is in flight.

use crate::status::Status;
use std::sync::Arc;

/// Bytes that the library holds but does not own: a C client's buffer, lent
/// to a send (src/ffi/registry.rs). The implementation guarantees that the
/// slice `bytes` returns is allocated and not written by anyone for as long
/// as the value lives; its `Drop` is how the owner learns that the library
/// is done with them.
pub(crate) trait LentBytes: Send + Sync {
    fn bytes(&self) -> &[u8];
}

/// A message's bytes as the library and its links hold them: the library's
/// own (`Vec`), or a C client's buffer lent to a send.
pub struct MessageBytes(Repr);

enum Repr {
    Owned(Vec<u8>),
    Lent(Box<dyn LentBytes>),
}

impl std::ops::Deref for MessageBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Lent(l) => l.bytes(),
        }
    }
}

/// A copy is always the library's own: a lent buffer is never duplicated.
impl Clone for MessageBytes {
    fn clone(&self) -> MessageBytes {
        MessageBytes(Repr::Owned(self.to_vec()))
    }
}

impl FromIterator<u8> for MessageBytes {
    fn from_iter<I: IntoIterator<Item = u8>>(it: I) -> MessageBytes {
        MessageBytes(Repr::Owned(it.into_iter().collect()))
    }
}

impl From<Vec<u8>> for MessageBytes {
    fn from(v: Vec<u8>) -> MessageBytes {
        MessageBytes(Repr::Owned(v))
    }
}

impl PartialEq<MessageBytes> for Vec<u8> {
    fn eq(&self, other: &MessageBytes) -> bool {
        self[..] == other[..]
    }
}

impl std::fmt::Debug for MessageBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageBytes({} bytes)", self.len())
    }
}

/// A payload as the transport carries it: shared, never copied.
pub type Payload = Arc<MessageBytes>;

/// A transmit buffer. Cloning shares the bytes (the library keeps a clone
/// while a send of it is in flight); [`MessageBuf::as_mut_slice`] copies them
/// first if they are shared, so a buffer in flight is never changed under the link.
#[derive(Clone)]
pub struct MessageBuf {
    data: Payload,
}

impl MessageBuf {
    /// A zero-filled buffer of `size` bytes. Even `size == 0` has its own
    /// allocation, so its address is unique and non-NULL (SPEC 4).
    pub fn new(size: usize) -> Result<MessageBuf, Status> {
        let mut v: Vec<u8> = Vec::new();
        v.try_reserve_exact(size.max(1)).map_err(|_| Status::STATUS_INSUFFICIENT_RESOURCES)?;
        v.resize(size, 0);
        Ok(MessageBuf { data: Arc::new(MessageBytes(Repr::Owned(v))) })
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Result<MessageBuf, Status> {
        let mut b = MessageBuf::new(bytes.len())?;
        b.as_mut_slice().copy_from_slice(bytes);
        Ok(b)
    }

    /// A client's buffer lent to a send (the C API's): the library reads it,
    /// never writes it, and lets go of it by dropping every clone.
    pub(crate) fn lent(bytes: Box<dyn LentBytes>) -> MessageBuf {
        MessageBuf { data: Arc::new(MessageBytes(Repr::Lent(bytes))) }
    }

    /// Its size in bytes (as allocated).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The bytes, writable (copied first if a send still shares them, or if
    /// they are a client's lent buffer).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let d = Arc::make_mut(&mut self.data);
        if let Repr::Lent(l) = &d.0 {
            d.0 = Repr::Owned(l.bytes().to_vec());
        }
        match &mut d.0 {
            Repr::Owned(v) => v.as_mut_slice(),
            Repr::Lent(_) => unreachable!("made owned above"),
        }
    }

    /// The address of the first byte: stable for the buffer's life, unique, non-NULL.
    pub fn as_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }

    /// The bytes as the transport carries them (a shared reference, no copy).
    pub(crate) fn payload(&self) -> Payload {
        self.data.clone()
    }
}

impl std::fmt::Debug for MessageBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageBuf({} bytes at {:p})", self.len(), self.as_ptr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_length_buffers_are_distinct_and_non_null() {
        let a = MessageBuf::new(0).unwrap();
        let b = MessageBuf::new(0).unwrap();
        assert!(!a.as_ptr().is_null());
        assert_ne!(a.as_ptr(), b.as_ptr());
    }

    #[test]
    fn a_shared_buffer_is_copied_before_it_changes() {
        let mut a = MessageBuf::from_slice(b"abc").unwrap();
        let lent = a.payload();
        a.as_mut_slice()[0] = b'x';
        assert_eq!(&lent[..], b"abc");
        assert_eq!(a.as_slice(), b"xbc");
    }

    #[test]
    fn an_impossible_size_is_refused_not_aborted() {
        assert_eq!(MessageBuf::new(usize::MAX / 2).unwrap_err(), Status::STATUS_INSUFFICIENT_RESOURCES);
    }

    struct Fixed(Vec<u8>, Arc<std::sync::atomic::AtomicBool>);
    impl LentBytes for Fixed {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
    }
    impl Drop for Fixed {
        fn drop(&mut self) {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_lent_buffer_is_read_in_place_copied_to_be_written_and_let_go_with_its_last_clone() {
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lent = MessageBuf::lent(Box::new(Fixed(b"lent".to_vec(), dropped.clone())));
        let share = lent.payload();
        assert_eq!(&share[..], b"lent");
        let mut own = lent.clone();
        own.as_mut_slice()[0] = b'L';
        assert_eq!((own.as_slice(), lent.as_slice()), (&b"Lent"[..], &b"lent"[..]), "written: a copy, never the lent bytes");
        drop(lent);
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst), "the link's share still holds it");
        drop(share);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst), "the last share let it go");
    }
}
