// The one table of NTSTATUS values used by libmps (SPEC section 3).
// Included by src/status.rs (Rust constants) and by build.rs (the guarded
// #defines in include/mps.h), so the two cannot drift apart.
status_table! {
    STATUS_SUCCESS = 0x0000_0000, "The operation succeeded.";
    STATUS_TIMEOUT = 0x0000_0102, "MpsSynchronousReceive: nothing arrived in time, or nothing queued for a test (Timeout 0).";
    STATUS_PENDING = 0x0000_0103, "Accepted; completes later (asynchronous send, close with work outstanding).";
    STATUS_DEVICE_BUSY = 0x8000_0011, "The buffer is already in flight (or was freed while in flight).";
    STATUS_INVALID_HANDLE = 0xC000_0008, "The handle is not open: closed, stale, forged or NULL.";
    STATUS_INVALID_PARAMETER = 0xC000_000D, "NULL or malformed argument, unknown conduit, bad mailbox name, or a pointer that is not the library's to free or release.";
    STATUS_OBJECT_NAME_NOT_FOUND = 0xC000_0034, "No session with that mailbox is open at the destination.";
    STATUS_OBJECT_NAME_COLLISION = 0xC000_0035, "MpsOpen of a (conduit, domain, mailbox) already open in this SP.";
    STATUS_INSUFFICIENT_RESOURCES = 0xC000_009A, "Out of memory, a send queue at its bound, or the target session's receive queue is full.";
    STATUS_DEVICE_NOT_READY = 0xC000_00A3, "No SP is running: MpsShutdown stopped it, and only MpsInitialize starts it again.";
    STATUS_PIPE_CLOSING = 0xC000_00B1, "The session is pending closure.";
    STATUS_INTERNAL_ERROR = 0xC000_00E5, "A bug inside the library (a caught panic); the reason is in the log.";
    STATUS_INVALID_USER_BUFFER = 0xC000_00E8, "The buffer is not from MpsAllocateMessage, or Size is larger than the buffer.";
    STATUS_CANCELLED = 0xC000_0120, "A pending synchronous receive was woken by MpsClose.";
    STATUS_INVALID_ADDRESS = 0xC000_0141, "The destination is not a configured SP.";
    STATUS_DEVICE_CONFIGURATION_ERROR = 0xC000_0182, "The configuration is missing or invalid; the reason is in the log.";
    STATUS_CONNECTION_DISCONNECTED = 0xC000_020C, "The link was lost after the message left, before its confirmation.";
    STATUS_INVALID_BUFFER_SIZE = 0xC000_0206, "The message is larger than the configured (or the peer's) maximum message size.";
    STATUS_HOST_UNREACHABLE = 0xC000_023D, "The destination is configured but its link is down at the time of the call.";
}
