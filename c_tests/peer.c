/*
 * peer: the other SP (0.B) of the two-process tests. Started by the harness
 * with its environment (MPS_SP + MPS_RUNTIME_DIR, or MPS_CONFIG) already set.
 *
 *   peer stress   open PROTO_MAILBOX, wait for SP 0.A, send READY; check every
 *                 synchronous (main thread) and asynchronous (callback) data
 *                 message for order and content; answer END_SYNC / END_ASYNC
 *                 with a REPORT; SIGKILL itself on kill-phase message
 *                 PROTO_KILL_AFTER; on EXIT close, shut down, exit 0 if clean.
 *   peer nullcb   open PROTO_NULLCB_MAILBOX, wait for SP 0.A, send READY, send
 *                 PROTO_NULLCB_COUNT asynchronous messages, wait for all their
 *                 MpsEventMessageSent, send DONE with the number that succeeded.
 *
 * Exit status: 0 clean, 1 a check failed, 3 the harness went silent.
 */
#include "harness.h"
#include "twoproc_proto.h"

static MPS_HANDLE session;
static CMI_SP_ID harness_sp = {0, CMI_SP_A};

/* Under h_mu. */
static struct proto_report report;
static uint32_t nullcb_sent, nullcb_ok;

static void send_control(ULONG tag, const void *payload, ULONG size);

static void note_error(uint32_t tag, uint32_t kind)
{
    if (report.first_error_tag == 0) {
        report.first_error_tag = tag;
        report.first_error_kind = kind;
    }
    fprintf(stderr, "peer: bad message tag 0x%x (check %u)\n", (unsigned)tag, (unsigned)kind);
}

static int sender_is_harness(const MPS_RECEIVED_EVENT_DATA *d)
{
    return d->Sender.StorageUnit == harness_sp.StorageUnit && d->Sender.Sp == harness_sp.Sp;
}

static NTSTATUS peer_callback(MPS_EVENT Event, PVOID Data)
{
    if (Event == MpsEventMessageReceived) {
        PMPS_RECEIVED_EVENT_DATA d = (PMPS_RECEIVED_EVENT_DATA)Data;
        ULONG tag = d->SequenceTag;
        uint32_t n_async;
        if (tag >= PROTO_KILL_BASE && tag < PROTO_TAG_CONTROL) {
            ULONG k = tag - PROTO_KILL_BASE;
            if (d->Size != proto_kill_size(k) || h_verify(d->Ptr, tag, d->Size) >= 0)
                FAIL("kill-phase message %u is corrupt", (unsigned)k);
            if (k >= PROTO_KILL_AFTER) {
                fprintf(stderr, "peer: kill-phase message %u received: SIGKILL\n", (unsigned)k);
                fflush(stderr);
                kill(getpid(), SIGKILL);
            }
        } else {
            pthread_mutex_lock(&h_mu);
            if (tag != report.async_received + 1)
                note_error(tag, 1), report.async_errors++;
            else if (d->Size != proto_async_size(tag - 1))
                note_error(tag, 2), report.async_errors++;
            else if (h_verify(d->Ptr, tag, d->Size) >= 0)
                note_error(tag, 3), report.async_errors++;
            else if (!sender_is_harness(d) || d->FilamentHandle != session)
                note_error(tag, 4), report.async_errors++;
            report.async_received++;
            n_async = report.async_received;
            pthread_cond_broadcast(&h_cv);
            pthread_mutex_unlock(&h_mu);
            /* A synchronous send from inside the callback (SPEC section 5). */
            if (n_async % PROTO_ACK_EVERY == 0)
                send_control(PROTO_TAG_ACK_ASYNC, &n_async, sizeof n_async);
        }
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    } else if (Event == MpsEventMessageSent) {
        PMPS_SEND_EVENT_DATA s = (PMPS_SEND_EVENT_DATA)Data;
        NTSTATUS st = s->TransmissionStatus;
        if (st != STATUS_SUCCESS)
            fprintf(stderr, "peer: send %u completed with %s\n", (unsigned)s->SequenceTag,
                    h_status_name(st));
        CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(s->Ptr));
        H_UPDATE((nullcb_sent++, nullcb_ok += (st == STATUS_SUCCESS)));
    }
    return STATUS_SUCCESS;
}

static void send_control(ULONG tag, const void *payload, ULONG size)
{
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = NULL;
    CHECK_STATUS(STATUS_SUCCESS, MpsAllocateMessage(size, &buf));
    if (size > 0)
        memcpy(buf, payload, size);
    info.ContextHandle = NULL;
    info.Destination = harness_sp;
    info.Ptr = buf;
    info.Size = size;
    info.SequenceTag = tag;
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousSend(session, &info));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
}

static void open_and_greet(const wchar_t *mailbox)
{
    wchar_t name[MPS_MAX_MAILBOX_NAME + 1];
    wcsncpy(name, mailbox, MPS_MAX_MAILBOX_NAME);
    name[MPS_MAX_MAILBOX_NAME] = L'\0';
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(peer_callback, H_CONDUIT, H_DOMAIN, name, NULL, &session));
    CHECK_STATUS(STATUS_SUCCESS, MpsWaitForPeer(&harness_sp, H_WAIT_SECONDS * 1000));
    send_control(PROTO_TAG_READY, "RDY", 3);
}

static void finish(int clean)
{
    NTSTATUS st = MpsClose(session);
    if (st != STATUS_SUCCESS && st != STATUS_PENDING)
        FAIL("MpsClose: %s", h_status_name(st));
    (void)MpsShutdown();
    fflush(NULL);
    _exit(clean ? 0 : 1);
}

static uint32_t payload_u32(const MPS_RECEIVED_EVENT_DATA *d)
{
    uint32_t v = 0;
    if (d->Size == sizeof v)
        memcpy(&v, d->Ptr, sizeof v);
    return v;
}

static void run_stress(void)
{
    open_and_greet(PROTO_MAILBOX);
    for (;;) {
        PMPS_RECEIVED_EVENT_DATA d = NULL;
        NTSTATUS st = MpsSynchronousReceive(session, 120, 0, &d);
        ULONG tag;
        uint32_t n_sync;
        if (st == STATUS_TIMEOUT) {
            fprintf(stderr, "peer: nothing from the harness for 120 s, giving up\n");
            _exit(3);
        }
        CHECK_STATUS(STATUS_SUCCESS, st);
        tag = d->SequenceTag;
        if (tag < PROTO_TAG_CONTROL) {
            /* Only this thread touches the sync counters, but the report is
             * shared with the callback: keep it under the lock. */
            pthread_mutex_lock(&h_mu);
            if (tag != report.sync_received + 1)
                note_error(tag, 11), report.sync_errors++;
            else if (d->Size != proto_sync_size(tag - 1))
                note_error(tag, 12), report.sync_errors++;
            else if (h_verify(d->Ptr, tag, d->Size) >= 0)
                note_error(tag, 13), report.sync_errors++;
            else if (!sender_is_harness(d) || d->FilamentHandle != session ||
                     d->SynchronousStatus != STATUS_SUCCESS)
                note_error(tag, 14), report.sync_errors++;
            report.sync_received++;
            n_sync = report.sync_received;
            pthread_mutex_unlock(&h_mu);
            if (n_sync % PROTO_ACK_EVERY == 0)
                send_control(PROTO_TAG_ACK_SYNC, &n_sync, sizeof n_sync);
        } else if (tag == PROTO_TAG_END_SYNC || tag == PROTO_TAG_END_ASYNC) {
            struct proto_report copy;
            uint32_t n = payload_u32(d);
            if (tag == PROTO_TAG_END_ASYNC) /* the callback may still be catching up */
                WAIT_UNTIL(report.async_received >= n, H_WAIT_SECONDS);
            H_READ(report, copy);
            send_control(PROTO_TAG_REPORT, &copy, sizeof copy);
        } else if (tag == PROTO_TAG_EXIT) {
            struct proto_report copy;
            CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
            H_READ(report, copy);
            finish(copy.sync_errors == 0 && copy.async_errors == 0);
        } else {
            FAIL("unexpected control tag 0x%x", (unsigned)tag);
        }
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    }
}

static void run_nullcb(void)
{
    ULONG i;
    uint32_t ok;
    open_and_greet(PROTO_NULLCB_MAILBOX);
    for (i = 0; i < PROTO_NULLCB_COUNT; i++) {
        MPS_SEND_MESSAGE_INFO info;
        ULONG size = proto_nullcb_size(i);
        PVOID buf = h_alloc_filled(i + 1, size);
        info.ContextHandle = NULL;
        info.Destination = harness_sp;
        info.Ptr = buf;
        info.Size = size;
        info.SequenceTag = i + 1;
        CHECK_STATUS(STATUS_PENDING, MpsAsynchronousSend(session, &info));
    }
    WAIT_UNTIL(nullcb_sent >= PROTO_NULLCB_COUNT, H_WAIT_SECONDS);
    H_READ(nullcb_ok, ok);
    send_control(PROTO_TAG_DONE, &ok, sizeof ok);
    finish(ok == PROTO_NULLCB_COUNT);
}

int main(int argc, char **argv)
{
    pthread_condattr_t ca;
    h_case_name = "peer";
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h_cv, &ca);
    h_main_thread = pthread_self();
    if (argc == 2 && strcmp(argv[1], "stress") == 0)
        run_stress();
    else if (argc == 2 && strcmp(argv[1], "nullcb") == 0)
        run_nullcb();
    fprintf(stderr, "usage: peer stress|nullcb\n");
    return 2;
}
