//! The `layout-gen` command: `inspect` prints class layouts, `generate` writes the Rust tables
//! and the C++ shim (the same code path `build-support` uses).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use layout_gen::{Request, Selection};

#[derive(Parser)]
#[command(
    name = "layout-gen",
    version,
    about = "C++ class layouts for hot reload, from the clang AST"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the layout of each selected class: offset, size and what lives there.
    Inspect {
        #[command(flatten)]
        input: Input,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the Rust layout tables and the C++ shim into a directory.
    Generate {
        #[command(flatten)]
        input: Input,
        /// Directory for `layout_tables.rs` and `rehydrate_shim.cpp`.
        #[arg(long, short)]
        out_dir: PathBuf,
    },
}

#[derive(Args)]
struct Input {
    /// Headers to parse, in include order.
    #[arg(required = true)]
    headers: Vec<PathBuf>,
    /// Select a class by qualified name (template instantiations too: 'game::Pool<int>').
    #[arg(long = "class", value_name = "NAME")]
    classes: Vec<String>,
    /// Select every class in a namespace.
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,
    /// Select every class annotated with `__attribute__((annotate("NAME")))`
    /// (`REHYDRATE_RELOADABLE` from rehydrate/module_abi.h).
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = layout_gen::DEFAULT_ANNOTATION)]
    annotated: Option<String>,
    /// Arguments for clang after `--`: include directories, defines, -std.
    #[arg(last = true)]
    clang_args: Vec<String>,
}

impl Input {
    /// The request, with the folder of `rehydrate/module_abi.h` on clang's include path (as
    /// build-support adds it), so headers that include it need no `-I` by hand.
    fn request(self) -> Request {
        let mut clang_args = self.clang_args;
        let rehydrate_headers = rehydrate::include_dir();
        if rehydrate_headers.join("rehydrate/module_abi.h").is_file() {
            clang_args.push(format!("-I{}", rehydrate_headers.display()));
        }
        Request {
            headers: self.headers,
            clang_args,
            selection: Selection {
                classes: self.classes,
                namespaces: self.namespaces,
                annotation: self.annotated,
            },
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("layout-gen: error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), layout_gen::Error> {
    match cli.command {
        Command::Inspect { input, json } => {
            let model = layout_gen::analyze(&input.request())?;
            if json {
                let document = layout_gen::inspect::json(&model);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&document).expect("JSON values serialise")
                );
            } else {
                print!("{}", layout_gen::inspect::text(&model));
            }
        }
        Command::Generate { input, out_dir } => {
            let generated = layout_gen::generate(&input.request(), &out_dir)?;
            for class in &generated.model.classes {
                println!(
                    "{}: {} bytes, {} vptr(s)",
                    class.name,
                    class.size,
                    class.vptr_offsets.len()
                );
            }
            for path in [&generated.rust_tables, &generated.cpp_shim] {
                let state = if generated.changed.contains(path) {
                    "written"
                } else {
                    "unchanged"
                };
                println!("{state}: {}", path.display());
            }
        }
    }
    Ok(())
}
