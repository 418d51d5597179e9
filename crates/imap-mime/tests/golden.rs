#![allow(clippy::unwrap_used)]
//! Compares the crate's output with Dovecot's answers for the same messages, stored under
//! tests/golden/NAME/ITEM by tests/golden/gen.py (see there for how to regenerate them).

use std::fs;
use std::path::Path;

use petrel_imap_mime::{body_structure, envelope, section, to_crlf, SectionText};

/// Parses `1.2.HEADER.FIELDS (A B)` into part numbers and text specifier.
fn parse_section(spec: &str) -> (Vec<u32>, Option<SectionText>) {
    let mut parts = Vec::new();
    let mut rest = spec;
    while let Some(c) = rest.chars().next() {
        if !c.is_ascii_digit() {
            break;
        }
        let end = rest.find('.').unwrap_or(rest.len());
        parts.push(rest[..end].parse().unwrap());
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let names = |s: &str| -> Vec<String> {
        s.trim_start_matches(" (")
            .trim_end_matches(')')
            .split(' ')
            .map(String::from)
            .collect()
    };
    let text = if rest.is_empty() {
        None
    } else if let Some(list) = rest.strip_prefix("HEADER.FIELDS.NOT") {
        Some(SectionText::HeaderFieldsNot(names(list)))
    } else if let Some(list) = rest.strip_prefix("HEADER.FIELDS") {
        Some(SectionText::HeaderFields(names(list)))
    } else {
        Some(match rest {
            "HEADER" => SectionText::Header,
            "TEXT" => SectionText::Text,
            "MIME" => SectionText::Mime,
            other => panic!("unknown section {other}"),
        })
    };
    (parts, text)
}

/// Where we differ from Dovecot on purpose: (message, item, Dovecot's bytes, ours).
///
/// RFC 2046 §5.1.1 attaches the line end before a delimiter to the delimiter. When a
/// nested multipart's close delimiter is directly followed by the outer delimiter (no blank
/// line between), Dovecot counts that line end into the nested part as well (2 bytes and
/// 1 line more); we follow the RFC.
const KNOWN: &[(&str, &str, &str, &str)] = &[
    ("params", "BODY[3]", "--d--\r\n", "--d--"),
    ("rfc3501", "BODY[3]", "--b--\r\n", "--b--"),
    ("rfc3501", "BODY[3.TEXT]", "--b--\r\n", "--b--"),
    ("rfc3501", "BODYSTRUCTURE", "\"7bit\" 171 ", "\"7bit\" 169 "),
    (
        "rfc3501",
        "BODYSTRUCTURE",
        " 12 NIL NIL NIL NIL)",
        " 11 NIL NIL NIL NIL)",
    ),
    ("rfc3501", "BODY", "\"7bit\" 171 ", "\"7bit\" 169 "),
    ("rfc3501", "BODY", "\"MIXED\") 12)", "\"MIXED\") 11)"),
];

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    match hay.windows(from.len()).position(|w| w == from) {
        Some(i) => [&hay[..i], to, &hay[i + from.len()..]].concat(),
        None => panic!(
            "known difference {:?} not found",
            String::from_utf8_lossy(from)
        ),
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn matches_dovecot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut dirs: Vec<_> = fs::read_dir(root.join("golden"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let name = dir.file_name().unwrap().to_str().unwrap();
        let raw = fs::read(root.join("messages").join(format!("{name}.eml"))).unwrap();
        let msg = to_crlf(&raw);
        for item in fs::read_dir(dir).unwrap() {
            let item = item.unwrap().path();
            let key = item
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .replace('_', " ");
            let mut want = fs::read(&item).unwrap();
            for (m, k, from, to) in KNOWN {
                if *m == name && *k == key {
                    want = replace(&want, from.as_bytes(), to.as_bytes());
                }
            }
            let got = match key.as_str() {
                "ENVELOPE" => envelope(&msg),
                "BODYSTRUCTURE" => body_structure(&msg, true),
                "BODY" => body_structure(&msg, false),
                "RFC822.SIZE" => msg.len().to_string().into_bytes(),
                k => {
                    let spec = k.strip_prefix("BODY[").unwrap().strip_suffix(']').unwrap();
                    let (parts, text) = parse_section(spec);
                    section(&msg, &parts, text.as_ref())
                }
            };
            checked += 1;
            // Dovecot lower-cases types and parameters in BODY (not in BODYSTRUCTURE);
            // RFC 3501 makes them case-insensitive, so compare BODY without case.
            let same = if key == "BODY" {
                got.eq_ignore_ascii_case(&want)
            } else {
                got == want
            };
            if !same {
                failures.push(format!(
                    "{name} {key}:\n  dovecot: {}\n  ours:    {}",
                    show(&want),
                    show(&got)
                ));
            }
        }
    }
    assert!(checked > 300, "only {checked} golden items");
    assert!(
        failures.is_empty(),
        "{} of {checked} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
