//! The one option table: code, configuration name and value shape of every DHCPv4 option
//! ringlease knows by name (RFC 2132 unless noted). Options not listed are still parsed and
//! relayed as opaque bytes; this table is what the config file and logs can name.

/// Option codes.
pub mod code {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const TIME_OFFSET: u8 = 2;
    pub const ROUTERS: u8 = 3;
    pub const TIME_SERVERS: u8 = 4;
    pub const DNS_SERVERS: u8 = 6;
    pub const LOG_SERVERS: u8 = 7;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const ROOT_PATH: u8 = 17;
    pub const IP_FORWARDING: u8 = 19;
    pub const DEFAULT_TTL: u8 = 23;
    pub const INTERFACE_MTU: u8 = 26;
    pub const BROADCAST_ADDRESS: u8 = 28;
    pub const STATIC_ROUTES: u8 = 33;
    pub const NIS_DOMAIN: u8 = 40;
    pub const NIS_SERVERS: u8 = 41;
    pub const NTP_SERVERS: u8 = 42;
    pub const VENDOR_SPECIFIC: u8 = 43;
    pub const NETBIOS_NAME_SERVERS: u8 = 44;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS_ID: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER_NAME: u8 = 66;
    pub const BOOTFILE_NAME: u8 = 67;
    /// RFC 3004.
    pub const USER_CLASS: u8 = 77;
    /// RFC 4702.
    pub const CLIENT_FQDN: u8 = 81;
    /// RFC 3046.
    pub const RELAY_AGENT_INFO: u8 = 82;
    /// RFC 3397.
    pub const DOMAIN_SEARCH: u8 = 119;
    /// RFC 3442.
    pub const CLASSLESS_STATIC_ROUTE: u8 = 121;
    pub const END: u8 = 255;
}

/// How an option's value is written in the config file and laid out on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One IPv4 address, 4 bytes.
    Ip,
    /// One or more IPv4 addresses, 4 bytes each.
    IpList,
    U8,
    /// Big-endian, as every DHCP integer.
    U16,
    U32,
    /// Two's complement, big-endian (option 2).
    I32,
    /// One byte, 0 or 1.
    Bool,
    /// NVT ASCII on the wire (RFC 2132 §2); taken as UTF-8 bytes, 1..=255 of them.
    Text,
    /// Opaque bytes, written in hex.
    Bytes,
    /// Pairs of addresses, destination then router (option 33).
    IpPairs,
}

#[derive(Clone, Copy, Debug)]
pub struct OptionDef {
    pub code: u8,
    /// Kebab-case config name, Kea's where Kea has one.
    pub name: &'static str,
    pub shape: Shape,
}

macro_rules! option_table {
    ($($code:ident, $name:literal, $shape:ident;)*) => {
        /// Every named option, in code order.
        pub const OPTIONS: &[OptionDef] = &[
            $(OptionDef { code: code::$code, name: $name, shape: Shape::$shape },)*
        ];
    };
}

option_table! {
    SUBNET_MASK, "subnet-mask", Ip;
    TIME_OFFSET, "time-offset", I32;
    ROUTERS, "routers", IpList;
    TIME_SERVERS, "time-servers", IpList;
    DNS_SERVERS, "domain-name-servers", IpList;
    LOG_SERVERS, "log-servers", IpList;
    HOSTNAME, "host-name", Text;
    DOMAIN_NAME, "domain-name", Text;
    ROOT_PATH, "root-path", Text;
    IP_FORWARDING, "ip-forwarding", Bool;
    DEFAULT_TTL, "default-ip-ttl", U8;
    INTERFACE_MTU, "interface-mtu", U16;
    BROADCAST_ADDRESS, "broadcast-address", Ip;
    STATIC_ROUTES, "static-routes", IpPairs;
    NIS_DOMAIN, "nis-domain", Text;
    NIS_SERVERS, "nis-servers", IpList;
    NTP_SERVERS, "ntp-servers", IpList;
    VENDOR_SPECIFIC, "vendor-encapsulated-options", Bytes;
    NETBIOS_NAME_SERVERS, "netbios-name-servers", IpList;
    REQUESTED_IP, "dhcp-requested-address", Ip;
    LEASE_TIME, "dhcp-lease-time", U32;
    OVERLOAD, "dhcp-option-overload", U8;
    MESSAGE_TYPE, "dhcp-message-type", U8;
    SERVER_ID, "dhcp-server-identifier", Ip;
    PARAMETER_REQUEST_LIST, "dhcp-parameter-request-list", Bytes;
    MESSAGE, "dhcp-message", Text;
    MAX_MESSAGE_SIZE, "dhcp-max-message-size", U16;
    RENEWAL_TIME, "dhcp-renewal-time", U32;
    REBINDING_TIME, "dhcp-rebinding-time", U32;
    VENDOR_CLASS_ID, "vendor-class-identifier", Text;
    CLIENT_ID, "dhcp-client-identifier", Bytes;
    TFTP_SERVER_NAME, "tftp-server-name", Text;
    BOOTFILE_NAME, "boot-file-name", Text;
    USER_CLASS, "user-class", Bytes;
    CLIENT_FQDN, "fqdn", Bytes;
    RELAY_AGENT_INFO, "relay-agent-information", Bytes;
    DOMAIN_SEARCH, "domain-search", Bytes;
    CLASSLESS_STATIC_ROUTE, "classless-static-route", Bytes;
}

/// The definition of a code, if the table names it (PAD and END are not options with values).
pub fn def(code: u8) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|d| d.code == code)
}

/// The definition for a config name (exact, case-sensitive: config names are kebab-case).
pub fn by_name(name: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|d| d.name == name)
}

fn parse_ip(s: &str) -> Result<[u8; 4], String> {
    s.parse::<std::net::Ipv4Addr>()
        .map(|a| a.octets())
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn parse_int<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse::<T>().map_err(|_| format!("{s:?} is not {what}"))
}

/// Items of a comma-separated list, trimmed; an empty item is an error (a stray comma).
fn list(s: &str) -> impl Iterator<Item = Result<&str, String>> {
    s.split(',').map(move |item| {
        let item = item.trim();
        if item.is_empty() {
            Err(format!("empty item in list {s:?}"))
        } else {
            Ok(item)
        }
    })
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(rest) => rest.to_owned(),
        None => {
            // "0a:0b:0c": every group must be exactly two digits so "a:b" is not guessed at.
            if s.split(':').any(|g| g.len() != 2) {
                return Err(format!(
                    "{s:?} is not hex: write 0x0a0b… or 0a:0b:… (two digits per byte)"
                ));
            }
            s.split(':').collect()
        }
    };
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err(format!(
            "{s:?} is not hex: need an even, non-zero number of digits"
        ));
    }
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "{s:?} is not hex: bad digits {:?}",
                        String::from_utf8_lossy(pair)
                    )
                })
        })
        .collect()
}

impl Shape {
    /// Encodes an operator-written value (from the config file) into option bytes:
    /// Ip "10.0.0.1"; IpList "10.0.0.1, 10.0.0.2"; U8/U16/U32/I32 decimal; Bool "true"/"false"/"1"/"0"; Text as UTF-8 bytes
    /// (1..=255 bytes); Bytes as hex "0x0a0b…" or "0a:0b:…"; IpPairs "dest router, dest router". Errors say what is wrong.
    pub fn encode_str(self, s: &str) -> Result<Vec<u8>, String> {
        let s = s.trim();
        match self {
            Shape::Ip => parse_ip(s).map(Vec::from),
            Shape::IpList => {
                let mut out = Vec::new();
                for item in list(s) {
                    out.extend_from_slice(&parse_ip(item?)?);
                }
                Ok(out)
            }
            Shape::U8 => parse_int::<u8>(s, "an integer 0..=255").map(|v| vec![v]),
            Shape::U16 => {
                parse_int::<u16>(s, "an integer 0..=65535").map(|v| v.to_be_bytes().to_vec())
            }
            Shape::U32 => {
                parse_int::<u32>(s, "an integer 0..=4294967295").map(|v| v.to_be_bytes().to_vec())
            }
            Shape::I32 => {
                parse_int::<i32>(s, "a signed 32-bit integer").map(|v| v.to_be_bytes().to_vec())
            }
            Shape::Bool => match s {
                "true" | "1" => Ok(vec![1]),
                "false" | "0" => Ok(vec![0]),
                _ => Err(format!("{s:?} is not a boolean: write true, false, 1 or 0")),
            },
            Shape::Text => {
                // RFC 2132 §2: option data is at most 255 bytes; a name longer than that
                // would need RFC 3396 splitting that few clients reassemble.
                if s.is_empty() || s.len() > 255 {
                    return Err(format!("text must be 1..=255 bytes, got {}", s.len()));
                }
                Ok(s.as_bytes().to_vec())
            }
            Shape::Bytes => parse_hex(s),
            Shape::IpPairs => {
                let mut out = Vec::new();
                for pair in list(s) {
                    let pair = pair?;
                    let mut parts = pair.split_whitespace();
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(dest), Some(router), None) => {
                            out.extend_from_slice(&parse_ip(dest)?);
                            out.extend_from_slice(&parse_ip(router)?);
                        }
                        _ => return Err(format!("{pair:?} is not \"destination router\"")),
                    }
                }
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_codes_and_names_are_unique_and_found() {
        // Guards the table against copy-paste duplicates that would make by_name ambiguous.
        for (i, d) in OPTIONS.iter().enumerate() {
            assert!(d.code != code::PAD && d.code != code::END);
            assert!(
                OPTIONS[..i].iter().all(|e| e.code < d.code),
                "sorted, unique: {d:?}"
            );
            assert!(OPTIONS[..i].iter().all(|e| e.name != d.name), "{d:?}");
            assert!(d
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            assert_eq!(def(d.code).map(|e| e.name), Some(d.name));
            assert_eq!(by_name(d.name).map(|e| e.code), Some(d.code));
        }
        assert!(def(code::PAD).is_none() && def(code::END).is_none() && def(200).is_none());
        assert!(by_name("no-such-option").is_none());
        assert_eq!(by_name("domain-name-servers").map(|d| d.code), Some(6));
    }

    #[test]
    fn encode_str_values() {
        // Guards the wire layout of every shape (big-endian integers, packed addresses).
        assert_eq!(Shape::Ip.encode_str("10.0.0.1"), Ok(vec![10, 0, 0, 1]));
        assert_eq!(
            Shape::IpList.encode_str("10.0.0.1, 10.0.0.2"),
            Ok(vec![10, 0, 0, 1, 10, 0, 0, 2])
        );
        assert_eq!(Shape::U8.encode_str("64"), Ok(vec![64]));
        assert_eq!(Shape::U16.encode_str("1500"), Ok(vec![5, 220]));
        assert_eq!(Shape::U32.encode_str("3600"), Ok(vec![0, 0, 14, 16]));
        assert_eq!(
            Shape::I32.encode_str("-3600"),
            Ok((-3600i32).to_be_bytes().to_vec())
        );
        assert_eq!(Shape::Bool.encode_str("true"), Ok(vec![1]));
        assert_eq!(Shape::Bool.encode_str("0"), Ok(vec![0]));
        assert_eq!(
            Shape::Text.encode_str("example.net"),
            Ok(b"example.net".to_vec())
        );
        assert_eq!(Shape::Bytes.encode_str("0x0a0B"), Ok(vec![10, 11]));
        assert_eq!(Shape::Bytes.encode_str("0a:0b:ff"), Ok(vec![10, 11, 255]));
        assert_eq!(
            Shape::IpPairs.encode_str("10.1.0.0 10.0.0.1, 10.2.0.0 10.0.0.2"),
            Ok(vec![10, 1, 0, 0, 10, 0, 0, 1, 10, 2, 0, 0, 10, 0, 0, 2])
        );
    }

    #[test]
    fn encode_str_errors() {
        // Guards that bad config values are refused with a message, never guessed at.
        for (shape, s) in [
            (Shape::Ip, "10.0.0"),
            (Shape::IpList, "10.0.0.1,,10.0.0.2"),
            (Shape::IpList, ""),
            (Shape::U8, "256"),
            (Shape::U16, "-1"),
            (Shape::U32, "x"),
            (Shape::I32, "2147483648"),
            (Shape::Bool, "yes"),
            (Shape::Text, ""),
            (Shape::Bytes, "0x0"),
            (Shape::Bytes, "0xzz"),
            (Shape::Bytes, "a:b"),
            (Shape::Bytes, ""),
            (Shape::IpPairs, "10.0.0.1"),
            (Shape::IpPairs, "10.0.0.1 10.0.0.2 10.0.0.3"),
        ] {
            let err = shape.encode_str(s).expect_err(s);
            assert!(!err.is_empty());
        }
        assert!(Shape::Text.encode_str(&"a".repeat(256)).is_err());
        assert!(Shape::Text.encode_str(&"a".repeat(255)).is_ok());
    }
}
