//! `dhcpd.leases` into lease log bindings.
//!
//! dhcpd appends a new `lease` block whenever a lease changes and rewrites the file now and
//! then, so the LAST block of an address is its state. States map as follows:
//!
//! | dhcpd `binding state`          | ringlease                                               |
//! |--------------------------------|---------------------------------------------------------|
//! | `active` (ends in the future)  | Bound until `ends`                                      |
//! | `active` (ended already)       | Expired, remembered for its client                      |
//! | `free`, `expired`, `reset`     | Expired if a client is known (address affinity), else not written |
//! | `released`                     | Released if a client is known, else not written         |
//! | `abandoned`                    | Declined for a day from the import                      |
//! | `backup`                       | free: not written (the failover secondary's free pool)  |

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::lex::{self, Item, Tok, Token};
use super::options::parse_colon_hex;
use super::{Report, Source};
use crate::leaselog::record::MAX_HOSTNAME_LEN;
use crate::leaselog::Binding;
use crate::proto::lease::{ClientKey, LeaseState};
use crate::proto::subnet::Subnets;

/// How long an abandoned address stays out of service after the import.
pub const ABANDONED_HOLD_S: u64 = 86_400;
/// What `ends never` becomes: the last second a 32-bit lease time can name (2106).
pub const NEVER_S: u64 = u32::MAX as u64;

/// A time in dhcpd.leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IscTime {
    /// Unix seconds.
    At(u64),
    Never,
}

impl IscTime {
    fn secs(self) -> u64 {
        match self {
            IscTime::At(s) => s,
            IscTime::Never => NEVER_S,
        }
    }
}

/// One `lease` block, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IscLease {
    pub ip: Option<Ipv4Addr>,
    pub line: usize,
    pub starts: Option<IscTime>,
    pub ends: Option<IscTime>,
    pub cltt: Option<IscTime>,
    pub tstp: Option<IscTime>,
    pub tsfp: Option<IscTime>,
    pub atsfp: Option<IscTime>,
    /// `binding state`, lower case.
    pub state: Option<String>,
    pub next_state: Option<String>,
    /// (hardware type, address)
    pub hardware: Option<(u8, Vec<u8>)>,
    pub uid: Option<Vec<u8>>,
    pub hostname: Option<Vec<u8>>,
    /// The pre-failover `abandoned;` flag.
    pub abandoned: bool,
}

impl IscLease {
    /// The ringlease client key: the client identifier (`uid`) when the client sent one, else
    /// its hardware address. Empty when neither is known.
    pub fn client_key(&self) -> Vec<u8> {
        match (&self.uid, &self.hardware) {
            (Some(uid), _) if !uid.is_empty() => ClientKey::from_client_id(uid).as_bytes().to_vec(),
            (_, Some((htype, hw))) if hw.iter().any(|&b| b != 0) => {
                ClientKey::from_hardware(*htype, hw).as_bytes().to_vec()
            }
            _ => Vec::new(),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `W YYYY/MM/DD HH:MM:SS` (UTC), `epoch N` or `never`: the words after the keyword.
pub fn parse_time(words: &[Token]) -> Option<IscTime> {
    let w: Vec<&str> = words.iter().filter_map(Token::word).collect();
    match w.as_slice() {
        ["never", ..] => Some(IscTime::Never),
        ["epoch", n, ..] => n.parse().ok().map(IscTime::At),
        [_weekday, date, time, ..] => {
            let mut d = date.split('/');
            let (y, mo, da) = (
                d.next()?.parse::<i64>().ok()?,
                d.next()?.parse::<u32>().ok()?,
                d.next()?.parse::<u32>().ok()?,
            );
            let mut t = time.split(':');
            let (h, mi, s) = (
                t.next()?.parse::<i64>().ok()?,
                t.next()?.parse::<i64>().ok()?,
                t.next()?.parse::<i64>().ok()?,
            );
            if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || s > 60 {
                return None;
            }
            let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + s;
            u64::try_from(secs).ok().map(IscTime::At)
        }
        _ => None,
    }
}

fn hardware_type(name: &str) -> Option<u8> {
    match name {
        "ethernet" => Some(1),
        "token-ring" => Some(6),
        "fddi" => Some(8),
        "infiniband" => Some(32),
        _ => None,
    }
}

fn bytes_of(t: Option<&Token>) -> Option<Vec<u8>> {
    match &t?.tok {
        Tok::Str(b) => Some(b.clone()),
        Tok::Word(w) => parse_colon_hex(w),
        Tok::Punct(_) => None,
    }
}

/// Reads every `lease` block, in file order (superseded ones included).
pub fn parse_leases(text: &str) -> Result<(Vec<IscLease>, Report), String> {
    let tokens = lex::lex(text).map_err(|e| format!("dhcpd.leases: {e}"))?;
    let items = lex::parse(&tokens).map_err(|e| format!("dhcpd.leases: {e}"))?;
    let mut report = Report::default();
    let mut leases = Vec::new();
    for item in &items {
        let kw = item.keyword();
        let line = item.line();
        match (item, kw.as_str()) {
            (Item::Block { head, body, .. }, "lease") => {
                let mut lease = IscLease {
                    ip: head.get(1).and_then(Token::word).and_then(|w| w.parse().ok()),
                    line,
                    ..IscLease::default()
                };
                for field in body {
                    read_field(&mut lease, field, &mut report);
                }
                leases.push(lease);
            }
            (Item::Block { head, .. }, "host") => report.not_converted(
                Source::Leases,
                Some(line),
                format!(
                    "host {} (added through OMAPI) not converted: add it to the configuration as a reservation",
                    lex::show(&head[1..])
                ),
            ),
            (Item::Block { .. }, "failover") => report.note(
                Source::Leases,
                Some(line),
                "failover state not imported: ringlease starts its own failover state",
            ),
            (Item::Stmt { .. }, "authoring-byte-order" | "server-duid") => {}
            (_, "lease6" | "ia-na" | "ia-ta" | "ia-pd") => {}
            _ => report.note(
                Source::Leases,
                Some(line),
                format!("`{}` ignored", lex::show(item.head())),
            ),
        }
    }
    Ok((leases, report))
}

fn read_field(lease: &mut IscLease, field: &Item, report: &mut Report) {
    let Item::Stmt { words, line } = field else {
        return; // `on expiry { … }` and the like: the server's business, not the lease's
    };
    let kw = field.keyword();
    let rest = &words[1..];
    let time = || parse_time(rest);
    let ok = match kw.as_str() {
        "starts" => time().map(|t| lease.starts = Some(t)).is_some(),
        "ends" => time().map(|t| lease.ends = Some(t)).is_some(),
        "cltt" => time().map(|t| lease.cltt = Some(t)).is_some(),
        "tstp" => time().map(|t| lease.tstp = Some(t)).is_some(),
        "tsfp" => time().map(|t| lease.tsfp = Some(t)).is_some(),
        "atsfp" => time().map(|t| lease.atsfp = Some(t)).is_some(),
        "binding" | "next" | "rewind" => {
            let w: Vec<String> = words
                .iter()
                .filter_map(Token::word)
                .map(str::to_ascii_lowercase)
                .collect();
            match w.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["binding", "state", s] => {
                    lease.state = Some(s.to_string());
                    true
                }
                ["next", "binding", "state", s] => {
                    lease.next_state = Some(s.to_string());
                    true
                }
                ["rewind", "binding", "state", _] => true,
                _ => false,
            }
        }
        "hardware" => {
            let ty = rest.first().and_then(Token::word).and_then(hardware_type);
            let hw = rest.get(1).and_then(Token::word).and_then(parse_colon_hex);
            match (ty, hw) {
                (Some(ty), Some(hw)) => {
                    lease.hardware = Some((ty, hw));
                    true
                }
                _ => false,
            }
        }
        "uid" => bytes_of(rest.first())
            .map(|b| lease.uid = Some(b))
            .is_some(),
        "client-hostname" => bytes_of(rest.first())
            .map(|b| lease.hostname = Some(b))
            .is_some(),
        "abandoned" => {
            lease.abandoned = true;
            true
        }
        // Known and irrelevant to ringlease: DDNS, agent options, billing, vendor class…
        _ => true,
    };
    if !ok {
        report.note(
            Source::Leases,
            Some(*line),
            format!("cannot read `{}`: field ignored", lex::show(words)),
        );
    }
}

/// Converts dhcpd.leases text into bindings for `subnets` (seq 1.. in file order of each
/// address's last block), and the report. Leases of addresses outside every subnet are left out.
pub fn convert_leases(text: &str, subnets: &Subnets, now_s: u64) -> (Vec<Binding>, Report) {
    let (all, mut report) = match parse_leases(text) {
        Ok(parsed) => parsed,
        Err(e) => {
            let mut report = Report::default();
            report.not_converted(Source::Leases, None, format!("{e}: no lease imported"));
            return (Vec::new(), report);
        }
    };
    // The last block of every address.
    let mut last: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, l) in all.iter().enumerate() {
        match l.ip {
            Some(ip) => {
                last.insert(ip, i);
            }
            None => report.not_converted(
                Source::Leases,
                Some(l.line),
                "lease without an IPv4 address: ignored",
            ),
        }
    }
    let mut order: Vec<usize> = last.into_values().collect();
    order.sort_unstable();

    let mut out = Vec::new();
    let (
        mut bound,
        mut tombstones,
        mut skipped_free,
        mut backup,
        mut abandoned,
        mut ended,
        mut outside,
    ) = (0, 0, 0, 0, 0, 0, 0);
    for i in order {
        let l = &all[i];
        let Some(ip) = l.ip else { continue };
        let Some(subnet) = subnets.containing(ip) else {
            outside += 1;
            report.not_converted(
                Source::Leases,
                Some(l.line),
                format!("lease {ip} is outside every subnet: not imported"),
            );
            continue;
        };
        let client = l.client_key();
        let state_name = match (&l.state, l.abandoned) {
            (_, true) => "abandoned".to_string(),
            (Some(s), _) => s.clone(),
            // Files written without failover support before 3.0: active until it ends.
            (None, _) => match l.ends {
                Some(e) if e.secs() > now_s => "active".into(),
                _ => "free".into(),
            },
        };
        let ends = l.ends.map(IscTime::secs);
        let (state, expires_s) = match state_name.as_str() {
            "active" => match ends {
                Some(e) if e > now_s => {
                    if l.ends == Some(IscTime::Never) {
                        report.note(
                            Source::Leases,
                            Some(l.line),
                            format!("lease {ip} never ends in dhcpd: bound until {NEVER_S} (2106-02-07)"),
                        );
                    }
                    (LeaseState::Bound, e)
                }
                _ => {
                    ended += 1;
                    (LeaseState::Expired, ends.unwrap_or(now_s))
                }
            },
            "free" | "expired" | "reset" => (LeaseState::Expired, ends.unwrap_or(now_s).min(now_s)),
            "released" => (LeaseState::Released, ends.unwrap_or(now_s).min(now_s)),
            "abandoned" => {
                abandoned += 1;
                report.note(
                    Source::Leases,
                    Some(l.line),
                    format!("lease {ip} was abandoned (in use by an unknown host): imported as declined for {ABANDONED_HOLD_S} s from now"),
                );
                (LeaseState::Declined, now_s + ABANDONED_HOLD_S)
            }
            "backup" => {
                backup += 1;
                continue;
            }
            other => {
                report.not_converted(
                    Source::Leases,
                    Some(l.line),
                    format!("lease {ip}: unknown binding state '{other}': not imported"),
                );
                continue;
            }
        };
        if matches!(state, LeaseState::Expired | LeaseState::Released) && client.is_empty() {
            skipped_free += 1;
            continue;
        }
        if state == LeaseState::Bound && client.is_empty() {
            report.not_converted(
                Source::Leases,
                Some(l.line),
                format!(
                    "active lease {ip} names no client (no uid, no hardware address): not imported"
                ),
            );
            continue;
        }
        if state == LeaseState::Bound && !subnet.in_pool(ip) && subnet.reserved_to(ip).is_none() {
            report.note(
                Source::Leases,
                Some(l.line),
                format!("active lease {ip} is outside every pool of its subnet: imported, it is not renewed past its end"),
            );
        }
        match state {
            LeaseState::Bound => bound += 1,
            LeaseState::Expired | LeaseState::Released => tombstones += 1,
            _ => {}
        }
        let cltt = l.cltt.or(l.starts).map_or(now_s, IscTime::secs);
        let since = l.starts.or(l.cltt).map_or(now_s, IscTime::secs);
        let potential = l.tstp.map_or(expires_s, IscTime::secs).max(expires_s);
        let mut hostname = l.hostname.clone().unwrap_or_default();
        hostname.truncate(MAX_HOSTNAME_LEN);
        out.push(Binding {
            seq: out.len() as u64 + 1,
            ip,
            state,
            flags: 0,
            expires_s,
            potential_expiry_s: if state == LeaseState::Bound {
                potential
            } else {
                expires_s
            },
            partner_expiry_s: l.tsfp.map_or(0, IscTime::secs),
            cltt_s: cltt,
            state_since_s: since,
            client: client.into(),
            hostname: hostname.into(),
        });
    }
    let mut summary = format!("{bound} active lease(s) imported as bound, {tombstones} ended lease(s) kept for their clients' address affinity");
    if ended > 0 {
        summary.push_str(&format!(
            " ({ended} of them active in the file but past their end)"
        ));
    }
    summary.push_str(&format!(
        ", {skipped_free} free address(es) without a client skipped"
    ));
    report.note(Source::Leases, None, summary);
    if backup > 0 {
        report.note(
            Source::Leases,
            None,
            format!("{backup} backup lease(s) (the failover secondary's free pool) treated as free: not written"),
        );
    }
    if abandoned > 0 {
        report.note(
            Source::Leases,
            None,
            format!(
                "{abandoned} abandoned lease(s) imported as declined until a day after the import"
            ),
        );
    }
    if outside > 0 {
        report.not_converted(
            Source::Leases,
            None,
            format!("{outside} lease(s) outside every converted subnet not imported"),
        );
    }
    (out, report)
}
