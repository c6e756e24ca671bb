//! Reading `/proc/self/maps`: where a loaded module's image lies, whether it is gone, and every
//! mapping the relocation scans.
//!
//! The file is kept as text and read line by line ([`lines`]), never collected into a list of
//! ranges: such a list, once freed, would leave the builds' addresses in heap memory, where a
//! reload's scan would take them for references (see `crate::hidden`).

use std::ops::Range;
use std::path::Path;

/// One line of `/proc/self/maps`, borrowing the text it was read from (no allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRef<'t> {
    pub range: Range<usize>,
    /// `rwxp`-style permissions.
    pub perms: &'t str,
    /// A path, a `[name]` such as `[heap]`, or empty for an anonymous mapping.
    pub name: &'t str,
}

impl MappingRef<'_> {
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

/// The text of `/proc/self/maps` (empty when it cannot be read): its mappings, in address
/// order, are its [`lines`].
pub fn text() -> String {
    std::fs::read_to_string("/proc/self/maps").unwrap_or_default()
}

/// Reads `/proc/self/maps` into `text` without allocating: false when it does not fit in its
/// capacity (or cannot be read). For a thread that must not allocate (the world is stopped).
pub fn read_without_allocating(text: &mut Vec<u8>) -> bool {
    text.clear();
    // SAFETY: a valid NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return false;
    }
    let complete = loop {
        let room = text.capacity() - text.len();
        if room == 0 {
            break false;
        }
        // SAFETY: the kernel writes at most `room` bytes into the vector's spare capacity.
        let read = unsafe { libc::read(fd, text.as_mut_ptr().add(text.len()).cast(), room) };
        if read < 0 {
            break false;
        }
        if read == 0 {
            break true;
        }
        // SAFETY: `read` more bytes were initialised by the kernel, within the capacity.
        unsafe { text.set_len(text.len() + read as usize) };
    };
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(fd) };
    complete
}

/// The mappings in text read by [`read_without_allocating`], in address order.
pub fn lines(text: &[u8]) -> impl Iterator<Item = MappingRef<'_>> {
    std::str::from_utf8(text)
        .unwrap_or("")
        .lines()
        .filter_map(parse_line)
}

/// `start-end perms offset device inode [name]`.
fn parse_line(line: &str) -> Option<MappingRef<'_>> {
    let mut parts = line.split_whitespace();
    let (start, end) = parts.next()?.split_once('-')?;
    let perms = parts.next()?;
    let name = parts.nth(3).unwrap_or("");
    Some(MappingRef {
        range: usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?,
        perms,
        name,
    })
}

/// Address ranges of every mapping of `path` in this process.
pub fn mappings_of(path: &Path) -> Vec<Range<usize>> {
    let wanted = path.to_string_lossy();
    let text = text();
    lines(text.as_bytes())
        .filter(|m| m.name == wanted)
        .map(|m| m.range)
        .collect()
}

/// Whether any mapping of `path` is left in this process.
pub fn is_mapped(path: &Path) -> bool {
    let wanted = path.to_string_lossy();
    lines(text().as_bytes()).any(|m| m.name == wanted)
}

/// Whether `range` is covered, end to end, by anonymous no-access mappings (a reservation).
pub fn is_reserved(range: &Range<usize>) -> bool {
    let mut covered = range.start;
    let text = text();
    for mapping in lines(text.as_bytes()) {
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
    let text = text();
    lines(text.as_bytes())
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
    fn the_maps_read_without_allocating_are_those_read_as_text() {
        let mut text = Vec::with_capacity(1 << 20);
        assert!(read_without_allocating(&mut text));
        assert_eq!(text.capacity(), 1 << 20);
        let here = std::ptr::addr_of!(text) as usize;
        assert!(lines(&text).any(|m| m.range.contains(&here) && m.readable_and_writable()));
        let as_text = super::text();
        assert_eq!(
            lines(&text).filter(|m| m.name == "[stack]").count(),
            lines(as_text.as_bytes())
                .filter(|m| m.name == "[stack]")
                .count()
        );
        let mut small = Vec::with_capacity(16);
        assert!(!read_without_allocating(&mut small), "does not fit");
        assert_eq!(small.capacity(), 16);
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
