//! The data path: listeners accept clients, each connection picks a host of its
//! service's enabled group, connects (failing over to other hosts), then copies.

mod connection;
mod copy;
mod listener;

pub use copy::{COPY_BUFFER, Copied, copy_bidirectional};
pub(crate) use listener::{ListenerTask, bind};
