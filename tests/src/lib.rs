//! Helpers shared by the integration tests: finding the two C++ compilers and running them.
//!
//! Tests build real C++ with real compilers; nothing here mocks a compiler or a loader.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A C++ compiler the tests build with.
#[derive(Debug, Clone)]
pub struct Compiler {
    /// Short name for messages (`g++`, `clang++`).
    pub name: &'static str,
    /// Executable to run.
    pub program: PathBuf,
}

/// Both compilers the project supports. Panics with the install command when one is missing:
/// the README's test command installs them, so a missing compiler is a set-up error.
pub fn compilers() -> Vec<Compiler> {
    vec![gxx(), clangxx()]
}

/// The GNU C++ compiler.
pub fn gxx() -> Compiler {
    Compiler {
        name: "g++",
        program: find_program(&["g++"]),
    }
}

/// The clang C++ compiler (the versioned Debian name first).
pub fn clangxx() -> Compiler {
    Compiler {
        name: "clang++",
        program: find_program(&["clang++-19", "clang++"]),
    }
}

fn find_program(candidates: &[&str]) -> PathBuf {
    for candidate in candidates {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {candidate}"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string());
        if let Some(path) = found.filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
    }
    panic!("none of {candidates:?} is installed; run `bash scripts/setup.sh` first")
}

impl Compiler {
    /// Compiles `sources` into `output` with `args`, panicking with the compiler's own output
    /// (file:line diagnostics) on failure.
    pub fn compile(&self, sources: &[&Path], output: &Path, args: &[&str]) {
        let result = Command::new(&self.program)
            .args(args)
            .args(sources)
            .arg("-o")
            .arg(output)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program.display()));
        assert!(
            result.status.success(),
            "{} failed on {:?}:\n{}",
            self.name,
            sources,
            String::from_utf8_lossy(&result.stderr)
        );
        let warnings = String::from_utf8_lossy(&result.stderr);
        assert!(
            !warnings.contains("warning:"),
            "{} warned on {:?}:\n{warnings}",
            self.name,
            sources
        );
    }
}

/// Runs a program and returns its standard output, panicking when it fails.
pub fn run(program: &Path) -> String {
    let out = Command::new(program)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} failed: {}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("program printed UTF-8")
}
