//! The image of every class of one build, from its sources, cross-checked at load:
//! - the constructor analysis ([`crate::analysis`]), for every class;
//! - the probe ([`crate::probe`]), where the analysis gave up and the class has a usable
//!   default constructor, or for every class on request ([`ProbePolicy::Always`]): user
//!   constructors are otherwise not run at load;
//! - the table's vptr slots: every slot must hold a vtable address, and no vptr may lie
//!   outside them;
//! - the vtable symbols: every vptr must be an address point of a vtable group (type-info
//!   pointer right before it), which is what the reload's symbol mapping relies on;
//! - the compiler's base offsets, measured on an object holding the analysed image (the
//!   probe measures them on its dummies).
//!
//! Any disagreement names the class, the offset and what each source said, and makes that
//! class refuse to reload ([`ImageFailure::Disagreement`]).

use crate::analysis::{Analyser, Analysis, ImplicitWord, Names, Process};
use crate::image::{ClassImage, ImageFailure};
use crate::module::{LoadedModule, ModuleClass};
use crate::probe::{check_base_offsets_with, probe};
use crate::relocation::BuildImage;

/// When the runtime runs the probe (each class's default constructor in sentinel-filled
/// dummies) at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbePolicy {
    /// Only for classes the analysis gave up on.
    #[default]
    WhenAnalysisGivesUp,
    /// For every class with a usable default constructor, to cross-check the analysis.
    Always,
}

/// What each source said about one class, as `rehydrate inspect` prints it.
#[derive(Debug, Clone)]
pub struct ClassInspection {
    /// The class.
    pub class: String,
    /// `sizeof`.
    pub size: usize,
    /// The table's vptr slots.
    pub table_vptr_slots: Vec<usize>,
    /// The constructor analysis.
    pub analysis: Analysis,
    /// The probe's address-valued words, or why it failed; `None` when it did not run.
    pub probe: Option<Result<Vec<ImplicitWord>, String>>,
    /// Every disagreement between the sources (offset, and what each said).
    pub disagreements: Vec<String>,
    /// Which source the image the runtime uses comes from (`analysis`, `probe`), or why
    /// there is none.
    pub image_source: Result<&'static str, String>,
    /// What the names in the analysis and the probe's words refer to (the build's symbols).
    pub names: Names,
}

impl ClassInspection {
    /// Whether every source that ran agrees (and one gave an image).
    pub fn agrees(&self) -> bool {
        self.disagreements.is_empty()
    }
}

/// The image of each class of `module` (same order), and what each source said.
pub(crate) fn images_of(
    module: &LoadedModule,
    elf: &BuildImage,
    policy: ProbePolicy,
) -> (Vec<Result<ClassImage, ImageFailure>>, Vec<ClassInspection>) {
    let process = Process::snapshot(elf);
    let mut analyser = Analyser::new(&process);
    module
        .classes
        .iter()
        .map(|class| image_of(class, &mut analyser, &process, policy))
        .unzip()
}

fn image_of<'p>(
    class: &'p ModuleClass,
    analyser: &mut Analyser<'p>,
    process: &Process<'_>,
    policy: ProbePolicy,
) -> (Result<ClassImage, ImageFailure>, ClassInspection) {
    let analysis = analyser.analyse(class);
    let analysed = match &analysis {
        Analysis::Found(reading) => Some(&reading.image),
        Analysis::GaveUp { .. } => None,
    };
    let probe_wanted =
        class.construct.is_some() && (policy == ProbePolicy::Always || analysed.is_none());
    let probed = probe_wanted.then(|| probe(class));
    let mut disagreements = Vec::new();
    if let Some(image) = analysed {
        check_with_table(class, process, "the analysis", image, &mut disagreements);
    }
    if let Some(Ok(image)) = &probed {
        check_with_table(class, process, "the probe", image, &mut disagreements);
    }
    if let (Some(analysed), Some(Ok(probed))) = (analysed, &probed) {
        compare(process, analysed, probed, &mut disagreements);
    }
    let (image, source) = if !disagreements.is_empty() {
        let failure = ImageFailure::Disagreement(disagreements.clone());
        let reason = failure.to_error(&class.name).to_string();
        (Err(failure), Err(reason))
    } else if let Some(image) = analysed {
        match check_base_offsets_with(class, image) {
            Ok(()) => (Ok(image.clone()), Ok("analysis")),
            Err(failure) => {
                let reason = failure.to_error(&class.name).to_string();
                (Err(failure), Err(reason))
            }
        }
    } else {
        match &probed {
            Some(Ok(image)) => (Ok(image.clone()), Ok("probe")),
            Some(Err(failure)) => {
                let reason = failure.to_error(&class.name).to_string();
                (Err(failure.clone()), Err(reason))
            }
            None => (
                Err(ImageFailure::NotConstructible),
                Err("the analysis gave up and the class has no usable default constructor to probe: its objects are reloaded through the vtable-symbol mapping alone".into()),
            ),
        }
    };
    let names = process.names();
    let inspection = ClassInspection {
        class: class.name.to_string(),
        size: class.size,
        table_vptr_slots: class.vptr_offsets.clone(),
        analysis,
        probe: probed.map(|result| {
            result
                .map(|image| names.words_of(&image.writes))
                .map_err(|failure| failure.to_error(&class.name).to_string())
        }),
        disagreements,
        image_source: source,
        names,
    };
    (image, inspection)
}

/// The image's vptrs against the table's slots and the vtable symbols.
fn check_with_table(
    class: &ModuleClass,
    process: &Process<'_>,
    source: &str,
    image: &ClassImage,
    disagreements: &mut Vec<String>,
) {
    for &slot in &class.vptr_offsets {
        let found = image
            .writes
            .word_at(slot)
            .map(|value| (value, ImplicitWord::of(process, slot, value)));
        match found {
            Some((_, word)) if word.vtable_in(process).is_some() => {}
            Some((value, word)) => disagreements.push(format!(
                "offset {slot}: the table has a vptr slot, {source} found {} there",
                match word.in_symbol() {
                    true => word.holds_in(process),
                    false => format!("the constant {value:#x}"),
                }
            )),
            None => disagreements.push(format!(
                "offset {slot}: the table has a vptr slot, {source} found no compiler-written word there"
            )),
        }
    }
    for &(offset, complement) in &image.writes.words {
        let value = !complement;
        let word = ImplicitWord::of(process, offset, value);
        let Some((group, _)) = word.vtable_in(process) else {
            continue;
        };
        if !class.vptr_offsets.contains(&offset) {
            disagreements.push(format!(
                "offset {offset}: {source} found a vptr ({}) where the table has no vptr slot",
                word.holds_in(process)
            ));
        }
        let type_info = value
            .checked_sub(8)
            .and_then(|at| process.read(at, 8))
            .and_then(|pointer| process.place(pointer));
        if !type_info.is_some_and(|t| t.name.starts_with("_ZTI")) {
            disagreements.push(format!(
                "offset {offset}: {source} found {}, which is not an address point of {} (no type-info pointer before it)",
                word.holds_in(process), group
            ));
        }
    }
}

/// The analysis's image against the probe's.
fn compare(
    process: &Process<'_>,
    analysed: &ClassImage,
    probed: &ClassImage,
    disagreements: &mut Vec<String>,
) {
    if analysed.implicit_runs() != probed.implicit_runs() {
        disagreements.push(format!(
            "the analysis finds compiler-written bytes at {:?}, the probe at {:?}",
            analysed.implicit_runs(),
            probed.implicit_runs()
        ));
        return;
    }
    for (&(offset, a), &(_, p)) in analysed.writes.words.iter().zip(&probed.writes.words) {
        if a != p {
            disagreements.push(format!(
                "offset {offset}: the analysis found {}, the probe {}",
                process.describe(!a),
                process.describe(!p)
            ));
        }
    }
    for (&(offset, a), &(_, p)) in analysed.writes.bytes.iter().zip(&probed.writes.bytes) {
        if a != p {
            disagreements.push(format!(
                "byte {offset}: the analysis found {a:#04x}, the probe {p:#04x}"
            ));
        }
    }
}
