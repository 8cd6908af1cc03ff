# vigil — the two commands: `make run` serves the bundled examples, `make test`
# runs the whole suite. Both install what is missing first.

GO        ?= go
PYTHON    ?= python3
BIN       := bin/vigil
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001

.PHONY: all build run test test-go test-python deps deps-python proto bench bench-peers triton-venv fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/vigil

# deps-python installs the Python packages the stub (numpy) and the
# conformance tests (tritonclient, pytest, httpx for SSE) need, only when they are missing.
deps-python:
	@$(PYTHON) -c "import numpy, tritonclient.http, tritonclient.grpc, pytest, httpx" 2>/dev/null || \
		$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

deps: deps-python
	$(GO) mod download

# grpcurl, a gRPC client nobody here wrote, for the conformance suite.
GRPCURL_VERSION := v1.9.3
bin/grpcurl:
	GOBIN=$(abspath bin) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

run: deps build
	$(BIN) serve --model-repository examples/models --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --python $(PYTHON)

test: deps build bin/grpcurl test-go test-fuzz test-python

# The integration tests run a -race build of the server, so that data races
# in the real server under real traffic fail the suite.
test-go:
	$(GO) vet ./...
	$(GO) build -race -o bin/vigil-race ./cmd/vigil
	VIGIL_BIN=$(abspath bin/vigil-race) VIGIL_PYTHON=$(PYTHON) $(GO) test -race -count=1 -timeout 15m ./...

# Every fuzz target runs briefly in the suite; `make fuzz` runs them longer.
FUZZ_TARGETS := ./internal/modelconfig:FuzzParseConfig ./internal/modelconfig:FuzzParsePolicy \
	./internal/api/rest:FuzzDecodeInferJSON ./internal/api/rest:FuzzDecodeBinaryInfer \
	./internal/api/rest:FuzzPlainElementsMatchTokens
FUZZTIME ?= 3s

test-fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$fn for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

fuzz:
	$(MAKE) test-fuzz FUZZTIME=2m

test-python:
	$(PYTHON) -m pytest -q python/tests
	VIGIL_BIN=$(abspath $(BIN)) GRPCURL=$(abspath bin/grpcurl) $(PYTHON) -m pytest -q tests/conformance

# bench measures latency, throughput, probe latency under load, detection and
# recovery in one run, each next to a baseline from the same run.
bench: deps build
	VIGIL_PYTHON=$(PYTHON) $(GO) test -run '^$$' -bench . -benchtime 3000x ./internal/ipc ./internal/model
	$(GO) run ./bench -vigil $(BIN) -python $(PYTHON)

# bench-peers runs Triton (from the nvidia-pytriton wheel, installed into a
# virtual environment of its own on first use), vigil and the floor server
# side by side; see bench/peers.go. PEERS_ARGS passes more flags, e.g.
# PEERS_ARGS='-rounds 5 -step 10s -serve-args "--stub-nice 0"'.
TRITON_VENV      ?= bin/triton-venv
PYTRITON_VERSION := 0.7.0
PEERS_ARGS       ?=

triton-venv:
	@$(TRITON_VENV)/bin/python3 -c "import pytriton" 2>/dev/null || { \
		$(PYTHON) -m venv $(TRITON_VENV) && \
		$(TRITON_VENV)/bin/pip install --quiet --disable-pip-version-check nvidia-pytriton==$(PYTRITON_VERSION); }

bench-peers: deps build triton-venv
	$(GO) run ./bench -peers -triton-venv $(TRITON_VENV) -vigil $(BIN) -python $(PYTHON) $(PEERS_ARGS)

# proto regenerates the protocol code from proto/*.proto with the plugin
# versions pinned in go.mod. Needs protoc (apt-get install protobuf-compiler).
proto:
	$(GO) build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) build -o bin/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	protoc -I proto \
		--plugin=protoc-gen-go=bin/protoc-gen-go --plugin=protoc-gen-go-grpc=bin/protoc-gen-go-grpc \
		--go_out=. --go_opt=module=github.com/vigilhq/vigil \
		--go-grpc_out=. --go-grpc_opt=module=github.com/vigilhq/vigil \
		proto/*.proto

clean:
	rm -rf bin
