package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"
)

// Write writes docs as a multi-document YAML stream, each document's
// comment lines above it.
func Write(w io.Writer, docs []Document) error {
	var buf bytes.Buffer
	for i, d := range docs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		for _, c := range d.Comment {
			buf.WriteString(strings.TrimRight("# "+c, " ") + "\n")
		}
		y, err := marshal(d.Object)
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		buf.Write(y)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// marshal renders an object as YAML without the empty status the API types
// carry.
func marshal(obj any) ([]byte, error) {
	j, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("cannot encode %T: %w", obj, err)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("cannot encode %T: %w", obj, err)
	}
	if empty(m["status"]) {
		delete(m, "status")
	}
	if j, err = json.Marshal(m); err != nil {
		return nil, fmt.Errorf("cannot encode %T: %w", obj, err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return nil, fmt.Errorf("cannot encode %T: %w", obj, err)
	}
	return y, nil
}

// empty reports whether v is a map holding nothing but empty maps, as the
// status of an object that was never created is.
func empty(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	for _, e := range m {
		if !empty(e) {
			return false
		}
	}
	return true
}
