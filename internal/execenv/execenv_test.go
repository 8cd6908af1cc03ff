package execenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type entry struct {
	name, body, link string
	typ              byte
}

func writeTar(t *testing.T, path string, entries []entry) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o755, Linkname: e.link, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := errors.Join(tw.Close(), gz.Close()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestUntarRefusesEscapes(t *testing.T) {
	for name, entries := range map[string][]entry{
		"dotdot":          {{name: "../evil", body: "x", typ: tar.TypeReg}},
		"through symlink": {{name: "out", link: "/tmp", typ: tar.TypeSymlink}, {name: "out/evil", body: "x", typ: tar.TypeReg}},
		"hard link":       {{name: "h", link: "../../etc/passwd", typ: tar.TypeLink}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "env.tar.gz")
			writeTar(t, file, entries)
			dst := filepath.Join(dir, "dst")
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			err := untar(file, dst)
			if err == nil || !strings.Contains(err.Error(), "leaves the archive's directory") {
				t.Fatalf("untar = %v, want a refusal", err)
			}
		})
	}
}

func TestUnpackOncePerContent(t *testing.T) {
	dir := t.TempDir()
	entries := []entry{
		{name: "bin/", typ: tar.TypeDir},
		{name: "bin/activate", body: "# activate", typ: tar.TypeReg},
		{name: "bin/python3", link: "python", typ: tar.TypeSymlink},
		{name: "lib/x.py", body: "x = 1", typ: tar.TypeReg},
	}
	a, b := filepath.Join(dir, "a.tar.gz"), filepath.Join(dir, "b.tar.gz")
	writeTar(t, a, entries)
	writeTar(t, b, entries)
	c := NewCache(filepath.Join(dir, "cache"), nil)
	ra, err := c.unpack(a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := c.unpack(b)
	if err != nil || ra != rb {
		t.Fatalf("unpack(b) = %s, %v; want the same directory as a (%s): same content", rb, err, ra)
	}
	if got, err := os.ReadFile(filepath.Join(ra, "lib", "x.py")); err != nil || string(got) != "x = 1" {
		t.Fatalf("unpacked file: %q, %v", got, err)
	}
	// A new cache over the same directory finds the finished extraction.
	if r, err := NewCache(filepath.Join(dir, "cache"), nil).unpack(a); err != nil || r != ra {
		t.Fatalf("second cache: %s, %v", r, err)
	}
}

func TestResolveErrors(t *testing.T) {
	model := t.TempDir()
	c := NewCache(t.TempDir(), nil)
	ctx := context.Background()
	if err := os.MkdirAll(filepath.Join(model, "noactivate", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(model, "nopython", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(model, "nopython", "bin", "activate"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for value, want := range map[string]string{
		"$$TRITON_MODEL_DIRECTORY/absent":     "Failed to get the canonical path for " + filepath.Join(model, "absent"),
		"$$TRITON_MODEL_DIRECTORY/noactivate": "/bin/activate does not exist. The Python environment should contain an 'activate' script.",
		"nopython":                            "the environment has no interpreter",
		"":                                    "is empty",
	} {
		_, err := c.Resolve(ctx, value, model)
		var e *Error
		if !errors.As(err, &e) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `EXECUTION_ENV_PATH "`+value+`"`) {
			t.Errorf("Resolve(%q) = %v, want an *Error naming the value and containing %q", value, err, want)
		}
	}
}

func TestEnviron(t *testing.T) {
	e := &Env{Vars: []string{"VIRTUAL_ENV=/env", "PATH=/env/bin:/usr/bin"}, Unset: []string{"PYTHONHOME"}}
	got := e.Environ([]string{"PYTHONHOME=/x", "PATH=/usr/bin", "HOME=/root"})
	want := []string{"PATH=/usr/bin", "HOME=/root", "VIRTUAL_ENV=/env", "PATH=/env/bin:/usr/bin"}
	if !slices.Equal(got, want) {
		t.Fatalf("Environ = %q, want %q (PYTHONHOME gone, the env's PATH last so it wins)", got, want)
	}
}
