//! The control commands: one JSON request line in, one JSON response line out.

use std::net::Ipv4Addr;
use std::sync::Arc;

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{State, LATENCY_BOUNDS_US};
use crate::config::Config;
use crate::metrics::WorkerMetrics;
use crate::proto::lease::{ClientKey, Lease, LeaseState};
use crate::proto::server::Policy;
use crate::proto::subnet::Subnet;
use crate::proto::wire::dhcp::MessageType;
use crate::proto::wire::options::code;
use crate::proto::wire::DropReason;
use crate::shell::clock::unix_now_s;
use crate::shell::journal::LogJournal;

/// How old the lease counts in a status answer may be.
const STATUS_COUNTS_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(900);

#[derive(Deserialize, Debug, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) enum Request {
    Status {},
    Lease {
        ip: Option<Ipv4Addr>,
        hw: Option<String>,
        client_id: Option<String>,
    },
    Release {
        ip: Ipv4Addr,
    },
    PartnerDown {},
    Reload {},
}

/// Answers one request line.
pub(crate) fn handle_line(state: &State, line: &[u8]) -> String {
    let result = match serde_json::from_slice::<Request>(line) {
        Ok(request) => handle(state, request),
        Err(e) => Err(format!("malformed request: {e}")),
    };
    match result {
        Ok(result) => json!({"ok": true, "result": result}).to_string(),
        Err(error) => error_response(&error),
    }
}

pub(crate) fn error_response(error: &str) -> String {
    json!({"ok": false, "error": error}).to_string()
}

pub(crate) fn handle(state: &State, request: Request) -> Result<Value, String> {
    match request {
        Request::Status {} => Ok(status(state)),
        Request::Lease { ip, hw, client_id } => lease(state, ip, hw, client_id),
        Request::Release { ip } => release(state, ip),
        Request::PartnerDown {} => partner_down(state),
        Request::Reload {} => reload(state),
    }
}

fn status(state: &State) -> Value {
    let workers = state.metrics.workers();
    let rates = state.rates.lock().per_s.clone();
    let mut total = WorkerMetrics::new();
    let mut per_worker = Vec::with_capacity(workers);
    for i in 0..workers {
        let Some(m) = state.metrics.worker(i) else {
            continue;
        };
        let rate = rates.get(i).copied().unwrap_or_default();
        let drops: Map<String, Value> = DropReason::ALL
            .iter()
            .filter(|r| m.drops[r.index()] > 0)
            .map(|r| (r.name().to_string(), json!(m.drops[r.index()])))
            .collect();
        per_worker.push(json!({
            "worker": i,
            "received": m.received,
            "sent": m.sent_by_type.iter().sum::<u64>(),
            "dropped": m.drops.iter().sum::<u64>(),
            "send_failures": m.send_failures,
            "rx_per_s": rate[0],
            "tx_per_s": rate[1],
            "drops_per_s": rate[2],
            "drops": drops,
        }));
        total.merge(&m);
    }
    let by_type = |counts: &[u64; 9]| -> Map<String, Value> {
        MessageType::ALL
            .iter()
            .map(|t| (t.name().to_string(), json!(counts[*t as usize])))
            .collect()
    };
    let drops: Map<String, Value> = DropReason::ALL
        .iter()
        .map(|r| (r.name().to_string(), json!(total.drops[r.index()])))
        .collect();
    let subnets: Vec<Value> = state
        .lease_counts(STATUS_COUNTS_MAX_AGE)
        .iter()
        .map(|s| {
            let c = s.counts;
            let used = c.bound + c.offered + c.declined;
            let mut subnet = json!({
                "subnet": s.subnet,
                "pool_size": c.pool_size,
                "bound": c.bound,
                "offered": c.offered,
                "declined": c.declined,
                "free": c.pool_size.saturating_sub(used),
                "utilisation": utilisation(used, c.pool_size),
            });
            // Pool balance with the failover partner: free addresses each side may allocate.
            if let Some((ours, partners)) = c.free_by_side {
                subnet["free_ours"] = json!(ours);
                subnet["free_partner"] = json!(partners);
            }
            subnet
        })
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.metrics.uptime().as_secs_f64(),
        "backend": state.backend.name(),
        "failover": failover_status(state),
        "workers": per_worker,
        "total": {
            "received": total.received,
            "sent": total.sent_by_type.iter().sum::<u64>(),
            "dropped": total.drops.iter().sum::<u64>(),
            "send_failures": total.send_failures,
            "received_by_type": by_type(&total.received_by_type),
            "sent_by_type": by_type(&total.sent_by_type),
            "drops": drops,
            "latency_us": histogram_json(&total.latency_us),
            "lease_log_sync_us": histogram_json(&total.sync_us),
        },
        "subnets": subnets,
        "lease_log": {
            "dir": state.log.dir().display().to_string(),
            "disk_bytes": state.log.disk_bytes(),
        },
    })
}

fn failover_status(state: &State) -> Value {
    match &state.failover {
        None => Value::Null,
        Some(f) => json!([&*f.status.lock()]),
    }
}

fn partner_down(state: &State) -> Result<Value, String> {
    let failover = state
        .failover
        .as_ref()
        .ok_or("no failover relationship is configured")?;
    failover.partner_down()?;
    tracing::warn!("failover: PARTNER-DOWN entered by the operator");
    Ok(failover_status(state))
}

/// Share of the pools in use (bound, offered or declined).
pub(crate) fn utilisation(used: u64, pool_size: u64) -> f64 {
    if pool_size == 0 {
        0.0
    } else {
        used as f64 / pool_size as f64
    }
}

/// Samples per latency bucket (not cumulative): one count per [`LATENCY_BOUNDS_US`] bound, then
/// the samples above the last bound.
pub(crate) fn bucket_counts(h: &Histogram<u64>) -> [u64; LATENCY_BOUNDS_US.len() + 1] {
    let mut counts = [0u64; LATENCY_BOUNDS_US.len() + 1];
    for v in h.iter_recorded() {
        // The highest value the histogram cannot tell apart from this one: a sample counts
        // in a bucket only if all it could have been fits under the bound.
        let value = v.value_iterated_to();
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        counts[bucket] += v.count_at_value();
    }
    counts
}

fn histogram_json(h: &Histogram<u64>) -> Value {
    let counts = bucket_counts(h);
    let buckets: Vec<Value> = counts
        .iter()
        .enumerate()
        .map(|(i, &count)| json!({"le_us": LATENCY_BOUNDS_US.get(i), "count": count}))
        .collect();
    if h.is_empty() {
        return json!({"count": 0, "buckets": buckets});
    }
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": h.mean(),
        "buckets": buckets,
    })
}

/// Hex bytes like `02:00:00:00:00:01`, `02-00-…` or `020000000001`.
pub(crate) fn parse_hex(text: &str, max: usize) -> Option<Vec<u8>> {
    let text = text.trim();
    let bytes: Option<Vec<u8>> = if text.contains([':', '-']) {
        text.split([':', '-'])
            .map(|p| {
                (1..=2)
                    .contains(&p.len())
                    .then(|| u8::from_str_radix(p, 16).ok())
                    .flatten()
            })
            .collect()
    } else {
        let text = text.strip_prefix("0x").unwrap_or(text);
        if text.len() % 2 != 0 || !text.is_ascii() {
            return None;
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
            .collect()
    };
    bytes.filter(|b| !b.is_empty() && b.len() <= max)
}

fn subnet_name(subnet: &Subnet) -> String {
    format!("{}/{}", subnet.network, subnet.prefix_len)
}

fn lease_json(subnet: &Subnet, lease: Option<&Lease>, ip: Ipv4Addr, now_s: u64) -> Value {
    let reserved_for = subnet.reserved_to(ip).map(ToString::to_string);
    let Some(lease) = lease else {
        return json!({
            "ip": ip.to_string(),
            "subnet": subnet_name(subnet),
            "state": "free",
            "expires_s": Value::Null,
            "expires_in_s": Value::Null,
            "client": Value::Null,
            "in_pool": subnet.in_pool(ip),
            "reserved_for": reserved_for,
        });
    };
    let timed = matches!(
        lease.state,
        LeaseState::Offered | LeaseState::Bound | LeaseState::Declined
    );
    // A timed state that ran out and was not swept yet is over all the same.
    let state = if timed && lease.expires_s <= now_s {
        LeaseState::Expired
    } else {
        lease.state
    };
    let expires_in_s = if timed && lease.expires_s > now_s {
        json!(lease.expires_s - now_s)
    } else {
        Value::Null
    };
    json!({
        "ip": ip.to_string(),
        "subnet": subnet_name(subnet),
        "state": state.name(),
        "expires_s": lease.expires_s,
        "expires_in_s": expires_in_s,
        "client": lease.client.as_ref().map(ToString::to_string),
        "in_pool": subnet.in_pool(ip),
        "reserved_for": reserved_for,
    })
}

fn lease(
    state: &State,
    ip: Option<Ipv4Addr>,
    hw: Option<String>,
    client_id: Option<String>,
) -> Result<Value, String> {
    let server = &state.server;
    let settings = Arc::clone(&server.settings());
    let now_s = unix_now_s();
    let keys: Vec<ClientKey> = match (ip, hw, client_id) {
        (Some(ip), None, None) => {
            let subnet = settings
                .subnets
                .containing(ip)
                .ok_or_else(|| format!("{ip} is not in any configured subnet"))?;
            let lease = server.leases.get(subnet, ip);
            return Ok(json!({"leases": [lease_json(subnet, lease.as_ref(), ip, now_s)]}));
        }
        (None, Some(hw), None) => {
            let mac = parse_hex(&hw, 16).ok_or_else(|| {
                format!("hw '{hw}' is not a hardware address like 02:00:00:00:00:01")
            })?;
            // Many clients identify themselves by client identifier 01 + MAC (RFC 2132
            // §9.14): find those too.
            let mut id = vec![1u8];
            id.extend_from_slice(&mac);
            vec![
                ClientKey::from_hardware(1, &mac),
                ClientKey::from_client_id(&id),
            ]
        }
        (None, None, Some(id)) => {
            let bytes = parse_hex(&id, 255).ok_or_else(|| {
                format!("client_id '{id}' is not 1..=255 hex bytes like 01:02:00:00:00:00:01")
            })?;
            vec![ClientKey::from_client_id(&bytes)]
        }
        _ => return Err("give exactly one of ip, hw, client_id".into()),
    };
    let mut leases = Vec::new();
    for subnet in settings.subnets.all() {
        for key in &keys {
            if let Some(lease) = server.leases.binding_of(subnet, key.as_bytes(), now_s) {
                leases.push(lease_json(subnet, Some(&lease), lease.ip, now_s));
            }
        }
    }
    Ok(json!({ "leases": leases }))
}

/// The control thread's own lease log writer, opened on the first release (each writer
/// preallocates a segment).
fn with_journal<T>(
    state: &State,
    f: impl FnOnce(&mut LogJournal) -> Result<T, String>,
) -> Result<T, String> {
    let mut slot = state.journal.lock();
    if slot.is_none() {
        let writer = state
            .log
            .writer()
            .map_err(|e| format!("cannot open a lease log segment: {e}"))?;
        let feed = state.failover.as_ref().map(|f| f.feed());
        *slot = Some(LogJournal::new(writer, feed));
    }
    let journal = slot.as_mut().expect("just opened");
    f(journal)
}

fn release(state: &State, ip: Ipv4Addr) -> Result<Value, String> {
    let server = &state.server;
    let settings = Arc::clone(&server.settings());
    let subnet = settings
        .subnets
        .containing(ip)
        .ok_or_else(|| format!("{ip} is not in any configured subnet"))?;
    let now_s = unix_now_s();
    let client = server.leases.get(subnet, ip).and_then(|l| l.client);
    with_journal(state, |journal| {
        match server.leases.release_ip(subnet, ip, now_s, journal) {
            Ok(true) => {}
            Ok(false) => return Err(format!("{ip} has no running lease or offer")),
            Err(_) => {
                return Err(format!(
                    "the lease log cannot record the release of {ip} (see the server log); \
                     nothing was changed"
                ))
            }
        }
        journal.sync_now().map_err(|e| {
            format!("{ip} was released, but the lease log sync failed ({e}): the release may not survive a crash")
        })?;
        Ok(())
    })?;
    tracing::info!(%ip, client = ?client.as_ref().map(ToString::to_string), "released by the operator");
    Ok(json!({
        "released": ip.to_string(),
        "client": client.as_ref().map(ToString::to_string),
    }))
}

/// Re-reads the configuration file and applies what can change live (subnet options and lease
/// times, the offer and decline holds); all or nothing: if anything else differs, nothing is
/// applied and the answer names what needs a restart.
fn reload(state: &State) -> Result<Value, String> {
    let path = state.config_path.as_ref().ok_or(
        "the server was started without a configuration file: there is nothing to re-read",
    )?;
    let new = Config::from_file(path).map_err(|e| {
        format!(
            "{}: {e}; the running configuration is unchanged",
            path.display()
        )
    })?;
    // One reload at a time: the comparison and the swap see the same running configuration.
    let mut running = state.config.lock();
    let differences = config_differences(&running, &new);
    let refuse =
        |keys: &[String]| format!("{}: restart needed; nothing was changed", keys.join(", "));
    if !differences.restart.is_empty() {
        return Err(refuse(&differences.restart));
    }
    if differences.live.is_empty() {
        return Ok(json!({"changed": false, "message": "no changes"}));
    }
    let policy = Policy {
        server_id: new.server.server_id,
        offer_hold_s: new.server.offer_hold_s,
        decline_hold_s: new.server.decline_hold_s,
    };
    // The server checks the structural settings again (they are in `restart` above, so this
    // refusal is only a safety net).
    state
        .server
        .reload(policy, new.subnets.clone())
        .map_err(|keys| refuse(&keys))?;
    *running = new;
    let applied = differences.live.join(", ");
    tracing::info!(path = %path.display(), %applied, "configuration reloaded");
    Ok(json!({
        "changed": true,
        "applied": differences.live,
        "message": format!("applied: {applied}"),
    }))
}

/// What differs between two configurations, named like the configuration file's keys
/// (`server.listen`, `subnet[0].pools`, `subnet[0].dns`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDifferences {
    /// What a running server cannot take without a restart: the listen sockets, workers, lease
    /// log, control and metrics endpoints, and whatever the lease table was built from (the
    /// subnets, their order, prefixes, pools and reservations).
    pub restart: Vec<String>,
    /// What `reload` applies live: subnet options and lease times, the offer and decline holds.
    pub live: Vec<String>,
}

impl ConfigDifferences {
    pub fn is_empty(&self) -> bool {
        self.restart.is_empty() && self.live.is_empty()
    }
}

/// The configuration key of an option a subnet sets by name; others (and the subnet mask, which
/// follows the prefix unless set in `options`) are `options`.
fn option_key(code: u8) -> &'static str {
    match code {
        code::ROUTERS => "routers",
        code::DNS_SERVERS => "dns",
        code::DOMAIN_NAME => "domain_name",
        code::BROADCAST_ADDRESS => "broadcast",
        code::NTP_SERVERS => "ntp",
        _ => "options",
    }
}

/// The keys whose options differ between two subnets' option lists.
fn option_differences(a: &Subnet, b: &Subnet) -> Vec<&'static str> {
    let value = |s: &Subnet, c: u8| s.options.iter().find(|(code, _)| *code == c).cloned();
    let mut keys: Vec<&'static str> = Vec::new();
    for (c, _) in a.options.iter().chain(&b.options) {
        let key = option_key(*c);
        if value(a, *c) != value(b, *c) && !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() && a.options != b.options {
        keys.push("options"); // the same options in another order
    }
    keys
}

/// What differs between the running configuration and a new one, and whether a running server
/// can take it (see [`ConfigDifferences`]); empty when they are the same.
pub fn config_differences(old: &Config, new: &Config) -> ConfigDifferences {
    fn note(out: &mut Vec<String>, changed: bool, key: &str) {
        if changed {
            out.push(key.to_string());
        }
    }
    let mut restart = Vec::new();
    let mut live = Vec::new();
    let (a, b) = (&old.server, &new.server);
    let o = &mut restart;
    note(o, a.listen != b.listen, "server.listen");
    note(o, a.server_id != b.server_id, "server.server_id");
    note(o, a.worker_cores != b.worker_cores, "server.workers/cores");
    note(
        o,
        a.tuning_profile != b.tuning_profile,
        "server.tuning_profile",
    );
    note(o, a.backend != b.backend, "server.backend");
    note(o, a.lease_dir != b.lease_dir, "server.lease_dir");
    note(o, a.durability != b.durability, "server.durability");
    note(
        o,
        a.log_segment_bytes != b.log_segment_bytes,
        "server.log_segment_bytes",
    );
    note(
        o,
        a.log_compact_bytes != b.log_compact_bytes,
        "server.log_compact_bytes",
    );
    note(
        o,
        a.recv_buffer_bytes != b.recv_buffer_bytes,
        "server.recv_buffer_bytes",
    );
    note(
        o,
        a.send_buffer_bytes != b.send_buffer_bytes,
        "server.send_buffer_bytes",
    );
    let l = &mut live;
    note(l, a.offer_hold_s != b.offer_hold_s, "server.offer_hold");
    note(
        l,
        a.decline_hold_s != b.decline_hold_s,
        "server.decline_hold",
    );
    let without_live = |s: &crate::config::ServerConfig| crate::config::ServerConfig {
        offer_hold_s: 0,
        decline_hold_s: 0,
        ..s.clone()
    };
    if restart.is_empty() && without_live(a) != without_live(b) {
        restart.push("server (a setting this version cannot name)".into());
    }

    let (olds, news) = (old.subnets.all(), new.subnets.all());
    if olds.len() != news.len() {
        restart.push(format!("subnet count ({} → {})", olds.len(), news.len()));
    }
    for (i, (a, b)) in olds.iter().zip(news).enumerate() {
        let key = |field: &str| format!("subnet[{i}].{field}");
        let o = &mut restart;
        let before = o.len();
        note(
            o,
            (a.id, a.network, a.prefix_len) != (b.id, b.network, b.prefix_len),
            &key("prefix"),
        );
        note(o, a.pools != b.pools, &key("pools"));
        note(o, a.reservations != b.reservations, &key("reservation"));
        let l = &mut live;
        let live_before = l.len();
        note(l, a.lease_time_s != b.lease_time_s, &key("lease_time"));
        note(
            l,
            a.min_lease_time_s != b.min_lease_time_s,
            &key("min_lease_time"),
        );
        note(
            l,
            a.max_lease_time_s != b.max_lease_time_s,
            &key("max_lease_time"),
        );
        note(l, a.t1_s != b.t1_s, &key("renewal_time"));
        note(l, a.t2_s != b.t2_s, &key("rebinding_time"));
        // (A new prefix also changes the subnet mask and default broadcast options; the
        // prefix is named above, and refuses the reload.)
        l.extend(option_differences(a, b).into_iter().map(key));
        if restart.len() == before && live.len() == live_before && a != b {
            restart.push(format!("subnet[{i}] (a setting this version cannot name)"));
        }
    }

    let (a, b) = (&old.operations, &new.operations);
    let o = &mut restart;
    note(o, a.control_socket != b.control_socket, "control.socket");
    note(o, a.metrics_listen != b.metrics_listen, "metrics.listen");
    if restart.is_empty() && live.is_empty() && old != new {
        restart.push("a setting this version cannot name".into());
    }
    ConfigDifferences { restart, live }
}
