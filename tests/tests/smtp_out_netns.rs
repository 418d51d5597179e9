//! Outbound delivery between two hosts (issue 5), end to end: two Petrel sandboxes, A
//! (`a.test`, `mx.a.test`) and B (`b.test`, `mx.b.test`), each in a network namespace of
//! its own, linked by a veth pair, with a DNS server the test runs (MX/A/AAAA, null MX,
//! SERVFAIL) and, where a scenario needs a peer that misbehaves, small scripted SMTP
//! servers inside B's namespace.
//!
//! ```text
//!  ns A                              ns B
//!  Petrel A  10.200+k.X.1  ── veth ──  10.200+k.X.2 (+ fd00:…::2)  Petrel B, smtpd on :25
//!   sendmail → … → qmgr → smtp         10.200+k.X.3, .4             scripted SMTP servers
//!                                      10.200+k.X.5                 nothing (connection refused)
//!                                      10.200+k.X.53                the test's DNS server
//! ```
//!
//! Every test needs root and network namespaces; without them it prints
//! `skipped: <reason>` and passes. Nothing here touches the machine's own network or
//! resolver.
#![allow(clippy::unwrap_used)]

use petrel_tests::dns::{DnsServer, Rr};
use petrel_tests::netns::{self, Link, Netns, Subnet};
use petrel_tests::{header, headers, Sandbox};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest any single wait in this file may take.
const WAIT: Duration = Duration::from_secs(45);

/// A message from demo on A.
fn message(to: &str, subject: &str) -> Vec<u8> {
    format!("From: Demo <demo@a.test>\nTo: {to}\nSubject: {subject}\n\nHello from A.\n")
        .into_bytes()
}

// ---------------------------------------------------------------------------------------
// The two hosts.
// ---------------------------------------------------------------------------------------

/// A and B, their namespaces and the DNS server. Fields drop in order: the suites stop
/// first, then the servers, then the namespaces go.
struct Hosts {
    a: Sandbox,
    b: Sandbox,
    sinks: Vec<Sink>,
    dns: DnsServer,
    net: Subnet,
    _link: Link,
    ns_a: Netns,
    ns_b: Netns,
}

/// Records every scenario has: both domains with their MX hosts (B's with IPv4 and IPv6).
fn world(s: Subnet) -> Vec<Rr> {
    vec![
        Rr::mx("a.test", 10, "mx.a.test"),
        Rr::a("mx.a.test", s.v4(1)),
        Rr::mx("b.test", 10, "mx.b.test"),
        Rr::a("mx.b.test", s.v4(2)),
        Rr::aaaa("mx.b.test", s.v6(2)),
    ]
}

impl Hosts {
    /// Creates both sandboxes and namespaces, links them, starts the DNS server with
    /// `records` (given the link's subnet) and configures A and B; starts neither suite.
    fn new(test: &str, records: impl FnOnce(Subnet) -> Vec<Rr>) -> Hosts {
        let a = Sandbox::new(&format!("{test}-a"));
        let b = Sandbox::new(&format!("{test}-b"));
        let ns_a = Netns::create(a.base, "a");
        let ns_b = Netns::create(a.base, "b");
        let net = Subnet::for_test(a.base, 0);
        let link = Link::create(&ns_a, &ns_b, net);
        for host in [3, 4, 5, 53] {
            ns_b.add_addr(&link.b_dev, IpAddr::V4(net.v4(host)), 24);
        }
        let dns = DnsServer::start_in(
            &ns_b,
            SocketAddr::new(IpAddr::V4(net.v4(53)), 53),
            records(net),
        );
        let dns_servers = dns.addr().to_string();

        a.set("myhostname", "mx.a.test");
        a.set("mydomain", "a.test");
        a.set("mydestination", "$mydomain, $myhostname, localhost");
        a.set("inet_interfaces", &net.v4(1).to_string());
        a.set("dns_servers", &dns_servers);
        a.set("smtp_connect_timeout", "10s");

        b.set("myhostname", "mx.b.test");
        b.set("mydomain", "b.test");
        b.set("mydestination", "$mydomain, $myhostname, localhost");
        b.set(
            "inet_interfaces",
            &format!("{}, [{}]", net.v4(2), net.v6(2)),
        );
        b.set("dns_servers", &dns_servers);
        b.add_service("25                 inet  n       -      n      -      1       smtpd");

        let mut h = Hosts {
            a,
            b,
            sinks: Vec::new(),
            dns,
            net,
            _link: link,
            ns_a,
            ns_b,
        };
        h.a.set_netns(Some(h.ns_a.name()));
        h.b.set_netns(Some(h.ns_b.name()));
        h
    }

    /// Starts A's suite.
    fn start_a(&mut self) {
        assert!(
            self.a.bin.join("smtp").exists(),
            "no smtp delivery agent next to petrel: run `cargo build --workspace --bins`"
        );
        self.a.start();
    }

    /// Starts B's suite and waits until its smtpd answers on B's address, port 25.
    fn start_b(&mut self) {
        self.b.start();
        let addr = SocketAddr::new(IpAddr::V4(self.net.v4(2)), 25);
        let ns = &self.ns_a;
        self.b.wait_for("B's smtpd greeting on port 25", WAIT, || {
            ns.connect_tcp(addr, Duration::from_secs(2))
                .ok()
                .and_then(|s| greeting(s).ok())
                .is_some_and(|g| g.starts_with("220"))
        });
    }

    /// demo on A sends a message to `to` with A's sendmail.
    fn send_from_a(&self, to: &str, subject: &str) {
        let out = self
            .a
            .sendmail(&["-f", "demo@a.test", to], &message(to, subject));
        assert!(
            out.status.success(),
            "sendmail on A: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a scripted SMTP server in B's namespace on `.host`, port 25.
    fn sink(&mut self, host: u8, name: &str, rcpt_reply: &'static str) -> usize {
        let addr = SocketAddr::new(IpAddr::V4(self.net.v4(host)), 25);
        self.sinks
            .push(Sink::start(&self.ns_b, addr, name, rcpt_reply));
        self.sinks.len() - 1
    }
}

/// Reads the first line a server sends.
fn greeting(s: TcpStream) -> std::io::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line)
}

/// A's log lines that report an outcome for `rcpt` (`to=<rcpt>, … status=…`).
fn outcomes(sb: &Sandbox, rcpt: &str) -> Vec<String> {
    let to = format!("to=<{rcpt}>");
    sb.log()
        .lines()
        .filter(|l| l.contains(&to) && l.contains("status="))
        .map(str::to_string)
        .collect()
}

/// Waits for an outcome line for `rcpt` containing `status`; returns it.
fn wait_outcome(sb: &Sandbox, rcpt: &str, status: &str) -> String {
    let mut found = String::new();
    sb.wait_for(
        &format!("{status} for {rcpt} in the log"),
        WAIT,
        || match outcomes(sb, rcpt).into_iter().find(|l| l.contains(status)) {
            Some(l) => {
                found = l;
                true
            }
            None => false,
        },
    );
    found
}

/// The queue id at the start of a log line's message (`… qmgr[12]: 4Xb2…: to=<…>`).
fn queue_id_of(line: &str) -> String {
    let before = line.split(": to=<").next().unwrap_or("");
    before.rsplit(' ').next().unwrap_or("").to_string()
}

/// The `Received` headers of a message, top first.
fn received(msg: &str) -> Vec<String> {
    headers(msg)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Received"))
        .map(|(_, v)| v)
        .collect()
}

/// Checks a bounce that reached demo on A: who it is from, and that it reports
/// `rcpt` as failed with `status` (e.g. `5.1.1`).
fn assert_bounce(msg: &str, rcpt: &str, status: &str) {
    assert_eq!(
        header(msg, "Subject").as_deref(),
        Some("Undelivered Mail Returned to Sender"),
        "{msg}"
    );
    assert!(
        header(msg, "From")
            .unwrap_or_default()
            .contains("MAILER-DAEMON@mx.a.test"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("Final-Recipient: rfc822; {rcpt}")),
        "{msg}"
    );
    assert!(msg.contains("Action: failed"), "{msg}");
    assert!(msg.contains(&format!("Status: {status}")), "{msg}");
    assert!(
        header(msg, "Content-Type")
            .unwrap_or_default()
            .contains("report-type=delivery-status"),
        "{msg}"
    );
}

/// TCP resets B's namespace has sent so far (one per refused connection attempt, among
/// others), from its /proc/net/snmp.
fn tcp_out_rsts(ns: &Netns) -> u64 {
    let snmp = ns.enter(|| std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap());
    let tcp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let names: Vec<&str> = tcp[0].split_whitespace().collect();
    let values: Vec<&str> = tcp[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == "OutRsts").unwrap();
    values[i].parse().unwrap()
}

// ---------------------------------------------------------------------------------------
// A scripted SMTP server: counts sessions and messages, answers RCPT as told.
// ---------------------------------------------------------------------------------------

/// An SMTP server on a thread, listening inside a namespace.
struct Sink {
    sessions: Arc<AtomicUsize>,
    messages: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Listens on `addr` inside `ns`; greets as `name`; answers RCPT with `rcpt_reply`
    /// (e.g. `250 2.1.5 Ok` or `451 4.3.0 Try again later`).
    fn start(ns: &Netns, addr: SocketAddr, name: &str, rcpt_reply: &'static str) -> Sink {
        let listener = ns
            .bind_tcp(addr)
            .unwrap_or_else(|e| panic!("sink on {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let sessions = Arc::new(AtomicUsize::new(0));
        let messages = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, m, st) = (sessions.clone(), messages.clone(), stop.clone());
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        s.fetch_add(1, Ordering::SeqCst);
                        let (m, name) = (m.clone(), name.clone());
                        std::thread::spawn(move || {
                            let _ = sink_session(conn, &name, rcpt_reply, &m);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Sink {
            sessions,
            messages,
            stop,
            thread: Some(thread),
        }
    }

    fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    fn messages(&self) -> usize {
        self.messages.load(Ordering::SeqCst)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One session of the scripted server.
fn sink_session(
    conn: TcpStream,
    name: &str,
    rcpt_reply: &str,
    messages: &AtomicUsize,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = conn.try_clone()?;
    let mut rd = BufReader::new(conn);
    let mut say = |s: &str| out.write_all(s.as_bytes());
    say(&format!("220 {name} ESMTP test server\r\n"))?;
    let mut accepted = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if rd.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => say(&format!(
                "250-{name}\r\n250-8BITMIME\r\n250 SIZE 10240000\r\n"
            ))?,
            "HELO" => say(&format!("250 {name}\r\n"))?,
            "MAIL" => {
                accepted = 0;
                say("250 2.1.0 Ok\r\n")?;
            }
            "RCPT" => {
                if rcpt_reply.starts_with('2') {
                    accepted += 1;
                }
                say(&format!("{rcpt_reply}\r\n"))?;
            }
            "DATA" if accepted == 0 => say("554 5.5.1 Error: no valid recipients\r\n")?,
            "DATA" => {
                say("354 End data with <CR><LF>.<CR><LF>\r\n")?;
                loop {
                    line.clear();
                    if rd.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line.trim_end_matches(['\r', '\n']) == "." {
                        break;
                    }
                }
                let n = messages.fetch_add(1, Ordering::SeqCst) + 1;
                accepted = 0;
                say(&format!("250 2.0.0 Ok: queued as SINK{n}\r\n"))?;
            }
            "RSET" => {
                accepted = 0;
                say("250 2.0.0 Ok\r\n")?;
            }
            "NOOP" => say("250 2.0.0 Ok\r\n")?,
            "QUIT" => {
                say("221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => say("502 5.5.2 Error: command not recognized\r\n")?,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The scenarios.
// ---------------------------------------------------------------------------------------

#[test]
fn mail_from_a_arrives_in_b_maildir_with_both_received_headers() {
    const T: &str = "netns_a_to_b_delivered";
    if netns::skip(T) {
        return;
    }
    let mut h = Hosts::new(T, world);
    h.start_b();
    h.start_a();
    h.send_from_a("demo@b.test", "across the link");

    let msgs = h.b.wait_messages("demo", 1, WAIT);
    let m = &msgs[0];
    assert_eq!(header(m, "Subject").as_deref(), Some("across the link"));
    assert_eq!(
        header(m, "Return-Path").as_deref(),
        Some("<demo@a.test>"),
        "{m}"
    );
    let rec = received(m);
    assert_eq!(rec.len(), 2, "B's and A's Received headers: {m}");
    // Top: B's smtpd, naming A by its HELO name and address.
    let (v4, v6) = (h.net.v4(1).to_string(), h.net.v6(1).to_string());
    assert!(rec[0].starts_with("from mx.a.test ("), "{}", rec[0]);
    assert!(
        rec[0].contains(&format!("[{v4}]")) || rec[0].contains(&v6),
        "A's address in {}",
        rec[0]
    );
    assert!(
        rec[0].contains("by mx.b.test (Petrel) with ESMTP"),
        "{}",
        rec[0]
    );
    // Below it: A's local submission.
    assert!(
        rec[1].starts_with("by mx.a.test (Petrel, from userid"),
        "{}",
        rec[1]
    );

    let sent = wait_outcome(&h.a, "demo@b.test", "status=sent");
    eprintln!(
        "A: {sent}\nB: Received: {}\nB: Received: {}",
        rec[0], rec[1]
    );
    let v4b = format!("relay=mx.b.test[{}]:25", h.net.v4(2));
    let v6b = format!("relay=mx.b.test[{}]:25", h.net.v6(2));
    assert!(sent.contains(&v4b) || sent.contains(&v6b), "{sent}");
    assert!(sent.contains("dsn=2.0.0"), "{sent}");
    assert!(sent.contains("(250 2.0.0"), "{sent}");
    h.a.wait_for("A's queue empty", WAIT, || {
        h.a.queue_files("active").is_empty() && h.a.queue_files("deferred").is_empty()
    });
    assert!(
        h.dns.queries().iter().any(|q| q == "b.test MX"),
        "A asked for b.test's MX: {:?}",
        h.dns.queries()
    );
    h.a.stop();
    h.b.stop();
}

#[test]
fn b_down_defers_then_flush_delivers_once() {
    const T: &str = "netns_b_down_flush";
    if netns::skip(T) {
        return;
    }
    let mut h = Hosts::new(T, world);
    h.start_a();
    h.send_from_a("demo@b.test", "while B is down");

    let deferred = wait_outcome(&h.a, "demo@b.test", "status=deferred");
    eprintln!("A: {deferred}");
    assert!(deferred.contains("Connection refused"), "{deferred}");
    let id = queue_id_of(&deferred);
    h.a.wait_for("the message in A's deferred/", WAIT, || {
        h.a.queue_files("deferred").contains(&id)
    });
    assert!(
        outcomes(&h.a, "demo@b.test")
            .iter()
            .all(|l| !l.contains("status=bounced") && !l.contains("status=sent")),
        "{:?}",
        outcomes(&h.a, "demo@b.test")
    );
    assert!(h.a.messages("demo").is_empty(), "no bounce to the sender");

    h.start_b();
    let out = h.a.petrel(&["queue", "flush"]);
    assert!(
        out.status.success(),
        "queue flush: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs = h.b.wait_messages("demo", 1, WAIT);
    assert_eq!(
        header(&msgs[0], "Subject").as_deref(),
        Some("while B is down")
    );
    wait_outcome(&h.a, "demo@b.test", "status=sent");
    h.a.wait_for("A's queue empty", WAIT, || {
        h.a.queue_files("deferred").is_empty() && h.a.queue_files("active").is_empty()
    });
    // A second flush finds nothing: still one copy.
    let _ = h.a.petrel(&["queue", "flush"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(h.b.messages("demo").len(), 1, "delivered once");
    let sent: Vec<String> = outcomes(&h.a, "demo@b.test")
        .into_iter()
        .filter(|l| l.contains("status=sent"))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    h.a.stop();
    h.b.stop();
}

#[test]
fn b_rejects_with_550_and_the_sender_gets_a_bounce() {
    const T: &str = "netns_b_550_bounce";
    if netns::skip(T) {
        return;
    }
    let mut h = Hosts::new(T, world);
    h.start_b();
    h.start_a();
    h.send_from_a("nosuch@b.test", "to nobody");

    let bounced = wait_outcome(&h.a, "nosuch@b.test", "status=bounced");
    eprintln!("A: {bounced}");
    assert!(bounced.contains("said: 550 5.1.1"), "{bounced}");
    assert!(bounced.contains("in reply to RCPT TO"), "{bounced}");
    assert!(bounced.contains("dsn=5.1.1"), "{bounced}");
    let dsn = h.a.wait_messages("demo", 1, WAIT);
    assert_bounce(&dsn[0], "nosuch@b.test", "5.1.1");
    assert!(
        dsn[0].contains("Subject: to nobody"),
        "the original is attached"
    );
    assert!(h.b.messages("demo").is_empty());
    h.a.wait_for("A's queue empty", WAIT, || {
        h.a.queue_files("deferred").is_empty() && h.a.queue_files("active").is_empty()
    });
    h.a.stop();
    h.b.stop();
}

#[test]
fn repeated_451_past_the_lifetime_bounces() {
    const T: &str = "netns_451_expires";
    if netns::skip(T) {
        return;
    }
    let mut h = Hosts::new(T, |s| {
        let mut r = world(s);
        r.push(Rr::mx("busy.test", 10, "mx.busy.test"));
        r.push(Rr::a("mx.busy.test", s.v4(3)));
        r
    });
    let busy = h.sink(3, "mx.busy.test", "451 4.3.0 Try again later");
    for (name, value) in [
        ("maximal_queue_lifetime", "20s"),
        ("minimal_backoff_time", "2s"),
        ("maximal_backoff_time", "4s"),
        ("queue_run_delay", "2s"),
    ] {
        h.a.set(name, value);
    }
    h.start_a();
    let start = Instant::now();
    h.send_from_a("user@busy.test", "never accepted");

    let first = wait_outcome(&h.a, "user@busy.test", "status=deferred");
    assert!(first.contains("451 4.3.0"), "{first}");
    let dsn = h.a.wait_messages("demo", 1, Duration::from_secs(60));
    let took = start.elapsed();
    assert_bounce(&dsn[0], "user@busy.test", "4.3.0");
    assert!(
        dsn[0].contains("451"),
        "the last reason is in the bounce: {}",
        dsn[0]
    );
    let lines = outcomes(&h.a, "user@busy.test");
    eprintln!("A, after {took:?}:\n{}", lines.join("\n"));
    let deferrals = lines
        .iter()
        .filter(|l| l.contains("status=deferred"))
        .count();
    assert!(deferrals >= 2, "retried before giving up: {lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("status=expired")),
        "{lines:?}"
    );
    assert!(
        took >= Duration::from_secs(18),
        "not returned before the lifetime: {took:?}"
    );
    assert!(h.sinks[busy].sessions() >= 2, "B's server saw the retries");
    assert_eq!(h.sinks[busy].messages(), 0);
    h.a.wait_for("A's queue empty", WAIT, || {
        h.a.queue_files("deferred").is_empty() && h.a.queue_files("active").is_empty()
    });
    h.a.stop();
}

#[test]
fn null_mx_bounces() {
    const T: &str = "netns_null_mx";
    if netns::skip(T) {
        return;
    }
    let mut h = Hosts::new(T, |s| {
        let mut r = world(s);
        r.push(Rr::null_mx("nomail.test"));
        // Addresses, too: a null MX must win over the implicit MX.
        r.push(Rr::a("nomail.test", s.v4(2)));
        r
    });
    h.start_b();
    h.start_a();
    // From here on B's log must not show A (start_b's probe came from A's address).
    let b_log_start = h.b.log().len();
    h.send_from_a("user@nomail.test", "to a domain that takes no mail");

    let bounced = wait_outcome(&h.a, "user@nomail.test", "status=bounced");
    eprintln!("A: {bounced}");
    assert!(bounced.contains("dsn=5.1.10"), "{bounced}");
    let dsn = h.a.wait_messages("demo", 1, WAIT);
    assert_bounce(&dsn[0], "user@nomail.test", "5.1.10");
    assert!(h.b.messages("demo").is_empty());
    let b_log = h.b.log()[b_log_start..].to_string();
    assert!(
        !b_log.contains(&format!("[{}]", h.net.v4(1))),
        "A never connected to the address behind the null MX:\n{b_log}"
    );
    h.a.stop();
    h.b.stop();
}

#[test]
fn servfail_defers_and_does_not_bounce() {
    const T: &str = "netns_servfail";
    if netns::skip(T) {
        return;
    }
    let records = |s: Subnet| {
        let mut r = world(s);
        r.push(Rr::servfail("broken.test"));
        r
    };
    let mut h = Hosts::new(T, records);
    let ok = h.sink(3, "mx.broken.test", "250 2.1.5 Ok");
    h.start_a();
    h.send_from_a("user@broken.test", "while DNS is broken");

    let deferred = wait_outcome(&h.a, "user@broken.test", "status=deferred");
    let id = queue_id_of(&deferred);
    h.a.wait_for("the message in A's deferred/", WAIT, || {
        h.a.queue_files("deferred").contains(&id)
    });
    // Give qmgr and smtp time to do something wrong.
    std::thread::sleep(Duration::from_secs(3));
    let lines = outcomes(&h.a, "user@broken.test");
    eprintln!("A:\n{}", lines.join("\n"));
    assert!(
        lines.iter().all(|l| l.contains("status=deferred")),
        "deferred only, never bounced: {lines:?}"
    );
    assert!(h.a.messages("demo").is_empty(), "no bounce to the sender");
    assert!(h.a.queue_files("deferred").contains(&id));
    assert!(
        h.dns
            .queries()
            .iter()
            .any(|q| q.starts_with("broken.test ")),
        "{:?}",
        h.dns.queries()
    );

    // DNS recovers: the next attempt delivers.
    let mut fixed = world(h.net);
    fixed.push(Rr::mx("broken.test", 10, "mx.broken.test"));
    fixed.push(Rr::a("mx.broken.test", h.net.v4(3)));
    h.dns.set_records(fixed);
    let out = h.a.petrel(&["queue", "flush"]);
    assert!(out.status.success());
    h.a.wait_for("delivery once DNS answers", WAIT, || {
        h.sinks[ok].messages() == 1
    });
    wait_outcome(&h.a, "user@broken.test", "status=sent");
    h.a.stop();
}

#[test]
fn equal_preference_mx_hosts_share_the_load() {
    const T: &str = "netns_mx_load_sharing";
    if netns::skip(T) {
        return;
    }
    let mut h = Hosts::new(T, |s| {
        let mut r = world(s);
        r.push(Rr::mx("shared.test", 10, "mx1.shared.test"));
        r.push(Rr::mx("shared.test", 10, "mx2.shared.test"));
        r.push(Rr::a("mx1.shared.test", s.v4(3)));
        r.push(Rr::a("mx2.shared.test", s.v4(4)));
        r
    });
    let mx1 = h.sink(3, "mx1.shared.test", "250 2.1.5 Ok");
    let mx2 = h.sink(4, "mx2.shared.test", "250 2.1.5 Ok");
    // A cached connection carries the next messages to the same MX host: without the
    // cache every message is a new session with a fresh choice between the two.
    h.a.set("smtp_connection_cache_time_limit", "0s");
    h.start_a();
    const N: usize = 20;
    for i in 0..N {
        h.send_from_a(&format!("user{i}@shared.test"), &format!("share {i}"));
    }
    h.a.wait_for(&format!("{N} messages at the two MX hosts"), WAIT, || {
        h.sinks[mx1].messages() + h.sinks[mx2].messages() >= N
    });
    let (m1, m2) = (h.sinks[mx1].messages(), h.sinks[mx2].messages());
    let (s1, s2) = (h.sinks[mx1].sessions(), h.sinks[mx2].sessions());
    eprintln!("mx1: {m1} messages in {s1} sessions; mx2: {m2} messages in {s2} sessions");
    assert_eq!(m1 + m2, N, "each message once");
    assert!(m1 > 0 && m2 > 0, "both MX hosts got some: {m1} and {m2}");
    assert_eq!(s1 + s2, N, "one session per message without the cache");
    for i in 0..N {
        let line = wait_outcome(&h.a, &format!("user{i}@shared.test"), "status=sent");
        assert!(
            line.contains("relay=mx1.shared.test[") || line.contains("relay=mx2.shared.test["),
            "{line}"
        );
    }
    h.a.stop();
}

#[test]
fn a_dead_mx_falls_through_to_the_next() {
    const T: &str = "netns_mx_fallthrough";
    if netns::skip(T) {
        return;
    }
    // b.test's best MX (.5) has nothing listening; the next one is B.
    let mut h = Hosts::new(T, |s| {
        vec![
            Rr::mx("a.test", 10, "mx.a.test"),
            Rr::a("mx.a.test", s.v4(1)),
            Rr::mx("b.test", 10, "mx0.b.test"),
            Rr::a("mx0.b.test", s.v4(5)),
            Rr::mx("b.test", 20, "mx.b.test"),
            Rr::a("mx.b.test", s.v4(2)),
        ]
    });
    h.start_b();
    h.start_a();
    let rsts_before = tcp_out_rsts(&h.ns_b);
    const N: usize = 3;
    for i in 0..N {
        h.send_from_a("demo@b.test", &format!("fall through {i}"));
    }
    let msgs = h.b.wait_messages("demo", N, WAIT);
    assert_eq!(msgs.len(), N);
    h.a.wait_for(&format!("{N} sent lines on A"), WAIT, || {
        outcomes(&h.a, "demo@b.test")
            .iter()
            .filter(|l| l.contains("status=sent"))
            .count()
            == N
    });
    for l in outcomes(&h.a, "demo@b.test") {
        assert!(
            l.contains(&format!("relay=mx.b.test[{}]:25", h.net.v4(2))),
            "{l}"
        );
        assert!(l.contains("status=sent"), "{l}");
    }
    let rsts = tcp_out_rsts(&h.ns_b) - rsts_before;
    eprintln!("B's namespace refused {rsts} connection(s)");
    assert!(
        rsts >= 1,
        "the dead MX was tried first (B's namespace refused {rsts} connections)"
    );
    assert!(
        h.dns.queries().iter().any(|q| q.starts_with("mx0.b.test ")),
        "{:?}",
        h.dns.queries()
    );
    h.a.stop();
    h.b.stop();
}
