/* header_alone: mps.h compiles as the only include of a C11 unit (-Wall -Wextra
 * -Werror -pedantic -Wstrict-prototypes), and every routine links from libmps. */
#include "mps.h"

/* Taking each routine's address makes the link step prove it is exported. */
typedef NTSTATUS (*open_fn)(PMPS_CALLBACK_ROUTINE, CMI_CONDUIT_ID, ULONG, PWCHAR, PVOID, PMPS_HANDLE);

int main(void)
{
    open_fn volatile open = MpsOpen;
    NTSTATUS (*volatile close_fn)(MPS_HANDLE) = MpsClose;
    NTSTATUS (*volatile alloc_fn)(ULONG, PVOID *) = MpsAllocateMessage;
    NTSTATUS (*volatile free_fn)(PVOID) = MpsFreeMessage;
    NTSTATUS (*volatile async_fn)(MPS_HANDLE, PMPS_SEND_MESSAGE_INFO) = MpsAsynchronousSend;
    NTSTATUS (*volatile sync_fn)(MPS_HANDLE, PMPS_SEND_MESSAGE_INFO) = MpsSynchronousSend;
    NTSTATUS (*volatile recv_fn)(MPS_HANDLE, LONG, ULONG, PMPS_RECEIVED_EVENT_DATA *) = MpsSynchronousReceive;
    NTSTATUS (*volatile release_fn)(PVOID) = MpsReleaseReceivedMessage;
    NTSTATUS (*volatile spid_fn)(PCMI_SP_ID, PCMI_SP_ID) = MpsGetSpId;
    const char *(*volatile name_fn)(NTSTATUS) = MpsStatusName;
    _Static_assert(sizeof(MPS_SEND_MESSAGE_INFO) >= 2 * sizeof(void *), "MPS_SEND_MESSAGE_INFO is complete");
    return (open != 0 && close_fn != 0 && alloc_fn != 0 && free_fn != 0 && async_fn != 0 &&
            sync_fn != 0 && recv_fn != 0 && release_fn != 0 && spid_fn != 0 && name_fn != 0 &&
            NT_SUCCESS(STATUS_SUCCESS) && NT_SUCCESS(STATUS_PENDING) &&
            !NT_SUCCESS(STATUS_INVALID_HANDLE))
               ? 0
               : 1;
}
