//! Installing Petrel the way an administrator does.
//!
//! - `make install PREFIX=/usr DESTDIR=…` installs exactly the commands, the daemons, the
//!   default configuration and the man pages (any user can run this one).
//! - The Debian package (`make deb`), as root: installed with apt-get into a throwaway copy
//!   of this machine (an overlay over `/` in private mount and network namespaces, entered
//!   with chroot), where it replaces postfix as the mail-transport-agent, makes its users,
//!   spool and certificate, and is started by its init script from postinst; mail sent with
//!   `/usr/sbin/sendmail` by an ordinary user and over SMTP on port 25 reaches that user's
//!   Maildir; every service runs as its configured uid without capabilities; postdrop is
//!   the package's only set-id program; `dpkg -i` over it restarts it and keeps an edited
//!   petrel.conf; the init script and `petrel` stop and start it; the systemd unit's
//!   ExecStart is master in the foreground, which one SIGTERM stops with all its services
//!   (systemd itself does not run here: `systemd-analyze verify` checks the unit);
//!   `dpkg --remove` keeps the spool and users and `dpkg --purge` leaves nothing of ours.
//!   Skips with a printed reason when not root or when dpkg-buildpackage, debhelper or
//!   unshare are missing.
#![allow(clippy::unwrap_used)]

use petrel_tests::show;
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The top of the source tree (where the Makefile is).
fn top() -> PathBuf {
    let r = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    r.canonicalize().unwrap_or(r)
}

/// The build `make install` and `make deb` take: the one the tests run (target/debug).
fn profile() -> &'static str {
    "debug"
}

/// `make -C TOP ARGS` with the programs already built (cargo is not run: `CARGO=true`):
/// those next to this test (`OUT`), whatever target directory they were built in.
fn make(args: &[&str]) -> Output {
    let mut c = Command::new("make");
    c.arg("-s")
        .arg("-C")
        .arg(top())
        .arg("CARGO=true")
        .arg(format!("PROFILE={}", profile()))
        .arg(format!("OUT={}", petrel_tests::bin_dir().display()))
        .args(args)
        .stdin(Stdio::null());
    c.output().unwrap()
}

/// Every path under `root`, relative, with `/` after directories' names left out.
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(rel);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// The man pages of the source tree, as installed: `share/man/manN/NAME.N`.
fn man_pages() -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(top().join("man")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some((_, sec)) = name.rsplit_once('.') {
            if ["1", "5", "8"].contains(&sec) {
                v.push(format!("share/man/man{sec}/{name}"));
            }
        }
    }
    v
}

const DAEMONS: [&str; 12] = [
    "master", "smtpd", "cleanup", "qmgr", "local", "smtp", "pickup", "showq", "authd", "imapd",
    "pop3d", "postdrop",
];

#[test]
fn make_install_puts_exactly_the_programs_configuration_and_man_pages_in_place() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let o = make(&[
        "install",
        "PREFIX=/usr",
        &format!("DESTDIR={}", dest.display()),
    ]);
    assert!(o.status.success(), "make install: {}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("petrel set-permissions"),
        "a DESTDIR install says what to run next: {}",
        show(&o)
    );

    let mut want: BTreeSet<String> = [
        "usr/sbin/petrel",
        "usr/sbin/sendmail",
        "usr/bin/mailq",
        "usr/bin/newaliases",
        "usr/lib/sendmail",
        "etc/petrel/petrel.conf",
        "etc/petrel/services.conf",
        "usr/share/man/man1/sendmail.1",
        "usr/share/man/man1/mailq.1",
        "usr/share/man/man1/newaliases.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.extend(DAEMONS.iter().map(|d| format!("usr/lib/petrel/{d}")));
    want.extend(man_pages().iter().map(|m| format!("usr/{m}")));
    for page in [
        "man1/petrel.1",
        "man1/petrel-sendmail.1",
        "man5/petrel.conf.5",
        "man5/services.conf.5",
        "man8/petrel.8",
        "man8/petrel-master.8",
    ] {
        assert!(want.contains(&format!("usr/share/man/{page}")), "{page}");
    }
    assert_eq!(
        tree(&dest),
        want,
        "make install installs exactly these files"
    );

    // sendmail's other names lead to it; the programs are executable by everyone.
    for (link, target) in [
        ("usr/bin/mailq", "../sbin/sendmail"),
        ("usr/bin/newaliases", "../sbin/sendmail"),
        ("usr/lib/sendmail", "../sbin/sendmail"),
        ("usr/share/man/man1/mailq.1", "petrel-sendmail.1"),
    ] {
        assert_eq!(
            std::fs::read_link(dest.join(link)).unwrap(),
            PathBuf::from(target),
            "{link}"
        );
        assert!(dest.join(link).exists(), "{link} resolves");
    }
    for p in DAEMONS
        .iter()
        .map(|d| format!("usr/lib/petrel/{d}"))
        .chain(["usr/sbin/petrel".into(), "usr/sbin/sendmail".into()])
    {
        let mode = std::fs::metadata(dest.join(&p)).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755, "{p}: {mode:o}");
    }
    // The installed configuration names where the programs went, and is otherwise the
    // default of etc/.
    let conf = std::fs::read_to_string(dest.join("etc/petrel/petrel.conf")).unwrap();
    assert!(
        conf.contains("\ndaemon_directory = /usr/lib/petrel\n"),
        "{conf}"
    );
    assert!(conf.contains("\ncommand_directory = /usr/sbin\n"), "{conf}");
    assert_eq!(
        std::fs::read_to_string(dest.join("etc/petrel/services.conf")).unwrap(),
        std::fs::read_to_string(top().join("etc/services.conf")).unwrap()
    );

    // Another PREFIX moves the programs and the configuration follows; a configuration
    // that is already there is kept.
    let dest2 = t.path().join("dest2");
    std::fs::create_dir_all(dest2.join("etc/petrel")).unwrap();
    std::fs::write(dest2.join("etc/petrel/services.conf"), "# mine\n").unwrap();
    let o = make(&[
        "install",
        "PREFIX=/usr/local",
        &format!("DESTDIR={}", dest2.display()),
    ]);
    assert!(o.status.success(), "make install: {}", show(&o));
    let conf = std::fs::read_to_string(dest2.join("etc/petrel/petrel.conf")).unwrap();
    assert!(
        conf.contains("\ndaemon_directory = /usr/local/lib/petrel\n")
            && conf.contains("\ncommand_directory = /usr/local/sbin\n"),
        "{conf}"
    );
    assert_eq!(
        std::fs::read_to_string(dest2.join("etc/petrel/services.conf")).unwrap(),
        "# mine\n",
        "an existing configuration file is kept"
    );
    assert!(dest2.join("usr/local/lib/petrel/master").is_file());
    assert!(dest2
        .join("usr/local/share/man/man5/petrel.conf.5")
        .is_file());

    // make uninstall takes the programs and pages away and leaves the configuration.
    let o = make(&[
        "uninstall",
        "PREFIX=/usr",
        &format!("DESTDIR={}", dest.display()),
    ]);
    assert!(o.status.success(), "make uninstall: {}", show(&o));
    let left = tree(&dest);
    assert_eq!(
        left,
        ["etc/petrel/petrel.conf", "etc/petrel/services.conf"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
}

/// A copy of this machine to install packages into: an overlay over `/` (changes go to a
/// tmpfs) in private mount and network namespaces, held by a chrooted `sleep` whose
/// namespaces and root every command enters. The network has only `lo`.
struct Machine {
    helper: Child,
    pid: i32,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
    stop_log: Arc<AtomicBool>,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        std::fs::create_dir(t.join("ovl")).unwrap();
        std::fs::create_dir(t.join("root")).unwrap();
        let script = format!(
            r#"set -e
T={t}
mount -t tmpfs -o size=4g,mode=0755 tmpfs $T/ovl
mkdir $T/ovl/upper $T/ovl/work
mount -t overlay overlay -o lowerdir=/,upperdir=$T/ovl/upper,workdir=$T/ovl/work $T/root
mount -t proc proc $T/root/proc
mount -t sysfs sysfs $T/root/sys
mount -t tmpfs -o mode=0755 tmpfs $T/root/dev
for n in null zero full random urandom tty; do
    touch $T/root/dev/$n
    mount --bind /dev/$n $T/root/dev/$n
done
mkdir $T/root/dev/pts $T/root/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $T/root/dev/pts
ln -s pts/ptmx $T/root/dev/ptmx
mount -t tmpfs -o mode=0755 tmpfs $T/root/run
mount -t tmpfs -o mode=1777 tmpfs $T/root/tmp
ip link set lo up
echo "ready $$"
exec chroot $T/root sleep 1200
"#,
            t = t.display()
        );
        let mut helper = Command::new("unshare")
            .args(["--mount", "--net", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut first = String::new();
        {
            use std::io::BufRead;
            let out = helper.stdout.take().unwrap();
            std::io::BufReader::new(out).read_line(&mut first).unwrap();
        }
        let pid: i32 = first
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the namespace helper did not start: {first:?}"));
        // "ready" comes before the exec of chroot: wait for the sleep it runs in the copy.
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n"
        {
            assert!(Instant::now() < end, "the namespace helper did not chroot");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The system log of the copy: a socket at its /dev/log, read here.
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop_log = Arc::new(AtomicBool::new(false));
        let sock = UnixDatagram::bind(format!("/proc/{pid}/root/dev/log")).unwrap();
        std::fs::set_permissions(
            format!("/proc/{pid}/root/dev/log"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (l, s) = (log.clone(), stop_log.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    l.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).to_string());
                }
            }
        });
        Machine {
            helper,
            pid,
            dir,
            log,
            stop_log,
        }
    }

    /// A path inside the copy, as seen from here.
    fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.pid))
    }

    /// `sh -c CMD` inside the copy, as root.
    fn sh(&self, cmd: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-n", "-r", "-w"])
            .args(["env", "-i"])
            .args([
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LANG=C",
                "DEBIAN_FRONTEND=noninteractive",
            ])
            .args(["sh", "-c", cmd])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// A command inside the copy, as root, left running (nsenter execs it: its pid is
    /// the command's).
    fn spawn(&self, argv: &[String]) -> Child {
        Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-n", "-r", "-w"])
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// [`Machine::sh`] that must succeed; its standard output.
    fn ok(&self, cmd: &str) -> String {
        let o = self.sh(cmd);
        assert!(o.status.success(), "{cmd}: {}\n{}", show(&o), self.logs());
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    fn logs(&self) -> String {
        format!("--- system log\n{}", self.log.lock().unwrap().join("\n"))
    }

    /// uid and gid of a user of the copy, if it exists.
    fn user(&self, name: &str) -> Option<(u32, u32, String, String)> {
        let o = self.sh(&format!("getent passwd {name}"));
        let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let f: Vec<&str> = line.split(':').collect();
        (o.status.success() && f.len() == 7).then(|| {
            (
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].to_string(),
                f[6].to_string(),
            )
        })
    }

    fn group(&self, name: &str) -> Option<u32> {
        let o = self.sh(&format!("getent group {name}"));
        let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
        o.status
            .success()
            .then(|| line.split(':').nth(2).and_then(|g| g.parse().ok()))
            .flatten()
    }

    /// master's pid, when the copy's mail system runs.
    fn master(&self) -> Option<i32> {
        if !self.sh("petrel status").status.success() {
            return None;
        }
        let text = std::fs::read_to_string(self.path("/var/spool/petrel/pid/master.pid")).ok()?;
        text.trim().parse().ok()
    }

    fn wait(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + limit;
        while !cond() {
            assert!(Instant::now() < end, "timed out: {what}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // Whatever still runs in the copy (a master a failed test left) goes with it.
        let _ = self.sh("petrel stop >/dev/null 2>&1; true");
        self.stop_log.store(true, Ordering::Relaxed);
        let _ = self.helper.kill();
        let _ = self.helper.wait();
        let _ = &self.dir;
    }
}

/// One field of /proc/PID/status.
fn status(pid: i32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Every live descendant of `pid`: (pid, name from argv[0]).
fn descendants(pid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for (c, _) in petrel_tests::Sandbox::children_of(p) {
            let cmd = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            let argv0 = cmd.split(|&b| b == 0).next().unwrap_or_default();
            let name = String::from_utf8_lossy(argv0).to_string();
            let name = name.rsplit('/').next().unwrap_or("").to_string();
            out.push((c, name));
            todo.push(c);
        }
    }
    out
}

/// A utmp(5) RUN_LVL record saying the system is in `level` (what init writes at boot).
fn runlevel_record(level: u8) -> Vec<u8> {
    let mut r = vec![0u8; 384];
    r[0..2].copy_from_slice(&1i16.to_le_bytes()); // ut_type = RUN_LVL
    let pid = i32::from(level) + 256 * i32::from(b'N'); // current + 256 * previous
    r[4..8].copy_from_slice(&pid.to_le_bytes());
    r[8] = b'~'; // ut_line
    r[40..42].copy_from_slice(b"~~"); // ut_id
    r[44..52].copy_from_slice(b"runlevel"); // ut_user
    r
}

fn missing_tools() -> Option<String> {
    if !petrel_tests::is_root() {
        return Some("needs root (installs a package, creates users, mounts an overlay)".into());
    }
    for tool in [
        "dpkg-buildpackage",
        "dh",
        "apt-get",
        "unshare",
        "nsenter",
        "swaks",
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} is not installed (make test installs it)"));
        }
    }
    None
}

#[test]
fn the_debian_package_installs_runs_delivers_and_purges_cleanly() {
    if let Some(why) = missing_tools() {
        println!("skipped: {why}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = make(&["deb", &format!("DEBDIR={}", out.path().display())]);
    assert!(o.status.success(), "make deb: {}", show(&o));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("make deb made a .deb");
    // Debian's package checker finds nothing to warn about. (The one tag left out is about
    // uploads to Debian's archive: a first upload there closes its "intent to package"
    // bug.)
    if Path::new("/usr/bin/lintian").exists() {
        let l = Command::new("lintian")
            .args([
                "--fail-on",
                "error,warning",
                "--suppress-tags",
                "initial-upload-closes-no-bugs",
            ])
            .arg(&deb)
            .output()
            .unwrap();
        assert!(
            l.status.success() && !String::from_utf8_lossy(&l.stdout).contains("W: "),
            "lintian: {}",
            show(&l)
        );
    } else {
        println!("note: lintian is not installed: the package is not linted");
    }

    let m = Machine::new();
    // A clean copy: no policy-rc.d (postinst may start services, as on a real system), and
    // none of the users another test may have made on this machine.
    m.ok(
        "rm -f /usr/sbin/policy-rc.d; \
         for u in petrel petrel-auth petrel-vmail; do userdel $u 2>/dev/null || true; done; \
         for g in petrel petrel-auth petrel-vmail petrel-drop; do groupdel $g 2>/dev/null || true; done; \
         rm -rf /var/spool/petrel /var/lib/petrel /etc/petrel",
    );
    std::fs::copy(&deb, m.path("/root/petrel.deb")).unwrap();
    // The copy is "booted" to runlevel 2, as sysvinit records it in utmp: invoke-rc.d (which
    // postinst calls) starts services only in a runlevel whose rc.d links say so.
    std::fs::write(m.path("/run/utmp"), runlevel_record(b'2')).unwrap();
    assert_eq!(m.ok("runlevel").trim(), "N 2");
    let had_postfix = m.sh("dpkg -s postfix >/dev/null 2>&1").status.success();

    // apt-get installs it like any package; it replaces the MTA there was.
    let install = m.ok("apt-get install -y --no-install-recommends /root/petrel.deb 2>&1");
    assert!(
        m.sh("dpkg -s petrel | grep -qx 'Status: install ok installed'")
            .status
            .success(),
        "{install}"
    );
    if had_postfix {
        assert!(
            !m.sh("dpkg -s postfix 2>/dev/null | grep -q 'Status: install ok installed'")
                .status
                .success(),
            "postfix was replaced: {install}"
        );
    }
    let fields = m.ok("dpkg-query -W -f '${Provides}|${Conflicts}|${Replaces}' petrel");
    assert_eq!(
        fields, "mail-transport-agent|mail-transport-agent|mail-transport-agent",
        "Provides|Conflicts|Replaces"
    );

    // The users and groups, made by postinst (petrel set-permissions).
    let (petrel_uid, petrel_gid, gecos, shell) = m.user("petrel").expect("user petrel");
    assert_eq!(gecos, "Petrel mail system");
    assert_eq!(shell, "/usr/sbin/nologin");
    let (auth_uid, auth_gid, _, _) = m.user("petrel-auth").expect("user petrel-auth");
    let (vmail_uid, _, _, _) = m.user("petrel-vmail").expect("user petrel-vmail");
    for uid in [petrel_uid, auth_uid, vmail_uid] {
        assert!(uid != 0 && uid < 1000, "system uids: {uid}");
    }
    let drop_gid = m.group("petrel-drop").expect("group petrel-drop");

    // The spool, with the modes and owners of the design.
    for (dir, mode, uid, gid) in [
        ("maildrop", 0o1730, petrel_uid, drop_gid),
        ("public", 0o710, petrel_uid, drop_gid),
        ("incoming", 0o700, petrel_uid, petrel_gid),
        ("active", 0o700, petrel_uid, petrel_gid),
        ("deferred", 0o700, petrel_uid, petrel_gid),
        ("hold", 0o700, petrel_uid, petrel_gid),
        ("corrupt", 0o700, petrel_uid, petrel_gid),
        ("bounce", 0o700, petrel_uid, petrel_gid),
        ("defer", 0o700, petrel_uid, petrel_gid),
        ("private", 0o700, petrel_uid, petrel_gid),
        ("pid", 0o755, 0, 0),
    ] {
        let meta = std::fs::metadata(m.path(&format!("/var/spool/petrel/{dir}"))).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (mode, uid, gid),
            "/var/spool/petrel/{dir}"
        );
    }
    let meta = std::fs::metadata(m.path("/var/lib/petrel")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (petrel_uid, 0o700));
    // A self-signed certificate where petrel.conf says, the key readable by root only.
    let key = std::fs::metadata(m.path("/etc/petrel/tls/key.pem")).unwrap();
    assert_eq!((key.uid(), key.mode() & 0o777), (0, 0o600));
    m.ok("openssl x509 -noout -subject -in /etc/petrel/tls/cert.pem");

    // postdrop is the only set-id program, set-group-id petrel-drop.
    let files = m.ok("dpkg -L petrel");
    let mut setid = Vec::new();
    for f in files.lines().filter(|l| l.starts_with('/')) {
        let Ok(meta) = std::fs::symlink_metadata(m.path(f)) else {
            continue;
        };
        if meta.is_file() && meta.mode() & 0o6000 != 0 {
            setid.push((f.to_string(), meta.mode() & 0o7777, meta.uid(), meta.gid()));
        }
    }
    assert_eq!(
        setid,
        vec![("/usr/lib/petrel/postdrop".to_string(), 0o2755, 0, drop_gid)],
        "set-id programs"
    );
    for f in [
        "/usr/sbin/petrel",
        "/usr/sbin/sendmail",
        "/usr/lib/petrel/master",
        "/etc/petrel/petrel.conf",
        "/etc/petrel/services.conf",
        "/etc/init.d/petrel",
        "/lib/systemd/system/petrel.service",
        "/usr/share/man/man5/petrel.conf.5.gz",
        "/usr/share/man/man5/services.conf.5.gz",
        "/usr/share/man/man8/petrel.8.gz",
        "/usr/share/man/man1/sendmail.1.gz",
    ] {
        assert!(files.lines().any(|l| l == f), "the package has {f}");
    }
    for name in ["/usr/bin/mailq", "/usr/bin/newaliases", "/usr/lib/sendmail"] {
        assert_eq!(
            m.ok(&format!("readlink -f {name}")).trim(),
            "/usr/sbin/sendmail",
            "{name}"
        );
    }
    // Every page the source tree has is installed.
    for page in man_pages() {
        let installed = format!("/usr/{page}.gz");
        assert!(files.lines().any(|l| l == installed), "{installed}");
    }
    // The unit is a valid systemd unit; systemctl itself needs systemd as PID 1.
    if Path::new("/run/systemd/system").is_dir() {
        println!(
            "note: systemd runs here, but not in the copy: `systemctl start petrel` is not tried"
        );
    } else {
        println!(
            "note: systemd does not run on this machine: `systemctl start petrel` is not tried"
        );
    }
    if m.sh("command -v systemd-analyze").status.success() {
        let verify = m.sh("systemd-analyze verify /lib/systemd/system/petrel.service 2>&1");
        assert!(
            verify.status.success() && verify.stdout.is_empty(),
            "systemd-analyze verify petrel.service: {}",
            show(&verify)
        );
    } else {
        println!("note: no systemd-analyze here: the unit file is not verified");
    }

    // postinst started the mail system through the init script, as boot would.
    m.wait("postinst started master", Duration::from_secs(15), || {
        m.master().is_some()
    });
    m.ok("/etc/init.d/petrel status");
    let check = m.sh("petrel check 2>&1");
    assert!(check.status.success(), "petrel check: {}", show(&check));
    // An admin who broke postdrop's mode hears of it from petrel check, and
    // set-permissions repairs it.
    m.ok("chmod 0755 /usr/lib/petrel/postdrop");
    let check = m.sh("petrel check 2>&1");
    let said = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        !check.status.success()
            && said.contains("/usr/lib/petrel/postdrop: mode 0755")
            && said.contains("petrel set-permissions"),
        "{said}"
    );
    let fixed = m.ok("petrel set-permissions");
    assert!(
        fixed.contains("set-group-id petrel-drop on /usr/lib/petrel/postdrop"),
        "{fixed}"
    );
    m.ok("petrel check");
    assert_eq!(
        m.ok("petrel set-permissions"),
        "",
        "a second run changes nothing"
    );
    assert_eq!(
        m.ok("petrel config show home_mailbox queue_directory")
            .trim(),
        "home_mailbox = Maildir/\nqueue_directory = /var/spool/petrel"
    );
    // -n: what the shipped petrel.conf changes, not the lines that repeat a default.
    let changed = m.ok("petrel config show -n");
    assert!(
        changed.contains("home_mailbox = Maildir/\n")
            && changed.contains("smtpd_tls_cert_file = $config_directory/tls/cert.pem\n")
            && !changed.contains("queue_directory"),
        "{changed}"
    );

    // An ordinary user sends with /usr/sbin/sendmail; anyone sends over SMTP on port 25.
    m.ok("useradd --create-home --shell /bin/sh alice");
    let (alice_uid, _, _, _) = m.user("alice").unwrap();
    m.ok(
        "printf 'From: alice@localhost\\nSubject: from sendmail\\n\\nwritten by a script\\n' \
         | setpriv --reuid=alice --regid=alice --init-groups /usr/sbin/sendmail -i alice",
    );
    let swaks = m.ok(
        "swaks --server 127.0.0.1 --port 25 --ehlo client.example --from bob@example.org \
         --to alice@localhost --header 'Subject: over smtp' --body 'came in on port 25' 2>&1",
    );
    assert!(swaks.contains("<-  250 "), "{swaks}");
    let new = m.path("/home/alice/Maildir/new");
    m.wait(
        "two messages in alice's Maildir",
        Duration::from_secs(30),
        || std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0) == 2,
    );
    let mut subjects = Vec::new();
    for e in std::fs::read_dir(&new).unwrap().flatten() {
        let msg = std::fs::read_to_string(e.path()).unwrap();
        assert_eq!(e.metadata().unwrap().uid(), alice_uid, "owned by alice");
        assert!(
            petrel_tests::header(&msg, "Delivered-To").is_some_and(|d| d.starts_with("alice@")),
            "{msg}"
        );
        assert!(petrel_tests::header(&msg, "Received").is_some(), "{msg}");
        subjects.push(petrel_tests::header(&msg, "Subject").unwrap_or_default());
        if msg.contains("written by a script") {
            // The envelope sender is the user who ran sendmail.
            let rp = petrel_tests::header(&msg, "Return-Path").unwrap_or_default();
            assert!(rp.starts_with("<alice@"), "{msg}");
        }
    }
    subjects.sort();
    assert_eq!(subjects, ["from sendmail", "over smtp"]);
    // mailq lists the queue for root, who reads it, and for a user, who may not read it
    // and gets the listing from showq (through postdrop -q): a message deferred by a
    // relay host that does not answer shows up.
    assert!(m.ok("mailq").contains("Mail queue is empty"));
    m.ok("petrel config set 'relayhost=[127.0.0.1]:1' && petrel reload");
    m.ok(
        "printf 'Subject: to another domain\\n\\nwaits\\n' \
         | setpriv --reuid=alice --regid=alice --init-groups /usr/sbin/sendmail -i bob@example.net",
    );
    let deferred = m.path("/var/spool/petrel/deferred");
    let in_deferred = || -> Vec<String> {
        std::fs::read_dir(&deferred)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    m.wait(
        "alice's message in deferred/",
        Duration::from_secs(30),
        || in_deferred().len() == 1,
    );
    let id = in_deferred().remove(0);
    let q = m.sh("setpriv --reuid=alice --regid=alice --init-groups mailq 2>&1");
    let listed = String::from_utf8_lossy(&q.stdout).to_string();
    assert!(
        q.status.success()
            && listed.contains(&id)
            && listed.contains("alice@")
            && listed.contains("bob@example.net"),
        "alice's mailq: {}\n{}",
        show(&q),
        m.logs()
    );
    m.ok("petrel queue delete ALL");
    m.ok("petrel config set relayhost= && petrel reload");
    // The reloads replaced every service: look at them below once they all run again,
    // past their privilege drop (no_new_privs; local keeps root and some capabilities).
    m.wait(
        "every service back after the reload",
        Duration::from_secs(30),
        || {
            let Some(master) = m.master() else {
                return false;
            };
            let procs = descendants(master);
            [
                "smtpd", "pickup", "showq", "cleanup", "qmgr", "local", "authd",
            ]
            .iter()
            .all(|w| procs.iter().any(|(_, n)| n == w))
                && procs.iter().all(|(p, n)| {
                    if n == "local" {
                        u64::from_str_radix(&status(*p, "CapEff"), 16).is_ok_and(|c| c & !0xcf == 0)
                    } else {
                        status(*p, "NoNewPrivs") == "1"
                    }
                })
        },
    );

    // Every service runs as its configured user, without capabilities.
    let master = m.master().unwrap();
    assert_eq!(status(master, "Uid").split_whitespace().next(), Some("0"));
    let procs = descendants(master);
    let names: BTreeSet<&str> = procs.iter().map(|(_, n)| n.as_str()).collect();
    for want in [
        "smtpd", "pickup", "showq", "cleanup", "qmgr", "local", "authd",
    ] {
        assert!(names.contains(want), "{want} runs: {procs:?}");
    }
    for (pid, name) in &procs {
        let uid = status(*pid, "Uid");
        let caps = status(*pid, "CapEff");
        let want_uid = match name.as_str() {
            "local" => 0,
            "authd" => auth_uid,
            "smtpd" | "pickup" | "showq" | "cleanup" | "qmgr" | "smtp" => petrel_uid,
            other => panic!("unexpected process {other} ({pid})"),
        };
        assert!(
            uid.split_whitespace().all(|u| u == want_uid.to_string()),
            "{name} runs as {want_uid}: Uid {uid}"
        );
        if name == "local" {
            // local becomes each recipient: chown, dac_*, fowner, setgid, setuid at most.
            let c = u64::from_str_radix(&caps, 16).unwrap();
            let allowed = (1u64 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 7);
            assert_eq!(c & !allowed, 0, "local's capabilities: {caps}");
        } else {
            assert_eq!(caps, "0000000000000000", "{name} has no capabilities");
            assert_eq!(status(*pid, "CapPrm"), "0000000000000000", "{name}");
        }
        if name == "authd" {
            assert!(
                status(*pid, "Gid")
                    .split_whitespace()
                    .all(|g| g == auth_gid.to_string()),
                "authd's group"
            );
        }
    }

    // alice reads her mail over IMAP, as an admin would set it up: an account for the
    // system user (the same uid and Maildir local delivers to), IMAP enabled in
    // services.conf, a reload. A name that is no system user gets no account.
    let added = m.ok("printf 'alice imap pw\\n' | petrel user add alice");
    assert!(
        added.contains(&format!(
            "the system user: uid {alice_uid}, home /home/alice"
        )),
        "{added}"
    );
    let nobody = m.sh("printf 'pw\\n' | petrel user add nosuchuser 2>&1");
    assert!(
        !nobody.status.success()
            && String::from_utf8_lossy(&nobody.stdout).contains("is not a user of this system"),
        "{}",
        show(&nobody)
    );
    m.ok("sed -i 's/^#143 /143  /' /etc/petrel/services.conf && petrel reload");
    let imap = m.ok("python3 - <<'EOF'
import imaplib, ssl, time
for _ in range(100):
    try:
        c = imaplib.IMAP4('127.0.0.1', 143)
        break
    except OSError:
        time.sleep(0.1)
c.starttls(ssl._create_unverified_context())
c.login('alice', 'alice imap pw')
typ, data = c.select('INBOX', readonly=True)
print('messages', data[0].decode())
typ, data = c.fetch('1:*', '(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')
for part in data:
    if isinstance(part, tuple):
        print(part[1].decode().strip())
c.logout()
EOF");
    assert!(imap.contains("messages 2\n"), "{imap}");
    assert!(
        imap.contains("Subject: from sendmail") && imap.contains("Subject: over smtp"),
        "{imap}"
    );

    // Installing the package again with dpkg -i (an upgrade, to dpkg) keeps the
    // configuration an administrator edited and restarts the mail system.
    m.ok("echo '# edited by the administrator' >> /etc/petrel/petrel.conf");
    m.ok("dpkg -i /root/petrel.deb 2>&1");
    m.wait(
        "master restarted by the upgrade",
        Duration::from_secs(15),
        || m.master().is_some_and(|p| p != master),
    );
    assert!(
        std::fs::read_to_string(m.path("/etc/petrel/petrel.conf"))
            .unwrap()
            .contains("# edited by the administrator"),
        "the administrator's petrel.conf is kept"
    );
    assert!(
        std::fs::read_to_string(m.path("/etc/petrel/services.conf"))
            .unwrap()
            .contains("\n143  "),
        "the administrator's services.conf is kept"
    );
    let procs = descendants(m.master().unwrap());

    // Stopped and started again by the init script and by petrel, as an admin would.
    m.ok("/etc/init.d/petrel stop");
    assert!(m.master().is_none(), "stopped");
    assert!(
        procs
            .iter()
            .all(|(p, _)| !Path::new(&format!("/proc/{p}")).exists()
                || status(*p, "State").starts_with('Z')),
        "no service outlives master"
    );
    assert_eq!(m.sh("/etc/init.d/petrel status").status.code(), Some(3));

    // What systemd does with petrel.service (Type=simple, KillMode=mixed), done by hand:
    // ExecStart's process is master itself and stays in the foreground, ExecReload
    // works, and SIGTERM to that one process stops every service.
    let unit = std::fs::read_to_string(m.path("/lib/systemd/system/petrel.service")).unwrap();
    let exec = |key: &str| -> Vec<String> {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("petrel.service has {key}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let mut main = m.spawn(&exec("ExecStart="));
    let main_pid = main.id() as i32;
    m.wait("ExecStart runs master", Duration::from_secs(15), || {
        m.master() == Some(main_pid)
    });
    assert!(
        main.try_wait().unwrap().is_none(),
        "ExecStart stays in the foreground"
    );
    m.ok(&exec("ExecReload=").join(" "));
    m.wait(
        "services under the unit's master",
        Duration::from_secs(15),
        || descendants(main_pid).iter().any(|(_, n)| n == "qmgr"),
    );
    let under = descendants(main_pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(main_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(st) = main.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "master ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "master exits 0 on SIGTERM: {exit}");
    assert!(
        under
            .iter()
            .all(|(p, _)| !Path::new(&format!("/proc/{p}")).exists()
                || status(*p, "State").starts_with('Z')),
        "SIGTERM to master alone stopped every service: {under:?}"
    );
    m.ok("petrel start");
    let master = m.master().expect("petrel start started master");

    // Remove: prerm stops it; the spool, the users and the configuration stay.
    m.ok("dpkg --remove petrel 2>&1");
    assert!(
        !m.sh("petrel status").status.success(),
        "petrel is gone with the package"
    );
    let running: Vec<i32> = descendants(1)
        .into_iter()
        .filter(|(p, n)| {
            n == "master"
                && std::fs::read_link(format!("/proc/{p}/exe"))
                    .map(|e| e.to_string_lossy().contains("/usr/lib/petrel/"))
                    .unwrap_or(false)
        })
        .map(|(p, _)| p)
        .collect();
    assert!(
        !Path::new(&format!("/proc/{master}")).exists() && running.is_empty(),
        "prerm stopped master"
    );
    assert!(m.path("/var/spool/petrel/maildrop").is_dir(), "spool kept");
    assert!(
        m.path("/etc/petrel/petrel.conf").is_file(),
        "configuration kept"
    );
    assert!(m.user("petrel").is_some(), "users kept");
    assert!(!m.path("/usr/sbin/sendmail").exists(), "programs removed");

    // Purge: no user, no group, no spool, no file of ours.
    m.ok("dpkg --purge petrel 2>&1");
    for u in ["petrel", "petrel-auth", "petrel-vmail"] {
        assert!(m.user(u).is_none(), "user {u} is removed");
    }
    for g in ["petrel", "petrel-auth", "petrel-vmail", "petrel-drop"] {
        assert!(m.group(g).is_none(), "group {g} is removed");
    }
    std::fs::remove_file(m.path("/root/petrel.deb")).unwrap();
    // What the install changed lives in the overlay's upper layer: no path there may name
    // petrel any more.
    let found = Command::new("nsenter")
        .args(["-t", &m.pid.to_string(), "-m", "find"])
        .arg(m.dir.path().join("ovl/upper"))
        .output()
        .unwrap();
    let upper_root = m.dir.path().join("ovl/upper");
    let ours: Vec<String> = String::from_utf8_lossy(&found.stdout)
        .lines()
        .map(|l| {
            l.strip_prefix(upper_root.to_str().unwrap())
                .unwrap_or(l)
                .to_string()
        })
        .filter(|l| l.contains("petrel"))
        // man-db's trigger formats pages into its own cache (man-db's files, pruned by
        // its daily mandb run), as it does for every package's pages.
        .filter(|l| !l.starts_with("/var/cache/man/"))
        // alice's mailbox is hers, with the index imapd keeps in it (as Dovecot keeps
        // dovecot.index there): purge never touches mailboxes.
        .filter(|l| !l.starts_with("/home/alice/Maildir/"))
        .collect();
    assert!(found.status.success(), "{}", show(&found));
    assert!(ours.is_empty(), "left after purge: {ours:?}");
    for p in [
        "/var/spool/petrel",
        "/var/lib/petrel",
        "/etc/petrel",
        "/etc/init.d/petrel",
        "/usr/lib/petrel",
        "/usr/sbin/petrel",
    ] {
        assert!(!m.path(p).exists(), "{p} is gone");
    }
    // Alice's mail is hers: purge does not touch it (IMAP moved it from new/ to cur/).
    let kept: usize = ["new", "cur"]
        .iter()
        .map(|d| {
            std::fs::read_dir(m.path(&format!("/home/alice/Maildir/{d}")))
                .unwrap()
                .count()
        })
        .sum();
    assert_eq!(kept, 2, "alice's two messages");
}
