//! Why a received datagram produced no reply.
//!
//! One `Copy` enum for every reason, so each worker counts drops in a fixed array indexed by
//! [`DropReason::index`] and never allocates to report one.

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a datagram was dropped; `name()` is the metric label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            /// Every reason, in `index()` order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// How many reasons there are: the size of a per-worker counter array.
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case label for logs and metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }

            /// Position in [`DropReason::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    // --- malformed bytes (the wire codec) ---
    Truncated => "truncated", "Shorter than the fixed BOOTP header plus magic cookie.";
    BadCookie => "bad_cookie", "The magic cookie is not 99.130.83.99.";
    BadHlen => "bad_hlen", "Hardware address length above 16.";
    OptionOverrun => "option_overrun", "An option's length runs past the end of its area.";
    BadOverload => "bad_overload", "Option 52 with a bad value, repeated, or inside `file`/`sname`.";
    BadOptionLength => "bad_option_length", "A known option has a length its type does not allow.";
    NoMessageType => "no_message_type", "No DHCP message type option (plain BOOTP is not served).";
    UnknownMessageType => "unknown_message_type", "A message type a server does not receive.";
    NotRequest => "not_request", "op is not BOOTREQUEST.";
    // --- valid packets we do not answer (the server's decisions) ---
    NoSubnet => "no_subnet", "No configured subnet for giaddr or the receiving interface.";
    PoolExhausted => "pool_exhausted", "No free address in the client's subnet.";
    NotOurServerId => "not_our_server_id", "REQUEST/RELEASE/DECLINE for another server.";
    UnknownLease => "unknown_lease", "RENEW/RELEASE/DECLINE/INIT-REBOOT for an address we hold no binding for.";
    MissingRequestedAddress => "missing_requested_address", "REQUEST with neither option 50 nor ciaddr.";
    ReplyTooLarge => "reply_too_large", "The reply would not fit the client's maximum message size.";
    StorageUnavailable => "storage_unavailable", "The lease store cannot record a binding right now.";
    // --- failover (the service gate, `proto::failover::ServiceGate`) ---
    FailoverUnresponsive => "failover_unresponsive", "The failover state lets this server answer no such message now (STARTUP, RECOVER, …).";
    NotOurBucket => "not_our_bucket", "Load balancing in NORMAL: the client's hash bucket is the partner's.";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_dense_and_names_unique() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
