//! The endpoint's timers: a fixed table keyed by an enum (quinn-proto's `TimerTable`).
//! Deadlines are absolute milliseconds on the caller's clock.

/// Every timer of a failover endpoint ([MS-DHCPF] §3.1.2, draft §8.3, §9.3, §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// tSend: nothing sent for this long → send CONTACT.
    Contact,
    /// tReceive: nothing received for this long → communications failed. Also bounds the wait
    /// for CONNECT/CONNECTACK on a new connection.
    Receive,
    /// One-shot from creation: still in STARTUP → previous state.
    Startup,
    /// One-shot on entering COMMUNICATIONS-INTERRUPTED (when configured) → PARTNER-DOWN.
    SafePeriod,
    /// Periodic while the link is down → ask the shell to connect.
    ConnectRetry,
    /// RECOVER-WAIT → RECOVER-DONE once MCLT has passed.
    RecoverWait,
    /// Synchronization ([MS-DHCPF] §3.1.2.6): armed when we send UPDREQ/UPDREQALL, re-armed
    /// by every BNDUPD received, stopped by UPDDONE; expiry → close the connection.
    Sync,
}

impl Timer {
    pub const VALUES: [Timer; 7] = [
        Timer::Contact,
        Timer::Receive,
        Timer::Startup,
        Timer::SafePeriod,
        Timer::ConnectRetry,
        Timer::RecoverWait,
        Timer::Sync,
    ];
    const COUNT: usize = Timer::VALUES.len();

    const fn index(self) -> usize {
        self as usize
    }
}

const _: () = {
    let mut i = 0;
    while i < Timer::COUNT {
        assert!(Timer::VALUES[i] as usize == i);
        i += 1;
    }
};

/// Deadline per timer; `None` = stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerTable {
    deadlines: [Option<u64>; Timer::COUNT],
}

impl TimerTable {
    pub fn set(&mut self, timer: Timer, at_ms: u64) {
        self.deadlines[timer.index()] = Some(at_ms);
    }

    pub fn get(&self, timer: Timer) -> Option<u64> {
        self.deadlines[timer.index()]
    }

    pub fn stop(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }

    pub fn is_armed(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// The earliest deadline.
    pub fn next_timeout(&self) -> Option<u64> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Stops and returns `timer` if it is due at `now_ms`.
    pub fn take_expired(&mut self, timer: Timer, now_ms: u64) -> bool {
        match self.get(timer) {
            Some(at) if at <= now_ms => {
                self.stop(timer);
                true
            }
            _ => false,
        }
    }
}
