package modelconfig

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/vigilhq/vigil/internal/ensemble"
	"github.com/vigilhq/vigil/internal/health"
	"github.com/vigilhq/vigil/internal/inferencepb"
	"github.com/vigilhq/vigil/internal/repository"
)

// Model is one model of the repository as it is on disk now: its validated
// configuration, its effective health policy and the versions to serve.
type Model struct {
	Name string
	// Dir is the absolute model directory.
	Dir string
	// Config is validated, with defaults filled in and Name set.
	Config *inferencepb.ModelConfig
	// Policy is the server defaults overlaid with <dir>/health.yaml.
	Policy health.Policy
	// Versions are the versions selected by the version policy that are
	// present on disk with their model file (for an ensemble, the version
	// directory), ascending.
	Versions []int64
	// InitialStates holds the initial_state data_file contents of the
	// sequence_batching states that have one, by state input_name.
	InitialStates map[string][]byte
	// Warmup are the model_warmup samples, built (files read) at load.
	Warmup []Warmup
	// Ensemble is the checked plan of an ensemble; nil for a Python model.
	Ensemble *ensemble.Plan
}

// Load reads the model name of the repository repoDir: its config.pbtxt,
// its optional health.yaml overlaid on defaults, and its version
// directories. Errors name the file and field at fault. It runs no Python:
// a model without config.pbtxt is an error (LoadWith can auto-complete).
func Load(repoDir, name string, defaults health.Policy) (*Model, error) {
	return LoadWith(context.Background(), repoDir, name, defaults, Options{})
}

// LoadWith is Load with a configuration completed as opts say:
// auto-complete, and the overrides of a repository load request.
func LoadWith(ctx context.Context, repoDir, name string, defaults health.Policy, opts Options) (*Model, error) {
	if err := repository.ValidName(name); err != nil {
		return nil, err
	}
	rel := filepath.Join(repoDir, name)
	if opts.Override != nil && opts.Override.Dir != "" {
		rel = opts.Override.Dir
	}
	dir, err := filepath.Abs(rel)
	if err != nil {
		return nil, fmt.Errorf("model %q: %w", name, err)
	}
	var (
		cfg     *inferencepb.ModelConfig
		cfgFile string
		missing bool
	)
	if opts.Override != nil && opts.Override.Config != nil {
		cfg, cfgFile, err = opts.Override.parse()
	} else {
		cfg, cfgFile, missing, err = readConfig(rel, opts)
	}
	if err != nil {
		return nil, err
	}
	if cfg.GetName() != "" && cfg.GetName() != name {
		return nil, fieldError(cfgFile, "name", "%q does not match the model directory %q", cfg.GetName(), name)
	}
	cfg, source, err := autoComplete(ctx, cfg, name, dir, cfgFile, missing, opts)
	if err != nil {
		return nil, err
	}
	partial := opts.Partial && opts.AutoComplete == nil
	if err := validateConfig(cfg, source, partial); err != nil {
		return nil, err
	}
	switch cfg.GetName() {
	case "":
		cfg.Name = name
	case name:
	default:
		return nil, fieldError(source, "name", "%q does not match the model directory %q", cfg.GetName(), name)
	}
	fillGroupNames(cfg)

	policy := defaults
	policyFile := filepath.Join(rel, HealthFileName)
	data, err := os.ReadFile(policyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		policyFile = "server health policy"
		if err := ValidatePolicy(policy, policyFile); err != nil {
			return nil, fmt.Errorf("model %q: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("model %q: cannot read health policy: %w", name, err)
	default:
		if policy, err = ParsePolicy(data, policyFile, defaults); err != nil {
			return nil, err
		}
	}

	m := &Model{Name: name, Dir: dir, Config: cfg, Policy: policy}
	if m.IsEnsemble() {
		if err := loadEnsemble(m, source); err != nil {
			return nil, err
		}
	} else if n := len(m.InstanceNames()); policy.MinReadyInstances > n {
		return nil, fieldError(policyFile, "min_ready_instances", "%d is more than the %d instance(s) of model %q", policy.MinReadyInstances, n, name)
	}
	if m.Versions, err = m.selectVersions(source); err != nil {
		return nil, err
	}
	if m.InitialStates, err = loadInitialStates(m, source); err != nil {
		return nil, err
	}
	if !partial {
		if m.Warmup, err = m.WarmupSamples(); err != nil {
			return nil, &Error{File: source, Field: "model_warmup", Msg: "model_warmup: " + err.Error(), Err: err}
		}
	}
	return m, nil
}

// ModelFile is the path of the model file of a version:
// <dir>/<version>/<default_model_filename, or model.py>.
func (m *Model) ModelFile(version int64) string {
	file := m.Config.GetDefaultModelFilename()
	if file == "" {
		file = DefaultModelFilename
	}
	return filepath.Join(m.Dir, strconv.FormatInt(version, 10), file)
}

// InstanceNames lists the model's instances: "<model>_<i>", i counting from
// 0 across all instance groups in order. Instance i belongs to the group
// whose counts, summed in order, first exceed i.
func (m *Model) InstanceNames() []string {
	var names []string
	for _, g := range m.Config.GetInstanceGroup() {
		for range max(g.GetCount(), 0) {
			names = append(names, m.Name+"_"+strconv.Itoa(len(names)))
		}
	}
	return names
}

// selectVersions lists the versions on disk and applies the version policy.
func (m *Model) selectVersions(cfgFile string) ([]int64, error) {
	present, err := m.presentVersions()
	if err != nil {
		return nil, err
	}
	vp := m.Config.GetVersionPolicy()
	var selected []int64
	switch {
	case vp.GetSpecific() != nil:
		for _, v := range vp.GetSpecific().GetVersions() {
			if !slices.Contains(present, v) {
				return nil, fieldError(cfgFile, "version_policy.specific.versions",
					"version %d is not present: %s not found", v, m.ModelFile(v))
			}
			selected = append(selected, v)
		}
		slices.Sort(selected)
	case vp.GetAll() != nil:
		selected = present
	default:
		n := int(vp.GetLatest().GetNumVersions())
		if n < 1 {
			n = 1
		}
		selected = present[max(len(present)-n, 0):]
	}
	if len(selected) == 0 {
		field := ""
		if m.Config.GetDefaultModelFilename() != DefaultModelFilename {
			field = "default_model_filename"
		}
		return nil, &Error{File: filepath.Join(m.Dir, ConfigFileName), Field: field,
			Msg: fmt.Sprintf("model %q: no version to serve in %s: want a directory <version>/%s with a positive integer version (default_model_filename %q)",
				m.Name, m.Dir, m.Config.GetDefaultModelFilename(), m.Config.GetDefaultModelFilename())}
	}
	return selected, nil
}

// presentVersions lists the version directories holding the model file,
// ascending.
func (m *Model) presentVersions() ([]int64, error) {
	entries, err := os.ReadDir(m.Dir)
	if err != nil {
		return nil, fmt.Errorf("model %q: cannot list versions: %w", m.Name, err)
	}
	var versions []int64
	for _, e := range entries {
		v, ok := parseVersion(e.Name())
		if !ok {
			continue
		}
		// Stat follows symbolic links, so a linked version directory or
		// model file counts.
		if m.IsEnsemble() {
			if fi, err := os.Stat(filepath.Join(m.Dir, e.Name())); err != nil || !fi.IsDir() {
				continue
			}
		} else if fi, err := os.Stat(m.ModelFile(v)); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		versions = append(versions, v)
	}
	slices.Sort(versions)
	return versions, nil
}

// parseVersion accepts positive decimal integers in canonical form only, so
// that "1" and "01" cannot both name version 1.
func parseVersion(s string) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 1 || strconv.FormatInt(v, 10) != s {
		return 0, false
	}
	return v, true
}
