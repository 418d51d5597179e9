//! Failed-login accounting, per client address and per user. Pure: the caller passes the
//! time, so tests need no clock.
//!
//! - Every failure is answered only after [`Settings::delay`] (the caller waits).
//! - An address with [`Settings::limit`] failures within [`Settings::window`] (counted from
//!   its first failure in the window) is refused for [`Settings::lockout`]: its attempts are
//!   not checked at all. A success resets the address's count.
//! - A user name with [`Settings::user_limit`] failures within the window (from any
//!   addresses: distributed guessing) is refused the same way. A success does not reset a
//!   user's count, or a guesser could lean on the real user's logins.
//! - IPv6 addresses count per /64 (one host's share of a network); user names count
//!   without regard to ASCII case.
//! - Checks still running count against the limits too ([`Throttle::begin`] …
//!   [`Throttle::end`]), so a burst of parallel attempts cannot all slip in before the
//!   first failure is counted.
//! - Each table holds at most [`Settings::max_entries`]; when it is full, expired entries
//!   go first, then the least recently touched.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The knobs (petrel.conf: auth_failure_delay, auth_failure_limit, auth_failure_window,
/// auth_failure_lockout).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a failed attempt waits for its answer.
    pub delay: Duration,
    /// Failures from one address that lock it out; 0 turns address lock-outs off.
    pub limit: u32,
    /// Failures for one user that lock it out; 0 turns user lock-outs off.
    pub user_limit: u32,
    /// The counting window.
    pub window: Duration,
    /// How long a lock-out lasts.
    pub lockout: Duration,
    /// Entries per table.
    pub max_entries: usize,
    /// Checks one address may have running at once; more are answered "busy" (a
    /// temporary failure), which bounds a parallel guessing burst without counting a
    /// correct login as a failure.
    pub max_pending: u32,
}

impl Settings {
    /// Settings with the user limit at three times the address limit.
    pub fn new(delay: Duration, limit: u32, window: Duration, lockout: Duration) -> Settings {
        Settings {
            delay,
            limit,
            user_limit: limit.saturating_mul(3),
            window,
            lockout,
            max_entries: 10_000,
            max_pending: limit.saturating_mul(4).max(32),
        }
    }
}

/// Who is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locked {
    /// The client address (its /64 for IPv6), as counted.
    Client(String),
    /// The user name, as counted (lower case).
    User(String),
    /// The address has [`Settings::max_pending`] checks running: try again shortly
    /// (not a lock-out, nothing is counted).
    Busy(String),
}

/// How a check that [`Throttle::begin`] let in ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password was right.
    Success,
    /// Wrong password or unknown user.
    Failure,
    /// Neither (the password could not be checked): counts for nothing.
    Neither,
}

#[derive(Debug, Clone)]
struct Record {
    first: Instant,
    count: u32,
    locked_until: Option<Instant>,
    touched: Instant,
    /// Checks begun and not yet ended.
    pending: u32,
}

#[derive(Debug, Default)]
struct Table {
    map: HashMap<String, Record>,
}

impl Table {
    fn locked(&self, key: &str, now: Instant) -> Option<Instant> {
        self.map
            .get(key)
            .and_then(|r| r.locked_until)
            .filter(|&until| now < until)
    }

    /// Failures within the window plus checks running.
    fn load(&self, key: &str, now: Instant, s: &Settings) -> u32 {
        self.map.get(key).map_or(0, |r| {
            if now.saturating_duration_since(r.first) > s.window {
                0
            } else {
                r.count
            }
        })
    }

    fn pending(&self, key: &str) -> u32 {
        self.map.get(key).map_or(0, |r| r.pending)
    }

    fn record(&mut self, key: &str, now: Instant, s: &Settings) -> &mut Record {
        if !self.map.contains_key(key) && self.map.len() >= s.max_entries {
            self.make_room(now, s);
        }
        let r = self.map.entry(key.to_string()).or_insert(Record {
            first: now,
            count: 0,
            locked_until: None,
            touched: now,
            pending: 0,
        });
        r.touched = now;
        r
    }

    fn end_pending(&mut self, key: &str) {
        if let Some(r) = self.map.get_mut(key) {
            r.pending = r.pending.saturating_sub(1);
        }
    }

    /// Counts a failure; true when it starts a lock-out.
    fn fail(&mut self, key: &str, now: Instant, limit: u32, s: &Settings) -> bool {
        let r = self.record(key, now, s);
        if r.locked_until.is_some_and(|u| now >= u) {
            r.locked_until = None;
            r.count = 0;
            r.first = now;
        }
        if now.saturating_duration_since(r.first) > s.window {
            r.count = 0;
            r.first = now;
        }
        r.count = r.count.saturating_add(1);
        if limit > 0 && r.count >= limit && r.locked_until.is_none() {
            r.locked_until = Some(now + s.lockout);
            return true;
        }
        false
    }

    fn make_room(&mut self, now: Instant, s: &Settings) {
        self.map.retain(|_, r| {
            let in_window = now.saturating_duration_since(r.first) <= s.window;
            let locked = r.locked_until.is_some_and(|u| now < u);
            in_window || locked || r.pending > 0
        });
        while self.map.len() >= s.max_entries.max(1) {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, r)| r.touched)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.map.remove(&oldest);
        }
    }
}

/// The failure accounting of one authd process.
#[derive(Debug)]
pub struct Throttle {
    settings: Settings,
    clients: Table,
    users: Table,
}

/// The key an address counts under: IPv6 addresses by /64, anything else as given.
pub fn client_key(client: &str) -> String {
    match client.parse::<IpAddr>() {
        Ok(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(IpAddr::V4(a)) => a.to_string(),
        Err(_) => client.to_string(),
    }
}

fn user_key(user: &str) -> String {
    user.to_ascii_lowercase()
}

impl Throttle {
    /// Empty tables.
    pub fn new(settings: Settings) -> Throttle {
        Throttle {
            settings,
            clients: Table::default(),
            users: Table::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How long a failure waits for its answer.
    pub fn delay(&self) -> Duration {
        self.settings.delay
    }

    /// `Some` when the client or the user is locked out now.
    pub fn refused(&self, now: Instant, client: &str, user: &str) -> Option<Locked> {
        let c = client_key(client);
        if self.clients.locked(&c, now).is_some() {
            return Some(Locked::Client(c));
        }
        let u = user_key(user);
        if self.users.locked(&u, now).is_some() {
            return Some(Locked::User(u));
        }
        None
    }

    /// Before checking a password: `Err` when the client or the user is locked out, when
    /// its failures reach its limit, or ([`Locked::Busy`]) when the address already has
    /// [`Settings::max_pending`] checks running. Checks running are not failures: many
    /// people behind one address may log in at once.
    /// `Ok`: check it, then call [`Throttle::end`] exactly once.
    pub fn begin(&mut self, now: Instant, client: &str, user: &str) -> Result<(), Locked> {
        if let Some(l) = self.refused(now, client, user) {
            return Err(l);
        }
        let s = &self.settings;
        let c = client_key(client);
        if s.limit > 0 && self.clients.load(&c, now, s) >= s.limit {
            return Err(Locked::Client(c));
        }
        let u = user_key(user);
        if s.user_limit > 0 && self.users.load(&u, now, s) >= s.user_limit {
            return Err(Locked::User(u));
        }
        if self.clients.pending(&c) >= s.max_pending {
            return Err(Locked::Busy(c));
        }
        self.clients.record(&c, now, s).pending += 1;
        self.users.record(&u, now, s).pending += 1;
        Ok(())
    }

    /// A check let in by [`Throttle::begin`] ended. Returns the lock-outs a failure started
    /// (to be logged). A success forgets the client's failures.
    pub fn end(&mut self, now: Instant, client: &str, user: &str, how: Outcome) -> Vec<Locked> {
        let c = client_key(client);
        let u = user_key(user);
        self.clients.end_pending(&c);
        self.users.end_pending(&u);
        match how {
            Outcome::Failure => self.failure(now, client, user),
            Outcome::Success => {
                if let Some(r) = self.clients.map.get_mut(&c) {
                    if r.locked_until.is_none() {
                        r.count = 0;
                        r.first = now;
                    }
                }
                Vec::new()
            }
            Outcome::Neither => Vec::new(),
        }
    }

    /// Counts a failed attempt that was not begun (e.g. refused before any check).
    /// Returns the lock-outs this failure started.
    pub fn failure(&mut self, now: Instant, client: &str, user: &str) -> Vec<Locked> {
        let s = &self.settings;
        let mut started = Vec::new();
        let c = client_key(client);
        if self.clients.fail(&c, now, s.limit, s) {
            started.push(Locked::Client(c));
        }
        let u = user_key(user);
        if self.users.fail(&u, now, s.user_limit, s) {
            started.push(Locked::User(u));
        }
        started
    }

    /// Entries held (clients, users), for tests and status.
    pub fn sizes(&self) -> (usize, usize) {
        (self.clients.map.len(), self.users.map.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(limit: u32) -> Settings {
        Settings::new(
            Duration::from_secs(1),
            limit,
            Duration::from_secs(600),
            Duration::from_secs(600),
        )
    }

    #[test]
    fn an_address_is_locked_out_after_the_limit_and_let_in_after_the_lockout() {
        let t0 = Instant::now();
        let mut th = Throttle::new(settings(3));
        assert_eq!(th.refused(t0, "192.0.2.1", "demo"), None);
        assert!(th.failure(t0, "192.0.2.1", "demo").is_empty());
        assert!(th
            .failure(t0 + Duration::from_secs(1), "192.0.2.1", "a")
            .is_empty());
        let started = th.failure(t0 + Duration::from_secs(2), "192.0.2.1", "b");
        assert_eq!(started, vec![Locked::Client("192.0.2.1".into())]);
        let t = t0 + Duration::from_secs(3);
        assert_eq!(
            th.refused(t, "192.0.2.1", "anyone"),
            Some(Locked::Client("192.0.2.1".into()))
        );
        assert_eq!(th.refused(t, "192.0.2.2", "demo"), None, "others are not");
        // A success during the lock-out does not lift it (nor can it happen: not checked).
        th.end(t, "192.0.2.1", "demo", Outcome::Success);
        assert!(th.refused(t, "192.0.2.1", "demo").is_some());
        let after = t0 + Duration::from_secs(2 + 600);
        assert_eq!(th.refused(after, "192.0.2.1", "demo"), None);
        // Counting starts again from zero.
        assert!(th.failure(after, "192.0.2.1", "c").is_empty());
        assert_eq!(th.refused(after, "192.0.2.1", "c"), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up_and_success_resets() {
        let t0 = Instant::now();
        let mut th = Throttle::new(settings(3));
        th.failure(t0, "10.0.0.1", "u1");
        th.failure(t0 + Duration::from_secs(10), "10.0.0.1", "u2");
        // The window (from the first failure) has passed: this is failure 1 of a new one.
        assert!(th
            .failure(t0 + Duration::from_secs(700), "10.0.0.1", "u3")
            .is_empty());
        assert!(th
            .failure(t0 + Duration::from_secs(701), "10.0.0.1", "u4")
            .is_empty());
        let t = t0 + Duration::from_secs(702);
        th.begin(t, "10.0.0.1", "ok").expect("not locked");
        th.end(t, "10.0.0.1", "ok", Outcome::Success);
        assert!(th.failure(t, "10.0.0.1", "u5").is_empty());
        assert!(th.failure(t, "10.0.0.1", "u6").is_empty());
        assert_eq!(th.refused(t, "10.0.0.1", "u7"), None, "success reset it");
        assert_eq!(th.failure(t, "10.0.0.1", "u8").len(), 1);
    }

    #[test]
    fn a_user_guessed_from_many_addresses_is_locked_out() {
        let t0 = Instant::now();
        let mut th = Throttle::new(settings(3));
        assert_eq!(th.settings().user_limit, 9);
        for i in 0..8 {
            let started = th.failure(t0, &format!("198.51.100.{i}"), "Demo");
            assert!(started.is_empty(), "{i}: {started:?}");
        }
        let started = th.failure(t0, "198.51.100.99", "DEMO");
        assert_eq!(started, vec![Locked::User("demo".into())]);
        assert_eq!(
            th.refused(t0, "203.0.113.1", "demo"),
            Some(Locked::User("demo".into()))
        );
        assert_eq!(th.refused(t0, "203.0.113.1", "other"), None);
        // A success from a fresh address does not lift the user's lock-out.
        th.begin(t0, "203.0.113.1", "other").expect("not locked");
        th.end(t0, "203.0.113.1", "other", Outcome::Success);
        assert!(th.refused(t0, "203.0.113.1", "demo").is_some());
    }

    #[test]
    fn checks_running_are_not_failures_but_a_burst_is_capped() {
        let t0 = Instant::now();
        let mut th = Throttle::new(settings(3));
        let cap = th.settings().max_pending;
        assert!(cap >= 12, "room for many people behind one address");
        // Many correct logins at once from one address: all let in.
        for _ in 0..cap {
            th.begin(t0, "192.0.2.9", "demo").expect("let in");
        }
        assert_eq!(
            th.begin(t0, "192.0.2.9", "demo"),
            Err(Locked::Busy("192.0.2.9".into())),
            "past the cap the address must wait"
        );
        assert_eq!(
            th.refused(t0, "192.0.2.9", "demo"),
            None,
            "busy is not a lock-out"
        );
        for _ in 0..cap {
            assert!(th.end(t0, "192.0.2.9", "demo", Outcome::Success).is_empty());
        }
        // Real failures still lock the address out at the limit.
        for _ in 0..2 {
            th.begin(t0, "192.0.2.9", "demo").expect("let in");
            assert!(th.end(t0, "192.0.2.9", "demo", Outcome::Failure).is_empty());
        }
        th.begin(t0, "192.0.2.9", "demo").expect("let in");
        assert_eq!(
            th.end(t0, "192.0.2.9", "demo", Outcome::Failure),
            vec![Locked::Client("192.0.2.9".into())]
        );
        assert!(th.begin(t0, "192.0.2.9", "demo").is_err());
    }

    #[test]
    fn ipv6_counts_per_64_and_limit_zero_disables() {
        let t0 = Instant::now();
        let mut th = Throttle::new(settings(2));
        th.failure(t0, "2001:db8:1:2::1", "x");
        let started = th.failure(t0, "2001:db8:1:2:ffff::9", "y");
        assert_eq!(started, vec![Locked::Client("2001:db8:1:2::/64".into())]);
        assert!(th.refused(t0, "2001:db8:1:2::77", "z").is_some());
        assert!(th.refused(t0, "2001:db8:1:3::1", "z").is_none());
        assert_eq!(client_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(client_key("unix"), "unix");

        let mut off = Throttle::new(settings(0));
        for _ in 0..100 {
            assert!(off.failure(t0, "192.0.2.1", "u").is_empty());
        }
        assert_eq!(off.refused(t0, "192.0.2.1", "u"), None);
        assert_eq!(off.delay(), Duration::from_secs(1));
    }

    #[test]
    fn tables_are_bounded_and_keep_lockouts_over_stale_entries() {
        let t0 = Instant::now();
        let mut s = settings(2);
        s.max_entries = 50;
        let mut th = Throttle::new(s);
        // A locked-out address, then a flood of one-off failures from others.
        th.failure(t0, "192.0.2.1", "victim");
        th.failure(t0, "192.0.2.1", "victim");
        for i in 0..1000u32 {
            let t = t0 + Duration::from_millis(u64::from(i));
            th.failure(
                t,
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                "u",
            );
        }
        let (c, u) = th.sizes();
        assert!(c <= 50 && u <= 50, "{c} {u}");
        // The lock-out was the least recently touched entry, but the flood came within
        // the window, so it may have been evicted; once the flood is past the window,
        // expired entries make room first and lock-outs stay.
        let mut th = Throttle::new(Settings {
            max_entries: 50,
            lockout: Duration::from_secs(1200),
            ..settings(2)
        });
        th.failure(t0, "192.0.2.1", "victim");
        th.failure(t0, "192.0.2.1", "victim");
        for i in 0..49u32 {
            th.failure(t0, &format!("10.0.0.{i}"), &format!("u{i}"));
        }
        let later = t0 + Duration::from_secs(601);
        th.failure(later, "10.9.9.9", "new");
        assert_eq!(th.sizes().0, 2, "the stale entries went first");
        assert!(
            th.refused(later, "192.0.2.1", "x").is_some(),
            "the lock-out survived the clean-up"
        );
    }
}
