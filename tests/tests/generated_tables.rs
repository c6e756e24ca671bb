//! The generated Rust tables compile, and their contents are coherent: the hash written by the
//! generator equals the one the runtime computes, and fields, vptrs and padding together cover
//! every byte of each class.

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

#[test]
fn fields_vptrs_and_padding_cover_every_byte() {
    for class in CLASSES {
        let mut covered = vec![false; class.size as usize];
        let ranges = class
            .fields
            .iter()
            .map(|f| f.byte_range())
            .chain(
                class
                    .vptr_offsets
                    .iter()
                    .map(|&v| rehydrate::tables::ByteRange {
                        start: v,
                        end: v + 8,
                    }),
            )
            .chain(class.padding.iter().copied());
        for range in ranges {
            for byte in range.start..range.end {
                covered[byte as usize] = true;
            }
        }
        let missing: Vec<usize> = covered
            .iter()
            .enumerate()
            .filter(|(_, c)| !**c)
            .map(|(i, _)| i)
            .collect();
        assert!(
            missing.is_empty(),
            "{}: bytes {missing:?} are in no field, vptr or padding",
            class.name
        );
        for hole in class.padding {
            let overlaps = class.fields.iter().any(|f| {
                let r = f.byte_range();
                r.start < hole.end && hole.start < r.end
            });
            assert!(
                !overlaps,
                "{}: padding {hole:?} overlaps a field",
                class.name
            );
        }
    }
}
