//! Mailbox names: the modified UTF-7 of RFC 3501 §5.1.3.
//!
//! Printable US-ASCII stands for itself except `&`, which is written `&-`; anything else is
//! UTF-16BE in base64 with `,` for `/`, without padding, between `&` and `-`. Decoding is
//! strict: a name must be the one canonical encoding of what it decodes to (so one mailbox
//! cannot be reached under two spellings).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Decodes a mailbox name from modified UTF-7; `INBOX` in any case becomes `INBOX`.
pub fn decode_mailbox(raw: &str) -> Result<String, String> {
    let name = decode_mutf7(raw)?;
    if name.eq_ignore_ascii_case("INBOX") {
        Ok("INBOX".to_string())
    } else {
        Ok(name)
    }
}

/// Encodes a mailbox name in modified UTF-7.
pub fn encode_mailbox(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut units: Vec<u16> = Vec::new();
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut units);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut b = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut b));
        }
    }
    flush(&mut out, &mut units);
    out
}

fn flush(out: &mut String, units: &mut Vec<u16>) {
    if units.is_empty() {
        return;
    }
    out.push('&');
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_be_bytes()).collect();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    out.push('-');
    units.clear();
}

/// Decodes modified UTF-7 without the INBOX rule (for list references and patterns).
pub(crate) fn decode_mutf7(raw: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "mailbox name is not valid modified UTF-7: {}",
            raw.escape_debug()
        )
    };
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(0x20..=0x7e).contains(&b) {
            return Err(bad());
        }
        if b != b'&' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let end = bytes[i + 1..]
            .iter()
            .position(|&c| c == b'-')
            .map(|p| i + 1 + p)
            .ok_or_else(bad)?;
        let run = &bytes[i + 1..end];
        i = end + 1;
        if run.is_empty() {
            out.push('&');
            continue;
        }
        let mut acc: u32 = 0;
        let mut bits = 0;
        let mut units: Vec<u16> = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for &c in run {
            let v = ALPHABET.iter().position(|&a| a == c).ok_or_else(bad)? as u32;
            acc = ((acc << 6) | v) & 0x00ff_ffff;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                pending.push(((acc >> bits) & 0xff) as u8);
                if pending.len() == 2 {
                    units.push(u16::from_be_bytes([pending[0], pending[1]]));
                    pending.clear();
                }
            }
        }
        if !pending.is_empty() || bits >= 6 || acc & ((1 << bits) - 1) != 0 {
            return Err(bad());
        }
        for c in char::decode_utf16(units) {
            out.push(c.map_err(|_| bad())?);
        }
    }
    if encode_mailbox(&out) != raw {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_names() {
        assert_eq!(
            encode_mailbox("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            decode_mailbox("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(encode_mailbox("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode_mailbox("Tom &- Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(encode_mailbox("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(decode_mailbox("Entw&APw-rfe").unwrap(), "Entwürfe");
        assert_eq!(decode_mailbox("inBox").unwrap(), "INBOX");
        assert_eq!(decode_mailbox("inbox/Sub").unwrap(), "inbox/Sub");
        // Non-BMP: a surrogate pair.
        assert_eq!(encode_mailbox("😀"), "&2D3eAA-");
        assert_eq!(decode_mailbox("&2D3eAA-").unwrap(), "😀");
        assert_eq!(decode_mailbox("").unwrap(), "");
    }

    #[test]
    fn rejects_non_canonical_and_garbage() {
        for bad in [
            "&",
            "&Jjo",
            "&Jjo!-",
            "&AGE-",      // 'a' encoded
            "&2D0-",      // lone high surrogate
            "&APw-&APw-", // two adjacent runs
            "&APx-",      // non-zero padding bits
            "Entwürfe",   // raw 8-bit
            "a\tb",       // control
            "&AP-",       // 12 bits: one byte and a half
        ] {
            assert!(decode_mailbox(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(s in "\\PC*") {
            let enc = encode_mailbox(&s);
            prop_assert!(enc.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            prop_assert_eq!(decode_mutf7(&enc).unwrap(), s);
        }

        #[test]
        fn decode_never_panics(s in "[ -~]{0,40}") {
            if let Ok(d) = decode_mutf7(&s) {
                prop_assert_eq!(encode_mailbox(&d), s);
            }
        }
    }
}
