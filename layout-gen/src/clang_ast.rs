//! The only module that calls libclang (through the `clang` crate).
//!
//! It parses the request's headers as one translation unit, resolves the selection to class
//! definitions, and copies what the layout needs into [`AstFacts`]: plain data, no clang handles.
//! libclang's failure values (incomplete, dependent, invalid) become typed [`Error`]s here, with
//! the class or member named. Nothing else in the crate may touch clang.
//!
//! libclang 19 shows an implicit template instantiation's bases only as its template wrote them
//! (`B<T>`). When the walk meets such a base it asks for a second reading of the translation
//! unit (see [`Reading`]) with a type alias per instantiated base appended (`using
//! layout_gen_base_… = B<int>;` in the template's namespace); the second reading finds the
//! bases through those aliases. A base that still cannot be found leaves the record's bases
//! unknown ([`RecordFacts::bases_unknown`]): opaque as a member, not a class of its own.
//!
//! Which special members are callable ([`crate::special_members`]) and which classes generated
//! code can name ([`crate::reach`]) are decided outside this module, from the plain data it
//! gathers.
//!
//! Only one `clang::Clang` may exist per process, so every walk holds [`LIBCLANG`] for its whole
//! duration: callers on several threads are serialised instead of failing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clang::diagnostic::Severity;
use clang::source::File;
use clang::TranslationUnit;
use clang::{
    Accessibility, Availability, Clang, Entity, EntityKind, EntityVisitResult, Index,
    TemplateArgument, Type, TypeKind, Unsaved,
};
use rehydrate::tables::Access;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::{Diagnostic, Error};
use crate::facts::{AstFacts, BaseFacts, FieldFacts, MemberKind, RecordFacts, SourcePos};
use crate::reach;
use crate::request::Request;
use crate::special_members::{
    self, ClassDeclarations, Declared, DeclaredConstructor, MemberTraits, Traits,
};

/// Serialises every use of libclang in this process.
static LIBCLANG: Mutex<()> = Mutex::new(());

/// Prefix of the type aliases the synthesized translation unit declares, one per class
/// selected by name, so that template instantiations are named, instantiated and found.
const SELECT_ALIAS: &str = "layout_gen_select_";

/// Source lines the synthesized translation unit spends on each class selected by name.
const LINES_PER_SELECTION: u32 = 2;

/// The parsed translation unit of a request, with what the walk needs to read it.
struct ParsedUnit<'a> {
    unit: &'a TranslationUnit<'a>,
    path: &'a Path,
    headers: &'a [PathBuf],
}

/// What one reading of the translation unit came to.
enum Reading<T> {
    /// Everything needed was found.
    Done(T),
    /// Dependent bases of template instantiations were met: parse again with these lines
    /// (type aliases naming the instantiated bases) appended, and read again.
    Again(Vec<String>),
}

/// Parses the request's synthesized translation unit while holding [`LIBCLANG`], runs `read`
/// on it (and once more on a unit with the lines it asks for, when it asks), and then runs
/// `then` on what `read` returned on another thread, while this one disposes of libclang's
/// data (which takes a while for a large translation unit).
fn with_unit<T: Send, R: Send>(
    request: &Request,
    mut read: impl FnMut(ParsedUnit<'_>, &[String]) -> Result<Reading<T>, Error>,
    then: impl FnOnce(T) -> R + Send,
) -> Result<R, Error> {
    let headers = canonical_headers(&request.headers)?;
    // Declared before `clang` so that it is released after `clang` is dropped.
    let _guard = LIBCLANG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let clang = Clang::new().map_err(Error::Libclang)?;
    let index = Index::new(&clang, false, false);
    let unit_path = synthesized_unit_path(&headers[0]);
    // No error limit: a second reading may declare many base aliases that do not work out
    // (each is only not found), and clang would stop reading at the twentieth error.
    let mut arguments: Vec<String> = ["-x", "c++", "-std=c++17", "-ferror-limit=0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    arguments.extend(request.clang_args.iter().cloned());
    let parse = |extra: &[String]| {
        let unit_source = synthesized_unit(&headers, &request.selection.classes, extra);
        index
            .parser(&unit_path)
            .arguments(&arguments)
            .unsaved(&[Unsaved::new(&unit_path, &unit_source)])
            .skip_function_bodies(true)
            .parse()
            .map_err(|source| Error::ParseFailed {
                header: headers[0].clone(),
                source,
            })
    };
    let mut extra = Vec::new();
    let mut unit = parse(&extra)?;
    let found = loop {
        let parsed = ParsedUnit {
            unit: &unit,
            path: &unit_path,
            headers: &headers,
        };
        match read(parsed, &extra)? {
            Reading::Done(found) => break found,
            Reading::Again(lines) if extra.is_empty() => {
                extra = lines;
                unit = parse(&extra)?;
            }
            Reading::Again(_) => unreachable!("the second reading never asks again"),
        }
    };
    Ok(std::thread::scope(|scope| {
        let after = scope.spawn(move || then(found));
        drop(unit);
        after
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }))
}

/// Parses the same translation unit as [`walk_then`] and nothing more: the baseline that the
/// generate benchmark compares against.
pub(crate) fn parse_only(request: &Request) -> Result<(), Error> {
    with_unit(request, |_, _| Ok(Reading::Done(())), |()| ())
}

/// Parses the headers, collects the facts of every selected class and what it reaches, and
/// runs `then` on them (while libclang cleans up on the calling thread).
pub(crate) fn walk_then<R: Send>(
    request: &Request,
    then: impl FnOnce(AstFacts) -> R + Send,
) -> Result<R, Error> {
    with_unit(
        request,
        |parsed, extra| collect(request, parsed, extra),
        then,
    )
}

/// Reads the facts of every selected class. `base_aliases` are the lines of a first reading's
/// request (see [`Reading::Again`]), declared at the end of the unit: the first reading that
/// meets a dependent base asks for them, unless this is the second.
fn collect(
    request: &Request,
    parsed: ParsedUnit<'_>,
    base_aliases: &[String],
) -> Result<Reading<AstFacts>, Error> {
    let ParsedUnit {
        unit,
        path: unit_path,
        headers,
    } = parsed;
    check_diagnostics(
        unit,
        unit_path,
        headers.len() as u32,
        &request.selection.classes,
    )?;

    let root = unit.get_entity();
    let mut collector = Collector {
        second_reading: !base_aliases.is_empty(),
        ..Collector::default()
    };
    if collector.second_reading {
        collector.base_aliases = declared_base_aliases(root);
    }
    let mut selected = Vec::new();
    let mut unnameable = Vec::new();
    for (index, name) in request.selection.classes.iter().enumerate() {
        let record = selected_by_name(root, index, name)?;
        let display_name = record.get_display_name();
        let declaration = record.get_declaration();
        if let Some(reason) = declaration.and_then(|d| why_unnameable(d, &display_name)) {
            return Err(selection_failure(name, &reason));
        }
        selected.push(collector.record(record)?);
    }
    let selected_by_name = selected.clone();
    if request.selection.classes.is_empty()
        || !request.selection.namespaces.is_empty()
        || request.selection.annotation.is_some()
    {
        let mut candidates = Vec::new();
        collect_definitions(root, &mut candidates);
        // Most candidates become records: growing the map step by step would move every
        // record's facts several times.
        collector.records.reserve(candidates.len());
        let scope = SelectionScope::new(request, headers);
        for Definition { entity, members } in candidates {
            let Some(ty) = entity.get_type() else {
                continue;
            };
            let ty = ty.get_canonical_type();
            let name = ty.get_display_name();
            if scope.selects(entity, &members, &name) {
                if let Some(reason) = why_unnameable(entity, &name) {
                    tracing::warn!(class = %name, %reason, "skipped");
                    unnameable.push((name, reason));
                    continue;
                }
                selected.push(collector.record_named(ty, name, Some(members))?);
            }
        }
    }
    if !collector.wanted_base_aliases.is_empty() && !collector.second_reading {
        return Ok(Reading::Again(collector.wanted_base_aliases));
    }
    let mut seen = FxHashSet::with_capacity_and_hasher(selected.len(), Default::default());
    selected.retain(|name| seen.insert(name.clone()));
    if selected.is_empty() {
        return Err(Error::NothingSelected(describe_selection(request)));
    }
    Ok(Reading::Done(AstFacts {
        selected,
        selected_by_name,
        unnameable,
        records: collector.records,
    }))
}

fn canonical_headers(headers: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    if headers.is_empty() {
        return Err(Error::NothingSelected("no header given".into()));
    }
    headers
        .iter()
        .map(|path| {
            if path.is_file() {
                path.canonicalize()
                    .map_err(|_| Error::HeaderNotFound { path: path.clone() })
            } else {
                Err(Error::HeaderNotFound { path: path.clone() })
            }
        })
        .collect()
}

/// The translation unit exists only in memory, next to the first header so that relative
/// `#include`s in it behave as they would in a source file there.
fn synthesized_unit_path(first_header: &Path) -> PathBuf {
    first_header
        .parent()
        .unwrap_or(Path::new("."))
        .join("layout-gen-selection.cpp")
}

fn synthesized_unit(headers: &[PathBuf], classes: &[String], base_aliases: &[String]) -> String {
    let mut source = String::new();
    for header in headers {
        source.push_str(&format!("#include \"{}\"\n", header.display()));
    }
    for (index, class) in classes.iter().enumerate() {
        source.push_str(&format!("using {SELECT_ALIAS}{index} = {class};\n"));
        source.push_str(&format!(
            "static_assert(sizeof({SELECT_ALIAS}{index}) > 0, \"layout-gen instantiates {index}\");\n"
        ));
    }
    for line in base_aliases {
        source.push_str(line);
        source.push('\n');
    }
    source
}

/// A key for a base alias: the base's spelling and where its template is, hashed.
fn stable_key(spelling: &str, pattern: Entity<'_>) -> u64 {
    let mut key = fnv1a(spelling.as_bytes(), 0x9e37_79b9_7f4a_7c15);
    let place = pattern
        .get_semantic_parent()
        .and_then(|p| p.get_display_name())
        .unwrap_or_default();
    key = fnv1a(place.as_bytes(), key);
    key
}

/// FNV-1a over `bytes`, from `seed`: names aliases deterministically within one run.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed ^ 0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Prefix of the type aliases a second reading declares for dependent bases.
const BASE_ALIAS: &str = "layout_gen_base_";

/// Every base alias a second reading declared, by name, with the type it names.
fn declared_base_aliases(root: Entity<'_>) -> FxHashMap<String, Type<'_>> {
    let mut found = FxHashMap::default();
    let mut pending = vec![root];
    while let Some(scope) = pending.pop() {
        for child in scope.get_children() {
            match child.get_kind() {
                EntityKind::Namespace if !child.is_in_system_header() => pending.push(child),
                EntityKind::TypeAliasDecl => {
                    let name = child.get_name().unwrap_or_default();
                    if name.starts_with(BASE_ALIAS) {
                        if let Some(ty) = child.get_typedef_underlying_type() {
                            found.insert(name, ty.get_canonical_type());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// The declaration that names `spelling` as an alias in the namespaces of `pattern`, for a
/// second reading: `namespace g { using layout_gen_base_<key> = B<int>; }`; `None` where the
/// template is not at namespace scope (or in an anonymous one).
fn base_alias_line(pattern: Entity<'_>, alias: &str, spelling: &str) -> Option<String> {
    let mut namespaces = Vec::new();
    let mut scope = pattern.get_semantic_parent();
    while let Some(current) = scope {
        match current.get_kind() {
            EntityKind::Namespace => namespaces.push(current.get_name()?),
            // The translation unit (which the `clang` crate reports as `NotImplemented`).
            EntityKind::TranslationUnit | EntityKind::NotImplemented => break,
            _ => return None,
        }
        scope = current.get_semantic_parent();
    }
    namespaces.reverse();
    let mut line = String::new();
    for namespace in &namespaces {
        line.push_str(&format!("namespace {namespace} {{ "));
    }
    // On lines of their own, so that nothing in the spelling can swallow the closing braces.
    line.push_str(&format!("\nusing {alias} = {spelling};\n"));
    for _ in &namespaces {
        line.push_str("} ");
    }
    Some(line)
}

/// How the base specifier `base` of the template `pattern` reads for the instantiation whose
/// declaration is `instance`: its tokens with each template parameter replaced by the argument
/// (a type's canonical spelling, an integer's value); `None` where that cannot be done (a
/// template template parameter, a pack, an argument libclang does not give).
fn instantiated_base_spelling(
    pattern: Entity<'_>,
    base: Entity<'_>,
    instance: Entity<'_>,
) -> Option<String> {
    let mut parameters = Vec::new();
    let mut pack = None;
    for child in pattern.get_children() {
        match child.get_kind() {
            EntityKind::TemplateTypeParameter
            | EntityKind::NonTypeTemplateParameter
            | EntityKind::TemplateTemplateParameter
                if pack.is_some() =>
            {
                return None; // a parameter after the pack
            }
            EntityKind::TemplateTypeParameter if tokens(child).iter().any(|t| t == "...") => {
                pack = Some(child.get_name()?);
            }
            EntityKind::TemplateTypeParameter => parameters.push((child.get_name()?, false)),
            EntityKind::NonTypeTemplateParameter => {
                let is_bool = child
                    .get_type()
                    .is_some_and(|t| t.get_kind() == TypeKind::Bool);
                parameters.push((child.get_name()?, is_bool));
            }
            EntityKind::TemplateTemplateParameter => return None,
            _ => {}
        }
    }
    let (arguments, pack_arguments) = match &pack {
        // A trailing parameter pack of types (`template <class... Ts>`): the type lists every
        // argument, the pack's expanded.
        Some(_) => {
            let types = instance.get_type()?.get_template_argument_types()?;
            if types.len() <= parameters.len() {
                return None; // an empty pack
            }
            let packed: Vec<String> = types[parameters.len()..]
                .iter()
                .map(|t| t.map(|t| t.get_canonical_type().get_display_name()))
                .collect::<Option<_>>()?;
            // The parameters before the pack: from the declaration's own arguments (which give
            // values too), else from the type's.
            let leading = instance
                .get_template_arguments()
                .filter(|arguments| arguments.len() > parameters.len())
                .and_then(|arguments| spelled_arguments(arguments, &parameters))
                .or_else(|| {
                    let leading = types[..parameters.len()].iter().copied();
                    spelled_arguments(
                        leading
                            .map(|t| t.map(TemplateArgument::Type))
                            .collect::<Option<Vec<_>>>()?,
                        &parameters,
                    )
                })?;
            (leading, packed.join(", "))
        }
        None => (arguments_of(instance, &parameters)?, String::new()),
    };
    let tokens = tokens(base);
    // A member of a parameter (`_Traits::__hash_cached::value`) would need `typename` or a
    // value the alias cannot spell: give up on those rather than declare a broken alias.
    let is_parameter =
        |token: &str| parameters.iter().any(|(p, _)| p == token) || pack.as_deref() == Some(token);
    let uses_member_of_parameter = tokens
        .windows(2)
        .any(|pair| pair[1] == "::" && is_parameter(&pair[0]));
    if uses_member_of_parameter {
        return None;
    }
    let mut spelled = Vec::new();
    let mut tokens = tokens
        .into_iter()
        .filter(|t| !t.starts_with("//") && !t.starts_with("/*")) // comments in the specifier
        .peekable();
    while let Some(token) = tokens.next() {
        match token.as_str() {
            "public" | "protected" | "private" | "virtual" if spelled.is_empty() => {}
            _ if pack.as_deref() == Some(token.as_str()) => {
                tokens.next_if(|t| t == "...")?; // the pack used other than expanded: give up
                spelled.push(pack_arguments.clone());
            }
            _ => match parameters.iter().position(|(p, _)| *p == token) {
                Some(index) => spelled.push(arguments[index].clone()),
                None => spelled.push(token),
            },
        }
    }
    Some(spelled.join(" "))
}

/// The arguments of the instantiation `instance` for `parameters` (no pack), spelled: a type's
/// canonical spelling, an integer's value (`true`/`false` for a `bool` parameter).
fn arguments_of(instance: Entity<'_>, parameters: &[(String, bool)]) -> Option<Vec<String>> {
    // The declaration's own arguments (types and integers); libclang gives none for some
    // declarations, whose type still lists the type arguments.
    let arguments = instance
        .get_template_arguments()
        .filter(|arguments| arguments.len() == parameters.len())
        .or_else(|| {
            let types = instance.get_type()?.get_template_argument_types()?;
            types
                .into_iter()
                .map(|t| t.map(TemplateArgument::Type))
                .collect::<Option<Vec<_>>>()
        })?;
    if arguments.len() != parameters.len() {
        return None;
    }
    spelled_arguments(arguments, parameters)
}

/// The first `parameters.len()` of `arguments`, spelled for their parameters.
fn spelled_arguments(
    arguments: Vec<TemplateArgument<'_>>,
    parameters: &[(String, bool)],
) -> Option<Vec<String>> {
    arguments
        .into_iter()
        .zip(parameters)
        .map(|(argument, (_, is_bool))| match argument {
            TemplateArgument::Type(ty) => Some(ty.get_canonical_type().get_display_name()),
            TemplateArgument::Integral(value, _) if *is_bool => {
                Some(if value != 0 { "true" } else { "false" }.to_string())
            }
            TemplateArgument::Integral(value, _) => Some(value.to_string()),
            _ => None,
        })
        .collect()
}

fn check_diagnostics(
    unit: &clang::TranslationUnit<'_>,
    unit_path: &Path,
    header_count: u32,
    classes: &[String],
) -> Result<(), Error> {
    let mut header_errors = Vec::new();
    let mut selection_error = None;
    for diagnostic in unit.get_diagnostics() {
        if diagnostic.get_severity() < Severity::Error {
            continue;
        }
        let location = diagnostic.get_location().get_file_location();
        let file = location.file.map(|f| f.get_path());
        let message = diagnostic.get_text();
        if file.as_deref() == Some(unit_path) {
            let line = location.line.saturating_sub(header_count + 1);
            let index = (line / LINES_PER_SELECTION) as usize;
            if let Some(name) = classes.get(index) {
                selection_error.get_or_insert_with(|| selection_failure(name, &message));
                continue;
            }
            if index >= classes.len() {
                // A base alias of a second reading that did not work out: that record's bases
                // stay unknown (the alias is simply not found).
                continue;
            }
        }
        let position = match file {
            Some(path) => format!("{}:{}:{}", path.display(), location.line, location.column),
            None => "<command line>".to_string(),
        };
        header_errors.push(Diagnostic { position, message });
    }
    if !header_errors.is_empty() {
        return Err(Error::Diagnostics {
            diagnostics: header_errors,
        });
    }
    selection_error.map_or(Ok(()), Err)
}

fn selection_failure(name: &str, message: &str) -> Error {
    if message.contains("requires template arguments") || message.contains("template template") {
        Error::UninstantiatedTemplate {
            name: name.to_string(),
        }
    } else if message.contains("incomplete type") {
        Error::IncompleteType {
            class: name.to_string(),
            reason: message.to_string(),
        }
    } else {
        Error::ClassNotFound {
            name: name.to_string(),
            detail: message.to_string(),
        }
    }
}

fn selected_by_name<'tu>(root: Entity<'tu>, index: usize, name: &str) -> Result<Type<'tu>, Error> {
    let alias = format!("{SELECT_ALIAS}{index}");
    let underlying = root
        .get_children()
        .into_iter()
        .find(|e| {
            e.get_kind() == EntityKind::TypeAliasDecl && e.get_name().as_deref() == Some(&alias)
        })
        .and_then(|e| e.get_typedef_underlying_type())
        .map(|t| t.get_canonical_type());
    match underlying {
        Some(ty) if ty.get_kind() == TypeKind::Record => Ok(ty),
        Some(ty) => Err(Error::ClassNotFound {
            name: name.to_string(),
            detail: format!("it names `{}`, which is not a class", ty.get_display_name()),
        }),
        None => Err(Error::ClassNotFound {
            name: name.to_string(),
            detail: "not declared".into(),
        }),
    }
}

/// Why generated code cannot name the class `entity` (see [`reach`]), from its scopes.
fn why_unnameable(entity: Entity<'_>, name: &str) -> Option<String> {
    // The common case, asked cheaply: a class at namespace scope outside anonymous namespaces.
    let at_namespace_scope = entity.get_semantic_parent().is_some_and(|p| {
        matches!(
            p.get_kind(),
            EntityKind::Namespace | EntityKind::TranslationUnit | EntityKind::NotImplemented
        )
    });
    let in_anonymous_namespace = name.contains("(anonymous namespace)");
    if at_namespace_scope && !in_anonymous_namespace {
        return None;
    }
    let mut steps = Vec::new();
    let mut current = Some(entity);
    while let Some(scope) = current {
        match scope.get_kind() {
            EntityKind::Namespace => steps.push(reach::Step::Namespace(scope.get_name())),
            EntityKind::StructDecl
            | EntityKind::ClassDecl
            | EntityKind::UnionDecl
            | EntityKind::ClassTemplate => {
                let nested = scope.get_semantic_parent().is_some_and(|p| {
                    matches!(
                        p.get_kind(),
                        EntityKind::StructDecl
                            | EntityKind::ClassDecl
                            | EntityKind::UnionDecl
                            | EntityKind::ClassTemplate
                    )
                });
                steps.push(reach::Step::Class {
                    name: scope.get_display_name().unwrap_or_default(),
                    access: if nested {
                        access(scope)
                    } else {
                        Access::Public
                    },
                });
            }
            EntityKind::TranslationUnit => break,
            _ => {}
        }
        current = scope.get_semantic_parent();
    }
    steps.reverse();
    reach::why_unnameable(&steps)
}

/// A class definition found in the headers, with its member declarations.
struct Definition<'tu> {
    entity: Entity<'tu>,
    /// What `entity.get_children()` would return: read while looking for nested classes, so
    /// that collecting the class does not visit its members a second time.
    members: Vec<Entity<'tu>>,
}

/// Every named struct or class definition outside system headers, nested ones after the class
/// that contains them.
fn collect_definitions<'tu>(scope: Entity<'tu>, out: &mut Vec<Definition<'tu>>) {
    scope.visit_children(|entity, _| {
        match entity.get_kind() {
            EntityKind::Namespace | EntityKind::LinkageSpec if !entity.is_in_system_header() => {
                collect_definitions(entity, out);
            }
            _ if is_named_class_definition(entity) => push_definition(entity, out),
            _ => {}
        }
        EntityVisitResult::Continue
    });
}

fn is_named_class_definition(entity: Entity<'_>) -> bool {
    matches!(
        entity.get_kind(),
        EntityKind::StructDecl | EntityKind::ClassDecl
    ) && entity.is_definition()
        && !entity.is_anonymous()
        && !entity.is_in_system_header()
}

/// Appends the class definition `class`, then the classes defined inside it.
fn push_definition<'tu>(class: Entity<'tu>, out: &mut Vec<Definition<'tu>>) {
    let at = out.len();
    out.push(Definition {
        entity: class,
        members: Vec::new(),
    });
    let mut members = Vec::new();
    class.visit_children(|member, _| {
        if is_named_class_definition(member) {
            push_definition(member, out);
        }
        members.push(member);
        EntityVisitResult::Continue
    });
    out[at].members = members;
}

/// Which classes a selection by namespace, by annotation or by header picks.
struct SelectionScope<'a> {
    /// `ns::` for each selected namespace.
    namespace_prefixes: Vec<String>,
    annotation: Option<&'a str>,
    /// With no selection at all, the classes defined in these headers.
    headers: Option<&'a [PathBuf]>,
}

impl<'a> SelectionScope<'a> {
    fn new(request: &'a Request, headers: &'a [PathBuf]) -> Self {
        let selection = &request.selection;
        Self {
            namespace_prefixes: selection
                .namespaces
                .iter()
                .map(|ns| format!("{}::", ns.trim_start_matches("::")))
                .collect(),
            annotation: selection.annotation.as_deref(),
            headers: selection.is_empty().then_some(headers),
        }
    }

    /// Whether the class definition `entity`, whose qualified name is `name` and whose
    /// children are `members`, is selected.
    fn selects(&self, entity: Entity<'_>, members: &[Entity<'_>], name: &str) -> bool {
        if let Some(headers) = self.headers {
            let file = entity
                .get_location()
                .and_then(|l| l.get_file_location().file)
                .and_then(|f| f.get_path().canonicalize().ok());
            return file.is_some_and(|f| headers.contains(&f));
        }
        let in_namespace = self
            .namespace_prefixes
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()));
        let annotated = self.annotation.is_some_and(|wanted| {
            members.iter().any(|child| {
                child.get_kind() == EntityKind::AnnotateAttr
                    && child.get_display_name().as_deref() == Some(wanted)
            })
        });
        in_namespace || annotated
    }
}

fn describe_selection(request: &Request) -> String {
    let s = &request.selection;
    if s.is_empty() {
        return "the headers define no class".into();
    }
    let mut parts = Vec::new();
    if !s.namespaces.is_empty() {
        parts.push(format!("no class in namespace {}", s.namespaces.join(", ")));
    }
    if let Some(annotation) = &s.annotation {
        parts.push(format!("no class annotated \"{annotation}\""));
    }
    parts.join("; ")
}

fn access(entity: Entity<'_>) -> Access {
    match entity.get_accessibility() {
        Some(Accessibility::Private) => Access::Private,
        Some(Accessibility::Protected) => Access::Protected,
        _ => Access::Public,
    }
}

fn tokens(entity: Entity<'_>) -> Vec<String> {
    entity
        .get_range()
        .map(|r| r.tokenize().iter().map(|t| t.get_spelling()).collect())
        .unwrap_or_default()
}

/// Clang spells an unnamed type with the absolute path of its header
/// (`struct (unnamed struct at /home/me/src/world.hpp:12:5)`); keep only the file name so that
/// generated code does not depend on where the project is checked out.
fn portable_spelling(spelling: &str) -> Arc<str> {
    if !spelling.contains('(') {
        return Arc::from(spelling); // the common case, found by a byte search
    }
    let mut out = String::with_capacity(spelling.len());
    let mut rest = spelling;
    while let Some(at) = rest.find(" at /") {
        let path_start = at + " at ".len();
        out.push_str(&rest[..path_start]);
        let path_end = rest[path_start..]
            .find([':', ')'])
            .map_or(rest.len(), |i| path_start + i);
        let path = &rest[path_start..path_end];
        out.push_str(path.rsplit('/').next().unwrap_or(path));
        rest = &rest[path_end..];
    }
    out.push_str(rest);
    out.into()
}

/// How clang spells a builtin type in C++ (the test below checks each against clang).
fn builtin_spelling(kind: TypeKind) -> Option<&'static str> {
    Some(match kind {
        TypeKind::Bool => "bool",
        TypeKind::CharS | TypeKind::CharU => "char",
        TypeKind::SChar => "signed char",
        TypeKind::UChar => "unsigned char",
        TypeKind::WChar => "wchar_t",
        TypeKind::Char16 => "char16_t",
        TypeKind::Char32 => "char32_t",
        TypeKind::Short => "short",
        TypeKind::UShort => "unsigned short",
        TypeKind::Int => "int",
        TypeKind::UInt => "unsigned int",
        TypeKind::Long => "long",
        TypeKind::ULong => "unsigned long",
        TypeKind::LongLong => "long long",
        TypeKind::ULongLong => "unsigned long long",
        TypeKind::Int128 => "__int128",
        TypeKind::UInt128 => "unsigned __int128",
        TypeKind::Float => "float",
        TypeKind::Double => "double",
        TypeKind::LongDouble => "long double",
        _ => return None,
    })
}

/// A default member initializer (`int a = 0;`, `int b{0};`) on any direct member: it makes the
/// default constructor non-trivial, so the class is not POD.
fn has_member_initializers(record: Type<'_>) -> bool {
    record
        .get_fields()
        .unwrap_or_default()
        .into_iter()
        .any(|field| {
            let name = field.get_name().unwrap_or_default();
            let spelled = tokens(field);
            let after_name = spelled
                .iter()
                .rposition(|t| *t == name)
                .map_or(&spelled[..0], |i| &spelled[i + 1..]);
            after_name.iter().any(|t| t == "=" || t == "{")
        })
}

/// `= delete` on a declaration: libclang reports a deleted function as unavailable (asking
/// costs far less than tokenizing the declaration).
fn is_deleted(entity: Entity<'_>) -> bool {
    entity.get_availability() == Availability::Unavailable
}

/// The declarations inside a class definition, given its `children` (`definition.get_children()`).
/// libclang shows none for an implicit template instantiation, so for those the template's own
/// declarations stand in: virtual functions, constructors and non-dependent bases are the same in
/// every instantiation. (Fields always come from the instantiated type, which libclang does
/// expose.)
fn member_declarations<'tu>(
    definition: Entity<'tu>,
    children: Vec<Entity<'tu>>,
) -> Vec<Entity<'tu>> {
    match definition.get_template() {
        // The template as first declared may be a forward declaration (`<stringfwd.h>`): its
        // definition holds the members.
        Some(pattern) if children.is_empty() => {
            pattern.get_definition().unwrap_or(pattern).get_children()
        }
        _ => children,
    }
}

/// The classes and class templates a `friend` declaration names (by their simple names).
fn befriended_names(friend: Entity<'_>) -> Vec<String> {
    friend
        .get_children()
        .into_iter()
        .filter_map(|named| match named.get_kind() {
            EntityKind::ClassTemplate | EntityKind::StructDecl | EntityKind::ClassDecl => {
                named.get_name()
            }
            EntityKind::TypeRef | EntityKind::TemplateRef => {
                named.get_reference().and_then(|r| r.get_name())
            }
            _ => None,
        })
        .collect()
}

/// Whether the template of a dependent base type (`Base<T>`) declares a virtual function, so
/// that every instantiation of it is dynamic.
fn template_declares_virtual(base: Type<'_>) -> bool {
    let template = base
        .get_declaration()
        .and_then(|d| d.get_template().or(Some(d)));
    template
        .map(|t| t.get_definition().unwrap_or(t))
        .is_some_and(|t| {
            t.get_children()
                .iter()
                .any(|member| member.is_virtual_method())
        })
}

/// Whether a constructor (or constructor template) can be called without arguments. libclang
/// answers for constructors; a template's display name shows its parameter list.
fn is_default_constructor(constructor: Entity<'_>) -> bool {
    match constructor.get_kind() {
        EntityKind::FunctionTemplate => constructor
            .get_display_name()
            .is_some_and(|name| name.ends_with("()")),
        _ => constructor.is_default_constructor(),
    }
}

/// A special member's declaration, for [`special_members`].
fn declared(entity: Entity<'_>) -> Declared {
    Declared {
        access: access(entity),
        deleted: is_deleted(entity),
        defaulted: entity.is_defaulted(),
    }
}

/// Collects [`RecordFacts`] for records, memoised by qualified name.
#[derive(Default)]
struct Collector<'tu> {
    records: FxHashMap<String, RecordFacts>,
    /// What each collected record allows of its default constructor and destructor.
    traits: FxHashMap<String, Traits>,
    /// The names of the classes and templates each collected record befriends.
    friends: FxHashMap<String, Vec<String>>,
    /// Whether this is the second reading, with base aliases declared.
    second_reading: bool,
    /// The base aliases the unit declares (second reading), by name.
    base_aliases: FxHashMap<String, Type<'tu>>,
    /// The lines declaring the base aliases a second reading needs (first reading).
    wanted_base_aliases: Vec<String>,
    /// The spelling of each builtin type met so far, shared by every member of that type.
    builtin_spellings: Vec<(TypeKind, Arc<str>)>,
    /// The file of the last record, with its path: most records follow one from the same file.
    last_file: Option<(File<'tu>, Arc<str>)>,
}

impl<'tu> Collector<'tu> {
    /// Where `entity` is written.
    fn source_pos(&mut self, entity: Entity<'tu>) -> SourcePos {
        let Some(location) = entity.get_location().map(|l| l.get_file_location()) else {
            return SourcePos {
                file: Arc::from(""),
                line: 0,
                column: 0,
            };
        };
        let file = match (location.file, &self.last_file) {
            (None, _) => Arc::from(""),
            (Some(file), Some((last, path))) if file == *last => path.clone(),
            (Some(file), _) => {
                let path: Arc<str> = Arc::from(&*file.get_path().to_string_lossy());
                self.last_file = Some((file, path.clone()));
                path
            }
        };
        SourcePos {
            file,
            line: location.line,
            column: location.column,
        }
    }

    /// How the type of a member is written. An unqualified builtin type is spelled without
    /// asking libclang, which prints a type into a new string each time.
    fn spelling(&mut self, ty: Type<'_>) -> Arc<str> {
        let kind = ty.get_kind();
        let builtin = builtin_spelling(kind)
            .filter(|_| !ty.is_const_qualified() && !ty.is_volatile_qualified());
        let Some(builtin) = builtin else {
            return portable_spelling(&ty.get_display_name());
        };
        match self.builtin_spellings.iter().find(|(k, _)| *k == kind) {
            Some((_, spelling)) => spelling.clone(),
            None => {
                let spelling: Arc<str> = Arc::from(builtin);
                self.builtin_spellings.push((kind, spelling.clone()));
                spelling
            }
        }
    }

    /// Facts for the record `ty` and everything it reaches; returns its qualified name.
    fn record(&mut self, ty: Type<'tu>) -> Result<Arc<str>, Error> {
        let ty = ty.get_canonical_type();
        self.record_named(ty, ty.get_display_name(), None)
    }

    /// [`Collector::record`] for the canonical type `ty`, whose display name is `name` and whose
    /// definition's children are `members`, when they have been read already.
    fn record_named(
        &mut self,
        ty: Type<'tu>,
        name: String,
        members: Option<Vec<Entity<'tu>>>,
    ) -> Result<Arc<str>, Error> {
        if let Some(known) = self.records.get(&name) {
            return Ok(known.name.clone());
        }
        let incomplete = |reason: String| Error::IncompleteType {
            class: name.clone(),
            reason,
        };
        let declaration = ty
            .get_declaration()
            .and_then(|d| d.get_definition())
            .ok_or_else(|| incomplete("the class is declared but never defined".into()))?;
        let size =
            ty.get_sizeof()
                .map_err(|e| incomplete(format!("clang cannot size it ({e})")))? as u64;
        let align = ty
            .get_alignof()
            .map_err(|e| incomplete(format!("clang cannot align it ({e})")))?
            as u64;

        let mut bases = Vec::new();
        let mut bases_unknown = None;
        let mut friends = Vec::new();
        let mut unknown_base_is_dynamic = false;
        let mut declares_virtual_methods = false;
        let mut user_constructors = Vec::new();
        let mut destructor = None;
        let mut declares_copy_assignment = false;
        let children = members.unwrap_or_else(|| declaration.get_children());
        for child in member_declarations(declaration, children) {
            match child.get_kind() {
                EntityKind::BaseSpecifier => {
                    let base_type = child
                        .get_type()
                        .ok_or_else(|| incomplete("a base has no type".into()))?;
                    let base_type = match base_type.get_sizeof() {
                        Ok(_) => base_type,
                        Err(_) => match self.instantiated_base(declaration, child) {
                            Some(instantiated) => instantiated,
                            None => base_type,
                        },
                    };
                    if bases_unknown.is_some() {
                        continue; // (every dependent base was asked for above)
                    }
                    if base_type.get_sizeof().is_err() {
                        unknown_base_is_dynamic |= template_declares_virtual(base_type);
                        bases_unknown = Some(format!(
                            "its base `{}` depends on a template parameter, which libclang 19 does \
                             not resolve in an implicit instantiation",
                            base_type.get_display_name()
                        ));
                        continue;
                    }
                    match self.record(base_type) {
                        Ok(record) => bases.push(BaseFacts {
                            record,
                            is_virtual: child.is_virtual_base(),
                        }),
                        Err(error) => {
                            bases_unknown = Some(format!(
                                "its base `{}` cannot be described: {error}",
                                base_type.get_display_name()
                            ))
                        }
                    }
                }
                EntityKind::Method | EntityKind::ConversionFunction => {
                    declares_virtual_methods |= child.is_virtual_method();
                    declares_copy_assignment |= child.get_name().as_deref() == Some("operator=");
                }
                EntityKind::Destructor => {
                    declares_virtual_methods |= child.is_virtual_method();
                    destructor = Some(child);
                }
                EntityKind::FriendDecl => friends.extend(befriended_names(child)),
                EntityKind::Constructor => user_constructors.push(child),
                // A constructor template (`template <class D = T> unique_ptr()`).
                EntityKind::FunctionTemplate
                    if child.get_template_kind() == Some(EntityKind::Constructor) =>
                {
                    user_constructors.push(child)
                }
                _ => {}
            }
        }

        if bases_unknown.is_some() {
            bases.clear();
        }
        let mut fields = Vec::new();
        self.fields(ty, &name, 0, None, &mut fields)?;

        let is_abstract = declaration.is_abstract_record();
        // Names a friend declaration of a base or member could use for this class: asked of
        // libclang only when some base or member befriends anything.
        let befriending =
            |record: &Arc<str>| self.friends.get(&**record).is_some_and(|f| !f.is_empty());
        let any_befriending = bases.iter().any(|b| befriending(&b.record))
            || fields.iter().any(|f| match &f.kind {
                MemberKind::Record(record)
                | MemberKind::RecordArray {
                    element: record, ..
                } => befriending(record),
                _ => false,
            });
        let own_names = if any_befriending {
            [
                declaration.get_name(),
                declaration.get_template().and_then(|t| t.get_name()),
            ]
        } else {
            [None, None]
        };
        let traits = self.special_member_traits(
            &own_names,
            &ClassDeclarations {
                destructor: destructor.map(declared),
                constructors: user_constructors
                    .iter()
                    .map(|&c| DeclaredConstructor {
                        declared: declared(c),
                        is_default: is_default_constructor(c),
                    })
                    .collect(),
                is_abstract,
            },
            &bases,
            &fields,
        );
        let is_destructible = traits.is_destructible();
        let has_dummy_constructor = traits.is_default_constructible();
        let is_pod_for_layout = bases.is_empty()
            && !declares_virtual_methods
            && user_constructors.is_empty()
            && destructor.is_none()
            && !declares_copy_assignment
            && fields
                .iter()
                .all(|f| f.access == Access::Public && !f.type_name.contains('&'))
            && self.members_and_bases(&fields, &[], |r| r.is_pod_for_layout)
            && !has_member_initializers(ty); // last: it tokenizes

        let shared_name: Arc<str> = Arc::from(name.as_str());
        self.traits.insert(name.clone(), traits);
        if !friends.is_empty() {
            self.friends.insert(name.clone(), friends);
        }
        let facts = RecordFacts {
            name: shared_name.clone(),
            pos: self.source_pos(declaration),
            size,
            align,
            is_union: declaration.get_kind() == EntityKind::UnionDecl,
            is_abstract,
            declares_virtual_methods,
            bases,
            bases_unknown,
            unknown_base_is_dynamic,
            fields,
            is_pod_for_layout,
            has_dummy_constructor,
            is_destructible,
        };
        self.records.insert(name, facts);
        Ok(shared_name)
    }

    /// The instantiated type of the dependent base specifier `base` of the instantiation whose
    /// definition is `definition`: found among a second reading's aliases, or asked for (`None`
    /// meanwhile).
    fn instantiated_base(
        &mut self,
        definition: Entity<'tu>,
        base: Entity<'tu>,
    ) -> Option<Type<'tu>> {
        let pattern = definition.get_template()?;
        let pattern = pattern.get_definition().unwrap_or(pattern);
        let spelling = instantiated_base_spelling(pattern, base, definition)?;
        let alias = format!("{BASE_ALIAS}{:016x}", stable_key(&spelling, pattern));
        if self.second_reading {
            return self.base_aliases.get(&alias).copied();
        }
        let line = base_alias_line(pattern, &alias, &spelling)?;
        if !self.wanted_base_aliases.contains(&line) {
            self.wanted_base_aliases.push(line);
        }
        None
    }

    /// What [`special_members::decide`] says of a record declaring `own`, with these bases
    /// and fields (whose records were collected before it).
    fn special_member_traits(
        &self,
        own_names: &[Option<String>],
        own: &ClassDeclarations,
        bases: &[BaseFacts],
        fields: &[FieldFacts],
    ) -> Traits {
        // A base or member class that befriends this class lets it call its private members.
        let traits_of = |record: &str| {
            let traits = self.traits.get(record).copied().unwrap_or(Traits::UNKNOWN);
            let befriended = self.friends.get(record).is_some_and(|friends| {
                own_names
                    .iter()
                    .flatten()
                    .any(|own| friends.iter().any(|f| f == own))
            });
            if befriended {
                traits.as_seen_by_a_friend()
            } else {
                traits
            }
        };
        let bases: Vec<Traits> = bases.iter().map(|b| traits_of(&b.record)).collect();
        let members: Vec<MemberTraits> = fields
            .iter()
            .map(|f| match &f.kind {
                _ if f.type_name.contains('&') => MemberTraits::Reference,
                MemberKind::Plain => MemberTraits::Scalar,
                MemberKind::Opaque => MemberTraits::Class(Traits::UNKNOWN),
                MemberKind::Record(record)
                | MemberKind::RecordArray {
                    element: record, ..
                } => MemberTraits::Class(traits_of(record)),
            })
            .collect();
        special_members::decide(own, &bases, &members)
    }

    /// Whether `test` holds for the record of every class-type member and every base.
    fn members_and_bases(
        &self,
        fields: &[FieldFacts],
        bases: &[BaseFacts],
        test: impl Fn(&RecordFacts) -> bool,
    ) -> bool {
        let member_records = fields.iter().filter_map(|f| match &f.kind {
            MemberKind::Plain | MemberKind::Opaque => None,
            MemberKind::Record(record)
            | MemberKind::RecordArray {
                element: record, ..
            } => Some(record),
        });
        member_records
            .chain(bases.iter().map(|b| &b.record))
            .all(|r| self.records.get(&**r).is_some_and(&test))
    }

    /// Appends the data members of `record` (flattening anonymous unions and structs) with
    /// offsets shifted by `base_bits`.
    fn fields(
        &mut self,
        record: Type<'tu>,
        class: &str,
        base_bits: u64,
        anonymous_access: Option<Access>,
        out: &mut Vec<FieldFacts>,
    ) -> Result<(), Error> {
        let incomplete = |reason: String| Error::IncompleteType {
            class: class.to_string(),
            reason,
        };
        for field in record.get_fields().unwrap_or_default() {
            let name = field.get_name().unwrap_or_default();
            let field_type = field
                .get_type()
                .ok_or_else(|| incomplete(format!("member `{name}` has no type")))?;
            let offset_bits = base_bits
                + field
                    .get_offset_of_field()
                    .map_err(|e| incomplete(format!("member `{name}` has no offset ({e})")))?
                    as u64;
            let access = anonymous_access.unwrap_or_else(|| access(field));
            let bit_width = if field.is_bit_field() {
                field.get_bit_field_width().map(|w| w as u32)
            } else {
                None
            };
            let anonymous_member = field_type
                .get_canonical_type()
                .get_declaration()
                .is_some_and(|d| d.is_anonymous_record_decl());
            if anonymous_member {
                self.fields(
                    field_type.get_canonical_type(),
                    class,
                    offset_bits,
                    Some(access),
                    out,
                )?;
                continue;
            }
            if name.is_empty() {
                continue; // an unnamed bit-field is padding
            }
            if bit_width == Some(0) {
                continue;
            }
            let canonical = field_type.get_canonical_type();
            let (size, align) = match canonical.get_kind() {
                TypeKind::LValueReference | TypeKind::RValueReference => (8, 8),
                TypeKind::IncompleteArray => (0, 1),
                _ => (
                    canonical
                        .get_sizeof()
                        .map_err(|e| incomplete(format!("member `{name}` cannot be sized ({e})")))?
                        as u64,
                    canonical.get_alignof().map_err(|e| {
                        incomplete(format!("member `{name}` cannot be aligned ({e})"))
                    })? as u64,
                ),
            };
            let kind = self.member_kind(canonical)?;
            // Tokenizing is the costliest libclang call here, and only a member of class type can
            // be `[[no_unique_address]]` to any effect.
            let no_unique_address = !matches!(kind, MemberKind::Plain)
                && tokens(field).iter().any(|t| t == "no_unique_address");
            out.push(FieldFacts {
                no_unique_address,
                type_name: self.spelling(field_type),
                name: name.into(),
                offset_bits,
                size,
                align,
                bit_width,
                access,
                in_anonymous: anonymous_access.is_some(),
                kind,
            });
        }
        Ok(())
    }

    fn member_kind(&mut self, canonical: Type<'tu>) -> Result<MemberKind, Error> {
        match canonical.get_kind() {
            TypeKind::Record => Ok(match self.record(canonical) {
                Ok(record) => MemberKind::Record(record),
                Err(_) => MemberKind::Opaque,
            }),
            TypeKind::ConstantArray => {
                let mut count = 1u64;
                let mut element = canonical;
                while element.get_kind() == TypeKind::ConstantArray {
                    count *= element.get_size().unwrap_or(0) as u64;
                    element = element
                        .get_element_type()
                        .expect("an array has an element type")
                        .get_canonical_type();
                }
                if element.get_kind() != TypeKind::Record {
                    return Ok(MemberKind::Plain);
                }
                let element_size = element.get_sizeof().unwrap_or(0) as u64;
                Ok(match self.record(element) {
                    Ok(element) => MemberKind::RecordArray {
                        element,
                        count,
                        element_size,
                    },
                    Err(_) => MemberKind::Opaque,
                })
            }
            _ => Ok(MemberKind::Plain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every member type `builtin_spelling` knows, as written in C++.
    const BUILTIN_MEMBERS: &[&str] = &[
        "bool",
        "char",
        "signed char",
        "unsigned char",
        "wchar_t",
        "char16_t",
        "char32_t",
        "short",
        "unsigned short",
        "short int",
        "int",
        "signed",
        "unsigned",
        "unsigned int",
        "long",
        "long int",
        "unsigned long",
        "long long",
        "unsigned long long",
        "__int128",
        "unsigned __int128",
        "float",
        "double",
        "long double",
    ];

    #[test]
    fn builtin_types_are_spelled_as_clang_spells_them() {
        let dir = tempfile::tempdir().unwrap();
        let header = dir.path().join("builtins.hpp");
        let mut source = String::from("struct Builtins {\n");
        for (i, ty) in BUILTIN_MEMBERS.iter().enumerate() {
            source.push_str(&format!("    {ty} m{i};\n"));
        }
        source.push_str("    const int qualified;\n    volatile long also_qualified;\n};\n");
        std::fs::write(&header, source).unwrap();
        let request = Request {
            headers: vec![header],
            clang_args: vec![],
            selection: Default::default(),
        };
        let checked = with_unit(
            &request,
            |parsed, _| {
                let root = parsed.unit.get_entity();
                let record = root
                    .get_children()
                    .into_iter()
                    .find(|e| e.get_name().as_deref() == Some("Builtins"))
                    .and_then(|e| e.get_type())
                    .expect("the header defines Builtins");
                let mut collector = Collector::default();
                let mut checked = 0;
                for field in record.get_fields().unwrap() {
                    let ty = field.get_type().unwrap();
                    let by_clang = ty.get_display_name();
                    assert_eq!(&*collector.spelling(ty), by_clang, "{field:?}");
                    if builtin_spelling(ty.get_kind()).is_some() {
                        checked += 1;
                    }
                }
                Ok(Reading::Done(checked))
            },
            |checked| checked,
        )
        .unwrap();
        assert_eq!(
            checked,
            BUILTIN_MEMBERS.len() + 2,
            "every member is builtin"
        );
    }

    #[test]
    fn unnamed_type_spelling_keeps_only_the_file_name() {
        assert_eq!(
            &*portable_spelling("struct (unnamed struct at /work/x/shapes.hpp:92:5)"),
            "struct (unnamed struct at shapes.hpp:92:5)"
        );
        assert_eq!(&*portable_spelling("std::uint64_t"), "std::uint64_t");
    }
}
