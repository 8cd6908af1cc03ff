package integration

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func addSubBody(a, b float32) string {
	in0, in1 := make([]string, 16), make([]string, 16)
	for i := range in0 {
		in0[i] = fmt.Sprint(a)
		in1[i] = fmt.Sprint(b)
	}
	return fmt.Sprintf(`{"id":"r1","inputs":[
		{"name":"INPUT0","datatype":"FP32","shape":[1,16],"data":[%s]},
		{"name":"INPUT1","datatype":"FP32","shape":[1,16],"data":[%s]}]}`,
		strings.Join(in0, ","), strings.Join(in1, ","))
}

func echoBody(x float32) string {
	return fmt.Sprintf(`{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1],"data":[%v]}]}`, x)
}

func TestServesAddSubOverJSONAndBinary(t *testing.T) {
	s := start(t, copyModels(t, "add_sub"))
	s.waitReady(30 * time.Second)

	r := s.post("/v2/models/add_sub/infer", addSubBody(3, 1))
	if r.Status != 200 {
		t.Fatalf("infer: %d %s", r.Status, r.Body)
	}
	body := r.json(t)
	if body["id"] != "r1" || body["model_name"] != "add_sub" || body["model_version"] != "1" {
		t.Errorf("response header fields: %s", r.Body)
	}
	outs := body["outputs"].([]any)
	got := map[string]float64{}
	for _, o := range outs {
		om := o.(map[string]any)
		got[om["name"].(string)] = om["data"].([]any)[0].(float64)
	}
	if got["OUTPUT0"] != 4 || got["OUTPUT1"] != 2 {
		t.Errorf("outputs %v, want OUTPUT0=4 OUTPUT1=2", got)
	}

	// The binary tensor data extension, both ways.
	header := `{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"parameters":{"binary_data_size":64}},` +
		`{"name":"INPUT1","datatype":"FP32","shape":[1,16],"parameters":{"binary_data_size":64}}],` +
		`"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}}]}`
	var buf bytes.Buffer
	buf.WriteString(header)
	for i := 0; i < 16; i++ {
		binary.Write(&buf, binary.LittleEndian, float32(i))
	}
	for i := 0; i < 16; i++ {
		binary.Write(&buf, binary.LittleEndian, float32(10))
	}
	br := s.do("POST", "/v2/models/add_sub/infer", buf.Bytes(),
		"Content-Type", "application/octet-stream", "Inference-Header-Content-Length", fmt.Sprint(len(header)))
	if br.Status != 200 {
		t.Fatalf("binary infer: %d %s", br.Status, br.Body)
	}
	hl := br.Header.Get("Inference-Header-Content-Length")
	var n int
	fmt.Sscan(hl, &n)
	if n <= 0 || n > len(br.Body) {
		t.Fatalf("Inference-Header-Content-Length %q for a %d-byte body", hl, len(br.Body))
	}
	raw := br.Body[n:]
	if len(raw) != 64 {
		t.Fatalf("binary output is %d bytes, want 64", len(raw))
	}
	for i := 0; i < 16; i++ {
		v := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		if v != float32(i)+10 {
			t.Fatalf("OUTPUT0[%d] = %v, want %v", i, v, float32(i)+10)
		}
	}
}

func TestPortsOpenBeforeModelsLoad(t *testing.T) {
	s := start(t, copyModels(t, "slow_init"))
	if r := s.get("/v2/health/live"); r.Status != 200 {
		t.Fatalf("live while loading: %d %s", r.Status, r.Body)
	}
	r := s.get("/v2/health/ready")
	if r.Status != 503 || !strings.Contains(string(r.Body), "loading") {
		t.Fatalf("ready while loading: %d %s, want 503 naming the load", r.Status, r.Body)
	}
	s.waitReady(30 * time.Second)
}

func TestModelThatRaisesInInitializeIsUnavailableWithTheReason(t *testing.T) {
	s := start(t, copyModels(t, "init_raises", "echo"), "--strict-readiness=false")
	eventually(t, 30*time.Second, "echo ready", func() bool { return s.get("/v2/models/echo/ready").Status == 200 })
	eventually(t, 30*time.Second, "init_raises reported", func() bool {
		r := s.get("/v2/models/init_raises/ready")
		return r.Status == 503 && strings.Contains(string(r.Body), "cannot open weights file")
	})
	idx := s.post("/v2/repository/index", "")
	if !strings.Contains(string(idx.Body), `"UNAVAILABLE"`) || !strings.Contains(string(idx.Body), "ValueError") {
		t.Errorf("index does not show the failed load with its reason: %s", idx.Body)
	}
	if r := s.post("/v2/models/echo/infer", echoBody(1)); r.Status != 200 {
		t.Errorf("the healthy model stopped serving: %d %s", r.Status, r.Body)
	}
	if r := s.post("/v2/models/init_raises/infer", echoBody(1)); r.Status != 503 {
		t.Errorf("infer on the failed model: %d %s, want 503", r.Status, r.Body)
	}
}

func TestStrictReadinessFailsWhileAModelFailedToLoad(t *testing.T) {
	s := start(t, copyModels(t, "init_raises", "echo"))
	eventually(t, 30*time.Second, "echo ready", func() bool { return s.get("/v2/models/echo/ready").Status == 200 })
	eventually(t, 10*time.Second, "startup complete", func() bool { return s.get("/startupz").Status == 200 })
	r := s.get("/v2/health/ready")
	if r.Status != 503 || !strings.Contains(string(r.Body), "init_raises") {
		t.Fatalf("ready: %d %s, want 503 naming init_raises", r.Status, r.Body)
	}
}

func TestDeadStubIsSeenAtOnceAndRestarted(t *testing.T) {
	s := start(t, copyModels(t, "echo"))
	s.waitReady(30 * time.Second)
	pids := s.stubPIDs("echo")
	if len(pids) != 1 {
		t.Fatalf("stub pids %v, want one", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 2*time.Second, "model not ready after SIGKILL", func() bool {
		r := s.get("/v2/models/echo/ready")
		return r.Status == 503
	})
	t.Logf("SIGKILL seen by /v2/models/echo/ready after %s", took)
	eventually(t, 30*time.Second, "model ready again after the restart", func() bool {
		return s.get("/v2/models/echo/ready").Status == 200
	})
	if r := s.post("/v2/models/echo/infer", echoBody(7)); r.Status != 200 {
		t.Fatalf("infer after restart: %d %s", r.Status, r.Body)
	}
	h := string(s.get("/readyz?format=json").Body)
	if !strings.Contains(h, "SIGKILL") {
		t.Errorf("health JSON does not record the last exit: %s", h)
	}
}

func TestRequestExecutingOnAKilledStubGets503AndOthersAreServed(t *testing.T) {
	// Without sleepy's execute_timeout_seconds (1 s): the slow request must
	// be running when the kill comes, however long the steps before it
	// take on a loaded machine, not ended by the timeout first.
	repo := copyModels(t, "sleepy")
	if err := os.WriteFile(filepath.Join(repo, "sleepy", "health.yaml"), []byte("execute_timeout_seconds: 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := start(t, repo)
	s.waitReady(30 * time.Second)
	pids := s.stubPIDs("sleepy")
	if len(pids) != 2 {
		t.Fatalf("stub pids %v, want two", pids)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var slow response
	go func() {
		defer wg.Done()
		slow = s.post("/v2/models/sleepy/infer", echoBody(30))
	}()
	// The model writes its PID to EXECUTING while it sleeps.
	marker := filepath.Join(s.Repo, "sleepy", "EXECUTING")
	var busy int
	eventually(t, 10*time.Second, "slow request executing", func() bool {
		b, err := os.ReadFile(marker)
		if err != nil {
			return false
		}
		_, err = fmt.Sscan(string(b), &busy)
		return err == nil && busy > 0
	})
	if r := s.post("/v2/models/sleepy/infer", echoBody(0)); r.Status != 200 {
		t.Fatalf("the other instance does not serve: %d %s", r.Status, r.Body)
	}
	if err := syscall.Kill(busy, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if slow.Status != 503 || !strings.Contains(string(slow.Body), "died") {
		t.Fatalf("request on the killed stub: %d %s, want 503 saying the instance died", slow.Status, slow.Body)
	}
	eventually(t, 30*time.Second, "recovered", func() bool { return s.get("/v2/models/sleepy/ready").Status == 200 })
}

func TestBadInputGetsAClearErrorAndTheServerStaysUp(t *testing.T) {
	s := start(t, copyModels(t, "add_sub"), "--max-request-bytes", "4096")
	s.waitReady(30 * time.Second)
	cases := []struct {
		name, path, body string
		status           int
		mention          string
	}{
		{"malformed JSON", "/v2/models/add_sub/infer", `{"inputs": [`, 400, ""},
		{"unknown model", "/v2/models/nope/infer", addSubBody(1, 1), 404, "nope"},
		{"unknown version", "/v2/models/add_sub/versions/9/infer", addSubBody(1, 1), 404, "9"},
		{"unknown input", "/v2/models/add_sub/infer", strings.Replace(addSubBody(1, 1), "INPUT1", "INPUT9", 1), 400, "INPUT9"},
		{"wrong datatype", "/v2/models/add_sub/infer", strings.Replace(addSubBody(1, 1), `"FP32"`, `"INT32"`, 1), 400, "INPUT0"},
		{"wrong shape", "/v2/models/add_sub/infer", strings.Replace(addSubBody(1, 1), "[1,16]", "[1,15]", 1), 400, "INPUT0"},
		{"element count", "/v2/models/add_sub/infer",
			`{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"data":[1,2]},{"name":"INPUT1","datatype":"FP32","shape":[1,16],"data":[1,2]}]}`, 400, "INPUT0"},
		{"unknown output", "/v2/models/add_sub/infer",
			strings.Replace(addSubBody(1, 1), `"inputs"`, `"outputs":[{"name":"OUTPUT7"}],"inputs"`, 1), 400, "OUTPUT7"},
		{"oversized body", "/v2/models/add_sub/infer", `{"inputs":[],"pad":"` + strings.Repeat("x", 8192) + `"}`, 413, ""},
	}
	for _, c := range cases {
		r := s.post(c.path, c.body)
		if r.Status != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.name, r.Status, c.status, r.Body)
			continue
		}
		msg, _ := r.json(t)["error"].(string)
		if msg == "" || !strings.Contains(msg, c.mention) {
			t.Errorf("%s: error %q does not name %q", c.name, msg, c.mention)
		}
	}
	truncated := `{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,16],"parameters":{"binary_data_size":64}},{"name":"INPUT1","datatype":"FP32","shape":[1,16],"parameters":{"binary_data_size":64}}]}`
	r := s.do("POST", "/v2/models/add_sub/infer", append([]byte(truncated), make([]byte, 70)...),
		"Inference-Header-Content-Length", fmt.Sprint(len(truncated)))
	if r.Status != 400 {
		t.Errorf("truncated binary body: %d %s, want 400", r.Status, r.Body)
	}
	if r := s.get("/v2/health/ready"); r.Status != 200 {
		t.Fatalf("server not ready after bad input: %d %s", r.Status, r.Body)
	}
	if r := s.post("/v2/models/add_sub/infer", addSubBody(1, 1)); r.Status != 200 {
		t.Fatalf("good request after bad ones: %d %s", r.Status, r.Body)
	}
}

func TestModelThatRaisesInExecuteGets500WithItsMessage(t *testing.T) {
	s := start(t, copyModels(t, "faulty"))
	s.waitReady(30 * time.Second)
	r := s.post("/v2/models/faulty/infer", echoBody(-1))
	if r.Status != 500 || !strings.Contains(string(r.Body), "illegal memory access") {
		t.Fatalf("got %d %s, want 500 with the model's message", r.Status, r.Body)
	}
}

func TestExplicitModeLoadAndUnload(t *testing.T) {
	s := start(t, copyModels(t, "echo", "add_sub"), "--model-control-mode", "explicit", "--load-model", "echo")
	s.waitReady(30 * time.Second)
	if r := s.get("/v2/models/add_sub/ready"); r.Status == 200 {
		t.Fatalf("add_sub ready before it was loaded")
	}
	if r := s.post("/v2/repository/models/add_sub/load", ""); r.Status != 200 {
		t.Fatalf("load: %d %s", r.Status, r.Body)
	}
	if r := s.get("/v2/models/add_sub/ready"); r.Status != 200 {
		t.Fatalf("add_sub not ready after load returned: %d %s", r.Status, r.Body)
	}
	if r := s.post("/v2/repository/models/add_sub/unload", ""); r.Status != 200 {
		t.Fatalf("unload: %d %s", r.Status, r.Body)
	}
	if r := s.get("/v2/health/ready"); r.Status != 200 {
		t.Errorf("an explicitly unloaded model must not fail strict readiness: %d %s", r.Status, r.Body)
	}
	idx := string(s.post("/v2/repository/index", "").Body)
	if !strings.Contains(idx, "unloaded") {
		t.Errorf("index after unload: %s", idx)
	}
	if r := s.post("/v2/repository/models/..%2F..%2Fetc/load", ""); r.Status < 400 || r.Status == 500 {
		t.Errorf("path traversal load: %d %s", r.Status, r.Body)
	}
}

func TestInterpreterWithoutNumpyIsReportedAndServerStaysUp(t *testing.T) {
	venv := filepath.Join(t.TempDir(), "venv")
	if out, err := exec.Command(python, "-m", "venv", "--without-pip", venv).CombinedOutput(); err != nil {
		t.Skipf("cannot create a venv: %v %s", err, out)
	}
	s := start(t, copyModels(t, "echo"), "--python", filepath.Join(venv, "bin", "python"))
	if r := s.get("/v2/health/live"); r.Status != 200 {
		t.Fatalf("live: %d", r.Status)
	}
	eventually(t, 30*time.Second, "model reported unavailable", func() bool {
		r := s.get("/v2/models/echo/ready")
		return r.Status == 503 && strings.Contains(string(r.Body), "numpy")
	})
	if r := s.get("/v2/health/ready"); r.Status != 503 {
		t.Errorf("ready: %d, want 503", r.Status)
	}
}

func TestBrokenConfigNamesFileAndField(t *testing.T) {
	repo := copyModels(t, "echo")
	cfg := filepath.Join(repo, "echo", "config.pbtxt")
	b, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(b, []byte("\nsequence_batchin { }\n")...), 0o644)
	s := start(t, repo)
	eventually(t, 30*time.Second, "config error reported", func() bool {
		r := s.get("/v2/models/echo/ready")
		return r.Status == 503 && strings.Contains(string(r.Body), "config.pbtxt") && strings.Contains(string(r.Body), "sequence_batchin")
	})
}
