package rest

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/memfile"
	"github.com/vigilhq/vigil/internal/tensor"
)

func TestInferJSON(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	body := `{"id":"abc","parameters":{"priority":2,"tag":"x"},"inputs":[
		{"name":"A","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,-4]]},
		{"name":"B","shape":[2],"datatype":"BYTES","data":["hi","é"],"parameters":{"p":true}},
		{"name":"C","shape":[],"datatype":"FP32","data":[0.5]}]}`
	rec := e.do("POST", "/v2/models/add_sub/versions/1/infer", []byte(body))
	if rec.Code != 200 {
		t.Fatalf("infer = %d %s", rec.Code, rec.Body)
	}
	want := `{"model_name":"add_sub","model_version":"1","id":"abc","outputs":[` +
		`{"name":"OUT_A","datatype":"INT32","shape":[2,2],"data":[1,2,3,-4]},` +
		`{"name":"OUT_B","datatype":"BYTES","shape":[2],"data":["hi","é"]},` +
		`{"name":"OUT_C","datatype":"FP32","shape":[],"data":[0.5]}]}`
	if rec.Body.String() != want || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get(headerContentLength) != "" {
		t.Errorf("response = %s %v\nwant %s", rec.Body, rec.Header(), want)
	}
	got := e.models.lastRequest(t)
	wantReq := &inference.Request{
		Model: "add_sub", Version: "1", ID: "abc",
		Parameters: map[string]any{"priority": int64(2), "tag": "x"},
		Inputs: []tensor.Tensor{
			{Name: "A", Datatype: tensor.Int32, Shape: []int64{2, 2}, Data: bytes.Join([][]byte{le32(1), le32(2), le32(3), le32(0xfffffffc)}, nil)},
			{Name: "B", Datatype: tensor.Bytes, Shape: []int64{2}, Data: append(append(le32(2), "hi"...), append(le32(2), "é"...)...), Parameters: map[string]any{"p": true}},
			{Name: "C", Datatype: tensor.FP32, Shape: []int64{}, Data: f32(0.5)},
		},
	}
	if !reflect.DeepEqual(got, wantReq) {
		t.Errorf("request = %+v\nwant %+v", got, wantReq)
	}
}

// TestInferBinary builds a binary-extension request by hand and checks both
// directions, including per-output overrides of binary_data_output.
func TestInferBinary(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	header := []byte(`{"inputs":[{"name":"X","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":12}},` +
		`{"name":"S","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":7}},` +
		`{"name":"J","shape":[1],"datatype":"INT8","data":[5]}],` +
		`"outputs":[{"name":"OUT_X"},{"name":"OUT_S","parameters":{"binary_data":false}},{"name":"OUT_J","parameters":{"binary_data":true}}],` +
		`"parameters":{"binary_data_output":true}}`)
	xs := bytes.Join([][]byte{f32(1), f32(2), f32(3)}, nil)
	ss := append(le32(3), "abc"...)
	body := bytes.Join([][]byte{header, xs, ss}, nil)
	rec := e.do("POST", "/v2/models/add_sub/infer", body,
		"Content-Type", "application/octet-stream", headerContentLength, strconv.Itoa(len(header)))
	if rec.Code != 200 {
		t.Fatalf("infer = %d %s", rec.Code, rec.Body)
	}
	req := e.models.lastRequest(t)
	if !bytes.Equal(req.Inputs[0].Data, xs) || !bytes.Equal(req.Inputs[1].Data, ss) || !bytes.Equal(req.Inputs[2].Data, []byte{5}) {
		t.Errorf("inputs = %+v", req.Inputs)
	}
	if req.Inputs[0].Parameters != nil || req.Parameters != nil {
		t.Errorf("binary-extension parameters leaked to the model: %v %v", req.Inputs[0].Parameters, req.Parameters)
	}
	if want := []inference.RequestedOutput{{Name: "OUT_X"}, {Name: "OUT_S"}, {Name: "OUT_J"}}; !reflect.DeepEqual(req.Outputs, want) {
		t.Errorf("requested outputs = %+v", req.Outputs)
	}

	if ct := rec.Header().Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	hl, err := strconv.Atoi(rec.Header().Get(headerContentLength))
	if err != nil {
		t.Fatalf("response %s = %q", headerContentLength, rec.Header().Get(headerContentLength))
	}
	out := rec.Body.Bytes()
	wantHeader := `{"model_name":"add_sub","model_version":"1","outputs":[` +
		`{"name":"OUT_X","datatype":"FP32","shape":[3],"parameters":{"binary_data_size":12}},` +
		`{"name":"OUT_S","datatype":"BYTES","shape":[1],"data":["abc"]},` +
		`{"name":"OUT_J","datatype":"INT8","shape":[1],"parameters":{"binary_data_size":1}}]}`
	if string(out[:hl]) != wantHeader {
		t.Errorf("response header = %s\nwant %s", out[:hl], wantHeader)
	}
	if tail := out[hl:]; !bytes.Equal(tail, append(append([]byte{}, xs...), 5)) {
		t.Errorf("binary tail = %x", tail)
	}
}

func TestInferOutputsAbsentMeansAll(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	rec := e.do("POST", "/v2/models/add_sub/infer", []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"BOOL","data":[true]}]}`))
	if rec.Code != 200 {
		t.Fatalf("infer = %d %s", rec.Code, rec.Body)
	}
	if req := e.models.lastRequest(t); req.Outputs != nil || req.Version != "" {
		t.Errorf("outputs = %v version %q, want none requested and no version", req.Outputs, req.Version)
	}
}

func TestInferErrors(t *testing.T) {
	bin := func(header string, tail []byte) ([]byte, []string) {
		return append([]byte(header), tail...), []string{headerContentLength, strconv.Itoa(len(header))}
	}
	okInput := `{"name":"A","shape":[1],"datatype":"INT8","data":[1]}`
	type tc struct {
		name    string
		body    []byte
		headers []string
		want    string
	}
	tests := []tc{
		{name: "malformed JSON", body: []byte(`{"inputs":[`), want: "malformed JSON"},
		{name: "not an object", body: []byte(`[1]`), want: "malformed JSON"},
		{name: "trailing data", body: []byte(`{"inputs":[]} {}`), want: "unexpected data after the JSON object"},
		{name: "empty body", body: []byte(``), want: "malformed JSON"},
		{name: "missing inputs", body: []byte(`{"id":"1"}`), want: "field inputs is required"},
		{name: "id not a string", body: []byte(`{"id":1,"inputs":[]}`), want: "field id: expected a string"},
		{name: "missing name", body: []byte(`{"inputs":[{"shape":[1],"datatype":"INT8","data":[1]}]}`), want: "inputs[0]: field name is required"},
		{name: "missing shape", body: []byte(`{"inputs":[{"name":"A","datatype":"INT8","data":[1]}]}`), want: `input "A": field shape is required`},
		{name: "missing datatype", body: []byte(`{"inputs":[{"name":"A","shape":[1],"data":[1]}]}`), want: `input "A": field datatype is required`},
		{name: "missing data", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8"}]}`), want: `input "A": field data is required`},
		{name: "null data", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","data":null}]}`), want: `input "A": field data is required`},
		{name: "unknown datatype", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT3","data":[1]}]}`), want: `input "A": unknown datatype "INT3"`},
		{name: "negative dim", body: []byte(`{"inputs":[{"name":"A","shape":[-1],"datatype":"INT8","data":[1]}]}`), want: `input "A": negative dimension`},
		{name: "shape not ints", body: []byte(`{"inputs":[{"name":"A","shape":[1.5],"datatype":"INT8","data":[1]}]}`), want: "field inputs.shape"},
		{name: "INT8 300", body: []byte(`{"inputs":[{"name":"A","shape":[2],"datatype":"INT8","data":[1,300]}]}`), want: `input "A": data element 1: value 300 is out of range for INT8`},
		{name: "too few elements", body: []byte(`{"inputs":[{"name":"A","shape":[2,2],"datatype":"INT8","data":[1,2,3]}]}`), want: `input "A": shape [2 2] needs 4 elements, data has 3`},
		{name: "too many elements", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","data":[1,2]}]}`), want: `input "A": shape [1] needs 1 elements, data has more`},
		{name: "object element", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","data":[{"x":1}]}]}`), want: `input "A": data holds an object`},
		{name: "null element", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","data":[null]}]}`), want: `input "A": data element 0 is null`},
		{name: "BYTES number", body: []byte(`{"inputs":[{"name":"S","shape":[1],"datatype":"BYTES","data":[1]}]}`), want: `input "S": data element 0: expected a string for BYTES`},
		{name: "duplicate input", body: []byte(`{"inputs":[` + okInput + `,` + okInput + `]}`), want: `input "A" is given more than once`},
		{name: "duplicate output", body: []byte(`{"inputs":[` + okInput + `],"outputs":[{"name":"O"},{"name":"O"}]}`), want: `output "O" is requested more than once`},
		{name: "output without name", body: []byte(`{"inputs":[` + okInput + `],"outputs":[{}]}`), want: `outputs[0]: field name is required`},
		{name: "binary_data not bool", body: []byte(`{"inputs":[` + okInput + `],"outputs":[{"name":"O","parameters":{"binary_data":1}}]}`), want: `"binary_data" must be a boolean`},
		{name: "binary_data_output not bool", body: []byte(`{"inputs":[` + okInput + `],"parameters":{"binary_data_output":"yes"}}`), want: `"binary_data_output" must be a boolean`},
		{name: "parameter not scalar", body: []byte(`{"inputs":[` + okInput + `],"parameters":{"x":[1]}}`), want: `"x" must be a string, number or boolean`},
		{name: "shared memory and data", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","data":[1],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":1}}]}`), want: "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', 'shared_memory_region' in 'parameters'. But set 'data' and 'shared_memory_region'"},
		{name: "shared memory output and binary_data", body: []byte(`{"inputs":[` + okInput + `],"outputs":[{"name":"O","parameters":{"shared_memory_region":"r","shared_memory_byte_size":4,"binary_data":true}}]}`), want: "Output can't set both 'shared_memory_region' and 'binary_data'"},
		{name: "classification", body: []byte(`{"inputs":[` + okInput + `],"outputs":[{"name":"O","parameters":{"classification":3}}]}`), want: "classification extension is not supported"},
		{name: "binary size without header", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","parameters":{"binary_data_size":1}}]}`), want: "has no Inference-Header-Content-Length header"},
		{name: "data and binary size", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","data":[1],"parameters":{"binary_data_size":1}}]}`), want: `input "A": has both data and the binary_data_size parameter`},
		{name: "binary size negative", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","parameters":{"binary_data_size":-1}}]}`), want: "binary_data_size must be a non-negative integer"},
		{name: "binary size not int", body: []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","parameters":{"binary_data_size":1.5}}]}`), want: "binary_data_size must be a non-negative integer"},
	}
	add := func(name, header string, tail []byte, want string) {
		b, h := bin(header, tail)
		tests = append(tests, tc{name: name, body: b, headers: h, want: want})
	}
	add("truncated binary", `{"inputs":[{"name":"A","shape":[4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, make([]byte, 10),
		`input "A": binary_data_size is 16 but only 10 bytes of binary data are left in the body`)
	add("binary size vs shape", `{"inputs":[{"name":"A","shape":[4],"datatype":"FP32","parameters":{"binary_data_size":12}}]}`, make([]byte, 12),
		`binary data of input "A" does not match its shape and datatype`)
	add("binary BYTES malformed", `{"inputs":[{"name":"S","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}`, append(le32(9), 'a', 'b'),
		`binary data of input "S" does not match`)
	add("binary left over", `{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","parameters":{"binary_data_size":1}}]}`, []byte{1, 2},
		"1 bytes of binary data follow the JSON header that no input's binary_data_size accounts for")
	tests = append(tests,
		tc{name: "bad header value", body: []byte(`{"inputs":[]}`), headers: []string{headerContentLength, "abc"}, want: `header Inference-Header-Content-Length: "abc" is not a non-negative integer`},
		tc{name: "negative header value", body: []byte(`{"inputs":[]}`), headers: []string{headerContentLength, "-3"}, want: "is not a non-negative integer"},
		tc{name: "header past body", body: []byte(`{"inputs":[]}`), headers: []string{headerContentLength, "999"}, want: "said to be 999 bytes but the body has only 13"},
		tc{name: "header zero", body: []byte(`abcd`), headers: []string{headerContentLength, "0"}, want: "without a JSON header) is not supported"},
		tc{name: "header too short", body: []byte(`{"inputs":[]}`), headers: []string{headerContentLength, "5"}, want: "malformed JSON"},
		tc{name: "bad encoding", body: []byte(`{"inputs":[]}`), headers: []string{"Content-Encoding", "br"}, want: `unsupported Content-Encoding "br"`},
		tc{name: "bad gzip", body: []byte(`{"inputs":[]}`), headers: []string{"Content-Encoding", "gzip"}, want: "cannot decompress"},
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, readySnapshot(), Config{})
			rec := e.do("POST", "/v2/models/add_sub/infer", tt.body, tt.headers...)
			msg := errorOf(t, rec)
			if rec.Code != http.StatusBadRequest || !strings.Contains(msg, tt.want) {
				t.Errorf("status %d error %q, want 400 containing %q", rec.Code, msg, tt.want)
			}
			if !strings.Contains(msg, "add_sub") {
				t.Errorf("error %q does not name the model", msg)
			}
			if len(e.models.requests) != 0 {
				t.Errorf("Infer ran for a bad request")
			}
		})
	}
}

func TestInferBodyShorterThanContentLength(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	body := []byte(`{"inputs":[]}`)
	req, _ := http.NewRequest("POST", "/v2/models/add_sub/infer", bytes.NewReader(body))
	req.ContentLength = int64(len(body)) + 10 // the client announced more than it sent
	w := newRecorder()
	e.h.ServeHTTP(w, req)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "cannot read request body of 23 bytes") {
		t.Errorf("short body = %d %s", w.Code, w.Body)
	}
	if len(e.models.requests) != 0 {
		t.Errorf("Infer ran for a short body")
	}
}

func TestInferTooLarge(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{MaxRequestBytes: 64})
	body := []byte(`{"inputs":[{"name":"A","shape":[20],"datatype":"INT8","data":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}]}`)
	// Content-Length known: refused before reading.
	rec := e.do("POST", "/v2/models/add_sub/infer", body)
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(errorOf(t, rec), "over the limit of 64 bytes") {
		t.Errorf("known length = %d %s", rec.Code, rec.Body)
	}
	// Unknown length (chunked): cut off by MaxBytesReader.
	req, _ := http.NewRequest("POST", "/v2/models/add_sub/infer", struct{ *bytes.Reader }{bytes.NewReader(body)})
	req.ContentLength = -1
	w := newRecorder()
	e.h.ServeHTTP(w, req)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked = %d %s", w.Code, w.Body)
	}
	// Compressed bodies are held to the limit after decompression too.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write(bytes.Repeat([]byte(" "), 1000))
	_ = zw.Close()
	rec = e.do("POST", "/v2/models/add_sub/infer", gz.Bytes(), "Content-Encoding", "gzip")
	if gz.Len() > 64 || rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("gzip bomb (%d bytes) = %d %s", gz.Len(), rec.Code, rec.Body)
	}
	if len(e.models.requests) != 0 {
		t.Errorf("Infer ran for an oversized request")
	}
}

func TestInferGzip(t *testing.T) {
	e := newEnv(t, readySnapshot(), Config{})
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"UINT8","data":[7]}]}`))
	_ = zw.Close()
	rec := e.do("POST", "/v2/models/add_sub/infer", gz.Bytes(), "Content-Encoding", "gzip")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"data":[7]`) {
		t.Errorf("gzip infer = %d %s", rec.Code, rec.Body)
	}
}

func TestInferModelErrors(t *testing.T) {
	body := []byte(`{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","data":[1]}]}`)
	tests := []struct {
		err        error
		wantStatus int
		wantRetry  string
	}{
		{apierr.New(apierr.NotFound, `unknown model "add_sub"`), 404, ""},
		{apierr.Unavailablef("model add_sub has no routable instance"), 503, "1"},
		{apierr.New(apierr.DeadlineExceeded, "model add_sub: execute exceeded 5s"), 504, ""},
		{apierr.New(apierr.Internal, "model add_sub raised: ValueError: boom"), 500, ""},
		{apierr.New(apierr.InvalidArgument, `model add_sub: unexpected input "Z"`), 400, ""},
		{context.Canceled, 500, ""},
	}
	for _, tt := range tests {
		e := newEnv(t, readySnapshot(), Config{})
		e.models.InferFunc = func(context.Context, *inference.Request) (*inference.Response, error) { return nil, tt.err }
		rec := e.do("POST", "/v2/models/add_sub/infer", body)
		if rec.Code != tt.wantStatus || rec.Header().Get("Retry-After") != tt.wantRetry || errorOf(t, rec) != tt.err.Error() {
			t.Errorf("%v: %d Retry-After %q %s", tt.err, rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
	}
}

func TestInferResponseProblems(t *testing.T) {
	body := []byte(`{"id":"r7","inputs":[{"name":"A","shape":[1],"datatype":"INT8","data":[1]}]}`)
	tests := []struct {
		name       string
		resp       *inference.Response
		wantStatus int
		want       string
	}{
		{"id and version filled in", &inference.Response{Outputs: []tensor.Tensor{{Name: "O", Datatype: tensor.Int8, Shape: []int64{1}, Data: []byte{3}}}}, 200,
			`{"model_name":"add_sub","model_version":"2","id":"r7","outputs":[{"name":"O","datatype":"INT8","shape":[1],"data":[3]}]}`},
		{"response parameters", &inference.Response{Model: "add_sub", Version: "2", ID: "r7", Parameters: map[string]any{"sequence_end": true},
			Outputs: []tensor.Tensor{}}, 200,
			`{"model_name":"add_sub","model_version":"2","id":"r7","parameters":{"sequence_end":true},"outputs":[]}`},
		{"malformed output", &inference.Response{Outputs: []tensor.Tensor{{Name: "O", Datatype: tensor.FP32, Shape: []int64{2}, Data: []byte{1}}}}, 500,
			`model "add_sub" returned a malformed output`},
		{"non-UTF-8 BYTES as JSON", &inference.Response{Outputs: []tensor.Tensor{{Name: "O", Datatype: tensor.Bytes, Shape: []int64{1}, Data: append(le32(1), 0xff)}}}, 400,
			`output "O": BYTES element 0 is not valid UTF-8`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, readySnapshot(), Config{})
			e.models.InferFunc = func(context.Context, *inference.Request) (*inference.Response, error) { return tt.resp, nil }
			rec := e.do("POST", "/v2/models/add_sub/versions/2/infer", body)
			got := rec.Body.String()
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d %s, want %d", rec.Code, got, tt.wantStatus)
			}
			if tt.wantStatus == 200 && got != tt.want {
				t.Errorf("body %s\nwant %s", got, tt.want)
			}
			if tt.wantStatus != 200 && !strings.Contains(errorOf(t, rec), tt.want) {
				t.Errorf("error %s, want %q", got, tt.want)
			}
		})
	}
	// The same non-UTF-8 output is fine in binary.
	e := newEnv(t, readySnapshot(), Config{})
	e.models.InferFunc = func(context.Context, *inference.Request) (*inference.Response, error) {
		return &inference.Response{Outputs: []tensor.Tensor{{Name: "O", Datatype: tensor.Bytes, Shape: []int64{1}, Data: append(le32(1), 0xff)}}}, nil
	}
	rec := e.do("POST", "/v2/models/add_sub/infer", []byte(`{"inputs":[],"outputs":[{"name":"O","parameters":{"binary_data":true}}]}`))
	if rec.Code != 200 || !bytes.HasSuffix(rec.Body.Bytes(), append(le32(1), 0xff)) {
		t.Errorf("binary non-UTF-8 = %d %q", rec.Code, rec.Body)
	}
}

func TestInferUnclassifiedErrorIsLogged(t *testing.T) {
	var logged bytes.Buffer
	e := newEnv(t, readySnapshot(), Config{Logger: newTextLogger(&logged)})
	e.models.InferFunc = func(context.Context, *inference.Request) (*inference.Response, error) {
		return nil, errors.New("scheduler lost the request")
	}
	rec := e.do("POST", "/v2/models/add_sub/infer", []byte(`{"inputs":[]}`))
	if rec.Code != 500 || !strings.Contains(logged.String(), "scheduler lost the request") {
		t.Errorf("status %d, log %q", rec.Code, logged.String())
	}
	logged.Reset()
	e.models.InferFunc = func(context.Context, *inference.Request) (*inference.Response, error) {
		return nil, apierr.Unavailablef("not ready")
	}
	if e.do("POST", "/v2/models/add_sub/infer", []byte(`{"inputs":[]}`)); logged.Len() != 0 {
		t.Errorf("a classified error was logged: %q", logged.String())
	}
}

// A large binary body is read into a memory file of the pool, placed so
// that its binary data is 64-byte aligned, and its large input reaches the
// model as a Shared view of the file; the file goes back once answered.
// Without a file (the pool refuses), the body is read into memory.
func TestLargeBinaryBodyInMemoryFile(t *testing.T) {
	pool := memfile.NewPool(0)
	e := newEnv(t, readySnapshot(), Config{BodyFiles: pool})
	xs := bytes.Repeat(f32(1.5), 1<<16) // 256 KiB
	header := []byte(`{"inputs":[{"name":"X","shape":[65536],"datatype":"FP32","parameters":{"binary_data_size":262144}}]}`)
	body := append(append([]byte{}, header...), xs...)
	send := func() *inference.Request {
		rec := e.do("POST", "/v2/models/add_sub/infer", body,
			"Content-Type", "application/octet-stream", headerContentLength, strconv.Itoa(len(header)))
		if rec.Code != 200 {
			t.Fatalf("infer = %d %s", rec.Code, rec.Body)
		}
		return e.models.lastRequest(t)
	}
	req := send()
	in := req.Inputs[0]
	if in.Shared == nil || in.Shared.Kept == nil || in.Shared.ID&memfile.IDBit == 0 {
		t.Fatalf("the large input is not a view of a body file: %+v", in.Shared)
	}
	if in.Shared.Offset%64 != 0 || !bytes.Equal(in.Data, xs) {
		t.Errorf("input at offset %d of the file (want 64-byte aligned), bytes equal %v", in.Shared.Offset, bytes.Equal(in.Data, xs))
	}
	if st := pool.Stats(); st.Idle != 1 || st.Open != 1 {
		t.Errorf("after the answer: %+v, want the file idle", st)
	}
	pool.Close()
	if req := send(); req.Inputs[0].Shared != nil || !bytes.Equal(req.Inputs[0].Data, xs) {
		t.Errorf("without a memory file: %+v", req.Inputs[0].Shared)
	}
}
