//! One simulated DHCP client: its identity (derived from an index and the seed, so runs are reproducible), its state,
//! the RFC 2131 retransmission back-off and the scenario deciding what a client does next.

/// Client indexes live in the low 24 bits of the xid (the high byte is the exchange generation), so replies are
/// matched to their client in O(1).
pub const MAX_CLIENTS: u32 = 1 << 24;

/// SplitMix64: a tiny, good-enough mixer for reproducible per-client randomness (jitter, mix choices).
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Who the simulated clients are: hardware address and optional client identifier, from index and seed.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// Two bytes of the hardware address taken from the seed: another seed = other clients.
    seed_tag: [u8; 2],
}

impl Identity {
    pub fn new(seed: u64) -> Identity {
        let m = mix64(seed);
        Identity {
            seed_tag: [(m >> 8) as u8, m as u8],
        }
    }

    /// 02:ss:ss:ii:ii:ii — locally administered unicast, distinct for each of the 2^24 indexes.
    pub fn mac(&self, index: u32) -> [u8; 6] {
        let [_, a, b, c] = index.to_be_bytes();
        [0x02, self.seed_tag[0], self.seed_tag[1], a, b, c]
    }

    /// Option 61: type 0 (not a hardware address, RFC 2132 §9.14) + "rlg" + seed tag + index.
    pub fn client_id(&self, index: u32) -> [u8; 10] {
        let i = index.to_be_bytes();
        [
            0,
            b'r',
            b'l',
            b'g',
            self.seed_tag[0],
            self.seed_tag[1],
            i[0],
            i[1],
            i[2],
            i[3],
        ]
    }
}

pub fn xid(index: u32, generation: u8) -> u32 {
    (u32::from(generation) << 24) | (index & (MAX_CLIENTS - 1))
}

/// (client index, generation) of an xid.
pub fn split_xid(xid: u32) -> (u32, u8) {
    (xid & (MAX_CLIENTS - 1), (xid >> 24) as u8)
}

/// RFC 2131 §4.1 states, plus Echo for the reflector ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Init,
    /// DISCOVER sent, waiting for an OFFER.
    Selecting,
    /// REQUEST (selecting) sent, waiting for ACK/NAK.
    Requesting,
    Bound,
    /// REQUEST with ciaddr sent, waiting for ACK/NAK.
    Renewing,
    /// REQUEST with option 50 and no server id sent, waiting for ACK/NAK.
    Rebooting,
    /// Datagram sent to a reflector, waiting for it to come back.
    Echoing,
}

impl State {
    pub fn waiting(self) -> bool {
        !matches!(self, State::Init | State::Bound)
    }

    /// Does a client in this state own its address (for the duplicate-address check)?
    pub fn holds_address(self) -> bool {
        matches!(self, State::Bound | State::Renewing | State::Rebooting)
    }
}

/// What an exchange does. A client without a lease always does a DORA first (see [`Scenario::next_kind`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Dora,
    Renew,
    Release,
    Decline,
    InitReboot,
    Echo,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Dora,
        Kind::Renew,
        Kind::Release,
        Kind::Decline,
        Kind::InitReboot,
        Kind::Echo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Dora => "dora",
            Kind::Renew => "renew",
            Kind::Release => "release",
            Kind::Decline => "decline",
            Kind::InitReboot => "init-reboot",
            Kind::Echo => "echo",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// The size of a client matters at 10 million of them: 32 bytes each.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub state: State,
    pub kind: Kind,
    /// Transmissions of the current message (1 after the first send).
    pub tries: u8,
    /// High byte of the xid: bumped per exchange, so a late answer to an earlier exchange is recognised as stale.
    pub generation: u8,
    /// Offered, requested or bound address.
    pub ip: u32,
    /// Server identifier from the OFFER (0 = none yet).
    pub server_id: u32,
    /// Index (in `--server` order) of the server whose OFFER or ACK the client took: its renewals and releases go
    /// there. Always 0 with one server.
    pub server: u8,
    /// Microseconds since the run's epoch: start of the exchange and last transmission.
    pub started_us: u64,
    pub sent_us: u64,
}

impl Client {
    pub const NEW: Client = Client {
        state: State::Init,
        kind: Kind::Dora,
        tries: 0,
        generation: 0,
        ip: 0,
        server_id: 0,
        server: 0,
        started_us: 0,
        sent_us: 0,
    };

    /// Tags a retransmission timer: a timer whose stamp no longer matches belongs to an answered message.
    pub fn timer_stamp(&self) -> u16 {
        u16::from(self.generation) << 8 | u16::from(self.tries)
    }
}

/// RFC 2131 §4.1 retransmission: the delay doubles per try up to a cap, randomised. RFC values are 4 s, 64 s and
/// ±1 s; a benchmark wants shorter ones, hence configurable, and the jitter is ±1/8 of the delay (at most 1 s) so it
/// keeps the same proportion at millisecond scale.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    /// Transmissions per message before the exchange times out.
    pub max_tries: u8,
}

impl Backoff {
    /// Delay after transmission number `tries` (1-based); `noise` is any random u64.
    pub fn delay_ms(&self, tries: u8, noise: u64) -> u64 {
        let shift = u32::from(tries.saturating_sub(1)).min(20);
        let base = self.initial_ms.saturating_mul(1 << shift).min(self.max_ms);
        let spread = (base / 8).min(1000);
        if spread == 0 {
            return base.max(1);
        }
        // Uniform in [base - spread, base + spread].
        (base - spread + noise % (2 * spread + 1)).max(1)
    }

    /// The longest an exchange message can stay unanswered before it times out (all delays at their maximum).
    pub fn worst_case_ms(&self) -> u64 {
        (1..=self.max_tries)
            .map(|t| {
                let d = self.delay_ms(t, 0);
                d + (d / 8).min(1000) * 2
            })
            .sum()
    }
}

/// Which exchange a client starts next.
#[derive(Clone, Debug)]
pub enum Scenario {
    /// Every exchange of a bound client is of this kind (Dora: the client starts over from INIT).
    Single(Kind),
    /// Weighted choice per exchange (cumulative weights, in Kind::ALL order of the kinds given).
    Mix(Vec<(Kind, u32)>),
}

impl Scenario {
    /// `dora=60,renew=30,release=10`.
    pub fn parse_mix(s: &str) -> Result<Scenario, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("mix entry {part:?} is not KIND=WEIGHT"))?;
            let kind = Kind::parse(name.trim())
                .filter(|k| *k != Kind::Echo)
                .ok_or_else(|| format!("unknown kind {name:?} in --mix (dora, renew, release, decline, init-reboot)"))?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("weight {w:?} is not a number"))?;
            if w > 0 {
                out.push((kind, w));
            }
        }
        if out.is_empty() {
            return Err("--mix needs at least one positive weight".into());
        }
        Ok(Scenario::Mix(out))
    }

    /// The kind of the next exchange for a client in `state`; `noise` picks the mix entry. A client without a lease
    /// does a DORA whatever the scenario says (renew/release/decline/init-reboot need a lease first).
    pub fn next_kind(&self, state: State, noise: u64) -> Kind {
        let wanted = match self {
            Scenario::Single(k) => *k,
            Scenario::Mix(entries) => {
                let total: u64 = entries.iter().map(|(_, w)| u64::from(*w)).sum();
                let mut pick = noise % total;
                let mut chosen = entries[0].0;
                for &(k, w) in entries {
                    if pick < u64::from(w) {
                        chosen = k;
                        break;
                    }
                    pick -= u64::from(w);
                }
                chosen
            }
        };
        match wanted {
            Kind::Echo => Kind::Echo,
            _ if state != State::Bound => Kind::Dora,
            k => k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_small() {
        assert!(std::mem::size_of::<Client>() <= 32);
    }

    #[test]
    fn identities_are_distinct_and_reproducible() {
        let a = Identity::new(7);
        assert_eq!(a.mac(5), Identity::new(7).mac(5));
        assert_ne!(a.mac(5), a.mac(6));
        assert_ne!(a.mac(5), Identity::new(8).mac(5));
        assert_eq!(a.mac(MAX_CLIENTS - 1)[3..], [0xff, 0xff, 0xff]);
        assert_eq!(a.mac(0)[0], 0x02, "locally administered unicast");
        assert_ne!(a.client_id(1), a.client_id(2));
    }

    #[test]
    fn xid_round_trip() {
        for (i, g) in [(0, 0), (1, 1), (MAX_CLIENTS - 1, 255), (12345, 7)] {
            assert_eq!(split_xid(xid(i, g)), (i, g));
        }
    }

    #[test]
    fn backoff_doubles_capped_and_jittered() {
        let b = Backoff {
            initial_ms: 1000,
            max_ms: 4000,
            max_tries: 4,
        };
        // No noise → lowest value: base - base/8.
        assert_eq!(b.delay_ms(1, 0), 875);
        assert_eq!(b.delay_ms(2, 0), 1750);
        assert_eq!(b.delay_ms(3, 0), 3500);
        assert_eq!(b.delay_ms(4, 0), 3500, "capped at max_ms");
        for n in 0..1000u64 {
            let d = b.delay_ms(1, mix64(n));
            assert!((875..=1125).contains(&d), "{d}");
        }
        // Tiny delays stay positive and un-jittered.
        let tiny = Backoff {
            initial_ms: 1,
            max_ms: 2,
            max_tries: 2,
        };
        assert_eq!(tiny.delay_ms(1, 99), 1);
        assert_eq!(tiny.delay_ms(9, 99), 2);
        assert!(b.worst_case_ms() >= 1000 + 2000 + 4000 + 4000);
    }

    #[test]
    fn scenario_needs_a_lease_first() {
        let s = Scenario::Single(Kind::Renew);
        assert_eq!(s.next_kind(State::Init, 0), Kind::Dora);
        assert_eq!(s.next_kind(State::Bound, 0), Kind::Renew);
        assert_eq!(
            Scenario::Single(Kind::Dora).next_kind(State::Bound, 0),
            Kind::Dora
        );
    }

    #[test]
    fn mix_follows_weights() {
        let s = Scenario::parse_mix("renew=3, release=1,decline=0").unwrap();
        let mut counts = [0u32; 6];
        for n in 0..40_000u64 {
            counts[s.next_kind(State::Bound, mix64(n)) as usize] += 1;
        }
        assert_eq!(counts[Kind::Decline as usize], 0);
        let ratio =
            f64::from(counts[Kind::Renew as usize]) / f64::from(counts[Kind::Release as usize]);
        assert!((2.7..3.3).contains(&ratio), "{counts:?}");
        assert!(Scenario::parse_mix("bogus=1").is_err());
        assert!(Scenario::parse_mix("dora=0").is_err());
    }

    #[test]
    fn states() {
        assert!(State::Selecting.waiting() && !State::Bound.waiting());
        assert!(State::Renewing.holds_address() && !State::Requesting.holds_address());
    }
}
