//! Small things Petrel's programs share that are not about mail.
#![deny(missing_docs)]

pub mod sysexits;
