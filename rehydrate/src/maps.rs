//! Reading `/proc/self/maps`: where a loaded module's image lies, and whether it is gone.

use std::ops::Range;
use std::path::Path;

/// Address ranges of every mapping of `path` in this process.
pub fn mappings_of(path: &Path) -> Vec<Range<usize>> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let wanted = path.to_string_lossy();
    maps.lines()
        .filter(|line| line.split_whitespace().nth(5).is_some_and(|p| p == wanted))
        .filter_map(|line| {
            let (start, end) = line.split_whitespace().next()?.split_once('-')?;
            Some(usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?)
        })
        .collect()
}

/// Whether any mapping in this process is writable and executable at once.
pub fn writable_and_executable_mappings() -> Vec<String> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    maps.lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|perms| perms.contains('w') && perms.contains('x'))
        })
        .map(str::to_string)
        .collect()
}
