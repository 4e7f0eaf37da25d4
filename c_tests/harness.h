/*
 * harness.h: the small common part of the libmps C tests.
 *
 * Every test program is a table of cases, one behaviour per case; CTest runs
 * each case as its own process (`prog <case> [peer-path]`), so every case gets
 * a fresh library, its own MPS_RUNTIME_DIR (mkdtemp under /tmp, removed at the
 * end) and its own ports. Run a program with no argument to run every case,
 * each in a forked child.
 *
 * Failures print file:line, what was expected and what came, then clean up
 * (remove the runtime directory, SIGKILL and reap any peer process) and end the
 * process with _exit(1): a failing callback thread never waits on anything.
 *
 * Waiting is always on an event: MpsSynchronousReceive with a timeout,
 * MpsWaitForPeer, or WAIT_UNTIL below (a condition variable that callbacks
 * broadcast, with a generous deadline that fails the test on expiry). The only
 * loop that looks again and again is h_wait_receivers(), which asks the
 * library (MpsQuerySession) whether a receiver is waiting on a session: a
 * condition no callback reports.
 */
#ifndef MPS_C_TESTS_HARNESS_H
#define MPS_C_TESTS_HARNESS_H

#include <sched.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include "mps.h"

/* Generous: a deadline exists only so that a hang is a failure. */
#define H_WAIT_SECONDS 60

/* 'MIRR' packed in a ULONG, the way the storage drivers name their domain. */
#define H_DOMAIN ((ULONG)(((ULONG)'M' << 24) | ((ULONG)'I' << 16) | ((ULONG)'R' << 8) | (ULONG)'R'))
#define H_CONDUIT ((CMI_CONDUIT_ID)0)

/* ------------------------------------------------------------------ state */

static char h_runtime_dir[256];
static const char *h_peer_path;          /* argv[2], for the cases that start a peer */
static const char *h_case_name = "?";
static pid_t h_children[16];
static volatile int h_cleaned_up;
static pthread_mutex_t h_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t h_cv;              /* CLOCK_MONOTONIC; set up in harness_main */
static pthread_t h_main_thread;

/* ---------------------------------------------------------------- cleanup */

static inline int h_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static inline void h_cleanup(void)
{
    size_t i;
    if (h_cleaned_up)
        return;
    h_cleaned_up = 1;
    for (i = 0; i < sizeof h_children / sizeof h_children[0]; i++) {
        if (h_children[i] > 0) {
            kill(h_children[i], SIGKILL);
            waitpid(h_children[i], NULL, 0);
            h_children[i] = 0;
        }
    }
    if (h_runtime_dir[0] != '\0') {
        nftw(h_runtime_dir, h_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        h_runtime_dir[0] = '\0';
    }
}

static inline const char *h_status_name(NTSTATUS s)
{
    const char *n = MpsStatusName(s);
    return n != NULL ? n : "(null name)";
}

/* ---------------------------------------------------------------- checks */

#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "%s:%d: [%s] FAIL: ", __FILE__, __LINE__, h_case_name); \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        fflush(stderr);                                                        \
        h_cleanup();                                                           \
        _exit(1);                                                              \
    } while (0)

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            FAIL("CHECK(%s) is false", #cond);                                 \
    } while (0)

#define CHECK_STATUS(expected, actual)                                         \
    do {                                                                       \
        NTSTATUS e_ = (expected);                                              \
        NTSTATUS a_ = (actual);                                                \
        if (e_ != a_)                                                          \
            FAIL("%s: expected %s (0x%08" PRIX32 "), got %s (0x%08" PRIX32 ")", \
                 #actual, h_status_name(e_), (uint32_t)e_, h_status_name(a_),  \
                 (uint32_t)a_);                                                \
    } while (0)

/* For the few places the contract allows either of two answers. */
#define CHECK_STATUS_EITHER(exp1, exp2, actual)                                \
    do {                                                                       \
        NTSTATUS e1_ = (exp1);                                                 \
        NTSTATUS e2_ = (exp2);                                                 \
        NTSTATUS a_ = (actual);                                                \
        if (a_ != e1_ && a_ != e2_)                                            \
            FAIL("%s: expected %s or %s, got %s (0x%08" PRIX32 ")", #actual,   \
                 h_status_name(e1_), h_status_name(e2_), h_status_name(a_),    \
                 (uint32_t)a_);                                                \
    } while (0)

#define CHECK_EQ_U(expected, actual)                                           \
    do {                                                                       \
        unsigned long long e_ = (unsigned long long)(expected);                \
        unsigned long long a_ = (unsigned long long)(actual);                  \
        if (e_ != a_)                                                          \
            FAIL("%s: expected %llu (0x%llx), got %llu (0x%llx)", #actual, e_, \
                 e_, a_, a_);                                                  \
    } while (0)

#define CHECK_PTR_EQ(expected, actual)                                         \
    do {                                                                       \
        const void *e_ = (const void *)(expected);                             \
        const void *a_ = (const void *)(actual);                               \
        if (e_ != a_)                                                          \
            FAIL("%s: expected pointer %p, got %p", #actual, e_, a_);          \
    } while (0)

#define CHECK_SP(unit, sp, actual)                                             \
    do {                                                                       \
        CMI_SP_ID s_ = (actual);                                               \
        if (s_.StorageUnit != (ULONG)(unit) || s_.Sp != (ULONG)(sp))           \
            FAIL("%s: expected SP %lu.%lu, got %lu.%lu", #actual,              \
                 (unsigned long)(unit), (unsigned long)(sp),                   \
                 (unsigned long)s_.StorageUnit, (unsigned long)s_.Sp);         \
    } while (0)

/* ------------------------------------------------------------ time, waits */

static inline double h_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline struct timespec h_deadline(int seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += seconds;
    return ts;
}

/*
 * WAIT_UNTIL(expr, seconds): wait on h_cv (under h_mu) until expr holds;
 * fail the test when the deadline passes first. Whoever changes what expr
 * reads does it inside H_UPDATE, which broadcasts.
 */
#define WAIT_UNTIL(expr, seconds)                                              \
    do {                                                                       \
        struct timespec dl_ = h_deadline(seconds);                             \
        pthread_mutex_lock(&h_mu);                                             \
        while (!(expr)) {                                                      \
            int rc_ = pthread_cond_timedwait(&h_cv, &h_mu, &dl_);              \
            if (rc_ == ETIMEDOUT && !(expr)) {                                 \
                pthread_mutex_unlock(&h_mu);                                   \
                FAIL("timed out after %d s waiting for: %s", (int)(seconds),   \
                     #expr);                                                   \
            }                                                                  \
        }                                                                      \
        pthread_mutex_unlock(&h_mu);                                           \
    } while (0)

#define H_UPDATE(stmt)                                                         \
    do {                                                                       \
        pthread_mutex_lock(&h_mu);                                             \
        stmt;                                                                  \
        pthread_cond_broadcast(&h_cv);                                         \
        pthread_mutex_unlock(&h_mu);                                           \
    } while (0)

/* Read a value that another thread changes under h_mu. */
#define H_READ(lvalue, out)                                                    \
    do {                                                                       \
        pthread_mutex_lock(&h_mu);                                             \
        (out) = (lvalue);                                                      \
        pthread_mutex_unlock(&h_mu);                                           \
    } while (0)

static inline pid_t h_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/*
 * Wait until a thread is inside MpsSynchronousReceive on session `h`: the
 * session reports it (MPS_SESSION_INFO.BlockedReceivers counts the receivers
 * registered to wait, whom an MpsClose from then on wakes with
 * STATUS_CANCELLED). Used only where the outcome depends on it. The loop
 * yields the CPU between looks; it waits on that exact condition, not on time.
 */
static inline void h_wait_receivers(MPS_HANDLE h, ULONG n)
{
    double deadline = h_now() + H_WAIT_SECONDS;
    MPS_SESSION_INFO info;
    for (;;) {
        CHECK_STATUS(STATUS_SUCCESS, MpsQuerySession(h, &info));
        if (info.BlockedReceivers >= n)
            return;
        if (h_now() > deadline)
            FAIL("no receiver started waiting on the session (%u of %u)", (unsigned)info.BlockedReceivers, (unsigned)n);
        sched_yield();
    }
}

/* ---------------------------------------------------- environment, files */

/* A free TCP port on 127.0.0.1: bind port 0 and read what the kernel chose. */
static inline unsigned h_free_tcp_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    unsigned port;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* Write `text` to <runtime dir>/<name>; the full path goes to `path`. */
static inline void h_write_file(const char *name, const char *text, char *path, size_t pathlen)
{
    FILE *f;
    snprintf(path, pathlen, "%s/%s", h_runtime_dir, name);
    f = fopen(path, "w");
    CHECK(f != NULL);
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

/*
 * Write a one-SP configuration file (no peers, listening on a Unix socket in
 * the runtime directory) with `extra` TOML appended, and return its path.
 */
static inline void h_write_solo_config(const char *extra, char *path, size_t pathlen)
{
    char text[2048];
    snprintf(text, sizeof text,
             "# written by the libmps C tests\n"
             "sp = \"0.A\"\n"
             "listen = \"unix:%s/solo-0A.sock\"\n"
             "%s",
             h_runtime_dir, extra != NULL ? extra : "");
    h_write_file("solo.toml", text, path, pathlen);
}

/* ------------------------------------------------------------- processes */

static inline void h_track_child(pid_t pid)
{
    size_t i;
    for (i = 0; i < sizeof h_children / sizeof h_children[0]; i++) {
        if (h_children[i] == 0) {
            h_children[i] = pid;
            return;
        }
    }
    kill(pid, SIGKILL);
    FAIL("too many child processes");
}

static inline void h_untrack_child(pid_t pid)
{
    size_t i;
    for (i = 0; i < sizeof h_children / sizeof h_children[0]; i++)
        if (h_children[i] == pid)
            h_children[i] = 0;
}

extern char **environ;

/*
 * Start `path` with `argv`, with the environment of this process minus every
 * MPS_* variable, plus the `set` ones ("NAME=value", NULL-terminated list).
 * The child's environment is built before fork, so the child (forked from a
 * process with library threads) only calls prctl, getppid and execve.
 */
static inline pid_t h_spawn(const char *path, char *const argv[], const char *const set[])
{
    static char *envp[512];
    size_t n = 0, i;
    pid_t parent = getpid();
    pid_t pid;
    for (i = 0; environ[i] != NULL && n < 480; i++)
        if (strncmp(environ[i], "MPS_", 4) != 0)
            envp[n++] = environ[i];
    for (i = 0; set != NULL && set[i] != NULL && n < 510; i++)
        envp[n++] = (char *)set[i];
    envp[n] = NULL;
    fflush(NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* Die with the test: a stuck harness must not leave a peer behind. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(126);
        execve(path, argv, envp);
        _exit(127);
    }
    h_track_child(pid);
    return pid;
}

/*
 * Wait (bounded) for a child to end; returns its wait status. Waits on a
 * pidfd (poll with the deadline as timeout); without pidfd support, falls
 * back to checking waitpid(WNOHANG) every 5 ms until the deadline.
 */
static inline int h_reap(pid_t pid, int seconds)
{
    double deadline = h_now() + seconds;
    int status = 0;
    int pidfd = -1;
#ifdef SYS_pidfd_open
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0)
            FAIL("waitpid(%ld): %s", (long)pid, strerror(errno));
        if (h_now() > deadline)
            FAIL("child %ld did not exit within %d s", (long)pid, seconds);
        if (pidfd >= 0) {
            struct pollfd pfd;
            pfd.fd = pidfd;
            pfd.events = POLLIN;
            pfd.revents = 0;
            (void)poll(&pfd, 1, 1000);
        } else {
            const struct timespec poll_interval = {0, 5 * 1000 * 1000};
            nanosleep(&poll_interval, NULL);
        }
    }
    if (pidfd >= 0)
        close(pidfd);
    h_untrack_child(pid);
    return status;
}

/* ------------------------------------------------------------ MPS helpers */

static inline CMI_SP_ID h_local_sp(void)
{
    CMI_SP_ID local, peer;
    CHECK_STATUS(STATUS_SUCCESS, MpsGetSpId(&local, &peer));
    return local;
}

static inline CMI_SP_ID h_sp(ULONG unit, ULONG sp)
{
    CMI_SP_ID id;
    id.StorageUnit = unit;
    id.Sp = sp;
    return id;
}

/* The deterministic content of byte j of message (i, size). */
static inline unsigned char h_pattern(ULONG i, ULONG size, ULONG j)
{
    return (unsigned char)((i * 131u) ^ (size * 7u) ^ (j * 31u) ^ (j >> 8) ^ 0x5Au);
}

static inline void h_fill(void *buf, ULONG i, ULONG size)
{
    unsigned char *p = (unsigned char *)buf;
    ULONG j;
    for (j = 0; j < size; j++)
        p[j] = h_pattern(i, size, j);
}

/* Index of the first wrong byte, or -1 when the content is right. */
static inline long h_verify(const void *buf, ULONG i, ULONG size)
{
    const unsigned char *p = (const unsigned char *)buf;
    ULONG j;
    for (j = 0; j < size; j++)
        if (p[j] != h_pattern(i, size, j))
            return (long)j;
    return -1;
}

/* Open a session; the name is a wide literal such as L"Mirror". */
static inline MPS_HANDLE h_open(PMPS_CALLBACK_ROUTINE cb, const wchar_t *name, PVOID context)
{
    MPS_HANDLE h = NULL;
    wchar_t copy[MPS_MAX_MAILBOX_NAME + 1];
    wcsncpy(copy, name, MPS_MAX_MAILBOX_NAME);
    copy[MPS_MAX_MAILBOX_NAME] = L'\0';
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(cb, H_CONDUIT, H_DOMAIN, copy, context, &h));
    CHECK(h != NULL);
    return h;
}

/* A buffer from MpsAllocateMessage filled with pattern (i, size). */
static inline PVOID h_alloc_filled(ULONG i, ULONG size)
{
    PVOID p = NULL;
    CHECK_STATUS(STATUS_SUCCESS, MpsAllocateMessage(size, &p));
    CHECK(p != NULL);
    h_fill(p, i, size);
    return p;
}

static inline void h_info(MPS_SEND_MESSAGE_INFO *info, PVOID ctx, CMI_SP_ID dest, PVOID ptr,
                   ULONG size, ULONG tag)
{
    memset(info, 0, sizeof *info);
    info->ContextHandle = ctx;
    info->Destination = dest;
    info->Ptr = ptr;
    info->Size = size;
    info->SequenceTag = tag;
}

/* Loopback synchronous send of pattern (tag, size) from session h to itself. */
static inline void h_loopback_sync_send(MPS_HANDLE h, ULONG tag, ULONG size)
{
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = h_alloc_filled(tag, size);
    h_info(&info, NULL, h_local_sp(), buf, size, tag);
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousSend(h, &info));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
}

/* Receive the next message (any tag) within the deadline and check its pattern. */
static inline PMPS_RECEIVED_EVENT_DATA h_receive_checked(MPS_HANDLE h, ULONG tag, ULONG size)
{
    PMPS_RECEIVED_EVENT_DATA d = NULL;
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousReceive(h, H_WAIT_SECONDS, 0, &d));
    CHECK(d != NULL);
    CHECK_EQ_U(tag, d->SequenceTag);
    CHECK_EQ_U(size, d->Size);
    CHECK(d->Ptr != NULL);
    CHECK(h_verify(d->Ptr, tag, size) < 0);
    return d;
}

/*
 * A barrier through the library: a loopback synchronous round trip on a
 * fresh NULL-callback session. Used after "this must not happen" checks.
 */
static inline void h_round_trip_barrier(void)
{
    static int n;
    wchar_t name[32];
    MPS_HANDLE b;
    PMPS_RECEIVED_EVENT_DATA d;
    swprintf(name, 32, L"Barrier%d", n++);
    b = h_open(NULL, name, NULL);
    h_loopback_sync_send(b, 4242, 16);
    d = h_receive_checked(b, 4242, 16);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(b));
}

/* ------------------------------------------------------------------ main */

typedef struct h_case {
    const char *name;
    void (*fn)(void);
} h_case;

#define H_CASE(fn) { #fn, fn }

/* A fresh runtime directory, the default identity 0.A, no configuration file. */
static inline void h_setup_env(void)
{
    char tmpl[] = "/tmp/mps-ctest-XXXXXX";
    CHECK(mkdtemp(tmpl) != NULL);
    snprintf(h_runtime_dir, sizeof h_runtime_dir, "%s", tmpl);
    CHECK(setenv("MPS_RUNTIME_DIR", h_runtime_dir, 1) == 0);
    CHECK(setenv("MPS_SP", "0.A", 1) == 0);
    CHECK(unsetenv("MPS_CONFIG") == 0);
    atexit(h_cleanup);
}

static inline int h_run_case(const h_case *c)
{
    pthread_condattr_t ca;
    h_case_name = c->name;
    h_main_thread = pthread_self();
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h_cv, &ca);
    h_setup_env();
    fprintf(stderr, "[%s] start\n", c->name);
    c->fn();
    (void)MpsShutdown();
    h_cleanup();
    fprintf(stderr, "[%s] PASS\n", c->name);
    return 0;
}

static inline int harness_main(int argc, char **argv, const h_case *cases, size_t ncases)
{
    size_t i;
    int failures = 0;
    if (argc >= 3)
        h_peer_path = argv[2];
    if (argc >= 2) {
        for (i = 0; i < ncases; i++)
            if (strcmp(argv[1], cases[i].name) == 0)
                return h_run_case(&cases[i]);
        fprintf(stderr, "unknown case '%s'; cases:\n", argv[1]);
        for (i = 0; i < ncases; i++)
            fprintf(stderr, "  %s\n", cases[i].name);
        return 2;
    }
    /* No argument: every case, each in its own child process. */
    for (i = 0; i < ncases; i++) {
        int status = 0;
        pid_t pid;
        fflush(NULL);
        pid = fork();
        if (pid < 0)
            return 2;
        if (pid == 0)
            _exit(h_run_case(&cases[i]));
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "[%s] FAILED (wait status 0x%x)\n", cases[i].name, status);
            failures++;
        }
    }
    fprintf(stderr, "%d of %zu cases failed\n", failures, ncases);
    return failures == 0 ? 0 : 1;
}

#endif /* MPS_C_TESTS_HARNESS_H */
