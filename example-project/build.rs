//! Generates the example module's layout tables at build time.

fn main() {
    let include = format!("-I{}", rehydrate::include_dir().display());
    build_support::Module::new("world")
        .header("module/world.hpp")
        .annotated()
        .clang_arg(&include)
        .generate_or_exit();
}
