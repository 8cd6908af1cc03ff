package sequence

import (
	"encoding/binary"
	"math"
	"slices"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/modelconfig"
	"github.com/vigilhq/vigil/internal/scheduler"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Kind is a control's kind.
type Kind int

// The control kinds of sequence_batching.control_input.
const (
	KindStart Kind = iota
	KindReady
	KindEnd
	KindCorrID
)

// Control is one control input: the tensor the batcher adds to each
// request.
type Control struct {
	Kind     Kind
	Name     string
	Datatype tensor.Datatype
	// False and True are the encoded element for START, READY and END.
	False, True []byte
}

// State is one implicit state: output Output of a request is input Input
// of the sequence's next request.
type State struct {
	Input, Output string
	Datatype      tensor.Datatype
	// Dims are the state's dims (without the batch dimension), -1 for a
	// variable one.
	Dims []int64
	// Initial is the first request's state: its dims and data (zeros when
	// Data is nil). Without an initial_state, dims are Dims with variable
	// ones set to 1, and the data zeros.
	InitialDims []int64
	InitialData []byte
}

// FromModel derives a Batcher's configuration from a validated model
// configuration (modelconfig.Load) and its loaded initial states.
func FromModel(spec *modelconfig.Model, name string, maxBacklog int, stats *scheduler.Stats) Config {
	cfg := spec.Config
	sb := cfg.GetSequenceBatching()
	c := Config{
		Model:        spec.Name,
		Name:         name,
		MaxBatchSize: int(cfg.GetMaxBatchSize()),
		Idle:         time.Duration(sb.GetMaxSequenceIdleMicroseconds()) * time.Microsecond,
		MaxBacklog:   maxBacklog,
		Stats:        stats,
	}
	if o := sb.GetOldest(); o != nil {
		c.Strategy = Oldest
		c.Slots = int(o.GetMaxCandidateSequences())
		c.MaxDelay = time.Duration(o.GetMaxQueueDelayMicroseconds()) * time.Microsecond
		for _, p := range o.GetPreferredBatchSize() {
			c.Preferred = append(c.Preferred, int(p))
		}
	} else {
		d := sb.GetDirect()
		c.Slots = max(1, c.MaxBatchSize)
		c.MaxDelay = time.Duration(d.GetMaxQueueDelayMicroseconds()) * time.Microsecond
		c.MinSlotUtilization = float64(d.GetMinimumSlotUtilization())
	}
	for _, ci := range sb.GetControlInput() {
		for _, ctl := range ci.GetControl() {
			c.Controls = append(c.Controls, controlOf(ci.GetName(), ctl))
		}
	}
	for _, st := range sb.GetState() {
		s := State{Input: st.GetInputName(), Output: st.GetOutputName(),
			Datatype: modelconfig.DatatypeOf(st.GetDataType()), Dims: st.GetDims()}
		if is := st.GetInitialState(); len(is) > 0 {
			s.InitialDims = is[0].GetDims()
			s.InitialData = spec.InitialStates[s.Input]
		} else {
			for _, d := range s.Dims {
				s.InitialDims = append(s.InitialDims, max(d, 1))
			}
		}
		c.States = append(c.States, s)
	}
	return c
}

func controlOf(name string, ctl *inferencepb.ModelSequenceBatching_Control) Control {
	c := Control{Name: name}
	switch ctl.GetKind() {
	case inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_START:
		c.Kind = KindStart
	case inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_READY:
		c.Kind = KindReady
	case inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_END:
		c.Kind = KindEnd
	case inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_CORRID:
		c.Kind = KindCorrID
		c.Datatype = modelconfig.DatatypeOf(ctl.GetDataType())
		return c
	}
	switch {
	case len(ctl.GetInt32FalseTrue()) == 2:
		v := ctl.GetInt32FalseTrue()
		c.Datatype = tensor.Int32
		c.False = binary.LittleEndian.AppendUint32(nil, uint32(v[0]))
		c.True = binary.LittleEndian.AppendUint32(nil, uint32(v[1]))
	case len(ctl.GetFp32FalseTrue()) == 2:
		v := ctl.GetFp32FalseTrue()
		c.Datatype = tensor.FP32
		c.False = binary.LittleEndian.AppendUint32(nil, math.Float32bits(v[0]))
		c.True = binary.LittleEndian.AppendUint32(nil, math.Float32bits(v[1]))
	case len(ctl.GetBoolFalseTrue()) == 2:
		v := ctl.GetBoolFalseTrue()
		c.Datatype = tensor.Bool
		c.False, c.True = []byte{boolByte(v[0])}, []byte{boolByte(v[1])}
	}
	return c
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// configType is a datatype as config.pbtxt spells it, for messages.
func configType(d tensor.Datatype) string {
	if d == tensor.Bytes {
		return "TYPE_STRING"
	}
	return "TYPE_" + string(d)
}

// shape is a control's or a state's shape: the batch dimension of 1 first
// for a batching model.
func (b *Batcher) shape(dims ...int64) []int64 {
	if b.cfg.MaxBatchSize > 0 {
		return append([]int64{1}, dims...)
	}
	return dims
}

// prepareLocked adds it's control and state tensors to its request.
func (b *Batcher) prepareLocked(seq *sequence, it *item) error {
	req := it.task.Req
	for _, c := range b.cfg.Controls {
		t := tensor.Tensor{Name: c.Name, Datatype: c.Datatype, Shape: b.shape(1)}
		switch c.Kind {
		case KindStart:
			t.Data = pick(c, it.start)
		case KindEnd:
			t.Data = pick(c, it.end)
		case KindReady:
			t.Data = c.True
		case KindCorrID:
			t.Data = corrIDData(c.Datatype, seq.id)
		}
		req.Inputs = append(req.Inputs, t)
	}
	for _, st := range b.cfg.States {
		t, ok := seq.state[st.Input]
		if !ok || it.start {
			t = b.initialState(st)
		}
		req.Inputs = append(req.Inputs, t)
	}
	return nil
}

func pick(c Control, v bool) []byte {
	if v {
		return c.True
	}
	return c.False
}

// corrIDData encodes a correlation ID as one element of d: a 32-bit type
// keeps the low 32 bits, as in Triton; a string type gets the string, or
// the decimal form of a numeric ID.
func corrIDData(d tensor.Datatype, id inference.CorrelationID) []byte {
	switch d {
	case tensor.Uint64, tensor.Int64:
		return binary.LittleEndian.AppendUint64(nil, id.N)
	case tensor.Uint32, tensor.Int32:
		return binary.LittleEndian.AppendUint32(nil, uint32(id.N))
	default:
		return tensor.AppendBytesElement(nil, []byte(id.String()))
	}
}

// initialState is a sequence's first state tensor.
func (b *Batcher) initialState(st State) tensor.Tensor {
	t := tensor.Tensor{Name: st.Input, Datatype: st.Datatype, Shape: b.shape(st.InitialDims...)}
	if st.InitialData != nil {
		t.Data = st.InitialData
		return t
	}
	n, _ := tensor.ElementCount(st.InitialDims)
	if st.Datatype == tensor.Bytes {
		for range n {
			t.Data = tensor.AppendBytesElement(t.Data, nil)
		}
		return t
	}
	t.Data = make([]byte, int(n)*st.Datatype.Size())
	return t
}

// takeStateLocked moves the state outputs of a response into the
// sequence, for its next request. A state output the model did not return
// leaves the state as it was.
func (b *Batcher) takeStateLocked(seq *sequence, r scheduler.Result) scheduler.Result {
	resp := r.Response
	if resp == nil {
		return r
	}
	for _, st := range b.cfg.States {
		k := slices.IndexFunc(resp.Outputs, func(t tensor.Tensor) bool { return t.Name == st.Output })
		if k < 0 {
			continue
		}
		out := resp.Outputs[k]
		resp.Outputs = slices.Delete(slices.Clone(resp.Outputs), k, k+1)
		if out.Datatype != st.Datatype {
			return scheduler.Result{Err: apierr.New(apierr.Internal,
				"model %s returned state output %q as %s, its sequence_batching.state declares %s", b.cfg.Model, st.Output, out.Datatype, configType(st.Datatype))}
		}
		if seq.state == nil {
			seq.state = map[string]tensor.Tensor{}
		}
		out.Name = st.Input
		out.Data = slices.Clone(out.Data) // the reply buffer is not ours to keep
		out.Shared = nil                  // nor, then, its memory file
		out.Parameters = nil
		seq.state[st.Input] = out
	}
	return r
}
