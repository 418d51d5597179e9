//! Client-side TLS for the delivery agents (STARTTLS to another mail server), over a
//! blocking socket.
//!
//! The policy follows Postfix's `smtp_tls_security_level`: at `may` and `encrypt` any
//! certificate is accepted (opportunistic TLS: encryption against passive listeners), at
//! `verify` the certificate must chain to a trusted CA and name the host. Either way the
//! result of the check is kept and reported in Postfix's words ("Verified", "Trusted",
//! "Untrusted") for the log.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use openssl::error::ErrorStack;
use openssl::ssl::{
    ErrorCode, HandshakeError, SslConnector, SslMethod, SslOptions, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::x509::{X509StoreContextRef, X509VerifyResult, X509};

use crate::config::reasons;

/// X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_EMAIL_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
/// (`x509_vfy.h`; stable since OpenSSL 1.0.2): the certificate does not name the peer.
const NAME_MISMATCH: [i32; 3] = [62, 63, 64];

/// How hard the client insists (smtp_tls_security_level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLevel {
    /// Opportunistic: TLS when offered, any certificate.
    May,
    /// TLS required, any certificate.
    Encrypt,
    /// TLS required, the certificate must chain to a trusted CA and match the host name.
    Verify,
}

impl ClientLevel {
    /// The level's name in the configuration: "may", "encrypt", "verify".
    pub fn name(self) -> &'static str {
        match self {
            ClientLevel::May => "may",
            ClientLevel::Encrypt => "encrypt",
            ClientLevel::Verify => "verify",
        }
    }

    /// The level named `name` (case-insensitive), as [`name`](Self::name) spells it.
    pub fn from_name(name: &str) -> Option<ClientLevel> {
        [ClientLevel::May, ClientLevel::Encrypt, ClientLevel::Verify]
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
    }
}

/// The client context: protocol policy, trusted CAs, security level. Cheap to clone (the
/// OpenSSL context is reference-counted); build one per configuration and share it.
#[derive(Clone)]
pub struct ClientConfig {
    connector: SslConnector,
    level: ClientLevel,
    ca_file: Option<PathBuf>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("level", &self.level)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl ClientConfig {
    /// TLS 1.2 minimum, default OpenSSL client ciphers, SNI sent. `ca_file`: PEM bundle of
    /// trusted CAs; when None the system default paths (set_default_verify_paths, which
    /// honour `SSL_CERT_FILE` / `SSL_CERT_DIR`). Errors name the file and reason.
    pub fn new(level: ClientLevel, ca_file: Option<&Path>) -> Result<ClientConfig, String> {
        let setup =
            |what: &str, e: ErrorStack| format!("TLS client setup: {what}: {}", reasons(&e));
        clear_error_queue();
        let mut b = SslConnector::builder(SslMethod::tls_client())
            .map_err(|e| setup("creating the context", e))?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(|e| setup("setting the minimum protocol version", e))?;
        if b.min_proto_version() != Some(SslVersion::TLS1_2) {
            return Err(
                "TLS client setup: could not enforce TLS 1.2 as the minimum protocol \
                        version"
                    .to_string(),
            );
        }
        // A server that drops the connection without close_notify reads as end of file, as
        // on the server side; SMTP frames its own data.
        b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::IGNORE_UNEXPECTED_EOF);
        match ca_file {
            Some(path) => {
                for cert in read_cas(path)? {
                    b.cert_store_mut().add_cert(cert).map_err(|e| {
                        format!(
                            "CA file {}: cannot use a certificate: {}",
                            path.display(),
                            reasons(&e)
                        )
                    })?;
                }
            }
            None => b
                .set_default_verify_paths()
                .map_err(|e| setup("loading the system's trusted CAs", e))?,
        }
        Ok(ClientConfig {
            connector: b.build(),
            level,
            ca_file: ca_file.map(Path::to_path_buf),
        })
    }

    /// The security level this configuration was built with.
    pub fn level(&self) -> ClientLevel {
        self.level
    }

    /// Blocking handshake over `sock` for `hostname` (SNI; at Verify level the certificate
    /// must chain to a trusted CA AND match hostname, else Err). At May/Encrypt levels the
    /// certificate is not required to verify, but whether it would have is recorded
    /// (`trust()`). A trailing dot on `hostname` is ignored; an IP address is matched
    /// against the certificate's IP addresses and sends no SNI.
    ///
    /// Err(text) says why ("certificate verify failed: ...", "handshake: ..."). A read or
    /// write time-out on the socket gives "handshake: timed out". After an error the
    /// socket is gone (dropped); the connection cannot be used for plaintext any more.
    pub fn connect<S: Read + Write>(
        &self,
        sock: S,
        hostname: &str,
    ) -> Result<ClientTls<S>, String> {
        let setup = |e: ErrorStack| format!("handshake: setup: {}", reasons(&e));
        let host = hostname.strip_suffix('.').unwrap_or(hostname);
        clear_error_queue();
        let mut ssl = self
            .connector
            .configure()
            .map_err(setup)?
            .into_ssl(host)
            .map_err(setup)?;
        let findings = Arc::new(Mutex::new(Findings::default()));
        let record = Arc::clone(&findings);
        let insist = self.level == ClientLevel::Verify;
        ssl.set_verify_callback(SslVerifyMode::PEER, move |ok, ctx| {
            if !ok {
                record
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .note(ctx);
            }
            ok || !insist
        });
        let result = ssl.connect(sock);
        let mut found = findings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let stream = match result {
            Ok(stream) => stream,
            Err(e) => return Err(handshake_error(e, &found)),
        };
        // The callback sees every problem; this only guards against a check that did not
        // run through it.
        let last = stream.ssl().verify_result();
        if last != X509VerifyResult::OK
            && !NAME_MISMATCH.contains(&last.as_raw())
            && found.chain.is_none()
        {
            found.chain = Some(last.error_string().to_string());
        }
        let (trust, verify_error) = match (&found.chain, &found.name) {
            (None, None) => ("Verified", None),
            (None, Some(n)) => ("Trusted", Some(n.clone())),
            (Some(c), _) => ("Untrusted", Some(c.clone())),
        };
        if insist && trust != "Verified" {
            // Not reachable while the callback refuses; never let it through regardless.
            return Err(format!(
                "certificate verify failed: {}",
                verify_error.unwrap_or_default()
            ));
        }
        Ok(ClientTls {
            stream,
            trust,
            verify_error,
        })
    }
}

/// What the certificate check found wrong, first of each kind.
#[derive(Debug, Clone, Default)]
struct Findings {
    /// The chain does not verify (untrusted, expired, bad signature …).
    chain: Option<String>,
    /// The chain verifies but does not name the host.
    name: Option<String>,
}

impl Findings {
    fn note(&mut self, ctx: &X509StoreContextRef) {
        let err = ctx.error();
        let what = format!("{} (depth {})", err.error_string(), ctx.error_depth());
        let slot = if NAME_MISMATCH.contains(&err.as_raw()) {
            &mut self.name
        } else {
            &mut self.chain
        };
        if slot.is_none() {
            *slot = Some(what);
        }
    }

    fn first(&self) -> Option<&str> {
        self.chain.as_deref().or(self.name.as_deref())
    }
}

fn handshake_error<S>(e: HandshakeError<S>, found: &Findings) -> String {
    match e {
        HandshakeError::SetupFailure(stack) => format!("handshake: setup: {}", reasons(&stack)),
        HandshakeError::WouldBlock(_) => "handshake: timed out".to_string(),
        HandshakeError::Failure(mid) => {
            if let Some(why) = found.first() {
                return format!("certificate verify failed: {why}");
            }
            let err = mid.error();
            if err.code() == ErrorCode::SYSCALL {
                return match err.io_error() {
                    Some(io) if is_timeout(io) => "handshake: timed out".to_string(),
                    Some(io) => format!("handshake: {io}"),
                    None => "handshake: the server closed the connection".to_string(),
                };
            }
            match err.ssl_error() {
                Some(stack) => format!("handshake: {}", reasons(stack)),
                None => format!("handshake: {err}"),
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Drains OpenSSL's per-thread error queue, so a stale entry left by anything else on this
/// thread is not taken for an error of the next call.
fn clear_error_queue() {
    let _ = ErrorStack::get();
}

/// Reads a PEM bundle of CA certificates; the error names the file and the reason.
fn read_cas(path: &Path) -> Result<Vec<X509>, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::NotFound => "no such file".to_string(),
            io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        format!("CA file {}: cannot read: {why}", path.display())
    })?;
    match X509::stack_from_pem(&bytes) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!(
            "CA file {}: no PEM certificate in it",
            path.display()
        )),
        Err(e) => Err(format!(
            "CA file {}: bad PEM certificate: {}",
            path.display(),
            reasons(&e)
        )),
    }
}

/// An established client TLS session; Read + Write.
///
/// Over a blocking socket: `read` and `write` block (up to the socket's time-outs; a
/// time-out shows as an error of kind `WouldBlock` or `TimedOut`, after which the session
/// should be abandoned). `Ok(0)` from `read`: the server closed (with or without
/// close_notify).
pub struct ClientTls<S: Read + Write> {
    stream: SslStream<S>,
    trust: &'static str,
    verify_error: Option<String>,
}

impl<S: Read + Write> ClientTls<S> {
    /// The negotiated protocol version, "TLSv1.2" or "TLSv1.3".
    pub fn version(&self) -> String {
        self.stream.ssl().version_str().to_string()
    }

    /// The negotiated cipher in OpenSSL's naming ("TLS_AES_256_GCM_SHA384",
    /// "ECDHE-RSA-AES128-GCM-SHA256").
    pub fn cipher(&self) -> String {
        self.stream
            .ssl()
            .current_cipher()
            .map(|c| c.name().to_string())
            .unwrap_or_default()
    }

    /// The cipher's (secret, algorithm) strength in bits, as Postfix logs it
    /// ("(256/256 bits)").
    pub fn cipher_bits(&self) -> (i32, i32) {
        self.stream
            .ssl()
            .current_cipher()
            .map(|c| {
                let b = c.bits();
                (b.secret, b.algorithm)
            })
            .unwrap_or((0, 0))
    }

    /// "Verified" (chain trusted and name matches), "Trusted" (chain trusted, name not
    /// matched/checked), or "Untrusted" — Postfix's log words.
    pub fn trust(&self) -> &'static str {
        self.trust
    }

    /// Why the certificate is not "Verified" (OpenSSL's reason and the chain depth, e.g.
    /// "self-signed certificate (depth 0)"); `None` when it is.
    pub fn verify_error(&self) -> Option<&str> {
        self.verify_error.as_deref()
    }

    /// The socket (for `peer_addr`, time-outs). Do not read from or write to it: that
    /// would corrupt the TLS stream.
    pub fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    /// The socket, mutably. Do not read from or write to it: that would corrupt the TLS
    /// stream.
    pub fn get_mut(&mut self) -> &mut S {
        self.stream.get_mut()
    }

    /// Sends close_notify (best effort); does not wait for the server's. Write nothing
    /// afterwards.
    pub fn shutdown(&mut self) {
        clear_error_queue();
        let _ = self.stream.shutdown();
    }
}

impl<S: Read + Write> Read for ClientTls<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        clear_error_queue();
        self.stream.read(buf)
    }
}

impl<S: Read + Write> Write for ClientTls<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        clear_error_queue();
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl<S: Read + Write> fmt::Debug for ClientTls<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("version", &self.version())
            .field("cipher", &self.cipher())
            .field("trust", &self.trust)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names() {
        for l in [ClientLevel::May, ClientLevel::Encrypt, ClientLevel::Verify] {
            assert_eq!(ClientLevel::from_name(l.name()), Some(l));
        }
        assert_eq!(ClientLevel::from_name("VERIFY"), Some(ClientLevel::Verify));
        assert_eq!(ClientLevel::from_name("none"), None);
        assert_eq!(ClientLevel::from_name("secure"), None);
    }

    #[test]
    fn findings_order() {
        let f = Findings {
            chain: Some("a".into()),
            name: Some("b".into()),
        };
        assert_eq!(f.first(), Some("a"));
        let f = Findings {
            chain: None,
            name: Some("b".into()),
        };
        assert_eq!(f.first(), Some("b"));
        assert_eq!(Findings::default().first(), None);
    }
}
