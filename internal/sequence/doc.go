// Package sequence is the sequence batcher for stateful models
// (config.pbtxt sequence_batching): every request of a sequence reaches the
// same instance, in order, one at a time, with the control tensors that
// tell the model where the sequence starts and ends, and with its implicit
// state carried from one request to the next.
//
// A Batcher sits between the model manager and a version's instances. The
// manager submits requests to it instead of to the version's shared queue;
// each instance's worker pulls its batches from the batcher's Instance for
// it, which is an instance.Source. A sequence is bound to one instance for
// its lifetime:
//
//   - direct: each instance has max(1, max_batch_size) slots, and a sequence
//     holds one slot from its START until its END request has run. A batch
//     is the next request of every slot that has one (at most one request
//     per sequence), taken at once, or, with minimum_slot_utilization,
//     once that share of the slots is ready or max_queue_delay_microseconds
//     has passed since the oldest one arrived.
//   - oldest: each instance holds up to max_candidate_sequences sequences,
//     and a batch is the oldest-first next requests of up to
//     max(1, max_batch_size) of them, sent at once when it reaches a
//     preferred_batch_size (or max_batch_size), else when the oldest has
//     waited max_queue_delay_microseconds.
//
// When the instance of a request's sequence is idle and no other sequence
// of it has a request ready, the request runs on the submitting goroutine
// through the worker's run (as the plain queue's do), with no hand-off to
// the worker and back; the worker takes nothing until it is over.
//
// A START with no free slot waits in a backlog (bounded like a queue; past
// the bound it gets 503) and takes the first slot that frees, on whichever
// instance. Only instances in traffic take new sequences.
//
// Control inputs (START, END, READY, CORRID) are added to each request as
// tensors of shape [1] ([1, 1] for a batching model), in the encoding the
// configuration names. vigil sends no null requests: every request in a
// batch is a real one, so READY is always the true value.
//
// # What a sequence's health means
//
// A sequence's state lives in the process that served it. When that
// process ends (a crash, a kill, a restart vigil decided), each of its open
// sequences is lost: its waiting requests and every later request for it
// (until a new START) get 503 "sequence 42 was lost: instance m_0 died
// (killed by signal SIGKILL)". A lost sequence never restarts silently from
// empty state on another instance. An idle sequence (no request for
// max_sequence_idle_microseconds) is released and forgotten, as in Triton:
// its next request gets Triton's "must specify the START flag" error.
package sequence
