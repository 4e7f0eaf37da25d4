//! Who this SP is, who its peers are, and the limits (SPEC section 6).
//!
//! Two sources: a TOML file named by `MPS_CONFIG` (format in README.md and
//! `examples/mps-two-units.toml`), or the embedded default built from `MPS_SP`
//! and `MPS_RUNTIME_DIR` with no file at all.

use crate::sp_id::SpId;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Hard ceiling for `max_message_size` (and for `MpsAllocateMessage`): 256 MiB.
pub const MAX_MESSAGE_SIZE_CEILING: u32 = 256 << 20;
/// Longest Unix-domain socket path the kernel accepts (sun_path minus the NUL).
const UNIX_PATH_MAX: usize = 107;

/// Where an SP listens or is reached.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Address {
    /// A Unix-domain stream socket at this path (`unix:/path`).
    Unix(PathBuf),
    /// TCP, `host:port` (`tcp:127.0.0.1:7001`).
    Tcp(String),
    /// An in-process link to another SP instance of this process (`inproc:name`).
    Inproc(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp:{a}"),
            Address::Inproc(n) => write!(f, "inproc:{n}"),
        }
    }
}

impl std::str::FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Address, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() || !p.starts_with('/') {
                return Err(format!("{s:?}: a unix: address needs an absolute path"));
            }
            if p.len() > UNIX_PATH_MAX {
                return Err(format!("{s:?}: the socket path is longer than {UNIX_PATH_MAX} bytes"));
            }
            Ok(Address::Unix(PathBuf::from(p)))
        } else if let Some(a) = s.strip_prefix("tcp:") {
            let (host, port) = a
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: a tcp: address is host:port"))?;
            if host.is_empty() {
                return Err(format!("{s:?}: the host is empty"));
            }
            if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
                return Err(format!("{s:?}: an IPv6 host is written in brackets, e.g. tcp:[::1]:7001"));
            }
            // Digits only: Rust's integer parser would also take "+7001".
            if tcp_port(a).is_none() {
                return Err(format!("{s:?}: the port {port:?} is not a number from 0 to 65535"));
            }
            Ok(Address::Tcp(a.to_string()))
        } else if let Some(n) = s.strip_prefix("inproc:") {
            if n.is_empty() {
                return Err(format!("{s:?}: an inproc: address needs a name"));
            }
            Ok(Address::Inproc(n.to_string()))
        } else {
            Err(format!("{s:?}: an address starts with unix:, tcp: or inproc:"))
        }
    }
}

/// The port of a `host:port` text: decimal digits only (leading zeros
/// allowed), 0 to 65535; `None` for anything else.
fn tcp_port(a: &str) -> Option<u16> {
    let (_, port) = a.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

impl Address {
    /// Whether two addresses name the same endpoint as far as the text tells:
    /// Unix paths compared by component (`/a//b` is `/a/b`), TCP hosts without
    /// regard to case and ports as numbers (`07001` is `7001`). Two names of
    /// one host (`localhost` and `127.0.0.1`) are not resolved to find out.
    pub fn same_endpoint(&self, other: &Address) -> bool {
        match (self, other) {
            (Address::Unix(a), Address::Unix(b)) => a == b,
            (Address::Tcp(a), Address::Tcp(b)) => {
                let host = |t: &str| t.rsplit_once(':').map(|(h, _)| h.to_ascii_lowercase());
                host(a) == host(b) && tcp_port(a) == tcp_port(b)
            }
            (Address::Inproc(a), Address::Inproc(b)) => a == b,
            _ => false,
        }
    }
}

/// One peer SP and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its identity; the handshake checks that the far end says the same.
    pub sp: SpId,
    /// Its listening address.
    pub address: Address,
    /// A second path to it (`second_address`): its second listening
    /// address, on another network or transport. Both paths are kept up;
    /// traffic uses one, and moves to the other when it fails (issue 9).
    pub second_address: Option<Address>,
}

/// The complete configuration of one SP.
#[derive(Clone, Debug)]
pub struct Config {
    /// This SP.
    pub local: SpId,
    /// Where this SP listens for its peers (`None`: it only dials).
    pub listen: Option<Address>,
    /// A second listening address (`second_listen`), for peers that reach
    /// this SP over two paths.
    pub second_listen: Option<Address>,
    /// Every other SP this one links to.
    pub peers: Vec<Peer>,
    /// The conduits sessions may be opened on.
    pub conduits: BTreeSet<u32>,
    /// Largest message, in bytes, this SP sends or accepts.
    pub max_message_size: u32,
    /// Messages a session holds that its client has not taken yet; past it the
    /// sender gets `STATUS_INSUFFICIENT_RESOURCES`.
    pub session_queue_depth: u32,
    /// Bytes of those messages a session may hold; past it, likewise.
    pub session_queue_bytes: u64,
    /// Asynchronous sends one session may have awaiting completion.
    pub async_sends_per_session: u32,
    /// A link sends a heartbeat when it has sent nothing for this long.
    pub heartbeat_interval: Duration,
    /// A link that has received nothing for this long is declared dead.
    pub dead_peer_timeout: Duration,
    /// First wait before redialing a lost or refused link; doubles each failure.
    pub reconnect_initial_backoff: Duration,
    /// The longest wait between redials.
    pub reconnect_max_backoff: Duration,
    /// Library threads that run client callbacks.
    pub callback_threads: usize,
    /// Send buffer (`SO_SNDBUF`) asked for each link's socket. `None`:
    /// [`DEFAULT_SOCKET_SEND_BUFFER`] on Unix-domain links and TCP links to a
    /// loopback address, the kernel's own sizing (TCP autotuning) on TCP links
    /// to other hosts; `Some(0)`: the kernel's sizing everywhere; `Some(n)`:
    /// `n` bytes everywhere (the kernel doubles it for its bookkeeping and caps
    /// it at `net.core.wmem_max`).
    pub socket_send_buffer: Option<u32>,
    /// How long a link session (protocol version 2) waits for a new
    /// connection after losing one before its in-flight messages fail with
    /// `STATUS_CONNECTION_DISCONNECTED` (`[link] resume_timeout_ms`, like
    /// TIPC's link tolerance). Within it, a lost connection costs nothing.
    pub resume_timeout: Duration,
    /// The newest protocol version this SP offers (`[link]
    /// max_protocol_version`, default the newest this build speaks).
    pub protocol_version_max: u16,
    /// When this SP confirms a message it receives (`[link] confirm`).
    pub confirm: ConfirmPoint,
}

/// The point at which an SP confirms a message it receives (`[link] confirm`;
/// README, "Confirmations", says what each promises the sender).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConfirmPoint {
    /// `"accepted"` (the default, the seed's FIG. 8A): when the message is
    /// in the target MPS's session (queued for receive, handed to a waiting
    /// receive, or queued for the callback), before the client has it.
    #[default]
    Accepted,
    /// `"delivered"`: once the client has it: the callback that received it
    /// has returned, or the synchronous receive has handed it over. Needs
    /// protocol version 2 on the link; on a version-1 link the SP confirms on
    /// acceptance (and logs a warning once per link).
    Delivered,
}

impl ConfirmPoint {
    /// The configuration file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfirmPoint::Accepted => "accepted",
            ConfirmPoint::Delivered => "delivered",
        }
    }
}

/// The send buffer libmps asks for on local links (Unix-domain sockets and
/// loopback TCP) unless configured otherwise: 512 KiB, which the kernel
/// doubles to 1 MiB. The default (208 KiB on Linux) holds three 64 KiB
/// messages, so a writer with more queued wakes the reader and sleeps every
/// three; measured in docs/PERFORMANCE.md (W3 64 KiB over Unix sockets +55 %,
/// 1 MiB +8 %). On a link to another host the bandwidth-delay product decides
/// what the buffer must hold, and the kernel's autotuning (up to
/// `net.ipv4.tcp_wmem`'s maximum) follows it where a fixed size would cap it.
pub const DEFAULT_SOCKET_SEND_BUFFER: u32 = 512 << 10;

/// The range `socket_send_buffer` may take besides 0.
pub const SOCKET_SEND_BUFFER_RANGE: std::ops::RangeInclusive<u32> = 4096..=(64 << 20);

/// Defaults shared by the file format and the embedded default.
mod defaults {
    pub const MAX_MESSAGE_SIZE: u32 = 4 << 20;
    pub const SESSION_QUEUE_DEPTH: u32 = 65536;
    pub const SESSION_QUEUE_BYTES: u64 = 64 << 20;
    pub const ASYNC_SENDS_PER_SESSION: u32 = 4096;
    pub const HEARTBEAT_INTERVAL_MS: u64 = 250;
    pub const DEAD_PEER_TIMEOUT_MS: u64 = 3000;
    pub const INITIAL_BACKOFF_MS: u64 = 20;
    pub const RESUME_TIMEOUT_MS: u64 = 10_000;
    pub const MAX_BACKOFF_MS: u64 = 1000;
    pub const CALLBACK_THREADS: usize = 2;
    pub const CONDUITS: std::ops::RangeInclusive<u32> = 0..=31;
}

/// A configuration that was refused: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `MPS_SP`, or `<string>`) the error is in.
    pub origin: String,
    /// 1-based line of the offending text, when it has one.
    pub line: Option<usize>,
    /// What is wrong, in a sentence.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}: line {}: {}", self.origin, l, self.reason),
            None => write!(f, "{}: {}", self.origin, self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

// --- the file format -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    sp: Spanned<String>,
    listen: Option<Spanned<String>>,
    second_listen: Option<Spanned<String>>,
    conduits: Option<Spanned<Vec<u32>>>,
    #[serde(default)]
    peer: Vec<RawPeer>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    heartbeat: RawHeartbeat,
    #[serde(default)]
    reconnect: RawReconnect,
    #[serde(default)]
    callbacks: RawCallbacks,
    #[serde(default)]
    link: RawLink,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    sp: Spanned<String>,
    address: Spanned<String>,
    second_address: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_size: Option<Spanned<u32>>,
    session_queue_depth: Option<Spanned<u32>>,
    session_queue_bytes: Option<Spanned<u64>>,
    async_sends_per_session: Option<Spanned<u32>>,
    socket_send_buffer: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    interval_ms: Option<Spanned<u64>>,
    dead_peer_timeout_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReconnect {
    initial_backoff_ms: Option<Spanned<u64>>,
    max_backoff_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLink {
    resume_timeout_ms: Option<Spanned<u64>>,
    max_protocol_version: Option<Spanned<u64>>,
    confirm: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCallbacks {
    threads: Option<Spanned<u64>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The toml crate's message for a syntax error; for the errors it gives no
/// message (a control character in a comment, for one), the character and
/// its column, so that a refused file always says why.
fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    let m = e.message().trim();
    if !m.is_empty() {
        return m.to_string();
    }
    let Some(span) = e.span() else { return "not valid TOML".into() };
    let mut at = span.start.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..at].chars().count() + 1;
    match text[at..].chars().next() {
        Some(c) => format!("not valid TOML: unexpected character U+{:04X} at column {column}", c as u32),
        None => "not valid TOML: unexpected end of the file".into(),
    }
}

struct Checker<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Checker<'_> {
    fn err<T>(&self, span: std::ops::Range<usize>, reason: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError {
            origin: self.origin.to_string(),
            line: Some(line_of(self.text, span.start)),
            reason: reason.into(),
        })
    }

    fn range<T: PartialOrd + Copy + fmt::Display>(
        &self,
        v: &Option<Spanned<T>>,
        name: &str,
        lo: T,
        hi: T,
        default: T,
    ) -> Result<T, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if *s.get_ref() >= lo && *s.get_ref() <= hi => Ok(*s.get_ref()),
            Some(s) => self.err(s.span(), format!("{name} = {} is outside {lo}..={hi}", s.get_ref())),
        }
    }
}

impl Config {
    /// The embedded default (SPEC 6): `local` and its partner SP of the same
    /// unit, both on Unix-domain sockets in `runtime_dir`, conduits 0 to 31.
    pub fn embedded_default(local: SpId, runtime_dir: &Path) -> Result<Config, ConfigError> {
        if !runtime_dir.is_absolute() {
            return Err(ConfigError {
                origin: "MPS_RUNTIME_DIR".into(),
                line: None,
                reason: format!(
                    "{:?} is not an absolute path (a relative one would depend on the working directory)",
                    runtime_dir.display().to_string()
                ),
            });
        }
        let path_of = |sp: SpId| runtime_dir.join(format!("sp-{}-{}.sock", sp.unit, if sp.sp == 0 { 'A' } else { 'B' }));
        let mut peers = Vec::new();
        if let Some(p) = local.partner() {
            peers.push(Peer { sp: p, address: Address::Unix(path_of(p)), second_address: None });
        }
        let listen = path_of(local);
        if listen.as_os_str().len() > UNIX_PATH_MAX {
            return Err(ConfigError {
                origin: "MPS_RUNTIME_DIR".into(),
                line: None,
                reason: format!(
                    "{} is too long for a Unix-domain socket path (at most {UNIX_PATH_MAX} bytes)",
                    listen.display()
                ),
            });
        }
        Ok(Config {
            local,
            listen: Some(Address::Unix(listen)),
            second_listen: None,
            peers,
            conduits: defaults::CONDUITS.collect(),
            max_message_size: defaults::MAX_MESSAGE_SIZE,
            session_queue_depth: defaults::SESSION_QUEUE_DEPTH,
            session_queue_bytes: defaults::SESSION_QUEUE_BYTES,
            async_sends_per_session: defaults::ASYNC_SENDS_PER_SESSION,
            heartbeat_interval: Duration::from_millis(defaults::HEARTBEAT_INTERVAL_MS),
            dead_peer_timeout: Duration::from_millis(defaults::DEAD_PEER_TIMEOUT_MS),
            reconnect_initial_backoff: Duration::from_millis(defaults::INITIAL_BACKOFF_MS),
            reconnect_max_backoff: Duration::from_millis(defaults::MAX_BACKOFF_MS),
            callback_threads: defaults::CALLBACK_THREADS,
            socket_send_buffer: None,
            resume_timeout: Duration::from_millis(defaults::RESUME_TIMEOUT_MS),
            protocol_version_max: crate::cmi::frame::VERSION_MAX,
            confirm: ConfirmPoint::Accepted,
        })
    }

    /// The runtime directory of the embedded default: `MPS_RUNTIME_DIR` (which
    /// must be absolute: [`Config::embedded_default`] refuses a relative one),
    /// else `$XDG_RUNTIME_DIR/mps` (a relative `XDG_RUNTIME_DIR` is ignored, as
    /// the XDG base directory specification says), else `/tmp/mps-<euid>`.
    pub fn default_runtime_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("MPS_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty() && Path::new(d).is_absolute()) {
            return PathBuf::from(d).join("mps");
        }
        // The effective user: the one that must own the directory (cmi::bind).
        PathBuf::from(format!("/tmp/mps-{}", crate::cmi::stream::effective_uid()))
    }

    /// From the environment: the file named by `MPS_CONFIG`, else the embedded
    /// default for `MPS_SP` (default `0.A`) in [`Config::default_runtime_dir`].
    pub fn from_env() -> Result<Config, ConfigError> {
        if let Some(path) = std::env::var_os("MPS_CONFIG").filter(|p| !p.is_empty()) {
            return Config::from_file(Path::new(&path));
        }
        let local = match std::env::var("MPS_SP") {
            Ok(s) if !s.is_empty() => s.parse::<SpId>().map_err(|reason| ConfigError {
                origin: "MPS_SP".into(),
                line: None,
                reason,
            })?,
            _ => SpId::a(0),
        };
        Config::embedded_default(local, &Config::default_runtime_dir())
    }

    /// Reads and checks a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: None,
            reason: format!("cannot read the configuration file: {e}"),
        })?;
        Config::from_toml(&text, &origin)
    }

    /// Parses and checks configuration text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError {
            origin: origin.to_string(),
            line: e.span().map(|s| line_of(text, s.start)),
            reason: toml_reason(text, &e),
        })?;
        let c = Checker { origin, text };

        let local: SpId = match raw.sp.get_ref().parse() {
            Ok(id) => id,
            Err(e) => return c.err(raw.sp.span(), e),
        };
        let listen = match &raw.listen {
            None => None,
            Some(s) => match s.get_ref().parse::<Address>() {
                Ok(a) => Some(a),
                Err(e) => return c.err(s.span(), e),
            },
        };
        let second_listen = match &raw.second_listen {
            None => None,
            Some(s) => match s.get_ref().parse::<Address>() {
                Ok(a) if listen.as_ref().is_some_and(|l| l.same_endpoint(&a)) => return c.err(s.span(), "second_listen is the same address as listen"),
                Ok(_) if listen.is_none() => return c.err(s.span(), "second_listen without listen: name the first listening address first"),
                Ok(a) => Some(a),
                Err(e) => return c.err(s.span(), e),
            },
        };
        let own = |a: &Address| listen.as_ref().is_some_and(|l| l.same_endpoint(a)) || second_listen.as_ref().is_some_and(|l| l.same_endpoint(a));
        let mut peers: Vec<Peer> = Vec::new();
        for p in &raw.peer {
            let sp: SpId = match p.sp.get_ref().parse() {
                Ok(id) => id,
                Err(e) => return c.err(p.sp.span(), e),
            };
            if sp == local {
                return c.err(p.sp.span(), format!("peer {sp} is this SP itself (sp = \"{local}\")"));
            }
            if peers.iter().any(|q| q.sp == sp) {
                return c.err(p.sp.span(), format!("peer {sp} is listed twice"));
            }
            let address = match p.address.get_ref().parse::<Address>() {
                Ok(a) => a,
                Err(e) => return c.err(p.address.span(), e),
            };
            if matches!(address, Address::Tcp(ref a) if tcp_port(a) == Some(0)) {
                return c.err(p.address.span(), "a peer's tcp: address needs a real port, not 0");
            }
            if own(&address) {
                return c.err(p.address.span(), format!("peer {sp}'s address {address} is this SP's own listen address"));
            }
            let taken = |a: &Address| peers.iter().find(|q| q.address.same_endpoint(a) || q.second_address.as_ref().is_some_and(|b| b.same_endpoint(a))).map(|q| q.sp);
            if let Some(q) = taken(&address) {
                return c.err(p.address.span(), format!("peer {sp}'s address {address} is also peer {q}'s address"));
            }
            let second_address = match &p.second_address {
                None => None,
                Some(s) => {
                    let a = match s.get_ref().parse::<Address>() {
                        Ok(a) => a,
                        Err(e) => return c.err(s.span(), e),
                    };
                    if matches!(a, Address::Tcp(ref t) if tcp_port(t) == Some(0)) {
                        return c.err(s.span(), "a peer's tcp: address needs a real port, not 0");
                    }
                    if a.same_endpoint(&address) {
                        return c.err(s.span(), format!("peer {sp}'s second_address is its address {address} again: a second path needs another address"));
                    }
                    if own(&a) {
                        return c.err(s.span(), format!("peer {sp}'s second_address {a} is this SP's own listen address"));
                    }
                    if let Some(q) = taken(&a) {
                        return c.err(s.span(), format!("peer {sp}'s second_address {a} is also peer {q}'s address"));
                    }
                    Some(a)
                }
            };
            peers.push(Peer { sp, address, second_address });
        }
        // The lower id dials (src/cmi): an SP with lower-id peers accepts
        // their connections, and cannot without a listening address.
        let dialers: Vec<String> = peers.iter().filter(|p| p.sp < local).map(|p| p.sp.to_string()).collect();
        if listen.is_none() && !dialers.is_empty() {
            return c.err(
                raw.sp.span(),
                format!(
                    "SP {local} has no listen address, but peer(s) {} have a lower id and so dial it (the lower id dials): add listen = \"unix:...\" or \"tcp:...\"",
                    dialers.join(", ")
                ),
            );
        }
        let conduits: BTreeSet<u32> = match &raw.conduits {
            None => defaults::CONDUITS.collect(),
            Some(s) if s.get_ref().is_empty() => return c.err(s.span(), "conduits is empty: no session could be opened"),
            Some(s) if s.get_ref().len() > 4096 => return c.err(s.span(), "more than 4096 conduits"),
            Some(s) => s.get_ref().iter().copied().collect(),
        };
        let l = &raw.limits;
        let max_message_size =
            c.range(&l.max_message_size, "max_message_size", 1, MAX_MESSAGE_SIZE_CEILING, defaults::MAX_MESSAGE_SIZE)?;
        let session_queue_depth =
            c.range(&l.session_queue_depth, "session_queue_depth", 1, 1_000_000, defaults::SESSION_QUEUE_DEPTH)?;
        let session_queue_bytes = c.range(
            &l.session_queue_bytes,
            "session_queue_bytes",
            1024,
            16 << 30,
            defaults::SESSION_QUEUE_BYTES,
        )?;
        if session_queue_bytes < u64::from(max_message_size) {
            let span = l.session_queue_bytes.as_ref().map(|s| s.span()).or(l.max_message_size.as_ref().map(|s| s.span())).unwrap_or(0..0);
            return c.err(
                span,
                format!(
                    "session_queue_bytes ({session_queue_bytes}) is less than max_message_size ({max_message_size}): \
                     a message that large could never be queued (set session_queue_bytes at least {max_message_size})"
                ),
            );
        }
        let async_sends_per_session = c.range(
            &l.async_sends_per_session,
            "async_sends_per_session",
            1,
            1_000_000,
            defaults::ASYNC_SENDS_PER_SESSION,
        )?;
        let socket_send_buffer = match &l.socket_send_buffer {
            None => None,
            Some(v) if *v.get_ref() == 0 || SOCKET_SEND_BUFFER_RANGE.contains(v.get_ref()) => Some(*v.get_ref()),
            Some(v) => {
                return c.err(
                    v.span(),
                    format!(
                        "socket_send_buffer = {} is neither 0 (the kernel's sizing) nor in {}..={}",
                        v.get_ref(),
                        SOCKET_SEND_BUFFER_RANGE.start(),
                        SOCKET_SEND_BUFFER_RANGE.end()
                    ),
                )
            }
        };
        let h = &raw.heartbeat;
        let interval = c.range(&h.interval_ms, "interval_ms", 10, 60_000, defaults::HEARTBEAT_INTERVAL_MS)?;
        let dead = c.range(&h.dead_peer_timeout_ms, "dead_peer_timeout_ms", 20, 600_000, defaults::DEAD_PEER_TIMEOUT_MS)?;
        if dead < 2 * interval {
            let span = h.dead_peer_timeout_ms.as_ref().or(h.interval_ms.as_ref()).map(|s| s.span()).unwrap_or(0..0);
            return c.err(span, format!("dead_peer_timeout_ms ({dead}) must be at least twice interval_ms ({interval})"));
        }
        let r = &raw.reconnect;
        let initial = c.range(&r.initial_backoff_ms, "initial_backoff_ms", 1, 60_000, defaults::INITIAL_BACKOFF_MS)?;
        let max = c.range(&r.max_backoff_ms, "max_backoff_ms", 1, 600_000, defaults::MAX_BACKOFF_MS)?;
        if max < initial {
            let span = r.max_backoff_ms.as_ref().map(|s| s.span()).unwrap_or(0..0);
            return c.err(span, format!("max_backoff_ms ({max}) is less than initial_backoff_ms ({initial})"));
        }
        let threads = c.range(&raw.callbacks.threads, "threads", 1, 64, defaults::CALLBACK_THREADS as u64)? as usize;
        let resume = c.range(&raw.link.resume_timeout_ms, "resume_timeout_ms", 0, 3_600_000, defaults::RESUME_TIMEOUT_MS)?;
        let newest = crate::cmi::frame::VERSION_MAX as u64;
        let protocol_version_max =
            c.range(&raw.link.max_protocol_version, "max_protocol_version", crate::cmi::frame::VERSION_MIN as u64, newest, newest)? as u16;
        let confirm = match &raw.link.confirm {
            None => ConfirmPoint::Accepted,
            Some(v) if v.get_ref() == "accepted" => ConfirmPoint::Accepted,
            Some(v) if v.get_ref() == "delivered" => ConfirmPoint::Delivered,
            Some(v) => {
                return c.err(
                    v.span(),
                    format!(
                        "confirm = {:?} is neither \"accepted\" (confirm when the message is in the target's session: the default) \
                         nor \"delivered\" (confirm once the client has it: its callback returned, or its receive handed it over)",
                        v.get_ref()
                    ),
                )
            }
        };

        Ok(Config {
            local,
            listen,
            second_listen,
            peers,
            conduits,
            max_message_size,
            session_queue_depth,
            session_queue_bytes,
            async_sends_per_session,
            heartbeat_interval: Duration::from_millis(interval),
            dead_peer_timeout: Duration::from_millis(dead),
            reconnect_initial_backoff: Duration::from_millis(initial),
            reconnect_max_backoff: Duration::from_millis(max),
            callback_threads: threads,
            socket_send_buffer,
            resume_timeout: Duration::from_millis(resume),
            protocol_version_max,
            confirm,
        })
    }

    /// The configured peer with this id, if any.
    pub fn peer(&self, sp: SpId) -> Option<&Peer> {
        self.peers.iter().find(|p| p.sp == sp)
    }

    /// The other SP of this SP's storage unit, when it is configured.
    pub fn unit_partner(&self) -> Option<SpId> {
        self.local.partner().filter(|p| self.peer(*p).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
sp = "1.A"
listen = "tcp:127.0.0.1:7001"
conduits = [0, 5]

[[peer]]
sp = "1.B"
address = "unix:/run/mps/1.B.sock"

[[peer]]
sp = "2.A"
address = "tcp:10.0.0.2:7001"

[limits]
max_message_size = 65536

[heartbeat]
interval_ms = 100
dead_peer_timeout_ms = 1000
"#;

    #[test]
    fn a_toml_error_without_a_message_still_gets_a_reason() {
        // Found by the config fuzz target: toml reports a control character
        // in a comment with an empty message, and the error said nothing.
        let e = Config::from_toml("sp = \"0.A\"\n# a\u{1}b\n", "ctl.toml").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("U+0001") && e.reason.contains("column 4"), "{e}");
    }

    #[test]
    fn reads_a_complete_file() {
        let c = Config::from_toml(GOOD, "good.toml").unwrap();
        assert_eq!(c.local, SpId::a(1));
        assert_eq!(c.listen, Some(Address::Tcp("127.0.0.1:7001".into())));
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.peers[0].address, Address::Unix("/run/mps/1.B.sock".into()));
        assert_eq!(c.conduits.iter().copied().collect::<Vec<_>>(), vec![0, 5]);
        assert_eq!(c.max_message_size, 65536);
        assert_eq!(c.session_queue_depth, 65536);
        assert_eq!(c.session_queue_bytes, 64 << 20);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(c.unit_partner(), Some(SpId::b(1)));
        assert_eq!(c.socket_send_buffer, None, "left out: libmps's default by transport");
    }

    #[test]
    fn the_shipped_example_file_is_valid() {
        let text = include_str!("../examples/mps-two-units.toml");
        let c = Config::from_toml(text, "examples/mps-two-units.toml").unwrap();
        assert_eq!(c.local, SpId::a(0));
        assert_eq!(c.peers.iter().map(|p| p.sp).collect::<Vec<_>>(), vec![SpId::b(0), SpId::a(1), SpId::b(1)]);
        assert_eq!(c.max_message_size, 4 << 20);
        assert_eq!(c.callback_threads, 2);
        assert_eq!(c.peers[1].second_address, Some(Address::Tcp("198.51.100.10:7001".into())));
        assert_eq!(c.resume_timeout, std::time::Duration::from_millis(10_000));
        // Its commented-out send buffer line, switched on, is valid too.
        let on = text.replace("# socket_send_buffer = 524288", "socket_send_buffer = 524288");
        assert_ne!(on, text, "the example should show socket_send_buffer");
        assert_eq!(Config::from_toml(&on, "example").unwrap().socket_send_buffer, Some(512 << 10));
        // Its commented-out confirmation point, as shown and switched to the other one.
        assert_eq!(c.confirm, ConfirmPoint::Accepted);
        let shown = text.replace("# confirm = \"accepted\"", "confirm = \"accepted\"");
        assert_ne!(shown, text, "the example should show link.confirm");
        assert_eq!(Config::from_toml(&shown, "example").unwrap().confirm, ConfirmPoint::Accepted);
        let other = text.replace("# confirm = \"accepted\"", "confirm = \"delivered\"");
        assert_eq!(Config::from_toml(&other, "example").unwrap().confirm, ConfirmPoint::Delivered);
    }

    #[test]
    fn link_confirm_is_accepted_or_delivered() {
        let with = |v: &str| Config::from_toml(&format!("sp = \"0.A\"\n[link]\nconfirm = {v}\n"), "t.toml");
        assert_eq!(Config::from_toml("sp = \"0.A\"\n", "t").unwrap().confirm, ConfirmPoint::Accepted, "the default");
        assert_eq!(Config::embedded_default(SpId::a(0), Path::new("/tmp/rt")).unwrap().confirm, ConfirmPoint::Accepted);
        assert_eq!(with("\"accepted\"").unwrap().confirm, ConfirmPoint::Accepted);
        assert_eq!(with("\"delivered\"").unwrap().confirm, ConfirmPoint::Delivered);
        assert_eq!(ConfirmPoint::Delivered.as_str(), "delivered");
        for bad in ["\"Delivered\"", "\"received\"", "\"\"", "\"accepted \""] {
            let e = with(bad).expect_err(bad);
            assert_eq!(e.line, Some(3), "{bad}: {e}");
            assert!(e.reason.starts_with("confirm = ") && e.reason.contains("\"accepted\"") && e.reason.contains("\"delivered\""), "{bad}: {e}");
        }
        // Not a string at all: refused by the parser, on its line.
        let e = with("true").expect_err("a boolean");
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn socket_send_buffer_is_zero_or_in_range() {
        let with = |v: &str| Config::from_toml(&format!("sp = \"0.A\"\n[limits]\nsocket_send_buffer = {v}\n"), "t.toml");
        assert_eq!(with("0").unwrap().socket_send_buffer, Some(0));
        assert_eq!(with("4096").unwrap().socket_send_buffer, Some(4096));
        assert_eq!(with("67108864").unwrap().socket_send_buffer, Some(64 << 20));
        for bad in ["1", "4095", "67108865"] {
            let e = with(bad).expect_err(bad);
            assert_eq!(e.line, Some(3), "{e}");
            assert!(e.reason.contains("socket_send_buffer"), "{e}");
        }
        assert!(with("-1").is_err());
    }

    fn refused(text: &str) -> ConfigError {
        Config::from_toml(text, "bad.toml").expect_err("the file was accepted")
    }

    #[test]
    fn names_the_line_of_a_syntax_error() {
        let e = refused("sp = \"0.A\"\n\nlisten = = 3\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().starts_with("bad.toml: line 3:"), "{e}");
    }

    #[test]
    fn names_the_line_of_a_bad_value() {
        let e = refused("sp = \"0.A\"\n[[peer]]\nsp = \"0.C\"\naddress = \"unix:/x\"\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.reason.contains("A or B"), "{e}");
        let e = refused("sp = \"0.A\"\n[[peer]]\nsp = \"0.B\"\naddress = \"smoke:/x\"\n");
        assert_eq!(e.line, Some(4), "{e}");
        let e = refused("sp = \"0.A\"\n[limits]\nmax_message_size = 0\n");
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn refuses_unknown_keys_and_missing_sp() {
        let e = refused("sp = \"0.A\"\nlisten = \"unix:/a\"\nlisen = 1\n");
        assert_eq!(e.line, Some(3), "{e}");
        let e = refused("listen = \"unix:/a\"\n");
        assert!(e.reason.contains("sp"), "{e}");
    }

    #[test]
    fn refuses_inconsistent_values() {
        assert!(refused("sp = \"0.A\"\n[[peer]]\nsp = \"0.A\"\naddress = \"unix:/x\"\n").reason.contains("itself"));
        assert!(refused("sp = \"0.A\"\n[heartbeat]\ninterval_ms = 100\ndead_peer_timeout_ms = 150\n").reason.contains("twice"));
        assert!(refused("sp = \"0.A\"\nconduits = []\n").reason.contains("empty"));
        let long = format!("sp = \"0.A\"\nlisten = \"unix:/{}\"\n", "x".repeat(200));
        assert!(refused(&long).reason.contains("longer"));
    }

    #[test]
    fn embedded_default_pairs_the_unit() {
        let c = Config::embedded_default(SpId::b(3), Path::new("/tmp/rt")).unwrap();
        assert_eq!(c.listen, Some(Address::Unix("/tmp/rt/sp-3-B.sock".into())));
        assert_eq!(c.peers, vec![Peer { sp: SpId::a(3), address: Address::Unix("/tmp/rt/sp-3-A.sock".into()), second_address: None }]);
        assert_eq!(c.conduits.len(), 32);
    }
}

/// Issue 8, item 15: the configuration checks that were missing. Each test
/// failed on the code before its check existed.
#[cfg(test)]
mod checks {
    use super::*;

    fn refused(text: &str) -> ConfigError {
        Config::from_toml(text, "bad.toml").expect_err("the file was accepted")
    }

    #[test]
    fn session_queue_bytes_must_hold_one_largest_message() {
        // Named on the session_queue_bytes line when it is given...
        let e = refused("sp = \"0.A\"\n[limits]\nmax_message_size = 65536\nsession_queue_bytes = 4096\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.reason.contains("session_queue_bytes") && e.reason.contains("max_message_size"), "{e}");
        // ...and on max_message_size's when only that one is (default queue bytes: 64 MiB).
        let e = refused("sp = \"0.A\"\n[limits]\nmax_message_size = 134217728\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.reason.contains("session_queue_bytes"), "{e}");
        // One message exactly the size of the queue fits.
        let c = Config::from_toml("sp = \"0.A\"\n[limits]\nmax_message_size = 4096\nsession_queue_bytes = 4096\n", "t").unwrap();
        assert_eq!((c.max_message_size, c.session_queue_bytes), (4096, 4096));
    }

    #[test]
    fn a_relative_runtime_dir_is_refused() {
        let e = Config::embedded_default(SpId::a(0), Path::new("run/mps")).expect_err("relative accepted");
        assert_eq!(e.origin, "MPS_RUNTIME_DIR", "{e}");
        assert!(e.reason.contains("absolute"), "{e}");
        assert!(Config::embedded_default(SpId::a(0), Path::new("")).is_err());
        assert!(Config::embedded_default(SpId::a(0), Path::new("/run/mps")).is_ok());
    }

    #[test]
    fn a_peer_port_of_zero_is_refused_in_every_spelling() {
        let peer = |addr: &str| format!("sp = \"0.A\"\n[[peer]]\nsp = \"0.B\"\naddress = \"{addr}\"\n");
        for bad in ["tcp:127.0.0.1:0", "tcp:127.0.0.1:00", "tcp:127.0.0.1:000", "tcp:[::1]:0", "tcp:[::1]:00", "tcp:host:+0"] {
            let e = refused(&peer(bad));
            assert_eq!(e.line, Some(4), "{bad}: {e}");
        }
        // Not a number at all, or a sign, or an unbracketed IPv6 host.
        for bad in ["tcp:h:+7001", "tcp:h:-1", "tcp:h: 7001", "tcp:h:", "tcp:h:65536", "tcp:::1:7001"] {
            assert!(Config::from_toml(&peer(bad), "t").is_err(), "{bad} was accepted");
        }
        for good in ["tcp:127.0.0.1:7001", "tcp:[::1]:7001", "tcp:h:07001"] {
            assert!(Config::from_toml(&peer(good), "t").is_ok(), "{good} was refused");
        }
        // Listening on port 0 (any port) stays allowed, in any spelling.
        let c = Config::from_toml("sp = \"0.A\"\nlisten = \"tcp:127.0.0.1:00\"\n", "t").unwrap();
        assert!(matches!(c.listen, Some(Address::Tcp(_))));
    }

    #[test]
    fn a_file_without_listen_is_refused_when_lower_ids_must_dial_it() {
        // 0.B is dialed by 0.A (the lower id dials) and 1.A by both: they need `listen`.
        let e = refused("sp = \"0.B\"\n[[peer]]\nsp = \"0.A\"\naddress = \"unix:/run/a.sock\"\n");
        assert!(e.reason.contains("listen") && e.reason.contains("0.A"), "{e}");
        let e = refused(
            "sp = \"1.A\"\n[[peer]]\nsp = \"0.A\"\naddress = \"unix:/run/a.sock\"\n\
             [[peer]]\nsp = \"0.B\"\naddress = \"unix:/run/b.sock\"\n[[peer]]\nsp = \"2.A\"\naddress = \"unix:/run/c.sock\"\n",
        );
        assert!(e.reason.contains("0.A") && e.reason.contains("0.B") && !e.reason.contains("2.A"), "{e}");
        assert_eq!(e.line, Some(1), "named on the sp line: {e}");
        // The lowest id only dials: no listen needed.
        assert!(Config::from_toml("sp = \"0.A\"\n[[peer]]\nsp = \"0.B\"\naddress = \"unix:/run/b.sock\"\n", "t").is_ok());
    }

    #[test]
    fn duplicate_addresses_are_refused() {
        let e = refused(
            "sp = \"0.A\"\nlisten = \"unix:/run/a.sock\"\n[[peer]]\nsp = \"0.B\"\naddress = \"unix:/run/b.sock\"\n\
             [[peer]]\nsp = \"1.A\"\naddress = \"unix:/run//b.sock\"\n",
        );
        assert_eq!(e.line, Some(8), "{e}");
        assert!(e.reason.contains("0.B"), "{e}");
        let e = refused("sp = \"0.A\"\nlisten = \"unix:/run/a.sock\"\n[[peer]]\nsp = \"0.B\"\naddress = \"unix:/run/a.sock\"\n");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.reason.contains("listen"), "{e}");
        let e = refused(
            "sp = \"0.A\"\n[[peer]]\nsp = \"0.B\"\naddress = \"tcp:Host:7001\"\n[[peer]]\nsp = \"1.A\"\naddress = \"tcp:host:07001\"\n",
        );
        assert_eq!(e.line, Some(7), "{e}");
        let e = refused("sp = \"0.A\"\nlisten = \"tcp:10.0.0.1:7001\"\n[[peer]]\nsp = \"0.B\"\naddress = \"tcp:10.0.0.1:7001\"\n");
        assert_eq!(e.line, Some(5), "{e}");
        let e = refused("sp = \"0.A\"\n[[peer]]\nsp = \"0.B\"\naddress = \"inproc:x\"\n[[peer]]\nsp = \"1.A\"\naddress = \"inproc:x\"\n");
        assert_eq!(e.line, Some(7), "{e}");
        // Different ports of one host are different addresses.
        assert!(Config::from_toml(
            "sp = \"0.A\"\nlisten = \"tcp:10.0.0.1:7001\"\n[[peer]]\nsp = \"0.B\"\naddress = \"tcp:10.0.0.1:7002\"\n",
            "t"
        )
        .is_ok());
    }

    #[test]
    fn two_paths_are_checked() {
        let ok = Config::from_toml("sp = \"0.B\"\nlisten = \"unix:/a/b\"\nsecond_listen = \"tcp:127.0.0.1:0\"\n[[peer]]\nsp = \"1.A\"\naddress = \"unix:/x\"\nsecond_address = \"tcp:10.0.0.1:7\"\n", "t").unwrap();
        assert_eq!(ok.second_listen, Some(Address::Tcp("127.0.0.1:0".into())));
        assert_eq!(ok.peers[0].second_address, Some(Address::Tcp("10.0.0.1:7".into())));
        assert!(refused("sp = \"0.A\"\n[[peer]]\nsp = \"0.B\"\naddress = \"unix:/x\"\nsecond_address = \"unix:/x\"\n").reason.contains("another address"));
        assert!(refused("sp = \"0.A\"\nsecond_listen = \"unix:/y\"\n").reason.contains("without listen"));
        assert!(refused("sp = \"0.A\"\nlisten = \"unix:/y\"\nsecond_listen = \"unix:/y\"\n").reason.contains("same address"));
        assert!(refused("sp = \"0.A\"\nlisten = \"unix:/y\"\n[[peer]]\nsp = \"0.B\"\naddress = \"unix:/x\"\nsecond_address = \"tcp:1.2.3.4:0\"\n").reason.contains("real port"));
        assert!(refused("sp = \"0.A\"\n[link]\nresume_timeout_ms = 3600001\n").reason.contains("resume_timeout_ms"));
        assert!(refused("sp = \"0.A\"\n[link]\nmax_protocol_version = 3\n").reason.contains("max_protocol_version"));
    }
}
