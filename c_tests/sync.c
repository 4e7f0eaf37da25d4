/*
 * sync: MpsSynchronousSend / MpsSynchronousReceive / MpsReleaseReceivedMessage
 * over the loopback (a session sending to the local SP's own id reaches itself).
 */
#include "harness.h"

static int context_marker;
static int callback_events;

static NTSTATUS callback(MPS_EVENT Event, PVOID Data)
{
    if (Event == MpsEventMessageReceived)
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(Data));
    H_UPDATE(callback_events++);
    return STATUS_SUCCESS;
}

static void sync_loopback_basic(void)
{
    MPS_HANDLE h = NULL;
    WCHAR name[] = L"Mirror";
    MPS_SEND_MESSAGE_INFO info;
    PMPS_RECEIVED_EVENT_DATA d = NULL;
    CMI_SP_ID local = h_local_sp();
    PVOID buf = NULL;
    NTSTATUS status;

    status = MpsOpen(NULL, 0, H_DOMAIN, name, &context_marker, &h);
    CHECK_STATUS(STATUS_SUCCESS, status);
    status = MpsAllocateMessage(256, &buf);
    CHECK_STATUS(STATUS_SUCCESS, status);
    h_fill(buf, 77, 200);

    info.ContextHandle = NULL;
    info.Destination = local;
    info.Ptr = buf;
    info.Size = 200; /* less than the buffer: allowed */
    info.SequenceTag = 77;
    status = MpsSynchronousSend(h, &info);
    CHECK_STATUS(STATUS_SUCCESS, status);
    /* The message was copied: scribbling on the buffer now changes nothing. */
    memset(buf, 0, 256);

    status = MpsSynchronousReceive(h, 10, 0, &d);
    CHECK_STATUS(STATUS_SUCCESS, status);
    CHECK(d != NULL);
    CHECK(d->Ptr != NULL && d->Ptr != buf);
    CHECK_EQ_U(200, d->Size);
    CHECK(h_verify(d->Ptr, 77, 200) < 0);
    CHECK_SP(local.StorageUnit, local.Sp, d->Sender);
    CHECK_EQ_U(77, d->SequenceTag);
    CHECK_STATUS(STATUS_SUCCESS, d->SynchronousStatus);
    CHECK_PTR_EQ(&context_marker, d->Context);
    CHECK_PTR_EQ(h, d->FilamentHandle);

    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    /* Nothing else was queued. */
    CHECK_STATUS(STATUS_TIMEOUT, MpsSynchronousReceive(h, 0, 0, &d));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void sync_zero_length(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d1, d2;
    h_loopback_sync_send(h, 1, 0);
    h_loopback_sync_send(h, 2, 0);
    d1 = h_receive_checked(h, 1, 0);
    d2 = h_receive_checked(h, 2, 0);
    CHECK(d1->Ptr != NULL && d2->Ptr != NULL);
    CHECK(d1->Ptr != d2->Ptr);
    CHECK(d1 != d2);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d1->Ptr));
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d2));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void sync_large_message(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d;
    h_loopback_sync_send(h, 3, 1048576); /* the default maximum message size */
    d = h_receive_checked(h, 3, 1048576);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void sync_release_by_ptr(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d;
    PVOID payload;
    h_loopback_sync_send(h, 1, 40);
    d = h_receive_checked(h, 1, 40);
    payload = d->Ptr;
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(payload));
    /* Released once, whichever pointer names it. */
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage(payload));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void sync_release_by_event_data(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d;
    PVOID payload;
    h_loopback_sync_send(h, 1, 40);
    d = h_receive_checked(h, 1, 40);
    payload = d->Ptr;
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage(payload));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void sync_double_release(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d;
    h_loopback_sync_send(h, 1, 40);
    d = h_receive_checked(h, 1, 40);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void sync_release_foreign_pointer(void)
{
    char on_stack[48];
    void *heap = malloc(48);
    PVOID ours = h_alloc_filled(1, 48); /* a send buffer is not a received message */
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d;
    CHECK(heap != NULL);
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage(heap));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage(on_stack));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage(ours));
    h_loopback_sync_send(h, 1, 48);
    d = h_receive_checked(h, 1, 48);
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage((char *)d->Ptr + 1));
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(ours));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
    free(heap);
}

static void sync_fifo_order(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    ULONG i;
    for (i = 1; i <= 100; i++)
        h_loopback_sync_send(h, i, i * 5u);
    for (i = 1; i <= 100; i++) {
        PMPS_RECEIVED_EVENT_DATA d = h_receive_checked(h, i, i * 5u);
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    }
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

/* Synchronous-tagged messages to a session with a callback still go to its queue. */
static void sync_callback_session_queues_sync_messages(void)
{
    MPS_HANDLE h = h_open(callback, L"Mirror", &context_marker);
    PMPS_RECEIVED_EVENT_DATA d;
    h_loopback_sync_send(h, 9, 12);
    d = h_receive_checked(h, 9, 12);
    CHECK_PTR_EQ(&context_marker, d->Context);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    h_round_trip_barrier();
    CHECK_EQ_U(0, callback_events);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

/* Several threads receiving on one session: each message goes to exactly one. */
#define RX_THREADS 4
#define RX_MESSAGES 400
#define TAG_STOP 0xFFFF0000u

static MPS_HANDLE multi_h;
static int delivered[RX_MESSAGES + 1];
static int per_thread[RX_THREADS];

static void *multi_receiver(void *arg)
{
    int me = (int)(intptr_t)arg;
    ULONG last = 0;
    for (;;) {
        PMPS_RECEIVED_EVENT_DATA d = NULL;
        ULONG tag;
        CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousReceive(multi_h, H_WAIT_SECONDS, 0, &d));
        CHECK(d != NULL);
        tag = d->SequenceTag;
        if (tag == TAG_STOP) {
            CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
            return NULL;
        }
        CHECK(tag >= 1 && tag <= RX_MESSAGES);
        CHECK(h_verify(d->Ptr, tag, d->Size) < 0);
        CHECK_EQ_U(tag % 97u, d->Size);
        /* One receiver sees its messages in arrival order. */
        CHECK(tag > last);
        last = tag;
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
        H_UPDATE((delivered[tag]++, per_thread[me]++));
    }
}

static void sync_multiple_receivers_distinct_messages(void)
{
    pthread_t t[RX_THREADS];
    int i, total = 0;
    multi_h = h_open(NULL, L"Mirror", NULL);
    for (i = 0; i < RX_THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, multi_receiver, (void *)(intptr_t)i) == 0);
    for (i = 1; i <= RX_MESSAGES; i++)
        h_loopback_sync_send(multi_h, (ULONG)i, (ULONG)i % 97u);
    for (i = 0; i < RX_THREADS; i++)
        h_loopback_sync_send(multi_h, TAG_STOP, 0);
    for (i = 0; i < RX_THREADS; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    for (i = 1; i <= RX_MESSAGES; i++)
        if (delivered[i] != 1)
            FAIL("message %d delivered %d times", i, delivered[i]);
    for (i = 0; i < RX_THREADS; i++)
        total += per_thread[i];
    CHECK_EQ_U(RX_MESSAGES, total);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(multi_h));
}

/* A full receive queue rejects the message to its sender (SPEC section 5). */
static void sync_queue_full_rejects(void)
{
    char path[512];
    MPS_HANDLE h;
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf;
    PMPS_RECEIVED_EVENT_DATA d;
    int i;
    h_write_solo_config("[limits]\nsession_queue_depth = 8\n", path, sizeof path);
    CHECK_STATUS(STATUS_SUCCESS, MpsInitialize(path));
    h = h_open(NULL, L"Mirror", NULL);
    for (i = 1; i <= 8; i++)
        h_loopback_sync_send(h, (ULONG)i, 16);
    buf = h_alloc_filled(9, 16);
    h_info(&info, NULL, h_local_sp(), buf, 16, 9);
    CHECK_STATUS(STATUS_INSUFFICIENT_RESOURCES, MpsSynchronousSend(h, &info));
    /* Room again after one receive; the rejected message was not queued. */
    d = h_receive_checked(h, 1, 16);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousSend(h, &info));
    for (i = 2; i <= 9; i++) {
        d = h_receive_checked(h, (ULONG)i, 16);
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    }
    CHECK_STATUS(STATUS_TIMEOUT, MpsSynchronousReceive(h, 0, 0, &d));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

int main(int argc, char **argv)
{
    static const h_case cases[] = {
        H_CASE(sync_loopback_basic),
        H_CASE(sync_zero_length),
        H_CASE(sync_large_message),
        H_CASE(sync_release_by_ptr),
        H_CASE(sync_release_by_event_data),
        H_CASE(sync_double_release),
        H_CASE(sync_release_foreign_pointer),
        H_CASE(sync_fifo_order),
        H_CASE(sync_callback_session_queues_sync_messages),
        H_CASE(sync_multiple_receivers_distinct_messages),
        H_CASE(sync_queue_full_rejects),
    };
    return harness_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
