/*
 * badinput: every routine answers bad arguments with a status from the table
 * (SPEC sections 3 and 4), never a crash or a hang; bad configurations are
 * refused with a log line that names the line (SPEC section 6).
 */
#include <sys/mman.h>
#include <sys/stat.h>
#include "harness.h"

static int sent_events;

static NTSTATUS callback(MPS_EVENT Event, PVOID Data)
{
    if (Event == MpsEventMessageSent)
        H_UPDATE(sent_events++);
    else if (Event == MpsEventMessageReceived)
        CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(Data));
    return STATUS_SUCCESS;
}

/* Every handle-taking routine must answer `expected` for handle h. */
static void check_all_handle_routines(MPS_HANDLE h, NTSTATUS expected)
{
    MPS_SEND_MESSAGE_INFO info;
    PMPS_RECEIVED_EVENT_DATA d = (PMPS_RECEIVED_EVENT_DATA)(uintptr_t)1;
    PVOID buf = h_alloc_filled(1, 16);
    /* Any destination: the handle is refused first (and MpsGetSpId needs a
     * running SP, which there is not after MpsShutdown). */
    h_info(&info, NULL, h_sp(0, CMI_SP_A), buf, 16, 1);
    CHECK_STATUS(expected, MpsSynchronousSend(h, &info));
    CHECK_STATUS(expected, MpsAsynchronousSend(h, &info));
    CHECK_STATUS(expected, MpsSynchronousReceive(h, 0, 0, &d));
    CHECK(d == NULL);
    CHECK_STATUS(expected, MpsSynchronousReceive(h, 1, 7, &d));
    CHECK_STATUS(expected, MpsClose(h));
    /* The buffer was never lent. */
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
}

static void badinput_null_pointers(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    MPS_HANDLE hc = h_open(callback, L"WithCallback", NULL);
    CMI_SP_ID sp;
    WCHAR name[] = L"Other";
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsOpen(NULL, 0, H_DOMAIN, name, NULL, NULL));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsAllocateMessage(8, NULL));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsFreeMessage(NULL));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsSynchronousSend(h, NULL));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsAsynchronousSend(hc, NULL));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsSynchronousReceive(h, 0, 0, NULL));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage(NULL));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsGetSpId(NULL, NULL));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsWaitForPeer(NULL, 0));
    /* One NULL out of two: either refused or the other one filled in. */
    {
        NTSTATUS s = MpsGetSpId(&sp, NULL);
        CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_INVALID_PARAMETER, s);
        if (s == STATUS_SUCCESS)
            CHECK_SP(0, CMI_SP_A, sp);
        s = MpsGetSpId(NULL, &sp);
        CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_INVALID_PARAMETER, s);
        if (s == STATUS_SUCCESS)
            CHECK_SP(0, CMI_SP_B, sp);
    }
    /* A NULL buffer in the send descriptor. */
    {
        MPS_SEND_MESSAGE_INFO info;
        h_info(&info, NULL, h_local_sp(), NULL, 0, 1);
        CHECK_STATUS_EITHER(STATUS_INVALID_PARAMETER, STATUS_INVALID_USER_BUFFER,
                            MpsSynchronousSend(h, &info));
        CHECK_STATUS_EITHER(STATUS_INVALID_PARAMETER, STATUS_INVALID_USER_BUFFER,
                            MpsAsynchronousSend(hc, &info));
    }
    h_round_trip_barrier();
    CHECK_EQ_U(0, sent_events);
    /* The sessions are unharmed. */
    h_loopback_sync_send(h, 2, 2);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(h_receive_checked(h, 2, 2)));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(hc));
}

static void badinput_receive_null_pdata(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d;
    h_loopback_sync_send(h, 4, 4);
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsSynchronousReceive(h, 0, 0, NULL));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsSynchronousReceive(h, -1, 0, NULL));
    /* The refused calls took nothing off the queue. */
    d = h_receive_checked(h, 4, 4);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void badinput_null_handle(void)
{
    check_all_handle_routines(NULL, STATUS_INVALID_HANDLE);
}

static void badinput_forged_handles(void)
{
    MPS_HANDLE real = h_open(callback, L"Mirror", NULL);
    int on_stack = 0;
    check_all_handle_routines((MPS_HANDLE)(uintptr_t)0x1234, STATUS_INVALID_HANDLE);
    check_all_handle_routines((MPS_HANDLE)(intptr_t)-1, STATUS_INVALID_HANDLE);
    check_all_handle_routines((MPS_HANDLE)(uintptr_t)UINT64_C(0x9E3779B97F4A7C15), STATUS_INVALID_HANDLE);
    check_all_handle_routines((MPS_HANDLE)(void *)&on_stack, STATUS_INVALID_HANDLE);
    check_all_handle_routines((MPS_HANDLE)((uintptr_t)real + 1), STATUS_INVALID_HANDLE);
    check_all_handle_routines((MPS_HANDLE)((uintptr_t)real ^ ((uintptr_t)1 << 40)), STATUS_INVALID_HANDLE);
    h_round_trip_barrier();
    CHECK_EQ_U(0, sent_events);
    /* The real session is unharmed. */
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(real));
}

static void badinput_stale_handle(void)
{
    MPS_HANDLE old = h_open(NULL, L"Mirror", NULL);
    MPS_HANDLE again;
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(old));
    check_all_handle_routines(old, STATUS_INVALID_HANDLE);
    /* Reopening the same name does not bring the old handle back. */
    again = h_open(NULL, L"Mirror", NULL);
    check_all_handle_routines(old, STATUS_INVALID_HANDLE);
    h_loopback_sync_send(again, 3, 3);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(h_receive_checked(again, 3, 3)));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(again));
}

static void badinput_handle_after_shutdown(void)
{
    MPS_HANDLE old = h_open(NULL, L"Mirror", NULL);
    MPS_HANDLE again, late = NULL;
    MPS_SESSION_INFO si;
    CMI_SP_ID local, peer;
    WCHAR name[] = L"Late";
    CHECK_STATUS(STATUS_SUCCESS, MpsShutdown());
    /* No call starts an SP again but MpsInitialize: handle routines get
     * STATUS_INVALID_HANDLE, the others STATUS_DEVICE_NOT_READY. */
    check_all_handle_routines(old, STATUS_INVALID_HANDLE);
    CHECK_STATUS(STATUS_DEVICE_NOT_READY, MpsOpen(NULL, 0, H_DOMAIN, name, NULL, &late));
    CHECK(late == NULL);
    CHECK_STATUS(STATUS_DEVICE_NOT_READY, MpsGetSpId(&local, &peer));
    CHECK_STATUS(STATUS_DEVICE_NOT_READY, MpsQuerySession(old, &si));
    CHECK_STATUS(STATUS_SUCCESS, MpsShutdown());
    CHECK_STATUS(STATUS_SUCCESS, MpsInitialize(NULL));
    /* The old handle stays dead in the new SP. */
    check_all_handle_routines(old, STATUS_INVALID_HANDLE);
    again = h_open(NULL, L"Mirror", NULL);
    check_all_handle_routines(old, STATUS_INVALID_HANDLE);
    h_loopback_sync_send(again, 3, 3);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(h_receive_checked(again, 3, 3)));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(again));
}

static void badinput_buffers_after_shutdown(void)
{
    PVOID p = h_alloc_filled(1, 10);
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    PMPS_RECEIVED_EVENT_DATA d;
    h_loopback_sync_send(h, 1, 10);
    d = h_receive_checked(h, 1, 10);
    (void)MpsShutdown();
    /* Neither routine may crash on what the shutdown took away. */
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_INVALID_PARAMETER, MpsFreeMessage(p));
    CHECK_STATUS_EITHER(STATUS_SUCCESS, STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage(d));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsFreeMessage(p));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsReleaseReceivedMessage(d));
}

static void badinput_open_bad_names(void)
{
    MPS_HANDLE h = (MPS_HANDLE)(uintptr_t)0x5555;
    WCHAR empty[] = L"";
    WCHAR too_long[MPS_MAX_MAILBOX_NAME + 2];
    WCHAR longest[MPS_MAX_MAILBOX_NAME + 1];
    int i;
    for (i = 0; i < MPS_MAX_MAILBOX_NAME + 1; i++)
        too_long[i] = (WCHAR)(L'a' + i % 26);
    too_long[MPS_MAX_MAILBOX_NAME + 1] = L'\0';
    CHECK_EQ_U(65, wcslen(too_long));
    for (i = 0; i < MPS_MAX_MAILBOX_NAME; i++)
        longest[i] = (WCHAR)(L'A' + i % 26);
    longest[MPS_MAX_MAILBOX_NAME] = L'\0';

    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsOpen(NULL, 0, H_DOMAIN, NULL, NULL, &h));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsOpen(NULL, 0, H_DOMAIN, empty, NULL, &h));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsOpen(NULL, 0, H_DOMAIN, too_long, NULL, &h));
    /* Out-parameters are written only on success. */
    CHECK_PTR_EQ((MPS_HANDLE)(uintptr_t)0x5555, h);
    /* The bound itself is fine. */
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(NULL, 0, H_DOMAIN, longest, NULL, &h));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

/*
 * Names that end exactly at an unmapped page: the library must read no more
 * than MPS_MAX_MAILBOX_NAME + 1 characters (a read past them is a SIGSEGV).
 */
static void badinput_open_unterminated_name(void)
{
    long page = sysconf(_SC_PAGESIZE);
    const size_t n = MPS_MAX_MAILBOX_NAME + 1;
    char *base = (char *)mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    WCHAR *name;
    MPS_HANDLE h = NULL;
    size_t i;
    CHECK(base != MAP_FAILED);
    CHECK(mprotect(base + page, (size_t)page, PROT_NONE) == 0);
    name = (WCHAR *)(base + page - n * sizeof(WCHAR));

    /* 65 characters and no terminator before the guard page. */
    for (i = 0; i < n; i++)
        name[i] = L'x';
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsOpen(NULL, 0, H_DOMAIN, name, NULL, &h));

    /* 64 characters and the terminator as the page's last character. */
    for (i = 0; i < n - 1; i++)
        name[i] = L'y';
    name[n - 1] = L'\0';
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(NULL, 0, H_DOMAIN, name, NULL, &h));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));

    /* A one-character name as the very last character before the guard. */
    name[n - 2] = L'z';
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(NULL, 0, H_DOMAIN, &name[n - 2], NULL, &h));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
    munmap(base, (size_t)page * 2);
}

static void badinput_open_unknown_conduit(void)
{
    MPS_HANDLE h = NULL;
    WCHAR name[] = L"Mirror";
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsOpen(NULL, 999, H_DOMAIN, name, NULL, &h));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsOpen(NULL, 32, H_DOMAIN, name, NULL, &h));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsOpen(NULL, 0xFFFFFFFFu, H_DOMAIN, name, NULL, &h));
    /* The embedded default carries conduits 0 to 31. */
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(NULL, 31, H_DOMAIN, name, NULL, &h));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void badinput_open_conduit_not_configured(void)
{
    char path[512];
    MPS_HANDLE h = NULL;
    WCHAR name[] = L"Mirror";
    h_write_solo_config("conduits = [0, 1]\n", path, sizeof path);
    CHECK_STATUS(STATUS_SUCCESS, MpsInitialize(path));
    CHECK_STATUS(STATUS_INVALID_PARAMETER, MpsOpen(NULL, 2, H_DOMAIN, name, NULL, &h));
    CHECK_STATUS(STATUS_SUCCESS, MpsOpen(NULL, 1, H_DOMAIN, name, NULL, &h));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
}

static void badinput_oversized_message(void)
{
    char path[512];
    MPS_HANDLE h, hc;
    MPS_SEND_MESSAGE_INFO info;
    PVOID big = NULL;
    PVOID max = NULL;
    PMPS_RECEIVED_EVENT_DATA d;
    NTSTATUS s;
    h_write_solo_config("[limits]\nmax_message_size = 4096\n", path, sizeof path);
    CHECK_STATUS(STATUS_SUCCESS, MpsInitialize(path));
    h = h_open(NULL, L"Mirror", NULL);
    hc = h_open(callback, L"WithCallback", NULL);

    s = MpsAllocateMessage(5000, &big);
    /* A buffer larger than any message could be refused up front; the
     * contract says the send is what fails, so allocation must work. */
    CHECK_STATUS(STATUS_SUCCESS, s);
    h_fill(big, 1, 5000);
    h_info(&info, NULL, h_local_sp(), big, 5000, 1);
    CHECK_STATUS(STATUS_INVALID_BUFFER_SIZE, MpsSynchronousSend(h, &info));
    CHECK_STATUS(STATUS_INVALID_BUFFER_SIZE, MpsAsynchronousSend(hc, &info));
    /* 4097 is over, 4096 is the maximum and goes through. */
    info.Size = 4097;
    CHECK_STATUS(STATUS_INVALID_BUFFER_SIZE, MpsSynchronousSend(h, &info));
    max = h_alloc_filled(2, 4096);
    h_info(&info, NULL, h_local_sp(), max, 4096, 2);
    CHECK_STATUS(STATUS_SUCCESS, MpsSynchronousSend(h, &info));
    d = h_receive_checked(h, 2, 4096);
    CHECK_STATUS(STATUS_SUCCESS, MpsReleaseReceivedMessage(d));
    h_round_trip_barrier();
    CHECK_EQ_U(0, sent_events);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(big));
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(max));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(hc));
}

static void badinput_unconfigured_destination(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    MPS_HANDLE hc = h_open(callback, L"WithCallback", NULL);
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = h_alloc_filled(1, 16);
    CMI_SP_ID unit77 = h_sp(77, CMI_SP_A);
    CMI_SP_ID bad_sp = h_sp(0, 7);
    h_info(&info, NULL, unit77, buf, 16, 1);
    CHECK_STATUS(STATUS_INVALID_ADDRESS, MpsSynchronousSend(h, &info));
    CHECK_STATUS(STATUS_INVALID_ADDRESS, MpsAsynchronousSend(hc, &info));
    CHECK_STATUS(STATUS_INVALID_ADDRESS, MpsWaitForPeer(&unit77, 0));
    info.Destination = bad_sp;
    CHECK_STATUS(STATUS_INVALID_ADDRESS, MpsSynchronousSend(h, &info));
    CHECK_STATUS(STATUS_INVALID_ADDRESS, MpsAsynchronousSend(hc, &info));
    CHECK_STATUS(STATUS_INVALID_ADDRESS, MpsWaitForPeer(&bad_sp, 0));
    h_round_trip_barrier();
    CHECK_EQ_U(0, sent_events);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(hc));
}

/* The embedded default configures peer 0.B; nobody ever starts it. */
static void badinput_configured_destination_down(void)
{
    MPS_HANDLE h = h_open(NULL, L"Mirror", NULL);
    MPS_HANDLE hc = h_open(callback, L"WithCallback", NULL);
    MPS_SEND_MESSAGE_INFO info;
    PVOID buf = h_alloc_filled(1, 16);
    CMI_SP_ID peer = h_sp(0, CMI_SP_B);
    CMI_SP_ID local = h_local_sp();
    double t0 = h_now();
    CHECK_STATUS(STATUS_SUCCESS, MpsWaitForPeer(&local, 0));
    CHECK_STATUS(STATUS_TIMEOUT, MpsWaitForPeer(&peer, 300));
    CHECK(h_now() - t0 >= 0.25);
    h_info(&info, NULL, peer, buf, 16, 1);
    CHECK_STATUS(STATUS_HOST_UNREACHABLE, MpsSynchronousSend(h, &info));
    CHECK_STATUS(STATUS_HOST_UNREACHABLE, MpsAsynchronousSend(hc, &info));
    h_round_trip_barrier();
    CHECK_EQ_U(0, sent_events);
    CHECK_STATUS(STATUS_SUCCESS, MpsFreeMessage(buf));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(hc));
}

/* Log capture for the configuration tests. */
static char log_text[16384];
static size_t log_len;

static void log_routine(ULONG Level, const char *Line, PVOID Context)
{
    (void)Context;
    pthread_mutex_lock(&h_mu);
    if (Line != NULL && log_len + strlen(Line) + 16 < sizeof log_text)
        log_len += (size_t)snprintf(log_text + log_len, sizeof log_text - log_len, "[%u] %s\n",
                                    (unsigned)Level, Line);
    pthread_mutex_unlock(&h_mu);
    fprintf(stderr, "log[%u]: %s\n", (unsigned)Level, Line != NULL ? Line : "(null)");
}

static int log_mentions_line(int line)
{
    char a[32], b[32], c[32];
    char lower[sizeof log_text];
    size_t i;
    pthread_mutex_lock(&h_mu);
    for (i = 0; i <= log_len; i++)
        lower[i] = (char)((log_text[i] >= 'A' && log_text[i] <= 'Z') ? log_text[i] + 32 : log_text[i]);
    pthread_mutex_unlock(&h_mu);
    snprintf(a, sizeof a, "line %d", line);
    snprintf(b, sizeof b, ":%d:", line);
    snprintf(c, sizeof c, "line:%d", line);
    return strstr(lower, a) != NULL || strstr(lower, b) != NULL || strstr(lower, c) != NULL;
}

static void badinput_bad_config_garbage(void)
{
    char path[512], good[512];
    (void)MpsSetLogRoutine(log_routine, NULL);
    (void)MpsSetLogLevel(MPS_LOG_WARN); /* whatever MPS_LOG says */
    h_write_file("garbage.toml",
                 "# a configuration with a syntax error on line 3\n"
                 "sp = \"0.A\"\n"
                 "listen = = \"unix:/nowhere.sock\"\n"
                 "conduits = [0, 1]\n",
                 path, sizeof path);
    CHECK_STATUS(STATUS_DEVICE_CONFIGURATION_ERROR, MpsInitialize(path));
    if (log_len == 0)
        FAIL("no log line for the bad configuration");
    if (!log_mentions_line(3))
        FAIL("the log does not name line 3:\n%s", log_text);
    /* A good configuration afterwards works. */
    h_write_solo_config("", good, sizeof good);
    CHECK_STATUS(STATUS_SUCCESS, MpsInitialize(good));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h_open(NULL, L"Mirror", NULL)));
}

static void badinput_bad_config_values(void)
{
    char path[512];
    (void)MpsSetLogRoutine(log_routine, NULL);
    (void)MpsSetLogLevel(MPS_LOG_WARN); /* whatever MPS_LOG says */
    h_write_file("badsp.toml",
                 "sp = \"0.A\"\n"
                 "listen = \"tcp:127.0.0.1:1\"\n"
                 "\n"
                 "[[peer]]\n"
                 "sp = \"9.Z\"\n"
                 "address = \"tcp:127.0.0.1:2\"\n",
                 path, sizeof path);
    CHECK_STATUS(STATUS_DEVICE_CONFIGURATION_ERROR, MpsInitialize(path));
    CHECK(log_len > 0);
    if (!log_mentions_line(5))
        FAIL("the log does not name line 5:\n%s", log_text);
    log_len = 0;
    log_text[0] = '\0';
    snprintf(path, sizeof path, "%s/does-not-exist.toml", h_runtime_dir);
    CHECK_STATUS(STATUS_DEVICE_CONFIGURATION_ERROR, MpsInitialize(path));
    CHECK(log_len > 0);
}

static void badinput_bad_environment(void)
{
    char path[512];
    CHECK(setenv("MPS_SP", "banana", 1) == 0);
    CHECK_STATUS(STATUS_DEVICE_CONFIGURATION_ERROR, MpsInitialize(NULL));
    CHECK(setenv("MPS_SP", "0.A", 1) == 0);
    snprintf(path, sizeof path, "%s/missing.toml", h_runtime_dir);
    CHECK(setenv("MPS_CONFIG", path, 1) == 0);
    CHECK_STATUS(STATUS_DEVICE_CONFIGURATION_ERROR, MpsInitialize(NULL));
    CHECK(unsetenv("MPS_CONFIG") == 0);
    CHECK_STATUS(STATUS_SUCCESS, MpsInitialize(NULL));
}

static void badinput_unsafe_runtime_dir(void)
{
    int found;
    (void)MpsSetLogRoutine(log_routine, NULL);
    (void)MpsSetLogLevel(MPS_LOG_WARN); /* whatever MPS_LOG says */
    /* A socket directory others may write to is refused, before any call
     * could start an SP in it. */
    CHECK(chmod(h_runtime_dir, 0777) == 0);
    CHECK_STATUS(STATUS_DEVICE_CONFIGURATION_ERROR, MpsInitialize(NULL));
    pthread_mutex_lock(&h_mu);
    found = strstr(log_text, "writable by group or others") != NULL;
    pthread_mutex_unlock(&h_mu);
    if (!found)
        FAIL("the log does not say why the directory was refused:\n%s", log_text);
    CHECK(chmod(h_runtime_dir, 0700) == 0);
    CHECK_STATUS(STATUS_SUCCESS, MpsInitialize(NULL));
    CHECK_STATUS(STATUS_SUCCESS, MpsClose(h_open(NULL, L"Mirror", NULL)));
}

static void badinput_status_names(void)
{
    const char *n = MpsStatusName(STATUS_PENDING);
    CHECK(n != NULL && strstr(n, "PENDING") != NULL);
    n = MpsStatusName(STATUS_OBJECT_NAME_COLLISION);
    CHECK(n != NULL && strstr(n, "OBJECT_NAME_COLLISION") != NULL);
    n = MpsStatusName((NTSTATUS)0x12345678);
    CHECK(n != NULL);
}

int main(int argc, char **argv)
{
    static const h_case cases[] = {
        H_CASE(badinput_null_pointers),
        H_CASE(badinput_receive_null_pdata),
        H_CASE(badinput_null_handle),
        H_CASE(badinput_forged_handles),
        H_CASE(badinput_stale_handle),
        H_CASE(badinput_handle_after_shutdown),
        H_CASE(badinput_buffers_after_shutdown),
        H_CASE(badinput_open_bad_names),
        H_CASE(badinput_open_unterminated_name),
        H_CASE(badinput_open_unknown_conduit),
        H_CASE(badinput_open_conduit_not_configured),
        H_CASE(badinput_oversized_message),
        H_CASE(badinput_unconfigured_destination),
        H_CASE(badinput_configured_destination_down),
        H_CASE(badinput_bad_config_garbage),
        H_CASE(badinput_bad_config_values),
        H_CASE(badinput_bad_environment),
        H_CASE(badinput_unsafe_runtime_dir),
        H_CASE(badinput_status_names),
    };
    return harness_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
