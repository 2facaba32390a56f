//! A provided buffer ring (IORING_REGISTER_PBUF_RING): `count` buffers of `size` bytes the kernel picks from for
//! multishot receives. A buffer id comes back in a CQE; once its datagram is handled the id is written at the ring's
//! tail and the tail is published with a Release store, which hands the buffer back to the kernel.

use std::{io, ptr, sync::atomic::AtomicU16, sync::atomic::Ordering};

use io_uring::Submitter;

/// One ring entry, `struct io_uring_buf`. The kernel reads the ring's tail from `resv` of entry 0.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}
const _: () =
    assert!(std::mem::size_of::<RawBuf>() == std::mem::size_of::<io_uring::types::BufRingEntry>());

/// An anonymous private mapping (page aligned, zeroed), unmapped on drop unless leaked.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from mmap and nobody uses the mapping any more (BufRing::leak forgets the Mapping
        // instead of dropping it whenever the kernel might still write to it).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

pub(crate) struct BufRing {
    ring: Mapping,
    data: Mapping,
    size: u32,
    mask: u16,
    /// Our copy of the tail (the kernel only reads it).
    tail: u16,
    bgid: u16,
}

// SAFETY: the mappings are owned by the BufRing (process-wide memory, not tied to a thread); the kernel side of the
// registration belongs to the ring, which moves together with it.
unsafe impl Send for BufRing {}

impl BufRing {
    /// Maps `count` (power of two) buffers of `size` bytes, fills the ring with all of them and registers it as
    /// buffer group `bgid`.
    ///
    /// # Safety
    /// The caller must keep the `BufRing` alive (and must not drop it while a receive may still write into one of
    /// its buffers: see [`BufRing::leak`]) for as long as the ring of `submitter` may use buffer group `bgid`.
    pub(crate) unsafe fn new(
        submitter: &Submitter<'_>,
        count: u16,
        size: u32,
        bgid: u16,
    ) -> io::Result<BufRing> {
        debug_assert!(count.is_power_of_two());
        let ring = Mapping::new(usize::from(count) * std::mem::size_of::<RawBuf>())?;
        let data = Mapping::new(usize::from(count) * size as usize)?;
        let mut br = BufRing {
            ring,
            data,
            size,
            mask: count - 1,
            tail: 0,
            bgid,
        };
        for bid in 0..count {
            br.write_entry(bid);
        }
        br.publish();
        // SAFETY: the ring memory is a page-aligned mapping of `count` entries owned by `br`; the caller keeps `br`
        // alive as long as the registration (this function's contract).
        unsafe { submitter.register_buf_ring_with_flags(br.ring.ptr as u64, count, bgid, 0)? };
        Ok(br)
    }

    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Writes buffer `bid` at the (unpublished) tail slot.
    fn write_entry(&mut self, bid: u16) {
        let slot = usize::from(self.tail & self.mask);
        let e = self.ring.ptr.cast::<RawBuf>().wrapping_add(slot);
        let addr = self
            .data
            .ptr
            .wrapping_add(usize::from(bid) * self.size as usize) as u64;
        // SAFETY: `slot <= mask < count`, so `e` is inside the ring mapping. The kernel only reads entries between
        // its head and the published tail; this slot is at the unpublished tail, so nobody reads it now. Fields are
        // written through raw pointers so entry 0's `resv` (the tail the kernel reads) is never covered by a `&mut`.
        unsafe {
            ptr::addr_of_mut!((*e).addr).write(addr);
            ptr::addr_of_mut!((*e).len).write(self.size);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every written entry visible to the kernel (Release: the entry writes happen before the tail moves).
    fn publish(&self) {
        let tail = self
            .ring
            .ptr
            .wrapping_add(std::mem::offset_of!(RawBuf, resv))
            .cast::<u16>();
        // SAFETY: `tail` is entry 0's `resv` field inside the live, u16-aligned ring mapping; it is only ever
        // accessed atomically by us and read by the kernel.
        unsafe { AtomicU16::from_ptr(tail) }.store(self.tail, Ordering::Release);
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.write_entry(bid & self.mask);
        self.publish();
    }

    /// The first `len` bytes of buffer `bid`.
    ///
    /// # Safety
    /// The kernel must have handed `bid` to us (a CQE carried it) and it must not have been recycled since: then the
    /// kernel does not write to it until we recycle it, which needs `&mut self` and so ends this borrow.
    pub(crate) unsafe fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid & self.mask);
        let len = len.min(self.size as usize);
        // SAFETY: bid < count and len <= size keep the slice inside the data mapping; the caller guarantees the
        // kernel is not writing to this buffer (see above).
        unsafe { std::slice::from_raw_parts(self.data.ptr.add(bid * self.size as usize), len) }
    }

    /// Forgets the memory instead of unmapping it: used when a receive might still be in flight at teardown, so a
    /// late kernel write can never land in memory reused for something else.
    pub(crate) fn leak(self) {
        std::mem::forget(self);
    }
}
