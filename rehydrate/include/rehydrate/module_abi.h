/* The module descriptor shared by the rehydrate runtime (Rust) and a module's generated shim.
 * Mirrors rehydrate/src/abi.rs field for field; the abi_mirror test checks every size and
 * offset. Change both together and bump REHYDRATE_ABI_VERSION. */
#ifndef REHYDRATE_MODULE_ABI_H
#define REHYDRATE_MODULE_ABI_H

#include <stddef.h>
#include <stdint.h>

#define REHYDRATE_ABI_VERSION 5u

#define REHYDRATE_STATUS_OK 0
#define REHYDRATE_STATUS_CPP_EXCEPTION 1

/* Marks a class for selection by annotation (`layout-gen --annotated`). */
#if defined(__clang__)
#define REHYDRATE_RELOADABLE __attribute__((annotate("rehydrate")))
#else
#define REHYDRATE_RELOADABLE
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t (*rehydrate_construct_fn)(void *place, char *error, size_t error_capacity);
typedef int32_t (*rehydrate_destroy_fn)(void *object, char *error, size_t error_capacity);
typedef int32_t (*rehydrate_measure_bases_fn)(const void *object, uint64_t *offsets);

typedef int32_t (*rehydrate_track_fn)(void *context, const char *type_id_name, void *object);
typedef void (*rehydrate_untrack_fn)(void *context, void *object);
typedef const void *(*rehydrate_forwarder_fn)(void *context, const char *symbol);

/* Handed to the module by the runtime when it loads the module. */
typedef struct rehydrate_host_api {
    uint32_t abi_version;
    uint32_t reserved;
    void *context;
    rehydrate_track_fn track;
    rehydrate_untrack_fn untrack;
    rehydrate_forwarder_fn forwarder;
} rehydrate_host_api;

typedef int32_t (*rehydrate_attach_fn)(const rehydrate_host_api *api);

typedef struct rehydrate_field_desc {
    const char *name;
    const char *owner;
    const char *type_name; /* as clang spells it */
    uint64_t offset;
    uint64_t size;
    uint64_t bit_offset; /* UINT64_MAX when not a bit-field */
    uint32_t bit_width;  /* 0 when not a bit-field */
    uint32_t access;     /* 0 public, 1 protected, 2 private */
} rehydrate_field_desc;

typedef struct rehydrate_base_desc {
    const char *name;
    uint64_t offset;
    uint32_t is_virtual;
    uint32_t reserved;
} rehydrate_base_desc;

typedef struct rehydrate_class_desc {
    const char *name;
    const char *type_id_name; /* typeid(T).name() */
    uint64_t size;
    uint64_t align;
    uint64_t layout_hash;
    uint64_t base_count;
    const rehydrate_base_desc *bases;
    uint64_t field_count;
    const rehydrate_field_desc *fields;
    uint64_t vptr_count;
    const uint64_t *vptr_offsets;
    rehydrate_construct_fn construct;
    rehydrate_destroy_fn destroy;
    rehydrate_measure_bases_fn measure_bases;
} rehydrate_class_desc;

/* One static-destructor registration of the module (`__cxa_atexit`, `atexit`), as the shim
 * records it: both words complemented, so that a scan for references into a build never
 * re-points them. A null function (complement ~0) is a registration the runtime took away. */
typedef struct rehydrate_exit_entry {
    uintptr_t function_complement;
    uintptr_t argument_complement;
} rehydrate_exit_entry;

/* The module's registrations, oldest first (`count` of them; null when none). */
typedef rehydrate_exit_entry *(*rehydrate_exit_entries_fn)(uint64_t *count);
/* Runs registration `index` now (catching any exception), and keeps it. */
typedef int32_t (*rehydrate_run_exit_entry_fn)(uint64_t index, char *error, size_t error_capacity);
/* Records a registration taken over from another build of the module, as the newest. */
typedef int32_t (*rehydrate_adopt_exit_entry_fn)(void (*function)(void *), void *argument);

typedef struct rehydrate_module_desc {
    uint32_t abi_version;
    uint32_t reserved;
    uint64_t class_count;
    const rehydrate_class_desc *classes;
    rehydrate_attach_fn attach;
    /* The three below may be null (a descriptor written by hand): the runtime then carries
     * none of the module's globals into a new build. */
    rehydrate_exit_entries_fn exit_entries;
    rehydrate_run_exit_entry_fn run_exit_entry;
    rehydrate_adopt_exit_entry_fn adopt_exit_entry;
} rehydrate_module_desc;

typedef const rehydrate_module_desc *(*rehydrate_descriptor_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* REHYDRATE_MODULE_ABI_H */
