/*
 * async: MpsAsynchronousSend, its MpsEventMessageSent, and MpsEventMessageReceived
 * (SPEC section 4); asynchronous messages to a NULL-callback session (with a
 * peer process, since a loopback would need the NULL-callback session to send
 * asynchronously itself, which it cannot).
 */
#include "harness.h"
#include "twoproc_proto.h"

#define ORDER_COUNT 1000u

static int context_marker;
static int send_marker;

static struct {
    int sent;
    MPS_SEND_EVENT_DATA sent_data;
    int received;
    MPS_RECEIVED_EVENT_DATA recv_data;
    int recv_content_ok;
    unsigned char recv_copy[64];
    ULONG order[ORDER_COUNT];
    int order_n;
    int free_failures;
    int closed;
    pthread_t callback_thread;
} ev;

/*
 * Closes a session whose callbacks may still be running: the counters a
 * callback updates become visible before it returns, and a close while one
 * runs is pending (SPEC 4, issue 8.2), completed by MpsEventCloseCompleted
 * once it has returned.
 */
static void close_after_callbacks(MPS_HANDLE h)
{
    NTSTATUS s = MpsClose(h);
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_PENDING, s);
    if (s == STATUS_PENDING)
        WAIT_UNTIL(ev.closed == 1, H_WAIT_SECONDS);
}

static NTSTATUS basic_callback(MPS_EVENT Event, PVOID Data)
{
    if (Event == MpsEventMessageSent) {
        PMPS_SEND_EVENT_DATA s = (PMPS_SEND_EVENT_DATA)Data;
        H_UPDATE((ev.sent_data = *s, ev.sent++, ev.callback_thread = pthread_self()));
    } else if (Event == MpsEventMessageReceived) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        int ok = r->Size <= sizeof ev.recv_copy && h_verify(r->Ptr, r->SequenceTag, r->Size) < 0;
        H_UPDATE((ev.recv_data = *r, ev.recv_content_ok = ok, ev.received++));
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(r));
    } else if (Event == MpsEventCloseCompleted) {
        H_UPDATE(ev.closed++);
    }
    return STATUS_SUCCESS;
}

static void async_loopback_basic(void)
{
    MPS_HANDLE h = NULL;
    WCHAR name[] = L"Mirror";
    MPS_SEND_MESSAGE_INFO info;
    CMI_SP_ID local = h_local_sp();
    PVOID buf = NULL;
    NTSTATUS status;

    status = MpsOpen(basic_callback, 0, H_DOMAIN, name, &context_marker, &h);
    CHECK_STATUS(STATUS_SUCCESS, status);
    status = MpsAllocateMessage(48, &buf);
    CHECK_STATUS(STATUS_SUCCESS, status);
    h_fill(buf, 42, 48);

    info.ContextHandle = &send_marker;
    info.Destination = local;
    info.Ptr = buf;
    info.Size = 48;
    info.SequenceTag = 42;
    status = MpsAsynchronousSend(h, &info);
    CHECK_STATUS(STATUS_PENDING, status);

    WAIT_UNTIL(ev.sent >= 1 && ev.received >= 1, H_WAIT_SECONDS);
    /* MpsEventMessageSent echoes the send. */
    CHECK_STATUS(STATUS_SUCCESS, ev.sent_data.TransmissionStatus);
    CHECK_PTR_EQ(&send_marker, ev.sent_data.ContextHandle);
    CHECK_EQ_U(42, ev.sent_data.SequenceTag);
    CHECK_PTR_EQ(buf, ev.sent_data.Ptr);
    CHECK_PTR_EQ(h, ev.sent_data.FilamentHandle);
    /* Callbacks run on a library thread, never inside our own call. */
    CHECK(!pthread_equal(ev.callback_thread, h_main_thread));
    /* MpsEventMessageReceived carries the message. */
    CHECK(ev.recv_content_ok);
    CHECK_EQ_U(48, ev.recv_data.Size);
    CHECK_EQ_U(42, ev.recv_data.SequenceTag);
    CHECK_SP(local.StorageUnit, local.Sp, ev.recv_data.Sender);
    CHECK_STATUS(STATUS_SUCCESS, ev.recv_data.SynchronousStatus);
    CHECK_PTR_EQ(h, ev.recv_data.FilamentHandle);
    CHECK_PTR_EQ(&context_marker, ev.recv_data.Context);
    CHECK(ev.recv_data.Ptr != buf);

    /* The buffer is ours again after MessageSent. */
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    h_round_trip_barrier();
    CHECK_EQ_U(1, ev.sent);
    CHECK_EQ_U(1, ev.received);
    close_after_callbacks(h);
}

static NTSTATUS order_callback(MPS_EVENT Event, PVOID Data)
{
    if (Event == MpsEventMessageSent) {
        PMPS_SEND_EVENT_DATA s = (PMPS_SEND_EVENT_DATA)Data;
        NTSTATUS fs;
        CHECK_STATUS(STATUS_SUCCESS, s->TransmissionStatus);
        CHECK_EQ_U((uintptr_t)s->ContextHandle, s->SequenceTag);
        fs = MpsFreeMessage(s->Ptr);
        H_UPDATE((ev.free_failures += (fs != STATUS_SUCCESS), ev.sent++));
    } else if (Event == MpsEventMessageReceived) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        ULONG tag = r->SequenceTag;
        CHECK_EQ_U(tag % 251u, r->Size);
        CHECK(h_verify(r->Ptr, tag, r->Size) < 0);
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(r));
        H_UPDATE((ev.order_n < (int)ORDER_COUNT ? (void)(ev.order[ev.order_n] = tag) : (void)0,
                  ev.order_n++));
    } else if (Event == MpsEventCloseCompleted) {
        H_UPDATE(ev.closed++);
    }
    return STATUS_SUCCESS;
}

static void async_order_preserved(void)
{
    MPS_HANDLE h = h_open(order_callback, L"Mirror", NULL);
    CMI_SP_ID local = h_local_sp();
    ULONG i;
    for (i = 1; i <= ORDER_COUNT; i++) {
        MPS_SEND_MESSAGE_INFO info;
        PVOID buf = h_alloc_filled(i, i % 251u);
        h_info(&info, (PVOID)(uintptr_t)i, local, buf, i % 251u, i);
        CHECK_STATUS(STATUS_PENDING, MpsAsynchronousSend(h, &info));
    }
    WAIT_UNTIL(ev.sent >= (int)ORDER_COUNT && ev.order_n >= (int)ORDER_COUNT, H_WAIT_SECONDS);
    for (i = 0; i < ORDER_COUNT; i++)
        if (ev.order[i] != i + 1)
            FAIL("message %u arrived in position %u", (unsigned)ev.order[i], (unsigned)i);
    CHECK_EQ_U(0, ev.free_failures);
    h_round_trip_barrier();
    CHECK_EQ_U(ORDER_COUNT, ev.sent);
    CHECK_EQ_U(ORDER_COUNT, ev.order_n);
    close_after_callbacks(h);
}

static void async_null_callback_cannot_send(void)
{
    MPS_HANDLE h = h_open(NULL, L"UserModeClient", NULL);
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = h_alloc_filled(1, 16);
    PMPS_RECEIVED_EVENT_DATA d;
    h_info(&info, NULL, h_local_sp(), buf, 16, 1);
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsAsynchronousSend(h, &info));
    /* Refused: nothing was queued, and the buffer was never lent. */
    CHECK_STATUS(STATUS_TIMEOUT, MpsSynchronousReceive(h, 0, 0, &d));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

/*
 * A NULL-callback session receives asynchronous messages through
 * MpsSynchronousReceive. The sender is a peer process (SP 0.B) that opened
 * the same mailbox with a callback.
 */
static void async_null_callback_session_receives_via_queue(void)
{
    MPS_HANDLE h;
    PMPS_RECEIVED_EVENT_DATA d;
    pid_t pid;
    int status;
    ULONG i;
    char env_sp[] = "MPS_SP=0.B";
    char env_dir[400];
    const char *set[3];
    char *argv[3];
    if (h_peer_path == NULL)
        FAIL("usage: async async_null_callback_session_receives_via_queue <peer-program>");
    h = h_open(NULL, PROTO_NULLCB_MAILBOX, NULL);
    snprintf(env_dir, sizeof env_dir, "MPS_RUNTIME_DIR=%s", h_runtime_dir);
    set[0] = env_sp;
    set[1] = env_dir;
    set[2] = NULL;
    argv[0] = (char *)h_peer_path;
    argv[1] = (char *)"nullcb";
    argv[2] = NULL;
    pid = h_spawn(h_peer_path, argv, set);

    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousReceive(h, H_WAIT_SECONDS, PROTO_TAG_READY, &d));
    CHECK_SP(0, CMI_SP_B, d->Sender);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));

    for (i = 0; i < PROTO_NULLCB_COUNT; i++) {
        d = h_receive_checked(h, i + 1, proto_nullcb_size(i));
        CHECK_SP(0, CMI_SP_B, d->Sender);
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    }
    /* The peer's verdict: every one of its sends completed with STATUS_SUCCESS. */
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousReceive(h, H_WAIT_SECONDS, PROTO_TAG_DONE, &d));
    CHECK_EQ_U(sizeof(uint32_t), d->Size);
    {
        uint32_t ok;
        memcpy(&ok, d->Ptr, sizeof ok);
        CHECK_EQ_U(PROTO_NULLCB_COUNT, ok);
    }
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    status = h_reap(pid, H_WAIT_SECONDS);
    CHECK(WIFEXITED(status));
    CHECK_EQ_U(0, WEXITSTATUS(status));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

int main(int argc, char **argv)
{
    static const h_case cases[] = {
        H_CASE(async_loopback_basic),
        H_CASE(async_order_preserved),
        H_CASE(async_null_callback_cannot_send),
        H_CASE(async_null_callback_session_receives_via_queue),
    };
    return harness_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
