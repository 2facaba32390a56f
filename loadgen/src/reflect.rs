//! `ringlease-loadgen reflect`: sends every datagram straight back to its sender. Driven with `--scenario echo`, it
//! measures what the machine's UDP path costs with no DHCP work at all: the ceiling for any server on that core.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ringlease_ring::SendQueue;

use crate::ReflectArgs;

pub fn run(a: &ReflectArgs) -> Result<ExitCode, String> {
    crate::check_target(*a.listen.ip(), a.allow_remote)?;
    let duration = crate::secs(a.duration, "--duration")?;
    if let Some(core) = a.core {
        if !ringlease_ring::pin_current_thread(core) {
            eprintln!("warning: could not pin to core {core}");
        }
    }
    let mut io = crate::open_relay(a.listen, &a.backend, 32 << 20)?;
    eprintln!(
        "reflector ready on {} ({} backend) for {:.1} s",
        a.listen,
        io.backend().name(),
        duration.as_secs_f64()
    );
    let mut queue = SendQueue::new(2048);
    let deadline = Instant::now() + duration;
    let (mut echoed, mut failed) = (0u64, 0u64);
    while Instant::now() < deadline {
        let got = io
            .recv_batch(queue.capacity(), Duration::from_millis(10), &mut |d| {
                queue.push(d.socket, d.src, None, |buf| {
                    let n = d.data.len().min(buf.len());
                    buf[..n].copy_from_slice(&d.data[..n]);
                    n
                });
            })
            .map_err(|e| format!("receive: {e}"))?;
        if got > 0 {
            let r = io
                .send_batch(&mut queue)
                .map_err(|e| format!("send: {e}"))?;
            echoed += r.sent as u64;
            failed += r.failed as u64;
        }
    }
    println!("reflector: {echoed} datagrams echoed, {failed} send failures");
    Ok(ExitCode::SUCCESS)
}
