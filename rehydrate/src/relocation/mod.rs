//! Relocation: after a reload, nothing in the process points into the old build.
//!
//! Before the commit point, every readable and writable mapping of the process (heap,
//! anonymous mappings, the data of every loaded object except the two builds themselves) is
//! scanned for words that point into the old build; each is resolved through the old build's
//! ELF symbols ([`address_map`]). One that cannot be resolved refuses the reload (in the heap
//! only on request: freed memory is full of stale addresses), and nothing is written. At the commit, every resolved word is rewritten (only if it still holds the
//! value it was found with); after the old build is unloaded, an [`audit`] scans again and
//! counts what still points into its former range.
//!
//! What is left alone: words on thread stacks (reported: a thread's frames belong to it) and
//! references of the dynamic loader's own structures to the old build's headers, `.dynamic`,
//! `.eh_frame_hdr` and the like, which it frees at `dlclose`.
//!
//! The module's globals move into the new build first ([`globals`]); their copied bytes are
//! scanned and rewritten like any other memory.

mod address_map;
pub(crate) mod elf;
mod globals;
mod in_place;
mod resolve;
mod rodata;
mod scan;

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Range;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) use address_map::ReferenceKind;

use address_map::{AddressMap, BuildView, Resolution, Target};
pub(crate) use elf::ElfIndex;
use elf::SectionKind;
pub(crate) use globals::plan_globals;
use globals::Carry;
pub use globals::{FreshGlobal, GlobalsReport};
use resolve::{index_in, PieceWord, Resolutions, Rewrites, Tally};
use rodata::ReadOnlyCopy;
use scan::{
    for_each_scanned_mapping, scan_pieces, scan_regions, scan_threads, writable_regions, Piece,
    Region, Scanner,
};

/// Held while any runtime of the process maps or unmaps a build, or scans, rewrites and audits
/// memory for a reload: one runtime's scan must not see another's builds come and go (a word
/// it found in a library being closed would be written after the unmap, a range it resolves
/// could be taken by another runtime's new build).
static IMAGES: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this thread holds [`IMAGES`] (a build closed inside a reload takes it again).
    static HOLDING_IMAGES: Cell<bool> = const { Cell::new(false) };
}

/// Holds the process's image lock until dropped (nothing when this thread holds it already).
pub(crate) struct ImagesLock(Option<MutexGuard<'static, ()>>);

/// Takes the process's image lock (see [`IMAGES`]). Taken after a runtime's build lock and
/// registry, never before them.
pub(crate) fn lock_images() -> ImagesLock {
    if HOLDING_IMAGES.get() {
        return ImagesLock(None);
    }
    let guard = IMAGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    HOLDING_IMAGES.set(true);
    ImagesLock(Some(guard))
}

impl Drop for ImagesLock {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            HOLDING_IMAGES.set(false);
        }
    }
}

/// A loaded build's ELF index and where it lies.
pub(crate) struct BuildImage {
    /// Shared with what names the results of the constructor analysis.
    index: Arc<ElfIndex>,
    /// The load bias (the address of the ELF header: the loader's, so never rewritten).
    base: usize,
    /// How many bytes from `base` the build's mappings cover.
    length: usize,
}

impl BuildImage {
    /// Reads the ELF file `shadow`, which is loaded over `span` (its segments, `.bss` included).
    pub fn of(shadow: &Path, span: Range<usize>) -> Result<BuildImage, String> {
        let index = ElfIndex::read(shadow)?;
        if span.is_empty() {
            return Err("the build is not mapped".into());
        }
        let base = span.start - index.first_segment as usize;
        Ok(BuildImage {
            index: Arc::new(index),
            base,
            length: span.end - base,
        })
    }

    /// Every address the build's segments cover (or covered).
    pub fn range(&self) -> Range<usize> {
        self.base..self.base + self.length
    }

    /// The load bias: a file virtual address plus `base` is where it is mapped.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The build's sections and symbols (file virtual addresses).
    pub fn index(&self) -> &ElfIndex {
        &self.index
    }

    /// The same, to share.
    pub fn shared_index(&self) -> &Arc<ElfIndex> {
        &self.index
    }

    fn view(&self) -> BuildView<'_> {
        BuildView {
            index: &self.index,
            base: self.base,
            range: self.range(),
        }
    }
}

/// How many references of each kind a reload re-pointed, and what it left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelocationCounts {
    /// Vptrs of objects, tracked or not.
    pub vptrs: usize,
    /// Function pointers (plain, `std::function` internals, member-function pointers).
    pub functions: usize,
    /// Pointers to or into globals and named constants.
    pub data: usize,
    /// Pointers into unnamed read-only data (string literals), now into a read-only copy.
    pub read_only_data: usize,
    /// Bytes of old read-only data kept as a copy for them.
    pub read_only_copy_bytes: usize,
    /// References of the dynamic loader's structures to the old build's headers and tables.
    pub loader: usize,
    /// Words on thread stacks (reported, never rewritten), by thread id (0: a stack whose
    /// thread is not known).
    pub stack_words: Vec<(u32, usize)>,
    /// Words in the heap or anonymous mappings that point into the old build where nothing
    /// maps (inside a function, between a vtable's address points): stale bytes of freed
    /// memory or dead stack frames, as far as a conservative scan can tell. Left as they
    /// are; the audit does not count them as stale.
    pub unresolved: usize,
    /// A few of them, for people to read.
    pub unresolved_examples: Vec<String>,
    /// Words in the heap or anonymous mappings that are well-formed references to something
    /// the new build lacks (a function it dropped, a global that shrank): stale addresses in
    /// freed memory, as a rule, but a scan cannot tell; left as they are (a live one that is
    /// used faults in the old build's reserved range). See `Reload::refusing_lost_heap_words`.
    pub lost_in_anonymous_memory: usize,
    /// A few of them, with what each points at.
    pub lost_examples: Vec<String>,
    /// Words that other threads wrote between the scan and the stop (an object made by old
    /// code, a function pointer stored), found by the catch-up scan with every thread stopped
    /// and re-pointed too (counted here, not in the kinds above).
    pub written_meanwhile: usize,
}

impl RelocationCounts {
    /// Counts one re-pointed word of `kind`.
    fn bump(&mut self, kind: ReferenceKind) {
        match kind {
            ReferenceKind::Vptr => self.vptrs += 1,
            ReferenceKind::Function => self.functions += 1,
            ReferenceKind::Data => self.data += 1,
            ReferenceKind::ReadOnlyData => self.read_only_data += 1,
        }
    }
}

/// The audit after the old build is unloaded: words still pointing into its former range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// In the data of a loaded object (executable, libraries, the new build): must be zero.
    pub stale: usize,
    /// A few of them, for people to read.
    pub examples: Vec<String>,
    /// In the heap or anonymous mappings. Every live word there was re-pointed before the
    /// commit; what the audit still finds is memory the unload wrote and freed (the loader's
    /// structures, the old build's destructors) as far as has been seen, but a scan cannot
    /// tell freed memory from live, so it is reported, with examples.
    pub in_anonymous_memory: usize,
    /// A few of them.
    pub anonymous_examples: Vec<String>,
    /// On thread stacks (exempt).
    pub on_stacks: usize,
    /// The loader's references to headers and tables, in its freed structures (exempt).
    pub loader: usize,
    /// Words with a value the relocation reported as unresolved (see
    /// [`RelocationCounts::unresolved`]).
    pub reported_unresolved: usize,
}

/// Where a found word lies. A word of a carried global is kept by its place in the new
/// build, never as an absolute address there (see [`Target`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Location {
    /// At this address in the region with this index.
    Region(usize, usize),
    /// At this offset in the carried global with this index.
    Carried(usize, u64),
}

/// Everything a commit writes, resolved and checked. Millions of words share a few thousand
/// resolutions, so each word is kept as its place and the index of its resolution.
pub(crate) struct Relocation {
    /// (the value a word was found with minus the old build's base, where it must point).
    targets: Vec<(u64, Target)>,
    /// The words to rewrite and the index of each one's target in `targets`.
    rewrites: Rewrites,
    /// (virtual address in the new build of a carried global's word, index into `targets`).
    carried_rewrites: Vec<(u64, u32)>,
    counts: RelocationCounts,
    read_only_copy: Option<ReadOnlyCopy>,
    /// Values (minus the old base) of the words left as they were, for the audit.
    unresolved_offsets: Vec<u64>,
    /// What the catch-up scan needs, made before the world is stopped.
    catch_up: CatchUp,
}

/// Everything the catch-up scan ([`Relocation::catch_up`]) reads and writes, made before the
/// world is stopped so that it allocates nothing.
struct CatchUp {
    /// The mappings the plan took for thread stacks (those of threads gone too).
    stacks: Vec<Range<usize>>,
    /// The two builds, never scanned (nor the stop's slots, wherever the stop put them).
    excluded: [Range<usize>; 2],
    /// Room for `/proc/self/maps`, read again with the world stopped.
    maps_text: Vec<u8>,
    /// The carried globals: (old virtual address, size, new virtual address).
    carried: Vec<(u64, u64, u64)>,
    /// Every value (minus the old base) the plan saw, sorted, with the index of its target
    /// (`LEFT_ALONE`: a word the plan leaves as it is).
    known: Vec<(u64, u32)>,
    /// Words found by the catch-up scan that the plan did not find: (address, target index).
    /// Pushed within its capacity only.
    extra: Vec<(usize, u32)>,
    /// The same for carried globals: (virtual address in the new build, target index).
    extra_carried: Vec<(u64, u32)>,
    scanner: Scanner,
}

/// What a commit does with a register of a stopped thread (see [`Relocation::register_word`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegisterWord {
    /// Not an address of the old build, or one left alone (like the same value in the heap).
    Keep,
    /// Re-pointed to this address.
    Rewrite(usize),
    /// An address of the old build that cannot be re-pointed without allocating (a vptr of a
    /// class no scan saw, a reference the new build lost): the thread must move on first.
    Blocks,
}

/// In [`CatchUp::known`]: a value whose words the plan leaves as they are.
const LEFT_ALONE: u32 = u32::MAX;

/// Why the catch-up scan cannot complete a plan: memory changed more than it can take in
/// without allocating. The plan is made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outdated {
    /// A word holds a value the plan never resolved: (where, value minus the old base).
    UnknownValue(usize, u64),
    /// More new words than room was made for.
    TooManyNewWords,
    /// The process's mappings outgrew the room made for their list.
    TooManyMappings,
}

/// Scans the process and resolves every reference into `old`; every unresolvable one is
/// described (what holds it, what it points at) in the error, and nothing is written.
///
/// `carried` are the old build's globals moving into the new build: their bytes are scanned
/// too, and their words rewritten where the copy will lie. `changed_layouts`: the classes
/// whose layouts differ between the builds (a vptr of one refuses the reload). `strict`: a
/// lost reference in the heap or an anonymous mapping refuses too (see
/// `Reload::refusing_lost_heap_words`).
pub(crate) fn plan(
    old: &BuildImage,
    new: &BuildImage,
    carried: &[Carry],
    changed_layouts: &HashMap<String, String>,
    strict: bool,
    describe_holder: impl Fn(usize) -> Option<Holder>,
) -> Result<Relocation, Vec<String>> {
    let map = AddressMap::new(old.view(), new.view(), changed_layouts);
    let regions = writable_regions(&[old.range(), new.range(), crate::threads::slots_range()]);
    let shared = Mutex::new(Resolutions::new(map, old.base));
    // Each scan thread resolves what it finds (see `resolve`).
    let take = |tally: &mut Tally, rewrites: &mut Vec<PieceWord>, piece: &Piece, word| {
        tally.take(
            &shared,
            rewrites,
            piece,
            regions[piece.region].stack_of,
            word,
        )
    };
    let (tallies, pieces) = scan_pieces(&regions, &old.range(), scan_threads(), Tally::new, take);
    let mut resolutions = shared
        .into_inner()
        .expect("no scan thread panics holding the resolutions");
    let rewrites = Rewrites::new(
        pieces
            .into_iter()
            .map(|(piece, list)| (piece.span.get().start, list)),
    );
    let mut tally = Tally::new();
    let mut others = Vec::new();
    for thread in tallies {
        tally.merge(&thread);
        others.extend(thread.others);
    }
    others.sort_unstable_by_key(|(_, word)| word.location);
    let mut counts = tally.counts;
    counts.stack_words = tally.stack_words;
    // (where, value minus the old base) of carried globals' words
    let mut found_carried: Vec<(Location, u64)> = Vec::new();
    let mut scanner = Scanner::new();
    for (i, carry) in carried.iter().enumerate() {
        let start = old.base + carry.old as usize;
        scanner.scan(
            &(start..start + carry.size as usize),
            &old.range(),
            |word| {
                let offset = (word.location - start) as u64;
                found_carried.push((Location::Carried(i, offset), word.offset));
            },
        );
    }
    let describe = |location: Location| match location {
        Location::Region(region, address) => holder(&regions[region], address, &describe_holder),
        Location::Carried(i, offset) => format!(
            "the global `{}`+{offset:#x} (carried into the new build)",
            carried[i].name
        ),
    };
    // Neither list holds an absolute address into a build: locations are in other mappings or
    // kept as the new build's virtual addresses, values as offsets (see `Target`).
    let mut carried_rewrites: Vec<(u64, u32)> = Vec::new();
    let mut problems: Vec<(String, Vec<Location>)> = Vec::new();
    let mut unresolved_offsets = Vec::new();
    // The words that do not resolve, in address order, then the carried globals' words.
    let found = others
        .iter()
        .map(|&(region, word)| (Location::Region(region, word.location), word.offset))
        .chain(found_carried.iter().copied());
    for (location, offset) in found {
        let resolution = resolutions.resolve(offset);
        let lost = matches!(resolution, Resolution::Lost(_));
        match resolution {
            &Resolution::To { target, kind } => {
                let Location::Carried(i, at) = location else {
                    unreachable!("a word in a region that resolves is taken by its scan thread")
                };
                let index = resolutions.target(offset, target);
                counts.bump(kind);
                carried_rewrites.push((carried[i].new + at, index));
            }
            Resolution::Loader => counts.loader += 1,
            Resolution::Lost(what)
            | Resolution::Unresolvable(what)
            | Resolution::LayoutChanged(what) => {
                // Words in the data of a loaded object, a carried global or a tracked object
                // are live: anything there that cannot be mapped refuses the reload. In the
                // heap or an anonymous mapping a word may as well be freed memory or a dead
                // stack frame (a conservative scan cannot tell, and freed memory is full of
                // stale addresses): it is left as it is and reported, unless `strict` and it
                // is a well-formed reference the new build lost.
                let live = match location {
                    _ if matches!(resolution, Resolution::LayoutChanged(_)) => true,
                    Location::Carried(..) => true,
                    Location::Region(region, address) => {
                        regions[region].name.starts_with('/')
                            || describe_holder(address).is_some_and(|h| h.may_hold_address)
                            || (strict && lost)
                    }
                };
                if live {
                    match problems.iter_mut().find(|(w, _)| w == what) {
                        Some((_, holders)) => holders.push(location),
                        None => problems.push((what.clone(), vec![location])),
                    }
                } else {
                    let examples = if lost {
                        counts.lost_in_anonymous_memory += 1;
                        &mut counts.lost_examples
                    } else {
                        counts.unresolved += 1;
                        &mut counts.unresolved_examples
                    };
                    if examples.len() < 5 {
                        examples.push(format!("{} {what}", describe(location)));
                    }
                    unresolved_offsets.push(offset);
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems
            .into_iter()
            .map(|(what, holders)| {
                let shown: Vec<_> = holders.iter().take(3).map(|&l| describe(l)).collect();
                let more = holders.len().saturating_sub(shown.len());
                format!(
                    "{} word(s) hold a reference that {what}: {}{}",
                    holders.len(),
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            })
            .collect());
    }
    unresolved_offsets.sort_unstable();
    carried_rewrites.sort_unstable();
    // Values the scan threads' caches answered are in `resolved` too.
    let Resolutions {
        mut map,
        resolved,
        targets,
        target_index,
        ..
    } = resolutions;
    let mut known: Vec<(u64, u32)> = resolved
        .keys()
        .map(|offset| {
            (
                *offset,
                target_index.get(offset).copied().unwrap_or(LEFT_ALONE),
            )
        })
        .collect();
    known.sort_unstable();
    let maps_size = std::fs::read("/proc/self/maps").map_or(0, |t| t.len());
    let catch_up = CatchUp {
        stacks: regions
            .iter()
            .filter(|r| r.stack_of.is_some())
            .map(|r| r.span.get())
            .collect(),
        excluded: [old.range(), new.range()],
        maps_text: Vec::with_capacity(2 * maps_size + (64 << 10)),
        carried: carried.iter().map(|c| (c.old, c.size, c.new)).collect(),
        known,
        extra: Vec::with_capacity(rewrites.len() / 4 + 4096),
        extra_carried: Vec::with_capacity(carried_rewrites.len() / 4 + 1024),
        scanner,
    };
    Ok(Relocation {
        targets,
        rewrites,
        carried_rewrites,
        counts,
        read_only_copy: map.take_read_only_copy(),
        unresolved_offsets,
        catch_up,
    })
}

/// Whether the plan rewrites a word from the value `offset` already (`index`: the target index
/// it planned for the word's place, if any): a word the plan found that now holds another value
/// (memory freed and reused) is new to it.
fn planned(index: Option<u32>, targets: &[(u64, Target)], offset: u64) -> bool {
    index.is_some_and(|i| targets[i as usize].0 == offset)
}

/// The object a word lies in, when the runtime knows it (a tracked object).
pub(crate) struct Holder {
    /// The object and the field, for people.
    pub what: String,
    /// Whether an address fits in the word there: a vptr slot or a field of at least 8 bytes
    /// that holds the whole word. A word over smaller fields and padding is not a reference
    /// whatever its bytes look like (stale bytes in padding can spell an old address).
    pub may_hold_address: bool,
}

/// What holds the word at `location`: the tracked object and field when known, else the
/// address and its mapping.
fn holder(region: &Region, location: usize, describe: &impl Fn(usize) -> Option<Holder>) -> String {
    let mapping = if region.name.is_empty() {
        "an anonymous mapping".to_string()
    } else {
        region.name.clone()
    };
    match describe(location) {
        Some(object) if object.may_hold_address => {
            format!("{} (at {location:#x} in {mapping})", object.what)
        }
        Some(object) => format!(
            "{} (at {location:#x} in {mapping}; no address fits there: smaller fields and padding)",
            object.what
        ),
        None => format!("the word at {location:#x} in {mapping}"),
    }
}

impl Relocation {
    /// Rewrites every resolved word that still holds the value it was found with. Allocates
    /// and frees nothing (it runs while the world is stopped): the counts are taken out by
    /// [`Relocation::finish`] afterwards.
    ///
    /// # Safety
    /// The words found by [`plan`] are still mapped and writable (the carried globals copied
    /// into the new build), no other thread runs meanwhile, and the new build stays loaded as
    /// long as anything uses the rewritten values.
    pub unsafe fn apply(&self, old: &BuildImage, new: &BuildImage) {
        let absolute = |place: Target| match place {
            Target::NewBuild(vaddr) => new.base + vaddr as usize,
            Target::Copy(address) => address,
        };
        let carried = self
            .carried_rewrites
            .iter()
            .chain(&self.catch_up.extra_carried)
            .map(|&(vaddr, index)| (absolute(Target::NewBuild(vaddr)), index));
        let words = self
            .rewrites
            .iter()
            .chain(self.catch_up.extra.iter().copied());
        for (location, index) in words.chain(carried) {
            let (old_offset, target) = self.targets[index as usize];
            let location = location as *mut usize;
            let expected = old.base + old_offset as usize;
            let replacement = absolute(target);
            // SAFETY: by the caller's contract the word is mapped, writable and not written by anyone else; aligned, since the scan only reads aligned words (a carried global is copied to an address of the same alignment).
            unsafe {
                if location.read_volatile() == expected {
                    location.write_volatile(replacement);
                }
            }
        }
    }

    /// With every other thread stopped, scans the process's writable memory again (its
    /// mappings read anew) for words that point into the old build and that the plan did not
    /// find (written since: an object made by old code, a function pointer stored), and adds
    /// them to the rewrites when the plan resolved their value. Thread stacks are left out:
    /// those the plan saw and those holding a stopped thread's stack pointer
    /// (`holds_stack_pointer`). Allocates nothing. Returns how many words it added, or why
    /// the plan is outdated (nothing is written either way).
    ///
    /// # Safety
    /// Every other thread is stopped, and the carried globals' old bytes are mapped.
    pub unsafe fn catch_up(
        &mut self,
        old: &BuildImage,
        holds_stack_pointer: impl Fn(&Range<usize>) -> bool,
    ) -> Result<usize, Outdated> {
        let catch_up = &mut self.catch_up;
        catch_up.extra.clear();
        catch_up.extra_carried.clear();
        if !crate::maps::read_without_allocating(&mut catch_up.maps_text) {
            return Err(Outdated::TooManyMappings);
        }
        let known = &catch_up.known;
        let lookup = |offset: u64| {
            known
                .binary_search_by_key(&offset, |k| k.0)
                .ok()
                .map(|i| known[i].1)
        };
        let targets = &self.targets;
        let mut outdated = None;
        let range = old.range();
        let stacks = &catch_up.stacks;
        let is_stack = |mapping: &Range<usize>| {
            holds_stack_pointer(mapping)
                || stacks
                    .iter()
                    .any(|s| s.start < mapping.end && mapping.start < s.end)
        };
        let (rewrites, extra, scanner) =
            (&self.rewrites, &mut catch_up.extra, &mut catch_up.scanner);
        let [old_build, new_build] = catch_up.excluded.clone();
        let excluded = [old_build, new_build, crate::threads::slots_range()];
        for_each_scanned_mapping(&catch_up.maps_text, &excluded, is_stack, |mapping| {
            scanner.scan(mapping, &range, |word| {
                if outdated.is_some() || planned(rewrites.at(word.location), targets, word.offset) {
                    return;
                }
                match lookup(word.offset) {
                    Some(LEFT_ALONE) => {}
                    Some(index) if extra.len() < extra.capacity() => {
                        extra.push((word.location, index))
                    }
                    Some(_) => outdated = Some(Outdated::TooManyNewWords),
                    None => outdated = Some(Outdated::UnknownValue(word.location, word.offset)),
                }
            });
        });
        for &(old_vaddr, size, new_vaddr) in &catch_up.carried {
            let (rewrites, extra) = (&self.carried_rewrites, &mut catch_up.extra_carried);
            let start = old.base + old_vaddr as usize;
            catch_up
                .scanner
                .scan(&(start..start + size as usize), &range, |word| {
                    let at = new_vaddr + (word.location - start) as u64;
                    if outdated.is_some() || planned(index_in(rewrites, at), targets, word.offset) {
                        return;
                    }
                    match lookup(word.offset) {
                        Some(LEFT_ALONE) => {}
                        Some(index) if extra.len() < extra.capacity() => extra.push((at, index)),
                        Some(_) => outdated = Some(Outdated::TooManyNewWords),
                        None => outdated = Some(Outdated::UnknownValue(word.location, word.offset)),
                    }
                });
        }
        match outdated {
            Some(reason) => {
                catch_up.extra.clear();
                catch_up.extra_carried.clear();
                Err(reason)
            }
            None => Ok(catch_up.extra.len() + catch_up.extra_carried.len()),
        }
    }

    /// What the commit does with a register of a stopped thread that holds `value`: a value
    /// the plan resolved is re-pointed like a word in memory; one it never saw is re-pointed
    /// when a symbol of the old build names it (a function's start, a place in a global or
    /// constant), a code address inside a function is left alone (a stale return address,
    /// as a rule: the thread does not execute in the old build), and the rest blocks.
    /// Allocates nothing.
    pub fn register_word(&self, old: &BuildImage, new: &BuildImage, value: usize) -> RegisterWord {
        if !old.range().contains(&value) {
            return RegisterWord::Keep;
        }
        let offset = (value - old.base) as u64;
        let known = &self.catch_up.known;
        if let Ok(i) = known.binary_search_by_key(&offset, |k| k.0) {
            return match known[i].1 {
                LEFT_ALONE => RegisterWord::Keep,
                index => RegisterWord::Rewrite(match self.targets[index as usize].1 {
                    Target::NewBuild(vaddr) => new.base + vaddr as usize,
                    Target::Copy(address) => address,
                }),
            };
        }
        let index = old.index();
        if index.is_loader(offset) {
            return RegisterWord::Keep;
        }
        let Some(section) = index.section_at(offset) else {
            return RegisterWord::Keep;
        };
        let symbol = index.symbol_at(offset);
        let same = |symbol: &elf::Symbol, within: u64| match new.index().by_key(&symbol.key) {
            Some(n) if n.is_function == symbol.is_function && (within == 0 || within < n.size) => {
                RegisterWord::Rewrite(new.base + (n.start + within) as usize)
            }
            _ => RegisterWord::Blocks,
        };
        match (section.kind, symbol) {
            (SectionKind::Code, Some(symbol)) if symbol.start == offset => same(symbol, 0),
            (SectionKind::Code, _) => RegisterWord::Keep,
            (_, Some(symbol)) if symbol.is_vtable_group() => RegisterWord::Blocks,
            (_, Some(symbol)) => same(symbol, offset - symbol.start),
            (SectionKind::Writable, None) => RegisterWord::Keep,
            (_, None) => match self
                .read_only_copy
                .as_ref()
                .and_then(|c| c.translate(value))
            {
                Some(copied) => RegisterWord::Rewrite(copied),
                None => RegisterWord::Blocks,
            },
        }
    }

    /// After [`Relocation::apply`]: keeps the read-only copy the rewritten words point into;
    /// returns the counts and the values (minus the old base) of the words left alone.
    pub fn finish(self) -> (RelocationCounts, Vec<u64>) {
        let mut counts = self.counts;
        counts.written_meanwhile = self.catch_up.extra.len() + self.catch_up.extra_carried.len();
        counts.read_only_copy_bytes = self.read_only_copy.map_or(0, ReadOnlyCopy::keep);
        (counts, self.unresolved_offsets)
    }
}

/// Scans the process once more after `old` was unloaded (its index still describes what lay
/// where) and counts every word pointing into its former range. Words whose value is one the
/// relocation reported as unresolved (`unresolved`, sorted offsets) are counted apart.
pub(crate) fn audit(old: &BuildImage, unresolved: &[u64]) -> Audit {
    let mut audit = Audit::default();
    // The old build's own range: reserved with no access once unloaded, or still the old build
    // when something keeps it loaded (its data pointing into itself is not a reference of the
    // process's into it).
    let regions = writable_regions(&[old.range(), crate::threads::slots_range()]);
    let found = scan_regions(&regions, &old.range(), scan_threads());
    let regions = &regions;
    for (region, word) in found
        .iter()
        .flat_map(|(i, words)| words.iter().map(move |w| (&regions[*i], w)))
    {
        if region.stack_of.is_some() {
            audit.on_stacks += 1;
            continue;
        }
        let vaddr = word.offset; // the range starts at the base
        if unresolved.binary_search(&word.offset).is_ok() {
            audit.reported_unresolved += 1;
        } else if old.index.is_loader(vaddr) {
            audit.loader += 1;
        } else if !region.name.starts_with('/') {
            // The heap or an anonymous mapping: live, or freed by the unload (the loader
            // frees the old build's structures, the old build's destructors run).
            audit.in_anonymous_memory += 1;
            if audit.anonymous_examples.len() < 5 {
                let example = describe_stale(old, region, word.location, vaddr);
                audit.anonymous_examples.push(example);
            }
        } else {
            audit.stale += 1;
            if audit.examples.len() < 5 {
                let example = describe_stale(old, region, word.location, vaddr);
                audit.examples.push(example);
            }
        }
    }
    audit
}

/// `location (mapping) points at symbol+offset`, for an audit example.
fn describe_stale(old: &BuildImage, region: &Region, location: usize, vaddr: u64) -> String {
    let what = old
        .index
        .symbol_at(vaddr)
        .map(|s| format!("`{}`+{:#x}", s.demangled(), vaddr - s.start))
        .unwrap_or_else(|| format!("vaddr {vaddr:#x}"));
    let mapping = if region.name.is_empty() {
        "an anonymous mapping"
    } else {
        &region.name
    };
    let range = region.span.get();
    format!(
        "{location:#x} in {mapping} ({:#x}-{:#x}) points at {what}",
        range.start, range.end
    )
}
