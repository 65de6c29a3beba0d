//! Source paths as a person wants to read them, and whose code they are.

use std::path::Path;

/// Where a source file comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A crate from a cargo registry: the text after the index directory.
    Registry,
    /// A git dependency checked out by cargo.
    Git,
    /// The Rust standard library.
    Std,
    /// The application's own code (anything else).
    App,
}

/// Splits `path` at a cargo registry source directory:
/// `…/registry/src/<index>-<hash>/<crate>-<version>/…` gives
/// `<crate>-<version>/…`.
fn registry_tail(path: &str) -> Option<&str> {
    let mut search = 0;
    while let Some(i) = path[search..].find("/registry/src/") {
        let after = &path[search + i + "/registry/src/".len()..];
        if let Some(slash) = after.find('/') {
            let index = &after[..slash];
            if looks_like_index_dir(index) && after.len() > slash + 1 {
                return Some(&after[slash + 1..]);
            }
        }
        search += i + 1;
    }
    None
}

/// `index.crates.io-1949cf8c6b5b557f`, `github.com-1ecc6299db9ec823`, or a
/// custom registry's `<name>-<16 hex digits>`.
fn looks_like_index_dir(name: &str) -> bool {
    match name.rsplit_once('-') {
        Some((host, hash)) => {
            !host.is_empty() && hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// `…/git/checkouts/<repo>-<hash>/<rev>/rest` gives `<repo>/rest`.
fn git_tail(path: &str) -> Option<String> {
    let i = path.find("/git/checkouts/")?;
    let after = &path[i + "/git/checkouts/".len()..];
    let mut parts = after.splitn(3, '/');
    let repo_dir = parts.next()?;
    let _rev = parts.next()?;
    let rest = parts.next()?;
    let repo = match repo_dir.rsplit_once('-') {
        Some((repo, hash)) if !repo.is_empty() && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            repo
        }
        _ => repo_dir,
    };
    Some(format!("{repo}/{rest}"))
}

/// `/rustc/<hash>/library/core/src/…` gives `core/src/…`; so does a
/// `rust-src` component's `…/lib/rustlib/src/rust/library/core/src/…`.
fn std_tail(path: &str) -> Option<&str> {
    if let Some(after) = path.strip_prefix("/rustc/") {
        let (_hash, rest) = after.split_once('/')?;
        return Some(rest.strip_prefix("library/").unwrap_or(rest));
    }
    let i = path.find("/lib/rustlib/src/rust/")?;
    let rest = &path[i + "/lib/rustlib/src/rust/".len()..];
    Some(rest.strip_prefix("library/").unwrap_or(rest))
}

fn origin(path: &str) -> Origin {
    if std_tail(path).is_some() {
        Origin::Std
    } else if registry_tail(path).is_some() {
        Origin::Registry
    } else if git_tail(path).is_some() {
        Origin::Git
    } else {
        Origin::App
    }
}

/// The short form of a source path; a path under `cwd` becomes relative.
pub fn shorten(path: &str, cwd: Option<&Path>) -> String {
    if let Some(rest) = std_tail(path) {
        return rest.to_owned();
    }
    if let Some(rest) = registry_tail(path) {
        return rest.to_owned();
    }
    if let Some(rest) = git_tail(path) {
        return rest;
    }
    if let Some(cwd) = cwd
        && let Ok(rel) = Path::new(path).strip_prefix(cwd)
        && !rel.as_os_str().is_empty()
    {
        return rel.to_string_lossy().into_owned();
    }
    path.to_owned()
}

/// Whether a frame in `path` is the application's own code: not from a cargo
/// registry, a git checkout, or the standard library.
pub fn is_app(path: &str) -> bool {
    origin(path) == Origin::App
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKIO: &str = "/home/me/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/task/mod.rs";

    #[test]
    fn registry_paths_keep_the_crate_and_version() {
        assert_eq!(shorten(TOKIO, None), "tokio-1.54.1/src/runtime/task/mod.rs");
        assert!(!is_app(TOKIO));
        let other = "/usr/local/cargo/registry/src/github.com-1ecc6299db9ec823/futures-util-0.3.31/src/lib.rs";
        assert_eq!(shorten(other, None), "futures-util-0.3.31/src/lib.rs");
    }

    #[test]
    fn git_checkouts_keep_the_repo() {
        let p =
            "/home/me/.cargo/git/checkouts/tokio-b33c28ce5d7d2a8e/1a2b3c4/tokio/src/sync/notify.rs";
        assert_eq!(shorten(p, None), "tokio/tokio/src/sync/notify.rs");
        assert!(!is_app(p));
    }

    #[test]
    fn std_paths_start_at_the_library_crate() {
        let p = "/rustc/59807616e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6/library/core/src/future/mod.rs";
        assert_eq!(shorten(p, None), "core/src/future/mod.rs");
        assert!(!is_app(p));
        let src = "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/lib/rustlib/src/rust/library/std/src/rt.rs";
        assert_eq!(shorten(src, None), "std/src/rt.rs");
        assert!(!is_app(src));
    }

    #[test]
    fn app_paths_become_relative_to_the_working_directory() {
        let cwd = Path::new("/work/svc");
        assert_eq!(shorten("/work/svc/src/main.rs", Some(cwd)), "src/main.rs");
        assert_eq!(
            shorten("/work/svcx/src/main.rs", Some(cwd)),
            "/work/svcx/src/main.rs"
        );
        assert_eq!(shorten("src/main.rs", Some(cwd)), "src/main.rs");
        assert!(is_app("/work/svc/src/main.rs"));
        assert!(is_app("src/main.rs"));
    }

    #[test]
    fn lookalikes_are_left_alone() {
        for p in [
            "/srv/registry/src/x.rs",
            "/srv/registry/src/nohash/x.rs",
            "/a/git/checkouts/x",
        ] {
            assert_eq!(shorten(p, None), p);
            assert!(is_app(p), "{p}");
        }
    }
}
