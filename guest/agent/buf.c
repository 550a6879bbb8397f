/*
 * Byte buffers and the TLV writer. A buffer is a window [off, off+len) of a
 * heap block; producers reserve space at the end and commit what they filled,
 * consumers eat from the front. Allocation failure ends the agent: a guest that
 * is out of memory cannot serve anyone, and the host sees the connection drop.
 */
#include "agent.h"

#include <stdlib.h>
#include <string.h>

uint8_t *buf_reserve(struct buf *b, size_t n)
{
	if (b->off + b->len + n <= b->cap)
		return b->p + b->off + b->len;
	if (b->len + n <= b->cap && b->off >= b->cap / 2) {
		/* Compact only when at least half the block is dead space, so the
		 * memmove cost is amortised over the bytes consumed. */
		memmove(b->p, b->p + b->off, b->len);
		b->off = 0;
		return b->p + b->len;
	}
	size_t want = b->len + n;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < want)
		cap *= 2;
	uint8_t *np = malloc(cap);
	if (!np) {
		logmsg("out of memory (%zu bytes)", cap);
		agent_exit(70);
	}
	if (b->len)
		memcpy(np, b->p + b->off, b->len);
	free(b->p);
	b->p = np;
	b->off = 0;
	b->cap = cap;
	return b->p + b->len;
}

void buf_commit(struct buf *b, size_t n) { b->len += n; }

void buf_append(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	memcpy(buf_reserve(b, n), p, n);
	b->len += n;
}

void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	b->len -= n;
	if (b->len == 0)
		b->off = 0;
}

/* Gives a large, empty block back so idle connections stay small. */
void buf_release_if_idle(struct buf *b, size_t keep)
{
	if (b->len == 0 && b->cap > keep) {
		free(b->p);
		b->p = NULL;
		b->cap = b->off = 0;
	}
}

void buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static void tlv_head(struct buf *b, uint8_t tag, size_t n)
{
	uint8_t *p = buf_reserve(b, 5 + n);
	p[0] = tag;
	avm_put32(p + 1, (uint32_t)n);
	b->len += 5;
}

void tlv_u8(struct buf *b, uint8_t tag, uint8_t v) { tlv_bytes(b, tag, &v, 1); }

void tlv_u32(struct buf *b, uint8_t tag, uint32_t v)
{
	uint8_t t[4];
	avm_put32(t, v);
	tlv_bytes(b, tag, t, 4);
}

void tlv_u64(struct buf *b, uint8_t tag, uint64_t v)
{
	uint8_t t[8];
	avm_put64(t, v);
	tlv_bytes(b, tag, t, 8);
}

void tlv_bytes(struct buf *b, uint8_t tag, const void *p, size_t n)
{
	tlv_head(b, tag, n);
	buf_append(b, p, n);
}

void tlv_str(struct buf *b, uint8_t tag, const char *s) { tlv_bytes(b, tag, s, strlen(s)); }
