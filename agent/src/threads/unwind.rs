//! Unwinding the copied stacks with framehop over the modules' DWARF CFI
//! (`.eh_frame`), read from this process's own memory through
//! `/proc/self/mem`: a read of memory that was unmapped meanwhile (a library
//! dlclose'd) fails with an error instead of faulting.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};

#[cfg(target_arch = "aarch64")]
use framehop::aarch64::{CacheAarch64 as Cache, UnwindRegsAarch64, UnwinderAarch64 as Arch};
#[cfg(target_arch = "x86_64")]
use framehop::x86_64::{CacheX86_64 as Cache, UnwindRegsX86_64, UnwinderX86_64 as Arch};

use super::signal::Saved;

/// Frames kept per thread.
const MAX_FRAMES: usize = 256;
/// Largest unwind section read from one module.
const MAX_SECTION: u64 = 64 << 20;

const PT_LOAD: u32 = 1;
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
const PF_X: u32 = 1;

pub(crate) struct Stacks {
    unwinder: Arch<Vec<u8>>,
    cache: Cache,
    /// The code ranges of the modules loaded, sorted: a frame outside all
    /// of them (a library loaded after the table was read, JIT code) was
    /// unwound by guesswork, so the walk is marked as possibly cut short.
    code: Vec<Range<u64>>,
    /// The executable mappings of files without usable unwind tables,
    /// sorted: a frame there is real, but the walk cannot go past it.
    bare: Vec<Range<u64>>,
}

struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    memsz: u64,
}

impl Stacks {
    /// Loads the unwind tables of every module mapped now.
    pub(crate) fn new() -> Stacks {
        let mut unwinder = Arch::new();
        let mut code = Vec::new();
        let mut bare = Vec::new();
        if let (Ok(mem), Ok(maps)) = (
            File::open("/proc/self/mem"),
            std::fs::read_to_string("/proc/self/maps"),
        ) {
            let mut with_tables = Vec::new();
            for (name, base) in module_bases(&maps) {
                if let Some(module) = load_module(&mem, name, base) {
                    code.push(module.avma_range());
                    with_tables.push(name);
                    unwinder.add_module(module);
                }
            }
            bare = executable_mappings(&maps)
                .filter(|(name, _)| !with_tables.contains(name))
                .map(|(_, range)| range)
                .collect();
        }
        code.sort_by_key(|r| r.start);
        bare.sort_by_key(|r| r.start);
        Stacks {
            unwinder,
            cache: Cache::new(),
            code,
            bare,
        }
    }

    /// The thread's frames, innermost first (the interrupted pc, then return
    /// addresses), and how the walk ended.
    ///
    /// The walk ends at the first frame outside every module loaded: a
    /// library loaded after the tables were read, JIT code, or a return
    /// address the unwinder guessed wrongly (code without unwind tables
    /// that moved the stack pointer gives such a guess, and the frames after
    /// it skip the real callers). The interrupted pc is kept even then; a
    /// guessed return address is not.
    pub(crate) fn unwind(&mut self, saved: &Saved) -> Walk {
        let stack = &saved.stack;
        let sp = saved.sp;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            let bytes = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        #[cfg(target_arch = "x86_64")]
        let regs = {
            let _ = saved.lr;
            UnwindRegsX86_64::new(saved.pc, sp, saved.fp)
        };
        #[cfg(target_arch = "aarch64")]
        let regs = UnwindRegsAarch64::new(saved.lr, sp, saved.fp);
        let mut walk = Walk::default();
        let (code, bare) = (&self.code, &self.bare);
        let mut iter = self
            .unwinder
            .iter_frames(saved.pc, regs, &mut self.cache, &mut read_stack);
        loop {
            match iter.next() {
                Ok(Some(FrameAddress::InstructionPointer(pc))) => {
                    walk.frames.push(pc);
                    if in_code(bare, pc) {
                        break walk.cut();
                    }
                    if !in_code(code, pc) {
                        break walk.outside();
                    }
                }
                // The call is the instruction before the return address.
                Ok(Some(FrameAddress::ReturnAddress(ra))) => {
                    let call = ra.get().wrapping_sub(1);
                    if in_code(bare, call) {
                        walk.frames.push(ra.get());
                        break walk.cut();
                    }
                    if !in_code(code, call) {
                        break walk.outside();
                    }
                    walk.frames.push(ra.get());
                }
                Ok(None) => break walk,
                Err(_) => {
                    walk.truncated = true;
                    break walk;
                }
            }
            if walk.frames.len() >= MAX_FRAMES {
                walk.truncated = true;
                break walk;
            }
        }
    }
}

/// Whether `addr` lies in one of the sorted `code` ranges.
fn in_code(code: &[Range<u64>], addr: u64) -> bool {
    let i = code.partition_point(|r| r.start <= addr);
    i > 0 && code[i - 1].contains(&addr)
}

/// A thread's stack walk.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Innermost first.
    pub(crate) frames: Vec<u64>,
    /// It stopped before the outermost frame.
    pub(crate) truncated: bool,
    /// It stopped at a frame outside every module loaded.
    pub(crate) left_modules: bool,
}

impl Walk {
    fn cut(mut self) -> Walk {
        self.truncated = true;
        self
    }

    fn outside(mut self) -> Walk {
        self.truncated = true;
        self.left_modules = true;
        self
    }
}

/// The executable mappings of files (and the vDSO): name and range.
fn executable_mappings(maps: &str) -> impl Iterator<Item = (&str, Range<u64>)> {
    maps.lines().filter_map(|line| {
        let mut f = line.split_ascii_whitespace();
        let (range, perms) = (f.next()?, f.next()?);
        let name = f.nth(3)?;
        if !perms.contains('x') || !(name.starts_with('/') || name == "[vdso]") {
            return None;
        }
        let (a, b) = range.split_once('-')?;
        Some((
            name,
            u64::from_str_radix(a, 16).ok()?..u64::from_str_radix(b, 16).ok()?,
        ))
    })
}

/// The address each mapped ELF file (and the vDSO) starts at: its mapping
/// at file offset 0.
fn module_bases(maps: &str) -> BTreeMap<&str, u64> {
    let mut bases = BTreeMap::new();
    for line in maps.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(range), Some(_perms), Some(offset), Some(_dev), Some(_inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some(name) = f.next() else { continue };
        if !(name.starts_with('/') || name == "[vdso]")
            || !offset.trim_start_matches('0').is_empty()
        {
            continue;
        }
        let Some(start) = range
            .split('-')
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
        else {
            continue;
        };
        bases.entry(name).or_insert(start);
    }
    bases
}

fn read(mem: &File, addr: u64, len: u64) -> Option<Vec<u8>> {
    if len > MAX_SECTION {
        return None;
    }
    let mut buf = vec![0u8; len as usize];
    mem.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn program_headers(mem: &File, base: u64) -> Option<Vec<Phdr>> {
    let ehdr = read(mem, base, 64)?;
    // A 64-bit little-endian ELF file.
    if ehdr.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = u64_at(&ehdr, 0x20)?;
    let phentsize = u64::from(u16_at(&ehdr, 0x36)?);
    let phnum = u64::from(u16_at(&ehdr, 0x38)?);
    if phentsize < 56 || phnum == 0 || phnum > 256 {
        return None;
    }
    let table = read(mem, base + phoff, phentsize * phnum)?;
    Some(
        table
            .chunks_exact(phentsize as usize)
            .filter_map(|p| {
                Some(Phdr {
                    kind: u32_at(p, 0)?,
                    flags: u32_at(p, 4)?,
                    offset: u64_at(p, 8)?,
                    vaddr: u64_at(p, 16)?,
                    memsz: u64_at(p, 40)?,
                })
            })
            .collect(),
    )
}

fn load_module(mem: &File, name: &str, base: u64) -> Option<Module<Vec<u8>>> {
    let phdrs = program_headers(mem, base)?;
    // The load bias: where the segment holding file offset 0 sits, minus the
    // address the file asks for (0 for PIE and libraries).
    let first = phdrs.iter().find(|p| p.kind == PT_LOAD && p.offset == 0)?;
    let bias = base.checked_sub(first.vaddr & !0xfff)?;
    let text = phdrs
        .iter()
        .find(|p| p.kind == PT_LOAD && p.flags & PF_X != 0)?;
    let text_svma = text.vaddr..text.vaddr + text.memsz;

    let hdr = phdrs.iter().find(|p| p.kind == PT_GNU_EH_FRAME)?;
    let hdr_data = read(mem, bias + hdr.vaddr, hdr.memsz)?;
    // .eh_frame_hdr: version 1, then the encoding of the pointer to
    // .eh_frame; 0x1b (pc-relative signed 4 bytes) is what linkers write.
    if hdr_data.first() != Some(&1) || hdr_data.get(1) != Some(&0x1b) {
        return None;
    }
    let rel = i64::from(u32_at(&hdr_data, 4)? as i32);
    let eh_frame_svma = (hdr.vaddr as i64 + 4 + rel) as u64;
    // .eh_frame runs to the end of its segment at most.
    let seg = phdrs.iter().find(|p| {
        p.kind == PT_LOAD && p.vaddr <= eh_frame_svma && eh_frame_svma < p.vaddr + p.memsz
    })?;
    let eh_frame_len = seg.vaddr + seg.memsz - eh_frame_svma;
    let eh_frame = read(mem, bias + eh_frame_svma, eh_frame_len)?;

    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: Some(text_svma.clone()),
        eh_frame_svma: Some(eh_frame_svma..eh_frame_svma + eh_frame_len),
        eh_frame: Some(eh_frame),
        eh_frame_hdr_svma: Some(hdr.vaddr..hdr.vaddr + hdr.memsz),
        eh_frame_hdr: Some(hdr_data),
        ..Default::default()
    };
    Some(Module::new(
        name.to_owned(),
        bias + text_svma.start..bias + text_svma.end,
        bias,
        info,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_ranges() {
        let code = [0x1000..0x2000, 0x5000..0x6000];
        assert!(in_code(&code, 0x1000));
        assert!(in_code(&code, 0x5fff));
        assert!(!in_code(&code, 0x2000));
        assert!(!in_code(&code, 0xfff));
        assert!(!in_code(&code, 0x8));
        assert!(!in_code(&[], 0x1000));
    }

    #[test]
    fn executable_mappings_of_files() {
        let maps = "\
55d0a0000000-55d0a0001000 r--p 00000000 08:01 12 /bin/x
55d0a0001000-55d0a0005000 r-xp 00001000 08:01 12 /bin/x
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
7f1000000000-7f1000010000 rwxp 00000000 00:00 0 [stack]
";
        let found: Vec<_> = executable_mappings(maps).collect();
        assert_eq!(
            found,
            [
                ("/bin/x", 0x55d0a0001000..0x55d0a0005000),
                ("[vdso]", 0x7ffd00000000..0x7ffd00002000)
            ]
        );
    }
}
