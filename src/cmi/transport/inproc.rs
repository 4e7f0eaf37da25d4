//! The in-process transport: a registry of the endpoints listening in this
//! process (by `inproc:` name), binding, dialing and accepting on them, and
//! the pipe a link runs over (`InprocStream`: the same frames, handshake and
//! heartbeats as a socket, carried through memory). No system call: only
//! this process's own SPs can reach an endpoint.

use crate::cmi::stream::{Stream, MAX_IOV};
use once_cell::sync::Lazy;
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::{Duration, Instant};

// --- endpoints -----------------------------------------------------------------

struct InprocEndpoint {
    pending: Mutex<(VecDeque<InprocStream>, bool)>,
    cv: Condvar,
}

static INPROC: Lazy<Mutex<HashMap<String, Arc<InprocEndpoint>>>> = Lazy::new(|| Mutex::new(HashMap::new()));

/// A listening in-process endpoint, registered under its name.
pub(crate) struct Endpoint {
    name: String,
    ep: Arc<InprocEndpoint>,
}

/// Registers an endpoint `name`; refused while another listens under it.
pub(super) fn bind(name: &str) -> io::Result<Endpoint> {
    let mut reg = INPROC.lock();
    if reg.contains_key(name) {
        return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("inproc:{name} is already listening")));
    }
    let ep = Arc::new(InprocEndpoint { pending: Mutex::new((VecDeque::new(), false)), cv: Condvar::new() });
    reg.insert(name.to_string(), ep.clone());
    Ok(Endpoint { name: name.to_string(), ep })
}

/// Connects to the endpoint `name`: one end of a new pipe queued for its
/// `accept`, the other returned.
pub(super) fn dial(name: &str) -> io::Result<Box<dyn Stream>> {
    let ep = INPROC.lock().get(name).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::ConnectionRefused))?;
    let (mine, theirs) = InprocStream::pair();
    let mut p = ep.pending.lock();
    if p.1 {
        return Err(io::Error::from(io::ErrorKind::ConnectionRefused));
    }
    p.0.push_back(theirs);
    ep.cv.notify_one();
    Ok(Box::new(mine))
}

impl Endpoint {
    /// Waits for a connection; `ConnectionAborted` once the endpoint is closed.
    pub(super) fn accept(&self) -> io::Result<Box<dyn Stream>> {
        let ep = &self.ep;
        let mut p = ep.pending.lock();
        loop {
            if let Some(s) = p.0.pop_front() {
                return Ok(Box::new(s));
            }
            if p.1 {
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "endpoint closed"));
            }
            ep.cv.wait(&mut p);
        }
    }

    /// Unregisters the name and closes the endpoint: a blocked `accept` returns.
    pub(super) fn closer(&self) -> Box<dyn Fn() + Send> {
        let (ep, name) = (self.ep.clone(), self.name.clone());
        Box::new(move || {
            INPROC.lock().remove(&name);
            ep.pending.lock().1 = true;
            ep.cv.notify_all();
        })
    }
}

// --- the pipe ---------------------------------------------------------------------

/// Bytes one direction of an in-process pipe holds before a writer sees `WouldBlock`.
const PIPE_CAPACITY: usize = 1 << 20;

struct PipeState {
    data: VecDeque<u8>,
    closed: bool,
    /// A reader was interrupted (`Stream::interrupt`) and has not yet noticed.
    interrupted: bool,
}

/// One direction of an in-process byte pipe.
struct Pipe {
    state: Mutex<PipeState>,
    readable: Condvar,
    writable: Condvar,
}

impl Pipe {
    fn new() -> Arc<Pipe> {
        Arc::new(Pipe {
            state: Mutex::new(PipeState { data: VecDeque::new(), closed: false, interrupted: false }),
            readable: Condvar::new(),
            writable: Condvar::new(),
        })
    }
    fn close(&self) {
        self.state.lock().closed = true;
        self.readable.notify_all();
        self.writable.notify_all();
    }
    /// The writer is done: the reader sees end-of-stream after the data.
    fn close_write(&self) {
        self.close();
    }
}

/// An in-process link end: the same frames, handshake and heartbeats as a
/// socket, carried through memory between two SP instances of one process.
pub(crate) struct InprocStream {
    rx: Arc<Pipe>,
    tx: Arc<Pipe>,
}

impl InprocStream {
    /// Two connected ends.
    pub(crate) fn pair() -> (InprocStream, InprocStream) {
        let a = Pipe::new();
        let b = Pipe::new();
        (InprocStream { rx: a.clone(), tx: b.clone() }, InprocStream { rx: b, tx: a })
    }
}

impl Stream for InprocStream {
    fn read_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        // None (Duration::MAX): no deadline.
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.rx.state.lock();
        while st.data.is_empty() && !st.closed {
            if st.interrupted {
                st.interrupted = false;
                return Ok(None);
            }
            match deadline {
                Some(d) => {
                    if self.rx.readable.wait_until(&mut st, d).timed_out() && st.data.is_empty() && !st.closed {
                        return Ok(None);
                    }
                }
                None => self.rx.readable.wait(&mut st),
            }
        }
        let n = buf.len().min(st.data.len());
        for (dst, src) in buf.iter_mut().zip(st.data.drain(..n)) {
            *dst = src;
        }
        drop(st);
        self.rx.writable.notify_all();
        Ok(Some(n))
    }

    fn write_nonblocking(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut st = self.tx.state.lock();
        if st.closed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let mut room = PIPE_CAPACITY.saturating_sub(st.data.len());
        if room == 0 {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        let mut written = 0;
        for b in bufs.iter().take(MAX_IOV) {
            let n = b.len().min(room);
            st.data.extend(&b[..n]);
            written += n;
            room -= n;
            if room == 0 {
                break;
            }
        }
        drop(st);
        self.tx.readable.notify_all();
        Ok(written)
    }

    fn wait_writable(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut st = self.tx.state.lock();
        while st.data.len() >= PIPE_CAPACITY && !st.closed {
            if self.tx.writable.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        Ok(())
    }

    fn shutdown(&self) {
        self.rx.close();
        self.tx.close();
    }

    fn shutdown_write(&self) {
        self.tx.close_write();
    }

    fn interrupt(&self) {
        self.rx.state.lock().interrupted = true;
        self.rx.readable.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inproc_pipe_carries_bytes_and_reports_close() {
        let (a, b) = InprocStream::pair();
        assert_eq!(a.write_nonblocking(&[IoSlice::new(b"hel"), IoSlice::new(b"lo")]).unwrap(), 5);
        let mut buf = [0u8; 16];
        assert_eq!(b.read_timeout(&mut buf, Duration::from_secs(5)).unwrap(), Some(5));
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(b.read_timeout(&mut buf, Duration::from_millis(1)).unwrap(), None);
        a.shutdown();
        assert_eq!(b.read_timeout(&mut buf, Duration::from_secs(5)).unwrap(), Some(0));
        assert!(b.write_nonblocking(&[IoSlice::new(b"x")]).is_err());
    }

    #[test]
    fn inproc_pipe_is_bounded() {
        let (a, _b) = InprocStream::pair();
        let big = vec![0u8; PIPE_CAPACITY + 10];
        assert_eq!(a.write_nonblocking(&[IoSlice::new(&big)]).unwrap(), PIPE_CAPACITY);
        assert_eq!(a.write_nonblocking(&[IoSlice::new(b"x")]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
