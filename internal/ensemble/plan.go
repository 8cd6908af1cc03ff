// Package ensemble runs Triton ensembles: models whose config.pbtxt sets
// platform "ensemble" and lists steps, each a request to a composing model
// whose inputs and outputs are mapped to the ensemble's tensors. A Plan is
// built and checked once at load (FromConfig, Check, with Triton's rules and
// messages) and run per request as a small DAG scheduler over the same
// internal-request API BLS calls use (Caller): a step runs as soon as every
// tensor it reads exists, so independent steps run in parallel.
package ensemble

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/vigilhq/vigil/internal/inferencepb"
)

// Step is one composing model's request.
type Step struct {
	Model string
	// Version is the composing model's version; "" means the server's
	// choice (model_version -1).
	Version string
	// Inputs maps the step model's input names to ensemble tensors;
	// Outputs maps its output names to ensemble tensors.
	Inputs  map[string]string
	Outputs map[string]string
}

// Plan is a validated ensemble.
type Plan struct {
	Name  string
	Steps []Step
	// Inputs and Outputs are the ensemble's own tensors, in config order.
	Inputs  []string
	Outputs []string
	// producer maps each intermediate or output tensor to the step that
	// writes it.
	producer map[string]int
}

// Error is a configuration error of an ensemble; the model manager reports
// it as an invalid-argument load failure.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func errorf(format string, args ...any) *Error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// FromConfig builds the plan of an ensemble configuration and checks it on
// its own, before the composing models are known: every step names a model
// and maps inputs and outputs, each tensor is written once, every ensemble
// input is read, every output is written, every intermediate tensor is read,
// and no step waits for a tensor nothing writes.
func FromConfig(cfg *inferencepb.ModelConfig) (*Plan, error) {
	name := cfg.GetName()
	es := cfg.GetEnsembleScheduling()
	if es == nil {
		return nil, errorf("ensemble scheduling must be set for ensemble %s whose platform is ensemble", name)
	}
	if len(cfg.GetInstanceGroup()) > 0 {
		return nil, errorf("instance group should not be specified for ensemble '%s'", name)
	}
	if len(es.GetStep()) == 0 {
		return nil, errorf("must specify 'step' for ensemble '%s'", name)
	}
	p := &Plan{Name: name, producer: map[string]int{}}
	for _, in := range cfg.GetInput() {
		p.Inputs = append(p.Inputs, in.GetName())
	}
	for _, out := range cfg.GetOutput() {
		p.Outputs = append(p.Outputs, out.GetName())
	}
	for i, s := range es.GetStep() {
		switch {
		case s.GetModelName() == "":
			return nil, errorf("must specify 'model_name' in step %d of ensemble '%s'", i, name)
		case len(s.GetInputMap()) == 0:
			return nil, errorf("must specify 'input_map' in step %d of ensemble '%s'", i, name)
		case len(s.GetOutputMap()) == 0:
			return nil, errorf("must specify 'output_map' in step %d of ensemble '%s'", i, name)
		}
		if s.GetModelNamespace() != "" {
			return nil, errorf("model_namespace in step %d of ensemble '%s' is reserved and must not be set", i, name)
		}
		st := Step{Model: s.GetModelName(), Inputs: map[string]string{}, Outputs: map[string]string{}}
		if v := s.GetModelVersion(); v > 0 {
			st.Version = fmt.Sprint(v)
		} else if v != -1 && v != 0 {
			return nil, errorf("model_version %d in step %d of ensemble '%s' must be -1 (latest) or a version number", v, i, name)
		}
		for in, t := range s.GetInputMap() {
			st.Inputs[in] = t
		}
		for out, t := range s.GetOutputMap() {
			if _, dup := p.producer[t]; dup || slices.Contains(p.Inputs, t) {
				return nil, errorf("ensemble tensor '%s' can appear in an output map only once for ensemble '%s' step %d", t, name, i)
			}
			p.producer[t] = i
			st.Outputs[out] = t
		}
		p.Steps = append(p.Steps, st)
	}
	if err := p.checkGraph(); err != nil {
		return nil, err
	}
	return p, nil
}

// checkGraph checks that every tensor is connected.
func (p *Plan) checkGraph() error {
	read := map[string]bool{}
	for _, s := range p.Steps {
		for _, t := range s.Inputs {
			read[t] = true
		}
	}
	for _, in := range p.Inputs {
		if !read[in] {
			return errorf("ensemble input '%s' for ensemble %s' is not used", in, p.Name)
		}
	}
	for _, out := range p.Outputs {
		if _, ok := p.producer[out]; !ok {
			return errorf("output '%s' for ensemble '%s' is not written", out, p.Name)
		}
	}
	for _, t := range sortedKeys(p.producer) {
		if !read[t] && !slices.Contains(p.Outputs, t) {
			return errorf("ensemble tensor '%s' is unused in ensemble '%s'", t, p.Name)
		}
	}
	// Simulate a run: a step that never gets its inputs waits for a tensor
	// no step writes, or for itself through a cycle.
	have := map[string]bool{}
	for _, in := range p.Inputs {
		have[in] = true
	}
	done := make([]bool, len(p.Steps))
	for progress := true; progress; {
		progress = false
		for i, s := range p.Steps {
			if done[i] || !ready(s, have) {
				continue
			}
			done[i], progress = true, true
			for _, t := range s.Outputs {
				have[t] = true
			}
		}
	}
	for i, s := range p.Steps {
		if done[i] {
			continue
		}
		for _, in := range sortedKeys(s.Inputs) {
			t := s.Inputs[in]
			if have[t] {
				continue
			}
			if _, ok := p.producer[t]; !ok {
				return errorf("in ensemble %s, step %d (model %s): input '%s' is mapped to ensemble tensor '%s', which is neither an ensemble input nor written by any step", p.Name, i, s.Model, in, t)
			}
			return errorf("in ensemble %s, step %d (model %s): input '%s' waits for ensemble tensor '%s', which is written only after this step (the steps form a cycle)", p.Name, i, s.Model, in, t)
		}
	}
	return nil
}

func ready(s Step, have map[string]bool) bool {
	for _, t := range s.Inputs {
		if !have[t] {
			return false
		}
	}
	return true
}

// Models lists the composing models, each once, in step order.
func (p *Plan) Models() []string {
	var out []string
	for _, s := range p.Steps {
		if !slices.Contains(out, s.Model) {
			out = append(out, s.Model)
		}
	}
	return out
}

// Check validates the plan against the configurations of its composing
// models (config returns a step's model configuration), with Triton's
// messages: batch sizes, inputs and outputs that exist and are mapped, and
// each ensemble tensor's datatype and shape agreeing wherever it appears.
func (p *Plan) Check(ens *inferencepb.ModelConfig, config func(step Step) (*inferencepb.ModelConfig, error)) error {
	name := p.Name
	type seen struct {
		dt    inferencepb.DataType
		shape []int64 // full shape: -1 first for a batching model
		from  string
	}
	tensors := map[string]seen{}
	full := func(dims []int64, batching bool) []int64 {
		if batching {
			return append([]int64{-1}, dims...)
		}
		return append([]int64(nil), dims...)
	}
	note := func(t string, dt inferencepb.DataType, shape []int64, from string) error {
		prev, ok := tensors[t]
		if !ok {
			tensors[t] = seen{dt, shape, from}
			return nil
		}
		if prev.dt != dt {
			return errorf("in ensemble %s, ensemble tensor %s: inconsistent data type: %s is inferred from model %s while %s is inferred from model %s",
				name, t, prev.dt, prev.from, dt, from)
		}
		if !compatible(prev.shape, shape) {
			return errorf("in ensemble %s, ensemble tensor %s: inconsistent shape: %s is inferred from model %s while %s is inferred from model %s",
				name, t, dimsString(prev.shape), prev.from, dimsString(shape), from)
		}
		return nil
	}
	ensBatching := ens.GetMaxBatchSize() > 0
	for _, in := range ens.GetInput() {
		if err := note(in.GetName(), in.GetDataType(), full(in.GetDims(), ensBatching), name); err != nil {
			return err
		}
	}
	for _, out := range ens.GetOutput() {
		if err := note(out.GetName(), out.GetDataType(), full(out.GetDims(), ensBatching), name); err != nil {
			return err
		}
	}
	for _, s := range p.Steps {
		cfg, err := config(s)
		if err != nil {
			return err
		}
		model := s.Model
		batching := cfg.GetMaxBatchSize() > 0
		if batching && ens.GetMaxBatchSize() > cfg.GetMaxBatchSize() {
			return errorf("ensemble %s allows maximum batch size %d, but it contains model %s which only allows maximum batch size to be %d",
				name, ens.GetMaxBatchSize(), model, cfg.GetMaxBatchSize())
		}
		if cfg.GetModelTransactionPolicy().GetDecoupled() {
			return errorf("in ensemble %s, step model %s is decoupled; ensembles of decoupled models are not supported", name, model)
		}
		inputs := map[string]*inferencepb.ModelInput{}
		for _, in := range cfg.GetInput() {
			inputs[in.GetName()] = in
		}
		for _, in := range sortedKeys(s.Inputs) {
			ic := inputs[in]
			if ic == nil {
				return errorf("in ensemble %s, ensemble tensor %s is mapping to non-existing input %s in model %s", name, s.Inputs[in], in, model)
			}
			if err := note(s.Inputs[in], ic.GetDataType(), full(ic.GetDims(), batching), model); err != nil {
				return err
			}
		}
		for _, in := range cfg.GetInput() {
			if _, ok := s.Inputs[in.GetName()]; !ok && !in.GetOptional() {
				return errorf("in ensemble %s, input %s in model %s is not mapped to any ensemble tensors", name, in.GetName(), model)
			}
		}
		outputs := map[string]*inferencepb.ModelOutput{}
		for _, out := range cfg.GetOutput() {
			outputs[out.GetName()] = out
		}
		for _, out := range sortedKeys(s.Outputs) {
			oc := outputs[out]
			if oc == nil {
				return errorf("in ensemble %s, ensemble tensor %s is mapped from non-existing output %s in model %s", name, s.Outputs[out], out, model)
			}
			if err := note(s.Outputs[out], oc.GetDataType(), full(oc.GetDims(), batching), model); err != nil {
				return err
			}
		}
	}
	return nil
}

// compatible compares two full shapes; -1 matches any size, and a leading
// batch dimension (-1) is optional on either side.
func compatible(a, b []int64) bool {
	if len(a) != len(b) {
		switch {
		case len(a) == len(b)+1 && a[0] == -1:
			a = a[1:]
		case len(b) == len(a)+1 && b[0] == -1:
			b = b[1:]
		default:
			return false
		}
	}
	for i := range a {
		if a[i] != -1 && b[i] != -1 && a[i] != b[i] {
			return false
		}
	}
	return true
}

// dimsString renders dims as Triton does: [a,b].
func dimsString(dims []int64) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
