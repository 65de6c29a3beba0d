//! `init()` and `Builder` (stub: the agent is not started yet).

use std::path::PathBuf;

/// Why the agent could not start. The application keeps running.
#[derive(Debug)]
pub struct InitError(String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InitError {}

/// Starts the agent with default settings.
pub fn init() -> Result<(), InitError> {
    Builder::new().start()
}

/// Agent settings.
#[derive(Debug, Default)]
pub struct Builder {
    socket_dir: Option<PathBuf>,
    runtimes: Vec<(String, tokio::runtime::Handle)>,
    whole_runtime_dumps: bool,
}

impl Builder {
    /// Default settings.
    pub fn new() -> Self {
        Builder {
            whole_runtime_dumps: true,
            ..Default::default()
        }
    }
    /// Socket directory.
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.socket_dir = Some(dir.into());
        self
    }
    /// Registers a runtime under a name.
    pub fn runtime(mut self, name: impl Into<String>, handle: tokio::runtime::Handle) -> Self {
        self.runtimes.push((name.into(), handle));
        self
    }
    /// Whether whole-runtime dumps are allowed.
    pub fn whole_runtime_dumps(mut self, allow: bool) -> Self {
        self.whole_runtime_dumps = allow;
        self
    }
    /// Starts the agent.
    pub fn start(self) -> Result<(), InitError> {
        let _ = (&self.socket_dir, &self.runtimes, self.whole_runtime_dumps);
        Ok(())
    }
}
