//! The client side (ClientConfig / ClientTls) against petrel-tls's own server side, over
//! blocking loopback TCP connections with time-outs, one server thread per test.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
use petrel_tls::{self_signed, ClientConfig, ClientLevel, ServerConfig, TlsConn};

const HOST: &str = "mx.example.test";
const TIMEOUT: Duration = Duration::from_secs(10);

struct Keys {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn keys(host: &str) -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let cert = path.join("cert.pem");
    let key = path.join("key.pem");
    self_signed(host, &cert, &key).unwrap();
    Keys {
        _dir: dir,
        dir: path,
        cert,
        key,
    }
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn accept(l: &TcpListener) -> TcpStream {
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// A petrel-tls server for one connection: handshake, then reads a 4-byte big-endian
/// length and that many bytes, and answers with the bytes reversed. `Err` tells how the
/// server side ended when it did not get that far.
fn server(k: &Keys) -> (SocketAddr, JoinHandle<Result<(), String>>) {
    let cfg = ServerConfig::load(&k.cert, &k.key).unwrap();
    let (l, addr) = listener();
    let h = thread::spawn(move || {
        let sock = accept(&l);
        let mut tls = TlsConn::new(&cfg, sock).map_err(|e| e.to_string())?;
        // Blocking socket: the handshake finishes (or fails) in one call.
        if !tls.handshake().map_err(|e| e.to_string())? {
            return Err("handshake blocked".into());
        }
        let mut len = [0u8; 4];
        tls.read_exact(&mut len).map_err(|e| e.to_string())?;
        let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
        tls.read_exact(&mut data).map_err(|e| e.to_string())?;
        data.reverse();
        tls.write_all(&data).map_err(|e| e.to_string())?;
        let _ = tls.shutdown();
        // Wait for the client to close, so close_notify is not lost to a reset.
        let mut rest = Vec::new();
        let _ = tls.read_to_end(&mut rest);
        Ok(())
    });
    (addr, h)
}

/// Sends `n` bytes through `tls` and checks the reversed answer.
fn round_trip<S: Read + Write>(tls: &mut petrel_tls::ClientTls<S>, n: usize) {
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    tls.write_all(&(n as u32).to_be_bytes()).unwrap();
    tls.write_all(&data).unwrap();
    tls.flush().unwrap();
    let mut back = vec![0u8; n];
    tls.read_exact(&mut back).unwrap();
    back.reverse();
    assert!(back == data, "data came back changed");
    // The server's close_notify reads as the end.
    let mut more = [0u8; 16];
    assert_eq!(tls.read(&mut more).unwrap(), 0);
    tls.shutdown();
}

#[test]
fn may_accepts_a_self_signed_certificate_as_untrusted() {
    let k = keys(HOST);
    let (addr, h) = server(&k);
    let cfg = ClientConfig::new(ClientLevel::May, None).unwrap();
    assert_eq!(cfg.level(), ClientLevel::May);
    let mut tls = cfg.connect(connect(addr), HOST).unwrap();
    assert_eq!(tls.trust(), "Untrusted");
    assert!(
        tls.verify_error().unwrap().contains("self"),
        "{:?}",
        tls.verify_error()
    );
    assert_eq!(tls.version(), "TLSv1.3");
    assert!(tls.cipher().starts_with("TLS_"), "{}", tls.cipher());
    let (secret, alg) = tls.cipher_bits();
    assert!(secret >= 128 && alg >= 128, "{secret}/{alg}");
    assert_eq!(
        tls.get_ref().peer_addr().unwrap(),
        addr,
        "get_ref gives the socket"
    );
    tls.get_mut().set_nodelay(true).unwrap();
    round_trip(&mut tls, 300_000);
    drop(tls);
    h.join().unwrap().unwrap();
}

#[test]
fn encrypt_with_the_ca_but_another_name_is_trusted() {
    let k = keys(HOST);
    let (addr, h) = server(&k);
    let cfg = ClientConfig::new(ClientLevel::Encrypt, Some(&k.cert)).unwrap();
    let mut tls = cfg.connect(connect(addr), "other.example.test").unwrap();
    assert_eq!(tls.trust(), "Trusted");
    assert!(
        tls.verify_error().unwrap().contains("mismatch"),
        "{:?}",
        tls.verify_error()
    );
    round_trip(&mut tls, 10);
    drop(tls);
    h.join().unwrap().unwrap();
}

#[test]
fn verify_with_the_ca_and_the_right_name() {
    let k = keys(HOST);
    let (addr, h) = server(&k);
    let cfg = ClientConfig::new(ClientLevel::Verify, Some(&k.cert)).unwrap();
    // A trailing dot (an absolute DNS name, as MX lookups give them) is fine.
    let mut tls = cfg.connect(connect(addr), &format!("{HOST}.")).unwrap();
    assert_eq!(tls.trust(), "Verified");
    assert_eq!(tls.verify_error(), None);
    round_trip(&mut tls, 70_000);
    drop(tls);
    h.join().unwrap().unwrap();
}

#[test]
fn may_with_the_ca_and_the_right_name_is_verified() {
    let k = keys(HOST);
    let (addr, h) = server(&k);
    let cfg = ClientConfig::new(ClientLevel::May, Some(&k.cert)).unwrap();
    let mut tls = cfg.connect(connect(addr), HOST).unwrap();
    assert_eq!(tls.trust(), "Verified");
    round_trip(&mut tls, 1);
    drop(tls);
    h.join().unwrap().unwrap();
}

#[test]
fn verify_an_ip_address_certificate() {
    let k = keys("127.0.0.1");
    let (addr, h) = server(&k);
    let cfg = ClientConfig::new(ClientLevel::Verify, Some(&k.cert)).unwrap();
    let mut tls = cfg.connect(connect(addr), "127.0.0.1").unwrap();
    assert_eq!(tls.trust(), "Verified");
    round_trip(&mut tls, 5);
    drop(tls);
    h.join().unwrap().unwrap();
}

#[test]
fn verify_with_the_wrong_name_fails() {
    let k = keys(HOST);
    let (addr, h) = server(&k);
    let cfg = ClientConfig::new(ClientLevel::Verify, Some(&k.cert)).unwrap();
    let e = cfg
        .connect(connect(addr), "wrong.example.test")
        .unwrap_err();
    eprintln!("error: {e}");
    assert!(e.starts_with("certificate verify failed: "), "{e}");
    assert!(e.contains("mismatch"), "{e}");
    assert!(
        h.join().unwrap().is_err(),
        "the server saw the handshake fail"
    );
}

#[test]
fn verify_without_the_ca_fails() {
    let k = keys(HOST);
    let (addr, h) = server(&k);
    // Only the system's CAs, which never signed a fresh self-signed certificate.
    let cfg = ClientConfig::new(ClientLevel::Verify, None).unwrap();
    let e = cfg.connect(connect(addr), HOST).unwrap_err();
    eprintln!("error: {e}");
    assert!(e.starts_with("certificate verify failed: "), "{e}");
    assert!(h.join().unwrap().is_err());

    // Another self-signed certificate as the CA does not help either.
    let other = keys(HOST);
    let (addr, h) = server(&k);
    let cfg = ClientConfig::new(ClientLevel::Verify, Some(&other.cert)).unwrap();
    let e = cfg.connect(connect(addr), HOST).unwrap_err();
    eprintln!("error: {e}");
    assert!(e.starts_with("certificate verify failed: "), "{e}");
    assert!(h.join().unwrap().is_err());
}

#[test]
fn ca_file_errors_name_the_file() {
    let k = keys(HOST);
    let missing = k.dir.join("missing.pem");
    let e = ClientConfig::new(ClientLevel::Verify, Some(&missing)).unwrap_err();
    eprintln!("error: {e}");
    assert!(e.contains(&*missing.to_string_lossy()), "{e}");
    assert!(e.contains("no such file"), "{e}");

    let junk = k.dir.join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    let e = ClientConfig::new(ClientLevel::Verify, Some(&junk)).unwrap_err();
    eprintln!("error: {e}");
    assert!(e.contains(&*junk.to_string_lossy()), "{e}");
    assert!(e.contains("no PEM certificate"), "{e}");

    // A key file holds no certificate.
    let e = ClientConfig::new(ClientLevel::Verify, Some(&k.key)).unwrap_err();
    eprintln!("error: {e}");
    assert!(e.contains("no PEM certificate"), "{e}");
}

#[test]
fn not_tls_at_all() {
    let (l, addr) = listener();
    let h = thread::spawn(move || {
        let mut s = accept(&l);
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"220 this is not TLS\r\n");
    });
    let cfg = ClientConfig::new(ClientLevel::May, None).unwrap();
    let e = cfg.connect(connect(addr), HOST).unwrap_err();
    eprintln!("error: {e}");
    assert!(e.starts_with("handshake: "), "{e}");
    h.join().unwrap();
}

#[test]
fn a_silent_server_times_out() {
    let (l, addr) = listener();
    let h = thread::spawn(move || {
        let s = accept(&l);
        thread::sleep(Duration::from_millis(800));
        drop(s);
    });
    let sock = connect(addr);
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = ClientConfig::new(ClientLevel::Encrypt, None).unwrap();
    let e = cfg.connect(sock, HOST).unwrap_err();
    eprintln!("error: {e}");
    assert_eq!(e, "handshake: timed out");
    h.join().unwrap();
}

/// A server that speaks TLS 1.1 at most (security level 0, or OpenSSL 3 refuses 1.1).
fn old_server(k: &Keys) -> SslAcceptor {
    let mut b = SslAcceptor::mozilla_intermediate(SslMethod::tls_server()).unwrap();
    b.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
    b.set_min_proto_version(Some(SslVersion::TLS1)).unwrap();
    b.set_max_proto_version(Some(SslVersion::TLS1_1)).unwrap();
    b.set_certificate_file(&k.cert, SslFiletype::PEM).unwrap();
    b.set_private_key_file(&k.key, SslFiletype::PEM).unwrap();
    b.build()
}

fn serve_old(acceptor: SslAcceptor) -> (SocketAddr, JoinHandle<bool>) {
    let (l, addr) = listener();
    let h = thread::spawn(move || {
        let s = accept(&l);
        acceptor.accept(s).is_ok()
    });
    (addr, h)
}

#[test]
fn tls_1_1_is_refused() {
    let k = keys(HOST);
    // First make sure this OpenSSL can speak TLS 1.1 at all, so the refusal below is ours.
    let (addr, h) = serve_old(old_server(&k));
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
    b.set_min_proto_version(Some(SslVersion::TLS1)).unwrap();
    let old_ok = b.build().connect(HOST, connect(addr)).is_ok();
    let server_ok = h.join().unwrap();
    if !(old_ok && server_ok) {
        eprintln!("this OpenSSL does not speak TLS 1.1; nothing to refuse");
        return;
    }

    let (addr, h) = serve_old(old_server(&k));
    let cfg = ClientConfig::new(ClientLevel::May, None).unwrap();
    let e = cfg.connect(connect(addr), HOST).unwrap_err();
    eprintln!("error: {e}");
    assert!(e.starts_with("handshake: "), "{e}");
    assert!(!h.join().unwrap());
}
