# kbackup — see README.md. Every target works from a fresh clone with only Go installed.
GO        ?= go
BIN       ?= bin/kbackup
PKGS      ?= ./...
FUZZTIME  ?= 10s
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/kbackup/kbackup/cmd/kbackup/cli.Version=$(VERSION)

.PHONY: all build test lint fuzz bench integration demo clean image deploy-check

all: lint test build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kbackup

# The restore package runs again with franz-go's producer as its default
# (KBACKUP_TEST_PRODUCER): its tests then cover the other produce path.
test:
	$(GO) test -race -count=1 $(PKGS)
	KBACKUP_TEST_PRODUCER=franz-go $(GO) test -race -count=1 ./restore/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

# A short run of every fuzz target (go test runs one target per invocation).
# The targets are read from each package's test files (go list applies the
# build constraints), not with `go test -list`, which links a test binary
# of every package only to list them (94 s -> 53 s for FUZZTIME=2000x on 2 cores).
fuzz:
	@set -e; list=$$($(GO) list -f '{{$$d := .Dir}}{{.ImportPath}}{{range .TestGoFiles}} {{$$d}}/{{.}}{{end}}{{range .XTestGoFiles}} {{$$d}}/{{.}}{{end}}' $(PKGS)); \
	printf '%s\n' "$$list" | while read -r pkg files; do \
	  [ -n "$$files" ] || continue; \
	  for f in $$(grep -hoE '^func Fuzz[A-Za-z0-9_]*' $$files | cut -c6-); do \
	    echo "== fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg </dev/null; \
	  done; \
	done

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

demo: build
	$(BIN) demo

clean:
	rm -rf bin

# The container image ghcr.io/kbackup/kbackup:$(VERSION), built without a
# container runtime (deploy/image): an OCI layout in bin/image and a tarball
# for docker/podman load. Reproducible: timestamps are SOURCE_DATE_EPOCH (the
# last commit's time), so the same commit gives the same digest.
IMAGE_ARCH        ?= amd64
IMAGE_CA          ?= /etc/ssl/certs/ca-certificates.crt
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_BIN         := bin/linux_$(IMAGE_ARCH)/kbackup
export SOURCE_DATE_EPOCH

image:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(IMAGE_BIN) ./cmd/kbackup
	$(GO) run ./deploy/image -binary $(IMAGE_BIN) -ca $(IMAGE_CA) -version $(VERSION) -arch $(IMAGE_ARCH) \
	  -revision "$$(git rev-parse HEAD 2>/dev/null)" -out bin/image -tar bin/kbackup-image.tar

# Packaging checks (docs/TESTING.md): installs helm and promtool into the
# cache if needed, builds the image and verifies it (config, contents,
# `version` run from its binary), lints and renders the chart and decodes
# every object strictly, runs the alert rules' promtool tests, and checks the
# dashboard and rules against a real archiver's metrics. helm and promtool
# are required here: a missing one fails instead of skipping.
DEPLOY_PKGS ?= ./deploy/... ./internal/chartcheck/
deploy-check: image
	testenv/install.sh helm promtool
	$(GO) run ./deploy/image -verify bin/image -version $(VERSION)
	@KBACKUP_TEST_REQUIRE="$${KBACKUP_TEST_REQUIRE:+$$KBACKUP_TEST_REQUIRE,}helm,promtool" \
	  KBACKUP_IMAGE_BINARY=$(CURDIR)/$(IMAGE_BIN) KBACKUP_IMAGE_VERSION=$(VERSION) \
	  $(GO) test -race -count=1 -v $(DEPLOY_PKGS) 2>&1 | tee bin/deploy-check.log \
	  | grep -E '^(=== RUN|\s+(--- )?(PASS|FAIL|SKIP)|--- |ok|FAIL|panic:)|SUCCESS|exported|helm lint|prints' || true
	@echo "== deploy-check summary"; \
	  grep -E '^(ok|FAIL|---) ' bin/deploy-check.log | grep -v -- '--- PASS' || true; \
	  echo "$$(grep -c -- '--- PASS' bin/deploy-check.log) passed, $$(grep -c -- '--- FAIL' bin/deploy-check.log) failed, $$(grep -c -- '--- SKIP' bin/deploy-check.log) skipped"; \
	  ! grep -qE -- '^(--- FAIL|FAIL|panic:)|--- SKIP' bin/deploy-check.log

# Real-component test environment (Kafka, MinIO, moto): testenv-up, testenv-down, integration.
include testenv/testenv.mk
