//! Builds the world module (layout tables, shim, `libworld.so`) and the never-reloaded event
//! library the host links statically.

fn main() {
    build_support::Module::new("world")
        .header("module/world.hpp")
        .source("module/world.cpp")
        .source("module/behaviour.cpp")
        .include("module")
        .std("c++17")
        .annotated()
        .build_or_exit();

    println!("cargo:rerun-if-changed=clib/events.c");
    cc::Build::new().file("clib/events.c").compile("events");
}
