package rest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/internal/tensor"
)

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }
func f32(v float32) []byte { return le32(math.Float32bits(v)) }
func f64(v float64) []byte { return le64(math.Float64bits(v)) }

func TestAppendElement(t *testing.T) {
	num := func(s string) any { return json.Number(s) }
	tests := []struct {
		dt      tensor.Datatype
		in      any
		want    []byte
		wantErr string
	}{
		{tensor.Bool, true, []byte{1}, ""},
		{tensor.Bool, false, []byte{0}, ""},
		{tensor.Bool, num("1"), nil, "expected true or false for BOOL, got the number 1"},
		{tensor.Int8, num("-128"), []byte{0x80}, ""},
		{tensor.Int8, num("127"), []byte{0x7f}, ""},
		{tensor.Int8, num("300"), nil, "value 300 is out of range for INT8 [-128, 127]"},
		{tensor.Int8, num("-129"), nil, "out of range for INT8"},
		{tensor.Int8, num("2.0"), []byte{2}, ""},
		{tensor.Int8, num("1e2"), []byte{100}, ""},
		{tensor.Int8, num("1.5"), nil, "value 1.5 is not an integer, as INT8 needs"},
		{tensor.Int8, "1", nil, `expected an integer for INT8, got the string "1"`},
		{tensor.Int8, true, nil, "expected an integer for INT8, got true"},
		{tensor.Int16, num("-2"), le16(0xfffe), ""},
		{tensor.Int32, num("2147483647"), le32(0x7fffffff), ""},
		{tensor.Int32, num("2147483648"), nil, "out of range for INT32"},
		{tensor.Int64, num("-9223372036854775808"), le64(1 << 63), ""},
		{tensor.Int64, num("9223372036854775808"), nil, "out of range for INT64"},
		{tensor.Int64, num("1e300"), nil, "beyond ±2^53"},
		{tensor.Int64, num("9007199254740992.0"), le64(1 << 53), ""},
		{tensor.Uint8, num("255"), []byte{255}, ""},
		{tensor.Uint8, num("256"), nil, "value 256 is out of range for UINT8 [0, 255]"},
		{tensor.Uint8, num("-1"), nil, "out of range for UINT8"},
		{tensor.Uint8, num("-0.0"), []byte{0}, ""},
		{tensor.Uint16, num("65535"), le16(0xffff), ""},
		{tensor.Uint32, num("4294967296"), nil, "out of range for UINT32"},
		{tensor.Uint64, num("18446744073709551615"), le64(math.MaxUint64), ""},
		{tensor.Uint64, num("18446744073709551616"), nil, "out of range for UINT64"},
		{tensor.FP32, num("1.5"), f32(1.5), ""},
		{tensor.FP32, num("0.1"), f32(0.1), ""},
		{tensor.FP32, num("1e39"), nil, "value 1e39 is out of range for FP32"},
		{tensor.FP32, num("1e-50"), f32(0), ""},
		{tensor.FP32, "NaN", f32(float32(math.NaN())), ""},
		{tensor.FP32, "-Infinity", f32(float32(math.Inf(-1))), ""},
		{tensor.FP32, "inf", f32(float32(math.Inf(1))), ""},
		{tensor.FP32, "1.5", nil, `expected a number (or "NaN", "Infinity", "-Infinity") for FP32, got the string "1.5"`},
		{tensor.FP32, false, nil, "expected a number for FP32"},
		{tensor.FP64, num("1e300"), f64(1e300), ""},
		{tensor.FP64, num("1e400"), nil, "out of range for FP64"},
		{tensor.FP16, num("1.5"), le16(0x3e00), ""},
		{tensor.FP16, num("65504"), le16(0x7bff), ""},
		{tensor.FP16, num("65519.99"), le16(0x7bff), ""},
		{tensor.FP16, num("65520"), nil, "value 65520 is out of range for FP16"},
		{tensor.FP16, num("-2"), le16(0xc000), ""},
		{tensor.FP16, num("5.960464477539063e-8"), le16(0x0001), ""}, // smallest subnormal
		{tensor.FP16, num("2.9e-8"), le16(0x0000), ""},               // below half of it
		{tensor.FP16, num("6.103515625e-05"), le16(0x0400), ""},      // smallest normal
		{tensor.FP16, num("1.00048828125"), le16(0x3c00), ""},        // tie: rounds to even
		{tensor.FP16, num("1.0014648437500"), le16(0x3c02), ""},      // tie: rounds to even (up)
		{tensor.FP16, "NaN", le16(0x7e00), ""},
		{tensor.FP16, "-Infinity", le16(0xfc00), ""},
		{tensor.BF16, num("1.5"), le16(0x3fc0), ""},
		{tensor.BF16, num("-2"), le16(0xc000), ""},
		{tensor.BF16, num("3.389e38"), le16(0x7f7f), ""},
		{tensor.BF16, num("3.4e38"), nil, "out of range for BF16"}, // past the midpoint to 2^128
		{tensor.Bytes, "héllo", append(le32(6), "héllo"...), ""},
		{tensor.Bytes, "", le32(0), ""},
		{tensor.Bytes, num("1"), nil, "expected a string for BYTES, got the number 1"},
	}
	for _, tt := range tests {
		got, err := appendElement(nil, tt.dt, tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("appendElement(%s, %#v) error = %v, want %q", tt.dt, tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tt.want) {
			t.Errorf("appendElement(%s, %#v) = %x, %v; want %x", tt.dt, tt.in, got, err, tt.want)
		}
	}
}

// TestRoundHalfMatchesWidening checks FP16 and BF16 rounding against the
// exact widening: every finite half value survives float64 → half, and every
// midpoint between neighbours rounds to the even one.
func TestRoundHalfMatchesWidening(t *testing.T) {
	for _, dt := range []tensor.Datatype{tensor.FP16, tensor.BF16} {
		hf := halfFormatOf(dt)
		maxFinite := uint16((1<<hf.expBits-1)<<hf.mantBits - 1)
		for b := uint16(0); b <= maxFinite; b++ {
			f := halfToFloat64(b, dt)
			if got, ok := roundHalf(f, dt); !ok || got != b {
				t.Fatalf("%s: roundHalf(%v) = %#04x, %v; want %#04x", dt, f, got, ok, b)
			}
			if got, _ := roundHalf(-f, dt); got != b|0x8000 {
				t.Fatalf("%s: roundHalf(%v) = %#04x, want %#04x", dt, -f, got, b|0x8000)
			}
			if b == maxFinite {
				break
			}
			mid := (f + halfToFloat64(b+1, dt)) / 2 // exact in float64
			want := b
			if b&1 == 1 {
				want = b + 1
			}
			if got, ok := roundHalf(mid, dt); !ok || got != want {
				t.Fatalf("%s: roundHalf(midpoint %v) = %#04x, want %#04x", dt, mid, got, want)
			}
		}
	}
}

func TestAppendJSONData(t *testing.T) {
	tests := []struct {
		dt   tensor.Datatype
		data []byte
		want string
	}{
		{tensor.Bool, []byte{1, 0, 2}, "[true,false,true]"},
		{tensor.Int8, []byte{0x80, 0x7f}, "[-128,127]"},
		{tensor.Int16, le16(0xfffe), "[-2]"},
		{tensor.Int32, le32(0xffffffff), "[-1]"},
		{tensor.Int64, le64(1 << 63), "[-9223372036854775808]"},
		{tensor.Uint8, []byte{255}, "[255]"},
		{tensor.Uint16, le16(65535), "[65535]"},
		{tensor.Uint32, le32(4294967295), "[4294967295]"},
		{tensor.Uint64, le64(math.MaxUint64), "[18446744073709551615]"},
		{tensor.FP32, append(f32(0.1), f32(1e6)...), "[0.1,1e+06]"},
		{tensor.FP32, append(append(f32(float32(math.NaN())), f32(float32(math.Inf(1)))...), f32(float32(math.Inf(-1)))...), `["NaN","Infinity","-Infinity"]`},
		{tensor.FP64, f64(0.1), "[0.1]"},
		{tensor.FP16, append(le16(0x3e00), le16(0x7bff)...), "[1.5,65504]"},
		{tensor.BF16, le16(0x3fc0), "[1.5]"},
		{tensor.Bytes, append(append(le32(2), "hi"...), append(le32(6), "a\"\n\x01é"...)...), `["hi","a\"\n\u0001é"]`},
		{tensor.FP32, nil, "[]"},
	}
	for _, tt := range tests {
		size := tt.dt.Size()
		n := int64(len(tt.data))
		if size > 0 {
			n /= int64(size)
		} else {
			c, _ := tensor.CountBytesElements(tt.data)
			n = int64(c)
		}
		got, err := appendJSONData(nil, &tensor.Tensor{Name: "o", Datatype: tt.dt, Shape: []int64{n}, Data: tt.data})
		if err != nil || string(got) != tt.want {
			t.Errorf("appendJSONData(%s %x) = %s, %v; want %s", tt.dt, tt.data, got, err, tt.want)
		}
		if !json.Valid(got) {
			t.Errorf("appendJSONData(%s) = %s is not valid JSON", tt.dt, got)
		}
	}
	_, err := appendJSONData(nil, &tensor.Tensor{Name: "o", Datatype: tensor.Bytes, Shape: []int64{1}, Data: append(le32(2), 0xff, 0xfe)})
	if err == nil || !strings.Contains(err.Error(), "not valid UTF-8") || !strings.Contains(err.Error(), "binary_data") {
		t.Errorf("non-UTF-8 BYTES as JSON: error = %v, want one that suggests binary_data", err)
	}
}
