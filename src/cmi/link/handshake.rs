//! The handshake of one connection: the HELLO exchange (every version) as a
//! state machine fed by whoever does the I/O, and, on version 2, the
//! `RESUME` exchange that follows it (`exchange_resume`).

use super::LinkParams;
use crate::cmi::frame::{self, Hello, Kind, Resume, PREFIX_LEN};
use crate::cmi::stream::Stream;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a handshake established: the peer's HELLO, the agreed version and
/// the bytes that arrived after the HELLO (the link's first frames).
pub(crate) type Greeting = (Hello, u16, Vec<u8>);

/// A HELLO frame, prefix included.
const HELLO_FRAME: usize = PREFIX_LEN + frame::HELLO_LEN;

/// Room in the handshake's read buffer past the peer's HELLO: what a read
/// may bring in after it (kept, and parsed as the link's first frames).
const HANDSHAKE_SLACK: usize = 512;

/// The handshake of one connection as a state machine, fed by whoever does
/// its I/O: `handshake` below (blocking, on the dialing side) and the
/// listener's poller (`cmi::acceptor`, non-blocking, up to
/// `acceptor::MAX_PENDING` connections in one poll set). One implementation
/// of the checks, so both ends, and the fuzz target, run the same code:
///
/// 1. our HELLO is written whole (`Step::Write`, then `wrote`);
/// 2. then the peer's is read (`Step::Read`, then `read`): once 8 bytes are
///    in, the prefix must be a HELLO's; once 40 are, it is decoded and a
///    version agreed. What the last read brought in after it is the
///    leftover. Neither end waits for the other to go first.
pub(crate) struct Handshake {
    out: [u8; HELLO_FRAME],
    sent: usize,
    buf: [u8; HELLO_FRAME + HANDSHAKE_SLACK],
    got: usize,
    mine: Hello,
    max_message: u32,
}

/// What a handshake needs done next.
pub(crate) enum Step<'a> {
    /// Write (some of) these bytes, then report how many with `wrote`.
    Write(&'a [u8]),
    /// Read into this buffer, then report how many bytes with `read`.
    Read(&'a mut [u8]),
}

impl Handshake {
    pub(crate) fn new(params: &LinkParams) -> Handshake {
        let mine = params.hello();
        Handshake { out: mine.encode(), sent: 0, buf: [0u8; HELLO_FRAME + HANDSHAKE_SLACK], got: 0, mine, max_message: params.max_message }
    }

    pub(crate) fn step(&mut self) -> Step<'_> {
        if self.sent < self.out.len() {
            Step::Write(&self.out[self.sent..])
        } else {
            Step::Read(&mut self.buf[self.got..])
        }
    }

    /// `n` bytes of the `Step::Write` slice were written.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
    }

    /// `n` bytes were read into the `Step::Read` buffer (0: the peer closed).
    /// `Ok(None)`: more is needed; `Err`: the handshake failed, for this
    /// reason (the connection is to be closed).
    pub(crate) fn read(&mut self, n: usize) -> Result<Option<Greeting>, String> {
        if n == 0 {
            return Err("the peer closed the connection during the handshake".into());
        }
        self.got = (self.got + n).min(self.buf.len());
        if self.got >= PREFIX_LEN {
            let prefix: [u8; PREFIX_LEN] = self.buf[..PREFIX_LEN].try_into().expect("8 bytes");
            let p = frame::parse_prefix(&prefix, self.max_message).map_err(|e| format!("handshake: {e}"))?;
            if p.kind != Kind::Hello {
                return Err(format!("handshake: the first frame is {:?}, not HELLO", p.kind));
            }
        }
        if self.got < HELLO_FRAME {
            return Ok(None);
        }
        let theirs = Hello::decode(&self.buf[PREFIX_LEN..HELLO_FRAME]).map_err(|e| format!("handshake: {e}"))?;
        let mine = &self.mine;
        let version = mine.agree(&theirs).ok_or_else(|| {
            format!(
                "handshake: no common protocol version (ours {}..{}, the peer's {}..{})",
                mine.version_min, mine.version_max, theirs.version_min, theirs.version_max
            )
        })?;
        Ok(Some((theirs, version, self.buf[HELLO_FRAME..self.got].to_vec())))
    }

    /// Why the handshake failed if its time ran out now.
    pub(crate) fn timed_out(&self) -> String {
        if self.sent < self.out.len() {
            "handshake timed out while sending HELLO".into()
        } else {
            "handshake timed out waiting for the peer's HELLO".into()
        }
    }
}

/// Exchanges HELLOs on a fresh stream (`Handshake`), blocking, within the
/// dead-peer timeout. Returns the peer's HELLO, the agreed version and any
/// bytes that arrived after it.
/// How long a blocking handshake waits before it looks at the stop flag again.
const HANDSHAKE_STOP_CHECK: Duration = Duration::from_millis(50);

pub(crate) fn handshake(stream: &dyn Stream, params: &LinkParams, stop: &AtomicBool) -> Result<Greeting, String> {
    let mut hs = Handshake::new(params);
    let deadline = Instant::now() + params.dead_timeout;
    loop {
        // The stream is nobody else's yet, so shutdown cannot interrupt its
        // waits: they are cut into slices of STOP_CHECK, after each of which
        // the stop flag is looked at (shutdown waits at most that long).
        if stop.load(Ordering::Acquire) {
            return Err("handshake: this SP is shutting down".into());
        }
        let left = deadline.saturating_duration_since(Instant::now()).min(HANDSHAKE_STOP_CHECK);
        let at_deadline = Instant::now() >= deadline;
        match hs.step() {
            Step::Write(bytes) => match stream.write_nonblocking(&[IoSlice::new(bytes)]) {
                Ok(n) => hs.wrote(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if at_deadline {
                        return Err(hs.timed_out());
                    }
                    match stream.wait_writable(left) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {}
                        Err(e) => return Err(format!("handshake: {e}")),
                    }
                }
                Err(e) => return Err(format!("handshake: sending HELLO failed: {e}")),
            },
            Step::Read(buf) => {
                if at_deadline {
                    return Err(hs.timed_out());
                }
                match stream.read_timeout(buf, left) {
                    Ok(Some(n)) => {
                        if let Some(greeting) = hs.read(n)? {
                            return Ok(greeting);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Err(format!("handshake: read failed: {e}")),
                }
            }
        }
    }
}


/// What the peer sent after the HELLOs on a version-2 connection.
pub(crate) enum Answer {
    /// Its `RESUME`.
    Resume(Resume),
    /// A `REFUSE`, with its reason (only an accepting side sends one).
    Refuse(u32),
}

/// Writes one small frame whole on a fresh connection (nobody else writes
/// it yet), within the dead-peer timeout, looking at `stop` meanwhile.
pub(crate) fn write_whole(stream: &dyn Stream, bytes: &[u8], params: &LinkParams, stop: &AtomicBool) -> Result<(), String> {
    let deadline = Instant::now() + params.dead_timeout;
    let mut sent = 0;
    while sent < bytes.len() {
        if stop.load(Ordering::Acquire) {
            return Err("this SP is shutting down".into());
        }
        if Instant::now() >= deadline {
            return Err("timed out sending RESUME".into());
        }
        match stream.write_nonblocking(&[IoSlice::new(&bytes[sent..])]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now()).min(HANDSHAKE_STOP_CHECK);
                match stream.wait_writable(left) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {}
                    Err(e) => return Err(format!("sending RESUME: {e}")),
                }
            }
            Err(e) => return Err(format!("sending RESUME failed: {e}")),
        }
    }
    Ok(())
}

/// Reads the peer's first frame after the HELLOs on a version-2 connection:
/// a `RESUME`, or with `refuse_allowed` a `REFUSE`; anything else fails the
/// handshake. `leftover` holds what was read after the HELLO; on return it
/// holds what came after this frame (the link's first frames). Bounded by
/// the dead-peer timeout, looking at `stop` every `HANDSHAKE_STOP_CHECK`.
pub(crate) fn read_answer(
    stream: &dyn Stream,
    params: &LinkParams,
    stop: &AtomicBool,
    leftover: &mut Vec<u8>,
    refuse_allowed: bool,
) -> Result<Answer, String> {
    let deadline = Instant::now() + params.dead_timeout;
    let mut chunk = [0u8; PREFIX_LEN + frame::RESUME_LEN];
    loop {
        if leftover.len() >= PREFIX_LEN {
            let prefix: [u8; PREFIX_LEN] = leftover[..PREFIX_LEN].try_into().expect("8 bytes");
            let p = frame::parse_prefix_v(&prefix, params.max_message, frame::VERSION_RESUME).map_err(|e| format!("handshake: {e}"))?;
            match p.kind {
                Kind::Resume => {}
                Kind::Refuse if refuse_allowed => {}
                k => return Err(format!("handshake: the first frame after HELLO is {k:?}, not RESUME")),
            }
            let need = PREFIX_LEN + p.body_len as usize;
            if leftover.len() >= need {
                let body = &leftover[PREFIX_LEN..need];
                let answer = match p.kind {
                    Kind::Resume => Answer::Resume(Resume::decode(body).map_err(|e| format!("handshake: {e}"))?),
                    _ => Answer::Refuse(frame::decode_refuse(body).map_err(|e| format!("handshake: {e}"))?),
                };
                leftover.drain(..need);
                return Ok(answer);
            }
        }
        if stop.load(Ordering::Acquire) {
            return Err("handshake: this SP is shutting down".into());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err("handshake timed out waiting for the peer's RESUME".into());
        }
        // Never more than the frame still needs: what follows it is the
        // link's, and is read by the link's reader.
        let need = if leftover.len() >= PREFIX_LEN { PREFIX_LEN + u32::from_le_bytes([leftover[0], leftover[1], leftover[2], leftover[3]]) as usize } else { PREFIX_LEN };
        let want = need.saturating_sub(leftover.len()).clamp(1, chunk.len());
        match stream.read_timeout(&mut chunk[..want], deadline.saturating_duration_since(now).min(HANDSHAKE_STOP_CHECK)) {
            Ok(Some(0)) => return Err("the peer closed the connection during the handshake".into()),
            Ok(Some(n)) => leftover.extend_from_slice(&chunk[..n]),
            Ok(None) => {}
            Err(e) => return Err(format!("handshake: read failed: {e}")),
        }
    }
}
