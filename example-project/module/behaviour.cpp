// What the world's classes do. The demo rebuilds the module with edits/behaviour.cpp in place
// of this file: same classes, same layout, different code.
#include "world.hpp"

namespace world {

const char* Transform::kind() const { return "transform"; }
const char* Health::kind() const { return "health"; }

void Mover::tick(float dt) {
    transform.x += vx * dt;
    transform.y += vy * dt;
}
int Mover::score() const { return static_cast<int>(transform.x); }

int Brain::think() {
    mood = (mood + 1) % 5;
    return ++thoughts;
}
void Brain::tick(float) { think(); }
int Brain::score() const { return mood; }

void Robot::tick(float dt) {
    Mover::tick(dt);
    think();
    drain();
    waypoints[thoughts % 3].x = transform.x;
}
int Robot::score() const { return Mover::score() + mood + health.hp; }

}  // namespace world

extern "C" {

// Which build this is.
const char* world_version() { return "v1: movers cruise, brains count to five"; }

// The handler the never-reloaded event library calls (through a forwarder).
int world_on_event(int code) { return 1000 + code; }

}  // extern "C"
