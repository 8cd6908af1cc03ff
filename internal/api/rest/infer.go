package rest

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/vigilhq/vigil/internal/apierr"
	"github.com/vigilhq/vigil/internal/inference"
	"github.com/vigilhq/vigil/internal/model"
	"github.com/vigilhq/vigil/internal/sharedmemory"
)

// infer serves POST /v2/models/{model}[/versions/{version}]/infer: read the
// body within the limit, decode it, run it, encode the answer.
func (s *server) infer(w http.ResponseWriter, r *http.Request) {
	name, version := r.PathValue("model"), r.PathValue("version")
	var (
		req    *inference.Request // captured by the file's release below
		format outputFormat
	)
	body, l, file, err := s.readInferBody(r)
	defer l.end()
	// The file goes back for reuse once the response is written, if the
	// request was answered; one that failed may still be queued.
	answered := false
	if file != nil {
		defer func() {
			body, req = nil, nil // so that a failed request's views may become unreachable
			file.End(answered)
		}()
	}
	if err != nil {
		s.writeError(w, r, apierr.Wrap(apierr.CodeOf(err), err, "model %q", name))
		return
	}
	hv, present := r.Header[http.CanonicalHeaderKey(headerContentLength)]
	var hvalue string
	if present && len(hv) > 0 {
		hvalue = hv[0]
	}
	header, bin, err := splitInferBody(body, hvalue, present)
	if err != nil {
		s.writeError(w, r, apierr.Wrap(apierr.InvalidArgument, err, "model %q", name))
		return
	}
	req, format, err = decodeInferRequest(header, bin)
	if err != nil {
		s.writeError(w, r, apierr.Wrap(apierr.InvalidArgument, err, "model %q", name))
		return
	}
	req.Model, req.Version = name, version
	if file != nil {
		file.ShareInputs(req.Inputs, sharedmemory.ShareThreshold)
	}

	resp, err := s.models.Infer(r.Context(), req)
	answered = err == nil
	if err != nil {
		if errors.Is(err, model.ErrDecoupled) {
			// Triton's wording first, then what to do instead.
			err = apierr.Wrap(apierr.CodeOf(err), err, "HTTP end point doesn't support models with decoupled transaction policy")
		}
		s.writeError(w, r, err)
		return
	}
	// The protocol requires the response to echo the request's id, and to
	// name the model and version that answered.
	if resp.ID == "" {
		resp.ID = req.ID
	}
	if resp.Model == "" {
		resp.Model = name
	}
	if resp.Version == "" {
		resp.Version = version
	}
	header, tails, err := encodeInferResponseParts(resp, format)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if tails == nil {
		writeRawJSON(w, http.StatusOK, header)
		return
	}
	// The binary outputs are written as they are, after the header: large
	// tensors are not copied into one body first.
	n := len(header)
	for _, t := range tails {
		n += len(t)
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set(headerContentLength, strconv.Itoa(len(header)))
	h.Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(header); err != nil {
		return // the client went away; nothing left to do
	}
	for _, t := range tails {
		if _, err := w.Write(t); err != nil {
			return
		}
	}
}

// decompress undoes a request Content-Encoding of gzip or deflate (Triton
// clients can compress requests). The decompressed body is held to the same
// limit as the raw one and, like it, grows as bytes come out of the
// decompressor, reserving from the request's lease l: a small body that
// expands beyond the limit (a decompression bomb) is refused 413 once the
// limit is passed, holding no more than the limit, and what it holds
// counts toward --max-concurrent-request-bytes.
func (s *server) decompress(body []byte, encoding string, l *lease) ([]byte, error) {
	var rd io.Reader
	var err error
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return body, nil
	case "gzip":
		rd, err = gzip.NewReader(bytes.NewReader(body))
	case "deflate":
		rd, err = zlib.NewReader(bytes.NewReader(body))
	default:
		return nil, apierr.New(apierr.InvalidArgument, "unsupported Content-Encoding %q; use gzip, deflate or none", encoding)
	}
	if err != nil {
		return nil, apierr.Wrap(apierr.InvalidArgument, err, "cannot decompress the %s request body", encoding)
	}
	capacity := int64(-1)
	if s.maxBytes > 0 {
		capacity = s.maxBytes + 1
	}
	return readGrowing(rd, l, capacity, false, s.maxBytes, func() error {
		return apierr.New(apierr.TooLarge, "decompressed request body is over the limit of %d bytes (--max-request-bytes)", s.maxBytes)
	}, func(err error) error {
		return apierr.Wrap(apierr.InvalidArgument, err, "cannot decompress the %s request body", encoding)
	})
}
