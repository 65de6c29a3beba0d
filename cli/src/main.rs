//! `delouse`: look inside a running tokio program.
//!
//! One module per command ([`ps`], [`tasks`], [`threads`], [`elf`],
//! [`crash`]); finding and talking to an agent in [`connect`]; asking before
//! what cannot be undone in [`prompt`]; symbolization in [`symbolize`];
//! grouping in [`tree`]; kernel names in [`kernel`]; output in [`render`];
//! exit codes in [`error`]; which socket files to trust in [`trust`]; text
//! from the target made safe to print in [`sanitize`].
#![forbid(unsafe_code)]

mod connect;
mod crash;
mod elf;
mod error;
mod format;
mod kernel;
mod paths;
mod procfs;
mod prompt;
mod ps;
mod render;
mod sanitize;
mod symbolize;
mod symcache;
mod tasks;
mod threads;
mod tree;
mod trust;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::{CliError, Exit};

const EXIT_CODES: &str = "\
Exit status: 0 ok, 1 error, 2 usage, 3 no agent at that pid (or no such process, or a stale socket),
4 permission denied, 5 the target did not answer in time, 6 unsupported by the target's build.";

/// Look inside a running tokio program: what every task is waiting on.
#[derive(Debug, Parser)]
#[command(name = "delouse", version, after_help = EXIT_CODES)]
#[deny(missing_docs)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
#[deny(missing_docs)]
pub enum Command {
    /// List the processes with a delouse agent (all users' when run as root).
    Ps(PsArgs),
    /// Show what every traced task of a process is waiting on, grouped by call tree.
    #[command(after_long_help = tasks::WHOLE_RUNTIME_RISK)]
    Tasks(TasksArgs),
    /// Show a backtrace of every OS thread of a process, with its state, CPU time, system call and role.
    #[command(after_long_help = threads::STACK_STATES)]
    Threads(ThreadsArgs),
    /// Show what build a process runs (or an ELF file holds): build id, compiler, debug info, crates, and what
    /// its agent knows.
    Elf(ElfArgs),
    /// Abort a process so that it leaves a core dump, after checking that one can be written (asks first).
    #[command(after_long_help = crash::WHAT_IT_DOES)]
    Crash(CrashArgs),
}

/// Options of `delouse ps`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct PsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Remove socket files that no agent listens on any more.
    #[arg(long)]
    pub clean: bool,
}

/// Options of `delouse tasks`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct TasksArgs {
    /// Process id of the target.
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: u32,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Give up waiting for the agent after this long, e.g. 10s, 500ms, 2m (a bare number is seconds);
    /// symbolizing the answer then gets what is left, and at least 5s.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = format::parse_duration)]
    pub timeout: Duration,
    /// Use tokio's own Handle::dump() of a whole runtime instead: it sees every task, even those not spawned
    /// with delouse, but can stop the runtime for good (asks first; see --help).
    #[arg(long)]
    pub whole_runtime: bool,
    /// With --whole-runtime: the registered runtime to dump (default: main).
    #[arg(long, value_name = "NAME", requires = "whole_runtime")]
    pub runtime: Option<String>,
    /// With --whole-runtime: accept the risk without being asked (needed without a terminal).
    #[arg(long, short = 'y', requires = "whole_runtime")]
    pub yes: bool,
}

/// Options of `delouse threads`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ThreadsArgs {
    /// Process id of the target.
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: u32,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Give up waiting for the agent after this long, e.g. 10s, 500ms, 2m (a bare number is seconds);
    /// symbolizing the answer then gets what is left, and at least 5s.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = format::parse_duration)]
    pub timeout: Duration,
    /// Show only threads whose name contains PATTERN (case-sensitive; repeat for any of several).
    #[arg(long = "name", value_name = "PATTERN")]
    pub names: Vec<String>,
    /// Merge threads with the same name (up to trailing digits), role and stack into one entry.
    #[arg(long)]
    pub group: bool,
}

/// Options of `delouse elf`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct ElfArgs {
    /// A process id (its running image is read, from /proc/PID/exe), or the path of an ELF file (write ./1234
    /// for a file named 1234).
    #[arg(value_name = "PID|PATH", value_parser = elf::Target::parse)]
    pub target: elf::Target,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// List every section, not only the notable ones (JSON always lists every section).
    #[arg(long)]
    pub all_sections: bool,
    /// Give up on the agent after this long, e.g. 10s, 500ms (a bare number is seconds).
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = format::parse_duration)]
    pub timeout: Duration,
}

/// Options of `delouse crash`.
#[derive(Debug, Args)]
#[deny(missing_docs)]
pub struct CrashArgs {
    /// Process id of the target.
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: u32,
    /// Only report whether and where a core dump would be written; abort nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Abort without asking (needed without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Abort even when no core dump can be written.
    #[arg(long)]
    pub force: bool,
    /// Bound on the exchange with the agent, and then on waiting for the process to end, e.g. 10s, 1m.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = format::parse_duration)]
    pub timeout: Duration,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a command prints: stdout in one piece, and lines for stderr.
#[derive(Debug, Default)]
pub struct Output {
    /// Printed to stdout as is.
    pub stdout: String,
    /// Printed to stderr, one per line, after stdout.
    pub stderr: Vec<String>,
    /// A failure to report after the output (its line last on stderr, its
    /// exit status), for a command whose output stands but is incomplete.
    pub failure: Option<CliError>,
}

impl Output {
    /// A line that explains the output (`delouse: …`).
    pub fn info(&mut self, line: impl AsRef<str>) {
        self.stderr
            .push(format!("delouse: {}", error::one_line(line.as_ref())));
    }

    /// A problem that did not stop the command (`delouse: warning: …`).
    pub fn warn(&mut self, line: impl AsRef<str>) {
        self.stderr.push(format!(
            "delouse: warning: {}",
            error::one_line(line.as_ref())
        ));
    }
}

fn run(cli: Cli) -> Result<Output, CliError> {
    match cli.command {
        Command::Ps(a) => ps::run(ps::Options {
            json: a.json,
            clean: a.clean,
        }),
        Command::Tasks(a) => tasks::run(&tasks::Options {
            pid: a.pid,
            json: a.json,
            timeout: a.timeout,
            whole_runtime: a.whole_runtime,
            runtime: a.runtime,
            yes: a.yes,
        }),
        Command::Threads(a) => threads::run(&threads::Options {
            pid: a.pid,
            json: a.json,
            timeout: a.timeout,
            names: a.names,
            group: a.group,
        }),
        Command::Elf(a) => elf::run(&elf::Options {
            target: a.target,
            json: a.json,
            timeout: a.timeout,
            all_sections: a.all_sections,
        }),
        Command::Crash(a) => crash::run(&crash::Options {
            pid: a.pid,
            json: a.json,
            dry_run: a.dry_run,
            yes: a.yes,
            force: a.force,
            timeout: a.timeout,
        }),
    }
}

fn print_stderr(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

fn main() -> ExitCode {
    // Panics are bugs: let color-eyre print them helpfully. Errors are not
    // panics and are printed as one line below.
    let (panic_hook, _) = color_eyre::config::HookBuilder::default().into_hooks();
    panic_hook.install();

    let cli = Cli::parse();
    let output = match run(cli) {
        Ok(output) => output,
        Err(e) => {
            print_stderr(&e.line());
            return ExitCode::from(e.exit.code());
        }
    };
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(output.stdout.as_bytes())
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        // `delouse ps | head -0`: the reader has all it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return ExitCode::SUCCESS,
        Err(e) => {
            print_stderr(
                &CliError::error(format!("writing the output failed: {}", error::io_text(&e)))
                    .line(),
            );
            return ExitCode::from(Exit::Error.code());
        }
    }
    for line in &output.stderr {
        print_stderr(line);
    }
    if let Some(e) = &output.failure {
        print_stderr(&e.line());
        return ExitCode::from(e.exit.code());
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn runtime_and_yes_need_whole_runtime() {
        assert!(Cli::try_parse_from(["delouse", "tasks", "1", "--yes"]).is_err());
        assert!(Cli::try_parse_from(["delouse", "tasks", "1", "--runtime", "io"]).is_err());
        assert!(
            Cli::try_parse_from([
                "delouse",
                "tasks",
                "1",
                "--whole-runtime",
                "--runtime",
                "io",
                "--yes"
            ])
            .is_ok()
        );
        assert!(Cli::try_parse_from(["delouse", "tasks", "0"]).is_err());
        assert!(Cli::try_parse_from(["delouse", "tasks", "1", "--timeout", "0s"]).is_err());
    }

    #[test]
    fn elf_takes_a_pid_or_a_path() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Elf(a)) => Ok(a.target),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(
            parse(&["delouse", "elf", "12"]).unwrap(),
            elf::Target::Pid(12)
        );
        assert_eq!(
            parse(&["delouse", "elf", "./12"]).unwrap(),
            elf::Target::Path("./12".into())
        );
        assert!(parse(&["delouse", "elf", "0"]).is_err());
        assert!(parse(&["delouse", "elf"]).is_err());
    }

    #[test]
    fn crash_flags() {
        let cli =
            Cli::try_parse_from(["delouse", "crash", "9", "--dry-run", "-y", "--force"]).unwrap();
        let Command::Crash(a) = cli.command else {
            panic!("{cli:?}")
        };
        assert!(a.dry_run && a.yes && a.force && !a.json);
        assert_eq!(a.timeout, Duration::from_secs(10));
        assert!(Cli::try_parse_from(["delouse", "crash"]).is_err());
        assert!(Cli::try_parse_from(["delouse", "crash", "0"]).is_err());
    }

    #[test]
    fn threads_takes_repeated_names() {
        let cli = Cli::try_parse_from([
            "delouse", "threads", "7", "--name", "tokio", "--name", "app", "--group",
        ])
        .unwrap();
        let Command::Threads(a) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            (a.pid, a.names.as_slice(), a.group),
            (7, &["tokio".to_owned(), "app".to_owned()][..], true)
        );
        assert!(Cli::try_parse_from(["delouse", "threads"]).is_err());
        assert!(Cli::try_parse_from(["delouse", "threads", "0"]).is_err());
        assert!(Cli::try_parse_from(["delouse", "threads", "1", "--name"]).is_err());
    }
}
