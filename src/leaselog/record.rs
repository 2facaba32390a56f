//! The on-disk format: the file header and the binding record.
//!
//! All integers are little-endian and fixed-width; nothing on disk is a `usize`. Every file in
//! the log directory (`seg-<16 hex digits>.log` segments and `snap-<16 hex digits>.log`
//! snapshots) starts with the same 32-byte header and is followed by records, each at an offset
//! that is a multiple of 8.
//!
//! ```text
//! File header (32 bytes)
//! offset size field
//!      0    8 magic          b"RLLOG\0\0\0"
//!      8    2 version        u16 = 1
//!     10    2 header_len     u16 = 32 (records start here)
//!     12    1 kind           u8: 1 = log segment, 2 = snapshot
//!     13    3 reserved       zero
//!     16    8 number         u64: the file's number, also in its name
//!     24    4 reserved       zero
//!     28    4 crc32c         u32: CRC32C (Castagnoli) of bytes 0..28
//!
//! Record (72 + client_len + hostname_len bytes, zero-padded to a multiple of 8)
//! offset size field
//!      0    4 len                u32: the whole record, padding included (72..=584, multiple
//!                                of 8); 0 = no more records in this file
//!      4    4 crc32c             u32: CRC32C of bytes 8..len (everything after this field,
//!                                padding included)
//!      8    8 seq                u64: order of changes, assigned by the lease table; for each
//!                                address (each relationship name) the highest seq wins
//!     16    4 ip                 [u8; 4]: the address, in network order (a.b.c.d)
//!     20    1 state              u8: 1 Offered, 2 Bound, 3 Declined, 4 Released, 5 Expired;
//!                                0x80 = a relationship record (below)
//!     21    1 flags              u8: for the caller (failover), stored as given
//!     22    2 client_len         u16: 0..=256
//!     24    2 hostname_len       u16: 0..=255
//!     26    6 reserved           zero
//!     32    8 expires_s          u64: lease end told to the client, Unix seconds
//!     40    8 potential_expiry_s u64: failover potential expiration time
//!     48    8 partner_expiry_s   u64: expiration acknowledged by the failover partner
//!     56    8 cltt_s             u64: client last transaction time
//!     64    8 state_since_s      u64: start time of the state
//!     72    - client             client_len bytes: the tagged `ClientKey` bytes
//!      -    - hostname           hostname_len bytes
//!      -  0-7 padding            zero, up to a multiple of 8
//!
//! Relationship record: the same record, framing and checks, with state 0x80. It keeps a
//! failover relationship's endpoint state (MS-DHCPF 3.1.3) across restarts; fields that differ:
//!     16    4 ip                 zero
//!     20    1 state              0x80
//!     21    1 failover_state     u8: the failover state code, raw (stored and returned as is)
//!     22    2 name_len           u16: 1..=256, the relationship name's length (client_len)
//!     24    2 hostname_len       u16: 0
//!     32    8 entered_at_s       u64: when the state was entered, Unix seconds
//!     40    8 mclt_s             u64: the MCLT in force (a secondary's adopted one), <= u32::MAX
//!     48   24 zero
//!     72    - name               name_len bytes (in the client field), as given
//! ```
//!
//! Reserved bytes and padding are written as zero and a record whose reserved bytes or padding
//! are not zero is rejected, like one whose CRC does not match: a stricter check makes it less
//! likely that stale bytes pass for a record when replay scans past damage. The same goes for
//! the fields a relationship record does not use.
//!
//! Both kinds go through one encoder and one decoder ([`RecordRef`]): the frame (length, CRC,
//! field lengths, reserved bytes, padding) is checked once, then the state byte says which kind
//! the record is.

use std::net::Ipv4Addr;

use crate::proto::lease::{LeaseState, MAX_CLIENT_KEY_LEN};

/// Magic bytes at the start of every log file.
pub const MAGIC: [u8; 8] = *b"RLLOG\0\0\0";
/// Format version written in the header; files with another version are refused.
pub const VERSION: u16 = 1;
/// Length of the file header; records start at this offset.
pub const HEADER_LEN: usize = 32;
/// Length of a record without its client, hostname and padding.
pub const RECORD_FIXED_LEN: usize = 72;
/// Longest client key in a record (the lease table's bound).
pub const MAX_CLIENT_LEN: usize = MAX_CLIENT_KEY_LEN;
/// Longest hostname in a record (DHCP option 12 carries at most 255 bytes).
pub const MAX_HOSTNAME_LEN: usize = 255;
/// Longest record, padding included.
pub const MAX_RECORD_LEN: usize = padded(RECORD_FIXED_LEN + MAX_CLIENT_LEN + MAX_HOSTNAME_LEN);
/// Records start at multiples of this.
pub const ALIGN: usize = 8;

const _: () = assert!(HEADER_LEN % ALIGN == 0);
const _: () = assert!(RECORD_FIXED_LEN % ALIGN == 0);
const _: () = assert!(MAX_RECORD_LEN == 584);
const _: () = assert!(MAX_RECORD_LEN <= u32::MAX as usize);

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A segment that one writer appends to.
    Log = 1,
    /// A snapshot written by compaction: the whole table at one point.
    Snapshot = 2,
}

/// One binding change, borrowed: what [`super::LogWriter::append`] takes and replay reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingRef<'a> {
    pub seq: u64,
    pub ip: Ipv4Addr,
    pub state: LeaseState,
    pub flags: u8,
    pub expires_s: u64,
    pub potential_expiry_s: u64,
    pub partner_expiry_s: u64,
    pub cltt_s: u64,
    pub state_since_s: u64,
    /// The tagged `ClientKey` bytes, at most [`MAX_CLIENT_LEN`].
    pub client: &'a [u8],
    /// At most [`MAX_HOSTNAME_LEN`].
    pub hostname: &'a [u8],
}

/// One binding, owned: what replay returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub seq: u64,
    pub ip: Ipv4Addr,
    pub state: LeaseState,
    pub flags: u8,
    pub expires_s: u64,
    pub potential_expiry_s: u64,
    pub partner_expiry_s: u64,
    pub cltt_s: u64,
    pub state_since_s: u64,
    pub client: Box<[u8]>,
    pub hostname: Box<[u8]>,
}

impl Binding {
    pub fn as_ref(&self) -> BindingRef<'_> {
        BindingRef {
            seq: self.seq,
            ip: self.ip,
            state: self.state,
            flags: self.flags,
            expires_s: self.expires_s,
            potential_expiry_s: self.potential_expiry_s,
            partner_expiry_s: self.partner_expiry_s,
            cltt_s: self.cltt_s,
            state_since_s: self.state_since_s,
            client: &self.client,
            hostname: &self.hostname,
        }
    }
}

impl BindingRef<'_> {
    pub fn to_owned(&self) -> Binding {
        Binding {
            seq: self.seq,
            ip: self.ip,
            state: self.state,
            flags: self.flags,
            expires_s: self.expires_s,
            potential_expiry_s: self.potential_expiry_s,
            partner_expiry_s: self.partner_expiry_s,
            cltt_s: self.cltt_s,
            state_since_s: self.state_since_s,
            client: self.client.into(),
            hostname: self.hostname.into(),
        }
    }
}

/// The state's number on disk. Explicit, so reordering `LeaseState` cannot change the format.
pub fn state_to_u8(state: LeaseState) -> u8 {
    match state {
        LeaseState::Offered => 1,
        LeaseState::Bound => 2,
        LeaseState::Declined => 3,
        LeaseState::Released => 4,
        LeaseState::Expired => 5,
        LeaseState::Free => 6,
        LeaseState::Backup => 7,
    }
}

pub fn state_from_u8(value: u8) -> Option<LeaseState> {
    Some(match value {
        1 => LeaseState::Offered,
        2 => LeaseState::Bound,
        3 => LeaseState::Declined,
        4 => LeaseState::Released,
        5 => LeaseState::Expired,
        6 => LeaseState::Free,
        7 => LeaseState::Backup,
        _ => return None,
    })
}

/// The state byte of a relationship record: not a lease state (those are 1..=7).
pub const RELATIONSHIP_STATE: u8 = 0x80;
/// Longest relationship name (it is stored in the client field).
pub const MAX_RELATIONSHIP_NAME_LEN: usize = MAX_CLIENT_LEN;

const _: () = assert!(padded(RECORD_FIXED_LEN + MAX_RELATIONSHIP_NAME_LEN) <= MAX_RECORD_LEN);

/// A failover relationship's endpoint state (MS-DHCPF 3.1.3), borrowed: what replay reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelationshipRef<'a> {
    /// From the lease table's sequence, so lease and relationship records share one order.
    pub seq: u64,
    /// 1..=[`MAX_RELATIONSHIP_NAME_LEN`] bytes, stored as given (normally the configured
    /// name's UTF-8).
    pub name: &'a [u8],
    /// The failover state code, raw: the log stores it and does not interpret it.
    pub state: u8,
    /// When the state was entered, Unix seconds.
    pub entered_at_s: u64,
    /// The MCLT in force (for a secondary, the one it adopted from its primary).
    pub mclt_s: u32,
}

/// A failover relationship's endpoint state, owned: what
/// [`super::LogWriter::append_relationship`] takes and replay returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationshipRecord {
    pub seq: u64,
    pub name: Box<[u8]>,
    pub state: u8,
    pub entered_at_s: u64,
    pub mclt_s: u32,
}

impl RelationshipRecord {
    pub fn as_ref(&self) -> RelationshipRef<'_> {
        RelationshipRef {
            seq: self.seq,
            name: &self.name,
            state: self.state,
            entered_at_s: self.entered_at_s,
            mclt_s: self.mclt_s,
        }
    }
}

impl RelationshipRef<'_> {
    pub fn to_owned(&self) -> RelationshipRecord {
        RelationshipRecord {
            seq: self.seq,
            name: self.name.into(),
            state: self.state,
            entered_at_s: self.entered_at_s,
            mclt_s: self.mclt_s,
        }
    }
}

/// Any record, borrowed: the unit of the format. Both kinds are encoded and decoded by the same
/// code, which tells them apart by the state byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordRef<'a> {
    Binding(BindingRef<'a>),
    Relationship(RelationshipRef<'a>),
}

impl<'a> RecordRef<'a> {
    pub fn seq(&self) -> u64 {
        match self {
            RecordRef::Binding(b) => b.seq,
            RecordRef::Relationship(r) => r.seq,
        }
    }

    /// The encoded length, or `None` when a variable field is out of bounds: a client over
    /// [`MAX_CLIENT_LEN`], a hostname over [`MAX_HOSTNAME_LEN`], a relationship name empty or
    /// over [`MAX_RELATIONSHIP_NAME_LEN`].
    pub fn encoded_len(&self) -> Option<usize> {
        if let RecordRef::Relationship(r) = self {
            if r.name.is_empty() {
                return None;
            }
        }
        let f = self.fields();
        if f.client.len() > MAX_CLIENT_LEN || f.hostname.len() > MAX_HOSTNAME_LEN {
            return None;
        }
        Some(padded(RECORD_FIXED_LEN + f.client.len() + f.hostname.len()))
    }

    /// Writes the record into `out[..len]` where `len == self.encoded_len()`: every byte,
    /// padding included, so nothing stale survives in a reused buffer.
    ///
    /// Panics if `out` is shorter than `encoded_len()` or that is `None`: callers check both.
    pub fn encode_into(&self, out: &mut [u8]) -> usize {
        let len = self.encoded_len().expect("caller checked the record size");
        let f = self.fields();
        let out = &mut out[..len];
        out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        out[8..16].copy_from_slice(&f.seq.to_le_bytes());
        out[16..20].copy_from_slice(&f.ip);
        out[20] = f.state;
        out[21] = f.flags;
        // Both lengths fit in a u16: checked by `encoded_len` against bounds below 65536.
        out[22..24].copy_from_slice(&(f.client.len() as u16).to_le_bytes());
        out[24..26].copy_from_slice(&(f.hostname.len() as u16).to_le_bytes());
        out[26..32].fill(0);
        for (i, value) in f.times_s.iter().enumerate() {
            out[32 + 8 * i..40 + 8 * i].copy_from_slice(&value.to_le_bytes());
        }
        let client_end = RECORD_FIXED_LEN + f.client.len();
        let hostname_end = client_end + f.hostname.len();
        out[RECORD_FIXED_LEN..client_end].copy_from_slice(f.client);
        out[client_end..hostname_end].copy_from_slice(f.hostname);
        out[hostname_end..].fill(0);
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        len
    }

    /// The record's fields as they go on disk.
    fn fields(&self) -> Fields<'a> {
        match *self {
            RecordRef::Binding(b) => Fields {
                seq: b.seq,
                ip: b.ip.octets(),
                state: state_to_u8(b.state),
                flags: b.flags,
                times_s: [
                    b.expires_s,
                    b.potential_expiry_s,
                    b.partner_expiry_s,
                    b.cltt_s,
                    b.state_since_s,
                ],
                client: b.client,
                hostname: b.hostname,
            },
            RecordRef::Relationship(r) => Fields {
                seq: r.seq,
                ip: [0; 4],
                state: RELATIONSHIP_STATE,
                flags: r.state,
                times_s: [r.entered_at_s, u64::from(r.mclt_s), 0, 0, 0],
                client: r.name,
                hostname: &[],
            },
        }
    }
}

/// Every field of a record, as on disk: what both kinds are encoded from and decoded into.
struct Fields<'a> {
    seq: u64,
    ip: [u8; 4],
    state: u8,
    flags: u8,
    /// Bytes 32..72: five u64 fields.
    times_s: [u64; 5],
    client: &'a [u8],
    hostname: &'a [u8],
}

/// `n` rounded up to a multiple of [`ALIGN`].
pub const fn padded(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// The encoded length of a binding record, or `None` when its client or hostname is too long.
pub fn encoded_len(b: &BindingRef<'_>) -> Option<usize> {
    RecordRef::Binding(*b).encoded_len()
}

/// Writes a binding record: [`RecordRef::encode_into`], with the same contract.
pub fn encode_into(out: &mut [u8], b: &BindingRef<'_>) -> usize {
    RecordRef::Binding(*b).encode_into(out)
}

/// Why bytes are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The length field is 0: the end of the records.
    End,
    /// Fewer bytes than the length field (or the length field itself) needs.
    Truncated,
    /// The length is out of range, not a multiple of 8, or disagrees with the field lengths.
    BadLength,
    /// The CRC does not match.
    BadCrc,
    /// An unknown state, reserved bytes or padding that are not zero, or a relationship record
    /// with a field it does not use set, an MCLT over `u32::MAX`, or an empty name.
    BadContent,
}

fn u16_at(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Checks the record at the start of `buf` (which may go on past it) and returns it with its
/// length. Never panics: every index below is within `len`, and `len <= buf.len()` is checked
/// first.
pub fn decode(buf: &[u8]) -> Result<(RecordRef<'_>, usize), RecordError> {
    let (f, len) = decode_fields(buf)?;
    let record = if f.state == RELATIONSHIP_STATE {
        RecordRef::Relationship(relationship_of(&f)?)
    } else {
        RecordRef::Binding(BindingRef {
            seq: f.seq,
            ip: Ipv4Addr::from(f.ip),
            state: state_from_u8(f.state).ok_or(RecordError::BadContent)?,
            flags: f.flags,
            expires_s: f.times_s[0],
            potential_expiry_s: f.times_s[1],
            partner_expiry_s: f.times_s[2],
            cltt_s: f.times_s[3],
            state_since_s: f.times_s[4],
            client: f.client,
            hostname: f.hostname,
        })
    };
    Ok((record, len))
}

/// The frame checks every record passes, whatever its kind.
fn decode_fields(buf: &[u8]) -> Result<(Fields<'_>, usize), RecordError> {
    if buf.len() < 4 {
        return Err(if buf.iter().all(|&b| b == 0) {
            RecordError::End
        } else {
            RecordError::Truncated
        });
    }
    let len = u32_at(buf, 0) as usize;
    if len == 0 {
        return Err(RecordError::End);
    }
    if !(RECORD_FIXED_LEN..=MAX_RECORD_LEN).contains(&len) || len % ALIGN != 0 {
        return Err(RecordError::BadLength);
    }
    if buf.len() < len {
        return Err(RecordError::Truncated);
    }
    let rec = &buf[..len];
    if crc32c::crc32c(&rec[8..]) != u32_at(rec, 4) {
        return Err(RecordError::BadCrc);
    }
    let client_len = usize::from(u16_at(rec, 22));
    let hostname_len = usize::from(u16_at(rec, 24));
    if client_len > MAX_CLIENT_LEN
        || hostname_len > MAX_HOSTNAME_LEN
        || padded(RECORD_FIXED_LEN + client_len + hostname_len) != len
    {
        return Err(RecordError::BadLength);
    }
    let client_end = RECORD_FIXED_LEN + client_len;
    let hostname_end = client_end + hostname_len;
    if rec[26..32].iter().any(|&b| b != 0) || rec[hostname_end..].iter().any(|&b| b != 0) {
        return Err(RecordError::BadContent);
    }
    let fields = Fields {
        seq: u64_at(rec, 8),
        ip: [rec[16], rec[17], rec[18], rec[19]],
        state: rec[20],
        flags: rec[21],
        times_s: [
            u64_at(rec, 32),
            u64_at(rec, 40),
            u64_at(rec, 48),
            u64_at(rec, 56),
            u64_at(rec, 64),
        ],
        client: &rec[RECORD_FIXED_LEN..client_end],
        hostname: &rec[client_end..hostname_end],
    };
    Ok((fields, len))
}

/// A relationship record from checked fields: every field it does not use must be zero.
fn relationship_of<'a>(f: &Fields<'a>) -> Result<RelationshipRef<'a>, RecordError> {
    let [entered_at_s, mclt_s, rest @ ..] = f.times_s;
    let unused_zero = f.ip == [0; 4] && f.hostname.is_empty() && rest == [0; 3];
    let mclt_s = u32::try_from(mclt_s).map_err(|_| RecordError::BadContent)?;
    if !unused_zero || f.client.is_empty() {
        return Err(RecordError::BadContent);
    }
    Ok(RelationshipRef {
        seq: f.seq,
        name: f.client,
        state: f.flags,
        entered_at_s,
        mclt_s,
    })
}

/// The file header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub kind: FileKind,
    pub number: u64,
}

pub fn encode_header(header: &FileHeader) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..8].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    out[12] = header.kind as u8;
    out[16..24].copy_from_slice(&header.number.to_le_bytes());
    let crc = crc32c::crc32c(&out[..28]);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a file header; the error says what is wrong, for the operator.
pub fn decode_header(buf: &[u8]) -> Result<FileHeader, String> {
    if buf.len() < HEADER_LEN {
        return Err(format!("file shorter than the {HEADER_LEN}-byte header"));
    }
    if buf[0..8] != MAGIC {
        return Err("not a ringlease log file (bad magic)".into());
    }
    if crc32c::crc32c(&buf[..28]) != u32_at(buf, 28) {
        return Err("header CRC mismatch".into());
    }
    let version = u16_at(buf, 8);
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads {VERSION}"
        ));
    }
    let header_len = u16_at(buf, 10);
    if usize::from(header_len) != HEADER_LEN {
        return Err(format!("header length {header_len}, expected {HEADER_LEN}"));
    }
    let kind = match buf[12] {
        1 => FileKind::Log,
        2 => FileKind::Snapshot,
        other => return Err(format!("unknown file kind {other}")),
    };
    Ok(FileHeader {
        kind,
        number: u64_at(buf, 16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(client: &'static [u8], hostname: &'static [u8]) -> BindingRef<'static> {
        BindingRef {
            seq: 0x0102_0304_0506_0708,
            ip: Ipv4Addr::new(100, 64, 3, 17),
            state: LeaseState::Bound,
            flags: 0xa5,
            expires_s: 1_700_000_000,
            potential_expiry_s: 1_700_000_600,
            partner_expiry_s: 1_700_000_300,
            cltt_s: 1_699_999_000,
            state_since_s: 1_699_998_000,
            client,
            hostname,
        }
    }

    fn relationship(name: &'static [u8], state: u8, mclt_s: u32) -> RecordRef<'static> {
        RecordRef::Relationship(RelationshipRef {
            seq: 0x1112_1314_1516_1718,
            name,
            state,
            entered_at_s: 1_700_000_123,
            mclt_s,
        })
    }

    /// Every kind and shape of record: bindings (empty, typical, longest fields, every state)
    /// and relationship records (shortest and longest names, extreme state codes and MCLTs).
    fn samples() -> Vec<RecordRef<'static>> {
        static LONG_CLIENT: [u8; MAX_CLIENT_LEN] = [0x5a; MAX_CLIENT_LEN];
        static LONG_HOST: [u8; MAX_HOSTNAME_LEN] = [b'h'; MAX_HOSTNAME_LEN];
        static LONG_NAME: [u8; MAX_RELATIONSHIP_NAME_LEN] = [b'n'; MAX_RELATIONSHIP_NAME_LEN];
        let mut all = vec![
            sample(b"", b""),
            sample(&[1, 1, 0, 0x0c, 0x29, 0x3e, 0x53, 0xf7], b"laptop-42"),
            sample(&[0, 7], b""),
            sample(&LONG_CLIENT, &LONG_HOST),
        ];
        for state in [
            LeaseState::Offered,
            LeaseState::Declined,
            LeaseState::Released,
            LeaseState::Expired,
        ] {
            all.push(BindingRef {
                state,
                ..sample(b"\x01\x01abcdef", b"x")
            });
        }
        let mut all: Vec<RecordRef<'static>> = all.into_iter().map(RecordRef::Binding).collect();
        all.extend([
            relationship(b"a", 0, 0),
            relationship(b"dhcp-pair-1", 10, 3600),
            relationship("zwölf".as_bytes(), 0xff, u32::MAX),
            relationship(&[0xff, 0, b'\t'], 0xff, u32::MAX),
            relationship(&LONG_NAME, 5, 1),
        ]);
        all
    }

    fn encoded(r: &RecordRef<'_>) -> ([u8; MAX_RECORD_LEN], usize) {
        let mut buf = [0u8; MAX_RECORD_LEN];
        let len = r.encode_into(&mut buf);
        (buf, len)
    }

    /// Guards the format's round trip: every sample (of both kinds) decodes to exactly what was
    /// encoded, with the length the encoder reported, and the owned forms convert back.
    #[test]
    fn record_round_trip() {
        for r in samples() {
            let mut buf = [0xffu8; MAX_RECORD_LEN + 8];
            let len = r.encode_into(&mut buf);
            assert_eq!(Some(len), r.encoded_len());
            assert_eq!(len % ALIGN, 0);
            let (decoded, decoded_len) = decode(&buf[..len]).unwrap();
            assert_eq!(decoded, r);
            assert_eq!(decoded_len, len);
            match decoded {
                RecordRef::Binding(b) => assert_eq!(RecordRef::Binding(b.to_owned().as_ref()), r),
                RecordRef::Relationship(rel) => {
                    assert_eq!(RecordRef::Relationship(rel.to_owned().as_ref()), r)
                }
            }
        }
    }

    /// Guards the byte layout drawn in the module doc against silent drift.
    #[test]
    fn record_layout_is_as_drawn() {
        let b = sample(b"\x00\x07", b"ab");
        let mut buf = [0u8; MAX_RECORD_LEN];
        let len = encode_into(&mut buf, &b);
        assert_eq!(len, 80);
        assert_eq!(buf[0..4], 80u32.to_le_bytes());
        assert_eq!(buf[8..16], b.seq.to_le_bytes());
        assert_eq!(buf[16..20], [100, 64, 3, 17]);
        assert_eq!(buf[20], 2);
        assert_eq!(buf[21], 0xa5);
        assert_eq!(buf[22..24], 2u16.to_le_bytes());
        assert_eq!(buf[24..26], 2u16.to_le_bytes());
        assert_eq!(buf[32..40], b.expires_s.to_le_bytes());
        assert_eq!(buf[64..72], b.state_since_s.to_le_bytes());
        assert_eq!(buf[72..76], *b"\x00\x07ab");
        assert_eq!(buf[76..80], [0; 4]);
    }

    /// Guards the relationship record's layout as drawn in the module doc: the same frame, state
    /// 0x80, the failover state at 21, the name in the client field, unused fields zero.
    #[test]
    fn relationship_layout_is_as_drawn() {
        let r = relationship(b"pair", 7, 3600);
        let (buf, len) = encoded(&r);
        assert_eq!(len, 80);
        assert_eq!(buf[0..4], 80u32.to_le_bytes());
        assert_eq!(buf[4..8], crc32c::crc32c(&buf[8..80]).to_le_bytes());
        assert_eq!(buf[8..16], r.seq().to_le_bytes());
        assert_eq!(buf[16..20], [0; 4]);
        assert_eq!(buf[20], RELATIONSHIP_STATE);
        assert_eq!(buf[21], 7);
        assert_eq!(buf[22..24], 4u16.to_le_bytes());
        assert_eq!(buf[24..32], [0; 8]);
        assert_eq!(buf[32..40], 1_700_000_123u64.to_le_bytes());
        assert_eq!(buf[40..48], 3600u64.to_le_bytes());
        assert_eq!(buf[48..72], [0; 24]);
        assert_eq!(buf[72..80], *b"pair\0\0\0\0");
        assert!(
            state_from_u8(RELATIONSHIP_STATE).is_none(),
            "not a lease state"
        );
    }

    /// Guards the strictness of relationship records: with a valid CRC, a set unused field, an
    /// MCLT over u32, or an empty name is refused, not read.
    #[test]
    fn relationship_with_bad_content_is_refused() {
        let (good, len) = encoded(&relationship(b"pair", 7, 3600));
        let reseal = |mut rec: [u8; MAX_RECORD_LEN], len: usize| {
            let crc = crc32c::crc32c(&rec[8..len]);
            rec[4..8].copy_from_slice(&crc.to_le_bytes());
            rec
        };
        let mut damaged: Vec<[u8; MAX_RECORD_LEN]> = Vec::new();
        for at in (16..20).chain(48..72) {
            let mut rec = good;
            rec[at] = 1;
            damaged.push(rec);
        }
        let mut rec = good;
        rec[44] = 1; // mclt_s = 2^32 + 3600
        damaged.push(rec);
        for rec in damaged {
            assert_eq!(
                decode(&reseal(rec, len)[..len]),
                Err(RecordError::BadContent)
            );
        }
        // An empty name is refused by the encoder and by the decoder.
        assert_eq!(relationship(b"", 1, 1).encoded_len(), None);
        let mut empty = good;
        empty[0..4].copy_from_slice(&72u32.to_le_bytes());
        empty[22..24].fill(0);
        empty[72..80].fill(0);
        assert_eq!(
            decode(&reseal(empty, 72)[..72]),
            Err(RecordError::BadContent)
        );
    }

    /// Guards torn-write detection: every proper prefix of every sample record (as a torn
    /// write at the end of a file leaves it) is rejected, never decoded as a record.
    #[test]
    fn every_truncation_is_detected() {
        for r in samples() {
            let (buf, len) = encoded(&r);
            for cut in 0..len {
                let err = decode(&buf[..cut]).unwrap_err();
                let expected = if cut < 4 && buf[..cut].iter().all(|&x| x == 0) {
                    RecordError::End
                } else {
                    RecordError::Truncated
                };
                assert_eq!(err, expected, "cut at {cut} of {len}");
            }
            // A torn write can also leave the tail of the record zero in a zero-filled file.
            for cut in 4..len {
                let mut torn = buf;
                torn[cut..len].fill(0);
                if torn[..len] == buf[..len] {
                    continue; // the tail was zero anyway (padding)
                }
                assert!(decode(&torn[..len]).is_err(), "zeroed from {cut} of {len}");
            }
        }
    }

    /// Guards against damage passing as data: flipping any single bit of a record of either
    /// kind is caught (by the CRC, or the length checks when the flip hits the length field).
    #[test]
    fn every_bit_flip_is_detected() {
        for r in samples() {
            let mut buf = [0u8; MAX_RECORD_LEN * 2];
            let len = r.encode_into(&mut buf);
            for bit in 0..len * 8 {
                let mut bad = buf;
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(decode(&bad).is_err(), "bit {bit} of {len}-byte record");
            }
        }
    }

    /// Guards the decoder's panic contract on arbitrary bytes: random buffers (and random
    /// buffers that carry a valid length and CRC, so the content checks run) never panic.
    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut buf = [0u8; MAX_RECORD_LEN];
            let n = (next() % MAX_RECORD_LEN as u64) as usize;
            for byte in &mut buf[..n] {
                *byte = next() as u8;
            }
            let _ = decode(&buf[..n]);
            if n >= RECORD_FIXED_LEN {
                let len = n & !(ALIGN - 1);
                buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
                buf[20] = [RELATIONSHIP_STATE, 2, next() as u8][(next() % 3) as usize];
                let crc = crc32c::crc32c(&buf[8..len]);
                buf[4..8].copy_from_slice(&crc.to_le_bytes());
                let _ = decode(&buf[..len]);
            }
        }
    }

    /// Guards the header check: a good header decodes; a flipped bit or a foreign file is
    /// refused with a reason.
    #[test]
    fn header_round_trip_and_damage() {
        let header = FileHeader {
            kind: FileKind::Snapshot,
            number: 0xdead_beef,
        };
        let bytes = encode_header(&header);
        assert_eq!(decode_header(&bytes), Ok(header));
        for bit in 0..HEADER_LEN * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_header(&bad).is_err(), "bit {bit}");
        }
        assert!(decode_header(&bytes[..HEADER_LEN - 1]).is_err());
    }

    /// Guards the size bound: an oversized client, hostname or relationship name is refused
    /// before encoding.
    #[test]
    fn oversized_fields_are_refused() {
        let client = [0u8; MAX_CLIENT_LEN + 1];
        let hostname = [0u8; MAX_HOSTNAME_LEN + 1];
        let mut b = sample(b"", b"");
        b.client = &client;
        assert_eq!(encoded_len(&b), None);
        b.client = b"";
        b.hostname = &hostname;
        assert_eq!(encoded_len(&b), None);
        let name = [b'n'; MAX_RELATIONSHIP_NAME_LEN + 1];
        let r = RelationshipRef {
            seq: 1,
            name: &name,
            state: 1,
            entered_at_s: 0,
            mclt_s: 0,
        };
        assert_eq!(RecordRef::Relationship(r).encoded_len(), None);
        let r = RelationshipRef {
            name: &name[1..],
            ..r
        };
        assert!(RecordRef::Relationship(r).encoded_len().is_some());
    }
}
