//! One delivery request: read the queue file, find the servers of the next hop, deliver
//! over a cached or new connection, and report one outcome per recipient.

use crate::cache::Cache;
use crate::nexthop::{self, Target};
use crate::session::{Failure, RcptResult, Session, TxMessage, TxRcpt};
use crate::settings::Settings;
use petrel_dns::{DnsError, Query, Resolver};
use petrel_ipc::delivery::{Outcome, Reply, Request, Status};
use petrel_tls::client::ClientLevel;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The most addresses tried for one request (Postfix's smtp_mx_address_limit is 5).
const MAX_ADDRESSES: usize = 10;

/// The agent: settings, DNS, and the connection cache, shared by every thread.
pub struct Agent {
    pub s: Arc<Settings>,
    pub cache: Arc<Cache>,
    pub resolver: Resolver,
}

/// A server to try.
enum Endpoint {
    Tcp { host: String, addr: SocketAddr },
    Unix(PathBuf),
}

/// How a request ended before any server could be asked.
struct Early {
    status: Status,
    dsn: String,
    text: String,
}

/// Postfix-style delay figures: two significant decimals, "0" for nothing.
fn secs(d: f64) -> String {
    if d < 0.005 {
        "0".into()
    } else if d < 10.0 {
        let s = format!("{d:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{d:.0}")
    }
}

impl Agent {
    /// Delivers one request; `still_wanted` tells whether qmgr is still there to hear the
    /// answer (see [`TxMessage::still_wanted`]).
    pub fn handle(&self, req: &Request, still_wanted: &(dyn Fn() -> bool + Sync)) -> Reply {
        let received = Instant::now();
        let waited = (petrel_queue::now() - req.arrival).max(0.0);
        let (env, content) = match load(&req.path) {
            Ok(x) => x,
            Err(e) => {
                let early = Early {
                    status: Status::Deferred,
                    dsn: "4.3.0".into(),
                    text: format!("cannot read queue file {}: {e}", req.path),
                };
                return self.early(req, early, waited, received);
            }
        };
        let recipients: Vec<TxRcpt<'_>> = req
            .recipients
            .iter()
            .map(|r| TxRcpt {
                address: &r.address,
                notify: env
                    .recipients
                    .get(r.index as usize)
                    .map(|x| x.notify.as_str())
                    .unwrap_or(""),
                orcpt: &r.orcpt,
            })
            .collect();
        let msg = TxMessage {
            sender: &req.sender,
            content: &content,
            envid: env.attr("envid").unwrap_or(""),
            ret: env.attr("ret").unwrap_or(""),
            smtputf8: env.attr("smtputf8").is_some(),
            still_wanted,
        };
        let nexthop = if req.nexthop.is_empty() {
            req.recipients
                .first()
                .and_then(|r| r.address.rsplit_once('@'))
                .map(|(_, d)| d.to_string())
                .unwrap_or_default()
        } else {
            req.nexthop.clone()
        };
        let target = match nexthop::parse(&nexthop, self.s.lmtp, self.s.default_port) {
            Ok(t) => t,
            Err(e) => {
                let early = Early {
                    status: Status::Deferred,
                    dsn: "4.3.5".into(),
                    text: format!("bad next hop {nexthop:?}: {e}"),
                };
                return self.early(req, early, waited, received);
            }
        };
        let key = format!("{}:{nexthop}", if self.s.lmtp { "lmtp" } else { "smtp" });
        // A cached connection first; if it turns out dead, start afresh.
        if let Some(mut sess) = self.cache.take(&key) {
            let started = Instant::now();
            if let Ok((results, usable)) = sess.transaction(&self.s, &msg, &recipients) {
                return self.done(req, &key, sess, results, usable, waited, started, received);
            }
        }
        let endpoints = match self.endpoints(&target) {
            Ok(e) => e,
            Err(early) => return self.early(req, early, waited, received),
        };
        let auth = self.credentials(&nexthop, &target);
        let auth_ref = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let mut last: Option<Failure> = None;
        for ep in endpoints {
            let opened = match &ep {
                Endpoint::Unix(path) => Session::open_unix(&self.s, path),
                Endpoint::Tcp { host, addr } => {
                    let first = Session::open_tcp(
                        &self.s,
                        host,
                        *addr,
                        self.s.lmtp,
                        self.s.tls_level,
                        auth_ref,
                    );
                    match first {
                        // Opportunistic TLS that failed: the same server in plain text.
                        Err(Failure::Local { dsn: "4.7.5", text })
                            if self.s.tls_level == Some(ClientLevel::May) =>
                        {
                            log::info!("{}: {text}; trying again without TLS", req.queue_id);
                            Session::open_tcp(&self.s, host, *addr, self.s.lmtp, None, auth_ref)
                        }
                        other => other,
                    }
                }
            };
            let mut sess = match opened {
                Ok(s) => s,
                Err(f) => {
                    log::info!("{}: {}", req.queue_id, f.text());
                    last = Some(f);
                    continue;
                }
            };
            let started = Instant::now();
            match sess.transaction(&self.s, &msg, &recipients) {
                Ok((results, usable)) => {
                    return self.done(req, &key, sess, results, usable, waited, started, received)
                }
                Err(f) => {
                    log::info!("{}: {}", req.queue_id, f.text());
                    last = Some(f);
                }
            }
        }
        let early = match last {
            // Every server refused us for good at the greeting or HELO.
            Some(Failure::Refused { reply, text }) if reply.class() == 5 => Early {
                status: Status::Bounced,
                dsn: reply.dsn(),
                text,
            },
            Some(f) => {
                let dsn = f.dsn();
                let dsn = match dsn.strip_prefix('5') {
                    Some(rest) => format!("4{rest}"),
                    None => dsn,
                };
                Early {
                    status: Status::Deferred,
                    dsn,
                    text: f.text().to_string(),
                }
            }
            None => Early {
                status: Status::Deferred,
                dsn: "4.4.1".into(),
                text: "no server to connect to".into(),
            },
        };
        self.early(req, early, waited, received)
    }

    /// The servers of a next hop, in the order to try them.
    fn endpoints(&self, target: &Target) -> Result<Vec<Endpoint>, Early> {
        let mut out = Vec::new();
        match target {
            Target::Unix(p) => out.push(Endpoint::Unix(p.clone())),
            Target::Host { host, port } => {
                let addrs: Vec<IpAddr> = match nexthop::ip_literal(host) {
                    Some(ip) => vec![ip],
                    None => match self.resolver.lookup_blocking(Query::Host(host.clone())) {
                        petrel_dns::Answer::Addrs(Ok(v)) => v,
                        petrel_dns::Answer::Addrs(Err(e)) => {
                            return Err(dns_failure(host, "A", &e))
                        }
                        _ => {
                            return Err(dns_failure(
                                host,
                                "A",
                                &DnsError::Temporary("unexpected answer".into()),
                            ))
                        }
                    },
                };
                for ip in addrs {
                    out.push(Endpoint::Tcp {
                        host: host.clone(),
                        addr: SocketAddr::new(ip, *port),
                    });
                }
            }
            Target::Mx { domain, port } => {
                let routes = petrel_dns::mail_routes(&self.resolver, domain)
                    .map_err(|e| dns_failure(domain, "MX", &e))?;
                for r in routes {
                    for ip in r.addrs {
                        out.push(Endpoint::Tcp {
                            host: r.host.clone(),
                            addr: SocketAddr::new(ip, *port),
                        });
                    }
                }
            }
        }
        out.truncate(MAX_ADDRESSES);
        Ok(out)
    }

    /// smtp_sasl_password_maps: the next hop as written, the host alone, the domain.
    fn credentials(&self, nexthop: &str, target: &Target) -> Option<(String, String)> {
        let maps = self.s.sasl.as_ref()?;
        let host = match target {
            Target::Host { host, .. } => host.clone(),
            Target::Mx { domain, .. } => domain.clone(),
            Target::Unix(_) => return None,
        };
        let found = [nexthop.to_string(), format!("[{host}]"), host]
            .iter()
            .find_map(|k| maps.get(k).map(str::to_string))?;
        let (user, pass) = found.split_once(':')?;
        Some((user.to_string(), pass.to_string()))
    }

    /// Every recipient ends the same way without a server conversation.
    fn early(&self, req: &Request, e: Early, waited: f64, received: Instant) -> Reply {
        let total = waited + received.elapsed().as_secs_f64();
        let word = status_word(e.status);
        let outcomes = req
            .recipients
            .iter()
            .map(|r| {
                log::info!(
                    "{}: to=<{}>, relay=none, delay={}, delays={}/0/{}/0, dsn={}, status={word} ({})",
                    req.queue_id,
                    r.address,
                    secs(total),
                    secs(waited),
                    secs(received.elapsed().as_secs_f64()),
                    e.dsn,
                    e.text
                );
                Outcome {
                    index: r.index,
                    status: e.status,
                    dsn: e.dsn.clone(),
                    reason: e.text.clone(),
                    dsn_passed_on: false,
                }
            })
            .collect();
        Reply { outcomes }
    }

    #[allow(clippy::too_many_arguments)]
    fn done(
        &self,
        req: &Request,
        key: &str,
        sess: Session,
        results: Vec<RcptResult>,
        usable: bool,
        waited: f64,
        started: Instant,
        received: Instant,
    ) -> Reply {
        let xfer = started.elapsed().as_secs_f64();
        let setup = (started.saturating_duration_since(received)).max(sess.setup_time);
        let total = waited + received.elapsed().as_secs_f64();
        let relay = sess.relay();
        let passes_dsn = sess.ext.dsn && !sess.lmtp;
        let outcomes = req
            .recipients
            .iter()
            .zip(results)
            .map(|(r, res)| {
                let (status, dsn, text) = match res {
                    RcptResult::Sent { dsn, text } => (Status::Sent, dsn, text),
                    RcptResult::Deferred { dsn, text } => (Status::Deferred, dsn, text),
                    RcptResult::Bounced { dsn, text } => (Status::Bounced, dsn, text),
                };
                log::info!(
                    "{}: to=<{}>, relay={relay}, delay={}, delays={}/0/{}/{}, dsn={dsn}, status={} ({text})",
                    req.queue_id,
                    r.address,
                    secs(total),
                    secs(waited),
                    secs(setup.as_secs_f64()),
                    secs(xfer),
                    status_word(status),
                );
                Outcome {
                    index: r.index,
                    status,
                    dsn,
                    reason: text,
                    // The server does DSN and got NOTIFY: it reports success itself.
                    dsn_passed_on: status == Status::Sent && passes_dsn,
                }
            })
            .collect();
        if usable {
            self.cache.put(key, sess, &self.s);
        } else {
            drop(sess);
        }
        Reply { outcomes }
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Sent => "sent",
        Status::Deferred => "deferred",
        Status::Bounced => "bounced",
    }
}

fn dns_failure(name: &str, rtype: &str, e: &DnsError) -> Early {
    match e {
        DnsError::NullMx => Early {
            status: Status::Bounced,
            dsn: "5.1.10".into(),
            text: format!("Domain {name} does not accept mail (nullMX)"),
        },
        DnsError::NotFound => Early {
            status: Status::Bounced,
            dsn: "5.4.4".into(),
            text: format!(
                "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found"
            ),
        },
        DnsError::Temporary(why) => Early {
            status: Status::Deferred,
            dsn: "4.4.3".into(),
            text: format!(
                "Host or domain name not found. Name service error for name={name} type={rtype}: Host not found, try again ({why})"
            ),
        },
    }
}

/// The envelope and content of a queue file.
fn load(path: &str) -> std::io::Result<(petrel_queue::file::Envelope, Vec<u8>)> {
    let mut f = std::fs::File::open(path)?;
    let env = petrel_queue::file::read_envelope(&mut f).map_err(|e| match e {
        petrel_queue::file::ReadError::Io(e) => e,
        petrel_queue::file::ReadError::Corrupt(why) => {
            std::io::Error::new(std::io::ErrorKind::InvalidData, why)
        }
    })?;
    let content = petrel_queue::file::read_content(&f, &env)?;
    Ok((env, content))
}

#[cfg(test)]
mod tests {
    use super::secs;

    #[test]
    fn delay_figures() {
        assert_eq!(secs(0.0), "0");
        assert_eq!(secs(0.4), "0.4");
        assert_eq!(secs(0.123), "0.12");
        assert_eq!(secs(12.6), "13");
    }
}
