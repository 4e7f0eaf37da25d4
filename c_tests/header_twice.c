/* header_twice: including mps.h twice in one unit is harmless (include guard,
 * guarded typedefs and #defines). */
#include "mps.h"
#include "mps.h"

int main(void)
{
    CMI_SP_ID id;
    MPS_HANDLE h = 0;
    id.StorageUnit = 0;
    id.Sp = CMI_SP_B;
    _Static_assert(sizeof(CMI_SP_ID) == 2 * sizeof(ULONG), "CMI_SP_ID is two ULONGs");
    return (id.Sp == 1 && h == 0 && STATUS_TIMEOUT == 0x102) ? 0 : 1;
}
