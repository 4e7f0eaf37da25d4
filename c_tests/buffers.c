/*
 * buffers: MpsAllocateMessage / MpsFreeMessage and the buffer checks of the
 * send routines (SPEC sections 3 and 4).
 */
#include "harness.h"

#define TAG_BLOCK 0xB10Cu

static struct {
    int block_entered;
    int block_release;
    int closed;
    int sent;
    ULONG sent_tags[16];
    NTSTATUS sent_status[16];
    PVOID sent_ptr[16];
} ev;

static NTSTATUS callback(MPS_EVENT Event, PVOID Data)
{
    if (Event == MpsEventCloseCompleted) {
        H_UPDATE(ev.closed++);
    } else if (Event == MpsEventMessageSent) {
        PMPS_SEND_EVENT_DATA s = (PMPS_SEND_EVENT_DATA)Data;
        H_UPDATE((ev.sent_tags[ev.sent % 16] = s->SequenceTag,
                  ev.sent_status[ev.sent % 16] = s->TransmissionStatus,
                  ev.sent_ptr[ev.sent % 16] = s->Ptr, ev.sent++));
    } else if (Event == MpsEventMessageReceived) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        if (r->SequenceTag == TAG_BLOCK) {
            H_UPDATE(ev.block_entered = 1);
            WAIT_UNTIL(ev.block_release, H_WAIT_SECONDS);
        }
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(r));
    }
    return STATUS_SUCCESS;
}

static int sent_with_tag(ULONG tag)
{
    int i, n = 0;
    for (i = 0; i < ev.sent && i < 16; i++)
        if (ev.sent_tags[i] == tag)
            n++;
    return n;
}

static void buffers_allocate_zero_unique(void)
{
    PVOID a = NULL, b = NULL;
    CHECK_STATUS(STATUS_SUCCESS, MpsAllocateMessage(0, &a));
    CHECK_STATUS(STATUS_SUCCESS, MpsAllocateMessage(0, &b));
    CHECK(a != NULL);
    CHECK(b != NULL);
    CHECK(a != b);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(a));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(b));
}

static void buffers_allocate_free(void)
{
    PVOID p[100];
    ULONG sizes[] = {1, 7, 64, 4096, 65536, 1048576};
    int i;
    for (i = 0; i < 6; i++) {
        PVOID q = NULL;
        CHECK_STATUS(STATUS_SUCCESS, MpsAllocateMessage(sizes[i], &q));
        CHECK(q != NULL);
        /* The whole buffer is writable and readable. */
        memset(q, 0xA5, sizes[i]);
        CHECK(((unsigned char *)q)[sizes[i] - 1] == 0xA5);
        CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(q));
    }
    for (i = 0; i < 100; i++)
        p[i] = h_alloc_filled((ULONG)i, (ULONG)i * 3u);
    for (i = 0; i < 100; i++) {
        CHECK(h_verify(p[i], (ULONG)i, (ULONG)i * 3u) < 0);
        CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(p[i]));
    }
}

static void buffers_double_free(void)
{
    PVOID p = h_alloc_filled(1, 100);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(p));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsFreeMessage(p));
}

static void buffers_free_foreign_pointer(void)
{
    char on_stack[64];
    void *heap = malloc(64);
    PVOID ours = h_alloc_filled(1, 64);
    CHECK(heap != NULL);
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsFreeMessage(heap));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsFreeMessage(on_stack));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsFreeMessage((char *)ours + 8));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsFreeMessage(NULL));
    /* The real buffer is untouched by the refused calls. */
    CHECK(h_verify(ours, 1, 64) < 0);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(ours));
    free(heap);
}

static void buffers_free_received_message(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d;
    h_loopback_sync_send(h, 5, 128);
    d = h_receive_checked(h, 5, 128);
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsFreeMessage(d->Ptr));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsFreeMessage(d));
    /* Still intact and still releasable. */
    CHECK(h_verify(d->Ptr, 5, 128) < 0);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

/*
 * A buffer lent to an asynchronous send is busy until its MpsEventMessageSent.
 * Deterministic: the session's callback thread is held inside an earlier
 * MessageReceived callback, so the send's MessageSent (serialized behind it)
 * cannot have been delivered when we try to free the buffer.
 */
static void buffers_free_while_in_flight(void)
{
    MPS_HANDLE h = h_open(callback, L"Mirror", NULL);
    MPS_SEND_MESSAGE_INFO info;
    PVOID blocker = h_alloc_filled(TAG_BLOCK, 4);
    PVOID buf = h_alloc_filled(2, 256);

    h_info(&info, NULL, h_local_sp(), blocker, 4, TAG_BLOCK);
    CHECK_STATUS(STATUS_PENDING, MpsAsynchronousSend(h, &info));
    WAIT_UNTIL(ev.block_entered, H_WAIT_SECONDS);

    h_info(&info, (PVOID)&ev, h_local_sp(), buf, 256, 2);
    CHECK_STATUS(STATUS_PENDING, MpsAsynchronousSend(h, &info));
    CHECK_STATUS(STATUS_DEVICE_BUSY, MpsFreeMessage(buf));
    /* Sending a buffer that is already in flight is refused too. */
    CHECK_STATUS(STATUS_DEVICE_BUSY, MpsAsynchronousSend(h, &info));
    CHECK_STATUS(STATUS_DEVICE_BUSY, MpsSynchronousSend(h, &info));

    H_UPDATE(ev.block_release = 1);
    WAIT_UNTIL(sent_with_tag(2) >= 1, H_WAIT_SECONDS);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    WAIT_UNTIL(sent_with_tag(TAG_BLOCK) >= 1, H_WAIT_SECONDS);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(blocker));
    h_round_trip_barrier();
    /* The refused sends got no callback. */
    CHECK_EQ_U(1, sent_with_tag(2));
    CHECK_EQ_U(2, ev.sent);
    /* The loopback delivery of message 2 may still be queued for the
     * callback: then the close is pending and completes with one event. */
    {
        NTSTATUS s = MpsClose(h);
        CHECK(s == STATUS_SUCCESS || s == STATUS_PENDING);
        if (s == STATUS_PENDING)
            WAIT_UNTIL(ev.closed == 1, H_WAIT_SECONDS);
    }
}

static void buffers_size_larger_than_buffer(void)
{
    MPS_HANDLE h = h_open(callback, L"Mirror", NULL);
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = h_alloc_filled(1, 100);
    PMPS_RECEIVED_EVENT_DATA d;
    h_info(&info, NULL, h_local_sp(), buf, 101, 1);
    CHECK_STATUS(STATUS_INVALID_USER_BUFFER, MpsSynchronousSend(h, &info));
    CHECK_STATUS(STATUS_INVALID_USER_BUFFER, MpsAsynchronousSend(h, &info));
    /* Exactly the buffer's size is fine. */
    info.Size = 100;
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousSend(h, &info));
    d = h_receive_checked(h, 1, 100);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    h_round_trip_barrier();
    CHECK_EQ_U(0, ev.sent);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void buffers_interior_pointer(void)
{
    MPS_HANDLE h = h_open(callback, L"Mirror", NULL);
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = h_alloc_filled(1, 100);
    h_info(&info, NULL, h_local_sp(), (char *)buf + 8, 8, 1);
    CHECK_STATUS(STATUS_INVALID_USER_BUFFER, MpsSynchronousSend(h, &info));
    CHECK_STATUS(STATUS_INVALID_USER_BUFFER, MpsAsynchronousSend(h, &info));
    h_round_trip_barrier();
    CHECK_EQ_U(0, ev.sent);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void buffers_foreign_buffer_send(void)
{
    MPS_HANDLE h = h_open(callback, L"Mirror", NULL);
    MPS_SEND_MESSAGE_INFO info;
    void *heap = malloc(64);
    PVOID freed = h_alloc_filled(1, 64);
    CHECK(heap != NULL);
    memset(heap, 0, 64);
    h_info(&info, NULL, h_local_sp(), heap, 64, 1);
    CHECK_STATUS(STATUS_INVALID_USER_BUFFER, MpsSynchronousSend(h, &info));
    CHECK_STATUS(STATUS_INVALID_USER_BUFFER, MpsAsynchronousSend(h, &info));
    /* A buffer that was freed is not ours to send any more. */
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(freed));
    info.Ptr = freed;
    CHECK_STATUS(STATUS_INVALID_USER_BUFFER, MpsSynchronousSend(h, &info));
    h_round_trip_barrier();
    CHECK_EQ_U(0, ev.sent);
    free(heap);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void buffers_reusable_after_sync_send(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = h_alloc_filled(1, 64);
    PMPS_RECEIVED_EVENT_DATA d1, d2;
    h_info(&info, NULL, h_local_sp(), buf, 64, 1);
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousSend(h, &info));
    /* The buffer is the client's again on return: refill and resend it. */
    h_fill(buf, 2, 64);
    info.SequenceTag = 2;
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousSend(h, &info));
    d1 = h_receive_checked(h, 1, 64);
    d2 = h_receive_checked(h, 2, 64);
    CHECK(d1->Ptr != buf && d2->Ptr != buf && d1->Ptr != d2->Ptr);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d1));
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d2));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

int main(int argc, char **argv)
{
    static const h_case cases[] = {
        H_CASE(buffers_allocate_zero_unique),
        H_CASE(buffers_allocate_free),
        H_CASE(buffers_double_free),
        H_CASE(buffers_free_foreign_pointer),
        H_CASE(buffers_free_received_message),
        H_CASE(buffers_free_while_in_flight),
        H_CASE(buffers_size_larger_than_buffer),
        H_CASE(buffers_interior_pointer),
        H_CASE(buffers_foreign_buffer_send),
        H_CASE(buffers_reusable_after_sync_send),
    };
    return harness_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
