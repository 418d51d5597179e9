//! petrel-tls against OpenSSL's own client (library and `openssl s_client`), over
//! non-blocking socket pairs driven turn by turn, so a hang shows up as a failed bound
//! instead of a stuck test.

#![allow(clippy::unwrap_used)]

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use openssl::ssl::{
    ErrorCode, Ssl, SslConnector, SslConnectorBuilder, SslMethod, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::x509::X509;
use petrel_tls::{self_signed, ServerConfig, TlsConn, Transport};

const HOST: &str = "mail.example.test";

struct Keys {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let cert = path.join("cert.pem");
    let key = path.join("key.pem");
    self_signed(HOST, &cert, &key).unwrap();
    Keys {
        _dir: dir,
        dir: path,
        cert,
        key,
    }
}

fn config(k: &Keys) -> ServerConfig {
    ServerConfig::load(&k.cert, &k.key).unwrap()
}

/// An OpenSSL client that accepts any certificate, with extra settings from `f`.
fn client_ssl(f: impl FnOnce(&mut SslConnectorBuilder)) -> Ssl {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    f(&mut b);
    let mut ssl = b
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .into_ssl(HOST)
        .unwrap();
    ssl.set_connect_state();
    ssl
}

fn socket_pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

fn pair(cfg: &ServerConfig, ssl: Ssl) -> (TlsConn<UnixStream>, SslStream<UnixStream>) {
    let (a, b) = socket_pair();
    (
        TlsConn::new(cfg, a).unwrap(),
        SslStream::new(ssl, b).unwrap(),
    )
}

fn client_wants_io(e: &openssl::ssl::Error) -> bool {
    e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE
}

/// Drives both handshakes, server first on every turn. `Err` names the side that failed.
fn drive(
    server: &mut TlsConn<UnixStream>,
    client: &mut SslStream<UnixStream>,
) -> Result<(), String> {
    let (mut s_done, mut c_done) = (false, false);
    for _ in 0..100 {
        if !s_done {
            match server.handshake() {
                Ok(done) => s_done = done,
                Err(e) => return Err(format!("server: {e}")),
            }
        }
        if !c_done {
            match client.do_handshake() {
                Ok(()) => c_done = true,
                Err(e) if client_wants_io(&e) => {}
                Err(e) => return Err(format!("client: {e}")),
            }
        }
        if s_done && c_done {
            return Ok(());
        }
    }
    panic!("handshake did not finish in 100 turns");
}

fn is_would_block<T: std::fmt::Debug>(r: &io::Result<T>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

#[test]
fn handshake_and_a_megabyte_both_ways() {
    let k = keys();
    let cfg = config(&k);
    let (mut server, mut client) = pair(&cfg, client_ssl(|_| {}));
    drive(&mut server, &mut client).unwrap();
    assert_eq!(server.version(), "TLSv1.3");
    assert!(server.cipher().starts_with("TLS_"), "{}", server.cipher());
    assert!(server.handshake().unwrap(), "stays done");

    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut s_pos, mut c_pos) = (0, 0);
    let (mut s_in, mut c_in) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 7000]; // smaller than a TLS record: exercises leftovers in OpenSSL
    let mut turns = 0;
    while s_in.len() < data.len() || c_in.len() < data.len() {
        turns += 1;
        assert!(turns < 100_000, "transfer did not finish");
        // The server's pending output only ever shrinks from the front: the retry rule.
        if s_pos < data.len() {
            match server.write(&data[s_pos..]) {
                Ok(n) => s_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("server write: {e}"),
            }
        }
        if c_pos < data.len() {
            match client.write(&data[c_pos..]) {
                Ok(n) => c_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client write: {e}"),
            }
        }
        loop {
            match server.read(&mut buf) {
                Ok(0) => panic!("server: unexpected end of stream"),
                Ok(n) => s_in.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("server read: {e}"),
            }
        }
        loop {
            match client.read(&mut buf) {
                Ok(0) => panic!("client: unexpected end of stream"),
                Ok(n) => c_in.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }
    assert!(s_in == data, "server received what the client sent");
    assert!(c_in == data, "client received what the server sent");

    // close_notify from the server reads as end of stream on the client.
    server.shutdown().unwrap();
    assert_eq!(client.read(&mut buf).unwrap(), 0);
    assert!(server.write(b"late").is_err(), "no writes after shutdown");
    // The client's close_notify (or plain close) reads as end of stream on the server.
    let _ = client.shutdown();
    drop(client);
    assert_eq!(server.read(&mut buf).unwrap(), 0);
}

#[test]
fn tls12_client_gets_an_aead_ecdhe_cipher() {
    let k = keys();
    let (mut server, mut client) = pair(
        &config(&k),
        client_ssl(|b| b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap()),
    );
    drive(&mut server, &mut client).unwrap();
    assert_eq!(server.version(), "TLSv1.2");
    let c = server.cipher();
    assert!(c.starts_with("ECDHE-") || c.starts_with("DHE-"), "{c}");
    assert!(c.contains("GCM") || c.contains("CHACHA20"), "{c}");
    // A client that just closes the TCP connection (no close_notify) reads as end of
    // stream, like a plain socket.
    drop(client);
    assert_eq!(server.read(&mut [0u8; 10]).unwrap(), 0);
}

#[test]
fn tls11_client_is_refused() {
    let k = keys();
    let (mut server, mut client) = pair(
        &config(&k),
        client_ssl(|b| {
            // SECLEVEL=0 so the client is willing to speak TLS 1.1 at all on a modern
            // OpenSSL; the refusal must come from the server.
            b.set_cipher_list("DEFAULT:@SECLEVEL=0").unwrap();
            b.set_min_proto_version(Some(SslVersion::TLS1_1)).unwrap();
            b.set_max_proto_version(Some(SslVersion::TLS1_1)).unwrap();
        }),
    );
    let err = drive(&mut server, &mut client).unwrap_err();
    assert!(err.starts_with("server: TLS handshake failed"), "{err}");
    assert!(err.contains("unsupported protocol"), "{err}");
    // The failure sticks, and nothing panics.
    assert!(server.handshake().is_err());
    assert!(server.read(&mut [0u8; 10]).is_err());
    assert!(server.write(b"x").is_err());
    assert!(server.shutdown().is_ok());
}

#[test]
fn silent_client_leaves_handshake_pending_without_hanging() {
    let k = keys();
    let (a, b) = socket_pair();
    let mut server = TlsConn::new(&config(&k), a).unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        assert!(!server.handshake().unwrap());
    }
    assert!(is_would_block(&server.read(&mut [0u8; 10])));
    assert!(is_would_block(&server.write(b"220 hello\r\n")));
    assert_eq!(server.cipher(), "");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The client goes away without a word.
    drop(b);
    let err = server.handshake().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
}

#[test]
fn garbage_instead_of_client_hello_is_an_error() {
    let k = keys();
    let cfg = config(&k);
    let junk: [&[u8]; 3] = [
        b"EHLO client.example\r\n",
        // A handshake record header with nonsense inside.
        &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5],
        &[0xff; 4096],
    ];
    for bytes in junk {
        let (a, mut b) = socket_pair();
        let mut server = TlsConn::new(&cfg, a).unwrap();
        assert!(!server.handshake().unwrap());
        b.write_all(bytes).unwrap();
        let err = server.handshake().unwrap_err();
        assert!(err.to_string().starts_with("TLS handshake failed"), "{err}");
        assert!(server.handshake().is_err());
        assert!(server.read(&mut [0u8; 10]).is_err());
        assert!(server.shutdown().is_ok());
    }
}

#[test]
fn client_closing_mid_handshake_is_an_error() {
    let k = keys();
    let (mut server, mut client) = pair(&config(&k), client_ssl(|_| {}));
    assert!(client_wants_io(&client.do_handshake().unwrap_err())); // ClientHello sent
    assert!(!server.handshake().unwrap()); // ServerHello..Finished sent
    drop(client);
    assert!(server.handshake().is_err());
}

#[test]
fn self_signed_certificate_verifies_for_its_host_name() {
    let k = keys();
    let cfg = config(&k);
    let verifying = |name: &str| {
        let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
        b.set_ca_file(&k.cert).unwrap();
        b.build().configure().unwrap().into_ssl(name).unwrap()
    };
    let mut ok = verifying(HOST);
    ok.set_connect_state();
    let (mut server, mut client) = pair(&cfg, ok);
    drive(&mut server, &mut client).unwrap();

    let mut wrong = verifying("other.example.test");
    wrong.set_connect_state();
    let (mut server, mut client) = pair(&cfg, wrong);
    let err = drive(&mut server, &mut client).unwrap_err();
    assert!(err.starts_with("client:"), "{err}");
}

#[test]
fn self_signed_writes_what_it_promises() {
    let k = keys();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&k.key), 0o600);
    assert_eq!(mode(&k.cert), 0o644);
    let key_pem = std::fs::read_to_string(&k.key).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let cert = X509::from_pem(&std::fs::read(&k.cert).unwrap()).unwrap();
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    assert_eq!(cn, HOST);
    let sans: Vec<String> = cert
        .subject_alt_names()
        .unwrap()
        .iter()
        .filter_map(|n| n.dnsname().map(str::to_string))
        .collect();
    assert_eq!(sans, [HOST]);
    let valid = cert.not_before().diff(cert.not_after()).unwrap();
    assert!((3649..=3651).contains(&valid.days), "{} days", valid.days);
    assert_eq!(cert.public_key().unwrap().bits(), 2048);

    // Overwriting keeps the modes; an IP address gets an IP subjectAltName.
    self_signed("192.0.2.7", &k.cert, &k.key).unwrap();
    assert_eq!(mode(&k.key), 0o600);
    let cert = X509::from_pem(&std::fs::read(&k.cert).unwrap()).unwrap();
    let ip = cert
        .subject_alt_names()
        .unwrap()
        .iter()
        .find_map(|n| n.ipaddress().map(<[u8]>::to_vec));
    assert_eq!(ip.unwrap(), [192, 0, 2, 7]);
    ServerConfig::load(&k.cert, &k.key).unwrap();

    // One file for both; it loads as both.
    let both = k.dir.join("both.pem");
    self_signed(HOST, &both, &both).unwrap();
    assert_eq!(mode(&both), 0o600);
    ServerConfig::load(&both, &both).unwrap();

    // Bad names and unwritable places are errors that say so.
    let err = self_signed("bad host", &k.cert, &k.key).unwrap_err();
    assert!(err.contains("not a valid host name"), "{err}");
    let nowhere = k.dir.join("no/such/dir/key.pem");
    let err = self_signed(HOST, &k.cert, &nowhere).unwrap_err();
    assert!(err.contains(&nowhere.display().to_string()), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(&k.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn load_errors_name_the_file_and_the_reason() {
    let a = keys();
    let b = keys();
    let err = |cert: &Path, key: &Path| ServerConfig::load(cert, key).unwrap_err();

    let missing = a.dir.join("missing.pem");
    let e = err(&missing, &a.key);
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("no such file"),
        "{e}"
    );
    let e = err(&a.cert, &missing);
    assert!(
        e.contains("private key file") && e.contains("no such file"),
        "{e}"
    );

    let text = a.dir.join("notes.txt");
    std::fs::write(&text, "hello, I am not a certificate\n").unwrap();
    let e = err(&text, &a.key);
    assert!(
        e.contains(&text.display().to_string()) && e.contains("not a PEM file"),
        "{e}"
    );
    let e = err(&a.cert, &text);
    assert!(e.contains("not a PEM file"), "{e}");

    // Files swapped: PEM, but not the right kind.
    let e = err(&a.key, &a.cert);
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = err(&a.cert, &a.cert);
    assert!(e.contains("no PEM private key"), "{e}");

    // Two valid pairs crossed.
    let e = err(&a.cert, &b.key);
    assert!(e.contains("does not match"), "{e}");
    assert!(e.contains(&b.key.display().to_string()) && e.contains(&a.cert.display().to_string()));

    // A passphrase-protected key is refused without prompting on a terminal.
    let pkey = openssl::pkey::PKey::private_key_from_pem(&std::fs::read(&a.key).unwrap()).unwrap();
    let enc = a.dir.join("enc.pem");
    std::fs::write(
        &enc,
        pkey.private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"secret")
            .unwrap(),
    )
    .unwrap();
    let e = err(&a.cert, &enc);
    assert!(e.contains("passphrase"), "{e}");

    // A broken PEM certificate.
    let broken = a.dir.join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = err(&broken, &a.key);
    assert!(e.contains(&broken.display().to_string()), "{e}");
}

#[test]
fn config_is_a_cheap_clone() {
    let k = keys();
    let cfg = config(&k);
    let other = cfg.clone();
    assert_eq!(other.cert_file(), k.cert);
    assert_eq!(other.key_file(), k.key);
    // A connection set up from a clone works after the original is gone (reload).
    drop(cfg);
    let (mut server, mut client) = pair(&other, client_ssl(|_| {}));
    drop(other);
    drive(&mut server, &mut client).unwrap();
}

#[test]
fn starttls_over_a_transport() {
    let k = keys();
    let cfg = config(&k);
    let (a, mut b) = socket_pair();
    let mut t = Transport::Plain(a);
    assert!(!t.is_tls());
    b.write_all(b"STARTTLS\r\n").unwrap();
    let mut buf = [0u8; 100];
    let n = t.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STARTTLS\r\n");
    t.write_all(b"220 2.0.0 Ready to start TLS\r\n").unwrap();
    let n = b.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"220 2.0.0 Ready to start TLS\r\n");

    let mut t = t.into_tls(&cfg).unwrap();
    assert!(t.is_tls());
    let _ = t.get_mut(); // the same socket, for mio
    let mut client = SslStream::new(client_ssl(|_| {}), b).unwrap();
    let mut got = Vec::new();
    let mut sent = false;
    for _ in 0..100 {
        // read() drives the server handshake by itself.
        match t.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("server: {e}"),
        }
        if got.ends_with(b"\r\n") {
            break;
        }
        match client.do_handshake() {
            Ok(()) if !sent => {
                client.write_all(b"EHLO client.example\r\n").unwrap();
                sent = true;
            }
            Ok(()) => {}
            Err(e) if client_wants_io(&e) => {}
            Err(e) => panic!("client: {e}"),
        }
    }
    assert_eq!(got, b"EHLO client.example\r\n");
    if let Transport::Tls(c) = &t {
        assert_eq!(c.version(), "TLSv1.3");
    }
    let e = t.into_tls(&cfg).unwrap_err();
    assert!(e.to_string().contains("already uses TLS"), "{e}");
}

// ---- the real `openssl s_client` ----

const OPENSSL: &str = "/usr/bin/openssl";

fn line(t: &mut Transport<TcpStream>) -> String {
    // Byte by byte, so nothing after the line is read ahead (as STARTTLS demands).
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\n") {
        match t.read(&mut b) {
            Ok(0) => break,
            Ok(_) => out.push(b[0]),
            Err(e) => panic!("server read: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs a one-connection server on 127.0.0.1 in a thread and `openssl s_client` against it;
/// returns s_client's output and what the server saw (the TLS version).
fn s_client(args: &[&str], starttls: bool) -> (String, String) {
    let k = keys();
    let cfg = config(&k);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || -> io::Result<String> {
        let (sock, _) = listener.accept()?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        sock.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut t = Transport::Plain(sock);
        if starttls {
            t.write_all(b"220 test ESMTP\r\n")?;
            assert!(line(&mut t).starts_with("EHLO "));
            t.write_all(b"250-test\r\n250 STARTTLS\r\n")?;
            assert_eq!(line(&mut t).trim_end(), "STARTTLS");
            t.write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
        }
        let mut t = t.into_tls(&cfg)?;
        let Transport::Tls(c) = &mut t else {
            unreachable!()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.handshake()? {
            assert!(Instant::now() < deadline, "handshake timed out");
        }
        let version = c.version();
        t.write_all(b"220 over TLS\r\n")?;
        let mut buf = [0u8; 1024];
        while let Ok(n) = t.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = t.shutdown();
        Ok(version)
    });
    let connect = addr.to_string();
    let mut cmd = Command::new(OPENSSL);
    cmd.args(["s_client", "-connect", &connect, "-brief"])
        .args(args);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("openssl s_client did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let version = server
        .join()
        .unwrap()
        .unwrap_or_else(|e| format!("server error: {e}; s_client said: {text}"));
    (text, version)
}

#[test]
fn openssl_s_client_implicit_tls() {
    if !Path::new(OPENSSL).exists() {
        eprintln!("skipped: no {OPENSSL}");
        return;
    }
    let (out, version) = s_client(&[], false);
    assert!(out.contains("Protocol version: TLSv1.3"), "{out}");
    assert_eq!(version, "TLSv1.3");
    let (out, version) = s_client(&["-tls1_2"], false);
    assert!(out.contains("Protocol version: TLSv1.2"), "{out}");
    assert_eq!(version, "TLSv1.2");
}

#[test]
fn openssl_s_client_starttls_smtp() {
    if !Path::new(OPENSSL).exists() {
        eprintln!("skipped: no {OPENSSL}");
        return;
    }
    let (out, version) = s_client(&["-starttls", "smtp"], true);
    assert!(out.contains("Protocol version: TLSv1.3"), "{out}");
    assert_eq!(version, "TLSv1.3");
}
