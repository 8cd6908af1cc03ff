package health

import "testing"

// TestSequencesInSnapshot checks that an instance's open sequences reach
// the snapshot, change no state and cause no action: busy is not
// unhealthy.
func TestSequencesInSnapshot(t *testing.T) {
	h := newHarness(t)
	h.run(started(testPolicy(nil)))
	before := h.instance("m_0").state
	seq := ev(SequencesChanged)
	seq.Open, seq.Slots = 8, 8
	if acts := h.post(seq); len(acts) != 0 {
		t.Errorf("actions %v for a sequence count", actuatorCalls(acts))
	}
	if h.instance("m_0").state != before {
		t.Errorf("state changed to %s", h.instance("m_0").state)
	}
	snap := h.snapshot()
	in := snap.Models[0].Instances[0]
	if in.Sequences == nil || *in.Sequences != (SequenceSlots{Open: 8, Slots: 8}) {
		t.Fatalf("snapshot sequences = %+v", in.Sequences)
	}
	if !snap.Models[0].Ready {
		t.Error("a model with every slot taken is not ready")
	}
	if h.post(seq.on("nope")) != nil {
		t.Error("an unknown instance's count caused actions")
	}
}
