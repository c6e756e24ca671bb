//! The host's side of the world: the runtime, the objects it keeps alive, and the module's C entry
//! points (declared in `module/world.cpp` and `module/behaviour.cpp`).
//!
//! Objects come from two places: the host creates Movers and Robots through the runtime and sets
//! their fields through the generated layout tables; the module's own C++ spawns Brains and
//! Robots with `new` and registers them with `rehydrate::track`. Either way the runtime knows
//! every one of them, and `rehydrate_all()` after a reload patches them all.

use std::ffi::{c_void, CStr, CString};
use std::path::Path;

use rehydrate::tables::ClassTable;
use rehydrate::{BoundForwarder, LiveObject, ReloadReport, Runtime};

use crate::module;

/// The module's C entry points, with the types the C++ declares them with.
mod entry {
    use std::ffi::{c_char, c_void};
    pub type EntityOf = unsafe extern "C" fn(*const c_char, *mut c_void) -> *mut c_void;
    pub type Spawn = unsafe extern "C" fn(u32, usize, *mut *mut c_void);
    pub type Despawn = unsafe extern "C" fn(*mut c_void);
    pub type Tick = unsafe extern "C" fn(*const *mut c_void, usize, f32) -> i64;
    pub type Score = unsafe extern "C" fn(*const c_void) -> i32;
    pub type Version = unsafe extern "C" fn() -> *const c_char;
    pub type EventHandler = unsafe extern "C" fn(i32) -> i32;
    pub type Equip = unsafe extern "C" fn(*mut c_void);
    pub type ContentsHash = unsafe extern "C" fn(*const c_void) -> u64;
    pub type Session = unsafe extern "C" fn(*mut i64, *mut i64);
}

extern "C" {
    /// `clib/events.c`: remembers a handler (a plain C function pointer).
    fn events_subscribe(handler: Option<entry::EventHandler>);
    /// `clib/events.c`: calls the handler with `code`, or returns -1 without one.
    fn events_publish(code: i32) -> i32;
}

/// An error of the example, with what it was doing.
pub type Error = Box<dyn std::error::Error>;

/// An error and every cause behind it (`source()`), one per line, for people to read.
pub fn explain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(&format!("\n  caused by: {next}"));
        cause = next.source();
    }
    text
}

/// How many entities of each kind the world starts with.
#[derive(Debug, Clone, Copy)]
pub struct Population {
    /// Movers the host creates.
    pub movers: usize,
    /// Robots the host creates.
    pub robots: usize,
    /// Entities the module's C++ spawns (half Brains, half Robots).
    pub spawned: usize,
}

/// One tick's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickSummary {
    /// Sum of every entity's score (a virtual call each).
    pub score: i64,
}

/// A robot as the host reads it through the layout tables, private members included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RobotView {
    pub score: i32,
    pub id: u32,
    pub x: f32,
    pub y: f32,
    pub hp: i32,
    pub mood: i32,
    pub battery: u8,
}

impl RobotView {
    /// Whether the two views show the same state (the score is computed by code, not stored).
    pub fn same_state(&self, other: &RobotView) -> bool {
        (self.id, self.x, self.y, self.hp, self.mood, self.battery)
            == (
                other.id,
                other.x,
                other.y,
                other.hp,
                other.mood,
                other.battery,
            )
    }
}

/// What `verify_vptrs` found after a reload.
#[derive(Debug, Clone, Copy)]
pub struct VptrCheck {
    /// Vptr slots read.
    pub slots: usize,
    /// Slots that do not point into the current build's mapping.
    pub stale: usize,
}

/// The world: a runtime with the module loaded and every entity in it.
pub struct World {
    /// Module-spawned entities (their `Entity` parts), destroyed through the module.
    spawned: Vec<*mut c_void>,
    /// Every entity's `Entity` part, in tick order.
    entities: Vec<*mut c_void>,
    /// Host-created objects, destroyed when dropped.
    host_objects: Vec<LiveObject>,
    /// The forwarder the event library calls.
    events: BoundForwarder,
    /// Declared last: dropped after every object above.
    runtime: Runtime,
}

impl World {
    /// Loads the module at `library` and populates the world.
    pub fn load(library: &Path, population: Population) -> Result<World, Error> {
        let runtime = Runtime::load(library)?;
        let events = runtime.forwarder("world_on_event")?;
        // The forwarder leads to `int world_on_event(int)` in this build and, re-pointed by the
        // runtime, in every later one. World::drop unsubscribes before releasing it.
        let address = events.address();
        // SAFETY: a forwarder to an `int(int)` C function (see above).
        let handler = unsafe { std::mem::transmute::<*const c_void, entry::EventHandler>(address) };
        // SAFETY: events_subscribe only stores the pointer, which stays valid (see above).
        unsafe { events_subscribe(Some(handler)) };
        let mut world = World {
            spawned: Vec::new(),
            entities: Vec::new(),
            host_objects: Vec::new(),
            events,
            runtime,
        };
        let mut next_id = 1u32;
        for (class, count) in [
            (&module::WORLD_MOVER, population.movers),
            (&module::WORLD_ROBOT, population.robots),
        ] {
            for _ in 0..count {
                world.create(class, next_id)?;
                next_id += 1;
            }
        }
        world.spawn(next_id, population.spawned)?;
        Ok(world)
    }

    /// Creates one host-owned entity and sets its id and motion through the layout tables.
    fn create(&mut self, class: &'static ClassTable, id: u32) -> Result<(), Error> {
        let object = self.runtime.create(class.name)?;
        let fields = Fields::of(class, object.as_ptr());
        fields.write("id", id)?;
        fields.write("vx", 1.0 + (id % 4) as f32)?;
        fields.write("vy", 0.5f32)?;
        fields.write_nested(&["transform", "x"], (id % 50) as f32)?;
        let name = CString::new(class.name)?;
        let entity_of = self.entry::<entry::EntityOf>("world_entity_of")?;
        // SAFETY: `object` is a live, constructed `class`; world_entity_of only casts it.
        let entity = unsafe { entity_of(name.as_ptr(), object.as_ptr()) };
        if entity.is_null() {
            return Err(format!("world_entity_of: {} is not an entity", class.name).into());
        }
        let equip = self.entry::<entry::Equip>("world_equip")?;
        // SAFETY: the Entity part of a live object; world_equip fills its std members.
        unsafe { equip(entity) };
        self.entities.push(entity);
        self.host_objects.push(object);
        Ok(())
    }

    /// Lets the module's C++ create `count` entities, ids from `first_id`.
    fn spawn(&mut self, first_id: u32, count: usize) -> Result<(), Error> {
        let mut spawned = vec![std::ptr::null_mut(); count];
        let spawn = self.entry::<entry::Spawn>("world_spawn")?;
        // SAFETY: `spawned` has room for `count` pointers, which world_spawn fills.
        unsafe { spawn(first_id, count, spawned.as_mut_ptr()) };
        self.entities.extend(&spawned);
        self.spawned = spawned;
        Ok(())
    }

    /// Looks up one of the module's entry points in the current build.
    fn entry<T: Copy>(&self, name: &str) -> Result<T, Error> {
        // Every caller names a function with the type `entry` gives it, as the module's sources
        // declare it; the value is used before any reload (which needs `&mut self`).
        // SAFETY: as just said.
        let symbol = unsafe { self.runtime.symbol::<T>(name) }?;
        Ok(*symbol)
    }

    /// Ticks every entity once (virtual calls into the current build).
    pub fn tick(&mut self, dt: f32) -> Result<TickSummary, Error> {
        let tick = self.entry::<entry::Tick>("world_tick")?;
        // SAFETY: every pointer is the Entity part of a live object.
        let score = unsafe { tick(self.entities.as_ptr(), self.entities.len(), dt) };
        Ok(TickSummary { score })
    }

    /// The module's session statistics (its globals): ticks simulated in this session, and
    /// since the current build was loaded.
    pub fn session(&self) -> Result<(i64, i64), Error> {
        let session = self.entry::<entry::Session>("world_session")?;
        let (mut ticks, mut since_load) = (0, 0);
        // SAFETY: two valid out-parameters.
        unsafe { session(&mut ticks, &mut since_load) };
        Ok((ticks, since_load))
    }

    /// The build's own description of itself.
    pub fn version(&self) -> Result<String, Error> {
        let version = self.entry::<entry::Version>("world_version")?;
        // SAFETY: world_version returns a static NUL-terminated string of the current build.
        let text = unsafe { CStr::from_ptr(version()) };
        Ok(text.to_string_lossy().into_owned())
    }

    /// What the never-reloaded event library gets back when it calls its handler.
    pub fn publish_event(&self, code: i32) -> i32 {
        // SAFETY: the subscribed handler is the live forwarder (see `load`).
        unsafe { events_publish(code) }
    }

    /// The address the event library holds: the forwarder's, the same before and after reloads.
    pub fn event_handler_address(&self) -> usize {
        self.events.address() as usize
    }

    /// The first host-created robot, read through the tables.
    pub fn sample_robot(&self) -> Result<RobotView, Error> {
        // Host objects and the first entities were pushed together, in the same order.
        let index = self
            .host_objects
            .iter()
            .position(|o| o.class() == module::WORLD_ROBOT.name)
            .ok_or("the world has no host-created robot")?;
        let fields = Fields::of(&module::WORLD_ROBOT, self.host_objects[index].as_ptr());
        let score = self.entry::<entry::Score>("world_score")?;
        Ok(RobotView {
            // SAFETY: the Entity part of a live robot.
            score: unsafe { score(self.entities[index]) },
            id: fields.read("id")?,
            x: fields.read_nested(&["transform", "x"])?,
            y: fields.read_nested(&["transform", "y"])?,
            hp: fields.read_nested(&["health", "hp"])?,
            mood: fields.read("mood")?,
            battery: fields.read("battery")?,
        })
    }

    /// Live objects by class, as the runtime tracks them (host-created and module-spawned).
    pub fn census(&self) -> Vec<(std::sync::Arc<str>, usize)> {
        let mut counts: Vec<(std::sync::Arc<str>, usize)> = Vec::new();
        for (class, _) in self.runtime.live_object_addresses() {
            match counts.iter_mut().find(|(name, _)| *name == class) {
                Some((_, count)) => *count += 1,
                None => counts.push((class, 1)),
            }
        }
        counts.sort();
        counts
    }

    /// Number of objects the host created, and number the module spawned.
    pub fn origins(&self) -> (usize, usize) {
        (self.host_objects.len(), self.spawned.len())
    }

    /// A checksum of every live object's state: the bytes of every scalar member, members of
    /// class type and their array elements followed down to their scalars (so neither vptrs,
    /// which a reload rewrites, nor padding inside members, which holds garbage, count), and
    /// (instead of their bytes) the contents of every entity's standard-library members (its name, its list of parts, a
    /// robot's inventory), hashed by the module's own code. Objects are hashed one by one and
    /// the hashes added: the order does not matter.
    pub fn state_checksum(&self) -> Result<u64, Error> {
        let contents_hash = self.entry::<entry::ContentsHash>("world_contents_hash")?;
        let mut sum = 0u64;
        for &entity in &self.entities {
            // SAFETY: the Entity part of a live object.
            sum = sum.wrapping_add(unsafe { contents_hash(entity) });
        }
        for (class, address) in self.runtime.live_object_addresses() {
            let table = table_of(&class)?;
            let (start, size) = (address as *const u8, table.size as usize);
            // SAFETY: a live object of `class` (the runtime tracks it), `size` bytes; no writer.
            let bytes = unsafe { std::slice::from_raw_parts(start, size) };
            let mut hash = 0xcbf2_9ce4_8422_2325u64;
            for range in scalar_ranges(table, 0)? {
                for &byte in &bytes[range] {
                    hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
                }
            }
            sum = sum.wrapping_add(hash);
        }
        Ok(sum)
    }

    /// Reads every vptr slot of every live object and counts those that do not point into the
    /// current build's mapping.
    pub fn verify_vptrs(&self) -> Result<VptrCheck, Error> {
        let ranges = self.runtime.image_ranges();
        let mut check = VptrCheck { slots: 0, stale: 0 };
        for (class, address) in self.runtime.live_object_addresses() {
            for &slot in table_of(&class)?.vptr_offsets {
                let slot_address = (address + slot as usize) as *const usize;
                // SAFETY: a vptr slot of a live object of `class`, inside the object.
                let vptr = unsafe { std::ptr::read_unaligned(slot_address) };
                check.slots += 1;
                if !ranges.iter().any(|range| range.contains(&vptr)) {
                    check.stale += 1;
                }
            }
        }
        Ok(check)
    }

    /// Loads the build at `library` next to the current one, checks and patches every live
    /// object, and unloads the old build; on any error nothing changes.
    pub fn reload(&mut self, library: &Path) -> Result<ReloadReport, Error> {
        Ok(self.runtime.reload(library)?.rehydrate_all()?)
    }

    /// Where the current build is mapped from (the runtime's private copy).
    pub fn shadow_path(&self) -> std::path::PathBuf {
        self.runtime.shadow_path()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // SAFETY: the event library must not call the forwarder once it is released.
        unsafe { events_subscribe(None) };
        if let Ok(despawn) = self.entry::<entry::Despawn>("world_despawn") {
            for entity in self.spawned.drain(..) {
                // SAFETY: each pointer came from world_spawn and is destroyed once.
                unsafe { despawn(entity) };
            }
        }
    }
}

/// The compiled-in table of `class`.
fn table_of(class: &str) -> Result<&'static ClassTable, Error> {
    module::CLASSES
        .iter()
        .find(|table| table.name == class)
        .ok_or_else(|| format!("no layout table for {class}: rebuild the host").into())
}

/// The table of a member's class type. Type names are spelled as in the declaration
/// (`Transform` inside `namespace world`), so the declaring class's namespaces are tried too.
fn member_table(owner: &str, type_name: &str) -> Result<&'static ClassTable, Error> {
    let mut scope = owner;
    while let Some((outer, _)) = scope.rsplit_once("::") {
        if let Ok(table) = table_of(&format!("{outer}::{type_name}")) {
            return Ok(table);
        }
        scope = outer;
    }
    table_of(type_name)
}

/// The byte ranges of every scalar member of a `table` object placed at `base`: members of
/// class type, and each element of arrays of them, are followed into their own tables.
fn scalar_ranges(table: &ClassTable, base: usize) -> Result<Vec<std::ops::Range<usize>>, Error> {
    let mut ranges = Vec::new();
    for field in table.fields {
        if field.type_name.starts_with("std::") {
            // Standard-library members: their bytes are pointers and buffers with unwritten
            // tails, so the module hashes their contents instead (`world_contents_hash`).
            continue;
        }
        let offset = base + field.offset as usize;
        let (element, count) = match field.type_name.split_once('[') {
            Some((element, _)) => (element.trim(), None),
            None => (field.type_name, Some(1)),
        };
        match member_table(field.owner, element) {
            Ok(member) => {
                let count = count.unwrap_or((field.size / member.size) as usize);
                for index in 0..count {
                    let at = offset + index * member.size as usize;
                    ranges.extend(scalar_ranges(member, at)?);
                }
            }
            Err(_) => {
                let range = field.byte_range();
                ranges.push(base + range.start as usize..base + range.end as usize);
            }
        }
    }
    Ok(ranges)
}

/// Typed access to one object's fields through its class's layout table.
struct Fields {
    table: &'static ClassTable,
    object: *mut u8,
}

impl Fields {
    fn of(table: &'static ClassTable, object: *mut c_void) -> Fields {
        Fields {
            table,
            object: object.cast(),
        }
    }

    /// The offset of a (possibly nested) member: `["transform", "x"]` is `transform.x`.
    fn offset(&self, path: &[&str], size: usize) -> Result<usize, Error> {
        let mut table = self.table;
        let mut offset = 0;
        for (depth, name) in path.iter().enumerate() {
            let field = table
                .field(name)
                .ok_or_else(|| format!("{} has no field `{name}`", table.name))?;
            offset += field.offset as usize;
            if depth + 1 < path.len() {
                table = member_table(field.owner, field.type_name)?;
            } else if field.size as usize != size || field.bit_field.is_some() {
                return Err(format!(
                    "{}::{name} is {} bytes of {}, not {size}",
                    table.name, field.size, field.type_name
                )
                .into());
            }
        }
        Ok(offset)
    }

    fn read<T: Copy>(&self, name: &str) -> Result<T, Error> {
        self.read_nested(&[name])
    }

    fn read_nested<T: Copy>(&self, path: &[&str]) -> Result<T, Error> {
        let offset = self.offset(path, std::mem::size_of::<T>())?;
        // SAFETY: the table places a `size_of::<T>()`-byte member there, inside the live object.
        Ok(unsafe { std::ptr::read_unaligned(self.object.add(offset).cast::<T>()) })
    }

    fn write<T: Copy>(&self, name: &str, value: T) -> Result<(), Error> {
        self.write_nested(&[name], value)
    }

    fn write_nested<T: Copy>(&self, path: &[&str], value: T) -> Result<(), Error> {
        let offset = self.offset(path, std::mem::size_of::<T>())?;
        // SAFETY: as in `read_nested`; the host owns the object and nothing else runs.
        unsafe { std::ptr::write_unaligned(self.object.add(offset).cast::<T>(), value) };
        Ok(())
    }
}
