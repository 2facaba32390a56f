//! Relationship configuration and the persisted endpoint state.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::state::FailoverState;

/// Our role in the relationship.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Secondary,
}

/// Which implementation the partner is; changes wire details only (spec note §16–§18).
///
/// | | Ringlease | Isc | Microsoft |
/// |---|---|---|---|
/// | payload offset sent | 12 | 12 | 8 |
/// | updates per BNDUPD | ≤ `max_batch` (≤ 16) | 1 (ISC drops batches) | ≤ `max_batch` (≤ 16) |
/// | IP-flags width | 2 | 2 | 1 |
/// | relationship-name | UTF-8 | ASCII | UTF-16LE |
/// | TLS-request in CONNECT | 0 | 0 | omitted ([MS-DHCPF] §3.2.7.1) |
/// | partner's CONNECT/CONNECTACK values (max-unacked, receive-timer, MCLT) | used | used | ignored, own configuration used ([MS-DHCPF] §3.3.5.1) |
/// | DISCONNECT received | close | close | dropped ([MS-DHCPF] §3.1.5.8) |
/// | binding-status values | draft §12.3 | draft §12.3 | MS bit field ([MS-DHCPF] §3.1.4.2) |
/// | updates processed per received BNDUPD | all | all | first 16 ([MS-DHCPF] §3.1.5.2) |
/// | message digest with a [`SharedSecret`] | HMAC-SHA256, type 2 | none: a secret is a [`ConfigError`] | HMAC-SHA256, type 2 ([MS-DHCPF] §2.2) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    Ringlease,
    Isc,
    Microsoft,
}

impl Dialect {
    /// The secondary's share of each pool's free addresses, in percent, when `backup_share` is
    /// not configured; `None`: the default for the split (half when balancing load, 10 % in
    /// hot standby).
    ///
    /// ISC dhcpd 4.4 balances every pool to half FREE, half BACKUP whatever its `split`/`hba`
    /// (its pool timer moves `(free − backup) / 2` addresses; a secondary returns BACKUP
    /// addresses above half as FREE). A partner aiming at another share fights it: a ringlease
    /// secondary at 10 % returned 40 % of the pool as FREE, the dhcpd primary gave them back as
    /// BACKUP, a BNDUPD storm on every balancing run (docs/interop.md). The draft leaves the
    /// share to the implementation (§5.4), so towards ISC we aim at ISC's half in every mode.
    pub fn default_backup_share(self) -> Option<u8> {
        match self {
            Dialect::Isc => Some(50),
            Dialect::Ringlease | Dialect::Microsoft => None,
        }
    }
}

/// What the secondary does with the primary's MCLT (draft §7.8.2 step 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MclCheck {
    /// Draft: accept any MCLT and adopt it (persist it: [`Persisted::mclt_s`]). Reject 5 only
    /// when the option is missing or zero.
    Adopt,
    /// Both sides are configured (Windows, [MS-DHCPF] §3.3.5.1 "MUST NOT use the values"):
    /// a CONNECT whose MCLT differs from ours is rejected with reason 5.
    RequireEqual,
}

/// The largest number of binding updates in one BNDUPD ([MS-DHCPF] §3.1.4.2: ≤ 16).
pub const MAX_UPDATES_PER_BNDUPD: usize = 16;

/// A failover relationship as configured. Times are seconds. Defaults are [MS-DHCPF]'s
/// (§3.1.2, Appendix A): tSend 1 min, tReceive 3 min, startup 5 min, connect retry 1 min,
/// safe period off (60 min when enabled), max clock skew 1 min; MCLT 1 h.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// relationship-name (option 22); compared byte for byte in the dialect's encoding.
    pub name: String,
    pub role: Role,
    pub dialect: Dialect,
    /// MCLT. The primary sends it; a secondary with [`MclCheck::Adopt`] uses the primary's.
    pub mclt_s: u32,
    pub mclt_check: MclCheck,
    /// max-unacked-bndupd we advertise: how many BNDUPDs the partner may have outstanding
    /// toward us (draft §8.4; SHOULD be 10..100). Must be ≥ 1.
    pub max_unacked_bndupd: u32,
    /// Updates packed per BNDUPD, 1..=16 (ISC dialect always uses 1).
    pub max_batch: usize,
    /// tSend: CONTACT after this much silence. When the partner tells us its receive-timer
    /// (and the dialect is not Microsoft), a third of that is used if smaller.
    pub tsend_s: u32,
    /// tReceive: our receive-timer (sent in CONNECT/CONNECTACK).
    pub treceive_s: u32,
    pub startup_s: u32,
    /// When the startup timer expires without the partner (draft §9.3 step 6): `false` resumes
    /// the previous state, as ISC dhcpd and Windows do, so a lone survivor keeps serving; `true`
    /// stays in STARTUP, answering nobody, until the partner answers or the operator sets
    /// PARTNER-DOWN. Waiting is the safe choice where the partner may have been set
    /// PARTNER-DOWN while this server was down: it then uses this server's free addresses.
    pub startup_wait: bool,
    /// `None` = no automatic PARTNER-DOWN.
    pub safe_period_s: Option<u32>,
    pub connect_retry_s: u32,
    /// The synchronization timer ([MS-DHCPF] §3.1.2.6, interval implementation-dependent):
    /// how long an answer to our UPDREQ/UPDREQALL may pause between BNDUPDs.
    pub sync_s: u32,
    /// Largest |message time − arrival time| accepted ([MS-DHCPF] §3.1.5; ISC 60 s).
    pub max_clock_skew_s: u32,
    /// hash-bucket-assignment sent in CONNECT (all zero = no load balancing).
    pub hba: [u8; 32],
    /// vendor-class-identifier (option 28).
    pub vendor_class: String,
    /// Shared secret: when set, every message we send carries the message digest and every
    /// message received must carry a valid one ([MS-DHCPF] §3.1.5; endpoint module docs).
    /// Both partners need the same secret; not allowed with [`Dialect::Isc`].
    pub secret: Option<SharedSecret>,
}

impl Config {
    /// [MS-DHCPF] defaults for everything but name and role.
    pub fn new(name: impl Into<String>, role: Role) -> Config {
        Config {
            name: name.into(),
            role,
            dialect: Dialect::Ringlease,
            mclt_s: 3600,
            mclt_check: MclCheck::Adopt,
            max_unacked_bndupd: 10,
            max_batch: MAX_UPDATES_PER_BNDUPD,
            tsend_s: 60,
            treceive_s: 180,
            startup_s: 300,
            startup_wait: false,
            safe_period_s: None,
            connect_retry_s: 60,
            sync_s: 300,
            max_clock_skew_s: 60,
            hba: [0; 32],
            vendor_class: concat!("ringlease-", env!("CARGO_PKG_VERSION")).to_string(),
            secret: None,
        }
    }

    /// Checks the invariants the endpoint relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        if self.max_unacked_bndupd == 0 {
            return Err(ConfigError::MaxUnacked);
        }
        if !(1..=MAX_UPDATES_PER_BNDUPD).contains(&self.max_batch) {
            return Err(ConfigError::MaxBatch);
        }
        if self.tsend_s == 0 || self.treceive_s == 0 || self.tsend_s >= self.treceive_s {
            return Err(ConfigError::Timers);
        }
        if self.startup_s == 0 || self.connect_retry_s == 0 || self.sync_s == 0 {
            return Err(ConfigError::Timers);
        }
        if self.role == Role::Primary && self.mclt_s == 0 {
            return Err(ConfigError::Mclt);
        }
        if let Some(secret) = &self.secret {
            if secret.is_empty() {
                return Err(ConfigError::EmptySecret);
            }
            if self.dialect == Dialect::Isc {
                // ISC sends no digest, so every message from it would be dropped (spec §13).
                return Err(ConfigError::SecretWithIsc);
            }
        }
        Ok(())
    }

    /// Updates per BNDUPD for this dialect.
    pub fn batch(&self) -> usize {
        match self.dialect {
            Dialect::Isc => 1,
            Dialect::Ringlease | Dialect::Microsoft => {
                self.max_batch.clamp(1, MAX_UPDATES_PER_BNDUPD)
            }
        }
    }

    /// relationship-name as sent on the wire.
    pub fn name_bytes(&self) -> Vec<u8> {
        encode_text(self.dialect, &self.name)
    }
}

pub(crate) fn encode_text(dialect: Dialect, s: &str) -> Vec<u8> {
    match dialect {
        Dialect::Microsoft => s.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        Dialect::Ringlease | Dialect::Isc => s.as_bytes().to_vec(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigError {
    EmptyName,
    MaxUnacked,
    MaxBatch,
    Timers,
    Mclt,
    /// [`Config::secret`] is set but empty.
    EmptySecret,
    /// [`Config::secret`] with [`Dialect::Isc`]: ISC dhcpd 4.4 implements no message digest.
    SecretWithIsc,
    /// A persisted state part 1 cannot resume from (PAUSED, SHUTDOWN, POTENTIAL-CONFLICT, …).
    UnsupportedPersistedState(FailoverState),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::EmptyName => f.write_str("relationship name is empty"),
            ConfigError::MaxUnacked => f.write_str("max-unacked-bndupd must be at least 1"),
            ConfigError::MaxBatch => f.write_str("max_batch must be 1..=16"),
            ConfigError::Timers => {
                f.write_str("timers must be non-zero and tSend shorter than tReceive")
            }
            ConfigError::Mclt => f.write_str("the primary needs a non-zero MCLT"),
            ConfigError::EmptySecret => f.write_str("the failover shared secret is empty"),
            ConfigError::SecretWithIsc => f.write_str(
                "a shared secret cannot be used with the isc dialect: ISC dhcpd 4.4 implements \
                 no message digest, so it would never authenticate",
            ),
            ConfigError::UnsupportedPersistedState(s) => {
                write!(f, "cannot resume from persisted state {}", s.name())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The failover shared secret: the HMAC key of the message digest ([MS-DHCPF] §2.2, §5.1). Its
/// `Debug` prints `<redacted>`, so a logged [`Config`] never shows it; only the digest code reads
/// the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(Box<[u8]>);

impl SharedSecret {
    pub fn new(key: impl Into<Vec<u8>>) -> SharedSecret {
        SharedSecret(key.into().into_boxed_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// HMAC-SHA256 keyed with the secret over `head`, then `zeroed_len` zero bytes, then
    /// `tail`: a message with its digest bytes zeroed (draft §11.1). The one place the digest
    /// is computed; the endpoint's signing and verifying both start here.
    pub(crate) fn mac(&self, head: &[u8], zeroed_len: usize, tail: &[u8]) -> Hmac<Sha256> {
        const ZEROS: [u8; 64] = [0; 64];
        // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(head);
        // Chunked: a received digest may claim any length, and this must not panic on it.
        let mut left = zeroed_len;
        while left > 0 {
            let n = left.min(ZEROS.len());
            mac.update(&ZEROS[..n]);
            left -= n;
        }
        mac.update(tail);
        mac
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What the caller keeps in stable storage for a restart ([MS-DHCPF] §3.1.3 `prevState`,
/// draft §9.2/§9.3): the state and when it was entered, and the MCLT a secondary adopted.
/// Write it on every [`super::Output::StateChanged`] before acting on later outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persisted {
    pub state: FailoverState,
    pub entered_at_s: u64,
    pub mclt_s: u32,
}
