//! `petrel config show [-n] [NAME...]`, like `postconf` and `postconf -n`.

use crate::{Fail, Res};
use petrel_config::Config;

/// The lines to print, and the unknown names asked for.
pub fn lines(cfg: &Config, explicit: bool, names: &[String]) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    if names.is_empty() {
        if explicit {
            out.extend(
                cfg.explicit()
                    .into_iter()
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
            if cfg.is_explicit(n) {
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
