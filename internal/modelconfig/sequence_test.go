package modelconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/health"
)

const seqBase = `name: "s"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
`

func TestSequenceBatchingAccepted(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte(seqBase+`sequence_batching {
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END fp32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }
  ]
  state [ { input_name: "IN_STATE" output_name: "OUT_STATE" data_type: TYPE_INT32 dims: [ -1 ]
            initial_state: { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: "z" } } ]
}`), "c")
	if err != nil {
		t.Fatal(err)
	}
	sb := cfg.GetSequenceBatching()
	if sb.GetMaxSequenceIdleMicroseconds() != DefaultSequenceIdleMicroseconds || sb.GetDirect() == nil {
		t.Errorf("defaults not filled: idle %d direct %v", sb.GetMaxSequenceIdleMicroseconds(), sb.GetDirect())
	}
	cfg, err = ParseConfig([]byte(seqBase+`sequence_batching { oldest { max_candidate_sequences: 4 preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100 } }`), "c")
	if err != nil || cfg.GetSequenceBatching().GetOldest().GetMaxCandidateSequences() != 4 {
		t.Fatalf("oldest: %v", err)
	}
}

func TestSequenceBatchingErrors(t *testing.T) {
	t.Parallel()
	ctl := func(body string) string {
		return seqBase + "sequence_batching { control_input [ { name: \"C\" control [ { " + body + " } ] } ] }"
	}
	for _, tc := range []struct{ config, want string }{
		{seqBase + "dynamic_batching { }\nsequence_batching { }", "dynamic_batching and sequence_batching cannot both be set"},
		{ctl("kind: CONTROL_SEQUENCE_START"), "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for CONTROL_SEQUENCE_START for s"},
		{ctl("kind: CONTROL_SEQUENCE_END int32_false_true: [0, 1] fp32_false_true: [0, 1]"), "sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' and 'bool_false_true' for CONTROL_SEQUENCE_END for s"},
		{ctl("kind: CONTROL_SEQUENCE_READY int32_false_true: [1]"), "sequence batching control 'int32_false_true' must have exactly 2 entries for CONTROL_SEQUENCE_READY for s"},
		{ctl("kind: CONTROL_SEQUENCE_CORRID int32_false_true: [0, 1]"), "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' for CONTROL_SEQUENCE_CORRID for s"},
		{ctl("kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32"), "unexpected data type for control CONTROL_SEQUENCE_CORRID for s. Allowed data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"},
		{seqBase + `sequence_batching { control_input [ { name: "A" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] } ] },
			{ name: "B" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] } ] } ] }`, "sequence batching specifies multiple CONTROL_SEQUENCE_START tensors for s"},
		{seqBase + `sequence_batching { control_input [ { name: "A" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] },
			{ kind: CONTROL_SEQUENCE_END int32_false_true: [0, 1] } ] } ] }`, "sequence batching control tensor 'A' is specified for multiple control kinds for s"},
		{seqBase + `sequence_batching { control_input [ { control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] } ] } ] }`, "sequence batching control tensor must have a name for s"},
		{seqBase + `sequence_batching { control_input [ { name: "INPUT" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] } ] } ] }`, `"INPUT" is already an input`},
		{seqBase + `sequence_batching { oldest { max_candidate_sequences: 2 preferred_batch_size: [ 9 ] } }`, "sequence batching preferred batch size must be <= max batch size for s"},
		{seqBase + `sequence_batching { oldest { max_candidate_sequences: 2 preferred_batch_size: [ 0 ] } }`, "sequence batching preferred batch size must be positive for s"},
		{seqBase + `sequence_batching { oldest { } }`, "max_candidate_sequences: must be ≥ 1"},
		{seqBase + `sequence_batching { oldest { max_candidate_sequences: 2 preserve_ordering: true } }`, "preserve_ordering: is not supported"},
		{seqBase + `sequence_batching { direct { minimum_slot_utilization: 1.5 } }`, "sequence batching minimum slot utilization must be in range (0.0, 1.0] for s"},
		{seqBase + `sequence_batching { iterative_sequence: true }`, "iterative_sequence: is not supported"},
		{seqBase + `sequence_batching { }
model_warmup [ { name: "w" batch_size: 1 inputs { key: "INPUT" value { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true } } } ]`,
			"model_warmup: is not supported together with sequence_batching"},
		{seqBase + `sequence_batching { state [ { input_name: "S" output_name: "OUTPUT" data_type: TYPE_INT32 dims: [1] } ] }`, `"OUTPUT" is already an output`},
		{seqBase + `sequence_batching { state [ { input_name: "S" output_name: "T" dims: [1] } ] }`, "state[0].data_type: missing"},
		{seqBase + `sequence_batching { state [ { input_name: "S" output_name: "T" data_type: TYPE_INT32 dims: [1] use_growable_memory: true } ] }`, "use_growable_memory: is not supported"},
		{seqBase + `sequence_batching { state [ { input_name: "S" output_name: "T" data_type: TYPE_INT32 dims: [-1]
			initial_state { data_type: TYPE_INT32 dims: [-1] zero_data: true } } ] }`, "initial_state[0].dims[0]: must be ≥ 1"},
		{seqBase + `sequence_batching { state [ { input_name: "S" output_name: "T" data_type: TYPE_INT32 dims: [2]
			initial_state { data_type: TYPE_FP32 dims: [2] zero_data: true } } ] }`, "initial_state[0].data_type: TYPE_FP32 differs"},
		{seqBase + `sequence_batching { state [ { input_name: "S" output_name: "T" data_type: TYPE_INT32 dims: [2]
			initial_state { data_type: TYPE_INT32 dims: [2] } } ] }`, "give zero_data or data_file"},
	} {
		_, err := ParseConfig([]byte(tc.config), "c")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want it to contain %q\nconfig: %s", err, tc.want, tc.config)
		}
	}
}

func TestSequenceInitialStateFile(t *testing.T) {
	t.Parallel()
	repo := t.TempDir()
	dir := filepath.Join(repo, "s")
	for _, d := range []string{filepath.Join(dir, "1"), filepath.Join(dir, InitialStateDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("1/model.py", nil)
	write("config.pbtxt", []byte(seqBase+`sequence_batching { state [ { input_name: "S" output_name: "T" data_type: TYPE_INT32 dims: [2]
		initial_state { data_type: TYPE_INT32 dims: [2] data_file: "init.bin" } } ] }`))
	write(filepath.Join(InitialStateDir, "init.bin"), []byte{7, 0, 0, 0, 9, 0, 0, 0})
	m, err := Load(repo, "s", health.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	if got := m.InitialStates["S"]; len(got) != 8 || got[0] != 7 || got[4] != 9 {
		t.Errorf("initial state = %v", got)
	}
	write(filepath.Join(InitialStateDir, "init.bin"), []byte{1, 2, 3})
	if _, err := Load(repo, "s", health.DefaultPolicy()); err == nil || !strings.Contains(err.Error(), "has 3 bytes, dims [2] of TYPE_INT32 need 8") {
		t.Errorf("short file: %v", err)
	}
}
