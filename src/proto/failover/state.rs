//! Endpoint states (draft-12 §9, [MS-DHCPF] §3.1.1) and the pure "communications OK with the
//! partner in state X" decision table (draft §9.4–§9.14; spec note §10.4).

use crate::proto::wire::failover::ServerState;

/// Every draft-12 endpoint state, with its server-state (option 24) wire value.
///
/// The endpoint drives every state but PAUSED and SHUTDOWN, which exist as values (a partner
/// may report them; a server announces them when it stops) but are never entered as a state of
/// the relationship: a transition into them is refused with [`Decision::Unsupported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailoverState {
    Startup,
    Normal,
    CommunicationsInterrupted,
    PartnerDown,
    PotentialConflict,
    Recover,
    Paused,
    Shutdown,
    RecoverDone,
    ResolutionInterrupted,
    ConflictDone,
    /// No draft-12 code; ISC sends 254 (spec note §4.3) and so do we.
    RecoverWait,
}

impl FailoverState {
    /// All states, in wire order.
    pub const ALL: [FailoverState; 12] = [
        FailoverState::Startup,
        FailoverState::Normal,
        FailoverState::CommunicationsInterrupted,
        FailoverState::PartnerDown,
        FailoverState::PotentialConflict,
        FailoverState::Recover,
        FailoverState::Paused,
        FailoverState::Shutdown,
        FailoverState::RecoverDone,
        FailoverState::ResolutionInterrupted,
        FailoverState::ConflictDone,
        FailoverState::RecoverWait,
    ];

    /// server-state (option 24) value. STARTUP (1) is never sent: a server in STARTUP sends
    /// its previous state with the S flag (draft §9.3).
    pub const fn wire(self) -> u8 {
        match self {
            FailoverState::Startup => 1,
            FailoverState::Normal => 2,
            FailoverState::CommunicationsInterrupted => 3,
            FailoverState::PartnerDown => 4,
            FailoverState::PotentialConflict => 5,
            FailoverState::Recover => 6,
            FailoverState::Paused => 7,
            FailoverState::Shutdown => 8,
            FailoverState::RecoverDone => 9,
            FailoverState::ResolutionInterrupted => 10,
            FailoverState::ConflictDone => 11,
            FailoverState::RecoverWait => 254,
        }
    }

    /// The state a server-state value names; `None` for 0 ("unknown-state") and unassigned codes.
    pub const fn from_wire(v: u8) -> Option<FailoverState> {
        Some(match v {
            1 => FailoverState::Startup,
            2 => FailoverState::Normal,
            3 => FailoverState::CommunicationsInterrupted,
            4 => FailoverState::PartnerDown,
            5 => FailoverState::PotentialConflict,
            6 => FailoverState::Recover,
            7 => FailoverState::Paused,
            8 => FailoverState::Shutdown,
            9 => FailoverState::RecoverDone,
            10 => FailoverState::ResolutionInterrupted,
            11 => FailoverState::ConflictDone,
            254 => FailoverState::RecoverWait,
            _ => return None,
        })
    }

    pub const fn to_server_state(self) -> ServerState {
        ServerState::from_u8(self.wire())
    }

    pub const fn from_server_state(s: ServerState) -> Option<FailoverState> {
        FailoverState::from_wire(s.to_u8())
    }

    /// The draft's name, for logs.
    pub const fn name(self) -> &'static str {
        self.to_server_state().name()
    }

    /// The result of the "communications failed" transition (draft §9.2, §9.3 step 2):
    /// NORMAL → COMMUNICATIONS-INTERRUPTED, POTENTIAL-CONFLICT → RESOLUTION-INTERRUPTED; every
    /// other state stays (RECOVER, RECOVER-WAIT, RECOVER-DONE, CONFLICT-DONE, PARTNER-DOWN, …).
    pub const fn after_comms_failed(self) -> FailoverState {
        match self {
            FailoverState::Normal => FailoverState::CommunicationsInterrupted,
            FailoverState::PotentialConflict => FailoverState::ResolutionInterrupted,
            other => other,
        }
    }

    /// States the endpoint can enter. The others are refused (see the type docs).
    pub const fn is_implemented(self) -> bool {
        !matches!(self, FailoverState::Paused | FailoverState::Shutdown)
    }
}

/// What the state machine does when it learns (on regaining communications, or from a later
/// STATE) that the partner is in some state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Stay,
    Enter(FailoverState),
    /// The draft wants this transition but the endpoint does not implement the target state's
    /// actions. The endpoint refuses it: stays where it is and drops the connection.
    Unsupported {
        to: FailoverState,
    },
}

/// The draft's comms-OK table (spec note §10.4, draft text over Figure 9.2-1) for every state
/// except STARTUP (handled by the endpoint: it first resolves its previous state).
/// `partner_startup` is the partner's S flag.
pub fn on_partner_state(
    current: FailoverState,
    partner: FailoverState,
    partner_startup: bool,
) -> Decision {
    use FailoverState as S;
    // Both may have served alone meanwhile: resolve binding by binding (draft §9.10).
    let conflict = Decision::Enter(S::PotentialConflict);
    match current {
        S::Normal => match partner {
            // "Partner changes to an unexpected state" = comms-failed then comms-OK: via
            // COMMUNICATIONS-INTERRUPTED; COMM-INT + partner COMM-INT/NORMAL → NORMAL again.
            S::Normal | S::CommunicationsInterrupted | S::RecoverDone | S::Startup => {
                Decision::Stay
            }
            // COMM-INT + partner RECOVER/PAUSED: stay COMM-INT (draft; ISC goes PARTNER-DOWN
            // on RECOVER, see spec note §10.4).
            S::Paused | S::Recover | S::RecoverWait => {
                Decision::Enter(S::CommunicationsInterrupted)
            }
            S::Shutdown => Decision::Enter(S::PartnerDown),
            // The secondary's end of a resolution: NORMAL while the primary is still
            // CONFLICT-DONE, until it sees our NORMAL (draft §9.10.2, §9.12).
            S::ConflictDone => Decision::Stay,
            S::PartnerDown | S::PotentialConflict | S::ResolutionInterrupted => conflict,
        },
        S::CommunicationsInterrupted => match partner {
            S::Normal | S::CommunicationsInterrupted | S::RecoverDone => Decision::Enter(S::Normal),
            S::Recover | S::RecoverWait | S::Paused | S::Startup => Decision::Stay,
            S::Shutdown => Decision::Enter(S::PartnerDown),
            S::PartnerDown | S::PotentialConflict | S::ResolutionInterrupted | S::ConflictDone => {
                conflict
            }
        },
        S::PartnerDown => {
            if partner_startup {
                return Decision::Stay; // draft §9.4.3: any STATE with S=1 is ignored
            }
            match partner {
                S::RecoverDone => Decision::Enter(S::Normal),
                S::Recover | S::RecoverWait | S::Shutdown | S::Paused | S::Startup => {
                    Decision::Stay
                }
                S::Normal
                | S::CommunicationsInterrupted
                | S::PartnerDown
                | S::PotentialConflict
                | S::ResolutionInterrupted
                | S::ConflictDone => conflict,
            }
        }
        // The UPDREQ/UPDREQALL is sent by the endpoint on entering RECOVER with comms OK.
        S::Recover => match partner {
            S::PotentialConflict | S::ResolutionInterrupted | S::ConflictDone => conflict,
            _ => Decision::Stay,
        },
        // Left by the RECOVER-WAIT timer only.
        S::RecoverWait => Decision::Stay,
        S::RecoverDone => match partner {
            S::Normal | S::RecoverDone => Decision::Enter(S::Normal),
            _ => Decision::Stay,
        },
        // Left by UPDDONE (the endpoint: primary → CONFLICT-DONE, secondary → NORMAL); the
        // partner's moves meanwhile change nothing here (draft §9.10). A partner in RECOVER
        // lost its database and will ask for everything; its answers come as UPDDONE too.
        S::PotentialConflict => Decision::Stay,
        // Draft §9.11: communications restored → POTENTIAL-CONFLICT, whatever the partner's state.
        S::ResolutionInterrupted => Decision::Enter(S::PotentialConflict),
        // Draft §9.12: the secondary finished its side of the resolution.
        S::ConflictDone => match partner {
            S::Normal => Decision::Enter(S::Normal),
            _ => Decision::Stay,
        },
        S::Startup | S::Paused | S::Shutdown => Decision::Unsupported { to: current },
    }
}
