// header_cxx: mps.h compiles as C++11 (-Wall -Wextra -Werror -pedantic) and its
// routines have C linkage (the link step fails on mangled names).
#include "mps.h"

static_assert(sizeof(MPS_SEND_MESSAGE_INFO) == 4 * sizeof(void *), "MPS_SEND_MESSAGE_INFO is 4 words");
static_assert(MpsEventCloseCompleted == 1, "MpsEventCloseCompleted");
static_assert(sizeof(NTSTATUS) == 4 && sizeof(ULONG) == 4 && sizeof(LONG) == 4, "NT base types are 32-bit");

static NTSTATUS callback(MPS_EVENT Event, PVOID Data)
{
    (void)Data;
    return Event == MpsEventMessageSent ? STATUS_SUCCESS : STATUS_SUCCESS;
}

int main()
{
    PMPS_CALLBACK_ROUTINE cb = callback;
    NTSTATUS (*volatile open)(PMPS_CALLBACK_ROUTINE, CMI_CONDUIT_ID, ULONG, PWCHAR, PVOID, PMPS_HANDLE) = MpsOpen;
    NTSTATUS (*volatile recv)(MPS_HANDLE, LONG, ULONG, PMPS_RECEIVED_EVENT_DATA *) = MpsSynchronousReceive;
    NTSTATUS (*volatile shutdown)(void) = MpsShutdown;
    const char *(*volatile name)(NTSTATUS) = MpsStatusName;
    (void)shutdown;
    WCHAR mailbox[] = L"Mirror";
    PWCHAR p = mailbox;
    return (cb != nullptr && open != nullptr && recv != nullptr && name != nullptr && p[0] == L'M' &&
            NT_SUCCESS(STATUS_PENDING))
               ? 0
               : 1;
}
