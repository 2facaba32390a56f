//! Wire formats, viewed and built in place.
pub mod dhcp;
pub mod drop;
pub mod failover;
pub mod options;

pub use dhcp::{BuildError, Message, MessageType, OptionIter, Packet, PacketWriter};
pub use drop::DropReason;
