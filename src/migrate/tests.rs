use std::net::Ipv4Addr;

use super::lex::{self, Tok};
use super::*;
use crate::config::Config;
use crate::proto::lease::{ClientKey, LeaseState};
use crate::proto::wire::options::code;

/// A realistic dhcpd.conf of an ISP point of presence (line numbers matter: see the asserts).
const CONF: &str = r#"# dhcpd.conf -- Riverside POP
authoritative;
ddns-update-style none;
log-facility local7;
default-lease-time 3600;
max-lease-time 7200;
option domain-name "isp.example";
option domain-name-servers 192.0.2.53, 192.0.2.54;
option ntp-servers 192.0.2.123;
option rfc3442-classless-static-routes code 121 = array of integer 8;
option interface-mtu 1500;

failover peer "riverside" {
  primary;
  address 192.0.2.10;
  port 647;
  peer address 192.0.2.11;
  peer port 847;
  max-response-delay 60;
  max-unacked-updates 10;
  mclt 3600;
  split 128;
  load balance max seconds 3;
}

class "voip" {
  match if substring (option vendor-class-identifier, 0, 4) = "SIPA";
}

shared-network riverside {
  option domain-search "isp.example", "riverside.isp.example";
  subnet 100.64.0.0 netmask 255.255.252.0 {
    option routers 100.64.0.1;
    option broadcast-address 100.64.3.255;
    pool {
      failover peer "riverside";
      range 100.64.0.100 100.64.3.200;
      deny dynamic bootp clients;
    }
  }
  subnet 100.64.8.0 netmask 255.255.255.0 {
    option routers 100.64.8.1;
    default-lease-time 600;
    option rfc3442-classless-static-routes 24, 10, 1, 2, 100, 64, 8, 1;
    pool {
      failover peer "riverside";
      range 100.64.8.10 100.64.8.250;
    }
  }
}

subnet 192.168.50.0 netmask 255.255.255.0 {
  range 192.168.50.100 192.168.50.199;
  range dynamic-bootp 192.168.50.200 192.168.50.210;
  option routers 192.168.50.1;
  max-lease-time 86400;
  min-lease-time 300;
  if option vendor-class-identifier = "MSFT 5.0" {
    option netbios-node-type 8;
  }
  next-server 192.168.50.5;
}

host printer1 {
  hardware ethernet 00:1b:2c:3d:4e:5f;
  fixed-address 192.168.50.10;
}
host cpe-17 {
  option dhcp-client-identifier "\001\002\003";
  hardware ethernet 02:00:00:00:00:17;
  fixed-address 100.64.0.17;
}
host byname { hardware ethernet 02:00:00:00:00:20; fixed-address gw.isp.example; }
host stray { hardware ethernet 02:00:00:00:00:21; fixed-address 10.99.0.1; }
include "/etc/dhcp/extra.conf";
"#;

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not in text"))
        + 1
}

#[test]
fn lexer_reads_escapes_comments_and_lines() {
    let toks = lex::lex("a \"x\\001\\x41\\\"y\" # c\n{ b; }").unwrap();
    assert_eq!(toks[0].tok, Tok::Word("a".into()));
    assert_eq!(toks[1].tok, Tok::Str(b"x\x01A\"y".to_vec()));
    assert_eq!(toks[2].tok, Tok::Punct('{'));
    assert_eq!(toks[2].line, 2);
    assert!(lex::parse(&lex::lex("a { b; ").unwrap()).is_err());
    assert!(lex::parse(&lex::lex("a b").unwrap()).is_err());
    // Record definitions keep their braces inside the statement.
    let items = lex::parse(&lex::lex("option x code 150 = { ip-address }; y;").unwrap()).unwrap();
    assert_eq!(items.len(), 2);
}

#[test]
fn realistic_conf_converts_to_a_valid_config() {
    let (toml, report) = convert_conf(CONF).unwrap();
    let config = Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(
        config.server.server_id,
        Ipv4Addr::new(192, 0, 2, 10),
        "from the failover address"
    );
    let subnets = config.subnets.all();
    assert_eq!(subnets.len(), 3, "{toml}");

    let a = &subnets[0];
    assert_eq!(
        (a.network, a.prefix_len),
        (Ipv4Addr::new(100, 64, 0, 0), 22)
    );
    assert_eq!(a.pools.len(), 1);
    assert_eq!(a.pools[0].first, Ipv4Addr::new(100, 64, 0, 100));
    assert_eq!(a.pools[0].last, Ipv4Addr::new(100, 64, 3, 200));
    assert_eq!((a.lease_time_s, a.max_lease_time_s), (3600, 7200));
    let opt = |s: &crate::proto::subnet::Subnet, c: u8| {
        s.options
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, v)| v.to_vec())
    };
    assert_eq!(opt(a, code::ROUTERS), Some(vec![100, 64, 0, 1]));
    assert_eq!(
        opt(a, code::DNS_SERVERS),
        Some(vec![192, 0, 2, 53, 192, 0, 2, 54])
    );
    assert_eq!(opt(a, code::NTP_SERVERS), Some(vec![192, 0, 2, 123]));
    assert_eq!(opt(a, code::DOMAIN_NAME), Some(b"isp.example".to_vec()));
    assert_eq!(opt(a, code::INTERFACE_MTU), Some(vec![5, 220]));
    assert_eq!(opt(a, code::BROADCAST_ADDRESS), Some(vec![100, 64, 3, 255]));
    let mut search = b"\x03isp\x07example\x00".to_vec();
    search.extend_from_slice(b"\x09riverside\x03isp\x07example\x00");
    assert_eq!(opt(a, code::DOMAIN_SEARCH), Some(search));
    assert_eq!(
        a.reservation_for(ClientKey::from_client_id(&[1, 2, 3]).as_bytes()),
        Some(Ipv4Addr::new(100, 64, 0, 17))
    );

    let b = &subnets[1];
    assert_eq!(b.lease_time_s, 600);
    assert_eq!(
        opt(b, code::CLASSLESS_STATIC_ROUTE),
        Some(vec![24, 10, 1, 2, 100, 64, 8, 1])
    );
    assert_eq!(opt(b, code::DOMAIN_SEARCH), opt(a, code::DOMAIN_SEARCH));

    let c = &subnets[2];
    assert_eq!(c.pools.len(), 2);
    assert_eq!(
        (c.lease_time_s, c.min_lease_time_s, c.max_lease_time_s),
        (3600, 300, 86400)
    );
    assert_eq!(
        opt(c, code::DOMAIN_SEARCH),
        None,
        "not in the shared network"
    );
    assert_eq!(
        c.reservation_for(
            ClientKey::from_hardware(1, &[0, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]).as_bytes()
        ),
        Some(Ipv4Addr::new(192, 168, 50, 10))
    );

    // The failover peer, commented out.
    assert!(toml.contains("# [failover]"), "{toml}");
    assert!(toml.contains("# name = \"riverside\""));
    assert!(toml.contains("# role = \"primary\""));
    assert!(toml.contains("# local = \"192.0.2.10:647\""));
    assert!(toml.contains("# peer = \"192.0.2.11:847\""));
    assert!(toml.contains("# dialect = \"isc\""));
    assert!(toml.contains("# mclt = 3600"));
    assert!(toml.contains("# split = 128"));
    assert!(toml.contains("# max_unacked_bndupd = 10"));
    assert!(report.mentions(
        Some(line_of(CONF, "failover peer \"riverside\" {")),
        "failover peer riverside converted to a commented [failover] section: enable it when failover is available"
    ));

    // Everything that was not converted, with its line.
    let text = report.to_string();
    for (needle, what) in [
        ("class \"voip\"", "class voip"),
        ("if option vendor-class-identifier", "conditional"),
        ("next-server", "BOOTP header"),
        ("include \"/etc/dhcp", "was not followed"),
        ("host byname", "host name, not an address"),
        ("host stray", "outside every subnet"),
        ("deny dynamic bootp", "BOOTP"),
    ] {
        assert!(
            report.mentions(Some(line_of(CONF, needle)), what),
            "{needle}: {what}\n{text}"
        );
    }
    assert!(report.mentions(None, "shared-network riverside"), "{text}");
    assert!(report.mentions(None, "option 61"), "{text}");
    assert!(!report.mentions(None, "authoritative"), "{text}");
}

#[test]
fn server_id_must_be_known() {
    let conf = "subnet 10.0.0.0 netmask 255.255.255.0 { range 10.0.0.10 10.0.0.20; }";
    let err = convert_conf(conf).unwrap_err();
    assert!(err.contains("--server-id"), "{err}");
    let opts = ConvertOptions {
        server_id: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ..ConvertOptions::default()
    };
    let (toml, _) = convert_conf_with(conf, &opts).unwrap();
    let config = Config::from_toml(&toml).unwrap();
    assert_eq!(
        config.subnets.all()[0].lease_time_s,
        43_200,
        "dhcpd's default"
    );
    assert_eq!(config.subnets.all()[0].max_lease_time_s, 86_400);
    // And `server-identifier` is read.
    let (toml, _) = convert_conf(&format!("server-identifier 10.0.0.1;\n{conf}")).unwrap();
    assert!(toml.contains("server_id = \"10.0.0.1\""));
    assert!(
        convert_conf("server-identifier 10.0.0.1;").is_err(),
        "no subnet"
    );
}

#[test]
fn odd_values_are_reported_not_guessed() {
    let conf = r#"server-identifier 10.0.0.1;
option domain-name-servers ns1.isp.example;
option foo-bar 7;
option dhcp-lease-time 600;
not authoritative;
subnet 10.0.0.0 netmask 255.255.255.0 {
  range 10.0.0.10 10.0.0.20;
  range 10.0.0.15 10.0.0.30;
  range 10.0.1.1 10.0.1.9;
  pool { range 10.0.0.100 10.0.0.110; option routers 10.0.0.2; allow members of "voip"; }
  default-lease-time 90000;
}
host h1 { hardware ethernet 02:00:00:00:00:01; fixed-address 10.0.0.5; }
host h2 { hardware ethernet 02:00:00:00:00:02; fixed-address 10.0.0.5; }
host h3 { hardware ethernet 02:00:00:00:00:03; option host-name "h3"; deny booting; }
"#;
    let (toml, report) = convert_conf(conf).unwrap();
    let text = report.to_string();
    let config = Config::from_toml(&toml).unwrap();
    let s = &config.subnets.all()[0];
    assert_eq!(s.pools.len(), 2, "{toml}");
    assert_eq!(s.pools[0].last, Ipv4Addr::new(10, 0, 0, 30), "merged");
    assert_eq!(s.lease_time_s, 86_400, "clamped to the max, as dhcpd");
    assert_eq!(s.reservations.len(), 1);
    for (line, what) in [
        (2, "not an IPv4 address"),
        (3, "unknown to the converter"),
        (4, "set by ringlease itself"),
        (5, "not authoritative"),
        (8, "merged"),
        (9, "not inside subnet"),
        (10, "pool-scope"),
        (10, "client access control"),
        (14, "conflicts"),
        (15, "has no fixed-address"),
    ] {
        assert!(
            report.mentions(Some(line), what),
            "line {line}: {what}\n{text}"
        );
    }
}

const LEASES: &str = r#"# The format of this file is documented in the dhcpd.leases(5) manual page.
# This lease file was written by isc-dhcp-4.4.3-P1

# authoring-byte-order entry is generated, DO NOT DELETE
authoring-byte-order little-endian;

server-duid "\000\001\000\001.\213\224\012\002\000\000\000\000\001";

lease 100.64.0.100 {
  starts 1 2026/11/23 09:00:00;
  ends 1 2026/11/23 11:00:00;
  cltt 1 2026/11/23 09:00:00;
  binding state active;
  next binding state free;
  rewind binding state free;
  hardware ethernet 02:00:00:00:01:00;
}
lease 100.64.0.101 {
  starts 1 2026/11/23 10:00:00;
  ends never;
  tstp 1 2026/11/23 11:30:00;
  tsfp 1 2026/11/23 11:30:00;
  atsfp 1 2026/11/23 11:30:00;
  cltt 1 2026/11/23 10:00:00;
  binding state active;
  next binding state expired;
  hardware ethernet 02:00:00:00:01:01;
  uid "\001\002\000\000\000\001\001";
  set vendor-class-identifier = "udhcp 1.36.1";
  client-hostname "cpe-101";
}
lease 100.64.0.102 {
  starts 1 2026/11/23 09:00:00;
  ends 1 2026/11/23 09:30:00;
  binding state free;
  hardware ethernet 02:00:00:00:01:02;
}
lease 100.64.0.103 {
  ends 1 2026/11/23 09:30:00;
  binding state free;
}
lease 100.64.0.104 {
  binding state backup;
}
lease 100.64.0.105 {
  starts 1 2026/11/23 09:00:00;
  ends 1 2026/11/23 12:00:00;
  binding state abandoned;
  next binding state free;
}
lease 100.64.0.106 {
  starts 1 2026/11/23 09:00:00;
  ends 1 2026/11/23 09:45:00;
  binding state released;
  hardware ethernet 02:00:00:00:01:06;
  uid 01:02:00:00:00:01:06;
}
lease 10.99.0.5 {
  ends 1 2026/11/23 12:00:00;
  binding state active;
  hardware ethernet 02:00:00:00:09:05;
}
lease 100.64.0.107 {
  ends 1 2026/11/23 10:00:00;
  binding state active;
  hardware ethernet 02:00:00:00:01:07;
}
lease 100.64.0.100 {
  starts 1 2026/11/23 10:00:00;
  ends 1 2026/11/23 12:00:00;
  cltt 1 2026/11/23 10:00:00;
  binding state active;
  next binding state free;
  rewind binding state free;
  hardware ethernet 02:00:00:00:01:00;
  on expiry { set x = "y"; }
}
"#;

const T0900: u64 = 1_795_424_400;
const T1000: u64 = 1_795_428_000;
const NOW: u64 = 1_795_429_800; // 10:30
const T1130: u64 = 1_795_433_400;
const T1200: u64 = 1_795_435_200;

#[test]
fn lease_times_and_fields_are_read() {
    let (leases, _) = parse_leases(LEASES).unwrap();
    assert_eq!(leases.len(), 10);
    let l = &leases[1];
    assert_eq!(l.ip, Some(Ipv4Addr::new(100, 64, 0, 101)));
    assert_eq!(l.starts, Some(IscTime::At(T1000)));
    assert_eq!(l.ends, Some(IscTime::Never));
    assert_eq!(l.tstp, Some(IscTime::At(T1130)));
    assert_eq!(l.tsfp, Some(IscTime::At(T1130)));
    assert_eq!(l.atsfp, Some(IscTime::At(T1130)));
    assert_eq!(l.state.as_deref(), Some("active"));
    assert_eq!(l.next_state.as_deref(), Some("expired"));
    assert_eq!(l.hardware, Some((1, vec![2, 0, 0, 0, 1, 1])));
    assert_eq!(l.uid, Some(vec![1, 2, 0, 0, 0, 1, 1]), "octal escapes");
    assert_eq!(l.hostname, Some(b"cpe-101".to_vec()));
    assert_eq!(leases[6].uid, Some(vec![1, 2, 0, 0, 0, 1, 6]), "colon hex");
    assert_eq!(
        leases::parse_time(&lex::lex("2 2000/03/01 00:00:00").unwrap()),
        Some(IscTime::At(951_868_800))
    );
    assert_eq!(
        leases::parse_time(&lex::lex("epoch 1795428000").unwrap()),
        Some(IscTime::At(T1000))
    );
}

#[test]
fn leases_convert_to_bindings() {
    let (toml, _) = convert_conf(CONF).unwrap();
    let config = Config::from_toml(&toml).unwrap();
    let (bindings, report) = convert_leases(LEASES, &config.subnets, NOW);
    let text = report.to_string();
    let by_ip = |last: u8| {
        bindings
            .iter()
            .find(|b| b.ip == Ipv4Addr::new(100, 64, 0, last))
    };
    // Seq in file order of each address's last block; the later .100 block won.
    let seqs: Vec<u64> = bindings.iter().map(|b| b.seq).collect();
    assert_eq!(seqs, (1..=bindings.len() as u64).collect::<Vec<_>>());
    let b100 = by_ip(100).unwrap();
    assert_eq!(b100.state, LeaseState::Bound);
    assert_eq!(b100.expires_s, T1200, "the last block wins");
    assert_eq!(b100.state_since_s, T1000);
    assert_eq!(b100.seq, bindings.len() as u64, "last in the file");
    assert_eq!(
        &*b100.client,
        ClientKey::from_hardware(1, &[2, 0, 0, 0, 1, 0]).as_bytes()
    );

    let b101 = by_ip(101).unwrap();
    assert_eq!(b101.state, LeaseState::Bound);
    assert_eq!(b101.expires_s, leases::NEVER_S);
    assert_eq!(b101.partner_expiry_s, T1130);
    assert_eq!(&*b101.hostname, b"cpe-101");
    assert_eq!(
        &*b101.client,
        ClientKey::from_client_id(&[1, 2, 0, 0, 0, 1, 1]).as_bytes(),
        "the uid is the key"
    );

    let b102 = by_ip(102).unwrap();
    assert_eq!(
        b102.state,
        LeaseState::Expired,
        "free with a client: tombstone"
    );
    assert!(by_ip(103).is_none(), "free without a client: skipped");
    assert!(by_ip(104).is_none(), "backup: free, not written");
    let b105 = by_ip(105).unwrap();
    assert_eq!(b105.state, LeaseState::Declined);
    assert_eq!(b105.expires_s, NOW + leases::ABANDONED_HOLD_S);
    let b106 = by_ip(106).unwrap();
    assert_eq!(b106.state, LeaseState::Released);
    assert_eq!(
        &*b106.client,
        ClientKey::from_client_id(&[1, 2, 0, 0, 0, 1, 6]).as_bytes()
    );
    let b107 = by_ip(107).unwrap();
    assert_eq!(b107.state, LeaseState::Expired, "active but ended");
    assert_eq!(b107.expires_s, T1000);
    assert!(!bindings.iter().any(|b| b.ip == Ipv4Addr::new(10, 99, 0, 5)));

    assert!(
        report.mentions(
            Some(line_of(LEASES, "lease 10.99.0.5")),
            "outside every subnet"
        ),
        "{text}"
    );
    assert!(
        report.mentions(Some(line_of(LEASES, "lease 100.64.0.105")), "abandoned"),
        "{text}"
    );
    assert!(report.mentions(None, "backup"), "{text}");
    assert!(
        report.mentions(None, "2 active lease(s) imported as bound"),
        "{text}"
    );
    let _ = T0900;
}

#[test]
fn imported_bindings_are_written_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (toml, _) = convert_conf(CONF).unwrap();
    let config = Config::from_toml(&toml).unwrap();
    let (bindings, _) = convert_leases(LEASES, &config.subnets, NOW);
    {
        let (log, _) =
            crate::leaselog::LeaseLog::open(dir.path(), crate::leaselog::LogOptions::default())
                .unwrap();
        log.write_snapshot(bindings.iter().map(|b| b.as_ref()))
            .unwrap();
    }
    let replayed = crate::leaselog::verify(dir.path()).unwrap();
    assert_eq!(replayed.bindings, bindings);
}

#[test]
fn run_writes_config_log_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("dhcpd.conf");
    let leases = dir.path().join("dhcpd.leases");
    std::fs::write(&conf, CONF).unwrap();
    std::fs::write(&leases, LEASES).unwrap();
    let out = dir.path().join("out");
    let args = ImportIscArgs {
        conf: conf.clone(),
        leases: Some(leases.clone()),
        out: out.clone(),
        server_id: None,
        listen: Vec::new(),
    };
    run(args.clone()).unwrap();
    let config = Config::from_file(&out.join("ringlease.toml")).unwrap();
    assert_eq!(
        config.server.lease_dir,
        out.canonicalize().unwrap().join("leases")
    );
    assert!(std::fs::read_to_string(out.join("import-report.txt"))
        .unwrap()
        .contains("class voip"));
    assert!(!crate::leaselog::verify(&config.server.lease_dir)
        .unwrap()
        .bindings
        .is_empty());
    let again = run(args).unwrap_err();
    assert!(again.contains("exists already"), "{again}");
}
