package modelconfig

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/vigilhq/vigil/internal/inferencepb"
)

// ToJSON renders cfg as Triton's model configuration endpoint does: proto
// field names, every scalar and list field present (zero values included),
// enums as names, unset messages left out, and 64-bit integers (dims,
// max_queue_delay_microseconds, ...) as JSON numbers where protojson would
// write strings. tritonclient's get_model_config returns this object, so
// cfg["input"][0]["dims"] == [4] holds.
func ToJSON(cfg *inferencepb.ModelConfig) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot encode model config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("cannot re-read model config JSON: %w", err)
	}
	fixMessage(v, cfg.ProtoReflect().Descriptor())
	out, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cannot encode model config: %w", err)
	}
	return out, nil
}

// fixMessage walks the JSON object of a message of type md: it drops null
// members (unset messages, which Triton leaves out) and turns the string
// form of 64-bit integers back into numbers. It follows the descriptor, so
// only integer fields change: a parameter whose string value is "5" stays a
// string.
func fixMessage(obj map[string]any, md protoreflect.MessageDescriptor) {
	for key, val := range obj {
		if val == nil {
			delete(obj, key)
			continue
		}
		fd := md.Fields().ByName(protoreflect.Name(key))
		if fd == nil {
			continue
		}
		switch {
		case fd.IsMap():
			m, ok := val.(map[string]any)
			if !ok {
				continue
			}
			for k, mv := range m {
				m[k] = fixValue(mv, fd.MapValue())
			}
		case fd.IsList():
			l, ok := val.([]any)
			if !ok {
				continue
			}
			for i, lv := range l {
				l[i] = fixValue(lv, fd)
			}
		default:
			obj[key] = fixValue(val, fd)
		}
	}
}

// fixValue fixes one singular value (a list element or a map value
// included) of the field fd.
func fixValue(val any, fd protoreflect.FieldDescriptor) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if m, ok := val.(map[string]any); ok {
			fixMessage(m, fd.Message())
		}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if s, ok := val.(string); ok {
			return json.Number(s)
		}
	}
	return val
}
