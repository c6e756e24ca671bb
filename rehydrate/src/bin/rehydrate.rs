//! `rehydrate inspect LIB.so [--class NAME] [--json]`: what a user runs when a reload is
//! refused. Loads the module (running its static initialisers, as a host would), reads every
//! class's image from its constructors' code and by probing, and prints for each class: the
//! table's vptr slots, the analysis (offset -> symbol + address point, or why it gave up), the
//! probe, and whether they agree.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rehydrate::analysis::{demangle, Analysis, ConstructorReading, ImplicitWord, Names};
use rehydrate::{ClassInspection, ProbePolicy, Runtime};
use serde::Serialize;

#[derive(Parser)]
#[command(name = "rehydrate", about = "Inspect hot-reloadable C++ modules")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// For every class the module describes: its table vptr slots, the constructor analysis,
    /// the probe, and whether they agree.
    Inspect {
        /// The module (a shared library with the layout-gen shim compiled in).
        library: PathBuf,
        /// Only this class (qualified, as the table names it: `game::Robot`).
        #[arg(long)]
        class: Option<String>,
        /// Print JSON (the format is in the README) instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let Command::Inspect {
        library,
        class,
        json,
    } = Cli::parse().command;
    let runtime = match Runtime::load_with(&library, ProbePolicy::Always) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rehydrate: {}: {}", library.display(), chain(&error));
            return ExitCode::FAILURE;
        }
    };
    let mut classes = runtime.inspect();
    if let Some(wanted) = &class {
        classes.retain(|c| &c.class == wanted);
        if classes.is_empty() {
            eprintln!(
                "rehydrate: {} describes no class {wanted}",
                library.display()
            );
            return ExitCode::FAILURE;
        }
    }
    if json {
        let report = Report {
            module: library.display().to_string(),
            classes: classes.iter().map(ClassJson::of).collect(),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("plain data serialises")
        );
    } else {
        for inspection in &classes {
            print_text(inspection);
        }
    }
    ExitCode::SUCCESS
}

/// An error and its causes, one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn print_text(inspection: &ClassInspection) {
    println!("{} ({} bytes)", inspection.class, inspection.size);
    let slots: Vec<String> = inspection
        .table_vptr_slots
        .iter()
        .map(usize::to_string)
        .collect();
    println!(
        "  table vptr slots: {}",
        if slots.is_empty() {
            "none".into()
        } else {
            slots.join(", ")
        }
    );
    match &inspection.analysis {
        Analysis::Found(reading) => {
            println!(
                "  analysis: {}, {} instructions",
                reading.describe_constructor(&inspection.names),
                reading.steps
            );
            print_words(&inspection.names, &reading.words(&inspection.names));
            if !reading.not_followed.is_empty() {
                println!(
                    "    calls not followed: {}",
                    not_followed(reading).join("; ")
                );
            }
        }
        Analysis::GaveUp { reason, .. } => println!("  analysis gave up: {reason}"),
    }
    match &inspection.probe {
        None => println!("  probe: not run (no usable default constructor)"),
        Some(Ok(words)) => {
            println!("  probe:");
            print_words(&inspection.names, words);
        }
        Some(Err(reason)) => println!("  probe failed: {reason}"),
    }
    match (&inspection.image_source, inspection.agrees()) {
        (Ok(source), true) => println!("  agree: yes (the runtime uses the {source}'s image)"),
        (Err(reason), true) => println!("  agree: yes, but there is no image: {reason}"),
        (_, false) => {
            println!("  agree: NO: the class refuses to reload");
            for disagreement in &inspection.disagreements {
                println!("    {disagreement}");
            }
        }
    }
}

/// Each call the analysis did not follow, and why.
fn not_followed(reading: &ConstructorReading) -> Vec<String> {
    reading
        .not_followed
        .iter()
        .map(|(function, why)| format!("{} ({why})", demangle(function)))
        .collect()
}

fn print_words(names: &Names, words: &[ImplicitWord]) {
    if words.is_empty() {
        println!("    (no address-valued words)");
    }
    for word in words {
        println!("    {:>4}: {}", word.offset, names.holds(word));
    }
}

/// The JSON printed by `--json` (documented in the README).
#[derive(Serialize)]
struct Report {
    module: String,
    classes: Vec<ClassJson>,
}

#[derive(Serialize)]
struct ClassJson {
    class: String,
    size: usize,
    table_vptr_slots: Vec<usize>,
    analysis: AnalysisJson,
    probe: Option<ProbeJson>,
    agree: bool,
    disagreements: Vec<String>,
    /// `analysis` or `probe`; null when the class has no image.
    image_source: Option<&'static str>,
    /// Why there is no image; null when there is one.
    no_image: Option<String>,
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum AnalysisJson {
    Found {
        constructor: String,
        words: Vec<WordJson>,
        followed: Vec<String>,
        not_followed: Vec<String>,
        steps: usize,
    },
    GaveUp {
        reason: String,
        tried: Vec<String>,
    },
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum ProbeJson {
    Ok { words: Vec<WordJson> },
    Failed { reason: String },
}

#[derive(Serialize)]
struct WordJson {
    offset: usize,
    holds: String,
    /// The vtable group's mangled symbol, when the word points into one.
    vtable: Option<String>,
    /// The offset of the address point in that group.
    address_point: Option<u64>,
}

impl WordJson {
    fn of(names: &Names, word: &ImplicitWord) -> WordJson {
        WordJson {
            offset: word.offset,
            holds: names.holds(word),
            vtable: names.vtable(word).map(|(symbol, _)| symbol.to_string()),
            address_point: names.vtable(word).map(|(_, point)| point),
        }
    }
}

fn words(names: &Names, words: &[ImplicitWord]) -> Vec<WordJson> {
    words.iter().map(|word| WordJson::of(names, word)).collect()
}

impl ClassJson {
    fn of(inspection: &ClassInspection) -> ClassJson {
        let analysis = match &inspection.analysis {
            Analysis::Found(reading) => AnalysisJson::Found {
                constructor: reading.describe_constructor(&inspection.names),
                words: words(&inspection.names, &reading.words(&inspection.names)),
                followed: reading
                    .followed(&inspection.names)
                    .map(|name| demangle(&name))
                    .collect(),
                not_followed: not_followed(reading),
                steps: reading.steps,
            },
            Analysis::GaveUp { reason, tried } => AnalysisJson::GaveUp {
                reason: reason.clone(),
                tried: tried.clone(),
            },
        };
        let probe = inspection.probe.as_ref().map(|result| match result {
            Ok(found) => ProbeJson::Ok {
                words: words(&inspection.names, found),
            },
            Err(reason) => ProbeJson::Failed {
                reason: reason.clone(),
            },
        });
        ClassJson {
            class: inspection.class.clone(),
            size: inspection.size,
            table_vptr_slots: inspection.table_vptr_slots.clone(),
            analysis,
            probe,
            agree: inspection.agrees(),
            disagreements: inspection.disagreements.clone(),
            image_source: inspection.image_source.as_ref().ok().copied(),
            no_image: inspection.image_source.as_ref().err().cloned(),
        }
    }
}
