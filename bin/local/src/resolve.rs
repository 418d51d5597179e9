//! From a recipient address to the places the message goes: aliases, `.forward`, users.
//!
//! The rules are Postfix's: the local part (without `+extension` when
//! `recipient_delimiter` is set) is looked up in `alias_maps`; what is left is a user of
//! `user_database`, whose `~/.forward` (when present, owned by the user and not writable
//! by others) replaces the mailbox; `\user` in a `.forward` means the user's own mailbox.
//! Addresses outside the local domains are forwarded through cleanup.

use petrel_maps::aliases::{self, Aliases, Dest};
use petrel_maps::expand::{expand, ExpandContext, ExpandError, Target, Via};
use petrel_maps::userdb::{User, UserDb};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Parameters local reads.
pub struct Settings {
    pub mydestination: Vec<String>,
    pub myorigin: String,
    pub recipient_delimiter: String,
    pub alias_maps: Vec<PathBuf>,
    pub userdb: UserDb,
    pub forward_path: Vec<String>,
    pub allow_commands: Vec<String>,
    pub allow_files: Vec<String>,
    pub double_bounce: String,
    pub default_privs: (u32, u32),
}

/// Where one copy goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Final {
    /// The user's mailbox.
    Mailbox(UserKey),
    /// Another domain: queue for remote delivery.
    Remote(String),
    /// Append to a file (Maildir when it ends with `/`), as this uid/gid.
    File { path: PathBuf, uid: u32, gid: u32 },
    /// Pipe to a command, as this uid/gid, with this home.
    Command {
        command: String,
        uid: u32,
        gid: u32,
        home: PathBuf,
        user: String,
    },
    /// Dropped on purpose (mail to double_bounce_sender).
    Discard,
}

/// A user, hashable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserKey {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl From<User> for UserKey {
    fn from(u: User) -> Self {
        UserKey {
            name: u.name,
            uid: u.uid,
            gid: u.gid,
            home: u.home,
        }
    }
}

/// Why a recipient cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Permanent: bounce with this status and text.
    Bounce(&'static str, String),
    /// Temporary: try again later.
    Defer(&'static str, String),
}

/// The alias tables, re-read when a file changes.
#[derive(Default)]
pub struct AliasCache {
    loaded: Vec<(PathBuf, Option<std::time::SystemTime>, Aliases)>,
}

impl AliasCache {
    fn refresh(&mut self, files: &[PathBuf]) -> Result<(), Problem> {
        let stamps: Vec<Option<std::time::SystemTime>> = files
            .iter()
            .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
            .collect();
        let fresh = self.loaded.len() == files.len()
            && self
                .loaded
                .iter()
                .zip(files.iter().zip(&stamps))
                .all(|((p, t, _), (f, s))| p == f && t == s);
        if fresh {
            return Ok(());
        }
        let mut loaded = Vec::new();
        for (f, stamp) in files.iter().zip(stamps) {
            let text = match std::fs::read_to_string(f) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => {
                    return Err(Problem::Defer(
                        "4.3.0",
                        format!("cannot read alias file {}: {e}", f.display()),
                    ))
                }
            };
            // A bad line disables only its own entry; it is logged and the rest is used.
            let (a, errors) = aliases::parse_lenient(&text, f);
            for e in errors {
                log::warn!("{e}");
            }
            loaded.push((f.clone(), stamp, a));
        }
        self.loaded = loaded;
        Ok(())
    }

    /// The first alias file that has `name`, and the table.
    fn table_with(&self, name: &str) -> Option<(&Path, &Aliases)> {
        self.loaded
            .iter()
            .find(|(_, _, a)| a.get(name).is_some())
            .map(|(p, _, a)| (p.as_path(), a))
    }
}

struct Ctx<'a> {
    s: &'a Settings,
}

impl ExpandContext for Ctx<'_> {
    fn is_local(&self, address: &str) -> Option<String> {
        local_name(address, self.s)
    }
    fn read_include(&mut self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The local name of an address in one of our domains (`None` when remote).
pub fn local_name(address: &str, s: &Settings) -> Option<String> {
    let (local, domain) = match address.rsplit_once('@') {
        Some((l, d)) => (l, Some(d.trim_end_matches('.'))),
        None => (address, None),
    };
    if let Some(d) = domain {
        if !s.mydestination.iter().any(|m| m.eq_ignore_ascii_case(d)) {
            return None;
        }
    }
    let local = local.trim_matches('"').to_ascii_lowercase();
    Some(local)
}

fn strip_extension<'a>(local: &'a str, s: &Settings) -> &'a str {
    if s.recipient_delimiter.is_empty() {
        return local;
    }
    match local.find(|c| s.recipient_delimiter.contains(c)) {
        Some(i) if i > 0 => &local[..i],
        _ => local,
    }
}

/// Resolves one recipient to its final destinations.
pub fn resolve(address: &str, s: &Settings, cache: &mut AliasCache) -> Result<Vec<Final>, Problem> {
    let Some(local) = local_name(address, s) else {
        return Ok(vec![Final::Remote(address.to_string())]);
    };
    if local == s.double_bounce.to_ascii_lowercase() {
        return Ok(vec![Final::Discard]);
    }
    cache.refresh(&s.alias_maps)?;
    let mut out = Vec::new();
    let mut seen_forward = HashSet::new();
    resolve_local(&local, s, cache, &mut out, &mut seen_forward, 0)?;
    let mut dedup = HashSet::new();
    out.retain(|f| dedup.insert(f.clone()));
    Ok(out)
}

fn resolve_local(
    local: &str,
    s: &Settings,
    cache: &AliasCache,
    out: &mut Vec<Final>,
    seen_forward: &mut HashSet<String>,
    depth: usize,
) -> Result<(), Problem> {
    if depth > 10 {
        return Err(Problem::Bounce(
            "5.4.6",
            format!("mail forwarding loop for {local}"),
        ));
    }
    let base = strip_extension(local, s);
    let key = if cache.table_with(local).is_some() {
        local
    } else {
        base
    };
    let mut alias_owner = s.default_privs;
    let targets = match cache.table_with(key) {
        Some((file, table)) => {
            alias_owner = owner_or_default_privs(file, s);
            let mut ctx = Ctx { s };
            match expand(key, table, &mut ctx) {
                Ok(t) => t,
                Err(ExpandError::IncludeRead { path, error }) => {
                    return Err(Problem::Defer(
                        "4.3.0",
                        format!("cannot read include file {}: {error}", path.display()),
                    ))
                }
                Err(e @ ExpandError::Loop(_)) => {
                    return Err(Problem::Bounce("5.4.6", e.to_string()))
                }
                Err(e) => return Err(Problem::Bounce("5.3.5", e.to_string())),
            }
        }
        None => vec![Target::Local(base.to_string())],
    };
    for t in targets {
        match t {
            Target::Local(name) => {
                let name = strip_extension(&name, s).to_string();
                let user = match s.userdb.lookup(&name) {
                    Ok(Some(u)) => UserKey::from(u),
                    Ok(None) => {
                        return Err(Problem::Bounce(
                            "5.1.1",
                            format!("unknown user: \"{name}\""),
                        ))
                    }
                    Err(e) => {
                        return Err(Problem::Defer("4.3.0", format!("user lookup {name}: {e}")))
                    }
                };
                if seen_forward.insert(user.name.clone()) {
                    if let Some(dests) = read_forward(&user, s)? {
                        forward_targets(&user, dests, s, cache, out, seen_forward, depth)?;
                        continue;
                    }
                }
                out.push(Final::Mailbox(user));
            }
            Target::Remote(a) => out.push(Final::Remote(a)),
            Target::File { path, via } => {
                check_allowed(&s.allow_files, &via, "files")?;
                let (uid, gid) = owner_of(&via, alias_owner, s);
                out.push(Final::File { path, uid, gid });
            }
            Target::Command { command, via } => {
                check_allowed(&s.allow_commands, &via, "commands")?;
                let (uid, gid) = owner_of(&via, alias_owner, s);
                out.push(Final::Command {
                    command,
                    uid,
                    gid,
                    home: PathBuf::from("/"),
                    user: local.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn check_allowed(allowed: &[String], via: &Via, what: &str) -> Result<(), Problem> {
    let class = match via {
        Via::Alias => "alias",
        Via::Include(_) => "include",
    };
    if allowed.iter().any(|a| a == class) {
        Ok(())
    } else {
        Err(Problem::Bounce(
            "5.7.1",
            format!("mail to {what} is restricted (allow_mail_to_{what} does not list {class})"),
        ))
    }
}

/// Files and commands listed in an alias file or an `:include:` file run as that file's
/// owner, or as default_privs when root owns it (Postfix's rule).
fn owner_of(via: &Via, alias_owner: (u32, u32), s: &Settings) -> (u32, u32) {
    match via {
        Via::Alias => alias_owner,
        Via::Include(p) => owner_or_default_privs(p, s),
    }
}

fn owner_or_default_privs(file: &Path, s: &Settings) -> (u32, u32) {
    match std::fs::metadata(file) {
        Ok(m) if m.uid() != 0 => (m.uid(), m.gid()),
        _ => s.default_privs,
    }
}

fn read_forward(user: &UserKey, s: &Settings) -> Result<Option<Vec<Dest>>, Problem> {
    for pattern in &s.forward_path {
        let path = PathBuf::from(
            pattern
                .replace("$home", &user.home.to_string_lossy())
                .replace("${home}", &user.home.to_string_lossy())
                .replace("$user", &user.name)
                .replace("${user}", &user.name),
        );
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if !meta.is_file()
            || (meta.uid() != user.uid && meta.uid() != 0)
            || meta.mode() & 0o022 != 0
        {
            log::warn!(
                "{}: not owned by {} or writable by others; ignored",
                path.display(),
                user.name
            );
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Problem::Defer("4.3.0", format!("cannot read {}: {e}", path.display())))?;
        return match aliases::parse_destinations(&text, &path) {
            Ok(d) if d.is_empty() => Ok(None),
            Ok(d) => Ok(Some(d)),
            Err(errors) => Err(Problem::Defer(
                "4.3.0",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        };
    }
    Ok(None)
}

fn forward_targets(
    user: &UserKey,
    dests: Vec<Dest>,
    s: &Settings,
    cache: &AliasCache,
    out: &mut Vec<Final>,
    seen_forward: &mut HashSet<String>,
    depth: usize,
) -> Result<(), Problem> {
    let allowed = |list: &[String]| list.iter().any(|a| a == "forward");
    for d in dests {
        match d {
            Dest::Address(a) => {
                let own = a.strip_prefix('\\');
                match (own, local_name(&a, s)) {
                    (Some(name), _)
                        if strip_extension(&name.to_ascii_lowercase(), s) == user.name =>
                    {
                        out.push(Final::Mailbox(user.clone()))
                    }
                    (_, Some(name)) if name == user.name => out.push(Final::Mailbox(user.clone())),
                    (_, Some(name)) => {
                        resolve_local(&name, s, cache, out, seen_forward, depth + 1)?
                    }
                    (_, None) => out.push(Final::Remote(a)),
                }
            }
            Dest::File(path) if allowed(&s.allow_files) => out.push(Final::File {
                path,
                uid: user.uid,
                gid: user.gid,
            }),
            Dest::Command(command) if allowed(&s.allow_commands) => out.push(Final::Command {
                command,
                uid: user.uid,
                gid: user.gid,
                home: user.home.clone(),
                user: user.name.clone(),
            }),
            Dest::Include(_) => {
                return Err(Problem::Bounce(
                    "5.7.1",
                    ":include: is not allowed in .forward".into(),
                ))
            }
            _ => {
                return Err(Problem::Bounce(
                    "5.7.1",
                    "mail to files or commands is restricted for .forward".into(),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn setup(aliases: &str) -> (tempfile::TempDir, Settings) {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir_all(home.join("alice")).unwrap();
        std::fs::create_dir_all(home.join("bob")).unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let users = d.path().join("users");
        let mut f = std::fs::File::create(&users).unwrap();
        for u in ["alice", "bob"] {
            writeln!(f, "{u}:x:{uid}:{gid}::{}::", home.join(u).display()).unwrap();
        }
        let al = d.path().join("aliases");
        std::fs::write(&al, aliases).unwrap();
        let s = Settings {
            mydestination: vec!["example.org".into(), "localhost".into()],
            myorigin: "example.org".into(),
            recipient_delimiter: "+".into(),
            alias_maps: vec![al],
            userdb: UserDb::PasswdFile(users),
            forward_path: vec!["$home/.forward".into()],
            allow_commands: vec!["alias".into(), "forward".into()],
            allow_files: vec!["alias".into(), "forward".into()],
            double_bounce: "double-bounce".into(),
            default_privs: (65534, 65534),
        };
        (d, s)
    }

    fn names(f: &[Final]) -> Vec<String> {
        let mut v: Vec<String> = f
            .iter()
            .map(|x| match x {
                Final::Mailbox(u) => format!("mbox:{}", u.name),
                Final::Remote(a) => format!("remote:{a}"),
                Final::File { path, .. } => format!("file:{}", path.display()),
                Final::Command { command, .. } => format!("cmd:{command}"),
                Final::Discard => "discard".into(),
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn users_aliases_extensions_and_unknowns() {
        let (_d, s) = setup("team: alice, bob, carol@elsewhere.test\npostmaster: alice\n");
        let mut c = AliasCache::default();
        assert_eq!(
            names(&resolve("alice@example.org", &s, &mut c).unwrap()),
            vec!["mbox:alice"]
        );
        assert_eq!(
            names(&resolve("Alice+news@EXAMPLE.org", &s, &mut c).unwrap()),
            vec!["mbox:alice"]
        );
        assert_eq!(
            names(&resolve("team@localhost", &s, &mut c).unwrap()),
            vec!["mbox:alice", "mbox:bob", "remote:carol@elsewhere.test"]
        );
        assert_eq!(
            names(&resolve("x@remote.test", &s, &mut c).unwrap()),
            vec!["remote:x@remote.test"]
        );
        assert_eq!(
            names(&resolve("double-bounce@example.org", &s, &mut c).unwrap()),
            vec!["discard"]
        );
        match resolve("nobody@example.org", &s, &mut c) {
            Err(Problem::Bounce("5.1.1", m)) => assert!(m.contains("unknown user: \"nobody\"")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn alias_loops_bounce() {
        let (_d, s) = setup("a: b\nb: a\n");
        let mut c = AliasCache::default();
        assert!(matches!(
            resolve("a@example.org", &s, &mut c),
            Err(Problem::Bounce("5.4.6", _))
        ));
    }

    #[test]
    fn forward_files_replace_the_mailbox() {
        let (d, s) = setup("");
        let fwd = d.path().join("home/alice/.forward");
        std::fs::write(&fwd, "\\alice, bob, someone@far.test\n").unwrap();
        let mut c = AliasCache::default();
        assert_eq!(
            names(&resolve("alice@example.org", &s, &mut c).unwrap()),
            vec!["mbox:alice", "mbox:bob", "remote:someone@far.test"]
        );
        // Forward loops between users end in their mailboxes, not in a loop.
        std::fs::write(d.path().join("home/bob/.forward"), "alice\n").unwrap();
        std::fs::write(&fwd, "bob\n").unwrap();
        let r = names(&resolve("alice@example.org", &s, &mut c).unwrap());
        assert_eq!(r, vec!["mbox:alice"], "{r:?}");
    }

    #[test]
    fn commands_and_files_follow_the_allow_lists() {
        let (_d, mut s) = setup("log: /tmp/petrel-log-file\nprog: \"|cat > /dev/null\"\n");
        let mut c = AliasCache::default();
        assert_eq!(
            names(&resolve("log@example.org", &s, &mut c).unwrap()),
            vec!["file:/tmp/petrel-log-file"]
        );
        assert_eq!(
            names(&resolve("prog@example.org", &s, &mut c).unwrap()),
            vec!["cmd:cat > /dev/null"]
        );
        s.allow_commands = vec![];
        assert!(matches!(
            resolve("prog@example.org", &s, &mut c),
            Err(Problem::Bounce("5.7.1", _))
        ));
    }
}
