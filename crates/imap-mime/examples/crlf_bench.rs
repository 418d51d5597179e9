//! Timing of the message-bytes path of FETCH (and of the search text), on messages shaped
//! like bench/imap.py's INBOX: 10,000 messages of 2–8 KiB, a few header fields, lines of
//! about 70 characters, LF line ends (as Petrel's local agent stores them) and the same
//! messages with CRLF (as Dovecot stores them).
//!
//! ```text
//! cargo run --release -p petrel-imap-mime --example crlf_bench [-- MESSAGES [ROUNDS]]
//! ```
//!
//! "before" is the code as it was before the memchr fast path (a byte-by-byte
//! `to_crlf`, and FETCH copying the message three times before it reaches the output);
//! "after" is the current API. MB/s are of stored message bytes, best of ROUNDS rounds
//! (default 7). Nothing here asserts a speed; the outputs are checked to be equal.

use std::borrow::Cow;
use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use petrel_imap_mime::{body_text, crlf_len, section_ref, to_crlf, to_crlf_into, SectionText};

const VOCAB: &str = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima \
mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu the \
of and to in is that for on with as was at by an be this which from or have not are but all \
meeting report budget quarter schedule review project update team plan release";

/// xorshift64*: deterministic messages without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Message `i`, as bench/imap.py makes them (LF line ends).
fn message(i: usize, rng: &mut Rng, vocab: &[&str]) -> Vec<u8> {
    let k = i % 50;
    let mut m = format!(
        "Return-Path: <sender{k}@example.org>\n\
         Date: Mon, 06 Jan 2025 12:{:02}:00 +0000\n\
         From: Sender {k} <sender{k}@example.org>\n\
         To: Demo <demo@sandbox.test>\n\
         Subject: Bench message {i} about topic {}\n\
         Message-ID: <bench.{i}@example.org>\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=us-ascii\n\n",
        i % 60,
        i % 37
    );
    let target = 2048 + rng.below(8192 - 2048 + 1);
    while m.len() < target {
        let mut line = String::new();
        while line.len() < 68 {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(vocab[rng.below(vocab.len())]);
        }
        line.push('\n');
        m.push_str(&line);
    }
    m.into_bytes()
}

/// The byte-by-byte `to_crlf` this crate had before (for the "before" figures).
fn old_to_crlf(msg: &[u8]) -> Cow<'_, [u8]> {
    let bare = msg
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || msg[i - 1] != b'\r'))
        .count();
    if bare == 0 {
        return Cow::Borrowed(msg);
    }
    let mut out = Vec::with_capacity(msg.len() + bare);
    let mut prev = 0u8;
    for &b in msg {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    Cow::Owned(out)
}

/// FETCH BODY.PEEK[] as crates/imap-session does it now: the CRLF copy made by `load`,
/// `partial(..).to_vec()`, the literal into the item buffer, the item buffer into `out`.
fn fetch_before(raw: &[u8], seq: usize, out: &mut Vec<u8>) {
    let data = old_to_crlf(raw).into_owned();
    let content = data.clone();
    let mut resp = Vec::with_capacity(128);
    let _ = write!(resp, "* {seq} FETCH (BODY[] ");
    let _ = write!(resp, "{{{}}}\r\n", content.len());
    resp.extend_from_slice(&content);
    resp.extend_from_slice(b")\r\n");
    out.extend_from_slice(&resp);
}

/// FETCH BODY.PEEK[] with the new API: the stored bytes converted straight into `out`.
fn fetch_after(raw: &[u8], seq: usize, out: &mut Vec<u8>) {
    let _ = write!(out, "* {seq} FETCH (BODY[] {{{}}}\r\n", crlf_len(raw));
    to_crlf_into(raw, out);
    out.extend_from_slice(b")\r\n");
}

/// Best time of `rounds` runs of `f` over all messages.
fn best(rounds: usize, mut f: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn report(name: &str, bytes: usize, d: Duration) -> f64 {
    let mbs = bytes as f64 / d.as_secs_f64() / 1e6;
    println!(
        "  {name:<48} {:>9.0} MB/s  {:>8.2} ms",
        mbs,
        d.as_secs_f64() * 1e3
    );
    mbs
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7).max(1);
    let vocab: Vec<&str> = VOCAB.split_whitespace().collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let lf: Vec<Vec<u8>> = (0..n).map(|i| message(i, &mut rng, &vocab)).collect();
    let crlf: Vec<Vec<u8>> = lf.iter().map(|m| to_crlf(m).into_owned()).collect();
    let lf_bytes: usize = lf.iter().map(Vec::len).sum();
    let crlf_bytes: usize = crlf.iter().map(Vec::len).sum();
    println!(
        "{n} messages, {:.1} MB with LF ({:.1} KiB mean), {:.1} MB with CRLF; best of {rounds}",
        lf_bytes as f64 / 1e6,
        lf_bytes as f64 / n as f64 / 1024.0,
        crlf_bytes as f64 / 1e6
    );

    // The answers agree before anything is timed.
    let mut a = Vec::new();
    let mut b = Vec::new();
    for (i, (m, c)) in lf.iter().zip(&crlf).enumerate() {
        assert_eq!(&*old_to_crlf(m), &c[..]);
        assert_eq!(&*to_crlf(m), &c[..]);
        assert_eq!(crlf_len(m), c.len());
        a.clear();
        b.clear();
        fetch_before(m, i + 1, &mut a);
        fetch_after(m, i + 1, &mut b);
        assert_eq!(a, b);
        a.clear();
        b.clear();
        fetch_before(c, i + 1, &mut a);
        fetch_after(c, i + 1, &mut b);
        assert_eq!(a, b);
    }

    println!("LF-stored messages (Petrel's Maildir):");
    let before = best(rounds, || {
        for m in &lf {
            black_box(old_to_crlf(black_box(m)));
        }
    });
    let to_crlf_before = report("to_crlf, before (byte by byte)", lf_bytes, before);
    let after = best(rounds, || {
        for m in &lf {
            black_box(to_crlf(black_box(m)));
        }
    });
    let to_crlf_after = report("to_crlf, after (memchr runs, exact size)", lf_bytes, after);
    let mut buf = Vec::with_capacity(16 << 10);
    let d = best(rounds, || {
        for m in &lf {
            buf.clear();
            to_crlf_into(black_box(m), &mut buf);
            black_box(&buf);
        }
    });
    report("to_crlf_into, reused buffer", lf_bytes, d);
    let d = best(rounds, || {
        for m in &lf {
            black_box(crlf_len(black_box(m)));
        }
    });
    report("crlf_len", lf_bytes, d);
    let mut out = Vec::with_capacity(16 << 10);
    let d = best(rounds, || {
        for (i, m) in lf.iter().enumerate() {
            out.clear();
            fetch_before(black_box(m), i + 1, &mut out);
            black_box(&out);
        }
    });
    let fetch_lf_before = report("FETCH BODY[] literal, before (3 copies)", lf_bytes, d);
    let d = best(rounds, || {
        for (i, m) in lf.iter().enumerate() {
            out.clear();
            fetch_after(black_box(m), i + 1, &mut out);
            black_box(&out);
        }
    });
    let fetch_lf_after = report("FETCH BODY[] literal, after (crlf_len + into)", lf_bytes, d);

    println!("CRLF-stored messages (Dovecot's Maildir):");
    let d = best(rounds, || {
        for m in &crlf {
            black_box(old_to_crlf(black_box(m)));
        }
    });
    report("to_crlf, before (borrowed)", crlf_bytes, d);
    let d = best(rounds, || {
        for m in &crlf {
            black_box(to_crlf(black_box(m)));
        }
    });
    report("to_crlf, after (borrowed)", crlf_bytes, d);
    let d = best(rounds, || {
        for (i, m) in crlf.iter().enumerate() {
            out.clear();
            fetch_before(black_box(m), i + 1, &mut out);
            black_box(&out);
        }
    });
    let fetch_crlf_before = report("FETCH BODY[] literal, before", crlf_bytes, d);
    let d = best(rounds, || {
        for (i, m) in crlf.iter().enumerate() {
            out.clear();
            fetch_after(black_box(m), i + 1, &mut out);
            black_box(&out);
        }
    });
    let fetch_crlf_after = report("FETCH BODY[] literal, after", crlf_bytes, d);

    println!("Other sections and search text (CRLF form):");
    let hdr = Some(SectionText::Header);
    let d = best(rounds, || {
        for m in &crlf {
            black_box(section_ref(black_box(m), &[], hdr.as_ref()));
        }
    });
    report("section_ref BODY[HEADER] (no MIME parse)", crlf_bytes, d);
    let d = best(rounds, || {
        for m in &crlf {
            black_box(section_ref(black_box(m), &[1], None));
        }
    });
    report("section_ref BODY[1] (MIME parse)", crlf_bytes, d);
    let d = best(rounds.min(3), || {
        for m in &crlf {
            black_box(body_text(black_box(m)));
        }
    });
    report("body_text (mail-parser)", crlf_bytes, d);
    let texts: Vec<String> = crlf.iter().map(|m| body_text(m)).collect();
    let text_bytes: usize = texts.iter().map(String::len).sum();
    let d = best(rounds, || {
        for t in &texts {
            black_box(black_box(t).to_lowercase());
        }
    });
    report("str::to_lowercase of the body text", text_bytes, d);

    println!(
        "speed-up: to_crlf {:.1}x, FETCH literal LF {:.1}x, FETCH literal CRLF {:.1}x",
        to_crlf_after / to_crlf_before,
        fetch_lf_after / fetch_lf_before,
        fetch_crlf_after / fetch_crlf_before
    );
}
