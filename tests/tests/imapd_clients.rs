//! imapd with real clients (issue 6): mbsync (isync) syncing 1000 messages both ways over
//! IMAPS, a Maildir written by Dovecot (doveadm) opened by Petrel, and mutt under tmux.
//! The server side is always checked with Python's imaplib over IMAPS. Each test boots its
//! own sandbox, skips with a printed reason when a client is not installed, and every wait
//! is bounded.
#![allow(clippy::unwrap_used)]

use petrel_tests::imap::{ensure_listener, have_python, imap_port, imaps_port, show, start_imapd};
use petrel_tests::{installed, python, run_limited, Sandbox};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENT_LIMIT: Duration = Duration::from_secs(120);

/// The sandbox's self-signed certificate (for mail.sandbox.test).
fn cert(sb: &Sandbox) -> PathBuf {
    sb.etc.join("tls").join("cert.pem")
}

/// A sandbox (not started) with imapd on base+143 and base+993, and demo's password.
fn imap_sandbox(name: &str) -> (Sandbox, String) {
    let (sb, pw) = Sandbox::new_with_demo_password(name);
    ensure_listener(&sb, imap_port(&sb), "imapd");
    ensure_listener(&sb, imaps_port(&sb), "imapd -o imapd_tls_wrappermode=yes");
    (sb, pw)
}

/// The last `n` lines of the sandbox's log, for assertion messages.
fn log_tail(sb: &Sandbox, n: usize) -> String {
    let log = sb.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// The server's view, through imaplib over IMAPS.
// ---------------------------------------------------------------------------------------

/// Python prelude: an IMAPS connection logged in as demo (`port pw` are argv 1 and 2), and
/// `messages(box)` printing one tab-separated `MSG` line per message of `box`.
const PY_IMAPS: &str = r#"
import imaplib, re, ssl, sys
port = int(sys.argv[1])
pw = sys.argv[2]
args = sys.argv[3:]
c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
c.check_hostname = False
c.verify_mode = ssl.CERT_NONE
M = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=c, timeout=30)
typ, d = M.login("demo", pw)
if typ != "OK":
    print("LOGINFAIL %s %r" % (typ, d))
    sys.exit(1)

def q(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

def fetch_all(box):
    """(uid, flags, message-id, subject) of every message of the selected mailbox."""
    typ, d = M.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])")
    if typ != "OK":
        print("FETCHFAIL\t%s\t%s\t%r" % (box, typ, d))
        return []
    msgs = []
    cur = None
    def emit(cur):
        meta, lit = cur
        uid = re.search(r"UID (\d+)", meta)
        flags = re.search(r"FLAGS \(([^)]*)\)", meta)
        mid = re.search(r"(?im)^Message-ID:\s*(\S+)", lit)
        subj = re.search(r"(?im)^Subject:[ \t]*([^\r\n]*)", lit)
        msgs.append((uid.group(1) if uid else "?", flags.group(1) if flags else "?",
                     mid.group(1) if mid else "", subj.group(1) if subj else ""))
    for item in d:
        if isinstance(item, tuple):
            if cur:
                emit(cur)
            cur = [item[0].decode("utf-8", "replace"), item[1].decode("utf-8", "replace")]
        elif isinstance(item, bytes) and cur:
            cur[0] += item.decode("utf-8", "replace")
            emit(cur)
            cur = None
    if cur:
        emit(cur)
    return msgs

def messages(box):
    typ, st = M.status(q(box), "(MESSAGES UIDVALIDITY)")
    print("STATUS\t%s\t%s\t%s" % (box, typ, (st[0] or b"").decode("utf-8", "replace")))
    typ, d = M.select(q(box), readonly=True)
    if typ != "OK":
        print("NOBOX\t%s\t%s\t%r" % (box, typ, d))
        return
    n = int(d[0])
    print("BOX\t%s\t%d" % (box, n))
    if n:
        for (uid, flags, mid, subj) in fetch_all(box):
            print("MSG\t%s\t%s\t%s\t%s\t%s" % (box, uid, flags, mid, subj))
    M.close()
"#;

/// Dumps LIST and the given mailboxes.
const PY_DUMP: &str = r#"
typ, d = M.list('""', '*')
for l in d:
    if l:
        print("LIST\t" + l.decode("utf-8", "replace"))
for b in args:
    messages(b)
M.logout()
"#;

/// Adds the flag argv[5] to the INBOX messages whose Message-ID is `<mbsync-N@example.org>`
/// with argv[3] <= N <= argv[4].
const PY_FLAG_RANGE: &str = r#"
lo, hi, flag = int(args[0]), int(args[1]), args[2]
typ, d = M.select("INBOX")
assert typ == "OK", d
uids = []
for (uid, flags, mid, subj) in fetch_all("INBOX"):
    m = re.match(r"<mbsync-(\d+)@example\.org>", mid)
    if m and lo <= int(m.group(1)) <= hi:
        uids.append(uid)
typ, d = M.uid("STORE", ",".join(uids), "+FLAGS.SILENT", "(%s)" % flag)
print("STORE\t%d\t%s\t%r" % (len(uids), typ, d))
M.close()
M.logout()
"#;

/// One message as the server shows it.
#[derive(Debug, Clone)]
struct ServerMsg {
    uid: u32,
    /// Flags and keywords without `\Recent`.
    flags: BTreeSet<String>,
    message_id: String,
    subject: String,
}

/// What [`dump`] saw.
#[derive(Debug, Default)]
struct ServerView {
    /// `* LIST` lines, without the `* LIST ` prefix.
    list: Vec<String>,
    /// Mailbox → its messages (only for mailboxes that could be selected).
    boxes: BTreeMap<String, Vec<ServerMsg>>,
    /// Mailbox → the EXISTS count SELECT gave.
    exists: BTreeMap<String, usize>,
    /// Mailbox → the STATUS response line.
    status: BTreeMap<String, String>,
    /// Everything python printed.
    raw: String,
}

impl ServerView {
    /// The messages of `b`; panics (with what the server said) when it was not selected.
    fn msgs(&self, b: &str) -> &Vec<ServerMsg> {
        self.boxes
            .get(b)
            .unwrap_or_else(|| panic!("mailbox {b:?} could not be selected:\n{}", self.raw))
    }

    /// Mailbox names in the LIST response (quotes removed).
    fn names(&self) -> BTreeSet<String> {
        self.list
            .iter()
            .filter_map(|l| {
                let rest = l.split_once(") ")?.1.trim();
                // delimiter then name
                let name = if let Some(r) = rest.strip_prefix('"') {
                    r.split_once("\" ")?.1
                } else {
                    rest.split_once(' ')?.1
                };
                let name = name.trim();
                Some(
                    name.strip_prefix('"')
                        .and_then(|n| n.strip_suffix('"'))
                        .unwrap_or(name)
                        .replace("\\\"", "\"")
                        .replace("\\\\", "\\"),
                )
            })
            .collect()
    }
}

fn flag_set(text: &str) -> BTreeSet<String> {
    text.split_whitespace()
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .map(str::to_string)
        .collect()
}

/// Runs `script` after [`PY_IMAPS`] and parses its `LIST`/`STATUS`/`BOX`/`MSG` lines.
fn py_imaps(sb: &Sandbox, pw: &str, script: &str, args: &[&str]) -> ServerView {
    let port = imaps_port(sb).to_string();
    let mut all = vec![port.as_str(), pw];
    all.extend_from_slice(args);
    let out = python(&format!("{PY_IMAPS}{script}"), &all, CLIENT_LIMIT);
    let raw = show(&out);
    assert!(
        out.status.success(),
        "python failed: {raw}\nlog:\n{}",
        log_tail(sb, 30)
    );
    let mut v = ServerView {
        raw: raw.clone(),
        ..Default::default()
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "LIST" => v
                .list
                .push(f[1].strip_prefix("* LIST ").unwrap_or(f[1]).into()),
            "STATUS" => {
                v.status.insert(f[1].into(), f[2..].join(" "));
            }
            "BOX" => {
                v.exists.insert(f[1].into(), f[2].parse().unwrap());
                v.boxes.entry(f[1].into()).or_default();
            }
            "MSG" => v.boxes.entry(f[1].into()).or_default().push(ServerMsg {
                uid: f[2]
                    .parse()
                    .unwrap_or_else(|_| panic!("bad uid in {line:?}\n{raw}")),
                flags: flag_set(f[3]),
                message_id: f[4].into(),
                subject: f.get(5).unwrap_or(&"").to_string(),
            }),
            "FETCHFAIL" => panic!("UID FETCH failed: {line}\n{raw}"),
            _ => {}
        }
    }
    v
}

/// LIST and the messages of `boxes`, as demo sees them over IMAPS.
fn dump(sb: &Sandbox, pw: &str, boxes: &[&str]) -> ServerView {
    py_imaps(sb, pw, PY_DUMP, boxes)
}

/// The IMAP flags of a Maildir file name's `:2,` suffix.
fn maildir_flags(name: &str) -> BTreeSet<String> {
    let info = name.rsplit_once(":2,").map(|(_, i)| i).unwrap_or("");
    info.chars()
        .filter_map(|c| match c {
            'D' => Some("\\Draft"),
            'F' => Some("\\Flagged"),
            'R' => Some("\\Answered"),
            'S' => Some("\\Seen"),
            'T' => Some("\\Deleted"),
            _ => None,
        })
        .map(str::to_string)
        .collect()
}

/// The `Message-ID` header of a message file.
fn file_message_id(p: &Path) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).to_string();
    petrel_tests::header(&text, "Message-ID").unwrap_or_default()
}

/// Files in `dir/new` and `dir/cur`.
fn maildir_files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            v.extend(rd.flatten().map(|e| e.path()));
        }
    }
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// 1. mbsync: two-way sync of 1000 messages, flags changed on both sides, deletions.
// ---------------------------------------------------------------------------------------

const MBSYNC_N: usize = 1000;

/// Writes `n` messages into `maildir/new` directly (what local does, minus the queue).
fn fill_maildir(maildir: &Path, n: usize) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pid = std::process::id();
    for i in 1..=n {
        let body = format!(
            "From: sender@example.org\nTo: demo@localhost\nSubject: mbsync message {i}\n\
             Date: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <mbsync-{i}@example.org>\n\n\
             Body of message {i}.\n"
        );
        let tmp = maildir.join("tmp").join(format!("{t}.M{i}P{pid}.test"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(
            &tmp,
            maildir.join("new").join(format!("{t}.M{i}P{pid}.test")),
        )
        .unwrap();
    }
}

/// The number N of a `<mbsync-N@example.org>` Message-ID.
fn mbsync_number(mid: &str) -> Option<usize> {
    mid.trim()
        .strip_prefix("<mbsync-")?
        .strip_suffix("@example.org>")?
        .parse()
        .ok()
}

/// Message number → flags, from the server; panics on a duplicate or foreign message.
fn server_by_number(v: &ServerView) -> BTreeMap<usize, BTreeSet<String>> {
    let mut m = BTreeMap::new();
    for msg in v.msgs("INBOX") {
        let n = mbsync_number(&msg.message_id)
            .unwrap_or_else(|| panic!("server: unexpected message {msg:?}"));
        assert!(
            m.insert(n, msg.flags.clone()).is_none(),
            "server: message {n} twice (uid {})",
            msg.uid
        );
    }
    m
}

/// Message number → (file, flags), from the local Maildir; panics on a duplicate.
fn local_by_number(dir: &Path) -> BTreeMap<usize, (PathBuf, BTreeSet<String>)> {
    let mut m = BTreeMap::new();
    for p in maildir_files(dir) {
        let mid = file_message_id(&p);
        let n = mbsync_number(&mid)
            .unwrap_or_else(|| panic!("local: unexpected message {} ({mid})", p.display()));
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let flags = maildir_flags(&name);
        if let Some((old, _)) = m.insert(n, (p.clone(), flags)) {
            panic!(
                "local: message {n} twice: {} and {}",
                old.display(),
                p.display()
            );
        }
    }
    m
}

/// Adds flag letter `letter` to a local Maildir file (moving it to cur/).
fn add_local_flag(p: &Path, letter: char) {
    let name = p.file_name().unwrap().to_string_lossy().to_string();
    let (base, info) = match name.rsplit_once(":2,") {
        Some((b, i)) => (b.to_string(), i.to_string()),
        None => (name.clone(), String::new()),
    };
    let mut letters: BTreeSet<char> = info.chars().collect();
    letters.insert(letter);
    let info: String = letters.into_iter().collect();
    let cur = p.parent().unwrap().parent().unwrap().join("cur");
    std::fs::rename(p, cur.join(format!("{base}:2,{info}"))).unwrap();
}

fn mbsync_run(mbsync: &Path, home: &Path, rc: &Path, sb: &Sandbox, round: &str) -> String {
    let mut c = Command::new(mbsync);
    c.env("HOME", home)
        .arg("-c")
        .arg(rc)
        .arg("-V")
        .arg("-a")
        .current_dir(home);
    let t0 = Instant::now();
    let out = run_limited(c, b"", CLIENT_LIMIT);
    assert!(
        out.status.success(),
        "mbsync ({round}): {}\nlog:\n{}",
        show(&out),
        log_tail(sb, 40)
    );
    eprintln!("mbsync {round}: {:.2} s", t0.elapsed().as_secs_f64());
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn mbsync_two_way_sync_of_1000_messages() {
    if !have_python() {
        return;
    }
    let Some(mbsync) = installed(&["/usr/bin/mbsync", "/usr/local/bin/mbsync"]) else {
        eprintln!("SKIP: mbsync is not installed (apt-get install isync)");
        return;
    };
    let version = Command::new(&mbsync).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    eprintln!("using {version}");
    // isync 1.5 renamed SSLType to TLSType (1.4 knows only SSLType).
    let tls_type = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| {
            let mut p = v.split('.');
            Some((
                p.next()?.parse::<u32>().ok()?,
                p.next()?.parse::<u32>().ok()?,
            ))
        })
        .map(|(a, b)| {
            if (a, b) >= (1, 5) {
                "TLSType"
            } else {
                "SSLType"
            }
        })
        .unwrap_or("SSLType");

    let (mut sb, pw) = imap_sandbox("imapc_mbsync");
    start_imapd(&mut sb);
    fill_maildir(&sb.maildir("demo"), MBSYNC_N);

    let home = tempfile::tempdir().unwrap();
    let local = home.path().join("mail");
    std::fs::create_dir(&local).unwrap();
    let rc = home.path().join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount petrel\nHost 127.0.0.1\nPort {port}\nUser demo\nPass \"{pw}\"\n\
             {tls_type} IMAPS\nCertificateFile {cert}\nTimeout 60\n\n\
             IMAPStore remote\nAccount petrel\n\n\
             MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n\
             Channel petrel\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Both\n\
             Expunge Both\nSyncState *\nSync All\n",
            port = imaps_port(&sb),
            cert = cert(&sb).display(),
            local = local.display(),
        ),
    )
    .unwrap();
    let inbox = local.join("INBOX");

    // First sync: everything comes down, nothing goes up twice.
    mbsync_run(&mbsync, home.path(), &rc, &sb, "first");
    let loc = local_by_number(&inbox);
    assert_eq!(loc.len(), MBSYNC_N, "local messages after the first sync");
    let srv = server_by_number(&dump(&sb, &pw, &["INBOX"]));
    assert_eq!(srv.len(), MBSYNC_N, "server messages after the first sync");

    // Both sides change flags: \Seen on 1..=100 locally, \Flagged on 901..=1000 on the
    // server, and on 51..=60 both (\Flagged on the server, \Seen locally).
    for n in 1..=100 {
        add_local_flag(&loc[&n].0, 'S');
    }
    let st = py_imaps(&sb, &pw, PY_FLAG_RANGE, &["901", "1000", "\\Flagged"]);
    assert!(st.raw.contains("STORE\t100\tOK"), "{}", st.raw);
    let st = py_imaps(&sb, &pw, PY_FLAG_RANGE, &["51", "60", "\\Flagged"]);
    assert!(st.raw.contains("STORE\t10\tOK"), "{}", st.raw);

    mbsync_run(&mbsync, home.path(), &rc, &sb, "second");
    let want = |n: usize| -> BTreeSet<String> {
        let mut s = BTreeSet::new();
        if n <= 100 {
            s.insert("\\Seen".to_string());
        }
        if n > 900 || (51..=60).contains(&n) {
            s.insert("\\Flagged".to_string());
        }
        s
    };
    let loc = local_by_number(&inbox);
    let srv = server_by_number(&dump(&sb, &pw, &["INBOX"]));
    assert_eq!(loc.len(), MBSYNC_N, "local messages after the second sync");
    assert_eq!(srv.len(), MBSYNC_N, "server messages after the second sync");
    let mut wrong = Vec::new();
    for n in 1..=MBSYNC_N {
        let (l, s, w) = (&loc[&n].1, &srv[&n], want(n));
        if *l != w || *s != w {
            wrong.push(format!("{n}: local {l:?} server {s:?} want {w:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} messages with wrong flags after the second sync, e.g.:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );

    // Delete 1..=50 locally: the server expunges them.
    for n in 1..=50 {
        std::fs::remove_file(&loc[&n].0).unwrap();
    }
    mbsync_run(&mbsync, home.path(), &rc, &sb, "third");
    let loc = local_by_number(&inbox);
    let srv = server_by_number(&dump(&sb, &pw, &["INBOX"]));
    assert_eq!(loc.len(), MBSYNC_N - 50, "local messages after deleting 50");
    assert_eq!(
        srv.len(),
        MBSYNC_N - 50,
        "server messages after deleting 50"
    );
    assert!(
        (1..=50).all(|n| !srv.contains_key(&n)),
        "a locally deleted message is still on the server"
    );
    assert_eq!(
        sb.messages("demo").len(),
        MBSYNC_N - 50,
        "files in demo's Maildir after the expunge"
    );

    // A fourth sync changes nothing.
    mbsync_run(&mbsync, home.path(), &rc, &sb, "fourth");
    let loc2 = local_by_number(&inbox);
    assert_eq!(loc2.len(), MBSYNC_N - 50);
    let srv2 = server_by_number(&dump(&sb, &pw, &["INBOX"]));
    assert_eq!(srv2, srv, "a sync with no changes changed the server");
}

// ---------------------------------------------------------------------------------------
// 2. A Maildir written by Dovecot (doveadm) opened by Petrel.
// ---------------------------------------------------------------------------------------

/// Runs doveadm with a throwaway config; Err(stderr) when it failed.
fn doveadm(
    conf: &Path,
    home: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<String, String> {
    let mut c = Command::new("doveadm");
    c.arg("-c").arg(conf).args(args);
    c.env("USER", "petreltest").env("HOME", home);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("spawn doveadm: {e}"))?;
    if let Some(data) = stdin {
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn dovecot_written_maildir_keeps_folders_flags_and_keywords() {
    if !have_python() {
        return;
    }
    if installed(&["/usr/bin/doveadm", "/usr/local/bin/doveadm"]).is_none() {
        eprintln!("SKIP: doveadm is not installed (apt-get install dovecot-core)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path();
    let maildir = base.join("Maildir");
    let home = base.join("home");
    std::fs::create_dir(&home).unwrap();
    // Dovecot refuses mail access as root: run as the owner of the directory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (uid, gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
    if uid == 65534 {
        for p in [base, home.as_path()] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
    }
    let conf = base.join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "base_dir = {b}/run\nlog_path = {b}/log\nssl = no\n\
             mail_location = maildir:{m}\nmail_uid = {uid}\nmail_gid = {gid}\n\
             first_valid_uid = 0\nfirst_valid_gid = 0\n\
             namespace inbox {{\n  inbox = yes\n}}\n\
             passdb {{\n  driver = static\n  args = password=x\n}}\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={h}\n}}\n",
            b = base.display(),
            m = maildir.display(),
            h = home.display(),
        ),
    )
    .unwrap();
    let run = |args: &[&str], stdin: Option<&[u8]>| doveadm(&conf, &home, args, stdin);
    if let Err(e) = run(
        &["mailbox", "create", "-s", "Lists", "Lists.work", "Friends"],
        None,
    ) {
        eprintln!("SKIP: doveadm cannot run here: {e}");
        return;
    }
    let save = |boxname: &str, i: usize| {
        let msg = format!(
            "From: someone@example.org\nTo: demo@localhost\nSubject: {boxname} {i}\n\
             Message-ID: <dove-{boxname}-{i}@example.org>\n\nBody {i} of {boxname}.\n"
        );
        run(&["save", "-m", boxname], Some(msg.as_bytes())).unwrap();
    };
    let counts = [
        ("INBOX", 4),
        ("Lists", 2),
        ("Lists.work", 5),
        ("Friends", 0),
    ];
    for (b, n) in counts {
        for i in 1..=n {
            save(b, i);
        }
    }
    let flag = |b: &str, uid: &str, flags: &str| {
        run(&["flags", "add", flags, "mailbox", b, "uid", uid], None).unwrap();
    };
    flag("INBOX", "1", "\\Seen $Junk");
    flag("INBOX", "2", "\\Answered \\Flagged $Forwarded work");
    flag("INBOX", "4", "\\Seen \\Deleted");
    flag("Lists", "2", "\\Draft todo");
    flag("Lists.work", "1", "\\Seen");
    flag("Lists.work", "3", "\\Seen \\Flagged $label1 work");
    flag("Lists.work", "5", "later");
    // Dovecot's own view: mailbox → uid → flags, and mailbox → uidvalidity.
    let fetched = run(&["-f", "tab", "fetch", "mailbox uid flags", "all"], None).unwrap();
    let mut dove: BTreeMap<String, BTreeMap<u32, BTreeSet<String>>> = BTreeMap::new();
    for l in fetched.lines().skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        dove.entry(f[0].to_string())
            .or_default()
            .insert(f[1].parse().unwrap(), flag_set(f.get(2).unwrap_or(&"")));
    }
    let status = run(
        &[
            "-f",
            "tab",
            "mailbox",
            "status",
            "messages uidvalidity",
            "*",
        ],
        None,
    )
    .unwrap();
    let mut dove_status: BTreeMap<String, (usize, u32)> = BTreeMap::new();
    for l in status.lines().skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        dove_status.insert(
            f[0].to_string(),
            (f[1].parse().unwrap(), f[2].parse().unwrap()),
        );
    }
    let dove_boxes: BTreeSet<String> = run(&["mailbox", "list"], None)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    eprintln!("dovecot: {dove_status:?}\n{fetched}");
    for (b, n) in counts {
        assert_eq!(dove_status[b].0, n, "dovecot's count of {b}");
    }

    // The Dovecot Maildir becomes demo's, before anything of Petrel's looked at it.
    let (mut sb, pw) = imap_sandbox("imapc_dovecot");
    let target = sb.maildir("demo");
    std::fs::remove_dir_all(&target).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&maildir)
        .arg(&target)
        .output()
        .unwrap();
    assert!(cp.status.success(), "cp -a: {}", show(&cp));
    let owner = target.parent().unwrap();
    let ch = Command::new("chown")
        .arg("-R")
        .arg(format!("--reference={}", owner.display()))
        .arg(&target)
        .output()
        .unwrap();
    assert!(ch.status.success(), "chown: {}", show(&ch));
    start_imapd(&mut sb);

    let names: Vec<&str> = dove_boxes.iter().map(String::as_str).collect();
    let v = dump(&sb, &pw, &names);
    let listed = v.names();
    for b in &dove_boxes {
        assert!(
            listed.contains(b),
            "Dovecot's folder {b:?} is not in Petrel's LIST: {listed:?}\n{}",
            v.raw
        );
    }
    // Anything more can only be the special-use folders Petrel creates on first login.
    let extra: Vec<&String> = listed
        .iter()
        .filter(|n| !dove_boxes.contains(*n))
        .filter(|n| !["Sent", "Drafts", "Trash", "Junk", "Archive"].contains(&n.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "folders Dovecot did not have: {extra:?}\n{}",
        v.raw
    );

    for b in &dove_boxes {
        let (n, uidvalidity) = dove_status[b];
        assert_eq!(v.exists[b], n, "EXISTS of {b}\n{}", v.raw);
        let st = &v.status[b];
        assert!(
            st.contains(&format!("MESSAGES {n}"))
                && st.contains(&format!("UIDVALIDITY {uidvalidity}")),
            "STATUS {b}: {st} (Dovecot: {n} messages, uidvalidity {uidvalidity})"
        );
        let petrel: BTreeMap<u32, BTreeSet<String>> =
            v.msgs(b).iter().map(|m| (m.uid, m.flags.clone())).collect();
        let want = dove.get(b).cloned().unwrap_or_default();
        assert_eq!(
            petrel, want,
            "uid → flags of {b} (left Petrel, right Dovecot)"
        );
        for m in v.msgs(b) {
            assert_eq!(
                m.message_id,
                format!("<dove-{b}-{}@example.org>", m.uid),
                "the message with uid {} of {b}",
                m.uid
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. mutt under tmux: open INBOX over imaps, read one, delete one, move one.
// ---------------------------------------------------------------------------------------

/// A tmux server of our own (its own socket) running one program.
struct Tmux {
    tmux: PathBuf,
    sock: PathBuf,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.tmux);
        c.arg("-S").arg(&self.sock);
        c
    }

    fn keys(&self, keys: &[&str]) {
        let out = self
            .cmd()
            .args(["send-keys", "-t", "m"])
            .args(keys)
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux send-keys: {}", show(&out));
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "m"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Waits until the screen satisfies `cond`; answers a certificate prompt once.
    fn wait(&self, what: &str, limit: Duration, cond: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + limit;
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            if Instant::now() >= end {
                panic!("mutt: timed out after {limit:?} waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// Creates Lists and delivers three messages over imaplib (APPEND), so that mutt has
/// something to read, delete and move.
const PY_MUTT_SETUP: &str = r#"
typ, d = M.create("Lists")
print("CREATE\t%s\t%r" % (typ, d))
for i, name in enumerate(["one", "two", "three"]):
    msg = ("From: sender@example.org\r\nTo: demo@localhost\r\nSubject: mutt %s\r\n"
           "Date: Mon, 1 Jan 2024 00:0%d:00 +0000\r\nMessage-ID: <mutt-%s@example.org>\r\n\r\n"
           "This is the body of mutt %s.\r\n" % (name, i, name, name)).encode()
    typ, d = M.append("INBOX", None, None, msg)
    print("APPEND\t%s\t%r" % (typ, d))
M.logout()
"#;

#[test]
fn mutt_reads_deletes_and_moves_over_imaps() {
    if !have_python() {
        return;
    }
    let Some(tmux) = installed(&["/usr/bin/tmux", "/usr/local/bin/tmux"]) else {
        eprintln!("SKIP: tmux is not installed (apt-get install tmux)");
        return;
    };
    let Some(mutt) = installed(&[
        "/usr/bin/mutt",
        "/usr/local/bin/mutt",
        "/usr/bin/neomutt",
        "/usr/local/bin/neomutt",
    ]) else {
        eprintln!("SKIP: neither mutt nor neomutt is installed (apt-get install mutt)");
        return;
    };
    let (mut sb, pw) = imap_sandbox("imapc_mutt");
    start_imapd(&mut sb);
    let setup = py_imaps(&sb, &pw, PY_MUTT_SETUP, &[]);
    assert!(
        setup.raw.contains("CREATE\tOK") && setup.raw.matches("APPEND\tOK").count() == 3,
        "{}",
        setup.raw
    );

    let home = tempfile::tempdir().unwrap();
    let certs = home.path().join("certs.pem");
    std::fs::copy(cert(&sb), &certs).unwrap();
    let rc = home.path().join("muttrc");
    std::fs::write(
        &rc,
        format!(
            "set folder=\"imaps://demo@127.0.0.1:{port}/\"\nset spoolfile=\"+INBOX\"\n\
             set imap_user=\"demo\"\nset imap_pass=\"{pw}\"\n\
             set certificate_file=\"{certs}\"\nset ssl_verify_host=no\n\
             set sort=mailbox-order\nset confirmappend=no\nset confirmcreate=no\n\
             set delete=yes\nset move=no\nset mark_old=no\nset quit=yes\nset wait_key=no\n\
             set pager_stop=yes\nset pager_index_lines=0\nset timeout=5\nset mail_check=5\n\
             set header_cache=\"\"\nset message_cachedir=\"\"\nset editor=true\n\
             set index_format=\"%4C %Z %s\"\n",
            port = imaps_port(&sb),
            certs = certs.display(),
        ),
    )
    .unwrap();

    let t = Tmux {
        tmux,
        sock: home.path().join("tmux.sock"),
    };
    let shell_cmd = format!(
        "HOME={h} TERM=xterm {mutt} -n -F {rc} 2>{h}/mutt.err; sleep 30",
        h = home.path().display(),
        mutt = mutt.display(),
        rc = rc.display(),
    );
    let out = t
        .cmd()
        .args([
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "m",
            "-x",
            "160",
            "-y",
            "40",
        ])
        .arg(&shell_cmd)
        .output()
        .unwrap();
    assert!(out.status.success(), "tmux new-session: {}", show(&out));

    // The index, possibly after a certificate question.
    let limit = Duration::from_secs(30);
    let s = t.wait("the index with three messages", limit, |s| {
        (s.contains("mutt one") && s.contains("mutt three")) || s.contains("(r)eject")
    });
    if s.contains("(r)eject") {
        eprintln!("mutt asked about the certificate; accepting once:\n{s}");
        t.keys(&["o"]);
        t.wait("the index with three messages", limit, |s| {
            s.contains("mutt one") && s.contains("mutt three")
        });
    }

    // Read message 1.
    t.keys(&["1", "Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["Enter"]);
    t.wait("the body of message 1 in the pager", limit, |s| {
        s.contains("This is the body of mutt one.")
    });
    t.keys(&["i"]);
    t.wait("the index again", limit, |s| s.contains("mutt three"));

    // Delete message 2.
    t.keys(&["2", "Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["d"]);
    // Move (save, which marks it deleted) message 3 to Lists.
    t.keys(&["3", "Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["s"]);
    t.wait("the save prompt", limit, |s| s.contains("Save to mailbox"));
    t.keys(&["C-u", "=Lists", "Enter"]);
    std::thread::sleep(Duration::from_millis(500));
    // Sync: expunge the deleted ones, then quit.
    t.keys(&["$"]);
    std::thread::sleep(Duration::from_millis(500));
    t.keys(&["q"]);
    let end = Instant::now() + limit;
    while Instant::now() < end && !t.screen().trim().is_empty() {
        // mutt gone: the pane shows the (empty) shell running `sleep`.
        if !t.screen().contains("mutt one") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = std::fs::read_to_string(home.path().join("mutt.err")).unwrap_or_default();
    let screen = t.screen();

    let v = dump(&sb, &pw, &["INBOX", "Lists"]);
    let inbox: Vec<(&str, &BTreeSet<String>)> = v
        .msgs("INBOX")
        .iter()
        .map(|m| (m.subject.as_str(), &m.flags))
        .collect();
    assert_eq!(
        inbox.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec!["mutt one"],
        "INBOX after mutt read 1, deleted 2, moved 3\nscreen:\n{screen}\nmutt stderr:\n{err}\n{}",
        v.raw
    );
    assert!(
        inbox[0].1.contains("\\Seen"),
        "the message mutt read is not \\Seen: {:?}",
        inbox[0].1
    );
    let lists: Vec<&str> = v.msgs("Lists").iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        lists,
        vec!["mutt three"],
        "Lists after mutt moved 3\n{}",
        v.raw
    );
}
