//! Whether a class can be default-constructed and destroyed from unrelated code, decided by the
//! C++ rules from what the class declares and what its bases and members allow; the answers
//! the shim's thunks rely on, and what `std::is_default_constructible` and `std::is_destructible`
//! say (both compilers agree on this corpus of rules; `tests/special_members.rs` checks them
//! against the compilers).
//!
//! Plain data in, plain data out: the clang walk gathers [`Declared`] for each record, and this
//! module knows nothing of libclang.
//!
//! The rules, for a class `C`:
//! - Its destructor is the one it declares (unless deleted; a defaulted one is deleted when an
//!   implicit one would be), or an implicit one, which is deleted when a base's destructor is
//!   private or deleted (a protected one is fine: `C` may call it) or a member's destructor is
//!   not public.
//! - Its default constructor is a declared constructor callable without arguments (default
//!   arguments count), or, when `C` declares no constructor at all (inherited constructors do not
//!   count), an implicit one. An implicit or defaulted one is deleted when a member is a
//!   reference, a base's default constructor or destructor is private or deleted, or a member's
//!   default constructor or destructor is not public.
//! - `std::is_destructible<C>`: the destructor is public. `std::is_default_constructible<C>`: `C`
//!   is not abstract, and its default constructor and its destructor are public (both compilers
//!   require the destructor, measured).
//!
//! A class that a base or member class befriends may call its private special members.
//!
//! Not modelled (rare in headers; the shim's `static_assert` would name the class): `const` or
//! reference members with default member initializers, unions with non-trivial members.

use rehydrate::tables::Access;

/// Who may call a special member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Callable {
    /// Anyone.
    Public,
    /// The class, its friends, and classes derived from it.
    Protected,
    /// The class and its friends.
    Private,
    /// Nobody: deleted, or not there.
    Never,
}

impl Callable {
    fn of(access: Access) -> Callable {
        match access {
            Access::Public => Callable::Public,
            Access::Protected => Callable::Protected,
            Access::Private => Callable::Private,
        }
    }

    /// From a class derived from the one that has it.
    fn callable_from_derived(self) -> bool {
        matches!(self, Callable::Public | Callable::Protected)
    }

    /// From a class that has a member of this type, or from unrelated code.
    fn callable_from_outside(self) -> bool {
        self == Callable::Public
    }
}

/// One special member as the class declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Declared {
    pub access: Access,
    /// `= delete`.
    pub deleted: bool,
    /// `= default` (its body is the implicit one, and deleted when that would be).
    pub defaulted: bool,
}

/// A constructor the class declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeclaredConstructor {
    pub declared: Declared,
    /// Callable without arguments (none, or all defaulted).
    pub is_default: bool,
}

/// What a class declares itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClassDeclarations {
    pub destructor: Option<Declared>,
    /// Every constructor it declares (copy and move ones too); inherited ones are not here.
    pub constructors: Vec<DeclaredConstructor>,
    pub is_abstract: bool,
}

/// What the policy decided for a class: who may call its default constructor and destructor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Traits {
    pub default_constructor: Callable,
    pub destructor: Callable,
    pub is_abstract: bool,
}

impl Traits {
    /// What a member or base whose class is unknown is taken to allow: everything (the shim's
    /// checks find out otherwise).
    pub const UNKNOWN: Traits = Traits {
        default_constructor: Callable::Public,
        destructor: Callable::Public,
        is_abstract: false,
    };

    /// What a friend of the class may call: its private members too, as if they were public.
    pub fn as_seen_by_a_friend(self) -> Traits {
        let open = |callable| match callable {
            Callable::Private => Callable::Public,
            other => other,
        };
        Traits {
            default_constructor: open(self.default_constructor),
            destructor: open(self.destructor),
            is_abstract: self.is_abstract,
        }
    }

    /// `std::is_destructible`.
    pub fn is_destructible(&self) -> bool {
        self.destructor.callable_from_outside()
    }

    /// `std::is_default_constructible`: what `new (p) T` in the shim needs.
    pub fn is_default_constructible(&self) -> bool {
        !self.is_abstract
            && self.default_constructor.callable_from_outside()
            && self.destructor.callable_from_outside()
    }
}

/// A data member, as far as the rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberTraits {
    /// Scalar, pointer, enum, or an array of those.
    Scalar,
    /// A reference.
    Reference,
    /// A class, or an array of one.
    Class(Traits),
}

/// The default constructor and destructor of a class that declares `own`, with bases and
/// members allowing what `bases` and `members` say.
pub(crate) fn decide(
    own: &ClassDeclarations,
    bases: &[Traits],
    members: &[MemberTraits],
) -> Traits {
    let member_classes = || {
        members.iter().filter_map(|m| match m {
            MemberTraits::Class(traits) => Some(traits),
            _ => None,
        })
    };
    let implicit_destructor_deleted = bases.iter().any(|b| !b.destructor.callable_from_derived())
        || member_classes().any(|m| !m.destructor.callable_from_outside());
    let destructor = match own.destructor {
        None if implicit_destructor_deleted => Callable::Never,
        None => Callable::Public,
        Some(declared) if declared.deleted => Callable::Never,
        Some(declared) if declared.defaulted && implicit_destructor_deleted => Callable::Never,
        Some(declared) => Callable::of(declared.access),
    };

    let implicit_constructor_deleted = members.contains(&MemberTraits::Reference)
        || bases.iter().any(|b| {
            !b.default_constructor.callable_from_derived() || !b.destructor.callable_from_derived()
        })
        || member_classes().any(|m| {
            !m.default_constructor.callable_from_outside()
                || !m.destructor.callable_from_outside()
                || m.is_abstract
        });
    let default_constructor = if own.constructors.is_empty() {
        if implicit_constructor_deleted {
            Callable::Never
        } else {
            Callable::Public
        }
    } else {
        own.constructors
            .iter()
            .filter(|c| c.is_default && !c.declared.deleted)
            .filter(|c| !(c.declared.defaulted && implicit_constructor_deleted))
            .map(|c| Callable::of(c.declared.access))
            .next()
            .unwrap_or(Callable::Never)
    };
    Traits {
        default_constructor,
        destructor,
        is_abstract: own.is_abstract,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(access: Access) -> Declared {
        Declared {
            access,
            deleted: false,
            defaulted: false,
        }
    }

    fn constructor(access: Access, is_default: bool) -> DeclaredConstructor {
        DeclaredConstructor {
            declared: declared(access),
            is_default,
        }
    }

    fn traits(default_constructor: Callable, destructor: Callable) -> Traits {
        Traits {
            default_constructor,
            destructor,
            is_abstract: false,
        }
    }

    #[test]
    fn an_implicit_class_of_plain_members_is_constructible_and_destructible() {
        let t = decide(&ClassDeclarations::default(), &[], &[MemberTraits::Scalar]);
        assert!(t.is_default_constructible() && t.is_destructible());
    }

    #[test]
    fn a_protected_base_destructor_leaves_the_derived_class_destructible() {
        let base = traits(Callable::Public, Callable::Protected);
        let t = decide(&ClassDeclarations::default(), &[base], &[]);
        assert_eq!(t.destructor, Callable::Public);
        assert!(t.is_default_constructible());
        // The base itself is neither.
        assert!(!base.is_destructible() && !base.is_default_constructible());
    }

    #[test]
    fn a_private_base_destructor_deletes_the_derived_ones() {
        let base = traits(Callable::Public, Callable::Private);
        let t = decide(&ClassDeclarations::default(), &[base], &[]);
        assert_eq!(t.destructor, Callable::Never);
        assert!(!t.is_default_constructible());
    }

    #[test]
    fn a_member_with_a_protected_destructor_deletes_the_implicit_ones() {
        let member = MemberTraits::Class(traits(Callable::Public, Callable::Protected));
        let t = decide(&ClassDeclarations::default(), &[], &[member]);
        assert_eq!(
            (t.default_constructor, t.destructor),
            (Callable::Never, Callable::Never)
        );
    }

    #[test]
    fn a_protected_base_constructor_is_enough_but_a_member_needs_a_public_one() {
        let base = traits(Callable::Protected, Callable::Public);
        assert!(decide(&ClassDeclarations::default(), &[base], &[]).is_default_constructible());
        let member = MemberTraits::Class(base);
        assert!(!decide(&ClassDeclarations::default(), &[], &[member]).is_default_constructible());
    }

    #[test]
    fn declared_constructors_decide_and_suppress_the_implicit_one() {
        let only_with_arguments = ClassDeclarations {
            constructors: vec![constructor(Access::Public, false)],
            ..ClassDeclarations::default()
        };
        assert!(!decide(&only_with_arguments, &[], &[]).is_default_constructible());
        let private_default = ClassDeclarations {
            constructors: vec![constructor(Access::Private, true)],
            ..ClassDeclarations::default()
        };
        let t = decide(&private_default, &[], &[]);
        assert_eq!(t.default_constructor, Callable::Private);
        assert!(!t.is_default_constructible());
        let with_default_arguments = ClassDeclarations {
            constructors: vec![
                constructor(Access::Public, false),
                constructor(Access::Public, true),
            ],
            ..ClassDeclarations::default()
        };
        assert!(decide(&with_default_arguments, &[], &[]).is_default_constructible());
    }

    #[test]
    fn deleted_and_defaulted_members_follow_the_implicit_rules() {
        let deleted = ClassDeclarations {
            constructors: vec![DeclaredConstructor {
                declared: Declared {
                    deleted: true,
                    ..declared(Access::Public)
                },
                is_default: true,
            }],
            ..ClassDeclarations::default()
        };
        assert!(!decide(&deleted, &[], &[]).is_default_constructible());
        let defaulted = ClassDeclarations {
            constructors: vec![DeclaredConstructor {
                declared: Declared {
                    defaulted: true,
                    ..declared(Access::Public)
                },
                is_default: true,
            }],
            destructor: Some(Declared {
                defaulted: true,
                ..declared(Access::Public)
            }),
            ..ClassDeclarations::default()
        };
        assert!(decide(&defaulted, &[], &[MemberTraits::Scalar]).is_default_constructible());
        assert!(!decide(&defaulted, &[], &[MemberTraits::Reference]).is_default_constructible());
        let no_destructor = MemberTraits::Class(traits(Callable::Public, Callable::Never));
        let t = decide(&defaulted, &[], &[no_destructor]);
        assert_eq!(t.destructor, Callable::Never);
    }

    #[test]
    fn a_deleted_destructor_makes_the_class_not_default_constructible_either() {
        let own = ClassDeclarations {
            destructor: Some(Declared {
                deleted: true,
                ..declared(Access::Public)
            }),
            ..ClassDeclarations::default()
        };
        let t = decide(&own, &[], &[]);
        assert_eq!(t.default_constructor, Callable::Public);
        assert!(!t.is_default_constructible() && !t.is_destructible());
    }

    #[test]
    fn a_friend_may_call_private_special_members() {
        // libstdc++'s `__pair_base` has a private destructor and befriends `pair`.
        let base = traits(Callable::Private, Callable::Private);
        assert!(!decide(&ClassDeclarations::default(), &[base], &[]).is_destructible());
        let seen = base.as_seen_by_a_friend();
        assert!(decide(&ClassDeclarations::default(), &[seen], &[]).is_default_constructible());
        let member = MemberTraits::Class(seen);
        assert!(decide(&ClassDeclarations::default(), &[], &[member]).is_destructible());
    }

    #[test]
    fn abstract_classes_are_not_default_constructible_but_serve_as_bases() {
        let own = ClassDeclarations {
            is_abstract: true,
            ..ClassDeclarations::default()
        };
        let base = decide(&own, &[], &[]);
        assert!(!base.is_default_constructible());
        assert!(decide(&ClassDeclarations::default(), &[base], &[]).is_default_constructible());
        assert!(!decide(
            &ClassDeclarations::default(),
            &[],
            &[MemberTraits::Class(base)]
        )
        .is_default_constructible());
    }
}
