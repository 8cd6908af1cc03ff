package tensor

import (
	"bytes"
	"strings"
	"testing"
)

func TestElementCount(t *testing.T) {
	cases := []struct {
		shape   []int64
		want    int64
		wantErr string
	}{
		{nil, 1, ""},
		{[]int64{2, 3}, 6, ""},
		{[]int64{4, 0, 7}, 0, ""},
		{[]int64{2, -1}, 0, "negative dimension"},
		{[]int64{1 << 40, 1 << 40}, 0, "too many elements"},
	}
	for _, c := range cases {
		got, err := ElementCount(c.shape)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("ElementCount(%v) error %v, want %q", c.shape, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ElementCount(%v) = %d, %v; want %d", c.shape, got, err, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	var bytesData []byte
	bytesData = AppendBytesElement(bytesData, []byte("ab"))
	bytesData = AppendBytesElement(bytesData, nil)
	cases := []struct {
		name    string
		t       Tensor
		wantErr string
	}{
		{"fp32 ok", Tensor{Name: "x", Datatype: FP32, Shape: []int64{2}, Data: make([]byte, 8)}, ""},
		{"fp32 short", Tensor{Name: "x", Datatype: FP32, Shape: []int64{2}, Data: make([]byte, 7)}, `tensor "x": shape [2] of FP32 needs 8 bytes, got 7`},
		{"unknown type", Tensor{Name: "x", Datatype: "FP8", Shape: []int64{1}}, "unknown datatype"},
		{"bytes ok", Tensor{Name: "s", Datatype: Bytes, Shape: []int64{2}, Data: bytesData}, ""},
		{"bytes count", Tensor{Name: "s", Datatype: Bytes, Shape: []int64{3}, Data: bytesData}, "needs 3 BYTES elements, got 2"},
		{"bytes truncated", Tensor{Name: "s", Datatype: Bytes, Shape: []int64{1}, Data: []byte{9, 0, 0, 0, 'a'}}, "declares 9 bytes"},
		{"negative", Tensor{Name: "x", Datatype: Int8, Shape: []int64{-2}}, "negative dimension"},
	}
	for _, c := range cases {
		err := c.t.Validate()
		if c.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.wantErr)
		}
	}
}

func TestBytesElementsRoundTrip(t *testing.T) {
	elems := [][]byte{[]byte("hello"), {}, []byte("wörld"), {0, 1, 2}}
	var data []byte
	for _, e := range elems {
		data = AppendBytesElement(data, e)
	}
	n, err := CountBytesElements(data)
	if err != nil || n != len(elems) {
		t.Fatalf("count %d, %v", n, err)
	}
	got, err := SplitBytesElements(data)
	if err != nil {
		t.Fatal(err)
	}
	for i := range elems {
		if !bytes.Equal(got[i], elems[i]) {
			t.Errorf("element %d = %q, want %q", i, got[i], elems[i])
		}
	}
	if _, err := SplitBytesElements([]byte{1, 0}); err == nil {
		t.Error("a truncated length prefix was accepted")
	}
}

func TestDatatypes(t *testing.T) {
	for dt, size := range map[Datatype]int{Bool: 1, Int16: 2, FP32: 4, Uint64: 8, BF16: 2, Bytes: 0} {
		if !dt.Valid() || dt.Size() != size {
			t.Errorf("%s: valid %v size %d, want size %d", dt, dt.Valid(), dt.Size(), size)
		}
	}
	if Datatype("FLOAT").Valid() {
		t.Error("FLOAT is not a protocol datatype")
	}
}
