/*
 * open_close: MpsOpen and MpsClose (SPEC section 4), including the pending
 * close with its single MpsEventCloseCompleted.
 */
#include "harness.h"

#define TAG_BLOCK 0xB10Cu

/* What the callbacks of this file saw; read and written under h_mu. */
static struct {
    int close_completed;
    MPS_HANDLE closed_handle;
    NTSTATUS close_status;
    int sent;
    int sent_before_close; /* MessageSent events seen when CloseCompleted came */
    ULONG last_sent_tag;
    NTSTATUS last_sent_status;
    int received;
    int block_entered;
    int block_release;
} ev;

static NTSTATUS counting_callback(MPS_EVENT Event, PVOID Data)
{
    if (Event == MpsEventCloseCompleted) {
        PMPS_CLOSE_EVENT_DATA c = (PMPS_CLOSE_EVENT_DATA)Data;
        H_UPDATE((ev.close_completed++, ev.closed_handle = c->FilamentHandle,
                  ev.close_status = c->CloseStatus, ev.sent_before_close = ev.sent));
    } else if (Event == MpsEventMessageSent) {
        PMPS_SEND_EVENT_DATA s = (PMPS_SEND_EVENT_DATA)Data;
        H_UPDATE((ev.sent++, ev.last_sent_tag = s->SequenceTag,
                  ev.last_sent_status = s->TransmissionStatus));
    } else if (Event == MpsEventMessageReceived) {
        PMPS_RECEIVED_EVENT_DATA r = (PMPS_RECEIVED_EVENT_DATA)Data;
        if (r->SequenceTag == TAG_BLOCK) {
            /* Hold this session's callback thread: every later event of the
             * session is serialized behind this call (SPEC section 5). */
            H_UPDATE(ev.block_entered = 1);
            WAIT_UNTIL(ev.block_release, H_WAIT_SECONDS);
        }
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(r));
        H_UPDATE(ev.received++);
    } else {
        FAIL("callback with unknown event %d", (int)Event);
    }
    return STATUS_SUCCESS;
}

/* Block the session's callback thread inside a MessageReceived callback. */
static PVOID block_callback_thread(MPS_HANDLE h)
{
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = h_alloc_filled(TAG_BLOCK, 8);
    h_info(&info, NULL, h_local_sp(), buf, 8, TAG_BLOCK);
    CHECK_STATUS(STATUS_PENDING, MpsAsynchronousSend(h, &info));
    WAIT_UNTIL(ev.block_entered, H_WAIT_SECONDS);
    return buf;
}

static void open_close_basic(void)
{
    MPS_HANDLE h = NULL;
    WCHAR name[] = L"Mirror";
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(NULL, 0, H_DOMAIN, name, NULL, &h));
    CHECK(h != NULL);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void open_close_with_callback_idle_no_event(void)
{
    MPS_HANDLE h = h_open(counting_callback, L"Mirror", NULL);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
    h_round_trip_barrier();
    CHECK_EQ_U(0, ev.close_completed);
}

static void open_close_twice_invalid_handle(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
    CHECK_STATUS(STATUS_INVALID_HANDLE, MpsClose(h));
}

static void open_name_collision(void)
{
    MPS_HANDLE a = h_open(NULL, L"Mirror", NULL);
    MPS_HANDLE b = (MPS_HANDLE)(uintptr_t)0x5555;
    WCHAR name[] = L"Mirror";
    CHECK_STATUS(STATUS_OBJECT_NAME_COLLISION, MpsOpen(NULL, 0, H_DOMAIN, name, NULL, &b));
    /* Out-parameters are written only on success. */
    CHECK_PTR_EQ((MPS_HANDLE)(uintptr_t)0x5555, b);
    /* With a callback too: the name is what collides. */
    CHECK_STATUS(STATUS_OBJECT_NAME_COLLISION, MpsOpen(counting_callback, 0, H_DOMAIN, name, NULL, &b));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(a));
}

static void open_same_name_other_conduit_or_domain(void)
{
    MPS_HANDLE a, b, c, d;
    WCHAR name[] = L"Mirror";
    WCHAR other[] = L"mirror"; /* names are case-sensitive wide strings */
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(NULL, 0, H_DOMAIN, name, NULL, &a));
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(NULL, 1, H_DOMAIN, name, NULL, &b));
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(NULL, 0, H_DOMAIN + 1, name, NULL, &c));
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(NULL, 0, H_DOMAIN, other, NULL, &d));
    CHECK(a != b && a != c && a != d && b != c && b != d && c != d);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(a));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(b));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(c));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(d));
}

static void open_reopen_after_close(void)
{
    MPS_HANDLE a = h_open(NULL, L"Mirror", NULL);
    MPS_HANDLE b;
    PMPS_RECEIVED_EVENT_DATA d;
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(a));
    b = h_open(NULL, L"Mirror", NULL);
    /* The new session works, and the old handle stays dead. */
    h_loopback_sync_send(b, 7, 32);
    d = h_receive_checked(b, 7, 32);
    CHECK_PTR_EQ(b, d->FilamentHandle);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_INVALID_HANDLE, MpsClose(a));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(b));
}

static void open_many_sessions(void)
{
    MPS_HANDLE h[200];
    int i;
    for (i = 0; i < 200; i++) {
        wchar_t name[32];
        swprintf(name, 32, L"Volume%03d", i);
        h[i] = h_open(NULL, name, NULL);
    }
    for (i = 0; i < 200; i++)
        CHECK_STATUS(STATUS_SUCCESS, MpsClose(h[i]));
}

static void open_sp_id_default(void)
{
    CMI_SP_ID local, peer;
    CHECK_STATUS(STATUS_SUCCESS, MpsGetSpId(&local, &peer));
    CHECK_SP(0, CMI_SP_A, local);
    CHECK_SP(0, CMI_SP_B, peer);
}

static void open_sp_id_from_env(void)
{
    CMI_SP_ID local, peer;
    CHECK(setenv("MPS_SP", "3.B", 1) == 0);
    CHECK_STATUS(STATUS_SUCCESS, MpsGetSpId(&local, &peer));
    CHECK_SP(3, CMI_SP_B, local);
    CHECK_SP(3, CMI_SP_A, peer);
}

static void open_sp_id_single_sp_unit(void)
{
    char path[512];
    CMI_SP_ID local, peer;
    h_write_solo_config("", path, sizeof path);
    CHECK_STATUS(STATUS_SUCCESS, MpsInitialize(path));
    CHECK_STATUS(STATUS_SUCCESS, MpsGetSpId(&local, &peer));
    CHECK_SP(0, CMI_SP_A, local);
    CHECK_SP(CMI_SP_NONE, CMI_SP_NONE, peer);
}

/*
 * Pending close with an asynchronous send outstanding: the session's
 * callback thread is held, so the send's MpsEventMessageSent cannot be
 * delivered and the send stays outstanding while we look.
 */
static void open_pending_close_async_outstanding(void)
{
    MPS_HANDLE h = h_open(counting_callback, L"Mirror", NULL);
    MPS_SEND_MESSAGE_INFO info;
    PMPS_RECEIVED_EVENT_DATA d = (PMPS_RECEIVED_EVENT_DATA)(uintptr_t)1;
    PVOID blocker = block_callback_thread(h);
    PVOID buf = h_alloc_filled(2, 64);
    PVOID buf2 = h_alloc_filled(3, 64);

    h_info(&info, NULL, h_local_sp(), buf, 64, 2);
    CHECK_STATUS(STATUS_PENDING, MpsAsynchronousSend(h, &info));

    CHECK_STATUS(STATUS_PENDING, MpsClose(h));

    /* While closing: new sends and receives are refused. */
    h_info(&info, NULL, h_local_sp(), buf2, 64, 3);
    CHECK_STATUS(STATUS_PIPE_CLOSING, MpsAsynchronousSend(h, &info));
    CHECK_STATUS(STATUS_PIPE_CLOSING, MpsSynchronousSend(h, &info));
    CHECK_STATUS(STATUS_PIPE_CLOSING, MpsSynchronousReceive(h, 0, 0, &d));
    CHECK(d == NULL);
    /* A second close of a closing session is itself refused as closing. */
    CHECK_STATUS(STATUS_PIPE_CLOSING, MpsClose(h));
    CHECK_EQ_U(0, ev.close_completed);

    /* Let the callback thread go: the close completes exactly once, after the
     * outstanding sends' MpsEventMessageSent. */
    H_UPDATE(ev.block_release = 1);
    WAIT_UNTIL(ev.close_completed >= 1, H_WAIT_SECONDS);
    CHECK_PTR_EQ(h, ev.closed_handle);
    CHECK_STATUS(STATUS_SUCCESS, ev.close_status);
    CHECK_EQ_U(2, ev.sent_before_close);
    CHECK_STATUS(STATUS_INVALID_HANDLE, MpsClose(h));

    /* No second MpsEventCloseCompleted. */
    h_round_trip_barrier();
    CHECK_EQ_U(1, ev.close_completed);
    CHECK_EQ_U(2, ev.sent);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(blocker));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf2));
}

/* A receiver blocked forever in MpsSynchronousReceive, for the close tests. */
static struct {
    MPS_HANDLE h;
    pid_t tid;
    int about_to_call;
    int returned;
    NTSTATUS status;
    PMPS_RECEIVED_EVENT_DATA data;
} rx;

static void *blocked_receiver(void *arg)
{
    PMPS_RECEIVED_EVENT_DATA d = (PMPS_RECEIVED_EVENT_DATA)(uintptr_t)1;
    NTSTATUS st;
    (void)arg;
    H_UPDATE((rx.tid = h_gettid(), rx.about_to_call = 1));
    st = MpsSynchronousReceive(rx.h, -1, 0, &d);
    H_UPDATE((rx.status = st, rx.data = d, rx.returned = 1));
    return NULL;
}

static void close_with_blocked_receiver(PMPS_CALLBACK_ROUTINE cb)
{
    pthread_t t;
    rx.h = h_open(cb, L"Mirror", NULL);
    CHECK(pthread_create(&t, NULL, blocked_receiver, NULL) == 0);
    WAIT_UNTIL(rx.about_to_call, H_WAIT_SECONDS);
    h_wait_receivers(rx.h, 1);
    CHECK_EQ_U(0, rx.returned);

    CHECK_STATUS(STATUS_PENDING, MpsClose(rx.h));
    WAIT_UNTIL(rx.returned, H_WAIT_SECONDS);
    CHECK_STATUS(STATUS_CANCELLED, rx.status);
    CHECK(rx.data == NULL);
    CHECK(pthread_join(t, NULL) == 0);
}

static void open_pending_close_wakes_receiver(void)
{
    close_with_blocked_receiver(counting_callback);
    WAIT_UNTIL(ev.close_completed >= 1, H_WAIT_SECONDS);
    CHECK_PTR_EQ(rx.h, ev.closed_handle);
    CHECK_STATUS(STATUS_SUCCESS, ev.close_status);
    CHECK_STATUS(STATUS_INVALID_HANDLE, MpsClose(rx.h));
    h_round_trip_barrier();
    CHECK_EQ_U(1, ev.close_completed);
}

static void open_null_callback_pending_close_wakes_receiver(void)
{
    close_with_blocked_receiver(NULL);
    /* No callback to tell: the session is gone once the receiver has left. */
    h_round_trip_barrier();
    CHECK_STATUS(STATUS_INVALID_HANDLE, MpsClose(rx.h));
}

static void open_null_callback_close(void)
{
    MPS_HANDLE h = h_open(NULL, L"UserModeClient", NULL);
    PMPS_RECEIVED_EVENT_DATA d;
    /* A synchronous exchange first, so the session has been used. */
    h_loopback_sync_send(h, 1, 10);
    d = h_receive_checked(h, 1, 10);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
    CHECK_STATUS(STATUS_INVALID_HANDLE, MpsSynchronousReceive(h, 0, 0, &d));
}

int main(int argc, char **argv)
{
    static const h_case cases[] = {
        H_CASE(open_close_basic),
        H_CASE(open_close_with_callback_idle_no_event),
        H_CASE(open_close_twice_invalid_handle),
        H_CASE(open_name_collision),
        H_CASE(open_same_name_other_conduit_or_domain),
        H_CASE(open_reopen_after_close),
        H_CASE(open_many_sessions),
        H_CASE(open_sp_id_default),
        H_CASE(open_sp_id_from_env),
        H_CASE(open_sp_id_single_sp_unit),
        H_CASE(open_pending_close_async_outstanding),
        H_CASE(open_pending_close_wakes_receiver),
        H_CASE(open_null_callback_pending_close_wakes_receiver),
        H_CASE(open_null_callback_close),
    };
    return harness_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
