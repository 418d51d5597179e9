//! `petrel config show [-n] [NAME...]`, like `postconf` and `postconf -n`.

use crate::{Fail, Res};
use petrel_config::Config;

/// Whether `name` is set (in petrel.conf or by `-o`) to something other than its default:
/// what `-n` shows. A setting that repeats the default (`queue_directory =
/// /var/spool/petrel`) is not a change; an unknown name always is (it is likely a typo).
fn changed(cfg: &Config, name: &str) -> bool {
    if !cfg.is_explicit(name) {
        return false;
    }
    let Some(def) = petrel_config::params::lookup(name) else {
        return true;
    };
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let raw = cfg.raw(name);
    if def.default.starts_with('@') {
        // A computed default (the host's name): compare what it comes to.
        let mut plain = cfg.clone();
        plain.unset(name);
        return words(&cfg.get(name)) != words(&plain.get(name));
    }
    words(&raw) != words(def.default)
}

/// The lines to print, and the unknown names asked for.
pub fn lines(cfg: &Config, explicit: bool, names: &[String]) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    if names.is_empty() {
        if explicit {
            out.extend(
                cfg.explicit()
                    .into_iter()
                    .filter(|(n, _)| changed(cfg, n))
                    .map(|(n, v)| format!("{n} = {v}")),
            );
        } else {
            out.extend(
                cfg.effective()
                    .into_iter()
                    .map(|(n, v)| format!("{n} = {v}")),
            );
        }
        return (out, unknown);
    }
    for n in names {
        if petrel_config::params::lookup(n).is_none() && !cfg.is_explicit(n) {
            unknown.push(n.clone());
        } else if explicit {
            if changed(cfg, n) {
                out.push(format!("{n} = {}", cfg.raw(n)));
            }
        } else {
            out.push(format!("{n} = {}", cfg.get(n)));
        }
    }
    (out, unknown)
}

/// `petrel config show`.
pub fn run(dir: &std::path::Path, explicit: bool, names: &[String]) -> Res {
    let cfg = crate::load_config(dir)?;
    let (out, unknown) = lines(&cfg, explicit, names);
    for l in out {
        println!("{l}");
    }
    for n in &unknown {
        eprintln!("petrel: error: unknown parameter {n}");
    }
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Fail::Silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn settings_that_repeat_the_default_are_not_changes() {
        let cfg = Config::parse(
            "queue_directory = /var/spool/petrel\nmail_owner  =  petrel\n\
             home_mailbox = Maildir/\nsmtpd_tls_key_file = $smtpd_tls_cert_file\n\
             bogus_parameter = 1\nmynetworks = 127.0.0.0/8\n",
            Path::new("petrel.conf"),
        )
        .expect("parses");
        let (n, _) = lines(&cfg, true, &[]);
        assert_eq!(
            n,
            vec![
                "bogus_parameter = 1",
                "home_mailbox = Maildir/",
                "mynetworks = 127.0.0.0/8"
            ]
        );
        let (one, _) = lines(&cfg, true, &["queue_directory".into()]);
        assert!(one.is_empty(), "{one:?}");
        // myhostname's default is the host's name: set to that, it is no change.
        let host = Config::parse("", Path::new("petrel.conf"))
            .expect("parses")
            .get("myhostname");
        let cfg = Config::parse(&format!("myhostname = {host}\n"), Path::new("p")).expect("parses");
        assert!(lines(&cfg, true, &[]).0.is_empty());
        let cfg = Config::parse("myhostname = x.example\n", Path::new("p")).expect("parses");
        assert_eq!(lines(&cfg, true, &[]).0, vec!["myhostname = x.example"]);
    }

    #[test]
    fn all_explicit_and_named() {
        let cfg = Config::parse(
            "myhostname = mail.example.com\nmyorigin = $mydomain\n",
            Path::new("petrel.conf"),
        )
        .expect("parses");
        let (all, _) = lines(&cfg, false, &[]);
        assert_eq!(all.len(), petrel_config::PARAMS.len());
        assert!(all.contains(&"myorigin = example.com".to_string()));
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        let (n, _) = lines(&cfg, true, &[]);
        assert_eq!(
            n,
            vec!["myhostname = mail.example.com", "myorigin = $mydomain"]
        );
        let (some, unknown) = lines(&cfg, false, &["mydomain".into(), "bogus".into()]);
        assert_eq!(some, vec!["mydomain = example.com"]);
        assert_eq!(unknown, vec!["bogus"]);
        let (some, _) = lines(&cfg, true, &["mydomain".into(), "myorigin".into()]);
        assert_eq!(some, vec!["myorigin = $mydomain"]);
    }
}
