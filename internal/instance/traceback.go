package instance

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/vigilhq/vigil/internal/ipc"
	"github.com/vigilhq/vigil/internal/scheduler"
)

// Python tracebacks go to the server log, once per failure, at error level,
// under the message "model raised" with the keys model, version, instance
// (from the instance's logger), op (initialize, execute, the hook's name,
// finalize), pid, request_id (execute only: the batch's request ids, comma
// separated, "" for requests without one), error (the one-line message the
// client or the probe shows) and traceback (the full text). Clients keep
// the one-line message.

// logRaised logs the traceback of err when it carries one, under the step
// that raised (the error's own Op when op is ""); it reports whether it did.
func logRaised(log *slog.Logger, op string, pid int, err error, extra ...any) bool {
	var me *ipc.ModelError
	if !errors.As(err, &me) || me.Traceback == "" {
		return false
	}
	if op == "" {
		op = me.Op
	}
	logTraceback(log, op, pid, err.Error(), me.Traceback, extra...)
	return true
}

func logTraceback(log *slog.Logger, op string, pid int, msg, tb string, extra ...any) {
	args := append([]any{"op", op, "pid", pid}, extra...)
	args = append(args, "error", msg, "traceback", strings.TrimRight(tb, "\n"))
	log.Error("model raised", args...)
}

// requestIDs lists a batch's request ids for the log.
func requestIDs(batch []*scheduler.Task) string {
	ids := make([]string, len(batch))
	for k, t := range batch {
		ids[k] = t.Req.ID
	}
	return strings.Join(ids, ",")
}
