//! The generated Rust tables compile (inside a private module, as a host includes them, with
//! warnings denied), and the hash written by the generator equals the one the runtime computes.
//! Whether their padding is right is checked against the compiler in `shim_compiles.rs`.

#![deny(warnings)]

mod fixtures {
    include!(concat!(
        env!("OUT_DIR"),
        "/rehydrate/fixtures/layout_tables.rs"
    ));
}

use fixtures::CLASSES;

#[test]
fn tables_are_compiled_in_with_their_layouts() {
    let diamond = CLASSES
        .iter()
        .find(|c| c.name == "fx::Diamond")
        .expect("fx::Diamond is generated");
    assert_eq!((diamond.size, diamond.align), (48, 8));
    assert_eq!(diamond.vptr_offsets, &[0, 16, 32]);
    assert!(diamond
        .bases
        .iter()
        .any(|b| b.name == "fx::Node" && b.is_virtual && b.offset == 32));
    assert_eq!(fixtures::GAME_POOL_INT.name, "game::Pool<int>");
}

#[test]
fn generated_hash_matches_the_runtime_hash() {
    for class in CLASSES {
        assert_eq!(
            class.layout_hash,
            class.compute_layout_hash(),
            "{}",
            class.name
        );
    }
}
