/* header_c99: mps.h is self-contained C99 (-std=c99 -pedantic -Wall -Wextra -Werror). */
#include "mps.h"

typedef char mps_check_info_size[(sizeof(MPS_SEND_MESSAGE_INFO) >= 24) ? 1 : -1];

int main(void)
{
    MPS_RECEIVED_EVENT_DATA d;
    MPS_EVENT e = MpsEventMessageReceived;
    d.Size = 0;
    d.SynchronousStatus = STATUS_SUCCESS;
    return (e == 3 && d.Size == 0 && NT_SUCCESS(d.SynchronousStatus) &&
            sizeof(mps_check_info_size) == 1)
               ? 0
               : 1;
}
