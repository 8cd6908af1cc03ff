package grpc

import (
	"compress/zlib"
	"io"

	"google.golang.org/grpc/encoding"
	// gzip registers the gzip compressor with grpc-go.
	_ "google.golang.org/grpc/encoding/gzip"
)

// tritonclient offers gzip and deflate message compression, as Triton
// accepts both. grpc-go ships gzip; deflate here is gRPC's "deflate", the
// zlib format. Compressors are registered process-wide at init, the only
// time grpc-go allows it.
func init() { encoding.RegisterCompressor(deflateCompressor{}) }

type deflateCompressor struct{}

func (deflateCompressor) Name() string { return "deflate" }

func (deflateCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	return zlib.NewWriter(w), nil
}

func (deflateCompressor) Decompress(r io.Reader) (io.Reader, error) {
	return zlib.NewReader(r)
}
