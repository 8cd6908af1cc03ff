package modelconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServerPolicyLayers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "health.yaml")
	if err := os.WriteFile(file, []byte("execute_timeout_seconds: 9\nrestart_threshold_seconds: 40\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := ServerPolicy(file, []string{"execute_timeout_seconds=3", "restart_backoff={max_seconds: 60}"})
	if err != nil {
		t.Fatal(err)
	}
	if p.ExecuteTimeout != 3*time.Second || p.RestartThreshold != 40*time.Second || p.BackoffMax != time.Minute {
		t.Errorf("policy %+v: want flags over file over defaults", p)
	}
	for _, bad := range []string{"execute_timeout_seconds", "=3", "no_such_key=1", "failure_threshold=0"} {
		if _, err := ServerPolicy("", []string{bad}); err == nil {
			t.Errorf("--health-default %q accepted", bad)
		} else if !strings.Contains(err.Error(), "--health-default") {
			t.Errorf("--health-default %q: error %q does not name the flag", bad, err)
		}
	}
}
