//! Message buffers (`MpsAllocateMessage`): owned by the client, lent to the
//! library while a send is in flight.

use crate::status::Status;
use std::sync::Arc;

/// A transmit buffer. Cloning shares the bytes (the library keeps a clone
/// while a send of it is in flight); [`MessageBuf::as_mut_slice`] copies them
/// first if they are shared, so a buffer in flight is never changed under the link.
#[derive(Clone)]
pub struct MessageBuf {
    data: Arc<Vec<u8>>,
}

impl MessageBuf {
    /// A zero-filled buffer of `size` bytes. Even `size == 0` has its own
    /// allocation, so its address is unique and non-NULL (SPEC 4).
    pub fn new(size: usize) -> Result<MessageBuf, Status> {
        let mut v: Vec<u8> = Vec::new();
        v.try_reserve_exact(size.max(1)).map_err(|_| Status::STATUS_INSUFFICIENT_RESOURCES)?;
        v.resize(size, 0);
        Ok(MessageBuf { data: Arc::new(v) })
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Result<MessageBuf, Status> {
        let mut b = MessageBuf::new(bytes.len())?;
        b.as_mut_slice().copy_from_slice(bytes);
        Ok(b)
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

    /// The bytes, writable (copied first if a send still shares them).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        Arc::make_mut(&mut self.data).as_mut_slice()
    }

    /// The address of the first byte: stable for the buffer's life, unique, non-NULL.
    pub fn as_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }

    /// The bytes as the transport carries them (a shared reference, no copy).
    pub(crate) fn payload(&self) -> Arc<Vec<u8>> {
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
}
