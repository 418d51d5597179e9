//! Self-signed certificates for sandboxes and fresh installations.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Name, X509};

use crate::config::reasons;

/// Days a generated certificate is valid.
const VALID_DAYS: u32 = 3650;

/// Generates an RSA-2048 key and a self-signed certificate for `hostname` (subject CN and
/// subjectAltName; an IP address gets an IP subjectAltName), valid from now for 10 years,
/// SHA-256, an end-entity certificate for TLS servers, and writes them as PEM:
/// the certificate to `cert_out` (mode 0644), the PKCS#8 key to `key_out` (mode 0600).
/// When both paths are the same, one file (mode 0600) holds the key and the certificate;
/// [`ServerConfig::load`](crate::ServerConfig::load) accepts that too.
///
/// RSA rather than ECDSA because every SMTP client that does TLS at all can use it.
///
/// Existing files are replaced (each through a temporary file and a rename, so a reader
/// never sees half a file); ownership is the caller's business. The directories must exist.
pub fn self_signed(hostname: &str, cert_out: &Path, key_out: &Path) -> Result<(), String> {
    let what = || format!("self-signed certificate for {hostname:?}");
    let ip: Option<IpAddr> = hostname.parse().ok();
    if ip.is_none() && !valid_hostname(hostname) {
        return Err(format!("{}: not a valid host name", what()));
    }
    let (key_pem, cert_pem) =
        generate(hostname, ip.is_some()).map_err(|e| format!("{}: {}", what(), reasons(&e)))?;
    if cert_out == key_out {
        let mut both = key_pem;
        both.extend_from_slice(&cert_pem);
        let tmp = write_tmp(key_out, &both, 0o600)?;
        return publish(&tmp, key_out);
    }
    let key_tmp = write_tmp(key_out, &key_pem, 0o600)?;
    let cert_tmp = match write_tmp(cert_out, &cert_pem, 0o644) {
        Ok(t) => t,
        Err(e) => {
            let _ = fs::remove_file(&key_tmp);
            return Err(e);
        }
    };
    if let Err(e) = publish(&key_tmp, key_out) {
        let _ = fs::remove_file(&cert_tmp);
        return Err(e);
    }
    publish(&cert_tmp, cert_out)
}

/// Letters, digits, hyphens and dots, as a DNS name in a certificate must be.
fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn generate(hostname: &str, is_ip: bool) -> Result<(Vec<u8>, Vec<u8>), ErrorStack> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;

    let mut name = X509Name::builder()?;
    // The X.509 upper bound for a common name is 64 characters; longer names live in the
    // subjectAltName alone, which is what clients check anyway.
    if hostname.len() <= 64 {
        name.append_entry_by_nid(Nid::COMMONNAME, hostname)?;
    } else {
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Petrel")?;
    }
    let name = name.build();

    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;

    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(VALID_DAYS)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()?,
    )?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let san = {
        let mut san = SubjectAlternativeName::new();
        if is_ip {
            san.ip(hostname);
        } else {
            san.dns(hostname);
        }
        san.build(&b.x509v3_context(None, None))?
    };
    b.append_extension(san)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&b.x509v3_context(None, None))?;
    b.append_extension(aki)?;
    b.sign(&key, MessageDigest::sha256())?;
    let cert = b.build();

    Ok((key.private_key_to_pem_pkcs8()?, cert.to_pem()?))
}

/// Writes `data` to a new temporary file next to `path`, with `mode`, and syncs it.
fn write_tmp(path: &Path, data: &[u8], mode: u32) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            // The mode regardless of the umask.
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.write_all(data)?;
            f.sync_all()
        });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    Ok(tmp)
}

fn publish(tmp: &Path, path: &Path) -> Result<(), String> {
    fs::rename(tmp, path).map_err(|e| {
        let _ = fs::remove_file(tmp);
        format!("cannot write {}: {e}", path.display())
    })
}
