//! Next hops as qmgr hands them over (transport(5) syntax), parsed into where to connect.

use std::net::IpAddr;
use std::path::PathBuf;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A mail domain (or host) whose MX records are looked up; `port` for every MX host.
    Mx { domain: String, port: u16 },
    /// One host, no MX lookup (`[host]`, LMTP hosts, IP literals).
    Host { host: String, port: u16 },
    /// An LMTP server on a Unix-domain socket.
    Unix(PathBuf),
}

/// Parses an IP literal as written in a next hop: `10.0.0.5`, `ipv6:2001:db8::1`,
/// `2001:db8::1`.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix("ipv6:")
        .or_else(|| host.strip_prefix("IPv6:"))
        .unwrap_or(host);
    h.parse().ok()
}

/// Splits `host:port` where host may be `[bracketed]` (and contain colons) → (host,
/// bracketed, port).
fn split_host_port(s: &str, default_port: u16) -> Result<(String, bool, u16), String> {
    let port_of = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("bad port {p:?}"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in {s:?}"))?;
        let port = match after {
            "" => default_port,
            p => port_of(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("junk after ']' in {s:?}"))?,
            )?,
        };
        return Ok((host.to_string(), true, port));
    }
    // A bare IPv6 address has several colons: no port then.
    if s.matches(':').count() > 1 {
        return Ok((s.to_string(), false, default_port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), false, port_of(p)?)),
        None => Ok((s.to_string(), false, default_port)),
    }
}

/// Parses a next hop. `lmtp` selects LMTP's forms (`unix:/path`, `inet:host:port`, no MX
/// lookups); `default_port` is smtp_tcp_port or lmtp_tcp_port.
pub fn parse(nexthop: &str, lmtp: bool, default_port: u16) -> Result<Target, String> {
    let n = nexthop.trim();
    if n.is_empty() {
        return Err("empty next hop".into());
    }
    if lmtp {
        if let Some(path) = n.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("empty socket path".into());
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if n.starts_with('/') {
            return Ok(Target::Unix(PathBuf::from(n)));
        }
        let n = n.strip_prefix("inet:").unwrap_or(n);
        let (host, _, port) = split_host_port(n, default_port)?;
        check_host(&host)?;
        return Ok(Target::Host { host, port });
    }
    let (host, bracketed, port) = split_host_port(n, default_port)?;
    check_host(&host)?;
    if bracketed || ip_literal(&host).is_some() {
        Ok(Target::Host { host, port })
    } else {
        Ok(Target::Mx {
            domain: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
        })
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host name".into());
    }
    if ip_literal(host).is_some() {
        return Ok(());
    }
    let ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!("bad host name {host:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str, port: u16) -> Target {
        Target::Host {
            host: h.into(),
            port,
        }
    }

    #[test]
    fn smtp_forms() {
        assert_eq!(
            parse("Example.COM", false, 25),
            Ok(Target::Mx {
                domain: "example.com".into(),
                port: 25
            })
        );
        assert_eq!(
            parse("example.com:2525", false, 25),
            Ok(Target::Mx {
                domain: "example.com".into(),
                port: 2525
            })
        );
        assert_eq!(
            parse("[mx.example.com]", false, 25),
            Ok(host("mx.example.com", 25))
        );
        assert_eq!(
            parse("[10.0.0.5]:587", false, 25),
            Ok(host("10.0.0.5", 587))
        );
        assert_eq!(parse("10.0.0.5", false, 25), Ok(host("10.0.0.5", 25)));
        assert_eq!(
            parse("[ipv6:2001:db8::1]:26", false, 25),
            Ok(host("ipv6:2001:db8::1", 26))
        );
        assert_eq!(parse("2001:db8::1", false, 25), Ok(host("2001:db8::1", 25)));
        assert!(parse("", false, 25).is_err());
        assert!(parse("[x", false, 25).is_err());
        assert!(parse("[x]y", false, 25).is_err());
        assert!(parse("x:0", false, 25).is_err());
        assert!(parse("x:99999", false, 25).is_err());
        assert!(parse("a b", false, 25).is_err());
    }

    #[test]
    fn lmtp_forms() {
        assert_eq!(
            parse("unix:/run/dovecot/lmtp", true, 24),
            Ok(Target::Unix("/run/dovecot/lmtp".into()))
        );
        assert_eq!(
            parse("inet:127.0.0.1:2424", true, 24),
            Ok(host("127.0.0.1", 2424))
        );
        assert_eq!(parse("inet:lmtp.test", true, 24), Ok(host("lmtp.test", 24)));
        assert_eq!(parse("[lmtp.test]:25", true, 24), Ok(host("lmtp.test", 25)));
        assert!(parse("unix:", true, 24).is_err());
        assert_eq!(ip_literal("ipv6:::1"), Some("::1".parse().unwrap()));
    }
}
