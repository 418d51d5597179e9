//! The server's local time zone, for INTERNALDATE (as Dovecot shows it).

/// The offset of local time from UTC at `epoch` (seconds since the epoch), in minutes east
/// (daylight saving time included); 0 when the C library cannot tell.
pub(crate) fn local_offset_minutes(epoch: i64) -> i32 {
    // time_t is 64 bits on every platform Petrel builds for.
    let t = epoch as libc::time_t;
    // SAFETY: localtime_r reads `t` and writes only into the tm we hand it; an all-zero tm
    // (null tm_zone pointer included) is a valid value of that type.
    let (ok, tm) = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let r = libc::localtime_r(&t, &mut tm);
        (!r.is_null(), tm)
    };
    if !ok {
        return 0;
    }
    i32::try_from(tm.tm_gmtoff / 60)
        .unwrap_or(0)
        .clamp(-1439, 1439)
}

/// The local day (days since the epoch) of `epoch`.
pub(crate) fn local_day(epoch: i64) -> i64 {
    epoch
        .saturating_add(i64::from(local_offset_minutes(epoch)) * 60)
        .div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_whole_minutes_within_a_day() {
        for t in [0i64, 837_595_405, 1_700_000_000, -86_400 * 365] {
            let off = local_offset_minutes(t);
            assert!((-1439..=1439).contains(&off), "{off}");
            let d = local_day(t);
            assert!((d - t.div_euclid(86_400)).abs() <= 1);
        }
    }
}
