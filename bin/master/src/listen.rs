//! Listening endpoints: which ones a service needs, opening them, and what a reload changes.
//!
//! A unix service listens on `private/NAME` (mode 0600) or `public/NAME` (mode 0660,
//! group `setgid_group` when master runs as root); an inet service on `host:port`, or on
//! every address in `inet_interfaces` when the host is empty. Each endpoint gets its own
//! set of `maxproc` processes, because a process receives exactly one listener (fd 3).

use petrel_config::{Config, Service, ServiceType};
use petrel_queue::spool::Ids;
use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

/// Where a service listens. Unix paths are relative to the queue directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// A Unix-domain socket (`private/NAME` or `public/NAME`).
    Unix {
        /// Path relative to the queue directory.
        path: String,
        /// Under `public/` (group-accessible).
        public: bool,
    },
    /// A TCP socket.
    Tcp(SocketAddr),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix { path, .. } => f.write_str(path),
            Endpoint::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// An open listening socket.
#[derive(Debug)]
pub enum Listener {
    /// Unix-domain.
    Unix(UnixListener),
    /// TCP.
    Tcp(TcpListener),
}

impl Listener {
    /// The socket, to pass to a child.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(l) => l.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        }
    }
}

fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host {
        "" | "all" | "*" => {
            return Ok(vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port,
            )])
        }
        "loopback-only" => return Ok(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]),
        _ => {}
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    addrs.sort();
    addrs.dedup();
    // One address per name: "localhost" is 127.0.0.1 and ::1, but it is one interface to
    // the operator, and binding both would surprise nobody less.
    addrs.truncate(1);
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    Ok(addrs)
}

/// The endpoints `svc` listens on under `cfg`.
pub fn endpoints(svc: &Service, cfg: &Config) -> Result<Vec<Endpoint>, String> {
    match &svc.kind {
        ServiceType::Unix => Ok(vec![Endpoint::Unix {
            path: svc.socket_path().unwrap_or_default(),
            public: !svc.private,
        }]),
        ServiceType::Inet { host, port } if host.is_empty() => {
            let mut out = Vec::new();
            let ifaces = cfg.get_list("inet_interfaces");
            let ifaces = if ifaces.is_empty() {
                vec!["all".to_string()]
            } else {
                ifaces
            };
            for i in &ifaces {
                for a in resolve(i, *port)
                    .map_err(|e| format!("service {}: inet_interfaces: {e}", svc.name))?
                {
                    if !out.contains(&Endpoint::Tcp(a)) {
                        out.push(Endpoint::Tcp(a));
                    }
                }
            }
            Ok(out)
        }
        ServiceType::Inet { host, port } => Ok(resolve(host, *port)
            .map_err(|e| format!("service {}: {e}", svc.name))?
            .into_iter()
            .map(Endpoint::Tcp)
            .collect()),
    }
}

/// Opens `ep` (relative paths are under the current directory, the queue directory).
/// With `owners`, unix sockets are given to mail_owner (public ones to `setgid_group`).
pub fn open(ep: &Endpoint, owners: Option<Ids>) -> io::Result<Listener> {
    match ep {
        Endpoint::Tcp(addr) => TcpListener::bind(addr)
            .map(Listener::Tcp)
            .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}"))),
        Endpoint::Unix { path, public } => {
            let p = Path::new(path);
            if let Ok(m) = std::fs::symlink_metadata(p) {
                if m.file_type().is_socket() {
                    std::fs::remove_file(p).map_err(|e| {
                        io::Error::new(e.kind(), format!("remove stale {path}: {e}"))
                    })?;
                }
            }
            // Nobody may connect between bind and chmod: create it closed, then open it up.
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            let bound = UnixListener::bind(p);
            nix::sys::stat::umask(old);
            let l = bound.map_err(|e| io::Error::new(e.kind(), format!("bind {path}: {e}")))?;
            if let Some(ids) = owners {
                let gid = if *public { ids.drop_gid } else { ids.mail_gid };
                std::os::unix::fs::chown(p, Some(ids.mail_uid), Some(gid))
                    .map_err(|e| io::Error::new(e.kind(), format!("chown {path}: {e}")))?;
            }
            let mode = if *public { 0o660 } else { 0o600 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io::Error::new(e.kind(), format!("chmod {path}: {e}")))?;
            Ok(Listener::Unix(l))
        }
    }
}

/// What a reload does to the listeners.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Open before and after: kept as they are.
    pub keep: Vec<Endpoint>,
    /// New: to be opened.
    pub open: Vec<Endpoint>,
    /// Gone: to be closed.
    pub close: Vec<Endpoint>,
}

/// Compares the endpoints before and after a reload.
pub fn diff(old: &BTreeSet<Endpoint>, new: &BTreeSet<Endpoint>) -> Diff {
    Diff {
        keep: old.intersection(new).cloned().collect(),
        open: new.difference(old).cloned().collect(),
        close: old.difference(new).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(text, Path::new("petrel.conf")).expect("config parses")
    }

    fn eps(services: &str, cfg: &Config) -> BTreeSet<Endpoint> {
        petrel_config::services::parse(services, Path::new("services.conf"))
            .expect("services parse")
            .iter()
            .flat_map(|s| endpoints(s, cfg).expect("endpoints"))
            .collect()
    }

    const BEFORE: &str = "\
pickup unix n - n 60 1 pickup
cleanup unix n - n - 1 cleanup
qmgr unix n - n 300 1 qmgr
127.0.0.1:10025 inet n - n - 1 smtpd
143 inet n - n - 1 imapd
";

    #[test]
    fn endpoints_of_each_kind() {
        let c = cfg("inet_interfaces = 127.0.0.1, [::1]\n");
        let got = eps(BEFORE, &c);
        let want: BTreeSet<Endpoint> = [
            Endpoint::Unix {
                path: "public/pickup".into(),
                public: true,
            },
            Endpoint::Unix {
                path: "public/cleanup".into(),
                public: true,
            },
            Endpoint::Unix {
                path: "public/qmgr".into(),
                public: true,
            },
            Endpoint::Tcp("127.0.0.1:10025".parse().expect("addr")),
            Endpoint::Tcp("127.0.0.1:143".parse().expect("addr")),
            Endpoint::Tcp("[::1]:143".parse().expect("addr")),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
        let all = eps("25 inet n - n - 1 smtpd\n", &cfg("inet_interfaces = all\n"));
        assert_eq!(
            all.into_iter().collect::<Vec<_>>(),
            vec![Endpoint::Tcp("0.0.0.0:25".parse().expect("addr"))]
        );
    }

    #[test]
    fn reload_diff_keeps_unchanged_opens_new_closes_removed() {
        let c = cfg("inet_interfaces = 127.0.0.1\n");
        let old = eps(BEFORE, &c);
        let after = "\
pickup unix n - n 60 1 pickup -o queue_run_delay=10s
cleanup unix - - n - 2 cleanup
127.0.0.1:10025 inet n - n - 1 smtpd
127.0.0.1:10587 inet n - n - 1 smtpd
143 inet n - n - 1 imapd
";
        let new = eps(after, &c);
        let d = diff(&old, &new);
        assert!(
            d.keep.contains(&Endpoint::Unix {
                path: "public/pickup".into(),
                public: true
            }),
            "arguments changed, socket kept"
        );
        assert!(d
            .keep
            .contains(&Endpoint::Tcp("127.0.0.1:10025".parse().expect("addr"))));
        assert_eq!(d.keep.len(), 3);
        assert_eq!(
            d.open,
            vec![
                Endpoint::Unix {
                    path: "private/cleanup".into(),
                    public: false
                },
                Endpoint::Tcp("127.0.0.1:10587".parse().expect("addr")),
            ]
        );
        assert_eq!(
            d.close,
            vec![
                Endpoint::Unix {
                    path: "public/cleanup".into(),
                    public: true
                },
                Endpoint::Unix {
                    path: "public/qmgr".into(),
                    public: true
                },
            ]
        );
        let c2 = cfg("inet_interfaces = 127.0.0.2\n");
        let moved = diff(&old, &eps(BEFORE, &c2));
        assert_eq!(
            moved.open,
            vec![Endpoint::Tcp("127.0.0.2:143".parse().expect("addr"))],
            "inet_interfaces change moves host-less services"
        );
        assert_eq!(
            diff(&old, &old).open.len() + diff(&old, &old).close.len(),
            0
        );
    }

    #[test]
    fn unix_sockets_get_their_modes_and_replace_stale_ones() {
        let d = tempfile_dir();
        let ep = Endpoint::Unix {
            path: d.join("s").to_string_lossy().into_owned(),
            public: true,
        };
        let l = open(&ep, None).expect("bind");
        drop(l);
        let l = open(&ep, None).expect("stale socket replaced");
        let mode = std::fs::metadata(d.join("s"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o660);
        drop(l);
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("petrel-master-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }
}
