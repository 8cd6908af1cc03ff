package rest

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/vigilhq/vigil/internal/tensor"
)

// Conversions between JSON tensor elements and the raw little-endian bytes
// of the tensor package. The rules (docs: "JSON tensor data"):
//
//   - BOOL takes true/false only.
//   - Integer types take JSON numbers whose value is an integer in the
//     type's range. Integer literals are read exactly (all of UINT64 and
//     INT64); a literal with a fraction or exponent ("2.0", "1e3") is
//     accepted when its value is integral and within ±2^53, where float64 is
//     exact. Anything else (1.5, 300 for INT8, -1 for UINT8) is rejected.
//   - FP32 and FP64 take any JSON number that fits the type (1e39 is out of
//     range for FP32; values below the smallest subnormal round to zero), and
//     the strings "NaN", "Infinity" and "-Infinity" (case-insensitive, "inf"
//     too), since JSON has no literal for them.
//   - FP16 and BF16 take the same values, rounded from the exact decimal
//     value once, to nearest-even. A finite value that rounds beyond the
//     type's largest finite value is rejected as out of range.
//   - BYTES takes strings; each element is the string's UTF-8 bytes.
//
// Output is the inverse: numbers in their shortest round-trip form,
// non-finite floats as the strings above (which numpy also parses), BYTES as
// strings when the bytes are valid UTF-8. A BYTES element that is not valid
// UTF-8 cannot travel in JSON without loss, so such an output must be
// requested in binary form (binary_data); asking for it as JSON is a 400
// that says so.

// appendElement converts one JSON element (as json.Decoder.Token returns it
// with UseNumber) to datatype dt and appends its bytes to dst.
func appendElement(dst []byte, dt tensor.Datatype, v any) ([]byte, error) {
	switch dt {
	case tensor.Bool:
		b, ok := v.(bool)
		if !ok {
			return dst, wrongType("true or false", dt, v)
		}
		if b {
			return append(dst, 1), nil
		}
		return append(dst, 0), nil
	case tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64:
		bits := dt.Size() * 8
		i, err := parseSigned(v, dt, bits)
		if err != nil {
			return dst, err
		}
		return appendUint(dst, uint64(i), dt.Size()), nil
	case tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64:
		u, err := parseUnsigned(v, dt, dt.Size()*8)
		if err != nil {
			return dst, err
		}
		return appendUint(dst, u, dt.Size()), nil
	case tensor.FP32:
		f, err := parseFloat(v, dt, 32)
		if err != nil {
			return dst, err
		}
		return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(f))), nil
	case tensor.FP64:
		f, err := parseFloat(v, dt, 64)
		if err != nil {
			return dst, err
		}
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), nil
	case tensor.FP16, tensor.BF16:
		f, err := parseFloat(v, dt, 64)
		if err != nil {
			return dst, err
		}
		h, ok := roundHalf(f, dt)
		if !ok {
			return dst, fmt.Errorf("value %v is out of range for %s", v, dt)
		}
		return binary.LittleEndian.AppendUint16(dst, h), nil
	case tensor.Bytes:
		s, ok := v.(string)
		if !ok {
			return dst, wrongType("a string", dt, v)
		}
		return tensor.AppendBytesElement(dst, []byte(s)), nil
	}
	return dst, fmt.Errorf("unknown datatype %q", dt)
}

// appendNumber is appendElement for a number token of JSON data. The
// common cases parse the token's bytes directly instead of boxing it;
// anything else, and every error, takes appendElement's path, which writes
// the same bytes and the precise message.
func appendNumber(dst []byte, dt tensor.Datatype, tok []byte) ([]byte, error) {
	switch dt {
	case tensor.FP32:
		if f, err := strconv.ParseFloat(string(tok), 32); err == nil {
			return binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(f))), nil
		}
	case tensor.FP64:
		if f, err := strconv.ParseFloat(string(tok), 64); err == nil {
			return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f)), nil
		}
	case tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64:
		if i, err := strconv.ParseInt(string(tok), 10, dt.Size()*8); err == nil {
			return appendUint(dst, uint64(i), dt.Size()), nil
		}
	case tensor.Uint8, tensor.Uint16, tensor.Uint32, tensor.Uint64:
		if u, err := strconv.ParseUint(string(tok), 10, dt.Size()*8); err == nil {
			return appendUint(dst, u, dt.Size()), nil
		}
	}
	return appendElement(dst, dt, json.Number(tok))
}

func appendUint(dst []byte, u uint64, size int) []byte {
	for i := range size {
		dst = append(dst, byte(u>>(8*i)))
	}
	return dst
}

func wrongType(want string, dt tensor.Datatype, v any) error {
	switch v := v.(type) {
	case string:
		return fmt.Errorf("expected %s for %s, got the string %q", want, dt, truncate(v, 32))
	case bool:
		return fmt.Errorf("expected %s for %s, got %t", want, dt, v)
	case json.Number:
		return fmt.Errorf("expected %s for %s, got the number %s", want, dt, truncate(string(v), 32))
	}
	return fmt.Errorf("expected %s for %s, got %v", want, dt, v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// maxExactInt is the largest integer below which every integer is exact in
// float64.
const maxExactInt = 1 << 53

// parseInteger reads an integral JSON number: exactly when it is an integer
// literal, through float64 (within ±2^53) when written with a fraction or
// exponent. It reports big literals as out of range of the 64-bit types.
func parseInteger(v any, dt tensor.Datatype, unsigned bool) (i int64, u uint64, err error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, 0, wrongType("an integer", dt, v)
	}
	s := string(n)
	outOfRange := func() error { return fmt.Errorf("value %s is out of range for %s", truncate(s, 32), dt) }
	if unsigned {
		u, err = strconv.ParseUint(s, 10, 64)
	} else {
		i, err = strconv.ParseInt(s, 10, 64)
	}
	if err == nil {
		return i, u, nil
	}
	if errors.Is(err, strconv.ErrRange) {
		return 0, 0, outOfRange()
	}
	// Not an integer literal: a negative for unsigned, a fraction or an
	// exponent.
	f, ferr := strconv.ParseFloat(s, 64)
	switch {
	case ferr != nil:
		return 0, 0, outOfRange()
	case f != math.Trunc(f):
		return 0, 0, fmt.Errorf("value %s is not an integer, as %s needs", truncate(s, 32), dt)
	case unsigned && f < 0:
		return 0, 0, outOfRange()
	case math.Abs(f) > maxExactInt:
		return 0, 0, fmt.Errorf("value %s is beyond ±2^53 written with a fraction or exponent; write it as an integer literal", truncate(s, 32))
	case unsigned:
		return 0, uint64(f), nil
	}
	return int64(f), 0, nil
}

func parseSigned(v any, dt tensor.Datatype, bits int) (int64, error) {
	i, _, err := parseInteger(v, dt, false)
	if err != nil {
		return 0, err
	}
	lo, hi := int64(-1)<<(bits-1), int64(1)<<(bits-1)-1
	if i < lo || i > hi {
		return 0, fmt.Errorf("value %d is out of range for %s [%d, %d]", i, dt, lo, hi)
	}
	return i, nil
}

func parseUnsigned(v any, dt tensor.Datatype, bits int) (uint64, error) {
	_, u, err := parseInteger(v, dt, true)
	if err != nil {
		return 0, err
	}
	if bits < 64 && u > uint64(1)<<bits-1 {
		return 0, fmt.Errorf("value %d is out of range for %s [0, %d]", u, dt, uint64(1)<<bits-1)
	}
	return u, nil
}

// parseFloat reads a JSON number, or one of the non-finite names, as a
// float of the given bit size.
func parseFloat(v any, dt tensor.Datatype, bits int) (float64, error) {
	switch v := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(v), bits)
		if err != nil {
			return 0, fmt.Errorf("value %s is out of range for %s", truncate(string(v), 32), dt)
		}
		return f, nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
			return f, nil
		}
		return 0, wrongType(`a number (or "NaN", "Infinity", "-Infinity")`, dt, v)
	}
	return 0, wrongType("a number", dt, v)
}

// Half-precision formats: FP16 (IEEE binary16) and BF16 (bfloat16).
type halfFormat struct {
	mantBits, expBits int
}

func halfFormatOf(dt tensor.Datatype) halfFormat {
	if dt == tensor.BF16 {
		return halfFormat{mantBits: 7, expBits: 8}
	}
	return halfFormat{mantBits: 10, expBits: 5}
}

// roundHalf rounds f to FP16 or BF16, to nearest-even, in one step from the
// float64 value. ok is false when a finite f rounds beyond the largest
// finite value.
func roundHalf(f float64, dt tensor.Datatype) (bits uint16, ok bool) {
	hf := halfFormatOf(dt)
	bias := 1<<(hf.expBits-1) - 1
	maxField := 1<<hf.expBits - 1
	var sign uint16
	if math.Signbit(f) {
		sign = 1 << 15
	}
	a := math.Abs(f)
	switch {
	case math.IsNaN(f):
		return sign | uint16(maxField)<<hf.mantBits | 1<<(hf.mantBits-1), true
	case math.IsInf(f, 0):
		return sign | uint16(maxField)<<hf.mantBits, true
	case a == 0:
		return sign, true
	}
	minNormalExp := 1 - bias
	frac, e := math.Frexp(a) // a = frac × 2^e, frac in [0.5, 1)
	exp := e - 1
	if exp < minNormalExp {
		// Subnormal: a multiple of 2^(minNormalExp-mantBits). Scaling by a
		// power of two is exact, so RoundToEven is the only rounding. A
		// result of 2^mantBits is the smallest normal, whose bits follow.
		q := math.RoundToEven(math.Ldexp(a, hf.mantBits-minNormalExp))
		return sign | uint16(q), true
	}
	q := math.RoundToEven(math.Ldexp(frac, hf.mantBits+1)) // in [2^m, 2^(m+1)]
	if q == float64(uint64(1)<<(hf.mantBits+1)) {
		q /= 2
		exp++
	}
	field := exp + bias
	if field >= maxField {
		return 0, false
	}
	return sign | uint16(field)<<hf.mantBits | (uint16(q) - 1<<hf.mantBits), true
}

// halfToFloat64 widens FP16 or BF16 bits exactly.
func halfToFloat64(bits uint16, dt tensor.Datatype) float64 {
	if dt == tensor.BF16 {
		return float64(math.Float32frombits(uint32(bits) << 16))
	}
	sign := 1.0
	if bits&0x8000 != 0 {
		sign = -1
	}
	exp := int(bits>>10) & 0x1f
	mant := float64(bits & 0x3ff)
	switch exp {
	case 0:
		return sign * math.Ldexp(mant, -24)
	case 0x1f:
		if mant != 0 {
			return math.NaN()
		}
		return math.Inf(int(sign))
	}
	return sign * math.Ldexp(1024+mant, exp-25)
}

// appendJSONData appends the elements of t as a flat JSON array. t must be
// valid (tensor.Validate).
func appendJSONData(dst []byte, t *tensor.Tensor) ([]byte, error) {
	dst = append(dst, '[')
	if t.Datatype == tensor.Bytes {
		elems, err := tensor.SplitBytesElements(t.Data)
		if err != nil {
			return nil, err
		}
		for i, e := range elems {
			if !utf8.Valid(e) {
				return nil, fmt.Errorf("BYTES element %d is not valid UTF-8, so it cannot be sent as JSON; request this output with the parameter \"binary_data\": true", i)
			}
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, e)
		}
		return append(dst, ']'), nil
	}
	size := t.Datatype.Size()
	for i := 0; i+size <= len(t.Data); i += size {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONElement(dst, t.Datatype, t.Data[i:i+size])
	}
	return append(dst, ']'), nil
}

func appendJSONElement(dst []byte, dt tensor.Datatype, b []byte) []byte {
	le := binary.LittleEndian
	switch dt {
	case tensor.Bool:
		return strconv.AppendBool(dst, b[0] != 0)
	case tensor.Int8:
		return strconv.AppendInt(dst, int64(int8(b[0])), 10)
	case tensor.Int16:
		return strconv.AppendInt(dst, int64(int16(le.Uint16(b))), 10)
	case tensor.Int32:
		return strconv.AppendInt(dst, int64(int32(le.Uint32(b))), 10)
	case tensor.Int64:
		return strconv.AppendInt(dst, int64(le.Uint64(b)), 10)
	case tensor.Uint8:
		return strconv.AppendUint(dst, uint64(b[0]), 10)
	case tensor.Uint16:
		return strconv.AppendUint(dst, uint64(le.Uint16(b)), 10)
	case tensor.Uint32:
		return strconv.AppendUint(dst, uint64(le.Uint32(b)), 10)
	case tensor.Uint64:
		return strconv.AppendUint(dst, le.Uint64(b), 10)
	case tensor.FP16, tensor.BF16:
		return appendJSONFloat(dst, halfToFloat64(le.Uint16(b), dt), 32)
	case tensor.FP32:
		return appendJSONFloat(dst, float64(math.Float32frombits(le.Uint32(b))), 32)
	case tensor.FP64:
		return appendJSONFloat(dst, math.Float64frombits(le.Uint64(b)), 64)
	}
	return dst
}

func appendJSONFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}

// appendJSONString appends s, which is valid UTF-8, as a JSON string.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
