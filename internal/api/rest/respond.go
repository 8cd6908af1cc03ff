package rest

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/vigilhq/vigil/internal/apierr"
)

// errorBody is the protocol's error object.
type errorBody struct {
	Error string `json:"error"`
}

// writeJSON answers status with v encoded as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only response parameters can make this fail (a value JSON cannot
		// hold); say so rather than send half a body.
		writeErrorStatus(w, http.StatusInternalServerError, "cannot encode response: "+err.Error())
		return
	}
	writeRawJSON(w, status, b)
}

// writeRawJSON answers status with b, which is already JSON.
func writeRawJSON(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client went away; nothing left to do
}

// writeErrorStatus answers status with {"error": msg}.
func writeErrorStatus(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(errorBody{Error: msg}) // a string always encodes
	writeRawJSON(w, status, b)
}

// writeError answers err with the status its apierr class maps to, adding
// Retry-After to 503s. Failures that are vigil's own (unclassified errors)
// are logged; client errors are not, so a misbehaving client cannot flood
// the log.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := apierr.HTTPStatus(err)
	if status == http.StatusServiceUnavailable {
		if d := apierr.RetryAfter(err); d > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
		}
	}
	var classified *apierr.Error
	// A request whose client went away fails with the context's error; that
	// is not a fault worth a log line.
	if status >= 500 && !errors.As(err, &classified) && r.Context().Err() == nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("error", err.Error()))
	}
	writeErrorStatus(w, status, err.Error())
}

// decodeOptionalJSON decodes an optional JSON object body into v; an empty
// body leaves v untouched.
func decodeOptionalJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := checkUTF8(body, "the JSON body"); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return apierr.New(apierr.InvalidArgument, "malformed JSON body: %s", describeJSONError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return apierr.New(apierr.InvalidArgument, "malformed JSON body: unexpected data after the JSON object")
	}
	return nil
}

// describeJSONError turns encoding/json errors into messages that name the
// field at fault instead of Go types.
func describeJSONError(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("%s (at byte %d)", syntax.Error(), syntax.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return fmt.Sprintf("expected %s, got JSON %s", jsonKind(typ.Type.Kind().String()), typ.Value)
		}
		return fmt.Sprintf("field %s: expected %s, got JSON %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of JSON"
	}
	return err.Error()
}

func jsonKind(goKind string) string {
	switch goKind {
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int8", "int16", "int32", "int64":
		return "an integer"
	case "uint", "uint8", "uint16", "uint32", "uint64":
		return "a non-negative integer"
	case "float32", "float64":
		return "a number"
	}
	return goKind
}

// admin protects the repository API with the admin token, if one is set.
func (s *server) admin(h http.HandlerFunc) http.HandlerFunc {
	if s.cfg.AdminToken == "" {
		return h
	}
	want := []byte(s.cfg.AdminToken)
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		scheme, token, ok := strings.Cut(auth, " ")
		if auth == "" || !ok || !strings.EqualFold(scheme, "Bearer") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="vigil repository API"`)
			s.writeError(w, r, apierr.New(apierr.Unauthenticated,
				"the repository API needs an Authorization: Bearer <admin token> header"))
			return
		}
		if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), want) != 1 {
			s.writeError(w, r, apierr.New(apierr.PermissionDenied, "the admin token is wrong"))
			return
		}
		h(w, r)
	}
}
