//! Instruction addresses to functions and source lines, out of process, from
//! the target's module files (blazesym: DWARF, inlined calls, demangling).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use blazesym::Pid;
use blazesym::symbolize::source::{Elf, Process, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer};
use delouse_proto::Module;

use crate::error::io_text;
use crate::format::human_duration;
use crate::procfs::{self, Mapping};
use crate::symcache;
use crate::tree::{Frame, SymbolTable};

/// The mapping of the target's own `/proc/<pid>/maps` that backs `module`:
/// a file-backed mapping with the same path that holds the module's
/// address range at the same file offsets. The agent's module list is not
/// to be believed: a hostile agent can name any file (a fifo that blocks
/// the CLI forever, `/dev/zero`, `/etc/shadow` that root could read).
pub fn backing<'m>(module: &Module, maps: &'m [Mapping]) -> Option<&'m Mapping> {
    let path = module
        .path
        .split_ascii_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    maps.iter().find(|m| {
        m.is_file()
            && m.path == path
            && m.start <= module.start
            && module.start < module.end
            && module.end <= m.end
            && m.offset.checked_add(module.start - m.start) == Some(module.file_offset)
    })
}

/// Opens `path` without reading anything or blocking (`O_PATH`), and
/// keeps it only if it is a regular file. `Err` when it cannot be opened,
/// `Ok(None)` when it is something else (a device, a fifo).
fn open_regular(path: &Path) -> std::io::Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)?;
    Ok(file.metadata()?.is_file().then_some(file))
}

/// The file to read a module from, opened: the mapped file itself
/// (`/proc/<pid>/map_files/…`, which needs `CAP_SYS_ADMIN`), the running
/// image for the executable (`/proc/<pid>/exe` works even after the file was
/// replaced or deleted), else the path inside the target's root. Only a
/// regular file is returned.
fn module_file(pid: u32, mapping: &Mapping, exe: Option<&Path>) -> Option<File> {
    let plain = procfs::strip_deleted(&mapping.path);
    let mut candidates =
        vec![procfs::dir(pid).join(format!("map_files/{:x}-{:x}", mapping.start, mapping.end))];
    if exe.is_some_and(|e| e == Path::new(plain)) {
        candidates.push(procfs::dir(pid).join("exe"));
    }
    candidates.push(delouse_proto::location::reroot(
        &procfs::root(pid),
        Path::new(plain),
    ));
    for path in candidates {
        match open_regular(&path) {
            Ok(file) => return file,
            Err(_) => continue,
        }
    }
    None
}

/// `/proc/self/fd/N` of an open file: the path blazesym opens, which is
/// the very file checked (not whatever is at its name by then).
fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

fn basename(path: &str) -> &str {
    let path = procfs::strip_deleted(path);
    path.rsplit('/').next().unwrap_or(path)
}

/// The placeholder frame of an address that did not resolve.
pub fn unresolved(addr: u64, module: Option<(&str, u64)>) -> Frame {
    Frame::unknown(match module {
        Some((path, offset)) => format!("{addr:#x} ({}+{offset:#x})", basename(path)),
        None => format!("{addr:#x}"),
    })
}

fn code_location(info: Option<&CodeInfo<'_>>) -> (Option<String>, Option<u32>, Option<u32>) {
    match info {
        Some(info) => (
            Some(info.to_path().to_string_lossy().into_owned()),
            info.line,
            info.column.map(u32::from),
        ),
        None => (None, None, None),
    }
}

/// The logical frames of one symbolized address, outermost first.
/// `symtab_name` is the ELF symbol table's name for the physical function.
fn logical_frames(sym: &blazesym::symbolize::Sym<'_>, symtab_name: Option<&str>) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    let (file, line, column) = code_location(sym.code_info.as_deref());
    frames.push(Frame {
        function: sym.name.to_string(),
        file,
        line,
        column,
        inlined: false,
    });
    for inlined in &sym.inlined {
        let (file, line, column) = code_location(inlined.code_info.as_ref());
        frames.push(Frame {
            function: inlined.name.to_string(),
            file,
            line,
            column,
            inlined: true,
        });
    }
    // Anonymous bodies first, while the parents still have their debug-info
    // names (whose generic arguments name the bodies).
    for k in (1..frames.len()).rev() {
        if let Some(name) = qualify_anonymous(&frames[k].function, &frames[k - 1].function) {
            frames[k].function = name;
        }
    }
    if let Some(full) = symtab_name
        && !is_qualified(&frames[0].function)
    {
        frames[0].function = full.to_owned();
    }
    frames
}

/// `name` up to its generic arguments: `poll<X>` gives `poll`.
fn base(name: &str) -> &str {
    &name[..name.find('<').unwrap_or(name.len())]
}

/// Whether a function name carries its path (`a::b`, `<T as Tr>::f`).
/// Debug info limited to line tables (`debug = "line-tables-only"`) names
/// functions without their module path: `poll<…>`, `{async_fn#0}`.
pub fn is_qualified(name: &str) -> bool {
    name.starts_with('<') || base(name).contains("::")
}

/// The last top-level generic argument: `f<A, B<C>>` gives `B<C>`.
fn last_generic_arg(name: &str) -> Option<&str> {
    let open = name.find('<')?;
    let inner = name[open + 1..].strip_suffix('>')?;
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => start = i + 1,
            _ => {}
        }
    }
    Some(inner[start..].trim())
}

/// The path of an anonymous body (`{async_fn#0}`, `{closure#1}`,
/// `{async_block#2}`) that line-tables-only debug info names without one,
/// taken from its caller's generic argument: `poll<app::serve::{async_fn_env#0}>`
/// polls the body of `app::serve`, so its inlined `{async_fn#0}` is
/// `app::serve::{async_fn#0}`.
pub fn qualify_anonymous(child: &str, parent: &str) -> Option<String> {
    let child_base = base(child);
    let (kind, n) = child_base
        .strip_prefix('{')?
        .strip_suffix('}')?
        .split_once('#')?;
    let arg = last_generic_arg(parent)?;
    let arg = arg.trim_start_matches(['&', '*', ' ']);
    let arg = arg
        .strip_prefix("mut ")
        .or_else(|| arg.strip_prefix("const "))
        .unwrap_or(arg);
    if arg.starts_with('<') {
        return None;
    }
    let env = format!("{{{kind}_env#{n}}}");
    let prefix = base(arg).strip_suffix(&env)?.strip_suffix("::")?;
    if prefix.is_empty() {
        return None;
    }
    Some(format!("{prefix}::{child}"))
}

/// An instruction address of a stack, and how it was found: that decides
/// which instruction to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    /// The instruction a thread was about to execute when it was
    /// interrupted (the innermost frame of a thread's stack): looked up as is.
    Interrupted(u64),
    /// A return address, the instruction after a call: the call is just
    /// before it, so `address - 1` is looked up (else a call that ends a
    /// function, or an inlined call, would resolve to what follows it).
    Return(u64),
}

impl Address {
    /// Return addresses, as every frame of a task trace is.
    pub fn returns(addresses: &[u64]) -> Vec<Address> {
        addresses.iter().copied().map(Address::Return).collect()
    }

    /// The address as the stack holds it.
    pub fn value(self) -> u64 {
        match self {
            Address::Interrupted(a) | Address::Return(a) => a,
        }
    }

    /// The address of the instruction to symbolize.
    pub fn lookup(self) -> Option<u64> {
        match self {
            Address::Interrupted(a) => Some(a),
            Address::Return(a) => a.checked_sub(1),
        }
    }
}

/// The file offset to symbolize for `addr` in `module`.
pub fn file_offset(addr: Address, module: &Module) -> Option<u64> {
    addr.lookup()?
        .checked_sub(module.start)?
        .checked_add(module.file_offset)
}

/// Whether a module is a kernel-made mapping with no file behind it
/// (`[vdso]`, `[vsyscall]`), as `/proc/<pid>/maps` names them.
fn is_pseudo(module: &Module) -> bool {
    module.path.starts_with('[')
}

/// The vDSO is the same image in every process of one kernel and ABI: a
/// target's vDSO addresses are looked up in this process's own copy, when
/// it is the same size as the target's.
fn symbolize_vdso(
    symbolizer: &Symbolizer,
    entries: &[(usize, u64)],
    module: &Module,
    table: &mut SymbolTable,
) {
    let Some((start, end)) = procfs::own_vdso() else {
        return;
    };
    if end - start != module.end.saturating_sub(module.start) {
        return;
    }
    let addrs: Vec<u64> = entries.iter().map(|&(_, off)| start + off).collect();
    let mut own = Process::new(Pid::Slf);
    own.debug_syms = false;
    own.perf_map = false;
    own.map_files = false;
    let results = symbolizer
        .symbolize(&Source::Process(own), Input::AbsAddr(&addrs))
        .unwrap_or_default();
    for (k, &(i, _)) in entries.iter().enumerate() {
        if let Some(Symbolized::Sym(sym)) = results.get(k) {
            table[i] = vec![Frame::unknown(sym.name.to_string())];
        }
    }
}

/// Addresses to look up in one file: (index in the addresses, file offset).
type Entries = Vec<(usize, u64)>;

/// A symbol table and what went wrong making it.
#[derive(Debug, Default)]
pub struct Symbols {
    /// One entry per address.
    pub table: SymbolTable,
    /// Problems to report (frames are then shown as addresses).
    pub warnings: Vec<String>,
}

/// Placeholders for every address of `addrs`, naming the module and the
/// offset when `modules` has one; and, per module index, the addresses in it
/// with their file offsets.
fn placeholders(addrs: &[Address], modules: &[Module]) -> (SymbolTable, HashMap<usize, Entries>) {
    let mut table: SymbolTable = addrs
        .iter()
        .map(|a| vec![unresolved(a.value(), None)])
        .collect();
    // Module index -> (address index, offset in the module's file).
    let mut by_module: HashMap<usize, Entries> = HashMap::new();
    for (i, &addr) in addrs.iter().enumerate() {
        let Some(m) = addr
            .lookup()
            .and_then(|a| modules.iter().position(|m| m.start <= a && a < m.end))
        else {
            continue;
        };
        let module = &modules[m];
        let Some(offset) = file_offset(addr, module) else {
            table[i] = vec![unresolved(addr.value(), Some((&module.path, 0)))];
            continue;
        };
        table[i] = vec![unresolved(addr.value(), Some((&module.path, offset)))];
        by_module.entry(m).or_default().push((i, offset));
    }
    (table, by_module)
}

fn new_symbolizer() -> Symbolizer {
    Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .build()
}

/// Logical frames by index in the addresses.
type Resolved = Vec<(usize, Vec<Frame>)>;

/// The logical frames of the addresses of one mapped file, from the cache
/// in `cache_dir` where it has them; nothing when the file cannot be opened.
fn symbolize_file(
    pid: u32,
    mapping: &Mapping,
    exe: Option<&Path>,
    entries: &Entries,
    cache_dir: Option<&Path>,
) -> Resolved {
    let Some(opened) = module_file(pid, mapping, exe) else {
        return Vec::new();
    };
    // The file stays open until the symbolizer is done with its path.
    let file = fd_path(&opened);
    let mut cache = symcache::Cache::open(cache_dir, &file);
    let mut resolved = Vec::new();
    let mut misses = Vec::new();
    for &(i, off) in entries {
        match cache.get(off) {
            Some(frames) => resolved.push((i, frames.clone())),
            None => misses.push((i, off)),
        }
    }
    if misses.is_empty() {
        return resolved;
    }
    let symbolizer = new_symbolizer();
    let offsets: Vec<u64> = misses.iter().map(|&(_, off)| off).collect();
    let results = symbolizer
        .symbolize(&Source::Elf(Elf::new(&file)), Input::FileOffset(&offsets))
        .unwrap_or_default();
    // The symbol table has full paths where debug info limited to line
    // tables has bare names; ask it only when that is the case.
    let needs_symtab = results
        .iter()
        .any(|r| matches!(r, Symbolized::Sym(s) if !is_qualified(&s.name)));
    let symtab = if needs_symtab {
        let mut elf = Elf::new(&file);
        elf.debug_syms = false;
        symbolizer
            .symbolize(&Source::Elf(elf), Input::FileOffset(&offsets))
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut found = Vec::new();
    for (k, &(i, off)) in misses.iter().enumerate() {
        let symtab_name = match symtab.get(k) {
            Some(Symbolized::Sym(s)) => Some(&*s.name),
            _ => None,
        };
        if let Some(Symbolized::Sym(sym)) = results.get(k) {
            found.push((i, off, logical_frames(sym, symtab_name)));
        }
    }
    // Kept only when the file's debug info was found (some address has a
    // line): then an address without one has none to find, and one resolved
    // from the symbol table alone is looked up again once a debug file is
    // installed.
    if found.iter().any(|(_, _, f)| f[0].line.is_some()) {
        for (_, off, frames) in &found {
            cache.insert(*off, frames);
        }
    }
    resolved.extend(found.into_iter().map(|(i, _, frames)| (i, frames)));
    drop(symbolizer);
    drop(opened);
    cache.save();
    resolved
}

/// [`symbolize`] on a thread of its own, given up after `limit`: whatever
/// the target's files hold (a debug link to a fifo, a huge section), the
/// command ends. What did not finish shows as addresses.
pub fn symbolize_within(
    pid: u32,
    addrs: &[Address],
    modules: &[Module],
    limit: Duration,
) -> Symbols {
    let (tx, rx) = mpsc::channel();
    let (a, m) = (addrs.to_vec(), modules.to_vec());
    let spawned = std::thread::Builder::new()
        .name("delouse-symbolize".into())
        .spawn(move || {
            let _ = tx.send(symbolize(pid, &a, &m));
        });
    if spawned.is_err() {
        return symbolize(pid, addrs, modules);
    }
    match rx.recv_timeout(limit) {
        Ok(symbols) => symbols,
        Err(_) => Symbols {
            table: placeholders(addrs, modules).0,
            warnings: vec![format!(
                "symbolizing did not finish within {}: frames are shown as addresses",
                human_duration(limit)
            )],
        },
    }
}

/// Symbolizes every address of `addrs` (in process `pid`, mapped as
/// `modules` say, as far as the target's own `/proc/<pid>/maps` agrees).
/// Never fails: what does not resolve becomes a placeholder naming the
/// address and module. Uses the symbol cache (`symcache`).
pub fn symbolize(pid: u32, addrs: &[Address], modules: &[Module]) -> Symbols {
    symbolize_cached(pid, addrs, modules, symcache::dir().as_deref())
}

/// [`symbolize`] with the symbol cache in `cache_dir` (`None`: none).
fn symbolize_cached(
    pid: u32,
    addrs: &[Address],
    modules: &[Module],
    cache_dir: Option<&Path>,
) -> Symbols {
    let (mut table, by_module) = placeholders(addrs, modules);
    let mut warnings = Vec::new();
    if by_module.is_empty() {
        return Symbols { table, warnings };
    }
    let needs_maps = by_module.keys().any(|&m| !is_pseudo(&modules[m]));
    let maps = if needs_maps {
        match procfs::maps(pid) {
            Ok(maps) => maps,
            Err(e) => {
                warnings.push(format!(
                    "cannot read /proc/{pid}/maps: {}: frames in its files are shown as addresses",
                    io_text(&e)
                ));
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let exe = procfs::exe(pid);
    let symbolizer = new_symbolizer();
    // Several mappings of one file are symbolized together.
    let mut by_path: HashMap<&str, (&Mapping, Entries)> = HashMap::new();
    let mut unmapped = 0usize;
    for (m, entries) in by_module {
        let module = &modules[m];
        if module.path == "[vdso]" {
            symbolize_vdso(&symbolizer, &entries, module, &mut table);
        } else if !is_pseudo(module) {
            match backing(module, &maps) {
                Some(mapping) => by_path
                    .entry(module.path.as_str())
                    .or_insert_with(|| (mapping, Vec::new()))
                    .1
                    .extend(entries),
                None if !maps.is_empty() => unmapped += 1,
                None => {}
            }
        }
    }
    if unmapped > 0 {
        warnings.push(format!(
            "{unmapped} module{} the agent named {} not mapped so in /proc/{pid}/maps: {} frames are shown as \
             addresses",
            if unmapped == 1 { "" } else { "s" },
            if unmapped == 1 { "is" } else { "are" },
            if unmapped == 1 { "its" } else { "their" },
        ));
    }
    let mut jobs: Vec<(&Mapping, Entries)> = by_path.into_values().collect();
    jobs.sort_by(|(a, _), (b, _)| a.path.cmp(&b.path));
    let exe = exe.as_deref();
    // One thread per file: each file's debug info is read, decompressed and
    // indexed on its own (libc's compressed debug file alone takes tens of
    // milliseconds), so the files are done side by side.
    let done: Vec<Resolved> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(mapping, entries)| {
                let job = move || symbolize_file(pid, mapping, exe, entries, cache_dir);
                std::thread::Builder::new()
                    .name("delouse-symbolize".into())
                    .spawn_scoped(scope, job)
                    .ok()
            })
            .collect();
        handles
            .into_iter()
            .zip(&jobs)
            .map(|(handle, (mapping, entries))| match handle {
                Some(h) => h.join().unwrap_or_default(),
                // No thread to spare: done here.
                None => symbolize_file(pid, mapping, exe, entries, cache_dir),
            })
            .collect()
    });
    for (i, frames) in done.into_iter().flatten() {
        table[i] = frames;
    }
    Symbols { table, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_point_into_the_call() {
        let m = Module {
            path: "/bin/x".into(),
            start: 0x5000,
            end: 0x9000,
            file_offset: 0x1000,
        };
        assert_eq!(file_offset(Address::Return(0x5010), &m), Some(0x100f));
        assert_eq!(file_offset(Address::Return(0x5000), &m), None);
        assert_eq!(file_offset(Address::Return(0), &m), None);
        // The interrupted instruction of a thread is looked up as is.
        assert_eq!(file_offset(Address::Interrupted(0x5010), &m), Some(0x1010));
        assert_eq!(file_offset(Address::Interrupted(0x5000), &m), Some(0x1000));
    }

    #[test]
    fn unresolved_frames_name_address_and_module() {
        let f = unresolved(
            0x7f00_0000_1234,
            Some(("/usr/lib/libc.so.6 (deleted)", 0x1233)),
        );
        assert_eq!(f.function, "0x7f0000001234 (libc.so.6+0x1233)");
        assert_eq!(unresolved(0x10, None).function, "0x10");
    }

    #[test]
    fn qualified_names() {
        assert!(is_qualified("app::serve::{{closure}}"));
        assert!(is_qualified(
            "<app::Shim<F> as core::future::future::Future>::poll"
        ));
        assert!(!is_qualified("poll<app::serve::{async_fn_env#0}>"));
        assert!(!is_qualified("{async_fn#0}"));
    }

    #[test]
    fn anonymous_bodies_take_the_path_of_their_callers_generic_argument() {
        let q = qualify_anonymous;
        assert_eq!(
            q(
                "{async_fn#0}",
                "poll<heartbeat::wait_for_orders::{async_fn_env#0}>"
            )
            .as_deref(),
            Some("heartbeat::wait_for_orders::{async_fn#0}")
        );
        assert_eq!(
            q(
                "{closure#0}<u64>",
                "poll<core::option::Option<u64>, tokio::sync::mpsc::bounded::{impl#0}::recv::{async_fn#0}::{closure_env#0}<u64>>"
            )
            .as_deref(),
            Some("tokio::sync::mpsc::bounded::{impl#0}::recv::{async_fn#0}::{closure#0}<u64>")
        );
        assert_eq!(
            q(
                "{async_block#1}",
                "as_mut<&mut app::main::{async_block_env#1}>"
            )
            .as_deref(),
            Some("app::main::{async_block#1}")
        );
        // The numbers or kinds differ, or the caller says nothing.
        assert_eq!(q("{async_fn#1}", "poll<app::f::{async_fn_env#0}>"), None);
        assert_eq!(q("{closure#0}", "poll<app::f::{async_fn_env#0}>"), None);
        assert_eq!(q("{async_fn#0}", "{async_fn#0}"), None);
        assert_eq!(q("{async_fn#0}", "poll<{async_fn_env#0}>"), None);
        assert_eq!(q("recv<u64>", "poll<app::f::{async_fn_env#0}>"), None);
        assert_eq!(q("{async_fn#0}", "poll<<A as B>::{async_fn_env#0}>"), None);
        assert_eq!(q("{async_fn#0}", "poll<"), None);
    }

    #[inline(never)]
    fn marker() -> u64 {
        // The return address of a call in this function, as a backtrace
        // would hold it: the address of `marker` itself plus a little works
        // as well for checking that our own binary symbolizes.
        marker as *const () as u64 + 1
    }

    fn own_modules() -> Vec<Module> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let range = parts.next()?;
                let perms = parts.next()?;
                let offset = parts.next()?;
                let path = parts.nth(2)?;
                if !perms.contains('x') || !path.starts_with('/') {
                    return None;
                }
                let (start, end) = range.split_once('-')?;
                Some(Module {
                    path: path.to_owned(),
                    start: u64::from_str_radix(start, 16).ok()?,
                    end: u64::from_str_radix(end, 16).ok()?,
                    file_offset: u64::from_str_radix(offset, 16).ok()?,
                })
            })
            .collect()
    }

    #[test]
    fn own_function_symbolizes_with_its_source_file() {
        let addr = marker();
        let table = symbolize_cached(
            std::process::id(),
            &[Address::Return(addr), Address::Return(1)],
            &own_modules(),
            None,
        )
        .table;
        let outer = &table[0][0];
        assert!(outer.function.contains("marker"), "{table:?}");
        assert!(
            outer
                .file
                .as_deref()
                .unwrap_or("")
                .ends_with("symbolize.rs"),
            "{table:?}"
        );
        assert_eq!(table[1][0].function, "0x1");
    }

    #[test]
    fn the_cache_answers_the_second_time() {
        let dir = tempfile::tempdir().unwrap();
        let addrs = [Address::Return(marker())];
        let first = symbolize_cached(std::process::id(), &addrs, &own_modules(), Some(dir.path()));
        assert!(first.table[0][0].function.contains("marker"), "{first:?}");
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "one cache file, named by build id");
        // Whatever the cache says is what the second run shows: rename the
        // function in the cache file and look again.
        let bytes = std::fs::read(files[0].path()).unwrap();
        let needle = b"marker";
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the name is in the cache");
        let mut edited = bytes.clone();
        edited[at..at + needle.len()].copy_from_slice(b"cached");
        std::fs::write(files[0].path(), edited).unwrap();
        let second = symbolize_cached(std::process::id(), &addrs, &own_modules(), Some(dir.path()));
        assert!(second.table[0][0].function.contains("cached"), "{second:?}");
    }

    #[test]
    fn interrupted_addresses_are_looked_up_as_is() {
        // The first byte of `marker`: as the interrupted instruction it is
        // in `marker`; as a return address, the call is before it.
        let start = marker as *const () as u64;
        let table = symbolize_cached(
            std::process::id(),
            &[Address::Interrupted(start), Address::Return(start)],
            &own_modules(),
            None,
        )
        .table;
        assert!(table[0][0].function.contains("marker"), "{table:?}");
        assert!(
            !table[1].iter().any(|f| f.function.contains("marker")),
            "{table:?}"
        );
    }

    #[test]
    fn vdso_addresses_resolve_through_our_own_vdso() {
        let Some((start, end)) = procfs::own_vdso() else {
            return;
        };
        // The target's vDSO somewhere else, same size.
        let base = 0x7f00_0000_0000;
        let module = Module {
            path: "[vdso]".into(),
            start: base,
            end: base + (end - start),
            file_offset: 0,
        };
        let addrs: Vec<Address> = (0..end - start)
            .step_by(16)
            .map(|off| Address::Interrupted(base + off))
            .collect();
        let table = symbolize_cached(
            std::process::id(),
            &addrs,
            std::slice::from_ref(&module),
            None,
        )
        .table;
        assert!(
            table.iter().any(|f| !f[0].function.starts_with("0x")),
            "nothing in the vdso resolved: {:?}",
            &table[..4]
        );
        // Unresolved ones name the module, not a file.
        assert!(
            table
                .iter()
                .filter(|f| f[0].function.starts_with("0x"))
                .all(|f| f[0].function.contains("([vdso]+0x")),
            "{table:?}"
        );
        // A vDSO of another size is not ours: placeholders only.
        let other = Module {
            end: module.end + 4096,
            ..module
        };
        let table = symbolize_cached(std::process::id(), &addrs[..8], &[other], None).table;
        assert!(table.iter().all(|f| f[0].function.contains("([vdso]+0x")));
    }

    /// A module of our own executable, as the agent would send it.
    fn own_exe_module() -> Module {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let addr = marker();
        own_modules()
            .into_iter()
            .find(|m| Path::new(&m.path) == exe && m.start <= addr && addr < m.end)
            .expect("the executable's code in /proc/self/maps")
    }

    #[test]
    fn only_modules_the_target_maps_are_read() {
        let real = own_exe_module();
        let addr = marker();
        let resolves = |m: Module, a: u64| {
            let s = symbolize_cached(std::process::id(), &[Address::Return(a)], &[m], None);
            (s.table[0][0].function.contains("marker"), s.warnings)
        };
        assert_eq!(resolves(real.clone(), addr), (true, vec![]));
        // The same file claimed at addresses it is not mapped at: not read.
        let shift = 0x1000_0000_0000;
        let moved = Module {
            start: real.start + shift,
            end: real.end + shift,
            ..real.clone()
        };
        let (resolved, warnings) = resolves(moved, addr + shift);
        assert!(!resolved);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("not mapped so in /proc/"),
            "{warnings:?}"
        );
        // At another file offset.
        let offset = Module {
            file_offset: real.file_offset + 0x1000,
            ..real.clone()
        };
        assert!(!resolves(offset, addr).0);
        // Another path over the real range (a file root may read).
        let other = Module {
            path: "/etc/passwd".into(),
            ..real
        };
        assert!(!resolves(other, addr).0);
    }

    #[test]
    fn a_fifo_named_as_a_module_is_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("lib.so");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let module = Module {
            path: fifo.display().to_string(),
            start: 0x10_0000,
            end: 0x20_0000,
            file_offset: 0,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let s = symbolize_cached(
                std::process::id(),
                &[Address::Return(0x10_0100)],
                &[module],
                None,
            );
            let _ = tx.send(s);
        });
        let s = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("symbolizing hung on a fifo");
        assert_eq!(s.table[0][0].function, "0x100100 (lib.so+0xff)");
    }

    #[test]
    fn regular_files_only() {
        assert!(open_regular(Path::new("/proc/self/exe")).unwrap().is_some());
        assert!(open_regular(Path::new("/dev/null")).unwrap().is_none());
        assert!(open_regular(Path::new("/")).unwrap().is_none());
        assert!(open_regular(Path::new("/nonexistent/x")).is_err());
    }

    #[test]
    fn symbolizing_is_bounded_in_time() {
        let real = own_exe_module();
        let addrs = [Address::Return(marker())];
        let s = symbolize_within(
            std::process::id(),
            &addrs,
            std::slice::from_ref(&real),
            Duration::from_secs(60),
        );
        assert!(s.table[0][0].function.contains("marker"), "{s:?}");
        let s = symbolize_within(std::process::id(), &addrs, &[real], Duration::ZERO);
        // Either it was quicker than nothing (never), or it gave up.
        assert!(s.table[0][0].function.starts_with("0x"), "{s:?}");
        assert!(s.warnings[0].contains("did not finish within"), "{s:?}");
    }
}
