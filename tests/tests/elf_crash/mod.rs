//! `delouse elf` and `delouse crash` end to end: build facts of running
//! targets and of files (a stripped copy, a binary replaced on disk, a
//! binary built with `cargo auditable`), and core dumps: refused when none
//! can be written, refused without a terminal, and a real one that gdb
//! opens at the agent's abort.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use object::read::elf::{ElfFile64, ProgramHeader as _};
use serde_json::Value;

use crate::util::{Run, Target, Wait, bin_path, delouse, serial, target_dir};

/// The GNU build id of the ELF file at `path`, read from its `PT_NOTE`
/// segments (the CLI reads the note sections: two ways to the same note).
fn note_build_id(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let file = ElfFile64::<object::Endianness>::parse(&*data).expect("a 64-bit ELF file");
    let endian = file.endian();
    for ph in file.elf_program_headers() {
        let Ok(Some(mut notes)) = ph.notes(endian, &*data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"GNU" && note.n_type(endian) == object::elf::NT_GNU_BUILD_ID {
                return note.desc().iter().map(|b| format!("{b:02x}")).collect();
            }
        }
    }
    panic!("{}: no NT_GNU_BUILD_ID note", path.display())
}

/// `delouse elf ARG --json`, asserted to succeed.
fn elf_json(arg: &str) -> (Run, Value) {
    let run = delouse(&["elf", arg, "--json"]).ok();
    let json = run.json();
    (run, json)
}

/// `(name, size)` of every section of an `elf --json` answer.
fn sections(json: &Value) -> Vec<(String, u64)> {
    json["sections"]
        .as_array()
        .expect("sections")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("").to_owned(),
                s["size"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The version of `name` in a Cargo.lock.
fn locked_version(lock: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(lock).unwrap_or_else(|e| panic!("{}: {e}", lock.display()));
    let header = format!("name = \"{name}\"\n");
    let at = text
        .find(&header)
        .unwrap_or_else(|| panic!("no {name} in {}", lock.display()));
    text[at + header.len()..]
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("version = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no version of {name} in {}", lock.display()))
        .to_owned()
}

/// Whether `program --version` runs.
fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `cmd` to completion, killing it after `timeout`.
fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap");
            panic!(
                "{cmd:?} ran over {timeout:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect the output")
}

/// A shell command line that runs `exe` (its `$0`) with the given
/// `ulimit -c` settings first: `sh -c '<limits>; exec "$0"' <exe>`.
fn with_core_limit<'a>(limits: &'a str, exe: &'a Path) -> Vec<String> {
    vec![
        "-c".into(),
        format!("{limits}; exec \"$0\""),
        exe.display().to_string(),
    ]
}

/// Starts the heartbeat target through `sh` with core limits set, in `cwd`.
fn heartbeat_with_limits(limits: &str, cwd: Option<&Path>) -> Target {
    let exe = bin_path("heartbeat");
    let args = with_core_limit(limits, &exe);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Target::launch("heartbeat", Path::new("/bin/sh"), &args, cwd, Wait::Socket)
}

/// `elf <pid>` and `elf <path>` of a running target tell the same build,
/// with the build id its notes hold, and the pid adds the agent's facts.
#[test]
fn elf_of_a_pid_and_of_its_file_agree() {
    let _serial = serial();
    let mut target = Target::start("heartbeat", &[]);
    let exe = bin_path("heartbeat");
    let (run, by_pid) = elf_json(&target.pid_arg());
    let (_, by_path) = elf_json(&exe.display().to_string());
    let id = note_build_id(&exe);

    assert_eq!(by_pid["build_id"], id, "{run}");
    assert_eq!(by_path["build_id"], id);
    for key in [
        "arch",
        "class",
        "kind",
        "elf_type",
        "pie",
        "size",
        "interpreter",
        "rustc",
    ] {
        assert_eq!(by_pid[key], by_path[key], "{key}:\n{run}");
    }
    assert_eq!(by_pid["arch"], std::env::consts::ARCH);
    assert_eq!(sections(&by_pid), sections(&by_path));
    assert!(
        sections(&by_pid)
            .iter()
            .any(|(n, s)| n == ".text" && *s > 0)
    );
    assert_eq!(by_pid["pid"], target.pid());
    assert_eq!(by_pid["on_disk"], "same", "{run}");
    assert_eq!(by_pid["read_from"], format!("/proc/{}/exe", target.pid()));
    assert_eq!(by_pid["path"], exe.display().to_string());
    assert!(by_path["agent"].is_null() && by_path["on_disk"].is_null());
    assert_eq!(by_pid["debug"]["state"], "present", "{run}");
    assert_eq!(by_pid["debug"]["symtab"], true);
    assert!(
        by_pid["rustc"]
            .as_str()
            .is_some_and(|r| r.starts_with("1.")),
        "{run}"
    );
    // The targets carry no crate list: tokio's version comes from the paths
    // of its panic locations, and must be the locked one.
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let tokio = locked_version(&lock, "tokio");
    assert!(by_pid["crates"].is_null());
    assert_eq!(by_pid["tokio"][0]["version"], tokio.as_str(), "{run}");
    assert_eq!(by_pid["tokio"][0]["from"], "panic locations");

    let agent = &by_pid["agent"];
    assert_eq!(agent["agent_version"], env!("CARGO_PKG_VERSION"), "{run}");
    assert_eq!(agent["tokio_unstable"], true);
    assert_eq!(agent["traces_available"], true);
    assert_eq!(agent["debug_assertions"], cfg!(debug_assertions));
    assert_eq!(agent["runtimes"][0]["name"], "main");
    assert_eq!(agent["runtimes"][0]["flavor"], "multi_thread");
    assert!(by_pid["agent_error"].is_null());

    let text = delouse(&["elf", &target.pid_arg()]).ok();
    for needle in [
        format!("build id        {id}"),
        "the running image".to_owned(),
        format!("tokio           {tokio} (from panic locations)"),
        format!("agent of pid {}", target.pid()),
        "SECTION".to_owned(),
        ".text".to_owned(),
    ] {
        assert!(text.stdout.contains(&needle), "no '{needle}':\n{text}");
    }
    target.assert_alive();
}

/// A process without an agent still gets its ELF facts, a line saying no
/// agent answered, and exit 0.
#[test]
fn elf_of_a_process_without_agent() {
    let _serial = serial();
    let mut child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .expect("start sleep");
    let pid = child.id().to_string();
    let run = delouse(&["elf", &pid, "--json"]);
    let text = delouse(&["elf", &pid]);
    let _ = child.kill();
    let _ = child.wait();
    let run = run.ok();
    let json = run.json();
    assert!(json["agent"].is_null(), "{run}");
    assert!(
        json["agent_error"]
            .as_str()
            .is_some_and(|e| e.contains("no delouse agent")),
        "{run}"
    );
    assert_eq!(json["on_disk"], "same", "{run}");
    assert!(
        json["kind"]
            .as_str()
            .is_some_and(|k| k.contains("executable"))
    );
    assert!(run.stderr.contains("no agent answered"), "{run}");
    let text = text.ok();
    assert!(text.stdout.contains("none answered"), "{text}");
    assert!(text.stderr.contains("no agent answered"), "{text}");
}

/// Strips `from` into `to` with the `object` crate alone: the sections
/// `strip --strip-all` removes (`.symtab`, `.strtab`, DWARF) and the
/// symbols.
fn strip_with_object(from: &Path, to: &Path) {
    let data = std::fs::read(from).expect("read the binary");
    let mut b = object::build::elf::Builder::read(&*data).expect("parse the binary");
    for s in b.sections.iter_mut() {
        let name = s.name.to_string();
        if matches!(name.as_str(), ".symtab" | ".strtab") || name.starts_with(".debug_") {
            s.delete = true;
        }
    }
    for sym in b.symbols.iter_mut() {
        sym.delete = true;
    }
    b.delete_orphans();
    let mut out = Vec::new();
    b.write(&mut out).expect("write the stripped binary");
    std::fs::write(to, out).expect("save the stripped binary");
}

/// A stripped copy is reported stripped, with the same build id.
#[test]
fn a_stripped_binary_is_reported_stripped() {
    let _serial = serial();
    let exe = bin_path("heartbeat");
    let id = note_build_id(&exe);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut copies = Vec::new();
    if have("objcopy") {
        let stripped = dir.path().join("heartbeat.objcopy");
        let out = Command::new("objcopy")
            .arg("--strip-all")
            .arg(&exe)
            .arg(&stripped)
            .output()
            .expect("run objcopy");
        assert!(
            out.status.success(),
            "objcopy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        copies.push(stripped);
    } else {
        eprintln!("objcopy not found: checking only a copy stripped with the object crate");
    }
    let by_object = dir.path().join("heartbeat.object");
    strip_with_object(&exe, &by_object);
    copies.push(by_object);

    for copy in &copies {
        let (run, json) = elf_json(&copy.display().to_string());
        let debug = &json["debug"];
        assert_eq!(debug["stripped"], true, "{run}");
        assert_eq!(debug["symtab"], false, "{run}");
        assert_eq!(debug["state"], "none", "{run}");
        assert_eq!(debug["dwarf_bytes"], 0, "{run}");
        assert_eq!(json["build_id"], id, "{run}");
        assert!(
            !sections(&json)
                .iter()
                .any(|(n, _)| n == ".symtab" || n.starts_with(".debug_info")),
            "{run}"
        );
        let text = delouse(&["elf", &copy.display().to_string()]).ok();
        assert!(text.stdout.contains("none (stripped)"), "{text}");
        assert!(text.stdout.contains("absent (no .symtab)"), "{text}");
    }
}

/// A binary replaced on disk after its process started is reported as
/// replaced, with the running image's build id; deleted, as deleted.
#[test]
fn a_binary_replaced_on_disk_is_detected() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = dir.path().join("heartbeat");
    std::fs::copy(bin_path("heartbeat"), &exe).expect("copy the heartbeat binary");
    let running_id = note_build_id(&exe);
    let mut target = Target::launch("heartbeat", &exe, &[], None, Wait::Socket);

    // What a deployment does: write the new file beside, rename it over.
    let new = dir.path().join("heartbeat.new");
    std::fs::copy(bin_path("plain"), &new).expect("copy the plain binary");
    std::fs::rename(&new, &exe).expect("rename over the running binary");
    let new_id = note_build_id(&exe);
    assert_ne!(running_id, new_id);

    let (run, json) = elf_json(&target.pid_arg());
    assert_eq!(json["on_disk"], "replaced", "{run}");
    assert_eq!(json["build_id"], running_id.as_str(), "{run}");
    assert_eq!(json["path"], exe.display().to_string(), "{run}");
    assert!(json["agent"].is_object(), "{run}");
    let text = delouse(&["elf", &target.pid_arg()]).ok();
    assert!(text.stdout.contains("REPLACED"), "{text}");
    assert!(text.stdout.contains(&running_id), "{text}");
    let (_, on_disk) = elf_json(&exe.display().to_string());
    assert_eq!(on_disk["build_id"], new_id.as_str());

    std::fs::remove_file(&exe).expect("remove the binary");
    let (run, json) = elf_json(&target.pid_arg());
    assert_eq!(json["on_disk"], "deleted", "{run}");
    assert_eq!(json["build_id"], running_id.as_str(), "{run}");
    target.assert_alive();
}

/// The hard and soft core limits of `pid` from `/proc/<pid>/limits`.
fn core_limits(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core limit line")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// With a hard core limit of 0 no core can be written: `--dry-run` says
/// so (exit 0), and `crash --yes` refuses without `--force` and leaves the
/// target running.
#[test]
fn crash_with_core_limit_zero_is_refused() {
    let _serial = serial();
    let mut target = heartbeat_with_limits("ulimit -c 0", None);
    assert_eq!(
        core_limits(target.pid()),
        "Max core file size 0 0 bytes",
        "the shell did not set the limit"
    );
    let pid = target.pid_arg();
    let run = delouse(&["crash", &pid, "--dry-run", "--json"]).ok();
    let json = run.json();
    assert_eq!(json["dry_run"], true, "{run}");
    assert_eq!(json["aborted"], false, "{run}");
    assert_eq!(json["preflight"]["core_hard_limit"], 0, "{run}");
    assert_eq!(json["preflight"]["core_soft_limit"], 0, "{run}");
    assert_eq!(json["can_dump"], false, "{run}");
    assert!(
        json["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("hard core size limit")),
        "{run}"
    );
    let text = delouse(&["crash", &pid, "--dry-run"]).ok();
    assert!(
        text.stdout.contains("NO CORE DUMP CAN BE WRITTEN"),
        "{text}"
    );
    assert!(
        text.stdout.contains("dry run: nothing was aborted"),
        "{text}"
    );

    let refused = delouse(&["crash", &pid, "--yes"]).expect_code(1);
    let line = refused.error_line();
    assert!(line.contains("no core dump can be written"), "{refused}");
    assert!(line.contains("--force"), "{refused}");
    target.assert_alive();
}

/// Without a terminal and without `--yes`, `crash` asks nobody, aborts
/// nothing, and says how to proceed.
#[test]
fn crash_without_a_terminal_refuses() {
    let _serial = serial();
    let mut target = Target::start("heartbeat", &[]);
    let run = delouse(&["crash", &target.pid_arg()]).expect_code(1);
    let line = run.error_line();
    assert!(line.contains("no terminal"), "{run}");
    assert!(line.contains("--yes"), "{run}");
    assert!(
        run.elapsed < Duration::from_secs(5),
        "took {:?}:\n{run}",
        run.elapsed
    );
    std::thread::sleep(Duration::from_millis(200));
    target.assert_running("after crash without --yes");
    target.assert_alive();
}

/// A real crash: the target, started with an unlimited core limit in a
/// temporary directory, dies by SIGABRT and leaves a core there, which gdb
/// opens at the agent's abort.
#[test]
fn crash_leaves_a_core_that_gdb_opens() {
    let _serial = serial();
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern")
        .expect("read core_pattern")
        .trim_end()
        .to_owned();
    if pattern.starts_with('|') || pattern.contains('/') || pattern.is_empty() {
        eprintln!(
            "skipped: /proc/sys/kernel/core_pattern is `{pattern}`: this test needs a core file in the \
             process's working directory (a pattern such as `core`), and must not change system settings"
        );
        return;
    }
    assert!(
        have("gdb"),
        "gdb is needed for this test (to open the core): install it (apt-get install gdb)"
    );
    let uses_pid =
        std::fs::read_to_string("/proc/sys/kernel/core_uses_pid").is_ok_and(|s| s.trim() != "0");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut target = heartbeat_with_limits(
        "ulimit -c unlimited 2>/dev/null || ulimit -S -c \"$(ulimit -H -c)\"",
        Some(dir.path()),
    );
    let pid = target.pid();
    if core_limits(pid).starts_with("Max core file size 0 ") {
        eprintln!("skipped: the hard core limit here is 0 and cannot be raised");
        return;
    }

    let start = Instant::now();
    let run = delouse(&["crash", &target.pid_arg(), "--yes", "--json"]);
    let crash_time = start.elapsed();
    // The test is the target's parent: reap it and see how it ended.
    let status = target
        .close_stdin(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("pid {pid} did not end after the crash:\n{run}"));
    let run = run.ok();
    let json = run.json();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}\n{run}");
    assert!(status.core_dumped(), "no core dumped: {status:?}\n{run}");

    assert_eq!(json["aborted"], true, "{run}");
    assert_eq!(json["can_dump"], true, "{run}");
    let ended = &json["ended"];
    assert_eq!(
        ended["how"], "zombie",
        "the CLI did not see the zombie:\n{run}"
    );
    assert_eq!(ended["signal"], libc::SIGABRT, "{run}");
    assert_eq!(ended["signal_name"], "SIGABRT", "{run}");
    assert_eq!(ended["core_dumped"], true, "{run}");

    let cwd = std::fs::canonicalize(dir.path()).expect("temp dir path");
    let expected = if pattern == "core" {
        cwd.join(if uses_pid {
            format!("core.{pid}")
        } else {
            "core".to_owned()
        })
    } else {
        PathBuf::from(json["core"]["path"].as_str().unwrap_or("?"))
    };
    assert_eq!(
        json["core"]["path"],
        expected.display().to_string(),
        "{run}"
    );
    assert_eq!(json["core"]["fresh"], true, "{run}");
    let size = std::fs::metadata(&expected)
        .unwrap_or_else(|e| panic!("no core at {}: {e}\n{run}", expected.display()))
        .len();
    assert!(size > 0);
    assert_eq!(json["core"]["size"], size, "{run}");
    let exe = bin_path("heartbeat");
    assert_eq!(
        json["commands"][0],
        format!("rust-gdb {} {}", exe.display(), expected.display()),
        "{run}"
    );

    let gdb_start = Instant::now();
    let out = output_within(
        Command::new("gdb")
            .args(["-batch", "-nx", "-ex", "bt"])
            .arg(&exe)
            .arg(&expected),
        Duration::from_secs(120),
    );
    let gdb_time = gdb_start.elapsed();
    let bt = String::from_utf8_lossy(&out.stdout);
    assert!(
        bt.contains("abort_for_core_dump") || bt.contains("delouse::crash"),
        "gdb's backtrace of the core does not show the agent's abort:\n{bt}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "crash: delouse crash took {crash_time:?} (agent to zombie {:.1} ms), core {size} bytes, gdb bt {gdb_time:?}",
        ended["waited_ms"].as_f64().unwrap_or(0.0)
    );
}

/// `cargo`, as the test runner was started with.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A binary built with `cargo auditable` carries its crate list, and
/// `delouse elf` lists it, with tokio's version from it.
#[test]
fn a_cargo_auditable_binary_lists_its_crates() {
    let _serial = serial();
    let installed = Command::new(cargo())
        .args(["auditable", "--version"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!(
            "skipped: `cargo auditable` is not installed (cargo install --locked cargo-auditable): the crate \
             list of a cargo-auditable binary was not checked"
        );
        return;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auditable");
    let target = target_dir().join("auditable");
    let start = Instant::now();
    let out = Command::new(cargo())
        .args(["auditable", "build", "--quiet", "--manifest-path"])
        .arg(fixture.join("Cargo.toml"))
        .current_dir(&fixture)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo auditable build");
    assert!(
        out.status.success(),
        "cargo auditable build of the fixture failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "auditable: cargo auditable build took {:?}",
        start.elapsed()
    );
    let exe = target.join("debug/auditable-fixture");
    let tokio = locked_version(&fixture.join("Cargo.lock"), "tokio");

    let (run, json) = elf_json(&exe.display().to_string());
    let crates = json["crates"]
        .as_array()
        .unwrap_or_else(|| panic!("no crate list:\n{run}"));
    let find = |name: &str| {
        crates
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no crate {name} in the list:\n{run}"))
    };
    assert_eq!(find("tokio")["version"], tokio.as_str(), "{run}");
    assert_eq!(find("tokio")["source"], "crates.io", "{run}");
    assert_eq!(
        find("delouse")["version"],
        env!("CARGO_PKG_VERSION"),
        "{run}"
    );
    assert_eq!(find("delouse")["source"], "local", "{run}");
    assert_eq!(find("auditable-fixture")["root"], true, "{run}");
    assert!(
        crates.iter().filter(|c| c["root"] == true).count() == 1,
        "{run}"
    );
    assert_eq!(json["tokio"][0]["version"], tokio.as_str(), "{run}");
    assert_eq!(json["tokio"][0]["from"], "crate list", "{run}");
    assert!(json["crates_error"].is_null(), "{run}");

    let text = delouse(&["elf", &exe.display().to_string()]).ok();
    assert!(
        text.stdout
            .contains(&format!("crates ({}, from .dep-v0)", crates.len())),
        "{text}"
    );
    assert!(
        text.stdout.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.len() >= 3 && words[0] == "tokio" && words[1] == tokio && words[2] == "crates.io"
        }),
        "no tokio row:\n{text}"
    );

    // The running binary: the same list, and its agent's facts.
    let mut target = Target::launch("auditable-fixture", &exe, &[], None, Wait::Socket);
    let (run, by_pid) = elf_json(&target.pid_arg());
    assert_eq!(by_pid["crates"], json["crates"], "{run}");
    assert_eq!(
        by_pid["agent"]["agent_version"],
        env!("CARGO_PKG_VERSION"),
        "{run}"
    );
    assert_eq!(target.send("ping"), "ok");
}
