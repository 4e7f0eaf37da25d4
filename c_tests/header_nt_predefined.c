/* header_nt_predefined: a port that already has its own NT compatibility
 * definitions (base types, NT_SUCCESS, some STATUS_* values) includes mps.h
 * after them without a clash. */
#include <stdint.h>
#include <wchar.h>

typedef int NTSTATUS;            /* int32_t on Linux */
typedef unsigned int ULONG;      /* uint32_t on Linux: NT is LLP64 */
typedef int LONG;
typedef void *PVOID;
typedef wchar_t WCHAR;
typedef WCHAR *PWCHAR;
#define MPS_NT_BASE_TYPES_DEFINED 1
#define NT_SUCCESS(Status) (((NTSTATUS)(Status)) >= 0)
#define STATUS_SUCCESS ((NTSTATUS)0x00000000L)
#define STATUS_PENDING ((NTSTATUS)0x00000103L)
#define STATUS_INVALID_PARAMETER ((NTSTATUS)0xC000000DL)

#include "mps.h"

int main(void)
{
    NTSTATUS (*volatile free_fn)(PVOID) = MpsFreeMessage;
    _Static_assert(STATUS_TIMEOUT == 0x102, "mps.h still supplies the values the port lacks");
    _Static_assert(STATUS_INVALID_PARAMETER == (NTSTATUS)0xC000000DL, "same value");
    return (free_fn != 0 && NT_SUCCESS(STATUS_PENDING) && !NT_SUCCESS(STATUS_INVALID_HANDLE)) ? 0 : 1;
}
