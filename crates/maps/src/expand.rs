//! Alias expansion: from a local recipient to the places its mail goes, by Postfix's rules.
//!
//! [`expand()`] starts from a local part (already stripped of its domain and, if the caller
//! uses `recipient_delimiter`, of its extension) and applies these rules:
//!
//! - A name without an alias is delivered to that user's mailbox: [`Target::Local`].
//! - An alias's destinations are expanded in turn: addresses in a local domain (the
//!   [`ExpandContext`] says which) are looked up as aliases again, other addresses become
//!   [`Target::Remote`], files and commands become [`Target::File`] and [`Target::Command`],
//!   `:include:` files are read through the context and their destinations expanded the
//!   same way.
//! - An alias that lists itself (`root: root, admin`) means "and this user's own mailbox":
//!   the name becomes [`Target::Local`] instead of being expanded again. The same holds for a
//!   name listed in an `:include:` file read on behalf of that alias.
//! - `\name` is always [`Target::Local`] (or [`Target::Remote`] if not in a local domain):
//!   the backslash stops alias expansion, as in sendmail and Postfix.
//! - Any other cycle (`a: b`, `b: a`; an include that includes itself, directly or not) is
//!   [`ExpandError::Loop`], naming the chain.
//! - Nesting deeper than [`MAX_DEPTH`] aliases and includes, or more than [`MAX_TARGETS`]
//!   targets, is an error.
//! - Each target appears once, in the order first reached. An alias or include reached a
//!   second time by another path is not expanded again (everything it gives is already
//!   there), which also keeps expansion linear in the size of the alias graph.
//!
//! Names are compared in lower case, and [`Target::Local`] holds the lower-cased name.
//! Names such as `owner-list` or `list-request` are not special. A user's `.forward` is not
//! read here: local delivery reads it when it delivers to a [`Target::Local`] (and may call
//! [`crate::aliases::parse_destinations`] and expand the result with an empty alias table
//! and `\user` for the user's own mailbox).

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::aliases::{parse_destinations, Aliases, Dest};

/// Deepest nesting of aliases and includes.
pub const MAX_DEPTH: usize = 20;
/// Most targets one expansion may give.
pub const MAX_TARGETS: usize = 1000;

/// What [`expand()`] needs from its caller.
pub trait ExpandContext {
    /// If `address` is in a local domain (a bare name always is), the local name to look up
    /// as an alias (or deliver to), e.g. `"root@localhost"` → `Some("root")`; `None` for a
    /// remote address.
    fn is_local(&self, address: &str) -> Option<String>;
    /// Reads an `:include:` file (the caller decides with which privileges).
    fn read_include(&mut self, path: &Path) -> io::Result<String>;
}

/// Where a file or command destination came from; it decides the privileges the delivery
/// runs with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Via {
    /// Listed in the aliases file.
    Alias,
    /// Listed in this `:include:` file.
    Include(PathBuf),
}

/// One place a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// This local user's mailbox (lower-cased name); no further alias expansion.
    Local(String),
    /// An address outside the local domains, to be queued for remote delivery.
    Remote(String),
    /// Append to this file (a Maildir when it ends with `/`).
    File {
        /// The file.
        path: PathBuf,
        /// Where it was listed.
        via: Via,
    },
    /// Pipe to this shell command.
    Command {
        /// The command line, without the `|`.
        command: String,
        /// Where it was listed.
        via: Via,
    },
}

/// Why an expansion failed. [`ExpandError::IncludeRead`] is usually temporary (a file
/// being replaced, an NFS hiccup); the others are configuration errors that a retry does
/// not fix until the administrator does. Which to defer and which to bounce is the
/// caller's choice.
#[derive(Debug)]
pub enum ExpandError {
    /// A cycle: the chain of names (includes written `:include:/path`), ending with the one
    /// that closes it.
    Loop(Vec<String>),
    /// Nesting deeper than [`MAX_DEPTH`]; the chain so far.
    TooDeep(Vec<String>),
    /// More than [`MAX_TARGETS`] targets.
    TooMany(usize),
    /// An `:include:` file could not be read.
    IncludeRead {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// An `:include:` file has bad destinations (each message names the file and line).
    IncludeSyntax {
        /// The file.
        path: PathBuf,
        /// What is wrong, one line per problem.
        reasons: Vec<String>,
    },
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Loop(chain) => write!(f, "alias loop: {}", chain.join(" -> ")),
            ExpandError::TooDeep(chain) => write!(
                f,
                "aliases nested deeper than {MAX_DEPTH}: {}",
                chain.join(" -> ")
            ),
            ExpandError::TooMany(n) => write!(f, "alias expansion gives more than {n} targets"),
            ExpandError::IncludeRead { path, error } => {
                write!(f, "cannot read include file {}: {error}", path.display())
            }
            ExpandError::IncludeSyntax { reasons, .. } => write!(f, "{}", reasons.join("; ")),
        }
    }
}

impl std::error::Error for ExpandError {}

/// Expands the local recipient `local_part` through `aliases` (see the module docs for the
/// rules). The result is never empty.
pub fn expand(
    local_part: &str,
    aliases: &Aliases,
    ctx: &mut dyn ExpandContext,
) -> Result<Vec<Target>, ExpandError> {
    let key = local_part.to_lowercase();
    let mut e = Expander {
        aliases,
        ctx,
        chain: Vec::new(),
        done_aliases: HashSet::new(),
        done_includes: HashSet::new(),
        seen: HashSet::new(),
        out: Vec::new(),
    };
    match aliases.get(&key) {
        Some(dests) => e.alias(&key, dests)?,
        None => e.push(Target::Local(key))?,
    }
    Ok(e.out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Link {
    Alias(String),
    Include(PathBuf),
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Alias(name) => f.write_str(name),
            Link::Include(path) => write!(f, ":include:{}", path.display()),
        }
    }
}

struct Expander<'a> {
    aliases: &'a Aliases,
    ctx: &'a mut dyn ExpandContext,
    /// The aliases and includes being expanded, outermost first.
    chain: Vec<Link>,
    done_aliases: HashSet<String>,
    done_includes: HashSet<PathBuf>,
    seen: HashSet<Target>,
    out: Vec<Target>,
}

impl Expander<'_> {
    fn names(&self, last: Option<Link>) -> Vec<String> {
        self.chain
            .iter()
            .chain(last.as_ref())
            .map(ToString::to_string)
            .collect()
    }

    fn enter(&mut self, link: Link) -> Result<(), ExpandError> {
        if self.chain.contains(&link) {
            return Err(ExpandError::Loop(self.names(Some(link))));
        }
        self.chain.push(link);
        if self.chain.len() > MAX_DEPTH {
            return Err(ExpandError::TooDeep(self.names(None)));
        }
        Ok(())
    }

    fn push(&mut self, t: Target) -> Result<(), ExpandError> {
        if self.seen.contains(&t) {
            return Ok(());
        }
        if self.out.len() >= MAX_TARGETS {
            return Err(ExpandError::TooMany(MAX_TARGETS));
        }
        self.seen.insert(t.clone());
        self.out.push(t);
        Ok(())
    }

    fn alias(&mut self, name: &str, dests: &[Dest]) -> Result<(), ExpandError> {
        self.enter(Link::Alias(name.to_string()))?;
        for d in dests {
            self.dest(d, &Via::Alias)?;
        }
        self.chain.pop();
        self.done_aliases.insert(name.to_string());
        Ok(())
    }

    /// The alias whose expansion we are in (the innermost one).
    fn current_alias(&self) -> Option<&str> {
        self.chain.iter().rev().find_map(|l| match l {
            Link::Alias(name) => Some(name.as_str()),
            Link::Include(_) => None,
        })
    }

    fn dest(&mut self, d: &Dest, via: &Via) -> Result<(), ExpandError> {
        match d {
            Dest::Address(a) => {
                if let Some(bare) = a.strip_prefix('\\') {
                    return match self.ctx.is_local(bare) {
                        Some(user) => self.push(Target::Local(user.to_lowercase())),
                        None => self.push(Target::Remote(bare.to_string())),
                    };
                }
                let Some(user) = self.ctx.is_local(a) else {
                    return self.push(Target::Remote(a.clone()));
                };
                let key = user.to_lowercase();
                if self.current_alias() == Some(key.as_str()) {
                    return self.push(Target::Local(key));
                }
                if self.done_aliases.contains(&key) {
                    return Ok(());
                }
                match self.aliases.get(&key) {
                    Some(dests) => self.alias(&key, dests),
                    None => self.push(Target::Local(key)),
                }
            }
            Dest::Include(path) => self.include(path),
            Dest::File(path) => self.push(Target::File {
                path: path.clone(),
                via: via.clone(),
            }),
            Dest::Command(command) => self.push(Target::Command {
                command: command.clone(),
                via: via.clone(),
            }),
        }
    }

    fn include(&mut self, path: &Path) -> Result<(), ExpandError> {
        if self.done_includes.contains(path) {
            return Ok(());
        }
        self.enter(Link::Include(path.to_path_buf()))?;
        let text = self
            .ctx
            .read_include(path)
            .map_err(|error| ExpandError::IncludeRead {
                path: path.to_path_buf(),
                error,
            })?;
        let dests = parse_destinations(&text, path).map_err(|errs| ExpandError::IncludeSyntax {
            path: path.to_path_buf(),
            reasons: errs.iter().map(ToString::to_string).collect(),
        })?;
        let via = Via::Include(path.to_path_buf());
        for d in &dests {
            self.dest(d, &via)?;
        }
        self.chain.pop();
        self.done_includes.insert(path.to_path_buf());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliases::parse;
    use std::collections::HashMap;

    /// Local domains: bare names and `@localhost`; includes from a table.
    #[derive(Default)]
    struct Ctx {
        includes: HashMap<PathBuf, String>,
        reads: usize,
    }

    impl ExpandContext for Ctx {
        fn is_local(&self, address: &str) -> Option<String> {
            match address.rsplit_once('@') {
                None => Some(address.to_string()),
                Some((user, domain)) if domain.eq_ignore_ascii_case("localhost") => {
                    Some(user.to_string())
                }
                Some(_) => None,
            }
        }

        fn read_include(&mut self, path: &Path) -> io::Result<String> {
            self.reads += 1;
            self.includes
                .get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    fn run(aliases: &str, name: &str, ctx: &mut Ctx) -> Result<Vec<Target>, ExpandError> {
        let a = match parse(aliases, Path::new("aliases")) {
            Ok(a) => a,
            Err(e) => panic!("{e:?}"),
        };
        expand(name, &a, ctx)
    }

    fn ok(aliases: &str, name: &str) -> Vec<Target> {
        match run(aliases, name, &mut Ctx::default()) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    fn local(s: &str) -> Target {
        Target::Local(s.into())
    }

    fn remote(s: &str) -> Target {
        Target::Remote(s.into())
    }

    #[test]
    fn a_name_without_alias_is_local() {
        assert_eq!(ok("", "Joe"), vec![local("joe")]);
        assert_eq!(ok("other: x\n", "joe"), vec![local("joe")]);
    }

    #[test]
    fn aliases_expand_recursively() {
        let a = "postmaster: root\nroot: admin, ops@example.org\nadmin: alice@localhost, bob\n";
        assert_eq!(
            ok(a, "POSTMASTER"),
            vec![local("alice"), local("bob"), remote("ops@example.org")]
        );
    }

    #[test]
    fn an_alias_listing_itself_means_its_own_mailbox() {
        assert_eq!(
            ok("root: root, admin@example.org\n", "root"),
            vec![local("root"), remote("admin@example.org")]
        );
        assert_eq!(
            ok(
                "postmaster: root\nroot: Root@localhost, a\na: b\n",
                "postmaster"
            ),
            vec![local("root"), local("b")]
        );
    }

    #[test]
    fn backslash_stops_expansion() {
        assert_eq!(
            ok("joe: \\joe, joe@example.org\n", "joe"),
            vec![local("joe"), remote("joe@example.org")]
        );
        assert_eq!(ok("a: \\b\nb: c\n", "a"), vec![local("b")]);
    }

    #[test]
    fn longer_cycles_are_errors_naming_the_chain() {
        let e = run("a: b\nb: c\nc: a\n", "a", &mut Ctx::default()).expect_err("loop");
        assert!(
            matches!(&e, ExpandError::Loop(c) if c == &["a", "b", "c", "a"]),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "alias loop: a -> b -> c -> a");
        let e = run("a: x, b\nb: a\n", "b", &mut Ctx::default()).expect_err("loop");
        assert!(
            matches!(&e, ExpandError::Loop(c) if c == &["b", "a", "b"]),
            "{e:?}"
        );
    }

    #[test]
    fn depth_and_count_are_limited() {
        let mut chain = String::new();
        for i in 0..MAX_DEPTH {
            chain.push_str(&format!("a{i}: a{}\n", i + 1));
        }
        // a0 .. a19 is 20 levels: fine; one more is too deep.
        assert_eq!(ok(&chain, "a0"), vec![local(&format!("a{MAX_DEPTH}"))]);
        chain.push_str(&format!("a{MAX_DEPTH}: end\n"));
        let e = run(&chain, "a0", &mut Ctx::default()).expect_err("deep");
        assert!(
            matches!(&e, ExpandError::TooDeep(c) if c.len() == MAX_DEPTH + 1),
            "{e:?}"
        );

        let many: Vec<String> = (0..=MAX_TARGETS).map(|i| format!("u{i}")).collect();
        let e = run(
            &format!("big: {}\n", many.join(", ")),
            "big",
            &mut Ctx::default(),
        )
        .expect_err("many");
        assert!(matches!(e, ExpandError::TooMany(MAX_TARGETS)), "{e:?}");
        let exactly = &many[..MAX_TARGETS];
        assert_eq!(
            ok(&format!("big: {}\n", exactly.join(", ")), "big").len(),
            MAX_TARGETS
        );
    }

    #[test]
    fn duplicates_are_removed() {
        let a = "all: x, team, x@localhost, X, r@example.org, /f, |cmd\nteam: x, r@example.org, /f, |cmd\n";
        assert_eq!(
            ok(a, "all"),
            vec![
                local("x"),
                remote("r@example.org"),
                Target::File {
                    path: "/f".into(),
                    via: Via::Alias
                },
                Target::Command {
                    command: "cmd".into(),
                    via: Via::Alias
                },
            ]
        );
    }

    #[test]
    fn a_shared_alias_is_expanded_once() {
        // Nine levels of four-way fan-in would be 4^9 paths without memoisation.
        let mut a = String::new();
        for i in 0..9 {
            let next = i + 1;
            a.push_str(&format!("n{i}: a{i}, b{i}, c{i}, d{i}\n"));
            for x in ["a", "b", "c", "d"] {
                a.push_str(&format!("{x}{i}: n{next}\n"));
            }
        }
        assert_eq!(ok(&a, "n0"), vec![local("n9")]);
    }

    #[test]
    fn owner_and_request_names_are_ordinary() {
        let a = "list: a, b\nowner-list: admin\nlist-request: admin\n";
        assert_eq!(ok(a, "owner-list"), vec![local("admin")]);
        assert_eq!(ok(a, "list-request"), vec![local("admin")]);
    }

    #[test]
    fn includes_are_read_through_the_context_and_nest() {
        let mut ctx = Ctx::default();
        ctx.includes.insert(
            "/etc/staff".into(),
            "# staff\nalice, bob@example.org\n:include:/etc/more\n|/bin/log staff\n".into(),
        );
        ctx.includes
            .insert("/etc/more".into(), "carol, /var/archive/staff\n".into());
        let t = run(
            "staff: :include:/etc/staff, :include:/etc/more\n",
            "staff",
            &mut ctx,
        )
        .expect("expand");
        assert_eq!(
            t,
            vec![
                local("alice"),
                remote("bob@example.org"),
                local("carol"),
                Target::File {
                    path: "/var/archive/staff".into(),
                    via: Via::Include("/etc/more".into())
                },
                Target::Command {
                    command: "/bin/log staff".into(),
                    via: Via::Include("/etc/staff".into())
                },
            ]
        );
        assert_eq!(ctx.reads, 2, "/etc/more is read once");
    }

    #[test]
    fn include_entries_are_expanded_as_aliases_and_self_means_mailbox() {
        let mut ctx = Ctx::default();
        ctx.includes
            .insert("/etc/l".into(), "list, helper\n".into());
        let t = run("list: :include:/etc/l\nhelper: h1, h2\n", "list", &mut ctx).expect("expand");
        assert_eq!(t, vec![local("list"), local("h1"), local("h2")]);
    }

    #[test]
    fn include_cycles_are_caught() {
        let mut ctx = Ctx::default();
        ctx.includes
            .insert("/etc/a".into(), ":include:/etc/b\n".into());
        ctx.includes
            .insert("/etc/b".into(), "x, :include:/etc/a\n".into());
        let e = run("l: :include:/etc/a\n", "l", &mut ctx).expect_err("loop");
        assert_eq!(
            e.to_string(),
            "alias loop: l -> :include:/etc/a -> :include:/etc/b -> :include:/etc/a"
        );
        // An include naming an alias that includes it again.
        let mut ctx = Ctx::default();
        ctx.includes.insert("/etc/c".into(), "m\n".into());
        let e = run("l: :include:/etc/c\nm: l\n", "l", &mut ctx).expect_err("loop");
        assert!(matches!(e, ExpandError::Loop(_)), "{e:?}");
    }

    #[test]
    fn include_problems_are_reported() {
        let mut ctx = Ctx::default();
        let e = run("l: :include:/missing\n", "l", &mut ctx).expect_err("missing");
        assert!(
            matches!(&e, ExpandError::IncludeRead { path, error }
                if path == Path::new("/missing") && error.kind() == io::ErrorKind::NotFound),
            "{e:?}"
        );
        ctx.includes.insert("/bad".into(), "a b\n".into());
        let e = run("l: :include:/bad\n", "l", &mut ctx).expect_err("syntax");
        assert!(e.to_string().starts_with("/bad, line 1: "), "{e}");
    }
}
