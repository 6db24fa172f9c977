/*
 * fault.c - a file truncated under our mapping is an error, not a crash.
 *
 * Any process of our uid can ftruncate a ring, segment, index, control or
 * group file while we have it mapped; the next access to a page past the
 * new end raises SIGBUS, whose default action kills the process (the whole
 * Python interpreter).  Here:
 *
 *  - A registry of our mappings: a fixed array of entries, each claimed by
 *    CAS and published with a generation (a seqlock), so the signal handler
 *    reads it without locks.  region.c's qm__map* fill it, qm__unmap empties
 *    an entry before the munmap.
 *  - A process-wide SIGBUS handler (SA_SIGINFO | SA_ONSTACK | SA_NODEFER),
 *    installed when the first mapping is registered and re-installed by any
 *    later registration that finds another handler in its place.  For a
 *    fault (si_code > 0) inside a registered mapping it replaces the mapping
 *    from the faulting page to its end with private zero pages (one mmap
 *    MAP_FIXED syscall: async-signal-safe), stores the mapping's tag in the
 *    handle's fault word and returns: the access runs again and reads zeros,
 *    which every validator already treats as empty or invalid, and every
 *    call on the handle then returns QM_ECORRUPT (guard.c).  Writes into the
 *    replaced range go to private memory and are lost: the handle is dead.
 *  - Everything else (a fault outside our mappings, a SIGBUS sent by
 *    kill/raise) goes to the handler that was installed before ours, or to
 *    the default action (death by SIGBUS, core dump included).
 *
 * docs/design/faults.md has the reasoning, including Python's faulthandler.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* vm.max_map_count defaults to 65530: a process cannot hold more mappings. */
#define GUARD_SLOTS 65536u

enum { SLOT_FREE = 0, SLOT_BUSY = 1, SLOT_LIVE = 2 };

/* state = generation << 2 | SLOT_*.  Fields are written while BUSY and
 * published by the store of LIVE (release); a reader that sees the same
 * LIVE state before and after reading them has a consistent entry. */
typedef struct guard_slot {
    _Atomic uint64_t state;
    _Atomic uintptr_t start;
    _Atomic size_t len;
    _Atomic int prot;
    _Atomic(_Atomic uint64_t *) fault;
    _Atomic uint64_t tag;
} guard_slot_t;

static guard_slot_t slots[GUARD_SLOTS];
static _Atomic uint32_t slots_hwm;           /* entries [0, hwm) were ever used */
static _Atomic uintptr_t page_mask;          /* ~(page size - 1), set before install */
static _Atomic uint64_t faults_repaired;     /* for tests and curiosity */

static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction previous[2];         /* the handler we chain to: previous[prev_at] */
static _Atomic int prev_at;
static _Atomic long chaining_tid;            /* thread inside a chained handler, or 0 */
static _Atomic int chained_fault;            /* we handed a fault on; a raise may follow */

/* ----- the handler ---------------------------------------------------------------- */
static bool repair(uintptr_t addr) {
    uint32_t n = atomic_load_explicit(&slots_hwm, memory_order_acquire);
    for (uint32_t i = 0; i < n && i < GUARD_SLOTS; i++) {
        guard_slot_t *s = &slots[i];
        uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
        if ((st & 3) != SLOT_LIVE) continue;
        /* acquire loads: the re-read of the state below stays after them
         * (a seqlock reader, without a fence TSan cannot model) */
        uintptr_t start = atomic_load_explicit(&s->start, memory_order_acquire);
        size_t len = atomic_load_explicit(&s->len, memory_order_acquire);
        if (addr < start || addr - start >= len) continue;
        int prot = atomic_load_explicit(&s->prot, memory_order_acquire);
        _Atomic uint64_t *fault = atomic_load_explicit(&s->fault, memory_order_acquire);
        uint64_t tag = atomic_load_explicit(&s->tag, memory_order_acquire);
        if (atomic_load_explicit(&s->state, memory_order_relaxed) != st) continue;   /* reused */
        uintptr_t page = addr & atomic_load_explicit(&page_mask, memory_order_relaxed);
        if (qm__os_map_zero((void *)page, start + len - page, prot) != 0) return false;
        if (fault) {
            uint64_t none = 0;   /* the first truncation seen names the file */
            atomic_compare_exchange_strong_explicit(fault, &none, tag, memory_order_relaxed,
                                                    memory_order_relaxed);
        }
        atomic_fetch_add_explicit(&faults_repaired, 1, memory_order_relaxed);
        return true;
    }
    return false;
}

static void on_sigbus(int sig, siginfo_t *si, void *uc);

static bool is_ours(const struct sigaction *sa) {
    return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == on_sigbus;
}

/* Not ours: hand the signal to whoever had SIGBUS before us. */
static void chain(int sig, siginfo_t *si, void *uc) {
    struct sigaction prev = previous[atomic_load_explicit(&prev_at, memory_order_acquire)];
    bool fault = si && si->si_code > 0;
    long me = qm__os_tid();
    /* Re-entered from inside the handler we chained to (SA_NODEFER makes a
     * raise() there arrive here at once): a handler that was installed
     * after ours, chains back to us and was in turn chained to by our
     * re-install (Python's faulthandler does this).  Break the cycle. */
    bool cycle = atomic_load_explicit(&chaining_tid, memory_order_relaxed) == me;
    /* The same, when the raise() is delivered only after that handler
     * returned (SA_NODEFER not honoured, e.g. under ThreadSanitizer): a sent
     * SIGBUS right after we handed a fault on is that fault, raised again. */
    if (!fault && si && si->si_pid == getpid() &&
        atomic_exchange_explicit(&chained_fault, 0, memory_order_relaxed))
        cycle = true;
    bool is_function = (prev.sa_flags & SA_SIGINFO) ||
                       (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN);
    if (cycle || !is_function || is_ours(&prev)) {
        /* The default action (or SIG_IGN) as if we had never been there: a
         * fault re-runs its instruction and faults again; a sent signal is
         * raised again (delivered at once: SA_NODEFER). */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        sigemptyset(&dfl.sa_mask);
        dfl.sa_handler = (cycle || is_function) ? SIG_DFL : prev.sa_handler;
        sigaction(sig, &dfl, NULL);
        if (!fault && dfl.sa_handler == SIG_DFL) raise(sig);
        return;
    }
    long none = 0;
    bool tracked = atomic_compare_exchange_strong_explicit(&chaining_tid, &none, me,
                                                           memory_order_relaxed,
                                                           memory_order_relaxed);
    if (fault) atomic_store_explicit(&chained_fault, 1, memory_order_relaxed);
    if (prev.sa_flags & SA_SIGINFO)
        prev.sa_sigaction(sig, si, uc);
    else
        prev.sa_handler(sig);
    if (tracked) atomic_store_explicit(&chaining_tid, 0, memory_order_relaxed);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
    int saved = errno;
    /* si_code > 0: raised by the kernel for an access (BUS_ADRERR for a
     * page past the end of the file); <= 0: sent by kill/raise/sigqueue. */
    if (!(si && si->si_code > 0 && repair((uintptr_t)si->si_addr))) chain(sig, si, uc);
    errno = saved;
}

/* Install the handler if it is not in place (first mapping, or someone
 * installed another since: Python's faulthandler.enable(), a test
 * framework).  What was there becomes the handler we chain to. */
static void arm(void) {
    struct sigaction cur;
    if (sigaction(SIGBUS, NULL, &cur) == 0 && is_ours(&cur)) return;
    pthread_mutex_lock(&install_lock);
    if (!atomic_load_explicit(&page_mask, memory_order_relaxed))
        atomic_store_explicit(&page_mask, ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1),
                              memory_order_relaxed);
    if (sigaction(SIGBUS, NULL, &cur) == 0 && !is_ours(&cur)) {
        int next = 1 - atomic_load_explicit(&prev_at, memory_order_relaxed);
        previous[next] = cur;
        atomic_store_explicit(&prev_at, next, memory_order_release);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sigemptyset(&sa.sa_mask);
        sa.sa_sigaction = on_sigbus;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER | SA_RESTART;
        sigaction(SIGBUS, &sa, NULL);
    }
    pthread_mutex_unlock(&install_lock);
}

/* ----- the registry ---------------------------------------------------------------- */
static bool claim(guard_slot_t *s) {
    uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
    return (st & 3) == SLOT_FREE &&
           atomic_compare_exchange_strong_explicit(&s->state, &st, ((st >> 2) + 1) << 2 | SLOT_BUSY,
                                                   memory_order_acquire, memory_order_relaxed);
}

int qm__fault_register(void *p, size_t len, int prot, _Atomic uint64_t *fault, uint64_t tag) {
    arm();
    guard_slot_t *s = NULL;
    uint32_t n = atomic_load_explicit(&slots_hwm, memory_order_acquire);
    for (uint32_t i = 0; i < n && !s; i++)
        if (claim(&slots[i])) s = &slots[i];
    while (!s) {
        uint32_t i = atomic_fetch_add_explicit(&slots_hwm, 1, memory_order_acq_rel);
        if (i >= GUARD_SLOTS) {
            atomic_store_explicit(&slots_hwm, GUARD_SLOTS, memory_order_release);
            return qm__fail(-ENOMEM, "more than %u mappings to guard", GUARD_SLOTS);
        }
        if (claim(&slots[i])) s = &slots[i];
    }
    atomic_store_explicit(&s->start, (uintptr_t)p, memory_order_relaxed);
    atomic_store_explicit(&s->len, len, memory_order_relaxed);
    atomic_store_explicit(&s->prot, prot, memory_order_relaxed);
    atomic_store_explicit(&s->fault, fault, memory_order_relaxed);
    atomic_store_explicit(&s->tag, tag, memory_order_relaxed);
    uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
    /* release: the fields before LIVE; pairs with the handler's acquire */
    atomic_store_explicit(&s->state, (st & ~UINT64_C(3)) | SLOT_LIVE, memory_order_release);
    return QM_OK;
}

void qm__fault_unregister(void *p) {
    uint32_t n = atomic_load_explicit(&slots_hwm, memory_order_acquire);
    for (uint32_t i = 0; i < n && i < GUARD_SLOTS; i++) {
        guard_slot_t *s = &slots[i];
        uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
        if ((st & 3) != SLOT_LIVE || atomic_load_explicit(&s->start, memory_order_relaxed) !=
                                         (uintptr_t)p)
            continue;
        /* a new generation, FREE: a handler reading it now skips it */
        if (atomic_compare_exchange_strong_explicit(&s->state, &st, ((st >> 2) + 1) << 2 | SLOT_FREE,
                                                    memory_order_acq_rel, memory_order_relaxed))
            return;
    }
}

int qm__fault_fail(uint64_t fault, const char *object) {
    unsigned long long v = (unsigned long long)(fault & QM_FAULT_VALUE_MASK);
    const char *after = "was truncated while mapped (pages past its new end read as zeros "
                        "here); this handle can no longer be used, close it";
    switch (fault & ~QM_FAULT_VALUE_MASK) {
    case QM_FAULT_CONTROL: return qm__fail(QM_ECORRUPT, "%s: control file %s", object, after);
    case QM_FAULT_SEGMENT:
        return qm__fail(QM_ECORRUPT, "%s: segment %020llu.log %s", object, v, after);
    case QM_FAULT_INDEX:
        return qm__fail(QM_ECORRUPT, "%s: index %020llu.idx %s", object, v, after);
    default: return qm__fail(QM_ECORRUPT, "%s %s", object, after);
    }
}

/* Test hook (tests/c/test_faults.c): faults repaired so far in this process. */
uint64_t qm__fault_repaired(void);
uint64_t qm__fault_repaired(void) {
    return atomic_load_explicit(&faults_repaired, memory_order_relaxed);
}
