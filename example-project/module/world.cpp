// The module's entry points for the host: creating, ticking and destroying entities. The
// behaviour of each class lives in behaviour.cpp, the file the demo edits.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "rehydrate/module.h"
#include "world.hpp"

using namespace world;

namespace {
bool is(const char* a, const char* b) { return std::strcmp(a, b) == 0; }

// The session's statistics, plain globals of the module: a reload carries them into the new
// build. The second starts fresh with every build, as marked.
std::vector<long long> score_history;
long long ticks_since_load = 0;
REHYDRATE_RESET_ON_RELOAD(ticks_since_load);
}  // namespace

extern "C" {

// The Entity part of an object the host created (complete-object address and class name), or
// null when the class is not an entity.
Entity* world_entity_of(const char* class_name, void* object) {
    if (is(class_name, "world::Mover")) return static_cast<Mover*>(object);
    if (is(class_name, "world::Brain")) return static_cast<Brain*>(object);
    if (is(class_name, "world::Robot")) return static_cast<Robot*>(object);
    return nullptr;
}

// Gives an entity its name, its list of parts and (a robot) an inventory, from its id.
void world_equip(Entity* entity) {
    entity->name = "entity #" + std::to_string(entity->id);
    entity->components = {"transform"};
    if (auto* robot = dynamic_cast<Robot*>(entity)) {
        robot->components.push_back("health");
        robot->components.push_back("waypoints x3");
        for (unsigned i = 0; i < 8 + entity->id % 8; ++i) robot->inventory.push_back(static_cast<int>(entity->id * 10 + i));
    }
}

// A hash of the contents of an entity's standard-library members (name, parts, inventory).
std::uint64_t world_contents_hash(const Entity* entity) {
    std::uint64_t hash = 0xcbf29ce484222325ull;
    auto mix = [&hash](const void* data, std::size_t size) {
        for (std::size_t i = 0; i < size; ++i) hash = (hash ^ static_cast<const unsigned char*>(data)[i]) * 0x100000001b3ull;
    };
    mix(entity->name.data(), entity->name.size());
    for (const std::string& part : entity->components) mix(part.data(), part.size() + 1);
    if (auto* robot = dynamic_cast<const Robot*>(entity)) mix(robot->inventory.data(), robot->inventory.size() * sizeof(int));
    return hash;
}

// Creates `count` entities with the module's own C++ (alternately a Brain and a Robot),
// registers each with the runtime, and writes their Entity parts to `out`.
void world_spawn(unsigned first_id, std::size_t count, Entity** out) {
    for (std::size_t i = 0; i < count; ++i) {
        Entity* entity;
        if (i % 2 == 0) {
            Brain* brain = rehydrate::track(new Brain);
            brain->mood = static_cast<int>(i % 5);
            entity = brain;
        } else {
            Robot* robot = rehydrate::track(new Robot);
            robot->vx = 0.5f;
            robot->vy = 0.25f;
            entity = robot;
        }
        entity->id = first_id + static_cast<unsigned>(i);
        entity->transform.x = static_cast<float>(i % 100);
        world_equip(entity);
        out[i] = entity;
    }
}

// Destroys an entity that world_spawn created.
void world_despawn(Entity* entity) {
    rehydrate::untrack(entity);
    delete entity;
}

// One tick of every entity; returns the sum of their scores.
long long world_tick(Entity** entities, std::size_t count, float dt) {
    long long total = 0;
    for (std::size_t i = 0; i < count; ++i) {
        entities[i]->tick(dt);
        total += entities[i]->score();
    }
    score_history.push_back(total);
    ++ticks_since_load;
    return total;
}

// How many ticks this session has simulated, and how many since this build was loaded.
void world_session(long long* ticks, long long* since_load) {
    *ticks = static_cast<long long>(score_history.size());
    *since_load = ticks_since_load;
}

// One entity's score (a virtual call).
int world_score(const Entity* entity) { return entity->score(); }

}  // extern "C"
