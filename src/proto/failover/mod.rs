//! DHCP failover endpoint core (draft-ietf-dhc-failover-12 as ISC dhcpd speaks it, plus
//! [MS-DHCPF]): connection handshake, liveness, the endpoint state machine (every draft §9 state
//! but PAUSED and SHUTDOWN: NORMAL, COMMUNICATIONS-INTERRUPTED, PARTNER-DOWN, the RECOVER path,
//! and the POTENTIAL-CONFLICT / RESOLUTION-INTERRUPTED / CONFLICT-DONE resolution), binding
//! replication with BNDUPD/BNDACK and UPDREQ/UPDREQALL/UPDDONE, POOLREQ/POOLRESP, and message
//! authentication with a shared secret (HMAC-SHA256 digest, replay checks).
//!
//! # Sans-IO contract
//!
//! The [`Endpoint`] owns no socket, file, thread or clock. Times are passed in as `now_ms`
//! (milliseconds since 1970 UTC on the caller's clock; message `time` fields are its seconds).
//! The shell:
//!
//! 1. creates it with [`Endpoint::new`] (config + what it persisted last time);
//! 2. after **every** call below, drains [`Endpoint::poll_output`] in order and acts:
//!    `Send` → write to the connection; `ApplyBinding` / `StateChanged` / `PartnerAcked` →
//!    make durable *before* writing any later `Send` (the BNDACK for an applied binding comes
//!    after it); `CloseConnection` → close the socket (do not call `disconnected`);
//!    `OpenConnection` → try to connect to the partner; `AllBindingsRequested` → call
//!    [`Endpoint::queue_all_bindings`]; `PoolRequested` → rebalance, then
//!    [`Endpoint::answer_pool_request`];
//! 3. arms one OS timer for [`Endpoint::poll_timeout`] and calls
//!    [`Endpoint::handle_timeout`] when it fires;
//! 4. reports transport events with [`Endpoint::connected`] / [`Endpoint::disconnected`],
//!    each deframed message with [`Endpoint::receive_frame`] (deframing errors with
//!    [`Endpoint::frame_error`]), and each durable local lease change with
//!    [`Endpoint::binding_changed`].
//!
//! # Message authentication
//!
//! Optional: set [`Config::secret`] (a [`SharedSecret`]) on both sides. All of it lives in
//! `endpoint.rs`, whose module docs have the byte layout and the full tables: every message we
//! send is signed in one place (the encoder: message-digest option 17 first, type 2,
//! HMAC-SHA256 over the whole message with the digest bytes zeroed), and every received one is
//! checked by [`verify_digest`] in [`Endpoint::receive_frame`] before anything in it is used.
//! On failure the message is dropped unread and the connection closed, after a CONNECTACK (if it
//! was a CONNECT to answer) or DISCONNECT carrying the reason: 21 digest missing, 20 wrong digest
//! or type, 13 digest received but no secret configured ([`CloseReason::Digest`],
//! [`Stats::digest_failures`]). Authentic but replayed messages (draft §11.1) are refused the
//! same way: a CONNECT no later than the last one the secondary accepted gets CONNECTACK 4
//! ([`CloseReason::ReplayedConnect`]); a message whose own xid is not after the previous one on
//! the connection gets DISCONNECT 254 ([`CloseReason::ReplayedXid`]); both count in
//! [`Stats::replays_rejected`]. That memory is in-process only; the clock-skew limit bounds
//! what a restart lets through. ISC dhcpd has no digest at all (it ignores the option and never
//! sends one), so a secret with [`Dialect::Isc`] is refused ([`ConfigError::SecretWithIsc`]).
//! Interoperability of the digest with Windows is unverified (spec note §13, §16.1).
//!
//! # Transitions
//!
//! Implemented (draft §9.3–§9.14, text over figure; [MS-DHCPF] §3.1):
//! - STARTUP → previous state on comms OK (→ RECOVER for a new relationship, [MS-DHCPF]
//!   §3.1.3; → RECOVER if the partner is PARTNER-DOWN since after our last state);
//!   STARTUP → previous state, or COMMUNICATIONS-INTERRUPTED if none, on the startup timer
//!   ([MS-DHCPF] §3.1.6.3).
//! - NORMAL → COMMUNICATIONS-INTERRUPTED on link loss / tReceive expiry, or partner
//!   PAUSED / RECOVER; NORMAL → PARTNER-DOWN on partner SHUTDOWN or command.
//! - COMMUNICATIONS-INTERRUPTED → NORMAL on partner NORMAL / COMM-INT / RECOVER-DONE;
//!   → PARTNER-DOWN on safe-period expiry, partner SHUTDOWN, or command.
//! - PARTNER-DOWN → NORMAL on partner RECOVER-DONE.
//! - RECOVER (sends UPDREQALL if new, else UPDREQ) → RECOVER-WAIT / RECOVER-DONE on UPDDONE;
//!   RECOVER-WAIT → RECOVER-DONE on its timer; RECOVER-DONE → NORMAL on partner NORMAL /
//!   RECOVER-DONE.
//!
//! Refused (→ [`Output::TransitionRefused`], stay, DISCONNECT + close): every transition into
//! POTENTIAL-CONFLICT (partner PARTNER-DOWN / POTENTIAL-CONFLICT / RESOLUTION-INTERRUPTED /
//! CONFLICT-DONE while we are NORMAL, COMM-INT, PARTNER-DOWN or RECOVER), and so everything
//! after it (RESOLUTION-INTERRUPTED, CONFLICT-DONE); PAUSED and SHUTDOWN are never entered and
//! cannot be resumed from ([`ConfigError::UnsupportedPersistedState`]).
//!
//! # Where the seed ([MS-DHCPF]) and the spec note disagree (seed followed)
//!
//! - Startup timer with no previous state: seed → COMMUNICATIONS-INTERRUPTED; draft →
//!   RECOVER.
//! - DISCONNECT received: seed (Microsoft dialect) drops it; the draft closes (other dialects).
//! - CONNECT values (max-unacked, receive-timer, MCLT, version, HBA): the seed forbids using
//!   them (Microsoft dialect uses its own configuration, [`MclCheck::RequireEqual`]); the
//!   draft says the secondary adopts the primary's MCLT (Ringlease/ISC dialects,
//!   [`MclCheck::Adopt`]).
//! - Time skew: the seed closes on any message beyond the allowed delta; the draft allows
//!   any stable skew. We enforce `max_clock_skew_s` on every message.
//! - CONNECT: seed: the primary sends it on every new connection; draft: only on connections
//!   the primary initiated. We send it on every connection (ISC does too).
//! - Message digest: seed: HMAC-SHA256 (type 2, as Wireshark shows Windows sending); draft:
//!   HMAC-MD5 (type 1). We send and accept only type 2, in every dialect.

mod binding;
mod config;
mod endpoint;
pub mod loadbalance;
mod service;
mod state;
mod timer;

#[cfg(test)]
mod tests;

pub use binding::{
    accept_update, check_complete, max_lease_end, potential_expiration, Binding, BindingChange,
    HwAddr, LocalBindings, Lookup, NoLocalBindings,
};
pub use config::{
    Config, ConfigError, Dialect, MclCheck, Persisted, Role, SharedSecret, MAX_UPDATES_PER_BNDUPD,
};
pub use endpoint::{
    verify_digest, AlreadyConnected, ChangeReason, CloseReason, Endpoint, Link, Output,
    PartnerState, ProtocolError, Stats, Unsupported, PROTOCOL_VERSION,
};
pub use service::{allowed_service, Admitted, ServiceGate};
pub use state::{on_partner_state, Decision, FailoverState};
pub use timer::{Timer, TimerTable};
