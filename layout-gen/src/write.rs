//! Writing generated files without touching unchanged ones, so their mtimes do not trigger
//! needless rebuilds.

use std::path::Path;

use crate::error::Error;

/// Writes `contents` to `path` unless the file already holds exactly that. Returns whether the
/// file was written. The new contents go to a temporary sibling first and are renamed into
/// place, so a reader never sees half a file.
pub fn write_if_changed(path: &Path, contents: &str) -> Result<bool, Error> {
    if std::fs::read(path).is_ok_and(|existing| existing == contents.as_bytes()) {
        return Ok(false);
    }
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension("tmp-layout-gen");
    std::fs::write(&temporary, contents).map_err(err)?;
    std::fs::rename(&temporary, path).map_err(err)?;
    Ok(true)
}
