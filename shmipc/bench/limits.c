/* limits.c: what this machine can do at best, measured without Python.
 *
 * Compiled at run time by shmipc.bench.limits (cc -O2) and run as
 *     limits SECONDS
 * where SECONDS bounds each measurement.  It prints one JSON object:
 *
 *     memcpy_1mib_gbs      memcpy of a 1 MiB buffer (stays in cache), GB/s
 *     memcpy_256mib_gbs    memcpy of a 256 MiB buffer (DRAM), GB/s
 *     spin_rtt_us          round trip between two processes that busy-poll
 *                          a shared word (median, p99), microseconds
 *     futex_rtt_us         round trip through two process-shared sem_t
 *                          (blocking, futex), median and p99, microseconds
 *     ring_64_msgs         spinning SPSC ring in shared memory, 64-byte
 *                          messages copied in and out, messages/s
 *     ring_1mib_gbs        the same ring with 1 MiB messages, GB/s
 *     ring_16mib_gbs       the same ring with 16 MiB messages, GB/s
 *
 * Every process pair is a fork() sharing MAP_SHARED|MAP_ANONYMOUS memory.
 * Ring messages carry a sequence number at both ends, checked by the
 * consumer; a mismatch makes the program exit with status 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CACHE_LINE 64
#define MAX_SAMPLES 2000000

static double seconds_budget = 0.3;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    memset(p, 0, size); /* pre-fault */
    return p;
}

static void *private_alloc(size_t size)
{
    void *p = malloc(size);
    if (p == NULL) {
        perror("malloc");
        exit(1);
    }
    memset(p, 1, size);
    return p;
}

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define cpu_relax() __asm__ volatile("yield" ::: "memory")
#else
#define cpu_relax() __asm__ volatile("" ::: "memory")
#endif

/* Busy-wait politely: a pause per poll, and a sched_yield() now and then so a
 * peer that shares our core (or a busy machine) still gets to run. */
static inline void relax(unsigned *spins)
{
    if (++*spins % 256 == 0)
        sched_yield();
    else
        cpu_relax();
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void percentiles(double *v, size_t n, double *median, double *p99)
{
    qsort(v, n, sizeof(double), cmp_double);
    *median = v[n / 2];
    *p99 = v[(size_t)(n * 0.99) < n ? (size_t)(n * 0.99) : n - 1];
}

static int wait_child(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- memcpy ------------------------------------------------------------ */
static double memcpy_gbs(size_t size)
{
    char *a = private_alloc(size), *b = private_alloc(size);
    double best = 0;
    double start = now();
    do {
        double t0 = now();
        size_t reps = size >= (64u << 20) ? 1 : (64u << 20) / size;
        for (size_t i = 0; i < reps; i++) {
            memcpy(i & 1 ? a : b, i & 1 ? b : a, size);
            __asm__ volatile("" ::: "memory");
        }
        double gbs = (double)size * reps / (now() - t0) / 1e9;
        if (gbs > best)
            best = gbs;
    } while (now() - start < seconds_budget);
    free(a);
    free(b);
    return best;
}

/* ---- spinning round trip -------------------------------------------------- */
struct pingpong {
    _Alignas(CACHE_LINE) _Atomic uint64_t ping;
    _Alignas(CACHE_LINE) _Atomic uint64_t pong;
    _Alignas(CACHE_LINE) sem_t sem_ping;
    _Alignas(CACHE_LINE) sem_t sem_pong;
};

static void spin_rtt(double *median, double *p99)
{
    struct pingpong *pp = shared_alloc(sizeof *pp);
    double *samples = private_alloc(MAX_SAMPLES * sizeof(double));
    atomic_store(&pp->ping, 0);
    atomic_store(&pp->pong, 0);
    pid_t pid = fork();
    if (pid == 0) {
        unsigned spins = 0;
        for (uint64_t i = 1;; i++) {
            uint64_t v;
            while ((v = atomic_load_explicit(&pp->ping, memory_order_acquire)) < i)
                relax(&spins);
            if (v == UINT64_MAX)
                _exit(0);
            atomic_store_explicit(&pp->pong, v, memory_order_release);
        }
    }
    size_t n = 0;
    unsigned spins = 0;
    double deadline = now() + seconds_budget;
    for (uint64_t i = 1; n < MAX_SAMPLES; i++) {
        double t0 = now();
        atomic_store_explicit(&pp->ping, i, memory_order_release);
        while (atomic_load_explicit(&pp->pong, memory_order_acquire) != i)
            relax(&spins);
        double t1 = now();
        samples[n++] = (t1 - t0) * 1e6;
        if (t1 > deadline)
            break;
    }
    atomic_store_explicit(&pp->ping, UINT64_MAX, memory_order_release);
    wait_child(pid);
    percentiles(samples, n, median, p99);
    free(samples);
    munmap(pp, sizeof *pp);
}

/* ---- blocking (futex) round trip ----------------------------------------- */
static void futex_rtt(double *median, double *p99)
{
    struct pingpong *pp = shared_alloc(sizeof *pp);
    double *samples = private_alloc(MAX_SAMPLES * sizeof(double));
    if (sem_init(&pp->sem_ping, 1, 0) || sem_init(&pp->sem_pong, 1, 0)) {
        perror("sem_init");
        exit(1);
    }
    pid_t pid = fork();
    if (pid == 0) {
        for (;;) {
            while (sem_wait(&pp->sem_ping) < 0 && errno == EINTR)
                ;
            if (atomic_load(&pp->ping) == UINT64_MAX)
                _exit(0);
            sem_post(&pp->sem_pong);
        }
    }
    size_t n = 0;
    double deadline = now() + seconds_budget;
    while (n < MAX_SAMPLES) {
        double t0 = now();
        sem_post(&pp->sem_ping);
        while (sem_wait(&pp->sem_pong) < 0 && errno == EINTR)
            ;
        double t1 = now();
        samples[n++] = (t1 - t0) * 1e6;
        if (t1 > deadline)
            break;
    }
    atomic_store(&pp->ping, UINT64_MAX);
    sem_post(&pp->sem_ping);
    wait_child(pid);
    percentiles(samples, n, median, p99);
    free(samples);
    sem_destroy(&pp->sem_ping);
    sem_destroy(&pp->sem_pong);
    munmap(pp, sizeof *pp);
}

/* ---- spinning SPSC ring --------------------------------------------------- */
struct ring_hdr {
    _Alignas(CACHE_LINE) _Atomic uint64_t head; /* messages published */
    _Alignas(CACHE_LINE) _Atomic uint64_t tail; /* messages consumed */
    _Alignas(CACHE_LINE) _Atomic uint64_t stop; /* total the producer sent */
    _Alignas(CACHE_LINE) double elapsed;
    uint64_t received;
    int failed;
};

/* Returns messages/s; *bytes_per_s gets bytes/s.  Each message is copied in
 * from a private buffer and copied out to another one. */
static double ring_run(size_t msg, size_t nslots, double *bytes_per_s)
{
    size_t total = sizeof(struct ring_hdr) + msg * nslots;
    struct ring_hdr *r = shared_alloc(total);
    char *slots = (char *)(r + 1);
    atomic_store(&r->stop, UINT64_MAX);
    pid_t pid = fork();
    if (pid == 0) { /* consumer */
        char *dst = private_alloc(msg);
        uint64_t tail = 0;
        unsigned spins = 0;
        double t0 = now();
        for (;;) {
            uint64_t head;
            while ((head = atomic_load_explicit(&r->head, memory_order_acquire)) == tail) {
                if (atomic_load_explicit(&r->stop, memory_order_acquire) == tail)
                    goto done;
                relax(&spins);
            }
            for (; tail < head; tail++) {
                const char *src = slots + (tail % nslots) * msg;
                memcpy(dst, src, msg);
                uint64_t a, b;
                memcpy(&a, dst, 8);
                memcpy(&b, dst + msg - 8, 8);
                if (a != tail || b != tail) {
                    r->failed = 1;
                    _exit(2);
                }
                atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
            }
        }
    done:
        r->elapsed = now() - t0;
        r->received = tail;
        _exit(0);
    }
    char *src = private_alloc(msg);
    uint64_t head = 0, tail_cache = 0;
    unsigned spins = 0;
    double deadline = now() + seconds_budget;
    uint64_t check_every = msg >= 4096 ? 0 : 255; /* mask: read the clock every 256 small messages */
    for (;;) {
        if ((head & check_every) == 0 && now() > deadline)
            break;
        while (head - tail_cache >= nslots) {
            tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
            if (head - tail_cache >= nslots)
                relax(&spins);
        }
        memcpy(src, &head, 8);
        memcpy(src + msg - 8, &head, 8);
        memcpy(slots + (head % nslots) * msg, src, msg);
        head++;
        atomic_store_explicit(&r->head, head, memory_order_release);
    }
    atomic_store_explicit(&r->stop, head, memory_order_release);
    int rc = wait_child(pid);
    if (rc != 0 || r->failed || r->received != head) {
        fprintf(stderr, "ring: sequence check failed (exit %d, %llu of %llu)\n", rc,
                (unsigned long long)r->received, (unsigned long long)head);
        exit(2);
    }
    double rate = r->received / r->elapsed;
    *bytes_per_s = rate * msg;
    free(src);
    munmap(r, total);
    return rate;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        seconds_budget = atof(argv[1]);
    if (seconds_budget <= 0 || seconds_budget > 10)
        seconds_budget = 0.3;
    signal(SIGPIPE, SIG_IGN);
    double m1 = memcpy_gbs(1u << 20);
    double m256 = memcpy_gbs(256u << 20);
    double spin_med, spin_p99, futex_med, futex_p99;
    spin_rtt(&spin_med, &spin_p99);
    futex_rtt(&futex_med, &futex_p99);
    double bps64, bps1m, bps16m;
    double r64 = ring_run(64, 4096, &bps64);
    ring_run(1u << 20, 8, &bps1m);
    ring_run(16u << 20, 4, &bps16m);
    printf("{\"memcpy_1mib_gbs\": %.3f, \"memcpy_256mib_gbs\": %.3f, "
           "\"spin_rtt_us\": [%.4f, %.4f], \"futex_rtt_us\": [%.3f, %.3f], "
           "\"ring_64_msgs\": %.0f, \"ring_64_gbs\": %.3f, \"ring_1mib_gbs\": %.3f, "
           "\"ring_16mib_gbs\": %.3f}\n",
           m1, m256, spin_med, spin_p99, futex_med, futex_p99, r64, bps64 / 1e9, bps1m / 1e9,
           bps16m / 1e9);
    return 0;
}
