//! The transports under a link, one module each: `unix` (Unix-domain
//! sockets in a private directory), `tcp`, `inproc` (a pipe through memory
//! between SPs of one process). This module is what the rest of CMI sees of
//! them: `bind` an address to a `Listener`, the listener's poll descriptor
//! and `accept`, `dial` with a timeout and the stop signal, the socket file
//! a listener leaves (`SocketFile`), and the send-buffer policy of the
//! socket transports (`send_buffer_for`).
//!
//! An enum per operation, not a trait: the socket listeners are polled and
//! accepted raw (`accept_socket`, for `acceptor`, which runs the handshakes
//! before a link's stream exists) while an in-process endpoint blocks in
//! `accept` on its own thread, so a common trait would carry methods that
//! one side cannot implement; each operation here is one `match` whose arms
//! call into the transport's module.

mod inproc;
mod tcp;
mod unix;

pub(crate) use inproc::InprocStream;
pub(super) use unix::SocketFile;

use super::stream::{self, SocketStream, Stream};
use crate::config::Address;
use crate::log::{log, Level};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

/// A bound listening address.
pub(super) enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
    Inproc(inproc::Endpoint),
}

/// An accepted socket, before it has a `SocketStream`.
pub(super) enum Accepted {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl AsRawFd for Accepted {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Accepted::Unix(s) => s.as_raw_fd(),
            Accepted::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Accepted {
    /// The link's stream (send buffer sized, `TCP_NODELAY` set).
    pub(super) fn into_stream(self, send_buffer: Option<u32>) -> io::Result<Box<dyn Stream>> {
        match self {
            Accepted::Unix(s) => unix::link(s, send_buffer),
            Accepted::Tcp(s) => tcp::link(s, send_buffer),
        }
    }
}

/// The send buffer to ask for on a new link socket (`Config::socket_send_buffer`):
/// `local` is a Unix-domain link or a TCP link to a loopback address.
fn send_buffer_for(configured: Option<u32>, local: bool) -> Option<u32> {
    match configured {
        Some(0) => None,
        Some(n) => Some(n),
        None if local => Some(crate::config::DEFAULT_SOCKET_SEND_BUFFER),
        None => None,
    }
}

/// Sizes a new link socket's send buffer (a refusal is logged and the link
/// goes on with the kernel's size: a slower link, not a broken one) and
/// wraps the socket.
fn socket_link(s: impl AsRawFd + Into<OwnedFd>, configured: Option<u32>, local: bool) -> io::Result<Box<dyn Stream>> {
    if let Some(n) = send_buffer_for(configured, local) {
        if let Err(e) = stream::set_send_buffer(&s, n) {
            log!(Level::Warn, "cannot set a link socket's send buffer to {n} bytes: {e}; the kernel's size stays");
        }
    }
    Ok(Box::new(SocketStream::new(s.into())?))
}

impl Listener {
    /// A socket listener's descriptor, made non-blocking: its thread polls
    /// it with the stop signal instead of blocking in `accept`.
    pub(super) fn poll_fd(&self) -> io::Result<Option<RawFd>> {
        match self {
            Listener::Unix(l) => l.set_nonblocking(true).map(|_| Some(l.as_raw_fd())),
            Listener::Tcp(l) => l.set_nonblocking(true).map(|_| Some(l.as_raw_fd())),
            Listener::Inproc(_) => Ok(None),
        }
    }

    /// Accepts one connection as a link's stream; on a socket listener
    /// (non-blocking, see `poll_fd`) `WouldBlock` when none is queued. The
    /// listener's thread uses it for in-process endpoints only: sockets go
    /// through `acceptor`, which has no stream made before the handshake.
    pub(super) fn accept(&self, send_buffer: Option<u32>) -> io::Result<Box<dyn Stream>> {
        match self {
            Listener::Unix(_) | Listener::Tcp(_) => self.accept_socket()?.into_stream(send_buffer),
            Listener::Inproc(ep) => ep.accept(),
        }
    }

    /// Accepts one connection on a socket listener (non-blocking: see
    /// `poll_fd`; `WouldBlock` when none is queued). The socket itself is in
    /// blocking mode, as a link's stream expects; the poller's I/O on it is
    /// `MSG_DONTWAIT`.
    pub(super) fn accept_socket(&self) -> io::Result<Accepted> {
        match self {
            Listener::Unix(l) => Ok(Accepted::Unix(l.accept()?.0)),
            Listener::Tcp(l) => Ok(Accepted::Tcp(l.accept()?.0)),
            Listener::Inproc(_) => Err(io::Error::new(io::ErrorKind::Unsupported, "an in-process endpoint is not polled")),
        }
    }

    /// What `Cmi::shutdown` calls, after the stop signal, to end the
    /// listener's accepting.
    pub(super) fn waker(&self) -> Box<dyn Fn() + Send> {
        match self {
            // Woken by the stop signal too; its socket file is removed by
            // `Cmi::shutdown`, only if it is still the one bound here.
            Listener::Unix(_) => Box::new(|| {}),
            // The listener thread wakes on the stop signal (it never
            // relied on connecting to its own address, which fails once
            // the socket file is unlinked or the address has left its
            // interface).
            Listener::Tcp(_) => Box::new(|| {}),
            Listener::Inproc(ep) => ep.closer(),
        }
    }
}

/// Binds `addr`: the listener, the address it actually listens on (with the
/// real port for `tcp:...:0`), and for a Unix-domain socket the file it
/// created.
pub(super) fn bind(addr: &Address) -> io::Result<(Listener, Address, Option<SocketFile>)> {
    match addr {
        Address::Unix(path) => {
            let (l, f) = unix::bind(path)?;
            Ok((Listener::Unix(l), addr.clone(), Some(f)))
        }
        Address::Tcp(a) => {
            let (l, actual) = tcp::bind(a)?;
            Ok((Listener::Tcp(l), actual, None))
        }
        Address::Inproc(name) => Ok((Listener::Inproc(inproc::bind(name)?), addr.clone(), None)),
    }
}

/// Connects to `addr` without blocking in `connect(2)`: a TCP connect waits
/// at most `timeout` per address, and none waits past `stop` (see
/// `stream::connect_raw`).
pub(super) fn dial(addr: &Address, timeout: Duration, send_buffer: Option<u32>, stop: &stream::Waker) -> io::Result<Box<dyn Stream>> {
    match addr {
        Address::Unix(path) => unix::dial(path, send_buffer, stop),
        Address::Tcp(a) => tcp::dial(a, timeout, send_buffer, stop),
        Address::Inproc(name) => inproc::dial(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// What the kernel reports for the send buffer of `a` once set to `n`
    /// (`None`: left alone), for comparison with what a link socket got.
    fn reported(a: &impl std::os::fd::AsRawFd, n: Option<u32>) -> u32 {
        if let Some(n) = n {
            stream::set_send_buffer(a, n).unwrap();
        }
        stream::send_buffer(a).unwrap()
    }

    #[test]
    fn send_buffer_policy() {
        let d = Some(crate::config::DEFAULT_SOCKET_SEND_BUFFER);
        assert_eq!(send_buffer_for(None, true), d, "local links get libmps's size");
        assert_eq!(send_buffer_for(None, false), None, "links to other hosts keep TCP autotuning");
        assert_eq!(send_buffer_for(Some(0), true), None, "0: the kernel's size everywhere");
        assert_eq!(send_buffer_for(Some(0), false), None);
        assert_eq!(send_buffer_for(Some(65536), true), Some(65536));
        assert_eq!(send_buffer_for(Some(65536), false), Some(65536));
    }

    #[test]
    fn dialed_and_accepted_sockets_get_the_configured_send_buffer() {
        let dir = std::env::temp_dir().join(format!("mps-sndbuf-{}", std::process::id()));
        let path = dir.join("l.sock");
        let (unix, _, _) = bind(&Address::Unix(path.clone())).unwrap();
        let (tcp, tcp_addr, _) = bind(&Address::Tcp("127.0.0.1:0".into())).unwrap();
        let plain_l = TcpListener::bind("127.0.0.1:0").unwrap();
        let t = Duration::from_secs(5);
        for (cfg, want) in [(None, Some(crate::config::DEFAULT_SOCKET_SEND_BUFFER)), (Some(0), None), (Some(65536), Some(65536))] {
            // Plain sockets of each kind, to ask the kernel what `want` comes to.
            let (plain_unix, _p) = UnixStream::pair().unwrap();
            let plain_tcp = TcpStream::connect(plain_l.local_addr().unwrap()).unwrap();
            let (want_unix, want_tcp) = (reported(&plain_unix, want), reported(&plain_tcp, want));
            let stop = stream::Waker::new().unwrap();
            let d = dial(&Address::Unix(path.clone()), t, cfg, &stop).unwrap();
            let a = unix.accept(cfg).unwrap();
            assert_eq!(d.send_buffer(), Some(want_unix), "unix dial, configured {cfg:?}");
            assert_eq!(a.send_buffer(), Some(want_unix), "unix accept, configured {cfg:?}");
            let d = dial(&tcp_addr, t, cfg, &stop).unwrap();
            let a = tcp.accept(cfg).unwrap();
            assert_eq!(d.send_buffer(), Some(want_tcp), "tcp dial, configured {cfg:?}");
            assert_eq!(a.send_buffer(), Some(want_tcp), "tcp accept, configured {cfg:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
