//! qmgr's pure decisions: where a recipient goes, when to retry, when to give up.

use std::time::Duration;

/// Settings qmgr reads once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mydestination: Vec<String>,
    pub minimal_backoff: Duration,
    pub maximal_backoff: Duration,
    pub queue_run_delay: Duration,
    pub maximal_queue_lifetime: Duration,
    pub bounce_queue_lifetime: Duration,
    pub local_concurrency: usize,
    pub myhostname: String,
    pub active_limit: usize,
}

/// The delivery agent (transport) for an address: `local` for our own domains (and
/// addresses without a domain), `smtp` for the rest.
pub fn transport_for(address: &str, mydestination: &[String]) -> &'static str {
    match address.rsplit_once('@') {
        None => "local",
        Some((_, domain)) => {
            let d = domain.trim_end_matches('.');
            if mydestination.iter().any(|m| m.eq_ignore_ascii_case(d)) {
                "local"
            } else {
                "smtp"
            }
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
            mydestination: vec!["example.org".into(), "localhost".into()],
            minimal_backoff: Duration::from_secs(300),
            maximal_backoff: Duration::from_secs(4000),
            queue_run_delay: Duration::from_secs(300),
            maximal_queue_lifetime: Duration::from_secs(5 * 86400),
            bounce_queue_lifetime: Duration::from_secs(86400),
            local_concurrency: 4,
            myhostname: "h".into(),
            active_limit: 100,
        }
    }

    #[test]
    fn routing() {
        let s = settings();
        assert_eq!(transport_for("bob", &s.mydestination), "local");
        assert_eq!(transport_for("bob@EXAMPLE.org", &s.mydestination), "local");
        assert_eq!(transport_for("bob@example.org.", &s.mydestination), "local");
        assert_eq!(transport_for("bob@other.test", &s.mydestination), "smtp");
        assert_eq!(
            transport_for("\"a@b\"@other.test", &s.mydestination),
            "smtp"
        );
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
