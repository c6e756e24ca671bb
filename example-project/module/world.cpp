// The module's entry points for the host: creating, ticking and destroying entities. The
// behaviour of each class lives in behaviour.cpp, the file the demo edits.
#include <cstddef>
#include <cstring>

#include "rehydrate/module.h"
#include "world.hpp"

using namespace world;

namespace {
bool is(const char* a, const char* b) { return std::strcmp(a, b) == 0; }
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
    return total;
}

// One entity's score (a virtual call).
int world_score(const Entity* entity) { return entity->score(); }

}  // extern "C"
