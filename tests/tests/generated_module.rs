//! What build-support writes for a host compiles without a warning in the user's crate, even
//! when the host uses none of it, and classes named like the module's own constants (`Library`,
//! `Name`, `Recipe`, `Classes`) do not collide with them.

#![deny(warnings)]

mod unused {
    rehydrate::include_module!("names");
}

mod names {
    rehydrate::include_module!("names");
}

#[test]
fn the_module_constants_and_the_class_tables_are_all_there() {
    assert_eq!(names::NAME, "names");
    assert!(names::LIBRARY.ends_with("libnames.so"));
    assert!(names::RECIPE.ends_with("recipe.json"));
    assert_eq!(names::LIBRARY_TABLE.name, "Library");
    assert_eq!(names::NAME_TABLE.name, "Name");
    assert_eq!(names::RECIPE_TABLE.name, "Recipe");
    assert_eq!(names::CLASSES_TABLE.name, "Classes");
    let mut listed: Vec<&str> = names::CLASSES.iter().map(|c| c.name).collect();
    listed.sort();
    assert_eq!(listed, ["Classes", "Library", "Name", "Recipe"]);
    let runtime = rehydrate::Runtime::load(names::LIBRARY).unwrap();
    drop(runtime.create("Library").unwrap());
}
