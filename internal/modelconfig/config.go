package modelconfig

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/tensor"
)

const (
	// ConfigFileName is the name of a model's configuration file.
	ConfigFileName = "config.pbtxt"
	// DefaultModelFilename is the model file in a version directory when
	// config.pbtxt sets no default_model_filename.
	DefaultModelFilename = "model.py"
	// MaxInstances bounds the total instance count of one model: each
	// instance is a process, and a typo such as count: 10000 should fail
	// loudly rather than fork-bomb the host.
	MaxInstances = 1024
)

// ParseConfig parses and validates the text of a config.pbtxt and fills in
// the defaults described in the package documentation. file is used only in
// error messages. The name is left empty when the file sets none; Load
// fills it in from the directory.
func ParseConfig(data []byte, file string) (*inferencepb.ModelConfig, error) {
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal(data, cfg); err != nil {
		return nil, textError(file, data, err)
	}
	if err := validateConfig(cfg, file, false); err != nil {
		return nil, err
	}
	if cfg.GetName() != "" {
		fillGroupNames(cfg)
	}
	return cfg, nil
}

// DatatypeOf maps a config data type to its protocol datatype: TYPE_FP32 is
// FP32, TYPE_STRING is BYTES. It returns "" for TYPE_INVALID and unknown
// values.
func DatatypeOf(dt inferencepb.DataType) tensor.Datatype {
	switch dt {
	case inferencepb.DataType_TYPE_BOOL:
		return tensor.Bool
	case inferencepb.DataType_TYPE_UINT8:
		return tensor.Uint8
	case inferencepb.DataType_TYPE_UINT16:
		return tensor.Uint16
	case inferencepb.DataType_TYPE_UINT32:
		return tensor.Uint32
	case inferencepb.DataType_TYPE_UINT64:
		return tensor.Uint64
	case inferencepb.DataType_TYPE_INT8:
		return tensor.Int8
	case inferencepb.DataType_TYPE_INT16:
		return tensor.Int16
	case inferencepb.DataType_TYPE_INT32:
		return tensor.Int32
	case inferencepb.DataType_TYPE_INT64:
		return tensor.Int64
	case inferencepb.DataType_TYPE_FP16:
		return tensor.FP16
	case inferencepb.DataType_TYPE_FP32:
		return tensor.FP32
	case inferencepb.DataType_TYPE_FP64:
		return tensor.FP64
	case inferencepb.DataType_TYPE_STRING:
		return tensor.Bytes
	case inferencepb.DataType_TYPE_BF16:
		return tensor.BF16
	}
	return ""
}

// textPosition matches the position prototext puts in its errors, e.g.
// "(line 3:1): unknown field: x" or "syntax error (line 1:5): ...".
var textPosition = regexp.MustCompile(`^(syntax error )?\(line (\d+):(\d+)\): `)

// protoPrefix matches the "proto: " prefix of protobuf errors, which the
// library deliberately spells with a regular or a non-breaking space.
var protoPrefix = regexp.MustCompile(`proto:[\x{00a0} ]`)

// textError turns a prototext error into an *Error with the file, the
// position and the field named in a stable wording. prototext does not
// export structured errors, so its message is taken apart here; when the
// message has an unexpected form it is kept whole.
func textError(file string, data []byte, err error) *Error {
	msg := strings.TrimSpace(protoPrefix.ReplaceAllString(err.Error(), ""))
	e := &Error{File: file, Msg: msg, Err: err}
	m := textPosition.FindStringSubmatch(msg)
	if m == nil {
		return e
	}
	e.Line, _ = strconv.Atoi(m[2])
	e.Column, _ = strconv.Atoi(m[3])
	rest := msg[len(m[0]):]
	switch {
	case strings.HasPrefix(rest, "unknown field: "):
		name := strings.TrimPrefix(rest, "unknown field: ")
		e.Field = name
		e.Msg = unknownFieldMessage(name)
	case m[1] != "":
		e.Msg = "syntax error: " + rest
	default:
		e.Msg = rest
		// Errors about a value ("invalid value for enum type: TYPE_FOO")
		// point at the value, not the field; name the field from the text
		// before it on the same line.
		if f := fieldBefore(data, e.Line, e.Column); f != "" {
			e.Field = f
			e.Msg = f + ": " + rest
		}
	}
	return e
}

// valueOfField matches the end of "name: value" or "name: [v1, v2, " up to
// a value.
var valueOfField = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(\[[^\]:]*)?$`)

// fieldBefore returns the field name whose value starts at line:column (1-
// based, column in runes) of data, or "".
func fieldBefore(data []byte, line, column int) string {
	lines := strings.Split(string(data), "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	runes := []rune(lines[line-1])
	if column < 1 || column-1 > len(runes) {
		return ""
	}
	m := valueOfField.FindStringSubmatch(string(runes[:column-1]))
	if m == nil {
		return ""
	}
	return m[1]
}

// isTritonOnlyField reports whether name is a Triton ModelConfig field name
// (at any level) that vigil does not implement. Such fields are reported as
// unsupported rather than unknown, so a user porting a Triton config knows
// the name is right and the feature is missing.
func isTritonOnlyField(name string) bool {
	switch name {
	case "runtime", "batch_input", "batch_output", "optimization",
		"cc_model_filenames",
		"metric_tags", "model_operations",
		"model_repository_agents", "response_cache", "model_metrics",
		// ModelInput and ModelOutput
		"is_shape_tensor", "allow_ragged_batch", "is_non_linear_format_io",
		// ModelInstanceGroup
		"rate_limiter", "secondary_devices", "profile", "passive", "host_policy",
		// ModelDynamicBatching
		"priority_levels", "default_priority_level", "default_queue_policy",
		"priority_queue_policy":
		return true
	}
	return false
}

func unknownFieldMessage(name string) string {
	if isTritonOnlyField(name) {
		return fmt.Sprintf("unsupported field %q: vigil does not implement this Triton feature", name)
	}
	msg := fmt.Sprintf("unknown field %q", name)
	if s := suggest(name, configFieldNames()); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return msg
}

// configFieldNames lists every field name declared in model_config.proto.
func configFieldNames() []string {
	seen := map[string]bool{}
	var names []string
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		for i := 0; i < md.Fields().Len(); i++ {
			n := string(md.Fields().Get(i).Name())
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
		for i := 0; i < md.Messages().Len(); i++ {
			walk(md.Messages().Get(i))
		}
	}
	files := inferencepb.File_model_config_proto
	for i := 0; i < files.Messages().Len(); i++ {
		walk(files.Messages().Get(i))
	}
	return names
}

// suggest returns the candidate closest to name within edit distance 2, or
// "" when none is that close.
func suggest(name string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		if d := editDistance(name, c, bestDist); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, or limit when it is
// at least limit (the rows are cut short; only small distances matter).
func editDistance(a, b string, limit int) int {
	if len(a) > 64 || len(b) > 64 {
		return limit // not a typo of a field name; keeps the work bounded
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= limit {
			return limit
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], limit)
}

// validateConfig checks cfg and fills its defaults in place. partial
// leaves out the inputs and outputs, which auto-complete may supply.
func validateConfig(cfg *inferencepb.ModelConfig, file string, partial bool) error {
	if cfg.GetPlatform() == EnsemblePlatform {
		return validateEnsemble(cfg, file)
	}
	if cfg.GetEnsembleScheduling() != nil {
		return fieldError(file, "ensemble_scheduling", "ensemble scheduling cannot be set for model '%s' whose platform is not ensemble", cfg.GetName())
	}
	switch cfg.GetBackend() {
	case "python":
	case "":
		return fieldError(file, "backend", `missing: vigil serves Python models, set backend: "python"`)
	default:
		return fieldError(file, "backend", `must be "python" (vigil serves Python models), got %q`, cfg.GetBackend())
	}
	if cfg.GetPlatform() != "" {
		return fieldError(file, "platform", `must be empty (Python models set backend: "python" and no platform) or "ensemble", got %q`, cfg.GetPlatform())
	}
	if cfg.GetMaxBatchSize() < 0 {
		return fieldError(file, "max_batch_size", "must be ≥ 0, got %d", cfg.GetMaxBatchSize())
	}
	if !partial {
		if err := validateIO(cfg, file); err != nil {
			return err
		}
	}
	if err := validateInstanceGroups(cfg, file); err != nil {
		return err
	}
	if err := validateDynamicBatching(cfg, file); err != nil {
		return err
	}
	if err := validateSequenceBatching(cfg, file); err != nil {
		return err
	}
	if err := validateVersionPolicy(cfg, file); err != nil {
		return err
	}
	if !partial {
		if err := validateWarmup(cfg, file); err != nil {
			return err
		}
	}
	if err := completeParameters(cfg, file); err != nil {
		return err
	}
	if cfg.GetDefaultModelFilename() == "" {
		cfg.DefaultModelFilename = DefaultModelFilename
	} else if err := plainFileName(cfg.GetDefaultModelFilename()); err != nil {
		return fieldError(file, "default_model_filename", "%v", err)
	}
	return nil
}

// plainFileName accepts a file name without any directory part.
func plainFileName(name string) error {
	switch {
	case name == "." || name == "..":
		return fmt.Errorf("%q is not a file name", name)
	case strings.ContainsAny(name, `/\`+"\x00"):
		return fmt.Errorf("%q must be a plain file name, without directories", name)
	}
	return nil
}

func validateIO(cfg *inferencepb.ModelConfig, file string) error {
	if len(cfg.GetInput()) == 0 {
		return fieldError(file, "input", "the model needs at least one input")
	}
	if len(cfg.GetOutput()) == 0 {
		return fieldError(file, "output", "the model needs at least one output")
	}
	batching := cfg.GetMaxBatchSize() > 0
	seen := map[string]int{}
	for i, in := range cfg.GetInput() {
		field := fmt.Sprintf("input[%d]", i)
		if err := validateTensor(file, field, in.GetName(), in.GetDataType(), in.GetDims(), in.GetReshape(), batching); err != nil {
			return err
		}
		if j, dup := seen[in.GetName()]; dup {
			return fieldError(file, field+".name", "%q is already the name of input[%d]", in.GetName(), j)
		}
		seen[in.GetName()] = i
		if f := in.GetFormat(); f != inferencepb.ModelInput_FORMAT_NONE && len(in.GetDims()) != 3 {
			// Triton's rule: an image layout names three dimensions.
			return fieldError(file, fmt.Sprintf("%s (%q).format", field, in.GetName()), "%s needs 3 dims (C, H, W in some order), got dims %v", f, in.GetDims())
		}
	}
	seen = map[string]int{}
	for i, out := range cfg.GetOutput() {
		field := fmt.Sprintf("output[%d]", i)
		if err := validateTensor(file, field, out.GetName(), out.GetDataType(), out.GetDims(), out.GetReshape(), batching); err != nil {
			return err
		}
		if j, dup := seen[out.GetName()]; dup {
			return fieldError(file, field+".name", "%q is already the name of output[%d]", out.GetName(), j)
		}
		seen[out.GetName()] = i
		if l := out.GetLabelFilename(); l != "" {
			if err := plainFileName(l); err != nil {
				return fieldError(file, field+".label_filename", "%v", err)
			}
		}
	}
	return nil
}

func validateTensor(file, field, name string, dt inferencepb.DataType, dims []int64, reshape *inferencepb.ModelTensorReshape, batching bool) error {
	if name == "" {
		return fieldError(file, field+".name", "missing")
	}
	field = fmt.Sprintf("%s (%q)", field, name)
	if dt == inferencepb.DataType_TYPE_INVALID {
		return fieldError(file, field+".data_type", "missing (TYPE_INVALID)")
	}
	if DatatypeOf(dt) == "" {
		return fieldError(file, field+".data_type", "unknown data type %d", int32(dt))
	}
	if len(dims) == 0 {
		return fieldError(file, field+".dims", "missing: give at least one dimension (use dims: [1] with reshape: { shape: [] } for a scalar)")
	}
	for i, d := range dims {
		if d < 1 && d != -1 {
			return fieldError(file, fmt.Sprintf("%s.dims[%d]", field, i), "must be ≥ 1 or -1 (variable), got %d", d)
		}
	}
	if reshape == nil {
		return nil
	}
	shape := reshape.GetShape()
	for i, d := range shape {
		if d < 1 && d != -1 {
			return fieldError(file, fmt.Sprintf("%s.reshape.shape[%d]", field, i), "must be ≥ 1 or -1 (variable), got %d", d)
		}
	}
	if len(shape) == 0 {
		// An empty reshape makes each batch element a scalar: it needs one
		// element per element, and a batch to hold it (Triton's rule).
		if !batching {
			return fieldError(file, field+".reshape", "an empty reshape (a scalar) needs max_batch_size > 0")
		}
		if n, ok := trunks(dims); len(n) != 1 || !ok || n[0] != 1 {
			return fieldError(file, field+".reshape", "an empty reshape (a scalar) needs dims with exactly one element, got dims %v", dims)
		}
		return nil
	}
	dt1, ok1 := trunks(dims)
	dt2, ok2 := trunks(shape)
	if !ok1 || !ok2 {
		return fieldError(file, field+".reshape", "dims %v or reshape %v has too many elements", dims, shape)
	}
	if len(dt1) != len(dt2) {
		return fieldError(file, field+".reshape", "dims %v and reshape %v have different numbers of variable (-1) dimensions", dims, shape)
	}
	for i := range dt1 {
		if dt1[i] != dt2[i] {
			return fieldError(file, field+".reshape", "dims %v and reshape %v have different element counts", dims, shape)
		}
	}
	return nil
}

// trunks splits shape at its -1 dimensions and returns the element count of
// each piece: [2 4 -1 6] gives [8 6]. Two shapes are compatible reshapes of
// each other when their trunks are equal. ok is false on overflow.
func trunks(shape []int64) (counts []int64, ok bool) {
	cur := int64(1)
	for _, d := range shape {
		if d == -1 {
			counts = append(counts, cur)
			cur = 1
			continue
		}
		if d > 0 && cur > (1<<62)/d {
			return nil, false
		}
		cur *= d
	}
	return append(counts, cur), true
}

func validateInstanceGroups(cfg *inferencepb.ModelConfig, file string) error {
	if len(cfg.GetInstanceGroup()) == 0 {
		cfg.InstanceGroup = []*inferencepb.ModelInstanceGroup{{
			Count: proto.Int32(1),
			Kind:  inferencepb.ModelInstanceGroup_KIND_CPU,
		}}
		return nil
	}
	total := 0
	for i, g := range cfg.GetInstanceGroup() {
		field := fmt.Sprintf("instance_group[%d]", i)
		switch g.GetKind() {
		case inferencepb.ModelInstanceGroup_KIND_AUTO:
			g.Kind = inferencepb.ModelInstanceGroup_KIND_CPU
		case inferencepb.ModelInstanceGroup_KIND_CPU, inferencepb.ModelInstanceGroup_KIND_MODEL:
		case inferencepb.ModelInstanceGroup_KIND_GPU:
			return fieldError(file, field+".kind", "GPU instances are not supported (KIND_GPU); use KIND_CPU")
		default:
			return fieldError(file, field+".kind", "unknown kind %d", int32(g.GetKind()))
		}
		if len(g.GetGpus()) > 0 {
			return fieldError(file, field+".gpus", "GPU instances are not supported; remove gpus")
		}
		if g.Count == nil {
			g.Count = proto.Int32(1)
		}
		if g.GetCount() < 1 {
			return fieldError(file, field+".count", "must be ≥ 1, got %d", g.GetCount())
		}
		total += int(g.GetCount())
		if total > MaxInstances {
			return fieldError(file, field+".count", "the model would have more than %d instances", MaxInstances)
		}
	}
	return nil
}

// fillGroupNames names unnamed instance groups "<model>_<group index>", as
// Triton does. It needs cfg.Name.
func fillGroupNames(cfg *inferencepb.ModelConfig) {
	for i, g := range cfg.GetInstanceGroup() {
		if g.GetName() == "" {
			g.Name = fmt.Sprintf("%s_%d", cfg.GetName(), i)
		}
	}
}

func validateDynamicBatching(cfg *inferencepb.ModelConfig, file string) error {
	db := cfg.GetDynamicBatching()
	if db == nil {
		return nil
	}
	if cfg.GetMaxBatchSize() == 0 {
		return fieldError(file, "dynamic_batching", "needs max_batch_size > 0 (the model does not batch)")
	}
	for i, p := range db.GetPreferredBatchSize() {
		if p < 1 || p > cfg.GetMaxBatchSize() {
			return fieldError(file, fmt.Sprintf("dynamic_batching.preferred_batch_size[%d]", i),
				"must be between 1 and max_batch_size (%d), got %d", cfg.GetMaxBatchSize(), p)
		}
	}
	return nil
}

func validateVersionPolicy(cfg *inferencepb.ModelConfig, file string) error {
	vp := cfg.GetVersionPolicy()
	switch p := vp.GetPolicyChoice().(type) {
	case nil:
		cfg.VersionPolicy = &inferencepb.ModelVersionPolicy{
			PolicyChoice: &inferencepb.ModelVersionPolicy_Latest_{
				Latest: &inferencepb.ModelVersionPolicy_Latest{NumVersions: proto.Uint32(1)},
			},
		}
	case *inferencepb.ModelVersionPolicy_Latest_:
		if p.Latest == nil {
			p.Latest = &inferencepb.ModelVersionPolicy_Latest{}
		}
		if p.Latest.NumVersions == nil {
			p.Latest.NumVersions = proto.Uint32(1)
		}
		if p.Latest.GetNumVersions() < 1 {
			return fieldError(file, "version_policy.latest.num_versions", "must be ≥ 1, got %d", p.Latest.GetNumVersions())
		}
	case *inferencepb.ModelVersionPolicy_All_:
		if p.All == nil {
			p.All = &inferencepb.ModelVersionPolicy_All{}
		}
	case *inferencepb.ModelVersionPolicy_Specific_:
		vs := p.Specific.GetVersions()
		if len(vs) == 0 {
			return fieldError(file, "version_policy.specific.versions", "list at least one version")
		}
		seen := map[int64]bool{}
		for i, v := range vs {
			if v < 1 {
				return fieldError(file, fmt.Sprintf("version_policy.specific.versions[%d]", i), "must be ≥ 1, got %d", v)
			}
			if seen[v] {
				return fieldError(file, fmt.Sprintf("version_policy.specific.versions[%d]", i), "version %d is listed twice", v)
			}
			seen[v] = true
		}
	}
	return nil
}

// completeParameters checks the parameters' keys and fills in what every
// configuration, a Python model's or an ensemble's, has once read: an empty
// value for a parameter given none, the default transaction policy.
func completeParameters(cfg *inferencepb.ModelConfig, file string) error {
	for k, v := range cfg.GetParameters() {
		if k == "" {
			return fieldError(file, "parameters", "a parameter key is empty")
		}
		if v == nil {
			cfg.Parameters[k] = &inferencepb.ModelParameter{}
		}
	}
	if cfg.ModelTransactionPolicy == nil {
		cfg.ModelTransactionPolicy = &inferencepb.ModelTransactionPolicy{}
	}
	return nil
}
