package modelconfig

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/tensor"
)

// WarmupDir is the directory of a model holding the files that warm-up
// samples name in input_data_file.
const WarmupDir = "warmup"

// Warmup is one model_warmup sample, ready to send: the batch (batch_size
// requests, as Triton sends a sample) and how many times it runs.
type Warmup struct {
	Name     string
	Requests []*inference.Request
	Count    int
}

// validateWarmup checks model_warmup against the model's inputs (Triton's
// rules: a sample names only inputs of the model and gives every required
// one, with the input's data type and concrete dims; batch_size is at least
// 1 and at most max_batch_size, or 1 for a model that does not batch).
func validateWarmup(cfg *inferencepb.ModelConfig, file string) error {
	inputs := map[string]*inferencepb.ModelInput{}
	for _, in := range cfg.GetInput() {
		inputs[in.GetName()] = in
	}
	for i, w := range cfg.GetModelWarmup() {
		field := fmt.Sprintf("model_warmup[%d]", i)
		if w.GetName() == "" {
			return fieldError(file, field+".name", "missing: a warm-up sample needs a name")
		}
		field = fmt.Sprintf("%s (%q)", field, w.GetName())
		maxBatch := max(int(cfg.GetMaxBatchSize()), 1)
		if bs := int(w.GetBatchSize()); bs < 1 || bs > maxBatch {
			return fieldError(file, field+".batch_size", "must be between 1 and %d (max_batch_size, or 1 for a model that does not batch), got %d", maxBatch, bs)
		}
		for name, wi := range w.GetInputs() {
			in, ok := inputs[name]
			if !ok {
				return fieldError(file, field+".inputs", "%q is not an input of the model", name)
			}
			f := fmt.Sprintf("%s.inputs[%q]", field, name)
			if wi.GetDataType() != in.GetDataType() {
				return fieldError(file, f+".data_type", "is %s, but the input is %s", wi.GetDataType(), in.GetDataType())
			}
			if len(wi.GetDims()) != len(in.GetDims()) {
				return fieldError(file, f+".dims", "%v does not match the input's dims %v", wi.GetDims(), in.GetDims())
			}
			for k, d := range wi.GetDims() {
				if d < 1 || (in.GetDims()[k] != -1 && in.GetDims()[k] != d) {
					return fieldError(file, f+".dims", "%v does not match the input's dims %v (warm-up dims are concrete, each ≥ 1)", wi.GetDims(), in.GetDims())
				}
			}
			switch src := wi.GetInputDataType().(type) {
			case nil:
				return fieldError(file, f, "says neither zero_data, random_data nor input_data_file")
			case *inferencepb.ModelWarmup_Input_InputDataFile:
				if err := plainFileName(src.InputDataFile); err != nil {
					return fieldError(file, f+".input_data_file", "%v (a file in the model's %s/ directory)", err, WarmupDir)
				}
			}
		}
		for name, in := range inputs {
			if _, ok := w.GetInputs()[name]; !ok && !in.GetOptional() {
				return fieldError(file, field+".inputs", "gives no data for the input %q", name)
			}
		}
	}
	return nil
}

// WarmupSamples builds the requests of every model_warmup sample. Files
// are read from <dir>/warmup/; a file whose size does not fit the input is
// an error naming the sample.
func (m *Model) WarmupSamples() ([]Warmup, error) {
	var out []Warmup
	for _, w := range m.Config.GetModelWarmup() {
		names := make([]string, 0, len(w.GetInputs()))
		for n := range w.GetInputs() {
			names = append(names, n)
		}
		sort.Strings(names)
		var inputs []tensor.Tensor
		for _, name := range names {
			wi := w.GetInputs()[name]
			t, err := m.warmupTensor(name, wi)
			if err != nil {
				return nil, fmt.Errorf("model_warmup sample %q, input %q: %w", w.GetName(), name, err)
			}
			inputs = append(inputs, t)
		}
		s := Warmup{Name: w.GetName(), Count: max(int(w.GetCount()), 1)}
		for k := range max(int(w.GetBatchSize()), 1) {
			s.Requests = append(s.Requests, &inference.Request{
				Model: m.Name, ID: fmt.Sprintf("warmup %s %d", w.GetName(), k), Inputs: inputs,
			})
		}
		out = append(out, s)
	}
	return out, nil
}

func (m *Model) warmupTensor(name string, wi *inferencepb.ModelWarmup_Input) (tensor.Tensor, error) {
	dt := DatatypeOf(wi.GetDataType())
	shape := append([]int64(nil), wi.GetDims()...)
	if m.Config.GetMaxBatchSize() > 0 {
		shape = append([]int64{1}, shape...)
	}
	n, err := tensor.ElementCount(shape)
	if err != nil {
		return tensor.Tensor{}, err
	}
	t := tensor.Tensor{Name: name, Datatype: dt, Shape: shape}
	switch src := wi.GetInputDataType().(type) {
	case *inferencepb.ModelWarmup_Input_InputDataFile:
		path := filepath.Join(m.Dir, WarmupDir, src.InputDataFile)
		data, err := os.ReadFile(path)
		if err != nil {
			return tensor.Tensor{}, err
		}
		t.Data = data
		if err := t.Validate(); err != nil {
			return tensor.Tensor{}, fmt.Errorf("%s does not hold %v %s elements: %w", path, shape, dt, err)
		}
	case *inferencepb.ModelWarmup_Input_RandomData:
		if dt == tensor.Bytes {
			t.Data = zeroData(dt, n) // Triton's rule: random BYTES fall back to zeros
		} else {
			t.Data = randomData(dt, n)
		}
	default:
		t.Data = zeroData(dt, n)
	}
	return t, nil
}

// zeroData is n zero elements; a BYTES element is then empty.
func zeroData(dt tensor.Datatype, n int64) []byte {
	if dt == tensor.Bytes {
		return make([]byte, 4*n) // n zero lengths
	}
	return make([]byte, int64(dt.Size())*n)
}

// randomData is n random elements: uniform in [0, 1) for floating point
// types (random bits would include NaNs), 0 or 1 for BOOL, random bits
// otherwise.
func randomData(dt tensor.Datatype, n int64) []byte {
	size := dt.Size()
	b := make([]byte, int64(size)*n)
	for i := range n {
		e := b[int64(size)*i:][:size]
		switch dt {
		case tensor.FP32:
			binary.LittleEndian.PutUint32(e, math.Float32bits(rand.Float32()))
		case tensor.FP64:
			binary.LittleEndian.PutUint64(e, math.Float64bits(rand.Float64()))
		case tensor.FP16:
			// 0x3c00 is 1.0; the mantissa bits below it give [0, 1).
			binary.LittleEndian.PutUint16(e, uint16(rand.IntN(0x3c00)))
		case tensor.BF16:
			binary.LittleEndian.PutUint16(e, uint16(rand.IntN(0x3f80)))
		case tensor.Bool:
			e[0] = byte(rand.IntN(2))
		default:
			for k := range e {
				e[k] = byte(rand.Uint32())
			}
		}
	}
	return b
}
