//! The server context: certificate chain, private key, protocol and cipher policy.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslContextRef, SslMethod, SslOptions, SslVersion};
use openssl::x509::X509;

/// A loaded certificate chain and key with Petrel's TLS policy: TLS 1.2 and 1.3 only,
/// Mozilla's "intermediate" cipher list (ECDHE/DHE with AES-GCM or ChaCha20-Poly1305),
/// no client-initiated renegotiation.
///
/// Cheap to clone (an `Arc`). To reload, [`load`](ServerConfig::load) a new one and replace
/// the old; connections already set up keep using the context they started with.
#[derive(Clone)]
pub struct ServerConfig {
    inner: Arc<Inner>,
}

struct Inner {
    acceptor: SslAcceptor,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("cert_file", &self.inner.cert_file)
            .field("key_file", &self.inner.key_file)
            .finish()
    }
}

impl ServerConfig {
    /// Loads a PEM certificate chain (server certificate first, then any intermediates) from
    /// `cert_file` and an unencrypted PEM private key from `key_file`, and checks that the
    /// key belongs to the certificate. Both may name the same file.
    ///
    /// The error is one line naming the file and what is wrong with it (missing,
    /// unreadable, not PEM, no certificate / key in it, passphrase-protected key, key does
    /// not match the certificate), fit to show an operator as it is.
    ///
    /// An expired certificate loads (as in Postfix): clients decide what they accept.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, String> {
        let chain = read_chain(cert_file)?;
        let key = read_key(key_file)?;
        let acceptor = build(&chain, &key).map_err(|e| match e {
            BuildError::Ssl(what, stack) => format!(
                "TLS setup with certificate file {} and key file {}: {what}: {}",
                cert_file.display(),
                key_file.display(),
                reasons(&stack)
            ),
            BuildError::Mismatch => format!(
                "private key file {} does not match the certificate in {} \
                 (the server's own certificate must come first in that file)",
                key_file.display(),
                cert_file.display()
            ),
            BuildError::Policy => "TLS setup: could not enforce TLS 1.2 as the minimum \
                                   protocol version"
                .to_string(),
        })?;
        Ok(ServerConfig {
            inner: Arc::new(Inner {
                acceptor,
                cert_file: cert_file.to_path_buf(),
                key_file: key_file.to_path_buf(),
            }),
        })
    }

    /// The certificate file this configuration was loaded from.
    pub fn cert_file(&self) -> &Path {
        &self.inner.cert_file
    }

    /// The key file this configuration was loaded from.
    pub fn key_file(&self) -> &Path {
        &self.inner.key_file
    }

    pub(crate) fn context(&self) -> &SslContextRef {
        self.inner.acceptor.context()
    }
}

enum BuildError {
    Ssl(&'static str, ErrorStack),
    Mismatch,
    Policy,
}

fn build(chain: &[X509], key: &PKey<Private>) -> Result<SslAcceptor, BuildError> {
    let ssl = |what| move |e| BuildError::Ssl(what, e);
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(ssl("creating the context"))?;
    // mozilla_intermediate_v5 only sets NO_TLSV1 | NO_TLSV1_1; say "1.2 or better" directly so
    // nothing (an openssl.cnf, a future default) can widen it.
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(ssl("setting the minimum protocol version"))?;
    if b.min_proto_version() != Some(SslVersion::TLS1_2) {
        return Err(BuildError::Policy);
    }
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::IGNORE_UNEXPECTED_EOF);
    let (leaf, rest) = chain.split_first().ok_or(BuildError::Mismatch)?;
    b.set_certificate(leaf)
        .map_err(ssl("using the certificate"))?;
    for c in rest {
        b.add_extra_chain_cert(c.clone())
            .map_err(ssl("adding a chain certificate"))?;
    }
    // OpenSSL already compares the key with the certificate here ("key values mismatch").
    b.set_private_key(key).map_err(|e| {
        if reasons(&e).contains("mismatch") {
            BuildError::Mismatch
        } else {
            BuildError::Ssl("using the private key", e)
        }
    })?;
    b.check_private_key().map_err(|_| BuildError::Mismatch)?;
    Ok(b.build())
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        format!("{what} {}: cannot read: {why}", path.display())
    })?;
    if !contains(&bytes, b"-----BEGIN ") {
        return Err(format!(
            "{what} {}: not a PEM file (no \"-----BEGIN\" line)",
            path.display()
        ));
    }
    Ok(bytes)
}

fn read_chain(path: &Path) -> Result<Vec<X509>, String> {
    let what = "certificate file";
    let bytes = read_file(path, what)?;
    match X509::stack_from_pem(&bytes) {
        Ok(chain) if !chain.is_empty() => Ok(chain),
        Ok(_) => Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        )),
        Err(e) => Err(format!(
            "{what} {}: bad PEM certificate: {}",
            path.display(),
            reasons(&e)
        )),
    }
}

fn read_key(path: &Path) -> Result<PKey<Private>, String> {
    let what = "private key file";
    let bytes = read_file(path, what)?;
    if contains(&bytes, b"ENCRYPTED") {
        return Err(format!(
            "{what} {}: the key is protected by a passphrase; Petrel needs it unencrypted \
             (openssl pkey -in FILE -out NEWFILE)",
            path.display()
        ));
    }
    // The callback answers any passphrase prompt with an empty one instead of letting
    // OpenSSL ask on a terminal.
    PKey::private_key_from_pem_callback(&bytes, |_| Ok(0)).map_err(|e| {
        if contains(&bytes, b"PRIVATE KEY-----") {
            format!(
                "{what} {}: bad PEM private key: {}",
                path.display(),
                reasons(&e)
            )
        } else {
            format!("{what} {}: no PEM private key in it", path.display())
        }
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// OpenSSL's reasons ("unsupported protocol"), without the error codes and source lines.
pub(crate) fn reasons(stack: &ErrorStack) -> String {
    let mut out: Vec<String> = Vec::new();
    for e in stack.errors() {
        let r = e
            .reason()
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.is_empty() {
        "unknown OpenSSL error".to_string()
    } else {
        out.join("; ")
    }
}
