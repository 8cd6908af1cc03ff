// Package rest serves vigil's HTTP/REST API: the Open Inference Protocol
// (KServe v2) with Triton's extensions (binary tensor data, statistics, model
// configuration, model repository), the Kubernetes-style /livez, /readyz and
// /startupz probes, and /metrics.
//
// Handlers are thin: request bodies are decoded by the codecs
// (json_codec.go, binary_codec.go, elements.go); everything about models is
// asked of the Models interface and everything about health is read from the
// health snapshot, which never blocks on a model. Nothing is logged per
// request except failures that are vigil's own (unclassified 5xx errors).
//
// # Errors
//
// Every error answers {"error": "..."} with the status that apierr assigns
// to the error's class (apierr.HTTPStatus); 503s carry Retry-After
// (apierr.RetryAfter, rounded up to whole seconds). Unknown paths are 404, a
// wrong method is 405 with Allow, bodies over Config.MaxRequestBytes are 413
// (refused from Content-Length before reading when possible; gzip and
// deflate request bodies are held to the same limit after decompression, and
// what they decompress to counts in Config.MaxConcurrentRequestBytes).
// Decoding errors are 400 and name the model and the input, output, field or
// header at fault.
//
// # Health
//
// /v2/health/live, /v2/health/ready and /v2/models/{m}[/versions/{v}]/ready
// answer 200 with {"live"|"ready": true} or 503 with the first failing
// check's reason; an unknown model is 404. /livez, /readyz and /startupz
// follow the Kubernetes API server (see probes.go) except that failures are
// 503 rather than 500. Config.HideReasons withholds every free-text reason.
// Before the health engine has published a snapshot, an empty one stands in:
// live, not ready, not started.
//
// # JSON tensor data
//
// Data may be nested or flat; only the element count is checked against
// the shape, as in Triton. Elements convert to the datatype with type and
// range checks (elements.go has the full rules):
//
//   - BOOL takes true/false only (not 0/1).
//   - Integer types take integral numbers within range: 300 for INT8 is a
//     400 naming the input and element. Integer literals are exact over the
//     whole 64-bit ranges; "2.0" or "1e3" are accepted when integral and
//     within ±2^53.
//   - FP32/FP64 take numbers within range and the strings "NaN", "Infinity"
//     and "-Infinity"; responses use the same strings for non-finite values
//     (standard JSON, and numpy parses them).
//   - FP16 and BF16 are accepted in JSON: the decimal value is rounded once,
//     to nearest-even; values that round past the largest finite value are
//     rejected as out of range. Responses print them as numbers.
//   - BYTES elements are JSON strings (their UTF-8 bytes). A BYTES output
//     with an element that is not valid UTF-8 cannot be sent as JSON without
//     loss: the request fails with 400 asking for "binary_data": true on
//     that output (tritonclient requests binary outputs by default).
//
// # Binary tensor data extension
//
// Inference-Header-Content-Length splits the body into the JSON header and
// the binary data of the inputs with binary_data_size, in input order. A
// missing or wrong header value, a binary_data_size past the body's end,
// bytes left over, and data that does not fit the shape are 400s. A header
// value of 0 (Triton's raw single-input body) is refused: vigil needs the
// JSON header. Outputs are binary when requested with binary_data, or by
// default when the request has binary_data_output; the response then has
// Content-Type application/octet-stream and its own
// Inference-Header-Content-Length. The shared-memory and classification
// extensions are refused with 400 rather than ignored.
//
// # Statistics
//
// Triton's statistics JSON, with every number a non-negative integer;
// cache_hit and cache_miss are always zero and batch_stats is empty.
package rest
