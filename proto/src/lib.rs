//! The contract between the delouse agent (inside a tokio service) and the
//! `delouse` CLI: the messages they exchange ([`wire`]), how messages are
//! framed on a Unix socket ([`frame`]), and where the socket lives
//! ([`location`]).
//!
//! An exchange on one connection:
//!
//! 1. client → agent: [`Hello`]; agent → client: [`HelloReply`].
//! 2. client → agent: one [`Request`]; agent → client: one [`Response`].
//!
//! Every message is one frame: a 4-byte big-endian length, then the message
//! encoded with postcard. docs/protocol.md describes the format in full.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod frame;
pub mod location;
pub mod wire;

pub use frame::{FrameError, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};
pub use wire::*;
