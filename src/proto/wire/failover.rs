//! DHCP failover messages (draft-ietf-dhc-failover-12 §6, as spoken by ISC dhcpd 4.x, plus the
//! [MS-DHCPF] options 30–41): a TCP deframer, a borrowed view, an in-place writer and an owned
//! form for tests and tools. Sans-IO: the shell feeds received bytes in and writes ours out.
//!
//! # Wire format (draft §6.1, §6.2; all integers big-endian)
//!
//! ```text
//!  0      2      3        4        8        12                payoff           length
//!  | len  | type | payoff | time   | xid    | additional hdr   | options ...    |
//!  option: | code: u16 | len: u16 (value bytes) | value |
//! ```
//!
//! `len` counts the whole message, itself included; it is the TCP framing. The payload offset
//! is where the options start: ISC sends 12; Windows sends 8 although its header is 12 bytes
//! (Wireshark), so **8 is read as 12**; any other value must satisfy 12 <= payoff <= len.
//!
//! # The parse contract
//!
//! [`FailoverMessage::parse`] (and the [`Deframer`], which calls it on each complete frame) is
//! the only fallible step. It accepts a message iff: the buffer is exactly `len` bytes, `len >=
//! 12`, the type is 1..=12 or 128..=255 (draft §6.1: 0–127 must be understood, so an unknown
//! one there is [`FrameError::UnknownMessageType`]; 128–255 decode as `MessageType::Unknown`
//! and the caller ignores them), the payload offset is 8 or in 12..=len, the option area holds
//! whole options only (else `OptionOverrun`), and every draft-12 option (codes 1–29) has a
//! length its shape allows (`BadOptionLength`, see `options::TABLE`). Unknown codes, repeated
//! codes and the Microsoft options are not judged. After `Ok`, every accessor is infallible
//! and never panics; the MS accessors return `Result` because `parse` did not check them.
//! Nothing here allocates except the owned [`Message`] (tests, tools), and nothing panics on
//! any input.
//!
//! # The deframer
//!
//! [`Deframer`] walks a receive buffer: each call yields a complete message, says it needs more
//! bytes, or fails fatally. It decides fatal framing errors as early as the bytes allow — a bad
//! length from 2 bytes, a bad type from 3, a bad payload offset from 4 — and never reports a
//! prefix of a valid message as anything but "need more". A fatal error means the byte stream
//! has lost framing: the connection must be closed (draft §6.1; ISC does the same).
//!
//! # Message digest (draft §11.1, §12.17; [MS-DHCPF] §2.2, §3.1.5, §5.1)
//!
//! No crypto here. [`FailoverWriter::push_digest_placeholder`] reserves the option with a
//! zeroed digest and returns its [`DigestLocation`]; [`FailoverMessage::digest_input`] yields
//! the bytes to MAC for verification. Covered bytes: the **whole message**, `len` bytes, header
//! included, with the option's code, length and type byte as sent and **only the digest bytes
//! zeroed** (draft §11.1: insert with zeros, compute, overwrite; verify by zeroing and
//! recomputing). The seed ([MS-DHCPF]) only says the digest is HMAC (RFC 2104) with SHA-256 over
//! "the text" using the shared secret as key, present in every message; it names neither the
//! range nor the type byte (Windows uses 2 per Wireshark), so the range above is draft-12's and
//! unverified against Windows. Position: the draft wants it first (§11.1, §12.17) but shows it
//! trailing in §6.3; the writer puts it wherever it is pushed, the view finds the first one.
//! The keyed part (HMAC-SHA256, type 2, pushed first; any position accepted) lives in the
//! failover endpoint (`crate::proto::failover`, endpoint module). ISC dhcpd 4.4 implements no
//! digest: it never sends one and ignores one it receives (spec note §13).
//!
//! # Where the seed ([MS-DHCPF]) and our spec note (`failover-v4.md`) disagree
//!
//! - Option 37 (Client NAP Status): the seed's §2.2.8 says "OptionLength MUST be 0x04" and
//!   "OptionValue (1 byte)"; the spec note (after Wireshark) says 1. We follow the seed by
//!   accepting its stated length 4 too (big-endian, value must fit a byte) as well as 1.
//! - The digest range and type byte: the seed is silent (see above); the note's "presumably the
//!   whole message with the digest zeroed" is what we expose, marked unverified.
//! - Everything else the codec relies on agrees: option codes 30–41 and their lengths, scope
//!   ids in host byte order (§2.2.1, example §4.1), UTF-16LE + NUL strings, the MS IP-flags and
//!   binding-status values (§3.1.4.2). The payload offset 8 and 1-byte IP-flags of Windows come
//!   from the note (Wireshark); the seed does not describe them.

use std::net::Ipv4Addr;
use std::ops::{Deref, Range};

pub mod options;

pub use options::{
    code, utf16le_string, utf16le_with_nul, BindingStatus, Ddns, Digest, HardwareAddress,
    OptionIter, Options, RejectReason, ScopeIds, ServerState, Transactions,
};

use options::{checked_at_parse, next_option, open_enum, spec};

/// TCP port of the failover protocol (IANA "dhcp-failover", draft §8.2).
pub const PORT: u16 = 647;
/// The fixed header: length, type, payload offset, time, xid.
pub const HEADER_LEN: usize = 12;
/// Draft §6.1 maximum message length; ISC drops the connection above it. The default bound of
/// the [`Deframer`]; give the [`FailoverWriter`] a buffer of this size to stay within it.
pub const MAX_MESSAGE_LEN: usize = 2048;
/// What the 16-bit length field can express: the writer's hard bound.
pub const MAX_ENCODABLE_LEN: usize = u16::MAX as usize;
/// The payload offset we send (and ISC sends).
pub const PAYLOAD_OFFSET: u8 = 12;
/// The payload offset Windows sends; its header is still 12 bytes (spec note §2).
pub const MS_PAYLOAD_OFFSET: u8 = 8;
/// An option's code and length.
pub const OPTION_HEADER_LEN: usize = 4;

const _: () = assert!(HEADER_LEN == PAYLOAD_OFFSET as usize);
const _: () = assert!(MAX_MESSAGE_LEN <= MAX_ENCODABLE_LEN);

// Header field offsets (draft §6.1).
const LENGTH: usize = 0;
const TYPE: usize = 2;
const PAYOFF: usize = 3;
const TIME: usize = 4;
const XID: usize = 8;

open_enum! {
    /// Message types (draft §6.1, §7). Wireshark labels 7 and 9 the other way round; the draft
    /// and ISC use the numbers below.
    pub enum MessageType {
        PoolReq = 1 => "POOLREQ",
        PoolResp = 2 => "POOLRESP",
        BndUpd = 3 => "BNDUPD",
        BndAck = 4 => "BNDACK",
        Connect = 5 => "CONNECT",
        ConnectAck = 6 => "CONNECTACK",
        UpdReqAll = 7 => "UPDREQALL",
        UpdDone = 8 => "UPDDONE",
        UpdReq = 9 => "UPDREQ",
        State = 10 => "STATE",
        Contact = 11 => "CONTACT",
        Disconnect = 12 => "DISCONNECT",
    }
}

impl MessageType {
    /// Draft §6.1: types 0–127 must be understood (an unknown one is fatal); 128–255 are
    /// optional extensions a receiver should ignore.
    pub const fn is_optional_extension(v: u8) -> bool {
        v >= 128
    }
}

/// Why bytes are not a failover message. Every variant except [`FrameError::Truncated`] is
/// fatal for a TCP stream: framing is lost or the peer speaks something we must not guess at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// Fewer bytes than the length field announces (or than the 2-byte length itself). From
    /// [`FailoverMessage::parse`] only; the deframer reports this as "need more".
    Truncated,
    /// More bytes than the length field announces ([`FailoverMessage::parse`] wants exactly one).
    TrailingBytes,
    /// The length field is below the 12-byte header or above the receiver's maximum.
    BadLength { length: u16 },
    /// Payload offset not 8 (Windows) and not within 12..=length.
    BadPayloadOffset { offset: u8 },
    /// An option header or value runs past the end of the message; `at` is where it starts.
    OptionOverrun { at: u16 },
    /// A known option with a length its shape does not allow.
    BadOptionLength { code: u16, len: u16 },
    /// A message type in 0..=127 that draft-12 does not define (must-understand range).
    UnknownMessageType { value: u8 },
}

impl FrameError {
    /// Stable snake_case label for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            FrameError::Truncated => "truncated",
            FrameError::TrailingBytes => "trailing_bytes",
            FrameError::BadLength { .. } => "bad_length",
            FrameError::BadPayloadOffset { .. } => "bad_payload_offset",
            FrameError::OptionOverrun { .. } => "option_overrun",
            FrameError::BadOptionLength { .. } => "bad_option_length",
            FrameError::UnknownMessageType { .. } => "unknown_message_type",
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            FrameError::BadLength { length } => write!(f, "bad message length {length}"),
            FrameError::BadPayloadOffset { offset } => write!(f, "bad payload offset {offset}"),
            FrameError::OptionOverrun { at } => write!(f, "option at byte {at} overruns"),
            FrameError::BadOptionLength { code, len } => {
                write!(
                    f,
                    "option {code} ({}) with length {len}",
                    options::name(code)
                )
            }
            FrameError::UnknownMessageType { value } => write!(f, "unknown message type {value}"),
            other => f.write_str(other.name()),
        }
    }
}

impl std::error::Error for FrameError {}

/// Header facts that can be judged from a prefix of a message.
///
/// `Ok(None)`: not enough bytes to decide yet. `Ok(Some(len))`: the length field (already
/// checked against `12..=max_len`) — the type and payload offset are checked too when `prefix`
/// reaches them, so a prefix that passes is a prefix of a message `parse` may accept.
fn check_header(prefix: &[u8], max_len: usize) -> Result<Option<usize>, FrameError> {
    let Some(&[hi, lo]) = prefix.first_chunk::<2>() else {
        return Ok(None);
    };
    let length = u16::from_be_bytes([hi, lo]);
    let len = usize::from(length);
    if len < HEADER_LEN || len > max_len {
        return Err(FrameError::BadLength { length });
    }
    if let Some(&value) = prefix.get(TYPE) {
        if let MessageType::Unknown(v) = MessageType::from_u8(value) {
            if !MessageType::is_optional_extension(v) {
                return Err(FrameError::UnknownMessageType { value });
            }
        }
    }
    if let Some(&offset) = prefix.get(PAYOFF) {
        effective_payload_offset(offset, len)?;
    }
    Ok(Some(len))
}

/// Where the options start, per the payload offset rule in the module docs.
fn effective_payload_offset(offset: u8, len: usize) -> Result<usize, FrameError> {
    match offset {
        MS_PAYLOAD_OFFSET => Ok(HEADER_LEN),
        o if usize::from(o) >= HEADER_LEN && usize::from(o) <= len => Ok(usize::from(o)),
        _ => Err(FrameError::BadPayloadOffset { offset }),
    }
}

/// Checks every option of the area: whole options, draft-12 shapes.
fn check_options(area: &[u8], area_start: usize) -> Result<(), FrameError> {
    let mut rest = area;
    loop {
        let at = area_start + (area.len() - rest.len());
        match next_option(&mut rest) {
            None => return Ok(()),
            Some(Err(())) => {
                // `at` < the message length, which is a u16.
                let at = u16::try_from(at).unwrap_or(u16::MAX);
                return Err(FrameError::OptionOverrun { at });
            }
            Some(Ok((c, value))) => {
                if checked_at_parse(c) && !spec(c).is_some_and(|s| s.shape.allows(value.len())) {
                    // `value` lies inside a message of at most u16::MAX bytes.
                    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
                    return Err(FrameError::BadOptionLength { code: c, len });
                }
            }
        }
    }
}

/// A validated, borrowed failover message. See the module docs for the contract. Derefs to
/// its [`Options`], so `msg.mclt_s()`, `msg.get(code)` and `msg.iter()` read its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailoverMessage<'a> {
    /// Exactly one message: `buf.len() == length field`.
    buf: &'a [u8],
    message_type: MessageType,
    /// Where the options start (`HEADER_LEN <= options_start <= buf.len()`).
    options_start: usize,
    options: Options<'a>,
}

impl<'a> FailoverMessage<'a> {
    /// Validates one whole message (`buf` must be exactly the length the header announces).
    pub fn parse(buf: &'a [u8]) -> Result<FailoverMessage<'a>, FrameError> {
        let Some(len) = check_header(buf, usize::from(u16::MAX))? else {
            return Err(FrameError::Truncated);
        };
        if buf.len() < len {
            return Err(FrameError::Truncated);
        }
        if buf.len() > len {
            return Err(FrameError::TrailingBytes);
        }
        // `check_header` saw all 12 header bytes (len >= 12), so these are in range.
        let message_type = MessageType::from_u8(buf[TYPE]);
        let options_start = effective_payload_offset(buf[PAYOFF], len)?;
        let area = &buf[options_start..];
        check_options(area, options_start)?;
        Ok(FailoverMessage {
            buf,
            message_type,
            options_start,
            options: Options { area },
        })
    }

    /// The whole message as received.
    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The length field (== `bytes().len()`).
    pub fn length(&self) -> u16 {
        u16::from_be_bytes([self.buf[LENGTH], self.buf[LENGTH + 1]])
    }

    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The payload offset as sent (8 from Windows).
    pub fn payload_offset(&self) -> u8 {
        self.buf[PAYOFF]
    }

    /// Where the options start (8 is read as 12).
    pub fn options_start(&self) -> usize {
        self.options_start
    }

    /// Sender's clock at transmission, seconds since 1970 (unsigned; draft §6.1).
    pub fn time(&self) -> u32 {
        u32::from_be_bytes([
            self.buf[TIME],
            self.buf[TIME + 1],
            self.buf[TIME + 2],
            self.buf[TIME + 3],
        ])
    }

    pub fn xid(&self) -> u32 {
        u32::from_be_bytes([
            self.buf[XID],
            self.buf[XID + 1],
            self.buf[XID + 2],
            self.buf[XID + 3],
        ])
    }

    /// Bytes between the fixed header and the payload offset (reserved; draft §6.1 says skip).
    pub fn additional_header(&self) -> &'a [u8] {
        &self.buf[HEADER_LEN..self.options_start]
    }

    /// All options in wire order.
    pub fn options(&self) -> Options<'a> {
        self.options
    }

    /// Where the first message-digest option sits, if any.
    pub fn digest_location(&self) -> Option<DigestLocation> {
        let mut rest = self.options.area;
        loop {
            let at = self.buf.len() - rest.len();
            let (c, value) = next_option(&mut rest)?.ok()?;
            if c == code::MESSAGE_DIGEST {
                // `parse` checked option 17 has at least its type byte.
                let kind_at = at + OPTION_HEADER_LEN;
                return Some(DigestLocation {
                    option_at: at,
                    kind_at,
                    digest: kind_at + 1..kind_at + value.len(),
                });
            }
        }
    }

    /// The input to verify the message digest (see the module docs for the covered range),
    /// or `None` when the message carries no digest.
    pub fn digest_input(&self) -> Option<DigestInput<'a>> {
        let loc = self.digest_location()?;
        Some(DigestInput {
            kind: self.buf[loc.kind_at],
            head: &self.buf[..loc.digest.start],
            zeroed_len: loc.digest.len(),
            tail: &self.buf[loc.digest.end..],
            received: &self.buf[loc.digest.clone()],
        })
    }
}

impl<'a> Deref for FailoverMessage<'a> {
    type Target = Options<'a>;

    fn deref(&self) -> &Options<'a> {
        &self.options
    }
}

/// Byte positions of a message-digest option inside its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestLocation {
    /// Start of the option (its code).
    pub option_at: usize,
    /// The digest-type byte (1 HMAC-MD5; Windows 2 = HMAC-SHA256).
    pub kind_at: usize,
    /// The digest bytes: zero while computing, then overwritten with the MAC.
    pub digest: Range<usize>,
}

/// What a verifier MACs: `head`, then `zeroed_len` zero bytes, then `tail` — the whole message
/// with only the digest bytes zeroed — and compares the result with `received`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestInput<'a> {
    pub kind: u8,
    pub head: &'a [u8],
    pub zeroed_len: usize,
    pub tail: &'a [u8],
    pub received: &'a [u8],
}

/// One step of deframing, see [`deframe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deframed<'a> {
    /// A complete, valid message; `consumed` bytes of the input belong to it.
    Message {
        message: FailoverMessage<'a>,
        consumed: usize,
    },
    /// The input is a valid prefix; at least `needed` more bytes are required.
    NeedMore { needed: usize },
}

/// Takes one message off the front of `buf`, a TCP receive buffer. Messages longer than
/// `max_len` (at most 65535) are fatal [`FrameError::BadLength`]. A prefix of a valid message
/// is always `NeedMore`, never an error.
pub fn deframe(buf: &[u8], max_len: usize) -> Result<Deframed<'_>, FrameError> {
    let Some(len) = check_header(buf, max_len)? else {
        return Ok(Deframed::NeedMore {
            needed: 2 - buf.len(),
        });
    };
    let Some(frame) = buf.get(..len) else {
        return Ok(Deframed::NeedMore {
            needed: len - buf.len(),
        });
    };
    let message = FailoverMessage::parse(frame)?;
    Ok(Deframed::Message {
        message,
        consumed: len,
    })
}

/// Iterates the messages in a receive buffer (the rustls deframer idea: the buffer stays the
/// shell's; we only report how much of it is consumed).
///
/// Each `next()` yields `Some(Ok(msg))`, `Some(Err(e))` once on a fatal error (then `None`
/// forever: the stream has lost framing, close the connection), or `None` when the rest is an
/// incomplete message ([`Deframer::needed`] says how many bytes are missing at least). The shell
/// then discards [`Deframer::processed`] bytes and keeps the rest for the next read.
#[derive(Clone, Debug)]
pub struct Deframer<'a> {
    buf: &'a [u8],
    /// Bytes of `buf` taken by complete messages; `0 <= processed <= buf.len()`.
    processed: usize,
    max_len: usize,
    /// After a fatal error nothing more is yielded.
    failed: bool,
}

impl<'a> Deframer<'a> {
    /// Deframes with the draft's 2048-byte maximum.
    pub fn new(buf: &'a [u8]) -> Self {
        Self::with_max_len(buf, MAX_MESSAGE_LEN as u16)
    }

    /// Deframes with a different maximum message length (e.g. for a peer that batches more
    /// than fits in 2048 bytes).
    pub fn with_max_len(buf: &'a [u8], max_len: u16) -> Self {
        Deframer {
            buf,
            processed: 0,
            max_len: usize::from(max_len),
            failed: false,
        }
    }

    /// Bytes consumed by the messages yielded so far.
    pub fn processed(&self) -> usize {
        self.processed
    }

    /// The unconsumed tail (an incomplete message, or the bytes at a fatal error).
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.processed..]
    }

    /// At least how many more bytes the pending message needs (0 when one is complete).
    pub fn needed(&self) -> usize {
        match deframe(self.remaining(), self.max_len) {
            Ok(Deframed::NeedMore { needed }) => needed,
            _ => 0,
        }
    }
}

impl<'a> Iterator for Deframer<'a> {
    type Item = Result<FailoverMessage<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match deframe(self.remaining(), self.max_len) {
            Ok(Deframed::Message { message, consumed }) => {
                self.processed += consumed;
                debug_assert!(self.processed <= self.buf.len());
                Some(Ok(message))
            }
            Ok(Deframed::NeedMore { .. }) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Why a message could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuildError {
    /// The buffer (or the 16-bit length field) has no room for it; the message is unchanged.
    NoRoom,
    /// A payload offset that is neither 8 (without additional header bytes) nor 12 + the
    /// number of additional header bytes.
    BadPayloadOffset,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BuildError::NoRoom => "no room for the failover message",
            BuildError::BadPayloadOffset => "payload offset does not match the header bytes",
        })
    }
}

impl std::error::Error for BuildError {}

/// Writes a failover message into a caller's buffer: header first (every header byte written,
/// so a reused buffer leaks nothing), then options in push order, then [`FailoverWriter::finish`]
/// writes the length. No allocation. The buffer is the size bound (capped at 65535, the length
/// field's range): draft peers want at most [`MAX_MESSAGE_LEN`], so size send buffers to that.
#[derive(Debug)]
pub struct FailoverWriter<'b> {
    buf: &'b mut [u8],
    /// min(buf.len(), MAX_ENCODABLE_LEN).
    limit: usize,
    /// Bytes written so far; `HEADER_LEN <= len <= limit`.
    len: usize,
}

impl<'b> FailoverWriter<'b> {
    /// A message with payload offset 12 and no options.
    pub fn new(
        buf: &'b mut [u8],
        message_type: MessageType,
        time: u32,
        xid: u32,
    ) -> Result<Self, BuildError> {
        Self::with_header(buf, message_type, time, xid, PAYLOAD_OFFSET, &[])
    }

    /// A message with an explicit payload offset: 8 (what Windows sends; `additional` must be
    /// empty) or `12 + additional.len()`.
    pub fn with_header(
        buf: &'b mut [u8],
        message_type: MessageType,
        time: u32,
        xid: u32,
        payload_offset: u8,
        additional: &[u8],
    ) -> Result<Self, BuildError> {
        let consistent = if payload_offset == MS_PAYLOAD_OFFSET {
            additional.is_empty()
        } else {
            usize::from(payload_offset) == HEADER_LEN + additional.len()
        };
        if !consistent {
            return Err(BuildError::BadPayloadOffset);
        }
        let limit = buf.len().min(MAX_ENCODABLE_LEN);
        let len = HEADER_LEN + additional.len();
        if len > limit {
            return Err(BuildError::NoRoom);
        }
        buf[LENGTH..TYPE].fill(0);
        buf[TYPE] = message_type.to_u8();
        buf[PAYOFF] = payload_offset;
        buf[TIME..XID].copy_from_slice(&time.to_be_bytes());
        buf[XID..HEADER_LEN].copy_from_slice(&xid.to_be_bytes());
        buf[HEADER_LEN..len].copy_from_slice(additional);
        Ok(FailoverWriter { buf, limit, len })
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: the header is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Value bytes an option pushed now may have (its 4-byte header already subtracted).
    pub fn remaining(&self) -> usize {
        (self.limit - self.len).saturating_sub(OPTION_HEADER_LEN)
    }

    /// Appends one option whose `len` value bytes `fill` writes in place. On `Err` nothing
    /// changed.
    pub fn push_with(
        &mut self,
        code: u16,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), BuildError> {
        if len > self.remaining() {
            return Err(BuildError::NoRoom);
        }
        let at = self.len;
        let value_at = at + OPTION_HEADER_LEN;
        let end = value_at + len;
        self.buf[at..at + 2].copy_from_slice(&code.to_be_bytes());
        // len <= limit <= MAX_ENCODABLE_LEN == u16::MAX.
        self.buf[at + 2..value_at].copy_from_slice(&(len as u16).to_be_bytes());
        fill(&mut self.buf[value_at..end]);
        self.len = end;
        Ok(())
    }

    pub fn push(&mut self, code: u16, value: &[u8]) -> Result<(), BuildError> {
        self.push_with(code, value.len(), |dst| dst.copy_from_slice(value))
    }

    pub fn push_u8(&mut self, code: u16, v: u8) -> Result<(), BuildError> {
        self.push(code, &[v])
    }

    pub fn push_u16(&mut self, code: u16, v: u16) -> Result<(), BuildError> {
        self.push(code, &v.to_be_bytes())
    }

    pub fn push_u32(&mut self, code: u16, v: u32) -> Result<(), BuildError> {
        self.push(code, &v.to_be_bytes())
    }

    pub fn push_ip(&mut self, code: u16, a: Ipv4Addr) -> Result<(), BuildError> {
        self.push(code, &a.octets())
    }

    /// Reserves a message-digest option: type byte `kind`, then `digest_len` zero bytes. After
    /// [`FailoverWriter::finish`], MAC `buf[..len]` (the digest still zero) and write the MAC
    /// into `buf[location.digest]`. Push it first (draft §11.1) unless the peer wants otherwise.
    pub fn push_digest_placeholder(
        &mut self,
        kind: u8,
        digest_len: usize,
    ) -> Result<DigestLocation, BuildError> {
        let option_at = self.len;
        self.push_with(code::MESSAGE_DIGEST, 1 + digest_len, |dst| {
            dst[0] = kind;
            dst[1..].fill(0);
        })?;
        let kind_at = option_at + OPTION_HEADER_LEN;
        Ok(DigestLocation {
            option_at,
            kind_at,
            digest: kind_at + 1..kind_at + 1 + digest_len,
        })
    }

    /// Writes the length field; returns the message length.
    pub fn finish(self) -> usize {
        // len <= limit <= MAX_ENCODABLE_LEN == u16::MAX.
        self.buf[LENGTH..TYPE].copy_from_slice(&(self.len as u16).to_be_bytes());
        self.len
    }
}

/// Owned message, for tests and tools (allocates; not for the hot path). Keeps everything
/// needed to re-encode a received message byte for byte: the raw payload offset, additional
/// header bytes, and every option (unknown and repeated ones included) in wire order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub message_type: MessageType,
    pub time: u32,
    pub xid: u32,
    /// As on the wire: 12 (ISC, us), 8 (Windows), or 12 + `additional_header.len()`.
    pub payload_offset: u8,
    pub additional_header: Vec<u8>,
    pub options: Vec<(u16, Vec<u8>)>,
}

impl Message {
    /// No options, payload offset 12.
    pub fn new(message_type: MessageType, time: u32, xid: u32) -> Message {
        Message {
            message_type,
            time,
            xid,
            payload_offset: PAYLOAD_OFFSET,
            additional_header: Vec::new(),
            options: Vec::new(),
        }
    }

    /// Appends an option (builder style).
    pub fn with(mut self, code: u16, value: impl Into<Vec<u8>>) -> Message {
        self.options.push((code, value.into()));
        self
    }

    pub fn from_view(m: &FailoverMessage<'_>) -> Message {
        Message {
            message_type: m.message_type(),
            time: m.time(),
            xid: m.xid(),
            payload_offset: m.payload_offset(),
            additional_header: m.additional_header().to_vec(),
            options: m.iter().map(|(c, v)| (c, v.to_vec())).collect(),
        }
    }

    /// Parses exactly one message and copies it.
    pub fn decode(bytes: &[u8]) -> Result<Message, FrameError> {
        FailoverMessage::parse(bytes).map(|m| Message::from_view(&m))
    }

    /// The first instance of an option.
    pub fn option(&self, code: u16) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    /// Bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + self.additional_header.len()
            + self
                .options
                .iter()
                .map(|(_, v)| OPTION_HEADER_LEN + v.len())
                .sum::<usize>()
    }

    /// Encodes into `buf` with [`FailoverWriter`]; returns the length.
    pub fn encode_into(&self, buf: &mut [u8]) -> Result<usize, BuildError> {
        let mut w = FailoverWriter::with_header(
            buf,
            self.message_type,
            self.time,
            self.xid,
            self.payload_offset,
            &self.additional_header,
        )?;
        for (c, v) in &self.options {
            w.push(*c, v)?;
        }
        Ok(w.finish())
    }

    /// Appends the encoding to `out`; returns its length. On `Err` `out` is unchanged.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<usize, BuildError> {
        let start = out.len();
        out.resize(start + self.encoded_len().min(MAX_ENCODABLE_LEN), 0);
        match self.encode_into(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                Ok(n)
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STATE as ISC sends it (capture frame 19): NORMAL, STARTUP flag, start time.
    const ISC_STATE: [u8; 30] = [
        0x00, 0x1e, 0x0a, 0x0c, 0x6b, 0x03, 0xf7, 0x21, 0x00, 0x00, 0x00, 0x01, //
        0x00, 0x18, 0x00, 0x01, 0x02, //
        0x00, 0x17, 0x00, 0x01, 0x01, //
        0x00, 0x19, 0x00, 0x04, 0x6b, 0x03, 0xf4, 0xc4,
    ];

    #[test]
    fn state_parses() {
        // Guards the happy path and the typed accessors of a real STATE.
        let m = FailoverMessage::parse(&ISC_STATE).expect("valid");
        assert_eq!(m.message_type(), MessageType::State);
        assert_eq!(m.length(), 30);
        assert_eq!(m.payload_offset(), 12);
        assert_eq!(m.xid(), 1);
        assert_eq!(m.server_state(), Some(ServerState::Normal));
        assert_eq!(m.server_flags(), Some(options::SERVER_FLAG_STARTUP));
        assert_eq!(m.start_time_of_state(), Some(0x6b03_f4c4));
        assert_eq!(m.iter().count(), 3);
        assert!(m.digest_location().is_none());
    }

    #[test]
    fn message_type_table() {
        // Guards the draft numbering (7 = UPDREQALL, 9 = UPDREQ, unlike Wireshark) and the
        // must-understand split at 128.
        assert_eq!(MessageType::from_u8(7), MessageType::UpdReqAll);
        assert_eq!(MessageType::from_u8(9), MessageType::UpdReq);
        for (i, t) in MessageType::KNOWN.iter().enumerate() {
            assert_eq!(usize::from(t.to_u8()), i + 1);
        }
        let mut b = ISC_STATE;
        for v in [0u8, 13, 127] {
            b[TYPE] = v;
            assert_eq!(
                FailoverMessage::parse(&b).unwrap_err(),
                FrameError::UnknownMessageType { value: v }
            );
        }
        for v in [128u8, 255] {
            b[TYPE] = v;
            let m = FailoverMessage::parse(&b).expect("extension types decode");
            assert_eq!(m.message_type(), MessageType::Unknown(v));
        }
    }

    #[test]
    fn length_rules() {
        // Guards the header bounds: below 12, and shorter/longer buffers than announced.
        let mut b = ISC_STATE;
        b[1] = 11;
        assert_eq!(
            FailoverMessage::parse(&b).unwrap_err(),
            FrameError::BadLength { length: 11 }
        );
        assert_eq!(
            FailoverMessage::parse(&ISC_STATE[..29]).unwrap_err(),
            FrameError::Truncated
        );
        let mut long = ISC_STATE.to_vec();
        long.push(0);
        assert_eq!(
            FailoverMessage::parse(&long).unwrap_err(),
            FrameError::TrailingBytes
        );
        assert_eq!(
            FailoverMessage::parse(&[]).unwrap_err(),
            FrameError::Truncated
        );
    }

    #[test]
    fn payload_offset_rules() {
        // Guards 8 → 12 (Windows), 12..=len with additional header bytes, and the rest fatal.
        let mut b = ISC_STATE;
        b[PAYOFF] = MS_PAYLOAD_OFFSET;
        let m = FailoverMessage::parse(&b).expect("8 reads as 12");
        assert_eq!(m.options_start(), 12);
        assert_eq!(m.server_state(), Some(ServerState::Normal));
        for bad in [0u8, 7, 9, 11, 31, 255] {
            b[PAYOFF] = bad;
            assert_eq!(
                FailoverMessage::parse(&b).unwrap_err(),
                FrameError::BadPayloadOffset { offset: bad }
            );
        }
        // Offset == length: no options at all.
        b[PAYOFF] = 30;
        let m = FailoverMessage::parse(&b).expect("empty option area");
        assert_eq!(m.additional_header().len(), 18);
        assert!(m.options().is_empty());
        // Offset 17 skips the first option as additional header bytes.
        b[PAYOFF] = 17;
        let m = FailoverMessage::parse(&b).expect("additional header");
        assert_eq!(m.additional_header(), &ISC_STATE[12..17]);
        assert_eq!(m.server_state(), None);
        assert_eq!(Message::from_view(&m).encode_into(&mut [0; 64]), Ok(30));
    }

    #[test]
    fn option_overrun_and_bad_length() {
        // Guards the option walk: partial headers, values past the end, draft shapes.
        let mut b = ISC_STATE.to_vec();
        b.extend_from_slice(&[0x00, 0x63]);
        b[1] = b.len() as u8;
        assert_eq!(
            FailoverMessage::parse(&b).unwrap_err(),
            FrameError::OptionOverrun { at: 30 }
        );
        let mut b = ISC_STATE.to_vec();
        b[25] = 5; // start-time-of-state claims 5 bytes
        assert_eq!(
            FailoverMessage::parse(&b).unwrap_err(),
            FrameError::OptionOverrun { at: 22 }
        );
        let mut b = ISC_STATE.to_vec();
        b.extend_from_slice(&[0x00, 0x0b, 0x00, 0x01, 0xff]); // HBA of 1 byte
        b[1] = b.len() as u8;
        assert_eq!(
            FailoverMessage::parse(&b).unwrap_err(),
            FrameError::BadOptionLength { code: 11, len: 1 }
        );
        // Unknown and MS codes are not judged by parse.
        let mut b = ISC_STATE.to_vec();
        b.extend_from_slice(&[0x00, 0x21, 0x00, 0x01, 0xff, 0xff, 0xff, 0x00, 0x00]);
        b[1] = b.len() as u8;
        let m = FailoverMessage::parse(&b).expect("MS option not judged");
        assert_eq!(
            m.ms_client_subnet_mask(),
            Err(FrameError::BadOptionLength { code: 33, len: 1 })
        );
        assert_eq!(m.get(0xffff), Some(&[][..]));
    }

    #[test]
    fn deframer_need_more_vs_fatal() {
        // Guards the early fatal checks and that every prefix of a valid message is NeedMore.
        for n in 0..ISC_STATE.len() {
            let d = deframe(&ISC_STATE[..n], MAX_MESSAGE_LEN).expect("prefix");
            assert!(
                matches!(d, Deframed::NeedMore { needed } if needed > 0),
                "{n}"
            );
        }
        assert_eq!(
            deframe(&[0x00, 0x05], MAX_MESSAGE_LEN),
            Err(FrameError::BadLength { length: 5 })
        );
        assert_eq!(
            deframe(&[0x08, 0x01], MAX_MESSAGE_LEN),
            Err(FrameError::BadLength { length: 2049 })
        );
        assert_eq!(
            deframe(&[0x00, 0x20, 0x00], MAX_MESSAGE_LEN),
            Err(FrameError::UnknownMessageType { value: 0 })
        );
        assert_eq!(
            deframe(&[0x00, 0x20, 0x03, 0x21], MAX_MESSAGE_LEN),
            Err(FrameError::BadPayloadOffset { offset: 0x21 })
        );
        let mut two = ISC_STATE.to_vec();
        two.extend_from_slice(&ISC_STATE);
        two.extend_from_slice(&ISC_STATE[..5]);
        let mut d = Deframer::new(&two);
        assert!(d.next().is_some_and(|m| m.is_ok()));
        assert!(d.next().is_some_and(|m| m.is_ok()));
        assert!(d.next().is_none());
        assert_eq!(d.processed(), 60);
        assert_eq!(d.needed(), 25);
        assert_eq!(d.remaining(), &ISC_STATE[..5]);
    }

    #[test]
    fn writer_builds_what_parse_reads_and_clears_dirty_buffers() {
        // Guards the writer: all header bytes written, length filled in by finish, NoRoom
        // leaves the message unchanged, digest placeholder positions.
        let mut buf = [0xAAu8; 64];
        let mut w = FailoverWriter::new(&mut buf, MessageType::State, 0x6b03_f721, 1).unwrap();
        w.push_u8(code::SERVER_STATE, 2).unwrap();
        w.push_u8(code::SERVER_FLAGS, 1).unwrap();
        w.push_u32(code::START_TIME_OF_STATE, 0x6b03_f4c4).unwrap();
        assert_eq!(w.push(code::MESSAGE, &[0; 40]), Err(BuildError::NoRoom));
        let n = w.finish();
        assert_eq!(&buf[..n], &ISC_STATE);

        let mut buf = [0xAAu8; 64];
        let mut w = FailoverWriter::new(&mut buf, MessageType::Contact, 9, 10).unwrap();
        let loc = w.push_digest_placeholder(2, 32).unwrap();
        let n = w.finish();
        assert_eq!(loc.option_at, 12);
        assert_eq!(loc.digest, 17..49);
        let m = FailoverMessage::parse(&buf[..n]).unwrap();
        assert_eq!(m.digest_location(), Some(loc));
        let input = m.digest_input().unwrap();
        assert_eq!(input.kind, 2);
        assert_eq!(input.head.len(), 17);
        assert_eq!(input.zeroed_len, 32);
        assert!(input.tail.is_empty());

        assert_eq!(
            FailoverWriter::with_header(&mut [0; 64], MessageType::Contact, 0, 0, 8, &[1]).err(),
            Some(BuildError::BadPayloadOffset)
        );
        assert_eq!(
            FailoverWriter::new(&mut [0; 11], MessageType::Contact, 0, 0).err(),
            Some(BuildError::NoRoom)
        );
        let mut big = vec![0u8; 70_000];
        let mut w = FailoverWriter::new(&mut big, MessageType::BndUpd, 0, 0).unwrap();
        assert_eq!(w.remaining(), MAX_ENCODABLE_LEN - HEADER_LEN - 4);
        assert!(w.push(code::MESSAGE, &vec![0; 65_520]).is_err());
        assert!(w.push(code::MESSAGE, &vec![0; 65_519]).is_ok());
        assert_eq!(w.finish(), MAX_ENCODABLE_LEN);
        let m = FailoverMessage::parse(&big[..MAX_ENCODABLE_LEN]).expect("parse has no 2048 cap");
        assert_eq!(m.message().map(<[u8]>::len), Some(65_519));
    }

    #[test]
    fn transactions_split_batched_bndupd() {
        // Guards draft §6.3 batching: leading options, then one run per assigned-IP-address.
        let m = Message::new(MessageType::BndUpd, 1, 2)
            .with(code::MESSAGE, b"lead".to_vec())
            .with(code::ASSIGNED_IP_ADDRESS, [10, 0, 0, 1])
            .with(code::BINDING_STATUS, [2])
            .with(code::ASSIGNED_IP_ADDRESS, [10, 0, 0, 2])
            .with(code::BINDING_STATUS, [7])
            .with(code::IP_FLAGS, [0, 1]);
        let mut out = Vec::new();
        m.encode(&mut out).unwrap();
        let v = FailoverMessage::parse(&out).unwrap();
        assert_eq!(v.leading().message(), Some(&b"lead"[..]));
        let tx: Vec<_> = v.transactions().collect();
        assert_eq!(tx.len(), 2);
        assert_eq!(
            tx[0].assigned_ip_address(),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(tx[0].binding_status(), Some(BindingStatus::Active));
        assert_eq!(tx[0].ip_flags(), None);
        assert_eq!(tx[1].binding_status(), Some(BindingStatus::Backup));
        assert_eq!(tx[1].ip_flags(), Some(options::IP_FLAG_RESERVED));
        assert_eq!(v.repeated_code(), Some(code::ASSIGNED_IP_ADDRESS));
        assert_eq!(tx[1].repeated_code(), None);
        assert_eq!(Message::decode(&out), Ok(m));
    }

    #[test]
    fn utf16_helpers() {
        // Guards the Windows string convention (UTF-16LE + NUL) both ways.
        let b = utf16le_with_nul("clnt0");
        assert_eq!(b.len(), 12);
        assert_eq!(utf16le_string(&b).as_deref(), Some("clnt0"));
        assert_eq!(utf16le_string(&[0x41]), None);
    }
}
