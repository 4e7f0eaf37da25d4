/*
 * sanitizer_proof: deliberate faults, one per case, built and run only in a
 * sanitizer build (-DMPS_SANITIZE=...). Each case must end in a sanitizer
 * report and a failing exit; c_tests/expect-report.sh checks both. If the
 * -fsanitize flags were lost on the way (a CMake change, a compiler that
 * ignores them), these tests fail instead of the whole sanitizer run passing
 * with nothing checked: the practice of rustls-ffi's sanitizer job.
 *
 * The mps_buffer cases prove what the sanitizer build is for: libmps.so is
 * not instrumented, but AddressSanitizer intercepts its malloc and free, so a
 * C client that writes past a buffer from MpsAllocateMessage, or into one it
 * has freed, is caught at the faulting store.
 *
 * Indices and operands are volatile so that the compiler neither folds the
 * fault away nor warns about it at build time (-Werror).
 */
#include <limits.h>

#include "harness.h"

static volatile size_t sixteen = 16;
static volatile int one = 1;
static void *volatile lost;

/* A plain heap overflow in the test program's own malloc. */
static void sanitizer_proof_asan_heap_overflow(void)
{
    char *p = malloc(16);
    CHECK(p != NULL);
    h_cleanup();
    p[sixteen] = 1;
    free(p);
}

/* One byte past a buffer that libmps allocated (Rust, uninstrumented). */
static void sanitizer_proof_asan_mps_buffer_overflow(void)
{
    PVOID buf = NULL;
    CHECK_STATUS(STATUS_SUCCESS, MpsAllocateMessage(16, &buf));
    h_cleanup();
    ((volatile char *)buf)[sixteen] = 1;
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
}

/* A store into a buffer after MpsFreeMessage gave it back. */
static void sanitizer_proof_asan_mps_buffer_use_after_free(void)
{
    PVOID buf = NULL;
    CHECK_STATUS(STATUS_SUCCESS, MpsAllocateMessage(64, &buf));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    h_cleanup();
    ((volatile char *)buf)[0] = 1;
}

/* Memory nobody points to any more at exit. */
static void sanitizer_proof_lsan_leak(void)
{
    lost = malloc(4096);
    CHECK(lost != NULL);
    lost = NULL;
}

/* INT_MAX + 1: undefined behaviour that UBSan reports. */
static void sanitizer_proof_ubsan_signed_overflow(void)
{
    volatile int big = INT_MAX;
    int r;
    h_cleanup();
    r = big + one;
    fprintf(stderr, "INT_MAX + 1 = %d (UBSan should have stopped before this)\n", r);
}

int main(int argc, char **argv)
{
    static const h_case cases[] = {
        H_CASE(sanitizer_proof_asan_heap_overflow),
        H_CASE(sanitizer_proof_asan_mps_buffer_overflow),
        H_CASE(sanitizer_proof_asan_mps_buffer_use_after_free),
        H_CASE(sanitizer_proof_lsan_leak),
        H_CASE(sanitizer_proof_ubsan_signed_overflow),
    };
    (void)&h_mu; /* the harness's lock: no case here waits on another thread */
    return harness_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
