/*
 * timeout: MpsSynchronousReceive's Timeout (< 0 forever, 0 test, > 0 seconds).
 */
#include "harness.h"

static void timeout_zero_on_empty(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d = (PMPS_RECEIVED_EVENT_DATA)(uintptr_t)1;
    double t0 = h_now();
    CHECK_STATUS(STATUS_TIMEOUT, MpsSynchronousReceive(h, 0, 0, &d));
    CHECK(d == NULL);
    /* A test does not wait (loose bound: well under the 1 s unit). */
    CHECK(h_now() - t0 < 0.5);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void timeout_one_second_on_empty(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d = (PMPS_RECEIVED_EVENT_DATA)(uintptr_t)1;
    double t0 = h_now(), elapsed;
    CHECK_STATUS(STATUS_TIMEOUT, MpsSynchronousReceive(h, 1, 0, &d));
    elapsed = h_now() - t0;
    CHECK(d == NULL);
    if (elapsed < 0.9)
        FAIL("Timeout 1 returned after %.3f s", elapsed);
    if (elapsed > 10.0)
        FAIL("Timeout 1 returned after %.3f s", elapsed);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

/* A receiver thread with Timeout -1 (forever) or a long positive timeout. */
static struct {
    MPS_HANDLE h;
    LONG timeout;
    pid_t tid;
    int about_to_call;
    int returned;
    NTSTATUS status;
    PMPS_RECEIVED_EVENT_DATA data;
    ULONG tag;
    double waited;
} rx;

static void *receiver(void *arg)
{
    PMPS_RECEIVED_EVENT_DATA d = (PMPS_RECEIVED_EVENT_DATA)(uintptr_t)1;
    NTSTATUS s;
    double t0;
    ULONG tag = 0;
    (void)arg;
    H_UPDATE((rx.tid = h_gettid(), rx.about_to_call = 1));
    t0 = h_now();
    s = MpsSynchronousReceive(rx.h, rx.timeout, 0, &d);
    if (s == STATUS_SUCCESS && d != NULL) {
        tag = d->SequenceTag;
        if (h_verify(d->Ptr, tag, d->Size) >= 0)
            FAIL("received message %u is corrupt", (unsigned)tag);
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    }
    H_UPDATE((rx.status = s, rx.data = d, rx.tag = tag, rx.waited = h_now() - t0, rx.returned = 1));
    return NULL;
}

static void woken_by_message(LONG timeout)
{
    pthread_t t;
    rx.h = h_open(NULL, L"Mirror", NULL);
    rx.timeout = timeout;
    CHECK(pthread_create(&t, NULL, receiver, NULL) == 0);
    /* The receiver waits already: the message must wake it (one sent before
     * it called would only be taken from the queue, which tests nothing of
     * the wake-up). */
    WAIT_UNTIL(rx.about_to_call, H_WAIT_SECONDS);
    h_wait_receivers(rx.h, 1);
    CHECK_EQ_U(0, rx.returned);
    h_loopback_sync_send(rx.h, 21, 100);
    WAIT_UNTIL(rx.returned, H_WAIT_SECONDS);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_STATUS(STATUS_SUCCESS, rx.status);
    CHECK_EQ_U(21, rx.tag);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(rx.h));
}

static void timeout_forever_woken_by_message(void)
{
    woken_by_message(-1);
}

static void timeout_positive_woken_early_by_message(void)
{
    woken_by_message(30);
    CHECK(rx.waited < 25.0);
}

static void timeout_forever_woken_by_close(void)
{
    pthread_t t;
    rx.h = h_open(NULL, L"Mirror", NULL);
    rx.timeout = -1;
    CHECK(pthread_create(&t, NULL, receiver, NULL) == 0);
    /* Here the outcome depends on the receiver already waiting. */
    WAIT_UNTIL(rx.about_to_call, H_WAIT_SECONDS);
    h_wait_receivers(rx.h, 1);
    CHECK_EQ_U(0, rx.returned);
    CHECK_STATUS(STATUS_PENDING, MpsClose(rx.h));
    WAIT_UNTIL(rx.returned, H_WAIT_SECONDS);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_STATUS(STATUS_CANCELLED, rx.status);
    CHECK(rx.data == NULL);
}

/* A positive timeout and a forever wait both end with MpsClose too. */
static void timeout_positive_woken_by_close(void)
{
    pthread_t t;
    rx.h = h_open(NULL, L"Mirror", NULL);
    rx.timeout = 50;
    CHECK(pthread_create(&t, NULL, receiver, NULL) == 0);
    WAIT_UNTIL(rx.about_to_call, H_WAIT_SECONDS);
    h_wait_receivers(rx.h, 1);
    CHECK_STATUS(STATUS_PENDING, MpsClose(rx.h));
    WAIT_UNTIL(rx.returned, H_WAIT_SECONDS);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_STATUS(STATUS_CANCELLED, rx.status);
    CHECK(rx.data == NULL);
    CHECK(rx.waited < 40.0);
}

static void timeout_large_negative_is_forever(void)
{
    pthread_t t;
    rx.h = h_open(NULL, L"Mirror", NULL);
    rx.timeout = (LONG)INT32_MIN;
    CHECK(pthread_create(&t, NULL, receiver, NULL) == 0);
    h_loopback_sync_send(rx.h, 22, 1);
    WAIT_UNTIL(rx.returned, H_WAIT_SECONDS);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_STATUS(STATUS_SUCCESS, rx.status);
    CHECK_EQ_U(22, rx.tag);
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(rx.h));
}

int main(int argc, char **argv)
{
    static const h_case cases[] = {
        H_CASE(timeout_zero_on_empty),
        H_CASE(timeout_one_second_on_empty),
        H_CASE(timeout_forever_woken_by_message),
        H_CASE(timeout_positive_woken_early_by_message),
        H_CASE(timeout_forever_woken_by_close),
        H_CASE(timeout_positive_woken_by_close),
        H_CASE(timeout_large_negative_is_forever),
    };
    return harness_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
