package modelconfig

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"

	"github.com/vigilhq/vigil/internal/health"
)

// FuzzParseConfig checks that ParseConfig never panics, that every error is
// an *Error naming the file, and that an accepted config survives ToJSON
// and a round trip through the text format.
func FuzzParseConfig(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*", "*", "config.pbtxt"))
	for _, path := range seeds {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		validConfig,
		validConfig + "max_batch_size: 4 dynamic_batching { preferred_batch_size: [ 2 ] }",
		validConfig + "version_policy { specific { versions: [ 1, 2 ] } }",
		validConfig + `parameters { key: "k" value { string_value: "v" } }`,
		"backend: \"python\"\ninput { dims: [ }\n",
		"input [ { name: \"\xff\" } ]",
		"dims: [ 9223372036854775807, 9223372036854775807 ]",
		"{{{{",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const file = "fuzz/config.pbtxt"
		cfg, err := ParseConfig(data, file)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || ce.File != file {
				t.Fatalf("error %q is not an *Error for %s", err, file)
			}
			return
		}
		if _, err := ToJSON(cfg); err != nil {
			t.Fatalf("ToJSON of an accepted config: %v", err)
		}
		text, err := prototext.Marshal(cfg)
		if err != nil {
			t.Fatalf("prototext.Marshal: %v", err)
		}
		if _, err := ParseConfig(text, file); err != nil {
			t.Fatalf("an accepted config, filled in, is rejected: %v\n%s", err, text)
		}
	})
}

// FuzzParsePolicy checks that ParsePolicy never panics and that what it
// accepts is valid.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"", "period_seconds: 2.5\n", "restart_backoff: {max_seconds: 60}\n",
		"error_patterns: [a, 5, ~]\n", "a: &x [*x]\n", "- 1\n", "---\n---\n",
		"period_seconds: .nan\n", "min_ready_instances: 1.5\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(data, "fuzz/health.yaml", health.DefaultPolicy())
		if err != nil {
			return
		}
		if err := ValidatePolicy(p, "fuzz"); err != nil {
			t.Fatalf("accepted an invalid policy: %v", err)
		}
	})
}
