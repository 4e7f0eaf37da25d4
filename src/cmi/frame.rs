//! The wire format, one file (docs/PROTOCOL.md describes it field by field).
//!
//! Every frame is an 8-byte prefix (body length u32, kind u8, flags u8,
//! reserved u16, all little-endian) and a body. The length is checked against
//! the receiver's limit before anything is allocated for the body.
//!
//! Version 2 (issue 9) adds a link header to the frames that carry messages
//! and confirmations (their sequence number and the sender's cumulative
//! acknowledgement, 16 bytes between the prefix and the version-1 body), an
//! acknowledgement in `HEARTBEAT`, and two frames exchanged once after the
//! HELLOs: `RESUME` (incarnations and what each side last received) and
//! `REFUSE`. `HELLO` itself is unchanged, so a version-1 peer can read it and
//! the two agree on version 1.

use crate::sp_id::SpId;
use crate::status::Status;

/// Bytes before every frame body.
pub const PREFIX_LEN: usize = 8;
/// The oldest protocol version this build speaks.
pub const VERSION_MIN: u16 = 1;
/// The newest protocol version this build speaks.
pub const VERSION_MAX: u16 = 2;
/// The first version with sequence numbers, acknowledgements and resume.
pub const VERSION_RESUME: u16 = 2;
/// The link header of a numbered frame (version 2): sequence number and
/// cumulative acknowledgement, both u64.
pub const LINK_HDR: usize = 16;
/// Length of a `RESUME` body.
pub const RESUME_LEN: usize = 32;
/// Length of a `REFUSE` body.
pub const REFUSE_LEN: usize = 8;
/// Length of a version-2 `HEARTBEAT` body (its acknowledgement).
pub const HEARTBEAT2_LEN: usize = 8;
/// `HELLO` body magic.
pub const MAGIC: [u8; 4] = *b"MPSL";
/// Longest mailbox name on the wire, in UTF-8 bytes (64 characters of up to 4 bytes).
pub const MAX_NAME_BYTES: usize = 256;
/// Fixed part of a `MESSAGE` body, before the name.
pub const MESSAGE_FIXED: usize = 24;
/// Length of a `HELLO` body.
pub const HELLO_LEN: usize = 32;
/// One entry of a `CONFIRM` body.
pub const CONFIRM_ENTRY: usize = 12;
/// Most entries one `CONFIRM` frame carries.
pub const MAX_CONFIRMS_PER_FRAME: usize = 4096;
/// Largest header a `MESSAGE` frame can have (prefix, link header, fixed
/// part, longest name).
pub const MAX_MESSAGE_HEAD: usize = PREFIX_LEN + LINK_HDR + MESSAGE_FIXED + MAX_NAME_BYTES;

/// Frame kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Handshake: identity, version range, limits. First frame each way.
    Hello = 1,
    /// One MPS message for a session.
    Message = 2,
    /// Confirmations of messages received, one or more.
    Confirm = 3,
    /// Liveness when nothing else is sent (version 2: with an acknowledgement).
    Heartbeat = 4,
    /// Version 2: the first frame after the HELLOs, each way: incarnations
    /// and the last sequence number received (resume or start afresh).
    Resume = 5,
    /// Version 2: the accepting side's answer instead of `RESUME` when it
    /// refuses the connection (a second live incarnation of an SP id).
    Refuse = 6,
    /// Version 2: the sender's link session is over (it shuts down): the
    /// last frame of an orderly close, after everything it owed.
    Bye = 7,
}

impl Kind {
    /// Reads a kind byte; unknown kinds are a protocol error.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Message,
            3 => Kind::Confirm,
            4 => Kind::Heartbeat,
            5 => Kind::Resume,
            6 => Kind::Refuse,
            7 => Kind::Bye,
            _ => return None,
        })
    }
}

/// `MESSAGE` mode byte: asynchronous (`MpsAsynchronousSend`).
pub const MODE_ASYNC: u8 = 0;
/// `MESSAGE` mode byte: synchronous (`MpsSynchronousSend`).
pub const MODE_SYNC: u8 = 1;

/// The parsed prefix of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// Bytes of body after the prefix.
    pub body_len: u32,
    /// What the body is.
    pub kind: Kind,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Writes a prefix into `out[..8]`.
pub fn put_prefix(out: &mut [u8], kind: Kind, body_len: u32) {
    out[0..4].copy_from_slice(&body_len.to_le_bytes());
    out[4] = kind as u8;
    out[5] = 0;
    out[6] = 0;
    out[7] = 0;
}

/// Parses and checks a prefix of protocol version 1 (see `parse_prefix_v`).
pub fn parse_prefix(b: &[u8; PREFIX_LEN], max_message: u32) -> Result<Prefix, String> {
    parse_prefix_v(b, max_message, 1)
}

/// Parses and checks a prefix on a link of protocol `version`. `max_message`
/// is the receiver's own limit; the body length is refused here, before any
/// allocation, when no valid frame of that kind can be so long.
pub fn parse_prefix_v(b: &[u8; PREFIX_LEN], max_message: u32, version: u16) -> Result<Prefix, String> {
    let body_len = le_u32(b, 0);
    let kind = Kind::from_u8(b[4]).ok_or_else(|| format!("unknown frame kind {}", b[4]))?;
    if b[5] != 0 || b[6] != 0 || b[7] != 0 {
        return Err(format!("{kind:?} frame has non-zero flags or reserved bytes"));
    }
    let v2 = version >= VERSION_RESUME;
    // The link header numbered frames carry in version 2.
    let hdr = if v2 { LINK_HDR } else { 0 };
    let n = body_len as usize;
    let ok = match kind {
        Kind::Hello => n == HELLO_LEN,
        Kind::Heartbeat => n == if v2 { HEARTBEAT2_LEN } else { 0 },
        Kind::Confirm => {
            n >= hdr && (4 + CONFIRM_ENTRY..=4 + CONFIRM_ENTRY * MAX_CONFIRMS_PER_FRAME).contains(&(n - hdr)) && (n - hdr - 4).is_multiple_of(CONFIRM_ENTRY)
        }
        Kind::Message => n > hdr + MESSAGE_FIXED && (body_len as u64) <= (hdr + MESSAGE_FIXED + MAX_NAME_BYTES) as u64 + max_message as u64,
        Kind::Resume => v2 && n == RESUME_LEN,
        Kind::Refuse | Kind::Bye => v2 && n == REFUSE_LEN,
    };
    if !ok {
        if !v2 && matches!(kind, Kind::Resume | Kind::Refuse | Kind::Bye) {
            return Err(format!("{kind:?} frame on a link of protocol version {version}, which has none"));
        }
        return Err(format!("{kind:?} frame with impossible body length {body_len} (limit for messages {max_message})"));
    }
    Ok(Prefix { body_len, kind })
}

/// Writes a version-2 link header (sequence number, acknowledgement) into `out[..16]`.
pub fn put_link_header(out: &mut [u8], seq: u64, ack: u64) {
    out[0..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&ack.to_le_bytes());
}

/// Reads a version-2 link header: (sequence number, acknowledgement).
pub fn decode_link_header(b: &[u8]) -> (u64, u64) {
    (le_u64(b, 0), le_u64(b, 8))
}

/// The handshake frame's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Oldest version the sender speaks.
    pub version_min: u16,
    /// Newest version the sender speaks.
    pub version_max: u16,
    /// The sender's SP id.
    pub sp: SpId,
    /// The largest message the sender accepts.
    pub max_message: u32,
    /// The sender's heartbeat interval, milliseconds.
    pub heartbeat_ms: u32,
    /// The sender's dead-peer timeout, milliseconds.
    pub dead_timeout_ms: u32,
}

impl Hello {
    /// The whole frame, prefix included.
    pub fn encode(&self) -> [u8; PREFIX_LEN + HELLO_LEN] {
        let mut f = [0u8; PREFIX_LEN + HELLO_LEN];
        put_prefix(&mut f, Kind::Hello, HELLO_LEN as u32);
        let b = &mut f[PREFIX_LEN..];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&self.version_min.to_le_bytes());
        b[6..8].copy_from_slice(&self.version_max.to_le_bytes());
        b[8..12].copy_from_slice(&self.sp.unit.to_le_bytes());
        b[12..16].copy_from_slice(&self.sp.sp.to_le_bytes());
        b[16..20].copy_from_slice(&self.max_message.to_le_bytes());
        b[20..24].copy_from_slice(&self.heartbeat_ms.to_le_bytes());
        b[24..28].copy_from_slice(&self.dead_timeout_ms.to_le_bytes());
        f
    }

    /// Parses a `HELLO` body.
    pub fn decode(b: &[u8]) -> Result<Hello, String> {
        if b.len() != HELLO_LEN {
            return Err(format!("HELLO body of {} bytes", b.len()));
        }
        if b[0..4] != MAGIC {
            return Err("HELLO without the MPSL magic: not an MPS peer".into());
        }
        let h = Hello {
            version_min: le_u16(b, 4),
            version_max: le_u16(b, 6),
            sp: SpId { unit: le_u32(b, 8), sp: le_u32(b, 12) },
            max_message: le_u32(b, 16),
            heartbeat_ms: le_u32(b, 20),
            dead_timeout_ms: le_u32(b, 24),
        };
        // Bytes 28..32 are reserved and deliberately not checked: the HELLO is
        // exchanged before a version is agreed, so they are the one place a
        // future version can add handshake information (docs/PROTOCOL.md 9).
        if h.version_min > h.version_max {
            return Err(format!("HELLO with an empty version range {}..{}", h.version_min, h.version_max));
        }
        if h.sp.sp > 1 {
            return Err(format!("HELLO from an SP id with side {} (only A=0 and B=1 exist)", h.sp.sp));
        }
        Ok(h)
    }

    /// The version both ends speak: the newest in both ranges.
    pub fn agree(&self, other: &Hello) -> Option<u16> {
        let lo = self.version_min.max(other.version_min);
        let hi = self.version_max.min(other.version_max);
        (lo <= hi).then_some(hi)
    }
}

/// The fixed fields of a `MESSAGE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHead {
    /// Sender-chosen id, unique on this link; the confirmation names it.
    pub id: u64,
    /// The conduit of the sending (and receiving) session.
    pub conduit: u32,
    /// The domain name of the session (four characters packed in a ULONG).
    pub domain: u32,
    /// The client's SequenceTag.
    pub tag: u32,
    /// `MODE_SYNC` or `MODE_ASYNC`.
    pub mode: u8,
}

/// Encodes a version-1 `MESSAGE` frame's prefix, fixed part and name into
/// `out`, for a payload of `payload_len` bytes that follows on the wire.
/// Returns the header's length. `out` must hold `MAX_MESSAGE_HEAD` bytes;
/// `name` is at most `MAX_NAME_BYTES` (the session layer guarantees both).
pub fn encode_message_head(out: &mut [u8], h: &MessageHead, name: &[u8], payload_len: u32) -> usize {
    encode_message_head_v(out, h, name, payload_len, None)
}

/// Like `encode_message_head`; with `link` (version 2) the frame carries
/// that link header (sequence number, acknowledgement) after its prefix.
pub fn encode_message_head_v(out: &mut [u8], h: &MessageHead, name: &[u8], payload_len: u32, link: Option<(u64, u64)>) -> usize {
    debug_assert!(name.len() <= MAX_NAME_BYTES && !name.is_empty());
    let hdr = if link.is_some() { LINK_HDR } else { 0 };
    let body = (hdr + MESSAGE_FIXED + name.len()) as u32 + payload_len;
    put_prefix(out, Kind::Message, body);
    if let Some((seq, ack)) = link {
        put_link_header(&mut out[PREFIX_LEN..], seq, ack);
    }
    let b = &mut out[PREFIX_LEN + hdr..];
    b[0..8].copy_from_slice(&h.id.to_le_bytes());
    b[8..12].copy_from_slice(&h.conduit.to_le_bytes());
    b[12..16].copy_from_slice(&h.domain.to_le_bytes());
    b[16..20].copy_from_slice(&h.tag.to_le_bytes());
    b[20..22].copy_from_slice(&(name.len() as u16).to_le_bytes());
    b[22] = h.mode;
    b[23] = 0;
    b[MESSAGE_FIXED..MESSAGE_FIXED + name.len()].copy_from_slice(name);
    PREFIX_LEN + hdr + MESSAGE_FIXED + name.len()
}

/// Parses the fixed part of a `MESSAGE` body (the first `MESSAGE_FIXED`
/// bytes of `b`; a shorter `b` is an error) and returns it with the name's
/// length, checked against the body length.
pub fn decode_message_fixed(b: &[u8], body_len: u32) -> Result<(MessageHead, usize), String> {
    if b.len() < MESSAGE_FIXED {
        return Err(format!("MESSAGE body of {} bytes, shorter than its {MESSAGE_FIXED}-byte fixed part", b.len()));
    }
    let name_len = le_u16(b, 20) as usize;
    let h = MessageHead { id: le_u64(b, 0), conduit: le_u32(b, 8), domain: le_u32(b, 12), tag: le_u32(b, 16), mode: b[22] };
    if h.mode != MODE_SYNC && h.mode != MODE_ASYNC {
        return Err(format!("MESSAGE with unknown mode {}", h.mode));
    }
    if b[23] != 0 {
        return Err("MESSAGE with a non-zero reserved byte".into());
    }
    if name_len == 0 || name_len > MAX_NAME_BYTES || MESSAGE_FIXED + name_len > body_len as usize {
        return Err(format!("MESSAGE with a mailbox name of {name_len} bytes in a body of {body_len}"));
    }
    Ok((h, name_len))
}

/// Appends a version-1 `CONFIRM` frame for `entries` (at most `MAX_CONFIRMS_PER_FRAME`) to `out`.
pub fn encode_confirms(out: &mut Vec<u8>, entries: &[(u64, Status)]) {
    encode_confirms_v(out, entries, None)
}

/// Like `encode_confirms`; with `link` (version 2) the frame carries that
/// link header (sequence number, acknowledgement) after its prefix.
pub fn encode_confirms_v(out: &mut Vec<u8>, entries: &[(u64, Status)], link: Option<(u64, u64)>) {
    debug_assert!(!entries.is_empty() && entries.len() <= MAX_CONFIRMS_PER_FRAME);
    let hdr = if link.is_some() { LINK_HDR } else { 0 };
    let body = hdr + 4 + CONFIRM_ENTRY * entries.len();
    let start = out.len();
    out.resize(start + PREFIX_LEN + hdr, 0);
    put_prefix(&mut out[start..], Kind::Confirm, body as u32);
    if let Some((seq, ack)) = link {
        put_link_header(&mut out[start + PREFIX_LEN..], seq, ack);
    }
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (id, st) in entries {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&st.0.to_le_bytes());
    }
}

/// The statuses a receiver confirms a message with (docs/PROTOCOL.md 5):
/// any other value in a `CONFIRM` is a broken or hostile peer, never the
/// final status of a send.
pub const CONFIRM_STATUSES: [Status; 4] = [
    Status::STATUS_SUCCESS,
    Status::STATUS_OBJECT_NAME_NOT_FOUND,
    Status::STATUS_PIPE_CLOSING,
    Status::STATUS_INSUFFICIENT_RESOURCES,
];

/// Whether a receiver may confirm a message with `st` (see [`CONFIRM_STATUSES`]).
pub fn confirm_status_allowed(st: Status) -> bool {
    CONFIRM_STATUSES.contains(&st)
}

/// Parses a `CONFIRM` body into (message id, status) pairs.
pub fn decode_confirms(b: &[u8]) -> Result<impl ExactSizeIterator<Item = (u64, Status)> + Clone + '_, String> {
    if b.len() < 4 {
        return Err(format!("CONFIRM body of {} bytes, too short for its count", b.len()));
    }
    let n = le_u32(b, 0) as usize;
    // u64: on a 32-bit target 4 + n * 12 could wrap to the body's length.
    if 4 + n as u64 * CONFIRM_ENTRY as u64 != b.len() as u64 {
        return Err(format!("CONFIRM claims {n} entries in a body of {} bytes", b.len()));
    }
    Ok((0..n).map(move |i| {
        let at = 4 + i * CONFIRM_ENTRY;
        (le_u64(b, at), Status(le_u32(b, at + 8) as i32))
    }))
}

/// A whole version-1 `HEARTBEAT` frame.
pub fn heartbeat() -> [u8; PREFIX_LEN] {
    let mut f = [0u8; PREFIX_LEN];
    put_prefix(&mut f, Kind::Heartbeat, 0);
    f
}

/// A whole version-2 `HEARTBEAT` frame, carrying the sender's acknowledgement.
pub fn heartbeat_v2(ack: u64) -> [u8; PREFIX_LEN + HEARTBEAT2_LEN] {
    let mut f = [0u8; PREFIX_LEN + HEARTBEAT2_LEN];
    put_prefix(&mut f, Kind::Heartbeat, HEARTBEAT2_LEN as u32);
    f[PREFIX_LEN..].copy_from_slice(&ack.to_le_bytes());
    f
}

/// `RESUME` flag: the accepting side resumes the link session the dialer
/// named (without it: a new link session starts, numbered from 1).
pub const RESUME_FLAG_RESUMED: u32 = 1;
/// `RESUME` flag: the sender confirms a message only once it has been
/// handed to its client (`delivered`), not when it is accepted into the
/// session, so its confirmations may come in another order than the
/// messages and may take as long as the client does.
pub const RESUME_FLAG_DELIVERED: u32 = 2;
/// `RESUME` flag: this connection is a second path, to wait as the standby
/// of the link session the sender names (from the acceptor: it does).
pub const RESUME_FLAG_STANDBY: u32 = 4;

/// The `RESUME` frame (version 2): sent once each way after the HELLOs, the
/// dialing side first; the accepting side's answer decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The sender's incarnation: a random non-zero number drawn at its start.
    pub incarnation: u64,
    /// The receiver's incarnation that the sender has a link session with
    /// (0: none); from the accepting side, the dialer's, echoed.
    pub peer_incarnation: u64,
    /// The last sequence number the sender received in that link session
    /// (0: none).
    pub received: u64,
    /// `RESUME_FLAG_RESUMED`, `RESUME_FLAG_DELIVERED`; other bits are
    /// reserved and must be 0.
    pub flags: u32,
}

impl Resume {
    /// The whole frame, prefix included.
    pub fn encode(&self) -> [u8; PREFIX_LEN + RESUME_LEN] {
        let mut f = [0u8; PREFIX_LEN + RESUME_LEN];
        put_prefix(&mut f, Kind::Resume, RESUME_LEN as u32);
        let b = &mut f[PREFIX_LEN..];
        b[0..8].copy_from_slice(&self.incarnation.to_le_bytes());
        b[8..16].copy_from_slice(&self.peer_incarnation.to_le_bytes());
        b[16..24].copy_from_slice(&self.received.to_le_bytes());
        b[24..28].copy_from_slice(&self.flags.to_le_bytes());
        f
    }

    /// Parses a `RESUME` body.
    pub fn decode(b: &[u8]) -> Result<Resume, String> {
        if b.len() != RESUME_LEN {
            return Err(format!("RESUME body of {} bytes", b.len()));
        }
        let r = Resume { incarnation: le_u64(b, 0), peer_incarnation: le_u64(b, 8), received: le_u64(b, 16), flags: le_u32(b, 24) };
        if r.incarnation == 0 {
            return Err("RESUME with incarnation 0".into());
        }
        if r.flags & !(RESUME_FLAG_RESUMED | RESUME_FLAG_DELIVERED | RESUME_FLAG_STANDBY) != 0 || le_u32(b, 28) != 0 {
            return Err(format!("RESUME with unknown flags {:#x} or non-zero reserved bytes", r.flags));
        }
        if r.peer_incarnation == 0 && r.received != 0 {
            return Err("RESUME that names no link session but has received frames in it".into());
        }
        Ok(r)
    }
}

/// `REFUSE` reason: another live incarnation of the dialer's SP id holds the link.
pub const REFUSE_CONFLICT: u32 = 1;

/// A whole `REFUSE` frame with `reason`.
pub fn refuse(reason: u32) -> [u8; PREFIX_LEN + REFUSE_LEN] {
    let mut f = [0u8; PREFIX_LEN + REFUSE_LEN];
    put_prefix(&mut f, Kind::Refuse, REFUSE_LEN as u32);
    f[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&reason.to_le_bytes());
    f
}

/// `BYE` reason: the sender shuts down.
pub const BYE_SHUTDOWN: u32 = 1;

/// A whole `BYE` frame with `reason` (same layout as `REFUSE`).
pub fn bye(reason: u32) -> [u8; PREFIX_LEN + REFUSE_LEN] {
    let mut f = refuse(reason);
    f[4] = Kind::Bye as u8;
    f
}

/// Parses a `REFUSE` (or `BYE`) body into its reason.
pub fn decode_refuse(b: &[u8]) -> Result<u32, String> {
    if b.len() != REFUSE_LEN {
        return Err(format!("REFUSE body of {} bytes", b.len()));
    }
    Ok(le_u32(b, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix_of(f: &[u8]) -> [u8; 8] {
        f[..8].try_into().unwrap()
    }

    #[test]
    fn hello_round_trips_and_agrees_on_a_version() {
        let h = Hello { version_min: 1, version_max: 3, sp: SpId::b(7), max_message: 4096, heartbeat_ms: 250, dead_timeout_ms: 3000 };
        let f = h.encode();
        let p = parse_prefix(&prefix_of(&f), 1 << 20).unwrap();
        assert_eq!(p, Prefix { body_len: HELLO_LEN as u32, kind: Kind::Hello });
        let back = Hello::decode(&f[8..]).unwrap();
        assert_eq!(back, h);
        let old = Hello { version_min: 1, version_max: 1, ..h };
        assert_eq!(h.agree(&old), Some(1));
        let newer = Hello { version_min: 4, version_max: 5, ..h };
        assert_eq!(h.agree(&newer), None);
    }

    #[test]
    fn hello_refuses_strangers() {
        let mut f = Hello { version_min: 1, version_max: 1, sp: SpId::a(0), max_message: 1, heartbeat_ms: 1, dead_timeout_ms: 2 }.encode();
        f[8] = b'X';
        assert!(Hello::decode(&f[8..]).unwrap_err().contains("magic"));
    }

    #[test]
    fn message_head_round_trips() {
        let h = MessageHead { id: 99, conduit: 3, domain: 0x4142_4344, tag: 7, mode: MODE_SYNC };
        let mut out = [0u8; MAX_MESSAGE_HEAD];
        let n = encode_message_head(&mut out, &h, b"Mirror", 10);
        assert_eq!(n, 8 + 24 + 6);
        let p = parse_prefix(&prefix_of(&out), 1 << 20).unwrap();
        assert_eq!(p.body_len, 24 + 6 + 10);
        let (back, name_len) = decode_message_fixed(&out[8..], p.body_len).unwrap();
        assert_eq!((back, name_len), (h, 6));
        assert_eq!(&out[8 + 24..8 + 30], b"Mirror");
    }

    #[test]
    fn prefix_refuses_oversized_and_malformed_frames() {
        let mut p = [0u8; 8];
        put_prefix(&mut p, Kind::Message, u32::MAX);
        assert!(parse_prefix(&p, 1 << 20).is_err(), "a 4 GiB message passed");
        put_prefix(&mut p, Kind::Message, (24 + 256 + 4096 + 1) as u32);
        assert!(parse_prefix(&p, 4096).is_err(), "one byte over the limit passed");
        put_prefix(&mut p, Kind::Message, (24 + 256 + 4096) as u32);
        assert!(parse_prefix(&p, 4096).is_ok());
        put_prefix(&mut p, Kind::Heartbeat, 1);
        assert!(parse_prefix(&p, 4096).is_err());
        put_prefix(&mut p, Kind::Confirm, 4 + 11);
        assert!(parse_prefix(&p, 4096).is_err());
        p[4] = 200;
        assert!(parse_prefix(&p, 4096).unwrap_err().contains("unknown"));
        put_prefix(&mut p, Kind::Heartbeat, 0);
        p[6] = 1;
        assert!(parse_prefix(&p, 4096).is_err());
    }

    #[test]
    fn message_refuses_bad_names_and_modes() {
        let mut b = [0u8; 40];
        b[20..22].copy_from_slice(&300u16.to_le_bytes());
        assert!(decode_message_fixed(&b, 40).is_err());
        b[20..22].copy_from_slice(&20u16.to_le_bytes());
        assert!(decode_message_fixed(&b, 40).is_err(), "name runs past the body");
        b[20..22].copy_from_slice(&4u16.to_le_bytes());
        b[22] = 9;
        assert!(decode_message_fixed(&b, 40).is_err());
        b[22] = MODE_ASYNC;
        assert!(decode_message_fixed(&b, 40).is_ok());
    }

    #[test]
    fn message_fixed_refuses_a_body_shorter_than_its_fixed_part() {
        // Found by the frame_decoder fuzz target: this indexed past the slice.
        for len in [0, 1, 20, MESSAGE_FIXED - 1] {
            let b = vec![0u8; len];
            let e = decode_message_fixed(&b, 100).unwrap_err();
            assert!(e.contains("shorter"), "{len} bytes: {e}");
        }
    }

    #[test]
    fn confirms_refuse_a_body_too_short_for_its_count() {
        // Found by the confirm fuzz target: this indexed past the slice.
        for b in [&[][..], &[1], &[1, 0, 0]] {
            assert!(decode_confirms(b).is_err(), "{} bytes parsed", b.len());
        }
    }

    #[test]
    fn confirms_round_trip() {
        let mut out = Vec::new();
        let entries = [(1u64, Status::STATUS_SUCCESS), (2, Status::STATUS_OBJECT_NAME_NOT_FOUND)];
        encode_confirms(&mut out, &entries);
        let p = parse_prefix(&prefix_of(&out), 0).unwrap();
        assert_eq!(p.kind, Kind::Confirm);
        let back: Vec<_> = decode_confirms(&out[8..]).unwrap().collect();
        assert_eq!(back, entries);
        let mut bad = out.clone();
        bad[8] = 5;
        assert!(decode_confirms(&bad[8..]).is_err());
    }
    /// The bytes of one worked example of docs/PROTOCOL.md: the first code
    /// block after the heading that starts with `heading`, each line's
    /// leading two-digit hex tokens.
    fn doc_example(heading: &str) -> Vec<u8> {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let at = doc.find(heading).unwrap_or_else(|| panic!("no heading {heading:?} in docs/PROTOCOL.md"));
        let block = doc[at..].split("```").nth(1).expect("a code block after the heading");
        let mut out = Vec::new();
        for line in block.lines() {
            for tok in line.split_whitespace() {
                if tok.len() != 2 || !tok.chars().all(|c| c.is_ascii_hexdigit()) {
                    break;
                }
                out.push(u8::from_str_radix(tok, 16).unwrap());
            }
        }
        out
    }

    #[test]
    fn protocol_md_version_2_examples() {
        let (a, b) = (0x1122_3344_5566_7788u64, 0x99AA_BBCC_DDEE_FF00u64);
        let offer = Resume { incarnation: a, peer_incarnation: b, received: 41, flags: 0 }.encode();
        assert_eq!(doc_example("#### 10.6.1"), offer);
        assert_eq!(Resume::decode(&offer[PREFIX_LEN..]).unwrap().received, 41);
        let answer = Resume { incarnation: b, peer_incarnation: a, received: 17, flags: RESUME_FLAG_RESUMED }.encode();
        assert_eq!(doc_example("#### 10.6.2"), answer);
        let h = MessageHead { id: 1, conduit: 3, domain: 0x524F_5453, tag: 42, mode: MODE_SYNC };
        let mut m = [0u8; MAX_MESSAGE_HEAD];
        let n = encode_message_head_v(&mut m, &h, b"Mirror", 5, Some((42, 17)));
        assert_eq!(n, 54);
        let mut whole = m[..n].to_vec();
        whole.extend_from_slice(b"hello");
        assert_eq!(doc_example("#### 10.6.3"), whole);
        let p = parse_prefix_v(&prefix_of(&whole), 1 << 20, 2).unwrap();
        assert_eq!((p.kind, p.body_len), (Kind::Message, 51));
        assert!(parse_prefix(&prefix_of(&whole), 1 << 20).is_ok(), "the length fits version 1 too; the reader uses the link's version");
        assert_eq!(decode_link_header(&whole[PREFIX_LEN..]), (42, 17));
        assert_eq!(decode_message_fixed(&whole[PREFIX_LEN + LINK_HDR..], p.body_len - LINK_HDR as u32).unwrap(), (h, 6));
        let mut c = Vec::new();
        encode_confirms_v(&mut c, &[(1, Status::STATUS_SUCCESS)], Some((18, 42)));
        assert_eq!(doc_example("#### 10.6.4"), c);
        assert_eq!(parse_prefix_v(&prefix_of(&c), 0, 2).unwrap().body_len, 32);
        assert!(parse_prefix(&prefix_of(&c), 0).is_err(), "a version-1 reader refuses a CONFIRM with a link header");
        assert_eq!(decode_confirms(&c[PREFIX_LEN + LINK_HDR..]).unwrap().collect::<Vec<_>>(), [(1, Status::STATUS_SUCCESS)]);
        assert_eq!(doc_example("#### 10.6.5"), heartbeat_v2(18));
        assert_eq!(doc_example("#### 10.6.6"), refuse(REFUSE_CONFLICT));
        assert_eq!(decode_refuse(&refuse(REFUSE_CONFLICT)[PREFIX_LEN..]), Ok(REFUSE_CONFLICT));
        assert_eq!(doc_example("#### 10.6.7"), bye(BYE_SHUTDOWN));
        assert_eq!(parse_prefix_v(&prefix_of(&bye(BYE_SHUTDOWN)), 0, 2).unwrap().kind, Kind::Bye);
        // The version-1 examples of section 8 hold too.
        let v1 = Hello { version_min: 1, version_max: 1, sp: SpId::a(0), max_message: 4 << 20, heartbeat_ms: 250, dead_timeout_ms: 3000 }.encode();
        assert_eq!(doc_example("### 8.1"), v1);
        assert_eq!(doc_example("### 8.4"), heartbeat());
    }

    #[test]
    fn version_2_frames_are_refused_where_they_do_not_belong() {
        let r = Resume { incarnation: 1, peer_incarnation: 0, received: 0, flags: 0 }.encode();
        assert!(parse_prefix(&prefix_of(&r), 1 << 20).unwrap_err().contains("version 1"), "RESUME on a version-1 link");
        assert!(parse_prefix_v(&prefix_of(&r), 1 << 20, 2).is_ok());
        assert!(Resume::decode(&Resume { incarnation: 0, ..Resume::decode(&r[8..]).unwrap() }.encode()[8..]).is_err(), "incarnation 0");
        let bad = Resume { incarnation: 1, peer_incarnation: 0, received: 5, flags: 0 }.encode();
        assert!(Resume::decode(&bad[8..]).is_err(), "frames received in no session");
        let mut flags = r;
        flags[8 + 24] = 8;
        assert!(Resume::decode(&flags[8..]).is_err(), "an unknown flag");
        let mut hb = [0u8; 8];
        put_prefix(&mut hb, Kind::Heartbeat, 0);
        assert!(parse_prefix_v(&hb, 1 << 20, 2).is_err(), "an empty heartbeat on version 2");
        put_prefix(&mut hb, Kind::Message, (LINK_HDR + MESSAGE_FIXED) as u32);
        assert!(parse_prefix_v(&hb, 1 << 20, 2).is_err(), "a MESSAGE with no room for its name");
    }
}
