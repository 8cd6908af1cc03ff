// Package modelconfig reads one model's configuration from a Triton-style
// model repository: config.pbtxt (the Triton ModelConfig subset vigil
// supports), the optional health.yaml (the model's health policy) and the
// version directories. Everything it returns has been validated and has its
// defaults filled in; everything it rejects is a *Error that names the file
// and the field or key at fault.
//
// # config.pbtxt
//
// The file is protobuf text format, parsed with prototext into
// inferencepb.ModelConfig, whose schema (proto/model_config.proto) declares
// only the fields vigil implements, with Triton's field numbers. A field
// outside that schema is an error: a Triton field vigil does not implement
// (optimization, response_cache, ...) is reported as
// unsupported, anything else as unknown, with a suggestion when the name is
// close to a supported one.
//
// Validation and defaults, following Triton where Triton has a rule:
//   - backend must be "python"; platform must be empty (Triton Python models
//     set only backend, and a platform names another framework).
//   - name: when absent it is the directory name (Load); when present it must
//     equal the directory name.
//   - max_batch_size ≥ 0; dynamic_batching needs max_batch_size > 0 and each
//     preferred_batch_size in [1, max_batch_size].
//   - sequence_batching: not together with dynamic_batching; controls and
//     states are checked with Triton's rules and messages (sequence.go);
//     max_sequence_idle_microseconds 0 means 1 s; the default strategy is
//     direct; initial_state data files are read from initial_state/ at load.
//   - at least one input and one output; names non-empty and unique within
//     the inputs and within the outputs; data_type a known type other than
//     TYPE_INVALID.
//   - dims: at least one dimension, each ≥ 1 or -1 (variable). 0 is rejected
//     as in Triton ("dimension must be integer >= 1, or -1").
//   - reshape: each dimension ≥ 1 or -1; the element counts of dims and
//     reshape must match, trunk by trunk between variable dimensions (Triton's
//     rule); an empty reshape (a scalar) needs dims with one element and a
//     batching model.
//   - label_filename and default_model_filename are plain file names (no
//     directories, no ".."); default_model_filename defaults to "model.py".
//   - instance_group: absent means one group {count: 1, kind: KIND_CPU}. A
//     group's count defaults to 1 when absent and must be ≥ 1 when given
//     (count is declared optional so the two differ). KIND_AUTO becomes
//     KIND_CPU (vigil has no GPU support, which is what Triton does on a
//     machine without GPUs); KIND_MODEL is kept; KIND_GPU and a non-empty
//     gpus list are errors. An unnamed group is named "<model>_<group index>"
//     as in Triton. At most MaxInstances instances in total.
//   - version_policy: absent means latest {num_versions: 1}; num_versions
//     defaults to 1 when absent and must be ≥ 1 when given; specific versions
//     must be ≥ 1 and distinct.
//   - model_transaction_policy: decoupled: true makes the model answer
//     through response senders (0..N responses per request); when absent
//     it is filled as {decoupled: false}, as Triton's Python backend
//     reports it.
//   - parameters: keys must be non-empty.
//
// # Versions
//
// A version is a subdirectory of the model directory whose name is a
// positive decimal integer in canonical form ("1", "12"; not "01" or "+1",
// which would make two directories the same version) and that holds the
// model file (default_model_filename). Other entries are ignored. The
// version policy then selects among them; a specific version that is not
// present on disk is an error, as is a selection with no version.
//
// # Instance names
//
// Instances are named "<model>_<i>" with i counting from 0 across all groups
// in the order the groups appear (Triton names them "<group>_<k>" per
// group). The numbering is stable for a given config, short, and unique
// without relying on group names.
//
// # health.yaml and --health-config
//
// Both are YAML mappings of exactly the keys of the health policy table
// (SPEC §6): period_seconds, timeout_seconds, failure_threshold,
// success_threshold, restart_check_delay_seconds,
// stop_traffic_threshold_seconds, restart_threshold_seconds,
// heartbeat_timeout_seconds, heartbeat_period_seconds, execute_timeout_seconds,
// initialize_timeout_seconds, consecutive_errors, error_patterns, min_ready_instances, restart_backoff
// {initial_seconds, max_seconds, reset_after_seconds}, max_restarts,
// restart_window_seconds. Keys that are absent keep the base value (server
// defaults for health.yaml, health.DefaultPolicy for --health-config).
// Decoding is strict: an unknown or repeated key, a value of the wrong type,
// a key with no value, or more than one YAML document is an error naming the
// file, line and key. "_seconds" values may be fractional. Rules:
//   - period_seconds, timeout_seconds, heartbeat_timeout_seconds,
//     heartbeat_period_seconds and restart_window_seconds are > 0; every
//     other duration is ≥ 0 (execute_timeout_seconds 0 turns the progress
//     check off, initialize_timeout_seconds 0 the initialize limit), and
//     restart_backoff.initial_seconds is ≥ 0.1 (MinBackoffInitial).
//   - timeout_seconds may exceed period_seconds, as in Kubernetes: the hook
//     is single-flight, so a slow check only delays the next one.
//   - failure_threshold, success_threshold, min_ready_instances and
//     max_restarts are ≥ 1; consecutive_errors ≥ 0 (0 = off).
//   - restart_threshold_seconds ≥ stop_traffic_threshold_seconds, and
//     restart_backoff.max_seconds ≥ restart_backoff.initial_seconds.
//   - error_patterns is a list of non-empty substrings (an empty one would
//     match every error); any scalar is taken as written, so [503] is "503".
//   - integer keys take integers only: 1.5 is an error, not 1.
//   - Load also requires min_ready_instances ≤ the model's instance count.
package modelconfig
