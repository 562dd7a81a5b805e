/*
 * alp_sim.c - a simulated Vialux ALP-4.3 DMD controller (the "libalp43.so" that ALP4lib loads).
 *
 * Why this exists: the acquisition engine drives the DMD through the *unmodified* ALP4lib
 * Python package. To test that exact code path headless, this file implements the ALP-4.x C
 * API (same function names, argument types, constants and return codes as alp.h) on top of an
 * in-memory model of a V-7001-like device. ALP4lib then cannot tell it from the vendor library.
 *
 * Types follow alp.h as ALP4lib calls it: ALP_ID is `unsigned long`, values are `long`,
 * tAlpLinePut holds int32_t (see the comment in ALP4.py), tAlpProjProgress holds unsigned long.
 *
 * Time: headless bench runs go much faster than real time, so every device has its own notion of
 * "now": either a virtual time pushed by the Python side (SimAlpSetTime, called from a SimClock
 * listener) or CLOCK_MONOTONIC minus an offset (wall mode, for live use). Which picture is shown
 * is a pure function of that time, the projection start, the picture time, sequence order and
 * repeat count (master mode) or of the recorded trigger times (slave mode).
 *
 * Extra symbols for the bench are all prefixed SimAlp (see the bottom of this file and docs/dmd.md).
 * One global mutex guards all state; it is released while AlpProjWait sleeps in wall mode.
 */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define API __attribute__((visibility("default")))

typedef unsigned long ALP_ID;

/* ---- constants (values from alp.h / ALP4.py) ---- */
#define ALP_DEFAULT 0L
#define ALP_ENABLE 1L
#define ALP_INVALID_ID ((ALP_ID)ULONG_MAX)

#define ALP_OK 0L
#define ALP_NOT_ONLINE 1001L
#define ALP_NOT_IDLE 1002L
#define ALP_NOT_AVAILABLE 1003L
#define ALP_NOT_READY 1004L
#define ALP_PARM_INVALID 1005L
#define ALP_ADDR_INVALID 1006L
#define ALP_MEMORY_FULL 1007L
#define ALP_SEQ_IN_USE 1008L

#define ALP_DEVICE_NUMBER 2000L
#define ALP_VERSION 2001L
#define ALP_DEV_STATE 2002L
#define ALP_AVAIL_MEMORY 2003L
#define ALP_SYNCH_POLARITY 2004L
#define ALP_TRIGGER_EDGE 2005L
#define ALP_LEVEL_HIGH 2006L
#define ALP_LEVEL_LOW 2007L
#define ALP_EDGE_FALLING 2008L
#define ALP_EDGE_RISING 2009L
#define ALP_TRIGGER_TIME_OUT 2014L
#define ALP_USB_CONNECTION 2016L
#define ALP_DEV_DMDTYPE 2021L
#define ALP_DEV_DYN_SYNCH_OUT1_GATE 2023L
#define ALP_DEV_DYN_SYNCH_OUT3_GATE 2025L
#define ALP_DDC_FPGA_TEMPERATURE 2050L
#define ALP_APPS_FPGA_TEMPERATURE 2051L
#define ALP_PCB_TEMPERATURE 2052L
#define ALP_DEV_DISPLAY_HEIGHT 2057L
#define ALP_DEV_DISPLAY_WIDTH 2058L
#define ALP_PWM_LEVEL 2063L
#define ALP_DEV_DMD_MODE 2064L

#define ALP_DEV_BUSY 1100L
#define ALP_DEV_READY 1101L

#define ALP_DMDTYPE_XGA_07A 4L
#define ALP_DMDTYPE_SXGA_PLUS 2L
#define ALP_DMDTYPE_1080P_095A 3L
#define ALP_DMDTYPE_WUXGA_096A 7L
#define ALP_DMDTYPE_WQXGA_400MHZ_090A 8L
#define ALP_DMDTYPE_WXGA_S450 12L
#define ALP_DMDTYPE_DISCONNECT 255L

#define ALP_SEQ_REPEAT 2100L
#define ALP_FIRSTFRAME 2101L
#define ALP_LASTFRAME 2102L
#define ALP_BITNUM 2103L
#define ALP_BIN_MODE 2104L
#define ALP_BIN_NORMAL 2105L
#define ALP_BIN_UNINTERRUPTED 2106L
#define ALP_PWM_MODE 2107L
#define ALP_FLEX_PWM 3L
#define ALP_DATA_FORMAT 2110L
#define ALP_DATA_MSB_ALIGN 0L
#define ALP_DATA_LSB_ALIGN 1L
#define ALP_DATA_BINARY_TOPDOWN 2L
#define ALP_DATA_BINARY_BOTTOMUP 3L
#define ALP_SEQ_PUT_LOCK 2119L

#define ALP_BITPLANES 2200L
#define ALP_PICNUM 2201L
#define ALP_PICTURE_TIME 2203L
#define ALP_ILLUMINATE_TIME 2204L
#define ALP_SYNCH_DELAY 2205L
#define ALP_SYNCH_PULSEWIDTH 2206L
#define ALP_TRIGGER_IN_DELAY 2207L
#define ALP_MAX_SYNCH_DELAY 2209L
#define ALP_MAX_TRIGGER_IN_DELAY 2210L
#define ALP_MIN_PICTURE_TIME 2211L
#define ALP_MIN_ILLUMINATE_TIME 2212L
#define ALP_MAX_PICTURE_TIME 2213L
#define ALP_ON_TIME 2214L
#define ALP_OFF_TIME 2215L

#define ALP_PROJ_MODE 2300L
#define ALP_MASTER 2301L
#define ALP_SLAVE 2302L
#define ALP_PROJ_INVERSION 2306L
#define ALP_PROJ_UPSIDE_DOWN 2307L
#define ALP_PROJ_QUEUE_MODE 2314L
#define ALP_PROJ_LEGACY 0L
#define ALP_PROJ_QUEUE_ID 2315L
#define ALP_PROJ_QUEUE_MAX_AVAIL 2316L
#define ALP_PROJ_QUEUE_AVAIL 2317L
#define ALP_PROJ_PROGRESS 2318L
#define ALP_PROJ_RESET_QUEUE 2319L
#define ALP_PROJ_ABORT_SEQUENCE 2320L
#define ALP_PROJ_ABORT_FRAME 2321L
#define ALP_PROJ_WAIT_UNTIL 2323L
#define ALP_PROJ_WAIT_PIC_TIME 0L
#define ALP_PROJ_WAIT_ILLU_TIME 1L
#define ALP_FLUT_MAX_ENTRIES9 2324L
#define ALP_PROJ_STEP 2329L
#define ALP_PROJ_STATE 2400L
#define ALP_PROJ_ACTIVE 1200L
#define ALP_PROJ_IDLE 1201L

#define ALP_FLAG_QUEUE_IDLE 1UL
#define ALP_FLAG_SEQUENCE_INDEFINITE 4UL

#define ALP_PUT_LINES 1L

/* ---- extras (SimAlp*) ---- */
#define SIMALP_NOT_DISPLAYED 1L    /* nothing is projected at the asked time */
#define SIMALP_TIME_UNKNOWN 2L     /* asked time is before the current projection (history not kept) */
#define SIMALP_TRIGGER_IGNORED 3L  /* no slave-mode projection is waiting for a trigger */
#define SIMALP_CLOCK_VIRTUAL 0L
#define SIMALP_CLOCK_WALL 1L

/* ---- model limits ---- */
#define MAX_UNITS 16
#define MAX_SEQS 64
#define DEFAULT_SERIAL 70010L
#define DEFAULT_PICTURE_US 33334L      /* 30 Hz, the ALP4lib default */
#define MAX_PICTURE_US 10000000L       /* 10 s */
#define MAX_DELAY_US 130000L           /* synch delay / trigger-in delay */
#define MIN_PICTURE_US_1BIT 44L        /* V-7001: 22.7 kHz binary */
#define MIN_PICTURE_US_8BIT 3448L      /* V-7001: 290 Hz 8-bit gray */
#define SEQ_MEMORY_BYTES (4LL << 30)   /* on-board sequence RAM */
#define SIM_VERSION 403L

typedef struct {
    unsigned char Period;
    unsigned char Polarity;
    unsigned char Gate[16];
} tAlpDynSynchOutGate;

typedef struct {
    int32_t TransferMode;
    int32_t PicOffset;
    int32_t PicLoad;
    int32_t LineOffset;
    int32_t LineLoad;
} tAlpLinePut;

typedef struct {
    ALP_ID CurrentQueueId;
    ALP_ID SequenceId;
    unsigned long nWaitingSequences;
    unsigned long nSequenceCounter;
    unsigned long nSequenceCounterUnderflow;
    unsigned long nFrameCounter;
    unsigned long nPictureTime;
    unsigned long nFramesPerSubSequence;
    unsigned long nFlags;
} tAlpProjProgress;

typedef struct {
    int used;
    unsigned long generation; /* distinguishes a re-allocated slot from the sequence a projection showed */
    long bitplanes, picnum;
    long bitnum, bin_mode, repeat, first, last, data_format, put_lock, pwm_mode;
    long illuminate_us, picture_us, synch_delay_us, synch_pulse_us, trigger_in_delay_us;
    unsigned char **pics; /* picnum pictures, lazily allocated; value = MSB-aligned level */
} Seq;

typedef struct {
    int valid;       /* a projection record exists (running, finished or halted) */
    int continuous;  /* AlpProjStartCont */
    int slave;       /* ALP_SLAVE at start */
    long seq;
    unsigned long generation;
    long first, nframes, repeat, bitnum, picture_us, illuminate_us;
    long long start_us, halt_us; /* halt_us = LLONG_MAX while not halted */
    long long *trig;             /* slave mode: trigger times, ascending */
    size_t ntrig, cap;
    unsigned long queue_id;
    int inversion, upside_down;
    unsigned long long stamp; /* changes whenever what this projection shows may change (start, put) */
} Proj;

typedef struct {
    int plugged;
    long serial, width, height;
    long long capacity; /* binary pictures */
    int allocated;
    long clock_mode;
    long long virt_now_us, wall_offset_us;
    long proj_mode, inversion, upside_down, wait_until;
    long synch_polarity, trigger_edge, trigger_timeout, dmd_mode, pwm_level;
    long inject_after, inject_code; /* fault injection: fail the call after `inject_after` more calls */
    unsigned long next_queue_id;
    Seq seqs[MAX_SEQS];
    Proj proj;
} Unit;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static Unit g_units[MAX_UNITS];
static int g_initialised = 0;
static unsigned long g_generation = 0;
static unsigned long long g_stamp = 0; /* content stamps: never reused within a process */

/* ------------------------------------------------------------------------------------------ */
/* helpers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static long long monotonic_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static long long now_us(const Unit *u) {
    return u->clock_mode == SIMALP_CLOCK_WALL ? monotonic_us() - u->wall_offset_us : u->virt_now_us;
}

static long long capacity_for(long width, long height) {
    return SEQ_MEMORY_BYTES * 8LL / ((long long)width * height);
}

static void plug(Unit *u, long serial, long width, long height) {
    memset(u, 0, sizeof *u);
    u->plugged = 1;
    u->serial = serial;
    u->width = width;
    u->height = height;
    u->capacity = capacity_for(width, height);
}

/* Called with the lock held: the library starts with one V-7001-like unit plugged in, so the
 * unmodified ALP4lib works without touching any SimAlp extra. */
static void ensure_init(void) {
    if (g_initialised) return;
    g_initialised = 1;
    plug(&g_units[0], DEFAULT_SERIAL, 1024, 768);
}

static long dmd_type(const Unit *u) {
    if (u->width == 1024 && u->height == 768) return ALP_DMDTYPE_XGA_07A;
    if (u->width == 1400 && u->height == 1050) return ALP_DMDTYPE_SXGA_PLUS;
    if (u->width == 1920 && u->height == 1080) return ALP_DMDTYPE_1080P_095A;
    if (u->width == 1920 && u->height == 1200) return ALP_DMDTYPE_WUXGA_096A;
    if (u->width == 2560 && u->height == 1600) return ALP_DMDTYPE_WQXGA_400MHZ_090A;
    if (u->width == 1280 && u->height == 800) return ALP_DMDTYPE_WXGA_S450;
    return ALP_DMDTYPE_DISCONNECT;
}

/* Binary-weighted PWM: the shortest picture grows with the number of displayed bit planes. */
static long min_picture_us(long bitnum) {
    long pwm = (long)((MIN_PICTURE_US_8BIT * ((1L << bitnum) - 1) + 254) / 255);
    return pwm > MIN_PICTURE_US_1BIT ? pwm : MIN_PICTURE_US_1BIT;
}

static Seq *seq_get(Unit *u, ALP_ID id) {
    if (id >= MAX_SEQS || !u->seqs[id].used) return NULL;
    return &u->seqs[id];
}

static long long used_memory(const Unit *u) {
    long long total = 0;
    for (int i = 0; i < MAX_SEQS; i++)
        if (u->seqs[i].used) total += (long long)u->seqs[i].picnum * u->seqs[i].bitplanes;
    return total;
}

static void seq_release(Seq *s) {
    if (s->pics) {
        for (long i = 0; i < s->picnum; i++) free(s->pics[i]);
        free(s->pics);
    }
    memset(s, 0, sizeof *s);
}

static void proj_clear(Proj *p) {
    free(p->trig);
    memset(p, 0, sizeof *p);
}

static long long proj_total(const Proj *p) { return (long long)p->repeat * p->nframes; }

/* Is the projection still running at time t (started, not halted, not finished)? */
static int proj_running(const Unit *u, long long t) {
    const Proj *p = &u->proj;
    if (!p->valid || t >= p->halt_us) return 0;
    if (p->continuous) return 1;
    if (!p->slave) return t < p->start_us + proj_total(p) * p->picture_us;
    if ((long long)p->ntrig < proj_total(p)) return 1;
    return t < p->trig[p->ntrig - 1] + p->picture_us;
}

/* Running index (0-based over the whole run) of the picture shown at time t;
 * -1: nothing shown; -2: t is before the current projection (unknown). */
static long long proj_index_at(const Unit *u, long long t) {
    const Proj *p = &u->proj;
    if (!p->valid) return -1;
    if (t < p->start_us) return -2;
    if (t >= p->halt_us) return -1;
    if (!p->slave) {
        long long k = (t - p->start_us) / p->picture_us;
        if (!p->continuous && k >= proj_total(p)) return -1;
        return k;
    }
    size_t lo = 0, hi = p->ntrig;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->trig[mid] <= t) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return -1; /* slave mode shows nothing before the first trigger */
    long long k = (long long)lo - 1;
    if (!p->continuous && k == proj_total(p) - 1 && t >= p->trig[k] + p->picture_us) return -1;
    return k;
}

static int seq_in_use(const Unit *u, long seq) {
    return proj_running(u, now_us(u)) && u->proj.seq == seq;
}

/* Lock, resolve the device and apply fault injection. Always leaves the lock held. */
static long enter(ALP_ID device, Unit **out, int count_call) {
    pthread_mutex_lock(&g_lock);
    ensure_init();
    *out = NULL;
    if (device >= MAX_UNITS || !g_units[device].plugged || !g_units[device].allocated) return ALP_NOT_AVAILABLE;
    Unit *u = &g_units[device];
    if (count_call && u->inject_code) {
        if (u->inject_after == 0) {
            long code = u->inject_code;
            u->inject_code = 0;
            return code;
        }
        u->inject_after--;
    }
    *out = u;
    return ALP_OK;
}

static long leave(long rc) {
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* device                                                                                     */
/* ------------------------------------------------------------------------------------------ */

API long AlpDevAlloc(long DeviceNum, long InitFlag, ALP_ID *DeviceIdPtr) {
    pthread_mutex_lock(&g_lock);
    ensure_init();
    if (DeviceIdPtr == NULL) return leave(ALP_ADDR_INVALID);
    if (InitFlag != ALP_DEFAULT) return leave(ALP_PARM_INVALID);
    int found = -1, any_plugged = 0;
    for (int i = 0; i < MAX_UNITS; i++) {
        Unit *u = &g_units[i];
        if (!u->plugged) continue;
        if (DeviceNum == ALP_DEFAULT) {
            any_plugged = 1;
            if (!u->allocated) { found = i; break; }
        } else if (u->serial == DeviceNum) {
            if (u->allocated) return leave(ALP_NOT_READY);
            found = i;
            break;
        }
    }
    if (found < 0) return leave(any_plugged ? ALP_NOT_READY : ALP_NOT_ONLINE);
    Unit *u = &g_units[found];
    if (u->inject_code) {
        if (u->inject_after == 0) {
            long code = u->inject_code;
            u->inject_code = 0;
            return leave(code);
        }
        u->inject_after--;
    }
    u->allocated = 1;
    u->clock_mode = SIMALP_CLOCK_VIRTUAL;
    u->virt_now_us = 0;
    u->proj_mode = ALP_MASTER;
    u->inversion = u->upside_down = 0;
    u->wait_until = ALP_PROJ_WAIT_PIC_TIME;
    u->synch_polarity = ALP_LEVEL_HIGH;
    u->trigger_edge = ALP_EDGE_RISING;
    u->trigger_timeout = 0;
    u->dmd_mode = 0;
    u->pwm_level = 0;
    u->next_queue_id = 0;
    proj_clear(&u->proj);
    *DeviceIdPtr = (ALP_ID)found;
    return leave(ALP_OK);
}

API long AlpDevFree(ALP_ID DeviceId) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    if (proj_running(u, now_us(u))) return leave(ALP_NOT_IDLE);
    for (int i = 0; i < MAX_SEQS; i++) seq_release(&u->seqs[i]);
    proj_clear(&u->proj);
    u->allocated = 0;
    return leave(ALP_OK);
}

API long AlpDevHalt(ALP_ID DeviceId) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    long long t = now_us(u);
    if (proj_running(u, t)) u->proj.halt_us = t;
    return leave(ALP_OK);
}

API long AlpDevInquire(ALP_ID DeviceId, long InquireType, long *UserVarPtr) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    long v;
    switch (InquireType) {
    case ALP_DEVICE_NUMBER: v = u->serial; break;
    case ALP_VERSION: v = SIM_VERSION; break;
    case ALP_DEV_STATE: v = proj_running(u, now_us(u)) ? ALP_DEV_BUSY : ALP_DEV_READY; break;
    case ALP_AVAIL_MEMORY: v = (long)(u->capacity - used_memory(u)); break;
    case ALP_DEV_DMDTYPE: v = dmd_type(u); break;
    case ALP_DEV_DISPLAY_HEIGHT: v = u->height; break;
    case ALP_DEV_DISPLAY_WIDTH: v = u->width; break;
    case ALP_DDC_FPGA_TEMPERATURE:
    case ALP_APPS_FPGA_TEMPERATURE:
    case ALP_PCB_TEMPERATURE: v = 35 * 256; break; /* 1 LSB = 1/256 degC */
    case ALP_SYNCH_POLARITY: v = u->synch_polarity; break;
    case ALP_TRIGGER_EDGE: v = u->trigger_edge; break;
    case ALP_TRIGGER_TIME_OUT: v = u->trigger_timeout; break;
    case ALP_DEV_DMD_MODE: v = u->dmd_mode; break;
    case ALP_PWM_LEVEL: v = u->pwm_level; break;
    default: return leave(ALP_PARM_INVALID);
    }
    if (UserVarPtr == NULL) return leave(ALP_ADDR_INVALID);
    *UserVarPtr = v;
    return leave(ALP_OK);
}

API long AlpDevControl(ALP_ID DeviceId, long ControlType, long ControlValue) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    switch (ControlType) {
    case ALP_SYNCH_POLARITY:
        if (ControlValue != ALP_LEVEL_HIGH && ControlValue != ALP_LEVEL_LOW) return leave(ALP_PARM_INVALID);
        u->synch_polarity = ControlValue;
        break;
    case ALP_TRIGGER_EDGE:
        if (ControlValue != ALP_EDGE_FALLING && ControlValue != ALP_EDGE_RISING) return leave(ALP_PARM_INVALID);
        u->trigger_edge = ControlValue;
        break;
    case ALP_TRIGGER_TIME_OUT:
        if (ControlValue != 0 && ControlValue != 1) return leave(ALP_PARM_INVALID);
        u->trigger_timeout = ControlValue;
        break;
    case ALP_USB_CONNECTION:
        if (ControlValue != ALP_DEFAULT) return leave(ALP_PARM_INVALID);
        break;
    case ALP_DEV_DMD_MODE:
        if (ControlValue != 0 && ControlValue != 1) return leave(ALP_PARM_INVALID);
        u->dmd_mode = ControlValue;
        break;
    case ALP_PWM_LEVEL:
        if (ControlValue < 0 || ControlValue > 100) return leave(ALP_PARM_INVALID);
        u->pwm_level = ControlValue;
        break;
    default: return leave(ALP_PARM_INVALID); /* incl. ALP_DEV_DMDTYPE: ALP-3 only */
    }
    return leave(ALP_OK);
}

API long AlpDevControlEx(ALP_ID DeviceId, long ControlType, void *UserStructPtr) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    if (ControlType < ALP_DEV_DYN_SYNCH_OUT1_GATE || ControlType > ALP_DEV_DYN_SYNCH_OUT3_GATE)
        return leave(ALP_PARM_INVALID);
    if (UserStructPtr == NULL) return leave(ALP_ADDR_INVALID);
    const tAlpDynSynchOutGate *g = (const tAlpDynSynchOutGate *)UserStructPtr;
    if (g->Period > 16 || g->Polarity > 1) return leave(ALP_PARM_INVALID);
    for (int i = 0; i < g->Period; i++)
        if (g->Gate[i] > 1) return leave(ALP_PARM_INVALID);
    return leave(ALP_OK); /* synch outputs are accepted but not modelled */
}

/* ------------------------------------------------------------------------------------------ */
/* sequences                                                                                  */
/* ------------------------------------------------------------------------------------------ */

API long AlpSeqAlloc(ALP_ID DeviceId, long BitPlanes, long PicNum, ALP_ID *SequenceIdPtr) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    if (SequenceIdPtr == NULL) return leave(ALP_ADDR_INVALID);
    if (BitPlanes < 1 || BitPlanes > 8 || PicNum < 1) return leave(ALP_PARM_INVALID);
    if (used_memory(u) + (long long)PicNum * BitPlanes > u->capacity) return leave(ALP_MEMORY_FULL);
    int slot = -1;
    for (int i = 0; i < MAX_SEQS; i++)
        if (!u->seqs[i].used) { slot = i; break; }
    if (slot < 0) return leave(ALP_MEMORY_FULL);
    unsigned char **pics = calloc((size_t)PicNum, sizeof *pics);
    if (pics == NULL) return leave(ALP_MEMORY_FULL);
    Seq *s = &u->seqs[slot];
    memset(s, 0, sizeof *s);
    s->used = 1;
    s->generation = ++g_generation;
    s->bitplanes = BitPlanes;
    s->picnum = PicNum;
    s->bitnum = BitPlanes;
    s->bin_mode = ALP_BIN_NORMAL;
    s->repeat = 1;
    s->first = 0;
    s->last = PicNum - 1;
    s->data_format = ALP_DATA_MSB_ALIGN;
    s->put_lock = ALP_DEFAULT;
    s->pwm_mode = ALP_DEFAULT;
    s->picture_us = DEFAULT_PICTURE_US > min_picture_us(BitPlanes) ? DEFAULT_PICTURE_US : min_picture_us(BitPlanes);
    s->illuminate_us = s->picture_us;
    s->pics = pics;
    /* Sequence ids are slot indices, so the first one is 0 (a falsy id trips ALP4lib; see docs/dmd.md). */
    *SequenceIdPtr = (ALP_ID)slot;
    return leave(ALP_OK);
}

API long AlpSeqFree(ALP_ID DeviceId, ALP_ID SequenceId) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    Seq *s = seq_get(u, SequenceId);
    if (s == NULL) return leave(ALP_PARM_INVALID);
    if (seq_in_use(u, (long)SequenceId)) return leave(ALP_SEQ_IN_USE);
    seq_release(s);
    return leave(ALP_OK);
}

API long AlpSeqControl(ALP_ID DeviceId, ALP_ID SequenceId, long ControlType, long ControlValue) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    Seq *s = seq_get(u, SequenceId);
    if (s == NULL) return leave(ALP_PARM_INVALID);
    int binary = s->data_format == ALP_DATA_BINARY_TOPDOWN || s->data_format == ALP_DATA_BINARY_BOTTOMUP;
    switch (ControlType) {
    case ALP_SEQ_REPEAT:
        if (ControlValue < 1) return leave(ALP_PARM_INVALID);
        s->repeat = ControlValue;
        break;
    case ALP_FIRSTFRAME:
        if (ControlValue < 0 || ControlValue >= s->picnum) return leave(ALP_PARM_INVALID);
        s->first = ControlValue;
        break;
    case ALP_LASTFRAME:
        if (ControlValue < 0 || ControlValue >= s->picnum) return leave(ALP_PARM_INVALID);
        s->last = ControlValue;
        break;
    case ALP_BITNUM:
        if (ControlValue < 1 || ControlValue > s->bitplanes || (binary && ControlValue != 1))
            return leave(ALP_PARM_INVALID);
        s->bitnum = ControlValue;
        break;
    case ALP_BIN_MODE:
        if (ControlValue != ALP_BIN_NORMAL && ControlValue != ALP_BIN_UNINTERRUPTED) return leave(ALP_PARM_INVALID);
        s->bin_mode = ControlValue;
        break;
    case ALP_PWM_MODE:
        if (ControlValue != ALP_DEFAULT && ControlValue != ALP_FLEX_PWM) return leave(ALP_PARM_INVALID);
        s->pwm_mode = ControlValue;
        break;
    case ALP_DATA_FORMAT:
        if (ControlValue == ALP_DATA_BINARY_TOPDOWN || ControlValue == ALP_DATA_BINARY_BOTTOMUP) {
            if (s->bitplanes != 1) return leave(ALP_PARM_INVALID);
        } else if (ControlValue != ALP_DATA_MSB_ALIGN && ControlValue != ALP_DATA_LSB_ALIGN) {
            return leave(ALP_PARM_INVALID);
        }
        s->data_format = ControlValue;
        break;
    case ALP_SEQ_PUT_LOCK: s->put_lock = ControlValue; break;
    default:
        /* scrolling, FLUT, AOI, shear, masks: accepted only at their default (not modelled) */
        if (ControlType < ALP_SEQ_REPEAT || ControlType > 2199 || ControlValue != ALP_DEFAULT)
            return leave(ALP_PARM_INVALID);
    }
    return leave(ALP_OK);
}

API long AlpSeqTiming(ALP_ID DeviceId, ALP_ID SequenceId, long IlluminateTime, long PictureTime, long SynchDelay,
                      long SynchPulseWidth, long TriggerInDelay) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    Seq *s = seq_get(u, SequenceId);
    if (s == NULL) return leave(ALP_PARM_INVALID);
    if (IlluminateTime < 0 || PictureTime < 0 || SynchDelay < 0 || SynchPulseWidth < 0 || TriggerInDelay < 0)
        return leave(ALP_PARM_INVALID);
    long min_pt = min_picture_us(s->bitnum);
    long pt = PictureTime, ill = IlluminateTime;
    if (pt == ALP_DEFAULT && ill == ALP_DEFAULT) pt = DEFAULT_PICTURE_US > min_pt ? DEFAULT_PICTURE_US : min_pt;
    if (pt == ALP_DEFAULT) pt = ill;
    if (ill == ALP_DEFAULT) ill = pt; /* no dark phase is modelled: illuminate for the whole picture */
    if (pt < min_pt || pt > MAX_PICTURE_US || ill < min_pt || ill > pt) return leave(ALP_PARM_INVALID);
    if (SynchDelay > MAX_DELAY_US || TriggerInDelay > MAX_DELAY_US || SynchPulseWidth > pt)
        return leave(ALP_PARM_INVALID);
    s->picture_us = pt;
    s->illuminate_us = ill;
    s->synch_delay_us = SynchDelay;
    s->synch_pulse_us = SynchPulseWidth == ALP_DEFAULT ? SynchDelay + ill : SynchPulseWidth;
    s->trigger_in_delay_us = TriggerInDelay;
    return leave(ALP_OK);
}

API long AlpSeqInquire(ALP_ID DeviceId, ALP_ID SequenceId, long InquireType, long *UserVarPtr) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    Seq *s = seq_get(u, SequenceId);
    if (s == NULL) return leave(ALP_PARM_INVALID);
    long v;
    switch (InquireType) {
    case ALP_BITPLANES: v = s->bitplanes; break;
    case ALP_BITNUM: v = s->bitnum; break;
    case ALP_BIN_MODE: v = s->bin_mode; break;
    case ALP_PWM_MODE: v = s->pwm_mode; break;
    case ALP_PICNUM: v = s->picnum; break;
    case ALP_FIRSTFRAME: v = s->first; break;
    case ALP_LASTFRAME: v = s->last; break;
    case ALP_SEQ_REPEAT: v = s->repeat; break;
    case ALP_DATA_FORMAT: v = s->data_format; break;
    case ALP_SEQ_PUT_LOCK: v = s->put_lock; break;
    case ALP_PICTURE_TIME: v = s->picture_us; break;
    case ALP_ILLUMINATE_TIME: v = s->illuminate_us; break;
    case ALP_SYNCH_DELAY: v = s->synch_delay_us; break;
    case ALP_SYNCH_PULSEWIDTH: v = s->synch_pulse_us; break;
    case ALP_TRIGGER_IN_DELAY: v = s->trigger_in_delay_us; break;
    case ALP_MAX_SYNCH_DELAY:
    case ALP_MAX_TRIGGER_IN_DELAY: v = MAX_DELAY_US; break;
    case ALP_MIN_PICTURE_TIME:
    case ALP_MIN_ILLUMINATE_TIME: v = min_picture_us(s->bitnum); break;
    case ALP_MAX_PICTURE_TIME: v = MAX_PICTURE_US; break;
    case ALP_ON_TIME: v = s->illuminate_us; break;
    case ALP_OFF_TIME: v = s->picture_us - s->illuminate_us; break;
    default: return leave(ALP_PARM_INVALID);
    }
    if (UserVarPtr == NULL) return leave(ALP_ADDR_INVALID);
    *UserVarPtr = v;
    return leave(ALP_OK);
}

/* Store lines [line_off, line_off+line_load) of pictures [pic_off, pic_off+pic_load) from data,
 * normalising every pixel to an MSB-aligned level (so 1-bit "on" is 0x80, i.e. input >= 128). */
static long put_lines(Unit *u, Seq *s, long pic_off, long pic_load, long line_off, long line_load,
                      const unsigned char *data) {
    long w = u->width, h = u->height;
    int binary = s->data_format == ALP_DATA_BINARY_TOPDOWN || s->data_format == ALP_DATA_BINARY_BOTTOMUP;
    long row_bytes = binary ? (w + 7) / 8 : w;
    unsigned char mask = (unsigned char)(0xFF << (8 - s->bitplanes));
    for (long p = 0; p < pic_load; p++) {
        unsigned char **pic = &s->pics[pic_off + p];
        if (*pic == NULL) {
            *pic = calloc((size_t)(w * h), 1);
            if (*pic == NULL) return ALP_MEMORY_FULL;
        }
        for (long l = 0; l < line_load; l++) {
            long src_row = line_off + l;
            long dst_row = s->data_format == ALP_DATA_BINARY_BOTTOMUP ? h - 1 - src_row : src_row;
            const unsigned char *src = data + ((size_t)p * line_load + l) * row_bytes;
            unsigned char *dst = *pic + (size_t)dst_row * w;
            if (binary) {
                for (long x = 0; x < w; x++) dst[x] = (src[x >> 3] >> (7 - (x & 7))) & 1 ? 0x80 : 0;
            } else if (s->data_format == ALP_DATA_LSB_ALIGN) {
                for (long x = 0; x < w; x++) dst[x] = (unsigned char)(src[x] << (8 - s->bitplanes)) & mask;
            } else {
                for (long x = 0; x < w; x++) dst[x] = src[x] & mask;
            }
        }
    }
    return ALP_OK;
}

/* A put into the sequence the current projection shows changes what it displays: new stamp. */
static long put_done(Unit *u, ALP_ID SequenceId, const Seq *s, long rc) {
    Proj *p = &u->proj;
    if (p->valid && p->seq == (long)SequenceId && p->generation == s->generation) p->stamp = ++g_stamp;
    return rc;
}

static long check_put(Unit *u, ALP_ID SequenceId, long PicOffset, long *PicLoad, const void *data, Seq **out) {
    Seq *s = seq_get(u, SequenceId);
    if (s == NULL) return ALP_PARM_INVALID;
    if (data == NULL) return ALP_ADDR_INVALID;
    if (s->put_lock == ALP_DEFAULT && seq_in_use(u, (long)SequenceId)) return ALP_SEQ_IN_USE;
    if (PicOffset < 0 || *PicLoad < 0 || PicOffset >= s->picnum) return ALP_PARM_INVALID;
    if (*PicLoad == 0) *PicLoad = s->picnum - PicOffset;
    if (PicOffset + *PicLoad > s->picnum) return ALP_PARM_INVALID;
    *out = s;
    return ALP_OK;
}

API long AlpSeqPut(ALP_ID DeviceId, ALP_ID SequenceId, long PicOffset, long PicLoad, void *UserArrayPtr) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    Seq *s;
    rc = check_put(u, SequenceId, PicOffset, &PicLoad, UserArrayPtr, &s);
    if (rc != ALP_OK) return leave(rc);
    rc = put_lines(u, s, PicOffset, PicLoad, 0, u->height, UserArrayPtr);
    return leave(put_done(u, SequenceId, s, rc));
}

API long AlpSeqPutEx(ALP_ID DeviceId, ALP_ID SequenceId, void *UserStructPtr, void *UserArrayPtr) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    if (UserStructPtr == NULL) return leave(ALP_ADDR_INVALID);
    const tAlpLinePut *lp = (const tAlpLinePut *)UserStructPtr;
    if (lp->TransferMode != ALP_PUT_LINES) return leave(ALP_PARM_INVALID);
    long pic_load = lp->PicLoad;
    Seq *s;
    rc = check_put(u, SequenceId, lp->PicOffset, &pic_load, UserArrayPtr, &s);
    if (rc != ALP_OK) return leave(rc);
    long line_off = lp->LineOffset, line_load = lp->LineLoad;
    if (line_off < 0 || line_load < 0 || line_off >= u->height) return leave(ALP_PARM_INVALID);
    if (line_load == 0) line_load = u->height - line_off;
    if (line_off + line_load > u->height) return leave(ALP_PARM_INVALID);
    rc = put_lines(u, s, lp->PicOffset, pic_load, line_off, line_load, UserArrayPtr);
    return leave(put_done(u, SequenceId, s, rc));
}

/* ------------------------------------------------------------------------------------------ */
/* projection                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static long proj_start(ALP_ID DeviceId, ALP_ID SequenceId, int continuous) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    Seq *s = seq_get(u, SequenceId);
    if (s == NULL) return leave(ALP_PARM_INVALID);
    long long t = now_us(u);
    /* No sequence queue is modelled: starting over a running projection is refused (halt first). */
    if (proj_running(u, t)) return leave(ALP_NOT_IDLE);
    if (s->first > s->last) return leave(ALP_PARM_INVALID);
    Proj *p = &u->proj;
    proj_clear(p);
    p->valid = 1;
    p->continuous = continuous;
    p->slave = u->proj_mode == ALP_SLAVE;
    p->seq = (long)SequenceId;
    p->generation = s->generation;
    p->first = s->first;
    p->nframes = s->last - s->first + 1;
    p->repeat = s->repeat;
    p->bitnum = s->bitnum;
    p->picture_us = s->picture_us;
    p->illuminate_us = s->illuminate_us;
    p->start_us = t;
    p->halt_us = LLONG_MAX;
    p->queue_id = ++u->next_queue_id;
    p->inversion = (int)u->inversion;
    p->upside_down = (int)u->upside_down;
    p->stamp = ++g_stamp;
    return leave(ALP_OK);
}

API long AlpProjStart(ALP_ID DeviceId, ALP_ID SequenceId) { return proj_start(DeviceId, SequenceId, 0); }

API long AlpProjStartCont(ALP_ID DeviceId, ALP_ID SequenceId) { return proj_start(DeviceId, SequenceId, 1); }

API long AlpProjHalt(ALP_ID DeviceId) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    long long t = now_us(u);
    if (proj_running(u, t)) u->proj.halt_us = t;
    return leave(ALP_OK);
}

/* Virtual clock: jump the device time to the end of the projection (the caller is expected to move
 * its own clock there too; SimulatedDmd.wait does so first). Wall clock: sleep until the end. */
API long AlpProjWait(ALP_ID DeviceId) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    for (;;) {
        Proj *p = &u->proj;
        long long t = now_us(u);
        if (!proj_running(u, t)) return leave(ALP_OK);
        if (p->continuous) return leave(ALP_PARM_INVALID); /* would never return */
        long long end;
        if (!p->slave) {
            end = p->start_us + proj_total(p) * p->picture_us;
            if (u->wait_until == ALP_PROJ_WAIT_ILLU_TIME) end -= p->picture_us - p->illuminate_us;
        } else {
            /* waiting for triggers only this caller could send would dead-lock a virtual clock */
            if (u->clock_mode == SIMALP_CLOCK_VIRTUAL) return leave(ALP_NOT_IDLE);
            end = t + 1000;
        }
        if (u->clock_mode == SIMALP_CLOCK_VIRTUAL) {
            if (end > u->virt_now_us) u->virt_now_us = end;
            return leave(ALP_OK);
        }
        if (end <= t) return leave(ALP_OK); /* ALP_PROJ_WAIT_ILLU_TIME: done before the picture time */
        long long dt = end - t;
        if (dt > 1000) dt = 1000; /* re-check every ms so a halt from another thread ends the wait */
        pthread_mutex_unlock(&g_lock);
        struct timespec ts = {(time_t)(dt / 1000000), (long)(dt % 1000000) * 1000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&g_lock);
        if (!u->plugged || !u->allocated) return leave(ALP_NOT_AVAILABLE);
    }
}

API long AlpProjControl(ALP_ID DeviceId, long ControlType, long ControlValue) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    long long t = now_us(u);
    int running = proj_running(u, t);
    Proj *p = &u->proj;
    switch (ControlType) {
    case ALP_PROJ_RESET_QUEUE:
        return leave(ControlValue == ALP_DEFAULT ? ALP_OK : ALP_PARM_INVALID);
    case ALP_PROJ_ABORT_SEQUENCE:
    case ALP_PROJ_ABORT_FRAME:
        if (ControlValue != ALP_DEFAULT && (unsigned long)ControlValue != p->queue_id) return leave(ALP_PARM_INVALID);
        if (!running) return leave(ALP_OK);
        if (p->slave) {
            p->halt_us = t;
        } else {
            long long k = (t - p->start_us) / p->picture_us + 1; /* pictures begun so far */
            if (ControlType == ALP_PROJ_ABORT_SEQUENCE) k = (k + p->nframes - 1) / p->nframes * p->nframes;
            p->halt_us = p->start_us + k * p->picture_us;
        }
        return leave(ALP_OK);
    default: break;
    }
    if (running) return leave(ALP_NOT_IDLE);
    switch (ControlType) {
    case ALP_PROJ_MODE:
        if (ControlValue != ALP_MASTER && ControlValue != ALP_SLAVE) return leave(ALP_PARM_INVALID);
        u->proj_mode = ControlValue;
        break;
    case ALP_PROJ_INVERSION: u->inversion = ControlValue != ALP_DEFAULT; break;
    case ALP_PROJ_UPSIDE_DOWN: u->upside_down = ControlValue != ALP_DEFAULT; break;
    case ALP_PROJ_WAIT_UNTIL:
        if (ControlValue != ALP_PROJ_WAIT_PIC_TIME && ControlValue != ALP_PROJ_WAIT_ILLU_TIME)
            return leave(ALP_PARM_INVALID);
        u->wait_until = ControlValue;
        break;
    case ALP_PROJ_STEP:       /* step mode: not modelled, only its default is accepted */
    case ALP_PROJ_QUEUE_MODE: /* only legacy (no queue) is modelled */
        if (ControlValue != ALP_DEFAULT) return leave(ALP_PARM_INVALID);
        break;
    default: return leave(ALP_PARM_INVALID);
    }
    return leave(ALP_OK);
}

API long AlpProjControlEx(ALP_ID DeviceId, long ControlType, void *pUserStructPtr) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    (void)ControlType;
    if (pUserStructPtr == NULL) return leave(ALP_ADDR_INVALID);
    /* FLUT, X shear and DMD masks are not modelled: refuse loudly rather than display wrongly. */
    return leave(ALP_PARM_INVALID);
}

API long AlpProjInquire(ALP_ID DeviceId, long InquireType, long *UserVarPtr) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    long v;
    /* The type is checked before the pointer is touched: ALP4lib's ProjInquire passes the
     * sequence id here and the inquire type as the pointer. */
    switch (InquireType) {
    case ALP_PROJ_STATE: v = proj_running(u, now_us(u)) ? ALP_PROJ_ACTIVE : ALP_PROJ_IDLE; break;
    case ALP_PROJ_MODE: v = u->proj_mode; break;
    case ALP_PROJ_INVERSION: v = u->inversion; break;
    case ALP_PROJ_UPSIDE_DOWN: v = u->upside_down; break;
    case ALP_PROJ_WAIT_UNTIL: v = u->wait_until; break;
    case ALP_PROJ_STEP: v = ALP_DEFAULT; break;
    case ALP_PROJ_QUEUE_MODE: v = ALP_PROJ_LEGACY; break;
    case ALP_PROJ_QUEUE_ID: v = (long)u->proj.queue_id; break;
    case ALP_PROJ_QUEUE_MAX_AVAIL: v = 1; break;
    case ALP_PROJ_QUEUE_AVAIL: v = proj_running(u, now_us(u)) ? 0 : 1; break;
    case ALP_FLUT_MAX_ENTRIES9: v = 4096; break;
    default: return leave(ALP_PARM_INVALID); /* incl. ALP_PROJ_PROGRESS: AlpProjInquireEx only */
    }
    if (UserVarPtr == NULL) return leave(ALP_ADDR_INVALID);
    *UserVarPtr = v;
    return leave(ALP_OK);
}

API long AlpProjInquireEx(ALP_ID DeviceId, long InquireType, void *UserStructPtr) {
    Unit *u;
    long rc = enter(DeviceId, &u, 1);
    if (rc != ALP_OK) return leave(rc);
    if (InquireType != ALP_PROJ_PROGRESS) return leave(ALP_PARM_INVALID);
    if (UserStructPtr == NULL) return leave(ALP_ADDR_INVALID);
    tAlpProjProgress *pr = (tAlpProjProgress *)UserStructPtr;
    memset(pr, 0, sizeof *pr);
    const Proj *p = &u->proj;
    long long t = now_us(u);
    if (!proj_running(u, t)) {
        pr->CurrentQueueId = p->valid ? p->queue_id : ALP_INVALID_ID;
        pr->SequenceId = p->valid ? (ALP_ID)p->seq : ALP_INVALID_ID;
        pr->nFlags = ALP_FLAG_QUEUE_IDLE;
        return leave(ALP_OK);
    }
    long long k = proj_index_at(u, t); /* -1 in slave mode before the first trigger */
    long long iteration = k < 0 ? 0 : k / p->nframes;
    long long frame = k < 0 ? 0 : k % p->nframes;
    pr->CurrentQueueId = p->queue_id;
    pr->SequenceId = (ALP_ID)p->seq;
    pr->nWaitingSequences = 0;
    pr->nSequenceCounter = p->continuous ? 0 : (unsigned long)(p->repeat - iteration); /* incl. current */
    pr->nSequenceCounterUnderflow = 0;
    pr->nFrameCounter = (unsigned long)(p->nframes - frame); /* frames left in this iteration, incl. current */
    pr->nPictureTime = (unsigned long)p->picture_us;
    pr->nFramesPerSubSequence = (unsigned long)p->nframes;
    pr->nFlags = p->continuous ? ALP_FLAG_SEQUENCE_INDEFINITE : 0;
    return leave(ALP_OK);
}

/* ------------------------------------------------------------------------------------------ */
/* SimAlp extras: used by devices/dmd_sim.py and the tests, never by ALP4lib                   */
/* ------------------------------------------------------------------------------------------ */

/* Make a physical unit with this serial and geometry available to AlpDevAlloc. */
API long SimAlpPlugDevice(long serial, long width, long height) {
    pthread_mutex_lock(&g_lock);
    ensure_init();
    if (serial <= 0 || width < 8 || height < 1 || width > 8192 || height > 8192) return leave(ALP_PARM_INVALID);
    int slot = -1;
    for (int i = 0; i < MAX_UNITS; i++) {
        if (g_units[i].plugged && g_units[i].serial == serial) return leave(ALP_NOT_READY);
        if (!g_units[i].plugged && slot < 0) slot = i;
    }
    if (slot < 0) return leave(ALP_MEMORY_FULL);
    plug(&g_units[slot], serial, width, height);
    return leave(ALP_OK);
}

/* Remove a unit (it must have been freed with AlpDevFree). */
API long SimAlpUnplugDevice(long serial) {
    pthread_mutex_lock(&g_lock);
    ensure_init();
    for (int i = 0; i < MAX_UNITS; i++) {
        Unit *u = &g_units[i];
        if (u->plugged && u->serial == serial) {
            if (u->allocated) return leave(ALP_NOT_IDLE);
            proj_clear(&u->proj);
            memset(u, 0, sizeof *u);
            return leave(ALP_OK);
        }
    }
    return leave(ALP_NOT_ONLINE);
}

/* Fault injection: after `after_calls` more successful API calls on the unit with this serial
 * (AlpDevAlloc included), the next one returns `code`. For testing error paths only. */
API long SimAlpInjectError(long serial, long after_calls, long code) {
    pthread_mutex_lock(&g_lock);
    ensure_init();
    if (after_calls < 0) return leave(ALP_PARM_INVALID);
    for (int i = 0; i < MAX_UNITS; i++) {
        if (g_units[i].plugged && g_units[i].serial == serial) {
            g_units[i].inject_after = after_calls;
            g_units[i].inject_code = code;
            return leave(ALP_OK);
        }
    }
    return leave(ALP_NOT_ONLINE);
}

/* SIMALP_CLOCK_VIRTUAL (time only moves by SimAlpSetTime) or SIMALP_CLOCK_WALL (device time =
 * CLOCK_MONOTONIC - wall_offset_us, both in microseconds). Refused while projecting. */
API long SimAlpSetClockMode(ALP_ID DeviceId, long mode, long long wall_offset_us) {
    Unit *u;
    long rc = enter(DeviceId, &u, 0);
    if (rc != ALP_OK) return leave(rc);
    if (mode != SIMALP_CLOCK_VIRTUAL && mode != SIMALP_CLOCK_WALL) return leave(ALP_PARM_INVALID);
    if (proj_running(u, now_us(u))) return leave(ALP_NOT_IDLE);
    long long t = now_us(u);
    u->clock_mode = mode;
    u->wall_offset_us = wall_offset_us;
    if (mode == SIMALP_CLOCK_VIRTUAL) u->virt_now_us = t > 0 ? t : 0;
    return leave(ALP_OK);
}

/* Virtual clock: set the device time (never moves backwards: an earlier time is ignored). */
API long SimAlpSetTime(ALP_ID DeviceId, long long t_us) {
    Unit *u;
    long rc = enter(DeviceId, &u, 0);
    if (rc != ALP_OK) return leave(rc);
    if (u->clock_mode != SIMALP_CLOCK_VIRTUAL || t_us < 0) return leave(ALP_PARM_INVALID);
    if (t_us > u->virt_now_us) u->virt_now_us = t_us;
    return leave(ALP_OK);
}

API long SimAlpGetTime(ALP_ID DeviceId, long long *t_us) {
    Unit *u;
    long rc = enter(DeviceId, &u, 0);
    if (rc != ALP_OK) return leave(rc);
    if (t_us == NULL) return leave(ALP_ADDR_INVALID);
    *t_us = now_us(u);
    return leave(ALP_OK);
}

/* One trigger-input edge at the current device time: advances a slave-mode projection. */
API long SimAlpTrigger(ALP_ID DeviceId) {
    Unit *u;
    long rc = enter(DeviceId, &u, 0);
    if (rc != ALP_OK) return leave(rc);
    Proj *p = &u->proj;
    long long t = now_us(u);
    if (!p->slave || !proj_running(u, t)) return leave(SIMALP_TRIGGER_IGNORED);
    if (!p->continuous && (long long)p->ntrig >= proj_total(p)) return leave(SIMALP_TRIGGER_IGNORED);
    if (p->ntrig == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        long long *trig = realloc(p->trig, cap * sizeof *trig);
        if (trig == NULL) return leave(ALP_MEMORY_FULL);
        p->trig = trig;
        p->cap = cap;
    }
    p->trig[p->ntrig++] = t;
    return leave(ALP_OK);
}

/* End time of a master-mode single run (AlpProjStart); -1 when there is none to wait for. */
API long SimAlpProjEndTime(ALP_ID DeviceId, long long *end_us) {
    Unit *u;
    long rc = enter(DeviceId, &u, 0);
    if (rc != ALP_OK) return leave(rc);
    if (end_us == NULL) return leave(ALP_ADDR_INVALID);
    const Proj *p = &u->proj;
    *end_us = -1;
    if (proj_running(u, now_us(u)) && !p->continuous && !p->slave)
        *end_us = p->start_us + proj_total(p) * p->picture_us;
    return leave(ALP_OK);
}

/* Render one stored picture as the mirrors show it (0..255 = fraction of time on). */
static void render(const Unit *u, const Seq *s, long index, long bitnum, int inversion, int upside_down,
                   unsigned char *out) {
    long w = u->width, h = u->height;
    const unsigned char *pic = s->pics[index];
    long levels = (1L << bitnum) - 1;
    unsigned char lut[256];
    for (int v = 0; v < 256; v++) {
        long level = v >> (8 - bitnum);
        long value = (level * 255 + levels / 2) / levels;
        lut[v] = (unsigned char)(inversion ? 255 - value : value);
    }
    for (long y = 0; y < h; y++) {
        unsigned char *dst = out + (size_t)(upside_down ? h - 1 - y : y) * w;
        if (pic == NULL) {
            memset(dst, lut[0], (size_t)w);
        } else {
            const unsigned char *src = pic + (size_t)y * w;
            for (long x = 0; x < w; x++) dst[x] = lut[src[x]];
        }
    }
}

/* What the mirrors show at device time t_us: ALP_OK and the picture (height*width bytes, written to
 * out unless NULL), SIMALP_NOT_DISPLAYED (idle, halted, finished, or slave before its first trigger),
 * or SIMALP_TIME_UNKNOWN (t before the current projection, or its sequence was freed since). */
/* SimAlpGetDisplayedEx also returns a content stamp: the same (stamp, picture_index) always means the same
 * rendered picture (stamps change at every projection start and every put into the projected
 * sequence, and are never reused), so callers may cache pictures by it. out may be NULL. */
API long SimAlpGetDisplayedEx(ALP_ID DeviceId, long long t_us, unsigned char *out, long *seq_id,
                              long *picture_index, unsigned long long *stamp) {
    Unit *u;
    long rc = enter(DeviceId, &u, 0);
    if (rc != ALP_OK) return leave(rc);
    if (seq_id) *seq_id = -1;
    if (picture_index) *picture_index = -1;
    if (stamp) *stamp = 0;
    long long k = proj_index_at(u, t_us);
    if (k == -2) return leave(SIMALP_TIME_UNKNOWN);
    if (k < 0) return leave(SIMALP_NOT_DISPLAYED);
    const Proj *p = &u->proj;
    const Seq *s = seq_get(u, (ALP_ID)p->seq);
    if (s == NULL || s->generation != p->generation) return leave(SIMALP_TIME_UNKNOWN);
    long index = p->first + (long)(k % p->nframes);
    if (seq_id) *seq_id = p->seq;
    if (picture_index) *picture_index = index;
    if (stamp) *stamp = p->stamp;
    if (out) render(u, s, index, p->bitnum, p->inversion, p->upside_down, out);
    return leave(ALP_OK);
}

API long SimAlpGetDisplayed(ALP_ID DeviceId, long long t_us, unsigned char *out, long *seq_id,
                            long *picture_index) {
    return SimAlpGetDisplayedEx(DeviceId, t_us, out, seq_id, picture_index, NULL);
}

/* A stored picture as uploaded (MSB-aligned levels rendered at the sequence's bit planes). */
API long SimAlpReadPicture(ALP_ID DeviceId, ALP_ID SequenceId, long index, unsigned char *out) {
    Unit *u;
    long rc = enter(DeviceId, &u, 0);
    if (rc != ALP_OK) return leave(rc);
    const Seq *s = seq_get(u, SequenceId);
    if (s == NULL || index < 0 || index >= s->picnum) return leave(ALP_PARM_INVALID);
    if (out == NULL) return leave(ALP_ADDR_INVALID);
    render(u, s, index, s->bitplanes, 0, 0, out);
    return leave(ALP_OK);
}
