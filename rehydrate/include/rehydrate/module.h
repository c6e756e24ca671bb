/* For module authors: tell the runtime about objects the module's own C++ code creates.
 *
 *     Robot* robot = rehydrate::track(new Robot);   // after construction
 *     rehydrate::untrack(robot); delete robot;      // before destruction
 *
 * Objects are identified by their dynamic type (typeid) and their complete-object address, so
 * tracking through a base-class pointer is fine. Objects tracked before the runtime attached
 * (by static initialisers, which run while the module is being loaded) are remembered by the
 * shim and handed to the runtime when it attaches; none is lost. */
#ifndef REHYDRATE_MODULE_H
#define REHYDRATE_MODULE_H

#include <type_traits>
#include <typeinfo>

#include "rehydrate/module_abi.h"

/* Defined by the generated shim: the runtime's function table, null until the runtime
 * attaches. Hidden (one per module build), so reading it is a single load. */
extern "C" __attribute__((visibility("hidden"))) const rehydrate_host_api *rehydrate_module_host_api;
/* Also the shim's: remember an object tracked before the runtime attached, or forget it. */
extern "C" __attribute__((visibility("hidden"))) void rehydrate_module_defer_track(const char *type_id_name,
                                                                                 void *object) noexcept;
extern "C" __attribute__((visibility("hidden"))) void rehydrate_module_defer_untrack(void *object) noexcept;

namespace rehydrate {

inline const rehydrate_host_api *module_host() noexcept { return rehydrate_module_host_api; }

template <class T>
void *complete_object(T *object) noexcept {
    if constexpr (std::is_polymorphic<T>::value) {
        return dynamic_cast<void *>(object);
    } else {
        return static_cast<void *>(object);
    }
}

/* Records `object` as live; returns it, so that `return rehydrate::track(new T);` reads well. */
template <class T>
T *track(T *object) noexcept {
    if (object == nullptr) return object;
    const rehydrate_host_api *host = module_host();
    if (host != nullptr) {
        host->track(host->context, typeid(*object).name(), complete_object(object));
    } else {
        rehydrate_module_defer_track(typeid(*object).name(), complete_object(object));
    }
    return object;
}

/* Forgets `object`; call it before destroying the object. */
template <class T>
void untrack(T *object) noexcept {
    if (object == nullptr) return;
    const rehydrate_host_api *host = module_host();
    if (host != nullptr) {
        host->untrack(host->context, complete_object(object));
    } else {
        rehydrate_module_defer_untrack(complete_object(object));
    }
}

/* A stable address for one of this module's exported (extern "C") functions, for code that is
 * never reloaded: after every reload it forwards to the current build's function. Returns null
 * when the runtime is absent or the module does not export `symbol`.
 *
 *     library_set_callback(rehydrate::forwarder<int (*)(int)>("on_event"));
 */
template <class Function>
Function forwarder(const char *symbol) noexcept {
    const rehydrate_host_api *host = module_host();
    if (host == nullptr) return nullptr;
    return reinterpret_cast<Function>(const_cast<void *>(host->forwarder(host->context, symbol)));
}

}  // namespace rehydrate

/* At a reload the module's globals keep their values (they are carried into the new build by
 * symbol). One line marks a global, class static or function-local static that should start
 * fresh instead, as if the module had just been loaded:
 *
 *     int frames_this_session = 0;
 *     REHYDRATE_RESET_ON_RELOAD(frames_this_session);
 *
 * It records the global's address in the `rehydrate_reset` section, which the runtime reads. */
#define REHYDRATE_RESET_CONCAT_(a, b) a##b
#define REHYDRATE_RESET_CONCAT(a, b) REHYDRATE_RESET_CONCAT_(a, b)
#define REHYDRATE_RESET_ON_RELOAD(global)                                                         \
    __attribute__((used, section("rehydrate_reset"))) static const void *const REHYDRATE_RESET_CONCAT( \
        rehydrate_reset_mark_, __COUNTER__) = static_cast<const void *>(&(global))

#endif /* REHYDRATE_MODULE_H */
