//! Whether the generated shim, a translation unit of its own, can name a class: a class in an
//! anonymous namespace belongs to another translation unit, and a private or protected member
//! class cannot be named from outside its enclosing class. Such classes are left out of a
//! selection by namespace, annotation or header (with the reason), and refused when named.
//! (Local classes are never candidates: the walk does not look inside functions.)
//!
//! Plain data in: the clang walk describes where a class is declared, outermost scope first.

use rehydrate::tables::Access;

/// One scope around a class, or the class itself (the last step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A namespace; `None` for an anonymous one.
    Namespace(Option<String>),
    /// A class, with its access in the class that encloses it (`Public` at namespace scope).
    Class { name: String, access: Access },
}

/// Why generated code cannot name the class at the end of `steps`, or `None` when it can.
pub(crate) fn why_unnameable(steps: &[Step]) -> Option<String> {
    if steps.contains(&Step::Namespace(None)) {
        return Some(
            "it is in an anonymous namespace, which the generated shim (another translation unit) \
             cannot name"
                .to_string(),
        );
    }
    let mut enclosing: Option<&str> = None;
    for step in steps {
        if let Step::Class { name, access } = step {
            if *access != Access::Public {
                let outer = enclosing.unwrap_or("its enclosing class");
                return Some(format!(
                    "`{name}` is a {} member class of `{outer}`, which generated code cannot name",
                    access.keyword()
                ));
            }
            enclosing = Some(name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, access: Access) -> Step {
        Step::Class {
            name: name.into(),
            access,
        }
    }

    #[test]
    fn public_classes_at_any_depth_can_be_named() {
        let steps = [
            Step::Namespace(Some("game".into())),
            class("Outer", Access::Public),
            class("Inner", Access::Public),
        ];
        assert_eq!(why_unnameable(&steps), None);
    }

    #[test]
    fn anonymous_namespaces_and_non_public_member_classes_cannot() {
        let anonymous = [
            Step::Namespace(Some("game".into())),
            Step::Namespace(None),
            class("Hidden", Access::Public),
        ];
        assert!(why_unnameable(&anonymous)
            .unwrap()
            .contains("anonymous namespace"));
        let private = [
            class("Document", Access::Public),
            class("DepthTracker", Access::Private),
        ];
        assert_eq!(
            why_unnameable(&private).unwrap(),
            "`DepthTracker` is a private member class of `Document`, which generated code cannot name"
        );
        let inside_protected = [
            class("Outer", Access::Public),
            class("Prot", Access::Protected),
            class("Deeper", Access::Public),
        ];
        assert!(why_unnameable(&inside_protected)
            .unwrap()
            .contains("protected member class of `Outer`"));
    }
}
