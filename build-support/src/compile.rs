//! Compiling translation units and linking the shared library, each step skipped when a stamp
//! shows that nothing it read has changed.
//!
//! A stamp sits next to its output and records a hash of the command line and of the contents
//! of every file the step read (for compiles, the compiler's own `-MMD` dependency list). Content
//! hashes rather than mtimes, so that switching a source back to an earlier version, or touching
//! a file without changing it, does the right thing.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

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
        let inputs = || {
            let depends = std::fs::read_to_string(&depfile).map_err(BuildError::io(&depfile))?;
            Ok(parse_depfile(&depends))
        };
        self.run_step(command, object, failed, inputs)
    }

    /// Whether `object` is up to date for `source` (compiling would change nothing).
    pub(crate) fn is_compiled(&self, source: &Path, object: &Path) -> bool {
        let command = self.compile_command(source, &object.with_extension("d"));
        is_current(object, command_key(&command, object))
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
        self.run_step(command, library, failed, || Ok(objects.to_vec()))
    }

    /// Runs `command` (which ends in `-o`) unless `output`'s stamp is current. The output is
    /// written beside and renamed into place, so whoever reads it never sees half of it; then
    /// the stamp records `inputs`.
    fn run_step(
        &self,
        mut command: Command,
        output: &Path,
        failed: impl FnOnce(String) -> BuildError,
        inputs: impl FnOnce() -> Result<Vec<PathBuf>, BuildError>,
    ) -> Result<Step, BuildError> {
        let key = command_key(&command, output);
        if is_current(output, key) {
            return Ok(Step::UpToDate);
        }
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
        Stamp::new(key, inputs()?).write(&Stamp::path_for(output))?;
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
fn is_current(output: &Path, key: u64) -> bool {
    output.exists() && Stamp::read(&Stamp::path_for(output)).is_some_and(|s| s.is_current(key))
}

/// A hash of the command line (program, arguments, environment) and the output it writes.
fn command_key(command: &Command, output: &Path) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    command.get_program().hash(&mut hasher);
    command.get_args().for_each(|a| a.hash(&mut hasher));
    command.get_envs().for_each(|e| e.hash(&mut hasher));
    output.hash(&mut hasher);
    hasher.finish()
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
    command: u64,
    inputs: Vec<(PathBuf, u64)>,
}

impl Stamp {
    fn path_for(output: &Path) -> PathBuf {
        let mut name = output.as_os_str().to_owned();
        name.push(".stamp");
        PathBuf::from(name)
    }

    fn new(command: u64, inputs: Vec<PathBuf>) -> Stamp {
        let inputs = inputs
            .into_iter()
            .map(|path| {
                let hash = content_hash(&path).unwrap_or(0);
                (path, hash)
            })
            .collect();
        Stamp { command, inputs }
    }

    fn read(path: &Path) -> Option<Stamp> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    fn write(&self, path: &Path) -> Result<(), BuildError> {
        let text = serde_json::to_string_pretty(self).expect("a stamp always serialises");
        std::fs::write(path, text).map_err(BuildError::io(path))
    }

    fn is_current(&self, command: u64) -> bool {
        self.command == command
            && self
                .inputs
                .iter()
                .all(|(path, hash)| content_hash(path) == Some(*hash))
    }

    /// Every input this stamp records.
    pub(crate) fn inputs_of(output: &Path) -> Vec<PathBuf> {
        Stamp::read(&Stamp::path_for(output))
            .map(|stamp| stamp.inputs.into_iter().map(|(path, _)| path).collect())
            .unwrap_or_default()
    }
}

fn content_hash(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::parse_depfile;
    use std::path::PathBuf;

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
