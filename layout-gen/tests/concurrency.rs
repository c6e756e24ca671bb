//! Only one `clang::Clang` may exist per process; `layout-gen` serialises its libclang use so
//! that callers on many threads (parallel tests, build scripts) never see "already exists".

use std::path::Path;

use layout_gen::{Request, Selection};

#[test]
fn analyses_on_many_threads_all_succeed() {
    let request = Request {
        headers: vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shapes.hpp")],
        clang_args: vec![],
        selection: Selection {
            classes: vec!["fx::Diamond".into()],
            ..Selection::default()
        },
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    for _ in 0..5 {
                        let model = layout_gen::analyze(&request)
                            .expect("analysis succeeds on every thread");
                        assert_eq!(model.classes[0].size, 48);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
    });
}
