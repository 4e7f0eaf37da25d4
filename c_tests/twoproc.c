/*
 * twoproc: two SPs of one storage unit in two processes, over Unix-domain
 * sockets (the embedded default) or TCP (two configuration files).
 *
 *   twoproc twoproc_unix <peer-program>
 *   twoproc twoproc_tcp  <peer-program>
 *
 * This process is SP 0.A, peer.c is SP 0.B (protocol in twoproc_proto.h).
 * Phases: 10,000 synchronous sends, OBJECT_NAME_NOT_FOUND, 10,000 asynchronous
 * sends with a window (and, for both, credit-based flow control: see
 * twoproc_proto.h), the peer SIGKILLed with a window of sends outstanding
 * (every accepted send completes exactly once; then HOST_UNREACHABLE), the
 * peer restarted and the same session (never reopened) used again.
 */
#include "harness.h"
#include "twoproc_proto.h"

#define MAIN_COUNT 10000u
#define RESTART_COUNT 1000u
#define WINDOW 64
#define KILL_MAX 200000u

typedef struct send_rec {
    PVOID ptr;
    ULONG tag;
    int accepted;
    int completions;
    NTSTATUS status;
    MPS_HANDLE handle;
} send_rec;

static MPS_HANDLE main_session, harness_only;
static CMI_SP_ID peer_sp = {0, CMI_SP_B};
static int use_tcp;
static char peer_env[2][600];

/* Under h_mu. */
static struct {
    int outstanding;
    unsigned completed;
    unsigned mismatches;    /* a MessageSent whose Ptr, tag or handle is not the send's */
    unsigned free_failures; /* MpsFreeMessage of a returned buffer that failed */
    unsigned unexpected_received;
    int close_completed;
} st;

static NTSTATUS harness_callback(MPS_EVENT Event, PVOID Data)
{
    if (Event == MpsEventMessageSent) {
        PMPS_SEND_EVENT_DATA s = (PMPS_SEND_EVENT_DATA)Data;
        send_rec *r = (send_rec *)s->ContextHandle;
        NTSTATUS fs = MpsFreeMessage(s->Ptr);
        pthread_mutex_lock(&h_mu);
        if (r == NULL || r->ptr != s->Ptr || r->tag != s->SequenceTag ||
            r->handle != s->FilamentHandle)
            st.mismatches++;
        if (r != NULL) {
            r->completions++;
            r->status = s->TransmissionStatus;
        }
        st.free_failures += (fs != STATUS_SUCCESS);
        st.outstanding--;
        st.completed++;
        pthread_cond_broadcast(&h_cv);
        pthread_mutex_unlock(&h_mu);
    } else if (Event == MpsEventMessageReceived) {
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(Data));
        H_UPDATE(st.unexpected_received++);
    } else if (Event == MpsEventCloseCompleted) {
        H_UPDATE(st.close_completed++);
    }
    return STATUS_SUCCESS;
}

/* ---------------------------------------------------------------- peer */

static pid_t start_peer(void)
{
    const char *set[3];
    char *argv[3];
    if (h_peer_path == NULL)
        FAIL("usage: twoproc twoproc_unix|twoproc_tcp <peer-program>");
    set[0] = peer_env[0];
    set[1] = use_tcp ? NULL : peer_env[1];
    set[2] = NULL;
    argv[0] = (char *)h_peer_path;
    argv[1] = (char *)"stress";
    argv[2] = NULL;
    return h_spawn(h_peer_path, argv, set);
}

static void wait_for_ready(void)
{
    PMPS_RECEIVED_EVENT_DATA d = NULL;
    CHECK_STATUS(STATUS_SUCCESS, MpsWaitForPeer(&peer_sp, H_WAIT_SECONDS * 1000));
    CHECK_STATUS(STATUS_SUCCESS,
                 MpsSynchronousReceive(main_session, H_WAIT_SECONDS, PROTO_TAG_READY, &d));
    CHECK(d != NULL);
    CHECK_SP(0, CMI_SP_B, d->Sender);
    CHECK_PTR_EQ(main_session, d->FilamentHandle);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
}

static void send_control(ULONG tag, uint32_t value)
{
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = NULL;
    NTSTATUS s;
    CHECK_STATUS(STATUS_SUCCESS, MpsAllocateMessage(sizeof value, &buf));
    memcpy(buf, &value, sizeof value);
    info.ContextHandle = NULL;
    info.Destination = peer_sp;
    info.Ptr = buf;
    info.Size = sizeof value;
    info.SequenceTag = tag;
    s = MpsSynchronousSend(main_session, &info);
    if (s != STATUS_SUCCESS)
        FAIL("synchronous send of control message 0x%x: expected STATUS_SUCCESS, got %s",
             (unsigned)tag, h_status_name(s));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
}

static struct proto_report get_report(ULONG end_tag, uint32_t count)
{
    struct proto_report rep;
    PMPS_RECEIVED_EVENT_DATA d = NULL;
    send_control(end_tag, count);
    CHECK_STATUS(STATUS_SUCCESS,
                 MpsSynchronousReceive(main_session, H_WAIT_SECONDS, PROTO_TAG_REPORT, &d));
    CHECK_EQ_U(sizeof rep, d->Size);
    memcpy(&rep, d->Ptr, sizeof rep);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    fprintf(stderr, "peer report: sync %u (errors %u), async %u (errors %u), first error tag 0x%x kind %u\n",
            (unsigned)rep.sync_received, (unsigned)rep.sync_errors, (unsigned)rep.async_received,
            (unsigned)rep.async_errors, (unsigned)rep.first_error_tag, (unsigned)rep.first_error_kind);
    return rep;
}

/* -------------------------------------------------------- flow control */

static uint32_t acked; /* messages of the current phase the peer has processed */

/* Drop acknowledgements left over from an earlier phase or peer. */
static void drain_acks(void)
{
    static const ULONG tags[] = {PROTO_TAG_ACK_SYNC, PROTO_TAG_ACK_ASYNC};
    size_t i;
    for (i = 0; i < 2; i++) {
        PMPS_RECEIVED_EVENT_DATA d = NULL;
        while (MpsSynchronousReceive(main_session, 0, tags[i], &d) == STATUS_SUCCESS)
            CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    }
    acked = 0;
}

/* Before sending message number `sent` of the phase: stay within the credit. */
static void wait_credit(ULONG ack_tag, ULONG sent)
{
    while (sent >= acked + PROTO_CREDIT) {
        PMPS_RECEIVED_EVENT_DATA d = NULL;
        uint32_t v = 0;
        CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousReceive(main_session, H_WAIT_SECONDS, ack_tag, &d));
        CHECK_EQ_U(sizeof v, d->Size);
        memcpy(&v, d->Ptr, sizeof v);
        if (v > acked)
            acked = v;
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    }
}

/* -------------------------------------------------------------- phases */

static void sync_phase(ULONG count)
{
    PVOID buf = NULL;
    ULONG i;
    double t0 = h_now();
    struct proto_report rep;
    CHECK_STATUS(STATUS_SUCCESS, MpsAllocateMessage(8192, &buf));
    drain_acks();
    for (i = 0; i < count; i++) {
        MPS_SEND_MESSAGE_INFO info;
        ULONG size = proto_sync_size(i);
        NTSTATUS s;
        wait_credit(PROTO_TAG_ACK_SYNC, i);
        h_fill(buf, i + 1, size);
        info.ContextHandle = NULL;
        info.Destination = peer_sp;
        info.Ptr = buf;
        info.Size = size;
        info.SequenceTag = i + 1;
        s = MpsSynchronousSend(main_session, &info);
        if (s != STATUS_SUCCESS)
            FAIL("synchronous send %u (size %u): %s", (unsigned)i, (unsigned)size, h_status_name(s));
    }
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    fprintf(stderr, "%u synchronous sends in %.2f s\n", (unsigned)count, h_now() - t0);
    rep = get_report(PROTO_TAG_END_SYNC, count);
    CHECK_EQ_U(count, rep.sync_received);
    CHECK_EQ_U(0, rep.sync_errors);
}

static void async_phase(ULONG count)
{
    send_rec *recs = (send_rec *)calloc(count, sizeof *recs);
    ULONG i;
    double t0 = h_now();
    struct proto_report rep;
    CHECK(recs != NULL);
    H_UPDATE((st.completed = 0, st.outstanding = 0));
    drain_acks();
    for (i = 0; i < count; i++) {
        MPS_SEND_MESSAGE_INFO info;
        ULONG size = proto_async_size(i);
        NTSTATUS s;
        wait_credit(PROTO_TAG_ACK_ASYNC, i);
        WAIT_UNTIL(st.outstanding < WINDOW, H_WAIT_SECONDS);
        recs[i].ptr = h_alloc_filled(i + 1, size);
        recs[i].tag = i + 1;
        recs[i].handle = main_session;
        recs[i].accepted = 1;
        info.ContextHandle = &recs[i];
        info.Destination = peer_sp;
        info.Ptr = recs[i].ptr;
        info.Size = size;
        info.SequenceTag = i + 1;
        H_UPDATE(st.outstanding++);
        s = MpsAsynchronousSend(main_session, &info);
        if (s != STATUS_PENDING)
            FAIL("asynchronous send %u (size %u): %s", (unsigned)i, (unsigned)size, h_status_name(s));
    }
    WAIT_UNTIL(st.completed >= count, H_WAIT_SECONDS);
    fprintf(stderr, "%u asynchronous sends in %.2f s\n", (unsigned)count, h_now() - t0);
    for (i = 0; i < count; i++) {
        if (recs[i].completions != 1)
            FAIL("async send %u completed %d times", (unsigned)i, recs[i].completions);
        if (recs[i].status != STATUS_SUCCESS)
            FAIL("async send %u completed with %s", (unsigned)i, h_status_name(recs[i].status));
    }
    CHECK_EQ_U(0, st.mismatches);
    CHECK_EQ_U(0, st.free_failures);
    rep = get_report(PROTO_TAG_END_ASYNC, count);
    CHECK_EQ_U(count, rep.async_received);
    CHECK_EQ_U(0, rep.async_errors);
    free(recs);
}

static void name_not_found_phase(void)
{
    MPS_SEND_MESSAGE_INFO info;
    send_rec rec;
    PVOID buf = h_alloc_filled(1, 32);
    memset(&rec, 0, sizeof rec);
    /* Nobody opened PROTO_HARNESS_ONLY_MAILBOX at the peer. */
    info.ContextHandle = NULL;
    info.Destination = peer_sp;
    info.Ptr = buf;
    info.Size = 32;
    info.SequenceTag = 1;
    CHECK_STATUS(STATUS_OBJECT_NAME_NOT_FOUND, MpsSynchronousSend(harness_only, &info));
    /* Asynchronously: accepted here, rejected there, told in MpsEventMessageSent. */
    rec.ptr = buf;
    rec.tag = 1;
    rec.handle = harness_only;
    info.ContextHandle = &rec;
    H_UPDATE((st.completed = 0, st.outstanding = 1));
    CHECK_STATUS(STATUS_PENDING, MpsAsynchronousSend(harness_only, &info));
    WAIT_UNTIL(st.completed >= 1, H_WAIT_SECONDS);
    CHECK_EQ_U(1, rec.completions);
    CHECK_STATUS(STATUS_OBJECT_NAME_NOT_FOUND, rec.status);
    CHECK_EQ_U(0, st.mismatches);
}

static void kill_phase(pid_t peer)
{
    send_rec *recs = (send_rec *)calloc(KILL_MAX, sizeof *recs);
    ULONG k = 0, j, accepted = 0, successes = 0, disconnected = 0, first_failed = 0;
    int unreachable = 0, status;
    double t0 = h_now();
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf;
    CHECK(recs != NULL);
    H_UPDATE((st.completed = 0, st.outstanding = 0));
    /* Keep a window of asynchronous sends outstanding while the peer dies. */
    while (!unreachable) {
        ULONG size = proto_kill_size(k);
        NTSTATUS s;
        if (k >= KILL_MAX || h_now() - t0 > H_WAIT_SECONDS)
            FAIL("no STATUS_HOST_UNREACHABLE after %u sends in %.1f s", (unsigned)k, h_now() - t0);
        WAIT_UNTIL(st.outstanding < WINDOW, H_WAIT_SECONDS);
        recs[k].ptr = h_alloc_filled(PROTO_KILL_BASE + k, size);
        recs[k].tag = PROTO_KILL_BASE + k;
        recs[k].handle = main_session;
        info.ContextHandle = &recs[k];
        info.Destination = peer_sp;
        info.Ptr = recs[k].ptr;
        info.Size = size;
        info.SequenceTag = PROTO_KILL_BASE + k;
        H_UPDATE(st.outstanding++);
        s = MpsAsynchronousSend(main_session, &info);
        if (s == STATUS_PENDING) {
            recs[k].accepted = 1;
            accepted++;
        } else {
            H_UPDATE(st.outstanding--);
            CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(recs[k].ptr));
            if (s != STATUS_HOST_UNREACHABLE)
                FAIL("kill phase: send %u refused with %s", (unsigned)k, h_status_name(s));
            unreachable = 1;
        }
        k++;
    }
    /* Every accepted send completes exactly once. */
    WAIT_UNTIL(st.completed >= accepted, H_WAIT_SECONDS);
    for (j = 0; j < k; j++) {
        if (!recs[j].accepted) {
            CHECK_EQ_U(0, recs[j].completions);
            continue;
        }
        if (recs[j].completions != 1)
            FAIL("kill phase: send %u completed %d times", (unsigned)j, recs[j].completions);
        if (recs[j].status == STATUS_SUCCESS) {
            /* Confirmations come back in order on one link: successes are a prefix. */
            if (disconnected > 0)
                FAIL("kill phase: send %u succeeded after send %u was disconnected",
                     (unsigned)j, (unsigned)first_failed);
            successes++;
        } else if (recs[j].status == STATUS_CONNECTION_DISCONNECTED) {
            if (disconnected++ == 0)
                first_failed = j;
        } else {
            FAIL("kill phase: send %u completed with %s", (unsigned)j, h_status_name(recs[j].status));
        }
    }
    CHECK_EQ_U(0, st.mismatches);
    CHECK_EQ_U(0, st.free_failures);
    fprintf(stderr, "kill phase: %u sends, %u accepted, %u confirmed, %u disconnected, in %.2f s\n",
            (unsigned)k, (unsigned)accepted, (unsigned)successes, (unsigned)disconnected, h_now() - t0);
    /* With at most WINDOW outstanding, the peer could only see message
     * PROTO_KILL_AFTER after this many confirmations had come back. */
    CHECK(successes >= PROTO_KILL_AFTER + 1 - WINDOW);
    CHECK_EQ_U(accepted, successes + disconnected);

    status = h_reap(peer, H_WAIT_SECONDS);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* Down until the peer comes back: refused at call time, no callback. */
    buf = h_alloc_filled(1, 16);
    info.ContextHandle = NULL;
    info.Ptr = buf;
    info.Size = 16;
    info.SequenceTag = 1;
    CHECK_STATUS(STATUS_HOST_UNREACHABLE, MpsSynchronousSend(main_session, &info));
    CHECK_STATUS(STATUS_HOST_UNREACHABLE, MpsAsynchronousSend(main_session, &info));
    CHECK_STATUS(STATUS_TIMEOUT, MpsWaitForPeer(&peer_sp, 100));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    free(recs);
}

static void finish_peer(pid_t peer)
{
    int status;
    send_control(PROTO_TAG_EXIT, 0);
    status = h_reap(peer, H_WAIT_SECONDS);
    CHECK(WIFEXITED(status));
    CHECK_EQ_U(0, WEXITSTATUS(status));
}

static void close_session(MPS_HANDLE h)
{
    int before;
    NTSTATUS s;
    H_READ(st.close_completed, before);
    s = MpsClose(h);
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_PENDING, s);
    if (s == STATUS_PENDING)
        WAIT_UNTIL(st.close_completed == before + 1, H_WAIT_SECONDS);
    CHECK_STATUS(STATUS_INVALID_HANDLE, MpsClose(h));
}

static void run(int tcp)
{
    CMI_SP_ID local, peer;
    pid_t pid;
    use_tcp = tcp;
    if (tcp) {
        char a_cfg[512], b_cfg[512], text[1024];
        unsigned pa = h_free_tcp_port(), pb = h_free_tcp_port();
        while (pb == pa)
            pb = h_free_tcp_port();
        snprintf(text, sizeof text,
                 "# SP A of the two-process TCP test\n"
                 "sp = \"0.A\"\n"
                 "listen = \"tcp:127.0.0.1:%u\"\n"
                 "\n[[peer]]\nsp = \"0.B\"\naddress = \"tcp:127.0.0.1:%u\"\n"
                 "\n[heartbeat]\ninterval_ms = 100\ndead_peer_timeout_ms = 2000\n"
                 "\n[reconnect]\ninitial_backoff_ms = 20\nmax_backoff_ms = 250\n",
                 pa, pb);
        h_write_file("sp-0A.toml", text, a_cfg, sizeof a_cfg);
        snprintf(text, sizeof text,
                 "# SP B of the two-process TCP test\n"
                 "sp = \"0.B\"\n"
                 "listen = \"tcp:127.0.0.1:%u\"\n"
                 "\n[[peer]]\nsp = \"0.A\"\naddress = \"tcp:127.0.0.1:%u\"\n"
                 "\n[heartbeat]\ninterval_ms = 100\ndead_peer_timeout_ms = 2000\n"
                 "\n[reconnect]\ninitial_backoff_ms = 20\nmax_backoff_ms = 250\n",
                 pb, pa);
        h_write_file("sp-0B.toml", text, b_cfg, sizeof b_cfg);
        snprintf(peer_env[0], sizeof peer_env[0], "MPS_CONFIG=%s", b_cfg);
        CHECK_STATUS(STATUS_SUCCESS, MpsInitialize(a_cfg));
    } else {
        snprintf(peer_env[0], sizeof peer_env[0], "MPS_SP=0.B");
        snprintf(peer_env[1], sizeof peer_env[1], "MPS_RUNTIME_DIR=%s", h_runtime_dir);
        CHECK_STATUS(STATUS_SUCCESS, MpsInitialize(NULL));
    }
    CHECK_STATUS(STATUS_SUCCESS, MpsGetSpId(&local, &peer));
    CHECK_SP(0, CMI_SP_A, local);
    CHECK_SP(0, CMI_SP_B, peer);

    /* The harness's mailbox is open before the peer starts. */
    main_session = h_open(harness_callback, PROTO_MAILBOX, NULL);
    harness_only = h_open(harness_callback, PROTO_HARNESS_ONLY_MAILBOX, NULL);
    pid = start_peer();
    wait_for_ready();

    sync_phase(MAIN_COUNT);
    name_not_found_phase();
    async_phase(MAIN_COUNT);
    kill_phase(pid);

    /* The peer comes back; the link comes back by itself; same session. */
    pid = start_peer();
    wait_for_ready();
    sync_phase(RESTART_COUNT);
    async_phase(RESTART_COUNT);
    finish_peer(pid);

    CHECK_EQ_U(0, st.unexpected_received);
    close_session(harness_only);
    close_session(main_session);
}

static void twoproc_unix(void) { run(0); }
static void twoproc_tcp(void) { run(1); }

int main(int argc, char **argv)
{
    static const h_case cases[] = {
        H_CASE(twoproc_unix),
        H_CASE(twoproc_tcp),
    };
    return harness_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
