//! The lease table's [`Journal`], written to the lease log by one worker.

use std::time::{Duration, Instant};

use super::failover::ReplicaFeed;
use crate::leaselog::{BindingRef, LogError, LogWriter};
use crate::proto::lease::{to_failover_binding, Change, Journal, StorageUnavailable};

/// How often a storage failure is logged again while it lasts.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A worker's [`LogWriter`] as the lease table's journal. Remembers a failure so the worker logs
/// it once (and once more when storage recovers) instead of once per packet.
pub struct LogJournal {
    writer: LogWriter,
    /// Where durable changes go for the failover partner, when there is one.
    feed: Option<ReplicaFeed>,
    /// Records appended so far: a change of this count tells a reply that promises a lease.
    appended: u64,
    failing_since: Option<Instant>,
    last_logged: Option<Instant>,
}

impl LogJournal {
    pub fn new(writer: LogWriter, feed: Option<ReplicaFeed>) -> Self {
        LogJournal {
            writer,
            feed,
            appended: 0,
            failing_since: None,
            last_logged: None,
        }
    }

    pub fn writer(&mut self) -> &mut LogWriter {
        &mut self.writer
    }

    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// A data sync covering everything appended so far has begun.
    pub fn sync_started(&mut self) {
        if let Some(feed) = &mut self.feed {
            feed.sync_started();
        }
    }

    /// The sync begun last has ended: its changes go to the failover partner.
    pub fn sync_ended(&mut self) {
        if let Some(feed) = &mut self.feed {
            feed.sync_done();
        }
    }

    /// Syncs everything appended so far, at once (the control thread, a stopping worker).
    pub fn sync_now(&mut self) -> Result<(), LogError> {
        self.sync_started();
        let result = self.writer.sync();
        self.sync_ended();
        result
    }

    /// A data sync of the log failed.
    pub fn sync_failed(&mut self, error: std::io::Error) {
        self.failed(&LogError::Io {
            path: self.writer.dir().to_path_buf(),
            source: error,
        });
    }

    /// Logs a storage error, at most once per [`ERROR_LOG_INTERVAL`].
    pub fn failed(&mut self, error: &LogError) {
        self.failing_since.get_or_insert_with(Instant::now);
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= ERROR_LOG_INTERVAL)
        {
            self.last_logged = Some(Instant::now());
            tracing::error!(
                "lease log: {error}; not granting or extending leases until it can be written"
            );
        }
    }

    /// Notes that writing works (again).
    pub fn succeeded(&mut self) {
        if let Some(since) = self.failing_since.take() {
            self.last_logged = None;
            tracing::info!(
                "lease log writable again after {:.1} s",
                since.elapsed().as_secs_f64()
            );
        }
    }
}

impl Journal for LogJournal {
    fn record(&mut self, change: &Change<'_>) -> Result<(), StorageUnavailable> {
        match self.writer.append(&record_of(change)) {
            Ok(()) => {
                self.appended += 1;
                if let Some(feed) = &mut self.feed {
                    feed.noted(to_failover_binding(change));
                }
                Ok(())
            }
            Err(e) => {
                self.failed(&e);
                Err(StorageUnavailable)
            }
        }
    }
}

/// The lease log record of a lease table change: the one mapping between the two, used by
/// the workers' appends and by compaction's snapshot.
pub fn record_of<'a>(change: &Change<'a>) -> BindingRef<'a> {
    BindingRef {
        seq: change.seq,
        ip: change.ip,
        state: change.state,
        flags: 0,
        expires_s: change.expires_s,
        potential_expiry_s: change.potential_expiry_s,
        partner_expiry_s: change.partner_expiry_s,
        cltt_s: change.cltt_s,
        state_since_s: change.since_s,
        client: change.client,
        hostname: &[],
    }
}
