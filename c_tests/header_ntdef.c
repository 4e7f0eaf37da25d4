/* header_ntdef: a unit that has Windows-style ntdef.h definitions (_NTDEF_)
 * includes mps.h after them without a clash. */
#include <stdint.h>
#include <wchar.h>

#define _NTDEF_
typedef int32_t NTSTATUS;
typedef uint32_t ULONG;
typedef int32_t LONG;
typedef void *PVOID;
typedef wchar_t WCHAR;
typedef WCHAR *PWCHAR;

#include "mps.h"

int main(void)
{
    ULONG conduit = 0;
    CMI_CONDUIT_ID c = conduit;
    _Static_assert(sizeof(CMI_CONDUIT_ID) == 4, "CMI_CONDUIT_ID is 32-bit");
    return (c == 0 && NT_SUCCESS(STATUS_SUCCESS)) ? 0 : 1;
}
