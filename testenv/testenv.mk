# Real-component test environment (Kafka, MinIO, moto, confluent-kafka).
# Included by the top Makefile. See docs/TESTING.md.
#
#   make testenv-install   download/build and cache everything (idempotent)
#   make testenv-up        start 3 Kafka brokers + MinIO + moto in the background,
#                          print `export KBACKUP_TEST_...` lines:  eval "$$(make -s testenv-up)"
#   make testenv-down      stop them
#   make integration       go test -tags integration (starts what is not running)

KBACKUP_CACHE      ?= $(HOME)/.cache/kbackup
# Kafka versions cached by testenv-install; tests use $(KBACKUP_KAFKA_VERSION)
# (default 3.9.1, see testenv.DefaultKafkaVersion); integration-kafka4 runs
# the Kafka smoke tests on KAFKA4_VERSION.
KAFKA4_VERSION     ?= 4.3.1
KBACKUP_KAFKA_VERSIONS ?= 3.9.1 $(KAFKA4_VERSION)
INTEGRATION_TIMEOUT ?= 45m
# One package at a time: each may start a 3-broker cluster (2 cores in CI).
INTEGRATION_P      ?= 1
INTEGRATION_FLAGS  ?=
# Test files with //go:build integration, their packages (others have nothing
# extra to run) and their top-level tests. `make integration` runs only those
# tests: the packages' unit tests are the same code (no non-test file carries
# the tag) and `make test` runs them, with -race too.
INTEGRATION_FILES  := $(shell grep -rlE --include='*_test.go' '^//go:build.*\bintegration\b' . 2>/dev/null)
INTEGRATION_PKGS   ?= $(shell printf '%s\n' $(INTEGRATION_FILES) | xargs -r -n1 dirname | sort -u)
INTEGRATION_RUN    ?= ^($(shell grep -hoE '^func Test[A-Za-z0-9_]*' $(INTEGRATION_FILES) /dev/null | cut -c6- | sort -u | paste -sd'|' -))$$

export KBACKUP_CACHE KBACKUP_KAFKA_VERSIONS

.PHONY: testenv-install testenv-up testenv-down integration integration-docs integration-kafka4

testenv-install:
	testenv/install.sh

testenv-up:
	@$(GO) run ./testenv/cmd/kbtestenv up

testenv-down:
	@$(GO) run ./testenv/cmd/kbtestenv down

integration:
	@test -n "$(INTEGRATION_PKGS)" || { echo "integration: no integration test packages found"; exit 1; }
	$(GO) test -race -tags integration -count=1 -p $(INTEGRATION_P) -timeout $(INTEGRATION_TIMEOUT) -run '$(INTEGRATION_RUN)' $(INTEGRATION_FLAGS) $(filter-out ./docs,$(INTEGRATION_PKGS))
	@$(MAKE) --no-print-directory integration-docs

# The docs-as-tests suite (docs/TESTING.md): every marked example of README.md
# and docs/*.md, run against real Kafka and MinIO. Prints each block it runs
# and how many ran; the whole log on failure.
DOCS_LOG ?= $(or $(TMPDIR),/tmp)/kbackup-integration-docs.log
integration-docs:
	@echo "go test -tags integration -run TestDocs ./docs (log: $(DOCS_LOG))"
	@$(GO) test -race -tags integration -count=1 -timeout 30m -v -run '^TestDocs$$' $(INTEGRATION_FLAGS) ./docs > $(DOCS_LOG) 2>&1; rc=$$?; \
	  if [ $$rc -ne 0 ]; then cat $(DOCS_LOG); else grep -E '^(--- |ok|PASS)|running .* block|docs as tests:|make test: not run again' $(DOCS_LOG); fi; \
	  grep -E '^(ok|FAIL)\s' $(DOCS_LOG); exit $$rc

# The real-cluster Kafka tests again on the 4.x line, the operators'
# deployment scenario (two continuous archivers with default flags), and
# the restore's real-Kafka tests (its direct produce path writes produce
# requests itself: topic ids from produce v13).
integration-kafka4:
	KBACKUP_KAFKA_VERSION=$(KAFKA4_VERSION) $(GO) test -race -tags integration -count=1 -timeout 20m \
	  -run '^(TestKafka|TestSmokeRealCluster|TestUseKafka|TestArchiversDefaultFlagsRealKafka|TestRestoreRealKafka)' ./testenv ./cmd/kbackup ./restore
