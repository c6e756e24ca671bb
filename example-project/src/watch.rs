//! `--watch`: tick the world once a second; when a header or source of the module is saved,
//! rebuild it (after a short debounce), reload and `rehydrate_all()`. A failed build or reload
//! leaves the old code running and prints why.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use build_support::Recipe;
use notify::{RecursiveMode, Watcher};

use crate::demo::{describe, millis, relative, seconds, stage_line, POPULATION};
use crate::module;
use crate::world::{Error, World};

/// Quiet time after the last change before rebuilding (editors write files in several steps).
const DEBOUNCE: Duration = Duration::from_millis(300);
const TICK_EVERY: Duration = Duration::from_secs(1);

/// Runs until interrupted.
pub fn run() -> Result<(), Error> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let recipe = Recipe::load(module::RECIPE)?;
    let watched: HashSet<PathBuf> = recipe.watched_files().into_iter().collect();
    let (sender, changes) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(sender)?;
    let folders: HashSet<&Path> = watched.iter().filter_map(|f| f.parent()).collect();
    for folder in folders {
        watcher.watch(folder, RecursiveMode::NonRecursive)?;
    }
    let names: Vec<String> = watched.iter().map(|f| relative(f, manifest)).collect();
    println!("watching {} (Ctrl-C to stop)", names.join(", "));

    let mut world = World::load(Path::new(module::LIBRARY), POPULATION)?;
    println!("running {}", world.version()?);
    let mut ticks = 0u64;
    loop {
        match changes.recv_timeout(TICK_EVERY) {
            Ok(Ok(event)) if touches(&event, &watched) => {
                settle(&changes);
                rebuild_and_reload(&recipe, &mut world, manifest);
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => println!("watch error: {error}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                ticks += 1;
                let summary = world.tick(0.5)?;
                println!(
                    "tick {ticks}: score {}; {}",
                    summary.score,
                    describe(&world.sample_robot()?)
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("the watcher stopped".into()),
        }
    }
}

fn touches(event: &notify::Event, watched: &HashSet<PathBuf>) -> bool {
    !event.kind.is_access() && event.paths.iter().any(|path| watched.contains(path))
}

/// Waits until no change has arrived for [`DEBOUNCE`], dropping what arrives meanwhile.
fn settle(changes: &mpsc::Receiver<notify::Result<notify::Event>>) {
    while changes.recv_timeout(DEBOUNCE).is_ok() {}
}

fn rebuild_and_reload(recipe: &Recipe, world: &mut World, manifest: &Path) {
    let started = Instant::now();
    println!("change detected: rebuilding module `{}`", recipe.name);
    let build = recipe.build_with(&live_build_dir(), &[], |stage| {
        let elapsed = seconds(started.elapsed());
        println!("  [{elapsed}] {}", stage_line(&stage, manifest));
    });
    let build = match build {
        Ok(build) => build,
        Err(error) => {
            println!(
                "build failed, still running the previous build:\n{}",
                crate::world::explain(&error)
            );
            return;
        }
    };
    if !build.linked {
        println!("  nothing changed in what the module is built from");
        return;
    }
    for warning in &build.warnings {
        println!("{warning}");
    }
    match world.reload(&build.library) {
        Ok(report) => {
            println!(
                "  [{}] reloaded: {} objects rehydrated (load {}, images {}, validate {}, patch {}, unload {})",
                seconds(started.elapsed()),
                report.objects,
                millis(report.load),
                millis(report.images),
                millis(report.validate),
                millis(report.patch),
                millis(report.unload)
            );
            match world.version() {
                Ok(version) => println!("  now running {version}"),
                Err(error) => println!("  {error}"),
            }
        }
        Err(error) => println!(
            "reload failed, still running the previous build:\n{}",
            crate::world::explain(&*error)
        ),
    }
}

/// Where the host builds the module at run time: beside build.rs's outputs, never in them.
fn live_build_dir() -> PathBuf {
    Path::new(module::LIBRARY)
        .parent()
        .map_or_else(|| PathBuf::from("live"), |dir| dir.join("live"))
}
