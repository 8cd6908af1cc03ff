package scheduler

import (
	"context"
	"sync"
)

// Ordering releases responses in the order their requests arrived
// (dynamic_batching.preserve_ordering): a request that finishes before an
// earlier one waits for it. Issue a ticket when a request arrives and call
// Turn with it once its response (or error) is at hand. A nil *Ordering
// does nothing, for versions that do not preserve ordering.
type Ordering struct {
	mu      sync.Mutex
	issued  uint64
	next    uint64 // the ticket whose turn it is
	skipped map[uint64]bool
	waiting map[uint64]chan struct{}
}

// NewOrdering returns an Ordering with no tickets out.
func NewOrdering() *Ordering {
	return &Ordering{skipped: map[uint64]bool{}, waiting: map[uint64]chan struct{}{}}
}

// Issue hands out the next ticket.
func (o *Ordering) Issue() uint64 {
	if o == nil {
		return 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	t := o.issued
	o.issued++
	return t
}

// Turn waits until every earlier ticket has had its turn (or was
// abandoned), then ends ticket's turn, so that the next may go. If ctx ends
// first, the ticket is abandoned (its client is gone; later tickets do not
// wait for it) and ctx's error is returned.
func (o *Ordering) Turn(ctx context.Context, ticket uint64) error {
	if o == nil {
		return nil
	}
	o.mu.Lock()
	if o.next == ticket {
		o.advanceLocked()
		o.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	o.waiting[ticket] = ch
	o.mu.Unlock()
	select {
	case <-ch:
		o.mu.Lock()
		o.advanceLocked()
		o.mu.Unlock()
		return nil
	case <-ctx.Done():
		o.mu.Lock()
		defer o.mu.Unlock()
		select {
		case <-ch: // the turn came as ctx ended: take it, so the next may go
			o.advanceLocked()
			return nil
		default:
		}
		delete(o.waiting, ticket)
		o.skipped[ticket] = true
		return ctx.Err()
	}
}

// advanceLocked ends the turn of o.next and gives it to the next ticket
// that has not been abandoned.
func (o *Ordering) advanceLocked() {
	o.next++
	for o.skipped[o.next] {
		delete(o.skipped, o.next)
		o.next++
	}
	if ch, ok := o.waiting[o.next]; ok {
		delete(o.waiting, o.next)
		close(ch)
	}
}
