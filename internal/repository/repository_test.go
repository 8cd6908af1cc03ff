package repository

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
)

// writeFiles creates files (path → content) under root; a path ending in
// "/" is an empty directory.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for path, content := range files {
		full := filepath.Join(root, filepath.FromSlash(path))
		if path[len(path)-1] == '/' {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestScan(t *testing.T) {
	t.Parallel()
	repo := t.TempDir()
	writeFiles(t, repo, map[string]string{
		"b/config.pbtxt":                  "",
		"a/config.pbtxt":                  "",
		"a/1/model.py":                    "",
		"no_config/1/model.py":            "",
		"no_model_py/1/other.py":          "",
		"first_version_empty/10/model.py": "",
		"first_version_empty/9/":          "",
		"empty_dir/":                      "",
		".hidden/config.pbtxt":            "",
		"file_not_dir":                    "",
		"config_is_dir/config.pbtxt/":     "",
		"Upper-case.v2/config.pbtxt":      "",
	})
	outside := t.TempDir()
	writeFiles(t, outside, map[string]string{"linked/config.pbtxt": ""})
	if err := os.Symlink(filepath.Join(outside, "linked"), filepath.Join(repo, "c_link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "nowhere"), filepath.Join(repo, "dangling")); err != nil {
		t.Fatal(err)
	}

	got, err := Scan(repo)
	if err != nil {
		t.Fatal(err)
	}
	// no_config auto-completes from 1/model.py; first_version_empty's first
	// version in lexicographic order is 10 (Triton's order), which has it.
	want := []string{"Upper-case.v2", "a", "b", "c_link", "first_version_empty", "no_config"}
	if !slices.Equal(got, want) {
		t.Errorf("Scan = %q, want %q", got, want)
	}
	for _, name := range want {
		if !IsModel(repo, name) {
			t.Errorf("IsModel(%q) = false", name)
		}
	}
	if IsModel(repo, "empty_dir") || IsModel(repo, "../x") {
		t.Error("IsModel is true for a folder that is not a model")
	}

	sv, err := Survey(repo)
	if err != nil {
		t.Fatal(err)
	}
	var skips []Skipped
	for _, s := range sv.Skipped {
		if !s.Hidden {
			skips = append(skips, s)
		}
	}
	reasons := map[string]string{}
	for _, s := range skips {
		reasons[s.Name] = s.Reason
	}
	for name, want := range map[string]string{
		"empty_dir":     "no config.pbtxt and no version directory",
		"no_model_py":   "the first version directory 1/ has no model.py",
		"config_is_dir": "its config.pbtxt is not a regular file",
		"dangling":      "cannot be read: ",
	} {
		if !strings.Contains(reasons[name], want) {
			t.Errorf("Skipped reason of %s = %q, want it to contain %q", name, reasons[name], want)
		}
	}
	if len(skips) != 4 {
		t.Errorf("Survey skipped %+v, want exactly the four entries above besides hidden ones (files are not listed)", skips)
	}

	empty, err := Scan(t.TempDir())
	if err != nil || len(empty) != 0 {
		t.Errorf("Scan(empty) = %q, %v, want nothing", empty, err)
	}
	if _, err := Scan(filepath.Join(repo, "absent")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Scan(absent) error = %v, want fs.ErrNotExist", err)
	}
}

func TestValidName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ok   bool
	}{
		{"add_sub", true},
		{"model-1.v2", true},
		{"モデル", true},
		{"a b", true},
		{"a..b", true}, // not a path element of its own
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"../etc", false},
		{"../../etc/passwd", false},
		{"a/../../b", false},
		{"a/b", false},
		{"/abs", false},
		{`..\windows`, false},
		{`a\b`, false},
		{"nul\x00byte", false},
		{"new\nline", false},
		{"del\x7f", false},
	}
	for _, tt := range tests {
		err := ValidName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			continue
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrInvalidName) || apierr.CodeOf(err) != apierr.InvalidArgument {
			t.Errorf("ValidName(%q) = %#v, want ErrInvalidName classified InvalidArgument", tt.name, err)
		}
	}
	// The message names the model, quoted so control characters show.
	if err := ValidName("a/b"); err.Error() != `invalid model name "a/b": must not contain a path separator` {
		t.Errorf("ValidName(a/b) = %q", err)
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	base := map[string]string{
		"m/config.pbtxt":    `backend: "python"`,
		"m/1/model.py":      "print(1)",
		"m/1/weights/w.bin": "0123",
	}
	// A fixed time for every file, so the only differences are the changes.
	stamp := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	setup := func(t *testing.T) string {
		t.Helper()
		repo := t.TempDir()
		writeFiles(t, repo, base)
		touchAll(t, repo, stamp)
		return repo
	}
	tests := []struct {
		name    string
		change  func(t *testing.T, dir string) // dir is the model directory
		changed bool
	}{
		{"nothing", func(*testing.T, string) {}, false},
		{"config edited, same size and time", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "config.pbtxt"), `backend: "pythoN"`, stamp)
		}, true},
		{"health.yaml added", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "health.yaml"), "period_seconds: 1", stamp)
		}, true},
		{"model.py touched", func(t *testing.T, dir string) {
			touch(t, filepath.Join(dir, "1", "model.py"), stamp.Add(time.Second))
		}, true},
		{"model.py grew", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "1", "model.py"), "print(12)", stamp)
		}, true},
		{"nested file changed", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "1", "weights", "w.bin"), "01234", stamp)
		}, true},
		{"version added", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "2", "model.py"), "print(1)", stamp)
		}, true},
		{"empty version dir added", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "3"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"version removed", func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, "1")); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"mode changed", func(t *testing.T, dir string) {
			if err := os.Chmod(filepath.Join(dir, "1", "model.py"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"file renamed", func(t *testing.T, dir string) {
			if err := os.Rename(filepath.Join(dir, "1", "model.py"), filepath.Join(dir, "1", "model2.py")); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"__pycache__ written by Python", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "1", "__pycache__", "model.cpython-312.pyc"), "bytecode", stamp)
		}, false},
		{"editor swap file", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "1", ".model.py.swp"), "swap", stamp)
		}, false},
		{"directory mtime only", func(t *testing.T, dir string) {
			touch(t, filepath.Join(dir, "1"), stamp.Add(time.Hour))
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			repo := setup(t)
			before, err := Fingerprint(repo, "m")
			if err != nil {
				t.Fatal(err)
			}
			tt.change(t, filepath.Join(repo, "m"))
			after, err := Fingerprint(repo, "m")
			if err != nil {
				t.Fatal(err)
			}
			if (before != after) != tt.changed {
				t.Errorf("fingerprint changed = %v, want %v", before != after, tt.changed)
			}
		})
	}
}

func TestFingerprintStableAcrossCopies(t *testing.T) {
	t.Parallel()
	files := map[string]string{"m/config.pbtxt": "x", "m/1/model.py": "y"}
	stamp := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var prints []string
	for range 2 {
		repo := t.TempDir()
		writeFiles(t, repo, files)
		touchAll(t, repo, stamp)
		fp, err := Fingerprint(repo, "m")
		if err != nil {
			t.Fatal(err)
		}
		prints = append(prints, fp)
	}
	if prints[0] != prints[1] {
		t.Errorf("identical model directories have fingerprints %q and %q", prints[0], prints[1])
	}
}

func TestFingerprintSymlinks(t *testing.T) {
	t.Parallel()
	repo := t.TempDir()
	writeFiles(t, repo, map[string]string{"m/config.pbtxt": "x"})
	target := t.TempDir()
	writeFiles(t, target, map[string]string{"v1/model.py": "a"})
	stamp := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	touchAll(t, target, stamp)
	if err := os.Symlink(filepath.Join(target, "v1"), filepath.Join(repo, "m", "1")); err != nil {
		t.Fatal(err)
	}
	before, err := Fingerprint(repo, "m")
	if err != nil {
		t.Fatal(err)
	}
	// A change behind a symbolic link is seen.
	write(t, filepath.Join(target, "v1", "model.py"), "ab", stamp)
	after, err := Fingerprint(repo, "m")
	if err != nil {
		t.Fatal(err)
	}
	if before == after {
		t.Error("a change behind a linked version directory left the fingerprint unchanged")
	}

	// A loop ends with an error instead of running forever.
	if err := os.Symlink(filepath.Join(repo, "m"), filepath.Join(repo, "m", "loop")); err != nil {
		t.Fatal(err)
	}
	if _, err := Fingerprint(repo, "m"); err == nil {
		t.Error("Fingerprint of a directory with a symbolic link loop succeeded")
	}
}

func TestFingerprintErrors(t *testing.T) {
	t.Parallel()
	repo := t.TempDir()
	writeFiles(t, repo, map[string]string{"m/config.pbtxt": "x", "f": ""})
	tests := []struct {
		name string
		is   error
	}{
		{"absent", fs.ErrNotExist},
		{"..", ErrInvalidName},
		{"../m", ErrInvalidName},
		{"m/../../etc", ErrInvalidName},
		{"", ErrInvalidName},
		{"f", nil}, // not a directory
	}
	for _, tt := range tests {
		_, err := Fingerprint(repo, tt.name)
		if err == nil {
			t.Errorf("Fingerprint(%q) succeeded, want an error", tt.name)
			continue
		}
		if tt.is != nil && !errors.Is(err, tt.is) {
			t.Errorf("Fingerprint(%q) = %v, want %v", tt.name, err, tt.is)
		}
	}
}

func write(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	touch(t, path, mtime)
}

func touch(t *testing.T, path string, mtime time.Time) {
	t.Helper()
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func touchAll(t *testing.T, root string, mtime time.Time) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(path, mtime, mtime)
	})
	if err != nil {
		t.Fatal(err)
	}
}
