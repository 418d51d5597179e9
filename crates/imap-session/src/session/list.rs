//! LIST and LSUB.

use std::io::{self, Write as _};

use petrel_imap_proto::{astring, decode_mailbox};
use petrel_mailstore::{is_inbox, FolderInfo};

use super::{Reply, Session};

/// The LIST-EXTENDED options the session honours.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ListOptions {
    /// Selection SUBSCRIBED: only subscribed names (and `\Subscribed` on each).
    pub select_subscribed: bool,
    /// Selection SPECIAL-USE: only special-use mailboxes.
    pub select_special_use: bool,
    /// Selection RECURSIVEMATCH (RFC 5258 §3.1): also names that do not meet the other
    /// selection options but have a descendant that does, with a `CHILDINFO` extended data
    /// item.
    pub recursive_match: bool,
    /// Return SUBSCRIBED: `\Subscribed` on subscribed names.
    pub return_subscribed: bool,
}

/// Whether `name` matches a LIST pattern: `*` matches anything, `%` anything but the
/// hierarchy separator `.`. A leading `INBOX` in the pattern matches case-insensitively.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let mut p = pattern.as_bytes().to_vec();
    if p.len() >= 5
        && p[..5].eq_ignore_ascii_case(b"INBOX")
        && p.get(5).is_none_or(|c| matches!(c, b'.' | b'*' | b'%'))
    {
        p[..5].copy_from_slice(b"INBOX");
    }
    let n = name.as_bytes();
    // dp[j]: p[..i] matches n[..j].
    let mut dp = vec![false; n.len() + 1];
    dp[0] = true;
    for &c in &p {
        let mut next = vec![false; n.len() + 1];
        match c {
            b'*' => {
                let mut any = false;
                for j in 0..=n.len() {
                    any |= dp[j];
                    next[j] = any;
                }
            }
            b'%' => {
                let mut any = false;
                for j in 0..=n.len() {
                    if j > 0 && n[j - 1] == b'.' {
                        any = false;
                    }
                    any |= dp[j];
                    next[j] = any;
                }
            }
            _ => {
                for j in 1..=n.len() {
                    next[j] = dp[j - 1] && n[j - 1] == c;
                }
            }
        }
        dp = next;
    }
    dp[n.len()]
}

/// A store name as the client sees it (decoded, for pattern matching).
fn display(name: &str) -> String {
    decode_mailbox(name).unwrap_or_else(|_| name.to_string())
}

/// One name LIST may return.
struct Candidate<'a> {
    name: String,
    /// The folder, when it exists (possibly as a `\Noselect` parent).
    info: Option<&'a FolderInfo>,
    subscribed: bool,
}

impl Candidate<'_> {
    /// Whether it meets the selection options (other than RECURSIVEMATCH).
    fn selected(&self, opts: &ListOptions) -> bool {
        (!opts.select_subscribed || self.subscribed)
            && (!opts.select_special_use || self.info.is_some_and(|f| f.special_use.is_some()))
    }
}

impl Session {
    pub(super) fn list(
        &mut self,
        reference: &str,
        patterns: &[String],
        opts: ListOptions,
        out: &mut Vec<u8>,
    ) -> io::Result<Reply> {
        if patterns.iter().all(String::is_empty)
            && !opts.select_subscribed
            && !opts.select_special_use
        {
            out.extend_from_slice(b"* LIST (\\Noselect) \".\" \"\"\r\n");
            return Ok(Reply::Ok("List completed.".into()));
        }
        let full: Vec<String> = patterns
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| format!("{reference}{p}"))
            .collect();
        let subs = self.store.subscriptions()?;
        let subscribed = |n: &str| subs.iter().any(|s| s == n || (is_inbox(s) && is_inbox(n)));
        let show_sub = opts.select_subscribed || opts.return_subscribed;
        let folders = self.store.list()?;
        let same = |a: &str, b: &str| a == b || (is_inbox(a) && is_inbox(b));
        // The existing folders, then (for SUBSCRIBED) the subscribed names that do not
        // exist, each after its own missing parents when RECURSIVEMATCH may need them.
        let mut cands: Vec<Candidate> = folders
            .iter()
            .map(|f| Candidate {
                name: f.name.clone(),
                info: Some(f),
                subscribed: subscribed(&f.name),
            })
            .collect();
        if opts.select_subscribed {
            for s in &subs {
                let mut names: Vec<String> = Vec::new();
                if opts.recursive_match {
                    let mut prefix = String::new();
                    for part in s.split('.') {
                        if !prefix.is_empty() {
                            names.push(prefix.clone());
                            prefix.push('.');
                        }
                        prefix.push_str(part);
                    }
                }
                names.push(s.clone());
                for n in names {
                    if cands.iter().any(|c| same(&c.name, &n)) {
                        continue;
                    }
                    cands.push(Candidate {
                        subscribed: subscribed(&n),
                        name: n,
                        info: None,
                    });
                }
            }
        }
        let mut childinfo: Vec<&str> = Vec::new();
        if opts.select_subscribed {
            childinfo.push("\"SUBSCRIBED\"");
        }
        if opts.select_special_use {
            childinfo.push("\"SPECIAL-USE\"");
        }
        for c in &cands {
            if !full.iter().any(|p| matches(p, &display(&c.name))) {
                continue;
            }
            let meets = c.selected(&opts);
            let child_meets = opts.recursive_match && {
                let prefix = format!("{}.", c.name);
                cands
                    .iter()
                    .any(|d| d.name.starts_with(&prefix) && d.selected(&opts))
            };
            if !meets && !child_meets {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            match c.info {
                Some(f) => {
                    if !f.selectable {
                        attrs.push("\\Noselect");
                    }
                    attrs.push(if f.has_children {
                        "\\HasChildren"
                    } else {
                        "\\HasNoChildren"
                    });
                    if let Some(su) = f.special_use {
                        attrs.push(su);
                    }
                }
                None => attrs.push("\\NonExistent"),
            }
            if show_sub && c.subscribed {
                attrs.push("\\Subscribed");
            }
            let _ = write!(out, "* LIST ({}) \".\" ", attrs.join(" "));
            out.extend_from_slice(&astring(c.name.as_bytes()));
            if child_meets {
                let _ = write!(out, " (\"CHILDINFO\" ({}))", childinfo.join(" "));
            }
            out.extend_from_slice(b"\r\n");
        }
        Ok(Reply::Ok("List completed.".into()))
    }

    pub(super) fn lsub(
        &mut self,
        reference: &str,
        pattern: &str,
        out: &mut Vec<u8>,
    ) -> io::Result<Reply> {
        if pattern.is_empty() {
            out.extend_from_slice(b"* LSUB (\\Noselect) \".\" \"\"\r\n");
            return Ok(Reply::Ok("Lsub completed.".into()));
        }
        let full = format!("{reference}{pattern}");
        for s in self.store.subscriptions()? {
            if !matches(&full, &display(&s)) {
                continue;
            }
            let attrs = if self.store.exists(&s) {
                ""
            } else {
                "\\Noselect"
            };
            let _ = write!(out, "* LSUB ({attrs}) \".\" ");
            out.extend_from_slice(&astring(s.as_bytes()));
            out.extend_from_slice(b"\r\n");
        }
        Ok(Reply::Ok("Lsub completed.".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns() {
        assert!(matches("*", "Lists.work"));
        assert!(matches("%", "Sent"));
        assert!(!matches("%", "Lists.work"));
        assert!(matches("Lists.%", "Lists.work"));
        assert!(!matches("Lists.%", "Lists"));
        assert!(matches("Lists*", "Lists"));
        assert!(matches("inbox", "INBOX"));
        assert!(matches("InBoX*", "INBOX"));
        assert!(!matches("inboxes", "INBOX"));
        assert!(matches("%.w%k", "Lists.work"));
        assert!(matches("", ""));
        assert!(!matches("a", ""));
        // Quadratic at worst, never exponential.
        assert!(!matches(
            &format!("{}x", "*%".repeat(50)),
            &"a.".repeat(500)
        ));
    }
}
