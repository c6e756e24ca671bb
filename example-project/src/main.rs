//! The example host. For now it shows the build-time half of the workflow: the layout tables
//! that `build.rs` compiled in for the module's reloadable classes, checked against a fresh
//! analysis of the same header, printed as `layout-gen inspect` prints them.

mod world {
    include!(concat!(
        env!("OUT_DIR"),
        "/rehydrate/world/layout_tables.rs"
    ));
}

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("module/world.hpp");
    let request = layout_gen::Request {
        headers: vec![header],
        clang_args: vec![format!("-I{}", rehydrate::include_dir().display())],
        selection: layout_gen::Selection {
            annotation: Some(layout_gen::DEFAULT_ANNOTATION.to_string()),
            ..Default::default()
        },
    };
    let model = match layout_gen::analyze(&request) {
        Ok(model) => model,
        Err(error) => {
            eprintln!("example: {error}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", layout_gen::inspect::text(&model));

    println!(
        "\ncompiled-in tables: {} reloadable classes",
        world::CLASSES.len()
    );
    let mut stale = 0;
    for table in world::CLASSES {
        let fresh = model.classes.iter().find(|c| c.name == table.name);
        let state = match fresh {
            Some(class) if class.layout_hash == table.layout_hash => "matches the header",
            _ => {
                stale += 1;
                "STALE: rebuild"
            }
        };
        println!(
            "  {:<18} {:>4} bytes  {} vptr(s)  hash {:#018x}  {state}",
            table.name,
            table.size,
            table.vptr_offsets.len(),
            table.layout_hash
        );
    }
    if stale == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
