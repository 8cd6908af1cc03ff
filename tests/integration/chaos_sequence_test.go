package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// chaosSequenceLen is the number of requests of each sequence the chaos
// test's sequence clients send (START first, END last).
const chaosSequenceLen = 6

// sequenceTally counts what became of the sequence clients' sequences.
type sequenceTally struct {
	mu        sync.Mutex
	done      int // every request answered with the right running sum
	lost      int // the server said "sequence N was lost: …"
	abandoned int // another 503/504 ended it on the client's side
}

func (st *sequenceTally) add(field *int) {
	st.mu.Lock()
	*field++
	st.mu.Unlock()
}

func (st *sequenceTally) String() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return fmt.Sprintf("%d completed, %d lost (the holding instance's process ended), %d abandoned after another 503/504",
		st.done, st.lost, st.abandoned)
}

// sequenceClient runs sequences on tally (a running sum kept by the server
// as implicit state) over HTTP until ctx ends. Every 200 must carry the
// sum of the sequence so far: a sequence whose instance died must never
// go on from empty state on another instance. A 503/504 with a reason
// ends the sequence for the client, which starts a new one (a new ID);
// anything else is a failure, as for the other clients.
func (c *chaos) sequenceClient(ctx context.Context, i int, st *sequenceTally) {
	r := rand.New(rand.NewPCG(uint64(i), 13))
	for id := uint64(1_000_000 * (i + 1)); ctx.Err() == nil; id++ {
		var sum int64
		completed := true
		for step := range chaosSequenceLen {
			v := int64(r.IntN(100))
			sum += v
			req := fmt.Sprintf(`{"parameters":{"sequence_id":%d,"sequence_start":%t,"sequence_end":%t},`+
				`"inputs":[{"name":"INPUT","datatype":"INT64","shape":[1,1],"data":[%d]}]}`,
				id, step == 0, step == chaosSequenceLen-1, v)
			// Paced, unlike the closed-loop clients: the sequences are
			// there for their answers, not to add load.
			time.Sleep(5 * time.Millisecond)
			sent := time.Now()
			resp, err := c.hc.Post(c.s.HTTP+"/v2/models/tally/infer", "application/json", strings.NewReader(req))
			var body []byte
			code := 0
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
			}
			want := sum
			c.check(fmt.Sprintf("http tally sequence %d request %d", id, step), code, body, err, time.Since(sent), func(body []byte) bool {
				var out struct {
					Outputs []struct {
						Name string  `json:"name"`
						Data []int64 `json:"data"`
					} `json:"outputs"`
				}
				return json.Unmarshal(body, &out) == nil && len(out.Outputs) == 1 && out.Outputs[0].Name == "OUTPUT" &&
					len(out.Outputs[0].Data) == 1 && out.Outputs[0].Data[0] == want
			})
			if err != nil || code != 200 {
				completed = false
				if code == 503 && bytes.Contains(body, []byte(" was lost: instance ")) {
					st.add(&st.lost)
				} else {
					st.add(&st.abandoned)
				}
				break
			}
		}
		if completed {
			st.add(&st.done)
		}
	}
}
