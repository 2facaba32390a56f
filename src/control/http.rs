//! The Prometheus endpoint: `GET /metrics` in the OpenMetrics text format (which Prometheus
//! reads natively), encoded by `prometheus-client` from the workers' published metrics on each
//! scrape, served by `tiny_http` on a housekeeping thread.
//!
//! With a failover relationship: its state (as the draft's server-state code), queue depth,
//! outstanding BNDUPDs, BNDUPD/BNDACK counters and the replication lag percentiles.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::handlers::{bucket_counts, utilisation};
use super::{State, COUNTS_MAX_AGE, LATENCY_BOUNDS_US, POLL_INTERVAL};
use crate::proto::wire::dhcp::MessageType;
use crate::proto::wire::DropReason;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Message types a server receives, and those it sends: always exported, zero or not.
const RECEIVED_TYPES: [MessageType; 5] = [
    MessageType::Discover,
    MessageType::Request,
    MessageType::Decline,
    MessageType::Release,
    MessageType::Inform,
];
const SENT_TYPES: [MessageType; 3] = [MessageType::Offer, MessageType::Ack, MessageType::Nak];

/// Binds `addr` and serves it on a new thread (pinned to `core` first, so the HTTP server's
/// own threads, started from it, inherit the affinity). Returns the bound address.
pub(crate) fn spawn(
    state: Arc<State>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    server_stop: Arc<AtomicBool>,
    core: Option<usize>,
) -> Result<(thread::JoinHandle<()>, SocketAddr), String> {
    let (tx, rx) = mpsc::channel::<Result<SocketAddr, String>>();
    let handle = thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            super::pin(core, "metrics");
            let server = match tiny_http::Server::http(addr) {
                Ok(server) => server,
                Err(e) => {
                    let _ = tx.send(Err(format!("metrics.listen {addr}: cannot listen: {e}")));
                    return;
                }
            };
            let bound = server.server_addr().to_ip().unwrap_or(addr);
            let _ = tx.send(Ok(bound));
            let registry = registry(state);
            while !stop.load(Ordering::Relaxed) && !server_stop.load(Ordering::Relaxed) {
                match server.recv_timeout(POLL_INTERVAL) {
                    Ok(Some(request)) => respond(&registry, request),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("metrics endpoint: {e}");
                        thread::sleep(POLL_INTERVAL);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    match rx.recv() {
        Ok(Ok(bound)) => Ok((handle, bound)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err("the metrics thread stopped before it listened".into())
        }
    }
}

fn respond(registry: &Registry, request: tiny_http::Request) {
    use tiny_http::{Header, Method, Response};
    let header = |name: &str, value: &str| {
        Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("constant header is valid")
    };
    let path = request.url().split('?').next().unwrap_or("");
    let head = *request.method() == Method::Head;
    let response = match (request.method(), path) {
        (Method::Get | Method::Head, "/metrics") => {
            let mut body = String::with_capacity(16 * 1024);
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => {
                    Response::from_string(body).with_header(header("Content-Type", CONTENT_TYPE))
                }
                Err(_) => {
                    Response::from_string("cannot encode the metrics\n").with_status_code(500)
                }
            }
        }
        (Method::Get | Method::Head, "/") => Response::from_string(
            "ringlease: metrics are at /metrics (Prometheus / OpenMetrics text)\n",
        )
        .with_header(header("Content-Type", "text/plain; charset=utf-8")),
        (Method::Get | Method::Head, _) => {
            Response::from_string("not found: metrics are at /metrics\n").with_status_code(404)
        }
        _ => Response::from_string("only GET and HEAD\n")
            .with_status_code(405)
            .with_header(header("Allow", "GET, HEAD")),
    };
    let result = if head {
        let length = response.data_length();
        let mut response = response;
        if let Some(length) = length {
            response = response.with_header(header("Content-Length", &length.to_string()));
        }
        request.respond(response.with_data(std::io::empty(), Some(0)))
    } else {
        request.respond(response)
    };
    if let Err(e) = result {
        tracing::debug!("metrics endpoint: cannot answer a scrape: {e}");
    }
}

fn registry(state: Arc<State>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exporter { state }));
    registry
}

/// The whole exposition for `state`, as `GET /metrics` answers it.
pub(crate) fn render(state: Arc<State>) -> String {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry(state))
        .expect("writing into a String cannot fail");
    body
}

/// The exposition of a running server's metrics, as its endpoint would serve it now (for
/// tools and tests that have the server in-process).
pub fn render_metrics(running: &crate::shell::Running, config: &crate::config::Config) -> String {
    render(Arc::new(State::new(
        running.server.clone(),
        running.metrics.clone(),
        running.log().clone(),
        running.backend,
        config.clone(),
        None,
        running.failover(),
    )))
}

/// Encodes the server's metrics on each scrape.
struct Exporter {
    state: Arc<State>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ringlease metrics exporter")
    }
}

type EncodeResult = Result<(), std::fmt::Error>;

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(&[(&str, &str)], u64)],
) -> EncodeResult {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            metric.encode_counter::<NoLabelSet, u64, u64>(value, None)?;
        } else {
            metric
                .encode_family(labels)?
                .encode_counter::<NoLabelSet, u64, u64>(value, None)?;
        }
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: &[(&[(&str, &str)], f64)],
) -> EncodeResult {
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            metric.encode_gauge(value)?;
        } else {
            metric.encode_family(labels)?.encode_gauge(value)?;
        }
    }
    Ok(())
}

/// A Prometheus histogram in seconds from a microsecond hdrhistogram, with buckets at
/// [`LATENCY_BOUNDS_US`].
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &Histogram<u64>,
) -> EncodeResult {
    let counts = bucket_counts(h);
    let buckets: Vec<(f64, u64)> = counts
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let bound = LATENCY_BOUNDS_US
                .get(i)
                .map_or(f64::MAX, |&us| us as f64 / 1e6);
            (bound, count)
        })
        .collect();
    let sum_s = if h.is_empty() {
        0.0
    } else {
        h.mean() * h.len() as f64 / 1e6
    };
    let mut metric =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(sum_s, h.len(), &buckets, None)
}

impl Collector for Exporter {
    fn encode(&self, mut encoder: DescriptorEncoder) -> EncodeResult {
        let state = &self.state;
        let e = &mut encoder;
        gauge(
            e,
            "ringlease_info",
            "The running version and datagram backend (value 1).",
            None,
            &[(
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("backend", state.backend.name()),
                ],
                1.0,
            )],
        )?;
        gauge(
            e,
            "ringlease_uptime",
            "Seconds since the server started.",
            Some(&Unit::Seconds),
            &[(&[], state.metrics.uptime().as_secs_f64())],
        )?;
        gauge(
            e,
            "ringlease_workers",
            "DHCP worker threads.",
            None,
            &[(&[], state.metrics.workers() as f64)],
        )?;

        let workers: Vec<_> = (0..state.metrics.workers())
            .filter_map(|i| state.metrics.worker(i))
            .collect();
        let mut total = crate::metrics::WorkerMetrics::new();
        for w in &workers {
            total.merge(w);
        }

        let names: Vec<String> = (0..workers.len()).map(|i| i.to_string()).collect();
        let labels: Vec<[(&str, &str); 1]> =
            names.iter().map(|n| [("worker", n.as_str())]).collect();
        let samples: Vec<(&[(&str, &str)], u64)> = labels
            .iter()
            .zip(&workers)
            .map(|(l, w)| (&l[..], w.received))
            .collect();
        counter(
            e,
            "ringlease_worker_datagrams_received",
            "Datagrams received, per worker (valid or not).",
            &samples,
        )?;
        counter(
            e,
            "ringlease_datagrams_received",
            "Datagrams received by all workers (valid or not).",
            &[(&[], total.received)],
        )?;

        let by_type = |counts: &[u64; 9], always: &[MessageType]| {
            MessageType::ALL
                .iter()
                .filter(|t| always.contains(t) || counts[**t as usize] > 0)
                .map(|t| ([("type", t.name())], counts[*t as usize]))
                .collect::<Vec<_>>()
        };
        let received = by_type(&total.received_by_type, &RECEIVED_TYPES);
        let samples: Vec<(&[(&str, &str)], u64)> =
            received.iter().map(|(l, v)| (&l[..], *v)).collect();
        counter(
            e,
            "ringlease_dhcp_received",
            "DHCP messages received, by message type.",
            &samples,
        )?;
        let sent = by_type(&total.sent_by_type, &SENT_TYPES);
        let samples: Vec<(&[(&str, &str)], u64)> = sent.iter().map(|(l, v)| (&l[..], *v)).collect();
        counter(
            e,
            "ringlease_dhcp_sent",
            "DHCP messages sent, by message type.",
            &samples,
        )?;
        counter(
            e,
            "ringlease_send_failures",
            "Replies the kernel refused to send.",
            &[(&[], total.send_failures)],
        )?;
        let drops: Vec<([(&str, &str); 1], u64)> = DropReason::ALL
            .iter()
            .map(|r| ([("reason", r.name())], total.drops[r.index()]))
            .collect();
        let samples: Vec<(&[(&str, &str)], u64)> =
            drops.iter().map(|(l, v)| (&l[..], *v)).collect();
        counter(
            e,
            "ringlease_drops",
            "Datagrams that got no reply, by reason.",
            &samples,
        )?;

        let counts = state.lease_counts(COUNTS_MAX_AGE);
        let mut leases = Vec::new();
        for s in counts.iter() {
            let c = s.counts;
            for (name, value) in [
                ("bound", c.bound),
                ("offered", c.offered),
                ("declined", c.declined),
            ] {
                leases.push((
                    [("subnet", s.subnet.as_str()), ("state", name)],
                    value as f64,
                ));
            }
        }
        let samples: Vec<(&[(&str, &str)], f64)> =
            leases.iter().map(|(l, v)| (&l[..], *v)).collect();
        gauge(
            e,
            "ringlease_leases",
            "Addresses by state, per subnet (counted at most 5 s ago).",
            None,
            &samples,
        )?;
        let subnet_labels: Vec<[(&str, &str); 1]> = counts
            .iter()
            .map(|s| [("subnet", s.subnet.as_str())])
            .collect();
        let samples: Vec<(&[(&str, &str)], f64)> = subnet_labels
            .iter()
            .zip(counts.iter())
            .map(|(l, s)| (&l[..], s.counts.pool_size as f64))
            .collect();
        gauge(
            e,
            "ringlease_pool_size",
            "Addresses in the pools of each subnet.",
            None,
            &samples,
        )?;
        let samples: Vec<(&[(&str, &str)], f64)> = subnet_labels
            .iter()
            .zip(counts.iter())
            .map(|(l, s)| {
                let c = s.counts;
                (
                    &l[..],
                    utilisation(c.bound + c.offered + c.declined, c.pool_size),
                )
            })
            .collect();
        let sides: Vec<([(&str, &str); 2], f64)> = counts
            .iter()
            .filter_map(|s| Some((s, s.counts.free_by_side?)))
            .flat_map(|(s, (ours, partner))| {
                [("ours", ours), ("partner", partner)]
                    .map(|(side, n)| ([("subnet", s.subnet.as_str()), ("side", side)], n as f64))
            })
            .collect();
        if !sides.is_empty() {
            let samples: Vec<(&[(&str, &str)], f64)> =
                sides.iter().map(|(l, v)| (&l[..], *v)).collect();
            gauge(
                e,
                "ringlease_failover_free_addresses",
                "Free pool addresses each side of the failover pair may allocate, per subnet.",
                None,
                &samples,
            )?;
        }
        gauge(
            e,
            "ringlease_pool_utilisation_ratio",
            "Share of each subnet's pool addresses bound, offered or declined (0 to 1).",
            None,
            &samples,
        )?;
        gauge(
            e,
            "ringlease_lease_log_disk",
            "Bytes of lease log segments and snapshots on disk.",
            Some(&Unit::Bytes),
            &[(&[], state.log.disk_bytes() as f64)],
        )?;

        histogram(
            e,
            "ringlease_reply_latency",
            "Receive-to-send time of each reply.",
            &total.latency_us,
        )?;
        histogram(
            e,
            "ringlease_lease_log_sync",
            "Duration of each lease log data sync (one per receive batch with binding changes).",
            &total.sync_us,
        )?;
        if let Some(failover) = &state.failover {
            failover_metrics(e, &failover.status.lock())?;
        }
        Ok(())
    }
}

fn failover_metrics(e: &mut DescriptorEncoder, s: &crate::shell::failover::Status) -> EncodeResult {
    let name = [("relationship", s.name.as_str())];
    let one = |v: f64| [(&name[..], v)];
    let state = [("relationship", s.name.as_str()), ("state", s.state)];
    gauge(
        e,
        "ringlease_failover_state",
        "The relationship's endpoint state (value 1, the state in a label).",
        None,
        &[(&state[..], 1.0)],
    )?;
    let up = if s.link == "up" { 1.0 } else { 0.0 };
    gauge(
        e,
        "ringlease_failover_link_up",
        "1 when communications with the partner are up.",
        None,
        &one(up),
    )?;
    gauge(
        e,
        "ringlease_failover_queued_updates",
        "Binding changes waiting to be sent to the partner.",
        None,
        &one(s.queued as f64),
    )?;
    gauge(
        e,
        "ringlease_failover_outstanding_bndupd",
        "BNDUPDs sent and not yet acknowledged.",
        None,
        &one(s.outstanding_bndupd as f64),
    )?;
    let count = |v: u64| [(&name[..], v)];
    counter(
        e,
        "ringlease_failover_bndupd_sent",
        "BNDUPD messages sent.",
        &count(s.bndupd_sent),
    )?;
    counter(
        e,
        "ringlease_failover_updates_sent",
        "Binding updates sent (up to 16 per BNDUPD).",
        &count(s.updates_sent),
    )?;
    counter(
        e,
        "ringlease_failover_bndack_received",
        "BNDACK messages received.",
        &count(s.bndack_received),
    )?;
    counter(
        e,
        "ringlease_failover_bndupd_received",
        "BNDUPD messages received.",
        &count(s.bndupd_received),
    )?;
    counter(
        e,
        "ringlease_failover_updates_applied",
        "Partner binding updates stored.",
        &count(s.updates_applied),
    )?;
    counter(
        e,
        "ringlease_failover_updates_rejected",
        "Partner binding updates rejected.",
        &count(s.updates_rejected),
    )?;
    counter(
        e,
        "ringlease_failover_full_resyncs",
        "Times every binding was queued again after the change queue overflowed.",
        &count(s.full_resyncs),
    )?;
    let lag = &s.replication_lag_ms;
    let quantile = |q: &'static str, v: f64| {
        (
            [("relationship", s.name.as_str()), ("quantile", q)],
            v / 1000.0,
        )
    };
    let samples = [
        quantile("0.5", lag.p50),
        quantile("0.99", lag.p99),
        quantile("1", lag.max),
    ];
    let samples: Vec<(&[(&str, &str)], f64)> = samples.iter().map(|(l, v)| (&l[..], *v)).collect();
    gauge(
        e,
        "ringlease_failover_replication_lag",
        "Time from a lease change being durable here to the partner's BNDACK for it, by quantile.",
        Some(&Unit::Seconds),
        &samples,
    )
}
