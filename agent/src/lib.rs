#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod builder;

/// Items built only where tokio has `runtime::dump`: `--cfg tokio_unstable`
/// on Linux x86, x86_64, aarch64 and s390x (the agent turns on tokio's
/// `taskdump` feature there, see Cargo.toml), and their stand-ins elsewhere.
macro_rules! where_tokio_dumps {
    (yes { $($yes:item)* } no { $($no:item)* }) => {
        $(
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
            $yes
        )*
        $(
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
            $no
        )*
    };
}

where_tokio_dumps! {
    yes {
        mod capture;
        mod whole;
        /// Whether tokio can trace tasks in this build.
        const TOKIO_DUMPS: bool = true;
    }
    no {
        #[path = "unsupported.rs"]
        mod capture;
        use capture as whole;
        const TOKIO_DUMPS: bool = false;
    }
}

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
