//! `delouse elf`: what build a process runs (or a file holds), read from
//! its ELF file with `object`, plus what only the agent knows (DESIGN §8).
//!
//! For a pid the file read is `/proc/<pid>/exe`: the image the process
//! runs, even when the file at its path was deleted or replaced since it
//! started (which is reported). Everything read from the file is untrusted
//! text and is escaped when shown.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use delouse_proto::{Answer, BuildInfo, RequestKind};
use object::read::elf::{Dyn as _, ElfFile, FileHeader, ProgramHeader as _, SectionHeader as _};
use object::{Endianness, FileKind, Object as _, ReadCache, ReadRef, elf};
use serde::{Deserialize, Serialize};

use crate::Output;
use crate::connect::{self, Deadline};
use crate::error::{CliError, Exit, Result, io_text};
use crate::procfs;
use crate::render::{Paint, elf as render};

/// Options of `delouse elf`.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to read.
    pub target: Target,
    /// JSON instead of text.
    pub json: bool,
    /// Bound on the exchange with the agent.
    pub timeout: Duration,
    /// Show every section, not only the notable ones.
    pub all_sections: bool,
}

/// What `delouse elf` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A running process.
    Pid(u32),
    /// A file.
    Path(PathBuf),
}

impl Target {
    /// A pid when `arg` is a number, else a path (`./1234` reads a file
    /// named `1234`).
    pub fn parse(arg: &str) -> std::result::Result<Target, String> {
        if arg.is_empty() {
            return Err("expected a pid or a path".into());
        }
        if arg.bytes().all(|b| b.is_ascii_digit()) {
            return match arg.parse::<u32>() {
                Ok(0) | Err(_) => Err(format!(
                    "`{arg}` is not a valid pid (to read a file of that name, write ./{arg})"
                )),
                Ok(pid) => Ok(Target::Pid(pid)),
            };
        }
        Ok(Target::Path(PathBuf::from(arg)))
    }
}

/// Largest `.dep-v0` section read, and the most its JSON may inflate to
/// (cargo-auditable's own reader's default limit).
const MAX_DEP_INFO: u64 = 8 * 1024 * 1024;

/// Sections shown by default (besides every DWARF section).
const NOTABLE_SECTIONS: &[&str] = &[
    ".interp",
    ".debug_gdb_scripts",
    ".note.gnu.build-id",
    ".dynsym",
    ".dynstr",
    ".text",
    ".rodata",
    ".eh_frame_hdr",
    ".eh_frame",
    ".gcc_except_table",
    ".tdata",
    ".tbss",
    ".data.rel.ro",
    ".data",
    ".bss",
    ".comment",
    ".dep-v0",
    ".gnu_debuglink",
    ".gnu_debugaltlink",
    ".symtab",
    ".strtab",
];

/// Where the debug information of a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DebugState {
    /// DWARF sections are in the file itself.
    Present,
    /// Not in the file; a `.gnu_debuglink` or a build-id file names a
    /// separate one (found or not: see [`DebugInfo`]).
    Separate,
    /// No DWARF and nothing pointing to any.
    None,
}

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    /// Its name.
    pub name: String,
    /// Size in bytes (in memory for `NOBITS` sections such as `.bss`).
    pub size: u64,
    /// `PROGBITS`, `NOBITS`, `NOTE`, … or the number.
    #[serde(rename = "type")]
    pub kind: String,
    /// readelf-style flag letters: `W` write, `A` alloc, `X` exec, `M`
    /// merge, `S` strings, `T` TLS, `C` compressed.
    pub flags: String,
    /// Its address when loaded (0 for sections not loaded).
    pub address: u64,
    /// Whether `SHF_COMPRESSED` is set (compressed DWARF).
    pub compressed: bool,
}

impl Section {
    /// Whether the section is shown without `--all-sections`.
    pub fn notable(&self) -> bool {
        is_dwarf(&self.name) || NOTABLE_SECTIONS.contains(&self.name.as_str())
    }
}

/// A DWARF section (`.debug_gdb_scripts`, gdb's pretty-printer list, is
/// not one).
pub fn is_dwarf(name: &str) -> bool {
    (name.starts_with(".debug_") || name.starts_with(".zdebug_")) && name != ".debug_gdb_scripts"
}

/// What `.gnu_debuglink` says, and whether that file was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Debuglink {
    /// The file name it gives.
    pub file: String,
    /// The CRC-32 it records, in hex (not checked against the file).
    pub crc: String,
    /// Where the file was found, as the target sees the path.
    pub found: Option<String>,
    /// `/usr/lib/debug`, `beside the binary` or `.debug beside the binary`.
    pub found_in: Option<&'static str>,
    /// The places looked at, as the target sees them.
    pub looked_in: Vec<String>,
}

/// Debug information and symbols.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DebugInfo {
    /// Where the DWARF is.
    pub state: DebugState,
    /// Total size of the DWARF sections in the file.
    pub dwarf_bytes: u64,
    /// Whether any DWARF section is compressed.
    pub compressed: bool,
    /// Whether there is a `.symtab`.
    pub symtab: bool,
    /// Entries of `.symtab`.
    pub symbols: u64,
    /// Entries of `.dynsym`.
    pub dynamic_symbols: u64,
    /// No DWARF and no `.symtab`: what `strip --strip-all` leaves.
    pub stripped: bool,
    /// The separate debug file `.gnu_debuglink` names.
    pub debuglink: Option<Debuglink>,
    /// `/usr/lib/debug/.build-id/xx/yyyy.debug`, when it exists.
    pub build_id_file: Option<String>,
    /// The supplementary file `.gnu_debugaltlink` names (dwz).
    pub debugaltlink: Option<String>,
}

/// One crate of cargo-auditable's embedded list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Crate name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// `crates.io`, `git`, `local`, `registry` or another string.
    pub source: String,
    /// `build` for build-time only dependencies; runtime when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Whether it is the root package (the binary's own crate).
    #[serde(default)]
    pub root: bool,
    /// Indexes of its dependencies in the list.
    #[serde(default, skip_serializing)]
    pub dependencies: Vec<usize>,
}

#[derive(Debug, Deserialize)]
struct DepInfo {
    packages: Vec<Package>,
}

/// A tokio version and how it was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokioVersion {
    /// `1.54.1`.
    pub version: String,
    /// `crate list` (`.dep-v0`) or `panic locations` (`tokio-X.Y.Z/src/`
    /// in read-only data).
    pub from: &'static str,
}

/// Everything read from one ELF file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElfFacts {
    /// File size in bytes.
    pub size: u64,
    /// 32 or 64.
    pub class: u8,
    /// `little` or `big`.
    pub endian: &'static str,
    /// `x86_64`, `aarch64`, …
    pub arch: String,
    /// `EXEC`, `DYN`, `REL`, `CORE` or the number.
    pub elf_type: String,
    /// In words: `pie executable`, `static pie executable`, `executable`,
    /// `static executable`, `shared library`, `relocatable object`, `core
    /// dump`.
    pub kind: &'static str,
    /// Position independent executable.
    pub pie: bool,
    /// No interpreter and no needed libraries.
    pub static_linked: bool,
    /// The GNU build id, in hex.
    pub build_id: Option<String>,
    /// `PT_INTERP`: the dynamic loader.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` libraries, in order.
    pub needed: Vec<String>,
    /// The strings of `.comment` (compilers and linkers).
    pub comment: Vec<String>,
    /// The rustc version from `.comment`.
    pub rustc: Option<String>,
    /// Debug information and symbols.
    pub debug: DebugInfo,
    /// Every section, in file order.
    pub sections: Vec<Section>,
    /// cargo-auditable's crate list, when the binary carries one.
    pub crates: Option<Vec<Package>>,
    /// Why the crate list could not be read, when there is one.
    pub crates_error: Option<String>,
    /// The tokio versions linked in.
    pub tokio: Vec<TokioVersion>,
}

/// How the file at the path of a process's executable relates to the
/// image it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnDisk {
    /// The same file.
    Same,
    /// The path now holds another file.
    Replaced,
    /// Nothing is at the path any more.
    Deleted,
    /// Could not tell (the text says why).
    Unknown(String),
}

impl OnDisk {
    /// The JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            OnDisk::Same => "same",
            OnDisk::Replaced => "replaced",
            OnDisk::Deleted => "deleted",
            OnDisk::Unknown(_) => "unknown",
        }
    }
}

/// Where the facts were read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The path shown: the executable's path as the process sees it, or
    /// the path given.
    pub path: String,
    /// The file actually read (`/proc/<pid>/exe`, or the path).
    pub read_from: String,
    /// For a pid: the file at `path` against the running image.
    pub on_disk: Option<OnDisk>,
}

/// What the agent of a process said, or why it did not.
#[derive(Debug, Clone)]
pub enum AgentPart {
    /// Not asked (a file was read).
    NotAsked,
    /// Its build facts.
    Answered(Box<BuildInfo>),
    /// No agent answered (exit 3 kinds: no socket, stale, not an agent).
    Absent(CliError),
    /// An agent was there but the request failed.
    Failed(CliError),
}

/// Reads the facts of the ELF file `file` (already open). `dir` is the
/// directory of the binary as the target sees it and `root` the target's
/// root (`/` for a file), both for finding separate debug files.
pub fn read_facts(file: File, dir: Option<&Path>, root: &Path) -> io::Result<ElfFacts> {
    let size = file.metadata()?.len();
    let cache = ReadCache::new(file);
    let data = &cache;
    let invalid = |e: object::Error| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    let mut facts = match FileKind::parse(data).map_err(invalid)? {
        FileKind::Elf32 => {
            let f = ElfFile::<elf::FileHeader32<Endianness>, _>::parse(data).map_err(invalid)?;
            facts_of(&f, data, size)?
        }
        FileKind::Elf64 => {
            let f = ElfFile::<elf::FileHeader64<Endianness>, _>::parse(data).map_err(invalid)?;
            facts_of(&f, data, size)?
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an ELF file ({other:?})"),
            ));
        }
    };
    find_debug_files(&mut facts.debug, facts.build_id.as_deref(), dir, root);
    Ok(facts)
}

fn facts_of<'data, Elf, R>(
    file: &ElfFile<'data, Elf, R>,
    data: R,
    size: u64,
) -> io::Result<ElfFacts>
where
    Elf: FileHeader<Endian = Endianness>,
    R: ReadRef<'data>,
{
    let endian = file.endian();
    let header = file.elf_header();
    let table = file.elf_section_table();

    let mut sections = Vec::new();
    let mut comment = Vec::new();
    let mut crates = None;
    let mut crates_error = None;
    // Read-only data sections, `.rodata*` first: where panic locations are.
    let mut read_only: Vec<(bool, &'data Elf::SectionHeader)> = Vec::new();
    let mut symbols = 0;
    let mut dynamic_symbols = 0;
    let mut symtab = false;
    for s in table.iter() {
        let name = table
            .section_name(endian, s)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let kind = s.sh_type(endian);
        let flags = s.sh_flags(endian).0;
        let sh_size: u64 = s.sh_size(endian).into();
        let entsize: u64 = s.sh_entsize(endian).into();
        let section_data = || s.data(endian, data).ok();
        if kind == elf::SHT_SYMTAB {
            symtab = true;
            symbols = sh_size.checked_div(entsize).unwrap_or(0);
        } else if kind == elf::SHT_DYNSYM {
            dynamic_symbols = sh_size.checked_div(entsize).unwrap_or(0);
        }
        if name == ".comment" {
            if let Some(bytes) = section_data() {
                comment.extend(
                    bytes
                        .split(|&b| b == 0)
                        .map(|s| String::from_utf8_lossy(s).trim().to_owned())
                        .filter(|s| !s.is_empty()),
                );
            }
        } else if name == ".dep-v0" && kind != elf::SHT_NOBITS {
            let bytes = (sh_size <= MAX_DEP_INFO).then(section_data).flatten();
            match parse_dep_info(sh_size, bytes) {
                Ok(list) => crates = Some(list),
                Err(e) => crates_error = Some(e),
            }
        }
        let read_only_data = kind == elf::SHT_PROGBITS
            && flags & elf::SHF_ALLOC.0 != 0
            && flags & (elf::SHF_WRITE.0 | elf::SHF_EXECINSTR.0) == 0;
        if read_only_data {
            read_only.push((name.starts_with(".rodata"), s));
        }
        sections.push(Section {
            name,
            size: sh_size,
            kind: section_type_name(kind.0),
            flags: flag_letters(flags),
            address: s.sh_addr(endian).into(),
            compressed: flags & elf::SHF_COMPRESSED.0 != 0,
        });
    }
    comment.dedup();

    let mut interpreter = None;
    for ph in file.elf_program_headers() {
        if let Ok(Some(interp)) = ph.interpreter(endian, data) {
            interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let mut needed = Vec::new();
    let mut flags_1 = 0u64;
    match file.elf_dynamic_table() {
        Ok(dynamic) if !dynamic.is_empty() => {
            for d in &dynamic {
                if d.tag == elf::DT_NEEDED {
                    if let Ok(name) = dynamic.string(d) {
                        needed.push(String::from_utf8_lossy(name).into_owned());
                    }
                } else if d.tag == elf::DT_FLAGS_1 {
                    flags_1 = d.val;
                }
            }
        }
        // No section headers: the dynamic segment still gives the flags
        // (its strings would need the address map to find).
        _ => {
            let segment = file
                .elf_program_headers()
                .iter()
                .find_map(|ph| ph.dynamic(endian, data).ok().flatten());
            for d in segment.unwrap_or_default() {
                if d.tag(endian) == elf::DT_FLAGS_1 {
                    flags_1 = d.val(endian);
                }
            }
        }
    }

    let e_type = header.e_type(endian);
    let pie_flag = flags_1 & elf::DF_1_PIE.0 != 0;
    let static_linked = interpreter.is_none() && needed.is_empty();
    let (pie, kind) = match e_type {
        elf::ET_EXEC if static_linked => (false, "static executable"),
        elf::ET_EXEC => (false, "executable"),
        elf::ET_DYN if pie_flag && static_linked => (true, "static pie executable"),
        elf::ET_DYN if pie_flag || interpreter.is_some() => (true, "pie executable"),
        elf::ET_DYN => (false, "shared library"),
        elf::ET_REL => (false, "relocatable object"),
        elf::ET_CORE => (false, "core dump"),
        _ => (false, "unknown kind"),
    };
    let elf_type = match e_type {
        elf::ET_EXEC => "EXEC".to_owned(),
        elf::ET_DYN => "DYN".to_owned(),
        elf::ET_REL => "REL".to_owned(),
        elf::ET_CORE => "CORE".to_owned(),
        other => format!("{:#x}", other.0),
    };

    let build_id = file.build_id().ok().flatten().map(hex);
    let debuglink = file
        .gnu_debuglink()
        .ok()
        .flatten()
        .map(|(name, crc)| Debuglink {
            file: String::from_utf8_lossy(name).into_owned(),
            crc: format!("{crc:08x}"),
            found: None,
            found_in: None,
            looked_in: Vec::new(),
        });
    let debugaltlink = file
        .gnu_debugaltlink()
        .ok()
        .flatten()
        .map(|(name, _)| String::from_utf8_lossy(name).into_owned());
    let dwarf: Vec<&Section> = sections.iter().filter(|s| is_dwarf(&s.name)).collect();
    let has_dwarf = dwarf.iter().any(|s| s.kind != "NOBITS" && s.size > 0);
    let debug = DebugInfo {
        state: if has_dwarf {
            DebugState::Present
        } else if debuglink.is_some() {
            DebugState::Separate
        } else {
            DebugState::None
        },
        dwarf_bytes: dwarf.iter().map(|s| s.size).sum(),
        compressed: dwarf
            .iter()
            .any(|s| s.compressed || s.name.starts_with(".zdebug_")),
        symtab,
        symbols,
        dynamic_symbols,
        stripped: !has_dwarf && !symtab,
        debuglink,
        build_id_file: None,
        debugaltlink,
    };

    let rustc = comment
        .iter()
        .find_map(|c| c.strip_prefix("rustc version ").map(str::to_owned));
    let mut tokio: Vec<TokioVersion> = crates
        .iter()
        .flatten()
        .filter(|p: &&Package| p.name == "tokio")
        .map(|p| TokioVersion {
            version: p.version.clone(),
            from: "crate list",
        })
        .collect();
    if tokio.is_empty() {
        let mut found = Vec::new();
        let any_rodata = read_only.iter().any(|(rodata, _)| *rodata);
        for (rodata, s) in &read_only {
            if *rodata == any_rodata
                && let Ok(bytes) = s.data(endian, data)
            {
                tokio_versions_in(bytes, &mut found);
            }
        }
        found.sort_by_key(|v| version_key(v));
        found.dedup();
        tokio = found
            .into_iter()
            .map(|version| TokioVersion {
                version,
                from: "panic locations",
            })
            .collect();
    }

    Ok(ElfFacts {
        size,
        class: if header.is_type_64() { 64 } else { 32 },
        endian: if header.is_little_endian() {
            "little"
        } else {
            "big"
        },
        arch: arch_name(file.architecture(), header.e_machine(endian).0),
        elf_type,
        kind,
        pie,
        static_linked,
        build_id,
        interpreter,
        needed,
        comment,
        rustc,
        debug,
        sections,
        crates,
        crates_error,
        tokio,
    })
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn arch_name(arch: object::Architecture, machine: u16) -> String {
    use object::Architecture as A;
    match arch {
        A::X86_64 => "x86_64".into(),
        A::X86_64_X32 => "x86_64 (x32 ABI)".into(),
        A::I386 => "x86 (i386)".into(),
        A::Aarch64 => "aarch64".into(),
        A::Aarch64_Ilp32 => "aarch64 (ilp32)".into(),
        A::Arm => "arm".into(),
        A::S390x => "s390x".into(),
        A::Riscv64 => "riscv64".into(),
        A::Riscv32 => "riscv32".into(),
        A::PowerPc64 => "powerpc64".into(),
        A::PowerPc => "powerpc".into(),
        A::LoongArch64 => "loongarch64".into(),
        A::Mips64 => "mips64".into(),
        A::Mips => "mips".into(),
        A::Sparc64 => "sparc64".into(),
        A::Unknown => format!("unknown (e_machine {machine})"),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

fn section_type_name(t: u32) -> String {
    let name = match elf::SectionType(t) {
        elf::SHT_NULL => "NULL",
        elf::SHT_PROGBITS => "PROGBITS",
        elf::SHT_SYMTAB => "SYMTAB",
        elf::SHT_STRTAB => "STRTAB",
        elf::SHT_RELA => "RELA",
        elf::SHT_HASH => "HASH",
        elf::SHT_DYNAMIC => "DYNAMIC",
        elf::SHT_NOTE => "NOTE",
        elf::SHT_NOBITS => "NOBITS",
        elf::SHT_REL => "REL",
        elf::SHT_DYNSYM => "DYNSYM",
        elf::SHT_INIT_ARRAY => "INIT_ARRAY",
        elf::SHT_FINI_ARRAY => "FINI_ARRAY",
        elf::SHT_PREINIT_ARRAY => "PREINIT_ARRAY",
        elf::SHT_GROUP => "GROUP",
        elf::SHT_GNU_HASH => "GNU_HASH",
        elf::SHT_GNU_VERSYM => "VERSYM",
        elf::SHT_GNU_VERDEF => "VERDEF",
        elf::SHT_GNU_VERNEED => "VERNEED",
        _ => return format!("{t:#x}"),
    };
    name.to_owned()
}

fn flag_letters(flags: u64) -> String {
    [
        (elf::SHF_WRITE.0, 'W'),
        (elf::SHF_ALLOC.0, 'A'),
        (elf::SHF_EXECINSTR.0, 'X'),
        (elf::SHF_MERGE.0, 'M'),
        (elf::SHF_STRINGS.0, 'S'),
        (elf::SHF_TLS.0, 'T'),
        (elf::SHF_COMPRESSED.0, 'C'),
    ]
    .iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|&(_, c)| c)
    .collect()
}

/// Decompresses and parses cargo-auditable's `.dep-v0` section: zlib over
/// JSON `{"packages":[…]}`.
fn parse_dep_info(size: u64, data: Option<&[u8]>) -> std::result::Result<Vec<Package>, String> {
    if size > MAX_DEP_INFO {
        return Err(format!(
            ".dep-v0 is {size} bytes, over the {MAX_DEP_INFO}-byte limit"
        ));
    }
    let data = data.ok_or_else(|| ".dep-v0 could not be read".to_owned())?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_DEP_INFO + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!(".dep-v0 is not zlib data: {}", io_text(&e)))?;
    if json.len() as u64 > MAX_DEP_INFO {
        return Err(format!(
            ".dep-v0 inflates to over {MAX_DEP_INFO} bytes: not read"
        ));
    }
    let info: DepInfo = serde_json::from_slice(&json)
        .map_err(|e| format!(".dep-v0 is not cargo-auditable's JSON: {e}"))?;
    Ok(info.packages)
}

/// Appends to `out` every `X.Y.Z` of `tokio-X.Y.Z/src/` in `bytes` (the
/// panic locations of tokio's code carry its source path).
fn tokio_versions_in(bytes: &[u8], out: &mut Vec<String>) {
    const NEEDLE: &[u8] = b"tokio-";
    let mut at = 0;
    while let Some(i) = bytes[at..].iter().position(|&b| b == b't') {
        let start = at + i;
        at = start + 1;
        if !bytes[start..].starts_with(NEEDLE) {
            continue;
        }
        // A path component: `/tokio-…` or `\tokio-…`, or the start.
        if start > 0 && !matches!(bytes[start - 1], b'/' | b'\\' | 0) {
            continue;
        }
        let rest = &bytes[start + NEEDLE.len()..];
        let len = rest
            .iter()
            .take(64)
            .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+')))
            .unwrap_or(0);
        let (version, after) = rest.split_at(len);
        if !(after.starts_with(b"/src/") || after.starts_with(b"\\src\\")) {
            continue;
        }
        let Ok(version) = std::str::from_utf8(version) else {
            continue;
        };
        if is_semver(version) && !out.iter().any(|v| v == version) {
            out.push(version.to_owned());
        }
    }
}

/// `1.54.1`, `1.0.0-alpha.1`, `1.2.3+build`.
fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(['-', '+'])
        .next()
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// `path` as seen inside `root` (`/` is the caller's own root).
fn under_root(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new("/") {
        return path.to_owned();
    }
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Looks for the separate debug files gdb would use: by build id under
/// `/usr/lib/debug/.build-id/`, and the `.gnu_debuglink` file beside the
/// binary, in `.debug/` beside it, and under `/usr/lib/debug/<dir>/`.
fn find_debug_files(
    debug: &mut DebugInfo,
    build_id: Option<&str>,
    dir: Option<&Path>,
    root: &Path,
) {
    let exists = |p: &Path| under_root(root, p).is_file();
    if let Some(id) = build_id.filter(|id| id.len() > 2) {
        let path = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
        if exists(Path::new(&path)) {
            debug.build_id_file = Some(path);
        }
    }
    let Some(link) = debug.debuglink.as_mut() else {
        return;
    };
    // A name with a slash is not a plain file name: do not follow it.
    if link.file.contains('/') || link.file.is_empty() {
        return;
    }
    let mut candidates: Vec<(PathBuf, &'static str)> = Vec::new();
    if let Some(dir) = dir {
        candidates.push((dir.join(&link.file), "beside the binary"));
        candidates.push((
            dir.join(".debug").join(&link.file),
            ".debug beside the binary",
        ));
        let rel = dir.strip_prefix("/").unwrap_or(dir);
        candidates.push((
            Path::new("/usr/lib/debug").join(rel).join(&link.file),
            "/usr/lib/debug",
        ));
    } else {
        candidates.push((
            Path::new("/usr/lib/debug").join(&link.file),
            "/usr/lib/debug",
        ));
    }
    for (path, place) in candidates {
        link.looked_in.push(path.display().to_string());
        if link.found.is_none() && exists(&path) {
            link.found = Some(path.display().to_string());
            link.found_in = Some(place);
        }
    }
    if link.found.is_none()
        && let Some(file) = &debug.build_id_file
    {
        link.found = Some(file.clone());
        link.found_in = Some("/usr/lib/debug");
    }
}

/// Opens the running image of `pid` and says how the file at its path
/// relates to it.
fn open_running_image(pid: u32) -> io::Result<(File, Origin, Option<PathBuf>)> {
    let exe_link = procfs::dir(pid).join("exe");
    let file = File::open(&exe_link)?;
    let link = std::fs::read_link(&exe_link)?;
    let link = link.to_string_lossy().into_owned();
    let deleted = link.ends_with(" (deleted)");
    let path = procfs::strip_deleted(&link).to_owned();
    let running = file.metadata()?;
    let root = procfs::root(pid);
    let on_disk = match std::fs::metadata(under_root(&root, Path::new(&path)))
        .or_else(|_| std::fs::metadata(&path))
    {
        Ok(m) if m.dev() == running.dev() && m.ino() == running.ino() => OnDisk::Same,
        Ok(_) => OnDisk::Replaced,
        Err(e) if e.kind() == io::ErrorKind::NotFound => OnDisk::Deleted,
        Err(_) if deleted => OnDisk::Deleted,
        Err(e) => OnDisk::Unknown(io_text(&e)),
    };
    let dir = Path::new(&path).parent().map(Path::to_owned);
    Ok((
        file,
        Origin {
            path,
            read_from: exe_link.display().to_string(),
            on_disk: Some(on_disk),
        },
        dir,
    ))
}

/// An error opening or reading `what` as a [`CliError`].
fn read_error(what: &Path, e: &io::Error, pid: Option<u32>) -> CliError {
    let shown = what.display();
    match e.kind() {
        io::ErrorKind::PermissionDenied => CliError::permission(match pid {
            Some(pid) => format!(
                "permission denied: {shown}: run delouse as the user of pid {pid} or as root"
            ),
            None => format!("permission denied: {shown}"),
        }),
        io::ErrorKind::NotFound => match pid {
            Some(pid) if procfs::exists(pid) => CliError::error(format!(
                "pid {pid} has no executable file ({shown} leads nowhere): it is a kernel thread, or exiting"
            )),
            Some(pid) => CliError::no_agent(format!("no process with pid {pid}: it exited")),
            None => CliError::error(format!("no such file: {shown}")),
        },
        io::ErrorKind::InvalidData => {
            CliError::error(format!("not an ELF file: {shown} ({})", io_text(e)))
        }
        _ => CliError::error(format!("cannot read {shown}: {}", io_text(e))),
    }
}

/// The agent's build facts, or why there are none.
fn ask_agent(pid: u32, timeout: Duration) -> (AgentPart, Option<String>) {
    let conn = match connect::open(pid, Deadline::after(timeout)) {
        Ok(c) => c,
        Err(e) if e.exit == Exit::NoAgent => return (AgentPart::Absent(e), None),
        Err(e) => return (AgentPart::Failed(e), None),
    };
    let exe = Some(conn.welcome.exe.clone());
    match conn.request(RequestKind::Build) {
        Ok(Answer::Build(info)) => (AgentPart::Answered(Box::new(info)), exe),
        Ok(other) => (
            AgentPart::Failed(connect::wrong_answer(pid, "build facts", &other)),
            exe,
        ),
        Err(e) => (AgentPart::Failed(e), exe),
    }
}

/// Runs `delouse elf`.
pub fn run(opts: &Options) -> Result<Output> {
    let mut out = Output::default();
    let (origin, facts, agent, pid) = match &opts.target {
        Target::Path(path) => {
            let file = File::open(path).map_err(|e| read_error(path, &e, None))?;
            if file.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(CliError::error(format!(
                    "{} is a directory: give an ELF file or a pid",
                    path.display()
                )));
            }
            let dir = std::fs::canonicalize(path)
                .ok()
                .and_then(|p| p.parent().map(Path::to_owned));
            let facts = read_facts(file, dir.as_deref(), Path::new("/"))
                .map_err(|e| read_error(path, &e, None))?;
            let origin = Origin {
                path: path.display().to_string(),
                read_from: path.display().to_string(),
                on_disk: None,
            };
            (origin, Some(facts), AgentPart::NotAsked, None)
        }
        Target::Pid(pid) => {
            let pid = *pid;
            if !procfs::exists(pid) {
                return Err(CliError::no_agent(format!(
                    "no process with pid {pid}: check the pid (`delouse ps` lists agents)"
                )));
            }
            if let Some(tgid) = procfs::thread_of(pid) {
                return Err(CliError::no_agent(format!(
                    "{pid} is a thread of process {tgid}; use pid {tgid}"
                )));
            }
            let image = open_running_image(pid).and_then(|(file, origin, dir)| {
                let facts = read_facts(file, dir.as_deref(), &procfs::root(pid))?;
                Ok((origin, facts))
            });
            let (agent, agent_exe) = ask_agent(pid, opts.timeout);
            match image {
                Ok((origin, facts)) => (origin, Some(facts), agent, Some(pid)),
                Err(e) => {
                    let err = read_error(&procfs::dir(pid).join("exe"), &e, Some(pid));
                    // Fall back to the file at the path the agent reports.
                    let fallback = agent_exe.as_deref().and_then(|exe| {
                        let path = Path::new(procfs::strip_deleted(exe));
                        let file = File::open(path).ok()?;
                        let facts = read_facts(file, path.parent(), Path::new("/")).ok()?;
                        Some((path.to_owned(), facts))
                    });
                    match (fallback, &agent) {
                        (Some((path, facts)), _) => {
                            out.warn(format!(
                                "{}; read {} instead, which may not be the running image",
                                err.message,
                                path.display()
                            ));
                            let origin = Origin {
                                path: path.display().to_string(),
                                read_from: path.display().to_string(),
                                on_disk: Some(OnDisk::Unknown(err.message.clone())),
                            };
                            (origin, Some(facts), agent, Some(pid))
                        }
                        (None, AgentPart::Answered(_)) => {
                            out.failure = Some(err.clone());
                            let origin = Origin {
                                path: agent_exe.clone().unwrap_or_default(),
                                read_from: procfs::dir(pid).join("exe").display().to_string(),
                                on_disk: Some(OnDisk::Unknown(err.message.clone())),
                            };
                            (origin, None, agent, Some(pid))
                        }
                        (None, _) => return Err(err),
                    }
                }
            }
        }
    };
    match &agent {
        AgentPart::Absent(e) => out.info(format!(
            "no agent answered in pid {}: {}",
            pid.unwrap_or(0),
            e.message
        )),
        // The ELF facts are printed; the one error line after them says
        // what is missing, and the status is the failure's.
        AgentPart::Failed(e) => {
            out.failure.get_or_insert_with(|| {
                CliError::new(
                    e.exit,
                    format!("the agent's build facts are missing: {}", e.message),
                )
            });
        }
        AgentPart::NotAsked | AgentPart::Answered(_) => {}
    }
    if let Some(facts) = &facts
        && let Some(e) = &facts.crates_error
    {
        out.warn(format!("the embedded crate list was not read: {e}"));
    }
    let report = render::Report {
        pid,
        origin: &origin,
        facts: facts.as_ref(),
        agent: &agent,
        all_sections: opts.all_sections,
    };
    out.stdout = if opts.json {
        render::json(&report)
    } else {
        render::text(&report, Paint::for_stdout())
    };
    Ok(out)
}

/// Reads the running image of `pid` (for `delouse crash`: the executable
/// to give gdb, and whether the file on disk still is it).
pub fn running_image(pid: u32) -> Option<Origin> {
    open_running_image(pid).ok().map(|(_, origin, _)| origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn targets_are_pids_or_paths() {
        assert_eq!(Target::parse("42"), Ok(Target::Pid(42)));
        assert_eq!(
            Target::parse("./42"),
            Ok(Target::Path(PathBuf::from("./42")))
        );
        assert_eq!(
            Target::parse("/usr/bin/x"),
            Ok(Target::Path(PathBuf::from("/usr/bin/x")))
        );
        assert!(Target::parse("0").unwrap_err().contains("./0"));
        assert!(Target::parse("99999999999").is_err());
        assert!(Target::parse("").is_err());
    }

    #[test]
    fn tokio_versions_from_panic_locations() {
        let data = b"\0/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/park.rs\0\
                     tokio-1.54.1/src/task/mod.rs\0/x/tokio-util-0.7.1/src/a.rs\0/x/tokio-macros-2.5.0/src/lib.rs\0\
                     /y/tokio-1.9.0-alpha.1/src/x.rs\0/z/mytokio-9.9.9/src/x.rs\0tokio-1.2/src/\0\
                     C:\\r\\tokio-1.40.0\\src\\lib.rs\0/w/tokio-1.0.0/README";
        let mut out = Vec::new();
        tokio_versions_in(data, &mut out);
        assert_eq!(out, ["1.54.1", "1.9.0-alpha.1", "1.40.0"]);
        let mut sorted = out.clone();
        sorted.sort_by_key(|v| version_key(v));
        assert_eq!(sorted, ["1.9.0-alpha.1", "1.40.0", "1.54.1"]);
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn cargo_auditable_crate_lists() {
        let json = br#"{"packages":[
            {"name":"app","version":"0.1.0","source":"local","dependencies":[1,2],"root":true},
            {"name":"tokio","version":"1.54.1","source":"crates.io","dependencies":[2]},
            {"name":"cc","version":"1.2.0","source":"crates.io","kind":"build"}
        ],"format":1}"#;
        let data = zlib(json);
        let list = parse_dep_info(data.len() as u64, Some(&data)).unwrap();
        assert_eq!(list.len(), 3);
        assert!(list[0].root && !list[1].root);
        assert_eq!(list[1].version, "1.54.1");
        assert_eq!(list[2].kind.as_deref(), Some("build"));
        assert!(
            parse_dep_info(4, Some(b"nope"))
                .unwrap_err()
                .contains("not zlib")
        );
        let data = zlib(b"{\"crates\":[]}");
        assert!(
            parse_dep_info(data.len() as u64, Some(&data))
                .unwrap_err()
                .contains("not cargo-auditable's JSON")
        );
        assert!(parse_dep_info(MAX_DEP_INFO + 1, Some(&[])).is_err());
        // A zlib bomb stops at the limit.
        let bomb = zlib(&vec![b' '; MAX_DEP_INFO as usize + 10]);
        assert!(
            parse_dep_info(bomb.len() as u64, Some(&bomb))
                .unwrap_err()
                .contains("inflates")
        );
    }

    #[test]
    fn semver_and_flags() {
        assert!(is_semver("1.54.1") && is_semver("1.0.0-rc.1") && is_semver("1.2.3+x"));
        assert!(!is_semver("1.2") && !is_semver("a.b.c") && !is_semver("1..2"));
        assert_eq!(flag_letters(0b110), "AX");
        assert_eq!(flag_letters(elf::SHF_COMPRESSED.0), "C");
        assert_eq!(section_type_name(8), "NOBITS");
        assert_eq!(section_type_name(0x6fff_ffff), "VERSYM");
        assert_eq!(section_type_name(0x1234_5678), "0x12345678");
    }

    #[test]
    fn reads_its_own_executable() {
        let me = std::process::id();
        let (file, origin, dir) = open_running_image(me).unwrap();
        assert_eq!(origin.on_disk, Some(OnDisk::Same));
        let facts = read_facts(file, dir.as_deref(), Path::new("/")).unwrap();
        assert_eq!(facts.class, 64);
        assert!(facts.pie || facts.elf_type == "EXEC", "{facts:?}");
        assert!(facts.build_id.as_ref().is_some_and(|id| id.len() >= 16));
        assert!(facts.rustc.is_some(), "{:?}", facts.comment);
        assert!(facts.sections.iter().any(|s| s.name == ".text"));
        assert!(facts.debug.symtab);
    }
}
