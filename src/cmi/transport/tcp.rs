//! The TCP transport: binding (port 0 reads back the real port), dialing
//! each address a name resolves to in turn, and wrapping a connected socket
//! as a link's stream (`TCP_NODELAY`; a loopback peer counts as local for
//! the send-buffer policy).

use super::socket_link;
use crate::cmi::stream::{self, Stream};
use crate::config::Address;
use std::io;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A connected TCP socket as a link's stream: `TCP_NODELAY`, and its send
/// buffer sized (a loopback peer counts as local).
pub(super) fn link(s: TcpStream, send_buffer: Option<u32>) -> io::Result<Box<dyn Stream>> {
    stream::set_nodelay(&s);
    let local = s.peer_addr().map(|a| a.ip().to_canonical().is_loopback()).unwrap_or(false);
    socket_link(s, send_buffer, local)
}

/// Listens on `a` (`host:port`); the address it actually listens on.
pub(super) fn bind(a: &str) -> io::Result<(TcpListener, Address)> {
    let l = TcpListener::bind(a)?;
    let actual = Address::Tcp(l.local_addr()?.to_string());
    Ok((l, actual))
}

/// Connects to each address `a` resolves to in turn, waiting at most
/// `timeout` for each; the stop signal ends it at once.
pub(super) fn dial(a: &str, timeout: Duration, send_buffer: Option<u32>, stop: &stream::Waker) -> io::Result<Box<dyn Stream>> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{a} resolves to no address"));
    for sa in a.to_socket_addrs()? {
        match stream::connect_tcp(&sa, timeout, stop) {
            Ok(s) => return link(TcpStream::from(s), send_buffer),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}
