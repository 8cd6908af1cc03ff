package rest

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"strconv"
	"testing"

	"github.com/vigilhq/vigil/internal/tensor"
)

// The fast path must agree with the token decoder on every valid JSON value
// it accepts.
func FuzzPlainElementsMatchTokens(f *testing.F) {
	for _, s := range []string{`[1,2,3]`, `[[1, 2],[3,4]]`, `[true,false]`, `[1e3, -0.5, 2.0]`, `[300]`, `[1,"a"]`, `[1,,2]`, `[-]`, `[1 2]`, `[tru]`, `[1e400]`} {
		f.Add(s, uint8(0))
	}
	types := []tensor.Datatype{tensor.FP32, tensor.Int8, tensor.Bool, tensor.Uint64, tensor.FP16, tensor.Int64,
		tensor.FP64, tensor.Int32, tensor.Uint8, tensor.Uint16, tensor.BF16}
	f.Fuzz(func(t *testing.T, data string, ti uint8) {
		dt := types[int(ti)%len(types)]
		raw := json.RawMessage(data)
		if !json.Valid(raw) {
			return // data always comes from a decoded header
		}
		for n := int64(0); n < 5; n++ {
			shape := []int64{n}
			fast, ok, ferr := scanPlainElements(nil, raw, dt, shape, n)
			if !ok && ferr == nil {
				continue
			}
			slow, serr := decodeJSONTokens(nil, raw, dt, shape, n)
			if (ferr == nil) != (serr == nil) {
				t.Fatalf("%s as %s[%d]: fast err %v, token err %v", data, dt, n, ferr, serr)
			}
			if ferr == nil && !bytes.Equal(fast, slow) {
				t.Fatalf("%s as %s[%d]: fast %x, token %x", data, dt, n, fast, slow)
			}
		}
	})
}

func TestQuoteNonFinite(t *testing.T) {
	cases := map[string]string{
		`{"data":[1.0,NaN,Infinity,-Infinity]}`:  `{"data":[1.0,"NaN","Infinity","-Infinity"]}`,
		`{"id":"NaN \"Infinity\"","data":[NaN]}`: `{"id":"NaN \"Infinity\"","data":["NaN"]}`,
		`{"data":[1,2]}`:                         `{"data":[1,2]}`,
	}
	for in, want := range cases {
		if got := string(quoteNonFinite([]byte(in))); got != want {
			t.Errorf("quoteNonFinite(%s) = %s, want %s", in, got, want)
		}
	}
}

// The header scanner must fill the request exactly as encoding/json does
// whenever it takes a header.
func FuzzScanInferHeaderMatchesDecoder(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		` {"id" : "a", "inputs" : [ { "name":"X","shape":[ 1 , 2 ],"datatype":"INT32","data": [1, 2] , "parameters":{"p":-1.5e3,"q":"s","r":false}} ] } `,
		`{"inputs":[{"name":"X","shape":[],"datatype":"INT32","data":null}],"outputs":[]}`,
		`{"inputs":[{"name":"X","shape":[1],"datatype":"BYTES","data":["a\"b]", "c"]}]}`,
		`{"inputs":[],"parameters":{}}`, `{"inputs":[],"Inputs":[]}`, `{"inputs":[],"inputs":[]}`,
		`{"inputs":[{"name":"X","shape":[1.0]}]}`, `{"inputs":[{"name":"X","shape":[01]}]}`,
		`{"inputs":[{"name":"X","data":{"a":[1,]}}]}`, `{"inputs":[]} x`, `{"id":1,"inputs":[]}`,
		`{"inputs":[{"name":"X","parameters":{"a":null}}]}`, `{"inputs":[{"name":"X","parameters":{"a":truex}}]}`,
	} {
		f.Add([]byte(s))
	}
	addTritonclientSeeds(f, func(body []byte, header string, present bool) {
		if present {
			n, _ := strconv.Atoi(header)
			body = body[:n]
		}
		f.Add(body)
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		var fast inferRequestJSON
		if !scanInferHeader(data, &fast) {
			return
		}
		var slow inferRequestJSON
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&slow); err != nil {
			t.Fatalf("%q: scanned, but encoding/json fails: %v", data, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			t.Fatalf("%q: scanned, but encoding/json finds more after the object", data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q:\nscanner %#v\ndecoder %#v", data, fast, slow)
		}
	})
}
