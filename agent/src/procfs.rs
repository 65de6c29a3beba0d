//! What the agent reads about its own process from `/proc/self`.

use delouse_proto::Module;

/// Start time of this process in clock ticks since boot (field 22 of
/// `/proc/self/stat`), the value the CLI compares to tell a reused PID.
pub(crate) fn start_time() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_start_time(&s))
        .unwrap_or(0)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after the last `)`.
pub(crate) fn stat_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come field 3 (state) onwards: field 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The path of the running executable.
pub(crate) fn exe() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Executable file mappings of this process, to symbolize addresses.
pub(crate) fn modules() -> Vec<Module> {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| parse_maps(&maps))
        .unwrap_or_default()
}

fn parse_maps(maps: &str) -> Vec<Module> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let offset = f.next()?;
            let _dev = f.next()?;
            let _inode = f.next()?;
            let path = f.collect::<Vec<_>>().join(" ");
            if !perms.contains('x') || !(path.starts_with('/') || path == "[vdso]") {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Module {
                path,
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                file_offset: u64::from_str_radix(offset, 16).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_skips_odd_command_names() {
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1000 10";
        assert_eq!(stat_start_time(stat), Some(98765));
        assert_eq!(stat_start_time("42 (x) S 1"), None);
    }

    #[test]
    fn own_start_time_and_modules() {
        assert!(start_time() > 0);
        let mods = modules();
        let exe = exe();
        assert!(mods.iter().any(|m| m.path == exe), "{exe} not in {mods:?}");
    }

    #[test]
    fn maps_lines() {
        let maps = "55d0c0000000-55d0c0100000 r-xp 00002000 fd:01 123 /usr/bin/my prog\n\
                    7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
                    7ffd0000000-7ffd0002000 r-xp 00000000 00:00 0 [vdso]\n";
        let mods = parse_maps(maps);
        assert_eq!(mods.len(), 2);
        assert_eq!(mods[0].path, "/usr/bin/my prog");
        assert_eq!(mods[0].file_offset, 0x2000);
        assert_eq!(mods[1].path, "[vdso]");
    }
}
