//! The scripted demo: run v1, edit, rebuild with the real compiler, reload, run v2. No input;
//! the source tree is never written (the edit is a second version of `behaviour.cpp`, compiled
//! in place of the original into a build folder of the host's own).

use std::path::{Path, PathBuf};
use std::time::Duration;

use build_support::{Recipe, Stage, Substitution};

use crate::module;
use crate::world::{Error, Population, RobotView, World};

/// The demo's world: a few thousand entities from both the host and the module.
pub const POPULATION: Population = Population {
    movers: 1200,
    robots: 800,
    spawned: 1500,
};

const DT: f32 = 0.5;

/// Runs the demo, printing as it goes.
pub fn run(ticks: usize) -> Result<(), Error> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tree_before = source_tree_digest(manifest)?;

    println!("== step 1: build v1 ==");
    println!(
        "module `{}` built by build.rs with layout tables for {} classes: {}",
        module::NAME,
        module::CLASSES.len(),
        module::LIBRARY
    );

    let recipe = Recipe::load(module::RECIPE)?;
    println!(
        "compiled by {} ({}), with the reload flags {}",
        recipe.compiler.program.display(),
        if recipe.compiler.is_gcc {
            "GCC"
        } else {
            "not GCC"
        },
        recipe.compiler.reload_safety_flags().join(" ")
    );

    println!("\n== step 2: run v1 ==");
    let mut world = World::load(Path::new(module::LIBRARY), POPULATION)?;
    let (host, spawned) = world.origins();
    println!("loaded {}", world.version()?);
    println!(
        "{} entities: {host} created by the host, {spawned} by the module's C++",
        host + spawned
    );
    print_census(&world);
    run_ticks(&mut world, ticks)?;
    let event_address = world.event_handler_address();
    println!(
        "event library (never reloaded) calls handler {event_address:#x}: event 7 -> {}",
        world.publish_event(7)
    );

    println!("\n== step 3: edit the source ==");
    let edit = behaviour_edit(&recipe, manifest)?;
    print_edit(&edit, manifest)?;

    println!("\n== step 4: rebuild with the real compiler ==");
    // A fresh folder, so that the demo really compiles every time it runs.
    let build_dir = ScratchDir::new()?;
    let build = recipe.build_with(&build_dir.0, std::slice::from_ref(&edit), |stage| {
        println!("{}", stage_line(&stage, manifest))
    })?;
    println!(
        "built {} in {} ({} translation unit(s) compiled)",
        build.library.display(),
        seconds(build.elapsed),
        build.compiled.len()
    );

    println!("\n== step 5: reload and rehydrate_all() ==");
    let state_before = world.state_checksum()?;
    let robot_before = world.sample_robot()?;
    let old_shadow = world.shadow_path();
    let report = world.reload(&build.library)?;
    println!(
        "{} live objects of {} classes rehydrated",
        report.objects, report.classes
    );
    println!(
        "timings: load {}  images {}  validate {}  scan {}  patch {}  carry {}  relocate {}  unload {}  audit {}",
        millis(report.load),
        millis(report.images),
        millis(report.validate),
        millis(report.scan),
        millis(report.patch),
        millis(report.carry),
        millis(report.relocate),
        millis(report.unload),
        millis(report.audit_time)
    );
    let threads = &report.threads;
    println!(
        "other threads stopped for the commit: {} (stops tried: {}; stopping took {}, they were paused {})",
        threads.stopped,
        threads.attempts,
        millis(threads.stop_latency),
        millis(threads.pause)
    );
    let refs = &report.references;
    println!(
        "references re-pointed: {} vptrs, {} function pointers, {} data pointers, {} into read-only data ({} bytes copied); left alone: {} of the loader, {} on thread stacks, {} unresolved and {} lost in the heap (stale bytes, as a rule)",
        refs.vptrs,
        refs.functions,
        refs.data,
        refs.read_only_data,
        refs.read_only_copy_bytes,
        refs.loader,
        refs.stack_words.iter().map(|(_, n)| n).sum::<usize>(),
        refs.unresolved,
        refs.lost_in_anonymous_memory
    );
    let globals = &report.globals;
    println!(
        "module globals carried into the new build: {} ({} bytes){}; starting fresh: {}",
        globals.carried.len(),
        globals.carried_bytes,
        if globals.carried.is_empty() {
            String::new()
        } else {
            format!(": {}", globals.carried.join(", "))
        },
        if globals.fresh.is_empty() {
            "none".to_string()
        } else {
            globals
                .fresh
                .iter()
                .map(|f| format!("{} ({})", f.name, f.reason))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    println!(
        "audit after unload: {} words still point into the old build (exempt: {} on stacks, {} loader)",
        report.audit.stale, report.audit.on_stacks, report.audit.loader
    );
    let vptrs = world.verify_vptrs()?;
    println!(
        "old build unmapped: {}; vptrs pointing into the new build: {} of {}",
        yes_no(report.old_image_unmapped && !old_shadow.exists()),
        vptrs.slots - vptrs.stale,
        vptrs.slots
    );
    if let Some(why) = &report.old_image_kept_because {
        println!("the old build is still mapped: {why}");
    }
    let state_after = world.state_checksum()?;
    println!(
        "state kept: {} (checksum of every member of every object: {state_before:#018x} before, {state_after:#018x} after)",
        yes_no(state_before == state_after && robot_before.same_state(&world.sample_robot()?))
    );

    println!("\n== step 6: run v2 ==");
    println!("now running {}", world.version()?);
    run_ticks(&mut world, ticks)?;
    let session = world.session()?;
    let session_kept = session == (2 * ticks as i64, ticks as i64);
    println!(
        "event library calls the same handler {:#x}: event 7 -> {}",
        world.event_handler_address(),
        world.publish_event(7)
    );

    drop(world);
    let unchanged = source_tree_digest(manifest)? == tree_before;
    println!("\nsource tree unchanged: {}", yes_no(unchanged));
    if !unchanged || vptrs.stale != 0 || state_before != state_after || !session_kept {
        return Err("the demo's checks failed (see above)".into());
    }
    Ok(())
}

fn run_ticks(world: &mut World, ticks: usize) -> Result<(), Error> {
    for tick in 1..=ticks {
        let summary = world.tick(DT)?;
        if tick == ticks {
            println!(
                "after {ticks} ticks: total score {}; {}",
                summary.score,
                describe(&world.sample_robot()?)
            );
        }
    }
    let (session, since_load) = world.session()?;
    println!(
        "module globals: {session} ticks in this session's score history, {since_load} since this build loaded (marked REHYDRATE_RESET_ON_RELOAD)"
    );
    Ok(())
}

/// One line about a robot.
pub fn describe(robot: &RobotView) -> String {
    format!(
        "robot #{} at ({:.1}, {:.1}) hp {} mood {} battery {} scores {}",
        robot.id, robot.x, robot.y, robot.hp, robot.mood, robot.battery, robot.score
    )
}

fn print_census(world: &World) {
    let census: Vec<String> = world
        .census()
        .iter()
        .map(|(class, count)| format!("{count} {class}"))
        .collect();
    println!("live objects: {}", census.join(", "));
}

/// The demo's edit: `module/edits/behaviour.cpp` compiled in place of `module/behaviour.cpp`.
fn behaviour_edit(recipe: &Recipe, manifest: &Path) -> Result<Substitution, Error> {
    let replace = recipe
        .sources
        .iter()
        .find(|source| source.ends_with("module/behaviour.cpp"))
        .ok_or("the recipe has no module/behaviour.cpp")?
        .clone();
    Ok(Substitution {
        replace,
        with: manifest.join("module/edits/behaviour.cpp"),
    })
}

fn print_edit(edit: &Substitution, manifest: &Path) -> Result<(), Error> {
    let old = std::fs::read_to_string(&edit.replace)?;
    let new = std::fs::read_to_string(&edit.with)?;
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let added: Vec<&&str> = new_lines
        .iter()
        .filter(|line| !old_lines.contains(line))
        .collect();
    println!(
        "{} -> {}: {} line(s) differ, for example:",
        relative(&edit.replace, manifest),
        relative(&edit.with, manifest),
        added.len()
    );
    for line in added.iter().filter(|l| l.contains("return")).take(3) {
        println!("  + {}", line.trim());
    }
    Ok(())
}

/// One line saying what a build stage does (`compiling: module/world.cpp`).
pub fn stage_line(stage: &Stage, manifest: &Path) -> String {
    match stage {
        Stage::Generate => "layout-gen: tables and shim".to_string(),
        Stage::Compile(units) if units.is_empty() => "compiling: nothing changed".to_string(),
        Stage::Compile(units) => {
            let names: Vec<String> = units.iter().map(|u| relative(u, manifest)).collect();
            format!("compiling: {}", names.join(", "))
        }
        Stage::Link => "linking".to_string(),
    }
}

/// A build folder of the demo's own, removed when the demo ends.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> std::io::Result<ScratchDir> {
        let dir = std::env::temp_dir().join(format!("rehydrate-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `path` relative to `base`, or its file name when it lies elsewhere (the generated shim).
pub fn relative(path: &Path, base: &Path) -> String {
    match path.strip_prefix(base) {
        Ok(inside) => inside.display().to_string(),
        Err(_) => path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
    }
}

/// Names, sizes and contents of every file under the example's `module/`, `clib/` and `src/`.
fn source_tree_digest(manifest: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, Error> {
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = ["module", "clib", "src"]
        .iter()
        .map(|d| manifest.join(d))
        .collect();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push((path.clone(), std::fs::read(&path)?));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "NO"
    }
}

/// `1.23 s`.
pub fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// `0.123 ms`.
pub fn millis(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1e3)
}
