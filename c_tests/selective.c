/*
 * selective: MpsSynchronousReceive with a TransactionId takes only the message
 * whose SequenceTag equals it (request/response matching, SPEC section 4).
 */
#include "harness.h"

static void queue_tags(MPS_HANDLE h, const ULONG *tags, int n)
{
    int i;
    for (i = 0; i < n; i++)
        h_loopback_sync_send(h, tags[i], 10u + tags[i]);
}

static void receive_tag(MPS_HANDLE h, LONG timeout, ULONG tag)
{
    PMPS_RECEIVED_EVENT_DATA d = NULL;
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousReceive(h, timeout, tag, &d));
    CHECK(d != NULL);
    CHECK_EQ_U(tag, d->SequenceTag);
    CHECK_EQ_U(10u + tag, d->Size);
    CHECK(h_verify(d->Ptr, tag, d->Size) < 0);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
}

static void selective_out_of_order(void)
{
    static const ULONG tags[] = {1, 2, 3};
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d;
    queue_tags(h, tags, 3);
    receive_tag(h, 0, 3);
    receive_tag(h, 0, 1);
    receive_tag(h, 0, 2);
    CHECK_STATUS(STATUS_TIMEOUT, MpsSynchronousReceive(h, 0, 0, &d));
    CHECK(d == NULL);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void selective_absent_tag_times_out_and_leaves_others(void)
{
    static const ULONG tags[] = {1, 2, 3};
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d = (PMPS_RECEIVED_EVENT_DATA)(uintptr_t)1;
    queue_tags(h, tags, 3);
    CHECK_STATUS(STATUS_TIMEOUT, MpsSynchronousReceive(h, 0, 9, &d));
    CHECK(d == NULL);
    /* The others are still there, oldest first for TransactionId 0. */
    receive_tag(h, 0, 1);
    receive_tag(h, 0, 2);
    receive_tag(h, 0, 3);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void selective_same_tag_fifo(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA a, b;
    h_loopback_sync_send(h, 5, 11); /* tag 5, pattern (5, 11) */
    h_loopback_sync_send(h, 4, 12);
    h_loopback_sync_send(h, 5, 13); /* tag 5 again, another size */
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousReceive(h, 0, 5, &a));
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousReceive(h, 0, 5, &b));
    CHECK_EQ_U(11, a->Size);
    CHECK_EQ_U(13, b->Size);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(a));
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(b));
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousReceive(h, 0, 0, &a));
    CHECK_EQ_U(4, a->SequenceTag);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(a));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

/* A waiter for tag 5 is not woken by tag 4, and is woken by tag 5. */
static struct {
    MPS_HANDLE h;
    int done;
    NTSTATUS status;
    ULONG tag;
} waiter;

static void *wait_for_tag5(void *arg)
{
    PMPS_RECEIVED_EVENT_DATA d = NULL;
    NTSTATUS s;
    ULONG tag = 0;
    (void)arg;
    s = MpsSynchronousReceive(waiter.h, H_WAIT_SECONDS, 5, &d);
    if (s == STATUS_SUCCESS) {
        tag = d->SequenceTag;
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    }
    H_UPDATE((waiter.status = s, waiter.tag = tag, waiter.done = 1));
    return NULL;
}

static void selective_waiter_matches_only_its_tag(void)
{
    pthread_t t;
    waiter.h = h_open(NULL, L"Mirror", NULL);
    CHECK(pthread_create(&t, NULL, wait_for_tag5, NULL) == 0);
    /* The waiter is blocked first, so tag 4 must pass it by (to the queue)
     * and tag 5 must wake it: the matching of waiters, not of the queue. */
    h_wait_receivers(waiter.h, 1);
    h_loopback_sync_send(waiter.h, 4, 14);
    h_loopback_sync_send(waiter.h, 5, 15);
    WAIT_UNTIL(waiter.done, H_WAIT_SECONDS);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_STATUS(STATUS_SUCCESS, waiter.status);
    CHECK_EQ_U(5, waiter.tag);
    receive_tag(waiter.h, 0, 4);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(waiter.h));
}

/* A selective receive with a timeout waits for its own tag only. */
static void selective_timeout_with_other_tags_queued(void)
{
    static const ULONG tags[] = {1, 2};
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d = (PMPS_RECEIVED_EVENT_DATA)(uintptr_t)1;
    double t0;
    queue_tags(h, tags, 2);
    t0 = h_now();
    CHECK_STATUS(STATUS_TIMEOUT, MpsSynchronousReceive(h, 1, 3, &d));
    CHECK(h_now() - t0 >= 0.9);
    CHECK(d == NULL);
    receive_tag(h, 0, 2);
    receive_tag(h, 0, 1);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

int main(int argc, char **argv)
{
    static const h_case cases[] = {
        H_CASE(selective_out_of_order),
        H_CASE(selective_absent_tag_times_out_and_leaves_others),
        H_CASE(selective_same_tag_fifo),
        H_CASE(selective_waiter_matches_only_its_tag),
        H_CASE(selective_timeout_with_other_tags_queued),
    };
    return harness_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
