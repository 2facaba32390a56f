//! ISC option names and types, ISC option values into bytes, and bytes into the text a
//! ringlease option takes.

use std::net::Ipv4Addr;

use super::lex::{Tok, Token};
use crate::proto::wire::options::{self as rl, Shape};

/// The value type of an ISC option (dhcp-options(5)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IscType {
    Ip,
    IpList,
    Int {
        bits: u8,
        signed: bool,
    },
    IntList {
        bits: u8,
        signed: bool,
    },
    Bool,
    /// `text`: a quoted string.
    Text,
    /// `string`: a quoted string or colon-separated hex.
    Str,
    /// Pairs of addresses (`static-routes`, `policy-filter`).
    IpPairs,
    /// RFC 1035 names (`domain-search`): quoted strings, comma-separated.
    DomainList,
}

use IscType::*;

const U8: IscType = Int {
    bits: 8,
    signed: false,
};
const U16: IscType = Int {
    bits: 16,
    signed: false,
};
const U32: IscType = Int {
    bits: 32,
    signed: false,
};

/// ISC's standard DHCPv4 options (dhcp-options(5)) that ringlease can send as they are.
const ISC_OPTIONS: &[(&str, u8, IscType)] = &[
    ("subnet-mask", 1, Ip),
    (
        "time-offset",
        2,
        Int {
            bits: 32,
            signed: true,
        },
    ),
    ("routers", 3, IpList),
    ("time-servers", 4, IpList),
    ("ien116-name-servers", 5, IpList),
    ("domain-name-servers", 6, IpList),
    ("log-servers", 7, IpList),
    ("cookie-servers", 8, IpList),
    ("lpr-servers", 9, IpList),
    ("impress-servers", 10, IpList),
    ("resource-location-servers", 11, IpList),
    ("host-name", 12, Text),
    ("boot-size", 13, U16),
    ("merit-dump", 14, Text),
    ("domain-name", 15, Text),
    ("swap-server", 16, Ip),
    ("root-path", 17, Text),
    ("extensions-path", 18, Text),
    ("ip-forwarding", 19, Bool),
    ("non-local-source-routing", 20, Bool),
    ("policy-filter", 21, IpPairs),
    ("max-dgram-reassembly", 22, U16),
    ("default-ip-ttl", 23, U8),
    ("path-mtu-aging-timeout", 24, U32),
    (
        "path-mtu-plateau-table",
        25,
        IntList {
            bits: 16,
            signed: false,
        },
    ),
    ("interface-mtu", 26, U16),
    ("all-subnets-local", 27, Bool),
    ("broadcast-address", 28, Ip),
    ("perform-mask-discovery", 29, Bool),
    ("mask-supplier", 30, Bool),
    ("router-discovery", 31, Bool),
    ("router-solicitation-address", 32, Ip),
    ("static-routes", 33, IpPairs),
    ("trailer-encapsulation", 34, Bool),
    ("arp-cache-timeout", 35, U32),
    ("ieee802-3-encapsulation", 36, Bool),
    ("default-tcp-ttl", 37, U8),
    ("tcp-keepalive-interval", 38, U32),
    ("tcp-keepalive-garbage", 39, Bool),
    ("nis-domain", 40, Text),
    ("nis-servers", 41, IpList),
    ("ntp-servers", 42, IpList),
    ("vendor-encapsulated-options", 43, Str),
    ("netbios-name-servers", 44, IpList),
    ("netbios-dd-server", 45, IpList),
    ("netbios-node-type", 46, U8),
    ("netbios-scope", 47, Text),
    ("font-servers", 48, IpList),
    ("x-display-manager", 49, IpList),
    ("dhcp-requested-address", 50, Ip),
    ("dhcp-lease-time", 51, U32),
    ("dhcp-option-overload", 52, U8),
    ("dhcp-message-type", 53, U8),
    ("dhcp-server-identifier", 54, Ip),
    (
        "dhcp-parameter-request-list",
        55,
        IntList {
            bits: 8,
            signed: false,
        },
    ),
    ("dhcp-message", 56, Text),
    ("dhcp-max-message-size", 57, U16),
    ("dhcp-renewal-time", 58, U32),
    ("dhcp-rebinding-time", 59, U32),
    ("vendor-class-identifier", 60, Str),
    ("dhcp-client-identifier", 61, Str),
    ("nwip-domain", 62, Text),
    ("nisplus-domain", 64, Text),
    ("nisplus-servers", 65, IpList),
    ("tftp-server-name", 66, Text),
    ("bootfile-name", 67, Text),
    ("mobile-ip-home-agent", 68, IpList),
    ("smtp-server", 69, IpList),
    ("pop-server", 70, IpList),
    ("nntp-server", 71, IpList),
    ("www-server", 72, IpList),
    ("finger-server", 73, IpList),
    ("irc-server", 74, IpList),
    ("streettalk-server", 75, IpList),
    ("streettalk-directory-assistance-server", 76, IpList),
    ("user-class", 77, Str),
    ("nds-servers", 85, IpList),
    ("nds-tree-name", 86, Text),
    ("nds-context", 87, Text),
    ("bcms-controller-names", 88, DomainList),
    ("bcms-controller-address", 89, IpList),
    ("client-last-transaction-time", 91, U32),
    ("associated-ip", 92, IpList),
    ("uap-servers", 98, Text),
    ("pcode", 100, Text),
    ("tcode", 101, Text),
    ("netinfo-server-address", 112, IpList),
    ("netinfo-server-tag", 113, Text),
    ("default-url", 114, Text),
    ("auto-config", 116, U8),
    (
        "name-service-search",
        117,
        IntList {
            bits: 16,
            signed: false,
        },
    ),
    ("subnet-selection", 118, Ip),
    ("domain-search", 119, DomainList),
    ("pana-agent", 136, IpList),
    ("capwap-ac-v4", 138, IpList),
    ("sip-ua-cs-domains", 141, DomainList),
    ("v4-access-domain", 213, DomainList),
];

/// An ISC option name's code and type, from ISC's table.
pub fn isc_option(name: &str) -> Option<(u8, IscType)> {
    ISC_OPTIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, code, ty)| (code, ty))
}

/// The type of an `option NAME code N = TYPE;` definition: the tokens after `=`.
pub fn parse_type(tokens: &[Token]) -> Result<IscType, String> {
    let words: Vec<String> = tokens
        .iter()
        .map(|t| match &t.tok {
            Tok::Word(w) => w.to_ascii_lowercase(),
            Tok::Str(_) => "\"\"".into(),
            Tok::Punct(c) => c.to_string(),
        })
        .collect();
    let mut w: Vec<&str> = words.iter().map(String::as_str).collect();
    // A one-field record `{ T }` is T.
    if w.first() == Some(&"{") && w.last() == Some(&"}") && !w.contains(&",") {
        w = w[1..w.len() - 1].to_vec();
    }
    let array = w.starts_with(&["array", "of"]);
    if array {
        w.drain(..2);
    }
    let scalar = match w.as_slice() {
        ["ip-address"] => Ip,
        ["boolean"] => Bool,
        ["text"] => Text,
        ["string"] => Str,
        ["domain-list"] | ["domain-list", "compressed"] => DomainList,
        ["integer", bits] | ["signed", "integer", bits] => Int {
            bits: bits.parse().map_err(|_| "bad integer width".to_string())?,
            signed: true,
        },
        ["unsigned", "integer", bits] => Int {
            bits: bits.parse().map_err(|_| "bad integer width".to_string())?,
            signed: false,
        },
        ["{", "ip-address", ",", "ip-address", "}"] if array => IpPairs,
        _ => return Err(format!("option type '{}' is not supported", w.join(" "))),
    };
    if let Int { bits, .. } = scalar {
        if ![8, 16, 32].contains(&bits) {
            return Err(format!("integer width {bits} is not 8, 16 or 32"));
        }
    }
    Ok(match (array, scalar) {
        (false, t) => t,
        (true, Ip) => IpList,
        (true, Int { bits, signed }) => IntList { bits, signed },
        (true, IpPairs) => IpPairs,
        (true, other) => return Err(format!("arrays of {other:?} are not supported")),
    })
}

/// Colon-separated hex as ISC writes it (`1:2:a:ff`, one or two digits per byte).
pub fn parse_colon_hex(s: &str) -> Option<Vec<u8>> {
    s.split(':')
        .map(|g| {
            if g.is_empty() || g.len() > 2 {
                None
            } else {
                u8::from_str_radix(g, 16).ok()
            }
        })
        .collect()
}

/// The values of `option NAME v1, v2 …;` (the tokens after the name), commas dropped.
fn values(tokens: &[Token]) -> Vec<&Token> {
    tokens.iter().filter(|t| !t.is_punct(',')).collect()
}

fn ip_of(t: &Token) -> Result<Ipv4Addr, String> {
    match &t.tok {
        Tok::Word(w) => w.parse().map_err(|_| {
            format!("'{w}' is not an IPv4 address (host names are resolved by dhcpd at start-up; ringlease needs addresses)")
        }),
        _ => Err("expected an IPv4 address".into()),
    }
}

fn int_of(t: &Token, bits: u8, signed: bool) -> Result<Vec<u8>, String> {
    let Some(w) = t.word() else {
        return Err("expected a number".into());
    };
    let v: i64 = w.parse().map_err(|_| format!("'{w}' is not a number"))?;
    let (lo, hi) = match (bits, signed) {
        (8, false) => (0, 255),
        (16, false) => (0, 65535),
        (32, false) => (0, u32::MAX as i64),
        (8, true) => (-128, 127),
        (16, true) => (-32768, 32767),
        _ => (i32::MIN as i64, i32::MAX as i64),
    };
    if !(lo..=hi).contains(&v) {
        return Err(format!("{v} does not fit in {bits} bits"));
    }
    let bytes = (v as u32).to_be_bytes();
    Ok(bytes[4 - usize::from(bits / 8)..].to_vec())
}

/// A domain name in RFC 1035 wire form (no compression).
fn encode_name(name: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(name).map_err(|_| "a domain name is not text".to_string())?;
    let text = text.trim_end_matches('.');
    if text.is_empty() {
        return Err("empty domain name".into());
    }
    let mut out = Vec::new();
    for label in text.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("bad label '{label}' in '{text}'"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(out)
}

/// An ISC option value into wire bytes.
pub fn encode(ty: IscType, tokens: &[Token]) -> Result<Vec<u8>, String> {
    if tokens.first().is_some_and(|t| t.is_punct('=')) {
        return Err("a computed value (`option NAME = expression`) cannot be converted".into());
    }
    let vals = values(tokens);
    if vals.is_empty() {
        return Err("no value".into());
    }
    let one = || -> Result<&Token, String> {
        match vals.as_slice() {
            [t] => Ok(t),
            _ => Err(format!("expected one value, got {}", vals.len())),
        }
    };
    match ty {
        Ip => Ok(ip_of(one()?)?.octets().to_vec()),
        IpList => {
            let mut out = Vec::new();
            for t in &vals {
                out.extend_from_slice(&ip_of(t)?.octets());
            }
            Ok(out)
        }
        IpPairs => {
            if vals.len() % 2 != 0 {
                return Err("addresses must come in pairs".into());
            }
            let mut out = Vec::new();
            for t in &vals {
                out.extend_from_slice(&ip_of(t)?.octets());
            }
            Ok(out)
        }
        Int { bits, signed } => int_of(one()?, bits, signed),
        IntList { bits, signed } => {
            let mut out = Vec::new();
            for t in &vals {
                out.extend(int_of(t, bits, signed)?);
            }
            Ok(out)
        }
        Bool => match one()?.word().map(str::to_ascii_lowercase).as_deref() {
            Some("true" | "on" | "1") => Ok(vec![1]),
            Some("false" | "off" | "0") => Ok(vec![0]),
            _ => Err("expected true, false, on or off".into()),
        },
        Text => match &one()?.tok {
            Tok::Str(b) => Ok(b.clone()),
            _ => Err("expected a quoted string".into()),
        },
        Str => match &one()?.tok {
            Tok::Str(b) => Ok(b.clone()),
            Tok::Word(w) => parse_colon_hex(w)
                .ok_or_else(|| format!("'{w}' is neither a quoted string nor hex like 01:02:0a")),
            Tok::Punct(_) => Err("expected a string".into()),
        },
        DomainList => {
            let mut out = Vec::new();
            for t in &vals {
                match &t.tok {
                    Tok::Str(b) => out.extend(encode_name(b)?),
                    _ => return Err("expected quoted domain names".into()),
                }
            }
            Ok(out)
        }
    }
}

fn ips(bytes: &[u8]) -> Option<Vec<String>> {
    if bytes.is_empty() || bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]).to_string())
            .collect(),
    )
}

/// The text ringlease's config takes for option `code` with these bytes, checked by encoding
/// it back. `None` when ringlease's text form cannot say exactly these bytes.
pub fn render(code: u8, bytes: &[u8]) -> Option<String> {
    let shape = rl::def(code).map_or(Shape::Bytes, |d| d.shape);
    let text = match shape {
        Shape::Ip if bytes.len() == 4 => ips(bytes)?.remove(0),
        Shape::IpList => ips(bytes)?.join(", "),
        Shape::IpPairs => {
            let list = ips(bytes)?;
            if list.len() % 2 != 0 {
                return None;
            }
            list.chunks(2)
                .map(|p| format!("{} {}", p[0], p[1]))
                .collect::<Vec<_>>()
                .join(", ")
        }
        Shape::U8 if bytes.len() == 1 => bytes[0].to_string(),
        Shape::U16 if bytes.len() == 2 => u16::from_be_bytes([bytes[0], bytes[1]]).to_string(),
        Shape::U32 if bytes.len() == 4 => u32::from_be_bytes(bytes.try_into().ok()?).to_string(),
        Shape::I32 if bytes.len() == 4 => i32::from_be_bytes(bytes.try_into().ok()?).to_string(),
        Shape::Bool if bytes.len() == 1 => match bytes[0] {
            0 => "false".into(),
            1 => "true".into(),
            _ => return None,
        },
        Shape::Text => String::from_utf8(bytes.to_vec()).ok()?,
        Shape::Bytes if !bytes.is_empty() => {
            let mut s = String::from("0x");
            for b in bytes {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
        _ => return None,
    };
    (shape.encode_str(&text).ok()? == bytes).then_some(text)
}

/// The name ringlease's config knows option `code` by, else its number.
pub fn ringlease_key(code: u8) -> String {
    rl::def(code).map_or_else(|| code.to_string(), |d| d.name.to_string())
}
