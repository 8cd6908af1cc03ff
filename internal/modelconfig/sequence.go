package modelconfig

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/tensor"
)

// Sequence batching defaults, as in Triton.
const (
	// DefaultSequenceIdleMicroseconds applies when
	// max_sequence_idle_microseconds is 0 or unset.
	DefaultSequenceIdleMicroseconds = 1000 * 1000
	// InitialStateDir is the directory, under the model directory, that
	// holds initial_state data files.
	InitialStateDir = "initial_state"
)

type seqKind = inferencepb.ModelSequenceBatching_Control_Kind

// validateSequenceBatching checks sequence_batching and fills its
// defaults. Triton's messages are kept where Triton has one; the field path
// comes first as everywhere in this package.
func validateSequenceBatching(cfg *inferencepb.ModelConfig, file string) error {
	sb := cfg.GetSequenceBatching()
	if sb == nil {
		return nil
	}
	name := cfg.GetName()
	const f = "sequence_batching"
	if cfg.GetDynamicBatching() != nil {
		return fieldError(file, f, "dynamic_batching and sequence_batching cannot both be set (they are one scheduling choice)")
	}
	if cfg.GetModelTransactionPolicy().GetDecoupled() {
		return fieldError(file, f, "is not supported for decoupled models")
	}
	if len(cfg.GetModelWarmup()) > 0 {
		return fieldError(file, "model_warmup", "is not supported together with sequence_batching: warm-up samples run on each instance directly, without the sequence batcher's control and state tensors")
	}
	if sb.GetIterativeSequence() {
		return fieldError(file, f+".iterative_sequence", "is not supported: vigil does not reschedule requests")
	}
	if sb.GetMaxSequenceIdleMicroseconds() == 0 {
		sb.MaxSequenceIdleMicroseconds = DefaultSequenceIdleMicroseconds
	}
	if sb.StrategyChoice == nil {
		sb.StrategyChoice = &inferencepb.ModelSequenceBatching_Direct{Direct: &inferencepb.ModelSequenceBatching_StrategyDirect{}}
	}
	switch s := sb.GetStrategyChoice().(type) {
	case *inferencepb.ModelSequenceBatching_Direct:
		if s.Direct == nil {
			s.Direct = &inferencepb.ModelSequenceBatching_StrategyDirect{}
		}
		if u := s.Direct.GetMinimumSlotUtilization(); u < 0 || u > 1 {
			return fieldError(file, f+".direct.minimum_slot_utilization", "sequence batching minimum slot utilization must be in range (0.0, 1.0] for %s", name)
		}
	case *inferencepb.ModelSequenceBatching_Oldest:
		if s.Oldest == nil {
			s.Oldest = &inferencepb.ModelSequenceBatching_StrategyOldest{}
		}
		o := s.Oldest
		if o.GetMaxCandidateSequences() < 1 {
			return fieldError(file, f+".oldest.max_candidate_sequences", "must be ≥ 1, got %d", o.GetMaxCandidateSequences())
		}
		for i, p := range o.GetPreferredBatchSize() {
			field := fmt.Sprintf("%s.oldest.preferred_batch_size[%d]", f, i)
			if p < 1 {
				return fieldError(file, field, "sequence batching preferred batch size must be positive for %s", name)
			}
			if p > max(cfg.GetMaxBatchSize(), 1) {
				return fieldError(file, field, "sequence batching preferred batch size must be <= max batch size for %s", name)
			}
		}
		if o.GetPreserveOrdering() {
			return fieldError(file, f+".oldest.preserve_ordering", "is not supported: each sequence's responses are already in request order, and vigil does not order responses across sequences")
		}
	}
	taken := map[string]string{}
	for _, in := range cfg.GetInput() {
		taken[in.GetName()] = "an input"
	}
	for _, out := range cfg.GetOutput() {
		taken[out.GetName()] = "an output"
	}
	kinds := map[seqKind]bool{}
	for i, ci := range sb.GetControlInput() {
		field := fmt.Sprintf("%s.control_input[%d]", f, i)
		n := ci.GetName()
		if n == "" {
			return fieldError(file, field+".name", "sequence batching control tensor must have a name for %s", name)
		}
		if what, dup := taken[n]; dup {
			return fieldError(file, field+".name", "%q is already %s; control inputs are supplied by the server and are not declared in input", n, what)
		}
		taken[n] = "a control input"
		if len(ci.GetControl()) > 1 {
			return fieldError(file, field, "sequence batching control tensor '%s' is specified for multiple control kinds for %s", n, name)
		}
		for j, c := range ci.GetControl() {
			cf := fmt.Sprintf("%s.control[%d]", field, j)
			if kinds[c.GetKind()] {
				return fieldError(file, cf, "sequence batching specifies multiple %s tensors for %s", c.GetKind(), name)
			}
			kinds[c.GetKind()] = true
			if err := validateControl(c, file, cf, name); err != nil {
				return err
			}
		}
	}
	for i, st := range sb.GetState() {
		if err := validateState(st, file, fmt.Sprintf("%s.state[%d]", f, i), taken); err != nil {
			return err
		}
	}
	return nil
}

func validateControl(c *inferencepb.ModelSequenceBatching_Control, file, field, model string) error {
	kind := c.GetKind()
	lists := 0
	for _, l := range []struct {
		n    int
		name string
	}{{len(c.GetInt32FalseTrue()), "int32_false_true"}, {len(c.GetFp32FalseTrue()), "fp32_false_true"}, {len(c.GetBoolFalseTrue()), "bool_false_true"}} {
		if l.n == 0 {
			continue
		}
		lists++
		if kind != inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_CORRID && l.n != 2 {
			return fieldError(file, field+"."+l.name, "sequence batching control '%s' must have exactly 2 entries for %s for %s", l.name, kind, model)
		}
	}
	switch kind {
	case inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_START,
		inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_READY,
		inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_END:
		if lists == 0 {
			return fieldError(file, field, "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for %s for %s", kind, model)
		}
		if lists > 1 {
			return fieldError(file, field, "sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' and 'bool_false_true' for %s for %s", kind, model)
		}
		if c.GetDataType() != inferencepb.DataType_TYPE_INVALID {
			return fieldError(file, field+".data_type", "is for CONTROL_SEQUENCE_CORRID only; the *_false_true list gives %s's datatype", kind)
		}
	case inferencepb.ModelSequenceBatching_Control_CONTROL_SEQUENCE_CORRID:
		if lists > 0 {
			return fieldError(file, field, "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for CONTROL_SEQUENCE_CORRID for %s", model)
		}
		switch c.GetDataType() {
		case inferencepb.DataType_TYPE_UINT64, inferencepb.DataType_TYPE_INT64, inferencepb.DataType_TYPE_UINT32,
			inferencepb.DataType_TYPE_INT32, inferencepb.DataType_TYPE_STRING:
		default:
			return fieldError(file, field+".data_type", "unexpected data type for control CONTROL_SEQUENCE_CORRID for %s. Allowed data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING", model)
		}
	default:
		return fieldError(file, field+".kind", "unknown control kind %d", int32(kind))
	}
	return nil
}

func validateState(st *inferencepb.ModelSequenceBatching_State, file, field string, taken map[string]string) error {
	for _, n := range []struct{ name, field string }{{st.GetInputName(), "input_name"}, {st.GetOutputName(), "output_name"}} {
		if n.name == "" {
			return fieldError(file, field+"."+n.field, "missing")
		}
		if what, dup := taken[n.name]; dup {
			return fieldError(file, field+"."+n.field, "%q is already %s; state tensors are not declared in input or output", n.name, what)
		}
		taken[n.name] = "a state tensor"
	}
	if DatatypeOf(st.GetDataType()) == "" {
		return fieldError(file, field+".data_type", "missing or unknown (%s)", st.GetDataType())
	}
	if len(st.GetDims()) == 0 {
		return fieldError(file, field+".dims", "missing: give at least one dimension")
	}
	for i, d := range st.GetDims() {
		if d < 1 && d != -1 {
			return fieldError(file, fmt.Sprintf("%s.dims[%d]", field, i), "must be ≥ 1 or -1 (variable), got %d", d)
		}
	}
	if st.GetUseGrowableMemory() {
		return fieldError(file, field+".use_growable_memory", "is not supported: it is for CUDA memory")
	}
	if len(st.GetInitialState()) > 1 {
		return fieldError(file, field+".initial_state", "give at most one initial state, got %d", len(st.GetInitialState()))
	}
	for i, is := range st.GetInitialState() {
		f := fmt.Sprintf("%s.initial_state[%d]", field, i)
		if is.GetDataType() != st.GetDataType() {
			return fieldError(file, f+".data_type", "%s differs from the state's %s", is.GetDataType(), st.GetDataType())
		}
		if len(is.GetDims()) != len(st.GetDims()) {
			return fieldError(file, f+".dims", "%v has a different rank from the state's dims %v", is.GetDims(), st.GetDims())
		}
		for j, d := range is.GetDims() {
			if d < 1 || (st.GetDims()[j] != -1 && st.GetDims()[j] != d) {
				return fieldError(file, fmt.Sprintf("%s.dims[%d]", f, j), "must be ≥ 1 and match the state's dims %v, got %d", st.GetDims(), d)
			}
		}
		switch d := is.GetStateData().(type) {
		case nil:
			return fieldError(file, f, "give zero_data or data_file")
		case *inferencepb.ModelSequenceBatching_InitialState_DataFile:
			if err := plainFileName(d.DataFile); err != nil {
				return fieldError(file, f+".data_file", "%v", err)
			}
			if st.GetDataType() == inferencepb.DataType_TYPE_STRING {
				return fieldError(file, f+".data_file", "is not supported for TYPE_STRING state; use zero_data")
			}
		}
	}
	return nil
}

// loadInitialStates reads the data file of every state whose initial
// state comes from one, from <model dir>/initial_state/, and checks its
// size against the initial state's dims.
func loadInitialStates(m *Model, cfgFile string) (map[string][]byte, error) {
	var out map[string][]byte
	for i, st := range m.Config.GetSequenceBatching().GetState() {
		for j, is := range st.GetInitialState() {
			name := is.GetDataFile()
			if name == "" {
				continue
			}
			field := fmt.Sprintf("sequence_batching.state[%d].initial_state[%d].data_file", i, j)
			path := filepath.Join(m.Dir, InitialStateDir, name)
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, fieldError(cfgFile, field, "cannot read the initial state: %v", err)
			}
			n, err := tensor.ElementCount(is.GetDims())
			if err != nil {
				return nil, fieldError(cfgFile, field, "%v", err)
			}
			if want := n * int64(DatatypeOf(st.GetDataType()).Size()); int64(len(data)) != want {
				return nil, fieldError(cfgFile, field, "%s has %d bytes, dims %v of %s need %d", path, len(data), is.GetDims(), st.GetDataType(), want)
			}
			if out == nil {
				out = map[string][]byte{}
			}
			out[st.GetInputName()] = data
		}
	}
	return out, nil
}
