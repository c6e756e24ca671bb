// The example module's classes: a small world of entities and their components.
// Classes marked REHYDRATE_RELOADABLE are the ones the host keeps alive across reloads; their
// layout must stay the same from one build to the next (function bodies may change freely).
#pragma once

#include <string>
#include <vector>

#include "rehydrate/module_abi.h"

namespace world {

// Components: single inheritance, held by value in entities, alone and in arrays.
struct REHYDRATE_RELOADABLE Component {
    virtual ~Component() = default;
    virtual const char* kind() const = 0;
    float weight = 1.0f;
};

struct REHYDRATE_RELOADABLE Transform final : Component {
    const char* kind() const override;
    float x = 0, y = 0, angle = 0;
};

struct REHYDRATE_RELOADABLE Health final : Component {
    const char* kind() const override;
    int hp = 100;
    int max_hp = 100;
};

// Every entity, however it is assembled, has exactly one Entity part (a virtual base).
struct REHYDRATE_RELOADABLE Entity {
    virtual ~Entity() = default;
    virtual void tick(float dt) = 0;
    virtual int score() const = 0;
    unsigned id = 0;
    Transform transform;
    std::string name;                     // standard-library members: kept across reloads
    std::vector<std::string> components;  // the names of its parts, in order
};

// A second, non-virtual base: multiple inheritance.
struct Thinker {
    virtual ~Thinker() = default;
    virtual int think() = 0;
    int thoughts = 0;
};

struct REHYDRATE_RELOADABLE Mover : virtual Entity {
    void tick(float dt) override;
    int score() const override;
    float vx = 1, vy = 0;
};

struct REHYDRATE_RELOADABLE Brain : virtual Entity, Thinker {
    void tick(float dt) override;
    int score() const override;
    int think() override;
    int mood = 0;
};

// The diamond: a Mover and a Brain sharing one Entity.
struct REHYDRATE_RELOADABLE Robot final : Mover, Brain {
    void tick(float dt) override;
    int score() const override;
    Health health;
    Transform waypoints[3];
    std::vector<int> inventory;
    unsigned char battery_level() const { return battery; }
    void drain() { if (battery > 0) --battery; }
private:
    unsigned char battery = 100;
};

}  // namespace world
