//! qmgr's event loop and queue state.
//!
//! Life of a message: `incoming/ID` → (rename) `active/ID` → one delivery request per
//! transport → outcomes → bounce what failed for good (DSN through cleanup) → mark the
//! finished recipients done in place and fdatasync → either unlink (all done) or append the
//! reasons to `defer/ID` and rename to `deferred/ID` with the next retry time as mtime.
//! On start-up every file left in `active/` is delivered again: delivery agents make a
//! repeated delivery of the same recipient a no-op where they can (Maildir).

use crate::bounce;
use crate::policy::{self, Router, Settings};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use petrel_ipc::delivery::{self, Outcome, Status};
use petrel_ipc::qmgr::Notice;
use petrel_ipc::{FrameReader, Incoming};
use petrel_message::dsn;
use petrel_queue::file::{self, Envelope};
use petrel_queue::{Dir, QueueId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime};

const LISTENER: Token = Token(0);
const TICK: Duration = Duration::from_millis(500);
/// A request whose agent died this many times is deferred instead of retried at once.
const MAX_AGENT_CRASHES: u32 = 3;
/// The longest a complete file may wait in incoming/ without a notice.
const INCOMING_SCAN: Duration = Duration::from_secs(10);
/// How long a job whose agent died waits before it is handed out again.
const RETRY_AFTER_CRASH: Duration = Duration::from_secs(1);
/// How long a transport may stay unreachable before its mail is deferred.
const TRANSPORT_GRACE: Duration = Duration::from_secs(30);

/// A message in `active/`.
struct Msg {
    file: File,
    env: Envelope,
    outstanding: usize,
    outcomes: Vec<Outcome>,
    crashes: u32,
    /// Recipients already marked done in the file (and fsynced) while other requests of
    /// the message were still out.
    marked: HashSet<u32>,
}

/// One delivery request waiting for an agent.
struct Job {
    transport: String,
    queue_id: String,
    request: delivery::Request,
    /// After its agent died: not before this time, so that every other connection to
    /// the dead agents is noticed first and only real deaths count as crashes.
    not_before: Option<Instant>,
}

/// A connection to a delivery agent.
struct Agent {
    transport: String,
    stream: UnixStream,
    reader: FrameReader,
    out: Vec<u8>,
    busy: Option<Job>,
}

struct Notifier {
    stream: UnixStream,
    reader: FrameReader,
}

pub struct Manager {
    poll: Poll,
    listener: UnixListener,
    notifiers: HashMap<usize, Notifier>,
    agents: HashMap<usize, Agent>,
    next_token: usize,
    s: Settings,
    router: Router,
    active: HashMap<String, Msg>,
    todo: VecDeque<(String, Dir)>,
    jobs: VecDeque<Job>,
    unreachable_since: HashMap<String, Instant>,
    /// Requests in progress per (transport, next hop), for the destination concurrency limit.
    busy_per_dest: HashMap<(String, String), usize>,
    next_deferred_scan: Instant,
    next_incoming_scan: Instant,
}

fn age_of(env: &Envelope) -> Duration {
    Duration::from_secs_f64((petrel_queue::now() - env.arrival).max(0.0))
}

impl Manager {
    pub fn new(
        listener: std::os::unix::net::UnixListener,
        s: Settings,
        router: Router,
    ) -> io::Result<Manager> {
        listener.set_nonblocking(true)?;
        let mut listener = UnixListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Manager {
            poll,
            listener,
            notifiers: HashMap::new(),
            agents: HashMap::new(),
            next_token: 1,
            s,
            router,
            active: HashMap::new(),
            todo: VecDeque::new(),
            jobs: VecDeque::new(),
            unreachable_since: HashMap::new(),
            busy_per_dest: HashMap::new(),
            next_deferred_scan: Instant::now(),
            next_incoming_scan: Instant::now(),
        })
    }

    pub fn run(&mut self) -> io::Result<()> {
        // Whatever was being delivered when qmgr last stopped goes first.
        for id in scan(Dir::Active) {
            self.todo.push_back((id, Dir::Active));
        }
        let mut events = Events::with_capacity(256);
        loop {
            self.housekeeping();
            match self.poll.poll(&mut events, Some(TICK)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    Token(t) if self.notifiers.contains_key(&t) => self.read_notices(t),
                    Token(t) => self.agent_event(t),
                }
            }
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if now >= self.next_incoming_scan {
            self.scan_incoming();
        }
        if now >= self.next_deferred_scan {
            self.scan_deferred(false);
        }
        self.load_todo();
        self.dispatch();
    }

    fn scan_incoming(&mut self) {
        // Notices from cleanup are the fast path; this scan is the safety net for one that
        // died with a crashed cleanup, so it runs often (a readdir of a mostly empty dir).
        self.next_incoming_scan = Instant::now() + self.s.queue_run_delay.min(INCOMING_SCAN);
        for id in scan(Dir::Incoming) {
            self.todo.push_back((id, Dir::Incoming));
        }
    }

    fn scan_deferred(&mut self, flush: bool) {
        self.next_deferred_scan = Instant::now() + self.s.queue_run_delay;
        let now = SystemTime::now();
        for id in scan(Dir::Deferred) {
            let path = Dir::Deferred.file(&id);
            let due = flush
                || std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(|t| t <= now)
                    .unwrap_or(false);
            if due {
                self.todo.push_back((id, Dir::Deferred));
            }
        }
    }

    /// Moves queued files into active/ and turns them into jobs, up to the active limit.
    fn load_todo(&mut self) {
        while self.active.len() < self.s.active_limit {
            let Some((id, from)) = self.todo.pop_front() else {
                return;
            };
            if self.active.contains_key(&id) {
                continue;
            }
            let active_path = Dir::Active.file(&id);
            if from != Dir::Active {
                let src = from.file(&id);
                match std::fs::metadata(&src) {
                    Ok(m) if from == Dir::Incoming && !file::is_complete(&m) => continue,
                    Ok(_) => {}
                    Err(_) => continue, // already taken, or removed by the operator
                }
                if let Err(e) = std::fs::rename(&src, &active_path) {
                    log::warn!("{id}: rename {src} to {active_path}: {e}");
                    continue;
                }
            }
            self.load(id, from == Dir::Deferred);
        }
    }

    fn load(&mut self, id: String, from_deferred: bool) {
        let path = Dir::Active.file(&id);
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                log::warn!("{id}: open {path}: {e}");
                return;
            }
        };
        let env = match file::read_envelope(&mut f) {
            Ok(env) => env,
            Err(file::ReadError::Corrupt(why)) => {
                let to = Dir::Corrupt.file(&id);
                match std::fs::rename(&path, &to) {
                    Ok(()) => log::warn!("{id}: corrupt queue file: {why}; moved to corrupt/"),
                    Err(e) => log::error!(
                        "{id}: corrupt queue file: {why}; cannot move it to corrupt/: {e}"
                    ),
                }
                return;
            }
            Err(file::ReadError::Io(e)) => {
                log::warn!("{id}: read {path}: {e}");
                return;
            }
        };
        if !from_deferred {
            log::info!(
                "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
                env.sender,
                env.content_len,
                env.recipients.len()
            );
        }
        let mut groups: Vec<(policy::Route, Vec<delivery::Recipient>)> = Vec::new();
        let mut immediate: Vec<Outcome> = Vec::new();
        let delay = (petrel_queue::now() - env.arrival).max(0.0);
        for (i, r) in env.recipients.iter().enumerate() {
            if r.done {
                continue;
            }
            let route = self.router.route(&r.address);
            if route.transport == "error" {
                let (dsn, text) = policy::error_transport_text(&route.nexthop);
                log::info!(
                    "{id}: to=<{}>, relay=none, delay={delay:.1}, dsn={dsn}, status=bounced ({text})",
                    r.address
                );
                immediate.push(Outcome {
                    index: i as u32,
                    status: Status::Bounced,
                    dsn,
                    reason: text,
                    dsn_passed_on: false,
                });
                continue;
            }
            if !policy::valid_transport(&route.transport) {
                let text = format!(
                    "mail transport unavailable: bad transport name {:?}",
                    route.transport
                );
                log::warn!("{id}: to=<{}>, relay=none, delay={delay:.1}, dsn=4.3.0, status=deferred ({text})", r.address);
                immediate.push(Outcome {
                    index: i as u32,
                    status: Status::Deferred,
                    dsn: "4.3.0".into(),
                    reason: text,
                    dsn_passed_on: false,
                });
                continue;
            }
            let limit = if route.transport == "local" {
                usize::MAX
            } else {
                self.s.dest_recipient_limit.max(1)
            };
            let rcpt = delivery::Recipient {
                index: i as u32,
                address: r.address.clone(),
                orcpt: r.orcpt.clone(),
            };
            match groups
                .iter_mut()
                .rev()
                .find(|(rt, v)| *rt == route && v.len() < limit)
            {
                Some((_, v)) => v.push(rcpt),
                None => groups.push((route, vec![rcpt])),
            }
        }
        let msg = Msg {
            file: f,
            outstanding: groups.len() + usize::from(!immediate.is_empty()),
            outcomes: Vec::new(),
            crashes: 0,
            marked: HashSet::new(),
            env,
        };
        for (route, recipients) in groups {
            self.jobs.push_back(Job {
                not_before: None,
                transport: route.transport,
                queue_id: id.clone(),
                request: delivery::Request {
                    queue_id: id.clone(),
                    path: path.clone(),
                    sender: msg.env.sender.clone(),
                    arrival: msg.env.arrival,
                    recipients,
                    nexthop: route.nexthop,
                },
            });
        }
        let done_already = msg.outstanding == 0;
        self.active.insert(id.clone(), msg);
        if !immediate.is_empty() {
            self.outcomes(&id, immediate);
        } else if done_already {
            self.finish(&id);
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let t = self.token();
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(t), Interest::READABLE)
                        .is_ok()
                    {
                        self.notifiers.insert(
                            t,
                            Notifier {
                                stream,
                                reader: FrameReader::new(),
                            },
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn token(&mut self) -> usize {
        self.next_token += 1;
        self.next_token
    }

    fn read_notices(&mut self, t: usize) {
        let mut notices = Vec::new();
        let mut close = false;
        if let Some(n) = self.notifiers.get_mut(&t) {
            close = n.reader.read_from(&mut n.stream);
            loop {
                match n.reader.next_frame::<Notice>() {
                    Ok(Some(m)) => notices.push(m),
                    Ok(None) => break,
                    Err(e) => {
                        log::warn!("notice: {e}");
                        close = true;
                        break;
                    }
                }
            }
        }
        if close {
            if let Some(mut n) = self.notifiers.remove(&t) {
                let _ = self.poll.registry().deregister(&mut n.stream);
            }
        }
        for n in notices {
            match n {
                Incoming::Trigger => {
                    self.scan_incoming();
                    self.scan_deferred(false);
                }
                Incoming::Msg(Notice::Incoming { id }) => {
                    if QueueId::parse(&id).is_some() {
                        self.todo.push_back((id, Dir::Incoming));
                    }
                }
                Incoming::Msg(Notice::Flush) => {
                    log::info!("flush requested: retrying deferred mail");
                    self.scan_deferred(true);
                }
                Incoming::Msg(Notice::Rescan) => self.scan_incoming(),
            }
        }
        self.load_todo();
        self.dispatch();
    }

    /// Hands waiting jobs to idle agents, opening connections up to the concurrency limit
    /// of the transport and never more than the destination concurrency limit at once to
    /// one next hop.
    fn dispatch(&mut self) {
        if self.jobs.is_empty() {
            return;
        }
        // Per transport: idle agents and how many connections are open.
        let mut idle: HashMap<String, Vec<usize>> = HashMap::new();
        let mut open: HashMap<String, usize> = HashMap::new();
        for (t, a) in &self.agents {
            *open.entry(a.transport.clone()).or_default() += 1;
            if a.busy.is_none() {
                idle.entry(a.transport.clone()).or_default().push(*t);
            }
        }
        let mut full: HashSet<String> = HashSet::new();
        let mut waiting = VecDeque::new();
        let now = Instant::now();
        while let Some(job) = self.jobs.pop_front() {
            if !self.active.contains_key(&job.queue_id) {
                continue;
            }
            if job.not_before.is_some_and(|t| t > now) || full.contains(&job.transport) {
                waiting.push_back(job);
                continue;
            }
            if job.transport != "local" {
                let key = (job.transport.clone(), job.request.nexthop.clone());
                if self.busy_per_dest.get(&key).copied().unwrap_or(0) >= self.s.dest_concurrency {
                    waiting.push_back(job);
                    continue;
                }
            }
            let token = match idle.get_mut(&job.transport).and_then(|v| v.pop()) {
                Some(t) => Some(t),
                None => {
                    let n = open.entry(job.transport.clone()).or_default();
                    if *n < self.limit(&job.transport) {
                        let opened = self.open_agent(&job.transport);
                        if opened.is_some() {
                            *open.entry(job.transport.clone()).or_default() += 1;
                        }
                        opened
                    } else {
                        None
                    }
                }
            };
            match token {
                Some(t) => self.send_job(t, job),
                None => {
                    let unreachable = self
                        .unreachable_since
                        .get(&job.transport)
                        .is_some_and(|since| since.elapsed() > TRANSPORT_GRACE);
                    if unreachable && !self.agents.values().any(|a| a.transport == job.transport) {
                        self.transport_failed(job, "mail transport unavailable");
                    } else {
                        full.insert(job.transport.clone());
                        waiting.push_back(job);
                    }
                }
            }
        }
        // Jobs queued meanwhile (transport_failed can finish messages) go after these.
        waiting.extend(self.jobs.drain(..));
        self.jobs = waiting;
    }

    fn limit(&self, transport: &str) -> usize {
        match transport {
            "local" => self.s.local_concurrency,
            _ => self.s.process_limit,
        }
    }

    fn dest_key(job: &Job) -> (String, String) {
        (job.transport.clone(), job.request.nexthop.clone())
    }

    fn dest_done(&mut self, job: &Job) {
        let key = Self::dest_key(job);
        if let Some(n) = self.busy_per_dest.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.busy_per_dest.remove(&key);
            }
        }
    }

    fn open_agent(&mut self, transport: &str) -> Option<usize> {
        let path = format!("private/{transport}");
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(s) => {
                self.unreachable_since.remove(transport);
                let transport = transport.to_string();
                if s.set_nonblocking(true).is_err() {
                    return None;
                }
                let mut stream = UnixStream::from_std(s);
                let t = self.token();
                self.poll
                    .registry()
                    .register(
                        &mut stream,
                        Token(t),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .ok()?;
                self.agents.insert(
                    t,
                    Agent {
                        transport,
                        stream,
                        reader: FrameReader::new(),
                        out: Vec::new(),
                        busy: None,
                    },
                );
                Some(t)
            }
            Err(e) => {
                if !self.unreachable_since.contains_key(transport) {
                    log::warn!("connect to {path}: {e}");
                    self.unreachable_since
                        .insert(transport.to_string(), Instant::now());
                }
                None
            }
        }
    }

    fn send_job(&mut self, t: usize, job: Job) {
        let Some(agent) = self.agents.get_mut(&t) else {
            self.jobs.push_back(job);
            return;
        };
        match petrel_ipc::encode(&job.request) {
            Ok(bytes) => agent.out.extend_from_slice(&bytes),
            Err(e) => {
                log::error!("{}: encode delivery request: {e}", job.queue_id);
                return;
            }
        }
        *self.busy_per_dest.entry(Self::dest_key(&job)).or_default() += 1;
        agent.busy = Some(job);
        self.agent_write(t);
    }

    fn agent_write(&mut self, t: usize) {
        let Some(agent) = self.agents.get_mut(&t) else {
            return;
        };
        if petrel_ipc::write_pending(&mut agent.stream, &mut agent.out).is_err() {
            self.agent_lost(t);
        }
    }

    fn agent_event(&mut self, t: usize) {
        self.agent_write(t);
        let mut replies = Vec::new();
        let mut lost = false;
        if let Some(agent) = self.agents.get_mut(&t) {
            lost = agent.reader.read_from(&mut agent.stream);
            loop {
                match agent.reader.next_frame::<delivery::Reply>() {
                    Ok(Some(Incoming::Msg(r))) => replies.push(r),
                    Ok(Some(Incoming::Trigger)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        log::warn!("{} agent protocol error: {e}", agent.transport);
                        lost = true;
                        break;
                    }
                }
            }
        }
        for r in replies {
            let job = self.agents.get_mut(&t).and_then(|a| a.busy.take());
            match job {
                Some(job) => {
                    self.dest_done(&job);
                    self.outcomes(&job.queue_id, r.outcomes)
                }
                None => log::warn!("unexpected delivery reply"),
            }
        }
        if lost {
            self.agent_lost(t);
        }
        self.dispatch();
    }

    /// The agent went away (killed, crashed): what it was doing is retried.
    fn agent_lost(&mut self, t: usize) {
        let Some(mut agent) = self.agents.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut agent.stream);
        if let Some(job) = agent.busy.take() {
            self.dest_done(&job);
            let crashes = self
                .active
                .get_mut(&job.queue_id)
                .map(|m| {
                    m.crashes += 1;
                    m.crashes
                })
                .unwrap_or(0);
            if crashes >= MAX_AGENT_CRASHES {
                self.transport_failed(job, "delivery agent crashed repeatedly on this message");
            } else {
                log::warn!(
                    "{}: {} delivery agent went away; retrying",
                    job.queue_id,
                    agent.transport
                );
                self.jobs.push_front(Job {
                    not_before: Some(Instant::now() + RETRY_AFTER_CRASH),
                    ..job
                });
            }
        }
    }

    /// Defers every recipient of a job with `reason` (qmgr logs it, no agent did).
    fn transport_failed(&mut self, job: Job, reason: &str) {
        let arrival = self
            .active
            .get(&job.queue_id)
            .map(|m| m.env.arrival)
            .unwrap_or(0.0);
        let outcomes = job
            .request
            .recipients
            .iter()
            .map(|r| {
                log::info!(
                    "{}: to=<{}>, relay=none, delay={:.1}, status=deferred ({reason})",
                    job.queue_id,
                    r.address,
                    (petrel_queue::now() - arrival).max(0.0)
                );
                Outcome {
                    index: r.index,
                    status: Status::Deferred,
                    dsn: "4.3.0".into(),
                    reason: reason.into(),
                    dsn_passed_on: false,
                }
            })
            .collect();
        self.outcomes(&job.queue_id, outcomes);
    }

    fn outcomes(&mut self, id: &str, outcomes: Vec<Outcome>) {
        let Some(msg) = self.active.get_mut(id) else {
            return;
        };
        msg.outstanding = msg.outstanding.saturating_sub(1);
        if msg.outstanding > 0 {
            // Other requests of this message are still out: make these deliveries durable
            // now, so that a crash before the rest is answered does not repeat them.
            let mut marked = false;
            for o in outcomes.iter().filter(|o| o.status == Status::Sent) {
                if let Some(r) = msg.env.recipients.get(o.index as usize) {
                    match file::mark_done(&msg.file, r.offset) {
                        Ok(()) => {
                            msg.marked.insert(o.index);
                            marked = true;
                        }
                        Err(e) => log::warn!("{id}: mark recipient done: {e}"),
                    }
                }
            }
            if marked {
                if let Err(e) = msg.file.sync_data() {
                    log::warn!("{id}: fdatasync: {e}");
                }
            }
        }
        msg.outcomes.extend(outcomes);
        if msg.outstanding == 0 {
            self.finish(id);
        }
    }

    /// Every request of a message is answered: bounce, mark, remove or defer.
    fn finish(&mut self, id: &str) {
        let Some(mut msg) = self.active.remove(id) else {
            return;
        };
        let age = age_of(&msg.env);
        let null_sender = msg.env.sender.is_empty();
        let expired = policy::expired(age, null_sender, &self.s);
        let defer_text = std::fs::read_to_string(Dir::Defer.file(id)).unwrap_or_default();
        let mut done: Vec<u32> = Vec::new();
        let mut deferred: Vec<&Outcome> = Vec::new();
        let mut failed: Vec<dsn::Recipient> = Vec::new();
        let mut failed_idx: Vec<u32> = Vec::new();
        for o in &msg.outcomes {
            let Some(r) = msg.env.recipients.get(o.index as usize) else {
                continue;
            };
            match o.status {
                Status::Sent => done.push(o.index),
                Status::Deferred if !expired => deferred.push(o),
                Status::Deferred | Status::Bounced => {
                    let reason = if o.status == Status::Deferred {
                        let last = policy::last_defer_reason(&defer_text, &r.address)
                            .map(|(_, r)| r)
                            .unwrap_or_else(|| o.reason.clone());
                        log::info!(
                            "{id}: to=<{}>, relay=none, delay={:.0}, status=expired, returned to sender ({last})",
                            r.address,
                            age.as_secs_f64()
                        );
                        format!(
                            "message expired after {} s in the queue: {last}",
                            age.as_secs()
                        )
                    } else {
                        o.reason.clone()
                    };
                    failed_idx.push(o.index);
                    if policy::wants_failure_notice(&r.notify) {
                        failed.push(dsn::Recipient {
                            address: r.address.clone(),
                            orcpt: r.orcpt.clone(),
                            action: dsn::Action::Failed,
                            status: o.dsn.clone(),
                            diagnostic: reason,
                        });
                    }
                }
            }
        }
        if !failed.is_empty() {
            if self.is_double_bounce_sender(&msg.env.sender) {
                // A notice to the postmaster failed: the chain ends here.
                log::info!("{id}: undeliverable postmaster notification discarded");
                done.extend(&failed_idx);
            } else {
                let double_bounce =
                    format!("{}@{}", self.s.double_bounce_sender, self.s.myhostname);
                let (to, from, whom) = if null_sender {
                    (
                        self.s.notice_recipient.as_str(),
                        double_bounce.as_str(),
                        "postmaster",
                    )
                } else {
                    (msg.env.sender.as_str(), "", "sender")
                };
                let headers_only = msg
                    .env
                    .attr("ret")
                    .is_some_and(|r| r.eq_ignore_ascii_case("HDRS"));
                match self.notify(id, &msg, to, from, headers_only, failed) {
                    Ok(new) => {
                        log::info!("{id}: {whom} non-delivery notification: {new}");
                        done.extend(&failed_idx);
                    }
                    Err(e) => {
                        // Try again later: the recipients stay pending, the notice is rebuilt.
                        log::warn!("{id}: cannot send non-delivery notification: {e}");
                        deferred.extend(
                            msg.outcomes
                                .iter()
                                .filter(|o| failed_idx.contains(&o.index)),
                        );
                    }
                }
            }
        } else {
            done.extend(&failed_idx);
        }
        self.success_notice(id, &msg);
        let mut delay_notice_sent = false;
        if !deferred.is_empty()
            && !null_sender
            && !self.s.delay_warning.is_zero()
            && age >= self.s.delay_warning
            && !defer_text.lines().any(|l| l == policy::DELAY_NOTICE_SENT)
        {
            let delayed: Vec<dsn::Recipient> = deferred
                .iter()
                .filter_map(|o| {
                    let r = msg.env.recipients.get(o.index as usize)?;
                    policy::wants_delay_notice(&r.notify).then(|| dsn::Recipient {
                        address: r.address.clone(),
                        orcpt: r.orcpt.clone(),
                        action: dsn::Action::Delayed,
                        status: o.dsn.clone(),
                        diagnostic: o.reason.clone(),
                    })
                })
                .collect();
            if !delayed.is_empty() {
                match self.notify(id, &msg, &msg.env.sender, "", true, delayed) {
                    Ok(new) => {
                        log::info!("{id}: sender delay notification: {new}");
                        delay_notice_sent = true;
                    }
                    Err(e) => log::warn!("{id}: cannot send delay notification: {e}"),
                }
            }
        }
        let done: HashSet<u32> = done.into_iter().collect();
        for i in &done {
            if let Some(r) = msg.env.recipients.get_mut(*i as usize) {
                r.done = true;
            }
        }
        let path = Dir::Active.file(id);
        if msg.env.recipients.iter().all(|r| r.done) {
            // Every recipient is finished: the file goes. No mark is needed first.
            match std::fs::remove_file(&path) {
                Ok(()) => log::info!("{id}: removed"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // The operator held it while it was being delivered. Every recipient is
                    // done, so the held copy must not be released and delivered again.
                    let held = Dir::Hold.file(id);
                    if same_file(&msg.file, &held) && std::fs::remove_file(&held).is_ok() {
                        log::info!("{id}: removed (delivered while on hold)");
                    }
                }
                Err(e) => log::warn!("{id}: remove {path}: {e}"),
            }
            let _ = std::fs::remove_file(Dir::Defer.file(id));
            let _ = std::fs::remove_file(Dir::Bounce.file(id));
            return;
        }
        // Some are left: make the finished ones durable before anything else happens.
        let done: HashSet<u32> = done.difference(&msg.marked).copied().collect();
        for i in &done {
            if let Some(r) = msg.env.recipients.get(*i as usize) {
                if let Err(e) = file::mark_done(&msg.file, r.offset) {
                    log::warn!("{id}: mark recipient done: {e}");
                }
            }
        }
        if !done.is_empty() {
            if let Err(e) = msg.file.sync_data() {
                log::warn!("{id}: fdatasync: {e}");
            }
        }
        let mut lines = String::new();
        if delay_notice_sent {
            lines.push_str(policy::DELAY_NOTICE_SENT);
            lines.push('\n');
        }
        for o in &deferred {
            if let Some(r) = msg.env.recipients.get(o.index as usize) {
                lines.push_str(&policy::defer_line(&r.address, &o.dsn, &o.reason));
            }
        }
        if let Err(e) = append(&Dir::Defer.file(id), &lines) {
            log::warn!("{id}: write defer/{id}: {e}");
        }
        let delay = policy::backoff(age, &self.s);
        let to = Dir::Deferred.file(id);
        match std::fs::rename(&path, &to) {
            Ok(()) => {
                let when = SystemTime::now() + delay;
                if let Err(e) = std::fs::File::options()
                    .write(true)
                    .open(&to)
                    .and_then(|f| f.set_modified(when))
                {
                    log::warn!("{id}: set retry time: {e}");
                }
            }
            // The operator moved or removed it meanwhile (hold, delete): leave it there.
            Err(e) => log::warn!("{id}: move to deferred/: {e}"),
        }
    }
}

impl Manager {
    /// Builds and submits a notice about `msg` to `to`, from `from` (empty: `<>`), with
    /// the original attached (only its header with `headers_only`); the new queue id.
    fn notify(
        &self,
        id: &str,
        msg: &Msg,
        to: &str,
        from: &str,
        headers_only: bool,
        recipients: Vec<dsn::Recipient>,
    ) -> Result<String, String> {
        let original = file::read_content(&msg.file, &msg.env).unwrap_or_default();
        bounce::send(&bounce::Notice {
            queue_id: id,
            myhostname: &self.s.myhostname,
            to,
            from,
            arrival: msg.env.arrival,
            envid: msg.env.attr("envid").unwrap_or(""),
            headers_only,
            original: &original,
            recipients,
        })
    }

    /// RFC 3461 NOTIFY=SUCCESS: one "delivered" (mailbox, LMTP) or "relayed" (an SMTP
    /// server without DSN) notice for this round's delivered recipients that asked for
    /// it, unless the next hop took the request over.
    fn success_notice(&self, id: &str, msg: &Msg) {
        if msg.env.sender.is_empty() {
            return;
        }
        let recipients: Vec<dsn::Recipient> = msg
            .outcomes
            .iter()
            .filter(|o| o.status == Status::Sent && !o.dsn_passed_on)
            .filter_map(|o| {
                let r = msg.env.recipients.get(o.index as usize)?;
                let n = r.notify.to_ascii_uppercase();
                if !n.contains("SUCCESS") || n.contains("NEVER") {
                    return None;
                }
                let action = if self.router.route(&r.address).transport == "smtp" {
                    dsn::Action::Relayed
                } else {
                    dsn::Action::Delivered
                };
                Some(dsn::Recipient {
                    address: r.address.clone(),
                    orcpt: r.orcpt.clone(),
                    action,
                    status: o.dsn.clone(),
                    diagnostic: o.reason.clone(),
                })
            })
            .collect();
        if recipients.is_empty() {
            return;
        }
        match self.notify(id, msg, &msg.env.sender, "", true, recipients) {
            Ok(new) => log::info!("{id}: sender delivery status notification: {new}"),
            // Not retried: the mail itself was delivered, and only success is reported.
            Err(e) => log::warn!("{id}: cannot send delivery status notification: {e}"),
        }
    }

    /// True for the envelope sender of notices to the postmaster (double_bounce_sender,
    /// bare or in one of our domains).
    fn is_double_bounce_sender(&self, sender: &str) -> bool {
        let (local, domain) = sender.rsplit_once('@').unwrap_or((sender, ""));
        !sender.is_empty()
            && local.eq_ignore_ascii_case(&self.s.double_bounce_sender)
            && (domain.is_empty()
                || domain.eq_ignore_ascii_case(&self.s.myhostname)
                || self
                    .router
                    .mydestination
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(domain)))
    }
}

/// True when `path` names the file `f` is open on.
fn same_file(f: &File, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn append(path: &str, text: &str) -> io::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Queue ids of the complete-looking files in a queue directory, oldest first.
fn scan(dir: Dir) -> Vec<String> {
    let mut ids: Vec<String> = match std::fs::read_dir(dir.name()) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| QueueId::parse(n).is_some())
            .collect(),
        Err(e) => {
            log::warn!("scan {}/: {e}", dir.name());
            Vec::new()
        }
    };
    ids.sort();
    ids
}
