//! The one clock of the server. The protocol core never reads time; it is handed `now_s`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch: lease expiries are absolute so they survive restarts.
pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
