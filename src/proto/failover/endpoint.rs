//! One failover relationship's endpoint: connection handshake, liveness, the state machine and
//! binding replication. Sans-IO; see the module docs of [`super`] for the call contract.
//!
//! # Message authentication (draft §11.1, §12.17; [MS-DHCPF] §2.2, §3.1.5, §5.1)
//!
//! With a [`SharedSecret`] in [`Config::secret`], every message we send carries the
//! message-digest option (17) as its **first** option: type 2, 32 bytes of HMAC-SHA256 keyed
//! with the secret over the **whole message** — all `len` bytes, header included, the option's
//! code, length and type byte as sent, **only the 32 digest bytes zeroed** (what
//! [`FailoverMessage::digest_input`] exposes). [MS-DHCPF] names only the algorithm ("HMAC with
//! SHA-256 of the text"); the byte range and the zeroing are draft-12's and the type byte is
//! what Wireshark shows Windows sending, so interoperability with Windows is **unverified**
//! (spec note §13, §16.1). A received digest is accepted in any position (the draft's §6.3
//! diagram shows it trailing).
//!
//! [`Endpoint::receive_frame`] checks the digest ([`verify_digest`]) right after parsing,
//! before anything else in the message is acted on — not even tReceive is re-armed:
//!
//! | secret | received | result |
//! |---|---|---|
//! | yes | valid type-2 digest | processed |
//! | yes | none | drop, close, reason 21 (missing digest) |
//! | yes | wrong digest, or a type other than 2 | drop, close, reason 20 (failed to compare) |
//! | no | any digest | drop, close, reason 13 (not configured) |
//! | no | none | processed |
//!
//! On a failure the message is dropped unread ([MS-DHCPF] §3.1.5: "dropped, and the TCP
//! connection ... closed") and the reason goes out before the close the way the draft sends
//! reasons: a CONNECT we would answer gets a CONNECTACK with the reject-reason (draft §7.8.2
//! step 4), anything else a DISCONNECT (draft §7.12: the last message on an explicit close).
//! The shell sees [`CloseReason::Digest`]; [`Stats::digest_failures`] counts them.
//! ISC dhcpd 4.4 implements no digest, so a secret with [`Dialect::Isc`] is a
//! [`ConfigError::SecretWithIsc`].
//!
//! ## Replay defence (draft §11.1; spec note §6, §13)
//!
//! A digest proves who wrote a message, not when. With a secret, three checks follow the
//! digest check (none runs without one: an unsigned message can be forged outright):
//!
//! - **CONNECT time** (draft: "MUST be rejected"). The secondary keeps the `time` of the last
//!   CONNECT it accepted and answers any CONNECT whose `time` is not later with CONNECTACK
//!   reject-reason 4 ([`CloseReason::ReplayedConnect`]). Only *accepted* CONNECTs are
//!   remembered (the draft says "received"): a CONNECT refused for skew could otherwise park the
//!   mark in the future and lock the partner out. In memory only, so a restart forgets it; the
//!   skew check (`max_clock_skew_s`) still bounds what can be replayed then to CONNECTs
//!   recorded within the last `max_clock_skew_s` seconds. A partner reconnecting within the
//!   same second is refused once and retries after its connect-retry time.
//! - **xid order** (draft: "MUST be greater than that of the previous message received on
//!   that failover endpoint"). Per connection, every message whose xid the sender chose (all
//!   but CONNECTACK, BNDACK, UPDDONE and POOLRESP, which copy one of ours) must carry an xid
//!   after the previous such one (serial-number order, so a wrapping counter is fine); else
//!   DISCONNECT 254 and close ([`CloseReason::ReplayedXid`]). Per connection, not per
//!   endpoint, because xids "are only meaningful within one TCP connection" (draft §6.1) and a
//!   restarted partner starts its counter again.
//! - **Responses** must answer what we asked on this connection: CONNECTACK and BNDACK were
//!   already matched by xid; with a secret UPDDONE is too (else ignored as unsolicited). And
//!   with a secret our xid counter is not restarted per connection, so each CONNECT has a new
//!   xid and a CONNECTACK recorded on an earlier connection does not answer it (the draft asks
//!   no CONNECTACK time check of the primary). Within a process; after a restart the counter
//!   starts at 0 again, and the skew check bounds that window as above.
//!
//! [`Stats::replays_rejected`] counts what these checks refused.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::ops::Range;

use hmac::Mac;
use sha2::digest::{typenum::Unsigned, OutputSizeUser};
use sha2::Sha256;

use super::binding::{
    accept_update, ms_status, Binding, HwAddr, LocalBindings, Lookup, Queued, UpdateQueue,
};
use super::config::{
    encode_text, Config, ConfigError, Dialect, MclCheck, Persisted, Role, SharedSecret,
};
use super::state::{on_partner_state, Decision, FailoverState};
use super::timer::{Timer, TimerTable};
use crate::proto::wire::failover::options::{
    DIGEST_HMAC_SHA256, DIGEST_HMAC_SHA256_LEN, SERVER_FLAG_STARTUP,
};
use crate::proto::wire::failover::{
    code, BindingStatus, BuildError, FailoverMessage, FailoverWriter, FrameError, Message,
    MessageType, Options, RejectReason, MAX_ENCODABLE_LEN, MAX_MESSAGE_LEN, MS_PAYLOAD_OFFSET,
    OPTION_HEADER_LEN,
};

/// protocol-version we speak (draft §12.20).
pub const PROTOCOL_VERSION: u8 = 1;

/// The message-digest option we add with a secret: header, type byte, HMAC-SHA256.
const DIGEST_OPTION_LEN: usize = OPTION_HEADER_LEN + 1 + DIGEST_HMAC_SHA256_LEN;
const _: () = assert!(DIGEST_HMAC_SHA256_LEN == <Sha256 as OutputSizeUser>::OutputSize::USIZE);

/// Why the endpoint changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeReason {
    /// STARTUP ended because communications came up.
    CommunicationsOk,
    /// The partner's state (from a STATE message) drove the draft's transition table.
    PartnerState(FailoverState),
    /// Connection lost, tReceive expired, or we closed it.
    CommunicationsFailed,
    StartupTimer,
    SafePeriodTimer,
    RecoverWaitTimer,
    /// UPDDONE received in RECOVER.
    UpdatesDone,
    /// An operator command ([`Endpoint::set_partner_down`]).
    Command,
}

/// A peer breaking the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    Frame(FrameError),
    /// A message not allowed at this point of the connection.
    Unexpected(MessageType),
    /// A BNDACK that does not answer the oldest outstanding BNDUPD (wrong xid or none).
    BndAckOutOfOrder {
        xid: u32,
    },
    /// A BNDACK whose addresses differ from the BNDUPD's (count or order).
    BndAckMismatch {
        xid: u32,
    },
    /// A message we would send does not fit the 16-bit length field (cannot happen for
    /// messages built from bounded input; guarded anyway).
    Oversized,
    /// A CONNECTACK's relationship-name or protocol-version is not ours.
    BadConnectAck(RejectReason),
}

/// Why the connection is being closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// We rejected the partner's CONNECT with this reason (CONNECTACK sent).
    RejectedConnect(RejectReason),
    /// The partner rejected our CONNECT.
    PeerRejected(RejectReason),
    /// The partner sent DISCONNECT.
    PeerDisconnected(RejectReason),
    /// Message time too far from our clock ([MS-DHCPF] §3.1.5).
    TimeSkew {
        skew_s: i64,
    },
    /// tReceive expired (DISCONNECT 17 sent).
    NoTraffic,
    /// Our UPDREQ/UPDREQALL saw no BNDUPD or UPDDONE for the synchronization interval.
    SyncTimeout,
    Protocol(ProtocolError),
    /// The draft wants a transition part 1 does not implement.
    Unsupported {
        to: FailoverState,
    },
    /// A received message failed the message-digest check (module docs): 13 digest not
    /// configured, 20 wrong digest or digest type, 21 digest missing. The message was dropped
    /// unread; a CONNECTACK or DISCONNECT with this reason was sent.
    Digest(RejectReason),
    /// With a secret: a CONNECT whose `time_s` is not after `last_s`, the last accepted one's
    /// (draft §11.1 replay defence; CONNECTACK reject-reason 4 sent).
    ReplayedConnect {
        time_s: u32,
        last_s: u32,
    },
    /// With a secret: a message whose own xid is not after `last`, the previous one on this
    /// connection (draft §11.1; DISCONNECT reject-reason 254 sent, message dropped unread).
    ReplayedXid {
        xid: u32,
        last: u32,
    },
}

/// What the endpoint wants done. Drain with [`Endpoint::poll_output`] **in order**: a
/// `StateChanged` must be persisted and an `ApplyBinding` committed to the lease log before
/// any later `Send` is written (draft §9.2 "write before acting", §7.1.4 "no BNDACK before the
/// data is in stable storage").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// One encoded failover message for the current connection.
    Send(Vec<u8>),
    /// Store this binding from the partner in the lease table (and the lease log).
    ApplyBinding(Binding),
    /// The partner acknowledged our update of `ip` to `status`: `partner_expiry_s` (the PET we
    /// sent) is now its acked-PET (append to the lease log; feed [`super::max_lease_end`]).
    PartnerAcked {
        ip: Ipv4Addr,
        status: BindingStatus,
        partner_expiry_s: u64,
    },
    /// The partner rejected our update (draft §7.2.2: log, do not resend at once).
    PartnerRejected { ip: Ipv4Addr, reason: RejectReason },
    StateChanged {
        from: FailoverState,
        to: FailoverState,
        reason: ChangeReason,
        at_ms: u64,
    },
    /// Close the TCP connection (anything to send was queued before this).
    CloseConnection { reason: CloseReason },
    /// The link is down and the connect-retry timer fired: open a connection to the partner.
    OpenConnection,
    /// The partner sent UPDREQALL: call [`Endpoint::queue_all_bindings`] with every binding.
    AllBindingsRequested,
    /// The partner finished answering our UPDREQ/UPDREQALL.
    UpdatesDone,
    /// The secondary asks for addresses (POOLREQ, draft §7.6): rebalance
    /// ([`crate::proto::lease::LeaseTable::rebalance`]), queue what was given, then call
    /// [`Endpoint::answer_pool_request`] with `xid` and the count.
    PoolRequested { xid: u32 },
    /// The draft wants `from → to` but part 1 does not implement it; we stayed in `from`.
    TransitionRefused {
        from: FailoverState,
        to: FailoverState,
        partner: Option<FailoverState>,
    },
}

/// [`Endpoint::connected`] while a connection is already up: close the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyConnected;

/// An operation part 1 does not implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsupported;

/// The connection's handshake phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Down,
    /// Secondary: connected, waiting for CONNECT.
    AwaitConnect,
    /// Primary: CONNECT sent.
    AwaitConnectAck {
        xid: u32,
    },
    /// CONNECT/CONNECTACK done, our STATE sent, waiting for the partner's STATE.
    AwaitState,
    /// "Communications OK" (draft §8.3): all three conditions hold.
    Up,
}

/// The partner's last reported state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartnerState {
    pub state: FailoverState,
    pub startup: bool,
    pub since_s: u64,
}

#[derive(Debug)]
struct InFlight {
    xid: u32,
    updates: Vec<Queued>,
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub bndupd_sent: u64,
    pub updates_sent: u64,
    pub bndack_received: u64,
    pub bndupd_received: u64,
    pub updates_rejected: u64,
    pub contacts_sent: u64,
    /// Messages dropped by the message-digest check (each also closed the connection).
    pub digest_failures: u64,
    /// Authenticated messages refused as replays (CONNECT time, xid order; each also closed
    /// the connection). See the module docs.
    pub replays_rejected: u64,
}

/// One endpoint of a failover relationship. See the [module docs](super).
#[derive(Debug)]
pub struct Endpoint {
    cfg: Config,
    state: FailoverState,
    state_since_ms: u64,
    /// The state STARTUP resolves to (draft §9.3 steps 1–2); `None` = new relationship.
    previous: Option<Persisted>,
    /// Effective MCLT (a secondary may adopt the primary's).
    mclt_s: u32,
    timers: TimerTable,
    link: Link,
    /// Our next xid. Restarts at 0 on each connection (ISC does) unless a secret is configured:
    /// then it runs on, so no two connections of this process share a CONNECT xid.
    next_xid: u32,
    /// With a secret, secondary: the `time` of the last CONNECT we accepted (draft §11.1). In
    /// memory only: a restart forgets it (replays stay bounded by `max_clock_skew_s`).
    last_connect_time_s: Option<u32>,
    /// With a secret: the xid of the last partner-chosen message on this connection (`None`
    /// until the first; reset by [`Endpoint::connected`]).
    last_partner_xid: Option<u32>,
    partner: Option<PartnerState>,
    /// How many BNDUPDs we may have outstanding (the partner's max-unacked-bndupd).
    partner_max_unacked: u32,
    /// The partner's receive-timer, when it told us.
    partner_receive_s: Option<u32>,
    queue: UpdateQueue,
    in_flight: VecDeque<InFlight>,
    /// Our UPDREQ/UPDREQALL sent on this connection and not yet answered by UPDDONE.
    our_request: Option<u32>,
    /// The partner's UPDREQ/UPDREQALL to answer: (its xid, the last sequence that must be
    /// acknowledged before UPDDONE).
    pending_done: Option<(u32, u64)>,
    /// UPDREQALL received; waiting for [`Endpoint::queue_all_bindings`].
    pending_all: Option<u32>,
    /// Entered RECOVER at (ms), for the RECOVER-WAIT deadline.
    recover_since_ms: u64,
    /// PAUSED or SHUTDOWN announced, and since when (ms): see [`Endpoint::announce_stop`].
    stopping: Option<(FailoverState, u64)>,
    out: VecDeque<Output>,
    stats: Stats,
}

fn secs(ms: u64) -> u64 {
    ms / 1000
}

fn wire_time(s: u64) -> u32 {
    u32::try_from(s).unwrap_or(u32::MAX)
}

impl Endpoint {
    /// A new endpoint in STARTUP at `now_ms` (milliseconds since 1970 UTC on the caller's
    /// clock). `persisted` is what the last run stored (`None` for a new relationship).
    pub fn new(
        cfg: Config,
        persisted: Option<Persisted>,
        now_ms: u64,
    ) -> Result<Endpoint, ConfigError> {
        cfg.validate()?;
        let previous = match persisted {
            None => None,
            Some(p) => {
                // Draft §9.3 step 2: a comms-OK state becomes its comms-failed result.
                let state = p.state.after_comms_failed();
                if !state.is_implemented() || state == FailoverState::Startup {
                    return Err(ConfigError::UnsupportedPersistedState(p.state));
                }
                Some(Persisted { state, ..p })
            }
        };
        let mclt_s = match (cfg.role, previous) {
            (Role::Secondary, Some(p)) if cfg.mclt_check == MclCheck::Adopt && p.mclt_s != 0 => {
                p.mclt_s
            }
            _ => cfg.mclt_s,
        };
        let mut timers = TimerTable::default();
        timers.set(Timer::Startup, now_ms + u64::from(cfg.startup_s) * 1000);
        // Try to connect at once (draft §9.3 step 4); then every connect_retry_s.
        timers.set(Timer::ConnectRetry, now_ms);
        let partner_max_unacked = cfg.max_unacked_bndupd;
        Ok(Endpoint {
            cfg,
            state: FailoverState::Startup,
            state_since_ms: now_ms,
            previous,
            mclt_s,
            timers,
            link: Link::Down,
            next_xid: 0,
            last_connect_time_s: None,
            last_partner_xid: None,
            partner: None,
            partner_max_unacked,
            partner_receive_s: None,
            queue: UpdateQueue::default(),
            in_flight: VecDeque::new(),
            our_request: None,
            pending_done: None,
            pending_all: None,
            recover_since_ms: now_ms,
            stopping: None,
            out: VecDeque::new(),
            stats: Stats::default(),
        })
    }

    // --- observers ----------------------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn state(&self) -> FailoverState {
        self.state
    }
    pub fn link(&self) -> Link {
        self.link
    }
    pub fn partner(&self) -> Option<PartnerState> {
        self.partner
    }
    pub fn mclt_s(&self) -> u32 {
        self.mclt_s
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// Changes not yet sent (bounded by the number of distinct addresses).
    pub fn queued_updates(&self) -> usize {
        self.queue.len()
    }
    /// BNDUPDs sent and not yet acknowledged.
    pub fn outstanding_bndupds(&self) -> usize {
        self.in_flight.len()
    }
    /// The partner's max-unacked-bndupd we obey.
    pub fn partner_max_unacked(&self) -> u32 {
        self.partner_max_unacked
    }
    pub fn timer(&self, t: Timer) -> Option<u64> {
        self.timers.get(t)
    }

    /// When the current state began, Unix seconds.
    pub fn state_since_s(&self) -> u64 {
        secs(self.state_since_ms)
    }

    /// A relationship that has not yet been in NORMAL with its partner ([MS-DHCPF] §3.1.3).
    /// Its states are not worth persisting: after a restart it must start as new again (go to
    /// RECOVER on first contact), not resume a state it entered alone.
    pub fn is_new(&self) -> bool {
        self.previous.is_none()
    }

    /// What to store for a restart; `None` while a new relationship is still in STARTUP.
    pub fn persisted(&self) -> Option<Persisted> {
        if self.state == FailoverState::Startup {
            return self.previous;
        }
        Some(Persisted {
            state: self.state,
            entered_at_s: secs(self.state_since_ms),
            mclt_s: self.mclt_s,
        })
    }

    // --- the shell's calls --------------------------------------------------------------

    /// Next output, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The earliest timer deadline (ms); call [`Endpoint::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.timers.next_timeout()
    }

    /// A TCP connection to the partner is up. The primary sends CONNECT on every connection
    /// (ISC and [MS-DHCPF] §3.2.7.1 do; the draft's "only on connections it initiated" is
    /// stricter but the spec note §1 allows using a secondary's stimulus connection); the
    /// secondary waits for CONNECT. `Err` when a connection is already up (the shell closes the
    /// new one; ISC would answer it with CONNECTACK reject 7, which needs per-connection
    /// output — not done).
    pub fn connected(
        &mut self,
        now_ms: u64,
        initiated_by_us: bool,
    ) -> Result<(), AlreadyConnected> {
        let _ = initiated_by_us;
        if self.link != Link::Down {
            return Err(AlreadyConnected);
        }
        self.timers.stop(Timer::ConnectRetry);
        if self.cfg.secret.is_none() {
            self.next_xid = 0;
        }
        self.last_partner_xid = None;
        self.arm_receive(now_ms);
        match self.cfg.role {
            Role::Primary => {
                let xid = self.xid();
                let msg = self.connect_message(now_ms, xid);
                self.link = Link::AwaitConnectAck { xid };
                self.send(now_ms, msg);
            }
            Role::Secondary => self.link = Link::AwaitConnect,
        }
        Ok(())
    }

    /// The TCP connection closed (by the peer or an I/O error).
    pub fn disconnected(&mut self, now_ms: u64) {
        if self.link != Link::Down {
            self.link_lost(now_ms);
        }
    }

    /// A local lease change to replicate (call after it is durable, draft §8.2). Queued with
    /// coalescing by address; sent when the link is up and the partner's window allows.
    pub fn binding_changed(&mut self, now_ms: u64, change: Binding) {
        self.queue.push(change);
        self.pump(now_ms);
    }

    /// Answer to [`Output::AllBindingsRequested`]: every binding the relationship has. They are
    /// queued (coalesced) and UPDDONE follows once all are acknowledged. Also usable without a
    /// request (e.g. to resend everything).
    pub fn queue_all_bindings(&mut self, now_ms: u64, all: impl IntoIterator<Item = Binding>) {
        for b in all {
            self.queue.push(b);
        }
        if let Some(xid) = self.pending_all.take() {
            self.pending_done = Some((xid, self.queue.last_seq()));
        }
        self.pump(now_ms);
        self.check_done(now_ms);
    }

    /// Several local changes at once: queued first, then sent, so they share BNDUPDs.
    /// ([`Endpoint::binding_changed`] sends at once while the partner's window has room, so
    /// single changes go out one per BNDUPD until the window fills; then they batch.)
    pub fn bindings_changed(&mut self, now_ms: u64, changes: impl IntoIterator<Item = Binding>) {
        for c in changes {
            self.queue.push(c);
        }
        self.pump(now_ms);
    }

    /// Answers the partner's POOLREQ `xid`: `transferred` addresses were queued for it.
    pub fn answer_pool_request(&mut self, now_ms: u64, xid: u32, transferred: u32) {
        if self.link != Link::Up {
            return;
        }
        let m = self
            .message(MessageType::PoolResp, now_ms, xid)
            .with(code::ADDRESSES_TRANSFERRED, transferred.to_be_bytes());
        self.send(now_ms, m);
    }

    /// Operator command: go to PARTNER-DOWN (draft §9.8.x, §9.9.x, §9.11). Allowed from
    /// COMMUNICATIONS-INTERRUPTED, RESOLUTION-INTERRUPTED (and NORMAL, per the draft, though
    /// the partner is up), and from STARTUP or RECOVER while the partner is unreachable (draft
    /// §9.3: commissioning a pair with one server, or a lone survivor told to wait for its
    /// partner; the operator vouches that the partner serves nobody); refused elsewhere.
    pub fn set_partner_down(&mut self, now_ms: u64) -> Result<(), Unsupported> {
        match self.state {
            FailoverState::Recover | FailoverState::Startup if self.link != Link::Down => {
                Err(Unsupported)
            }
            FailoverState::CommunicationsInterrupted
            | FailoverState::Startup
            | FailoverState::ResolutionInterrupted
            | FailoverState::Recover
            | FailoverState::Normal => {
                self.enter(now_ms, FailoverState::PartnerDown, ChangeReason::Command);
                Ok(())
            }
            FailoverState::PartnerDown => Ok(()),
            _ => Err(Unsupported),
        }
    }

    /// The server is stopping: tells the partner PAUSED (back soon: it goes
    /// COMMUNICATIONS-INTERRUPTED) or SHUTDOWN (for long: it goes PARTNER-DOWN at once, so its
    /// MCLT wait for our addresses starts now), draft §9.2. Nothing is recorded: on restart the
    /// previous state is the one before (draft §9.3). The caller stops serving, lets the STATE
    /// go out and closes the connection. Returns false (nothing sent) without a connection.
    pub fn announce_stop(&mut self, now_ms: u64, state: FailoverState) -> bool {
        debug_assert!(matches!(
            state,
            FailoverState::Paused | FailoverState::Shutdown
        ));
        if !matches!(self.link, Link::AwaitState | Link::Up) {
            return false;
        }
        self.stopping = Some((state, now_ms));
        self.send_state(now_ms);
        true
    }

    /// Handles every timer due at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        for t in Timer::VALUES {
            if !self.timers.take_expired(t, now_ms) {
                continue;
            }
            match t {
                Timer::Receive => {
                    if self.link != Link::Down {
                        self.send_disconnect(now_ms, RejectReason::NoTraffic, "no traffic");
                        self.close(now_ms, CloseReason::NoTraffic);
                    }
                }
                Timer::Contact => {
                    if matches!(self.link, Link::AwaitState | Link::Up) {
                        let xid = self.xid();
                        self.stats.contacts_sent += 1;
                        let m = self.message(MessageType::Contact, now_ms, xid);
                        self.send(now_ms, m);
                    }
                }
                Timer::Startup => {
                    if self.state == FailoverState::Startup {
                        // The previous state; with none, the draft's RECOVER (§9.3 step 1, as
                        // ISC dhcpd): a server whose database was lost looks new, and must not
                        // serve before it has the partner's bindings. [MS-DHCPF] §3.1.6.3 has a
                        // Windows server go COMMUNICATIONS-INTERRUPTED instead; the microsoft
                        // dialect does so.
                        let fresh = match self.cfg.dialect {
                            Dialect::Microsoft => FailoverState::CommunicationsInterrupted,
                            Dialect::Ringlease | Dialect::Isc => FailoverState::Recover,
                        };
                        let to = self.previous.map_or(fresh, |p| p.state);
                        // Waiting, only a state that answers nobody is entered alone.
                        if !self.cfg.startup_wait || to == FailoverState::Recover {
                            self.enter(now_ms, to, ChangeReason::StartupTimer);
                        }
                    }
                }
                Timer::SafePeriod => {
                    if self.state == FailoverState::CommunicationsInterrupted {
                        self.enter(
                            now_ms,
                            FailoverState::PartnerDown,
                            ChangeReason::SafePeriodTimer,
                        );
                    }
                }
                Timer::ConnectRetry => {
                    if self.link == Link::Down {
                        self.out.push_back(Output::OpenConnection);
                        self.timers.set(
                            Timer::ConnectRetry,
                            now_ms + u64::from(self.cfg.connect_retry_s) * 1000,
                        );
                    }
                }
                Timer::Sync => {
                    if self.link != Link::Down && self.our_request.is_some() {
                        self.send_disconnect(
                            now_ms,
                            RejectReason::NoTraffic,
                            "no progress on our update request",
                        );
                        self.close(now_ms, CloseReason::SyncTimeout);
                    }
                }
                Timer::RecoverWait => {
                    // Without the partner the wait ends on reconnection (the draft's MAY): a
                    // partner still in PARTNER-DOWN would not see our RECOVER-DONE, and both
                    // would serve.
                    if self.state == FailoverState::RecoverWait && self.link == Link::Up {
                        self.enter(
                            now_ms,
                            FailoverState::RecoverDone,
                            ChangeReason::RecoverWaitTimer,
                        );
                    }
                }
            }
        }
    }

    /// One complete failover message from the connection (deframe with
    /// [`crate::proto::wire::failover::Deframer`]; a deframing error → pass the
    /// [`FrameError`] to [`Endpoint::frame_error`]). `local` answers the conflict analysis of
    /// received BNDUPDs (draft §7.1.3).
    pub fn receive_frame(&mut self, now_ms: u64, bytes: &[u8], local: &impl LocalBindings) {
        if self.link == Link::Down {
            return;
        }
        let msg = match FailoverMessage::parse(bytes) {
            Ok(m) => m,
            Err(e) => return self.frame_error(now_ms, e),
        };
        // Before anything else is believed, liveness included ([MS-DHCPF] §3.1.5).
        if let Err(reason) = verify_digest(self.cfg.secret.as_ref(), &msg) {
            return self.digest_failed(now_ms, &msg, reason);
        }
        // Authentic, but maybe a copy of an earlier message (draft §11.1): still unread.
        if let Err(last) = self.check_xid_order(&msg) {
            let xid = msg.xid();
            self.stats.replays_rejected += 1;
            // No reject-reason names a replay; 254 says so ("does not match any reason").
            self.send_disconnect(now_ms, RejectReason::NoMatchingReason, "replayed xid");
            return self.close(now_ms, CloseReason::ReplayedXid { xid, last });
        }
        self.arm_receive(now_ms);
        let mt = msg.message_type();
        if let MessageType::Unknown(_) = mt {
            return; // 128–255: optional extensions, ignored (draft §6.1)
        }
        let skew = i64::from(msg.time()) - secs(now_ms) as i64;
        if mt != MessageType::Connect && skew.unsigned_abs() > u64::from(self.cfg.max_clock_skew_s)
        {
            // [MS-DHCPF] §3.1.5: close. The draft allows any stable skew (§5.10); we enforce
            // the configured maximum on every message in every dialect, like ISC (60 s).
            self.send_disconnect(now_ms, RejectReason::TimeMismatch, "time skew too large");
            return self.close(now_ms, CloseReason::TimeSkew { skew_s: skew });
        }
        match (self.link, mt) {
            (_, MessageType::Disconnect) => {
                if self.cfg.dialect == Dialect::Microsoft {
                    return; // [MS-DHCPF] §3.1.5.8: dropped (the draft closes)
                }
                let r = msg
                    .reject_reason()
                    .unwrap_or(RejectReason::NoMatchingReason);
                self.close(now_ms, CloseReason::PeerDisconnected(r));
            }
            // A primary receiving CONNECT is rejected in validation (role conflict, reason 8).
            (Link::AwaitConnect | Link::AwaitConnectAck { .. }, MessageType::Connect) => {
                self.on_connect(now_ms, &msg)
            }
            (Link::AwaitConnectAck { xid }, MessageType::ConnectAck) => {
                if msg.xid() == xid {
                    self.on_connect_ack(now_ms, &msg);
                } // else: draft §7.9.2 step 2, ignore
            }
            (Link::AwaitState | Link::Up, MessageType::State) => self.on_state(now_ms, &msg),
            (Link::AwaitState | Link::Up, MessageType::Contact) => {}
            (Link::Up, MessageType::BndUpd) => self.on_bndupd(now_ms, &msg, local),
            (Link::Up, MessageType::BndAck) => self.on_bndack(now_ms, &msg),
            // [MS-DHCPF] §3.1.5.4: an UPDREQ with a scope-ID list asks for every lease of
            // those scopes; we send every binding (a superset: the relationship's pools).
            (Link::Up, MessageType::UpdReq)
                if msg.options().get(code::MS_SCOPE_ID_LIST).is_some() =>
            {
                self.pending_done = None;
                self.pending_all = Some(msg.xid());
                self.out.push_back(Output::AllBindingsRequested);
            }
            (Link::Up, MessageType::UpdReq) => {
                self.pending_all = None;
                self.pending_done = Some((msg.xid(), self.queue.last_seq()));
                self.check_done(now_ms);
            }
            (Link::Up, MessageType::UpdReqAll) => {
                self.pending_done = None;
                self.pending_all = Some(msg.xid());
                self.out.push_back(Output::AllBindingsRequested);
            }
            (Link::Up, MessageType::UpdDone) => self.on_upddone(now_ms, msg.xid()),
            // Draft §7.6; [MS-DHCPF] §3.1.5: a Windows primary drops POOLREQ and balances on
            // its timer, as we do anyway. A POOLREQ to a secondary is the partner's mistake.
            (Link::Up, MessageType::PoolReq)
                if self.cfg.role == Role::Primary && self.cfg.dialect != Dialect::Microsoft =>
            {
                self.out.push_back(Output::PoolRequested { xid: msg.xid() });
            }
            // POOLRESP only reports a count; the addresses come as BNDUPDs.
            (Link::Up, MessageType::PoolReq | MessageType::PoolResp) => {}
            (_, other) => self.protocol_error(now_ms, ProtocolError::Unexpected(other)),
        }
    }

    /// The deframer failed: framing is lost, close.
    pub fn frame_error(&mut self, now_ms: u64, e: FrameError) {
        if self.link != Link::Down {
            self.protocol_error(now_ms, ProtocolError::Frame(e));
        }
    }

    /// With a secret, the draft §11.1 xid rule for the messages whose xid the partner chose:
    /// `Err(previous xid)` when this one is not after it on this connection. Responses copy
    /// one of our xids and are matched to our requests instead. "After" is serial-number
    /// order ([`xid_after`]) so a wrapping counter stays in order.
    fn check_xid_order(&mut self, m: &FailoverMessage<'_>) -> Result<(), u32> {
        if self.cfg.secret.is_none() {
            return Ok(());
        }
        if matches!(
            m.message_type(),
            MessageType::ConnectAck
                | MessageType::BndAck
                | MessageType::UpdDone
                | MessageType::PoolResp
        ) {
            return Ok(());
        }
        let xid = m.xid();
        match self.last_partner_xid {
            Some(last) if !xid_after(xid, last) => Err(last),
            _ => {
                self.last_partner_xid = Some(xid);
                Ok(())
            }
        }
    }

    /// Drops a message that failed [`verify_digest`] and closes. Its type and xid are read only
    /// to address the answer the draft wants (see the module docs); nothing else of it is used.
    fn digest_failed(&mut self, now_ms: u64, msg: &FailoverMessage<'_>, reason: RejectReason) {
        self.stats.digest_failures += 1;
        let answers_connect =
            matches!(self.link, Link::AwaitConnect | Link::AwaitConnectAck { .. });
        if answers_connect && msg.message_type() == MessageType::Connect {
            // Draft §7.8.2 step 4 (spec note §5.2): a CONNECT is answered by CONNECTACK.
            self.send_connect_reject(now_ms, msg.xid(), reason);
        } else {
            // Draft §11.1 rejects with 13/20/21; DISCONNECT carries a connection-level reason.
            self.send_disconnect(now_ms, reason, reason.name());
        }
        self.close(now_ms, CloseReason::Digest(reason));
    }

    // --- handshake ----------------------------------------------------------------------

    fn connect_message(&mut self, now_ms: u64, xid: u32) -> Message {
        let d = self.cfg.dialect;
        let mut m = self
            .message(MessageType::Connect, now_ms, xid)
            .with(code::RELATIONSHIP_NAME, self.cfg.name_bytes())
            .with(
                code::MAX_UNACKED_BNDUPD,
                self.cfg.max_unacked_bndupd.to_be_bytes(),
            )
            .with(code::RECEIVE_TIMER, self.cfg.treceive_s.to_be_bytes())
            .with(
                code::VENDOR_CLASS_IDENTIFIER,
                encode_text(d, &self.cfg.vendor_class),
            )
            .with(code::PROTOCOL_VERSION, [PROTOCOL_VERSION]);
        if d != Dialect::Microsoft {
            m = m.with(code::TLS_REQUEST, [0]);
        }
        m.with(code::MCLT, self.mclt_s.to_be_bytes())
            .with(code::HASH_BUCKET_ASSIGNMENT, self.cfg.hba)
    }

    fn name_matches(&self, got: Option<&[u8]>) -> bool {
        let Some(mut got) = got else { return false };
        if self.cfg.dialect == Dialect::Microsoft {
            got = got.strip_suffix(&[0, 0]).unwrap_or(got);
        }
        got == self.cfg.name_bytes().as_slice()
    }

    /// Secondary: validate CONNECT in draft §7.8.2 order.
    fn validate_connect(&self, now_ms: u64, m: &FailoverMessage<'_>) -> Result<(), RejectReason> {
        let ms = self.cfg.dialect == Dialect::Microsoft;
        if self.cfg.role == Role::Primary {
            return Err(RejectReason::InvalidPartner); // both sides think they are primary
        }
        match m.protocol_version() {
            Some(PROTOCOL_VERSION) => {}
            Some(_) if ms => {} // MS: value not used
            _ => return Err(RejectReason::ProtocolVersionMismatch),
        }
        if !ms && m.tls_request() == Some(2) {
            return Err(RejectReason::TlsNotSupported);
        }
        // Step 4, the message digest, was checked before this message was read at all
        // (`verify_digest` in `receive_frame`).
        if !self.name_matches(m.relationship_name()) {
            return Err(RejectReason::InvalidPartner);
        }
        let skew = i64::from(m.time()) - secs(now_ms) as i64;
        if skew.unsigned_abs() > u64::from(self.cfg.max_clock_skew_s) {
            return Err(RejectReason::TimeMismatch);
        }
        match m.mclt_s() {
            None | Some(0) => return Err(RejectReason::InvalidMclt),
            Some(v) if self.cfg.mclt_check == MclCheck::RequireEqual && v != self.cfg.mclt_s => {
                return Err(RejectReason::InvalidMclt)
            }
            Some(_) => {}
        }
        // ISC requires the 32-byte HBA; the draft makes it a MUST. MS ignores its value.
        if m.hash_bucket_assignment().is_none() && !ms {
            return Err(RejectReason::HashBucketConflict);
        }
        match (m.max_unacked_bndupd(), m.receive_timer_s()) {
            (Some(n), Some(t)) if n >= 1 && t >= 1 => Ok(()),
            _ => Err(RejectReason::UnknownReason),
        }
    }

    /// CONNECTACK rejecting the CONNECT `xid` (draft §7.8.2); the caller closes.
    fn send_connect_reject(&mut self, now_ms: u64, xid: u32, reason: RejectReason) {
        let ack = self
            .message(MessageType::ConnectAck, now_ms, xid)
            .with(code::RELATIONSHIP_NAME, self.cfg.name_bytes())
            .with(code::PROTOCOL_VERSION, [PROTOCOL_VERSION])
            .with(code::REJECT_REASON, [reason.to_u8()])
            .with(code::MESSAGE, reason.name().as_bytes());
        self.send(now_ms, ack);
    }

    fn on_connect(&mut self, now_ms: u64, m: &FailoverMessage<'_>) {
        let xid = m.xid();
        let d = self.cfg.dialect;
        if let Err(reason) = self.validate_connect(now_ms, m) {
            self.send_connect_reject(now_ms, xid, reason);
            return self.close(now_ms, CloseReason::RejectedConnect(reason));
        }
        if self.cfg.secret.is_some() {
            // Draft §11.1: a CONNECT not sent after the last one we accepted is a replay. The
            // draft lists no replay reason; 4 ("time mismatch too great") is the one about the
            // `time` field we reject on, and its remedy — retry later, with a later time — is
            // what a genuine partner that hit this (same second, clock stepped back) needs.
            // Checked last: any other fault is reported as itself.
            let time_s = m.time();
            if let Some(last_s) = self.last_connect_time_s.filter(|&last| time_s <= last) {
                self.stats.replays_rejected += 1;
                self.send_connect_reject(now_ms, xid, RejectReason::TimeMismatch);
                return self.close(now_ms, CloseReason::ReplayedConnect { time_s, last_s });
            }
            // Accepted ones only (module docs); memory only, a restart forgets it.
            self.last_connect_time_s = Some(time_s);
        }
        let mut ack = self
            .message(MessageType::ConnectAck, now_ms, xid)
            .with(code::RELATIONSHIP_NAME, self.cfg.name_bytes());
        if d != Dialect::Microsoft {
            // Draft §7.8.2: adopt the primary's parameters. MS: own configuration only.
            self.partner_max_unacked = m.max_unacked_bndupd().unwrap_or(1).max(1);
            self.partner_receive_s = m.receive_timer_s();
            if self.cfg.mclt_check == MclCheck::Adopt {
                self.mclt_s = m.mclt_s().unwrap_or(self.mclt_s);
            }
        }
        ack = ack
            .with(
                code::MAX_UNACKED_BNDUPD,
                self.cfg.max_unacked_bndupd.to_be_bytes(),
            )
            .with(code::RECEIVE_TIMER, self.cfg.treceive_s.to_be_bytes())
            .with(
                code::VENDOR_CLASS_IDENTIFIER,
                encode_text(d, &self.cfg.vendor_class),
            )
            .with(code::PROTOCOL_VERSION, [PROTOCOL_VERSION]);
        if d != Dialect::Microsoft && m.tls_request().is_some() {
            ack = ack.with(code::TLS_REPLY, [0]);
        }
        self.send(now_ms, ack);
        self.handshake_done(now_ms);
    }

    fn on_connect_ack(&mut self, now_ms: u64, m: &FailoverMessage<'_>) {
        if let Some(r) = m.reject_reason() {
            return self.close(now_ms, CloseReason::PeerRejected(r));
        }
        let bad = if !self.name_matches(m.relationship_name()) {
            Some(RejectReason::InvalidPartner)
        } else if m.protocol_version() != Some(PROTOCOL_VERSION)
            && self.cfg.dialect != Dialect::Microsoft
        {
            Some(RejectReason::ProtocolVersionMismatch)
        } else {
            None
        };
        if let Some(r) = bad {
            self.send_disconnect(now_ms, r, r.name());
            return self.close(
                now_ms,
                CloseReason::Protocol(ProtocolError::BadConnectAck(r)),
            );
        }
        let skew = i64::from(m.time()) - secs(now_ms) as i64;
        if skew.unsigned_abs() > u64::from(self.cfg.max_clock_skew_s) {
            self.send_disconnect(now_ms, RejectReason::TimeMismatch, "time skew too large");
            return self.close(now_ms, CloseReason::TimeSkew { skew_s: skew });
        }
        if self.cfg.dialect != Dialect::Microsoft {
            if let Some(n) = m.max_unacked_bndupd() {
                self.partner_max_unacked = n.max(1);
            }
            self.partner_receive_s = m.receive_timer_s();
        }
        self.handshake_done(now_ms);
    }

    /// After an accepting CONNECTACK was sent or received: STATE, then tSend runs
    /// ([MS-DHCPF] §3.1.7.3; draft §7.8.2, §7.9.2).
    fn handshake_done(&mut self, now_ms: u64) {
        self.link = Link::AwaitState;
        self.send_state(now_ms);
    }

    fn tsend_ms(&self) -> u64 {
        let own = self.cfg.tsend_s;
        let t = match (self.cfg.dialect, self.partner_receive_s) {
            (Dialect::Microsoft, _) | (_, None) => own,
            (_, Some(r)) => own.min((r / 3).max(1)),
        };
        u64::from(t) * 1000
    }

    // --- state machine ------------------------------------------------------------------

    fn reported_state(&self) -> (FailoverState, bool, u64) {
        if let Some((state, since_ms)) = self.stopping {
            return (state, false, secs(since_ms));
        }
        if self.state == FailoverState::Startup {
            // Draft §9.3: previous state with S=1; a new relationship reports RECOVER.
            match self.previous {
                Some(p) => (p.state, true, p.entered_at_s),
                None => (FailoverState::Recover, true, secs(self.state_since_ms)),
            }
        } else {
            (self.state, false, secs(self.state_since_ms))
        }
    }

    fn send_state(&mut self, now_ms: u64) {
        let (state, startup, since) = self.reported_state();
        let xid = self.xid();
        let m = self
            .message(MessageType::State, now_ms, xid)
            .with(code::SERVER_STATE, [state.wire()])
            .with(
                code::SERVER_FLAGS,
                [if startup { SERVER_FLAG_STARTUP } else { 0 }],
            )
            .with(code::START_TIME_OF_STATE, wire_time(since).to_be_bytes());
        self.send(now_ms, m);
    }

    fn on_state(&mut self, now_ms: u64, m: &FailoverMessage<'_>) {
        let Some(state) = m.server_state().and_then(FailoverState::from_server_state) else {
            // Unknown state code: a peer we cannot work with (ISC goes SHUTDOWN here).
            return self.protocol_error(now_ms, ProtocolError::Unexpected(MessageType::State));
        };
        let startup = m.server_flags().unwrap_or(0) & SERVER_FLAG_STARTUP != 0;
        let since_s = u64::from(m.start_time_of_state().unwrap_or(0));
        self.partner = Some(PartnerState {
            state,
            startup,
            since_s,
        });
        if self.link == Link::AwaitState {
            self.link = Link::Up;
            self.timers.stop(Timer::SafePeriod);
            self.comms_ok(now_ms);
        } else {
            self.apply_partner_state(now_ms);
        }
        self.pump(now_ms);
    }

    /// Draft §8.3 "communications OK" reached on this connection.
    fn comms_ok(&mut self, now_ms: u64) {
        let Some(partner) = self.partner else { return };
        let fresh = self.previous.is_none();
        if self.state == FailoverState::Startup {
            // Draft §9.3 step 5.
            let target = if partner.state == FailoverState::PartnerDown && !partner.startup {
                let our_last = self.previous.map_or(0, |p| p.entered_at_s);
                if partner.since_s > our_last {
                    FailoverState::Recover
                } else {
                    FailoverState::PotentialConflict
                }
            } else if fresh {
                // [MS-DHCPF] §3.1.3: a new relationship goes to RECOVER (draft: previous
                // state RECOVER, same result).
                FailoverState::Recover
            } else {
                self.previous.map_or(FailoverState::Recover, |p| p.state)
            };
            self.enter(now_ms, target, ChangeReason::CommunicationsOk);
        } else if fresh && self.state == FailoverState::CommunicationsInterrupted {
            // Startup timer expired before the partner appeared: still a new relationship.
            self.enter(
                now_ms,
                FailoverState::Recover,
                ChangeReason::CommunicationsOk,
            );
        } else if self.state == FailoverState::RecoverWait
            && !self.timers.is_armed(Timer::RecoverWait)
        {
            // The wait ended while we were apart.
            self.enter(
                now_ms,
                FailoverState::RecoverDone,
                ChangeReason::RecoverWaitTimer,
            );
        } else {
            // Re-announce; entry actions of the current state that need the link.
            self.send_state(now_ms);
            self.link_entry_actions(now_ms, None);
        }
        if self.link == Link::Up {
            self.apply_partner_state(now_ms);
        }
    }

    fn apply_partner_state(&mut self, now_ms: u64) {
        // A few steps at most: e.g. COMM-INT → NORMAL, then NORMAL + partner NORMAL = stay.
        for _ in 0..3 {
            let Some(p) = self.partner else { return };
            // Stopping, we keep the state the restart resumes (draft §9.3).
            if self.state == FailoverState::Startup
                || self.link != Link::Up
                || self.stopping.is_some()
            {
                return;
            }
            match on_partner_state(self.state, p.state, p.startup) {
                Decision::Stay => return self.conflict_step(now_ms),
                Decision::Enter(to) => self.enter(now_ms, to, ChangeReason::PartnerState(p.state)),
                Decision::Unsupported { to } => return self.refuse(now_ms, to),
            }
        }
    }

    /// POTENTIAL-CONFLICT on the secondary: once the primary has our bindings (it is in
    /// CONFLICT-DONE), ask for its own (draft §9.10.2).
    fn conflict_step(&mut self, now_ms: u64) {
        let primary_done = self
            .partner
            .is_some_and(|p| p.state == FailoverState::ConflictDone);
        if self.state == FailoverState::PotentialConflict
            && self.cfg.role == Role::Secondary
            && primary_done
            && self.our_request.is_none()
            && self.link == Link::Up
        {
            self.send_update_request(now_ms, MessageType::UpdReq);
        }
    }

    fn refuse(&mut self, now_ms: u64, to: FailoverState) {
        self.out.push_back(Output::TransitionRefused {
            from: self.state,
            to,
            partner: self.partner.map(|p| p.state),
        });
        if self.link != Link::Down {
            self.send_disconnect(
                now_ms,
                RejectReason::UnknownReason,
                "transition not supported",
            );
            self.close(now_ms, CloseReason::Unsupported { to });
        }
    }

    fn enter(&mut self, now_ms: u64, to: FailoverState, reason: ChangeReason) {
        debug_assert!(to.is_implemented() && to != FailoverState::Startup);
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.state_since_ms = now_ms;
        self.out.push_back(Output::StateChanged {
            from,
            to,
            reason,
            at_ms: now_ms,
        });
        if from == FailoverState::Startup {
            self.timers.stop(Timer::Startup);
        }
        if matches!(to, FailoverState::Normal | FailoverState::PartnerDown) {
            // Persisted history from now on: no longer a new relationship (PARTNER-DOWN: we
            // serve, so what we grant must not be forgotten by a restart as new).
            self.previous = self.persisted();
        }
        match (to, self.cfg.safe_period_s) {
            (FailoverState::CommunicationsInterrupted, Some(s)) => self
                .timers
                .set(Timer::SafePeriod, now_ms + u64::from(s) * 1000),
            _ => self.timers.stop(Timer::SafePeriod),
        }
        if to == FailoverState::Recover {
            self.recover_since_ms = now_ms;
        }
        if to == FailoverState::RecoverWait {
            let at = self.recover_since_ms + u64::from(self.mclt_s) * 1000;
            self.timers.set(Timer::RecoverWait, at.max(now_ms));
        } else {
            self.timers.stop(Timer::RecoverWait);
        }
        if self.link == Link::Up {
            self.send_state(now_ms);
            self.link_entry_actions(now_ms, Some(from));
        }
    }

    /// Entry actions that need communications.
    fn link_entry_actions(&mut self, now_ms: u64, from: Option<FailoverState>) {
        match self.state {
            FailoverState::Recover if self.our_request.is_none() => {
                // [MS-DHCPF] §3.1.7.1: UPDREQ on entering RECOVER; a new relationship (no
                // record of the partner) asks for everything (draft §9.5.2, ISC always does).
                let t = if self.previous.is_none() {
                    MessageType::UpdReqAll
                } else {
                    MessageType::UpdReq
                };
                self.send_update_request(now_ms, t);
            }
            // Draft §9.10.2: the primary asks first; the secondary when the primary is done.
            FailoverState::PotentialConflict
                if self.cfg.role == Role::Primary && self.our_request.is_none() =>
            {
                self.send_update_request(now_ms, MessageType::UpdReq);
            }
            FailoverState::PotentialConflict => self.conflict_step(now_ms),
            FailoverState::Normal
                if matches!(
                    from,
                    None | Some(
                        FailoverState::CommunicationsInterrupted | FailoverState::PartnerDown
                    )
                ) && self.our_request.is_none() =>
            {
                // Back from an outage: ask for whatever the partner changed meanwhile that we
                // have not acknowledged (it also resends them on entering NORMAL, §9.8.1).
                self.send_update_request(now_ms, MessageType::UpdReq);
                self.request_pool(now_ms);
            }
            FailoverState::Normal => self.request_pool(now_ms),
            _ => {}
        }
    }

    /// Draft §9.8.1: a secondary entering NORMAL asks the primary for addresses (not a
    /// Windows primary: it drops POOLREQ).
    fn request_pool(&mut self, now_ms: u64) {
        if self.cfg.role == Role::Secondary && self.cfg.dialect != Dialect::Microsoft {
            let xid = self.xid();
            let m = self.message(MessageType::PoolReq, now_ms, xid);
            self.send(now_ms, m);
        }
    }

    fn send_update_request(&mut self, now_ms: u64, t: MessageType) {
        let xid = self.xid();
        self.our_request = Some(xid);
        self.arm_sync(now_ms);
        let m = self.message(t, now_ms, xid);
        self.send(now_ms, m);
    }

    fn on_upddone(&mut self, now_ms: u64, xid: u32) {
        // UPDDONE copies our request's xid (draft §6.1). With a secret a mismatch is taken as
        // a replayed earlier UPDDONE; without one we stay lenient, as before.
        let answers = match self.our_request {
            None => false,
            Some(ours) => ours == xid || self.cfg.secret.is_none(),
        };
        if !answers {
            return; // unsolicited: harmless
        }
        self.our_request = None;
        self.timers.stop(Timer::Sync);
        self.out.push_back(Output::UpdatesDone);
        if self.state == FailoverState::PotentialConflict {
            // We have the partner's side of every conflict now (draft §9.10.2).
            let to = match self.cfg.role {
                Role::Primary => FailoverState::ConflictDone,
                Role::Secondary => FailoverState::Normal,
            };
            self.enter(now_ms, to, ChangeReason::UpdatesDone);
            self.apply_partner_state(now_ms);
        } else if self.state == FailoverState::Recover {
            // ISC rule (spec note §10.4): wait until RECOVER entry + MCLT unless the partner is
            // recovering too (both fresh) or that time has passed. The draft counts from the
            // time we went down; we do not know it for a new relationship.
            let partner_recovering = self.partner.is_some_and(|p| {
                matches!(
                    p.state,
                    FailoverState::Recover
                        | FailoverState::RecoverWait
                        | FailoverState::RecoverDone
                )
            });
            let wait_until = self.recover_since_ms + u64::from(self.mclt_s) * 1000;
            let to = if partner_recovering || wait_until <= now_ms {
                FailoverState::RecoverDone
            } else {
                FailoverState::RecoverWait
            };
            self.enter(now_ms, to, ChangeReason::UpdatesDone);
            self.apply_partner_state(now_ms);
        }
    }

    // --- connection loss ----------------------------------------------------------------

    fn close(&mut self, now_ms: u64, reason: CloseReason) {
        if self.link == Link::Down {
            return;
        }
        self.out.push_back(Output::CloseConnection { reason });
        self.link_lost(now_ms);
    }

    fn link_lost(&mut self, now_ms: u64) {
        let was_up = self.link == Link::Up;
        self.link = Link::Down;
        self.timers.stop(Timer::Contact);
        self.timers.stop(Timer::Receive);
        self.timers.stop(Timer::Sync);
        // Draft §8.6: un-ACKed updates are re-sent on the next connection (new xids).
        let mut back = Vec::new();
        for f in self.in_flight.drain(..) {
            back.extend(f.updates);
        }
        self.queue.requeue_front(back);
        self.our_request = None;
        self.pending_done = None;
        self.pending_all = None;
        if !self.timers.is_armed(Timer::ConnectRetry) {
            self.timers.set(
                Timer::ConnectRetry,
                now_ms + u64::from(self.cfg.connect_retry_s) * 1000,
            );
        }
        if was_up {
            let to = self.state.after_comms_failed();
            if to != self.state {
                self.enter(now_ms, to, ChangeReason::CommunicationsFailed);
            }
        }
    }

    fn protocol_error(&mut self, now_ms: u64, e: ProtocolError) {
        self.send_disconnect(now_ms, RejectReason::UnknownReason, "protocol error");
        self.close(now_ms, CloseReason::Protocol(e));
    }

    fn send_disconnect(&mut self, now_ms: u64, r: RejectReason, text: &str) {
        if self.link == Link::Down {
            return;
        }
        let xid = self.xid();
        let m = self
            .message(MessageType::Disconnect, now_ms, xid)
            .with(code::REJECT_REASON, [r.to_u8()])
            .with(code::MESSAGE, text.as_bytes());
        self.send(now_ms, m);
    }

    // --- replication: sending -----------------------------------------------------------

    /// Sends BNDUPDs while the link is up, changes are queued and the partner's window
    /// (max-unacked-bndupd) has room.
    fn pump(&mut self, now_ms: u64) {
        while self.link == Link::Up
            && !self.queue.is_empty()
            && self.in_flight.len() < self.partner_max_unacked as usize
        {
            let xid = self.xid();
            let mut m = self.message(MessageType::BndUpd, now_ms, xid);
            let mut updates = Vec::new();
            let mut len = m.encoded_len() + digest_overhead(self.cfg.secret.as_ref());
            while updates.len() < self.cfg.batch() {
                let Some(q) = self.queue.pop() else { break };
                let opts = self.encode_update(&q.binding);
                let add: usize = opts.iter().map(|(_, v)| OPTION_HEADER_LEN + v.len()).sum();
                if !updates.is_empty() && len + add > MAX_MESSAGE_LEN {
                    self.queue.requeue_front(vec![q]);
                    break;
                }
                len += add;
                m.options.extend(opts);
                updates.push(q);
            }
            debug_assert!(!updates.is_empty() && updates.len() <= super::MAX_UPDATES_PER_BNDUPD);
            self.stats.bndupd_sent += 1;
            self.stats.updates_sent += updates.len() as u64;
            self.in_flight.push_back(InFlight { xid, updates });
            self.send(now_ms, m);
        }
    }

    fn encode_update(&self, b: &Binding) -> Vec<(u16, Vec<u8>)> {
        let ms = self.cfg.dialect == Dialect::Microsoft;
        let (status, flags) = if ms {
            ms_status::encode(b.status)
        } else {
            (b.status.to_u8(), b.flags)
        };
        let mut o = vec![
            (code::ASSIGNED_IP_ADDRESS, b.ip.octets().to_vec()),
            (code::BINDING_STATUS, vec![status]),
        ];
        if ms {
            o.push((code::IP_FLAGS, vec![flags as u8])); // MS: 1 byte, MUST be present
        } else if flags != 0 {
            o.push((code::IP_FLAGS, flags.to_be_bytes().to_vec()));
        }
        if let Some(hw) = &b.hardware {
            let mut v = vec![hw.htype];
            v.extend_from_slice(hw.addr());
            o.push((code::CLIENT_HARDWARE_ADDRESS, v));
        }
        if let Some(id) = &b.client_id {
            o.push((code::CLIENT_IDENTIFIER, id.to_vec()));
        }
        let t = |c: u16, s: u64| (c, wire_time(s).to_be_bytes().to_vec());
        if b.status == BindingStatus::Active {
            o.push(t(code::LEASE_EXPIRATION_TIME, b.expires_s));
            o.push(t(code::POTENTIAL_EXPIRATION_TIME, b.pet_s));
        }
        if b.cltt_s != 0 {
            o.push(t(code::CLIENT_LAST_TRANSACTION_TIME, b.cltt_s));
        }
        if b.stos_s != 0 {
            o.push(t(code::START_TIME_OF_STATE, b.stos_s));
        }
        o
    }

    fn on_bndack(&mut self, now_ms: u64, m: &FailoverMessage<'_>) {
        self.stats.bndack_received += 1;
        let xid = m.xid();
        // In order: a BNDACK must answer the oldest outstanding BNDUPD.
        if self.in_flight.front().is_none_or(|f| f.xid != xid) {
            return self.protocol_error(now_ms, ProtocolError::BndAckOutOfOrder { xid });
        }
        let front = &self.in_flight[0];
        let acks: Vec<Options<'_>> = m.transactions().collect();
        let same = acks.len() == front.updates.len()
            && acks
                .iter()
                .zip(&front.updates)
                .all(|(a, q)| a.assigned_ip_address() == Some(q.binding.ip));
        if !same {
            return self.protocol_error(now_ms, ProtocolError::BndAckMismatch { xid });
        }
        let Some(done) = self.in_flight.pop_front() else {
            return;
        };
        for (a, q) in acks.iter().zip(done.updates) {
            let ip = q.binding.ip;
            match a.reject_reason() {
                None => self.out.push_back(Output::PartnerAcked {
                    ip,
                    status: q.binding.status,
                    partner_expiry_s: q.binding.pet_s,
                }),
                Some(reason) => {
                    self.stats.updates_rejected += 1;
                    self.out.push_back(Output::PartnerRejected { ip, reason });
                }
            }
        }
        self.check_done(now_ms);
        self.pump(now_ms);
    }

    /// Sends UPDDONE once every update pending at the partner's request is acknowledged.
    fn check_done(&mut self, now_ms: u64) {
        let Some((xid, barrier)) = self.pending_done else {
            return;
        };
        let oldest = [
            self.in_flight
                .front()
                .and_then(|f| f.updates.first())
                .map(|q| q.seq),
            self.queue.front_seq(),
        ]
        .into_iter()
        .flatten()
        .min();
        if oldest.is_none_or(|s| s > barrier) {
            self.pending_done = None;
            let m = self.message(MessageType::UpdDone, now_ms, xid);
            self.send(now_ms, m);
        }
    }

    // --- replication: receiving ---------------------------------------------------------

    fn decode_update(&self, t: &Options<'_>, local: &Lookup) -> Option<Binding> {
        let ip = t.assigned_ip_address()?;
        let flags = t.ip_flags().unwrap_or(0);
        let status = match (self.cfg.dialect, t.binding_status_raw()) {
            (_, None) => BindingStatus::Unknown(0),
            (Dialect::Microsoft, Some(raw)) => {
                // The seed disambiguates 1/2 (FREE/BACKUP vs ACTIVE/DECLINED) by "no lease
                // record"; a lease update also MUST carry the hardware address and an
                // ownership update MUST NOT (§3.1.5.2), so that counts as a record too.
                let record =
                    matches!(local, Lookup::Known(_)) || t.client_hardware_address().is_some();
                ms_status::decode(raw, flags, record)
            }
            (_, Some(raw)) => BindingStatus::from_u8(raw),
        };
        let t32 = |v: Option<u32>| v.map_or(0, u64::from);
        Some(Binding {
            ip,
            status,
            flags: if self.cfg.dialect == Dialect::Microsoft {
                0
            } else {
                flags
            },
            hardware: t
                .client_hardware_address()
                .and_then(|h| HwAddr::new(h.htype, h.chaddr)),
            client_id: t.client_identifier().map(Into::into),
            expires_s: t32(t.lease_expiration_time()),
            pet_s: t32(t.potential_expiration_time()),
            cltt_s: t32(t.client_last_transaction_time()),
            stos_s: t32(t.start_time_of_state()),
        })
    }

    fn arm_sync(&mut self, now_ms: u64) {
        self.timers
            .set(Timer::Sync, now_ms + u64::from(self.cfg.sync_s) * 1000);
    }

    fn on_bndupd(&mut self, now_ms: u64, m: &FailoverMessage<'_>, local: &impl LocalBindings) {
        self.stats.bndupd_received += 1;
        if self.our_request.is_some() {
            self.arm_sync(now_ms);
        }
        let limit = match self.cfg.dialect {
            Dialect::Microsoft => super::MAX_UPDATES_PER_BNDUPD, // [MS-DHCPF] §3.1.5.2
            _ => usize::MAX,
        };
        let xid = m.xid();
        let mut ack = self.message(MessageType::BndAck, now_ms, xid);
        for t in m.transactions().take(limit) {
            let Some(ip) = t.assigned_ip_address() else {
                return self.protocol_error(now_ms, ProtocolError::Unexpected(MessageType::BndUpd));
            };
            ack.options
                .push((code::ASSIGNED_IP_ADDRESS, ip.octets().to_vec()));
            let found = local.lookup(ip);
            let verdict = match (&found, self.decode_update(&t, &found)) {
                (_, None) => Err(RejectReason::MissingBindingInformation),
                (Lookup::NotInPool, _) => Err(RejectReason::IllegalIpAddress),
                (_, Some(b)) if self.gift_wins(&b) => {
                    Err(RejectReason::LessCriticalBindingInformation)
                }
                (Lookup::NoRecord, Some(b)) => {
                    accept_update(self.cfg.role, None, &b, secs(now_ms)).map(|()| b)
                }
                (Lookup::Known(l), Some(b)) => {
                    accept_update(self.cfg.role, Some(l), &b, secs(now_ms)).map(|()| b)
                }
            };
            match verdict {
                Ok(b) => self.out.push_back(Output::ApplyBinding(b)),
                Err(r) => {
                    ack.options.push((code::REJECT_REASON, vec![r.to_u8()]));
                    ack.options
                        .push((code::MESSAGE, r.name().as_bytes().to_vec()));
                }
            }
        }
        // The ApplyBinding outputs precede this Send: the shell commits them first (§7.1.4).
        self.send(now_ms, ack);
    }

    /// ISC's "dueling updates" rule, for pool gifts: the partner's update of an address whose
    /// FREE or BACKUP we are still sending (queued, or awaiting its BNDACK) loses to it where
    /// the primary's data wins, unless it is an ACTIVE (spec note §9). Accepting an end there
    /// would make the address ours again after the partner has taken it as its own.
    fn gift_wins(&self, update: &Binding) -> bool {
        let gift = |b: &Binding| matches!(b.status, BindingStatus::Free | BindingStatus::Backup);
        let ip = update.ip;
        let pending = self.queue.get(ip).is_some_and(gift)
            || self
                .in_flight
                .iter()
                .flat_map(|f| &f.updates)
                .any(|q| q.binding.ip == ip && gift(&q.binding));
        pending && self.cfg.role == Role::Primary && update.status != BindingStatus::Active
    }

    // --- sending ------------------------------------------------------------------------

    fn xid(&mut self) -> u32 {
        let x = self.next_xid;
        self.next_xid = self.next_xid.wrapping_add(1);
        x
    }

    fn message(&self, t: MessageType, now_ms: u64, xid: u32) -> Message {
        let mut m = Message::new(t, wire_time(secs(now_ms)), xid);
        if self.cfg.dialect == Dialect::Microsoft {
            m.payload_offset = MS_PAYLOAD_OFFSET;
        }
        m
    }

    fn send(&mut self, now_ms: u64, m: Message) {
        // Our messages are bounded (≤ 16 updates, ≤ 2048 bytes, checked in `pump`); a BNDACK
        // lists at most as many transactions as the (≤ 64 KiB) BNDUPD it answers.
        let Ok(buf) = encode(&m, self.cfg.secret.as_ref()) else {
            return self.protocol_error(now_ms, ProtocolError::Oversized);
        };
        self.out.push_back(Output::Send(buf));
        if matches!(self.link, Link::AwaitState | Link::Up) {
            self.timers.set(Timer::Contact, now_ms + self.tsend_ms());
        }
    }

    fn arm_receive(&mut self, now_ms: u64) {
        self.timers.set(
            Timer::Receive,
            now_ms + u64::from(self.cfg.treceive_s) * 1000,
        );
    }
}

/// `xid` comes after `last` in serial-number order (RFC 1982 style): less than half the 32-bit
/// space ahead, so xids stay ordered across the wrap from `u32::MAX` to 0.
fn xid_after(xid: u32, last: u32) -> bool {
    (1..1 << 31).contains(&xid.wrapping_sub(last))
}

/// Encodes `m`. With a secret the message-digest option goes first (draft §11.1, §12.17) and is
/// signed: the one place a digest is produced.
fn encode(m: &Message, secret: Option<&SharedSecret>) -> Result<Vec<u8>, BuildError> {
    let len = m.encoded_len() + digest_overhead(secret);
    let mut buf = vec![0; len.min(MAX_ENCODABLE_LEN)];
    let mut w = FailoverWriter::with_header(
        &mut buf,
        m.message_type,
        m.time,
        m.xid,
        m.payload_offset,
        &m.additional_header,
    )?;
    let digest = match secret {
        Some(_) => Some(w.push_digest_placeholder(DIGEST_HMAC_SHA256, DIGEST_HMAC_SHA256_LEN)?),
        None => None,
    };
    for (c, v) in &m.options {
        w.push(*c, v)?;
    }
    let len = w.finish();
    buf.truncate(len);
    if let (Some(secret), Some(at)) = (secret, digest) {
        sign(secret, &mut buf, at.digest);
    }
    Ok(buf)
}

/// Bytes the message digest adds to every message we send.
fn digest_overhead(secret: Option<&SharedSecret>) -> usize {
    secret.map_or(0, |_| DIGEST_OPTION_LEN)
}

/// Writes the HMAC of `message` (its `digest` bytes still zero) into those bytes.
fn sign(secret: &SharedSecret, message: &mut [u8], digest: Range<usize>) {
    debug_assert!(message[digest.clone()].iter().all(|&b| b == 0));
    let tag = secret
        .mac(
            &message[..digest.start],
            digest.len(),
            &message[digest.end..],
        )
        .finalize()
        .into_bytes();
    message[digest].copy_from_slice(&tag);
}

/// Checks a received message's digest against our configuration (table in the module docs):
/// the one place a digest is verified. `Err` carries the reject-reason: 13 (we have no secret
/// but a digest came), 20 (wrong digest, or a type other than HMAC-SHA256), 21 (missing). The
/// compare is constant-time (`verify_slice`).
pub fn verify_digest(
    secret: Option<&SharedSecret>,
    msg: &FailoverMessage<'_>,
) -> Result<(), RejectReason> {
    match (secret, msg.digest_input()) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(RejectReason::DigestNotConfigured),
        (Some(_), None) => Err(RejectReason::MissingDigest),
        (Some(_), Some(input)) if input.kind != DIGEST_HMAC_SHA256 => {
            Err(RejectReason::DigestFailed)
        }
        (Some(secret), Some(input)) => secret
            .mac(input.head, input.zeroed_len, input.tail)
            .verify_slice(input.received)
            .map_err(|_| RejectReason::DigestFailed),
    }
}
