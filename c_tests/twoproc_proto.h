/*
 * twoproc_proto.h: what the harness (SP 0.A) and peer.c (SP 0.B) agree on.
 *
 * Both open the same (conduit, domain, mailbox), which is how peer
 * applications find each other (SPEC section 1). Data messages carry tags
 * 1..n; control messages carry tags >= PROTO_TAG_CONTROL and are always
 * sent synchronously, so each side reads them with a selective receive.
 * Every payload is h_pattern(tag, size, byte index).
 */
#ifndef MPS_C_TESTS_TWOPROC_PROTO_H
#define MPS_C_TESTS_TWOPROC_PROTO_H

#include <stdint.h>
#include "mps.h"

#define PROTO_MAILBOX L"MirrorDriver"
#define PROTO_NULLCB_MAILBOX L"UserModeClient"
/* Opened only by the harness: sends to it at the peer are OBJECT_NAME_NOT_FOUND. */
#define PROTO_HARNESS_ONLY_MAILBOX L"HarnessOnly"

#define PROTO_TAG_CONTROL 0xF0000000u
#define PROTO_TAG_READY 0xF0000001u     /* peer -> harness: open and linked */
#define PROTO_TAG_END_SYNC 0xF0000002u  /* harness -> peer: uint32 count of sync messages */
#define PROTO_TAG_END_ASYNC 0xF0000003u /* harness -> peer: uint32 count of async messages */
#define PROTO_TAG_REPORT 0xF0000004u    /* peer -> harness: struct proto_report */
#define PROTO_TAG_EXIT 0xF0000005u      /* harness -> peer: close, shut down, exit(0 if clean) */
#define PROTO_TAG_DONE 0xF0000006u      /* peer -> harness (nullcb mode): uint32 successes */
#define PROTO_TAG_ACK_SYNC 0xF0000007u  /* peer -> harness: uint32 sync messages processed */
#define PROTO_TAG_ACK_ASYNC 0xF0000008u /* peer -> harness: uint32 async messages processed */

/*
 * Flow control. A confirmation means "accepted into the target session's
 * queue", not "consumed", so a sender can outrun a slow receiver until the
 * queue (1024 by default) is full and the target rejects with
 * STATUS_INSUFFICIENT_RESOURCES. The peer acknowledges every PROTO_ACK_EVERY
 * processed messages, and the harness never runs more than PROTO_CREDIT
 * messages ahead of the last acknowledgement.
 */
#define PROTO_ACK_EVERY 128u
#define PROTO_CREDIT 512u

/* Kill phase: asynchronous messages tagged PROTO_KILL_BASE + k; the peer
 * SIGKILLs itself on receiving k == PROTO_KILL_AFTER. */
#define PROTO_KILL_BASE 0x00100000u
#define PROTO_KILL_AFTER 300u

#define PROTO_NULLCB_COUNT 100u

struct proto_report {
    uint32_t sync_received;
    uint32_t sync_errors;
    uint32_t async_received;
    uint32_t async_errors;
    uint32_t first_error_tag; /* 0 when there was none */
    uint32_t first_error_kind;
};

/* Sizes, 0..8191 and including 0, as deterministic functions of the index. */
static inline ULONG proto_sync_size(ULONG i) { return (i * 7919u) % 8192u; }
static inline ULONG proto_async_size(ULONG i) { return (i * 6151u + 3u) % 8192u; }
static inline ULONG proto_kill_size(ULONG k) { return (k * 97u) % 4096u; }
static inline ULONG proto_nullcb_size(ULONG i) { return (i * 37u) % 1000u; }

#endif
