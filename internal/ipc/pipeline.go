package ipc

import (
	"context"
	"encoding/binary"
	"fmt"
)

// Pipelining. The stub reads its data socket in order and runs one batch
// at a time, so a batch written while another is in flight waits in the
// socket and begins the moment the one ahead is answered: a busy stub then
// never sleeps between batches. The server keeps one such batch at most
// per stub (internal/instance) and must know, when something goes wrong
// with the batch ahead, whether the one behind it has begun:
//
//   - Begun: the stub answered the batch ahead (its reply was read, in
//     time or late), so it runs this one. Until the connection has ended
//     and its reader taken every frame, false means "not yet".
//   - Withdraw: the stub's control thread, which answers while a batch
//     runs, takes a batch that has not begun out of its queue for good
//     and says so, or says it has begun.
//
// WITHDRAW (kind 14, server → stub, control socket) has a new sequence id
// and the body u32 sequence id of the EXECUTE to withdraw; its reply's
// body is one byte: 1 withdrawn (the stub will not run the batch and
// sends no reply for it), 0 begun (its reply comes on the data socket as
// usual).
const kindWithdraw kind = 14

// SendAfter is Send for a batch written behind prev, which is in flight:
// the stub begins b once it has answered prev.
func (b *Batch) SendAfter(ctx context.Context, prev *Batch) error {
	c := b.c
	c.mu.Lock()
	if _, waiting := c.pending[prev.seq]; waiting {
		if c.behind == nil {
			c.behind = make(map[uint32]*Batch)
		}
		c.behind[prev.seq] = b
	} else {
		b.begun = true // prev is answered already
	}
	c.mu.Unlock()
	if err := b.Send(ctx); err != nil {
		c.mu.Lock()
		if c.behind[prev.seq] == b {
			delete(c.behind, prev.seq)
		}
		c.mu.Unlock()
		return err
	}
	return nil
}

// answeredLocked records that the EXECUTE seq was answered: the batch sent
// behind it has begun.
func (c *Client) answeredLocked(seq uint32) {
	if b := c.behind[seq]; b != nil {
		b.begun = true
		delete(c.behind, seq)
	}
}

// Begun reports whether the stub has answered the batch SendAfter wrote b
// behind, so that it runs b: final once the connection has ended and its
// reader is done (Wait returned an error wrapping ErrClosed).
func (b *Batch) Begun() bool {
	b.c.mu.Lock()
	defer b.c.mu.Unlock()
	return b.begun
}

// Withdraw asks the stub not to run b, sent behind a batch not yet
// answered: true when it never will (b is over, with no reply to wait
// for), false when it has begun b, whose reply comes as usual. ctx bounds
// the wait: a stopped stub answers nothing.
func (b *Batch) Withdraw(ctx context.Context) (bool, error) {
	c := b.c
	buf := make([]byte, headerSize+4)
	binary.LittleEndian.PutUint32(buf[headerSize:], b.seq)
	f, err := c.roundTrip(ctx, kindWithdraw, [][]byte{buf}, 4)
	if err != nil {
		return false, fmt.Errorf("withdraw: %w", err)
	}
	if err := replyError(f); err != nil {
		return false, fmt.Errorf("withdraw: %w", err)
	}
	if len(f.body) < 1 || f.body[0] != 1 {
		return false, nil
	}
	// The stub closed its copies of the batch's descriptors unread.
	c.forget(b.seq)
	c.forgetParent(b.seq)
	c.replyIn(b.seq, true)
	c.arenas.release(b.lease, true, 0)
	b.closeAll()
	return true, nil
}
