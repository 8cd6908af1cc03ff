package server

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// resolvePython turns the --python flag into the interpreter's absolute path,
// once, by asking the interpreter itself (so that shims such as pyenv's are
// not paid for at every stub start), and checks that numpy imports.
func resolvePython(ctx context.Context, name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("python interpreter %q not found: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	const probe = "import sys; print(sys.executable)\n" +
		"try:\n import numpy\nexcept Exception as e:\n print('NUMPY-ERROR %s: %s' % (type(e).__name__, e))\n"
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "-c", probe)
	cmd.Stdout = &out
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("python interpreter %s does not run: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	exe := strings.TrimSpace(lines[0])
	if exe == "" || !filepath.IsAbs(exe) {
		exe, _ = filepath.Abs(path)
	}
	for _, l := range lines[1:] {
		if msg, ok := strings.CutPrefix(l, "NUMPY-ERROR "); ok {
			return exe, fmt.Errorf("python interpreter %s cannot import numpy (%s); install it with: %s -m pip install numpy", exe, msg, exe)
		}
	}
	return exe, nil
}
