//! Petrel's queue: queue ids, the spool layout, the queue-file format, and the mailq
//! listing (`listing.rs`).
//!
//! Only cleanup creates files in `incoming/`; only qmgr moves files between `incoming/`,
//! `active/`, `deferred/` and `corrupt/`; only postdrop creates files in `maildrop/`.
#![deny(missing_docs)]

pub mod file;
pub mod id;
pub mod listing;
pub mod spool;
#[cfg(any(test, feature = "test-util"))]
pub mod testutil;

pub use file::{Envelope, ReadError, Recipient, Writer};
pub use id::QueueId;
pub use spool::Dir;

/// Seconds since the epoch, as a float with microseconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn local_tm(secs: i64) -> libc::tm {
    // SAFETY: localtime_r only writes into the tm we hand it; a zeroed tm is a valid value.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t: libc::time_t = secs as libc::time_t;
        libc::localtime_r(&t, &mut tm);
        tm
    }
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An RFC 5322 date in local time: `Mon, 23 Nov 2026 01:06:00 +0000`.
pub fn rfc2822_date(secs: i64) -> String {
    let tm = local_tm(secs);
    let off = tm.tm_gmtoff / 60;
    let sign = if off < 0 { '-' } else { '+' };
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} {}{:02}{:02}",
        DAYS[tm.tm_wday.rem_euclid(7) as usize],
        tm.tm_mday,
        MONTHS[tm.tm_mon.rem_euclid(12) as usize],
        tm.tm_year + 1900,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        sign,
        off.abs() / 60,
        off.abs() % 60
    )
}

/// An asctime-style date for mbox `From ` lines: `Mon Nov 23 01:06:00 2026`.
pub fn asctime_date(secs: i64) -> String {
    let tm = local_tm(secs);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[tm.tm_wday.rem_euclid(7) as usize],
        MONTHS[tm.tm_mon.rem_euclid(12) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year + 1900
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_have_the_right_shape() {
        let d = super::rfc2822_date(0);
        assert!(d.contains(" 1970 ") || d.contains(" 1969 "), "{d}");
        assert_eq!(d.split(' ').count(), 6);
        let a = super::asctime_date(1_000_000_000);
        assert!(a.ends_with("2001"), "{a}");
    }
}
