//! ringlease: a DHCPv4 server for ISPs.
//!
//! The data path, NIC to reply:
//!
//! ```text
//! NIC queue → SO_REUSEPORT socket of worker n (cBPF steers by chaddr hash)   ringlease-ring
//!   → io_uring multishot receive into a provided buffer ring                  ringlease-ring
//!   → proto::wire::dhcp::Packet::parse  (counted DropReason, or a view)       proto (sans-IO)
//!   → proto::server::Server::decide(packet, local_addr, now)                  proto (sans-IO)
//!   → Server::write_reply into a send slot                                    proto (sans-IO)
//!   → one batched send per receive batch                                      ringlease-ring
//! ```
//!
//! `proto` is the pure protocol core: no sockets, files or clock reads; `shell` is the thin I/O
//! layer around it (threads, sockets, signals, the clock).
pub mod config;
pub mod control;
pub mod demo;
pub mod leaselog;
pub mod metrics;
pub mod migrate;
pub mod proto;
pub mod shell;
pub mod tune;
