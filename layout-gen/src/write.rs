//! Writing generated files without touching unchanged ones, so their mtimes do not trigger
//! needless rebuilds.
//!
//! [`FileUpdate`] takes a file's new contents as they are generated: while they match what the
//! file holds, nothing is written; from the first difference on, they go to a temporary sibling
//! that is renamed into place at the end, so a reader never sees half a file, and two writers
//! of one file never mix their contents.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

/// Writes `contents` to `path` unless the file already holds exactly that. Returns whether the
/// file was written. The new contents go to a temporary sibling that is renamed into place.
pub fn write_if_changed(path: &Path, contents: &str) -> Result<bool, Error> {
    write_streamed_if_changed(path, |sink| sink.write_all(contents.as_bytes()))
}

/// [`write_if_changed`] for contents that `emit` writes piece by piece as it generates them.
pub(crate) fn write_streamed_if_changed(
    path: &Path,
    emit: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<bool, Error> {
    let mut update = FileUpdate::new(path);
    emit(&mut update).map_err(|source| update.error(source))?;
    update.finish()
}

/// How many updates this process has begun.
static UPDATES: AtomicU64 = AtomicU64::new(0);

/// New contents for one file, taken as they are generated (it is an [`io::Write`]); see the
/// module documentation.
struct FileUpdate {
    path: PathBuf,
    /// What the file held before (empty if it did not exist).
    old: Vec<u8>,
    existed: bool,
    /// How many bytes of `old` the new contents have matched so far.
    matched: usize,
    /// The temporary file, once the new contents differ from the old.
    temporary: Option<File>,
    /// Which update of this process this is (part of the temporary's name).
    id: u64,
}

impl FileUpdate {
    fn new(path: &Path) -> Self {
        let old = std::fs::read(path);
        Self {
            path: path.to_path_buf(),
            existed: old.is_ok(),
            old: old.unwrap_or_default(),
            matched: 0,
            temporary: None,
            id: UPDATES.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The temporary sibling, named after this process and update so that two generators
    /// writing the same file at once (two builds sharing a folder) never share one temporary.
    fn temporary_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(
            ".{}-{}.tmp-layout-gen",
            std::process::id(),
            self.id
        ));
        self.path.with_file_name(name)
    }

    /// `source` as an error that names the file.
    fn error(&self, source: io::Error) -> Error {
        Error::Write {
            path: self.path.clone(),
            source,
        }
    }

    /// Starts the temporary file with the part of the old contents matched so far.
    fn diverge(&mut self) -> io::Result<&mut File> {
        let mut file = File::create(self.temporary_path())?;
        file.write_all(&self.old[..self.matched])?;
        Ok(self.temporary.insert(file))
    }

    /// Puts the new contents in place if they differ from the old; returns whether they did.
    /// If this fails, the file is left as it was.
    fn finish(mut self) -> Result<bool, Error> {
        if self.temporary.is_none() {
            if self.existed && self.matched == self.old.len() {
                return Ok(false);
            }
            // Shorter than the old contents, or a new file that stayed empty.
            if let Err(source) = self.diverge() {
                return Err(self.error(source));
            }
        }
        drop(self.temporary.take());
        std::fs::rename(self.temporary_path(), &self.path).map_err(|source| {
            let _ = std::fs::remove_file(self.temporary_path());
            self.error(source)
        })?;
        Ok(true)
    }
}

impl Drop for FileUpdate {
    /// An update abandoned part-way (a write failed) leaves no temporary file behind.
    fn drop(&mut self) {
        if self.temporary.take().is_some() {
            let _ = std::fs::remove_file(self.temporary_path());
        }
    }
}

impl Write for FileUpdate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.temporary.is_none() {
            if self.old[self.matched..].starts_with(buf) {
                self.matched += buf.len();
                return Ok(buf.len());
            }
            self.diverge()?;
        }
        let file = self.temporary.as_mut().expect("diverged above");
        file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temporary.as_mut().map_or(Ok(()), Write::flush)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(path: &Path, pieces: &[&str]) -> bool {
        let mut update = FileUpdate::new(path);
        for piece in pieces {
            update.write_all(piece.as_bytes()).unwrap();
        }
        update.finish().unwrap()
    }

    #[test]
    fn a_file_is_rewritten_only_when_its_contents_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.rs");
        assert!(update(&path, &["abc", "def"]), "a new file is written");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abcdef");
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();

        assert!(!update(&path, &["ab", "cdef"]), "same text, other pieces");
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);

        for (pieces, expected) in [
            (&["abc", "dXf"][..], "abcdXf"),
            (&["abc"][..], "abc"),
            (&["abc", "defg"][..], "abcdefg"),
            (&[][..], ""),
        ] {
            assert!(update(&path, pieces), "{expected:?} differs");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
        }
        assert!(
            update(&dir.path().join("empty.rs"), &[]),
            "an empty new file"
        );
        assert!(dir.path().join("empty.rs").is_file());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file is left behind");
    }

    #[test]
    fn a_failed_update_names_the_file_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("out.rs");
        let mut update = FileUpdate::new(&path);
        let error = update.write_all(b"text").unwrap_err();
        let error = update.error(error).to_string();
        assert!(error.contains("out.rs"), "{error}");
        assert!(!path.exists());
    }

    #[test]
    fn an_abandoned_update_leaves_the_file_and_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.rs");
        std::fs::write(&path, "old").unwrap();
        let mut update = FileUpdate::new(&path);
        update
            .write_all(b"new, and then the generator fails")
            .unwrap();
        drop(update);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
