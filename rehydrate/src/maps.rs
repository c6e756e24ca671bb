//! Reading `/proc/self/maps`: where a loaded module's image lies, whether it is gone, and every
//! mapping the relocation scans.

use std::ops::Range;
use std::path::Path;

/// One line of `/proc/self/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub range: Range<usize>,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// A path, a `[name]` such as `[heap]`, or empty for an anonymous mapping.
    pub name: String,
}

impl Mapping {
    pub fn readable_and_writable(&self) -> bool {
        self.perms.starts_with("rw")
    }

    /// An anonymous mapping no one may access (a guard page, a reservation).
    pub fn no_access_anonymous(&self) -> bool {
        self.perms.starts_with("---") && self.name.is_empty()
    }
}

/// A fresh private anonymous mapping of `length` bytes with protection `prot`, near `hint`
/// when the kernel can (0: anywhere; without `MAP_FIXED` the hint never replaces a mapping).
pub fn map_anonymous(hint: usize, length: usize, prot: i32) -> std::io::Result<*mut u8> {
    // SAFETY: without MAP_FIXED no existing mapping is touched; a new private anonymous mapping affects nothing else.
    let mapped = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            length,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(mapped.cast())
}

/// Every mapping of this process, in address order (empty when the file cannot be read).
pub fn all() -> Vec<Mapping> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    maps.lines().filter_map(parse_line).collect()
}

/// `start-end perms offset device inode [name]`.
fn parse_line(line: &str) -> Option<Mapping> {
    let mut parts = line.split_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let perms = parts.next()?.to_string();
    let name = parts.nth(3).unwrap_or("").to_string();
    Some(Mapping {
        range: usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?,
        perms,
        name,
    })
}

/// Address ranges of every mapping of `path` in this process.
pub fn mappings_of(path: &Path) -> Vec<Range<usize>> {
    let wanted = path.to_string_lossy();
    all()
        .into_iter()
        .filter(|m| m.name == wanted)
        .map(|m| m.range)
        .collect()
}

/// Whether `range` is covered, end to end, by anonymous no-access mappings (a reservation).
pub fn is_reserved(range: &Range<usize>) -> bool {
    let mut covered = range.start;
    for mapping in all() {
        if covered >= range.end {
            break;
        }
        if mapping.range.start <= covered && covered < mapping.range.end {
            if !mapping.no_access_anonymous() {
                return false;
            }
            covered = mapping.range.end;
        }
    }
    covered >= range.end
}

/// Whether any mapping in this process is writable and executable at once.
pub fn writable_and_executable_mappings() -> Vec<String> {
    all()
        .into_iter()
        .filter(|m| m.perms.contains('w') && m.perms.contains('x'))
        .map(|m| {
            format!(
                "{:#x}-{:#x} {} {}",
                m.range.start, m.range.end, m.perms, m.name
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_a_name_are_read() {
        let named = parse_line("7f00-7f10 r-xp 00001000 08:01 1234   /usr/lib/libc.so.6").unwrap();
        assert_eq!(named.range, 0x7f00..0x7f10);
        assert_eq!(named.perms, "r-xp");
        assert_eq!(named.name, "/usr/lib/libc.so.6");
        let anonymous = parse_line("1000-2000 ---p 00000000 00:00 0").unwrap();
        assert!(anonymous.no_access_anonymous());
        assert_eq!(anonymous.name, "");
        assert!(parse_line("garbage").is_none());
    }

    #[test]
    fn a_fresh_reservation_is_seen_and_a_readable_mapping_is_not() {
        let length = 3 * 4096;
        let at = map_anonymous(0, length, libc::PROT_NONE)
            .unwrap()
            .cast::<libc::c_void>();
        let range = at as usize..at as usize + length;
        assert!(is_reserved(&range));
        let middle = (range.start + 4096) as *mut libc::c_void;
        // SAFETY: the middle page of the mapping made above.
        let status = unsafe { libc::mprotect(middle, 4096, libc::PROT_READ) };
        assert_eq!(status, 0);
        assert!(!is_reserved(&range));
        // SAFETY: the mapping made above, used by nothing else.
        unsafe { libc::munmap(at, length) };
    }
}
