package instance

import (
	"context"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/internal/inference"
)

// Warmup is one model_warmup sample: a batch sent Count times.
type Warmup struct {
	Name     string
	Requests []*inference.Request
	Count    int
}

// warmUp runs every warm-up sample on a freshly initialized process, in
// order, before the instance counts as initialized: an instance is never
// READY (nor in traffic) before its samples ran, as in Triton. A sample
// that fails, raises or returns an error response fails the start with the
// sample's name. Each execute gets the policy's execute timeout, when set.
func (i *Instance) warmUp(ctx context.Context, p *process) error {
	for _, w := range i.cfg.Warmup {
		start := time.Now()
		for n := range w.Count {
			ectx, cancel := ctx, context.CancelFunc(func() {})
			if d := i.cfg.Policy.ExecuteTimeout; d > 0 {
				ectx, cancel = context.WithTimeout(ctx, d)
			}
			results, err := p.client.Execute(ectx, w.Requests)
			cancel()
			if err != nil {
				return fmt.Errorf("model_warmup sample '%s' failed (run %d of %d): %w", w.Name, n+1, w.Count, err)
			}
			for k, r := range results {
				if r.Err != nil {
					return fmt.Errorf("model_warmup sample '%s' failed (run %d of %d, request %d): %w", w.Name, n+1, w.Count, k, r.Err)
				}
			}
		}
		i.log.Info("model_warmup sample ran", "sample", w.Name, "runs", w.Count, "batch", len(w.Requests),
			"took", time.Since(start).Round(time.Microsecond).String())
	}
	return nil
}
