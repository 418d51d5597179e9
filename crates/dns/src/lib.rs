//! DNS for Petrel's delivery agents: MX, A/AAAA, TXT and PTR lookups, and the MTA's
//! "where does mail for this domain go" question ([`mail_routes`]).
//!
//! Lookups are done by [hickory-resolver](https://docs.rs/hickory-resolver), which is async
//! only. A [`Resolver`] owns one worker thread running a tokio current-thread runtime; callers
//! never see tokio:
//!
//! - [`Resolver::new`]`(servers, timeout)` starts the worker. An empty `servers` list means
//!   the nameservers of `/etc/resolv.conf`; otherwise each `SocketAddr` is a nameserver asked
//!   over UDP with TCP fallback (`127.0.0.1:5353` in tests, from `dns_servers`). `timeout`
//!   bounds each single lookup (one question: MX, or A+AAAA of one name) as a whole; a
//!   nameserver that never answers yields [`DnsError::Temporary`] after that long.
//!   Build the resolver after the privilege drop and never fork after it (it owns a thread).
//! - [`Resolver::lookup`]`(query, callback)` never blocks: the request goes to the worker over
//!   a channel, and the worker calls `callback(answer)` **on the worker thread** when the
//!   answer is there (see the example below). A callback is called exactly once, unless the
//!   `Resolver` is dropped while the lookup is still running, in which case it is dropped
//!   uncalled. Keep callbacks short: they run on the DNS worker.
//! - [`Resolver::lookup_blocking`] is the same, waiting for the answer (tests, CLIs).
//! - [`mail_routes`] (blocking) and `lookup(Query::Routes(domain), ..)` (non-blocking) give
//!   the delivery routes of a mail domain, as an MTA needs them ([`Route`]):
//!   MX records sorted by preference, equal preferences in random order (load sharing,
//!   RFC 5321 §5.1); each exchange with its IPv4 and IPv6 addresses (A first, then AAAA);
//!   exchanges whose names have no address are left out (none left: `Temporary` if any
//!   address lookup failed temporarily, else `NotFound`); at most [`MAX_MX_HOSTS`]
//!   exchanges are looked up. No MX record but the domain exists
//!   → the implicit MX: the domain's own A/AAAA as the single route (`implicit: true`).
//!   A null MX (RFC 7505: `MX 0 .`) → [`DnsError::NullMx`] (bounce with 5.1.10). CNAMEs are
//!   followed (by hickory) for MX and address lookups alike.
//!
//! # From a mio event loop
//!
//! Pass a closure that pushes the answer onto the loop's own channel and wakes its
//! `mio::Waker`; the loop drains the channel on the waker's token:
//!
//! ```no_run
//! use std::sync::{mpsc, Arc};
//! use std::time::Duration;
//! use petrel_dns::{Answer, Query, Resolver};
//!
//! let resolver = Resolver::new(&[], Duration::from_secs(10)).expect("resolver");
//! let (tx, rx) = mpsc::channel::<(u64, Answer)>();
//! let waker = Arc::new(std::thread::current()); // an Arc<mio::Waker> in a daemon
//! let job = 42u64;
//! let w = waker.clone();
//! resolver.lookup(
//!     Query::Routes("example.com".into()),
//!     Box::new(move |answer| {
//!         let _ = tx.send((job, answer));
//!         w.unpark(); // w.wake() with mio
//!     }),
//! );
//! // Later, in the event loop, on the waker's token:
//! while let Ok((job, answer)) = rx.try_recv() { /* resume job with answer */ }
//! ```
//!
//! # Errors: permanent or temporary
//!
//! [`DnsError::NotFound`] (NXDOMAIN, or the name exists without records of the type asked
//! for) and [`DnsError::NullMx`] are permanent: the caller may bounce. Everything else —
//! SERVFAIL, REFUSED, timeouts, unreachable nameservers, malformed answers, referrals — is
//! [`DnsError::Temporary`]: defer and retry, never bounce. [`DnsError::dsn_status`] gives the
//! RFC 3463 status code Postfix uses for each.
//!
//! Names are looked up as fully qualified (no resolv.conf search list), and `/etc/hosts`
//! is never consulted. Results are cached by hickory for their TTL (negative answers too).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use tokio::sync::Notify;

/// The most MX hosts of one domain whose addresses are looked up.
pub const MAX_MX_HOSTS: usize = 16;

/// A DNS question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// MX records of a domain → [`Answer::Mx`].
    Mx(String),
    /// A and AAAA records of a host name (an IP literal answers itself) → [`Answer::Addrs`].
    Host(String),
    /// TXT records of a name → [`Answer::Txt`].
    Txt(String),
    /// PTR records of an address → [`Answer::Names`].
    Ptr(IpAddr),
    /// The delivery routes of a mail domain (see [`mail_routes`]) → [`Answer::Routes`].
    Routes(String),
}

/// The answer to a [`Query`]; the variant always matches the query's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// For [`Query::Mx`]: sorted by preference, equal preferences in random order. A null
    /// MX gives `Err(NullMx)`.
    Mx(Result<Vec<MxHost>, DnsError>),
    /// For [`Query::Host`]: IPv4 addresses first, then IPv6.
    Addrs(Result<Vec<IpAddr>, DnsError>),
    /// For [`Query::Txt`]: one string per record, its character-strings concatenated
    /// (as SPF and DKIM want them), invalid UTF-8 replaced.
    Txt(Result<Vec<String>, DnsError>),
    /// For [`Query::Ptr`]: host names, without the trailing dot.
    Names(Result<Vec<String>, DnsError>),
    /// For [`Query::Routes`].
    Routes(Result<Vec<Route>, DnsError>),
}

impl Answer {
    /// The answer of the query's kind carrying `err`.
    pub fn failed(query: &Query, err: DnsError) -> Answer {
        match query {
            Query::Mx(_) => Answer::Mx(Err(err)),
            Query::Host(_) => Answer::Addrs(Err(err)),
            Query::Txt(_) => Answer::Txt(Err(err)),
            Query::Ptr(_) => Answer::Names(Err(err)),
            Query::Routes(_) => Answer::Routes(Err(err)),
        }
    }

    /// The error, if the lookup failed.
    pub fn error(&self) -> Option<&DnsError> {
        match self {
            Answer::Mx(Err(e))
            | Answer::Addrs(Err(e))
            | Answer::Txt(Err(e))
            | Answer::Names(Err(e))
            | Answer::Routes(Err(e)) => Some(e),
            _ => None,
        }
    }
}

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    /// The exchange's name in ASCII (A-labels), without the trailing dot.
    pub exchange: String,
}

/// One place to deliver mail for a domain: an MX host (or the domain itself for an implicit
/// MX) and its addresses, in the order they should be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The MX exchange (or the domain), ASCII, no trailing dot: for logs (`relay=host[ip]`)
    /// and TLS peer name checks.
    pub host: String,
    /// The MX preference (0 for an implicit MX).
    pub preference: u16,
    /// True when the domain has no MX record and this is its own A/AAAA (RFC 5321 §5.1).
    pub implicit: bool,
    /// IPv4 addresses first, then IPv6; never empty.
    pub addrs: Vec<IpAddr>,
}

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// Permanent: the name does not exist (NXDOMAIN), or has no records of the type asked
    /// for (for [`mail_routes`]: no MX and no address, or no MX host with an address).
    NotFound,
    /// Permanent: the domain publishes a null MX (RFC 7505): it accepts no mail.
    NullMx,
    /// Temporary: SERVFAIL, REFUSED, timeout, no nameserver reachable, malformed answer…
    /// Defer and retry later; never bounce on this.
    Temporary(String),
}

impl DnsError {
    /// True for errors that justify a bounce.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DnsError::Temporary(_))
    }

    /// The RFC 3463 enhanced status code, as Postfix reports it.
    pub fn dsn_status(&self) -> &'static str {
        match self {
            DnsError::NotFound => "5.4.4",
            DnsError::NullMx => "5.1.10",
            DnsError::Temporary(_) => "4.4.3",
        }
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NotFound => f.write_str("Host or domain name not found"),
            DnsError::NullMx => f.write_str("Domain does not accept mail (null MX)"),
            DnsError::Temporary(why) => write!(f, "Name service error: {why}"),
        }
    }
}

impl std::error::Error for DnsError {}

/// Called once with the answer, on the DNS worker thread.
pub type Callback = Box<dyn FnOnce(Answer) + Send + 'static>;

struct Request {
    query: Query,
    done: Callback,
}

/// A DNS resolver with its own worker thread; see the crate documentation.
pub struct Resolver {
    tx: Option<mpsc::Sender<Request>>,
    notify: Arc<Notify>,
    worker: Option<JoinHandle<()>>,
}

impl Resolver {
    /// Starts the worker thread. `servers` empty = the nameservers of `/etc/resolv.conf`;
    /// `timeout` bounds every single lookup. Fails if the runtime cannot be built or the
    /// system configuration cannot be read.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Resolver, String> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let notify = Arc::new(Notify::new());
        let worker_notify = notify.clone();
        let servers = servers.to_vec();
        let timeout = timeout.max(Duration::from_millis(10));
        let worker = thread::Builder::new()
            .name("dns".into())
            .spawn(move || worker(&servers, timeout, rx, worker_notify, ready_tx))
            .map_err(|e| format!("cannot start the DNS thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Resolver {
                tx: Some(tx),
                notify,
                worker: Some(worker),
            }),
            Ok(Err(e)) => {
                let _ = worker.join();
                Err(e)
            }
            Err(_) => {
                let _ = worker.join();
                Err("the DNS thread died while starting".into())
            }
        }
    }

    /// Starts a lookup; `done` is called with the answer on the worker thread. Never blocks.
    pub fn lookup(&self, query: Query, done: Callback) {
        let request = Request { query, done };
        let Some(tx) = &self.tx else {
            return fail(request);
        };
        match tx.send(request) {
            Ok(()) => self.notify.notify_one(),
            Err(mpsc::SendError(request)) => fail(request),
        }
    }

    /// Looks up and waits for the answer.
    pub fn lookup_blocking(&self, query: Query) -> Answer {
        let (tx, rx) = mpsc::sync_channel(1);
        let kind = query.clone();
        self.lookup(
            query,
            Box::new(move |answer| {
                let _ = tx.send(answer);
            }),
        );
        rx.recv().unwrap_or_else(|_| {
            Answer::failed(&kind, DnsError::Temporary("the DNS thread is gone".into()))
        })
    }
}

fn fail(request: Request) {
    let answer = Answer::failed(
        &request.query,
        DnsError::Temporary("the DNS thread is gone".into()),
    );
    (request.done)(answer);
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.tx = None;
        self.notify.notify_one();
        if let Some(worker) = self.worker.take() {
            // Dropped from a callback (on the worker itself): it stops on its own.
            if worker.thread().id() != thread::current().id() {
                let _ = worker.join();
            }
        }
    }
}

/// The delivery routes of a mail domain, blocking: MX hosts by preference (random among
/// equals) with their addresses, or the implicit MX; see the crate documentation.
pub fn mail_routes(resolver: &Resolver, domain: &str) -> Result<Vec<Route>, DnsError> {
    match resolver.lookup_blocking(Query::Routes(domain.to_string())) {
        Answer::Routes(r) => r,
        other => Err(DnsError::Temporary(format!("unexpected answer {other:?}"))),
    }
}

fn worker(
    servers: &[SocketAddr],
    timeout: Duration,
    rx: mpsc::Receiver<Request>,
    notify: Arc<Notify>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the DNS runtime: {e}")));
            return;
        }
    };
    let built = {
        let _guard = rt.enter();
        build_resolver(servers, timeout)
    };
    let ctx = match built {
        Ok(resolver) => Arc::new(Ctx { resolver, timeout }),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    rt.block_on(async move {
        loop {
            loop {
                match rx.try_recv() {
                    Ok(Request { query, done }) => {
                        let ctx = ctx.clone();
                        tokio::spawn(async move { done(ctx.answer(query).await) });
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            notify.notified().await;
        }
    });
    // Dropping the runtime here cancels lookups still running (their callbacks are dropped).
}

fn build_resolver(servers: &[SocketAddr], timeout: Duration) -> Result<TokioResolver, String> {
    let mut builder = if servers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the DNS configuration (/etc/resolv.conf): {e}"))?
    } else {
        let name_servers = servers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts = builder.options_mut();
    // Two tries per lookup, within the overall deadline enforced in `Ctx::records`.
    opts.timeout = (timeout / 2).max(Duration::from_millis(5));
    opts.attempts = 2;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    builder
        .build()
        .map_err(|e| format!("cannot build the DNS resolver: {e}"))
}

/// Failures as the lookups see them: NXDOMAIN and NODATA are told apart for implicit MX.
#[derive(Debug)]
enum Fail {
    NxDomain,
    NoData,
    NullMx,
    Temp(String),
}

impl From<Fail> for DnsError {
    fn from(f: Fail) -> DnsError {
        match f {
            Fail::NxDomain | Fail::NoData => DnsError::NotFound,
            Fail::NullMx => DnsError::NullMx,
            Fail::Temp(why) => DnsError::Temporary(why),
        }
    }
}

fn classify(err: &NetError, name: &Name, rtype: RecordType) -> Fail {
    if let NetError::Dns(HickoryDnsError::NoRecordsFound(nr)) = err {
        match nr.response_code {
            ResponseCode::NXDomain => return Fail::NxDomain,
            // An empty NOERROR answer with only NS records is a referral: a nameserver that
            // does not recurse, not an answer.
            ResponseCode::NoError if nr.soa.is_some() || nr.ns.is_none() => return Fail::NoData,
            _ => {}
        }
    }
    Fail::Temp(format!("name={} type={rtype}: {err}", display_name(name)))
}

fn display_name(name: &Name) -> String {
    let mut s = name.to_ascii();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s
}

fn parse_name(s: &str) -> Result<Name, Fail> {
    let parsed = if s.is_ascii() {
        Name::from_ascii(s)
    } else {
        Name::from_utf8(s)
    };
    match parsed {
        Ok(mut name) => {
            name.set_fqdn(true);
            Ok(name)
        }
        // Not a valid domain name: it cannot exist.
        Err(_) => Err(Fail::NxDomain),
    }
}

struct Ctx {
    resolver: TokioResolver,
    timeout: Duration,
}

impl Ctx {
    async fn answer(self: Arc<Self>, query: Query) -> Answer {
        match query {
            Query::Mx(domain) => Answer::Mx(self.mx(&domain).await.map_err(DnsError::from)),
            Query::Host(host) => Answer::Addrs(match host.parse::<IpAddr>() {
                Ok(ip) => Ok(vec![ip]),
                Err(_) => match parse_name(&host) {
                    Ok(name) => self.addrs(name).await.map_err(DnsError::from),
                    Err(f) => Err(f.into()),
                },
            }),
            Query::Txt(name) => Answer::Txt(self.txt(&name).await.map_err(DnsError::from)),
            Query::Ptr(ip) => Answer::Names(
                self.records(Name::from(ip), RecordType::PTR)
                    .await
                    .map(|rs| {
                        rs.into_iter()
                            .filter_map(|r| match r {
                                RData::PTR(p) => Some(display_name(&p.0)),
                                _ => None,
                            })
                            .collect()
                    })
                    .map_err(DnsError::from),
            ),
            Query::Routes(domain) => Answer::Routes(self.routes(&domain).await),
        }
    }

    /// The records of one type, CNAMEs followed; empty → NoData.
    async fn records(&self, name: Name, rtype: RecordType) -> Result<Vec<RData>, Fail> {
        let lookup = self.resolver.lookup(name.clone(), rtype);
        match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => Err(Fail::Temp(format!(
                "name={} type={rtype}: timed out after {:?}",
                display_name(&name),
                self.timeout
            ))),
            Ok(Err(e)) => Err(classify(&e, &name, rtype)),
            Ok(Ok(found)) => {
                let data: Vec<RData> = found
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data.clone())
                    .collect();
                if data.is_empty() {
                    Err(Fail::NoData)
                } else {
                    Ok(data)
                }
            }
        }
    }

    /// A and AAAA at once; addresses if either has some.
    async fn addrs(self: &Arc<Self>, name: Name) -> Result<Vec<IpAddr>, Fail> {
        let ctx = self.clone();
        let v4_name = name.clone();
        let v4 = tokio::spawn(async move { ctx.records(v4_name, RecordType::A).await });
        let v6 = self.records(name, RecordType::AAAA).await;
        let v4 = v4
            .await
            .unwrap_or_else(|e| Err(Fail::Temp(format!("A lookup task failed: {e}"))));
        let mut out = Vec::new();
        let mut fails = Vec::new();
        for result in [v4, v6] {
            match result {
                Ok(rs) => out.extend(rs.into_iter().filter_map(|r| match r {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(f) => fails.push(f),
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        Err(worst(fails))
    }

    async fn mx(&self, domain: &str) -> Result<Vec<MxHost>, Fail> {
        let name = parse_name(domain)?;
        let records = self.records(name, RecordType::MX).await?;
        let all = records.len();
        let mut hosts: Vec<MxHost> = Vec::with_capacity(all);
        let mut null = 0;
        for r in records {
            if let RData::MX(mx) = r {
                if mx.exchange.is_root() {
                    null += 1;
                } else {
                    hosts.push(MxHost {
                        preference: mx.preference,
                        exchange: display_name(&mx.exchange),
                    });
                }
            }
        }
        if hosts.is_empty() {
            // RFC 7505: "MX 0 ." (a lone root exchange, whatever the preference) = no mail.
            return Err(if null > 0 { Fail::NullMx } else { Fail::NoData });
        }
        sort_and_shuffle(&mut hosts);
        Ok(hosts)
    }

    async fn routes(self: &Arc<Self>, domain: &str) -> Result<Vec<Route>, DnsError> {
        let name = parse_name(domain)?;
        let hosts = match self.mx(domain).await {
            Ok(hosts) => hosts,
            Err(Fail::NoData) => {
                // No MX but the domain exists: the implicit MX is the domain itself
                // (RFC 5321 §5.1). NXDOMAIN never gets here.
                let host = display_name(&name);
                let addrs = self.addrs(name).await?;
                return Ok(vec![Route {
                    host,
                    preference: 0,
                    implicit: true,
                    addrs,
                }]);
            }
            Err(f) => return Err(f.into()),
        };
        let mut tasks = Vec::new();
        for host in hosts.into_iter().take(MAX_MX_HOSTS) {
            let ctx = self.clone();
            tasks.push(tokio::spawn(async move {
                let result = match parse_name(&host.exchange) {
                    Ok(name) => ctx.addrs(name).await,
                    Err(f) => Err(f),
                };
                (host, result)
            }));
        }
        let mut routes = Vec::new();
        let mut fails = Vec::new();
        for task in tasks {
            match task.await {
                Ok((host, Ok(addrs))) => routes.push(Route {
                    host: host.exchange,
                    preference: host.preference,
                    implicit: false,
                    addrs,
                }),
                Ok((_, Err(f))) => fails.push(f),
                Err(e) => fails.push(Fail::Temp(format!("lookup task failed: {e}"))),
            }
        }
        if routes.is_empty() {
            return Err(worst(fails).into());
        }
        Ok(routes)
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, Fail> {
        let records = self.records(parse_name(name)?, RecordType::TXT).await?;
        Ok(records
            .into_iter()
            .filter_map(|r| match r {
                RData::TXT(t) => {
                    let bytes: Vec<u8> =
                        t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            })
            .collect())
    }
}

/// No result from any of several lookups: temporary if any was temporary (retrying may
/// help), else not found.
fn worst(fails: Vec<Fail>) -> Fail {
    let mut nx = false;
    for f in fails {
        match f {
            Fail::Temp(_) | Fail::NullMx => return f,
            Fail::NxDomain => nx = true,
            Fail::NoData => {}
        }
    }
    if nx {
        Fail::NxDomain
    } else {
        Fail::NoData
    }
}

/// Sorts by preference and shuffles each run of equal preferences.
fn sort_and_shuffle(hosts: &mut [MxHost]) {
    hosts.sort_by_key(|h| h.preference);
    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts[start].preference;
        let end = start
            + hosts[start..]
                .iter()
                .take_while(|h| h.preference == pref)
                .count();
        let run = &mut hosts[start..end];
        for i in (1..run.len()).rev() {
            run.swap(i, random_below(i + 1));
        }
        start = end;
    }
}

/// A small splitmix64 generator seeded from the clock: good enough for load sharing.
fn random_below(n: usize) -> usize {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    let step = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut z = seed.wrapping_add(step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_keeps_preference_order() {
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut hosts: Vec<MxHost> = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
                .iter()
                .map(|(p, e)| MxHost {
                    preference: *p,
                    exchange: e.to_string(),
                })
                .collect();
            sort_and_shuffle(&mut hosts);
            let prefs: Vec<u16> = hosts.iter().map(|h| h.preference).collect();
            assert_eq!(prefs, [10, 10, 20, 30]);
            assert_eq!(hosts[2].exchange, "c");
            seen_first.insert(hosts[0].exchange.clone());
        }
        assert_eq!(seen_first.len(), 2);
    }

    #[test]
    fn resolver_is_shareable() {
        fn check<T: Send + Sync>() {}
        check::<Resolver>();
    }

    #[test]
    fn random_below_is_in_range() {
        for n in 1..50 {
            assert!(random_below(n) < n);
        }
    }

    #[test]
    fn errors_are_classified() {
        assert!(DnsError::NotFound.is_permanent());
        assert!(DnsError::NullMx.is_permanent());
        assert!(!DnsError::Temporary("x".into()).is_permanent());
        assert_eq!(DnsError::NullMx.dsn_status(), "5.1.10");
    }
}
