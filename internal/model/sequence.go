package model

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/internal/inference"

	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/sequence"
)

// newSequenceBatcher builds the sequence batcher of a sequence_batching
// version: its instances take their batches from it, and it reports each
// instance's open sequences to the health snapshot.
func (m *Manager) newSequenceBatcher(v *version, spec *modelconfig.Model, load int) *sequence.Batcher {
	cfg := sequence.FromModel(spec, spec.Name+" version "+v.key.Version, m.cfg.MaxQueue, v.stats)
	cfg.Logger = m.log.With("model", spec.Name, "version", v.key.Version)
	cfg.Report = func(in string, open, slots int) {
		m.cfg.Events.Post(health.Event{Kind: health.SequencesChanged, At: time.Now(),
			Instance: health.InstanceKey{Model: v.key.Model, Version: v.key.Version, Instance: in},
			Open:     open, Slots: slots})
	}
	names := spec.InstanceNames()
	if load > 1 {
		for k := range names {
			names[k] = fmt.Sprintf("%s-r%d", names[k], load)
		}
	}
	return sequence.New(cfg, names)
}

// streamSequence is streamOn for a sequence batching model, which is never
// decoupled: its one response is the stream's one, final reply.
func (m *Manager) streamSequence(ctx context.Context, v *version, req *inference.Request, emit func(Reply) error, st *streamTally) error {
	resp, err := m.inferOn(ctx, v, req)
	switch {
	case errors.Is(err, errReplaced):
		return errStopEmit
	case err != nil:
		return err
	}
	st.emitted++
	st.responses++
	return emit(Reply{Response: resp, Final: true})
}

// pending is the number of the version's requests waiting for an
// instance: in its queue, or (a sequence batching model) for their
// sequence's turn or a slot.
func (v *version) pending() int {
	n := v.queue.Len()
	if v.seq != nil {
		n += v.seq.Len()
	}
	return n
}

// Drain stops every sequence batching model from taking new sequences: the
// server is shutting down. Open sequences go on while requests are still
// served (the drain delay).
func (m *Manager) Drain() {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, e := range m.models {
		for _, v := range e.versions {
			if v.seq != nil {
				v.seq.Drain()
			}
		}
	}
}
