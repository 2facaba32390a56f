//! The sans-IO protocol core: no sockets, no files, no clock reads. Callers pass `now`.
pub mod lease;
pub mod server;
pub mod subnet;
pub mod wire;
