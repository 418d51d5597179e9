//! When to restart a service whose process ended.
//!
//! A process that exits 0 is restarted at once (but a service is never started more than
//! once a second per process, so a program that exits 0 straight away cannot spin). A
//! process that fails is restarted after a delay that grows with the number of consecutive
//! failures: 0 s for the first, then 1 s, 2 s, 4 s, 8 s … up to `service_throttle_time`.
//! A failure within [`CONSECUTIVE`] of the start counts as consecutive; a process that ran
//! for [`STABLE`] or longer resets the count.

use std::time::Duration;

/// A failure this soon after the start counts as a consecutive one.
pub const CONSECUTIVE: Duration = Duration::from_secs(10);
/// A process that ran this long resets the failure count.
pub const STABLE: Duration = Duration::from_secs(30);
/// Shortest time between two starts of one process slot after a clean exit.
pub const MIN_RUN: Duration = Duration::from_secs(1);
/// Delays from this long up are logged as throttling.
pub const WARN_FROM: Duration = Duration::from_secs(4);

/// The delay after the `failures`-th consecutive failure (1-based): 0, 1, 2, 4, … ≤ `cap`.
pub fn delay(failures: u32, cap: Duration) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let secs = 1u64.checked_shl(failures - 2).unwrap_or(u64::MAX);
    Duration::from_secs(secs).min(cap)
}

/// What to do after a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Wait this long before starting it again.
    pub delay: Duration,
    /// Log that the service is being throttled for this long (once per escalation).
    pub warn: Option<Duration>,
}

/// The failure history of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    warned: Duration,
}

impl Backoff {
    /// Records that a process ended after running for `ran`; `clean` is exit status 0.
    pub fn record(&mut self, clean: bool, ran: Duration, cap: Duration) -> Decision {
        if ran >= STABLE {
            self.failures = 0;
            self.warned = Duration::ZERO;
        }
        if clean {
            return Decision {
                delay: MIN_RUN.saturating_sub(ran),
                warn: None,
            };
        }
        if ran < CONSECUTIVE || self.failures == 0 {
            self.failures = self.failures.saturating_add(1);
        }
        let delay = delay(self.failures, cap);
        let warn = if delay >= WARN_FROM && delay > self.warned {
            self.warned = delay;
            Some(delay)
        } else {
            None
        };
        Decision { delay, warn }
    }

    /// Consecutive failures so far.
    #[cfg(test)]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(60);

    #[test]
    fn schedule_doubles_from_zero_and_stops_at_the_cap() {
        let secs: Vec<u64> = (1..=10).map(|n| delay(n, CAP).as_secs()).collect();
        assert_eq!(secs, vec![0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(delay(0, CAP), Duration::ZERO);
        assert_eq!(delay(500, CAP), CAP, "no overflow");
        assert_eq!(delay(9, Duration::from_secs(5)).as_secs(), 5);
    }

    #[test]
    fn quick_failures_escalate_and_warn_once_per_step() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        let got: Vec<Decision> = (0..9).map(|_| b.record(false, quick, CAP)).collect();
        let delays: Vec<u64> = got.iter().map(|d| d.delay.as_secs()).collect();
        assert_eq!(delays, vec![0, 1, 2, 4, 8, 16, 32, 60, 60]);
        let warns: Vec<u64> = got
            .iter()
            .filter_map(|d| d.warn)
            .map(|w| w.as_secs())
            .collect();
        assert_eq!(
            warns,
            vec![4, 8, 16, 32, 60],
            "once per escalation, never at the cap again"
        );
    }

    #[test]
    fn a_program_that_exits_1_at_once_starts_far_fewer_than_20_times_in_10_s() {
        let mut b = Backoff::default();
        let (mut t, mut starts) = (Duration::ZERO, 0);
        while t < Duration::from_secs(10) {
            starts += 1;
            t += b.record(false, Duration::ZERO, CAP).delay;
        }
        assert!(starts <= 6, "{starts} starts");
    }

    #[test]
    fn a_long_run_resets_and_a_middling_run_neither_resets_nor_escalates() {
        let mut b = Backoff::default();
        for _ in 0..4 {
            b.record(false, Duration::from_secs(1), CAP);
        }
        assert_eq!(b.failures(), 4);
        let d = b.record(false, Duration::from_secs(20), CAP);
        assert_eq!(b.failures(), 4);
        assert_eq!(d.delay.as_secs(), 4);
        assert_eq!(d.warn, None, "already warned at 4 s");
        let d = b.record(false, Duration::from_secs(45), CAP);
        assert_eq!(b.failures(), 1);
        assert_eq!(d.delay, Duration::ZERO);
        for _ in 0..3 {
            b.record(false, Duration::ZERO, CAP);
        }
        assert_eq!(
            b.record(false, Duration::ZERO, CAP).warn,
            Some(Duration::from_secs(8)),
            "the warning comes back after a reset"
        );
    }

    #[test]
    fn clean_exits_restart_at_once_but_never_spin() {
        let mut b = Backoff::default();
        let d = b.record(true, Duration::from_secs(5), CAP);
        assert_eq!(d.delay, Duration::ZERO);
        let d = b.record(true, Duration::from_millis(100), CAP);
        assert_eq!(d.delay, Duration::from_millis(900));
        assert_eq!(b.failures(), 0);
    }
}
