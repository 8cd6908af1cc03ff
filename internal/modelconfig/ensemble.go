package modelconfig

import (
	"github.com/vigilhq/vigil/internal/ensemble"
	"github.com/vigilhq/vigil/internal/execenv"
	"github.com/vigilhq/vigil/internal/inferencepb"
)

// EnsemblePlatform is the platform of an ensemble: a model with no code of
// its own whose ensemble_scheduling steps call other models
// (internal/ensemble).
const EnsemblePlatform = "ensemble"

// IsEnsemble reports whether the model is an ensemble.
func (m *Model) IsEnsemble() bool { return m.Config.GetPlatform() == EnsemblePlatform }

// validateEnsemble checks the fields of an ensemble's config.pbtxt that do
// not need its steps' configurations (ensemble.FromConfig checks the steps
// themselves).
func validateEnsemble(cfg *inferencepb.ModelConfig, file string) error {
	name := cfg.GetName()
	switch {
	case cfg.GetBackend() != "":
		return fieldError(file, "backend", "must be empty for an ensemble (platform %q), got %q", EnsemblePlatform, cfg.GetBackend())
	case cfg.GetEnsembleScheduling() == nil:
		return fieldError(file, "ensemble_scheduling", "ensemble scheduling must be set for ensemble %s whose platform is ensemble", name)
	case len(cfg.GetInstanceGroup()) > 0:
		return fieldError(file, "instance_group", "instance group should not be specified for ensemble '%s'", name)
	case cfg.GetDynamicBatching() != nil:
		return fieldError(file, "dynamic_batching", "dynamic batching cannot be set for ensemble '%s': its steps batch on their own queues", name)
	case cfg.GetMaxBatchSize() < 0:
		return fieldError(file, "max_batch_size", "must be ≥ 0, got %d", cfg.GetMaxBatchSize())
	case cfg.GetModelTransactionPolicy().GetDecoupled():
		return fieldError(file, "model_transaction_policy.decoupled", "decoupled ensembles are not supported")
	case cfg.GetDefaultModelFilename() != "":
		return fieldError(file, "default_model_filename", "an ensemble has no model file")
	case len(cfg.GetModelWarmup()) > 0:
		return fieldError(file, "model_warmup", "an ensemble has no instances to warm up: give its step models the samples")
	case cfg.GetParameters()[execenv.Param] != nil:
		return fieldError(file, "parameters."+execenv.Param, "an ensemble runs no Python stub: set it on the step models")
	case cfg.GetEnsembleScheduling().GetMaxInflightRequests() != 0:
		return fieldError(file, "ensemble_scheduling.max_inflight_requests", "is not supported: every step runs as soon as its inputs exist")
	}
	if err := validateIO(cfg, file); err != nil {
		return err
	}
	if err := validateVersionPolicy(cfg, file); err != nil {
		return err
	}
	return completeParameters(cfg, file)
}

// loadEnsemble builds and checks an ensemble's plan from its configuration.
func loadEnsemble(m *Model, cfgFile string) error {
	plan, err := ensemble.FromConfig(m.Config)
	if err != nil {
		return fieldError(cfgFile, "ensemble_scheduling", "%s", err.Error())
	}
	m.Ensemble = plan
	return nil
}
