package instance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"syscall"
	"time"

	"github.com/vigilhq/vigil/internal/ipc"
)

// AutoCompleteTimeout bounds one auto-complete process: importing model.py
// and running auto_complete_config.
const AutoCompleteTimeout = 2 * time.Minute

// AutoCompleteArgs are the interpreter arguments of an auto-complete
// process (python/vigil_stub/autocomplete.py).
var AutoCompleteArgs = []string{"-u", "-m", "vigil_stub", "--auto-complete"}

// AutoComplete runs TritonPythonModel.auto_complete_config of modelFile in
// a short-lived process of its own, as Triton does, on config (the model
// configuration as JSON) and returns the configuration it produced.
// called is false when the class has no auto_complete_config (config comes
// back unchanged). A failure the model caused is an error wrapping a
// *ipc.ModelError that reads "auto_complete_config raised ValueError: ...".
// The process's output goes to log.
func AutoComplete(ctx context.Context, rt Runtime, log *slog.Logger, modelFile, modelDir string, config []byte) (out []byte, called bool, err error) {
	in, err := json.Marshal(map[string]any{"model_file": modelFile, "model_dir": modelDir, "config": json.RawMessage(config)})
	if err != nil {
		return nil, false, fmt.Errorf("auto-complete: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, AutoCompleteTimeout)
	defer cancel()
	var stdout bytes.Buffer
	stderr := &outputLog{log: log}
	cmd := exec.CommandContext(ctx, rt.Python, AutoCompleteArgs...)
	cmd.Env = rt.environ()
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	runErr := cmd.Run()
	if ctx.Err() != nil {
		return nil, false, fmt.Errorf("auto-complete of %s did not finish within %v", modelFile, AutoCompleteTimeout)
	}
	var reply struct {
		Config json.RawMessage `json:"config"`
		Called bool            `json:"called"`
		Error  *struct {
			Op        string `json:"op"`
			Type      string `json:"type"`
			Message   string `json:"message"`
			Traceback string `json:"traceback"`
		} `json:"error"`
	}
	if jerr := json.Unmarshal(stdout.Bytes(), &reply); jerr != nil {
		if runErr == nil {
			runErr = jerr
		}
		return nil, false, fmt.Errorf("auto-complete of %s failed: %w: %s", modelFile, runErr, stderr.Tail(500))
	}
	if e := reply.Error; e != nil {
		me := &ipc.ModelError{Op: e.Op, Type: e.Type, Message: e.Message, Traceback: e.Traceback, Code: "INTERNAL"}
		if e.Traceback != "" {
			log.Error("auto-complete raised", "op", e.Op, "traceback", e.Traceback)
		}
		if me.Type != "" {
			return nil, false, fmt.Errorf("%s raised %w", me.Op, me)
		}
		return nil, false, fmt.Errorf("%s: %w", me.Op, me)
	}
	return reply.Config, reply.Called, nil
}
