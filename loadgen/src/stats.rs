//! What a run measured: counters, latency histograms, answer-check violations, and their text and JSON forms.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::client::Kind;

/// Request/reply pairs timed separately (latency from the last transmission of the request to its answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pair {
    DiscoverOffer,
    RequestAck,
    RenewAck,
    RebootAck,
    Echo,
}

impl Pair {
    pub const ALL: [Pair; 5] = [
        Pair::DiscoverOffer,
        Pair::RequestAck,
        Pair::RenewAck,
        Pair::RebootAck,
        Pair::Echo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pair::DiscoverOffer => "DISCOVER-OFFER",
            Pair::RequestAck => "REQUEST-ACK",
            Pair::RenewAck => "RENEW-ACK",
            Pair::RebootAck => "INIT-REBOOT-ACK",
            Pair::Echo => "ECHO",
        }
    }
}

/// Checks on the answers; each failure is counted under its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The reply does not parse as DHCP.
    Malformed,
    /// op is not BOOTREPLY.
    NotAReply,
    /// The xid names no client of this run.
    UnknownXid,
    /// chaddr is not the hardware address of the client the xid names.
    ChaddrMismatch,
    /// A reply type the client's state never asks for (an ACK to a DISCOVER, …).
    UnexpectedType,
    /// yiaddr outside the expected subnet (or 0.0.0.0 in an OFFER/ACK).
    YiaddrOutsideSubnet,
    /// ACK for another address than the one requested.
    AckAddressMismatch,
    /// An address ACKed to a client while another simulated client still holds it.
    DuplicateAddress,
    /// OFFER or ACK without option 51.
    NoLeaseTime,
    /// OFFER, ACK or NAK without option 54.
    NoServerId,
    /// Option 54 differs from the one in the first reply (of the same server, with several `--server`s).
    ServerIdChanged,
    /// The reflector returned other bytes than were sent.
    EchoMismatch,
    /// Several `--server`s: an ACK or NAK to a SELECTING REQUEST from another server than the one the REQUEST named
    /// (RFC 2131 §4.3.2: that server must stay silent).
    UnselectedServer,
}

impl Violation {
    pub const ALL: [Violation; 13] = [
        Violation::Malformed,
        Violation::NotAReply,
        Violation::UnknownXid,
        Violation::ChaddrMismatch,
        Violation::UnexpectedType,
        Violation::YiaddrOutsideSubnet,
        Violation::AckAddressMismatch,
        Violation::DuplicateAddress,
        Violation::NoLeaseTime,
        Violation::NoServerId,
        Violation::ServerIdChanged,
        Violation::EchoMismatch,
        Violation::UnselectedServer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Violation::Malformed => "malformed",
            Violation::NotAReply => "not_a_reply",
            Violation::UnknownXid => "unknown_xid",
            Violation::ChaddrMismatch => "chaddr_mismatch",
            Violation::UnexpectedType => "unexpected_type",
            Violation::YiaddrOutsideSubnet => "yiaddr_outside_subnet",
            Violation::AckAddressMismatch => "ack_address_mismatch",
            Violation::DuplicateAddress => "duplicate_address",
            Violation::NoLeaseTime => "no_lease_time",
            Violation::NoServerId => "no_server_id",
            Violation::ServerIdChanged => "server_id_changed",
            Violation::EchoMismatch => "echo_mismatch",
            Violation::UnselectedServer => "unselected_server",
        }
    }
}

/// Counted violations and the text of the first few.
#[derive(Clone, Debug, Default)]
pub struct Violations {
    pub counts: [u64; Violation::ALL.len()],
    pub first: Vec<String>,
    pub keep: usize,
}

impl Violations {
    pub fn new(keep: usize) -> Violations {
        Violations {
            keep,
            ..Violations::default()
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `detail` is only built for the first `keep` violations (formatting must not slow a broken run down).
    pub fn add(&mut self, v: Violation, client: Option<u32>, detail: impl FnOnce() -> String) {
        self.counts[v as usize] += 1;
        if self.first.len() < self.keep {
            let who = client.map_or_else(|| "client ?".to_string(), |c| format!("client {c}"));
            self.first
                .push(format!("{}: {who}: {}", v.name(), detail()));
        }
    }

    pub fn merge(&mut self, other: &Violations) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        for f in &other.first {
            if self.first.len() < self.keep {
                self.first.push(f.clone());
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits; cannot fail with these constant bounds.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds")
}

/// What one of several `--server`s answered (not kept with a single server).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Replies from this server that answered a waiting client (the first OFFER, an ACK or a NAK).
    pub answered: u64,
    /// OFFERs the client took (the first of the answers to its DISCOVER).
    pub offers_taken: u64,
    pub acks: u64,
    pub naks: u64,
    /// `answered` per second of the run (index = whole seconds since the run or step began).
    pub answered_per_second: Vec<u64>,
}

impl ServerStats {
    /// Counts one answer `us` microseconds after the run began.
    pub fn count_answer(&mut self, us: u64) {
        self.answered += 1;
        let sec = (us / 1_000_000) as usize;
        if self.answered_per_second.len() <= sec {
            self.answered_per_second.resize(sec + 1, 0);
        }
        self.answered_per_second[sec] += 1;
    }

    pub fn to_json(&self) -> Value {
        json!({
            "answered": self.answered,
            "offers_taken": self.offers_taken,
            "acks": self.acks,
            "naks": self.naks,
            "answered_per_second": self.answered_per_second,
        })
    }
}

/// Counters of one run (or one find-max step).
#[derive(Clone, Debug)]
pub struct Stats {
    /// Per DHCP message type (index = type code - 1), first transmissions and retransmissions alike.
    pub sent: [u64; 8],
    pub send_failed: u64,
    pub received: u64,
    /// Requests answered (the reply the client's state was waiting for, or a NAK).
    pub answered: u64,
    pub retransmitted: u64,
    /// Transmissions whose timer fired without an answer (lost or late): perfdhcp's "drops".
    pub drops: u64,
    /// Exchanges abandoned after the last try.
    pub timed_out: u64,
    pub naks: u64,
    /// Replies to an earlier exchange or second answers to a retransmitted request: normal, not violations.
    pub stale: u64,
    /// Exchanges still in flight when the run (or step) ended, after the drain.
    pub unfinished: u64,
    /// Exchanges not started because the next clients were all busy (too few --clients for the rate).
    pub busy_skips: u64,
    pub started: [u64; Kind::ALL.len()],
    pub completed: [u64; Kind::ALL.len()],
    pub pairs: Vec<Histogram<u64>>,
    pub exchanges: Vec<Histogram<u64>>,
    pub violations: Violations,
    /// Seconds spent issuing new exchanges, and the whole run including the drain.
    pub issue_secs: f64,
    pub total_secs: f64,
    /// Per server, in `--server` order; empty with a single server.
    pub by_server: Vec<ServerStats>,
    /// Wall clock (ms since 1970) when the run or step began: second 0 of `answered_per_second`.
    pub start_unix_ms: u64,
}

impl Stats {
    pub fn new(keep_violations: usize) -> Stats {
        Stats {
            sent: [0; 8],
            send_failed: 0,
            received: 0,
            answered: 0,
            retransmitted: 0,
            drops: 0,
            timed_out: 0,
            naks: 0,
            stale: 0,
            unfinished: 0,
            busy_skips: 0,
            started: [0; Kind::ALL.len()],
            completed: [0; Kind::ALL.len()],
            pairs: Pair::ALL.iter().map(|_| histogram()).collect(),
            exchanges: Kind::ALL.iter().map(|_| histogram()).collect(),
            violations: Violations::new(keep_violations),
            issue_secs: 0.0,
            total_secs: 0.0,
            by_server: Vec::new(),
            start_unix_ms: 0,
        }
    }

    pub fn record_pair(&mut self, p: Pair, us: u64) {
        self.pairs[p as usize].saturating_record(us.max(1));
    }

    pub fn record_exchange(&mut self, k: Kind, us: u64) {
        self.exchanges[k as usize].saturating_record(us.max(1));
    }

    pub fn started_total(&self) -> u64 {
        self.started.iter().sum()
    }

    pub fn completed_total(&self) -> u64 {
        self.completed.iter().sum()
    }

    /// Transmissions that expected an answer (everything but RELEASE and DECLINE).
    pub fn requests_sent(&self) -> u64 {
        self.sent.iter().sum::<u64>() - self.sent[6] - self.sent[3]
    }

    /// Share of requests unanswered in time (drops) or abandoned at the end of the run, 0..1.
    pub fn drop_ratio(&self) -> f64 {
        let sent = self.requests_sent();
        if sent == 0 {
            return 0.0;
        }
        (self.drops + self.unfinished) as f64 / sent as f64
    }

    /// Exchanges started per second of issuing: the offered rate.
    pub fn offered_rate(&self) -> f64 {
        per_sec(self.started_total(), self.issue_secs)
    }

    /// Exchanges completed per second of issuing: the achieved rate.
    pub fn rate(&self) -> f64 {
        per_sec(self.completed_total(), self.issue_secs)
    }

    /// The histogram of the exchange kind that ran most (the headline latency).
    pub fn main_exchange(&self) -> (Kind, &Histogram<u64>) {
        let k = Kind::ALL
            .into_iter()
            .max_by_key(|k| self.exchanges[*k as usize].len())
            .unwrap_or(Kind::Dora);
        (k, &self.exchanges[k as usize])
    }

    pub fn to_json(&self) -> Value {
        let mut sent = serde_json::Map::new();
        for (i, n) in self.sent.iter().enumerate().filter(|(_, n)| **n > 0) {
            if let Some(t) = ringlease::proto::wire::dhcp::MessageType::from_u8(i as u8 + 1) {
                sent.insert(t.name().to_string(), json!(n));
            }
        }
        let mut kinds = serde_json::Map::new();
        for k in Kind::ALL {
            let (s, c) = (self.started[k as usize], self.completed[k as usize]);
            if s > 0 || c > 0 {
                kinds.insert(k.name().into(), json!({"started": s, "completed": c}));
            }
        }
        let mut pairs = serde_json::Map::new();
        for p in Pair::ALL {
            let h = &self.pairs[p as usize];
            if !h.is_empty() {
                pairs.insert(p.name().into(), percentiles(h));
            }
        }
        let mut exch = serde_json::Map::new();
        for k in Kind::ALL {
            let h = &self.exchanges[k as usize];
            if !h.is_empty() {
                exch.insert(k.name().into(), percentiles(h));
            }
        }
        let mut by_kind = serde_json::Map::new();
        for v in Violation::ALL {
            let n = self.violations.counts[v as usize];
            if n > 0 {
                by_kind.insert(v.name().into(), json!(n));
            }
        }
        json!({
            "rate": round1(self.rate()),
            "offered_rate": round1(self.offered_rate()),
            "issue_seconds": round3(self.issue_secs),
            "total_seconds": round3(self.total_secs),
            "exchanges": kinds,
            "sent": sent,
            "sent_total": self.sent.iter().sum::<u64>(),
            "send_failed": self.send_failed,
            "received": self.received,
            "answered": self.answered,
            "retransmitted": self.retransmitted,
            "drops": self.drops,
            "drop_ratio": self.drop_ratio(),
            "timed_out": self.timed_out,
            "naks": self.naks,
            "stale_replies": self.stale,
            "unfinished": self.unfinished,
            "busy_skips": self.busy_skips,
            "latency_us": {"pairs": pairs, "exchanges": exch},
            "violations": {
                "total": self.violations.total(),
                "by_kind": by_kind,
                "first": self.violations.first,
            },
        })
    }

    /// The human summary: counts, percentiles and an ASCII histogram of the headline exchange.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "exchanges: {} started, {} completed in {:.2} s issuing (+{:.2} s drain): offered {:.0}/s, achieved {:.0}/s",
            self.started_total(),
            self.completed_total(),
            self.issue_secs,
            (self.total_secs - self.issue_secs).max(0.0),
            self.offered_rate(),
            self.rate()
        );
        for k in Kind::ALL {
            let (st, c) = (self.started[k as usize], self.completed[k as usize]);
            if st > 0 {
                let _ = writeln!(s, "  {:<12} {st} started, {c} completed", k.name());
            }
        }
        let sent: u64 = self.sent.iter().sum();
        let _ = writeln!(
            s,
            "messages: {sent} sent ({} retransmitted, {} send errors), {} received, {} answered, {} stale",
            self.retransmitted, self.send_failed, self.received, self.answered, self.stale
        );
        let _ = writeln!(
            s,
            "drops: {} ({:.3}%), timed out: {}, NAKed: {}, unfinished: {}, busy skips: {}",
            self.drops,
            self.drop_ratio() * 100.0,
            self.timed_out,
            self.naks,
            self.unfinished,
            self.busy_skips
        );
        let _ = writeln!(
            s,
            "latency (us)             p50      p90      p99    p99.9      max    count"
        );
        let rows = Pair::ALL
            .iter()
            .map(|p| (p.name(), &self.pairs[*p as usize]))
            .chain(
                Kind::ALL
                    .iter()
                    .map(|k| (k.name(), &self.exchanges[*k as usize])),
            );
        for (i, (name, h)) in rows.enumerate() {
            if h.is_empty() {
                continue;
            }
            let label = if i < Pair::ALL.len() {
                name.to_string()
            } else {
                format!("{name} (full)")
            };
            let _ = writeln!(
                s,
                "  {label:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                h.len()
            );
        }
        let (k, h) = self.main_exchange();
        if !h.is_empty() {
            let _ = writeln!(s, "{} exchange latency histogram:", k.name());
            s.push_str(&ascii_histogram(h, 50));
        }
        let total = self.violations.total();
        let _ = writeln!(s, "violations: {total}");
        for v in Violation::ALL {
            let n = self.violations.counts[v as usize];
            if n > 0 {
                let _ = writeln!(s, "  {:<22} {n}", v.name());
            }
        }
        for f in &self.violations.first {
            let _ = writeln!(s, "  first: {f}");
        }
        s
    }
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p99_9": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": round1(h.mean()),
    })
}

/// Power-of-two buckets from the smallest to the largest sample, one bar each, `width` characters for the fullest.
pub fn ascii_histogram(h: &Histogram<u64>, width: usize) -> String {
    let mut s = String::new();
    if h.is_empty() {
        return s;
    }
    let mut lo = h.min().max(1).next_power_of_two() / 2;
    lo = lo.max(1);
    let mut buckets = Vec::new();
    while lo <= h.max() {
        let hi = lo * 2;
        buckets.push((lo, hi, h.count_between(lo, hi - 1)));
        lo = hi;
    }
    let top = buckets.iter().map(|b| b.2).max().unwrap_or(1).max(1);
    for (lo, hi, n) in buckets {
        let bar = (n as u128 * width as u128).div_ceil(top as u128) as usize;
        let _ = writeln!(
            s,
            "  {:>9} .. {:<9} {:>10} |{}",
            human_us(lo),
            human_us(hi),
            n,
            "#".repeat(bar)
        );
    }
    s
}

fn human_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.1}s", us as f64 / 1e6)
    } else if us >= 1000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{us}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_has_bars() {
        let mut h = histogram();
        for v in [10u64, 11, 12, 100, 100, 100, 100, 5000] {
            h.record(v).unwrap();
        }
        let text = ascii_histogram(&h, 20);
        assert!(text.contains("64us .. 128us"), "{text}");
        assert!(text.lines().any(|l| l.ends_with(&"#".repeat(20))), "{text}");
    }

    #[test]
    fn violations_keep_the_first_few() {
        let mut v = Violations::new(2);
        for i in 0..5 {
            v.add(Violation::DuplicateAddress, Some(i), || format!("ip {i}"));
        }
        assert_eq!(v.total(), 5);
        assert_eq!(v.first.len(), 2);
        assert!(v.first[0].contains("client 0"));
    }

    #[test]
    fn server_answers_by_second() {
        let mut s = ServerStats::default();
        s.count_answer(10);
        s.count_answer(999_999);
        s.count_answer(2_500_000);
        assert_eq!(s.answered, 3);
        assert_eq!(s.answered_per_second, vec![2, 0, 1]);
        assert_eq!(s.to_json()["answered_per_second"], json!([2, 0, 1]));
    }

    #[test]
    fn drop_ratio_counts_only_requests_expecting_answers() {
        let mut s = Stats::new(0);
        s.sent[0] = 100; // DISCOVER
        s.sent[6] = 50; // RELEASE: no answer expected
        s.drops = 1;
        assert!((s.drop_ratio() - 0.01).abs() < 1e-9);
    }
}
