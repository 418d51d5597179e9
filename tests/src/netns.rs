//! Network namespaces for end-to-end tests that need more than 127.0.0.1: separate hosts
//! with their own addresses, linked by veth pairs, all created by the test and removed
//! when it ends. Nothing here touches the machine's own interfaces, routes or resolver:
//! every device and address lives inside a namespace the test created.
//!
//! ```text
//!   namespace pe2e-PID-BASE-a            namespace pe2e-PID-BASE-b
//!   ┌──────────────────────┐  veth pair  ┌──────────────────────┐
//!   │ lo 127.0.0.1         │             │ lo 127.0.0.1         │
//!   │ v0a 10.200.X.1/24 ───┼─────────────┼─ v0b 10.200.X.2/24   │
//!   │     fd00:c8:X::1/64  │             │     fd00:c8:X::2/64  │
//!   └──────────────────────┘             └──────────────────────┘
//! ```
//!
//! Processes run inside a namespace with [`Netns::command`] (`ip netns exec NAME …`); the
//! test process itself opens sockets inside one with [`Netns::enter`], [`Netns::bind_tcp`]
//! and friends (a short-lived thread joins the namespace with `setns(2)`; a socket keeps
//! the namespace it was created in, so the test can serve or probe from any thread).
//!
//! Namespaces need root and a kernel and container that allow them: tests call
//! [`skip`] first, which prints `skipped: <reason>` when they cannot run.

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Every namespace these helpers create is named `pe2e-…`.
const PREFIX: &str = "pe2e";

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// The `ip` program (iproute2), if installed.
fn ip_program() -> Option<PathBuf> {
    crate::installed(&["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"])
}

/// Runs `ip ARGS` and returns what it did (never panics on failure).
fn ip(args: &[&str]) -> Output {
    let prog = ip_program().unwrap_or_else(|| PathBuf::from("ip"));
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running ip {args:?}: {e}"))
}

/// Runs `ip ARGS` and panics, with its error output, when it fails.
fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A command that runs `program` inside the namespace called `name`
/// (`ip netns exec NAME program`).
pub fn exec(name: &str, program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(ip_program().unwrap_or_else(|| PathBuf::from("ip")));
    c.args(["netns", "exec", name]).arg(program);
    c
}

/// True when a namespace called `name` exists (`/run/netns/NAME`).
pub fn exists(name: &str) -> bool {
    std::path::Path::new(NETNS_DIR).join(name).exists()
}

/// Why network namespaces cannot be used here, or `None` when they can: the test must
/// run as root, `ip` must be installed, and `ip netns add` and a veth pair must work (a
/// container without CAP_SYS_ADMIN or without the veth driver fails here).
pub fn unavailable() -> Option<String> {
    if !crate::is_root() {
        return Some("network namespaces need root".into());
    }
    if ip_program().is_none() {
        return Some("no `ip` program (iproute2) installed".into());
    }
    if !std::path::Path::new("/proc/self/ns/net").exists() {
        return Some("the kernel has no network namespaces (/proc/self/ns/net)".into());
    }
    let probe = format!("{PREFIX}-probe-{}", std::process::id());
    let _ = ip(&["netns", "del", &probe]);
    let add = ip(&["netns", "add", &probe]);
    if !add.status.success() {
        return Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&add.stderr).trim()
        ));
    }
    let veth = ip(&[
        "-n", &probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
    ]);
    let _ = ip(&["netns", "del", &probe]);
    if !veth.status.success() {
        return Some(format!(
            "cannot create a veth pair: {}",
            String::from_utf8_lossy(&veth.stderr).trim()
        ));
    }
    None
}

/// For the first line of a test: when namespaces are unavailable, prints
/// `skipped: <reason>` (naming the test) and returns true, and the test returns.
pub fn skip(test: &str) -> bool {
    match unavailable() {
        Some(why) => {
            println!("skipped: {test}: {why}");
            true
        }
        None => false,
    }
}

/// The name of a test's namespace for `role` (`a`, `b`, …): unique per process and
/// port base, so concurrent tests never share one.
pub fn ns_name(port_base: u16, pid: u32, role: &str) -> String {
    format!("{PREFIX}-{pid}-{port_base}-{role}")
}

/// The pid in a namespace name made by [`ns_name`] or the availability probe.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    let rest = rest.strip_prefix("probe-").unwrap_or(rest);
    rest.split('-').next()?.parse().ok()
}

/// Removes namespaces left behind by test processes that no longer run (a test killed
/// before its Drop ran).
fn remove_stale() {
    let Ok(rd) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    let me = std::process::id();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if u32::try_from(pid).ok() == Some(me) {
            continue;
        }
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// A network namespace the test created (`ip netns add`), with `lo` up. Deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates this test's namespace for `role`, named by [`ns_name`] from the test's
    /// port base and this process's id. Panics when it cannot (call [`skip`] first).
    pub fn create(port_base: u16, role: &str) -> Netns {
        Netns::named(&ns_name(port_base, std::process::id(), role))
    }

    /// Creates a namespace with exactly this name, deleting a leftover of the same name
    /// first, and brings up its `lo`.
    pub fn named(name: &str) -> Netns {
        remove_stale();
        let _ = ip(&["netns", "del", name]);
        ip_ok(&["netns", "add", name]);
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (for `ip netns exec NAME`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Runs `ip -n NAME ARGS`; panics when it fails.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip_ok(&all);
    }

    /// Adds an address to a device in the namespace (IPv6 without duplicate address
    /// detection, so it can be used at once).
    pub fn add_addr(&self, dev: &str, addr: IpAddr, prefix_len: u8) {
        let cidr = format!("{addr}/{prefix_len}");
        match addr {
            IpAddr::V4(_) => self.ip(&["addr", "add", &cidr, "dev", dev]),
            IpAddr::V6(_) => self.ip(&["addr", "add", &cidr, "dev", dev, "nodad"]),
        }
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`);
    /// add arguments, environment and stdio as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        exec(&self.name, program)
    }

    /// Runs `f` on a thread that has joined the namespace, and returns what it returns.
    /// Sockets `f` creates belong to the namespace for their whole life, whichever
    /// thread uses them later. A panic in `f` is a panic here.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(self.path())
            .unwrap_or_else(|e| panic!("{}: {e}", self.path().display()));
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", self.name));
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// A TCP listener on `addr` inside the namespace.
    pub fn bind_tcp(&self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        self.enter(|| TcpListener::bind(addr))
    }

    /// A UDP socket on `addr` inside the namespace.
    pub fn bind_udp(&self, addr: SocketAddr) -> std::io::Result<UdpSocket> {
        self.enter(|| UdpSocket::bind(addr))
    }

    /// A TCP connection from inside the namespace to `addr`.
    pub fn connect_tcp(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        self.enter(|| TcpStream::connect_timeout(&addr, timeout))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A /24 (and a /64) for one link of one test: `10.(200+k).X.0/24` and
/// `fd00:(200+k):X::/64`, where X comes from the test's port base. Port bases are
/// 20000…32700 in steps of 100, so X = (base / 100) mod 256 differs between any two
/// tests running at once, and k numbers the links within a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    k: u8,
    x: u8,
}

impl Subnet {
    /// Link `k` (0…55) of the test with this port base.
    pub fn for_test(port_base: u16, k: u8) -> Subnet {
        assert!(k <= 55, "link number {k} is past 10.255.x.x");
        Subnet {
            k,
            x: ((port_base / 100) % 256) as u8,
        }
    }

    /// Host `host` of the IPv4 /24.
    pub fn v4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 200 + self.k, self.x, host)
    }

    /// Host `host` of the IPv6 /64 (unique local addresses).
    pub fn v6(&self, host: u8) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd00,
            200 + u16::from(self.k),
            u16::from(self.x),
            0,
            0,
            0,
            0,
            u16::from(host),
        )
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/24", self.v4(0))
    }
}

/// A veth pair between two namespaces: `a_dev` in the first with host 1 of the subnet,
/// `b_dev` in the second with host 2 (IPv4 and IPv6), both up.
#[derive(Debug, Clone)]
pub struct Link {
    /// The device in the first namespace (`v{k}a`).
    pub a_dev: String,
    /// The device in the second namespace (`v{k}b`).
    pub b_dev: String,
    /// The link's addresses.
    pub subnet: Subnet,
}

impl Link {
    /// Links `a` and `b` with a veth pair on `subnet`.
    pub fn create(a: &Netns, b: &Netns, subnet: Subnet) -> Link {
        let a_dev = format!("v{}a", subnet.k);
        let b_dev = format!("v{}b", subnet.k);
        a.ip(&[
            "link", "add", &a_dev, "type", "veth", "peer", "name", &b_dev, "netns", &b.name,
        ]);
        a.add_addr(&a_dev, IpAddr::V4(subnet.v4(1)), 24);
        a.add_addr(&a_dev, IpAddr::V6(subnet.v6(1)), 64);
        b.add_addr(&b_dev, IpAddr::V4(subnet.v4(2)), 24);
        b.add_addr(&b_dev, IpAddr::V6(subnet.v6(2)), 64);
        a.ip(&["link", "set", &a_dev, "up"]);
        b.ip(&["link", "set", &b_dev, "up"]);
        Link {
            a_dev,
            b_dev,
            subnet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_differ_between_port_bases_and_links() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..127u16 {
            let base = 20000 + i * 100;
            for k in 0..3 {
                let s = Subnet::for_test(base, k);
                assert!(seen.insert(s.v4(0)), "{base} link {k}: {s}");
            }
        }
        let s = Subnet::for_test(20300, 1);
        assert_eq!(s.v4(2), Ipv4Addr::new(10, 201, 203, 2));
        assert_eq!(s.v6(2).to_string(), "fd00:c9:cb::2");
        assert_eq!(s.to_string(), "10.201.203.0/24");
        assert_eq!(
            Subnet::for_test(32600, 0).v4(1),
            Ipv4Addr::new(10, 200, 70, 1)
        );
    }

    #[test]
    fn names_carry_the_owner_pid() {
        let n = ns_name(20300, 4242, "a");
        assert_eq!(n, "pe2e-4242-20300-a");
        assert_eq!(owner_pid(&n), Some(4242));
        assert_eq!(owner_pid("pe2e-probe-77"), Some(77));
        assert_eq!(owner_pid("other-1-2"), None);
        assert_eq!(owner_pid("pe2e-x-1"), None);
    }
}
