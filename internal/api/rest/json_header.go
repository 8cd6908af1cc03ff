package rest

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// scanInferHeader is the fast path of decoding a JSON inference header:
// one pass over the bytes, no reflection, for the headers clients send
// (exact lower-case field names, strings without escapes, integer shapes,
// parameter values that are strings, numbers or booleans). It fills raw
// exactly as encoding/json would and returns true, or returns false for
// anything else, and the caller decodes the header with encoding/json,
// which also produces the precise error. FuzzScanInferHeaderMatchesDecoder
// holds the two to the same result.
func scanInferHeader(b []byte, raw *inferRequestJSON) bool {
	s := headerScanner{b: b}
	if !s.object(func(key []byte) bool {
		switch string(key) {
		case "id":
			v, ok := s.str()
			raw.ID = v
			return ok
		case "parameters":
			m, ok := s.params()
			raw.Parameters = m
			return ok
		case "inputs":
			raw.Inputs = []inferInputJSON{}
			return s.array(func() bool {
				raw.Inputs = append(raw.Inputs, inferInputJSON{})
				return s.input(&raw.Inputs[len(raw.Inputs)-1])
			})
		case "outputs":
			raw.Outputs = []requestOutputJSON{}
			return s.array(func() bool {
				raw.Outputs = append(raw.Outputs, requestOutputJSON{})
				return s.output(&raw.Outputs[len(raw.Outputs)-1])
			})
		}
		return false
	}) {
		return false
	}
	s.space()
	return s.i == len(s.b)
}

// headerScanner walks a JSON header. Its methods return false as soon as
// the input leaves what the fast path handles.
type headerScanner struct {
	b []byte
	i int
}

func (s *headerScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next skips white space and reports whether the next byte is c, taking it
// if so.
func (s *headerScanner) next(c byte) bool {
	s.space()
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// object reads an object, calling field for each key with the scanner at
// its value. A key seen twice is left to encoding/json (the last one wins
// there, and maps merge).
func (s *headerScanner) object(field func(key []byte) bool) bool {
	if !s.next('{') {
		return false
	}
	if s.next('}') {
		return true
	}
	var seen [8][]byte
	n := 0
	for {
		key, ok := s.rawString()
		if !ok || !s.next(':') {
			return false
		}
		for _, k := range seen[:min(n, len(seen))] {
			if string(k) == string(key) {
				return false
			}
		}
		if n >= len(seen) {
			return false
		}
		seen[n] = key
		n++
		if !field(key) {
			return false
		}
		if s.next(',') {
			continue
		}
		return s.next('}')
	}
}

// array reads an array, calling elem with the scanner at each element.
func (s *headerScanner) array(elem func() bool) bool {
	if !s.next('[') {
		return false
	}
	if s.next(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if s.next(',') {
			continue
		}
		return s.next(']')
	}
}

// rawString reads a string without escapes or control characters and
// returns its bytes. Invalid UTF-8, which encoding/json replaces, is left
// to it (the handler refuses such headers before they get here).
func (s *headerScanner) rawString() ([]byte, bool) {
	if !s.next('"') {
		return nil, false
	}
	start := s.i
	ascii := true
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			v := s.b[start : s.i-1]
			return v, ascii || utf8.Valid(v)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
		s.i++
	}
	return nil, false
}

func (s *headerScanner) str() (string, bool) {
	b, ok := s.rawString()
	return string(b), ok
}

// number reads a JSON number and returns its text.
func (s *headerScanner) number() ([]byte, bool) {
	s.space()
	start := s.i
	b := s.b
	if s.i < len(b) && b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(b) && b[s.i] == '0':
		s.i++
	case s.i < len(b) && b[s.i] >= '1' && b[s.i] <= '9':
		for s.i < len(b) && b[s.i] >= '0' && b[s.i] <= '9' {
			s.i++
		}
	default:
		return nil, false
	}
	if s.i < len(b) && b[s.i] == '.' {
		s.i++
		if !s.digits() {
			return nil, false
		}
	}
	if s.i < len(b) && (b[s.i] == 'e' || b[s.i] == 'E') {
		s.i++
		if s.i < len(b) && (b[s.i] == '+' || b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return nil, false
		}
	}
	return b[start:s.i], true
}

func (s *headerScanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// literal takes the word w (true, false, null) if it is next.
func (s *headerScanner) literal(w string) bool {
	s.space()
	if len(s.b)-s.i >= len(w) && string(s.b[s.i:s.i+len(w)]) == w {
		s.i += len(w)
		return true
	}
	return false
}

// params reads a parameters object whose values are strings, numbers
// (kept as json.Number, as the decoder's UseNumber does) or booleans.
func (s *headerScanner) params() (map[string]any, bool) {
	m := map[string]any{}
	ok := s.object(func(key []byte) bool {
		s.space()
		if s.i >= len(s.b) {
			return false
		}
		switch c := s.b[s.i]; {
		case c == '"':
			v, ok := s.str()
			m[string(key)] = v
			return ok
		case c == 't':
			m[string(key)] = true
			return s.literal("true")
		case c == 'f':
			m[string(key)] = false
			return s.literal("false")
		case c == '-' || (c >= '0' && c <= '9'):
			v, ok := s.number()
			m[string(key)] = json.Number(v)
			return ok
		}
		return false
	})
	return m, ok
}

// shape reads an array of integers that fit in int64.
func (s *headerScanner) shape() (*[]int64, bool) {
	dims := make([]int64, 0, 4)
	ok := s.array(func() bool {
		v, ok := s.number()
		if !ok {
			return false
		}
		d, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return false
		}
		dims = append(dims, d)
		return true
	})
	return &dims, ok
}

func (s *headerScanner) input(in *inferInputJSON) bool {
	return s.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "name":
			in.Name, ok = s.str()
		case "datatype":
			in.Datatype, ok = s.str()
		case "shape":
			in.Shape, ok = s.shape()
		case "parameters":
			in.Parameters, ok = s.params()
		case "data":
			in.Data, ok = s.rawValue()
		}
		return ok
	})
}

func (s *headerScanner) output(o *requestOutputJSON) bool {
	return s.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "name":
			o.Name, ok = s.str()
		case "parameters":
			o.Parameters, ok = s.params()
		}
		return ok
	})
}

// rawValue returns the bytes of the next value, as json.RawMessage holds
// them (a copy, without the white space around it). Data made of arrays
// of numbers and booleans, the common case, is checked as it is read;
// otherwise the value's end is found by bracket depth outside strings and
// the value must then be valid JSON.
func (s *headerScanner) rawValue() (json.RawMessage, bool) {
	s.space()
	start := s.i
	if s.plain(0) {
		return append(json.RawMessage(nil), s.b[start:s.i]...), true
	}
	s.i = start
	b := s.b
	depth := 0
	for s.i < len(b) {
		c := b[s.i]
		switch c {
		case '"':
			s.i++
			for s.i < len(b) && b[s.i] != '"' {
				if b[s.i] == '\\' {
					s.i++
				}
				s.i++
			}
			if s.i >= len(b) {
				return nil, false
			}
		case '[', '{':
			depth++
		case ']', '}':
			if depth == 0 {
				return s.valid(start)
			}
			depth--
		case ',':
			if depth == 0 {
				return s.valid(start)
			}
		}
		s.i++
		if depth == 0 && (c == ']' || c == '}' || c == '"') {
			return s.valid(start)
		}
	}
	return s.valid(start)
}

func (s *headerScanner) valid(start int) (json.RawMessage, bool) {
	end := s.i
	for end > start {
		switch s.b[end-1] {
		case ' ', '\t', '\n', '\r':
			end--
			continue
		}
		break
	}
	v := s.b[start:end]
	if len(v) == 0 || !json.Valid(v) {
		return nil, false
	}
	return append(json.RawMessage(nil), v...), true
}

// maxPlainDepth bounds the nesting plain follows (encoding/json's own
// limit is far above any tensor's rank).
const maxPlainDepth = 64

// plain reads a number, a boolean or an array of such values (nested),
// checking the JSON grammar as it goes.
func (s *headerScanner) plain(depth int) bool {
	s.space()
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '[':
		if depth >= maxPlainDepth {
			return false
		}
		s.i++
		if s.next(']') {
			return true
		}
		for {
			if !s.plain(depth + 1) {
				return false
			}
			if s.next(',') {
				continue
			}
			return s.next(']')
		}
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == '-' || (c >= '0' && c <= '9'):
		_, ok := s.number()
		return ok
	}
	return false
}
