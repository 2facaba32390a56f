//! What the failover state lets the DHCP workers do (draft §9, spec note §10.1): which client
//! messages they answer and whether the MCLT bounds the lease times they grant.
//!
//! The failover thread owns the state; every worker reads it once per packet. A [`ServiceGate`]
//! is shared between them (`Arc`) and holds the state and the MCLT in one atomic word, so a
//! worker reads both without a lock and never sees the state of one update with the MCLT of
//! another. The failover thread calls [`ServiceGate::set_state`] once the new state is durable
//! (draft §9.2: a state is acted on only after it is written). A server without failover has
//! no gate at all (`Server` holds an `Option`), so the check costs nothing there.
//!
//! | State | DISCOVER, REQUEST without ciaddr | REQUEST with ciaddr | RELEASE, DECLINE, INFORM | Lease time |
//! |---|---|---|---|---|
//! | NORMAL | our hash buckets only ([`super::loadbalance`]) | all | all | MCLT rule |
//! | COMMUNICATIONS-INTERRUPTED, RESOLUTION-INTERRUPTED, CONFLICT-DONE | all | all | all | MCLT rule |
//! | PARTNER-DOWN | all | all | all | no bound (§9.4.2 allows ignoring the MCLT) |
//! | STARTUP, RECOVER, RECOVER-WAIT, RECOVER-DONE, POTENTIAL-CONFLICT, PAUSED, SHUTDOWN, unknown | none | none | none | — |
//!
//! RECOVER-DONE answers nobody, as in ISC dhcpd (the draft's §9.7.1 lets it renew): a partner
//! that has not seen our RECOVER-DONE yet may still be PARTNER-DOWN and reallocating.
//!
//! "REQUEST without ciaddr" is SELECTING or INIT-REBOOT: a client looking for a server, so load
//! balanced like a DISCOVER (draft §5.3: everything but RENEWING and REBINDING is balanced). A
//! REQUEST with ciaddr is a renewal: its lease is known to both servers, so either answers.
//!
//! RESOLUTION-INTERRUPTED and CONFLICT-DONE answer every client as the draft says (§9.11,
//! §9.12: like COMMUNICATIONS-INTERRUPTED); ISC does not answer in them.
//!
//! Which free addresses each side may allocate from is the lease table's static pool share
//! (`lease::PoolShare`); in PARTNER-DOWN the admitted packet carries since when
//! ([`Admitted::partner_down`]), and the table opens the partner's share and its unacknowledged
//! ends after the MCLT (draft §7.3).

use std::sync::atomic::{AtomicU64, Ordering};

use super::config::{Dialect, Role};
use super::loadbalance::{client_bucket, serves_bucket, wire_hba};
use super::state::FailoverState;
use crate::proto::lease::PartnerDown;
use crate::proto::wire::dhcp::{MessageType, Packet};
use crate::proto::wire::DropReason;

/// What a worker may do with one packet, as the failover state allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The MCLT that bounds lease times (draft §5.2.1), `None` when no bound applies.
    pub mclt_s: Option<u32>,
    /// In PARTNER-DOWN: since when, for the rules on the partner's addresses (draft §7.3).
    pub partner_down: Option<PartnerDown>,
}

/// The failover state as the workers see it. See the module docs for the rules.
#[derive(Debug)]
pub struct ServiceGate {
    role: Role,
    dialect: Dialect,
    /// The hash-bucket assignment in `dialect`'s polarity.
    hba: [u8; 32],
    /// The state's wire code in the low byte, the MCLT in the high 32 bits: one word, so one
    /// load gives a consistent pair.
    packed: AtomicU64,
    /// When the state in `packed` began (Unix seconds); written before `packed`.
    since_s: AtomicU64,
}

impl ServiceGate {
    /// A gate for the server in `role` that splits NORMAL load with `split` (buckets served by
    /// the primary, see [`super::loadbalance`]). It starts in STARTUP, answering nothing, until
    /// the failover thread sets the state it resumed.
    pub fn new(role: Role, dialect: Dialect, split: u8) -> ServiceGate {
        ServiceGate {
            role,
            dialect,
            hba: wire_hba(dialect, split),
            packed: AtomicU64::new(pack(FailoverState::Startup, 0)),
            since_s: AtomicU64::new(0),
        }
    }

    /// The hash-bucket assignment for CONNECT (option 11), in the dialect's polarity.
    pub fn hba(&self) -> [u8; 32] {
        self.hba
    }

    /// The failover thread: `state`, entered at `since_s`, is durable and in force, with
    /// `mclt_s` (the MCLT in force: configured on a primary, adopted on a secondary). A state
    /// that bounds lease times with an MCLT of 0 answers nothing: a zero-length lease helps no
    /// one.
    pub fn set_state(&self, state: FailoverState, mclt_s: u32, since_s: u64) {
        self.since_s.store(since_s, Ordering::Relaxed);
        // Release: a worker that sees the state sees its start time.
        self.packed.store(pack(state, mclt_s), Ordering::Release);
    }

    /// The state last set (`None` if the word holds no known state).
    pub fn state(&self) -> Option<FailoverState> {
        FailoverState::from_wire(self.packed.load(Ordering::Relaxed) as u8)
    }

    /// May a worker answer `packet` now? The reason to drop it if not; otherwise the MCLT bound
    /// its lease times get.
    pub fn admit(&self, packet: &Packet<'_>) -> Result<Admitted, DropReason> {
        let packed = self.packed.load(Ordering::Acquire);
        let state = FailoverState::from_wire(packed as u8);
        let mclt_s = (packed >> 32) as u32;
        let service = state.map_or(Service::Nobody, service);
        let kind = match packet.message_type() {
            MessageType::Discover => Kind::New,
            MessageType::Request if packet.ciaddr().is_unspecified() => Kind::New,
            MessageType::Request => Kind::Renewal,
            _ => Kind::Other,
        };
        let answered = match (service, kind) {
            (Service::Nobody, _) => false,
            (Service::All, _) => true,
            (Service::Balanced, Kind::New) => {
                let bucket = client_bucket(self.dialect, packet.client_id(), packet.chaddr());
                if !serves_bucket(&self.hba, self.role, self.dialect, bucket) {
                    return Err(DropReason::NotOurBucket);
                }
                true
            }
            (Service::Balanced, Kind::Renewal | Kind::Other) => true,
        };
        let bounded = state.is_some_and(mclt_bounds);
        if !answered || (bounded && mclt_s == 0) {
            return Err(DropReason::FailoverUnresponsive);
        }
        let partner_down = (state == Some(FailoverState::PartnerDown)).then(|| PartnerDown {
            since_s: self.since_s.load(Ordering::Relaxed),
            mclt_s,
        });
        Ok(Admitted {
            mclt_s: bounded.then_some(mclt_s),
            partner_down,
        })
    }
}

/// Which clients a server in `state` answers, in words (status output).
pub fn allowed_service(state: FailoverState) -> &'static str {
    match service(state) {
        Service::Nobody => "none",
        Service::Balanced => "new clients of our hash buckets (split; none on a hot-standby secondary), every renewal",
        Service::All => "all clients",
    }
}

/// The "Clients" column of the table in the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Nobody,
    Balanced,
    All,
}

fn service(state: FailoverState) -> Service {
    use FailoverState as S;
    match state {
        S::Normal => Service::Balanced,
        S::CommunicationsInterrupted
        | S::PartnerDown
        | S::ResolutionInterrupted
        | S::ConflictDone => Service::All,
        // The draft lets RECOVER-DONE renew; ISC answers nobody, and so do we: until the partner
        // has seen our RECOVER-DONE it may still be PARTNER-DOWN and reallocating our leases.
        S::Startup
        | S::RecoverDone
        | S::Recover
        | S::RecoverWait
        | S::PotentialConflict
        | S::Paused
        | S::Shutdown => Service::Nobody,
    }
}

/// The "Lease time" column: states whose leases the MCLT bounds.
fn mclt_bounds(state: FailoverState) -> bool {
    matches!(
        state,
        FailoverState::Normal
            | FailoverState::CommunicationsInterrupted
            | FailoverState::ResolutionInterrupted
            | FailoverState::ConflictDone
    )
}

/// What a client message asks for, as the table tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// DISCOVER, or REQUEST without ciaddr (SELECTING, INIT-REBOOT).
    New,
    /// REQUEST with ciaddr (RENEWING, REBINDING).
    Renewal,
    /// RELEASE, DECLINE, INFORM (and message types a server never receives).
    Other,
}

fn pack(state: FailoverState, mclt_s: u32) -> u64 {
    u64::from(state.wire()) | u64::from(mclt_s) << 32
}

#[cfg(test)]
mod tests {
    //! Every state against every message kind, through real encoded packets, and the bucket
    //! split between the two roles in NORMAL.
    use super::*;
    use crate::proto::wire::dhcp::PacketWriter;
    use crate::proto::wire::options::code;
    use std::net::Ipv4Addr;

    const MCLT: u32 = 1800;

    /// A client message from chaddr 02:00:00:00:00:`client`, with `ciaddr` set or not.
    fn packet(msg: MessageType, client: u8, ciaddr: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 600];
        let mut w = PacketWriter::new(&mut buf, 600);
        w.set_op(1);
        w.set_htype(1);
        w.set_chaddr(&[2, 0, 0, 0, 0, client]);
        if ciaddr {
            w.set_ciaddr(Ipv4Addr::new(10, 0, 0, 9));
        }
        w.push_u8(code::MESSAGE_TYPE, msg as u8).unwrap();
        let len = w.finish();
        buf.truncate(len);
        buf
    }

    /// The answer of `gate` to each kind: (DISCOVER, REQUEST w/o ciaddr, REQUEST with ciaddr,
    /// RELEASE, DECLINE, INFORM) from `client`.
    fn answers(gate: &ServiceGate, client: u8) -> [Result<Admitted, DropReason>; 6] {
        let cases = [
            (MessageType::Discover, false),
            (MessageType::Request, false),
            (MessageType::Request, true),
            (MessageType::Release, true),
            (MessageType::Decline, false),
            (MessageType::Inform, true),
        ];
        cases.map(|(msg, ciaddr)| {
            let bytes = packet(msg, client, ciaddr);
            gate.admit(&Packet::parse(&bytes).unwrap())
        })
    }

    /// A client whose bucket `gate`'s server serves, and one whose bucket it does not.
    fn ours_and_theirs(gate: &ServiceGate) -> (u8, u8) {
        let serves = |c: u8| {
            let bucket = client_bucket(gate.dialect, None, &[2, 0, 0, 0, 0, c]);
            serves_bucket(&gate.hba, gate.role, gate.dialect, bucket)
        };
        let ours = (0..=255).find(|&c| serves(c)).unwrap();
        let theirs = (0..=255).find(|&c| !serves(c)).unwrap();
        (ours, theirs)
    }

    #[test]
    fn every_state_answers_what_the_table_says() {
        use FailoverState as S;
        let gate = ServiceGate::new(Role::Primary, Dialect::Ringlease, 128);
        let (ours, theirs) = ours_and_theirs(&gate);
        let ok = Ok(Admitted {
            mclt_s: Some(MCLT),
            partner_down: None,
        });
        let unbounded = Ok(Admitted {
            mclt_s: None,
            partner_down: Some(PartnerDown {
                since_s: 1_700_000_000,
                mclt_s: MCLT,
            }),
        });
        let mute = Err(DropReason::FailoverUnresponsive);
        let bucket = Err(DropReason::NotOurBucket);
        assert_eq!(gate.state(), Some(S::Startup));
        assert_eq!(
            answers(&gate, ours),
            [mute; 6],
            "a new gate answers nothing"
        );
        for state in FailoverState::ALL {
            gate.set_state(state, MCLT, 1_700_000_000);
            assert_eq!(gate.state(), Some(state));
            let (mine, other) = match state {
                S::Normal => ([ok; 6], [bucket, bucket, ok, ok, ok, ok]),
                S::CommunicationsInterrupted | S::ResolutionInterrupted | S::ConflictDone => {
                    ([ok; 6], [ok; 6])
                }
                S::PartnerDown => ([unbounded; 6], [unbounded; 6]),
                _ => ([mute; 6], [mute; 6]),
            };
            assert_eq!(answers(&gate, ours), mine, "{}", state.name());
            assert_eq!(answers(&gate, theirs), other, "{}", state.name());
            assert_ne!(allowed_service(state), "");
        }
    }

    #[test]
    fn the_two_roles_split_new_clients_between_them() {
        for dialect in [Dialect::Ringlease, Dialect::Isc, Dialect::Microsoft] {
            let primary = ServiceGate::new(Role::Primary, dialect, 128);
            let secondary = ServiceGate::new(Role::Secondary, dialect, 128);
            primary.set_state(FailoverState::Normal, MCLT, 0);
            secondary.set_state(FailoverState::Normal, MCLT, 0);
            let mut served = [0usize; 2];
            for client in 0..=255u8 {
                let bytes = packet(MessageType::Discover, client, false);
                let p = Packet::parse(&bytes).unwrap();
                let (a, b) = (primary.admit(&p).is_ok(), secondary.admit(&p).is_ok());
                assert!(a != b, "exactly one server answers client {client}");
                served[usize::from(b)] += 1;
            }
            // chaddr's last byte sweeps every bucket (the table is a permutation).
            assert_eq!(served, [128, 128], "{dialect:?}");
        }
        let standby = ServiceGate::new(Role::Secondary, Dialect::Ringlease, 255);
        standby.set_state(FailoverState::Normal, MCLT, 0);
        assert!(
            answers(&standby, 1)[0].is_err(),
            "hot standby answers no DISCOVER"
        );
        assert!(answers(&standby, 1)[2].is_ok(), "but renewals");
    }

    #[test]
    fn a_bounded_state_without_an_mclt_answers_nothing() {
        let gate = ServiceGate::new(Role::Secondary, Dialect::Ringlease, 128);
        gate.set_state(FailoverState::CommunicationsInterrupted, 0, 0);
        assert_eq!(
            answers(&gate, 1),
            [Err(DropReason::FailoverUnresponsive); 6]
        );
        gate.set_state(FailoverState::PartnerDown, 0, 0);
        let unbounded = Admitted {
            mclt_s: None,
            partner_down: Some(PartnerDown {
                since_s: 0,
                mclt_s: 0,
            }),
        };
        assert_eq!(answers(&gate, 1), [Ok(unbounded); 6]);
    }
}
