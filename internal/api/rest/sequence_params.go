package rest

import (
	"errors"
	"fmt"

	"github.com/vigilhq/vigil/internal/inference"
)

// takeSequence moves the reserved sequence parameters out of params into a
// Sequence, with Triton's HTTP rules: sequence_id is an unsigned integer or
// a string, sequence_start and sequence_end are booleans. Errors use
// Triton's texts.
func takeSequence(params map[string]any) (inference.Sequence, error) {
	var seq inference.Sequence
	if v, ok := params[inference.ParamSequenceID]; ok {
		delete(params, inference.ParamSequenceID)
		switch id := v.(type) {
		case int64:
			if id < 0 {
				return seq, errors.New("Unable to parse 'sequence_id'")
			}
			seq.ID = inference.NumericID(uint64(id))
		case uint64:
			seq.ID = inference.NumericID(id)
		case string:
			if len(id) > inference.MaxCorrelationIDLength {
				return seq, inference.ErrCorrelationIDTooLong
			}
			seq.ID = inference.StringID(id)
		default:
			return seq, errors.New("Unable to parse 'sequence_id'")
		}
	}
	for _, f := range []struct {
		key string
		dst *bool
	}{{inference.ParamSequenceStart, &seq.Start}, {inference.ParamSequenceEnd, &seq.End}} {
		v, ok := params[f.key]
		if !ok {
			continue
		}
		delete(params, f.key)
		b, ok := v.(bool)
		if !ok {
			return seq, fmt.Errorf("Unable to parse '%s'", f.key)
		}
		*f.dst = b
	}
	return seq, nil
}
