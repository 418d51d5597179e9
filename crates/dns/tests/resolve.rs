//! Lookups against a small authoritative DNS server started in-process on 127.0.0.1 (UDP and
//! TCP on one port). Nothing here asks the machine's resolver or leaves 127.0.0.1.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use petrel_dns::{mail_routes, Answer, DnsError, MxHost, Query, Resolver, Route};

const TIMEOUT: Duration = Duration::from_secs(3);

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("test name")
}

fn zone() -> Vec<Record> {
    let rr = |owner: &str, data: RData| Record::from_rdata(name(owner), 300, data);
    let mx = |owner: &str, pref: u16, exchange: &str| {
        rr(owner, RData::MX(MX::new(pref, name(exchange))))
    };
    let a = |owner: &str, ip: &str| rr(owner, RData::A(A(ip.parse().expect("v4"))));
    let aaaa = |owner: &str, ip: &str| rr(owner, RData::AAAA(AAAA(ip.parse().expect("v6"))));
    let cname = |owner: &str, target: &str| rr(owner, RData::CNAME(CNAME(name(target))));
    vec![
        mx("a.test.", 10, "mx1.a.test."),
        mx("a.test.", 10, "mx2.a.test."),
        mx("a.test.", 20, "mx3.a.test."),
        a("mx1.a.test.", "192.0.2.1"),
        aaaa("mx1.a.test.", "2001:db8::1"),
        a("mx2.a.test.", "192.0.2.2"),
        aaaa("mx2.a.test.", "2001:db8::2"),
        a("mx3.a.test.", "192.0.2.3"),
        aaaa("mx3.a.test.", "2001:db8::3"),
        a("implicit.test.", "192.0.2.10"),
        // Over UDP this name only ever gets a truncated answer: TCP must be used.
        a("tcp.test.", "192.0.2.20"),
        mx("nullmx.test.", 0, "."),
        cname("cname.test.", "a.test."),
        cname("chain.test.", "cname.test."),
        // MX host behind a CNAME.
        mx("mxcname.test.", 5, "alias.mxcname.test."),
        cname("alias.mxcname.test.", "mx3.a.test."),
        // One MX host does not exist, the other does.
        mx("partial.test.", 10, "nowhere.test."),
        mx("partial.test.", 20, "mx3.a.test."),
        // The only MX host does not exist.
        mx("dangling.test.", 10, "nowhere.test."),
        // The only MX host's nameserver fails.
        mx("mxservfail.test.", 10, "servfail.test."),
        // Exists, but has neither MX nor addresses.
        rr(
            "empty.test.",
            RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()])),
        ),
        rr(
            "1.2.0.192.in-addr.arpa.",
            RData::PTR(PTR(name("mx1.a.test."))),
        ),
    ]
}

fn soa() -> Record {
    Record::from_rdata(
        name("test."),
        300,
        RData::SOA(SOA::new(
            name("ns.test."),
            name("hostmaster.test."),
            1,
            3600,
            600,
            86400,
            60,
        )),
    )
}

/// The server's answer: authoritative, in-zone CNAME chains followed, SERVFAIL for
/// servfail.test, NXDOMAIN (with the SOA) for names that own no record.
fn respond(zone: &[Record], req: &Message) -> Message {
    let mut resp = Message::response(req.id, req.op_code);
    resp.metadata.recursion_desired = req.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    let Some(q) = req.queries.first().cloned() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    resp.add_query(q.clone());
    let mut owner = q.name.clone();
    for _ in 0..8 {
        if owner == name("servfail.test.") {
            resp.answers.clear();
            resp.metadata.response_code = ResponseCode::ServFail;
            return resp;
        }
        let at: Vec<&Record> = zone.iter().filter(|r| r.name == owner).collect();
        if at.is_empty() {
            resp.metadata.response_code = ResponseCode::NXDomain;
            resp.add_authority(soa());
            return resp;
        }
        let wanted: Vec<Record> = at
            .iter()
            .filter(|r| r.record_type() == q.query_type)
            .map(|r| (*r).clone())
            .collect();
        if !wanted.is_empty() {
            resp.add_answers(wanted);
            return resp;
        }
        match at.iter().find(|r| r.record_type() == RecordType::CNAME) {
            Some(c) => {
                resp.add_answer((*c).clone());
                let RData::CNAME(target) = &c.data else {
                    unreachable!()
                };
                owner = target.0.clone();
            }
            None => break,
        }
    }
    resp.add_authority(soa());
    resp
}

/// Starts the test server; returns its address (UDP and TCP on the same port).
fn start_server() -> SocketAddr {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let addr = udp.local_addr().expect("addr");
        let Ok(tcp) = TcpListener::bind(addr) else {
            continue;
        };
        thread::spawn(move || {
            let zone = zone();
            let mut buf = [0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf) {
                if let Ok(req) = Message::from_vec(&buf[..n]) {
                    let mut resp = respond(&zone, &req);
                    if req.queries.first().map(|q| q.name.clone()) == Some(name("tcp.test.")) {
                        resp = resp.truncate();
                    }
                    let bytes = resp.to_vec().expect("encode");
                    let _ = udp.send_to(&bytes, peer);
                }
            }
        });
        thread::spawn(move || {
            for conn in tcp.incoming() {
                let Ok(conn) = conn else { continue };
                thread::spawn(move || serve_tcp(conn));
            }
        });
        return addr;
    }
    panic!("no free port for the test DNS server");
}

fn serve_tcp(mut conn: TcpStream) {
    let zone = zone();
    loop {
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if conn.read_exact(&mut msg).is_err() {
            return;
        }
        let Ok(req) = Message::from_vec(&msg) else {
            return;
        };
        let bytes = respond(&zone, &req).to_vec().expect("encode");
        let mut out = u16::try_from(bytes.len())
            .expect("size")
            .to_be_bytes()
            .to_vec();
        out.extend_from_slice(&bytes);
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}

fn resolver() -> Resolver {
    Resolver::new(&[start_server()], TIMEOUT).expect("resolver")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn hosts(routes: &[Route]) -> Vec<&str> {
    routes.iter().map(|r| r.host.as_str()).collect()
}

#[test]
fn mx_sorted_by_preference_and_shuffled_among_equals() {
    let r = resolver();
    let mut orders = HashSet::new();
    for _ in 0..50 {
        let routes = mail_routes(&r, "a.test").expect("routes");
        let h = hosts(&routes);
        assert_eq!(h.len(), 3, "{routes:?}");
        assert_eq!(h[2], "mx3.a.test");
        let mut first_two = h[..2].to_vec();
        orders.insert(first_two.join(","));
        first_two.sort();
        assert_eq!(first_two, ["mx1.a.test", "mx2.a.test"]);
        assert_eq!(
            routes.iter().map(|r| r.preference).collect::<Vec<_>>(),
            [10, 10, 20]
        );
        assert!(routes.iter().all(|r| !r.implicit));
        let mx3 = &routes[2];
        assert_eq!(mx3.addrs, [ip("192.0.2.3"), ip("2001:db8::3")]);
    }
    assert_eq!(
        orders.len(),
        2,
        "both orders of the equal MX hosts: {orders:?}"
    );

    // The raw MX answer, sorted the same way.
    let Answer::Mx(Ok(mx)) = r.lookup_blocking(Query::Mx("a.test".into())) else {
        panic!("MX lookup failed")
    };
    assert_eq!(mx.len(), 3);
    assert_eq!(
        mx[2],
        MxHost {
            preference: 20,
            exchange: "mx3.a.test".into()
        }
    );
}

#[test]
fn implicit_mx_when_no_mx_record() {
    let r = resolver();
    let routes = mail_routes(&r, "implicit.test").expect("implicit MX");
    assert_eq!(
        routes,
        [Route {
            host: "implicit.test".into(),
            preference: 0,
            implicit: true,
            addrs: vec![ip("192.0.2.10")],
        }]
    );
    // Exists, but neither MX nor address: permanent.
    assert_eq!(mail_routes(&r, "empty.test"), Err(DnsError::NotFound));
}

#[test]
fn null_mx_is_permanent() {
    let r = resolver();
    let err = mail_routes(&r, "nullmx.test").expect_err("null MX");
    assert_eq!(err, DnsError::NullMx);
    assert!(err.is_permanent());
    assert_eq!(err.dsn_status(), "5.1.10");
    assert_eq!(
        r.lookup_blocking(Query::Mx("nullmx.test".into())),
        Answer::Mx(Err(DnsError::NullMx))
    );
}

#[test]
fn nxdomain_is_not_found_and_no_implicit_mx() {
    let r = resolver();
    assert_eq!(mail_routes(&r, "nonexistent.test"), Err(DnsError::NotFound));
    assert_eq!(
        r.lookup_blocking(Query::Host("nonexistent.test".into())),
        Answer::Addrs(Err(DnsError::NotFound))
    );
    assert_eq!(
        r.lookup_blocking(Query::Mx("nonexistent.test".into())),
        Answer::Mx(Err(DnsError::NotFound))
    );
}

#[test]
fn servfail_is_temporary() {
    let r = resolver();
    for query in [
        Query::Routes("servfail.test".into()),
        Query::Mx("servfail.test".into()),
        Query::Host("servfail.test".into()),
        // The only MX host cannot be resolved for now: defer, never bounce.
        Query::Routes("mxservfail.test".into()),
    ] {
        let answer = r.lookup_blocking(query.clone());
        match answer.error() {
            Some(DnsError::Temporary(why)) => assert!(!why.is_empty()),
            other => panic!("{query:?}: expected Temporary, got {other:?} ({answer:?})"),
        }
    }
}

#[test]
fn cname_chains_are_followed() {
    let r = resolver();
    for domain in ["cname.test", "chain.test"] {
        let routes = mail_routes(&r, domain).expect(domain);
        assert_eq!(routes.len(), 3, "{domain}: {routes:?}");
        assert_eq!(routes[2].host, "mx3.a.test");
    }
    let routes = mail_routes(&r, "mxcname.test").expect("MX host behind a CNAME");
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].host, "alias.mxcname.test");
    assert_eq!(routes[0].addrs, [ip("192.0.2.3"), ip("2001:db8::3")]);
}

#[test]
fn unresolvable_mx_hosts() {
    let r = resolver();
    let routes = mail_routes(&r, "partial.test").expect("partial");
    assert_eq!(hosts(&routes), ["mx3.a.test"]);
    assert_eq!(routes[0].preference, 20);
    assert_eq!(mail_routes(&r, "dangling.test"), Err(DnsError::NotFound));
}

#[test]
fn host_txt_ptr() {
    let r = resolver();
    assert_eq!(
        r.lookup_blocking(Query::Host("mx1.a.test".into())),
        Answer::Addrs(Ok(vec![ip("192.0.2.1"), ip("2001:db8::1")]))
    );
    assert_eq!(
        r.lookup_blocking(Query::Host("tcp.test".into())),
        Answer::Addrs(Ok(vec![ip("192.0.2.20")])),
        "truncated over UDP, answered over TCP"
    );
    assert_eq!(
        r.lookup_blocking(Query::Host("192.0.2.77".into())),
        Answer::Addrs(Ok(vec![ip("192.0.2.77")]))
    );
    assert_eq!(
        r.lookup_blocking(Query::Txt("empty.test".into())),
        Answer::Txt(Ok(vec!["v=spf1 -all".into()]))
    );
    assert_eq!(
        r.lookup_blocking(Query::Ptr(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))),
        Answer::Names(Ok(vec!["mx1.a.test".into()]))
    );
    assert_eq!(
        r.lookup_blocking(Query::Ptr(ip("192.0.2.200"))),
        Answer::Names(Err(DnsError::NotFound))
    );
}

#[test]
fn callbacks_deliver_answers_without_blocking() {
    let r = resolver();
    let (tx, rx) = mpsc::channel();
    for (i, domain) in ["a.test", "implicit.test", "nullmx.test", "nonexistent.test"]
        .iter()
        .enumerate()
    {
        let tx = tx.clone();
        r.lookup(
            Query::Routes(domain.to_string()),
            Box::new(move |answer| {
                let _ = tx.send((i, answer));
            }),
        );
    }
    let mut got: Vec<(usize, Answer)> = (0..4)
        .map(|_| rx.recv_timeout(TIMEOUT * 2).expect("answer"))
        .collect();
    got.sort_by_key(|(i, _)| *i);
    assert!(matches!(&got[0].1, Answer::Routes(Ok(r)) if r.len() == 3));
    assert!(matches!(&got[1].1, Answer::Routes(Ok(r)) if r[0].implicit));
    assert_eq!(got[2].1, Answer::Routes(Err(DnsError::NullMx)));
    assert_eq!(got[3].1, Answer::Routes(Err(DnsError::NotFound)));
}

#[test]
fn silent_server_is_temporary_within_the_timeout() {
    // A UDP socket that never replies (and nothing on its TCP port).
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let timeout = Duration::from_millis(1500);
    let r = Resolver::new(&[addr], timeout).expect("resolver");
    let start = Instant::now();
    let result = mail_routes(&r, "a.test");
    let took = start.elapsed();
    assert!(
        matches!(result, Err(DnsError::Temporary(_))),
        "expected Temporary, got {result:?}"
    );
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
    eprintln!("silent server: {result:?} after {took:?}");

    // Dropping the resolver with a lookup in flight returns promptly; the callback is
    // dropped, not called.
    let (tx, rx) = mpsc::channel::<Answer>();
    r.lookup(
        Query::Mx("b.test".into()),
        Box::new(move |a| {
            let _ = tx.send(a);
        }),
    );
    let start = Instant::now();
    drop(r);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(rx.recv_timeout(Duration::from_secs(1)).is_err());
    drop(silent);
}
