package probe

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// maxBody is how much of a response body is read, as the kubelet's HTTP
// prober does.
const maxBody = 10 << 10

// dialError marks a failure to establish the connection, so it can be told
// apart from a server that accepted but did not answer.
type dialError struct{ err error }

func (e *dialError) Error() string { return "connect: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// httpPath is the endpoint that answers the probe's question.
func httpPath(r resolved) string {
	switch r.Target {
	case TargetLive:
		return "/livez"
	case TargetReady:
		return "/readyz"
	case TargetStartup:
		return "/startupz"
	}
	p := "/v2/models/" + url.PathEscape(r.Model)
	if r.Version != "" {
		p += "/versions/" + url.PathEscape(r.Version)
	}
	return p + "/ready"
}

func checkHTTP(ctx context.Context, r resolved) Result {
	res := Result{Label: r.label, Addr: r.Addr}
	tr := &http.Transport{
		Proxy: nil, // a probe talks to the pod itself, never through a proxy
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dctx, cancel := context.WithTimeout(ctx, r.ConnectTimeout)
			defer cancel()
			conn, err := r.Dial(dctx, network, addr)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return conn, nil
		},
		DisableKeepAlives:     true,
		ResponseHeaderTimeout: r.Timeout,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// A redirect is not an answer to a health question.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	// The request deadline covers both phases; each phase has its own,
	// shorter limit (the dialer's and ResponseHeaderTimeout), so the error
	// says which phase failed.
	rctx, cancel := context.WithTimeout(ctx, r.ConnectTimeout+r.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+r.Addr+httpPath(r), nil)
	if err != nil {
		res.Outcome, res.Detail = Unknown, oneLine(err.Error())
		return res
	}
	// As the kubelet does: vigil's probe endpoints answer JSON only when
	// asked for it, and the verbose text is what the line is taken from.
	req.Header.Set("Accept", "*/*")
	req.Header.Set("User-Agent", "vigil-probe")
	resp, err := client.Do(req)
	if err != nil {
		res.Outcome, res.Detail = Unknown, describeErr(ctx, err, r.ConnectTimeout, r.Timeout)
		return res
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		res.Outcome, res.Detail = Unknown, "reading the answer: "+describeErr(ctx, err, r.ConnectTimeout, r.Timeout)
		return res
	}
	res.Outcome, res.Detail = classifyHTTP(r, resp.StatusCode, body)
	return res
}

// classifyHTTP maps a health endpoint's status and body to an outcome. The
// contract is 200 for yes and 503 for no (500 with "[-]" lines, as the
// Kubernetes API server answers, is accepted as no too); anything else means
// the endpoint is not a vigil health endpoint.
func classifyHTTP(r resolved, code int, body []byte) (Outcome, string) {
	switch {
	case code == http.StatusOK:
		return Healthy, ""
	case code == http.StatusNotFound && r.Target == TargetModel:
		// The server answered: it does not have this model (or version).
		if why := jsonReason(body); why != "" {
			return Unhealthy, why
		}
		return Unhealthy, fmt.Sprintf("the server does not know %s", r.label)
	case code == http.StatusServiceUnavailable:
		return Unhealthy, reason(code, body)
	case code == http.StatusInternalServerError && failedLine(body) != "":
		return Unhealthy, failedLine(body)
	}
	detail := fmt.Sprintf("unexpected HTTP %d from %s", code, httpPath(r))
	if first := firstLine(body); first != "" {
		detail += ": " + first
	}
	return Unknown, oneLine(detail)
}

// reason extracts why a probe failed: the first "[-]" line of the verbose
// body, else a JSON "reason" or "error", else the first line of the body.
func reason(code int, body []byte) string {
	if l := failedLine(body); l != "" {
		return l
	}
	if why := jsonReason(body); why != "" {
		return why
	}
	if first := firstLine(body); first != "" {
		return first
	}
	return fmt.Sprintf("HTTP %d %s", code, http.StatusText(code))
}

// failedLine is the first "[-]name failed: reason" line, without "[-]".
func failedLine(body []byte) string {
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		if l, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "[-]"); ok {
			return oneLine(l)
		}
	}
	return ""
}

// jsonReason reads why from a JSON body: a model endpoint's "reason", an
// error's "error", or the first failing check of a probe's ?format=json.
func jsonReason(body []byte) string {
	var v struct {
		Reason string `json:"reason"`
		Error  string `json:"error"`
		Checks []struct {
			Name   string `json:"name"`
			OK     bool   `json:"ok"`
			Reason string `json:"reason"`
		} `json:"checks"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	switch {
	case v.Reason != "":
		return oneLine(v.Reason)
	case v.Error != "":
		return oneLine(v.Error)
	}
	for _, c := range v.Checks {
		if !c.OK {
			return oneLine(c.Name + " failed: " + c.Reason)
		}
	}
	return ""
}

func firstLine(body []byte) string {
	for l := range strings.Lines(string(body)) {
		if l = strings.TrimSpace(l); l != "" {
			return oneLine(l)
		}
	}
	return ""
}

// describeErr says in a few words why the server could not be asked.
// parent is the caller's context: if it ended, the probe was interrupted.
func describeErr(parent context.Context, err error, connectTimeout, timeout time.Duration) string {
	var de *dialError
	if errors.As(err, &de) {
		return describeDialErr(de.err, connectTimeout)
	}
	if parent.Err() != nil {
		return "interrupted: " + parent.Err().Error()
	}
	if isTimeout(err) {
		return fmt.Sprintf("no answer within %s", timeout)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return oneLine(err.Error())
}

// describeDialErr says why a connection could not be established.
func describeDialErr(err error, connectTimeout time.Duration) string {
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case isTimeout(err):
		return fmt.Sprintf("no connection within %s", connectTimeout)
	case errors.As(err, &dns):
		return "cannot resolve " + dns.Name + ": " + dns.Err
	case errors.Is(err, context.Canceled):
		return "interrupted: " + err.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return oneLine(op.Err.Error())
	}
	return oneLine(err.Error())
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
