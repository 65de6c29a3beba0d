#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod builder;
// Task traces and whole-runtime dumps need tokio's `runtime::dump`, which
// exists only under `--cfg tokio_unstable` on these platforms (the agent
// turns on tokio's `taskdump` feature there, see Cargo.toml).
#[cfg(all(
    tokio_unstable,
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "s390x"
    )
))]
mod capture;
#[cfg(not(all(
    tokio_unstable,
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "s390x"
    )
)))]
#[path = "unsupported.rs"]
mod capture;
#[cfg(all(
    tokio_unstable,
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "s390x"
    )
))]
mod whole;
#[cfg(not(all(
    tokio_unstable,
    target_os = "linux",
    any(
        target_arch = "aarch64",
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "s390x"
    )
)))]
use capture as whole;
mod collect;
mod crash;
mod exclusive;
mod procfs;
mod registry;
mod server;
mod socket;
mod sys;
mod tasks;
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod threads;
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
#[path = "threads_unsupported.rs"]
mod threads;
mod traced;

pub use builder::{Builder, InitError, init};
pub use traced::{Traced, TracedExt, spawn};
