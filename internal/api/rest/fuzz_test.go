package rest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var jsonSeeds = []string{
	`{"inputs":[]}`,
	`{"id":"x","parameters":{"binary_data_output":true,"n":1,"f":1.5},"inputs":[{"name":"A","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}],"outputs":[{"name":"O","parameters":{"binary_data":false}}]}`,
	`{"inputs":[{"name":"B","shape":[3],"datatype":"BOOL","data":[true,false,true]}]}`,
	`{"inputs":[{"name":"S","shape":[2],"datatype":"BYTES","data":["a","\u00e9\n"]}]}`,
	`{"inputs":[{"name":"F","shape":[4],"datatype":"FP32","data":[1e-50,"NaN","-Infinity",3.4e38]}]}`,
	`{"inputs":[{"name":"H","shape":[3],"datatype":"FP16","data":[65504,6e-8,-0]}]}`,
	`{"inputs":[{"name":"B","shape":[1],"datatype":"BF16","data":[1.5]}]}`,
	`{"inputs":[{"name":"U","shape":[2],"datatype":"UINT64","data":[18446744073709551615,0]}]}`,
	`{"inputs":[{"name":"I","shape":[2],"datatype":"INT8","data":[300,1.5]}]}`,
	`{"inputs":[{"name":"I","shape":[9223372036854775807,9223372036854775807],"datatype":"INT8","data":[1]}]}`,
	`{"inputs":[{"name":"I","shape":[0],"datatype":"FP64","data":[]}]}`,
	`{"inputs":[{"name":"I","shape":[1],"datatype":"INT64","data":[[[[[[1]]]]]]}]}`,
	`{"inputs":[{"name":"I","shape":[1],"datatype":"INT64","data":1}]}`,
	`{"inputs":[{"name":"I","shape":[1],"datatype":"UINT8","data":[{"a":1}]}]}`,
	`{"inputs":[{"name":"I","shape":[1],"datatype":"UINT8","parameters":{"binary_data_size":1}}]}`,
	`{"inputs":`,
	`[]`,
}

func addTritonclientSeeds(f *testing.F, add func(body []byte, header string, present bool)) {
	for _, name := range []string{"add_sub_binary", "mixed", "all_json"} {
		body, err := os.ReadFile(filepath.Join("testdata", "tritonclient", name+".body"))
		if err != nil {
			f.Fatal(err)
		}
		if i := bytes.LastIndexByte(body, '}'); name == "all_json" || i < 0 {
			add(body, "", false)
		} else {
			// The JSON header ends at its last closing brace for these
			// bodies (their binary data holds no '}').
			add(body, strconv.Itoa(i+1), true)
		}
	}
}

// FuzzDecodeInferJSON: decoding never panics, what it accepts is a valid
// tensor, and JSON data survives a trip through the JSON encoder.
func FuzzDecodeInferJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	addTritonclientSeeds(f, func(body []byte, _ string, _ bool) { f.Add(body) })
	f.Fuzz(func(t *testing.T, data []byte) {
		req, _, err := decodeInferRequest(data, binaryReader{})
		if err != nil {
			return
		}
		for i := range req.Inputs {
			in := &req.Inputs[i]
			if err := in.Validate(); err != nil {
				t.Fatalf("accepted an invalid tensor: %v", err)
			}
			out, err := appendJSONData(nil, in)
			if err != nil {
				t.Fatalf("cannot re-encode accepted input %q: %v", in.Name, err)
			}
			n, _ := elementCountForTest(in.Shape)
			again, err := decodeJSONData(out, in.Datatype, in.Shape, n)
			if err != nil || !bytes.Equal(again, in.Data) {
				t.Fatalf("input %q (%s) did not survive JSON: %x → %s → %x, %v", in.Name, in.Datatype, in.Data, out, again, err)
			}
		}
	})
}

// FuzzDecodeBinaryInfer: any body and Inference-Header-Content-Length value
// decode without panicking, and accepted inputs are valid tensors.
func FuzzDecodeBinaryInfer(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s), strconv.Itoa(len(s)), true)
	}
	header := `{"inputs":[{"name":"A","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"S","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}`
	f.Add(append([]byte(header), "\x00\x00\x80?\x00\x00\x00@\x02\x00\x00\x00hi"...), strconv.Itoa(len(header)), true)
	f.Add(append([]byte(header), "\x00\x00\x80?"...), strconv.Itoa(len(header)), true)
	f.Add([]byte(header), "-1", true)
	f.Add([]byte(header), "0", true)
	f.Add([]byte(header), "99999999999999999999", true)
	f.Add([]byte(header), " 12 ", true)
	addTritonclientSeeds(f, func(body []byte, h string, present bool) { f.Add(body, h, present) })
	f.Fuzz(func(t *testing.T, body []byte, headerValue string, present bool) {
		jsonPart, bin, err := splitInferBody(body, headerValue, present)
		if err != nil {
			return
		}
		req, _, err := decodeInferRequest(jsonPart, bin)
		if err != nil {
			return
		}
		for i := range req.Inputs {
			if err := req.Inputs[i].Validate(); err != nil {
				t.Fatalf("accepted an invalid tensor: %v", err)
			}
		}
	})
}

func elementCountForTest(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n, nil
}
