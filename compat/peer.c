/*
 * compat/peer.c: the other SP of tests/mixed_version.rs. One source, built by
 * scripts/build-v1-peer against the version-1 library (compat/V1_COMMIT) and
 * against the current one, so it uses only the API that include/mps.h had at
 * that commit: the C ABI is the contract both versions keep.
 *
 *   MPS_CONFIG=sp.toml mps-compat-peer COUNT [MAILBOX]
 *
 * Starts its SP from the environment (MpsInitialize(NULL): the TOML file named
 * by MPS_CONFIG), with the library's log at info level routed to stdout; opens
 * MAILBOX (default "echo") on conduit 0, domain 0, with no callback (so the
 * asynchronous messages it receives are queued for MpsSynchronousReceive as
 * well); waits for the link to the other SP of its unit and for the library's
 * log line that says which protocol version the link agreed; then COUNT times
 * receives a message and sends it back to its sender synchronously, the same
 * bytes with the same SequenceTag. Then it closes the session, shuts the SP
 * down and exits 0.
 *
 * stdout, one flushed line per event (the test reads them as they come):
 *   peer: ready sp=U.X peer=U.Y   the session is open: messages may be sent
 *   log: LEVEL TEXT               a line of the library's log
 *   peer: link up version=N       N as the library's "link to SP .. up" line said
 *   peer: echoed COUNT messages, BYTES bytes
 *   peer: done
 * Exit status: 0 done; 1 an API call failed (stderr names it); 2 usage;
 * 3 a wait ran out (30 s for each message, for the link, for its log line).
 */
#include <mps.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The bound on every wait, in seconds. */
#define WAIT_S 30

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t version_cv = PTHREAD_COND_INITIALIZER;
/* Under out_mu: the version of the first "link to SP .. up" line, or -1. */
static long link_version = -1;

/* One line to stdout, whole and flushed, whichever thread writes it. */
static void say(const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&out_mu);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static void fail(int code, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&out_mu);
    fflush(stdout);
    fputs("peer: FAILED: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    exit(code);
}

static void check(NTSTATUS got, NTSTATUS want, const char *call)
{
    if (got != want)
        fail(1, "%s returned %s (0x%08X), expected %s", call, MpsStatusName(got), (unsigned)got,
             MpsStatusName(want));
}

static const char *level_name(ULONG level)
{
    switch (level) {
    case MPS_LOG_ERROR: return "error";
    case MPS_LOG_WARN: return "warn";
    case MPS_LOG_INFO: return "info";
    case MPS_LOG_DEBUG: return "debug";
    default: return "trace";
    }
}

/* The library's log routine: runs on the library's log thread. */
static void log_routine(ULONG level, const char *line, PVOID context)
{
    static const char up[] = " up (protocol version ";
    const char *at;
    (void)context;
    pthread_mutex_lock(&out_mu);
    printf("log: %s %s\n", level_name(level), line);
    fflush(stdout);
    if (link_version < 0 && strncmp(line, "link to SP ", 11) == 0 && (at = strstr(line, up)) != NULL) {
        link_version = strtol(at + sizeof up - 1, NULL, 10);
        pthread_cond_broadcast(&version_cv);
    }
    pthread_mutex_unlock(&out_mu);
}

static char side(ULONG sp)
{
    return sp == CMI_SP_A ? 'A' : sp == CMI_SP_B ? 'B' : '?';
}

int main(int argc, char **argv)
{
    const char *mailbox = argc > 2 ? argv[2] : "echo";
    WCHAR name[MPS_MAX_MAILBOX_NAME + 1];
    CMI_SP_ID me, other;
    MPS_HANDLE session;
    PVOID buf = NULL;
    ULONG buf_size = 0;
    unsigned long count, i;
    unsigned long long bytes = 0;
    char *end;
    size_t n;
    struct timespec deadline;
    int rc;

    if (argc < 2 || argc > 3 || (count = strtoul(argv[1], &end, 10), *end != '\0')) {
        fprintf(stderr, "usage: MPS_CONFIG=sp.toml %s COUNT [MAILBOX]\n", argv[0]);
        return 2;
    }
    n = strlen(mailbox);
    if (n == 0 || n > MPS_MAX_MAILBOX_NAME) {
        fprintf(stderr, "peer: the mailbox name must have 1 to %d characters\n", MPS_MAX_MAILBOX_NAME);
        return 2;
    }
    for (i = 0; i < n; i++)
        name[i] = (WCHAR)(unsigned char)mailbox[i];
    name[n] = 0;

    check(MpsSetLogLevel(MPS_LOG_INFO), STATUS_SUCCESS, "MpsSetLogLevel");
    check(MpsSetLogRoutine(log_routine, NULL), STATUS_SUCCESS, "MpsSetLogRoutine");
    check(MpsInitialize(NULL), STATUS_SUCCESS, "MpsInitialize (from MPS_CONFIG)");
    check(MpsGetSpId(&me, &other), STATUS_SUCCESS, "MpsGetSpId");
    if (other.Sp == CMI_SP_NONE)
        fail(1, "SP %u.%c has no other SP in its unit to link to", (unsigned)me.StorageUnit, side(me.Sp));
    check(MpsOpen(NULL, 0, 0, name, NULL, &session), STATUS_SUCCESS, "MpsOpen");
    say("peer: ready sp=%u.%c peer=%u.%c", (unsigned)me.StorageUnit, side(me.Sp), (unsigned)other.StorageUnit,
        side(other.Sp));

    check(MpsWaitForPeer(&other, WAIT_S * 1000), STATUS_SUCCESS, "MpsWaitForPeer");
    /* The log line is written by the log thread: wait for it (bounded). */
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_S;
    pthread_mutex_lock(&out_mu);
    rc = 0;
    while (link_version < 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&version_cv, &out_mu, &deadline);
    pthread_mutex_unlock(&out_mu);
    if (link_version < 0)
        fail(3, "the link is up but no \"link to SP .. up (protocol version N\" log line came within %d s", WAIT_S);
    say("peer: link up version=%ld", link_version);

    for (i = 0; i < count; i++) {
        PMPS_RECEIVED_EVENT_DATA d = NULL;
        MPS_SEND_MESSAGE_INFO info;
        NTSTATUS st = MpsSynchronousReceive(session, WAIT_S, 0, &d);
        if (st == STATUS_TIMEOUT)
            fail(3, "message %lu of %lu did not come within %d s", i + 1, count, WAIT_S);
        check(st, STATUS_SUCCESS, "MpsSynchronousReceive");
        if (d->Size > buf_size || buf == NULL) {
            if (buf != NULL)
                check(MpsFreeMessage(buf), STATUS_SUCCESS, "MpsFreeMessage");
            buf = NULL;
            check(MpsAllocateMessage(d->Size, &buf), STATUS_SUCCESS, "MpsAllocateMessage");
            buf_size = d->Size;
        }
        if (d->Size > 0)
            memcpy(buf, d->Ptr, d->Size);
        memset(&info, 0, sizeof info);
        info.Destination = d->Sender;
        info.Ptr = buf;
        info.Size = d->Size;
        info.SequenceTag = d->SequenceTag;
        bytes += d->Size;
        check(MpsReleaseReceivedMessage(d), STATUS_SUCCESS, "MpsReleaseReceivedMessage");
        check(MpsSynchronousSend(session, &info), STATUS_SUCCESS, "MpsSynchronousSend (the echo)");
    }
    say("peer: echoed %lu messages, %llu bytes", count, bytes);

    if (buf != NULL)
        check(MpsFreeMessage(buf), STATUS_SUCCESS, "MpsFreeMessage");
    check(MpsClose(session), STATUS_SUCCESS, "MpsClose");
    check(MpsShutdown(), STATUS_SUCCESS, "MpsShutdown");
    /* Held until exit: no log line is written after the last one. */
    pthread_mutex_lock(&out_mu);
    printf("peer: done\n");
    fflush(stdout);
    exit(0);
}
