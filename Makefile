# vigil — the two commands: `make run` serves the bundled examples, `make test`
# runs the whole suite. Both install what is missing first: `make run` only
# what serving needs (numpy), `make test` the test extras and a browser too.

GO        ?= go
PYTHON    ?= python3
BIN       := bin/vigil
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001

.PHONY: all build run test test-go test-python test-fuzz deps deps-serve deps-python deps-browser screenshot proto bench bench-peers triton-venv fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/vigil

# The Python interpreter the stubs and the tests run on: $(PYTHON) when it
# has (or may pip install) what is needed, else a project-local virtual
# environment .venv made from it (Debian's python3 refuses pip: PEP 668).
# scripts/python-env.sh decides, installs with visible progress and says
# why; the chosen path is kept in $(PYFILE).
PYFILE := bin/.python

# deps-serve: what serving needs (numpy), nothing else.
deps-serve:
	@mkdir -p bin
	@scripts/python-env.sh "$(PYTHON)" requirements.txt numpy > $(PYFILE).tmp && mv $(PYFILE).tmp $(PYFILE)
	@echo "stub interpreter: $$(cat $(PYFILE))"

# deps-python: the test extras too (tritonclient, pytest, pyyaml, selenium, httpx for SSE).
deps-python:
	@mkdir -p bin
	@scripts/python-env.sh "$(PYTHON)" requirements-dev.txt numpy tritonclient.http tritonclient.grpc pytest yaml selenium httpx \
		> $(PYFILE).tmp && mv $(PYFILE).tmp $(PYFILE)
	@echo "test interpreter: $$(cat $(PYFILE))"

# deps-browser: Debian's chromium and its driver, for the status page test.
# There is no skip: without them `make test` fails here.
deps-browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi; \
	echo "installing chromium and chromium-driver (apt-get) for the status page test"; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null 2>&1; then sudo=sudo; else \
		echo "error: chromium and chromedriver are missing and apt-get needs root: run apt-get install chromium chromium-driver" >&2; exit 1; fi; \
	command -v apt-get >/dev/null 2>&1 || { echo "error: no apt-get: install chromium and chromedriver and put them on PATH" >&2; exit 1; }; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver || \
	{ $$sudo apt-get update && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; } || \
	{ echo "error: apt-get could not install chromium chromium-driver" >&2; exit 1; }; \
	command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	{ echo "error: chromium or chromedriver still not on PATH after apt-get" >&2; exit 1; }

deps: deps-python deps-browser
	$(GO) mod download

# grpcurl, a gRPC client nobody here wrote, for the conformance suite.
GRPCURL_VERSION := v1.9.3
bin/grpcurl:
	GOBIN=$(abspath bin) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

run: deps-serve build
	$(BIN) serve --model-repository examples/models --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --python "$$(cat $(PYFILE))"

test: deps build bin/grpcurl test-go test-fuzz test-python

# The integration tests run a -race build of the server, so that data races
# in the real server under real traffic fail the suite.
test-go:
	$(GO) vet ./...
	$(GO) build -race -o bin/vigil-race ./cmd/vigil
	VIGIL_BIN=$(abspath bin/vigil-race) VIGIL_PYTHON="$$(cat $(PYFILE))" $(GO) test -race -count=1 -timeout 15m ./...

# Every fuzz target runs briefly in the suite; `make fuzz` runs them longer.
# Each target carries its budget in the suite as a count of executions
# (about 3 s on the 2-core machine), not a duration: under Go 1.26 a
# duration-based -fuzztime can end in a spurious "context deadline
# exceeded" failure with no failing input (golang/go#75804, fixed in Go
# 1.27). FUZZTIME, when set, replaces every target's budget.
FUZZ_TARGETS := ./internal/modelconfig:FuzzParseConfig:600x ./internal/modelconfig:FuzzParsePolicy:15000x \
	./internal/api/rest:FuzzDecodeInferJSON:30000x ./internal/api/rest:FuzzDecodeBinaryInfer:30000x \
	./internal/api/rest:FuzzPlainElementsMatchTokens:15000x ./internal/api/rest:FuzzScanInferHeaderMatchesDecoder:30000x
FUZZTIME ?=

test-fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; fn=$${rest%%:*}; budget=$${rest#*:}; \
		if [ -n "$(FUZZTIME)" ]; then budget="$(FUZZTIME)"; fi; \
		echo "fuzz $$fn for $$budget"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $$budget $$pkg || exit 1; \
	done

fuzz:
	$(MAKE) test-fuzz FUZZTIME=2m

test-python:
	"$$(cat $(PYFILE))" -m pytest -q python/tests
	VIGIL_BIN=$(abspath $(BIN)) GRPCURL=$(abspath bin/grpcurl) "$$(cat $(PYFILE))" -m pytest -q tests/conformance

# screenshot remakes docs/status-page.png with the status page's browser test.
screenshot: deps build
	VIGIL_BIN=$(abspath $(BIN)) VIGIL_STATUS_SCREENSHOT=$(abspath docs/status-page.png) \
		"$$(cat $(PYFILE))" -m pytest -q tests/conformance/test_status_page.py

# bench measures latency, throughput, probe latency under load, detection and
# recovery in one run, each next to a baseline from the same run.
bench: deps-python build
	VIGIL_PYTHON="$$(cat $(PYFILE))" $(GO) test -run '^$$' -bench . -benchtime 3000x ./internal/ipc ./internal/model
	$(GO) run ./bench -vigil $(BIN) -python "$$(cat $(PYFILE))"

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

bench-peers: deps-python build triton-venv
	$(GO) run ./bench -peers -triton-venv $(TRITON_VENV) -vigil $(BIN) -python "$$(cat $(PYFILE))" $(PEERS_ARGS)

# chaos runs the suite's chaos test (tests/integration/chaos_test.go) for
# CHAOS_DURATION instead of 20 s and prints its figures: requests by outcome,
# detection latency per fault kind, false-ready and not-ready time, recovery.
CHAOS_DURATION ?= 3m
chaos: deps build
	VIGIL_BIN=$(abspath $(BIN)) VIGIL_PYTHON=$(PYTHON) VIGIL_CHAOS_DURATION=$(CHAOS_DURATION) \
		$(GO) test -count=1 -v -run '^TestChaos$$' -timeout 2h ./tests/integration

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
