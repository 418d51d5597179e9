//! Sending delivery status notifications: build the DSN, submit it to cleanup with the
//! null sender, and only then let the caller mark the recipients done.

use petrel_ipc::cleanup::{Reply, Request};
use petrel_ipc::{Incoming, Rcpt};
use petrel_message::dsn;
use std::time::Duration;

/// Submits `message` from `from` (empty: `<>`) to `to` through cleanup; returns the new
/// queue id.
pub fn submit(from: &str, to: &str, message: &[u8]) -> Result<String, String> {
    let mut s = petrel_daemon::connect("private/cleanup", Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let begin = Request::Begin {
        sender: from.to_string(),
        recipients: vec![Rcpt {
            address: to.to_string(),
            ..Default::default()
        }],
        attrs: vec![("protocol".into(), "internal".into())],
    };
    let io = |e: std::io::Error| format!("cleanup: {e}");
    petrel_ipc::write_frame(&mut s, &begin).map_err(io)?;
    for chunk in message.chunks(petrel_ipc::CHUNK) {
        petrel_ipc::write_frame(&mut s, &Request::Data(chunk.to_vec())).map_err(io)?;
    }
    petrel_ipc::write_frame(&mut s, &Request::End).map_err(io)?;
    match petrel_ipc::read_frame::<Reply>(&mut s).map_err(io)? {
        Some(Incoming::Msg(Reply::Queued { id })) => Ok(id),
        Some(Incoming::Msg(Reply::Failed { dsn, reason, .. })) => {
            Err(format!("cleanup: {dsn} {reason}"))
        }
        _ => Err("cleanup closed the connection".into()),
    }
}

/// Everything needed to tell a sender what failed.
pub struct Notice<'a> {
    pub queue_id: &'a str,
    pub myhostname: &'a str,
    /// Who gets the notice: the original sender, or the postmaster for a double bounce.
    pub to: &'a str,
    /// The notice's envelope sender: empty (`<>`), or double_bounce_sender for notices to
    /// the postmaster, whose own failure must end the chain.
    pub from: &'a str,
    pub arrival: f64,
    pub envid: &'a str,
    pub headers_only: bool,
    pub original: &'a [u8],
    pub recipients: Vec<dsn::Recipient>,
}

/// Builds and submits a notice; returns the new queue id.
pub fn send(n: &Notice<'_>) -> Result<String, String> {
    let new_id = petrel_queue::QueueId::new();
    let report = dsn::Report {
        myhostname: n.myhostname,
        queue_id: n.queue_id,
        arrival: n.arrival as i64,
        now: petrel_queue::now() as i64,
        to: n.to,
        envid: n.envid,
        recipients: n.recipients.clone(),
        original: n.original,
        headers_only: n.headers_only,
        new_id: new_id.as_str(),
    };
    submit(n.from, n.to, &dsn::build(&report))
}
