//! The scripted demo and `--inspect`, run as a user runs them, checked on what they print and
//! on the example's source tree being exactly as it was.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_example-project"))
        .args(args)
        .output()
        .expect("the example runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every file of the example except build outputs, with its contents and permissions.
fn source_tree() -> Vec<(PathBuf, Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read folder") {
            let path = entry.expect("entry").path();
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                let mode = path.metadata().expect("metadata").permissions().mode();
                let contents = std::fs::read(&path).expect("read file");
                files.push((path, contents, mode));
            }
        }
    }
    files.sort();
    files
}

/// The one line of `text` that starts with `prefix`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    let found: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one line starting {prefix:?} in:\n{text}"
    );
    found[0]
}

#[test]
fn the_scripted_demo_reloads_every_object_and_leaves_the_tree_alone() {
    let before = source_tree();
    let (ok, out, err) = run(&[]);
    assert!(ok, "the demo failed:\n{out}\n{err}");
    assert_eq!(source_tree(), before, "the demo changed the source tree");

    for step in 1..=6 {
        assert!(
            out.contains(&format!("== step {step}: ")),
            "step {step} missing:\n{out}"
        );
    }
    assert!(line(&out, "loaded ").starts_with("loaded v1: "), "{out}");
    assert_eq!(
        line(&out, "3500 entities"),
        "3500 entities: 2000 created by the host, 1500 by the module's C++"
    );
    assert_eq!(
        line(&out, "live objects"),
        "live objects: 750 world::Brain, 1200 world::Mover, 1550 world::Robot"
    );
    assert!(
        line(&out, "compiling: ").contains("module/edits/behaviour.cpp"),
        "{out}"
    );
    assert_eq!(
        line(&out, "3500 live objects"),
        "3500 live objects of 3 classes rehydrated"
    );
    let timings = line(&out, "timings: ");
    for phase in ["load", "images", "validate", "patch", "unload"] {
        assert!(timings.contains(&format!("{phase} ")), "{timings}");
    }

    // Every vptr slot of every live object was read after the reload and points into v2.
    let vptrs = line(&out, "old build unmapped: ");
    let counts = vptrs.rsplit(": ").next().expect("counts");
    let (good, all) = counts.split_once(" of ").expect("N of M");
    assert_eq!(good, all, "{vptrs}");
    assert!(all.parse::<usize>().expect("a number") > 3500, "{vptrs}");
    assert!(vptrs.starts_with("old build unmapped: yes;"), "{vptrs}");

    let state = line(&out, "state kept: ");
    assert!(state.starts_with("state kept: yes "), "{state}");
    assert!(
        line(&out, "now running ").starts_with("now running v2: "),
        "{out}"
    );

    // The robot sampled before and after: same id, new code (v2 adds 1000 to a robot's score).
    let scores: Vec<i64> = out
        .lines()
        .filter(|l| l.starts_with("after 5 ticks"))
        .map(|l| {
            l.rsplit("scores ")
                .next()
                .expect("score")
                .parse()
                .expect("number")
        })
        .collect();
    assert_eq!(scores.len(), 2, "{out}");
    assert!(scores[1] > scores[0] + 1000, "{scores:?}");

    // The never-reloaded C library calls one address throughout, reaching v1 then v2.
    let before_reload = line(&out, "event library (never reloaded)");
    let after_reload = line(&out, "event library calls the same");
    assert!(
        before_reload.ends_with("event 7 -> 1007"),
        "{before_reload}"
    );
    assert!(after_reload.ends_with("event 7 -> 2007"), "{after_reload}");
    let address = |l: &str| {
        l.split_whitespace()
            .find(|w| w.starts_with("0x"))
            .map(str::to_string)
    };
    assert_eq!(address(before_reload), address(after_reload));

    assert_eq!(
        line(&out, "source tree unchanged: "),
        "source tree unchanged: yes"
    );
}

#[test]
fn inspect_prints_the_layouts_and_checks_the_compiled_in_tables() {
    let (ok, out, err) = run(&["--inspect"]);
    assert!(ok, "{out}\n{err}");
    for class in [
        "world::Entity",
        "world::Mover",
        "world::Brain",
        "world::Robot",
    ] {
        assert!(out.contains(class), "{class} missing:\n{out}");
    }
    assert!(out.contains("virtual base world::Entity"), "{out}");
    assert!(
        out.contains("the 7 tables compiled into this host match the headers"),
        "{out}"
    );
}
