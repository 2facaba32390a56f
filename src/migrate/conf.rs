//! `dhcpd.conf` into `ringlease.toml`.
//!
//! ISC scopes nest (global → shared-network → group → subnet → pool, hosts anywhere); ringlease
//! has flat subnets, so each subnet gets the parameters of every scope around it, the inner
//! ones winning. Parameters apply to their whole scope whatever their place in it, as in dhcpd.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::lex::{self, Item, Tok, Token};
use super::options::{self, IscType};
use super::{Report, Source};
use crate::proto::subnet::prefix_mask;
use crate::proto::wire::options::code;

/// What the command line adds to the conversion.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// Overrides the server identifier found in dhcpd.conf.
    pub server_id: Option<Ipv4Addr>,
    /// Overrides the listen addresses (default `0.0.0.0:67`, or local-address/local-port).
    pub listen: Vec<SocketAddrV4>,
    /// `server.lease_dir` of the output.
    pub lease_dir: String,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            server_id: None,
            listen: Vec::new(),
            lease_dir: "/var/lib/ringlease".into(),
        }
    }
}

/// dhcpd's lease times when dhcpd.conf gives none (dhcpd.conf(5)).
const ISC_DEFAULT_LEASE_TIME: u32 = 43_200;
const ISC_DEFAULT_MAX_LEASE_TIME: u32 = 86_400;
/// dhcpd's failover port when the peer block gives none.
const ISC_FAILOVER_PORT: u16 = 647;

/// [`convert_conf_with`] with default options.
pub fn convert_conf(text: &str) -> Result<(String, Report), String> {
    convert_conf_with(text, &ConvertOptions::default())
}

/// Converts dhcpd.conf text into ringlease TOML (which `Config::from_toml` accepts) and the
/// report. `Err` when the text cannot be parsed, no subnet could be converted, or the server
/// identifier is unknown.
pub fn convert_conf_with(text: &str, opts: &ConvertOptions) -> Result<(String, Report), String> {
    let tokens = lex::lex(text).map_err(|e| format!("dhcpd.conf: {e}"))?;
    let items = lex::parse(&tokens).map_err(|e| format!("dhcpd.conf: {e}"))?;
    let mut cx = Cx::default();
    let global = cx.params(&items, Kind::Global, &Params::default());
    cx.global = global.clone();
    cx.declarations(&items, &Ctx::top(), &global);
    let toml = cx.finish(opts)?;
    crate::config::Config::from_toml(&toml).map_err(|e| {
        format!("the converted configuration is invalid ({e}); this is a bug\n{toml}")
    })?;
    Ok((toml, cx.report))
}

#[derive(Clone, Debug)]
struct OptVal {
    name: String,
    bytes: Vec<u8>,
    line: usize,
}

/// The parameters in force in a scope.
#[derive(Clone, Debug, Default)]
struct Params {
    options: BTreeMap<u8, OptVal>,
    default_lease: Option<(u32, usize)>,
    min_lease: Option<(u32, usize)>,
    max_lease: Option<(u32, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Global,
    SharedNetwork,
    Group,
    Subnet,
    Pool,
    Host,
}

/// Where a declaration is.
#[derive(Clone, Debug)]
struct Ctx {
    kind: Kind,
    shared: Option<String>,
    subnet: Option<usize>,
}

impl Ctx {
    fn top() -> Ctx {
        Ctx {
            kind: Kind::Global,
            shared: None,
            subnet: None,
        }
    }
}

#[derive(Debug)]
struct SubnetOut {
    line: usize,
    network: Ipv4Addr,
    prefix_len: u8,
    shared: Option<String>,
    params: Params,
    /// (first, last, line)
    pools: Vec<(Ipv4Addr, Ipv4Addr, usize)>,
    /// (comment, hw or client_id key, value, ip)
    reservations: Vec<(String, &'static str, String, Ipv4Addr)>,
    failover_peers: Vec<String>,
}

#[derive(Debug)]
struct HostOut {
    name: String,
    line: usize,
    hw: Option<Vec<u8>>,
    client_id: Option<Vec<u8>>,
    addrs: Vec<Ipv4Addr>,
}

#[derive(Debug, Default)]
struct Failover {
    name: String,
    line: usize,
    role: Option<String>,
    address: Option<String>,
    port: Option<u16>,
    peer_address: Option<String>,
    peer_port: Option<u16>,
    mclt: Option<u32>,
    split: Option<u32>,
    max_unacked: Option<u32>,
    /// ISC settings with no ringlease key (yet), as written.
    other: Vec<String>,
}

#[derive(Default)]
struct Cx {
    report: Report,
    global: Params,
    /// `option NAME code N = TYPE;` definitions.
    defs: HashMap<String, (u8, IscType)>,
    subnets: Vec<SubnetOut>,
    /// Ranges of pools outside any subnet (in a shared network): placed at the end.
    loose_ranges: Vec<(Ipv4Addr, Ipv4Addr, usize)>,
    hosts: Vec<HostOut>,
    failovers: Vec<Failover>,
    local_address: Option<Ipv4Addr>,
    local_port: Option<u16>,
    /// Where each shared-network was declared.
    shared_lines: HashMap<String, usize>,
}

fn word(t: Option<&Token>) -> Option<&str> {
    t.and_then(Token::word)
}

fn string_or_word(t: Option<&Token>) -> Option<String> {
    t.map(|t| match &t.tok {
        Tok::Word(w) => w.clone(),
        Tok::Str(b) => String::from_utf8_lossy(b).into_owned(),
        Tok::Punct(c) => c.to_string(),
    })
}

fn number<T: std::str::FromStr>(t: Option<&Token>) -> Option<T> {
    word(t).and_then(|w| w.parse().ok())
}

/// The prefix length of a contiguous netmask.
fn mask_len(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones() as u8;
    (prefix_mask(len) == m).then_some(len)
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(|i| toml_str(&i.to_string())).collect();
    format!("[{}]", items.join(", "))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Why a dhcpd statement has no ringlease equivalent.
fn reason(keyword: &str, item: &Item) -> String {
    let head = item.head();
    let second = word(head.get(1)).unwrap_or("").to_ascii_lowercase();
    match keyword {
        "allow" | "deny" | "ignore" => match second.as_str() {
            "unknown-clients" | "known-clients" | "members" | "known" | "unknown" => {
                "client access control is not converted: ringlease serves every client of a subnet".into()
            }
            "bootp" | "dynamic" => "BOOTP control is not converted (ringlease serves DHCP clients)".into(),
            "booting" => "ringlease cannot refuse a client: this host would be served".into(),
            "client-updates" | "duplicates" | "declines" | "leasequery" => {
                format!("`{keyword} {second}` has no ringlease setting")
            }
            _ => format!("`{keyword} {second}` has no ringlease equivalent"),
        },
        "next-server" | "filename" | "server-name" => {
            "BOOTP header fields (siaddr, file, sname) are not configurable in ringlease; \
             for PXE use options tftp-server-name (66) and boot-file-name (67)"
                .into()
        }
        k if k.starts_with("ddns") || k == "update-static-leases" || k == "do-forward-updates" => {
            "ringlease does not do dynamic DNS updates".into()
        }
        "ping-check" | "ping-timeout" | "ping-cltt-secs" => {
            "ringlease does not ping an address before offering it".into()
        }
        "one-lease-per-client" => "ringlease keeps one address per client and subnet anyway".into(),
        "use-host-decl-names" | "get-lease-hostnames" => {
            "ringlease sends no host-name it was not configured with".into()
        }
        "not" => "`not authoritative` is not converted: ringlease NAKs requests for addresses it does not lease".into(),
        _ => format!("`{keyword}` has no ringlease equivalent"),
    }
}

impl Cx {
    fn nc(&mut self, line: usize, msg: impl Into<String>) {
        self.report.not_converted(Source::Conf, Some(line), msg);
    }

    fn note(&mut self, line: usize, msg: impl Into<String>) {
        self.report.note(Source::Conf, Some(line), msg);
    }

    /// Pass 1 over a scope's body: its parameters on top of the inherited ones.
    fn params(&mut self, body: &[Item], kind: Kind, inherited: &Params) -> Params {
        let mut params = inherited.clone();
        for item in body {
            let Item::Stmt { line, words } = item else {
                continue;
            };
            let line = *line;
            let kw = item.keyword();
            let is_param = matches!(
                kw.as_str(),
                "option"
                    | "default-lease-time"
                    | "min-lease-time"
                    | "max-lease-time"
                    | "server-identifier"
            );
            if !is_param {
                continue;
            }
            // Definitions and option spaces are global things, handled wherever they are.
            if kw == "option" {
                let name = word(words.get(1)).unwrap_or("").to_string();
                if name == "space" {
                    self.nc(line, "option spaces are not converted");
                    continue;
                }
                if word(words.get(2)) == Some("code") {
                    self.definition(line, &name, words);
                    continue;
                }
            }
            match kind {
                Kind::Pool => {
                    self.nc(
                        line,
                        format!(
                            "pool-scope `{}` not converted: ringlease options and lease times are per subnet",
                            lex::show(words)
                        ),
                    );
                    continue;
                }
                Kind::Host => continue, // the host handler reports these
                _ => {}
            }
            match kw.as_str() {
                "option" => self.option(line, words, &mut params),
                "server-identifier" => {
                    match word(words.get(1)).and_then(|w| w.parse::<Ipv4Addr>().ok()) {
                        Some(ip) => {
                            let v = OptVal {
                                name: "dhcp-server-identifier".into(),
                                bytes: ip.octets().to_vec(),
                                line,
                            };
                            params.options.insert(code::SERVER_ID, v);
                        }
                        None => self.nc(line, "server-identifier is not an IPv4 address"),
                    }
                }
                _ => match number::<u32>(words.get(1)) {
                    Some(v) => {
                        let slot = match kw.as_str() {
                            "default-lease-time" => &mut params.default_lease,
                            "min-lease-time" => &mut params.min_lease,
                            _ => &mut params.max_lease,
                        };
                        *slot = Some((v, line));
                    }
                    None => self.nc(line, format!("`{kw}` is not a number of seconds")),
                },
            }
        }
        params
    }

    fn definition(&mut self, line: usize, name: &str, words: &[Token]) {
        let code: Option<u8> = number(words.get(3));
        let eq = words.iter().position(|t| t.is_punct('='));
        match (code, eq) {
            (_, _) if name.contains('.') => self.nc(
                line,
                format!("option {name}: options in option spaces are not converted"),
            ),
            (Some(code), Some(eq)) => match options::parse_type(&words[eq + 1..]) {
                Ok(ty) => {
                    self.defs.insert(name.to_string(), (code, ty));
                }
                Err(e) => self.nc(line, format!("option definition {name} (code {code}): {e}")),
            },
            _ => self.nc(line, format!("cannot read the definition of option {name}")),
        }
    }

    fn option(&mut self, line: usize, words: &[Token], params: &mut Params) {
        let name = word(words.get(1)).unwrap_or("").to_string();
        if name.contains('.') {
            self.nc(
                line,
                format!("option {name}: options in option spaces are not converted"),
            );
            return;
        }
        let Some((code, ty)) = self
            .defs
            .get(&name)
            .copied()
            .or_else(|| options::isc_option(&name))
        else {
            self.nc(
                line,
                format!("option {name} is unknown to the converter (give its code: `option {name} code N = TYPE;`)"),
            );
            return;
        };
        match options::encode(ty, &words[2..]) {
            Ok(bytes) => {
                params.options.insert(code, OptVal { name, bytes, line });
            }
            Err(e) => self.nc(line, format!("option {name}: {e}")),
        }
    }

    /// Pass 2 over a scope's body: everything but parameters.
    fn declarations(&mut self, body: &[Item], ctx: &Ctx, params: &Params) {
        for item in body {
            let line = item.line();
            let kw = item.keyword();
            match item {
                Item::Stmt { words, .. } => self.statement(line, &kw, words, item, ctx),
                Item::Block { head, body, .. } => self.block(line, &kw, head, body, ctx, params),
            }
        }
    }

    fn statement(&mut self, line: usize, kw: &str, words: &[Token], item: &Item, ctx: &Ctx) {
        match kw {
            "option" | "default-lease-time" | "min-lease-time" | "max-lease-time"
            | "server-identifier" => {} // pass 1
            "authoritative" => {}
            "ddns-update-style" if word(words.get(1)) == Some("none") => {}
            "range" => self.range(line, words, ctx),
            "failover" if ctx.kind == Kind::Pool => {
                let peer = string_or_word(words.get(2)).unwrap_or_default();
                if let Some(s) = ctx.subnet.and_then(|i| self.subnets.get_mut(i)) {
                    if !s.failover_peers.contains(&peer) {
                        s.failover_peers.push(peer.clone());
                    }
                }
                self.note(
                    line,
                    format!("pool served with failover peer \"{peer}\": see the [failover] section"),
                );
            }
            "local-address" => match word(words.get(1)).and_then(|w| w.parse().ok()) {
                Some(ip) => self.local_address = Some(ip),
                None => self.nc(line, "local-address is not an IPv4 address"),
            },
            "local-port" => match number(words.get(1)) {
                Some(p) => self.local_port = Some(p),
                None => self.nc(line, "local-port is not a port number"),
            },
            "include" => self.nc(
                line,
                format!(
                    "include {} was not followed: convert that file too, or paste it in",
                    lex::show(&words[1..])
                ),
            ),
            "subclass" => self.nc(
                line,
                "subclass not converted: ringlease has no client classes",
            ),
            "log-facility" | "lease-file-name" | "pid-file-name" | "db-time-format"
            | "omapi-port" | "omapi-key" => self.note(
                line,
                format!("`{}` ignored: ringlease logs to stderr, keeps its lease log in server.lease_dir and is controlled with `ringlease ctl`", lex::show(words)),
            ),
            _ => {
                let why = reason(kw, item);
                self.nc(line, format!("`{}` not converted: {why}", lex::show(words)));
            }
        }
    }

    fn block(
        &mut self,
        line: usize,
        kw: &str,
        head: &[Token],
        body: &[Item],
        ctx: &Ctx,
        params: &Params,
    ) {
        match kw {
            "subnet" => self.subnet(line, head, body, ctx, params),
            "shared-network" => {
                let name = string_or_word(head.get(1)).unwrap_or_default();
                self.shared_lines.entry(name.clone()).or_insert(line);
                let inner = self.params(body, Kind::SharedNetwork, params);
                let ctx = Ctx {
                    kind: Kind::SharedNetwork,
                    shared: Some(name),
                    subnet: None,
                };
                self.declarations(body, &ctx, &inner);
            }
            "group" => {
                let inner = self.params(body, Kind::Group, params);
                let ctx = Ctx {
                    kind: Kind::Group,
                    ..ctx.clone()
                };
                self.declarations(body, &ctx, &inner);
            }
            "pool" => {
                if ctx.kind == Kind::Global || ctx.kind == Kind::Host {
                    self.nc(line, "pool outside a subnet or shared-network ignored");
                    return;
                }
                let inner = self.params(body, Kind::Pool, params);
                let ctx = Ctx {
                    kind: Kind::Pool,
                    ..ctx.clone()
                };
                self.declarations(body, &ctx, &inner);
            }
            "host" => self.host(line, head, body),
            "failover" => self.failover(line, head, body),
            "class" => self.nc(
                line,
                format!(
                    "class {} not converted: ringlease has no client classes (check the allow/deny rules that use it)",
                    string_or_word(head.get(1)).unwrap_or_default()
                ),
            ),
            "subclass" => self.nc(line, "subclass not converted: ringlease has no client classes"),
            "if" | "elsif" | "else" => self.nc(
                line,
                format!(
                    "conditional `{}` block not converted: ringlease has no conditional configuration",
                    lex::show(head)
                ),
            ),
            "on" => self.nc(
                line,
                format!("`{}` event statements not converted", lex::show(head)),
            ),
            "subnet6" | "shared-network6" => self.nc(line, "DHCPv6 is not served by ringlease"),
            "key" | "zone" => self.nc(line, format!("`{kw}` not converted: ringlease does not do dynamic DNS updates")),
            _ => self.nc(line, format!("`{} {{ … }}` not converted", lex::show(head))),
        }
    }

    fn subnet(&mut self, line: usize, head: &[Token], body: &[Item], ctx: &Ctx, params: &Params) {
        let network: Option<Ipv4Addr> = word(head.get(1)).and_then(|w| w.parse().ok());
        let mask: Option<Ipv4Addr> = (word(head.get(2)) == Some("netmask"))
            .then(|| word(head.get(3)).and_then(|w| w.parse().ok()))
            .flatten();
        let (Some(network), Some(mask)) = (network, mask) else {
            self.nc(line, format!("cannot read `{}`", lex::show(head)));
            return;
        };
        let Some(prefix_len) = mask_len(mask) else {
            self.nc(
                line,
                format!("subnet {network}: netmask {mask} is not contiguous"),
            );
            return;
        };
        let masked = Ipv4Addr::from(u32::from(network) & prefix_mask(prefix_len));
        if masked != network {
            self.note(
                line,
                format!("subnet {network} has host bits set: using {masked}/{prefix_len}"),
            );
        }
        if let Some(other) = self
            .subnets
            .iter()
            .find(|s| s.network == masked && s.prefix_len == prefix_len)
        {
            let first = other.line;
            self.nc(
                line,
                format!(
                    "subnet {masked}/{prefix_len} declared again (first at line {first}): ignored"
                ),
            );
            return;
        }
        let inner = self.params(body, Kind::Subnet, params);
        self.subnets.push(SubnetOut {
            line,
            network: masked,
            prefix_len,
            shared: ctx.shared.clone(),
            params: inner.clone(),
            pools: Vec::new(),
            reservations: Vec::new(),
            failover_peers: Vec::new(),
        });
        let ctx = Ctx {
            kind: Kind::Subnet,
            shared: ctx.shared.clone(),
            subnet: Some(self.subnets.len() - 1),
        };
        self.declarations(body, &ctx, &inner);
    }

    fn range(&mut self, line: usize, words: &[Token], ctx: &Ctx) {
        let mut rest = &words[1..];
        if word(rest.first()) == Some("dynamic-bootp") {
            self.note(
                line,
                "range dynamic-bootp: converted as a DHCP pool (ringlease does not serve BOOTP clients)",
            );
            rest = &rest[1..];
        }
        let ips: Vec<Option<Ipv4Addr>> = rest
            .iter()
            .map(|t| t.word().and_then(|w| w.parse().ok()))
            .collect();
        let (first, last) = match ips.as_slice() {
            [Some(a)] => (*a, *a),
            [Some(a), Some(b)] => (*a, *b),
            _ => {
                self.nc(line, format!("cannot read `{}`", lex::show(words)));
                return;
            }
        };
        let (first, last) = if first <= last {
            (first, last)
        } else {
            (last, first)
        };
        match ctx.subnet {
            Some(i) => self.subnets[i].pools.push((first, last, line)),
            None if ctx.kind == Kind::Pool => self.loose_ranges.push((first, last, line)),
            None => self.nc(line, "range outside a subnet or pool ignored"),
        }
    }

    fn host(&mut self, line: usize, head: &[Token], body: &[Item]) {
        let name = string_or_word(head.get(1)).unwrap_or_default();
        let mut host = HostOut {
            name: name.clone(),
            line,
            hw: None,
            client_id: None,
            addrs: Vec::new(),
        };
        // A fixed-address was given (maybe only as host names, reported as such).
        let mut named = false;
        for item in body {
            let l = item.line();
            let Item::Stmt { words, .. } = item else {
                self.nc(
                    l,
                    format!(
                        "host {name}: `{} {{ … }}` not converted",
                        lex::show(item.head())
                    ),
                );
                continue;
            };
            let kw = item.keyword();
            match kw.as_str() {
                "hardware" => {
                    let ty = word(words.get(1)).unwrap_or("");
                    let mac = word(words.get(2)).and_then(options::parse_colon_hex);
                    match (ty, mac) {
                        ("ethernet", Some(mac)) if !mac.is_empty() && mac.len() <= 16 => {
                            host.hw = Some(mac)
                        }
                        ("ethernet", _) => self.nc(l, format!("host {name}: bad hardware address")),
                        _ => self.nc(
                            l,
                            format!("host {name}: hardware type {ty} not converted (reservations by hardware are Ethernet)"),
                        ),
                    }
                }
                "fixed-address" => {
                    named = true;
                    for t in words[1..].iter().filter(|t| !t.is_punct(',')) {
                        match t.word().and_then(|w| w.parse::<Ipv4Addr>().ok()) {
                            Some(ip) => host.addrs.push(ip),
                            None => self.nc(
                                l,
                                format!(
                                    "host {name}: fixed-address {} is a host name, not an address: not convertible (put its address instead)",
                                    string_or_word(Some(t)).unwrap_or_default()
                                ),
                            ),
                        }
                    }
                }
                "option" | "host-identifier"
                    if words
                        .iter()
                        .any(|t| t.word() == Some("dhcp-client-identifier")) =>
                {
                    let at = words
                        .iter()
                        .position(|t| t.word() == Some("dhcp-client-identifier"))
                        .unwrap_or(0);
                    match options::encode(IscType::Str, &words[at + 1..]) {
                        Ok(id) if !id.is_empty() && id.len() <= 255 => host.client_id = Some(id),
                        Ok(_) => self.nc(l, format!("host {name}: empty client identifier")),
                        Err(e) => self.nc(l, format!("host {name}: client identifier: {e}")),
                    }
                }
                _ => self.nc(
                    l,
                    format!(
                        "host {name}: `{}` not converted (ringlease reservations carry an address only)",
                        lex::show(words)
                    ),
                ),
            }
        }
        if host.addrs.is_empty() && !named {
            self.nc(
                line,
                format!("host {name} has no fixed-address: not converted (it only named a client for parameters or classes)"),
            );
            return;
        }
        if !host.addrs.is_empty() {
            self.hosts.push(host);
        }
    }

    fn failover(&mut self, line: usize, head: &[Token], body: &[Item]) {
        if word(head.get(1)) != Some("peer") {
            self.nc(line, format!("`{}` not converted", lex::show(head)));
            return;
        }
        let mut f = Failover {
            name: string_or_word(head.get(2)).unwrap_or_default(),
            line,
            ..Failover::default()
        };
        for item in body {
            let words = item.head();
            let w: Vec<String> = words
                .iter()
                .map(|t| {
                    string_or_word(Some(t))
                        .unwrap_or_default()
                        .to_ascii_lowercase()
                })
                .collect();
            let w: Vec<&str> = w.iter().map(String::as_str).collect();
            match w.as_slice() {
                ["primary"] | ["secondary"] => f.role = Some(w[0].to_string()),
                ["address", a] => f.address = Some(a.to_string()),
                ["port", p] => f.port = p.parse().ok(),
                ["peer", "address", a] => f.peer_address = Some(a.to_string()),
                ["peer", "port", p] => f.peer_port = p.parse().ok(),
                ["mclt", n] => f.mclt = n.parse().ok(),
                ["split", n] => f.split = n.parse().ok(),
                ["hba", bits] => match options::parse_colon_hex(bits) {
                    Some(bytes) => {
                        f.split = Some(bytes.iter().map(|b| b.count_ones()).sum());
                        self.note(item.line(), "failover hba converted to a split by its number of bits (which hash buckets are the primary's may differ)");
                    }
                    None => f.other.push(lex::show(words)),
                },
                ["max-unacked-updates", n] => f.max_unacked = n.parse().ok(),
                _ => f.other.push(lex::show(words)),
            }
        }
        self.report.note(
            Source::Conf,
            Some(line),
            format!(
                "failover peer {} converted to a commented [failover] section: enable it when failover is available",
                f.name
            ),
        );
        self.failovers.push(f);
    }

    /// Places loose ranges and hosts, picks the server identifier and writes the TOML.
    fn finish(&mut self, opts: &ConvertOptions) -> Result<String, String> {
        if self.subnets.is_empty() {
            return Err("dhcpd.conf has no subnet that could be converted".into());
        }
        let containing = |subnets: &[SubnetOut], ip: Ipv4Addr| -> Option<usize> {
            subnets
                .iter()
                .enumerate()
                .filter(|(_, s)| u32::from(ip) & prefix_mask(s.prefix_len) == u32::from(s.network))
                .max_by_key(|(_, s)| s.prefix_len)
                .map(|(i, _)| i)
        };
        for (first, last, line) in std::mem::take(&mut self.loose_ranges) {
            match containing(&self.subnets, first) {
                Some(i) => self.subnets[i].pools.push((first, last, line)),
                None => self.nc(
                    line,
                    format!("range {first} {last} is in no subnet: ignored"),
                ),
            }
        }
        // Pools: inside their subnet, overlaps merged.
        let mut report = std::mem::take(&mut self.report);
        for s in &mut self.subnets {
            let inside =
                |ip: Ipv4Addr| u32::from(ip) & prefix_mask(s.prefix_len) == u32::from(s.network);
            let mut pools: Vec<(Ipv4Addr, Ipv4Addr, usize)> = Vec::new();
            for &(a, b, line) in &s.pools {
                if !inside(a) || !inside(b) {
                    report.not_converted(
                        Source::Conf,
                        Some(line),
                        format!(
                            "range {a} {b} is not inside subnet {}/{}: ignored",
                            s.network, s.prefix_len
                        ),
                    );
                    continue;
                }
                pools.push((a, b, line));
            }
            pools.sort();
            let mut merged: Vec<(Ipv4Addr, Ipv4Addr, usize)> = Vec::new();
            for (a, b, line) in pools {
                match merged.last_mut() {
                    Some(last) if a <= last.1 => {
                        report.note(
                            Source::Conf,
                            Some(line),
                            format!(
                                "range {a} {b} overlaps the range of line {}: merged",
                                last.2
                            ),
                        );
                        last.1 = last.1.max(b);
                    }
                    _ => merged.push((a, b, line)),
                }
            }
            s.pools = merged;
        }
        self.report = report;

        // Hosts into reservations.
        let mut hw_reservations = false;
        let hosts = std::mem::take(&mut self.hosts);
        for h in &hosts {
            let (key, value) = match (&h.client_id, &h.hw) {
                (Some(id), hw) => {
                    if hw.is_some() {
                        self.note(h.line, format!("host {}: reserved by its client identifier; its hardware address is not used (ringlease identifies a client by option 61 when it sends one)", h.name));
                    }
                    ("client_id", hex(id))
                }
                (None, Some(hw)) => ("hw", hex(hw)),
                (None, None) => {
                    self.nc(
                        h.line,
                        format!(
                            "host {}: no hardware ethernet or client identifier: not converted",
                            h.name
                        ),
                    );
                    continue;
                }
            };
            let mut placed = Vec::new();
            for &ip in &h.addrs {
                let Some(i) = containing(&self.subnets, ip) else {
                    self.nc(
                        h.line,
                        format!(
                            "host {}: fixed-address {ip} is outside every subnet: not converted",
                            h.name
                        ),
                    );
                    continue;
                };
                let s = &self.subnets[i];
                if let Some(r) = s
                    .reservations
                    .iter()
                    .find(|r| r.3 == ip || (r.1 == key && r.2 == value))
                {
                    let msg = format!("host {}: {ip} conflicts with the reservation of {} in the same subnet (one address per client and one client per address): not converted", h.name, r.0);
                    self.nc(h.line, msg);
                    continue;
                }
                if placed.contains(&i) {
                    continue;
                }
                placed.push(i);
                if s.pools.iter().any(|&(a, b, _)| (a..=b).contains(&ip)) {
                    self.note(h.line, format!("host {}: fixed-address {ip} is inside a dynamic range; ringlease keeps it for this client only", h.name));
                }
                hw_reservations |= key == "hw";
                self.subnets[i].reservations.push((
                    format!("host {} (line {})", h.name, h.line),
                    key,
                    value.clone(),
                    ip,
                ));
            }
        }
        if hw_reservations {
            self.report.note(
                Source::Conf,
                None,
                "hosts by `hardware ethernet` became `hw` reservations: ringlease matches them only for clients that send no client identifier (option 61), while dhcpd matches the hardware address whatever the client sends; clients that send one need a `client_id` reservation",
            );
        }

        // Server identifier.
        let from_conf = self
            .global
            .options
            .get(&code::SERVER_ID)
            .and_then(|v| <[u8; 4]>::try_from(v.bytes.as_slice()).ok())
            .map(Ipv4Addr::from);
        let from_failover = self.failovers.iter().find_map(|f| {
            f.address
                .as_deref()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
        });
        let server_id = opts
            .server_id
            .or(from_conf)
            .or(from_failover)
            .or(self.local_address)
            .ok_or("cannot tell this server's address (option 54) from dhcpd.conf: no server-identifier, failover peer address or local-address; give it with --server-id")?;

        let listen: Vec<String> = if opts.listen.is_empty() {
            let ip = self.local_address.unwrap_or(Ipv4Addr::UNSPECIFIED);
            let port = self.local_port.unwrap_or(67);
            if self.local_address.is_some() {
                self.report.note(Source::Conf, None, format!("listening on {ip}:{port} (local-address): a specific address receives no broadcasts from directly attached clients"));
            }
            vec![SocketAddrV4::new(ip, port).to_string()]
        } else {
            opts.listen.iter().map(ToString::to_string).collect()
        };

        let mut t = String::new();
        t.push_str("# Converted from an ISC dhcpd configuration by `ringlease import-isc`.\n");
        t.push_str("# Check it with `ringlease check-config`; import-report.txt lists what was not converted.\n\n");
        t.push_str("[server]\n");
        let _ = writeln!(t, "listen = {}", toml_list(&listen));
        let _ = writeln!(t, "server_id = {}", toml_str(&server_id.to_string()));
        let _ = writeln!(t, "lease_dir = {}", toml_str(&opts.lease_dir));
        let failovers = std::mem::take(&mut self.failovers);
        for f in &failovers {
            self.write_failover(&mut t, f);
        }
        let subnets = std::mem::take(&mut self.subnets);
        let mut shared_seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in &subnets {
            self.write_subnet(&mut t, s, server_id);
            if let Some(name) = &s.shared {
                shared_seen
                    .entry(name.clone())
                    .or_default()
                    .push(format!("{}/{}", s.network, s.prefix_len));
            }
        }
        for (name, list) in shared_seen {
            if list.len() > 1 {
                self.report.not_converted(
                    Source::Conf,
                    self.shared_lines.get(&name).copied(),
                    format!(
                        "shared-network {name}: its subnets ({}) became independent [[subnet]]s; ringlease picks one subnet per request (relay giaddr, else the receiving interface's address) and does not hand out addresses of the other subnets of the network when that one is full",
                        list.join(", ")
                    ),
                );
            }
        }
        Ok(t)
    }

    fn write_failover(&mut self, t: &mut String, f: &Failover) {
        let _ = writeln!(
            t,
            "\n# failover peer \"{}\" (dhcpd.conf line {}). ringlease failover is not available yet:\n# enable this section when it is.",
            f.name, f.line
        );
        t.push_str("# [failover]\n");
        let _ = writeln!(t, "# name = {}", toml_str(&f.name));
        if let Some(role) = &f.role {
            let _ = writeln!(t, "# role = {}", toml_str(role));
        }
        let addr = |a: &Option<String>, p: Option<u16>| {
            a.as_ref()
                .map(|a| format!("{a}:{}", p.unwrap_or(ISC_FAILOVER_PORT)))
        };
        if let Some(local) = addr(&f.address, f.port) {
            let _ = writeln!(t, "# local = {}", toml_str(&local));
        }
        if let Some(peer) = addr(&f.peer_address, f.peer_port) {
            let _ = writeln!(t, "# peer = {}", toml_str(&peer));
        }
        t.push_str("# dialect = \"isc\"\n");
        if let Some(mclt) = f.mclt {
            let _ = writeln!(t, "# mclt = {mclt}");
        }
        if let Some(split) = f.split {
            // ISC: how many of 256 hash buckets the primary serves; ringlease: 255 = hot standby.
            let converted = split.min(255);
            if split >= 255 {
                self.note(
                    f.line,
                    format!("failover peer {}: split {split} written as 255 (hot standby: the primary serves every client)", f.name),
                );
            }
            let _ = writeln!(t, "# split = {converted}");
        }
        if let Some(n) = f.max_unacked {
            let _ = writeln!(t, "# max_unacked_bndupd = {n}");
        }
        if f.address
            .as_deref()
            .is_some_and(|a| a.parse::<Ipv4Addr>().is_err())
            || f.peer_address
                .as_deref()
                .is_some_and(|a| a.parse::<Ipv4Addr>().is_err())
        {
            self.nc(f.line, format!("failover peer {}: an address is a host name; put its IPv4 address in the [failover] section", f.name));
        }
        if f.port.is_none() || f.peer_port.is_none() {
            self.note(f.line, format!("failover peer {}: a port was not given; {ISC_FAILOVER_PORT} (dhcpd's default) written", f.name));
        }
        for other in &f.other {
            let _ = writeln!(t, "# (dhcpd: {other})");
        }
        if !f.other.is_empty() {
            self.note(
                f.line,
                format!(
                    "failover peer {}: `{}` kept as comments only",
                    f.name,
                    f.other.join("; ")
                ),
            );
        }
    }

    fn write_subnet(&mut self, t: &mut String, s: &SubnetOut, server_id: Ipv4Addr) {
        let p = &s.params;
        let _ = write!(
            t,
            "\n# dhcpd.conf line {}: subnet {} netmask {}",
            s.line,
            s.network,
            Ipv4Addr::from(prefix_mask(s.prefix_len))
        );
        if let Some(name) = &s.shared {
            let _ = write!(t, " (shared-network {name})");
        }
        t.push_str("\n[[subnet]]\n");
        let _ = writeln!(
            t,
            "prefix = {}",
            toml_str(&format!("{}/{}", s.network, s.prefix_len))
        );
        if !s.pools.is_empty() {
            let pools: Vec<String> = s.pools.iter().map(|(a, b, _)| format!("{a}-{b}")).collect();
            let _ = writeln!(t, "pools = {}", toml_list(&pools));
        }

        // Lease times.
        let line = s.line;
        let mut lease = p.default_lease.map_or(ISC_DEFAULT_LEASE_TIME, |v| v.0);
        let max = p.max_lease.map_or(ISC_DEFAULT_MAX_LEASE_TIME, |v| v.0);
        let mut min = p.min_lease.map(|v| v.0);
        if lease > max {
            self.note(line, format!("subnet {}: default-lease-time {lease} is above max-lease-time {max}: lease_time = {max}, as dhcpd grants", s.network));
            lease = max;
        }
        if lease < 10 {
            self.note(
                line,
                format!(
                    "subnet {}: lease time {lease} raised to ringlease's minimum of 10 seconds",
                    s.network
                ),
            );
            lease = 10;
        }
        let max = max.max(lease);
        if let Some(m) = min {
            if m > lease {
                self.note(
                    line,
                    format!(
                        "subnet {}: min-lease-time {m} is above the lease time: lowered to {lease}",
                        s.network
                    ),
                );
                min = Some(lease);
            }
        }
        let _ = writeln!(t, "lease_time = {lease}");
        if let Some(min) = min {
            let _ = writeln!(t, "min_lease_time = {min}");
        }
        let _ = writeln!(t, "max_lease_time = {max}");
        let u32_of = |v: &OptVal| {
            (v.bytes.len() == 4)
                .then(|| u32::from_be_bytes([v.bytes[0], v.bytes[1], v.bytes[2], v.bytes[3]]))
        };
        let t1 = p.options.get(&code::RENEWAL_TIME).and_then(u32_of);
        let t2 = p.options.get(&code::REBINDING_TIME).and_then(u32_of);
        if t1.is_some() || t2.is_some() {
            let t1e = t1.unwrap_or(lease / 2);
            let t2e = t2.unwrap_or((u64::from(lease) * 7 / 8) as u32);
            if t1e <= t2e && t2e < lease {
                if let Some(v) = t1 {
                    let _ = writeln!(t, "renewal_time = {v}");
                }
                if let Some(v) = t2 {
                    let _ = writeln!(t, "rebinding_time = {v}");
                }
            } else {
                let l = p
                    .options
                    .get(&code::RENEWAL_TIME)
                    .or(p.options.get(&code::REBINDING_TIME))
                    .map_or(line, |v| v.line);
                self.nc(l, format!("subnet {}: renewal/rebinding times {t1e}/{t2e} do not fit lease time {lease}: not converted (RFC 2131 defaults used)", s.network));
            }
        }

        // Options.
        let mut extra: Vec<(String, String)> = Vec::new();
        for (&c, v) in &p.options {
            let ips = || -> Option<Vec<String>> {
                (!v.bytes.is_empty() && v.bytes.len() % 4 == 0).then(|| {
                    v.bytes
                        .chunks(4)
                        .map(|q| Ipv4Addr::new(q[0], q[1], q[2], q[3]).to_string())
                        .collect()
                })
            };
            match c {
                code::RENEWAL_TIME | code::REBINDING_TIME => {}
                code::SERVER_ID => {
                    if v.bytes != server_id.octets() {
                        self.nc(v.line, format!("subnet {}: server identifier {} differs from the server's {server_id}: ringlease has one server identifier", s.network, ips().unwrap_or_default().join("")));
                    }
                }
                code::LEASE_TIME | code::REQUESTED_IP | code::OVERLOAD | code::MESSAGE_TYPE
                | code::RELAY_AGENT_INFO => self.nc(
                    v.line,
                    format!("option {} is set by ringlease itself: not converted (use default-lease-time / lease_time for lease times)", v.name),
                ),
                code::SUBNET_MASK if v.bytes == prefix_mask(s.prefix_len).to_be_bytes() => {}
                code::BROADCAST_ADDRESS
                    if v.bytes
                        == (u32::from(s.network) | !prefix_mask(s.prefix_len)).to_be_bytes() => {}
                code::ROUTERS | code::DNS_SERVERS | code::NTP_SERVERS if ips().is_some() => {
                    let key = match c {
                        code::ROUTERS => "routers",
                        code::DNS_SERVERS => "dns",
                        _ => "ntp",
                    };
                    let _ = writeln!(t, "{key} = {}", toml_list(&ips().unwrap_or_default()));
                }
                code::BROADCAST_ADDRESS if v.bytes.len() == 4 => {
                    let _ = writeln!(t, "broadcast = {}", toml_str(&ips().unwrap_or_default().join("")));
                }
                _ => match options::render(c, &v.bytes) {
                    Some(text) if c == code::DOMAIN_NAME => {
                        let _ = writeln!(t, "domain_name = {}", toml_str(&text));
                    }
                    Some(text) => {
                        if c == code::SUBNET_MASK {
                            self.note(v.line, format!("subnet {}: option subnet-mask differs from the subnet's netmask; kept as written", s.network));
                        }
                        extra.push((options::ringlease_key(c), text));
                    }
                    None => self.nc(
                        v.line,
                        format!("option {}: its value cannot be written in ringlease's form for option {c}", v.name),
                    ),
                },
            }
        }
        if !extra.is_empty() {
            let items: Vec<String> = extra
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
                .collect();
            let _ = writeln!(t, "options = {{ {} }}", items.join(", "));
        }
        if !s.failover_peers.is_empty() {
            let _ = writeln!(
                t,
                "# pools served with failover peer(s): {}",
                s.failover_peers.join(", ")
            );
        }
        for (comment, key, value, ip) in &s.reservations {
            t.push_str("\n  [[subnet.reservation]]\n");
            let _ = writeln!(t, "  # {comment}");
            let _ = writeln!(t, "  {key} = {}", toml_str(value));
            let _ = writeln!(t, "  ip = {}", toml_str(&ip.to_string()));
        }
    }
}
