package rest

import (
	"fmt"
	"strconv"
	"strings"
)

// Triton's binary tensor data extension.
//
// Request: the body is a JSON header of Inference-Header-Content-Length
// bytes followed by the binary data of every input that carries the
// parameter binary_data_size, concatenated in the order of the JSON inputs.
// Response: the same layout, for the outputs sent in binary (the request
// parameter binary_data_output, overridden per output by binary_data); the
// response then has Content-Type application/octet-stream and its own
// Inference-Header-Content-Length.

// headerContentLength is the binary extension's header.
const headerContentLength = "Inference-Header-Content-Length"

// splitInferBody separates the JSON header from the binary data. present
// says whether the request had the Inference-Header-Content-Length header;
// without it the whole body is JSON and no input may use binary data.
func splitInferBody(body []byte, headerValue string, present bool) ([]byte, binaryReader, error) {
	if !present {
		return body, binaryReader{}, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(headerValue), 10, 64)
	if err != nil || n < 0 {
		return nil, binaryReader{}, fmt.Errorf("header %s: %q is not a non-negative integer", headerContentLength, truncate(headerValue, 32))
	}
	if n == 0 {
		// Triton reads such a body as the raw bytes of a model's only
		// input; vigil needs the JSON header to know the input's name,
		// datatype and shape.
		return nil, binaryReader{}, fmt.Errorf("header %s: 0 (a body of raw tensor bytes without a JSON header) is not supported; send the JSON inference header first", headerContentLength)
	}
	if n > int64(len(body)) {
		return nil, binaryReader{}, fmt.Errorf("header %s: the JSON header is said to be %d bytes but the body has only %d", headerContentLength, n, len(body))
	}
	return body[:n], binaryReader{buf: body[n:], present: true}, nil
}

// binaryReader hands out the binary data after the JSON header, in order.
type binaryReader struct {
	buf     []byte
	off     int
	present bool // the request used the binary extension
}

// take returns the next size bytes, for the named input. The slice aliases
// the request body.
func (b *binaryReader) take(input string, size int64) ([]byte, error) {
	if !b.present {
		return nil, fmt.Errorf("input %q: parameter binary_data_size is set but the request has no %s header, so it carries no binary data", input, headerContentLength)
	}
	left := len(b.buf) - b.off
	if size > int64(left) {
		return nil, fmt.Errorf("input %q: binary_data_size is %d but only %d bytes of binary data are left in the body (truncated body?)", input, size, left)
	}
	out := b.buf[b.off : b.off+int(size) : b.off+int(size)]
	b.off += int(size)
	return out, nil
}

// finish fails when binary data is left that no input claimed: the
// binary_data_size parameters and the body disagree.
func (b *binaryReader) finish() error {
	if left := len(b.buf) - b.off; left > 0 {
		return fmt.Errorf("%d bytes of binary data follow the JSON header that no input's binary_data_size accounts for", left)
	}
	return nil
}

// assembleBinaryResponse joins the JSON header and the binary outputs into
// one body.
func assembleBinaryResponse(header []byte, tails [][]byte) []byte {
	n := len(header)
	for _, t := range tails {
		n += len(t)
	}
	body := make([]byte, 0, n)
	body = append(body, header...)
	for _, t := range tails {
		body = append(body, t...)
	}
	return body
}
