//! DHCPv4 messages (RFC 2131 §2, options per RFC 2132): a borrowed view for received
//! datagrams and an in-place writer for replies.
//!
//! # The parse contract
//!
//! [`Packet::parse`] is the only fallible step, in the style of smoltcp's `new_checked`: it
//! walks the whole message once and rejects it with a [`DropReason`] unless every fact the
//! accessors rely on holds (fixed header present, cookie, `hlen <= 16`, every option inside
//! its area, option 52 sane, known fixed-size options with legal lengths, a known message
//! type). After it returns `Ok`, every accessor is infallible and never panics, whatever the
//! bytes were. Nothing here allocates except the owned [`Message`], which is for tests, tools
//! and the client simulator, not the server's hot path.
//!
//! [`PacketWriter`] writes every header byte itself, so a reused buffer never leaks an older
//! datagram into a reply.

use std::net::Ipv4Addr;

use super::options::code;
use super::DropReason;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header through `file` (236) plus the cookie.
pub const MIN_PACKET_LEN: usize = 240;
/// IP (20) + UDP (8) header bytes counted by option 57 (RFC 2132 §9.10).
pub const IP_UDP_HEADER_LEN: usize = 28;
/// Largest DHCP payload a client must accept when it sends no option 57: 576 - 28.
pub const DEFAULT_MAX_DHCP_LEN: usize = 548;
/// Replies are padded to at least this length (BOOTP minimum, RFC 1542 §2.1 / what clients expect).
pub const MIN_REPLY_LEN: usize = 300;

/// Largest DHCP payload we ever send: a 1500-byte IP packet without fragmentation.
const MAX_REPLY_LEN: usize = 1500 - IP_UDP_HEADER_LEN;
/// RFC 2132 §9.10: option 57 below 576 is illegal; we then fall back to the default.
const MIN_LEGAL_MAX_MESSAGE_SIZE: u16 = 576;

// Field offsets of the fixed header (RFC 2131 §2, figure 1).
const OP: usize = 0;
const HTYPE: usize = 1;
const HLEN: usize = 2;
const HOPS: usize = 3;
const XID: usize = 4;
const SECS: usize = 8;
const FLAGS: usize = 10;
const CIADDR: usize = 12;
const YIADDR: usize = 16;
const SIADDR: usize = 20;
const GIADDR: usize = 24;
const CHADDR: usize = 28;
const CHADDR_LEN: usize = 16;
const SNAME: usize = 44;
const SNAME_LEN: usize = 64;
const FILE: usize = 108;
const FILE_LEN: usize = 128;
const COOKIE: usize = 236;
const OPTIONS: usize = MIN_PACKET_LEN;

/// RFC 2131 §2: the broadcast bit is the leftmost bit of `flags`.
const BROADCAST_FLAG: u16 = 0x8000;

// Option 52 values (RFC 2132 §9.3): which header fields carry options.
const OVERLOAD_FILE: u8 = 1;
const OVERLOAD_SNAME: u8 = 2;

/// The DHCP message type, option 53 (RFC 2132 §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    /// Every type, in code order.
    pub const ALL: [MessageType; 8] = [
        MessageType::Discover,
        MessageType::Offer,
        MessageType::Request,
        MessageType::Decline,
        MessageType::Ack,
        MessageType::Nak,
        MessageType::Release,
        MessageType::Inform,
    ];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v).checked_sub(1)?).copied()
    }

    /// The RFC 2131 name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            MessageType::Discover => "DHCPDISCOVER",
            MessageType::Offer => "DHCPOFFER",
            MessageType::Request => "DHCPREQUEST",
            MessageType::Decline => "DHCPDECLINE",
            MessageType::Ack => "DHCPACK",
            MessageType::Nak => "DHCPNAK",
            MessageType::Release => "DHCPRELEASE",
            MessageType::Inform => "DHCPINFORM",
        }
    }
}

/// A validated, borrowed view of a DHCPv4 message. See the module docs for the contract.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    buf: &'a [u8],
    overload: u8,
    message_type: MessageType,
}

/// Whether a known option's instance length is legal (RFC 2132 §9.1–9.14). Only options
/// whose reader would otherwise have to guess are checked; the rest are opaque bytes.
fn legal_len(opt: u8, len: usize) -> bool {
    match opt {
        code::MESSAGE_TYPE | code::OVERLOAD => len == 1,
        code::REQUESTED_IP
        | code::SERVER_ID
        | code::LEASE_TIME
        | code::RENEWAL_TIME
        | code::REBINDING_TIME => len == 4,
        code::MAX_MESSAGE_SIZE => len == 2,
        // §9.14: a type byte plus at least one byte of identifier.
        code::CLIENT_ID => len >= 2,
        code::PARAMETER_REQUEST_LIST => len >= 1,
        _ => true,
    }
}

/// Takes the next option from the front of `area`: PAD is skipped, END or the end of the
/// area finish it (an area without END is accepted, as ISC and Kea do). An option whose
/// length byte or data is missing empties the area and reports `OptionOverrun`.
fn next_option<'a>(area: &mut &'a [u8]) -> Option<Result<(u8, &'a [u8]), DropReason>> {
    loop {
        let (&opt, rest) = area.split_first()?;
        match opt {
            code::PAD => *area = rest,
            code::END => {
                *area = &[];
                return None;
            }
            _ => {
                let data = rest
                    .split_first()
                    .and_then(|(&len, rest)| rest.split_at_checked(usize::from(len)));
                let Some((data, rest)) = data else {
                    *area = &[];
                    return Some(Err(DropReason::OptionOverrun));
                };
                *area = rest;
                return Some(Ok((opt, data)));
            }
        }
    }
}

/// Validates one area; option 52 is only legal in the options field (RFC 2132 §9.3).
fn check_area(
    mut area: &[u8],
    is_options_field: bool,
    overload: &mut Option<u8>,
    message_type: &mut Option<u8>,
) -> Result<(), DropReason> {
    while let Some(item) = next_option(&mut area) {
        let (opt, data) = item?;
        if !legal_len(opt, data.len()) {
            return Err(DropReason::BadOptionLength);
        }
        match opt {
            code::OVERLOAD => {
                // Rejecting a repeat or an instance inside file/sname is also what makes
                // overload loops impossible.
                let v = data[0];
                if !is_options_field || overload.is_some() || !(1..=3).contains(&v) {
                    return Err(DropReason::BadOverload);
                }
                *overload = Some(v);
            }
            code::MESSAGE_TYPE if message_type.is_none() => *message_type = Some(data[0]),
            _ => {}
        }
    }
    Ok(())
}

fn ip_at(buf: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(buf[at], buf[at + 1], buf[at + 2], buf[at + 3])
}

fn ip_of(data: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from)
}

impl<'a> Packet<'a> {
    /// Validates the whole message once: length >= MIN_PACKET_LEN (else Truncated), cookie (BadCookie),
    /// hlen <= 16 (BadHlen), every option in the options field — and in `file`/`sname` when option 52
    /// says so — has its length inside its area (OptionOverrun), option 52 valid: value 1..=3, only in
    /// the options field, at most once (else BadOverload — this is also what stops overload loops),
    /// known fixed-size options have legal lengths (53: 1, 50/54/51/58/59: 4, 57: 2, 61: >= 2, 55: >= 1,
    /// 52: 1; else BadOptionLength), option 53 present (NoMessageType) with value 1..=8
    /// (UnknownMessageType). PAD (0) is skipped; END (255) ends an area; an area that runs out without
    /// END is accepted (lenient, as ISC and Kea are). It does NOT check `op` (the server decides what
    /// to do with BOOTREPLYs: the client simulator parses replies with the same function).
    ///
    /// When option 53 appears more than once, the first instance is the message type.
    pub fn parse(buf: &'a [u8]) -> Result<Packet<'a>, DropReason> {
        if buf.len() < MIN_PACKET_LEN {
            return Err(DropReason::Truncated);
        }
        if buf[COOKIE..OPTIONS] != MAGIC_COOKIE {
            return Err(DropReason::BadCookie);
        }
        if usize::from(buf[HLEN]) > CHADDR_LEN {
            return Err(DropReason::BadHlen);
        }
        let mut overload = None;
        let mut message_type = None;
        check_area(&buf[OPTIONS..], true, &mut overload, &mut message_type)?;
        let overload = overload.unwrap_or(0);
        // RFC 2131 §4.1: `file` is read before `sname`.
        if overload & OVERLOAD_FILE != 0 {
            let file = &buf[FILE..FILE + FILE_LEN];
            check_area(file, false, &mut None, &mut message_type)?;
        }
        if overload & OVERLOAD_SNAME != 0 {
            let sname = &buf[SNAME..SNAME + SNAME_LEN];
            check_area(sname, false, &mut None, &mut message_type)?;
        }
        let message_type = message_type.ok_or(DropReason::NoMessageType)?;
        let message_type =
            MessageType::from_u8(message_type).ok_or(DropReason::UnknownMessageType)?;
        Ok(Packet {
            buf,
            overload,
            message_type,
        })
    }

    /// The whole datagram as received.
    pub fn bytes(&self) -> &'a [u8] {
        self.buf
    }

    pub fn op(&self) -> u8 {
        self.buf[OP]
    }

    pub fn htype(&self) -> u8 {
        self.buf[HTYPE]
    }

    pub fn hlen(&self) -> u8 {
        self.buf[HLEN]
    }

    pub fn hops(&self) -> u8 {
        self.buf[HOPS]
    }

    pub fn xid(&self) -> u32 {
        let b = self.buf;
        u32::from_be_bytes([b[XID], b[XID + 1], b[XID + 2], b[XID + 3]])
    }

    pub fn secs(&self) -> u16 {
        u16::from_be_bytes([self.buf[SECS], self.buf[SECS + 1]])
    }

    pub fn flags(&self) -> u16 {
        u16::from_be_bytes([self.buf[FLAGS], self.buf[FLAGS + 1]])
    }

    /// The client asked for broadcast replies (RFC 2131 §4.1).
    pub fn broadcast(&self) -> bool {
        self.flags() & BROADCAST_FLAG != 0
    }

    pub fn ciaddr(&self) -> Ipv4Addr {
        ip_at(self.buf, CIADDR)
    }

    pub fn yiaddr(&self) -> Ipv4Addr {
        ip_at(self.buf, YIADDR)
    }

    pub fn siaddr(&self) -> Ipv4Addr {
        ip_at(self.buf, SIADDR)
    }

    pub fn giaddr(&self) -> Ipv4Addr {
        ip_at(self.buf, GIADDR)
    }

    /// The first `hlen` bytes of the 16-byte field (`parse` checked `hlen <= 16`).
    pub fn chaddr(&self) -> &'a [u8] {
        &self.buf[CHADDR..CHADDR + usize::from(self.hlen())]
    }

    /// The raw 64 bytes (options, not a name, when `overload() & 2`).
    pub fn sname(&self) -> &'a [u8] {
        &self.buf[SNAME..SNAME + SNAME_LEN]
    }

    /// The raw 128 bytes (options, not a name, when `overload() & 1`).
    pub fn file(&self) -> &'a [u8] {
        &self.buf[FILE..FILE + FILE_LEN]
    }

    /// Option 52's value; 0 when it is absent.
    pub fn overload(&self) -> u8 {
        self.overload
    }

    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// Every option in wire order: the options field, then `file` (overload 1 or 3), then `sname` (2 or 3).
    /// PAD/END not yielded.
    pub fn options(&self) -> OptionIter<'a> {
        let pick = |bit: u8, area: &'a [u8]| -> &'a [u8] {
            if self.overload & bit != 0 {
                area
            } else {
                &[]
            }
        };
        OptionIter {
            area: &self.buf[OPTIONS..],
            later: [
                pick(OVERLOAD_FILE, self.file()),
                pick(OVERLOAD_SNAME, self.sname()),
            ],
        }
    }

    /// The first instance of an option (RFC 3396 split options: callers that need them iterate `options()`).
    pub fn option(&self, code: u8) -> Option<&'a [u8]> {
        self.options()
            .find(|&(c, _)| c == code)
            .map(|(_, data)| data)
    }

    /// Option 50.
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.option(code::REQUESTED_IP).and_then(ip_of)
    }

    /// Option 54.
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.option(code::SERVER_ID).and_then(ip_of)
    }

    /// Option 61, raw (type byte included).
    pub fn client_id(&self) -> Option<&'a [u8]> {
        self.option(code::CLIENT_ID)
    }

    /// Option 57, raw value (may be below the legal 576; see [`Packet::reply_limit`]).
    pub fn max_message_size(&self) -> Option<u16> {
        let data = self.option(code::MAX_MESSAGE_SIZE)?;
        <[u8; 2]>::try_from(data).ok().map(u16::from_be_bytes)
    }

    /// Option 51, seconds.
    pub fn lease_time_s(&self) -> Option<u32> {
        let data = self.option(code::LEASE_TIME)?;
        <[u8; 4]>::try_from(data).ok().map(u32::from_be_bytes)
    }

    /// Option 55.
    pub fn parameter_request_list(&self) -> Option<&'a [u8]> {
        self.option(code::PARAMETER_REQUEST_LIST)
    }

    /// Option 82 (RFC 3046), raw sub-options.
    pub fn relay_agent_info(&self) -> Option<&'a [u8]> {
        self.option(code::RELAY_AGENT_INFO)
    }

    /// Option 12.
    pub fn hostname(&self) -> Option<&'a [u8]> {
        self.option(code::HOSTNAME)
    }

    /// Largest DHCP payload (bytes) a reply to this request may have: option 57 minus IP_UDP_HEADER_LEN when
    /// option 57 is present and >= 576, else DEFAULT_MAX_DHCP_LEN; never more than 1472 (a 1500-byte IP packet).
    pub fn reply_limit(&self) -> usize {
        match self.max_message_size() {
            // RFC 2132 §9.10: the value counts the IP and UDP headers; below 576 it is illegal.
            Some(v) if v >= MIN_LEGAL_MAX_MESSAGE_SIZE => {
                (usize::from(v) - IP_UDP_HEADER_LEN).min(MAX_REPLY_LEN)
            }
            _ => DEFAULT_MAX_DHCP_LEN,
        }
    }
}

/// Options of a parsed packet in wire order, across the overloaded areas.
#[derive(Clone, Debug)]
pub struct OptionIter<'a> {
    /// The rest of the area being read.
    area: &'a [u8],
    /// `file` then `sname`, each empty unless option 52 names it.
    later: [&'a [u8]; 2],
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // `parse` saw every option valid, so an `Err` cannot happen here; ending the area
            // is the infallible answer should it ever do.
            if let Some(Ok(item)) = next_option(&mut self.area) {
                return Some(item);
            }
            let [file, sname] = self.later;
            if file.is_empty() && sname.is_empty() {
                return None;
            }
            self.area = if file.is_empty() { sname } else { file };
            self.later = if file.is_empty() {
                [&[], &[]]
            } else {
                [&[], sname]
            };
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The data does not fit in the space left (or the request itself cannot be encoded: a
    /// reserved option code, a `file`/`sname` already holding options).
    NoRoom,
}

/// Where the writer may put options: the options field, then `file`, then `sname`
/// (RFC 2131 §4.1 reading order), each with its own capacity.
const AREAS: usize = 3;
const AREA_OPTIONS: usize = 0;
const AREA_FILE: usize = 1;
const AREA_SNAME: usize = 2;
/// Option 52 (3 bytes) + END, always kept free in the options field so spilling stays possible.
const OPTIONS_RESERVE: usize = 4;

/// Placement state of the writer: which area takes the next option, and bytes used per area.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    area: usize,
    used: [usize; AREAS],
}

/// Writes a DHCPv4 message into a caller's buffer, every byte of the header written (no buffer bleed from a
/// reused buffer: sname/file zeroed unless used for overload). No allocation.
pub struct PacketWriter<'b> {
    buf: &'b mut [u8],
    /// Effective total length cap: min(limit, buf.len()).
    limit: usize,
    cursor: Cursor,
    /// `file`/`sname` carry caller data (a boot file or server name) and cannot take options.
    file_taken: bool,
    sname_taken: bool,
}

impl<'b> PacketWriter<'b> {
    /// Empty message: all header fields zero, cookie written, no options. `limit` caps the total length
    /// (the effective limit is min(limit, buf.len())).
    ///
    /// # Panics
    /// If the effective limit is below `MIN_PACKET_LEN + 4` (room for option 52 and END): that is a
    /// caller bug (a buffer too small for any DHCP message), never a property of received data.
    pub fn new(buf: &'b mut [u8], limit: usize) -> Self {
        let limit = limit.min(buf.len());
        assert!(
            limit >= MIN_PACKET_LEN + OPTIONS_RESERVE,
            "PacketWriter needs at least {} bytes, got {limit}",
            MIN_PACKET_LEN + OPTIONS_RESERVE
        );
        buf[..COOKIE].fill(0);
        buf[COOKIE..OPTIONS].copy_from_slice(&MAGIC_COOKIE);
        PacketWriter {
            buf,
            limit,
            cursor: Cursor {
                area: AREA_OPTIONS,
                used: [0; AREAS],
            },
            file_taken: false,
            sname_taken: false,
        }
    }

    /// A BOOTREPLY to `request` (RFC 2131 §4.3, table 3): op=2, htype/hlen/xid/flags/giaddr/chaddr copied from the
    /// request, hops/secs/ciaddr/yiaddr/siaddr zero, and option 53 = `message_type` written first.
    /// Same panic as [`PacketWriter::new`].
    pub fn reply_to(
        buf: &'b mut [u8],
        request: &Packet<'_>,
        message_type: MessageType,
        limit: usize,
    ) -> Self {
        const BOOTREPLY: u8 = 2;
        let mut w = Self::new(buf, limit);
        w.set_op(BOOTREPLY);
        w.set_htype(request.htype());
        w.set_chaddr(request.chaddr());
        w.set_xid(request.xid());
        w.set_flags(request.flags());
        w.set_giaddr(request.giaddr());
        // Cannot fail: a fresh writer has at least `file` (127 free bytes) for 3 bytes.
        let pushed = w.push_u8(code::MESSAGE_TYPE, message_type as u8);
        debug_assert!(pushed.is_ok());
        w
    }

    pub fn set_op(&mut self, v: u8) {
        self.buf[OP] = v;
    }

    pub fn set_htype(&mut self, v: u8) {
        self.buf[HTYPE] = v;
    }

    /// Raw `hlen`, for tools that must reproduce a message exactly; `set_chaddr` sets it already.
    pub fn set_hlen(&mut self, v: u8) {
        self.buf[HLEN] = v;
    }

    pub fn set_hops(&mut self, v: u8) {
        self.buf[HOPS] = v;
    }

    pub fn set_xid(&mut self, v: u32) {
        self.buf[XID..XID + 4].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_secs(&mut self, v: u16) {
        self.buf[SECS..SECS + 2].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_flags(&mut self, v: u16) {
        self.buf[FLAGS..FLAGS + 2].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_ciaddr(&mut self, a: Ipv4Addr) {
        self.buf[CIADDR..CIADDR + 4].copy_from_slice(&a.octets());
    }

    pub fn set_yiaddr(&mut self, a: Ipv4Addr) {
        self.buf[YIADDR..YIADDR + 4].copy_from_slice(&a.octets());
    }

    pub fn set_siaddr(&mut self, a: Ipv4Addr) {
        self.buf[SIADDR..SIADDR + 4].copy_from_slice(&a.octets());
    }

    pub fn set_giaddr(&mut self, a: Ipv4Addr) {
        self.buf[GIADDR..GIADDR + 4].copy_from_slice(&a.octets());
    }

    /// Sets chaddr and hlen = hw.len(); more than 16 bytes is a caller bug, clamped to 16.
    pub fn set_chaddr(&mut self, hw: &[u8]) {
        let hw = &hw[..hw.len().min(CHADDR_LEN)];
        let field = &mut self.buf[CHADDR..CHADDR + CHADDR_LEN];
        field.fill(0);
        field[..hw.len()].copy_from_slice(hw);
        // At most 16, so the cast is exact.
        self.buf[HLEN] = hw.len() as u8;
    }

    /// Sets the 64-byte `sname` (zero-filled after `name`). Non-zero content keeps options out of
    /// it. NoRoom if `name` is longer than 64 bytes or options already spilled into `sname`.
    pub fn set_sname(&mut self, name: &[u8]) -> Result<(), BuildError> {
        if name.len() > SNAME_LEN || self.cursor.used[AREA_SNAME] > 0 {
            return Err(BuildError::NoRoom);
        }
        let field = &mut self.buf[SNAME..SNAME + SNAME_LEN];
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        self.sname_taken = name.iter().any(|&b| b != 0);
        Ok(())
    }

    /// Sets the 128-byte `file` (zero-filled after `name`). Non-zero content keeps options out of
    /// it. NoRoom if `name` is longer than 128 bytes or options already spilled into `file`.
    pub fn set_file(&mut self, name: &[u8]) -> Result<(), BuildError> {
        if name.len() > FILE_LEN || self.cursor.used[AREA_FILE] > 0 {
            return Err(BuildError::NoRoom);
        }
        let field = &mut self.buf[FILE..FILE + FILE_LEN];
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        self.file_taken = name.iter().any(|&b| b != 0);
        Ok(())
    }

    /// Option bytes (code + length + data) an area can hold, its END (and, in the options
    /// field, option 52) excluded.
    fn capacity(&self, area: usize) -> usize {
        match area {
            AREA_OPTIONS => self.limit - MIN_PACKET_LEN - OPTIONS_RESERVE,
            AREA_FILE if !self.file_taken => FILE_LEN - 1,
            AREA_SNAME if !self.sname_taken => SNAME_LEN - 1,
            _ => 0,
        }
    }

    fn area_start(area: usize) -> usize {
        match area {
            AREA_OPTIONS => OPTIONS,
            AREA_FILE => FILE,
            _ => SNAME,
        }
    }

    /// Option 52's value for what has been written so far.
    fn overload(&self) -> u8 {
        let mut v = 0;
        if self.cursor.used[AREA_FILE] > 0 {
            v |= OVERLOAD_FILE;
        }
        if self.cursor.used[AREA_SNAME] > 0 {
            v |= OVERLOAD_SNAME;
        }
        v
    }

    /// Places `len` data bytes as one or more instances of `opt` (RFC 3396: at most 255 bytes
    /// each, consecutive, possibly across areas), `fill(offset, dst)` writing data bytes
    /// `offset..offset + dst.len()`. Plans first, so a failure leaves the message untouched.
    fn push_with(
        &mut self,
        opt: u8,
        len: usize,
        fill: impl Fn(usize, &mut [u8]),
    ) -> Result<(), BuildError> {
        // PAD and END have no length byte, and option 52 belongs to the writer.
        if matches!(opt, code::PAD | code::END | code::OVERLOAD) {
            return Err(BuildError::NoRoom);
        }
        let chunks = len.div_ceil(255).max(1);
        let chunk_len = |i: usize| (len - i * 255).min(255);

        let mut plan = self.cursor;
        for i in 0..chunks {
            let need = 2 + chunk_len(i);
            while plan.used[plan.area] + need > self.capacity(plan.area) {
                plan.area += 1;
                if plan.area == AREAS {
                    return Err(BuildError::NoRoom);
                }
            }
            plan.used[plan.area] += need;
        }

        // Same walk as the plan, now writing; it cannot run out of areas.
        let mut c = self.cursor;
        for i in 0..chunks {
            let n = chunk_len(i);
            let need = 2 + n;
            while c.used[c.area] + need > self.capacity(c.area) {
                c.area += 1;
            }
            let at = Self::area_start(c.area) + c.used[c.area];
            c.used[c.area] += need;
            self.buf[at] = opt;
            // At most 255 by construction.
            self.buf[at + 1] = n as u8;
            fill(i * 255, &mut self.buf[at + 2..at + need]);
        }
        self.cursor = c;
        Ok(())
    }

    /// Appends one option. Data longer than 255 bytes is split into consecutive instances (RFC 3396).
    /// When it does not fit in the options field, it (and later options) go into `file`, then `sname`, and
    /// option 52 is written in the options field with the right value (RFC 2132 §9.3) — so room for
    /// option 52 (3 bytes) + END is always kept in the options field. On Err(NoRoom) the message is
    /// exactly as before the call. Codes 0, 52 and 255 are the writer's own: pushing them is NoRoom.
    pub fn push(&mut self, code: u8, data: &[u8]) -> Result<(), BuildError> {
        self.push_with(code, data.len(), |off, dst| {
            dst.copy_from_slice(&data[off..off + dst.len()]);
        })
    }

    pub fn push_u8(&mut self, code: u8, v: u8) -> Result<(), BuildError> {
        self.push(code, &[v])
    }

    pub fn push_u16(&mut self, code: u8, v: u16) -> Result<(), BuildError> {
        self.push(code, &v.to_be_bytes())
    }

    pub fn push_u32(&mut self, code: u8, v: u32) -> Result<(), BuildError> {
        self.push(code, &v.to_be_bytes())
    }

    pub fn push_ip(&mut self, code: u8, a: Ipv4Addr) -> Result<(), BuildError> {
        self.push(code, &a.octets())
    }

    /// Appends a list of addresses as one option, written in place (no allocation).
    pub fn push_ips(&mut self, code: u8, a: &[Ipv4Addr]) -> Result<(), BuildError> {
        self.push_with(code, a.len() * 4, |off, dst| {
            for (i, b) in dst.iter_mut().enumerate() {
                let k = off + i;
                *b = a[k / 4].octets()[k % 4];
            }
        })
    }

    /// Bytes still free in the options field for whole options (code + length + data: an
    /// option with `n` data bytes fits there when `n + 2 <= remaining()`). 0 once options have
    /// spilled into `file`/`sname`, because later options then go there.
    pub fn remaining(&self) -> usize {
        if self.cursor.area != AREA_OPTIONS {
            return 0;
        }
        self.capacity(AREA_OPTIONS) - self.cursor.used[AREA_OPTIONS]
    }

    /// Writes END in every used area, pads with zeros to MIN_REPLY_LEN (or the limit if smaller), returns the length.
    pub fn finish(self) -> usize {
        let overload = self.overload();
        let buf = self.buf;
        let mut end = OPTIONS + self.cursor.used[AREA_OPTIONS];
        if overload != 0 {
            buf[end..end + 3].copy_from_slice(&[code::OVERLOAD, 1, overload]);
            end += 3;
        }
        buf[end] = code::END;
        end += 1;
        // `file`/`sname` were zeroed by `new`, so END is all their tails need.
        for area in [AREA_FILE, AREA_SNAME] {
            let used = self.cursor.used[area];
            if used > 0 {
                buf[Self::area_start(area) + used] = code::END;
            }
        }
        let padded = end.max(MIN_REPLY_LEN.min(self.limit));
        buf[end..padded].fill(0);
        padded
    }
}

/// Owned message for tests, tools and the client simulator (allocates; not for the server's hot path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub sname: [u8; 64],
    pub file: [u8; 128],
    /// In wire order, PAD/END excluded, option 52 excluded (it is a property of the encoding), overload areas flattened.
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Message {
    /// The owned form of a parsed packet; `sname`/`file` are zeroed when they carried options.
    pub fn from_packet(p: &Packet<'_>) -> Message {
        let mut chaddr = [0; 16];
        chaddr.copy_from_slice(&p.buf[CHADDR..CHADDR + CHADDR_LEN]);
        let mut sname = [0; 64];
        if p.overload() & OVERLOAD_SNAME == 0 {
            sname.copy_from_slice(p.sname());
        }
        let mut file = [0; 128];
        if p.overload() & OVERLOAD_FILE == 0 {
            file.copy_from_slice(p.file());
        }
        Message {
            op: p.op(),
            htype: p.htype(),
            hlen: p.hlen(),
            hops: p.hops(),
            xid: p.xid(),
            secs: p.secs(),
            flags: p.flags(),
            ciaddr: p.ciaddr(),
            yiaddr: p.yiaddr(),
            siaddr: p.siaddr(),
            giaddr: p.giaddr(),
            chaddr,
            sname,
            file,
            options: p
                .options()
                .filter(|&(c, _)| c != code::OVERLOAD)
                .map(|(c, d)| (c, d.to_vec()))
                .collect(),
        }
    }

    /// Encodes with PacketWriter (options in order; overload into file/sname only when needed, in which case
    /// `sname`/`file` content of the Message must be zero or encode returns NoRoom). The whole of
    /// `buf` is the size limit; a `buf` too small for any message, or an option 0/52/255 in
    /// `options`, is NoRoom too.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, BuildError> {
        if buf.len() < MIN_PACKET_LEN + OPTIONS_RESERVE {
            return Err(BuildError::NoRoom);
        }
        let limit = buf.len();
        let mut w = PacketWriter::new(buf, limit);
        w.set_op(self.op);
        w.set_htype(self.htype);
        w.set_chaddr(&self.chaddr);
        // After set_chaddr, which set hlen to 16: the Message's own hlen is kept as is.
        w.set_hlen(self.hlen);
        w.set_hops(self.hops);
        w.set_xid(self.xid);
        w.set_secs(self.secs);
        w.set_flags(self.flags);
        w.set_ciaddr(self.ciaddr);
        w.set_yiaddr(self.yiaddr);
        w.set_siaddr(self.siaddr);
        w.set_giaddr(self.giaddr);
        w.set_sname(&self.sname)?;
        w.set_file(&self.file)?;
        for (c, data) in &self.options {
            w.push(*c, data)?;
        }
        Ok(w.finish())
    }

    /// The first instance of an option.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, d)| d.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid DISCOVER: header, cookie, option 53, END, padded to 300.
    fn discover() -> Vec<u8> {
        let mut b = vec![0u8; MIN_PACKET_LEN];
        b[OP] = 1;
        b[HTYPE] = 1;
        b[HLEN] = 6;
        b[XID..XID + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        b[CHADDR..CHADDR + 6].copy_from_slice(&[0, 0x11, 0x22, 0x33, 0x44, 0x55]);
        b[COOKIE..OPTIONS].copy_from_slice(&MAGIC_COOKIE);
        b.extend_from_slice(&[53, 1, 1, 255]);
        b.resize(MIN_REPLY_LEN, 0);
        b
    }

    /// `discover()` with `opts` (raw TLV bytes) in place of its options, then END.
    fn with_options(opts: &[u8]) -> Vec<u8> {
        let mut b = discover();
        b.truncate(OPTIONS);
        b.extend_from_slice(opts);
        b.push(255);
        b
    }

    #[test]
    fn minimal_discover_parses() {
        // Guards the happy path every other test starts from.
        let b = discover();
        let p = Packet::parse(&b).expect("valid");
        assert_eq!(p.message_type(), MessageType::Discover);
        assert_eq!(p.xid(), 0x1234_5678);
        assert_eq!(p.chaddr(), &[0, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(p.overload(), 0);
        assert_eq!(p.options().collect::<Vec<_>>(), vec![(53, &[1u8][..])]);
    }

    #[test]
    fn message_type_table() {
        // Guards the 1..=8 mapping that UnknownMessageType relies on.
        for t in MessageType::ALL {
            assert_eq!(MessageType::from_u8(t as u8), Some(t));
            assert!(t.name().starts_with("DHCP"));
        }
        assert_eq!(MessageType::from_u8(0), None);
        assert_eq!(MessageType::from_u8(9), None);
    }

    #[test]
    fn truncated() {
        // Guards the fixed-header check: 239 bytes cannot hold the cookie.
        let b = discover();
        assert_eq!(
            Packet::parse(&b[..MIN_PACKET_LEN - 1]).unwrap_err(),
            DropReason::Truncated
        );
        assert_eq!(Packet::parse(&[]).unwrap_err(), DropReason::Truncated);
    }

    #[test]
    fn bad_cookie() {
        // Guards RFC 2131 §3: without the cookie the vend area is not DHCP options.
        let mut b = discover();
        b[COOKIE] = 0;
        assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::BadCookie);
    }

    #[test]
    fn bad_hlen() {
        // Guards chaddr(): hlen 17 would slice past the 16-byte field.
        let mut b = discover();
        b[HLEN] = 17;
        assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::BadHlen);
        b[HLEN] = 16;
        assert!(Packet::parse(&b).is_ok());
    }

    #[test]
    fn option_overrun() {
        // Guards the TLV walk: a length past the area end, and a code with no length byte.
        let b = with_options(&[53, 1, 1, 12, 200, b'x']);
        assert_eq!(
            Packet::parse(&b[..b.len() - 1]).unwrap_err(),
            DropReason::OptionOverrun
        );
        let mut b = with_options(&[53, 1, 1]);
        b.pop();
        b.push(12);
        assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::OptionOverrun);
        // Overrun inside `file` counts too when option 52 puts options there.
        let mut b = with_options(&[53, 1, 1, 52, 1, 1]);
        b[FILE + FILE_LEN - 2..FILE + FILE_LEN].copy_from_slice(&[12, 5]);
        b[FILE..FILE + FILE_LEN - 2].fill(0);
        assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::OptionOverrun);
    }

    #[test]
    fn bad_overload() {
        // Guards RFC 2132 §9.3: bad value, repeated, or inside an overloaded area (loops).
        for v in [0u8, 4, 255] {
            let b = with_options(&[53, 1, 1, 52, 1, v]);
            assert_eq!(
                Packet::parse(&b).unwrap_err(),
                DropReason::BadOverload,
                "{v}"
            );
        }
        let b = with_options(&[53, 1, 1, 52, 1, 1, 52, 1, 1]);
        assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::BadOverload);
        let mut b = with_options(&[53, 1, 1, 52, 1, 1]);
        b[FILE..FILE + 4].copy_from_slice(&[52, 1, 3, 255]);
        assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::BadOverload);
        let mut b = with_options(&[53, 1, 1, 52, 1, 2]);
        b[SNAME..SNAME + 4].copy_from_slice(&[52, 1, 2, 255]);
        assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::BadOverload);
    }

    #[test]
    fn bad_option_length() {
        // Guards the fixed-size options the typed accessors read.
        let cases: &[&[u8]] = &[
            &[53, 2, 1, 1],
            &[53, 0],
            &[53, 1, 1, 50, 3, 1, 2, 3],
            &[53, 1, 1, 54, 5, 1, 2, 3, 4, 5],
            &[53, 1, 1, 51, 0],
            &[53, 1, 1, 58, 2, 0, 0],
            &[53, 1, 1, 59, 8, 0, 0, 0, 0, 0, 0, 0, 0],
            &[53, 1, 1, 57, 4, 0, 0, 2, 64],
            &[53, 1, 1, 61, 1, 1],
            &[53, 1, 1, 55, 0],
            &[53, 1, 1, 52, 2, 1, 1],
        ];
        for opts in cases {
            let b = with_options(opts);
            assert_eq!(
                Packet::parse(&b).unwrap_err(),
                DropReason::BadOptionLength,
                "{opts:?}"
            );
        }
    }

    #[test]
    fn no_and_unknown_message_type() {
        // Guards RFC 2131 §3: plain BOOTP (no option 53) and types 0/9+ are not served.
        let b = with_options(&[12, 3, b'a', b'b', b'c']);
        assert_eq!(Packet::parse(&b).unwrap_err(), DropReason::NoMessageType);
        for t in [0u8, 9, 255] {
            let b = with_options(&[53, 1, t]);
            assert_eq!(
                Packet::parse(&b).unwrap_err(),
                DropReason::UnknownMessageType
            );
        }
    }

    #[test]
    fn lenient_area_without_end_and_pads() {
        // Guards leniency: PADs are skipped and an area may run out without END.
        let mut b = discover();
        b.truncate(OPTIONS);
        b.extend_from_slice(&[0, 0, 53, 1, 3, 0, 12, 1, b'h']);
        let p = Packet::parse(&b).expect("valid");
        assert_eq!(p.message_type(), MessageType::Request);
        assert_eq!(p.hostname(), Some(&b"h"[..]));
    }

    #[test]
    fn overload_order_file_then_sname() {
        // Guards RFC 2131 §4.1: options field, then `file`, then `sname`; message type may live there.
        let mut b = with_options(&[12, 1, b'a', 52, 1, 3]);
        b[FILE..FILE + 6].copy_from_slice(&[53, 1, 3, 15, 1, b'b']);
        b[FILE + 6] = 255;
        b[SNAME..SNAME + 4].copy_from_slice(&[17, 1, b'c', 255]);
        let p = Packet::parse(&b).expect("valid");
        assert_eq!(p.overload(), 3);
        assert_eq!(p.message_type(), MessageType::Request);
        let codes: Vec<u8> = p.options().map(|(c, _)| c).collect();
        assert_eq!(codes, vec![12, 52, 53, 15, 17]);
        let m = Message::from_packet(&p);
        assert_eq!(m.sname, [0; 64]);
        assert_eq!(m.file, [0; 128]);
        assert_eq!(
            m.options.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            vec![12, 53, 15, 17]
        );

        // sname-only overload skips `file`, which stays a file name.
        let mut b = with_options(&[53, 1, 1, 52, 1, 2]);
        b[FILE..FILE + 3].copy_from_slice(b"pxe");
        b[SNAME..SNAME + 3].copy_from_slice(&[12, 1, b'z']);
        let p = Packet::parse(&b).expect("valid");
        let m = Message::from_packet(&p);
        assert_eq!(&m.file[..3], b"pxe");
        assert_eq!(m.option(12), Some(&b"z"[..]));
        // Not overloaded, `file` is a name and its bytes are not options.
        let mut b = discover();
        b[FILE..FILE + 3].copy_from_slice(&[12, 1, b'q']);
        assert_eq!(Packet::parse(&b).expect("valid").hostname(), None);
    }

    #[test]
    fn typed_accessors() {
        // Guards the byte order and codes of the typed accessors.
        let b = with_options(&[
            53, 1, 3, 50, 4, 10, 0, 0, 7, 54, 4, 10, 0, 0, 1, 61, 7, 1, 0, 0x11, 0x22, 0x33, 0x44,
            0x55, 57, 2, 5, 220, 51, 4, 0, 0, 14, 16, 55, 3, 1, 3, 6, 82, 4, 1, 2, b'a', b'b', 12,
            2, b'p', b'c',
        ]);
        let p = Packet::parse(&b).expect("valid");
        assert_eq!(p.requested_ip(), Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(p.server_id(), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            p.client_id(),
            Some(&[1, 0, 0x11, 0x22, 0x33, 0x44, 0x55][..])
        );
        assert_eq!(p.max_message_size(), Some(1500));
        assert_eq!(p.lease_time_s(), Some(3600));
        assert_eq!(p.parameter_request_list(), Some(&[1, 3, 6][..]));
        assert_eq!(p.relay_agent_info(), Some(&[1, 2, b'a', b'b'][..]));
        assert_eq!(p.hostname(), Some(&b"pc"[..]));
        assert_eq!(p.reply_limit(), 1472);
    }

    #[test]
    fn reply_limit_rules() {
        // Guards RFC 2132 §9.10: 57 counts IP+UDP, < 576 is illegal, and we never exceed 1472.
        let limit = |v: Option<u16>| {
            let mut opts = vec![53, 1, 1];
            if let Some(v) = v {
                opts.extend_from_slice(&[57, 2]);
                opts.extend_from_slice(&v.to_be_bytes());
            }
            let b = with_options(&opts);
            Packet::parse(&b).expect("valid").reply_limit()
        };
        assert_eq!(limit(None), DEFAULT_MAX_DHCP_LEN);
        assert_eq!(limit(Some(0)), DEFAULT_MAX_DHCP_LEN);
        assert_eq!(limit(Some(575)), DEFAULT_MAX_DHCP_LEN);
        assert_eq!(limit(Some(576)), 548);
        assert_eq!(limit(Some(1000)), 972);
        assert_eq!(limit(Some(1500)), 1472);
        assert_eq!(limit(Some(9000)), 1472);
        assert_eq!(limit(Some(u16::MAX)), 1472);
    }

    #[test]
    fn reply_to_copies_and_clears_dirty_buffer() {
        // Guards RFC 2131 §4.3 table 3 and that a reused buffer leaks nothing into a reply.
        let mut req = with_options(&[53, 1, 3, 12, 2, b'p', b'c']);
        req[HOPS] = 2;
        req[SECS..SECS + 2].copy_from_slice(&[0, 9]);
        req[FLAGS..FLAGS + 2].copy_from_slice(&[0x80, 0]);
        req[CIADDR..CIADDR + 4].copy_from_slice(&[10, 0, 0, 9]);
        req[YIADDR..YIADDR + 4].copy_from_slice(&[10, 0, 0, 8]);
        req[SIADDR..SIADDR + 4].copy_from_slice(&[10, 0, 0, 7]);
        req[GIADDR..GIADDR + 4].copy_from_slice(&[10, 0, 0, 254]);
        // Garbage past hlen in chaddr, and names, must not be echoed.
        req[CHADDR + 6..CHADDR + 16].fill(0xEE);
        req[SNAME..SNAME + 3].copy_from_slice(b"srv");
        req[FILE..FILE + 3].copy_from_slice(b"pxe");
        let req = Packet::parse(&req).expect("valid");

        let mut buf = [0xAAu8; 600];
        let w = PacketWriter::reply_to(&mut buf, &req, MessageType::Ack, 576);
        let n = w.finish();
        assert_eq!(n, MIN_REPLY_LEN);
        let p = Packet::parse(&buf[..n]).expect("reply parses");
        assert_eq!(p.op(), 2);
        assert_eq!(p.htype(), 1);
        assert_eq!(p.hlen(), 6);
        assert_eq!(p.hops(), 0);
        assert_eq!(p.xid(), 0x1234_5678);
        assert_eq!(p.secs(), 0);
        assert!(p.broadcast());
        assert_eq!(p.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(p.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(p.siaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(p.giaddr(), Ipv4Addr::new(10, 0, 0, 254));
        assert_eq!(p.chaddr(), req.chaddr());
        assert_eq!(p.message_type(), MessageType::Ack);
        // Every byte of the reply is what the writer meant: no 0xAA anywhere.
        assert!(!buf[..n].contains(&0xAA), "{:?}", &buf[..n]);
        assert_eq!(&buf[CHADDR + 6..CHADDR + 16], &[0; 10]);
        assert_eq!(&buf[OPTIONS..OPTIONS + 4], &[53, 1, 5, 255]);
        assert_eq!(buf[n], 0xAA, "nothing written past the returned length");
    }

    #[test]
    fn finish_pads_to_300_or_limit() {
        // Guards RFC 1542 §2.1's minimum BOOTP size, but never past the caller's limit.
        let mut buf = [0xAAu8; 1500];
        let w = PacketWriter::new(&mut buf, 1500);
        assert_eq!(w.finish(), MIN_REPLY_LEN);
        assert!(buf[OPTIONS + 1..MIN_REPLY_LEN].iter().all(|&b| b == 0));
        let mut buf = [0xAAu8; 1500];
        let w = PacketWriter::new(&mut buf, 250);
        assert_eq!(w.finish(), 250);
        // Longer than 300: no padding, length is exactly the END.
        let mut buf = [0u8; 1500];
        let mut w = PacketWriter::new(&mut buf, 1500);
        w.push(43, &[7; 100]).expect("room");
        assert_eq!(w.finish(), OPTIONS + 102 + 1);
    }

    #[test]
    fn writer_spills_into_file_then_sname() {
        // Guards RFC 2132 §9.3 on the write side: a full options field overflows into `file`, then
        // `sname`, option 52 says so, and the result parses back to the same options in order.
        let mut buf = [0xAAu8; 400];
        let mut w = PacketWriter::new(&mut buf, 300);
        w.set_xid(7);
        let mut want = vec![];
        w.push_u8(53, 5).expect("room");
        want.push((53u8, vec![5u8]));
        for i in 0..30u8 {
            let data = vec![i; 10];
            if w.push(200 + i, &data).is_err() {
                break;
            }
            want.push((200 + i, data));
        }
        // 300 - 244 = 56 bytes in the field, 127 in file, 63 in sname: 3 + 4*12 = 51, then
        // 10 in file, 5 in sname.
        assert_eq!(want.len(), 1 + 4 + 10 + 5);
        assert_eq!(w.remaining(), 0);
        let n = w.finish();
        assert_eq!(n, 300);
        let p = Packet::parse(&buf[..n]).expect("parses");
        assert_eq!(p.overload(), 3);
        let m = Message::from_packet(&p);
        assert_eq!(m.options, want);
        assert_eq!(m.xid, 7);
        assert!(!buf[..n].contains(&0xAA));
    }

    #[test]
    fn writer_spill_respects_taken_file() {
        // Guards that a boot file name is never overwritten: options skip to `sname` (overload 2).
        let mut buf = [0u8; 300];
        let mut w = PacketWriter::new(&mut buf, 260);
        w.set_file(b"pxelinux.0").expect("fits");
        w.push_u8(53, 2).expect("room");
        w.push(12, &[b'x'; 10]).expect("room");
        w.push(15, &[b'y'; 20]).expect("sname");
        assert_eq!(w.set_sname(b"x"), Err(BuildError::NoRoom));
        let n = w.finish();
        let p = Packet::parse(&buf[..n]).expect("parses");
        assert_eq!(p.overload(), 2);
        assert_eq!(&p.file()[..10], b"pxelinux.0");
        assert_eq!(p.option(15), Some(&[b'y'; 20][..]));
    }

    #[test]
    fn no_room_leaves_message_unchanged() {
        // Guards the all-or-nothing push: a failed push writes nothing anywhere.
        let mut buf = [0u8; 244];
        let mut w = PacketWriter::new(&mut buf, 244);
        w.push_u8(53, 5).expect("file");
        assert_eq!(w.push(43, &[1; 200]), Err(BuildError::NoRoom));
        assert_eq!(w.push(52, &[1]), Err(BuildError::NoRoom));
        assert_eq!(w.push(0, &[]), Err(BuildError::NoRoom));
        let n = w.finish();
        let mut before = [0u8; 244];
        let mut w = PacketWriter::new(&mut before, 244);
        w.push_u8(53, 5).expect("file");
        assert_eq!(w.finish(), n);
        assert_eq!(buf, before);
    }

    #[test]
    fn long_options_split_rfc3396() {
        // Guards RFC 3396: 600 bytes become 255 + 255 + 90, consecutive, and read back in order.
        let data: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8).collect();
        let mut buf = [0u8; 1500];
        let mut w = PacketWriter::new(&mut buf, 1500);
        w.push_u8(53, 5).expect("room");
        w.push(43, &data).expect("room");
        let ips: Vec<Ipv4Addr> = (0..70u8).map(|i| Ipv4Addr::new(10, 0, i, 1)).collect();
        w.push_ips(6, &ips).expect("room");
        let n = w.finish();
        let p = Packet::parse(&buf[..n]).expect("parses");
        let parts: Vec<&[u8]> = p.options().filter(|o| o.0 == 43).map(|o| o.1).collect();
        assert_eq!(
            parts.iter().map(|d| d.len()).collect::<Vec<_>>(),
            vec![255, 255, 90]
        );
        assert_eq!(parts.concat(), data);
        let dns: Vec<u8> = p
            .options()
            .filter(|o| o.0 == 6)
            .flat_map(|o| o.1.to_vec())
            .collect();
        let want: Vec<u8> = ips.iter().flat_map(|a| a.octets()).collect();
        assert_eq!(dns, want);
        assert_eq!(p.option(6).map(<[u8]>::len), Some(255));
    }

    #[test]
    fn message_encode_round_trip() {
        // Guards Message <-> wire for a typical ACK including an empty option.
        let m = Message {
            op: 2,
            htype: 1,
            hlen: 6,
            hops: 1,
            xid: 42,
            secs: 3,
            flags: 0x8000,
            ciaddr: Ipv4Addr::new(1, 2, 3, 4),
            yiaddr: Ipv4Addr::new(10, 0, 0, 5),
            siaddr: Ipv4Addr::new(10, 0, 0, 1),
            giaddr: Ipv4Addr::new(10, 0, 0, 254),
            chaddr: [9; 16],
            sname: [0; 64],
            file: [0; 128],
            options: vec![(53, vec![5]), (1, vec![255, 255, 255, 0]), (80, vec![])],
        };
        let mut buf = [0u8; 576];
        let n = m.encode(&mut buf).expect("fits");
        let p = Packet::parse(&buf[..n]).expect("parses");
        assert_eq!(Message::from_packet(&p), m);
        assert_eq!(m.encode(&mut [0u8; 243]), Err(BuildError::NoRoom));
    }
}
