package repository

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSurveySaysWhyEachDirectoryIsSkipped(t *testing.T) {
	repo := t.TempDir()
	mk := func(path string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(repo, path), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(repo, path), []byte("name: \"x\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("good")
	write("good/config.pbtxt")
	mk("noconfig/1")
	mk("dirconfig/config.pbtxt")
	mk(".git")
	write("README.md")
	if err := os.Symlink(filepath.Join(repo, "missing"), filepath.Join(repo, "dangling")); err != nil {
		t.Fatal(err)
	}
	sv, err := Survey(repo)
	if err != nil {
		t.Fatal(err)
	}
	if len(sv.Models) != 1 || sv.Models[0] != "good" || sv.IsModel {
		t.Fatalf("models %v, is model %v", sv.Models, sv.IsModel)
	}
	want := map[string]string{
		".git":      `invalid model name ".git": must not start with a dot`,
		"dangling":  "cannot be read: stat " + filepath.Join(repo, "dangling") + ": no such file or directory",
		"dirconfig": "its config.pbtxt is not a regular file",
		"noconfig":  "no config.pbtxt, and the first version directory 1/ has no model.py to auto-complete a configuration from",
	}
	if len(sv.Skipped) != len(want) {
		t.Fatalf("skipped %+v, want %v", sv.Skipped, want)
	}
	for _, s := range sv.Skipped {
		if want[s.Name] != s.Reason || s.Hidden != (s.Name == ".git") {
			t.Errorf("skipped %+v, want reason %q", s, want[s.Name])
		}
	}

	model, err := Survey(filepath.Join(repo, "good"))
	if err != nil || !model.IsModel || len(model.Models) != 0 {
		t.Errorf("a model's folder: %+v, %v; want IsModel and no models", model, err)
	}
}
