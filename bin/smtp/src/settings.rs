//! What the agent reads from petrel.conf, once, at start.

use petrel_config::Config;
use petrel_maps::table::Tables;
use petrel_tls::client::{ClientConfig, ClientLevel};
use std::net::SocketAddr;
use std::time::Duration;

/// The agent's settings, shared by its delivery threads.
pub struct Settings {
    /// Speaking LMTP (service `lmtp`) rather than SMTP.
    pub lmtp: bool,
    pub helo_name: String,
    pub connect_timeout: Duration,
    pub helo_timeout: Duration,
    pub mail_timeout: Duration,
    pub rcpt_timeout: Duration,
    pub data_init_timeout: Duration,
    pub data_xfer_timeout: Duration,
    pub data_done_timeout: Duration,
    pub quit_timeout: Duration,
    /// Port for MX hosts and next hops without one.
    pub default_port: u16,
    /// STARTTLS policy: None for `none`.
    pub tls_level: Option<ClientLevel>,
    pub tls: Option<ClientConfig>,
    /// smtp_sasl_password_maps when smtp_sasl_auth_enable is on.
    pub sasl: Option<Tables>,
    /// How long an idle connection is kept for reuse (0: never).
    pub cache_time: Duration,
}

/// What must be read with the privileges the agent starts with (password maps may be
/// readable by root only, as with Postfix).
pub struct Prepared {
    pub sasl: Option<Tables>,
    pub tls_level: Option<ClientLevel>,
    pub tls: Option<ClientConfig>,
}

/// Reads the password maps and TLS trust anchors; errors name the parameter.
pub fn prepare(c: &Config, lmtp: bool) -> Result<Prepared, String> {
    let sasl = if c.get_bool("smtp_sasl_auth_enable") && !lmtp {
        let t = Tables::open(&c.get_list("smtp_sasl_password_maps"))
            .map_err(|e| format!("smtp_sasl_password_maps: {e}"))?;
        for w in t.warnings() {
            log::warn!("smtp_sasl_password_maps: {w}");
        }
        Some(t)
    } else {
        None
    };
    let level = c.get("smtp_tls_security_level");
    let tls_level = match level.trim().to_ascii_lowercase().as_str() {
        "" | "none" => None,
        "may" => Some(ClientLevel::May),
        "encrypt" => Some(ClientLevel::Encrypt),
        "verify" | "secure" => Some(ClientLevel::Verify),
        other => {
            return Err(format!(
                "smtp_tls_security_level: unknown level {other:?} (none, may, encrypt or verify)"
            ))
        }
    };
    // LMTP goes to a local server (Dovecot): no STARTTLS.
    let tls_level = if lmtp { None } else { tls_level };
    let tls = match tls_level {
        None => None,
        Some(l) => {
            let ca = c.get("smtp_tls_CAfile");
            let ca = (!ca.trim().is_empty()).then(|| std::path::PathBuf::from(ca.trim()));
            Some(ClientConfig::new(l, ca.as_deref()).map_err(|e| format!("smtp_tls_CAfile: {e}"))?)
        }
    };
    Ok(Prepared {
        sasl,
        tls_level,
        tls,
    })
}

impl Settings {
    pub fn new(c: &Config, lmtp: bool, p: Prepared) -> Settings {
        let port_param = if lmtp {
            "lmtp_tcp_port"
        } else {
            "smtp_tcp_port"
        };
        Settings {
            lmtp,
            helo_name: c.get("smtp_helo_name"),
            connect_timeout: c
                .get_time("smtp_connect_timeout")
                .max(Duration::from_secs(1)),
            helo_timeout: c.get_time("smtp_helo_timeout").max(Duration::from_secs(1)),
            mail_timeout: c.get_time("smtp_mail_timeout").max(Duration::from_secs(1)),
            rcpt_timeout: c.get_time("smtp_rcpt_timeout").max(Duration::from_secs(1)),
            data_init_timeout: c
                .get_time("smtp_data_init_timeout")
                .max(Duration::from_secs(1)),
            data_xfer_timeout: c
                .get_time("smtp_data_xfer_timeout")
                .max(Duration::from_secs(1)),
            data_done_timeout: c
                .get_time("smtp_data_done_timeout")
                .max(Duration::from_secs(1)),
            quit_timeout: c.get_time("smtp_quit_timeout").max(Duration::from_secs(1)),
            default_port: u16::try_from(c.get_int(port_param)).unwrap_or(25),
            tls_level: p.tls_level,
            tls: p.tls,
            sasl: p.sasl,
            cache_time: c.get_time("smtp_connection_cache_time_limit"),
        }
    }
}

/// dns_servers: `ip:port` or a bare `ip` (port 53); `[v6]:port` for IPv6 with a port.
pub fn dns_servers(items: &[String]) -> Result<Vec<SocketAddr>, String> {
    items
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| {
                    s.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| format!("dns_servers: {s:?} is not an address or address:port"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_server_forms() {
        let v = dns_servers(&[
            "127.0.0.1:5353".into(),
            "10.0.0.1".into(),
            "[::1]:53".into(),
        ])
        .unwrap();
        assert_eq!(v[0].port(), 5353);
        assert_eq!(v[1].port(), 53);
        assert!(v[2].is_ipv6());
        assert!(dns_servers(&["nameserver".into()]).is_err());
    }
}
