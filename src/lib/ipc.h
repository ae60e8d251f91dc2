/* ipc.h: typed messages between poboxd's processes (master, auth, login,
 * mail) over SOCK_SEQPACKET socketpairs. One datagram is one message, so
 * nothing is reassembled; a message carries a type, a request id echoed
 * by the answer, up to IPC_FIELDS_MAX length-prefixed fields and at most
 * one file descriptor (SCM_RIGHTS). Every process that reads messages
 * from a less trusted peer decodes them here, under hard limits. */
#ifndef POBOX_IPC_H
#define POBOX_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IPC_MSG_MAX 16384   /* octets of one message, header included */
#define IPC_FIELDS_MAX 32
#define IPC_HEADER 8        /* u16 type, u16 field count, u32 id */
#define IPC_QUEUE_MAX 4096  /* messages waiting for the socket, then the
                               channel is dropped (a stuck peer) */

/* A decoded message. Fields point into the message's own storage and
 * are each followed by a NUL (not counted in len). */
struct ipc_msg {
	uint16_t type;
	uint32_t id;
	unsigned nfields;
	struct ipc_field {
		const char *p;
		uint32_t len;
	} f[IPC_FIELDS_MAX];
	int fd;             /* received descriptor, or -1; owned by the
	                       receiver (close it or take it) */
	char store[IPC_MSG_MAX + IPC_FIELDS_MAX];
};

/* A message being built. Fields that do not fit set overflow; sending
 * such a message fails (nothing half-sent). */
struct ipc_out {
	unsigned char data[IPC_MSG_MAX];
	size_t len;
	unsigned nfields;
	bool overflow;
};

void ipc_out_init(struct ipc_out *o, uint16_t type, uint32_t id);
void ipc_put(struct ipc_out *o, const void *p, size_t len);
/* A C string; NULL is sent as an empty field marked absent (ipc_str
 * gives NULL back). */
void ipc_put_str(struct ipc_out *o, const char *s);
void ipc_put_u64(struct ipc_out *o, uint64_t v);
void ipc_put_i64(struct ipc_out *o, int64_t v);

/* Decodes len octets into m (m->fd is set to -1). 0, or -1 when the
 * message is malformed: short header, field count over the limit, a
 * field running past the end, or octets left over. */
int ipc_decode(const void *data, size_t len, struct ipc_msg *m);
/* Field i as a string: NULL when missing, marked absent, or holding a
 * NUL octet. */
const char *ipc_str(const struct ipc_msg *m, unsigned i);
/* Field i as an 8-octet number; -1 when missing or of another size. */
int ipc_u64(const struct ipc_msg *m, unsigned i, uint64_t *v_r);
int ipc_i64(const struct ipc_msg *m, unsigned i, int64_t *v_r);
/* Closes m->fd if the receiver did not take it. */
void ipc_msg_clear(struct ipc_msg *m);

/* A SOCK_SEQPACKET socketpair, close-on-exec; 0 / -1 (errno). */
int ipc_socketpair(int fds[2]);
/* Blocking send and receive on a blocking socket, for the start-up
 * exchanges and the tests. ipc_send: 0 / -1 (errno; EMSGSIZE for an
 * overflowed message). fd < 0: none; the sender keeps its fd.
 * ipc_recv: 1 message, 0 peer gone, -1 error or malformed (EBADMSG). */
int ipc_send(int sock, const struct ipc_out *o, int fd);
int ipc_recv(int sock, struct ipc_msg *m);

/* The event-driven end of a channel: messages are queued when the socket
 * is full and sent as it drains; each received message goes to on_msg;
 * on_close runs once, from the loop, when the peer is gone or sent
 * something malformed (then the channel is dead: the owner frees it). */
struct ioloop;
struct ipc_chan;
struct ipc_chan_callbacks {
	void (*on_msg)(void *ctx, struct ipc_msg *m);
	void (*on_close)(void *ctx, const char *why);
};
/* Takes sock (made non-blocking). */
struct ipc_chan *ipc_chan_new(struct ioloop *loop, int sock,
    const struct ipc_chan_callbacks *cb, void *ctx);
/* Queues o (and a dup of fd when fd >= 0). 0 / -1 (overflowed message,
 * dead channel or queue full). A channel that fails here reports
 * on_close later, from the loop, never from inside this call. */
int ipc_chan_send(struct ipc_chan *c, const struct ipc_out *o, int fd);
void ipc_chan_free(struct ipc_chan **c);

/* Requests waiting for their answer on a channel, by id. The requester
 * embeds an ipc_req (first, so reply() can cast back) and answers
 * itself; m is NULL when the channel is gone. */
struct ipc_req {
	struct ipc_req *next, *prev;
	uint32_t id;
	void (*reply)(struct ipc_req *r, const struct ipc_msg *m);
};
struct ipc_reqs {
	struct ipc_req *head;
	uint32_t last_id;
};
/* A new id, never 0 (the id of unsolicited messages). */
uint32_t ipc_reqs_id(struct ipc_reqs *q);
void ipc_reqs_add(struct ipc_reqs *q, struct ipc_req *r, uint32_t id);
/* Takes r out (nothing if it is not in). */
void ipc_reqs_remove(struct ipc_reqs *q, struct ipc_req *r);
/* The request of id, taken out, or NULL. */
struct ipc_req *ipc_reqs_take(struct ipc_reqs *q, uint32_t id);
/* Answers every request with NULL (the channel is gone). */
void ipc_reqs_fail_all(struct ipc_reqs *q);

#endif
