//! Generates the layout tables of the fixture header, so that the generated Rust is compiled
//! and checked by `tests/generated_tables.rs`.

fn main() {
    build_support::Module::new("fixtures")
        .header("../layout-gen/tests/fixtures/shapes.hpp")
        .namespace("fx")
        .class("game::Pool<int>")
        .generate_or_exit();
}
