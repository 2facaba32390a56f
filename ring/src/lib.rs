//! Datagram plumbing for ringlease: per-worker UDP sockets in SO_REUSEPORT groups steered by a classic-BPF hash of
//! the DHCP `chaddr`, an io_uring backend (multishot `recvmsg` into a provided buffer ring, batched `sendmsg`) and a
//! portable fallback backend (poll + recvmmsg/sendmmsg) with the same behaviour.
//!
//! The only DHCP knowledge in this crate: `chaddr` sits at byte offset 28 of the UDP payload (see
//! [`steering_index`]).

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::RawFd,
    sync::{Once, OnceLock},
    time::Duration,
};

mod affinity;
mod bufring;
mod fallback;
mod socket;
mod uring;

pub use affinity::{available_cores, pin_current_thread};
pub use socket::{open_groups, steering_index, CHADDR_LEN, CHADDR_OFFSET, MAX_WORKERS};

/// One received datagram, borrowed from the backend's buffer until the callback returns.
pub struct Received<'a> {
    pub data: &'a [u8],
    pub src: SocketAddrV4,
    /// Destination address of the datagram (IP_PKTINFO ipi_addr): 255.255.255.255 for a broadcast.
    pub dst: Ipv4Addr,
    /// Interface the datagram arrived on (IP_PKTINFO ipi_ifindex).
    pub ifindex: u32,
    /// Index of the socket in this worker's set (= index of the listen address).
    pub socket: usize,
}

/// Size of one reply slot in a [`SendQueue`].
pub const SLOT_SIZE: usize = 1500;
/// Largest [`SendQueue`] capacity (bigger requests are clamped): 64 Ki slots = 96 MiB.
pub const MAX_SEND_QUEUE_CAPACITY: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct SendMeta {
    socket: usize,
    dst: SocketAddrV4,
    ifindex: Option<u32>,
    len: usize,
}

/// Replies waiting to be sent: fixed capacity, slots of [`SLOT_SIZE`] bytes allocated once.
pub struct SendQueue {
    /// `capacity * SLOT_SIZE` bytes; slot `i` is `slots[i * SLOT_SIZE..(i + 1) * SLOT_SIZE]`.
    slots: Box<[u8]>,
    /// One entry per queued datagram, in slot order (`meta.len()` = slots in use). Never grows past `capacity`.
    meta: Vec<SendMeta>,
    capacity: usize,
}

impl SendQueue {
    /// A queue of `capacity` slots (clamped to `1..=MAX_SEND_QUEUE_CAPACITY`).
    pub fn new(capacity: usize) -> SendQueue {
        let capacity = capacity.clamp(1, MAX_SEND_QUEUE_CAPACITY);
        SendQueue {
            slots: vec![0u8; capacity * SLOT_SIZE].into_boxed_slice(),
            meta: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// Reserves the next slot and lets `fill` write one datagram into it (the slot is SLOT_SIZE bytes, may hold stale
    /// bytes from earlier use); `fill` returns the length, 0 = nothing to send (slot released). `ifindex`: when Some,
    /// the datagram leaves through that interface (IP_PKTINFO on send; needed for 255.255.255.255 replies to directly
    /// attached clients). Returns false (and does not call `fill`) when the queue is full.
    /// A length above SLOT_SIZE is clamped to SLOT_SIZE.
    pub fn push(
        &mut self,
        socket: usize,
        dst: SocketAddrV4,
        ifindex: Option<u32>,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        let slot = self.meta.len();
        if slot >= self.capacity {
            return false;
        }
        let len = fill(&mut self.slots[slot * SLOT_SIZE..(slot + 1) * SLOT_SIZE]).min(SLOT_SIZE);
        if len > 0 {
            self.meta.push(SendMeta {
                socket,
                dst,
                ifindex,
                len,
            });
        }
        true
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn clear(&mut self) {
        self.meta.clear();
    }

    /// Pointer to the first byte of slot `i` (for the kernel; the queue must stay borrowed while it is used).
    fn slot_ptr(&self, i: usize) -> *const u8 {
        self.slots[i * SLOT_SIZE..].as_ptr()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    IoUring,
    Fallback,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::IoUring => "io_uring",
            Backend::Fallback => "fallback",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    IoUring,
    Fallback,
}

/// The state of a [`DatagramIo::start_sync`] group, as reported by [`DatagramIo::sync_state`].
#[derive(Debug)]
pub enum SyncState {
    /// At least one fdatasync of the group has not completed yet.
    InFlight,
    /// Every fdatasync of the group completed: Ok, or the error of the first fd (in the order given to `start_sync`)
    /// whose sync failed.
    Done(io::Result<()>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    pub sent: usize,
    pub failed: usize,
}

/// A worker's datagram I/O. Not shared between threads (one per worker), but Send so it can be moved into the worker
/// thread.
pub trait DatagramIo: Send {
    fn backend(&self) -> Backend;
    /// Waits up to `timeout` for datagrams on any of the worker's sockets and calls `on_datagram` for each
    /// (at most `max` per call). Returns how many were delivered; Ok(0) on timeout. A datagram that was truncated
    /// (larger than the buffer) is skipped and counted in `truncated()`. EINTR → Ok(0).
    ///
    /// A finished sync group (see [`start_sync`](Self::start_sync)) ends the wait: when the group completes during
    /// the call, or has completed and its result was not yet taken with [`sync_state`](Self::sync_state), the call
    /// returns with what it has (possibly Ok(0)) instead of waiting for the rest of `timeout`. So a caller that
    /// loops on recv_batch must take the result with `sync_state` (or it spins).
    fn recv_batch(
        &mut self,
        max: usize,
        timeout: Duration,
        on_datagram: &mut dyn FnMut(Received<'_>),
    ) -> io::Result<usize>;
    /// Sends every queued datagram (io_uring: one submit for the whole batch), clears the queue.
    fn send_batch(&mut self, queue: &mut SendQueue) -> io::Result<SendReport>;
    /// fdatasync(fd), blocking until it completes. io_uring: an IORING_OP_FSYNC with DATASYNC through the same ring.
    /// Independent of a [`start_sync`](Self::start_sync) group in flight: that group keeps running and its result is
    /// still reported once by [`sync_state`](Self::sync_state).
    fn sync_data(&mut self, fd: RawFd) -> io::Result<()>;
    /// Starts a data sync (fdatasync) of every fd in `fds` without waiting. At most one sync "group" exists per
    /// DatagramIo: calling this while one is in flight, or while a finished group's result has not been taken by
    /// [`sync_state`](Self::sync_state) yet (so that no sync error is silently dropped), fails with
    /// io::ErrorKind::WouldBlock and starts nothing — the caller waits for `sync_state()` to report Done first.
    /// The fds must stay open until the group completes (the caller guarantees it). An empty `fds` makes a group
    /// that is Done(Ok) at once.
    ///
    /// io_uring: one IORING_OP_FSYNC (DATASYNC) per fd, submitted before returning; the kernel runs them on its
    /// io-wq threads and their completions are picked up by whatever enters the ring next (`recv_batch`, which
    /// returns early when the group completes, `send_batch`, `sync_data`, `sync_state`). Fallback: the fdatasyncs run
    /// right here, synchronously (this call blocks), and `sync_state` then reports Done.
    fn start_sync(&mut self, fds: &[RawFd]) -> io::Result<()>;
    /// The state of the sync group, without blocking: None when no group was started or its result was already
    /// taken; Some(SyncState::InFlight) while running; Some(SyncState::Done(result)) once every fdatasync of the
    /// group completed (result: the first error, if any) — returned ONCE, after which it reports None (and a new group
    /// may be started).
    fn sync_state(&mut self) -> Option<SyncState>;
    /// Datagrams dropped because they did not fit a receive buffer.
    fn truncated(&self) -> u64;
    /// How many times the receive buffer ring ran dry (io_uring ENOBUFS; the multishot receive was re-armed and
    /// nothing was lost: the datagrams waited in the socket). Always 0 for the fallback.
    fn ring_exhausted(&self) -> u64 {
        0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    None,
    ChaddrHash,
}

#[derive(Clone, Debug)]
pub struct GroupConfig {
    pub addrs: Vec<SocketAddrV4>,
    pub workers: usize,
    pub steering: Steering,
    /// SO_RCVBUF (SO_RCVBUFFORCE is tried first, it works as root / with CAP_NET_ADMIN).
    pub recv_buffer_bytes: Option<usize>,
    /// SO_SNDBUF (SO_SNDBUFFORCE is tried first).
    pub send_buffer_bytes: Option<usize>,
}

/// Smallest accepted [`RingParams::buffer_size`].
pub const MIN_BUFFER_SIZE: u32 = 256;
/// Largest accepted [`RingParams::buffer_size`] (a 64 KiB datagram plus headroom).
pub const MAX_BUFFER_SIZE: u32 = 64 * 1024 + 1024;
/// Largest accepted [`RingParams::buffers`] (kernel limit for a provided buffer ring).
pub const MAX_BUFFERS: u16 = 32_768;
/// Largest accepted [`RingParams::entries`].
pub const MAX_RING_ENTRIES: u32 = 4096;

#[derive(Clone, Copy, Debug)]
pub struct RingParams {
    /// Submission queue size.
    pub entries: u32,
    /// Buffers in the worker's provided buffer ring (power of two, shared by the worker's sockets).
    pub buffers: u16,
    /// Bytes per receive buffer. The io_uring backend keeps [`RECV_HEADROOM`] of them for the recvmsg header, the
    /// source address and the IP_PKTINFO control message, so the largest datagram is `buffer_size - RECV_HEADROOM`;
    /// the fallback uses the same limit so both backends truncate alike.
    pub buffer_size: u32,
}

impl Default for RingParams {
    fn default() -> Self {
        RingParams {
            entries: 256,
            buffers: 1024,
            buffer_size: 2048,
        }
    }
}

/// Bytes of each receive buffer not available to the payload (see [`RingParams::buffer_size`]).
pub const RECV_HEADROOM: usize = socket::RECV_HEADROOM;

impl RingParams {
    /// Largest datagram payload that is delivered; bigger ones are counted in `truncated()`.
    pub fn max_payload(&self) -> usize {
        self.buffer_size as usize - RECV_HEADROOM
    }

    fn validate(&self) -> io::Result<()> {
        let bad = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.entries == 0 || self.entries > MAX_RING_ENTRIES {
            return bad(format!(
                "RingParams.entries must be 1..={MAX_RING_ENTRIES}, got {}",
                self.entries
            ));
        }
        if !self.buffers.is_power_of_two() || self.buffers > MAX_BUFFERS {
            return bad(format!(
                "RingParams.buffers must be a power of two <= {MAX_BUFFERS}, got {}",
                self.buffers
            ));
        }
        if !(MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE).contains(&self.buffer_size) {
            return bad(format!(
                "RingParams.buffer_size must be {MIN_BUFFER_SIZE}..={MAX_BUFFER_SIZE}, got {}",
                self.buffer_size
            ));
        }
        Ok(())
    }
}

/// Builds a worker's I/O over its sockets. Auto: probe io_uring (once per process, the verdict is cached) and fall
/// back with one warning naming the reason; IoUring: error if unavailable; Fallback: plain sockets.
pub fn open_io(
    sockets: Vec<UdpSocket>,
    choice: BackendChoice,
    params: RingParams,
) -> io::Result<Box<dyn DatagramIo>> {
    params.validate()?;
    if sockets.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "open_io needs at least one socket",
        ));
    }
    match choice {
        BackendChoice::Fallback => Ok(Box::new(fallback::FallbackIo::new(sockets, params)?)),
        BackendChoice::IoUring => {
            if let Err(reason) = probe_io_uring() {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("io_uring unavailable: {reason}"),
                ));
            }
            match uring::UringIo::new(sockets, params) {
                Ok(io) => Ok(Box::new(io)),
                Err(fail) => Err(io::Error::new(
                    fail.error.kind(),
                    format!("io_uring unavailable: {}", fail.reason),
                )),
            }
        }
        BackendChoice::Auto => {
            if let Err(reason) = probe_io_uring() {
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "io_uring unavailable, using the fallback backend (poll + recvmmsg/sendmmsg): {reason}"
                    )
                });
                return Ok(Box::new(fallback::FallbackIo::new(sockets, params)?));
            }
            match uring::UringIo::new(sockets, params) {
                Ok(io) => Ok(Box::new(io)),
                Err(fail) => {
                    tracing::warn!(
                        "io_uring setup failed for this worker, using the fallback backend (poll + recvmmsg/sendmmsg): {}",
                        fail.reason
                    );
                    Ok(Box::new(fallback::FallbackIo::new(fail.sockets, params)?))
                }
            }
        }
    }
}

/// Why io_uring cannot be used here, or Ok. The first call runs the probe (a small ring, the opcode probe, a provided
/// buffer ring and one multishot recvmsg round trip over loopback); later calls return the cached verdict.
pub fn probe_io_uring() -> Result<(), String> {
    static VERDICT: OnceLock<Result<(), String>> = OnceLock::new();
    VERDICT.get_or_init(uring::probe).clone()
}
