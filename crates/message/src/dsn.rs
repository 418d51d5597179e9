//! RFC 3464 delivery status notifications (multipart/report; report-type=delivery-status).
//!
//! ```text
//! multipart/report
//! ├── text/plain               what happened, for people
//! ├── message/delivery-status  per-message and per-recipient fields, for programs
//! └── message/rfc822           the original message (text/rfc822-headers with RET=HDRS)
//! ```

/// What the notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivery failed permanently (a bounce).
    Failed,
    /// Delivery is delayed (a warning; delivery continues).
    Delayed,
    /// Delivered to the mailbox (success notice, NOTIFY=SUCCESS).
    Delivered,
    /// Handed to a server that does not do DSN (success notice: no further reports).
    Relayed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address delivery was attempted to.
    pub address: String,
    /// ORCPT as given by the client (`rfc822;addr`), or empty.
    pub orcpt: String,
    /// Failed or delayed.
    pub action: Action,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: String,
    /// Diagnostic text (the reason).
    pub diagnostic: String,
}

/// A notice to build.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// `myhostname`: Reporting-MTA and the From address's domain.
    pub myhostname: &'a str,
    /// Queue id of the original message.
    pub queue_id: &'a str,
    /// Arrival time of the original message.
    pub arrival: i64,
    /// Now.
    pub now: i64,
    /// Who the notice goes to (the original envelope sender).
    pub to: &'a str,
    /// RFC 3461 ENVID of the original message, or empty.
    pub envid: &'a str,
    /// The recipients reported.
    pub recipients: Vec<Recipient>,
    /// The original message (LF line ends).
    pub original: &'a [u8],
    /// RET=HDRS: return only the headers.
    pub headers_only: bool,
    /// Id for the new message's Message-ID.
    pub new_id: &'a str,
}

/// Builds the notice as a message with LF line ends.
pub fn build(r: &Report<'_>) -> Vec<u8> {
    let date = petrel_queue::rfc2822_date(r.now);
    let boundary = format!("{}.{}/{}", r.queue_id, r.now, r.myhostname);
    let delayed = r.recipients.iter().all(|x| x.action == Action::Delayed);
    let success = r
        .recipients
        .iter()
        .all(|x| matches!(x.action, Action::Delivered | Action::Relayed));
    let subject = if delayed {
        "Delayed Mail (still being retried)"
    } else if success {
        "Successful Mail Delivery Report"
    } else {
        "Undelivered Mail Returned to Sender"
    };
    let mut s = String::new();
    s.push_str(&format!(
        "From: MAILER-DAEMON@{host} (Mail Delivery System)\nTo: {to}\nSubject: {subject}\nDate: {date}\nMessage-ID: <{new}.{now:X}@{host}>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\nContent-Transfer-Encoding: 8bit\n\nThis is a MIME-encapsulated message.\n\n",
        host = r.myhostname,
        to = r.to,
        new = r.new_id,
        now = r.now,
    ));
    // Part 1: for people.
    s.push_str(&format!(
        "--{boundary}\nContent-Description: Notification\nContent-Type: text/plain; charset=utf-8\n\nThis is the mail system at host {}.\n\n",
        r.myhostname
    ));
    if delayed {
        s.push_str("Your message could not be delivered yet. The mail system will keep\ntrying; you do not need to send it again.\n\n");
    } else if success {
        s.push_str("Your message was successfully delivered to the destination(s)\nlisted below. If the message was delivered to a mailbox you will\nreceive no further notifications. Otherwise you may still receive\nnotifications of mail delivery errors from other systems.\n\n");
    } else {
        s.push_str("I'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients. It's attached below.\n\n");
    }
    for x in &r.recipients {
        s.push_str(&format!("<{}>: {}\n", x.address, one_line(&x.diagnostic)));
    }
    // Part 2: for programs.
    s.push_str(&format!(
        "\n--{boundary}\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; {}\nX-Petrel-Queue-ID: {}\n",
        r.myhostname, r.queue_id
    ));
    if !r.envid.is_empty() {
        s.push_str(&format!("Original-Envelope-Id: {}\n", one_line(r.envid)));
    }
    s.push_str(&format!(
        "Arrival-Date: {}\n",
        petrel_queue::rfc2822_date(r.arrival)
    ));
    for x in &r.recipients {
        s.push_str(&format!("\nFinal-Recipient: rfc822; {}\n", x.address));
        if !x.orcpt.is_empty() {
            let (kind, addr) = x.orcpt.split_once(';').unwrap_or(("rfc822", &x.orcpt));
            s.push_str(&format!(
                "Original-Recipient: {}; {}\n",
                kind.trim(),
                addr.trim()
            ));
        }
        s.push_str(&format!(
            "Action: {}\nStatus: {}\n",
            x.action.as_str(),
            x.status
        ));
        match remote_reply(&x.diagnostic) {
            Some((mta, reply)) => s.push_str(&format!(
                "Remote-MTA: dns; {}\nDiagnostic-Code: smtp; {}\n",
                one_line(mta),
                one_line(reply)
            )),
            None => s.push_str(&format!(
                "Diagnostic-Code: X-Petrel; {}\n",
                one_line(&x.diagnostic)
            )),
        }
        if x.action == Action::Delayed {
            s.push_str(&format!("Last-Attempt-Date: {date}\n"));
        }
    }
    // Part 3: the original.
    let block = crate::HeaderBlock::scan(r.original);
    let (ctype, desc, body): (&str, &str, &[u8]) = if r.headers_only {
        (
            "text/rfc822-headers",
            if success {
                "Message Headers"
            } else {
                "Undelivered Message Headers"
            },
            &r.original[..block.header_end],
        )
    } else {
        ("message/rfc822", "Undelivered Message", r.original)
    };
    s.push_str(&format!(
        "\n--{boundary}\nContent-Description: {desc}\nContent-Type: {ctype}\nContent-Transfer-Encoding: 8bit\n\n"
    ));
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    if !body.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    out
}

/// The server and its reply in a reason the smtp agent wrote for a reply it got,
/// `host NAME[ADDR] said: CODE TEXT (in reply to COMMAND)`: `(NAME, "CODE TEXT")`, for the
/// report's Remote-MTA and `Diagnostic-Code: smtp;` (RFC 3464 2.3.5, 2.3.6). Any other
/// reason (local delivery, a timeout, DNS) is None.
fn remote_reply(reason: &str) -> Option<(&str, &str)> {
    let (host, after) = reason.strip_prefix("host ")?.split_once(" said: ")?;
    let name = host.split_once('[').map_or(host, |(n, _)| n);
    let reply = after
        .rsplit_once(" (in reply to ")
        .map_or(after, |(r, _)| r);
    let code = reply.as_bytes().get(..3)?;
    let coded = code.iter().all(u8::is_ascii_digit) && matches!(code[0], b'4' | b'5');
    (coded && !name.is_empty() && !name.contains(' ')).then_some((name, reply))
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_reply_names_the_server_and_keeps_the_reply() {
        assert_eq!(
            remote_reply(
                "host mx.example.com[192.0.2.7] said: 550 5.1.1 <a@example.com>: User unknown \
                 (in reply to RCPT TO command)"
            ),
            Some(("mx.example.com", "550 5.1.1 <a@example.com>: User unknown"))
        );
        assert_eq!(
            remote_reply("host localhost[/run/dovecot/lmtp] said: 452 4.2.2 Quota exceeded"),
            Some(("localhost", "452 4.2.2 Quota exceeded"))
        );
        for other in [
            "unknown user: \"nobody\"",
            "connect to mx.example.com[192.0.2.7]:25: Connection refused",
            "host mx.example.com[192.0.2.7] said: nonsense",
            "host  said: 550 x",
            "Host or domain name not found",
        ] {
            assert_eq!(remote_reply(other), None, "{other}");
        }
    }

    #[test]
    fn bounce_has_the_three_parts_and_fields() {
        let orig = b"From: a@b\nSubject: hello\n\nthe body\n";
        let r = Report {
            myhostname: "mail.example.org",
            queue_id: "QID1",
            arrival: 1_700_000_000,
            now: 1_700_000_100,
            to: "a@b",
            envid: "env-1",
            recipients: vec![Recipient {
                address: "nobody@example.org".into(),
                orcpt: "rfc822;Nobody@example.org".into(),
                action: Action::Failed,
                status: "5.1.1".into(),
                diagnostic: "unknown user: \"nobody\"".into(),
            }],
            original: orig,
            headers_only: false,
            new_id: "QID2",
        };
        let out = String::from_utf8(build(&r)).unwrap();
        assert!(out.contains("Subject: Undelivered Mail Returned to Sender\n"));
        assert!(out.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(out.contains(
            "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mail.example.org\n"
        ));
        assert!(out.contains("Original-Envelope-Id: env-1\n"));
        assert!(out.contains("Final-Recipient: rfc822; nobody@example.org\nOriginal-Recipient: rfc822; Nobody@example.org\nAction: failed\nStatus: 5.1.1\n"));
        assert!(out.contains("Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\nFrom: a@b\nSubject: hello\n\nthe body\n"));
        assert!(out.trim_end().ends_with("--"));
        assert_eq!(out.matches("--QID1.1700000100/mail.example.org").count(), 4);
    }

    #[test]
    fn headers_only_and_delay() {
        let orig = b"Subject: s\n\nsecret body\n";
        let r = Report {
            myhostname: "h",
            queue_id: "Q",
            arrival: 0,
            now: 1,
            to: "x@y",
            envid: "",
            recipients: vec![Recipient {
                address: "r@s".into(),
                orcpt: String::new(),
                action: Action::Delayed,
                status: "4.4.1".into(),
                diagnostic: "connection refused".into(),
            }],
            original: orig,
            headers_only: true,
            new_id: "N",
        };
        let out = String::from_utf8(build(&r)).unwrap();
        assert!(out.contains("Subject: Delayed Mail (still being retried)"));
        assert!(out.contains("Action: delayed\n"));
        assert!(out.contains("text/rfc822-headers"));
        assert!(!out.contains("secret body"));
    }
}
