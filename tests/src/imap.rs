//! imapd test helpers: the sandbox's IMAP ports, waiting for imapd, reading greetings.

use crate::Sandbox;
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long to wait for imapd to come up.
const WAIT: Duration = Duration::from_secs(30);

/// The port of the plain IMAP listener (STARTTLS offered).
pub fn imap_port(sb: &Sandbox) -> u16 {
    sb.base + 143
}

/// The port of the IMAPS listener (TLS from the start).
pub fn imaps_port(sb: &Sandbox) -> u16 {
    sb.base + 993
}

/// Adds `127.0.0.1:{port} ... {cmd}` to services.conf unless `petrel sandbox` already
/// wrote a listener on that port.
pub fn ensure_listener(sb: &Sandbox, port: u16, cmd: &str) {
    let name = format!("127.0.0.1:{port}");
    let conf = std::fs::read_to_string(sb.etc.join("services.conf")).unwrap();
    let listed = conf
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name.as_str()));
    if !listed {
        // imapd and pop3d start as root (unpriv n) to start sessions as their users.
        let unpriv = if cmd.starts_with("imapd") || cmd.starts_with("pop3d") {
            "n"
        } else {
            "-"
        };
        sb.add_service(&format!(
            "{name:<18} inet  n       {unpriv}      n      -      1       {cmd}"
        ));
    }
}

/// Reads from `s` until a CRLF-ended line came or `limit` passed; returns what came.
pub fn read_line(s: &mut std::net::TcpStream, limit: Duration) -> String {
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let now = Instant::now();
        if now >= end {
            break;
        }
        s.set_read_timeout(Some(end - now)).unwrap();
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    String::from_utf8_lossy(&got).to_string()
}

/// Starts the suite and waits until imapd greets on base+143 and accepts connections on
/// base+993. Panics (does not skip) when there is no imapd: it is the program under test.
pub fn start_imapd(sb: &mut Sandbox) {
    assert!(
        sb.bin.join("imapd").exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        sb.bin.join("imapd").display()
    );
    sb.start();
    sb.wait_for("imapd running", WAIT, || !sb.pids_of("imapd").is_empty());
    let port = imap_port(sb);
    sb.wait_for(
        &format!("a * OK greeting on 127.0.0.1:{port}"),
        WAIT,
        || {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            else {
                return false;
            };
            let g = read_line(&mut s, Duration::from_secs(5));
            if !g.starts_with("* OK") {
                return false;
            }
            let _ = s.write_all(b"x LOGOUT\r\n");
            let _ = read_line(&mut s, Duration::from_secs(5));
            true
        },
    );
    let tls = imaps_port(sb);
    sb.wait_for(&format!("a listener on 127.0.0.1:{tls}"), WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", tls)).is_ok()
    });
}

/// True when python3 with imaplib and ssl can run; says why not otherwise.
pub fn have_python() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import imaplib, ssl, socket"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: python3 (with imaplib and ssl) is not installed");
    }
    ok
}

/// A command's status and output, for assertion messages (the kit's [`crate::show`]).
pub use crate::show;
