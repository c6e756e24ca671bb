// The edited behaviour: the demo compiles this file in place of module/behaviour.cpp.
// Layouts are unchanged; movers go twice as fast, brains think in sevens, robots earn a bonus.
#include "world.hpp"

namespace world {

const char* Transform::kind() const { return "transform (v2)"; }
const char* Health::kind() const { return "health (v2)"; }

void Mover::tick(float dt) {
    transform.x += 2 * vx * dt;
    transform.y += vy * dt;
    transform.angle += 0.1f;
}
int Mover::score() const { return static_cast<int>(transform.x + transform.y); }

int Brain::think() {
    mood = (mood + 3) % 7;
    return ++thoughts;
}
void Brain::tick(float) { think(); }
int Brain::score() const { return 10 * mood; }

void Robot::tick(float dt) {
    Mover::tick(dt);
    think();
    drain();
    waypoints[thoughts % 3].y = transform.y;
}
int Robot::score() const { return Mover::score() + mood + health.hp + 1000; }

}  // namespace world

extern "C" {

const char* world_version() { return "v2: movers sprint, brains count to seven"; }

int world_on_event(int code) { return 2000 + code; }

}  // extern "C"
