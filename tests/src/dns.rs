//! A small authoritative DNS server for end-to-end tests: UDP and TCP on one port, records
//! the test declares ([`Rr`]), SERVFAIL for names the test says, NXDOMAIN (with an SOA) for
//! names that own nothing, and NODATA for names that own other types. In-zone CNAME chains
//! are followed. It serves from threads until dropped (or, after [`DnsServer::detach`],
//! until the process exits), and can live inside a network namespace
//! ([`DnsServer::start_in`]).
//!
//! ```no_run
//! use petrel_tests::dns::{DnsServer, Rr};
//! let dns = DnsServer::start(
//!     "127.0.0.1:0".parse().unwrap(),
//!     vec![
//!         Rr::mx("b.test", 10, "mx.b.test"),
//!         Rr::a("mx.b.test", [10, 200, 3, 2].into()),
//!         Rr::null_mx("nomail.test"),
//!         Rr::servfail("broken.test"),
//!     ],
//! );
//! println!("dns_servers = {}", dns.addr());
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use crate::netns::Netns;

/// How long answers may be cached.
const TTL: u32 = 5;

/// One record of the test zone, or a name that answers SERVFAIL. Owner names are written
/// without the final dot and compared without regard to case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rr {
    /// `owner MX preference exchange` (exchange `.` is a null MX, RFC 7505).
    Mx {
        /// The domain.
        owner: String,
        /// Lower is tried first.
        preference: u16,
        /// The mail host.
        exchange: String,
    },
    /// `owner A addr`.
    A {
        /// The host.
        owner: String,
        /// Its address.
        addr: Ipv4Addr,
    },
    /// `owner AAAA addr`.
    Aaaa {
        /// The host.
        owner: String,
        /// Its address.
        addr: Ipv6Addr,
    },
    /// `owner CNAME target`.
    Cname {
        /// The alias.
        owner: String,
        /// The canonical name.
        target: String,
    },
    /// Every question about `owner` (any type) gets SERVFAIL.
    ServFail {
        /// The name.
        owner: String,
    },
}

impl Rr {
    /// An MX record.
    pub fn mx(owner: &str, preference: u16, exchange: &str) -> Rr {
        Rr::Mx {
            owner: owner.into(),
            preference,
            exchange: exchange.into(),
        }
    }

    /// A null MX (`owner MX 0 .`): the domain accepts no mail.
    pub fn null_mx(owner: &str) -> Rr {
        Rr::mx(owner, 0, ".")
    }

    /// An A record.
    pub fn a(owner: &str, addr: Ipv4Addr) -> Rr {
        Rr::A {
            owner: owner.into(),
            addr,
        }
    }

    /// An AAAA record.
    pub fn aaaa(owner: &str, addr: Ipv6Addr) -> Rr {
        Rr::Aaaa {
            owner: owner.into(),
            addr,
        }
    }

    /// An A or AAAA record, whichever `addr` is.
    pub fn addr(owner: &str, addr: IpAddr) -> Rr {
        match addr {
            IpAddr::V4(a) => Rr::a(owner, a),
            IpAddr::V6(a) => Rr::aaaa(owner, a),
        }
    }

    /// A CNAME record.
    pub fn cname(owner: &str, target: &str) -> Rr {
        Rr::Cname {
            owner: owner.into(),
            target: target.into(),
        }
    }

    /// Questions about `owner` answer SERVFAIL.
    pub fn servfail(owner: &str) -> Rr {
        Rr::ServFail {
            owner: owner.into(),
        }
    }

    /// The owner name.
    pub fn owner(&self) -> &str {
        match self {
            Rr::Mx { owner, .. }
            | Rr::A { owner, .. }
            | Rr::Aaaa { owner, .. }
            | Rr::Cname { owner, .. }
            | Rr::ServFail { owner } => owner,
        }
    }

    fn record_type(&self) -> Option<RecordType> {
        match self {
            Rr::Mx { .. } => Some(RecordType::MX),
            Rr::A { .. } => Some(RecordType::A),
            Rr::Aaaa { .. } => Some(RecordType::AAAA),
            Rr::Cname { .. } => Some(RecordType::CNAME),
            Rr::ServFail { .. } => None,
        }
    }

    /// As a wire record (None for SERVFAIL markers or names that do not parse).
    fn record(&self) -> Option<Record> {
        let data = match self {
            Rr::Mx {
                preference,
                exchange,
                ..
            } => RData::MX(MX::new(*preference, fqdn(exchange)?)),
            Rr::A { addr, .. } => RData::A(A(*addr)),
            Rr::Aaaa { addr, .. } => RData::AAAA(AAAA(*addr)),
            Rr::Cname { target, .. } => RData::CNAME(CNAME(fqdn(target)?)),
            Rr::ServFail { .. } => return None,
        };
        Some(Record::from_rdata(fqdn(self.owner())?, TTL, data))
    }
}

/// `name` as an absolute DNS name (`.` is the root).
fn fqdn(name: &str) -> Option<Name> {
    let n = name.trim_end_matches('.');
    if n.is_empty() {
        return Some(Name::root());
    }
    Name::from_ascii(format!("{n}.")).ok()
}

/// A name for comparing: lower case, no final dot.
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The SOA that goes with negative answers about `qname`: the zone is taken to be its
/// top-level domain (`test.` for `x.b.test`).
fn soa_for(qname: &str) -> Option<Record> {
    let tld = key(qname).rsplit('.').next().unwrap_or("").to_string();
    let apex = fqdn(&tld)?;
    let mname = fqdn(&format!("ns.{tld}"))?;
    let rname = fqdn(&format!("hostmaster.{tld}"))?;
    Some(Record::from_rdata(
        apex,
        TTL,
        RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86400, TTL)),
    ))
}

/// The answer to `req` from `zone` (pure: no I/O).
pub fn respond(zone: &[Rr], req: &Message) -> Message {
    let mut resp = Message::response(req.id, req.op_code);
    resp.metadata.recursion_desired = req.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    let Some(q) = req.queries.first().cloned() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    resp.add_query(q.clone());
    let mut owner = key(&q.name.to_ascii());
    let negative = |resp: &mut Message, owner: &str, code: ResponseCode| {
        resp.metadata.response_code = code;
        if let Some(soa) = soa_for(owner) {
            resp.add_authority(soa);
        }
    };
    for _ in 0..8 {
        let at: Vec<&Rr> = zone.iter().filter(|r| key(r.owner()) == owner).collect();
        if at.iter().any(|r| matches!(r, Rr::ServFail { .. })) {
            resp.answers.clear();
            resp.metadata.response_code = ResponseCode::ServFail;
            return resp;
        }
        if at.is_empty() {
            // Also when a CNAME chain ends at a name nobody owns.
            negative(&mut resp, &owner, ResponseCode::NXDomain);
            return resp;
        }
        let wanted: Vec<Record> = at
            .iter()
            .filter(|r| r.record_type() == Some(q.query_type))
            .filter_map(|r| r.record())
            .collect();
        if !wanted.is_empty() {
            resp.add_answers(wanted);
            return resp;
        }
        let cname = at.iter().find_map(|r| match r {
            Rr::Cname { target, .. } => Some((r.record(), target.clone())),
            _ => None,
        });
        match cname {
            Some((rec, target)) => {
                if let Some(rec) = rec {
                    resp.add_answer(rec);
                }
                owner = key(&target);
            }
            None => break,
        }
    }
    // The name exists but has no record of the type asked for: NODATA.
    negative(&mut resp, &owner, ResponseCode::NoError);
    resp
}

/// Shared between the server's threads.
struct State {
    zone: Mutex<Vec<Rr>>,
    queries: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl State {
    fn answer(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let req = Message::from_vec(bytes).ok()?;
        if let Some(q) = req.queries.first() {
            let line = format!("{} {}", key(&q.name.to_ascii()), q.query_type);
            self.queries.lock().ok()?.push(line);
        }
        let zone = self.zone.lock().ok()?.clone();
        respond(&zone, &req).to_vec().ok()
    }
}

/// A running test DNS server (see the module documentation).
pub struct DnsServer {
    addr: SocketAddr,
    state: Arc<State>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `bind` (port 0: a free port, the same for both) in this
    /// process's current network namespace and starts serving `records`. Panics when it
    /// cannot bind.
    pub fn start(bind: SocketAddr, records: Vec<Rr>) -> DnsServer {
        let (udp, tcp) = bind_pair(bind, UdpSocket::bind, TcpListener::bind);
        DnsServer::serve(udp, tcp, records)
    }

    /// Like [`DnsServer::start`], with the sockets inside namespace `ns`.
    pub fn start_in(ns: &Netns, bind: SocketAddr, records: Vec<Rr>) -> DnsServer {
        let (udp, tcp) = bind_pair(bind, |a| ns.bind_udp(a), |a| ns.bind_tcp(a));
        DnsServer::serve(udp, tcp, records)
    }

    /// Serves `records` on sockets the caller bound (same address for both).
    pub fn serve(udp: UdpSocket, tcp: TcpListener, records: Vec<Rr>) -> DnsServer {
        let addr = udp.local_addr().unwrap();
        let state = Arc::new(State {
            zone: Mutex::new(records),
            queries: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let s = state.clone();
        let u = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.stop.load(Ordering::Relaxed) {
                let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(out) = s.answer(&buf[..n]) {
                    let out = if out.len() > 512 {
                        // Too big for plain UDP: say so, the client asks again over TCP.
                        Message::from_vec(&out)
                            .ok()
                            .and_then(|m| m.truncate().to_vec().ok())
                            .unwrap_or(out)
                    } else {
                        out
                    };
                    let _ = udp.send_to(&out, peer);
                }
            }
        });
        let s = state.clone();
        let t = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || serve_tcp(&s, conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        DnsServer {
            addr,
            state,
            threads: vec![u, t],
        }
    }

    /// Where it listens (UDP and TCP), e.g. for `dns_servers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the records it serves.
    pub fn set_records(&self, records: Vec<Rr>) {
        *self.state.zone.lock().unwrap() = records;
    }

    /// The questions asked so far, as `name TYPE` (e.g. `b.test MX`).
    pub fn queries(&self) -> Vec<String> {
        self.state.queries.lock().unwrap().clone()
    }

    /// Keeps serving until the process exits.
    pub fn detach(mut self) {
        self.threads.clear();
        std::mem::forget(self);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Binds a UDP socket and a TCP listener on the same address (retrying with another free
/// port when `bind` has port 0 and TCP's is taken).
fn bind_pair(
    bind: SocketAddr,
    udp: impl Fn(SocketAddr) -> std::io::Result<UdpSocket>,
    tcp: impl Fn(SocketAddr) -> std::io::Result<TcpListener>,
) -> (UdpSocket, TcpListener) {
    let tries = if bind.port() == 0 { 20 } else { 1 };
    let mut last = String::new();
    for _ in 0..tries {
        let u = udp(bind).unwrap_or_else(|e| panic!("DNS server: bind UDP {bind}: {e}"));
        let addr = u.local_addr().unwrap();
        match tcp(addr) {
            Ok(t) => return (u, t),
            Err(e) => last = format!("bind TCP {addr}: {e}"),
        }
    }
    panic!("DNS server: {last}");
}

/// One TCP connection: length-prefixed questions and answers until the client closes.
fn serve_tcp(state: &State, mut conn: TcpStream) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    loop {
        if state.stop.load(Ordering::Relaxed) {
            return;
        }
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if conn.read_exact(&mut msg).is_err() {
            return;
        }
        let Some(out) = state.answer(&msg) else {
            return;
        };
        let Ok(n) = u16::try_from(out.len()) else {
            return;
        };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        if conn.write_all(&framed).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::Query;

    fn ask(zone: &[Rr], name: &str, t: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(fqdn(name).unwrap(), t));
        // Through the wire format, as a client would.
        let req = Message::from_vec(&m.to_vec().unwrap()).unwrap();
        Message::from_vec(&respond(zone, &req).to_vec().unwrap()).unwrap()
    }

    fn zone() -> Vec<Rr> {
        vec![
            Rr::mx("b.test", 10, "mx1.b.test"),
            Rr::mx("b.test", 20, "mx2.b.test"),
            Rr::a("mx1.b.test", Ipv4Addr::new(10, 0, 0, 1)),
            Rr::aaaa("mx1.b.test", "fd00::1".parse().unwrap()),
            Rr::cname("alias.test", "mx1.b.test"),
            Rr::null_mx("nomail.test"),
            Rr::servfail("broken.test"),
        ]
    }

    #[test]
    fn answers_nxdomain_nodata_servfail_and_cnames() {
        let z = zone();
        let r = ask(&z, "B.test", RecordType::MX);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.metadata.id, 7);
        assert_eq!(r.answers.len(), 2);
        assert!(r.metadata.authoritative);

        let r = ask(&z, "mx1.b.test", RecordType::AAAA);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(
            r.answers[0].data,
            RData::AAAA(AAAA("fd00::1".parse().unwrap()))
        );

        let r = ask(&z, "nowhere.test", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities.len(), 1, "the SOA for negative caching");

        let r = ask(&z, "b.test", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "NODATA");
        assert!(r.answers.is_empty());

        let r = ask(&z, "broken.test", RecordType::MX);
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);

        let r = ask(&z, "alias.test", RecordType::A);
        assert_eq!(r.answers.len(), 2, "CNAME then A: {:?}", r.answers);

        let r = ask(&z, "nomail.test", RecordType::MX);
        assert_eq!(r.answers[0].data, RData::MX(MX::new(0, Name::root())));
    }

    #[test]
    fn serves_over_udp_and_tcp() {
        let dns = DnsServer::start("127.0.0.1:0".parse().unwrap(), zone());
        let mut q = Message::query();
        q.metadata.id = 99;
        q.add_query(Query::query(fqdn("b.test").unwrap(), RecordType::MX));
        let bytes = q.to_vec().unwrap();

        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.send_to(&bytes, dns.addr()).unwrap();
        let mut buf = [0u8; 4096];
        let (n, _) = u.recv_from(&mut buf).unwrap();
        let r = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!((r.metadata.id, r.answers.len()), (99, 2));

        let mut t = TcpStream::connect(dns.addr()).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut framed = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        t.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        t.read_exact(&mut len).unwrap();
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        t.read_exact(&mut msg).unwrap();
        assert_eq!(Message::from_vec(&msg).unwrap().answers.len(), 2);

        dns.set_records(vec![Rr::servfail("b.test")]);
        u.send_to(&bytes, dns.addr()).unwrap();
        let (n, _) = u.recv_from(&mut buf).unwrap();
        let r = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(dns.queries(), ["b.test MX", "b.test MX", "b.test MX"]);
    }
}
