//! The sans-IO protocol core: no sockets, no files, no clock reads. Callers pass `now`.
pub mod failover;
pub mod lease;
pub mod server;
pub mod subnet;
pub mod wire;
