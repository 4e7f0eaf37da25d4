//! Byte streams under a link: the `Stream` trait, and sockets (Unix-domain
//! and TCP, one fd type); the in-process pipe is `transport::inproc`'s. This
//! file and `src/ffi/` are where `unsafe` lives: the system calls. Every
//! write is `MSG_NOSIGNAL`, so a peer's death never raises SIGPIPE in the
//! survivor; API threads write with `MSG_DONTWAIT` only, so a sender never
//! blocks on a slow link (the link's writer thread alone waits for room,
//! bounded by SO_SNDTIMEO).

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The in-process pipe, under the name its users (link.rs's tests,
/// `crate::fuzzing`) know it by.
pub(crate) use super::transport::InprocStream;

/// What a link needs from its byte stream.
pub(crate) trait Stream: Send + Sync {
    /// Reads into `buf`, waiting at most `timeout`. `Ok(None)`: the time ran
    /// out; `Ok(Some(0))`: the far end closed.
    fn read_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>>;
    /// Like `read_timeout` with no timeout, but not interruptible
    /// (`shutdown` still ends it): for a reader that only the stream's own
    /// bytes can satisfy (a synchronous send's confirmation), which then
    /// waits on the socket alone, without the interrupt's eventfd.
    fn read_uninterruptible(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.read_timeout(buf, Duration::MAX)
    }
    /// Like `read_timeout`, but appends to `v` (at most `max` bytes, within
    /// its spare capacity). Through a bounce buffer: for the in-process pipe,
    /// which copies anyway; a socket reads a payload straight into its own
    /// allocation (`SocketStream::read_rest_append`).
    fn read_timeout_append(&self, v: &mut Vec<u8>, max: usize, timeout: Duration) -> io::Result<Option<usize>> {
        let mut chunk = [0u8; 16384];
        let n = max.min(chunk.len()).min(v.capacity() - v.len());
        let got = self.read_timeout(&mut chunk[..n], timeout)?;
        if let Some(k) = got {
            v.extend_from_slice(&chunk[..k]);
        }
        Ok(got)
    }
    /// Like `read_timeout_append`, but for the rest of a frame the peer is
    /// in the middle of sending: waits (at most `timeout` without progress)
    /// until all `max` bytes are there, in as few calls as the stream allows.
    /// Not interruptible by `interrupt` (a reader yields only at frame
    /// boundaries anyway); `shutdown` ends it.
    fn read_rest_append(&self, v: &mut Vec<u8>, max: usize, timeout: Duration) -> io::Result<Option<usize>> {
        self.read_timeout_append(v, max, timeout)
    }
    /// Writes what fits without blocking; `WouldBlock` when nothing fits.
    fn write_nonblocking(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Writes, waiting for room as needed, at most `timeout` without progress
    /// (then `WouldBlock` if nothing was written). For the writer thread
    /// only, which owns the backlog: `shutdown` ends the wait.
    fn write_blocking(&self, bufs: &[IoSlice<'_>], timeout: Duration) -> io::Result<usize> {
        self.wait_writable(timeout)?;
        self.write_nonblocking(bufs)
    }
    /// Waits until a write could make progress, or `timeout` passes.
    fn wait_writable(&self, timeout: Duration) -> io::Result<()>;
    /// Ends the stream both ways; blocked readers and writers return.
    fn shutdown(&self);
    /// Ends the writing side: the far end reads end-of-stream once it has
    /// read everything written before; this end can still read.
    fn shutdown_write(&self);
    /// Makes a blocked (or the next) `read_timeout` return `Ok(None)` at once.
    fn interrupt(&self);
    /// The kernel's send buffer for this stream, in bytes (sockets only).
    fn send_buffer(&self) -> Option<u32> {
        None
    }
}

/// A stream shared while it waits as a standby path (the waiting thread
/// reads it; a link that loses its connection interrupts it), then handed to
/// a link session like any other.
impl Stream for std::sync::Arc<dyn Stream> {
    fn read_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        (**self).read_timeout(buf, timeout)
    }
    fn read_uninterruptible(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        (**self).read_uninterruptible(buf)
    }
    fn read_timeout_append(&self, v: &mut Vec<u8>, max: usize, timeout: Duration) -> io::Result<Option<usize>> {
        (**self).read_timeout_append(v, max, timeout)
    }
    fn read_rest_append(&self, v: &mut Vec<u8>, max: usize, timeout: Duration) -> io::Result<Option<usize>> {
        (**self).read_rest_append(v, max, timeout)
    }
    fn write_nonblocking(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (**self).write_nonblocking(bufs)
    }
    fn write_blocking(&self, bufs: &[IoSlice<'_>], timeout: Duration) -> io::Result<usize> {
        (**self).write_blocking(bufs, timeout)
    }
    fn wait_writable(&self, timeout: Duration) -> io::Result<()> {
        (**self).wait_writable(timeout)
    }
    fn shutdown(&self) {
        (**self).shutdown()
    }
    fn shutdown_write(&self) {
        (**self).shutdown_write()
    }
    fn interrupt(&self) {
        (**self).interrupt()
    }
    fn send_buffer(&self) -> Option<u32> {
        (**self).send_buffer()
    }
}

/// Most iovecs passed to one `sendmsg`.
pub(crate) const MAX_IOV: usize = 64;

/// A connected stream socket (AF_UNIX or AF_INET/AF_INET6), with an eventfd
/// that interrupts a blocked read.
pub(crate) struct SocketStream {
    fd: OwnedFd,
    wake: OwnedFd,
    /// The last read filled the caller's buffer.
    more: AtomicBool,
    /// SO_RCVTIMEO / SO_SNDTIMEO as last set, in microseconds (0: never set).
    rcvtimeo_us: AtomicU64,
    sndtimeo_us: AtomicU64,
}

/// What `poll` saw.
enum Ready {
    Socket,
    Interrupted,
    TimedOut,
}

impl SocketStream {
    /// Takes over a connected socket.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<SocketStream> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let w = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if w < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `w` is a fresh descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(w) };
        Ok(SocketStream { fd, wake, more: AtomicBool::new(false), rcvtimeo_us: AtomicU64::new(0), sndtimeo_us: AtomicU64::new(0) })
    }

    /// Reads after a `poll` on the socket and (`nfds` 2) the interrupt.
    fn read_polled(&self, buf: &mut [u8], timeout: Duration, nfds: libc::nfds_t) -> io::Result<Option<usize>> {
        // When the last read filled the buffer, more is probably waiting:
        // read at once. Otherwise the next bytes are probably not there yet
        // (a reply in a ping-pong): wait first, and spare the failed read.
        let mut try_first = self.more.load(Ordering::Relaxed);
        loop {
            if !try_first {
                match self.poll_n(libc::POLLIN, timeout, nfds)? {
                    Ready::Socket => {}
                    Ready::Interrupted | Ready::TimedOut => return Ok(None),
                }
            }
            // SAFETY: `buf` is a valid, writable slice of `buf.len()` bytes
            // owned by the caller for the duration of the call.
            let n = unsafe {
                libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
            };
            if n >= 0 {
                self.more.store(n as usize == buf.len() && n > 0, Ordering::Relaxed);
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => try_first = false,
                _ => return Err(e),
            }
        }
    }

    /// Sets SO_RCVTIMEO or SO_SNDTIMEO (`opt`) to `timeout`, unless it is
    /// already that (`cache`): the blocking calls are bounded by it, so a
    /// stalled peer still lets the caller check its clocks and flags.
    fn set_timeout(&self, opt: libc::c_int, cache: &AtomicU64, timeout: Duration) -> io::Result<()> {
        let us = (timeout.as_micros().clamp(1000, 3_600_000_000)) as u64;
        if cache.load(Ordering::Relaxed) == us {
            return Ok(());
        }
        let tv = libc::timeval { tv_sec: (us / 1_000_000) as libc::time_t, tv_usec: (us % 1_000_000) as libc::suseconds_t };
        set_socket_option(&self.fd, opt, &tv)?;
        cache.store(us, Ordering::Relaxed);
        Ok(())
    }

    /// One `sendmsg` of at most `MAX_IOV` slices, retried on EINTR.
    fn sendmsg(&self, bufs: &[IoSlice<'_>], flags: libc::c_int) -> io::Result<usize> {
        let n = bufs.len().min(MAX_IOV);
        // SAFETY: an all-zero msghdr is a valid "no name, no control" header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is guaranteed ABI-compatible with struct iovec on Unix.
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = n as _;
        loop {
            // SAFETY: msg points at `n` valid iovecs borrowed from `bufs`, which
            // outlive the call; the kernel only reads them.
            let r = unsafe {
                libc::sendmsg(self.fd.as_raw_fd(), &msg, flags)
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn poll(&self, events: libc::c_short, timeout: Duration) -> io::Result<Ready> {
        self.poll_n(events, timeout, 2)
    }

    /// `poll` on the socket and, with `nfds` 2, the interrupt.
    fn poll_n(&self, events: libc::c_short, timeout: Duration, nfds: libc::nfds_t) -> io::Result<Ready> {
        let mut pfd = [
            libc::pollfd { fd: self.fd.as_raw_fd(), events, revents: 0 },
            libc::pollfd { fd: self.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // Duration::MAX: no timeout (-1), so no timer per wait.
        let ms = if timeout == Duration::MAX { -1 } else { timeout.as_millis().min(i32::MAX as u128) as libc::c_int };
        loop {
            // SAFETY: `pfd` is a valid array of 2 pollfds for the duration of
            // the call, and nfds is 1 or 2.
            let r = unsafe { libc::poll(pfd.as_mut_ptr(), nfds, ms) };
            if r > 0 {
                if pfd[1].revents != 0 {
                    let mut v = 0u64;
                    // SAFETY: reads 8 bytes into a live u64 (eventfd's unit);
                    // the fd is non-blocking, so this never waits.
                    unsafe { libc::read(self.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
                    return Ok(Ready::Interrupted);
                }
                return Ok(Ready::Socket);
            }
            if r == 0 {
                return Ok(Ready::TimedOut);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Stream for SocketStream {
    fn send_buffer(&self) -> Option<u32> {
        send_buffer(&self.fd).ok()
    }

    fn read_timeout(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        self.read_polled(buf, timeout, 2)
    }

    fn read_uninterruptible(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.read_polled(buf, Duration::MAX, 1)
    }

    fn read_rest_append(&self, v: &mut Vec<u8>, max: usize, timeout: Duration) -> io::Result<Option<usize>> {
        self.set_timeout(libc::SO_RCVTIMEO, &self.rcvtimeo_us, timeout)?;
        let n = max.min(v.capacity() - v.len());
        loop {
            let spare = v.spare_capacity_mut();
            // SAFETY: `spare` is the vector's uninitialized capacity, at least
            // `n` bytes, valid for writes for the duration of the call; the
            // kernel writes at most `n` bytes into it. MSG_WAITALL: one call
            // for the whole rest, the kernel waking this thread as it comes.
            let r = unsafe { libc::recv(self.fd.as_raw_fd(), spare.as_mut_ptr().cast(), n, libc::MSG_WAITALL) };
            if r >= 0 {
                let r = r as usize;
                // SAFETY: the kernel initialized the first `r` (<= n) bytes of
                // the spare capacity.
                unsafe { v.set_len(v.len() + r) };
                self.more.store(false, Ordering::Relaxed);
                return Ok(Some(r));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                // SO_RCVTIMEO ran out with nothing read.
                io::ErrorKind::WouldBlock => return Ok(None),
                _ => return Err(e),
            }
        }
    }

    fn write_blocking(&self, bufs: &[IoSlice<'_>], timeout: Duration) -> io::Result<usize> {
        self.set_timeout(libc::SO_SNDTIMEO, &self.sndtimeo_us, timeout)?;
        self.sendmsg(bufs, libc::MSG_NOSIGNAL)
    }

    fn write_nonblocking(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.sendmsg(bufs, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
    }

    fn wait_writable(&self, timeout: Duration) -> io::Result<()> {
        self.poll(libc::POLLOUT, timeout).map(|_| ())
    }

    fn interrupt(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd; failure
        // (counter saturated) still leaves it readable, which is all we need.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn shutdown(&self) {
        // SAFETY: shutdown on an fd we own; failure (already shut, not
        // connected) is harmless and ignored.
        unsafe {
            libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR);
        }
    }

    fn shutdown_write(&self) {
        // SAFETY: as above.
        unsafe {
            libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR);
        }
    }
}

/// Asks for a send buffer of `bytes` (`SO_SNDBUF`) on a socket. The kernel
/// doubles the figure for its bookkeeping and caps it at `net.core.wmem_max`.
pub(crate) fn set_send_buffer(fd: &impl AsRawFd, bytes: u32) -> io::Result<()> {
    set_socket_option(fd, libc::SO_SNDBUF, &(bytes.min(libc::c_int::MAX as u32) as libc::c_int))
}

/// `setsockopt(SOL_SOCKET, opt)` with the plain-data value `v`.
fn set_socket_option<T: Copy>(fd: &impl AsRawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: passes a live value and its exact size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket's send buffer as the kernel sized it (`SO_SNDBUF`), in bytes.
pub(crate) fn send_buffer(fd: &impl AsRawFd) -> io::Result<u32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v`, a live c_int
    // whose size `len` holds, and stores the length it wrote into `len`.
    let r = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, (&mut v as *mut libc::c_int).cast(), &mut len)
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v.max(0) as u32)
}

/// Sets TCP_NODELAY: MPS messages are latency-bound and already batched by the link.
pub(crate) fn set_nodelay(s: &std::net::TcpStream) {
    let _ = s.set_nodelay(true);
}

/// This process's effective user id: the user that must own the directory
/// of a listening Unix-domain socket (`cmi::transport::unix::bind`), and
/// the `<uid>` of the default runtime directory `/tmp/mps-<uid>`.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no argument, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

// --- connecting, accepting and waiting without blocking ------------------------

/// A shutdown signal that `poll` can wait on with sockets: an eventfd that,
/// once signalled, stays readable (it is never drained), so every thread that
/// polls it afterwards returns at once.
pub(crate) struct Waker(OwnedFd);

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let w = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if w < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `w` is a fresh descriptor that nothing else owns.
        Ok(Waker(unsafe { OwnedFd::from_raw_fd(w) }))
    }

    /// Makes the signal readable, for good.
    pub(crate) fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd; failure
        // (counter saturated) still leaves it readable, which is all we need.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// A `pollfd` entry that is ready once `wake` has been called.
    pub(crate) fn pollfd(&self) -> libc::pollfd {
        libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 }
    }
}

/// A `poll` timeout in milliseconds: `None` waits forever; a part of a
/// millisecond counts as a whole one, so a caller never spins on 0 ms
/// waits just before its deadline.
fn poll_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
    }
}

/// `poll(2)` over `fds` for at most `timeout` (`None`: no limit). Returns how
/// many entries have events; 0 when the time ran out or a signal interrupted
/// the wait (callers check their own deadlines).
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfds for the
    // duration of the call; the kernel writes only their `revents`.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, poll_ms(timeout)) };
    if r >= 0 {
        return Ok(r as usize);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        return Ok(0);
    }
    Err(e)
}

/// One `send` on a socket that never blocks and never raises SIGPIPE
/// (`MSG_DONTWAIT | MSG_NOSIGNAL`), retried on EINTR: `Ok(None)` when the
/// socket has no room. For connections the listener's poller holds before
/// their handshake is done (`cmi::acceptor`), which have no `SocketStream`
/// (and so no eventfd) yet: one descriptor each.
pub(crate) fn send_now(fd: &impl AsRawFd, bytes: &[u8]) -> io::Result<Option<usize>> {
    // SAFETY: `bytes` is a valid, readable slice of `bytes.len()` bytes for
    // the duration of the call; the kernel only reads it.
    now(|| unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) })
}

/// One `recv` on a socket that never blocks (`MSG_DONTWAIT`), retried on
/// EINTR: `Ok(None)` when nothing is there, `Ok(Some(0))` at end-of-stream
/// (see `send_now`).
pub(crate) fn recv_now(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is a valid, writable slice of `buf.len()` bytes for the
    // duration of the call; the kernel writes at most that many.
    now(|| unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
}

/// A non-blocking transfer call (`send_now`, `recv_now`): retried on EINTR,
/// `Ok(None)` on EAGAIN.
fn now(mut call: impl FnMut() -> isize) -> io::Result<Option<usize>> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(Some(r as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// The error a connect reports when `stop` was signalled during it.
pub(crate) fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "this SP is shutting down")
}

/// Connects a new stream socket of `domain` to the address `sa` (`len`
/// bytes of it) without ever blocking in `connect(2)`: the socket is
/// non-blocking while it connects, a connection in progress is waited for
/// with `poll` (at most `timeout`, and no longer than until `stop` is
/// signalled), and its outcome read from `SO_ERROR`. The socket returned is
/// connected and back in blocking mode (what a link's stream expects).
///
/// A Unix-domain connect to a listener whose accept queue is full does not
/// wait: it fails with `WouldBlock` at once (a blocking one would wait for
/// room, for ever if the listener never accepts), and the dialer retries
/// after its backoff.
fn connect_raw(
    domain: libc::c_int,
    sa: &libc::sockaddr_storage,
    len: libc::socklen_t,
    timeout: Duration,
    stop: &Waker,
) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no memory arguments; the result is checked.
    let raw = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `sa` is a live sockaddr_storage holding a `domain` address of
    // `len` (<= its size) bytes; the kernel only reads it.
    let r = unsafe { libc::connect(fd.as_raw_fd(), (sa as *const libc::sockaddr_storage).cast(), len) };
    if r != 0 {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // In progress (TCP), or interrupted by a signal: it goes on
            // asynchronously either way.
            Some(libc::EINPROGRESS) | Some(libc::EINTR) => {}
            Some(libc::EAGAIN) if domain == libc::AF_UNIX => {
                return Err(io::Error::new(io::ErrorKind::WouldBlock, "its accept queue is full"));
            }
            _ => return Err(e),
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {} ms", timeout.as_millis())));
            }
            let mut p = [libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 }, stop.pollfd()];
            poll(&mut p, Some(left))?;
            if p[1].revents != 0 {
                return Err(stopped());
            }
            if p[0].revents != 0 {
                break;
            }
        }
        let mut err: libc::c_int = 0;
        let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `elen` bytes into `err`, a live
        // c_int whose size `elen` holds.
        let r = unsafe {
            libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut libc::c_int).cast(), &mut elen)
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        if err != 0 {
            return Err(io::Error::from_raw_os_error(err));
        }
    }
    set_blocking(&fd)?;
    Ok(fd)
}

/// Clears `O_NONBLOCK` on a descriptor.
fn set_blocking(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor we own; no memory passed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Connects to the Unix-domain socket at `path` (see `connect_raw`; such a
/// connect completes or fails at once, so it has no timeout).
pub(crate) fn connect_unix(path: &std::path::Path, stop: &Waker) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) address.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: sockaddr_storage is large enough and aligned for any address
    // family, sockaddr_un included; `ss` outlives the reference.
    let un = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_un>() };
    un.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // One byte stays for the terminating NUL.
    if bytes.is_empty() || bytes.len() >= un.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a Unix socket path has 1 to {} bytes and no NUL", un.sun_path.len() - 1),
        ));
    }
    for (d, s) in un.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    connect_raw(libc::AF_UNIX, &ss, len, Duration::ZERO, stop)
}

/// Connects to the TCP address `addr`, waiting at most `timeout` (see `connect_raw`).
pub(crate) fn connect_tcp(addr: &std::net::SocketAddr, timeout: Duration, stop: &Waker) -> io::Result<OwnedFd> {
    // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) address.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let (domain, len) = match addr {
        std::net::SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and aligned for a
            // sockaddr_in; `ss` outlives the reference.
            let sin = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            (libc::AF_INET, std::mem::size_of::<libc::sockaddr_in>())
        }
        std::net::SocketAddr::V6(a) => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_scope_id = a.scope_id();
            (libc::AF_INET6, std::mem::size_of::<libc::sockaddr_in6>())
        }
    };
    connect_raw(domain, &ss, len as libc::socklen_t, timeout, stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupt_wakes_a_blocked_socket_read() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let s = std::sync::Arc::new(SocketStream::new(a.into()).unwrap());
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.read_timeout(&mut [0u8; 4], Duration::from_secs(600)));
        s.interrupt();
        assert_eq!(t.join().unwrap().unwrap(), None);
    }

    #[test]
    fn socket_write_to_a_dead_peer_is_an_error_not_a_signal() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(b);
        let s = SocketStream::new(a.into()).unwrap();
        // EPIPE comes back as an error. (Rust test binaries ignore SIGPIPE, so
        // the proof that no signal is raised is the C two-process tests.)
        let e = s.write_nonblocking(&[IoSlice::new(b"ping")]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
