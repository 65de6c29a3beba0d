//! delouse agent (work in progress; see README).
#![deny(missing_docs)]

mod builder;
mod traced;

pub use builder::{Builder, InitError, init};
pub use traced::{Traced, TracedExt, spawn};
