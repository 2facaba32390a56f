//! Failover options (draft-12 §6.2, §12; [MS-DHCPF] §2.2.1–§2.2.12): the code table, the value
//! enumerations, and typed accessors over a validated option area.
//!
//! Every option is `code: u16 | len: u16 | value[len]`, big-endian. The one [`TABLE`] below
//! names each known code and its value shape. [`super::FailoverMessage::parse`] checks the shape
//! of every draft-12 option (codes 1–29) it meets, so their accessors here are infallible. The
//! Microsoft options (30–41) are *not* checked by `parse`: code 30 collides with Infoblox's
//! client-hostname option (per the Wireshark dissector), and which dialect a peer speaks is the
//! failover core's per-peer decision, so a malformed MS option must not make a draft-12 message
//! undecodable. Their fixed-size accessors therefore return `Result<Option<T>, FrameError>`.

use std::net::Ipv4Addr;

use super::FrameError;

/// Option codes. Draft-12 renumbered every option alphabetically (§12); ISC 4.x and Wireshark
/// use the same numbers. 30–41 are [MS-DHCPF] §2.2.1–§2.2.12.
pub mod code {
    pub const ADDRESSES_TRANSFERRED: u16 = 1;
    pub const ASSIGNED_IP_ADDRESS: u16 = 2;
    pub const BINDING_STATUS: u16 = 3;
    pub const CLIENT_IDENTIFIER: u16 = 4;
    pub const CLIENT_HARDWARE_ADDRESS: u16 = 5;
    pub const CLIENT_LAST_TRANSACTION_TIME: u16 = 6;
    pub const CLIENT_REPLY_OPTIONS: u16 = 7;
    pub const CLIENT_REQUEST_OPTIONS: u16 = 8;
    pub const DDNS: u16 = 9;
    pub const DELAYED_SERVICE_PARAMETER: u16 = 10;
    pub const HASH_BUCKET_ASSIGNMENT: u16 = 11;
    pub const IP_FLAGS: u16 = 12;
    pub const LEASE_EXPIRATION_TIME: u16 = 13;
    pub const MAX_UNACKED_BNDUPD: u16 = 14;
    pub const MCLT: u16 = 15;
    pub const MESSAGE: u16 = 16;
    pub const MESSAGE_DIGEST: u16 = 17;
    pub const POTENTIAL_EXPIRATION_TIME: u16 = 18;
    pub const RECEIVE_TIMER: u16 = 19;
    pub const PROTOCOL_VERSION: u16 = 20;
    pub const REJECT_REASON: u16 = 21;
    pub const RELATIONSHIP_NAME: u16 = 22;
    pub const SERVER_FLAGS: u16 = 23;
    pub const SERVER_STATE: u16 = 24;
    pub const START_TIME_OF_STATE: u16 = 25;
    pub const TLS_REPLY: u16 = 26;
    pub const TLS_REQUEST: u16 = 27;
    pub const VENDOR_CLASS_IDENTIFIER: u16 = 28;
    pub const VENDOR_SPECIFIC_OPTIONS: u16 = 29;
    // [MS-DHCPF] §2.2.1–§2.2.12.
    pub const MS_SCOPE_ID_LIST: u16 = 30;
    pub const MS_CLIENT_NAME: u16 = 31;
    pub const MS_CLIENT_DESCRIPTION: u16 = 32;
    pub const MS_CLIENT_SUBNET_MASK: u16 = 33;
    pub const MS_SERVER_IP: u16 = 34;
    pub const MS_SERVER_NAME: u16 = 35;
    pub const MS_CLIENT_TYPE: u16 = 36;
    pub const MS_CLIENT_NAP_STATUS: u16 = 37;
    pub const MS_CLIENT_NAP_PROBATION: u16 = 38;
    pub const MS_CLIENT_NAP_CAPABLE: u16 = 39;
    pub const MS_CLIENT_MATCHED_POLICY: u16 = 40;
    pub const MS_EXTENDED_ADDRESS_STATE: u16 = 41;
}

/// The value shape of a known option: which lengths are legal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Exactly `n` bytes.
    Fixed(u16),
    /// Either length (IP-flags: 2 per draft/ISC, 1 from Windows; MS NAP status: see code 37).
    Either(u16, u16),
    /// At least `n` bytes.
    AtLeast(u16),
    /// A whole number of `n`-byte items (possibly none).
    MultipleOf(u16),
    /// Any length, including 0.
    Any,
}

impl Shape {
    pub const fn allows(self, len: usize) -> bool {
        match self {
            Shape::Fixed(n) => len == n as usize,
            Shape::Either(a, b) => len == a as usize || len == b as usize,
            Shape::AtLeast(n) => len >= n as usize,
            Shape::MultipleOf(n) => len % n as usize == 0,
            Shape::Any => true,
        }
    }
}

/// One row of [`TABLE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionSpec {
    pub code: u16,
    /// The draft-12 / [MS-DHCPF] name, for logs.
    pub name: &'static str,
    pub shape: Shape,
}

const fn row(code: u16, name: &'static str, shape: Shape) -> OptionSpec {
    OptionSpec { code, name, shape }
}

/// Every known option, in code order (`TABLE[i].code == i + 1`, checked at compile time).
pub const TABLE: [OptionSpec; 41] = [
    row(1, "addresses-transferred", Shape::Fixed(4)),
    row(2, "assigned-IP-address", Shape::Fixed(4)),
    row(3, "binding-status", Shape::Fixed(1)),
    row(4, "client-identifier", Shape::Any),
    // htype then chaddr; the htype byte must be there.
    row(5, "client-hardware-address", Shape::AtLeast(1)),
    row(6, "client-last-transaction-time", Shape::Fixed(4)),
    // 4-byte magic cookie, then DHCP options.
    row(7, "client-reply-options", Shape::AtLeast(4)),
    row(8, "client-request-options", Shape::AtLeast(4)),
    // u16 flags then the FQDN in DNS wire format.
    row(9, "DDNS", Shape::AtLeast(2)),
    row(10, "delayed-service-parameter", Shape::Fixed(1)),
    row(11, "hash-bucket-assignment", Shape::Fixed(32)),
    // Draft figure says 1, its field is 16 bits; ISC sends 2, Windows 1 (spec note §4.2).
    row(12, "IP-flags", Shape::Either(2, 1)),
    row(13, "lease-expiration-time", Shape::Fixed(4)),
    row(14, "max-unacked-bndupd", Shape::Fixed(4)),
    row(15, "MCLT", Shape::Fixed(4)),
    row(16, "message", Shape::Any),
    // u8 digest type then the digest.
    row(17, "message-digest", Shape::AtLeast(1)),
    row(18, "potential-expiration-time", Shape::Fixed(4)),
    row(19, "receive-timer", Shape::Fixed(4)),
    row(20, "protocol-version", Shape::Fixed(1)),
    row(21, "reject-reason", Shape::Fixed(1)),
    row(22, "relationship-name", Shape::Any),
    row(23, "server-flags", Shape::Fixed(1)),
    row(24, "server-state", Shape::Fixed(1)),
    row(25, "start-time-of-state", Shape::Fixed(4)),
    row(26, "TLS-reply", Shape::Fixed(1)),
    row(27, "TLS-request", Shape::Fixed(1)),
    row(28, "vendor-class-identifier", Shape::Any),
    row(29, "vendor-specific-options", Shape::Any),
    // [MS-DHCPF] §2.2.1: IPv4 scope ids in host (little-endian) byte order.
    row(30, "ms-scope-id-list", Shape::MultipleOf(4)),
    row(31, "ms-client-name", Shape::Any),
    row(32, "ms-client-description", Shape::Any),
    row(33, "ms-client-subnet-mask", Shape::Fixed(4)),
    row(34, "ms-server-ip", Shape::Fixed(4)),
    row(35, "ms-server-name", Shape::Any),
    row(36, "ms-client-type", Shape::Fixed(1)),
    // SEED vs SPEC NOTE: [MS-DHCPF] §2.2.8 says "OptionLength MUST be set to 0x04" but
    // "OptionValue (1 byte)"; the spec note (and Wireshark) take 1. Following the seed means
    // accepting its stated length 4 as well: with 4 bytes the value is read as a big-endian u32
    // (network order, §2.2) and must fit in a byte.
    row(37, "ms-client-nap-status", Shape::Either(1, 4)),
    row(38, "ms-client-nap-probation", Shape::Fixed(4)),
    row(39, "ms-client-nap-capable", Shape::Fixed(1)),
    row(40, "ms-client-matched-policy", Shape::Any),
    row(41, "ms-extended-address-state", Shape::Fixed(4)),
];

const _: () = {
    let mut i = 0;
    while i < TABLE.len() {
        assert!(TABLE[i].code as usize == i + 1);
        i += 1;
    }
};

/// Highest draft-12 code; `parse` checks shapes up to here.
pub(super) const LAST_DRAFT_CODE: u16 = code::VENDOR_SPECIFIC_OPTIONS;

/// The table row of a known code.
pub fn spec(code: u16) -> Option<&'static OptionSpec> {
    TABLE.get(usize::from(code).checked_sub(1)?)
}

/// The option's name for logs, `"unknown"` for codes outside the table.
pub fn name(code: u16) -> &'static str {
    spec(code).map_or("unknown", |s| s.name)
}

/// Whether `parse` insists on this code's shape (draft-12 options only, see the module docs).
pub(super) fn checked_at_parse(code: u16) -> bool {
    (1..=LAST_DRAFT_CODE).contains(&code)
}

/// Wire enumerations are open sets: an unknown value stays decodable as `Unknown(v)` and
/// re-encodes to itself (`rustls` `enum_builder!`, smoltcp `enum_with_unknown!`).
macro_rules! open_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $value:literal => $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)*
            /// A value this table does not name, kept as received.
            Unknown(u8),
        }

        impl $name {
            /// Every named value, in wire order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant,)*];

            pub const fn from_u8(v: u8) -> Self {
                match v {
                    $($value => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }

            pub const fn to_u8(self) -> u8 {
                match self {
                    $($name::$variant => $value,)*
                    $name::Unknown(v) => v,
                }
            }

            /// The draft's name, for logs; `"unknown"` for `Unknown`.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                    $name::Unknown(_) => "unknown",
                }
            }
        }

        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                Self::from_u8(v)
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v.to_u8()
            }
        }
    };
}
pub(super) use open_enum;

open_enum! {
    /// binding-status, option 3 (draft §12.3; ISC `FTS_*` identical). Windows peers put a bit
    /// field with other meanings in the same byte: see [`ms`].
    pub enum BindingStatus {
        Free = 1 => "FREE",
        Active = 2 => "ACTIVE",
        Expired = 3 => "EXPIRED",
        Released = 4 => "RELEASED",
        Abandoned = 5 => "ABANDONED",
        Reset = 6 => "RESET",
        Backup = 7 => "BACKUP",
    }
}

open_enum! {
    /// server-state, option 24 (draft §12.24). RECOVER-WAIT has no draft code; ISC sends 254.
    pub enum ServerState {
        UnknownState = 0 => "unknown-state",
        Startup = 1 => "STARTUP",
        Normal = 2 => "NORMAL",
        CommunicationsInterrupted = 3 => "COMMUNICATIONS-INTERRUPTED",
        PartnerDown = 4 => "PARTNER-DOWN",
        PotentialConflict = 5 => "POTENTIAL-CONFLICT",
        Recover = 6 => "RECOVER",
        Paused = 7 => "PAUSED",
        Shutdown = 8 => "SHUTDOWN",
        RecoverDone = 9 => "RECOVER-DONE",
        ResolutionInterrupted = 10 => "RESOLUTION-INTERRUPTED",
        ConflictDone = 11 => "CONFLICT-DONE",
        RecoverWait = 254 => "RECOVER-WAIT",
    }
}

open_enum! {
    /// reject-reason, option 21 (draft §12.21; ISC `FTR_*` identical).
    pub enum RejectReason {
        IllegalIpAddress = 1 => "illegal IP address",
        FatalConflict = 2 => "fatal conflict exists",
        MissingBindingInformation = 3 => "missing binding information",
        TimeMismatch = 4 => "connection rejected, time mismatch too great",
        InvalidMclt = 5 => "connection rejected, invalid MCLT",
        UnknownReason = 6 => "connection rejected, unknown reason",
        DuplicateConnection = 7 => "connection rejected, duplicate connection",
        InvalidPartner = 8 => "connection rejected, invalid failover partner",
        TlsNotSupported = 9 => "TLS not supported",
        TlsNotConfigured = 10 => "TLS supported but not configured",
        TlsRequired = 11 => "TLS required but not supported by partner",
        DigestNotSupported = 12 => "message digest not supported",
        DigestNotConfigured = 13 => "message digest not configured",
        ProtocolVersionMismatch = 14 => "protocol version mismatch",
        OutdatedBindingInformation = 15 => "outdated binding information",
        LessCriticalBindingInformation = 16 => "less critical binding information",
        NoTraffic = 17 => "no traffic within sufficient time",
        HashBucketConflict = 18 => "hash bucket assignment conflict",
        IpNotReserved = 19 => "IP not reserved on this server",
        DigestFailed = 20 => "message digest failed to compare",
        MissingDigest = 21 => "missing message digest",
        NoMatchingReason = 254 => "unknown: error does not match any reason",
    }
}

/// server-flags bit 0 (draft §12.23): the sender is in STARTUP.
pub const SERVER_FLAG_STARTUP: u8 = 0x01;
/// IP-flags (draft §12.12), counted from the least-significant bit (not Wireshark's 0x80/0x40).
pub const IP_FLAG_RESERVED: u16 = 0x0001;
pub const IP_FLAG_BOOTP: u16 = 0x0002;
/// DDNS flags (draft §12.9).
pub const DDNS_FLAG_FORWARD_DONE: u16 = 0x0001;
pub const DDNS_FLAG_SERVER_CONTROLS_A: u16 = 0x0002;
pub const DDNS_FLAG_REVERSE_DONE: u16 = 0x0004;
pub const DDNS_FLAG_SERVER_CONTROLS_PTR: u16 = 0x0008;
/// message-digest type 1 (draft §12.17). Windows uses 2 for HMAC-SHA256 (Wireshark; [MS-DHCPF]
/// §2.2 names the algorithm, not the type byte).
pub const DIGEST_HMAC_MD5: u8 = 1;
pub const DIGEST_HMAC_SHA256: u8 = 2;
/// Digest bytes after the type byte: 16 for HMAC-MD5 (draft §11.1), 32 for HMAC-SHA256.
pub const DIGEST_HMAC_MD5_LEN: usize = 16;
pub const DIGEST_HMAC_SHA256_LEN: usize = 32;
/// The magic cookie that starts client-request/reply-options (draft §12.7, §12.8).
pub const DHCP_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// Windows' meanings of the IP-flags and binding-status bytes ([MS-DHCPF] §3.1.4.2).
pub mod ms {
    pub const IP_FLAG_ADDRESS_DELETED: u16 = 0x1;
    pub const IP_FLAG_ADDRESS_RELEASED: u16 = 0x2;
    pub const IP_FLAG_DELETED_COMM_DOWN: u16 = 0x4;
    /// Lease-update binding status: bits 0–1 address state.
    pub const STATE_MASK: u8 = 0x03;
    pub const STATE_OFFERED: u8 = 0x0;
    pub const STATE_ACTIVE: u8 = 0x1;
    pub const STATE_DECLINED: u8 = 0x2;
    pub const STATE_DOOM: u8 = 0x3;
    /// Bits 2–3: name protection / DHCID (RFC 4701); field value 0..=3 shifted by 2.
    pub const DHCID_MASK: u8 = 0x0C;
    pub const DHCID_SHIFT: u32 = 2;
    /// Bits 4–7: DNS flags, field values 0x1/0x2/0x4/0x8 shifted by 4 (our reading of the
    /// seed's bit diagram; not confirmed by a capture).
    pub const DNS_MASK: u8 = 0xF0;
    pub const DNS_SHIFT: u32 = 4;
    pub const DNS_CLEANUP: u8 = 0x1;
    pub const DNS_BOTH_REC: u8 = 0x2;
    pub const DNS_UNREGISTERED: u8 = 0x4;
    pub const DNS_DELETED: u8 = 0x8;
    /// Address-redistribution binding status (IP-flags = 0).
    pub const ADDRESS_FREE: u8 = 0x1;
    pub const ADDRESS_BACKUP: u8 = 0x2;
    pub const ADDRESS_RECONCILE: u8 = 0x4;
    pub const ADDRESS_FREE_UPDATE: u8 = 0x5;
    pub const ADDRESS_BACKUP_UPDATE: u8 = 0x6;
    /// Option 36 client types (§2.2.7).
    pub const CLIENT_TYPE_UNSPECIFIED: u8 = 0x00;
    pub const CLIENT_TYPE_DHCP: u8 = 0x01;
    pub const CLIENT_TYPE_BOOTP: u8 = 0x02;
    pub const CLIENT_TYPE_BOTH: u8 = 0x03;
    pub const CLIENT_TYPE_RESERVATION_FLAG: u8 = 0x04;
    pub const CLIENT_TYPE_NONE: u8 = 0x64;
    /// Option 41 bit 0 (§3.1.4.2).
    pub const EX_DISABLE_PTR_RR: u32 = 0x0000_0001;
}

/// client-hardware-address, option 5: ARP hardware type, then `chaddr` (draft §12.5). Windows
/// is decoded by Wireshark as a 4-byte scope id before these; that is the core's call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardwareAddress<'a> {
    pub htype: u8,
    pub chaddr: &'a [u8],
}

/// DDNS, option 9: flags, then the FQDN in DNS wire format (draft §12.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ddns<'a> {
    pub flags: u16,
    pub fqdn: &'a [u8],
}

/// message-digest, option 17: digest type, then the digest bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest<'a> {
    pub kind: u8,
    pub digest: &'a [u8],
}

/// A validated run of whole options (see the parse contract in `super`): an iterator of
/// `(code, value)` in wire order, plus typed accessors that read the **first** instance of a
/// code. In a batched BNDUPD/BNDACK use [`Options::transactions`] to read each binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options<'a> {
    /// Whole options only: every `code | len | value` lies inside (established by `parse`).
    pub(super) area: &'a [u8],
}

/// Takes the next option off the front of `area`. `None` at the end; `Some(Err)` when a header
/// or value runs past the end (the area is then emptied, so iteration ends).
pub(super) fn next_option<'a>(area: &mut &'a [u8]) -> Option<Result<(u16, &'a [u8]), ()>> {
    if area.is_empty() {
        return None;
    }
    let taken = area.split_at_checked(4).and_then(|(head, rest)| {
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]);
        rest.split_at_checked(usize::from(len))
            .map(|(value, rest)| (code, value, rest))
    });
    match taken {
        Some((code, value, rest)) => {
            *area = rest;
            Some(Ok((code, value)))
        }
        None => {
            *area = &[];
            Some(Err(()))
        }
    }
}

fn be_u32(v: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes)
}

fn ip(v: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from)
}

fn one(v: &[u8]) -> Option<u8> {
    match v {
        [b] => Some(*b),
        _ => None,
    }
}

impl<'a> Options<'a> {
    /// An empty option run.
    pub const EMPTY: Options<'static> = Options { area: &[] };

    /// The raw bytes of these options (headers included).
    pub fn bytes(&self) -> &'a [u8] {
        self.area
    }

    pub fn is_empty(&self) -> bool {
        self.area.is_empty()
    }

    /// Every option in wire order, unknown codes included.
    pub fn iter(&self) -> OptionIter<'a> {
        OptionIter { area: self.area }
    }

    /// The value of the first option with this code.
    pub fn get(&self, code: u16) -> Option<&'a [u8]> {
        self.iter().find(|&(c, _)| c == code).map(|(_, v)| v)
    }

    /// How many options carry this code.
    pub fn count(&self, code: u16) -> usize {
        self.iter().filter(|&(c, _)| c == code).count()
    }

    /// The first code that appears twice, if any. Draft §6.2 allows each option once per
    /// message except per transaction in BNDUPD/BNDACK; ISC drops the connection on *any*
    /// repeat (spec note §4.1), so a core talking to ISC checks this on the whole message.
    pub fn repeated_code(&self) -> Option<u16> {
        let mut seen = [0u64; 1024]; // one bit per u16 code: 8 KiB on the stack, no allocation
        for (c, _) in self.iter() {
            let (word, bit) = (usize::from(c) / 64, c % 64);
            if seen[word] & (1 << bit) != 0 {
                return Some(c);
            }
            seen[word] |= 1 << bit;
        }
        None
    }

    /// The options before the first assigned-IP-address (draft §6.3 "non-address options").
    pub fn leading(&self) -> Options<'a> {
        let mut rest = self.area;
        let mut before = self.area;
        loop {
            let at = rest;
            match next_option(&mut rest) {
                Some(Ok((code::ASSIGNED_IP_ADDRESS, _))) | None | Some(Err(())) => {
                    before = &before[..before.len() - at.len()];
                    return Options { area: before };
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The binding transactions of a BNDUPD/BNDACK (draft §6.3): each starts at an
    /// assigned-IP-address option and runs to the next one. Options after the last binding
    /// (the draft's "trailing options") cannot be told apart from it and belong to it.
    pub fn transactions(&self) -> Transactions<'a> {
        let lead = self.leading().area.len();
        Transactions {
            area: &self.area[lead..],
        }
    }

    // --- draft-12 options: shape checked by `parse`, so these cannot fail ---

    /// 1 addresses-transferred (POOLRESP).
    pub fn addresses_transferred(&self) -> Option<u32> {
        self.get(code::ADDRESSES_TRANSFERRED).and_then(be_u32)
    }

    /// 2 assigned-IP-address (first option of each BNDUPD/BNDACK transaction).
    pub fn assigned_ip_address(&self) -> Option<Ipv4Addr> {
        self.get(code::ASSIGNED_IP_ADDRESS).and_then(ip)
    }

    /// 3 binding-status, draft meanings. Windows peers: read the raw byte with
    /// [`Options::binding_status_raw`] and [`ms`].
    pub fn binding_status(&self) -> Option<BindingStatus> {
        self.binding_status_raw().map(BindingStatus::from_u8)
    }

    pub fn binding_status_raw(&self) -> Option<u8> {
        self.get(code::BINDING_STATUS).and_then(one)
    }

    /// 4 client-identifier: the raw value of DHCP option 61, type byte included.
    pub fn client_identifier(&self) -> Option<&'a [u8]> {
        self.get(code::CLIENT_IDENTIFIER)
    }

    /// 5 client-hardware-address.
    pub fn client_hardware_address(&self) -> Option<HardwareAddress<'a>> {
        let (&htype, chaddr) = self.get(code::CLIENT_HARDWARE_ADDRESS)?.split_first()?;
        Some(HardwareAddress { htype, chaddr })
    }

    /// 6 client-last-transaction-time, seconds since 1970 (sender's clock).
    pub fn client_last_transaction_time(&self) -> Option<u32> {
        self.get(code::CLIENT_LAST_TRANSACTION_TIME)
            .and_then(be_u32)
    }

    /// 7 client-reply-options: the 4-byte cookie, then DHCP options (raw).
    pub fn client_reply_options(&self) -> Option<&'a [u8]> {
        self.get(code::CLIENT_REPLY_OPTIONS)
    }

    /// 8 client-request-options: the 4-byte cookie, then DHCP options (raw).
    pub fn client_request_options(&self) -> Option<&'a [u8]> {
        self.get(code::CLIENT_REQUEST_OPTIONS)
    }

    /// 9 DDNS (draft name "FTDDNS" in ISC).
    pub fn ddns(&self) -> Option<Ddns<'a>> {
        let v = self.get(code::DDNS)?;
        let (flags, fqdn) = v.split_at_checked(2)?;
        Some(Ddns {
            flags: u16::from_be_bytes([flags[0], flags[1]]),
            fqdn,
        })
    }

    /// 10 delayed-service-parameter, seconds.
    pub fn delayed_service_parameter(&self) -> Option<u8> {
        self.get(code::DELAYED_SERVICE_PARAMETER).and_then(one)
    }

    /// 11 hash-bucket-assignment: the 256-bit bitmap (bucket b → byte b>>3, bit b&7 from the
    /// LSB). Polarity differs between the draft and ISC; see the spec note §14.
    pub fn hash_bucket_assignment(&self) -> Option<&'a [u8; 32]> {
        self.get(code::HASH_BUCKET_ASSIGNMENT)
            .and_then(|v| <&[u8; 32]>::try_from(v).ok())
    }

    /// 12 IP-flags, 2 bytes (draft, ISC) or 1 byte (Windows), widened to u16.
    pub fn ip_flags(&self) -> Option<u16> {
        match *self.get(code::IP_FLAGS)? {
            [a, b] => Some(u16::from_be_bytes([a, b])),
            [a] => Some(u16::from(a)),
            _ => None,
        }
    }

    /// 13 lease-expiration-time.
    pub fn lease_expiration_time(&self) -> Option<u32> {
        self.get(code::LEASE_EXPIRATION_TIME).and_then(be_u32)
    }

    /// 14 max-unacked-bndupd.
    pub fn max_unacked_bndupd(&self) -> Option<u32> {
        self.get(code::MAX_UNACKED_BNDUPD).and_then(be_u32)
    }

    /// 15 MCLT, seconds.
    pub fn mclt_s(&self) -> Option<u32> {
        self.get(code::MCLT).and_then(be_u32)
    }

    /// 16 message: human-readable text as sent (not checked for UTF-8).
    pub fn message(&self) -> Option<&'a [u8]> {
        self.get(code::MESSAGE)
    }

    /// 17 message-digest. To sign or verify, use `FailoverMessage::digest_input`.
    pub fn message_digest(&self) -> Option<Digest<'a>> {
        let (&kind, digest) = self.get(code::MESSAGE_DIGEST)?.split_first()?;
        Some(Digest { kind, digest })
    }

    /// 18 potential-expiration-time.
    pub fn potential_expiration_time(&self) -> Option<u32> {
        self.get(code::POTENTIAL_EXPIRATION_TIME).and_then(be_u32)
    }

    /// 19 receive-timer, seconds.
    pub fn receive_timer_s(&self) -> Option<u32> {
        self.get(code::RECEIVE_TIMER).and_then(be_u32)
    }

    /// 20 protocol-version (1).
    pub fn protocol_version(&self) -> Option<u8> {
        self.get(code::PROTOCOL_VERSION).and_then(one)
    }

    /// 21 reject-reason.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        self.get(code::REJECT_REASON)
            .and_then(one)
            .map(RejectReason::from_u8)
    }

    /// 22 relationship-name: ASCII from ISC, UTF-16LE from Windows (raw bytes here).
    pub fn relationship_name(&self) -> Option<&'a [u8]> {
        self.get(code::RELATIONSHIP_NAME)
    }

    /// 23 server-flags.
    pub fn server_flags(&self) -> Option<u8> {
        self.get(code::SERVER_FLAGS).and_then(one)
    }

    /// 24 server-state.
    pub fn server_state(&self) -> Option<ServerState> {
        self.get(code::SERVER_STATE)
            .and_then(one)
            .map(ServerState::from_u8)
    }

    /// 25 start-time-of-state.
    pub fn start_time_of_state(&self) -> Option<u32> {
        self.get(code::START_TIME_OF_STATE).and_then(be_u32)
    }

    /// 26 TLS-reply.
    pub fn tls_reply(&self) -> Option<u8> {
        self.get(code::TLS_REPLY).and_then(one)
    }

    /// 27 TLS-request.
    pub fn tls_request(&self) -> Option<u8> {
        self.get(code::TLS_REQUEST).and_then(one)
    }

    /// 28 vendor-class-identifier (ISC `isc-4.4.3-P1`; Windows UTF-16LE).
    pub fn vendor_class_identifier(&self) -> Option<&'a [u8]> {
        self.get(code::VENDOR_CLASS_IDENTIFIER)
    }

    /// 29 vendor-specific-options: nested options in the vendor's space, raw (draft: ignore
    /// them unless a vendor-class-identifier is present).
    pub fn vendor_specific_options(&self) -> Option<&'a [u8]> {
        self.get(code::VENDOR_SPECIFIC_OPTIONS)
    }

    // --- [MS-DHCPF] options: not checked by `parse` (see the module docs) ---

    fn ms_checked(&self, c: u16) -> Result<Option<&'a [u8]>, FrameError> {
        match self.get(c) {
            None => Ok(None),
            Some(v) if spec(c).is_some_and(|s| s.shape.allows(v.len())) => Ok(Some(v)),
            Some(v) => Err(FrameError::BadOptionLength {
                code: c,
                // A value inside a parsed message is at most u16::MAX long.
                len: u16::try_from(v.len()).unwrap_or(u16::MAX),
            }),
        }
    }

    /// 30 Scope ID List (§2.2.1): IPv4 subnet addresses in host (little-endian) order, e.g.
    /// 192.168.1.0 is `00 01 A8 C0` (§4.1).
    pub fn ms_scope_ids(&self) -> Result<Option<ScopeIds<'a>>, FrameError> {
        Ok(self
            .ms_checked(code::MS_SCOPE_ID_LIST)?
            .map(|v| ScopeIds { rest: v }))
    }

    /// 31 Client Name (§2.2.2): UTF-16LE with a terminating NUL (raw; see [`utf16le_string`]).
    pub fn ms_client_name(&self) -> Option<&'a [u8]> {
        self.get(code::MS_CLIENT_NAME)
    }

    /// 32 Client Description (§2.2.3): UTF-16LE + NUL.
    pub fn ms_client_description(&self) -> Option<&'a [u8]> {
        self.get(code::MS_CLIENT_DESCRIPTION)
    }

    /// 33 Client Subnet Mask (§2.2.4), network order.
    pub fn ms_client_subnet_mask(&self) -> Result<Option<Ipv4Addr>, FrameError> {
        Ok(self.ms_checked(code::MS_CLIENT_SUBNET_MASK)?.and_then(ip))
    }

    /// 34 Server IP (§2.2.5), network order.
    pub fn ms_server_ip(&self) -> Result<Option<Ipv4Addr>, FrameError> {
        Ok(self.ms_checked(code::MS_SERVER_IP)?.and_then(ip))
    }

    /// 35 Server Name (§2.2.6): UTF-16LE + NUL.
    pub fn ms_server_name(&self) -> Option<&'a [u8]> {
        self.get(code::MS_SERVER_NAME)
    }

    /// 36 Client Type (§2.2.7), see `ms::CLIENT_TYPE_*`.
    pub fn ms_client_type(&self) -> Result<Option<u8>, FrameError> {
        Ok(self.ms_checked(code::MS_CLIENT_TYPE)?.and_then(one))
    }

    /// 37 Client NAP Status (§2.2.8): 1 byte, or 4 bytes (the seed's stated length) holding a
    /// big-endian value that must fit in a byte.
    pub fn ms_client_nap_status(&self) -> Result<Option<u8>, FrameError> {
        let Some(v) = self.ms_checked(code::MS_CLIENT_NAP_STATUS)? else {
            return Ok(None);
        };
        match *v {
            [b] => Ok(Some(b)),
            [0, 0, 0, b] => Ok(Some(b)),
            _ => Err(FrameError::BadOptionLength {
                code: code::MS_CLIENT_NAP_STATUS,
                len: 4,
            }),
        }
    }

    /// 38 Client NAP Probation (§2.2.9): 4 bytes, described as a FILETIME (100 ns since 1601)
    /// although a FILETIME needs 8; returned raw, network order.
    pub fn ms_client_nap_probation(&self) -> Result<Option<u32>, FrameError> {
        Ok(self
            .ms_checked(code::MS_CLIENT_NAP_PROBATION)?
            .and_then(be_u32))
    }

    /// 39 Client NAP Capable (§2.2.10): 0 false, 1 true (other values returned as is).
    pub fn ms_client_nap_capable(&self) -> Result<Option<u8>, FrameError> {
        Ok(self.ms_checked(code::MS_CLIENT_NAP_CAPABLE)?.and_then(one))
    }

    /// 40 Client Matched Policy (§2.2.11): UTF-16LE + NUL.
    pub fn ms_client_matched_policy(&self) -> Option<&'a [u8]> {
        self.get(code::MS_CLIENT_MATCHED_POLICY)
    }

    /// 41 Extended Address State (§2.2.12, bits in §3.1.4.2), network order.
    pub fn ms_extended_address_state(&self) -> Result<Option<u32>, FrameError> {
        Ok(self
            .ms_checked(code::MS_EXTENDED_ADDRESS_STATE)?
            .and_then(be_u32))
    }
}

impl<'a> IntoIterator for Options<'a> {
    type Item = (u16, &'a [u8]);
    type IntoIter = OptionIter<'a>;

    fn into_iter(self) -> OptionIter<'a> {
        self.iter()
    }
}

/// `(code, value)` pairs in wire order.
#[derive(Clone, Debug)]
pub struct OptionIter<'a> {
    area: &'a [u8],
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // `parse` proved the area holds whole options, so `Err` cannot occur; ending the
        // iteration is the infallible answer should it ever do.
        next_option(&mut self.area)?.ok()
    }
}

/// The transactions of a BNDUPD/BNDACK, see [`Options::transactions`].
#[derive(Clone, Debug)]
pub struct Transactions<'a> {
    /// Starts at an assigned-IP-address option, or is empty.
    area: &'a [u8],
}

impl<'a> Iterator for Transactions<'a> {
    type Item = Options<'a>;

    fn next(&mut self) -> Option<Options<'a>> {
        if self.area.is_empty() {
            return None;
        }
        let start = self.area;
        let mut rest = self.area;
        // The first option is the assigned-IP-address that starts this transaction.
        next_option(&mut rest)?.ok()?;
        loop {
            let at = rest;
            match next_option(&mut rest) {
                Some(Ok((code::ASSIGNED_IP_ADDRESS, _))) | None | Some(Err(())) => {
                    let len = start.len() - at.len();
                    self.area = at;
                    return Some(Options {
                        area: &start[..len],
                    });
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Scope ids of option 30, decoded from host (little-endian) order.
#[derive(Clone, Debug)]
pub struct ScopeIds<'a> {
    rest: &'a [u8],
}

impl Iterator for ScopeIds<'_> {
    type Item = Ipv4Addr;

    fn next(&mut self) -> Option<Ipv4Addr> {
        let (id, rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some(Ipv4Addr::from(u32::from_le_bytes(*id)))
    }
}

/// Decodes a Windows UTF-16LE string (options 22, 28, 31, 32, 35, 40), dropping one trailing
/// NUL. `None` for an odd length or invalid UTF-16. Allocates: for logs and tools.
pub fn utf16le_string(bytes: &[u8]) -> Option<String> {
    if bytes.len() % 2 != 0 {
        return None;
    }
    let units = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    let mut s = char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .ok()?;
    if s.ends_with('\0') {
        s.pop();
    }
    Some(s)
}

/// Encodes `s` as Windows does for options 31, 32, 35, 40: UTF-16LE plus a terminating NUL.
pub fn utf16le_with_nul(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}
