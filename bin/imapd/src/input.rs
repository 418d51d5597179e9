//! Reading a client's bytes into its command reader: the one read step both imapd loops
//! (login process and session worker) take.

use petrel_imap_proto::CommandReader;
use std::io::{self, Read};

/// What one read gave.
pub enum Input {
    /// This many bytes went into the reader.
    Got(usize),
    /// Nothing now (the socket would block).
    Wait,
    /// The client closed the connection, or it broke.
    End,
}

/// Reads once from `stream` (through the caller's `buf`) into `reader`.
pub fn read_into(stream: &mut impl Read, buf: &mut [u8], reader: &mut CommandReader) -> Input {
    loop {
        return match stream.read(buf) {
            Ok(0) => Input::End,
            Ok(n) => {
                reader.push(&buf[..n]);
                Input::Got(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Input::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => Input::End,
        };
    }
}
