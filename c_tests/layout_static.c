/*
 * layout_static: the frozen ABI, checked at compile time (SPEC section 2 and 3).
 * The Rust side asserts the same numbers in src/ffi/types.rs; together they
 * keep a layout change from slipping through. If this file compiles, it passes.
 */
#include <stddef.h>
#include <stdint.h>
#include "mps.h"

#define SAME_TYPE(a, b) _Generic((a), b: 1, default: 0)

/* NT base types: LLP64 widths on every platform. */
_Static_assert(sizeof(NTSTATUS) == 4, "NTSTATUS is 32-bit");
_Static_assert((NTSTATUS)-1 < 0, "NTSTATUS is signed");
_Static_assert(sizeof(ULONG) == 4 && (ULONG)-1 > 0, "ULONG is unsigned 32-bit");
_Static_assert(sizeof(LONG) == 4 && (LONG)-1 < 0, "LONG is signed 32-bit");
_Static_assert(sizeof(WCHAR) == sizeof(wchar_t), "WCHAR is wchar_t");
_Static_assert(sizeof(PVOID) == sizeof(void *), "PVOID is a pointer");
_Static_assert(sizeof(CMI_CONDUIT_ID) == 4, "CMI_CONDUIT_ID is 32-bit");
_Static_assert(sizeof(MPS_HANDLE) == sizeof(void *), "MPS_HANDLE is pointer-sized");
_Static_assert(sizeof(PMPS_HANDLE) == sizeof(void *), "PMPS_HANDLE");
_Static_assert(sizeof(MPS_EVENT) == 4, "MPS_EVENT is an int-sized enum");

/* CMI_SP_ID */
_Static_assert(sizeof(CMI_SP_ID) == 8, "sizeof CMI_SP_ID");
_Static_assert(offsetof(CMI_SP_ID, StorageUnit) == 0, "CMI_SP_ID.StorageUnit");
_Static_assert(offsetof(CMI_SP_ID, Sp) == 4, "CMI_SP_ID.Sp");
_Static_assert(CMI_SP_A == 0 && CMI_SP_B == 1, "CMI_SP_A/B");
_Static_assert((ULONG)CMI_SP_NONE == 0xFFFFFFFFu, "CMI_SP_NONE");
_Static_assert(MPS_MAX_MAILBOX_NAME == 64, "MPS_MAX_MAILBOX_NAME");

/* MPS_EVENT: explicit, documented values. */
_Static_assert(MpsEventCloseCompleted == 1, "MpsEventCloseCompleted");
_Static_assert(MpsEventMessageSent == 2, "MpsEventMessageSent");
_Static_assert(MpsEventMessageReceived == 3, "MpsEventMessageReceived");

/* Log levels. */
_Static_assert(MPS_LOG_OFF == 0 && MPS_LOG_ERROR == 1 && MPS_LOG_WARN == 2, "log levels");
_Static_assert(MPS_LOG_INFO == 3 && MPS_LOG_DEBUG == 4 && MPS_LOG_TRACE == 5, "log levels");

#if UINTPTR_MAX == 0xFFFFFFFFFFFFFFFFu
/* MPS_SEND_MESSAGE_INFO: ContextHandle, Destination, Ptr, Size, SequenceTag (seed order). */
_Static_assert(sizeof(MPS_SEND_MESSAGE_INFO) == 32, "sizeof MPS_SEND_MESSAGE_INFO");
_Static_assert(offsetof(MPS_SEND_MESSAGE_INFO, ContextHandle) == 0, "ContextHandle");
_Static_assert(offsetof(MPS_SEND_MESSAGE_INFO, Destination) == 8, "Destination");
_Static_assert(offsetof(MPS_SEND_MESSAGE_INFO, Ptr) == 16, "Ptr");
_Static_assert(offsetof(MPS_SEND_MESSAGE_INFO, Size) == 24, "Size");
_Static_assert(offsetof(MPS_SEND_MESSAGE_INFO, SequenceTag) == 28, "SequenceTag");

/* MPS_CLOSE_EVENT_DATA */
_Static_assert(sizeof(MPS_CLOSE_EVENT_DATA) == 16, "sizeof MPS_CLOSE_EVENT_DATA");
_Static_assert(offsetof(MPS_CLOSE_EVENT_DATA, FilamentHandle) == 0, "FilamentHandle");
_Static_assert(offsetof(MPS_CLOSE_EVENT_DATA, CloseStatus) == 8, "CloseStatus");

/* MPS_SEND_EVENT_DATA: documented fields, then the appended ones. */
_Static_assert(sizeof(MPS_SEND_EVENT_DATA) == 40, "sizeof MPS_SEND_EVENT_DATA");
_Static_assert(offsetof(MPS_SEND_EVENT_DATA, ContextHandle) == 0, "ContextHandle");
_Static_assert(offsetof(MPS_SEND_EVENT_DATA, TransmissionStatus) == 8, "TransmissionStatus");
_Static_assert(offsetof(MPS_SEND_EVENT_DATA, FilamentHandle) == 16, "FilamentHandle");
_Static_assert(offsetof(MPS_SEND_EVENT_DATA, SequenceTag) == 24, "SequenceTag");
_Static_assert(offsetof(MPS_SEND_EVENT_DATA, Ptr) == 32, "Ptr");

/* MPS_RECEIVED_EVENT_DATA: documented fields, then the appended ones. */
_Static_assert(sizeof(MPS_RECEIVED_EVENT_DATA) == 48, "sizeof MPS_RECEIVED_EVENT_DATA");
_Static_assert(offsetof(MPS_RECEIVED_EVENT_DATA, Ptr) == 0, "Ptr");
_Static_assert(offsetof(MPS_RECEIVED_EVENT_DATA, Sender) == 8, "Sender");
_Static_assert(offsetof(MPS_RECEIVED_EVENT_DATA, Size) == 16, "Size");
_Static_assert(offsetof(MPS_RECEIVED_EVENT_DATA, SynchronousStatus) == 20, "SynchronousStatus");
_Static_assert(offsetof(MPS_RECEIVED_EVENT_DATA, FilamentHandle) == 24, "FilamentHandle");
_Static_assert(offsetof(MPS_RECEIVED_EVENT_DATA, Context) == 32, "Context");
_Static_assert(offsetof(MPS_RECEIVED_EVENT_DATA, SequenceTag) == 40, "SequenceTag");
_Static_assert(sizeof(MPS_SESSION_INFO) == 24, "sizeof MPS_SESSION_INFO");
_Static_assert(offsetof(MPS_SESSION_INFO, SpPendingCallbacks) == 20, "SpPendingCallbacks");
_Static_assert(offsetof(MPS_SESSION_INFO, BlockedReceivers) == 4, "BlockedReceivers");
_Static_assert(offsetof(MPS_SESSION_INFO, Closing) == 16, "Closing");
#endif

/* Status values: the real NT numbers (SPEC section 3). */
#define STATUS_IS(name, value) _Static_assert((uint32_t)(name) == (uint32_t)(value), #name)
STATUS_IS(STATUS_SUCCESS, 0x00000000u);
STATUS_IS(STATUS_PENDING, 0x00000103u);
STATUS_IS(STATUS_TIMEOUT, 0x00000102u);
STATUS_IS(STATUS_INVALID_HANDLE, 0xC0000008u);
STATUS_IS(STATUS_INVALID_PARAMETER, 0xC000000Du);
STATUS_IS(STATUS_PIPE_CLOSING, 0xC00000B1u);
STATUS_IS(STATUS_DEVICE_NOT_READY, 0xC00000A3u);
STATUS_IS(STATUS_INVALID_ADDRESS, 0xC0000141u);
STATUS_IS(STATUS_HOST_UNREACHABLE, 0xC000023Du);
STATUS_IS(STATUS_CONNECTION_DISCONNECTED, 0xC000020Cu);
STATUS_IS(STATUS_INVALID_USER_BUFFER, 0xC00000E8u);
STATUS_IS(STATUS_DEVICE_BUSY, 0x80000011u);
STATUS_IS(STATUS_INVALID_BUFFER_SIZE, 0xC0000206u);
STATUS_IS(STATUS_OBJECT_NAME_NOT_FOUND, 0xC0000034u);
STATUS_IS(STATUS_OBJECT_NAME_COLLISION, 0xC0000035u);
STATUS_IS(STATUS_INSUFFICIENT_RESOURCES, 0xC000009Au);
STATUS_IS(STATUS_CANCELLED, 0xC0000120u);
STATUS_IS(STATUS_DEVICE_CONFIGURATION_ERROR, 0xC0000182u);
STATUS_IS(STATUS_INTERNAL_ERROR, 0xC00000E5u);

/* NT_SUCCESS: success and informational values are successes, warnings and errors are not. */
_Static_assert(NT_SUCCESS(STATUS_SUCCESS) && NT_SUCCESS(STATUS_PENDING) && NT_SUCCESS(STATUS_TIMEOUT), "NT_SUCCESS");
_Static_assert(!NT_SUCCESS(STATUS_DEVICE_BUSY) && !NT_SUCCESS(STATUS_INVALID_HANDLE), "!NT_SUCCESS");

/* Field types (what a port's assignments rely on). */
static int field_types_match(void)
{
    MPS_SEND_MESSAGE_INFO i = {0};
    MPS_RECEIVED_EVENT_DATA r = {0};
    MPS_SEND_EVENT_DATA s = {0};
    MPS_CLOSE_EVENT_DATA c = {0};
    return SAME_TYPE(i.ContextHandle, PVOID) && SAME_TYPE(i.Destination, CMI_SP_ID) &&
           SAME_TYPE(i.Ptr, PVOID) && SAME_TYPE(i.Size, ULONG) && SAME_TYPE(i.SequenceTag, ULONG) &&
           SAME_TYPE(r.Ptr, PVOID) && SAME_TYPE(r.Sender, CMI_SP_ID) && SAME_TYPE(r.Size, ULONG) &&
           SAME_TYPE(r.SynchronousStatus, NTSTATUS) && SAME_TYPE(r.FilamentHandle, MPS_HANDLE) &&
           SAME_TYPE(r.Context, PVOID) && SAME_TYPE(r.SequenceTag, ULONG) &&
           SAME_TYPE(s.ContextHandle, PVOID) && SAME_TYPE(s.TransmissionStatus, NTSTATUS) &&
           SAME_TYPE(s.FilamentHandle, MPS_HANDLE) && SAME_TYPE(s.SequenceTag, ULONG) &&
           SAME_TYPE(s.Ptr, PVOID) && SAME_TYPE(c.FilamentHandle, MPS_HANDLE) &&
           SAME_TYPE(c.CloseStatus, NTSTATUS) && SAME_TYPE((WCHAR)0, wchar_t) &&
           SAME_TYPE((PWCHAR)0, wchar_t *) && SAME_TYPE((PMPS_SEND_MESSAGE_INFO)0, MPS_SEND_MESSAGE_INFO *) &&
           SAME_TYPE((PMPS_CLOSE_EVENT_DATA)0, MPS_CLOSE_EVENT_DATA *) &&
           SAME_TYPE((PMPS_SEND_EVENT_DATA)0, MPS_SEND_EVENT_DATA *) &&
           SAME_TYPE((PMPS_RECEIVED_EVENT_DATA)0, MPS_RECEIVED_EVENT_DATA *) &&
           SAME_TYPE((PMPS_EVENT)0, MPS_EVENT *) && SAME_TYPE((PCMI_SP_ID)0, CMI_SP_ID *) &&
           SAME_TYPE((PMPS_HANDLE)0, MPS_HANDLE *);
}

int main(void)
{
    return field_types_match() ? 0 : 1;
}
