package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
)

// stressInstance stands for one instance: its worker loops on Next like
// Instance.work, and every batch, handed out or run directly, executes
// through exec, which checks that the instance never runs two at once and
// that no task runs twice.
type stressInstance struct {
	t        *testing.T
	busy     atomic.Int32
	executed *sync.Map
}

func (s *stressInstance) exec(b []*Task) {
	if n := s.busy.Add(1); n != 1 {
		s.t.Errorf("instance runs %d batches at once", n)
	}
	for _, task := range b {
		if _, dup := s.executed.LoadOrStore(task, true); dup {
			s.t.Errorf("task %s executed twice", task.Req.ID)
		}
	}
	if rand.IntN(4) == 0 {
		runtime.Gosched()
	}
	s.busy.Add(-1)
	for _, task := range b {
		task.Finish(&inference.Response{ID: task.Req.ID}, nil)
	}
}

// stressTimeout bounds one stress run's Submits and its workers' exit. It
// is a deadline for a hang, not a speed goal: under the race detector on a
// shared 2-core machine one run of 1600 requests can take seconds.
const stressTimeout = time.Minute

type stressConfig struct {
	batching   Batching
	workers    int
	submitters int
	requests   int  // per submitter
	churn      bool // workers' sessions end at random and they re-enter Next
	nilRunners bool // some Next calls pass no runner
	cancel     bool // some requests have deadlines or are cancelled
	toggle     bool // routable count drops to 0 and back at random
	close      bool // the queue closes part-way
}

func runStress(t *testing.T, cfg stressConfig) {
	q := NewQueue("m", cfg.batching, &Stats{})
	q.SetRoutable(cfg.workers)
	closedErr := errors.New("closed")
	stop, stopWorkers := context.WithCancel(context.Background())
	defer stopWorkers()
	executed := &sync.Map{}

	var workers sync.WaitGroup
	for k := 0; k < cfg.workers; k++ {
		inst := &stressInstance{t: t, executed: executed}
		workers.Go(func() {
			for stop.Err() == nil {
				session, endSession := context.WithCancel(stop)
				if cfg.churn && rand.IntN(2) == 0 {
					time.AfterFunc(time.Duration(rand.IntN(500))*time.Microsecond, endSession)
				}
				var returned atomic.Bool
				var run func([]*Task)
				if !cfg.nilRunners || rand.IntN(3) != 0 {
					run = func(b []*Task) {
						if returned.Load() {
							t.Errorf("direct run after Next returned")
						}
						inst.exec(b)
					}
				}
				batch, err := q.Next(session, run)
				returned.Store(true)
				if n := inst.busy.Load(); n != 0 {
					t.Errorf("Next returned while the instance runs %d batches", n)
				}
				endSession()
				if err != nil {
					if errors.Is(err, closedErr) {
						return
					}
					continue
				}
				inst.exec(batch)
			}
		})
	}

	// Requests without a deadline that nobody cancels must succeed unless
	// the queue closes or loses its instances.
	var submits sync.WaitGroup
	var pending atomic.Int64
	for s := 0; s < cfg.submitters; s++ {
		submits.Go(func() {
			for r := 0; r < cfg.requests; r++ {
				id := fmt.Sprintf("%d-%d", s, r)
				size := 1
				if cfg.batching.MaxBatchSize > 1 {
					size = 1 + rand.IntN(cfg.batching.MaxBatchSize)
				}
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				strict := true
				if cfg.cancel {
					switch rand.IntN(4) {
					case 0:
						ctx, cancel = context.WithTimeout(ctx, time.Duration(rand.IntN(300))*time.Microsecond)
						strict = false
					case 1:
						ctx, cancel = context.WithTimeout(ctx, time.Hour)
					case 2:
						ctx, cancel = context.WithCancel(ctx)
						time.AfterFunc(time.Duration(rand.IntN(300))*time.Microsecond, cancel)
						strict = false
					}
				}
				pending.Add(1)
				resp, err := q.Submit(ctx, &inference.Request{ID: id}, size)
				pending.Add(-1)
				cancel()
				switch {
				case err == nil:
					if resp == nil || resp.ID != id {
						t.Errorf("request %s got response %+v", id, resp)
					}
				case errors.Is(err, closedErr), apierr.CodeOf(err) == apierr.Unavailable && (cfg.toggle || cfg.close):
				case !strict && (errors.Is(err, context.Canceled) || apierr.CodeOf(err) == apierr.DeadlineExceeded):
				default:
					t.Errorf("request %s: %v", id, err)
				}
			}
		})
	}

	var chaos sync.WaitGroup
	var closedEarly atomic.Bool
	chaosDone := make(chan struct{})
	if cfg.toggle || cfg.close {
		chaos.Go(func() {
			for {
				select {
				case <-chaosDone:
					return
				case <-time.After(time.Duration(rand.IntN(2000)) * time.Microsecond):
				}
				if cfg.toggle {
					q.SetRoutable(0)
					runtime.Gosched()
					q.SetRoutable(cfg.workers)
				}
				if cfg.close && rand.IntN(20) == 0 {
					q.Close(closedErr)
					closedEarly.Store(true)
				}
			}
		})
	}

	finished := make(chan struct{})
	go func() { submits.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(stressTimeout):
		q.mu.Lock()
		idle := len(q.idle)
		live := 0
		for _, w := range q.idle {
			if w.ctx.Err() == nil {
				live++
			}
		}
		t.Errorf("%d Submits never returned: %d queued, %d idle workers (%d live), %d filling",
			pending.Load(), len(q.tasks), idle, live, q.filling)
		q.mu.Unlock()
		q.Close(closedErr) // unblock
		<-finished
	}
	close(chaosDone)
	chaos.Wait()
	if !closedEarly.Load() {
		// Close must release every worker, idle or not.
		q.Close(closedErr)
	}
	wdone := make(chan struct{})
	go func() { workers.Wait(); close(wdone) }()
	select {
	case <-wdone:
	case <-time.After(stressTimeout):
		t.Fatal("workers did not leave Next after Close")
	}
}

func TestStressDirectRunsAndQueuedWork(t *testing.T) {
	batchings := map[string]Batching{
		"plain":           {},
		"max batch":       {MaxBatchSize: 4},
		"dynamic":         {MaxBatchSize: 4, Dynamic: true},
		"dynamic delayed": {MaxBatchSize: 4, Dynamic: true, MaxDelay: 200 * time.Microsecond},
	}
	for bname, b := range batchings {
		for _, workers := range []int{1, 2, 4} {
			for _, mode := range []string{"steady", "churn", "cancel", "nil runners", "toggle", "close", "all"} {
				cfg := stressConfig{batching: b, workers: workers, submitters: 8, requests: 200}
				switch mode {
				case "churn":
					cfg.churn = true
				case "cancel":
					cfg.cancel = true
				case "nil runners":
					cfg.nilRunners = true
				case "toggle":
					cfg.toggle = true
				case "close":
					cfg.close = true
				case "all":
					cfg = stressConfig{batching: b, workers: workers, submitters: 8, requests: 200,
						churn: true, cancel: true, nilRunners: true, toggle: true, close: true}
				}
				t.Run(fmt.Sprintf("%s/%d workers/%s", bname, workers, mode), func(t *testing.T) {
					runStress(t, cfg)
				})
			}
		}
	}
}

// TestNoRequestStrandedWhileALiveWorkerIsIdle watches the queue under load
// with steady workers: a request may sit in the queue next to an idle
// worker only while another woken worker is on its way to it.
func TestNoRequestStrandedWhileALiveWorkerIsIdle(t *testing.T) {
	for _, b := range []Batching{{}, {MaxBatchSize: 4, Dynamic: true, MaxDelay: 100 * time.Microsecond}} {
		q := NewQueue("m", b, &Stats{})
		q.SetRoutable(3)
		stop, stopWorkers := context.WithCancel(context.Background())
		var workers sync.WaitGroup
		for k := 0; k < 3; k++ {
			inst := &stressInstance{t: t, executed: &sync.Map{}}
			workers.Go(func() {
				// Workers 1 and 2 leave for good at a random moment, each
				// passing on any wake-up meant for it; worker 0 stays.
				wctx, leave := context.WithCancel(stop)
				defer leave()
				if k > 0 {
					time.AfterFunc(time.Duration(rand.IntN(20000))*time.Microsecond, leave)
				}
				for {
					var run func([]*Task)
					if k != 1 {
						run = inst.exec
					}
					batch, err := q.Next(wctx, run)
					if err != nil {
						return
					}
					inst.exec(batch)
				}
			})
		}
		var stuck atomic.Bool
		monitorDone := make(chan struct{})
		go func() {
			defer close(monitorDone)
			var head *Task
			var since time.Time
			for stop.Err() == nil {
				q.mu.Lock()
				var h *Task
				for _, w := range q.idle {
					if len(q.tasks) > 0 && w.ctx.Err() == nil {
						h = q.tasks[0]
					}
				}
				q.mu.Unlock()
				switch {
				case h == nil:
					head = nil
				case h != head:
					head, since = h, time.Now()
				case time.Since(since) > 500*time.Millisecond:
					stuck.Store(true)
				}
				time.Sleep(100 * time.Microsecond)
			}
		}()
		// Rounds of concurrent requests: a request stranded in a round is
		// not rescued by the wake-up of a later arrival.
		for r := 0; r < 300 && !stuck.Load(); r++ {
			var round sync.WaitGroup
			for s := 0; s < 6; s++ {
				round.Go(func() {
					ctx, cancel := context.Background(), context.CancelFunc(func() {})
					if s%2 == 0 {
						ctx, cancel = context.WithTimeout(ctx, time.Hour)
					}
					defer cancel()
					if _, err := q.Submit(ctx, &inference.Request{}, 1+rand.IntN(2)); err != nil {
						t.Error(err)
					}
				})
			}
			done := make(chan struct{})
			go func() { round.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(testTimeout):
				stuck.Store(true)
				q.Close(errors.New("stuck"))
				<-done
			}
		}
		stopWorkers()
		workers.Wait()
		<-monitorDone
		if stuck.Load() {
			t.Fatal("a request stayed queued for a second while a live worker was idle")
		}
	}
}
