//! Generates the layout tables of the fixture header, so that the generated Rust is compiled
//! and checked by `tests/generated_tables.rs`; and builds a whole module whose class names
//! collide with the module's own constants, for `tests/generated_module.rs`.

fn main() {
    build_support::Module::new("fixtures")
        .header("../layout-gen/tests/fixtures/shapes.hpp")
        .namespace("fx")
        .class("game::Pool<int>")
        .generate_or_exit();
    build_support::Module::new("names")
        .header("fixtures/names/names.hpp")
        .source("fixtures/names/names.cpp")
        .build_or_exit();
}
