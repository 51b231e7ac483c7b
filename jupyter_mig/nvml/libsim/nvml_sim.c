/*
 * An NVML-compatible libnvidia-ml.so.1 for simulated MIG GPUs.
 *
 * Exports the part of the NVML C ABI that nvidia-ml-py (the agent) and NVIDIA's device plugin
 * (go-nvml / go-nvlib) call for MIG: the same symbols, struct layouts, struct-version checks
 * and return codes as nvml.h.  The hardware rules (profiles, placements, counts) come from
 * tables.h, generated from jupyter_mig/mig/models.py by jupyter_mig/nvml/simgpu.py.
 *
 * State lives in $JUPYTER_MIG_NVML_SIM_DIR/nvml.state, a line-oriented text file read and
 * replaced (write to a temporary file, rename) under flock(2) of nvml.lock in the same
 * directory, so every process that loads this library sees one GPU.  Each call takes the lock,
 * reads the state, acts and writes it back when it changed.  Line format (fields by position):
 *
 *   jupyter-mig-nvml-sim <format>          first line
 *   table <digest>                         the profile table the state was made for
 *   driver <generation> <code>             a session opened before <generation> gets <code>
 *   gen <n>                                destroy counter (stale enumeration)
 *   stale <0|1>                            destroyed MIG devices stay enumerable to old sessions
 *   gpu <index> <model> <uuid> <current> <pending>
 *   gi <gpu> <id> <profile id> <start> <held>   held: destroy answers IN_USE (another holder)
 *   ci <gpu> <gi id> <ci id> <ci profile id> <MIG uuid>
 *   ghost <gpu> <gi id> <ci id> <MIG uuid> <gen>
 *   busy <MIG uuid>                        the MIG device has processes
 *   fault <call|*> <code> <skip> <times>   times -1: forever
 *   latency <call|*> <seconds>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "tables.h"

#define API __attribute__((visibility("default")))

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_INSUFFICIENT_RESOURCES = 23,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define STATE_FORMAT 1
#define MAX_GPUS 16
#define MAX_GI 16
#define MAX_LINES 1024
#define UUID_LEN 96
#define NAME_LEN 96
#define CI_PROFILE_COUNT 9
#define GI_PROFILE_COUNT 0x12

/* nvml.h struct versions: NVML_STRUCT_VERSION(name, ver) = sizeof(struct) | ver << 24. */
#define STRUCT_VERSION(type, ver) ((unsigned)(sizeof(type) | ((ver) << 24U)))

/* ---- nvml.h structures ------------------------------------------------------------------- */

typedef struct jm_handle *nvmlDevice_t;
typedef struct jm_handle *nvmlGpuInstance_t;
typedef struct jm_handle *nvmlComputeInstance_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;
typedef struct {
    unsigned int multiprocessorCount, sharedCopyEngineCount, sharedDecoderCount,
        sharedEncoderCount, sharedJpegCount, sharedOfaCount, gpuInstanceSliceCount,
        computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;
typedef struct {
    unsigned int start, size;
} nvmlGpuInstancePlacement_t;
typedef nvmlGpuInstancePlacement_t nvmlComputeInstancePlacement_t;
typedef struct {
    unsigned int id, isP2pSupported, sliceCount, instanceCount, multiprocessorCount,
        copyEngineCount, decoderCount, encoderCount, jpegCount, ofaCount;
    unsigned long long memorySizeMB;
} nvmlGpuInstanceProfileInfo_t;
typedef struct {
    unsigned int version, id, isP2pSupported, sliceCount, instanceCount, multiprocessorCount,
        copyEngineCount, decoderCount, encoderCount, jpegCount, ofaCount;
    unsigned long long memorySizeMB;
    char name[NAME_LEN];
} nvmlGpuInstanceProfileInfo_v2_t;
typedef struct {
    unsigned int version, id, sliceCount, instanceCount, multiprocessorCount, copyEngineCount,
        decoderCount, encoderCount, jpegCount, ofaCount;
    unsigned long long memorySizeMB;
    char name[NAME_LEN];
    unsigned int capabilities;
} nvmlGpuInstanceProfileInfo_v3_t;
typedef struct {
    nvmlDevice_t device;
    unsigned int id, profileId;
    nvmlGpuInstancePlacement_t placement;
} nvmlGpuInstanceInfo_t;
typedef struct {
    unsigned int id, sliceCount, instanceCount, multiprocessorCount, sharedCopyEngineCount,
        sharedDecoderCount, sharedEncoderCount, sharedJpegCount, sharedOfaCount;
} nvmlComputeInstanceProfileInfo_t;
typedef struct {
    unsigned int version, id, sliceCount, instanceCount, multiprocessorCount,
        sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount, sharedJpegCount,
        sharedOfaCount;
    char name[NAME_LEN];
} nvmlComputeInstanceProfileInfo_v2_t;
typedef struct {
    unsigned int version, id, sliceCount, instanceCount, multiprocessorCount,
        sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount, sharedJpegCount,
        sharedOfaCount;
    char name[NAME_LEN];
    unsigned int capabilities;
} nvmlComputeInstanceProfileInfo_v3_t;
typedef struct {
    nvmlDevice_t device;
    nvmlGpuInstance_t gpuInstance;
    unsigned int id, profileId;
    nvmlComputeInstancePlacement_t placement;
} nvmlComputeInstanceInfo_t;

#define GI_PROFILE_INFO_V2 STRUCT_VERSION(nvmlGpuInstanceProfileInfo_v2_t, 2)
#define GI_PROFILE_INFO_V3 STRUCT_VERSION(nvmlGpuInstanceProfileInfo_v3_t, 3)
#define CI_PROFILE_INFO_V2 STRUCT_VERSION(nvmlComputeInstanceProfileInfo_v2_t, 2)
#define CI_PROFILE_INFO_V3 STRUCT_VERSION(nvmlComputeInstanceProfileInfo_v3_t, 3)
#define MEMORY_V2 STRUCT_VERSION(nvmlMemory_v2_t, 2)

/* ---- handles: stable addresses, one per (kind, gpu, gi, ci), never freed ------------------- */

enum { H_GPU = 1, H_MIG, H_GI, H_CI, H_GHOST }; /* H_GHOST: ci holds the ghost's gen */
struct jm_handle {
    unsigned magic, kind, gpu, gi, ci;
};
#define HANDLE_MAGIC 0x6a6d6e76U
#define MAX_HANDLES 8192
static struct jm_handle handles[MAX_HANDLES];
static unsigned handle_count;

static pthread_mutex_t lib_mutex = PTHREAD_MUTEX_INITIALIZER;
static int init_count;
static unsigned session_driver, session_gen;
static char state_dir[4096];

static struct jm_handle *handle_for(unsigned kind, unsigned gpu, unsigned gi, unsigned ci) {
    for (unsigned i = 0; i < handle_count; i++) {
        struct jm_handle *h = &handles[i];
        if (h->kind == kind && h->gpu == gpu && h->gi == gi && h->ci == ci) return h;
    }
    if (handle_count == MAX_HANDLES) return NULL;
    struct jm_handle *h = &handles[handle_count++];
    *h = (struct jm_handle){HANDLE_MAGIC, kind, gpu, gi, ci};
    return h;
}

static int is_handle(const struct jm_handle *h, unsigned kind) {
    return h >= handles && h < handles + handle_count && h->magic == HANDLE_MAGIC &&
           (kind == 0 || h->kind == kind);
}

/* ---- state ------------------------------------------------------------------------------- */

typedef struct {
    unsigned id, profile, start, held;
} gi_t;
typedef struct {
    unsigned gi, id, profile;
    char uuid[UUID_LEN];
} ci_t;
typedef struct {
    unsigned gi, ci, gen;
    char uuid[UUID_LEN];
} ghost_t;
typedef struct {
    unsigned index, current, pending;
    char model[64], uuid[UUID_LEN];
    const jm_model *spec;
    unsigned ngi, nci, nghost;
    gi_t gis[MAX_GI];
    ci_t cis[MAX_GI * 8];
    ghost_t ghosts[64];
} gpu_t;
typedef struct {
    char call[128];
    int code, skip, times;
} fault_t;
typedef struct {
    char call[128];
    double seconds;
} latency_t;
typedef struct {
    char table[128];
    unsigned driver, driver_code, gen, stale;
    unsigned ngpu, nbusy, nfault, nlatency;
    gpu_t gpus[MAX_GPUS];
    char busy[64][UUID_LEN];
    fault_t faults[64];
    latency_t latencies[64];
} state_t;

static state_t st; /* guarded by lib_mutex and the file lock */

/* Copy a string, cut to the buffer (state fields are bounded by the format). */
static void set_text(char *out, size_t size, const char *text) {
    size_t n = strnlen(text, size - 1);
    memmove(out, text, n);
    out[n] = 0;
}

static void complain(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("libnvidia-ml (jupyter-mig simulated GPUs): ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static const jm_model *find_model(const char *name) {
    for (unsigned i = 0; i < JM_MODEL_COUNT; i++)
        if (strcmp(JM_MODELS[i].name, name) == 0) return &JM_MODELS[i];
    return NULL;
}

static int lock_fd = -1;

static nvmlReturn_t lock_state(void) {
    char path[4200];
    snprintf(path, sizeof path, "%s/nvml.state", state_dir);
    if (access(path, F_OK) != 0) { /* leave no lock file where there is no state */
        complain("no simulated GPUs: %s does not exist; make them with `jupyter-mig nvml-sim "
                 "init %s --gpu MODEL --gpus N`",
                 path, state_dir);
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    snprintf(path, sizeof path, "%s/nvml.lock", state_dir);
    lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) {
        complain("cannot open %s: %s", path, strerror(errno));
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    while (flock(lock_fd, LOCK_EX) != 0)
        if (errno != EINTR) return NVML_ERROR_OPERATING_SYSTEM;
    return NVML_SUCCESS;
}

static void unlock_state(void) {
    if (lock_fd >= 0) close(lock_fd); /* closing drops the flock */
    lock_fd = -1;
}

/* Parse nvml.state into st; DRIVER_NOT_LOADED with one line on stderr when it is unusable. */
static nvmlReturn_t load_state(void) {
    char path[4200], line[512];
    snprintf(path, sizeof path, "%s/nvml.state", state_dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        complain("no simulated GPUs: cannot read %s (%s); make them with "
                 "`jupyter-mig nvml-sim init %s --gpu MODEL --gpus N`",
                 path, strerror(errno), state_dir);
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    memset(&st, 0, sizeof st);
    int format = -1, lineno = 0;
    nvmlReturn_t rc = NVML_SUCCESS;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        unsigned a, b, c, d, e;
        char s1[128], s2[128];
        double x;
        int ok = 1;
        if (lineno == 1) {
            ok = sscanf(line, "jupyter-mig-nvml-sim %d", &format) == 1;
        } else if (sscanf(line, "table %127s", st.table) == 1) {
        } else if (sscanf(line, "driver %u %u", &a, &b) == 2) {
            st.driver = a, st.driver_code = b;
        } else if (sscanf(line, "gen %u", &a) == 1) {
            st.gen = a;
        } else if (sscanf(line, "stale %u", &a) == 1) {
            st.stale = a;
        } else if (sscanf(line, "gpu %u %63s %95s %u %u", &a, s1, s2, &b, &c) == 5) {
            ok = st.ngpu < MAX_GPUS && a == st.ngpu;
            if (ok) {
                gpu_t *g = &st.gpus[st.ngpu++];
                g->index = a, g->current = b, g->pending = c;
                set_text(g->model, sizeof g->model, s1);
                set_text(g->uuid, sizeof g->uuid, s2);
                g->spec = find_model(s1);
                if (!g->spec) {
                    complain("%s: GPU %u is a %s, a model this library does not know; rebuild "
                             "it with `jupyter-mig nvml-sim lib`",
                             path, a, s1);
                    rc = NVML_ERROR_LIB_RM_VERSION_MISMATCH;
                }
            }
        } else if (sscanf(line, "gi %u %u %u %u %u", &a, &b, &c, &d, &e) == 5) {
            ok = a < st.ngpu && st.gpus[a].ngi < MAX_GI;
            if (ok) st.gpus[a].gis[st.gpus[a].ngi++] = (gi_t){b, c, d, e};
        } else if (sscanf(line, "ci %u %u %u %u %95s", &a, &b, &c, &d, s1) == 5) {
            ok = a < st.ngpu && st.gpus[a].nci < MAX_GI * 8;
            if (ok) {
                ci_t *ci = &st.gpus[a].cis[st.gpus[a].nci++];
                ci->gi = b, ci->id = c, ci->profile = d;
                set_text(ci->uuid, sizeof ci->uuid, s1);
            }
        } else if (sscanf(line, "ghost %u %u %u %95s %u", &a, &b, &c, s1, &d) == 5) {
            ok = a < st.ngpu && st.gpus[a].nghost < 64;
            if (ok) {
                ghost_t *gh = &st.gpus[a].ghosts[st.gpus[a].nghost++];
                gh->gi = b, gh->ci = c, gh->gen = d;
                set_text(gh->uuid, sizeof gh->uuid, s1);
            }
        } else if (sscanf(line, "busy %95s", s1) == 1) {
            ok = st.nbusy < 64;
            if (ok) set_text(st.busy[st.nbusy++], UUID_LEN, s1);
        } else if (sscanf(line, "fault %127s %d %d %d", s1, (int *)&a, (int *)&b, (int *)&c) ==
                   4) {
            ok = st.nfault < 64;
            if (ok) {
                fault_t *ft = &st.faults[st.nfault++];
                set_text(ft->call, sizeof ft->call, s1);
                ft->code = (int)a, ft->skip = (int)b, ft->times = (int)c;
            }
        } else if (sscanf(line, "latency %127s %lf", s1, &x) == 2) {
            ok = st.nlatency < 64;
            if (ok) {
                set_text(st.latencies[st.nlatency].call, 128, s1);
                st.latencies[st.nlatency++].seconds = x;
            }
        } else {
            ok = line[0] == '\n' || line[0] == '#';
        }
        if (!ok) {
            complain("%s line %d is corrupt: %.80s; make the state again with `jupyter-mig "
                     "nvml-sim init`",
                     path, lineno, line);
            rc = NVML_ERROR_DRIVER_NOT_LOADED;
            break;
        }
    }
    fclose(f);
    if (rc == NVML_SUCCESS && format != STATE_FORMAT) {
        complain("%s is not a state of format %d; make it again with `jupyter-mig nvml-sim "
                 "init`",
                 path, STATE_FORMAT);
        rc = NVML_ERROR_DRIVER_NOT_LOADED;
    }
    if (rc == NVML_SUCCESS && strcmp(st.table, JM_TABLE_DIGEST) != 0) {
        complain("%s was made for profile table %s but this library was built for %s; rebuild "
                 "it with `jupyter-mig nvml-sim lib`",
                 path, st.table, JM_TABLE_DIGEST);
        rc = NVML_ERROR_LIB_RM_VERSION_MISMATCH;
    }
    return rc;
}

static nvmlReturn_t save_state(void) {
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/nvml.state", state_dir);
    snprintf(tmp, sizeof tmp, "%s/.nvml.state.%d.tmp", state_dir, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return NVML_ERROR_OPERATING_SYSTEM;
    fprintf(f, "jupyter-mig-nvml-sim %d\ntable %s\ndriver %u %u\ngen %u\nstale %u\n",
            STATE_FORMAT, st.table, st.driver, st.driver_code, st.gen, st.stale);
    for (unsigned i = 0; i < st.ngpu; i++) {
        gpu_t *g = &st.gpus[i];
        fprintf(f, "gpu %u %s %s %u %u\n", g->index, g->model, g->uuid, g->current, g->pending);
        for (unsigned j = 0; j < g->ngi; j++)
            fprintf(f, "gi %u %u %u %u %u\n", i, g->gis[j].id, g->gis[j].profile,
                    g->gis[j].start, g->gis[j].held);
        for (unsigned j = 0; j < g->nci; j++)
            fprintf(f, "ci %u %u %u %u %s\n", i, g->cis[j].gi, g->cis[j].id, g->cis[j].profile,
                    g->cis[j].uuid);
        for (unsigned j = 0; j < g->nghost; j++)
            fprintf(f, "ghost %u %u %u %s %u\n", i, g->ghosts[j].gi, g->ghosts[j].ci,
                    g->ghosts[j].uuid, g->ghosts[j].gen);
    }
    for (unsigned i = 0; i < st.nbusy; i++) fprintf(f, "busy %s\n", st.busy[i]);
    for (unsigned i = 0; i < st.nfault; i++)
        fprintf(f, "fault %s %d %d %d\n", st.faults[i].call, st.faults[i].code,
                st.faults[i].skip, st.faults[i].times);
    for (unsigned i = 0; i < st.nlatency; i++)
        fprintf(f, "latency %s %g\n", st.latencies[i].call, st.latencies[i].seconds);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return NVML_ERROR_OPERATING_SYSTEM;
    }
    return NVML_SUCCESS;
}

/* ---- one call: lock, load, latency and faults, act, save ---------------------------------- */

/* Consume a matching fault (the state is saved by the caller when *changed is set). */
static nvmlReturn_t take_fault(const char *call, int *changed) {
    for (unsigned i = 0; i < st.nfault; i++) {
        fault_t *ft = &st.faults[i];
        if (strcmp(ft->call, "*") != 0 && strcmp(ft->call, call) != 0) continue;
        *changed = 1;
        if (ft->skip > 0) {
            ft->skip--;
            continue;
        }
        int code = ft->code;
        if (ft->times > 0 && --ft->times == 0) {
            memmove(ft, ft + 1, (st.nfault - i - 1) * sizeof *ft);
            st.nfault--;
        }
        return code;
    }
    return NVML_SUCCESS;
}

static double latency_of(const char *call) {
    double seconds = 0;
    for (unsigned i = 0; i < st.nlatency; i++)
        if (strcmp(st.latencies[i].call, call) == 0 || strcmp(st.latencies[i].call, "*") == 0)
            seconds += st.latencies[i].seconds;
    return seconds;
}

static void sleep_for(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Begin an API call: initialised?, state loaded, driver generation, latency, faults. */
static nvmlReturn_t begin(const char *call) {
    pthread_mutex_lock(&lib_mutex);
    if (init_count == 0) {
        pthread_mutex_unlock(&lib_mutex);
        return NVML_ERROR_UNINITIALIZED;
    }
    nvmlReturn_t rc = lock_state();
    if (rc == NVML_SUCCESS) rc = load_state();
    if (rc == NVML_SUCCESS && st.driver != session_driver)
        rc = st.driver_code ? (nvmlReturn_t)st.driver_code : NVML_ERROR_GPU_IS_LOST;
    if (rc == NVML_SUCCESS) {
        double seconds = latency_of(call);
        int changed = 0;
        rc = take_fault(call, &changed);
        if (changed) save_state();
        if (seconds > 0) {
            unlock_state(); /* other processes go on while this call "works" */
            sleep_for(seconds);
            rc = rc != NVML_SUCCESS ? rc : lock_state();
            if (rc == NVML_SUCCESS) rc = load_state();
        }
    }
    if (rc != NVML_SUCCESS) {
        unlock_state();
        pthread_mutex_unlock(&lib_mutex);
    }
    return rc;
}

static nvmlReturn_t end(nvmlReturn_t rc, int save) {
    if (save) {
        nvmlReturn_t saved = save_state();
        if (rc == NVML_SUCCESS) rc = saved;
    }
    unlock_state();
    pthread_mutex_unlock(&lib_mutex);
    return rc;
}

#define BEGIN(call)                                                                            \
    do {                                                                                       \
        nvmlReturn_t begun_ = begin(call);                                                     \
        if (begun_ != NVML_SUCCESS) return begun_;                                             \
    } while (0)

/* ---- lookups ----------------------------------------------------------------------------- */

static gpu_t *gpu_of(struct jm_handle *h) {
    return h->gpu < st.ngpu ? &st.gpus[h->gpu] : NULL;
}

static const jm_profile *profile_by_id(const jm_model *m, unsigned id) {
    for (unsigned i = 0; i < m->nprofiles; i++)
        if (m->profiles[i].id == id) return &m->profiles[i];
    return NULL;
}

static const jm_profile *profile_by_index(const jm_model *m, unsigned index) {
    for (unsigned i = 0; i < m->nprofiles; i++)
        if (m->profiles[i].index == index) return &m->profiles[i];
    return NULL;
}

static gi_t *gi_of(gpu_t *g, unsigned id) {
    for (unsigned i = 0; i < g->ngi; i++)
        if (g->gis[i].id == id) return &g->gis[i];
    return NULL;
}

static ci_t *ci_of(gpu_t *g, unsigned gi, unsigned id) {
    for (unsigned i = 0; i < g->nci; i++)
        if (g->cis[i].gi == gi && g->cis[i].id == id) return &g->cis[i];
    return NULL;
}

static int busy(const char *uuid) {
    for (unsigned i = 0; i < st.nbusy; i++)
        if (strcmp(st.busy[i], uuid) == 0) return 1;
    return 0;
}

static int mig_on(gpu_t *g) { return g->current == 1; }

/* Slice counts of the nvml.h compute-instance profile indexes. */
static const unsigned CI_SLICES[CI_PROFILE_COUNT] = {1, 2, 3, 4, 7, 8, 6, 1, 7};

static unsigned ci_slices(unsigned ci_profile) {
    return ci_profile < CI_PROFILE_COUNT ? CI_SLICES[ci_profile] : 0;
}

static void new_uuid(char *out, const char *prefix) {
    unsigned char b[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, b, sizeof b) != (ssize_t)sizeof b) {
        for (unsigned i = 0; i < sizeof b; i++) b[i] = (unsigned char)rand();
    }
    if (fd >= 0) close(fd);
    b[6] = (b[6] & 0x0f) | 0x40, b[8] = (b[8] & 0x3f) | 0x80;
    snprintf(out, UUID_LEN,
             "%s-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", prefix,
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
             b[13], b[14], b[15]);
}

static nvmlReturn_t copy_text(char *out, unsigned length, const char *text) {
    if (!out) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(text) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, text, strlen(text) + 1);
    return NVML_SUCCESS;
}

/* ---- init, shutdown, system ---------------------------------------------------------------- */

API nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    const char *dir = getenv("JUPYTER_MIG_NVML_SIM_DIR");
    if (!dir || !*dir) {
        complain("JUPYTER_MIG_NVML_SIM_DIR is not set: point it at a directory made by "
                 "`jupyter-mig nvml-sim init DIR --gpu MODEL --gpus N`");
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    pthread_mutex_lock(&lib_mutex);
    set_text(state_dir, sizeof state_dir, dir);
    nvmlReturn_t rc = lock_state();
    if (rc == NVML_SUCCESS) rc = load_state();
    if (rc == NVML_SUCCESS) {
        int changed = 0;
        rc = take_fault("nvmlInit", &changed);
        if (changed) save_state();
    }
    if (rc == NVML_SUCCESS) {
        /* A first init, or one after a driver reload (which an open session survives only
         * until it initialises again), starts a new session. */
        if (init_count == 0 || st.driver != session_driver)
            session_driver = st.driver, session_gen = st.gen;
        init_count++;
    }
    unlock_state();
    pthread_mutex_unlock(&lib_mutex);
    return rc;
}

API nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
API nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

API nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&lib_mutex);
    nvmlReturn_t rc = init_count > 0 ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
    if (init_count > 0) init_count--;
    pthread_mutex_unlock(&lib_mutex);
    return rc;
}

API const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_INSUFFICIENT_RESOURCES: return "Insufficient resources";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Version mismatch";
    default: return "Unknown Error";
    }
}

API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    BEGIN("nvmlSystemGetDriverVersion");
    return end(copy_text(version, length, JM_DRIVER_VERSION), 0);
}

API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    BEGIN("nvmlSystemGetNVMLVersion");
    return end(copy_text(version, length, JM_NVML_VERSION), 0);
}

API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    BEGIN("nvmlSystemGetCudaDriverVersion");
    if (!version) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *version = JM_CUDA_VERSION;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    return nvmlSystemGetCudaDriverVersion(version);
}

/* ---- devices ------------------------------------------------------------------------------- */

API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    BEGIN("nvmlDeviceGetCount_v2");
    if (!count) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *count = st.ngpu;
    return end(NVML_SUCCESS, 0);
}
API nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    BEGIN("nvmlDeviceGetHandleByIndex_v2");
    if (!device || index >= st.ngpu) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *device = handle_for(H_GPU, index, 0, 0);
    return end(*device ? NVML_SUCCESS : NVML_ERROR_MEMORY, 0);
}
API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

static void pci_bus_id(unsigned gpu, char *out, size_t length) {
    snprintf(out, length, "00000000:%02X:00.0", 0x10 + gpu);
}

API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    BEGIN("nvmlDeviceGetHandleByUUID");
    if (!uuid || !device) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    for (unsigned i = 0; i < st.ngpu; i++) {
        gpu_t *g = &st.gpus[i];
        if (strcmp(g->uuid, uuid) == 0) {
            *device = handle_for(H_GPU, i, 0, 0);
            return end(NVML_SUCCESS, 0);
        }
        for (unsigned j = 0; j < g->nci; j++)
            if (strcmp(g->cis[j].uuid, uuid) == 0) {
                *device = handle_for(H_MIG, i, g->cis[j].gi, g->cis[j].id);
                return end(NVML_SUCCESS, 0);
            }
    }
    return end(NVML_ERROR_NOT_FOUND, 0);
}

API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *bus_id, nvmlDevice_t *device) {
    BEGIN("nvmlDeviceGetHandleByPciBusId_v2");
    if (!bus_id || !device) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    char mine[32];
    for (unsigned i = 0; i < st.ngpu; i++) {
        pci_bus_id(i, mine, sizeof mine);
        if (strcasecmp(mine, bus_id) == 0 || strcasecmp(mine + 4, bus_id) == 0) {
            *device = handle_for(H_GPU, i, 0, 0);
            return end(NVML_SUCCESS, 0);
        }
    }
    return end(NVML_ERROR_NOT_FOUND, 0);
}
API nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *bus_id, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByPciBusId_v2(bus_id, device);
}

/* Resolve a device handle (GPU or MIG device) inside a call; NULL when stale or foreign. */
#define DEVICE(h, g)                                                                           \
    gpu_t *g = is_handle(h, 0) && h->kind != H_GI && h->kind != H_CI ? gpu_of(h) : NULL;     \
    if (!g) return end(NVML_ERROR_INVALID_ARGUMENT, 0)

/* A MIG device handle is live while its CI exists or, for an old session, as a ghost. */
static const char *mig_uuid(gpu_t *g, struct jm_handle *h) {
    if (h->kind == H_GHOST) {
        for (unsigned i = 0; i < g->nghost; i++)
            if (g->ghosts[i].gen == h->ci && g->ghosts[i].gen > session_gen)
                return g->ghosts[i].uuid;
        return NULL;
    }
    ci_t *ci = ci_of(g, h->gi, h->ci);
    return ci ? ci->uuid : NULL;
}

API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    BEGIN("nvmlDeviceGetName");
    DEVICE(device, g);
    char text[NAME_LEN];
    set_text(text, sizeof text, g->spec->product);
    if (device->kind != H_GPU) {
        gi_t *gi = gi_of(g, device->gi);
        const jm_profile *p = gi ? profile_by_id(g->spec, gi->profile) : NULL;
        snprintf(text, sizeof text, "%s MIG %s", g->spec->product, p ? p->name : "?");
    }
    return end(copy_text(name, length, text), 0);
}

API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    BEGIN("nvmlDeviceGetUUID");
    DEVICE(device, g);
    if (device->kind == H_GPU) return end(copy_text(uuid, length, g->uuid), 0);
    const char *mine = mig_uuid(g, device);
    return end(mine ? copy_text(uuid, length, mine) : NVML_ERROR_INVALID_ARGUMENT, 0);
}

API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    BEGIN("nvmlDeviceGetIndex");
    DEVICE(device, g);
    if (!index) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *index = g->index;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t device, int *brand) {
    BEGIN("nvmlDeviceGetBrand");
    DEVICE(device, g);
    if (!brand) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *brand = 14; /* NVML_BRAND_NVIDIA */
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, unsigned int *arch) {
    BEGIN("nvmlDeviceGetArchitecture");
    DEVICE(device, g);
    if (!arch) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *arch = g->spec->arch;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    BEGIN("nvmlDeviceGetCudaComputeCapability");
    DEVICE(device, g);
    if (!major || !minor) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *major = g->spec->cc_major, *minor = g->spec->cc_minor;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minor) {
    BEGIN("nvmlDeviceGetMinorNumber");
    DEVICE(device, g);
    if (!minor) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (device->kind != H_GPU) return end(NVML_ERROR_NOT_SUPPORTED, 0);
    *minor = g->index;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    BEGIN("nvmlDeviceGetPciInfo_v3");
    DEVICE(device, g);
    if (!pci) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    memset(pci, 0, sizeof *pci);
    pci_bus_id(g->index, pci->busId, sizeof pci->busId);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "0000:%02X:00.0", 0x10 + g->index);
    pci->bus = 0x10 + g->index;
    pci->pciDeviceId = g->spec->pci_device_id;
    pci->pciSubSystemId = 0x10de0000U | g->spec->pci_device_id >> 16;
    return end(NVML_SUCCESS, 0);
}
API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return nvmlDeviceGetPciInfo_v3(device, pci);
}
API nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    return nvmlDeviceGetPciInfo_v3(device, pci);
}

/* Total memory of a GPU, or of the MIG device's GPU instance. */
static unsigned long long memory_mib(gpu_t *g, struct jm_handle *h) {
    if (h->kind != H_GPU) {
        gi_t *gi = gi_of(g, h->gi);
        const jm_profile *p = gi ? profile_by_id(g->spec, gi->profile) : NULL;
        return p ? p->memory_mib : 0;
    }
    return g->spec->memory_mib;
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    BEGIN("nvmlDeviceGetMemoryInfo");
    DEVICE(device, g);
    if (!memory) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    memory->total = memory_mib(g, device) << 20;
    memory->used = 0, memory->free = memory->total;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    BEGIN("nvmlDeviceGetMemoryInfo_v2");
    DEVICE(device, g);
    if (!memory) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (memory->version != MEMORY_V2) return end(NVML_ERROR_ARGUMENT_VERSION_MISMATCH, 0);
    memory->total = memory_mib(g, device) << 20;
    memory->reserved = memory->used = 0, memory->free = memory->total;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current,
                                      unsigned int *pending) {
    BEGIN("nvmlDeviceGetMigMode");
    DEVICE(device, g);
    if (!current || !pending) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (device->kind != H_GPU) return end(NVML_ERROR_NOT_SUPPORTED, 0);
    *current = g->current, *pending = g->pending;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *attr) {
    BEGIN("nvmlDeviceGetAttributes_v2");
    DEVICE(device, g);
    if (!attr) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    memset(attr, 0, sizeof *attr);
    unsigned slices = g->spec->budget, gi_slices = g->spec->grid;
    if (device->kind != H_GPU) {
        gi_t *gi = gi_of(g, device->gi);
        ci_t *ci = ci_of(g, device->gi, device->ci);
        const jm_profile *p = gi ? profile_by_id(g->spec, gi->profile) : NULL;
        if (!p || !ci) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
        slices = ci_slices(ci->profile), gi_slices = p->compute;
    }
    attr->multiprocessorCount = slices * g->spec->sm_per_slice;
    attr->sharedCopyEngineCount = slices, attr->sharedDecoderCount = slices / 2 + 1;
    attr->sharedJpegCount = 1, attr->sharedOfaCount = 1;
    attr->gpuInstanceSliceCount = gi_slices, attr->computeInstanceSliceCount = slices;
    attr->memorySizeMB = memory_mib(g, device);
    return end(NVML_SUCCESS, 0);
}
API nvmlReturn_t nvmlDeviceGetAttributes(nvmlDevice_t device, nvmlDeviceAttributes_t *attr) {
    return nvmlDeviceGetAttributes_v2(device, attr);
}

/* ---- GPU-instance profiles and placements --------------------------------------------------- */

#define PHYSICAL_MIG_GPU(device, g)                                                            \
    DEVICE(device, g);                                                                         \
    if (device->kind != H_GPU) return end(NVML_ERROR_INVALID_ARGUMENT, 0);                    \
    if (!mig_on(g)) return end(NVML_ERROR_NOT_SUPPORTED, 0)

/* nvml.h: INVALID_ARGUMENT past the profile indexes, NOT_SUPPORTED for one the GPU lacks. */
static nvmlReturn_t gi_profile(gpu_t *g, unsigned index, const jm_profile **out) {
    if (index >= GI_PROFILE_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    *out = profile_by_index(g->spec, index);
    return *out ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

#define FILL_GI_PROFILE(info, p, g)                                                            \
    do {                                                                                       \
        (info)->id = (p)->id, (info)->sliceCount = (p)->compute;                               \
        (info)->instanceCount = (p)->max_count;                                                \
        (info)->multiprocessorCount = (p)->compute * (g)->spec->sm_per_slice;                  \
        (info)->copyEngineCount = (p)->compute, (info)->decoderCount = (p)->compute / 2 + 1;   \
        (info)->encoderCount = 0, (info)->jpegCount = (p)->media ? 1 : 0;                      \
        (info)->ofaCount = (p)->media ? 1 : 0, (info)->memorySizeMB = (p)->memory_mib;         \
    } while (0)

API nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t device, unsigned int profile,
                                                     nvmlGpuInstanceProfileInfo_t *info) {
    BEGIN("nvmlDeviceGetGpuInstanceProfileInfo");
    PHYSICAL_MIG_GPU(device, g);
    const jm_profile *p = NULL;
    if (!info) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    nvmlReturn_t rc = gi_profile(g, profile, &p);
    if (rc != NVML_SUCCESS) return end(rc, 0);
    memset(info, 0, sizeof *info);
    FILL_GI_PROFILE(info, p, g);
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoV(nvmlDevice_t device, unsigned int profile,
                                                      void *info) {
    BEGIN("nvmlDeviceGetGpuInstanceProfileInfoV");
    PHYSICAL_MIG_GPU(device, g);
    if (!info) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    unsigned version = *(unsigned *)info;
    if (version != GI_PROFILE_INFO_V2 && version != GI_PROFILE_INFO_V3)
        return end(NVML_ERROR_ARGUMENT_VERSION_MISMATCH, 0);
    const jm_profile *p = NULL;
    nvmlReturn_t rc = gi_profile(g, profile, &p);
    if (rc != NVML_SUCCESS) return end(rc, 0);
    char name[NAME_LEN];
    snprintf(name, sizeof name, "MIG %s", p->name);
    if (version == GI_PROFILE_INFO_V2) {
        nvmlGpuInstanceProfileInfo_v2_t *v2 = info;
        memset(v2, 0, sizeof *v2);
        v2->version = version;
        FILL_GI_PROFILE(v2, p, g);
        set_text(v2->name, sizeof v2->name, name);
    } else {
        nvmlGpuInstanceProfileInfo_v3_t *v3 = info;
        memset(v3, 0, sizeof *v3);
        v3->version = version;
        FILL_GI_PROFILE(v3, p, g);
        set_text(v3->name, sizeof v3->name, name);
    }
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetGpuInstancePossiblePlacements_v2(
    nvmlDevice_t device, unsigned int profile_id, nvmlGpuInstancePlacement_t *placements,
    unsigned int *count) {
    BEGIN("nvmlDeviceGetGpuInstancePossiblePlacements_v2");
    PHYSICAL_MIG_GPU(device, g);
    const jm_profile *p = profile_by_id(g->spec, profile_id);
    if (!count) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (!p) return end(NVML_ERROR_NOT_SUPPORTED, 0);
    if (!placements) {
        *count = p->nstarts;
        return end(NVML_SUCCESS, 0);
    }
    if (*count < p->nstarts) {
        *count = p->nstarts;
        return end(NVML_ERROR_INSUFFICIENT_SIZE, 0);
    }
    for (unsigned i = 0; i < p->nstarts; i++)
        placements[i] = (nvmlGpuInstancePlacement_t){p->starts[i], p->size};
    *count = p->nstarts;
    return end(NVML_SUCCESS, 0);
}
API nvmlReturn_t nvmlDeviceGetGpuInstancePossiblePlacements(
    nvmlDevice_t device, unsigned int profile_id, nvmlGpuInstancePlacement_t *placements,
    unsigned int *count) {
    return nvmlDeviceGetGpuInstancePossiblePlacements_v2(device, profile_id, placements, count);
}

/* The hardware's rules for one more GI (as jupyter_mig.mig.layout.layout_errors). */
static int fits(gpu_t *g, const jm_profile *p, unsigned start) {
    unsigned compute = p->compute, same = 1, extended = 0, all_me = 0, plain = 0;
    unsigned long long occupied = 0, mine = ((1ULL << p->size) - 1) << start;
    const jm_profile *members[MAX_GI + 1];
    unsigned n = 0;
    members[n++] = p;
    for (unsigned i = 0; i < g->ngi; i++) {
        const jm_profile *q = profile_by_id(g->spec, g->gis[i].profile);
        if (!q) continue;
        occupied |= ((1ULL << q->size) - 1) << g->gis[i].start;
        compute += q->compute;
        same += q->id == p->id;
        members[n++] = q;
    }
    for (unsigned i = 0; i < n; i++) {
        extended += members[i]->media == JM_ME || members[i]->media == JM_ALL_ME;
        all_me += members[i]->media == JM_ALL_ME;
        plain += members[i]->media != JM_ALL_ME && members[i]->media != JM_NO_ME;
    }
    return !(occupied & mine) && compute <= g->spec->budget && same <= p->max_count &&
           extended <= 1 && !(all_me && plain);
}

static unsigned free_gi_id(gpu_t *g) {
    for (unsigned id = 1;; id++)
        if (!gi_of(g, id)) return id;
}

static nvmlReturn_t create_gi(nvmlDevice_t device, unsigned profile_id, int start,
                              nvmlGpuInstance_t *out) {
    PHYSICAL_MIG_GPU(device, g);
    if (!out) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    const jm_profile *p = profile_by_id(g->spec, profile_id);
    if (!p) return end(NVML_ERROR_NOT_SUPPORTED, 0);
    if (g->ngi == MAX_GI) return end(NVML_ERROR_INSUFFICIENT_RESOURCES, 0);
    if (start < 0) { /* no placement given: the first that fits */
        for (unsigned i = 0; i < p->nstarts && start < 0; i++)
            if (fits(g, p, p->starts[i])) start = (int)p->starts[i];
        if (start < 0) return end(NVML_ERROR_INSUFFICIENT_RESOURCES, 0);
    }
    int legal = 0;
    for (unsigned i = 0; i < p->nstarts; i++) legal |= p->starts[i] == (unsigned)start;
    if (!legal) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (!fits(g, p, (unsigned)start)) return end(NVML_ERROR_INSUFFICIENT_RESOURCES, 0);
    gi_t *gi = &g->gis[g->ngi++];
    *gi = (gi_t){free_gi_id(g), p->id, (unsigned)start, 0};
    *out = handle_for(H_GI, g->index, gi->id, 0);
    return end(NVML_SUCCESS, 1);
}

API nvmlReturn_t nvmlDeviceCreateGpuInstanceWithPlacement(
    nvmlDevice_t device, unsigned int profile_id, const nvmlGpuInstancePlacement_t *placement,
    nvmlGpuInstance_t *gpu_instance) {
    BEGIN("nvmlDeviceCreateGpuInstanceWithPlacement");
    if (!placement) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (is_handle(device, H_GPU) && gpu_of(device)) {
        const jm_profile *p = profile_by_id(gpu_of(device)->spec, profile_id);
        if (p && placement->size != p->size) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    }
    return create_gi(device, profile_id, (int)placement->start, gpu_instance);
}

API nvmlReturn_t nvmlDeviceCreateGpuInstance(nvmlDevice_t device, unsigned int profile_id,
                                             nvmlGpuInstance_t *gpu_instance) {
    BEGIN("nvmlDeviceCreateGpuInstance");
    return create_gi(device, profile_id, -1, gpu_instance);
}

API nvmlReturn_t nvmlDeviceGetGpuInstanceRemainingCapacity(nvmlDevice_t device,
                                                           unsigned int profile_id,
                                                           unsigned int *count) {
    BEGIN("nvmlDeviceGetGpuInstanceRemainingCapacity");
    PHYSICAL_MIG_GPU(device, g);
    const jm_profile *p = profile_by_id(g->spec, profile_id);
    if (!count) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (!p) return end(NVML_ERROR_NOT_SUPPORTED, 0);
    /* How many more fit, placed greedily at the first free start. */
    unsigned added = 0, saved = g->ngi;
    for (unsigned i = 0; i < p->nstarts && g->ngi < MAX_GI; i++)
        if (fits(g, p, p->starts[i])) {
            g->gis[g->ngi++] = (gi_t){0, p->id, p->starts[i], 0};
            added++;
        }
    g->ngi = saved;
    *count = added;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetGpuInstances(nvmlDevice_t device, unsigned int profile_id,
                                           nvmlGpuInstance_t *gpu_instances, unsigned int *count) {
    BEGIN("nvmlDeviceGetGpuInstances");
    PHYSICAL_MIG_GPU(device, g);
    if (!count) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (!profile_by_id(g->spec, profile_id)) return end(NVML_ERROR_NOT_SUPPORTED, 0);
    unsigned found = 0;
    for (unsigned i = 0; i < g->ngi; i++)
        if (g->gis[i].profile == profile_id) found++;
    if (!gpu_instances || *count < found) {
        *count = found;
        return end(found && gpu_instances ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS, 0);
    }
    found = 0;
    for (unsigned i = 0; i < g->ngi; i++)
        if (g->gis[i].profile == profile_id)
            gpu_instances[found++] = handle_for(H_GI, g->index, g->gis[i].id, 0);
    *count = found;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetGpuInstanceById(nvmlDevice_t device, unsigned int id,
                                              nvmlGpuInstance_t *gpu_instance) {
    BEGIN("nvmlDeviceGetGpuInstanceById");
    PHYSICAL_MIG_GPU(device, g);
    if (!gpu_instance) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (!gi_of(g, id)) return end(NVML_ERROR_NOT_FOUND, 0);
    *gpu_instance = handle_for(H_GI, g->index, id, 0);
    return end(NVML_SUCCESS, 0);
}

/* Resolve a live GI handle inside a call. */
#define GPU_INSTANCE(h, g, gi)                                                                 \
    gpu_t *g = is_handle(h, H_GI) ? gpu_of(h) : NULL;                                          \
    gi_t *gi = g ? gi_of(g, h->gi) : NULL;                                                     \
    if (!gi) return end(NVML_ERROR_INVALID_ARGUMENT, 0)

API nvmlReturn_t nvmlGpuInstanceGetInfo(nvmlGpuInstance_t gpu_instance,
                                        nvmlGpuInstanceInfo_t *info) {
    BEGIN("nvmlGpuInstanceGetInfo");
    GPU_INSTANCE(gpu_instance, g, gi);
    if (!info) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    const jm_profile *p = profile_by_id(g->spec, gi->profile);
    info->device = handle_for(H_GPU, g->index, 0, 0);
    info->id = gi->id, info->profileId = gi->profile;
    info->placement = (nvmlGpuInstancePlacement_t){gi->start, p ? p->size : 0};
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlGpuInstanceDestroy(nvmlGpuInstance_t gpu_instance) {
    BEGIN("nvmlGpuInstanceDestroy");
    GPU_INSTANCE(gpu_instance, g, gi);
    for (unsigned i = 0; i < g->nci; i++)
        if (g->cis[i].gi == gi->id) return end(NVML_ERROR_IN_USE, 0);
    if (gi->held) return end(NVML_ERROR_IN_USE, 0);
    *gi = g->gis[--g->ngi];
    return end(NVML_SUCCESS, 1);
}

/* ---- compute instances --------------------------------------------------------------------- */

/* CI profile index -> info for this GI: NOT_SUPPORTED when larger than the GI. */
static nvmlReturn_t ci_profile(gpu_t *g, gi_t *gi, unsigned index, unsigned engine,
                               unsigned *slices, unsigned *count) {
    const jm_profile *p = profile_by_id(g->spec, gi->profile);
    if (index >= CI_PROFILE_COUNT || engine != 0 || !p) return NVML_ERROR_INVALID_ARGUMENT;
    if (index >= 7 || CI_SLICES[index] > p->compute) return NVML_ERROR_NOT_SUPPORTED;
    *slices = CI_SLICES[index], *count = p->compute / CI_SLICES[index];
    return NVML_SUCCESS;
}

#define FILL_CI_PROFILE(info, index, slices, count, g)                                         \
    do {                                                                                       \
        (info)->id = (index), (info)->sliceCount = (slices), (info)->instanceCount = (count);  \
        (info)->multiprocessorCount = (slices) * (g)->spec->sm_per_slice;                      \
        (info)->sharedCopyEngineCount = (slices), (info)->sharedDecoderCount = 1;             \
        (info)->sharedJpegCount = 1, (info)->sharedOfaCount = 1;                               \
    } while (0)

API nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfo(
    nvmlGpuInstance_t gpu_instance, unsigned int profile, unsigned int engine,
    nvmlComputeInstanceProfileInfo_t *info) {
    BEGIN("nvmlGpuInstanceGetComputeInstanceProfileInfo");
    GPU_INSTANCE(gpu_instance, g, gi);
    unsigned slices, count;
    if (!info) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    nvmlReturn_t rc = ci_profile(g, gi, profile, engine, &slices, &count);
    if (rc != NVML_SUCCESS) return end(rc, 0);
    memset(info, 0, sizeof *info);
    FILL_CI_PROFILE(info, profile, slices, count, g);
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfoV(nvmlGpuInstance_t gpu_instance,
                                                               unsigned int profile,
                                                               unsigned int engine, void *info) {
    BEGIN("nvmlGpuInstanceGetComputeInstanceProfileInfoV");
    GPU_INSTANCE(gpu_instance, g, gi);
    if (!info) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    unsigned version = *(unsigned *)info, slices, count;
    if (version != CI_PROFILE_INFO_V2 && version != CI_PROFILE_INFO_V3)
        return end(NVML_ERROR_ARGUMENT_VERSION_MISMATCH, 0);
    nvmlReturn_t rc = ci_profile(g, gi, profile, engine, &slices, &count);
    if (rc != NVML_SUCCESS) return end(rc, 0);
    const jm_profile *p = profile_by_id(g->spec, gi->profile);
    char name[NAME_LEN];
    if (slices == p->compute)
        snprintf(name, sizeof name, "MIG %s", p->name);
    else
        snprintf(name, sizeof name, "MIG %uc.%s", slices, p->name);
    if (version == CI_PROFILE_INFO_V2) {
        nvmlComputeInstanceProfileInfo_v2_t *v2 = info;
        memset(v2, 0, sizeof *v2);
        v2->version = version;
        FILL_CI_PROFILE(v2, profile, slices, count, g);
        set_text(v2->name, sizeof v2->name, name);
    } else {
        nvmlComputeInstanceProfileInfo_v3_t *v3 = info;
        memset(v3, 0, sizeof *v3);
        v3->version = version;
        FILL_CI_PROFILE(v3, profile, slices, count, g);
        set_text(v3->name, sizeof v3->name, name);
    }
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlGpuInstanceCreateComputeInstance(nvmlGpuInstance_t gpu_instance,
                                                      unsigned int profile,
                                                      nvmlComputeInstance_t *out) {
    BEGIN("nvmlGpuInstanceCreateComputeInstance");
    GPU_INSTANCE(gpu_instance, g, gi);
    unsigned slices, count, used = 0, id = 0;
    if (!out) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    nvmlReturn_t rc = ci_profile(g, gi, profile, 0, &slices, &count);
    if (rc != NVML_SUCCESS) return end(rc, 0);
    for (unsigned i = 0; i < g->nci; i++)
        if (g->cis[i].gi == gi->id) used += ci_slices(g->cis[i].profile);
    const jm_profile *p = profile_by_id(g->spec, gi->profile);
    if (used + slices > p->compute || g->nci == MAX_GI * 8)
        return end(NVML_ERROR_INSUFFICIENT_RESOURCES, 0);
    while (ci_of(g, gi->id, id)) id++;
    ci_t *ci = &g->cis[g->nci++];
    ci->gi = gi->id, ci->id = id, ci->profile = profile;
    new_uuid(ci->uuid, "MIG");
    *out = handle_for(H_CI, g->index, gi->id, id);
    return end(NVML_SUCCESS, 1);
}

#define COMPUTE_INSTANCE(h, g, ci)                                                             \
    gpu_t *g = is_handle(h, H_CI) ? gpu_of(h) : NULL;                                          \
    ci_t *ci = g ? ci_of(g, h->gi, h->ci) : NULL;                                              \
    if (!ci) return end(NVML_ERROR_INVALID_ARGUMENT, 0)

API nvmlReturn_t nvmlComputeInstanceDestroy(nvmlComputeInstance_t compute_instance) {
    BEGIN("nvmlComputeInstanceDestroy");
    COMPUTE_INSTANCE(compute_instance, g, ci);
    if (busy(ci->uuid)) return end(NVML_ERROR_IN_USE, 0);
    st.gen++;
    if (st.stale && g->nghost < 64) {
        ghost_t *gh = &g->ghosts[g->nghost++];
        gh->gi = ci->gi, gh->ci = ci->id, gh->gen = st.gen;
        set_text(gh->uuid, sizeof gh->uuid, ci->uuid);
    }
    *ci = g->cis[--g->nci];
    return end(NVML_SUCCESS, 1);
}

API nvmlReturn_t nvmlGpuInstanceGetComputeInstances(nvmlGpuInstance_t gpu_instance,
                                                    unsigned int profile,
                                                    nvmlComputeInstance_t *instances,
                                                    unsigned int *count) {
    BEGIN("nvmlGpuInstanceGetComputeInstances");
    GPU_INSTANCE(gpu_instance, g, gi);
    unsigned slices, max;
    if (!count) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    nvmlReturn_t rc = ci_profile(g, gi, profile, 0, &slices, &max);
    if (rc != NVML_SUCCESS) return end(rc, 0);
    unsigned found = 0;
    for (unsigned i = 0; i < g->nci; i++)
        if (g->cis[i].gi == gi->id && g->cis[i].profile == profile) found++;
    if (!instances || *count < found) {
        *count = found;
        return end(found && instances ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS, 0);
    }
    found = 0;
    for (unsigned i = 0; i < g->nci; i++)
        if (g->cis[i].gi == gi->id && g->cis[i].profile == profile)
            instances[found++] = handle_for(H_CI, g->index, gi->id, g->cis[i].id);
    *count = found;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlGpuInstanceGetComputeInstanceById(nvmlGpuInstance_t gpu_instance,
                                                       unsigned int id,
                                                       nvmlComputeInstance_t *out) {
    BEGIN("nvmlGpuInstanceGetComputeInstanceById");
    GPU_INSTANCE(gpu_instance, g, gi);
    if (!out) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (!ci_of(g, gi->id, id)) return end(NVML_ERROR_NOT_FOUND, 0);
    *out = handle_for(H_CI, g->index, gi->id, id);
    return end(NVML_SUCCESS, 0);
}

/* CI placement inside its GI: CIs are laid out in id order, each after the previous ones. */
static unsigned ci_start(gpu_t *g, ci_t *ci) {
    unsigned start = 0;
    for (unsigned i = 0; i < g->nci; i++)
        if (g->cis[i].gi == ci->gi && g->cis[i].id < ci->id) start += ci_slices(g->cis[i].profile);
    return start;
}

API nvmlReturn_t nvmlComputeInstanceGetInfo_v2(nvmlComputeInstance_t compute_instance,
                                               nvmlComputeInstanceInfo_t *info) {
    BEGIN("nvmlComputeInstanceGetInfo_v2");
    COMPUTE_INSTANCE(compute_instance, g, ci);
    if (!info) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    info->device = handle_for(H_MIG, g->index, ci->gi, ci->id);
    info->gpuInstance = handle_for(H_GI, g->index, ci->gi, 0);
    info->id = ci->id, info->profileId = ci->profile;
    info->placement = (nvmlComputeInstancePlacement_t){ci_start(g, ci), ci_slices(ci->profile)};
    return end(NVML_SUCCESS, 0);
}
API nvmlReturn_t nvmlComputeInstanceGetInfo(nvmlComputeInstance_t compute_instance,
                                            nvmlComputeInstanceInfo_t *info) {
    return nvmlComputeInstanceGetInfo_v2(compute_instance, info);
}

/* ---- MIG devices --------------------------------------------------------------------------- */

API nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *is_mig) {
    BEGIN("nvmlDeviceIsMigDeviceHandle");
    DEVICE(device, g);
    if (!is_mig) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *is_mig = device->kind != H_GPU;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    BEGIN("nvmlDeviceGetMaxMigDeviceCount");
    DEVICE(device, g);
    if (!count || device->kind != H_GPU) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *count = mig_on(g) ? g->spec->budget : 0;
    return end(NVML_SUCCESS, 0);
}

/* MIG devices in slot order: ghosts an old session still sees, then live ones by (GI, CI). */
API nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                     nvmlDevice_t *mig) {
    BEGIN("nvmlDeviceGetMigDeviceHandleByIndex");
    DEVICE(device, g);
    if (!mig || device->kind != H_GPU) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (!mig_on(g)) return end(NVML_ERROR_NOT_SUPPORTED, 0);
    if (index >= g->spec->budget) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    unsigned slot = 0;
    for (unsigned i = 0; i < g->nghost; i++)
        if (g->ghosts[i].gen > session_gen && slot++ == index) {
            *mig = handle_for(H_GHOST, g->index, g->ghosts[i].gi, g->ghosts[i].gen);
            return end(NVML_SUCCESS, 0);
        }
    ci_t *order[MAX_GI * 8];
    unsigned n = 0;
    for (unsigned i = 0; i < g->nci; i++) {
        unsigned j = n++;
        while (j > 0 && (order[j - 1]->gi > g->cis[i].gi ||
                         (order[j - 1]->gi == g->cis[i].gi && order[j - 1]->id > g->cis[i].id))) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = &g->cis[i];
    }
    if (index - slot < n && index >= slot) {
        *mig = handle_for(H_MIG, g->index, order[index - slot]->gi, order[index - slot]->id);
        return end(NVML_SUCCESS, 0);
    }
    return end(NVML_ERROR_NOT_FOUND, 0);
}

API nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t mig,
                                                              nvmlDevice_t *device) {
    BEGIN("nvmlDeviceGetDeviceHandleFromMigDeviceHandle");
    DEVICE(mig, g);
    if (!device || mig->kind == H_GPU) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *device = handle_for(H_GPU, g->index, 0, 0);
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t device, unsigned int *id) {
    BEGIN("nvmlDeviceGetGpuInstanceId");
    DEVICE(device, g);
    if (!id || device->kind == H_GPU) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (!mig_uuid(g, device)) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *id = device->gi;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t device, unsigned int *id) {
    BEGIN("nvmlDeviceGetComputeInstanceId");
    DEVICE(device, g);
    if (!id || device->kind == H_GPU) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    if (!mig_uuid(g, device)) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *id = device->kind == H_GHOST ? 0 : device->ci;
    return end(NVML_SUCCESS, 0);
}

/* ---- events: a healthy GPU (what the device plugin's health check waits on) --------------- */

#define HEALTH_EVENTS 0x000000000000000eULL /* single/double-bit ECC, XID critical error */
static struct jm_handle event_set = {HANDLE_MAGIC, 0, 0, 0, 0};
typedef struct jm_handle *nvmlEventSet_t;

API nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set) {
    BEGIN("nvmlEventSetCreate");
    if (!set) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *set = &event_set;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set) {
    return set == &event_set ? NVML_SUCCESS : NVML_ERROR_INVALID_ARGUMENT;
}

API nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                  unsigned long long *types) {
    BEGIN("nvmlDeviceGetSupportedEventTypes");
    DEVICE(device, g);
    if (!types) return end(NVML_ERROR_INVALID_ARGUMENT, 0);
    *types = HEALTH_EVENTS;
    return end(NVML_SUCCESS, 0);
}

API nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types,
                                          nvmlEventSet_t set) {
    BEGIN("nvmlDeviceRegisterEvents");
    DEVICE(device, g);
    if (set != &event_set || (types & ~HEALTH_EVENTS)) return end(NVML_ERROR_NOT_SUPPORTED, 0);
    return end(NVML_SUCCESS, 0);
}

/* No event ever comes: wait out the timeout as a healthy GPU's event set does. */
API nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, void *data, unsigned int timeout_ms) {
    if (set != &event_set || !data) return NVML_ERROR_INVALID_ARGUMENT;
    BEGIN("nvmlEventSetWait_v2");
    end(NVML_SUCCESS, 0);
    sleep_for(timeout_ms / 1000.0);
    return 10; /* NVML_ERROR_TIMEOUT */
}
API nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, void *data, unsigned int timeout_ms) {
    return nvmlEventSetWait_v2(set, data, timeout_ms);
}
