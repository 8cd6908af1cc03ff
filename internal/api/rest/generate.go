package rest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/tensor"
)

// The generate extension (Triton's extension_generate.md): a flat JSON
// request whose keys are the model's input names or request parameters,
// and a flat JSON response whose keys are output names and response
// parameters. /generate answers with one JSON object, /generate_stream with
// Server-Sent Events, one per response.

// errGenerateOne is /generate's error for a model that did not give
// exactly one response; the wording is Triton's.
const errGenerateOne = "generate expects model to produce exactly 1 response, use generate stream for model that generates various number of responses"

// generate serves POST /v2/models/{model}[/versions/{version}]/generate.
func (s *server) generate(w http.ResponseWriter, r *http.Request) {
	req, err := s.generateRequest(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var got []*inference.Response
	var final error
	err = s.models.InferStream(r.Context(), req, func(rep model.Reply) error {
		if rep.Response != nil {
			got = append(got, rep.Response)
		}
		if rep.Err != nil {
			final = rep.Err
			return rep.Err // one error ends the request
		}
		return nil
	})
	switch {
	case final != nil:
		s.writeError(w, r, final)
	case err != nil:
		s.writeError(w, r, err)
	case len(got) != 1:
		s.writeError(w, r, apierr.New(apierr.InvalidArgument, "%s (model %s sent %d)", errGenerateOne, req.Model, len(got)))
	default:
		body, err := generateResponse(req, got[0])
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeRawJSON(w, http.StatusOK, body)
	}
}

// generateStream serves POST /v2/models/{model}[/versions/{version}]/generate_stream:
// one SSE event per response ("data: <json>\n\n"), an error as an event
// {"error": "..."} that ends the stream, and a flag-only FINAL as the end
// without an event. Failures before the request runs (unknown model, bad
// JSON) get an ordinary JSON error. When the client disconnects, mid-stream
// included, the request is cancelled and the model sees is_cancelled().
func (s *server) generateStream(w http.ResponseWriter, r *http.Request) {
	req, err := s.generateRequest(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	// The body has been read: the server's read timeout must not cut a
	// long stream (net/http cancels the request when the connection's read
	// deadline passes while it watches for the client going away).
	_ = rc.SetReadDeadline(time.Time{})
	started := false
	start := func(status int) {
		h := w.Header()
		h.Set("Content-Type", "text/event-stream; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // proxies must not buffer the stream
		w.WriteHeader(status)
		started = true
	}
	var ev bytes.Buffer
	err = s.models.InferStream(r.Context(), req, func(rep model.Reply) error {
		ev.Reset()
		var body []byte
		switch {
		case rep.Err != nil:
			body, _ = json.Marshal(errorBody{Error: rep.Err.Error()})
		case rep.Response != nil:
			var err error
			if body, err = generateResponse(req, rep.Response); err != nil {
				body, _ = json.Marshal(errorBody{Error: err.Error()})
				rep.Err = err
			}
		default:
			return nil // a flag-only FINAL: the stream just ends
		}
		if !started {
			// The status is fixed by the first event, as in Triton.
			status := http.StatusOK
			if rep.Err != nil {
				status = apierr.HTTPStatus(rep.Err)
			}
			start(status)
		}
		ev.WriteString("data: ")
		ev.Write(body)
		ev.WriteString("\n\n")
		if _, err := w.Write(ev.Bytes()); err != nil {
			return clientGone(err)
		}
		if err := rc.Flush(); err != nil {
			return clientGone(err)
		}
		if rep.Err != nil {
			return errSSEErrorSent // an error ends the stream
		}
		return nil
	})
	switch {
	case errors.Is(err, errSSEErrorSent):
	case err != nil && !started && r.Context().Err() == nil:
		s.writeError(w, r, err)
	case !started && err == nil:
		start(http.StatusOK) // zero responses: an empty stream
	}
}

// clientGone is the error of an event the client's connection did not
// take: the client went away, which ends the request as cancelled (as when
// the request's context ends, whichever of the two the server sees first).
func clientGone(err error) error {
	return apierr.Wrap(apierr.Cancelled, err, "the client went away: writing the event stream")
}

// errSSEErrorSent ends a stream after its error event.
var errSSEErrorSent = errors.New("an error event ended the stream")

// generateRequest reads a generate body and maps it onto the model's
// inputs and request parameters.
func (s *server) generateRequest(w http.ResponseWriter, r *http.Request) (*inference.Request, error) {
	name, version := r.PathValue("model"), r.PathValue("version")
	if enc := strings.TrimSpace(r.Header.Get("Content-Encoding")); enc != "" && !strings.EqualFold(enc, "identity") {
		return nil, apierr.New(apierr.InvalidArgument, "Unsupported content-encoding, only 'identity' is supported.")
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return nil, apierr.Wrap(apierr.CodeOf(err), err, "model %q", name)
	}
	md, err := s.models.Metadata(name, version)
	if err != nil {
		return nil, err
	}
	req, err := decodeGenerate(body, md)
	if err != nil {
		return nil, apierr.Wrap(apierr.InvalidArgument, err, "model %s", name)
	}
	req.Model, req.Version = name, version
	return req, nil
}

// decodeGenerate maps a generate body onto md's inputs: a key naming an
// input becomes that input (a scalar is one element, a flat array many),
// any other key a request parameter; the keys of "parameters" get the same
// treatment. "id" is also the request id.
func decodeGenerate(body []byte, md *model.Metadata) (*inference.Request, error) {
	req := &inference.Request{}
	inputs := make(map[string]model.TensorMetadata, len(md.Inputs))
	for _, in := range md.Inputs {
		if in.Name == "parameters" {
			return nil, errors.New("Keyword 'parameters' for nested schema also given as input tensor name")
		}
		inputs[in.Name] = in
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return req, nil
	}
	var top map[string]json.RawMessage
	if err := decodeJSONNumbers(body, &top); err != nil {
		return nil, fmt.Errorf("the generate body must be a JSON object: %w", err)
	}
	if raw, ok := top["id"]; ok {
		var id string
		if err := json.Unmarshal(raw, &id); err != nil {
			return nil, errors.New("Unable to parse 'id'")
		}
		req.ID = id
	}
	seen := map[string]bool{}
	var add func(k string, raw json.RawMessage) error
	add = func(k string, raw json.RawMessage) error {
		if in, ok := inputs[k]; ok {
			if seen[k] {
				return fmt.Errorf("input %q is given twice", k)
			}
			seen[k] = true
			t, err := generateTensor(in, raw)
			if err != nil {
				return err
			}
			req.Inputs = append(req.Inputs, t)
			return nil
		}
		var v any
		if err := decodeJSONNumbers(raw, &v); err != nil {
			return err
		}
		switch x := v.(type) {
		case string, bool:
		case json.Number:
			if i, err := x.Int64(); err == nil {
				v = i
			} else if f, err := x.Float64(); err == nil {
				v = f
			}
		default:
			return fmt.Errorf("parameter '%s' has invalid type. It should be either 'int', 'bool', or 'string'.", k)
		}
		if req.Parameters == nil {
			req.Parameters = map[string]any{}
		}
		req.Parameters[k] = v
		return nil
	}
	for k, raw := range top {
		if k == "parameters" {
			var nested map[string]json.RawMessage
			if err := decodeJSONNumbers(raw, &nested); err != nil {
				return nil, fmt.Errorf("'parameters' must be a JSON object: %w", err)
			}
			for nk, nraw := range nested {
				if err := add(nk, nraw); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := add(k, raw); err != nil {
			return nil, err
		}
	}
	return req, nil
}

func decodeJSONNumbers(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("unexpected data after the JSON value")
	}
	return nil
}

// generateTensor builds input in from a JSON scalar or flat array, with the
// shape the metadata gives: the element count divided by the fixed dims,
// the innermost -1 taking the rest and any other -1 (the batch dimension
// included) 1.
func generateTensor(in model.TensorMetadata, raw json.RawMessage) (tensor.Tensor, error) {
	var v any
	if err := decodeJSONNumbers(raw, &v); err != nil {
		return tensor.Tensor{}, fmt.Errorf("input '%s': %w", in.Name, err)
	}
	elems, ok := v.([]any)
	if !ok {
		elems = []any{v}
	}
	var data []byte
	for i, e := range elems {
		if _, nested := e.([]any); nested {
			return tensor.Tensor{}, fmt.Errorf("input '%s': element %d is an array; give the elements as one flat array", in.Name, i)
		}
		var err error
		if data, err = appendElement(data, in.Datatype, e); err != nil {
			return tensor.Tensor{}, fmt.Errorf("input '%s' element %d: %w", in.Name, i, err)
		}
	}
	shape, ok := generateShape(in.Shape, int64(len(elems)))
	if !ok {
		return tensor.Tensor{}, fmt.Errorf("The schema can not convert input '%s' to tensor with proper shape", in.Name)
	}
	if data == nil {
		data = []byte{}
	}
	return tensor.Tensor{Name: in.Name, Datatype: in.Datatype, Shape: shape, Data: data}, nil
}

// generateShape fits n elements to dims; see generateTensor.
func generateShape(dims []int64, n int64) ([]int64, bool) {
	shape := make([]int64, len(dims))
	fixed := int64(1)
	inner := -1
	for i, d := range dims {
		if d == -1 {
			inner = i
			continue
		}
		fixed *= d
	}
	for i, d := range dims {
		shape[i] = d
		if d == -1 {
			shape[i] = 1
		}
	}
	if inner >= 0 {
		if fixed == 0 || n%fixed != 0 {
			return nil, false
		}
		shape[inner] = n / fixed
		return shape, true
	}
	return shape, fixed == n
}

// generateResponse is one response as the generate extension's flat JSON
// object: id (when set), model_name, model_version, every response
// parameter and every output (a scalar when it has one element, else a
// flat array), keys in sorted order; the reserved keys win.
func generateResponse(req *inference.Request, resp *inference.Response) ([]byte, error) {
	out := make(map[string]json.RawMessage, 3+len(resp.Parameters)+len(resp.Outputs))
	for k, v := range resp.Parameters {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, apierr.New(apierr.Internal, "response parameter %q cannot be sent as JSON: %v", k, err)
		}
		out[k] = b
	}
	for i := range resp.Outputs {
		t := &resp.Outputs[i]
		b, err := appendJSONData(nil, t)
		if err != nil {
			return nil, apierr.Wrap(apierr.Internal, err, "output %q", t.Name)
		}
		if n, _ := tensor.ElementCount(t.Shape); n == 1 {
			b = bytes.TrimSuffix(bytes.TrimPrefix(b, []byte("[")), []byte("]"))
		}
		out[t.Name] = b
	}
	str := func(s string) json.RawMessage { b, _ := json.Marshal(s); return b }
	id := resp.ID
	if id == "" {
		id = req.ID
	}
	delete(out, "id")
	if id != "" {
		out["id"] = str(id)
	}
	out["model_name"] = str(cmpOr(resp.Model, req.Model))
	out["model_version"] = str(cmpOr(resp.Version, req.Version))
	return json.Marshal(out)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
