//! The test kit for end-to-end tests: boots a whole Petrel suite with `petrel sandbox` in a
//! temporary directory, drives it with real programs, and looks at what a user would look
//! at (mailboxes, the log, the queue, /proc).
//!
//! The programs are the ones `cargo build --workspace --bins` put next to the test binary
//! (`target/debug`); `PETREL_BIN_DIR` overrides. `make test` builds them first.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the Petrel programs are.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PETREL_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/e2e-HASH → target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for p in [
        "petrel", "master", "sendmail", "postdrop", "pickup", "cleanup", "qmgr", "local",
    ] {
        assert!(
            dir.join(p).exists(),
            "{} is missing: run `cargo build --workspace --bins` first (make test does)",
            dir.join(p).display()
        );
    }
    dir
}

/// A port base for this test: distinct per test name, inside 20000..60000.
pub fn port_base(name: &str) -> u16 {
    let h = name
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    20000 + (h % 400) as u16 * 100
}

/// True when running as root (tests that need it skip otherwise, saying why).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A sandboxed suite.
pub struct Sandbox {
    /// Keeps the directory alive.
    pub tmp: tempfile::TempDir,
    /// The sandbox directory.
    pub dir: PathBuf,
    /// Its configuration directory.
    pub etc: PathBuf,
    /// Programs.
    pub bin: PathBuf,
    /// Port base.
    pub base: u16,
    started: bool,
}

impl Sandbox {
    /// `petrel sandbox DIR --port-base N`, not started.
    pub fn new(test: &str) -> Sandbox {
        let tmp = tempfile::Builder::new()
            .prefix("petrel-e2e-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("sb");
        let bin = bin_dir();
        let base = port_base(test);
        let out = Command::new(bin.join("petrel"))
            .arg("sandbox")
            .arg(&dir)
            .arg("--port-base")
            .arg(base.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "petrel sandbox failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Sandbox {
            etc: dir.join("etc"),
            dir,
            tmp,
            bin,
            base,
            started: false,
        }
    }

    /// Sets `name = value` in petrel.conf (appended: the last one wins).
    pub fn set(&self, name: &str, value: &str) {
        let p = self.etc.join("petrel.conf");
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(&format!("{name} = {value}\n"));
        std::fs::write(p, text).unwrap();
    }

    /// Appends a line to services.conf.
    pub fn add_service(&self, line: &str) {
        let p = self.etc.join("services.conf");
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(line);
        text.push('\n');
        std::fs::write(p, text).unwrap();
    }

    /// Runs `petrel -c ETC ARGS`.
    pub fn petrel(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("petrel"))
            .arg("-c")
            .arg(&self.etc)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts the suite and waits until every service has a process.
    pub fn start(&mut self) {
        let out = self.petrel(&["start"]);
        assert!(
            out.status.success(),
            "petrel start failed: {}{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        self.started = true;
        let want = ["pickup", "cleanup", "qmgr", "local"];
        self.wait_for("every service running", Duration::from_secs(20), || {
            let kids = self.children();
            want.iter().all(|w| kids.iter().any(|(_, n)| n == w))
        });
    }

    /// Stops the suite.
    pub fn stop(&mut self) {
        if self.started {
            let out = self.petrel(&["stop"]);
            assert!(
                out.status.success(),
                "petrel stop: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.started = false;
        }
    }

    /// master's pid, when running.
    pub fn master_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.dir.join("spool/pid/master.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// (pid, program name) of master's children.
    pub fn children(&self) -> Vec<(i32, String)> {
        let Some(master) = self.master_pid() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_string()) else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.get(1).and_then(|p| p.parse::<i32>().ok()) != Some(master)
                || fields.first() == Some(&"Z")
            {
                continue;
            }
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmd.split(|&b| b == 0).next().unwrap_or_default();
            let name = Path::new(std::str::from_utf8(argv0).unwrap_or(""))
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            out.push((pid, name));
        }
        out
    }

    /// pids of the running processes of one program.
    pub fn pids_of(&self, program: &str) -> Vec<i32> {
        self.children()
            .into_iter()
            .filter(|(_, n)| n == program)
            .map(|(p, _)| p)
            .collect()
    }

    /// Runs our sendmail with `-C ETC` and `args`, message on stdin.
    pub fn sendmail(&self, args: &[&str], input: &[u8]) -> Output {
        let mut c = Command::new(self.bin.join("sendmail"));
        c.arg("-C").arg(&self.etc).args(args);
        run_with_input(c, input)
    }

    /// The log (maillog_file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/maillog")).unwrap_or_default()
    }

    /// Polls `cond` every 50 ms until it holds or `limit` passes (then panics, naming `what`
    /// and showing the end of the log).
    pub fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if cond() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "timed out after {limit:?} waiting for {what}\n--- last log lines ---\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    /// A user's Maildir.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.join("home").join(user).join("Maildir")
    }

    /// Files in a user's Maildir new/ and cur/.
    pub fn messages(&self, user: &str) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir(user).join(sub)) {
                v.extend(rd.flatten().map(|e| e.path()));
            }
        }
        v.sort();
        v
    }

    /// Waits until `user` has at least `n` messages; returns their contents.
    pub fn wait_messages(&self, user: &str, n: usize, limit: Duration) -> Vec<String> {
        self.wait_for(&format!("{n} message(s) for {user}"), limit, || {
            self.messages(user).len() >= n
        });
        self.messages(user)
            .iter()
            .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).to_string())
            .collect()
    }

    /// `petrel user add NAME` with the password on stdin.
    pub fn add_user(&self, name: &str, password: &str) {
        let mut c = Command::new(self.bin.join("petrel"));
        c.arg("-c").arg(&self.etc).args(["user", "add", name]);
        let out = run_with_input(c, format!("{password}\n").as_bytes());
        assert!(
            out.status.success(),
            "user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Files in a spool directory.
    pub fn queue_files(&self, dir: &str) -> Vec<String> {
        std::fs::read_dir(self.dir.join("spool").join(dir))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.started {
            let _ = self.petrel(&["stop"]);
        }
        if let Some(pid) = self.master_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Runs a command with `input` on stdin and collects its output.
pub fn run_with_input(mut c: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let w = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = w.join();
    out
}

/// The header section of a message, unfolded, as (name, value) pairs.
pub fn headers(msg: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in msg.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            out.push((n.to_string(), v.trim().to_string()));
        }
    }
    out
}

/// The first value of header `name` (any case).
pub fn header(msg: &str, name: &str) -> Option<String> {
    headers(msg)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}
