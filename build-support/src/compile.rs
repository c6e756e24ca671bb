//! Compiling translation units and linking the shared library, each step skipped when a stamp
//! shows that nothing it read has changed.
//!
//! A stamp sits next to its output and records a hash of the command line and of the contents
//! of every file the step read (for compiles, the compiler's own `-MMD` dependency list). Content
//! hashes rather than mtimes, so that switching a source back to an earlier version, or touching
//! a file without changing it, does the right thing.
//!
//! **An edit saved while the compiler runs is never lost.** The files a compile will read (the
//! source, and what the previous compile of it read) are hashed *before* the compiler starts,
//! and those hashes are what the stamp records: if one changed meanwhile, the next build sees a
//! difference and compiles again. A file the compiler read for the first time can only be hashed
//! afterwards; if its modification time is after the compile started, the stamp records it as
//! changed (file times come from a coarse clock: a save within one scheduler tick of the start
//! can go unseen, for such a first-time file only).
//!
//! Hashes are XXH3-128 (`xxhash-rust`), whose definition is fixed, so stamps written by one
//! build of this crate are read correctly by any other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::BuildError;

/// A C++ compiler invocation as `cc` configured it (program, flags, include directories,
/// defines, environment), captured so that the same command can run again outside cargo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compiler {
    /// The compiler driver (`c++`, `g++`, `clang++-19`, ...).
    pub program: PathBuf,
    /// Every argument `cc` would pass, before the ones a step adds.
    pub args: Vec<String>,
    /// Environment variables `cc` sets for the compiler.
    pub env: Vec<(String, String)>,
    /// Whether this is GCC, which needs `-fno-gnu-unique` (clang has no such symbols or flag).
    pub is_gcc: bool,
}

/// Flags every translation unit of a reloadable module needs, whatever the user configured:
/// position-independent code, and (GCC) no `STB_GNU_UNIQUE` symbols, which would make the
/// library impossible to unload.
fn compile_safety_flags(compiler: &Compiler) -> Vec<&'static str> {
    let mut flags = vec!["-fPIC"];
    if compiler.is_gcc {
        flags.push("-fno-gnu-unique");
    }
    flags
}

/// Link flags for a reloadable module: a shared library, and every undefined symbol reported at
/// link time (the module gets the host's functions through a table, never through symbol lookup,
/// so an undefined symbol is a bug that `dlopen` would otherwise only report at reload time).
const LINK_FLAGS: [&str; 2] = ["-shared", "-Wl,-z,defs"];

impl Compiler {
    /// The flags build-support adds for reload safety, compile and link, whatever the
    /// configured flags are.
    pub fn reload_safety_flags(&self) -> Vec<&'static str> {
        let mut flags = compile_safety_flags(self);
        flags.extend(LINK_FLAGS);
        flags
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    fn name(&self) -> String {
        self.program.display().to_string()
    }

    /// Compiles `source` into `object` unless the stamp says it is up to date. Returns whether
    /// the compiler ran, and its warnings (standard error of a successful run).
    pub(crate) fn compile(&self, source: &Path, object: &Path) -> Result<Step, BuildError> {
        let depfile = object.with_extension("d");
        let command = self.compile_command(source, &depfile);
        let failed = |diagnostics| BuildError::Compile {
            source_file: source.to_path_buf(),
            compiler: self.name(),
            diagnostics,
        };
        let inputs = |before: &Before| {
            let depends = std::fs::read_to_string(&depfile).map_err(BuildError::io(&depfile))?;
            Ok(before.hashes_of(parse_depfile(&depends)))
        };
        let mut expected = Stamp::inputs_of(object);
        expected.push(source.to_path_buf());
        self.run_step(command, object, failed, &expected, inputs)
    }

    /// Whether `object` is up to date for `source` (compiling would change nothing).
    pub(crate) fn is_compiled(&self, source: &Path, object: &Path) -> bool {
        let command = self.compile_command(source, &object.with_extension("d"));
        is_current(object, &command_key(&command, object))
    }

    /// The compile command, up to the output path (which the caller appends).
    fn compile_command(&self, source: &Path, depfile: &Path) -> Command {
        let mut command = self.command();
        command.args(compile_safety_flags(self));
        command.arg("-MMD").arg("-MF").arg(depfile);
        command.arg("-c").arg(source).arg("-o");
        command
    }

    /// Links `objects` into the shared library `library` unless the stamp says it is up to date.
    pub(crate) fn link(
        &self,
        objects: &[PathBuf],
        extra_args: &[String],
        library: &Path,
    ) -> Result<Step, BuildError> {
        let mut command = self.command();
        command
            .args(LINK_FLAGS)
            .args(objects)
            .args(extra_args)
            .arg("-o");
        let failed = |diagnostics| BuildError::Link {
            library: library.to_path_buf(),
            diagnostics,
        };
        let inputs = |before: &Before| Ok(before.hashes_of(objects.to_vec()));
        self.run_step(command, library, failed, objects, inputs)
    }

    /// Runs `command` (which ends in `-o`) unless `output`'s stamp is current. The files in
    /// `expected` are hashed before the command runs; `inputs` then lists every file it read,
    /// with the hashes to record (see the module docs). The output is written beside and
    /// renamed into place, so whoever reads it never sees half of it.
    fn run_step(
        &self,
        mut command: Command,
        output: &Path,
        failed: impl FnOnce(String) -> BuildError,
        expected: &[PathBuf],
        inputs: impl FnOnce(&Before) -> Result<Vec<(PathBuf, String)>, BuildError>,
    ) -> Result<Step, BuildError> {
        let key = command_key(&command, output);
        if is_current(output, &key) {
            return Ok(Step::UpToDate);
        }
        let before = Before::hash(expected);
        let mut temporary = output.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        command.arg(&temporary);
        let result = run(&mut command, &self.name())?;
        if !result.status.success() {
            let _ = std::fs::remove_file(&temporary);
            return Err(failed(stderr(&result)));
        }
        std::fs::rename(&temporary, output).map_err(BuildError::io(output))?;
        Stamp {
            command: key,
            inputs: inputs(&before)?,
        }
        .write(&Stamp::path_for(output))?;
        Ok(Step::Ran {
            warnings: stderr(&result),
        })
    }
}

/// What a compile or link step did.
#[derive(Debug)]
pub(crate) enum Step {
    /// Its inputs were unchanged; nothing ran and nothing was written.
    UpToDate,
    /// The tool ran; its standard error (warnings) is kept.
    Ran { warnings: String },
}

fn run(command: &mut Command, program: &str) -> Result<std::process::Output, BuildError> {
    tracing::debug!(?command, "running");
    command.output().map_err(|error| BuildError::Spawn {
        program: program.to_string(),
        error,
    })
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_string()
}

/// Whether `output` exists and its stamp records `key` and the current contents of every input.
fn is_current(output: &Path, key: &str) -> bool {
    output.exists() && Stamp::read(&Stamp::path_for(output)).is_some_and(|s| s.is_current(key))
}

/// A hash of the command line (program, arguments, environment) and the output it writes, each
/// part preceded by its length so that no two command lines encode alike.
fn command_key(command: &Command, output: &Path) -> String {
    let mut encoded = Vec::new();
    let mut part = |bytes: &[u8]| {
        encoded.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        encoded.extend_from_slice(bytes);
    };
    use std::os::unix::ffi::OsStrExt;
    part(command.get_program().as_bytes());
    command.get_args().for_each(|arg| part(arg.as_bytes()));
    for (name, value) in command.get_envs() {
        part(name.as_bytes());
        part(value.map_or(b"(removed)".as_slice(), |v| v.as_bytes()));
    }
    part(output.as_os_str().as_bytes());
    hex(xxhash_rust::xxh3::xxh3_128(&encoded))
}

fn hex(hash: u128) -> String {
    format!("{hash:032x}")
}

/// What a stamp records for a file that could not be read.
const MISSING: &str = "missing";
/// What a stamp records for a file that changed while the step ran: never a file's hash.
const CHANGED_DURING_BUILD: &str = "changed while the build ran";

/// The files a step was expected to read, hashed before it ran.
struct Before {
    started: SystemTime,
    hashes: HashMap<PathBuf, String>,
}

impl Before {
    fn hash(expected: &[PathBuf]) -> Before {
        let started = SystemTime::now();
        let hashes = expected
            .iter()
            .map(|path| (path.clone(), content_hash(path)))
            .collect();
        Before { started, hashes }
    }

    /// The hash to record for each file the step read: the one taken before it ran, or, for a
    /// file it read that was not expected, its hash now, unless it was modified after the step
    /// started.
    fn hashes_of(&self, read: Vec<PathBuf>) -> Vec<(PathBuf, String)> {
        read.into_iter()
            .map(|path| {
                let hash = match self.hashes.get(&path) {
                    Some(hash) => hash.clone(),
                    None if self.modified_since_start(&path) => CHANGED_DURING_BUILD.to_string(),
                    None => content_hash(&path),
                };
                (path, hash)
            })
            .collect()
    }

    /// Whether `path` was modified after the step started. File times come from the kernel's
    /// coarse clock, which lags the real one by up to a scheduler tick: a file saved just
    /// before the step started never looks modified after it (no needless rebuild), and one
    /// saved within that tick after the start may not be seen (only for a file no earlier
    /// build of this output had read).
    fn modified_since_start(&self, path: &Path) -> bool {
        let modified = std::fs::metadata(path).and_then(|m| m.modified());
        modified.map_or(true, |time| time > self.started)
    }
}

/// The prerequisites of a make-style dependency file (`out.o: a.cpp b.h \` ...), with
/// backslash-escaped spaces kept.
fn parse_depfile(text: &str) -> Vec<PathBuf> {
    let joined = text.replace("\\\n", " ");
    let mut files = Vec::new();
    for rule in joined.lines() {
        let Some((_, prerequisites)) = rule.split_once(": ") else {
            continue;
        };
        let mut current = String::new();
        let mut chars = prerequisites.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => current.push(chars.next().unwrap_or(' ')),
                ' ' | '\t' => {
                    if !current.is_empty() {
                        files.push(PathBuf::from(std::mem::take(&mut current)));
                    }
                }
                _ => current.push(c),
            }
        }
        if !current.is_empty() {
            files.push(PathBuf::from(current));
        }
    }
    files.sort();
    files.dedup();
    files
}

/// What a step's output was made from: the command's key and each input with a content hash.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stamp {
    command: String,
    inputs: Vec<(PathBuf, String)>,
}

impl Stamp {
    fn path_for(output: &Path) -> PathBuf {
        let mut name = output.as_os_str().to_owned();
        name.push(".stamp");
        PathBuf::from(name)
    }

    fn read(path: &Path) -> Option<Stamp> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn write(&self, path: &Path) -> Result<(), BuildError> {
        let text = serde_json::to_string_pretty(self).expect("a stamp always serialises");
        std::fs::write(path, text).map_err(BuildError::io(path))
    }

    fn is_current(&self, command: &str) -> bool {
        self.command == command
            && self
                .inputs
                .iter()
                .all(|(path, hash)| content_hash(path) == *hash)
    }

    /// Every input this stamp records.
    pub(crate) fn inputs_of(output: &Path) -> Vec<PathBuf> {
        Stamp::read(&Stamp::path_for(output))
            .map(|stamp| stamp.inputs.into_iter().map(|(path, _)| path).collect())
            .unwrap_or_default()
    }
}

/// The XXH3-128 of a file's contents, or [`MISSING`].
fn content_hash(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => hex(xxhash_rust::xxh3::xxh3_128(&bytes)),
        Err(_) => MISSING.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_have_a_fixed_definition() {
        // XXH3-128 of the empty input, as the algorithm's reference gives it: stamps written by
        // any build of this crate compare equal.
        assert_eq!(
            hex(xxhash_rust::xxh3::xxh3_128(b"")),
            "99aa06d3014798d86001c324468d497f"
        );
    }

    #[test]
    fn depfile_prerequisites_with_continuations_and_escaped_spaces() {
        let text = "obj/a.o: src/a.cpp include/a.h \\\n  include/my\\ dir/b.h \\\n include/a.h\n";
        assert_eq!(
            parse_depfile(text),
            vec![
                PathBuf::from("include/a.h"),
                PathBuf::from("include/my dir/b.h"),
                PathBuf::from("src/a.cpp"),
            ]
        );
    }
}
