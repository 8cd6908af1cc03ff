package scheduler

// Preferred batch sizes (dynamic_batching.preferred_batch_size), as Triton's
// dynamic batcher uses them: a batch whose requests add up to a preferred
// size is sent as soon as it can be formed; gathering stops once the largest
// preferred size is reached; and when more is at hand than a preferred size,
// the largest preferred size that a prefix of the queue adds up to exactly
// is sent and the rest waits for the next batch. When no prefix adds up to
// a preferred size, the batch is the largest that fits max_batch_size.

// maxPreferred is the largest preferred size, 0 when there is none.
func (b Batching) maxPreferred() int {
	m := 0
	for _, p := range b.Preferred {
		m = max(m, p)
	}
	return m
}

// preferredCut returns how many leading tasks of batch add up to the
// largest preferred size any prefix matches exactly, or 0 when none does.
func (b Batching) preferredCut(batch []*Task) int {
	cut, size := 0, 0
	for i, t := range batch {
		size += t.size
		for _, p := range b.Preferred {
			if size == p {
				cut = i + 1
			}
		}
	}
	return cut
}

// applyPreferredLocked trims batch to its preferred prefix and puts the
// rest back at the head of the queue, where it keeps its place, waking a
// worker for it.
func (q *Queue) applyPreferredLocked(batch []*Task) []*Task {
	if len(q.batching.Preferred) == 0 {
		return batch
	}
	k := q.batching.preferredCut(batch)
	if k == 0 || k == len(batch) {
		return batch
	}
	rest := batch[k:]
	q.tasks = append(append(make([]*Task, 0, len(rest)+len(q.tasks)), rest...), q.tasks...)
	q.dispatchLocked()
	return batch[:k:k]
}

// gatheredPreferred reports whether batch has reached the largest
// preferred size, when gathering stops.
func (b Batching) gatheredPreferred(batch []*Task) bool {
	m := b.maxPreferred()
	return m > 0 && batchSize(batch) >= m
}
