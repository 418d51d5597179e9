//! Who may send what: networks, domains and the restriction lists, as Postfix evaluates
//! them. Pure: the caller supplies the facts (is the client trusted, is it authenticated,
//! does the local user exist).

use petrel_config::Config;
use std::net::IpAddr;
use std::time::Duration;

/// A network in CIDR notation (`127.0.0.0/8`, `[::1]/128`, a bare address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `a.b.c.d/n`, `[v6]/n`, `v6/n` or a bare address.
    pub fn parse(s: &str) -> Result<Network, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let a = a.trim_start_matches('[').trim_end_matches(']');
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("bad network address {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("bad prefix length in {s:?}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }

    /// True when `ip` is inside this network (IPv4-mapped IPv6 clients match IPv4 nets).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(c)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(c) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(c)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(c) & mask
            }
            _ => false,
        }
    }
}

/// One step of a restriction list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    PermitMynetworks,
    PermitSaslAuthenticated,
    RejectUnauthDestination,
    DeferUnauthDestination,
    RejectUnlistedRecipient,
    Permit,
    Reject,
}

impl Restriction {
    fn parse(s: &str) -> Result<Restriction, String> {
        Ok(match s {
            "permit_mynetworks" => Restriction::PermitMynetworks,
            "permit_sasl_authenticated" => Restriction::PermitSaslAuthenticated,
            "reject_unauth_destination" => Restriction::RejectUnauthDestination,
            "defer_unauth_destination" => Restriction::DeferUnauthDestination,
            "reject_unlisted_recipient" | "reject_unknown_recipient" => {
                Restriction::RejectUnlistedRecipient
            }
            "permit" => Restriction::Permit,
            "reject" => Restriction::Reject,
            other => return Err(format!("unknown restriction {other:?}")),
        })
    }
}

/// What a restriction list decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by a `permit…` step: skip the rest of this list.
    Permit,
    /// Nothing decided: go on.
    Dunno,
    /// Refused: code, enhanced code, text.
    Reject(u16, &'static str, String),
}

/// The facts about one RCPT.
pub struct Facts<'a> {
    pub client_trusted: bool,
    pub authenticated: bool,
    pub address: &'a str,
    /// The recipient's domain is ours (mydestination) or one we relay for.
    pub destination_ok: bool,
    /// For local domains: does the user or alias exist. `None` for other domains.
    pub local_exists: Option<bool>,
}

/// Evaluates one list in order, as Postfix does.
pub fn evaluate(list: &[Restriction], f: &Facts<'_>) -> Verdict {
    for r in list {
        let v = match r {
            Restriction::PermitMynetworks if f.client_trusted => Verdict::Permit,
            Restriction::PermitSaslAuthenticated if f.authenticated => Verdict::Permit,
            Restriction::RejectUnauthDestination if !f.destination_ok => Verdict::Reject(
                554,
                "5.7.1",
                format!("<{}>: Relay access denied", f.address),
            ),
            Restriction::DeferUnauthDestination if !f.destination_ok => Verdict::Reject(
                454,
                "4.7.1",
                format!("<{}>: Relay access denied", f.address),
            ),
            Restriction::RejectUnlistedRecipient if f.local_exists == Some(false) => {
                unknown_user(f.address)
            }
            Restriction::Permit => Verdict::Permit,
            Restriction::Reject => Verdict::Reject(
                554,
                "5.7.1",
                format!("<{}>: Recipient address rejected: Access denied", f.address),
            ),
            _ => Verdict::Dunno,
        };
        if v != Verdict::Dunno {
            return v;
        }
    }
    Verdict::Dunno
}

/// The 550 for an unknown local recipient.
pub fn unknown_user(address: &str) -> Verdict {
    Verdict::Reject(
        550,
        "5.1.1",
        format!("<{address}>: Recipient address rejected: User unknown in local recipient table"),
    )
}

/// `smtpd_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLevel {
    /// No TLS.
    None,
    /// Offer STARTTLS.
    May,
    /// Require TLS before MAIL and AUTH.
    Encrypt,
}

/// `smtpd_sender_login_maps`: which logins own which sender addresses.
#[derive(Debug, Clone, Default)]
pub struct SenderLogins {
    entries: Vec<(String, Vec<String>)>,
}

impl SenderLogins {
    /// Parses the map files: `address-or-@domain  login[, login…]` per line.
    pub fn load(files: &[String]) -> Result<SenderLogins, String> {
        let mut entries = Vec::new();
        for f in files {
            let path = f
                .split_once(':')
                .filter(|(t, _)| !t.contains('/'))
                .map_or(f.as_str(), |(_, p)| p);
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("smtpd_sender_login_maps: {path}: {e}"))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let mut parts = line
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|x| !x.is_empty());
                let key = parts.next().unwrap_or_default().to_ascii_lowercase();
                let logins: Vec<String> = parts.map(str::to_string).collect();
                if logins.is_empty() {
                    return Err(format!("{path}, line {}: no login for {key}", i + 1));
                }
                entries.push((key, logins));
            }
        }
        Ok(SenderLogins { entries })
    }

    /// True when the map is in use.
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// True when `login` owns `sender` (exact address first, then `@domain`).
    pub fn owns(&self, login: &str, sender: &str) -> bool {
        let sender = sender.to_ascii_lowercase();
        let domain = sender.rsplit_once('@').map(|(_, d)| format!("@{d}"));
        let lookup = |k: &str| {
            self.entries
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, l)| l)
        };
        let list = lookup(&sender).or_else(|| domain.as_deref().and_then(lookup));
        list.is_some_and(|l| l.iter().any(|x| x == login))
    }
}

/// Everything smtpd reads from petrel.conf.
#[derive(Debug, Clone)]
pub struct Settings {
    pub myhostname: String,
    pub banner: String,
    pub mydestination: Vec<String>,
    pub relay_domains: Vec<String>,
    pub mynetworks: Vec<Network>,
    pub relay_restrictions: Vec<Restriction>,
    pub recipient_restrictions: Vec<Restriction>,
    pub reject_unlisted: bool,
    pub message_size_limit: u64,
    pub recipient_limit: usize,
    pub hard_error_limit: u32,
    pub timeout: Duration,
    pub line_length_limit: usize,
    pub disable_vrfy: bool,
    pub client_connection_limit: usize,
    pub connection_limit: usize,
    pub recipient_delimiter: String,
    pub tls_level: TlsLevel,
    /// A certificate was loaded (set by main once the TLS configuration is ready).
    pub tls_available: bool,
    pub tls_wrappermode: bool,
    pub tls_auth_only: bool,
    pub sasl_enabled: bool,
    pub sender_logins: SenderLogins,
    pub greet_delay: Duration,
}

impl Settings {
    /// Reads and checks the parameters.
    pub fn from_config(c: &Config) -> Result<Settings, String> {
        let nets = c
            .get_list("mynetworks")
            .iter()
            .map(|n| Network::parse(n).map_err(|e| format!("mynetworks: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let list = |name: &str| {
            c.get_list(name)
                .iter()
                .map(|r| Restriction::parse(r).map_err(|e| format!("{name}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        let lower = |v: Vec<String>| v.into_iter().map(|d| d.to_ascii_lowercase()).collect();
        Ok(Settings {
            myhostname: c.get("myhostname"),
            banner: c.get("smtpd_banner"),
            mydestination: lower(c.get_list("mydestination")),
            relay_domains: lower(c.get_list("relay_domains")),
            mynetworks: nets,
            relay_restrictions: list("smtpd_relay_restrictions")?,
            recipient_restrictions: list("smtpd_recipient_restrictions")?,
            reject_unlisted: c.get_bool("smtpd_reject_unlisted_recipient"),
            message_size_limit: c.get_int("message_size_limit").max(0) as u64,
            recipient_limit: c.get_int("smtpd_recipient_limit").max(1) as usize,
            hard_error_limit: c.get_int("smtpd_hard_error_limit").max(1) as u32,
            timeout: c.get_time("smtpd_timeout").max(Duration::from_secs(1)),
            line_length_limit: c.get_int("line_length_limit").max(512) as usize,
            disable_vrfy: c.get_bool("disable_vrfy_command"),
            client_connection_limit: c.get_int("smtpd_client_connection_count_limit").max(0)
                as usize,
            connection_limit: c.get_int("smtpd_connection_limit").max(1) as usize,
            recipient_delimiter: c.get("recipient_delimiter"),
            tls_level: match c.get("smtpd_tls_security_level").as_str() {
                "" | "none" => TlsLevel::None,
                "may" => TlsLevel::May,
                "encrypt" => TlsLevel::Encrypt,
                other => {
                    return Err(format!(
                        "smtpd_tls_security_level: {other:?} is not none, may or encrypt"
                    ))
                }
            },
            tls_available: false,
            tls_wrappermode: c.get_bool("smtpd_tls_wrappermode"),
            tls_auth_only: c.get_bool("smtpd_tls_auth_only"),
            sasl_enabled: c.get_bool("smtpd_sasl_auth_enable"),
            sender_logins: SenderLogins::load(&c.get_list("smtpd_sender_login_maps"))?,
            greet_delay: c.get_time("smtpd_greet_delay"),
        })
    }

    /// True when the client address is in mynetworks.
    pub fn trusted(&self, ip: IpAddr) -> bool {
        self.mynetworks.iter().any(|n| n.contains(ip))
    }

    /// True for our own domains. An empty domain (`RCPT TO:<postmaster>`) is ours.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        domain.is_empty() || self.mydestination.iter().any(|d| d == domain)
    }

    /// True for domains we relay for: listed, or a subdomain of a listed one.
    pub fn is_relay_domain(&self, domain: &str) -> bool {
        self.relay_domains.iter().any(|d| {
            domain == d
                || domain
                    .strip_suffix(d.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n = Network::parse("127.0.0.0/8").unwrap();
        assert!(n.contains("127.1.2.3".parse().unwrap()));
        assert!(!n.contains("128.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:127.0.0.1".parse().unwrap()), "v4-mapped");
        let v6 = Network::parse("[::1]/128").unwrap();
        assert!(v6.contains("::1".parse().unwrap()));
        assert!(!v6.contains("::2".parse().unwrap()));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("nonsense").is_err());
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }

    fn facts(trusted: bool, dest_ok: bool, exists: Option<bool>) -> Facts<'static> {
        Facts {
            client_trusted: trusted,
            authenticated: false,
            address: "x@y",
            destination_ok: dest_ok,
            local_exists: exists,
        }
    }

    #[test]
    fn default_relay_rules() {
        let list = [
            Restriction::PermitMynetworks,
            Restriction::PermitSaslAuthenticated,
            Restriction::RejectUnauthDestination,
        ];
        assert_eq!(evaluate(&list, &facts(true, false, None)), Verdict::Permit);
        assert!(
            matches!(evaluate(&list, &facts(false, false, None)), Verdict::Reject(554, "5.7.1", t) if t.contains("Relay access denied"))
        );
        assert_eq!(
            evaluate(&list, &facts(false, true, Some(true))),
            Verdict::Dunno
        );
        let unlisted = [Restriction::RejectUnlistedRecipient];
        assert!(matches!(
            evaluate(&unlisted, &facts(true, true, Some(false))),
            Verdict::Reject(550, "5.1.1", _)
        ));
    }

    #[test]
    fn sender_login_map() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("logins");
        std::fs::write(
            &f,
            "# who may send as whom\nalice@example.org alice\n@team.example alice, bob\n",
        )
        .unwrap();
        let m = SenderLogins::load(&[f.display().to_string()]).unwrap();
        assert!(m.enabled());
        assert!(m.owns("alice", "Alice@Example.org"));
        assert!(!m.owns("bob", "alice@example.org"));
        assert!(m.owns("bob", "x@team.example"));
        assert!(!m.owns("carol", "x@team.example"));
        assert!(!m.owns("alice", "someone@else.example"));
        std::fs::write(&f, "lonely@example.org\n").unwrap();
        assert!(SenderLogins::load(&[f.display().to_string()])
            .unwrap_err()
            .contains("line 1"));
    }

    #[test]
    fn relay_domains_match_subdomains() {
        let c = Config::parse(
            "relay_domains = example.com\nmydestination = localhost\n",
            std::path::Path::new("x"),
        )
        .unwrap();
        let s = Settings::from_config(&c).unwrap();
        assert!(s.is_relay_domain("example.com"));
        assert!(s.is_relay_domain("mx.example.com"));
        assert!(!s.is_relay_domain("badexample.com"));
        assert!(s.is_local_domain("localhost"));
        assert!(s.is_local_domain(""));
    }
}
