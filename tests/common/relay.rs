//! A relay agent on loopback for tests that drive a server with numbered simulated clients:
//! the relay sits at 127.0.0.3, the server at 127.0.0.1, both on the test's port.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use ringlease::proto::wire::dhcp::{MessageType, Packet, PacketWriter};
use ringlease::proto::wire::options::code;

pub const RELAY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// How long the relay waits for one answer (loopback: anything slower is a lost reply).
pub const ANSWER_WAIT: Duration = Duration::from_millis(500);

/// What a reply said.
#[derive(Debug)]
pub struct Answer {
    pub message_type: MessageType,
    pub yiaddr: Ipv4Addr,
    pub lease_time_s: Option<u32>,
    /// Option 6, as sent.
    pub dns: Option<Vec<u8>>,
}

/// A relay agent on loopback forwarding requests of numbered simulated clients.
pub struct Relay {
    socket: UdpSocket,
    server: SocketAddrV4,
}

impl Relay {
    pub fn new(port: u16) -> Relay {
        let socket = UdpSocket::bind(SocketAddrV4::new(RELAY, port)).expect("bind relay");
        Relay::with_socket(socket, SocketAddrV4::new(SERVER, port))
    }

    /// A relay on a socket bound elsewhere (e.g. inside a test's namespace), towards `server`.
    pub fn with_socket(socket: UdpSocket, server: SocketAddrV4) -> Relay {
        socket.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
        Relay { socket, server }
    }

    pub fn mac(index: u32) -> [u8; 6] {
        [
            2,
            0xdd,
            0,
            (index >> 16) as u8,
            (index >> 8) as u8,
            index as u8,
        ]
    }

    pub fn ask(
        &self,
        index: u32,
        msg: MessageType,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
    ) -> Option<(MessageType, Ipv4Addr)> {
        self.exchange(index, msg, requested, server_id)
            .map(|a| (a.message_type, a.yiaddr))
    }

    /// Sends one request and waits (at most [`ANSWER_WAIT`]) for the answer to it.
    pub fn exchange(
        &self,
        index: u32,
        msg: MessageType,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
    ) -> Option<Answer> {
        self.exchange_with(self.server, index, msg, requested, server_id)
    }

    /// [`Relay::exchange`] with another server than the relay's own.
    pub fn exchange_with(
        &self,
        server: SocketAddrV4,
        index: u32,
        msg: MessageType,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
    ) -> Option<Answer> {
        let mut buf = [0u8; 1500];
        let xid = index ^ ((msg as u32) << 24);
        let mut w = PacketWriter::new(&mut buf, 600);
        w.set_op(1);
        w.set_htype(1);
        w.set_chaddr(&Self::mac(index));
        w.set_xid(xid);
        w.set_giaddr(RELAY);
        w.push_u8(code::MESSAGE_TYPE, msg as u8).unwrap();
        if let Some(ip) = requested {
            w.push_ip(code::REQUESTED_IP, ip).unwrap();
        }
        if let Some(ip) = server_id {
            w.push_ip(code::SERVER_ID, ip).unwrap();
        }
        w.push(code::PARAMETER_REQUEST_LIST, &[code::DNS_SERVERS])
            .unwrap();
        let len = w.finish();
        // A signal may interrupt the send; a second one as well, seldom a third.
        let sent = (0..3).any(|_| match self.socket.send_to(&buf[..len], server) {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::Interrupted => false,
            Err(e) => panic!("relay send to {server}: {e}"),
        });
        assert!(sent, "relay send to {server}: interrupted three times");
        let deadline = Instant::now() + ANSWER_WAIT;
        while Instant::now() < deadline {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let Ok(reply) = Packet::parse(&buf[..n]) else {
                        continue;
                    };
                    if reply.xid() == xid {
                        return Some(Answer {
                            message_type: reply.message_type(),
                            yiaddr: reply.yiaddr(),
                            lease_time_s: reply.lease_time_s(),
                            dns: reply.option(code::DNS_SERVERS).map(<[u8]>::to_vec),
                        });
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("relay receive: {e}"),
            }
        }
        None
    }

    /// A DISCOVER's OFFER.
    pub fn offer(&self, index: u32) -> Answer {
        match self.exchange(index, MessageType::Discover, None, None) {
            Some(a) if a.message_type == MessageType::Offer => a,
            other => panic!("client {index}: DISCOVER answered with {other:?}"),
        }
    }

    /// A whole DORA, or what went wrong.
    pub fn try_dora(&self, index: u32) -> Result<Answer, String> {
        let offer = match self.exchange(index, MessageType::Discover, None, None) {
            Some(a) if a.message_type == MessageType::Offer => a,
            other => return Err(format!("client {index}: DISCOVER answered with {other:?}")),
        };
        let offered = offer.yiaddr;
        match self.exchange(index, MessageType::Request, Some(offered), Some(SERVER)) {
            Some(a) if a.message_type == MessageType::Ack && a.yiaddr == offered => Ok(a),
            other => Err(format!(
                "client {index}: REQUEST for {offered} answered with {other:?}"
            )),
        }
    }

    /// A DISCOVER's offered address, or None when unanswered (another answer is a bug: panic).
    pub fn discover(&self, index: u32) -> Option<Ipv4Addr> {
        match self.ask(index, MessageType::Discover, None, None)? {
            (MessageType::Offer, ip) => Some(ip),
            other => panic!("client {index}: DISCOVER answered with {other:?}"),
        }
    }

    /// DISCOVER then REQUEST; the ACKed address, or None when either went unanswered.
    pub fn dora(&self, index: u32) -> Option<Ipv4Addr> {
        let offered = self.discover(index)?;
        match self.ask(index, MessageType::Request, Some(offered), Some(SERVER))? {
            (MessageType::Ack, ip) if ip == offered => Some(ip),
            other => panic!("client {index}: REQUEST for {offered} answered with {other:?}"),
        }
    }

    /// INIT-REBOOT: the client asks to keep `ip`.
    pub fn reboot(&self, index: u32, ip: Ipv4Addr) -> Option<(MessageType, Ipv4Addr)> {
        self.ask(index, MessageType::Request, Some(ip), None)
    }

    /// A datagram too short to be DHCP: counted as a `truncated` drop.
    pub fn garbage(&self) {
        self.socket.send_to(&[1, 2, 3, 4], self.server).unwrap();
    }
}
