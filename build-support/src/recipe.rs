//! A module's complete build description, and the build itself: generate the tables and the shim
//! with layout-gen, compile every translation unit, link the shared library.
//!
//! `build.rs` makes a recipe from its [`crate::Module`], builds it into `OUT_DIR` and saves it
//! next to the library. A host that rebuilds the module while it runs (a file watcher, a demo)
//! loads the saved recipe and builds it again into a folder of its own, with exactly the same
//! compiler, flags and selection, optionally compiling a different file in place of a source.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::compile::{Compiler, Stamp, Step};
use crate::error::BuildError;

/// Everything needed to build one module, outside cargo as well as inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// The module's name; the library is `lib<name>.so`.
    pub name: String,
    /// What layout-gen analyses: headers, clang arguments, selected classes.
    pub layout: layout_gen::Request,
    /// The module's C++ sources (the generated shim is added to them).
    pub sources: Vec<PathBuf>,
    /// The compiler and its flags.
    pub compiler: Compiler,
    /// Extra arguments for the link step.
    pub link_args: Vec<String>,
    /// How many translation units compile at once; `None`: cargo's `NUM_JOBS` in a build
    /// script, every core elsewhere.
    #[serde(default)]
    pub jobs: Option<usize>,
}

/// Compiles at once: `NUM_JOBS` (what cargo grants a build script), else every core.
fn default_jobs() -> usize {
    std::env::var("NUM_JOBS")
        .ok()
        .and_then(|jobs| jobs.parse().ok())
        .filter(|&jobs| jobs > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs `work` on every item, `jobs` at a time, and returns the results in item order.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = jobs.clamp(1, items.len().max(1));
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(index) else {
                            break done;
                        };
                        done.push((index, work(item)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("a compile thread does not panic"))
            .collect()
    });
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// Compile `with` in place of the source `replace` (which must be one of the recipe's sources).
/// The object keeps the name of the source it replaces, so switching back recompiles just it.
#[derive(Debug, Clone)]
pub struct Substitution {
    /// A source of the recipe.
    pub replace: PathBuf,
    /// The file compiled instead.
    pub with: PathBuf,
}

/// A stage of a build, reported as it starts (for progress displays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Running layout-gen over the headers.
    Generate,
    /// Compiling these translation units (only the ones whose inputs changed).
    Compile(Vec<PathBuf>),
    /// Linking the shared library.
    Link,
}

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The shared library.
    pub library: PathBuf,
    /// The Rust tables layout-gen wrote.
    pub rust_tables: PathBuf,
    /// Generated files whose contents changed (the others were not touched).
    pub generated: Vec<PathBuf>,
    /// Translation units that were compiled (the others were up to date).
    pub compiled: Vec<PathBuf>,
    /// Whether the library was linked (false: it was up to date and not touched).
    pub linked: bool,
    /// Compiler and linker warnings, verbatim.
    pub warnings: Vec<String>,
    /// Every file the build read: headers, sources and what they include (not system headers).
    pub inputs: Vec<PathBuf>,
    /// Number of classes described.
    pub classes: usize,
    /// Wall time of the whole build.
    pub elapsed: Duration,
}

impl BuildReport {
    /// Whether the build found everything up to date and wrote nothing.
    pub fn was_up_to_date(&self) -> bool {
        self.generated.is_empty() && self.compiled.is_empty() && !self.linked
    }
}

impl Recipe {
    /// File name of the library this recipe builds.
    pub fn library_file_name(&self) -> String {
        format!("lib{}.so", self.name)
    }

    /// Reads a recipe saved by [`Recipe::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Recipe, BuildError> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(BuildError::io(path))?;
        serde_json::from_slice(&text).map_err(|error| BuildError::Recipe {
            path: path.to_path_buf(),
            error,
        })
    }

    /// Saves the recipe as JSON (rewritten only when it changes).
    pub fn save(&self, path: &Path) -> Result<(), BuildError> {
        let text = serde_json::to_string_pretty(self).expect("a recipe always serialises");
        write_if_changed(path, &text).map(|_| ())
    }

    /// The files a watcher should watch: headers and sources.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = self.layout.headers.clone();
        files.extend(self.sources.iter().cloned());
        files
    }

    /// Builds the module into `dir`; see [`Recipe::build_with`].
    pub fn build(&self, dir: &Path) -> Result<BuildReport, BuildError> {
        self.build_with(dir, &[], |_| {})
    }

    /// Builds the module into `dir` (created if missing): the tables and shim, one object per
    /// translation unit under `dir/obj`, and `dir/lib<name>.so`. Each step runs only when its
    /// inputs changed. `progress` hears of each stage as it starts.
    pub fn build_with(
        &self,
        dir: &Path,
        substitutions: &[Substitution],
        mut progress: impl FnMut(Stage),
    ) -> Result<BuildReport, BuildError> {
        let started = Instant::now();
        if self.sources.is_empty() {
            return Err(BuildError::NoSources {
                module: self.name.clone(),
            });
        }
        if let Some(stray) = substitutions
            .iter()
            .find(|s| !self.sources.contains(&s.replace))
        {
            return Err(BuildError::NotASource {
                module: self.name.clone(),
                replace: stray.replace.clone(),
                with: stray.with.clone(),
            });
        }
        progress(Stage::Generate);
        let generated =
            layout_gen::generate(&self.layout, dir).map_err(|error| BuildError::Layout {
                module: self.name.clone(),
                error,
            })?;

        let objects_dir = dir.join("obj");
        std::fs::create_dir_all(&objects_dir).map_err(BuildError::io(&objects_dir))?;
        let units: Vec<(PathBuf, PathBuf)> = self
            .sources
            .iter()
            .chain([&generated.cpp_shim])
            .map(|source| {
                let compiled = substitutions
                    .iter()
                    .find(|s| &s.replace == source)
                    .map_or(source, |s| &s.with);
                (compiled.clone(), objects_dir.join(object_name(source)))
            })
            .collect();
        progress(Stage::Compile(
            units
                .iter()
                .filter(|(source, object)| !self.compiler.is_compiled(source, object))
                .map(|(source, _)| source.clone())
                .collect(),
        ));
        let steps = in_parallel(
            &units,
            self.jobs.unwrap_or_else(default_jobs),
            |(source, object)| self.compiler.compile(source, object),
        );
        let mut compiled = Vec::new();
        let mut warnings = Vec::new();
        for ((source, _), step) in units.iter().zip(steps) {
            let step = step.map_err(|error| explain_layout_checks(error, &generated.cpp_shim))?;
            if let Step::Ran { warnings: text } = step {
                compiled.push(source.clone());
                warnings.extend((!text.is_empty()).then_some(text));
            }
        }

        progress(Stage::Link);
        let objects: Vec<PathBuf> = units.iter().map(|(_, object)| object.clone()).collect();
        let library = dir.join(self.library_file_name());
        let linked = match self.compiler.link(&objects, &self.link_args, &library)? {
            Step::UpToDate => false,
            Step::Ran { warnings: text } => {
                warnings.extend((!text.is_empty()).then_some(text));
                true
            }
        };

        let mut inputs: Vec<PathBuf> = self.watched_files();
        for object in &objects {
            inputs.extend(Stamp::inputs_of(object));
        }
        inputs.retain(|path| !path.starts_with(dir));
        inputs.sort();
        inputs.dedup();
        Ok(BuildReport {
            library,
            rust_tables: generated.rust_tables,
            generated: generated.changed,
            compiled,
            linked,
            warnings,
            inputs,
            classes: generated.model.classes.len(),
            elapsed: started.elapsed(),
        })
    }
}

/// When the shim fails to compile, its layout checks disagreed with the compiler: appends the
/// failing checks' own lines (each an explicit instantiation naming the class and the member)
/// to the diagnostics.
fn explain_layout_checks(error: BuildError, shim: &Path) -> BuildError {
    let BuildError::Compile {
        source_file,
        compiler,
        mut diagnostics,
    } = error
    else {
        return error;
    };
    if source_file != shim {
        return BuildError::Compile {
            source_file,
            compiler,
            diagnostics,
        };
    }
    let text = std::fs::read_to_string(shim).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let prefix = format!("{}:", shim.display());
    let mut failed: Vec<&str> = diagnostics
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| rest.split(':').next()?.parse::<usize>().ok())
        .filter_map(|number| lines.get(number.checked_sub(1)?).copied())
        .filter(|line| line.starts_with("template struct "))
        .collect();
    failed.dedup();
    if !failed.is_empty() {
        diagnostics
            .push_str("\nThe compiler disagrees with layout-gen on these checks of the shim:");
        for line in failed {
            diagnostics.push_str("\n  ");
            diagnostics.push_str(line.trim());
        }
    }
    BuildError::Compile {
        source_file,
        compiler,
        diagnostics,
    }
}

/// `<stem>-<hash of the full path>.o`: readable, and distinct for same-named files in
/// different folders.
fn object_name(source: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    source.hash(&mut hasher);
    let stem = source
        .file_stem()
        .map_or_else(|| "unit".to_string(), |s| s.to_string_lossy().into_owned());
    format!("{stem}-{:08x}.o", hasher.finish() as u32)
}

pub(crate) fn write_if_changed(path: &Path, contents: &str) -> Result<bool, BuildError> {
    layout_gen::write_if_changed(path, contents).map_err(|error| match error {
        layout_gen::Error::Write { path, source } => BuildError::Io {
            path,
            error: source,
        },
        other => BuildError::Io {
            path: path.to_path_buf(),
            error: std::io::Error::other(other.to_string()),
        },
    })
}
