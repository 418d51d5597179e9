//! smtp — Petrel's SMTP and LMTP client delivery agent.
//!
//! SYNOPSIS: started by master as the `smtp` service (`private/smtp`); as the `lmtp`
//! service (`private/lmtp`) the same program speaks LMTP.
//!
//! DESCRIPTION: smtp delivers mail to other hosts. qmgr hands it requests of up to
//! default_destination_recipient_limit recipients of one message for one next hop. The
//! next hop is a domain (its MX hosts by preference, equal ones in random order; without
//! MX its own address; a null MX bounces with 5.1.10), `[host]:port` (no MX lookup), or
//! for LMTP `unix:/path` and `inet:host:port`. DNS answers come from dns_servers or
//! /etc/resolv.conf; a temporary DNS failure defers, never bounces. The client sends EHLO
//! (HELO for old servers, LHLO for LMTP), STARTTLS as smtp_tls_security_level says, AUTH
//! PLAIN or LOGIN with smtp_sasl_password_maps (only over TLS), then MAIL FROM with SIZE,
//! BODY=8BITMIME, SMTPUTF8 and the DSN parameters the server understands, every RCPT TO
//! and DATA — pipelined when the server offers PIPELINING. 8-bit bodies are converted to
//! quoted-printable for servers without 8BITMIME; a message larger than the server's SIZE
//! bounces without being sent. Each recipient's result (2xx sent, 4xx deferred, 5xx
//! bounced; LMTP gives one per recipient) goes back to qmgr and to the log:
//! `ID: to=<a@b.test>, relay=mx.b.test[10.1.0.2]:25, delay=0.4, delays=0.1/0/0.2/0.1,
//! dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as …)`. Servers that cannot be reached
//! are skipped for the next MX host. Idle connections are kept for
//! smtp_connection_cache_time_limit and reused for the next message to the same next hop.
//!
//! SECURITY: runs as mail_owner without privileges; password maps and CA files are read
//! before the privilege drop. Each qmgr connection is served by its own thread, so one
//! slow server never holds up deliveries to others.
//!
//! CONFIGURATION PARAMETERS: smtp_helo_name, smtp_tcp_port, lmtp_tcp_port, dns_servers,
//! smtp_tls_security_level, smtp_tls_CAfile, smtp_sasl_auth_enable,
//! smtp_sasl_password_maps, smtp_connection_cache_time_limit, smtp_*_timeout.

mod cache;
mod deliver;
mod nexthop;
mod session;
mod settings;

use petrel_ipc::delivery::Request;
use petrel_ipc::Incoming;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;

fn is_lmtp() -> bool {
    // The service name decides, as with Postfix's lmtp (the same program under another
    // name): a service whose name starts with "lmtp" speaks LMTP.
    let args: Vec<String> = std::env::args().collect();
    let service = args
        .iter()
        .position(|a| a == "-n")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or("");
    service.starts_with("lmtp")
}

fn main() {
    let lmtp = is_lmtp();
    let name = if lmtp { "lmtp" } else { "smtp" };
    let (d, prepared) =
        petrel_daemon::start_with(name, petrel_daemon::RootNeeds::Nothing, "mail_owner", |c| {
            settings::prepare(c, lmtp)
        });
    let c = &d.cfg;
    let servers = match settings::dns_servers(&c.get_list("dns_servers")) {
        Ok(s) => s,
        Err(e) => petrel_log::fatal(e),
    };
    let resolver = match petrel_dns::Resolver::new(&servers, Duration::from_secs(10)) {
        Ok(r) => r,
        Err(e) => petrel_log::fatal(format!("DNS resolver: {e}")),
    };
    let s = Arc::new(settings::Settings::new(c, lmtp, prepared));
    let cache = Arc::new(cache::Cache::default());
    cache::Cache::reaper(cache.clone(), s.clone());
    let agent = Arc::new(deliver::Agent { s, cache, resolver });
    let Some(fd) = d.listener else {
        petrel_log::fatal(format!(
            "no listening socket: {name} must be started by master"
        ));
    };
    let listener = UnixListener::from(fd);
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                let agent = agent.clone();
                let spawned = std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || serve(&agent, conn));
                if let Err(e) = spawned {
                    log::warn!("cannot start a delivery thread: {e}");
                }
            }
            Err(e) => {
                log::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// False once qmgr has closed its end (qmgr sends nothing while a request is out, so any
/// readable state means end of file or an error).
fn peer_alive(conn: &UnixStream) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    match recv(
        conn.as_raw_fd(),
        &mut b,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => false,
        Ok(_) => true,
        Err(nix::errno::Errno::EAGAIN) => true,
        Err(_) => false,
    }
}

/// One qmgr connection: requests one at a time until qmgr hangs up.
fn serve(agent: &deliver::Agent, mut conn: UnixStream) {
    loop {
        match petrel_ipc::read_frame::<Request>(&mut conn) {
            Ok(Some(Incoming::Msg(req))) => {
                let reply = agent.handle(&req, &|| peer_alive(&conn));
                if let Err(e) = petrel_ipc::write_frame(&mut conn, &reply) {
                    log::warn!("{}: reply to qmgr: {e}", req.queue_id);
                    return;
                }
            }
            Ok(Some(Incoming::Trigger)) => {}
            Ok(None) => return,
            Err(e) => {
                log::warn!("qmgr connection: {e}");
                return;
            }
        }
    }
}
