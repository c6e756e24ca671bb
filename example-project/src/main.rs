//! The example host: a world of C++ entities in a hot-reloadable module.
//!
//! - no arguments: the scripted demo (build v1, run, edit, rebuild, reload, run v2);
//! - `--watch`: edit `module/*.cpp` or `module/world.hpp` yourself and watch the world reload;
//! - `--inspect`: the module's layout tables, as `layout-gen inspect` prints them.

mod demo;
mod watch;
mod world;

/// What build.rs built: `NAME`, `LIBRARY`, `RECIPE`, and the layout tables (`CLASSES`, ...).
mod module {
    rehydrate::include_module!("world");
}

use std::process::ExitCode;

use clap::Parser;

/// A world of C++ entities that keep their state across rebuilds of the module.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Watch the module's sources; rebuild and reload on every save.
    #[arg(long, conflicts_with = "inspect")]
    watch: bool,
    /// Print the module's layout tables and exit.
    #[arg(long)]
    inspect: bool,
    /// Ticks the demo runs before and after the reload.
    #[arg(long, default_value_t = 5)]
    ticks: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = if cli.inspect {
        inspect()
    } else if cli.watch {
        watch::run()
    } else {
        demo::run(cli.ticks)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("example: {}", world::explain(&*error));
            ExitCode::FAILURE
        }
    }
}

/// Analyses the module's headers as build.rs did and prints the layouts; checks that the tables
/// compiled into this host still match them.
fn inspect() -> Result<(), world::Error> {
    let recipe = build_support::Recipe::load(module::RECIPE)?;
    let model = layout_gen::analyze(&recipe.layout)?;
    print!("{}", layout_gen::inspect::text(&model));
    let stale: Vec<&str> = module::CLASSES
        .iter()
        .filter(|table| {
            !model
                .classes
                .iter()
                .any(|c| c.name == table.name && c.layout_hash == table.layout_hash)
        })
        .map(|table| table.name)
        .collect();
    if stale.is_empty() {
        println!(
            "\nthe {} tables compiled into this host match the headers",
            module::CLASSES.len()
        );
        Ok(())
    } else {
        Err(format!("stale tables (rebuild the host): {}", stale.join(", ")).into())
    }
}
