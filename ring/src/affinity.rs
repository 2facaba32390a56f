//! CPU pinning for worker threads.

/// Pins the calling thread to `core` (core_affinity). false if that core does not exist (or is not ours).
pub fn pin_current_thread(core: usize) -> bool {
    match core_affinity::get_core_ids() {
        Some(ids) => ids
            .into_iter()
            .find(|c| c.id == core)
            .is_some_and(core_affinity::set_for_current),
        None => false,
    }
}

/// The ids of the cores this process may run on (its affinity mask), in ascending order.
pub fn available_cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    ids
}
