//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay
//! (`tests/fuzz_corpus.rs`). Not part of the API: hidden from the docs, and
//! free to change with the internals it drives.
//!
//! Each entry takes arbitrary bytes and runs the library's own code on them:
//! the parsers of `cmi::frame`, the link's inbound read path (`read_stint`
//! over an in-process stream), the handshake, and `Config::from_toml`. None
//! re-implements any parsing. Each returns in bounded time whatever the
//! input: the stream the link reads holds the input and then reports
//! end-of-stream, so no read waits, and the link parameters' timeouts are
//! small. Each panics only when the code under test breaks one of its own
//! guarantees (the assertions below say which), which is what a fuzzer
//! reports as a crash.
//!
//! Internal items used (so that a change to them shows up here first):
//! `cmi::link::{Conn::new, RxCtx::new, read_stint, Stint, handshake,
//! Handshake, Step, LinkParams}`, `cmi::stream::{InprocStream, Stream}`, the `cmi::Upcall`
//! trait, and the public `cmi::frame` functions.

use crate::cmi::frame::{self, Hello, Kind, MessageHead, PREFIX_LEN};
use crate::cmi::link::{self, Conn, Handshake, LinkParams, RxCtx, Step, Stint};
use crate::cmi::stream::{InprocStream, Stream};
use crate::cmi::{InboundMessage, Upcall};
use crate::config::Config;
use crate::sp_id::SpId;
use crate::status::Status;
use parking_lot::Mutex;
use std::io::IoSlice;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest message the fuzzed link accepts (its `max_message_size`).
/// Above the link's 64 KiB read buffer, so both ways of reading a payload
/// (from the buffer, and straight into the message) are reachable.
pub const FUZZ_MAX_MESSAGE: u32 = 1 << 20;

/// The bound on one run of the link's reader. The input is all in the stream,
/// followed by end-of-stream, so no read should wait at all; a reader that
/// does is woken every `read_wait` (10 ms) and declares the peer dead after
/// this long, and the run then fails (`read_until_end`): a hang is a finding,
/// not a timeout the fuzzer has to notice.
const RUN_BOUND: Duration = Duration::from_secs(5);

/// The link's parameters: every wait bounded and short.
fn params() -> LinkParams {
    LinkParams {
        local: SpId::a(0),
        max_message: FUZZ_MAX_MESSAGE,
        heartbeat: Duration::from_millis(1000),
        dead_timeout: RUN_BOUND,
        read_wait: Duration::from_millis(10),
        // The fuzz targets feed version-1 frames (their corpora predate
        // version 2); version 2's frames are covered by the unit tests.
        version_max: 1,
        confirm_on_delivery: false,
    }
}

/// What the link handed up, in order.
#[derive(Default)]
struct Record {
    /// The verdict `accept` gave each message, in arrival order.
    verdicts: Vec<Status>,
    /// Arrival numbers of the accepted messages, in dispatch order.
    dispatched: Vec<usize>,
    /// Entries `confirmed` was given, in order.
    confirmed: Vec<(u64, Status)>,
}

/// A recording `Upcall` that refuses some messages (so that both kinds of
/// confirmation are sent) and checks what the link hands it.
#[derive(Default)]
struct Recorder {
    rec: Mutex<Record>,
}

impl Upcall for Recorder {
    type Accepted = usize;

    fn accept(&self, _from: SpId, m: InboundMessage<'_>) -> Result<usize, Status> {
        assert!(!m.name.is_empty() && m.name.len() <= frame::MAX_NAME_BYTES, "a mailbox name of {} bytes was handed up", m.name.len());
        assert!(m.payload.len() <= FUZZ_MAX_MESSAGE as usize, "a {}-byte message passed a {FUZZ_MAX_MESSAGE}-byte limit", m.payload.len());
        let mut r = self.rec.lock();
        let n = r.verdicts.len();
        // Refuse one message in three, by its tag: the peer decides which.
        if m.tag % 3 == 2 {
            r.verdicts.push(Status::STATUS_INSUFFICIENT_RESOURCES);
            Err(Status::STATUS_INSUFFICIENT_RESOURCES)
        } else {
            r.verdicts.push(Status::STATUS_SUCCESS);
            Ok(n)
        }
    }

    fn dispatch(&self, n: usize) {
        let mut r = self.rec.lock();
        assert_eq!(r.verdicts.get(n), Some(&Status::STATUS_SUCCESS), "dispatched message {n} was not accepted");
        assert!(r.dispatched.last().is_none_or(|&last| last < n), "message {n} dispatched out of order or twice");
        r.dispatched.push(n);
    }

    fn confirmed(&self, _from: SpId, _epoch: u64, entries: &mut dyn Iterator<Item = (u64, Status)>) {
        let mut r = self.rec.lock();
        r.confirmed.extend(entries);
    }

    fn link_down(&self, _peer: SpId, _epoch: u64) {}
}

/// Everything `peer` can read now (the link's writes so far).
fn drain(peer: &InprocStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    while let Ok(Some(n)) = peer.read_timeout(&mut buf, Duration::ZERO) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Runs the link's reader over `conn` until the link ends, then checks what
/// it wrote back (read from `peer`) against what it handed up.
fn read_until_end(conn: &Arc<Conn>, leftover: &[u8], peer: &InprocStream, up: &Recorder) -> String {
    let stop = AtomicBool::new(false);
    let mut ctx = RxCtx::new(leftover);
    let t0 = Instant::now();
    let Some(wire) = conn.wire() else { return "no connection".into() };
    let reason = loop {
        if let Stint::Ended(reason) = link::read_stint(conn, &wire, &mut ctx, params(), up, &stop, &|| false, false) {
            break reason;
        }
    };
    assert!(t0.elapsed() < RUN_BOUND, "the reader waited with all its input there and then end-of-stream: {reason}");
    assert!(!reason.is_empty(), "the link ended without a reason");
    let written = drain(peer);
    let r = up.rec.lock();
    // What the link wrote: only CONFIRMs and HEARTBEATs, well formed.
    let mut sent: Vec<Status> = Vec::new();
    let mut at = 0;
    while at < written.len() {
        let prefix: [u8; PREFIX_LEN] = written[at..at + PREFIX_LEN].try_into().expect("a whole prefix written");
        let p = frame::parse_prefix_v(&prefix, FUZZ_MAX_MESSAGE, conn.version).expect("the link wrote a malformed frame");
        let body = &written[at + PREFIX_LEN..at + PREFIX_LEN + p.body_len as usize];
        // Version 2: the link header before a CONFIRM's version-1 body.
        let hdr = if conn.version >= frame::VERSION_RESUME { frame::LINK_HDR } else { 0 };
        match p.kind {
            Kind::Confirm => sent.extend(frame::decode_confirms(&body[hdr..]).expect("the link wrote a malformed CONFIRM").map(|(_, st)| st)),
            Kind::Heartbeat => {}
            k => panic!("the link's reader wrote a {k:?} frame"),
        }
        at += PREFIX_LEN + p.body_len as usize;
    }
    // Every confirmation carries its message's verdict, in arrival order,
    // and none is sent for a message that was not handed up.
    assert!(sent.len() <= r.verdicts.len(), "{} confirmations for {} messages", sent.len(), r.verdicts.len());
    assert_eq!(sent[..], r.verdicts[..sent.len()], "confirmations differ from the verdicts");
    // A message is dispatched only after its confirmation was written.
    if let Some(&last) = r.dispatched.last() {
        assert!(last < sent.len(), "message {last} dispatched before its confirmation was written");
    }
    reason
}

/// A link (this SP 0.A, the peer 0.B) whose peer wrote `input` and closed;
/// returns the link and the peer's end.
fn link_fed(input: &[u8], hello: &Hello) -> (Arc<Conn>, InprocStream) {
    let (ours, peer) = InprocStream::pair();
    write_all_then_close(&peer, input);
    (Arc::new(Conn::new(SpId::b(0), 1, hello, Box::new(ours), &[])), peer)
}

/// Writes all of `input` into the pipe (it holds 1 MiB, more than any fuzz
/// input) and ends that direction, so the reader sees end-of-stream after it.
fn write_all_then_close(peer: &InprocStream, input: &[u8]) {
    let mut off = 0;
    while off < input.len() {
        match peer.write_nonblocking(&[IoSlice::new(&input[off..])]) {
            Ok(n) if n > 0 => off += n,
            // Larger than the pipe: the rest is cut off (the reader sees a
            // truncated stream, still a valid case).
            _ => break,
        }
    }
    peer.shutdown_write();
}

/// Frame decoder: the pure parsers on `data`, then the link's whole inbound
/// read path on `data` as the byte stream from an established peer, on a
/// link of protocol version 1 and again on one of version 2 (numbered frames,
/// acknowledgements, duplicates dropped by number, RESUME refused).
pub fn frame_decoder(data: &[u8]) {
    frame_parsers(data);
    let (conn, peer) = link_fed(data, &params().hello());
    let up = Recorder::default();
    read_until_end(&conn, &[], &peer, &up);
    let (ours, peer) = InprocStream::pair();
    write_all_then_close(&peer, data);
    let conn = Arc::new(Conn::session(SpId::b(0), 1, frame::VERSION_RESUME, FUZZ_MAX_MESSAGE, 1, false));
    conn.attach(Box::new(ours), &[], None, None).expect("a new session takes its connection");
    let up = Recorder::default();
    read_until_end(&conn, &[], &peer, &up);
}

/// The pure parsers of `cmi::frame` on arbitrary bytes, each result checked
/// against its encoder where there is one.
fn frame_parsers(data: &[u8]) {
    if let Some(prefix) = data.get(..PREFIX_LEN) {
        let prefix: [u8; PREFIX_LEN] = prefix.try_into().expect("8 bytes");
        for version in [1, frame::VERSION_RESUME] {
            if let Ok(p) = frame::parse_prefix_v(&prefix, FUZZ_MAX_MESSAGE, version) {
                let mut again = [0u8; PREFIX_LEN];
                frame::put_prefix(&mut again, p.kind, p.body_len);
                assert_eq!(again, prefix, "parse_prefix_v accepted a prefix put_prefix does not make");
            }
        }
    }
    let body = data.get(PREFIX_LEN..).unwrap_or(&[]);
    for b in [data, body] {
        if let Ok(r) = frame::Resume::decode(b) {
            assert_eq!(&r.encode()[PREFIX_LEN..], b, "Resume::decode then encode changed the RESUME");
            assert!(r.incarnation != 0);
        }
    }
    hello_parser(body);
    hello_parser(data);
    message_parser(data, body);
    confirm_parser(data);
    confirm_parser(body);
}

fn hello_parser(b: &[u8]) {
    if let Ok(h) = Hello::decode(b) {
        let f = h.encode();
        // Bytes 28..32 are reserved and not checked (docs/PROTOCOL.md 9).
        assert_eq!(&f[PREFIX_LEN..PREFIX_LEN + 28], &b[..28], "Hello::decode then encode changed the HELLO");
        assert!(h.version_min <= h.version_max && h.sp.sp <= 1);
    }
}

fn message_parser(data: &[u8], body: &[u8]) {
    // With its body length taken from the data itself, and from the prefix.
    let lens = [data.len() as u32, data.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")))];
    for (b, body_len) in [(data, lens[0]), (body, lens[1])] {
        if let Ok((h, name_len)) = frame::decode_message_fixed(b, body_len) {
            assert!((1..=frame::MAX_NAME_BYTES).contains(&name_len));
            assert!(frame::MESSAGE_FIXED + name_len <= body_len as usize);
            if let Some(name) = b.get(frame::MESSAGE_FIXED..frame::MESSAGE_FIXED + name_len) {
                let payload_len = body_len - (frame::MESSAGE_FIXED + name_len) as u32;
                let mut out = [0u8; frame::MAX_MESSAGE_HEAD];
                let n = frame::encode_message_head(&mut out, &h, name, payload_len);
                assert_eq!(&out[PREFIX_LEN..n], &b[..frame::MESSAGE_FIXED + name_len], "decode then encode changed the MESSAGE head");
                let back: MessageHead = frame::decode_message_fixed(&out[PREFIX_LEN..], body_len).expect("an encoded head parses").0;
                assert_eq!(back, h);
            }
        }
    }
}

fn confirm_parser(b: &[u8]) {
    if let Ok(entries) = frame::decode_confirms(b) {
        let entries: Vec<(u64, Status)> = entries.collect();
        if !entries.is_empty() && entries.len() <= frame::MAX_CONFIRMS_PER_FRAME {
            let mut out = Vec::new();
            frame::encode_confirms(&mut out, &entries);
            assert_eq!(&out[PREFIX_LEN..], b, "decode_confirms then encode_confirms changed the CONFIRM");
        }
    }
}

/// The handshake state machine fed `data` a few bytes at a time, as the
/// listener's poller feeds it (`cmi::acceptor`: whatever each non-blocking
/// read brings), then end-of-stream; chunk sizes 1 to 8 come from the data.
/// Returns the outcome and our HELLO as it was written.
fn handshake_in_pieces(data: &[u8]) -> (Result<link::Greeting, String>, Vec<u8>) {
    let mut hs = Handshake::new(&params());
    let mut written = Vec::new();
    let mut at = 0;
    let mut turn = 0usize;
    loop {
        turn += 1;
        match hs.step() {
            Step::Write(bytes) => {
                // Short writes too: 1 to 40 bytes at a time.
                let n = bytes.len().min(1 + turn * 7 % 40);
                written.extend_from_slice(&bytes[..n]);
                hs.wrote(n);
            }
            Step::Read(buf) => {
                assert!(!buf.is_empty(), "the handshake asked for a read into no room");
                let piece = 1 + data.get(at).map_or(0, |b| (*b as usize) % 8);
                let n = piece.min(buf.len()).min(data.len() - at);
                buf[..n].copy_from_slice(&data[at..at + n]);
                at += n;
                match hs.read(n) {
                    Ok(None) => assert!(n > 0, "the handshake went on after end-of-stream"),
                    done => return (done.map(|g| g.expect("Some")), written),
                }
            }
        }
    }
}

/// The HELLO handshake: a fresh connection whose peer wrote `data` and
/// closed. When the handshake succeeds, the link it starts reads the rest
/// (what came after the HELLO, handed over as the handshake's leftover).
/// The same bytes fed in pieces to the state machine (as the listener's
/// poller does) give the same outcome.
pub fn handshake(data: &[u8]) {
    let (ours, peer) = InprocStream::pair();
    write_all_then_close(&peer, data);
    let result = link::handshake(&ours, &params(), &std::sync::atomic::AtomicBool::new(false));
    let (pieces, pieces_wrote) = handshake_in_pieces(data);
    assert_eq!(pieces_wrote, params().hello().encode(), "the handshake fed in pieces did not write this SP's HELLO whole");
    match (&result, &pieces) {
        (Ok((h1, v1, l1)), Ok((h2, v2, l2))) => {
            assert_eq!((h1, v1), (h2, v2), "the handshake fed in pieces agreed otherwise");
            let rest = &data[PREFIX_LEN + frame::HELLO_LEN..];
            assert!(rest.starts_with(l1) && rest.starts_with(l2), "a leftover is not what followed the HELLO");
        }
        (Err(e1), Err(e2)) => assert_eq!(e1, e2, "the handshake fed in pieces failed for another reason"),
        _ => panic!("the handshake fed whole gave {result:?}, fed in pieces {pieces:?}"),
    }
    // Whatever the outcome, our HELLO went out first, whole.
    let mine = params().hello().encode();
    let written = drain(&peer);
    assert!(written.starts_with(&mine), "the handshake did not send this SP's HELLO first");
    match result {
        Err(e) => assert!(!e.is_empty(), "a handshake failed without a reason"),
        Ok((hello, version, leftover)) => {
            let frame_len = PREFIX_LEN + frame::HELLO_LEN;
            assert_eq!(Hello::decode(&data[PREFIX_LEN..frame_len]).as_ref(), Ok(&hello), "the handshake returned another HELLO than the peer sent");
            assert!((frame::VERSION_MIN..=frame::VERSION_MAX).contains(&version));
            assert!((hello.version_min..=hello.version_max).contains(&version), "agreed version {version} outside the peer's range");
            assert!(data[frame_len..].starts_with(&leftover), "the leftover is not what followed the HELLO");
            let conn = Arc::new(Conn::new(hello.sp, 1, &hello, Box::new(ours), &leftover));
            let up = Recorder::default();
            read_until_end(&conn, &leftover, &peer, &up);
        }
    }
}

/// The CONFIRM parser: `data` as a CONFIRM body, parsed by `decode_confirms`,
/// then sent as one CONFIRM frame to a link, whose reader must hand the same
/// entries to `Upcall::confirmed` (or end the link for a malformed frame).
pub fn confirm(data: &[u8]) {
    confirm_parser(data);
    let direct: Option<Vec<(u64, Status)>> = frame::decode_confirms(data).ok().map(|e| e.collect());
    let mut stream = vec![0u8; PREFIX_LEN];
    frame::put_prefix(&mut stream, Kind::Confirm, data.len() as u32);
    stream.extend_from_slice(data);
    let framed_ok = frame::parse_prefix(stream[..PREFIX_LEN].try_into().expect("8 bytes"), FUZZ_MAX_MESSAGE).is_ok();
    let (conn, peer) = link_fed(&stream, &params().hello());
    // The confirmed messages went out on this connection first, in the
    // entries' order (a CONFIRM for anything else ends the link: PROTOCOL 5).
    if let (Some(entries), true) = (&direct, framed_ok) {
        for (id, _) in entries {
            let h = frame::MessageHead { id: *id, conduit: 0, domain: 0, tag: 0, mode: frame::MODE_ASYNC };
            let _ = conn.send_message(&h, b"f", std::sync::Arc::new(Vec::new().into()), 0, false);
        }
        // Those MESSAGE frames are not what the reader wrote back.
        let _ = drain(&peer);
    }
    let statuses_allowed = direct.as_ref().is_some_and(|e| e.iter().all(|(_, st)| frame::confirm_status_allowed(*st)));
    let up = Recorder::default();
    let reason = read_until_end(&conn, &[], &peer, &up);
    let got = std::mem::take(&mut up.rec.lock().confirmed);
    match direct {
        Some(entries) if framed_ok && statuses_allowed => {
            assert_eq!(got, entries, "the reader handed up other entries than decode_confirms parsed");
            assert!(!reason.contains("malformed"), "a well-formed CONFIRM ended the link: {reason}");
        }
        _ => {
            assert!(got.is_empty(), "a malformed CONFIRM handed up {} entries", got.len());
            assert!(reason.contains("malformed"), "a malformed CONFIRM did not end the link as malformed: {reason}");
        }
    }
}

/// The configuration parser on arbitrary text (bytes that are not UTF-8 are
/// converted lossily, as a file read would refuse them before parsing).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml(&text, "fuzz") {
        Ok(c) => {
            // What the parser promises of a configuration it accepts
            // (examples/mps-two-units.toml states each rule).
            assert!(c.peer(c.local).is_none(), "this SP is listed as its own peer");
            for (i, p) in c.peers.iter().enumerate() {
                assert!(c.peers[..i].iter().all(|q| q.sp != p.sp), "SP {} listed twice", p.sp);
            }
            assert!(!c.conduits.is_empty() && c.conduits.len() <= 4096, "{} conduits", c.conduits.len());
            assert!((1..=256 << 20).contains(&c.max_message_size), "max_message_size {}", c.max_message_size);
            assert!(c.dead_peer_timeout >= 2 * c.heartbeat_interval, "dead-peer timeout under twice the heartbeat");
            assert!(c.reconnect_max_backoff >= c.reconnect_initial_backoff, "max backoff under the initial one");
            assert!((1..=64).contains(&c.callback_threads), "{} callback threads", c.callback_threads);
        }
        Err(e) => {
            assert!(!e.reason.is_empty(), "a configuration was refused without a reason");
            assert_eq!(e.origin, "fuzz");
            if let Some(line) = e.line {
                assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "error on line {line} of a {}-line text", text.lines().count());
            }
        }
    }
}
