//! qmgr's pure decisions: where a recipient goes, when to retry, when to give up.

use std::time::Duration;

/// Settings qmgr reads once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub minimal_backoff: Duration,
    pub maximal_backoff: Duration,
    pub queue_run_delay: Duration,
    pub maximal_queue_lifetime: Duration,
    pub bounce_queue_lifetime: Duration,
    pub local_concurrency: usize,
    pub dest_concurrency: usize,
    pub dest_recipient_limit: usize,
    pub process_limit: usize,
    pub delay_warning: Duration,
    pub myhostname: String,
    pub double_bounce_sender: String,
    pub notice_recipient: String,
    pub active_limit: usize,
}

/// Where one recipient goes: a transport (the delivery agent's service, `private/NAME`) and
/// a next hop in that transport's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `local`, `smtp`, `lmtp`, `error` …
    pub transport: String,
    /// `example.com` (MX lookup), `[host]:port`, `unix:/path`; for `error` the DSN text.
    pub nexthop: String,
}

/// The routing settings: transport_maps, then mydestination → local_transport, then
/// default_transport with relayhost.
pub struct Router {
    pub mydestination: Vec<String>,
    pub transport_maps: petrel_maps::table::Tables,
    pub local_transport: String,
    pub default_transport: String,
    pub relayhost: String,
    pub recipient_delimiter: String,
}

/// A transport name that can be a service name (`private/NAME`).
pub fn valid_transport(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Router {
    fn is_local_domain(&self, address: &str) -> bool {
        match address.rsplit_once('@') {
            None => true,
            Some((_, domain)) => {
                let d = domain.trim_end_matches('.');
                self.mydestination.iter().any(|m| m.eq_ignore_ascii_case(d))
            }
        }
    }

    /// The route of an address (Postfix's trivial-rewrite resolve, without rewriting).
    pub fn route(&self, address: &str) -> Route {
        let domain = address
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
            .unwrap_or_default();
        let local = self.is_local_domain(address);
        let class_default = if local {
            &self.local_transport
        } else {
            &self.default_transport
        };
        let (def_t, def_n) = petrel_maps::table::split_transport(class_default);
        let default_nexthop = if local || !def_n.is_empty() {
            def_n.to_string()
        } else if !self.relayhost.is_empty() {
            self.relayhost.clone()
        } else {
            domain.clone()
        };
        let found = petrel_maps::table::transport_lookup(
            &self.transport_maps,
            address,
            &self.recipient_delimiter,
        );
        match found {
            Some(value) => {
                let (t, n) = petrel_maps::table::split_transport(value);
                let transport = if t.is_empty() { def_t } else { t };
                let nexthop = if !n.is_empty() {
                    n.to_string()
                } else if local {
                    def_n.to_string()
                } else {
                    domain
                };
                Route {
                    transport: transport.to_string(),
                    nexthop,
                }
            }
            None => Route {
                transport: def_t.to_string(),
                nexthop: default_nexthop,
            },
        }
    }
}

/// How long to wait before the next attempt: the message's age, at least the minimal and
/// at most the maximal back-off time. So the wait roughly doubles with every attempt.
pub fn backoff(age: Duration, s: &Settings) -> Duration {
    age.clamp(s.minimal_backoff, s.maximal_backoff.max(s.minimal_backoff))
}

/// True when a message of this age has been queued too long (bounces of bounces — null
/// sender — have their own, usually shorter, lifetime).
pub fn expired(age: Duration, null_sender: bool, s: &Settings) -> bool {
    let life = if null_sender {
        s.bounce_queue_lifetime.min(s.maximal_queue_lifetime)
    } else {
        s.maximal_queue_lifetime
    };
    age >= life
}

/// Whether the sender wants a failure notice for this recipient (RFC 3461 NOTIFY).
pub fn wants_failure_notice(notify: &str) -> bool {
    if notify.is_empty() {
        return true;
    }
    let n = notify.to_ascii_uppercase();
    !n.contains("NEVER") && n.contains("FAILURE")
}

/// The DSN status and text of an `error:` transport's next hop ("5.1.1 gone" →
/// ("5.1.1", "gone")); without a status, 5.0.0. A 4.x.x status is made 5.x.x: the error
/// transport always bounces.
pub fn error_transport_text(nexthop: &str) -> (String, String) {
    let t = nexthop.trim();
    let (first, rest) = t.split_once(' ').unwrap_or((t, ""));
    let parts: Vec<&str> = first.split('.').collect();
    let is_status = parts.len() == 3
        && matches!(parts[0], "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if is_status {
        let text = if rest.trim().is_empty() {
            "delivery refused by the error transport"
        } else {
            rest.trim()
        };
        (format!("5.{}.{}", parts[1], parts[2]), text.to_string())
    } else {
        let text = if t.is_empty() {
            "delivery refused by the error transport"
        } else {
            t
        };
        ("5.0.0".into(), text.to_string())
    }
}

/// Whether the sender wants a delay notice for this recipient (RFC 3461 NOTIFY; without
/// NOTIFY, delay notices are sent as Postfix does when delay_warning_time is set).
pub fn wants_delay_notice(notify: &str) -> bool {
    if notify.is_empty() {
        return true;
    }
    let n = notify.to_ascii_uppercase();
    !n.contains("NEVER") && n.contains("DELAY")
}

/// The line in `defer/ID` that records that the delay notice was sent.
pub const DELAY_NOTICE_SENT: &str = "!delay-notice-sent";

/// One line of `defer/ID`: `ADDRESS TAB DSN TAB REASON`.
pub fn defer_line(address: &str, dsn: &str, reason: &str) -> String {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    format!("{}\t{}\t{}\n", clean(address), clean(dsn), clean(reason))
}

/// The last recorded (dsn, reason) for `address` in the text of `defer/ID`.
pub fn last_defer_reason(text: &str, address: &str) -> Option<(String, String)> {
    text.lines()
        .rev()
        .filter_map(|l| {
            let mut p = l.splitn(3, '\t');
            Some((p.next()?, p.next()?, p.next()?))
        })
        .find(|(a, _, _)| *a == address)
        .map(|(_, d, r)| (d.to_string(), r.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            minimal_backoff: Duration::from_secs(300),
            maximal_backoff: Duration::from_secs(4000),
            queue_run_delay: Duration::from_secs(300),
            maximal_queue_lifetime: Duration::from_secs(5 * 86400),
            bounce_queue_lifetime: Duration::from_secs(86400),
            local_concurrency: 4,
            dest_concurrency: 20,
            dest_recipient_limit: 50,
            process_limit: 100,
            delay_warning: Duration::ZERO,
            myhostname: "h".into(),
            double_bounce_sender: "double-bounce".into(),
            notice_recipient: "postmaster".into(),
            active_limit: 100,
        }
    }

    fn router(map: &str, relayhost: &str) -> Router {
        Router {
            mydestination: vec!["example.org".into(), "localhost".into()],
            transport_maps: petrel_maps::table::Tables::from_tables(vec![
                petrel_maps::table::Table::parse(map, "transport").unwrap(),
            ]),
            local_transport: "local".into(),
            default_transport: "smtp".into(),
            relayhost: relayhost.into(),
            recipient_delimiter: "+".into(),
        }
    }

    fn r(t: &str, n: &str) -> Route {
        Route {
            transport: t.into(),
            nexthop: n.into(),
        }
    }

    #[test]
    fn routing() {
        let rt = router("", "");
        assert_eq!(rt.route("bob"), r("local", ""));
        assert_eq!(rt.route("bob@EXAMPLE.org"), r("local", ""));
        assert_eq!(rt.route("bob@example.org."), r("local", ""));
        assert_eq!(rt.route("bob@Other.test"), r("smtp", "other.test"));
        assert_eq!(rt.route("\"a@b\"@other.test"), r("smtp", "other.test"));
        let rt = router("", "[relay.test]:587");
        assert_eq!(rt.route("bob@other.test"), r("smtp", "[relay.test]:587"));
        assert_eq!(rt.route("bob@example.org"), r("local", ""));
    }

    #[test]
    fn transport_maps_come_first() {
        let map = "example.com smtp:[10.0.0.5]:25\n\
                   example.net lmtp:unix:/run/dovecot/lmtp\n\
                   example.org lmtp:inet:127.0.0.1:24\n\
                   .sub.test :[gw.test]\n\
                   gone.test error:5.1.1 this domain is gone\n\
                   plain.test smtp:\n";
        let rt = router(map, "[relay.test]");
        assert_eq!(rt.route("a@example.com"), r("smtp", "[10.0.0.5]:25"));
        assert_eq!(
            rt.route("a@example.net"),
            r("lmtp", "unix:/run/dovecot/lmtp")
        );
        // A local domain can be handed to LMTP too.
        assert_eq!(rt.route("a@example.org"), r("lmtp", "inet:127.0.0.1:24"));
        assert_eq!(rt.route("a@x.sub.test"), r("smtp", "[gw.test]"));
        assert_eq!(
            rt.route("a@gone.test"),
            r("error", "5.1.1 this domain is gone")
        );
        // An empty next hop in the map means the recipient's domain.
        assert_eq!(rt.route("a@plain.test"), r("smtp", "plain.test"));
        assert_eq!(rt.route("a@other.test"), r("smtp", "[relay.test]"));
        assert_eq!(
            error_transport_text("4.1.1 gone"),
            ("5.1.1".into(), "gone".into())
        );
        assert_eq!(
            error_transport_text("no such domain"),
            ("5.0.0".into(), "no such domain".into())
        );
        assert!(valid_transport("smtp-2_x"));
        assert!(!valid_transport("../x"));
        assert!(!valid_transport(""));
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let s = settings();
        assert_eq!(
            backoff(Duration::from_secs(0), &s),
            Duration::from_secs(300)
        );
        assert_eq!(
            backoff(Duration::from_secs(1000), &s),
            Duration::from_secs(1000)
        );
        assert_eq!(
            backoff(Duration::from_secs(99999), &s),
            Duration::from_secs(4000)
        );
    }

    #[test]
    fn expiry_and_notify() {
        let s = settings();
        assert!(!expired(Duration::from_secs(3600), false, &s));
        assert!(expired(Duration::from_secs(5 * 86400), false, &s));
        assert!(expired(Duration::from_secs(86400), true, &s));
        assert!(wants_failure_notice(""));
        assert!(wants_failure_notice("SUCCESS,FAILURE"));
        assert!(!wants_failure_notice("NEVER"));
        assert!(!wants_failure_notice("DELAY"));
        assert!(wants_delay_notice(""));
        assert!(wants_delay_notice("FAILURE,DELAY"));
        assert!(!wants_delay_notice("FAILURE"));
        assert!(!wants_delay_notice("NEVER"));
    }

    #[test]
    fn defer_records() {
        let text = format!(
            "{}{}{}",
            defer_line("a@b", "4.2.0", "mailbox busy"),
            defer_line("c@d", "4.4.1", "x\ty"),
            defer_line("a@b", "4.3.0", "disk full")
        );
        assert_eq!(
            last_defer_reason(&text, "a@b"),
            Some(("4.3.0".into(), "disk full".into()))
        );
        assert_eq!(
            last_defer_reason(&text, "c@d"),
            Some(("4.4.1".into(), "x y".into()))
        );
        assert_eq!(last_defer_reason(&text, "e@f"), None);
    }
}
