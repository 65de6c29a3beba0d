//! Instruction addresses to functions and source lines, out of process, from
//! the target's module files (blazesym: DWARF, inlined calls, demangling).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer};
use delouse_proto::Module;

use crate::procfs;
use crate::tree::{Frame, SymbolTable};

/// The file to read a module from: the running image for the executable
/// (`/proc/<pid>/exe` works even after the file was replaced or deleted), the
/// path itself when it exists here, else the path inside the target's root.
fn module_file(pid: u32, module_path: &str, exe: Option<&Path>) -> PathBuf {
    let plain = procfs::strip_deleted(module_path);
    if exe.is_some_and(|e| e == Path::new(plain)) {
        let running = procfs::dir(pid).join("exe");
        if std::fs::File::open(&running).is_ok() {
            return running;
        }
    }
    procfs::reachable_path(pid, Path::new(plain))
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

/// The file offset to symbolize for return address `addr` in `module`: the
/// call instruction is just before the return address.
pub fn file_offset(addr: u64, module: &Module) -> Option<u64> {
    addr.checked_sub(1)?
        .checked_sub(module.start)?
        .checked_add(module.file_offset)
}

/// Symbolizes every address of `frames` (return addresses in process `pid`,
/// mapped as `modules` say). Never fails: what does not resolve becomes a
/// placeholder naming the address and module.
pub fn symbolize(pid: u32, frames: &[u64], modules: &[Module]) -> SymbolTable {
    let mut table: SymbolTable = frames
        .iter()
        .map(|&addr| vec![unresolved(addr, None)])
        .collect();
    // Module path -> (frame index, file offset).
    let mut by_module: HashMap<&str, Vec<(usize, u64)>> = HashMap::new();
    for (i, &addr) in frames.iter().enumerate() {
        let Some(module) = Module::find(modules, addr) else {
            continue;
        };
        match file_offset(addr, module) {
            Some(offset) => by_module
                .entry(module.path.as_str())
                .or_default()
                .push((i, offset)),
            None => table[i] = vec![unresolved(addr, Some((&module.path, 0)))],
        }
    }
    if by_module.is_empty() {
        return table;
    }
    let exe = procfs::exe(pid);
    let symbolizer = Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .build();
    let mut paths: Vec<&str> = by_module.keys().copied().collect();
    paths.sort_unstable();
    for path in paths {
        let entries = &by_module[path];
        let offsets: Vec<u64> = entries.iter().map(|&(_, off)| off).collect();
        let file = module_file(pid, path, exe.as_deref());
        let source = Source::Elf(Elf::new(&file));
        let results = symbolizer
            .symbolize(&source, Input::FileOffset(&offsets))
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
        for (k, &(i, offset)) in entries.iter().enumerate() {
            let symtab_name = match symtab.get(k) {
                Some(Symbolized::Sym(s)) => Some(&*s.name),
                _ => None,
            };
            table[i] = match results.get(k) {
                Some(Symbolized::Sym(sym)) => logical_frames(sym, symtab_name),
                _ => vec![unresolved(frames[i], Some((path, offset)))],
            };
        }
    }
    table
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
        assert_eq!(file_offset(0x5010, &m), Some(0x100f));
        assert_eq!(file_offset(0x5000, &m), None);
        assert_eq!(file_offset(0, &m), None);
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
        let table = symbolize(std::process::id(), &[addr, 1], &own_modules());
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
}
