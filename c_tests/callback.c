/*
 * callback: what a callback may do (SPEC section 5): call every routine,
 * including MpsSynchronousSend and MpsClose of its own session, without
 * deadlock; callbacks of one session are serialized, in event order, on
 * library threads; a received message is the client's until it releases it.
 */
#include "harness.h"

#define TAG_REQUEST 1u
#define TAG_REPLY 1001u
#define TAG_SECOND 2u

static MPS_HANDLE session_a, session_b;

/* Under h_mu. */
static struct {
    int received;
    int sent;
    int close_completed;
    MPS_HANDLE closed_handle;
    int sent_at_close;
    int done;
    NTSTATUS status1, status2, status3;
    MPS_HANDLE opened;
    PMPS_RECEIVED_EVENT_DATA kept;
    int in_callback, max_in_callback;
    ULONG tags[64];
    int ntags;
    pthread_t thread;
} ev;

static void send_loopback_async(MPS_HANDLE h, ULONG tag, ULONG size)
{
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = h_alloc_filled(tag, size);
    h_info(&info, NULL, h_local_sp(), buf, size, tag);
    CHECK_STATUS(STATUS_PENDING, MpsAsynchronousSend(h, &info));
}

/* Common part of every callback below: count, free returned buffers. */
static int common(MPS_EVENT Event, PVOID Data)
{
    if (Event == MpsEventMessageSent) {
        PMPS_SEND_EVENT_DATA s = (PMPS_SEND_EVENT_DATA)Data;
        CHECK_STATUS(STATUS_SUCCESS, s->TransmissionStatus);
        CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(s->Ptr));
        H_UPDATE(ev.sent++);
        return 1;
    }
    if (Event == MpsEventCloseCompleted) {
        PMPS_CLOSE_EVENT_DATA c = (PMPS_CLOSE_EVENT_DATA)Data;
        H_UPDATE((ev.close_completed++, ev.closed_handle = c->FilamentHandle,
                  ev.sent_at_close = ev.sent));
        return 1;
    }
    return 0;
}

/* ---- MpsSynchronousSend on another session (loopback) from a callback. */
static NTSTATUS cb_sync_send_other(MPS_EVENT Event, PVOID Data)
{
    if (!common(Event, Data)) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        MPS_SEND_MESSAGE_INFO info;
        NTSTATUS s;
        PVOID buf = h_alloc_filled(77, 20);
        h_info(&info, NULL, r->Sender, buf, 20, 77);
        s = MpsSynchronousSend(session_b, &info);
        CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(r));
        H_UPDATE((ev.status1 = s, ev.done = 1));
    }
    return STATUS_SUCCESS;
}

static void callback_sync_send_to_other_session(void)
{
    PMPS_RECEIVED_EVENT_DATA d;
    session_a = h_open(cb_sync_send_other, L"Requests", NULL);
    session_b = h_open(NULL, L"Replies", NULL);
    send_loopback_async(session_a, TAG_REQUEST, 8);
    WAIT_UNTIL(ev.done, H_WAIT_SECONDS);
    CHECK_STATUS(STATUS_SUCCESS, ev.status1);
    d = h_receive_checked(session_b, 77, 20);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    WAIT_UNTIL(ev.sent >= 1, H_WAIT_SECONDS);
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_PENDING, MpsClose(session_a));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(session_b));
}

/* ---- Reply to the sender with MpsSynchronousSend on the callback's own session. */
static NTSTATUS cb_reply(MPS_EVENT Event, PVOID Data)
{
    if (!common(Event, Data)) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        MPS_SEND_MESSAGE_INFO info;
        NTSTATUS s;
        PVOID buf = h_alloc_filled(r->SequenceTag + 1000u, 30);
        info.ContextHandle = NULL;
        info.Destination = r->Sender;
        info.Ptr = buf;
        info.Size = 30;
        info.SequenceTag = r->SequenceTag + 1000u;
        s = MpsSynchronousSend(r->FilamentHandle, &info);
        CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(r));
        H_UPDATE((ev.status1 = s, ev.done = 1));
    }
    return STATUS_SUCCESS;
}

static void callback_sync_reply_to_sender(void)
{
    PMPS_RECEIVED_EVENT_DATA d = NULL;
    session_a = h_open(cb_reply, L"Mirror", NULL);
    send_loopback_async(session_a, TAG_REQUEST, 8);
    /* The reply is synchronous-tagged, so it waits in the session's queue. */
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousReceive(session_a, H_WAIT_SECONDS, TAG_REPLY, &d));
    CHECK_EQ_U(30, d->Size);
    CHECK(h_verify(d->Ptr, TAG_REPLY, 30) < 0);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    WAIT_UNTIL(ev.done && ev.sent >= 1, H_WAIT_SECONDS);
    CHECK_STATUS(STATUS_SUCCESS, ev.status1);
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_PENDING, MpsClose(session_a));
}

/* ---- MpsAsynchronousSend from a callback (to itself: the second message
 *      comes back to the same callback, serialized after this call). */
static NTSTATUS cb_async(MPS_EVENT Event, PVOID Data)
{
    if (!common(Event, Data)) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        ULONG tag = r->SequenceTag;
        NTSTATUS s = STATUS_SUCCESS;
        CHECK(h_verify(r->Ptr, tag, r->Size) < 0);
        if (tag == TAG_REQUEST) {
            MPS_SEND_MESSAGE_INFO info;
            PVOID buf = h_alloc_filled(TAG_SECOND, 40);
            h_info(&info, NULL, r->Sender, buf, 40, TAG_SECOND);
            s = MpsAsynchronousSend(r->FilamentHandle, &info);
        }
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(r));
        H_UPDATE((tag == TAG_REQUEST ? (void)(ev.status1 = s) : (void)0, ev.received++,
                  ev.ntags < 64 ? (void)(ev.tags[ev.ntags++] = tag) : (void)0));
    }
    return STATUS_SUCCESS;
}

static void callback_async_send_from_callback(void)
{
    session_a = h_open(cb_async, L"Mirror", NULL);
    send_loopback_async(session_a, TAG_REQUEST, 8);
    WAIT_UNTIL(ev.received >= 2 && ev.sent >= 2, H_WAIT_SECONDS);
    CHECK_STATUS(STATUS_PENDING, ev.status1);
    CHECK_EQ_U(TAG_REQUEST, ev.tags[0]);
    CHECK_EQ_U(TAG_SECOND, ev.tags[1]);
    h_round_trip_barrier();
    CHECK_EQ_U(2, ev.received);
    CHECK_EQ_U(2, ev.sent);
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_PENDING, MpsClose(session_a));
}

/* ---- MpsReleaseReceivedMessage inside the callback, by Ptr, then twice. */
static NTSTATUS cb_release(MPS_EVENT Event, PVOID Data)
{
    if (!common(Event, Data)) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        PVOID payload = r->Ptr;
        NTSTATUS s1 = MpsReleaseReceivedMessage(payload);
        NTSTATUS s2 = MpsReleaseReceivedMessage(payload);
        NTSTATUS s3 = MpsReleaseReceivedMessage(r);
        H_UPDATE((ev.status1 = s1, ev.status2 = s2, ev.status3 = s3, ev.done = 1));
    }
    return STATUS_SUCCESS;
}

static void callback_release_in_callback(void)
{
    session_a = h_open(cb_release, L"Mirror", NULL);
    send_loopback_async(session_a, TAG_REQUEST, 8);
    WAIT_UNTIL(ev.done && ev.sent >= 1, H_WAIT_SECONDS);
    CHECK_STATUS(STATUS_SUCCESS, ev.status1);
    CHECK_STATUS(STATUS_INVALID_PARAMETER, ev.status2);
    CHECK_STATUS(STATUS_INVALID_PARAMETER, ev.status3);
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_PENDING, MpsClose(session_a));
}

/* ---- A received message outlives the callback until the client releases it. */
static NTSTATUS cb_keep(MPS_EVENT Event, PVOID Data)
{
    if (!common(Event, Data))
        H_UPDATE((ev.kept = (PMPS_RECEIVED_EVENT_DATA)Data, ev.done = 1));
    return STATUS_SUCCESS;
}

static void callback_message_kept_after_return(void)
{
    PMPS_RECEIVED_EVENT_DATA kept;
    session_a = h_open(cb_keep, L"Mirror", NULL);
    send_loopback_async(session_a, 5, 300);
    WAIT_UNTIL(ev.done && ev.sent >= 1, H_WAIT_SECONDS);
    /* More traffic through the library, then the kept message is still intact. */
    h_round_trip_barrier();
    H_READ(ev.kept, kept);
    CHECK(kept != NULL);
    CHECK_EQ_U(5, kept->SequenceTag);
    CHECK_EQ_U(300, kept->Size);
    CHECK(h_verify(kept->Ptr, 5, 300) < 0);
    CHECK_PTR_EQ(session_a, kept->FilamentHandle);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(kept));
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_PENDING, MpsClose(session_a));
}

/* ---- MpsClose of its own session from its callback. */
static NTSTATUS cb_close_self(MPS_EVENT Event, PVOID Data)
{
    if (!common(Event, Data)) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        MPS_HANDLE h = r->FilamentHandle;
        NTSTATUS s;
        int sent_now;
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(r));
        s = MpsClose(h);
        H_READ(ev.sent, sent_now);
        H_UPDATE((ev.status1 = s, ev.status2 = (NTSTATUS)sent_now, ev.received++, ev.done = 1));
    }
    return STATUS_SUCCESS;
}

static void callback_close_own_session(void)
{
    NTSTATUS s;
    session_a = h_open(cb_close_self, L"Mirror", NULL);
    send_loopback_async(session_a, TAG_REQUEST, 8);
    WAIT_UNTIL(ev.done, H_WAIT_SECONDS);
    H_READ(ev.status1, s);
    fprintf(stderr, "MpsClose from the callback returned %s\n", h_status_name(s));
    if (s == STATUS_PENDING) {
        /* The send's MessageSent was still to come: exactly one CloseCompleted, after it. */
        WAIT_UNTIL(ev.close_completed >= 1, H_WAIT_SECONDS);
        CHECK_PTR_EQ(session_a, ev.closed_handle);
        CHECK_EQ_U(1, ev.sent_at_close);
    } else {
        /* Closed at once: that is only allowed with nothing outstanding,
         * i.e. the send's MessageSent had already been delivered. */
        CHECK_STATUS(STATUS_SUCCESS, s);
        CHECK_EQ_U(1, ev.status2);
    }
    h_round_trip_barrier();
    CHECK_EQ_U(s == STATUS_PENDING ? 1 : 0, ev.close_completed);
    CHECK_EQ_U(1, ev.sent);
    CHECK_EQ_U(1, ev.received);
    CHECK_STATUS(STATUS_INVALID_HANDLE, MpsClose(session_a));
}

/* ---- MpsOpen of a new session from a callback. */
static NTSTATUS cb_open(MPS_EVENT Event, PVOID Data)
{
    if (!common(Event, Data)) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        MPS_HANDLE fresh = NULL;
        WCHAR name[] = L"OpenedInCallback";
        NTSTATUS s = MpsOpen(NULL, 0, H_DOMAIN, name, NULL, &fresh);
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(r));
        H_UPDATE((ev.status1 = s, ev.opened = fresh, ev.done = 1));
    }
    return STATUS_SUCCESS;
}

static void callback_open_new_session(void)
{
    PMPS_RECEIVED_EVENT_DATA d;
    MPS_HANDLE fresh;
    session_a = h_open(cb_open, L"Mirror", NULL);
    send_loopback_async(session_a, TAG_REQUEST, 8);
    WAIT_UNTIL(ev.done, H_WAIT_SECONDS);
    CHECK_STATUS(STATUS_SUCCESS, ev.status1);
    H_READ(ev.opened, fresh);
    CHECK(fresh != NULL);
    h_loopback_sync_send(fresh, 3, 33);
    d = h_receive_checked(fresh, 3, 33);
    CHECK_PTR_EQ(fresh, d->FilamentHandle);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(fresh));
    WAIT_UNTIL(ev.sent >= 1, H_WAIT_SECONDS);
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_PENDING, MpsClose(session_a));
}

/* ---- Serialized per session, in order, on a library thread. */
static NTSTATUS cb_serial(MPS_EVENT Event, PVOID Data)
{
    int now;
    pthread_mutex_lock(&h_mu);
    now = ++ev.in_callback;
    if (now > ev.max_in_callback)
        ev.max_in_callback = now;
    ev.thread = pthread_self();
    pthread_mutex_unlock(&h_mu);
    /* A little work inside, so that an overlap would show. */
    if (Event == MpsEventMessageReceived) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        ULONG tag = r->SequenceTag;
        CHECK(h_verify(r->Ptr, tag, r->Size) < 0);
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(r));
        H_UPDATE((ev.in_callback--, ev.received++,
                  ev.ntags < 64 ? (void)(ev.tags[ev.ntags++] = tag) : (void)0));
    } else {
        H_UPDATE(ev.in_callback--);
        common(Event, Data);
    }
    return STATUS_SUCCESS;
}

static void callback_serialized_in_order_on_library_thread(void)
{
    ULONG i;
    session_a = h_open(cb_serial, L"Mirror", NULL);
    for (i = 1; i <= 60; i++)
        send_loopback_async(session_a, i, i * 11u);
    WAIT_UNTIL(ev.received >= 60 && ev.sent >= 60, H_WAIT_SECONDS);
    CHECK_EQ_U(1, ev.max_in_callback);
    /* Received in sending order. */
    for (i = 0; i < 60; i++)
        CHECK_EQ_U(i + 1, ev.tags[i]);
    CHECK(!pthread_equal(ev.thread, h_main_thread));
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_PENDING, MpsClose(session_a));
}

/* ---- SpPendingCallbacks: from a callback, what is left of the delivery its
 * event came in; from any other thread, every event not yet started. */
static struct {
    int gate_open;
    int first_seen;
    ULONG left[8];
    int n;
} pend;

static NTSTATUS cb_pending(MPS_EVENT Event, PVOID Data)
{
    MPS_HANDLE h = NULL;
    MPS_SESSION_INFO info;
    int first;
    if (Event == MpsEventMessageSent)
        h = ((PMPS_SEND_EVENT_DATA)Data)->FilamentHandle;
    else if (Event == MpsEventMessageReceived)
        h = ((PMPS_RECEIVED_EVENT_DATA)Data)->FilamentHandle;
    else
        return STATUS_SUCCESS;
    /* The first event holds its thread until the test has seen the others queued. */
    pthread_mutex_lock(&h_mu);
    first = !pend.first_seen;
    pend.first_seen = 1;
    pthread_cond_broadcast(&h_cv);
    while (first && !pend.gate_open)
        pthread_cond_wait(&h_cv, &h_mu);
    pthread_mutex_unlock(&h_mu);
    CHECK_STATUS(STATUS_SUCCESS, MpsQuerySession(h, &info));
    if (Event == MpsEventMessageReceived)
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(Data));
    else
        CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(((PMPS_SEND_EVENT_DATA)Data)->Ptr));
    H_UPDATE(pend.n < 8 ? (void)(pend.left[pend.n++] = info.SpPendingCallbacks) : (void)0);
    return STATUS_SUCCESS;
}

static void callback_sp_pending_callbacks_per_delivery(void)
{
    ULONG i;
    MPS_SESSION_INFO info;
    double deadline = h_now() + H_WAIT_SECONDS;
    session_a = h_open(cb_pending, L"Pending", NULL);
    /* Three messages to this SP's own session: six events (three arrivals,
     * three completions), all on one session, run one at a time; each is a
     * delivery of its own (loopback), so each callback reads 0. */
    for (i = 1; i <= 3; i++)
        send_loopback_async(session_a, i, 16);
    WAIT_UNTIL(pend.first_seen, H_WAIT_SECONDS);
    for (;;) {
        CHECK_STATUS(STATUS_SUCCESS, MpsQuerySession(session_a, &info));
        if (info.PendingCallbacks == 5)
            break;
        if (h_now() > deadline)
            FAIL("the six events never queued (%u pending)", (unsigned)info.PendingCallbacks);
        sched_yield();
    }
    /* Outside a callback: the five events not yet started on the SP. */
    CHECK_EQ_U(5, info.SpPendingCallbacks);
    H_UPDATE(pend.gate_open = 1);
    WAIT_UNTIL(pend.n == 6, H_WAIT_SECONDS);
    for (i = 0; i < 6; i++)
        CHECK_EQ_U(0, pend.left[i]);
    CHECK_STATUS(STATUS_SUCCESS, MpsQuerySession(session_a, &info));
    CHECK_EQ_U(0, info.SpPendingCallbacks);
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_PENDING, MpsClose(session_a));
}

int main(int argc, char **argv)
{
    static const h_case cases[] = {
        H_CASE(callback_sync_send_to_other_session),
        H_CASE(callback_sync_reply_to_sender),
        H_CASE(callback_async_send_from_callback),
        H_CASE(callback_release_in_callback),
        H_CASE(callback_message_kept_after_return),
        H_CASE(callback_close_own_session),
        H_CASE(callback_open_new_session),
        H_CASE(callback_serialized_in_order_on_library_thread),
        H_CASE(callback_sp_pending_callbacks_per_delivery),
    };
    return harness_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
