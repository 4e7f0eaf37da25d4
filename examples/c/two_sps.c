/*
 * two_sps.c: the C example. One program, two SPs of one storage unit:
 *
 *     MPS_SP=0.B ./two_sps_c &  MPS_SP=0.A ./two_sps_c
 *
 * SP A is the client: it sends synchronous messages (each call returns once
 * SP B has confirmed), then asynchronous ones with a window, counting the
 * completions its callback reports. SP B is the target: it checks each
 * message, then answers with synchronous messages of its own. Nothing is
 * configured by hand: the embedded default (MPS_SP, MPS_RUNTIME_DIR) pairs
 * the two SPs over Unix-domain sockets.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mps.h"

#define CONDUIT 0
#define DOMAIN 0x4F4D4544UL /* 'DEMO' */
#define MESSAGES 1000
#define WINDOW 64
#define TAG_HELLO 0xFFFF0001UL
#define TAG_END 0xFFFF0002UL

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static ULONG sent_ok, sent_failed, received_async, received_bad;

static void fill(unsigned char *p, ULONG size, ULONG i)
{
    ULONG k;
    for (k = 0; k < size; k++)
        p[k] = (unsigned char)(k * 131 + i);
}

static int good(const unsigned char *p, ULONG size, ULONG i)
{
    ULONG k;
    for (k = 0; k < size; k++)
        if (p[k] != (unsigned char)(k * 131 + i))
            return 0;
    return 1;
}

static ULONG size_of(ULONG i) { return 64 + (i * 7919) % 4033; }

static void die(const char *what, NTSTATUS s)
{
    fprintf(stderr, "%s: %s (0x%08X)\n", what, MpsStatusName(s), (unsigned)s);
    exit(1);
}

/* Runs on a library thread; calls for this session are serialized. */
static NTSTATUS Callback(MPS_EVENT Event, PVOID Data)
{
    /* Wake the waiting thread once per delivery, at its last event
     * (SpPendingCallbacks == 0 in a callback), not at every completion: woken at
     * each one, on a busy CPU it would preempt this thread and refill one
     * window slot at a time. */
    MPS_HANDLE h = NULL;
    MPS_SESSION_INFO info;
    int last = 1;
    if (Event == MpsEventMessageSent)
        h = ((PMPS_SEND_EVENT_DATA)Data)->FilamentHandle;
    else if (Event == MpsEventMessageReceived)
        h = ((PMPS_RECEIVED_EVENT_DATA)Data)->FilamentHandle;
    if (h != NULL && MpsQuerySession(h, &info) == STATUS_SUCCESS)
        last = info.SpPendingCallbacks == 0;
    pthread_mutex_lock(&lock);
    if (Event == MpsEventMessageSent) {
        PMPS_SEND_EVENT_DATA d = (PMPS_SEND_EVENT_DATA)Data;
        if (d->TransmissionStatus == STATUS_SUCCESS)
            sent_ok++;
        else
            sent_failed++;
        MpsFreeMessage(d->Ptr); /* the buffer is ours again */
    } else if (Event == MpsEventMessageReceived) {
        PMPS_RECEIVED_EVENT_DATA d = (PMPS_RECEIVED_EVENT_DATA)Data;
        if (d->SequenceTag != received_async || d->Size != size_of(d->SequenceTag) ||
            !good((unsigned char *)d->Ptr, d->Size, d->SequenceTag))
            received_bad++;
        received_async++;
        MpsReleaseReceivedMessage(d);
    }
    if (last)
        pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    return STATUS_SUCCESS;
}

static NTSTATUS send_sync(MPS_HANDLE h, PCMI_SP_ID to, PVOID buf, ULONG size, ULONG tag)
{
    MPS_SEND_MESSAGE_INFO info;
    info.ContextHandle = NULL;
    info.Destination = *to;
    info.Ptr = buf;
    info.Size = size;
    info.SequenceTag = tag;
    return MpsSynchronousSend(h, &info);
}

/* Both SPs open first, then say hello. A hello that finds no mailbox means the
 * other SP has not opened yet: it will, and its hello will find ours. */
static void rendezvous(MPS_HANDLE h, PCMI_SP_ID peer, PVOID empty)
{
    NTSTATUS s = MpsWaitForPeer(peer, 60000);
    PMPS_RECEIVED_EVENT_DATA m;
    if (s != STATUS_SUCCESS)
        die("MpsWaitForPeer", s);
    s = send_sync(h, peer, empty, 0, TAG_HELLO);
    if (s == STATUS_OBJECT_NAME_NOT_FOUND) {
        s = MpsSynchronousReceive(h, 60, TAG_HELLO, &m);
        if (s != STATUS_SUCCESS)
            die("waiting for the peer's hello", s);
        MpsReleaseReceivedMessage(m);
    } else if (s != STATUS_SUCCESS) {
        die("hello", s);
    }
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int client(MPS_HANDLE h, PCMI_SP_ID me, PCMI_SP_ID peer, PVOID buf)
{
    ULONG i, back_good = 0;
    double t0 = now_us(), total;
    NTSTATUS s;
    PMPS_RECEIVED_EVENT_DATA m;

    for (i = 0; i < MESSAGES; i++) {
        fill(buf, size_of(i), i);
        s = send_sync(h, peer, buf, size_of(i), i);
        if (s != STATUS_SUCCESS)
            die("MpsSynchronousSend", s);
    }
    total = now_us() - t0;
    printf("SP %u.%c: %d synchronous messages to SP %u.%c, all confirmed, %.1f us per confirmed send\n",
           me->StorageUnit, me->Sp ? 'B' : 'A', MESSAGES, peer->StorageUnit, peer->Sp ? 'B' : 'A', total / MESSAGES);

    for (i = 0; i < MESSAGES; i++) {
        MPS_SEND_MESSAGE_INFO info;
        PVOID p;
        pthread_mutex_lock(&lock);
        while (i - sent_ok - sent_failed >= WINDOW)
            pthread_cond_wait(&changed, &lock);
        pthread_mutex_unlock(&lock);
        s = MpsAllocateMessage(size_of(i), &p); /* lent to the library until the callback */
        if (s != STATUS_SUCCESS)
            die("MpsAllocateMessage", s);
        fill(p, size_of(i), i);
        info.ContextHandle = NULL;
        info.Destination = *peer;
        info.Ptr = p;
        info.Size = size_of(i);
        info.SequenceTag = i;
        s = MpsAsynchronousSend(h, &info);
        if (s != STATUS_PENDING)
            die("MpsAsynchronousSend", s);
    }
    pthread_mutex_lock(&lock);
    while (sent_ok + sent_failed < MESSAGES)
        pthread_cond_wait(&changed, &lock);
    printf("SP %u.%c: %d asynchronous messages, %u confirmed and %u failed through the callback\n",
           me->StorageUnit, me->Sp ? 'B' : 'A', MESSAGES, sent_ok, sent_failed);
    pthread_mutex_unlock(&lock);

    s = send_sync(h, peer, buf, 0, TAG_END);
    if (s != STATUS_SUCCESS)
        die("end", s);
    for (i = 0; i < MESSAGES;) {
        s = MpsSynchronousReceive(h, 60, 0, &m);
        if (s != STATUS_SUCCESS)
            die("MpsSynchronousReceive", s);
        if (m->SequenceTag != TAG_HELLO) {
            if (m->SequenceTag == i && m->Size == size_of(i) && good(m->Ptr, m->Size, i))
                back_good++;
            i++;
        }
        MpsReleaseReceivedMessage(m->Ptr); /* either pointer releases it */
    }
    printf("SP %u.%c: %u of %d synchronous messages from SP %u.%c in order and intact\n",
           me->StorageUnit, me->Sp ? 'B' : 'A', back_good, MESSAGES, peer->StorageUnit, peer->Sp ? 'B' : 'A');
    return sent_ok == MESSAGES && back_good == MESSAGES ? 0 : 1;
}

static int target(MPS_HANDLE h, PCMI_SP_ID me, PCMI_SP_ID peer, PVOID buf)
{
    ULONG i = 0, sync_good = 0;
    NTSTATUS s;
    PMPS_RECEIVED_EVENT_DATA m;

    for (;;) {
        s = MpsSynchronousReceive(h, 60, 0, &m);
        if (s != STATUS_SUCCESS)
            die("MpsSynchronousReceive", s);
        if (m->SequenceTag == TAG_END) {
            MpsReleaseReceivedMessage(m);
            break;
        }
        if (m->SequenceTag != TAG_HELLO) {
            if (m->SequenceTag == i && m->Size == size_of(i) && good(m->Ptr, m->Size, i))
                sync_good++;
            i++;
        }
        MpsReleaseReceivedMessage(m);
    }
    /* Every asynchronous message was confirmed before END: wait for our callback. */
    pthread_mutex_lock(&lock);
    while (received_async < MESSAGES)
        pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    printf("SP %u.%c: %u of %u synchronous and %u of %u asynchronous messages in order and intact\n",
           me->StorageUnit, me->Sp ? 'B' : 'A', sync_good, i, received_async - received_bad, received_async);
    for (i = 0; i < MESSAGES; i++) {
        fill(buf, size_of(i), i);
        s = send_sync(h, peer, buf, size_of(i), i);
        if (s != STATUS_SUCCESS)
            die("MpsSynchronousSend", s);
    }
    printf("SP %u.%c: %d synchronous messages back to SP %u.%c, all confirmed\n",
           me->StorageUnit, me->Sp ? 'B' : 'A', MESSAGES, peer->StorageUnit, peer->Sp ? 'B' : 'A');
    return sync_good == MESSAGES && received_bad == 0 ? 0 : 1;
}

int main(void)
{
    MPS_HANDLE h;
    CMI_SP_ID me, peer;
    PVOID buf;
    NTSTATUS s;
    int rc;

    s = MpsOpen(Callback, CONDUIT, DOMAIN, L"Mirror", NULL, &h);
    if (s != STATUS_SUCCESS)
        die("MpsOpen", s);
    s = MpsGetSpId(&me, &peer);
    if (s != STATUS_SUCCESS)
        die("MpsGetSpId", s);
    if (peer.Sp == CMI_SP_NONE) {
        fprintf(stderr, "SP %u.%c has no peer SP in its unit\n", me.StorageUnit, me.Sp ? 'B' : 'A');
        return 1;
    }
    s = MpsAllocateMessage(4096, &buf);
    if (s != STATUS_SUCCESS)
        die("MpsAllocateMessage", s);
    rendezvous(h, &peer, buf);
    rc = me.Sp == CMI_SP_A ? client(h, &me, &peer, buf) : target(h, &me, &peer, buf);
    MpsFreeMessage(buf);
    MpsClose(h);
    MpsShutdown();
    return rc;
}
