#!/usr/bin/env bash
# Installs (once) and caches the real components the integration tests use:
#   - Apache Kafka (org.apache.kafka:kafka_2.13 + runtime closure) from Maven Central
#   - MinIO, built with `go install` at a pinned version
#   - a Python venv with moto[server] (EC2 API) and confluent-kafka (independent client)
#   - helm and promtool, built with `go install` at pinned versions, for the
#     deploy checks (make deploy-check: chart lint/render, alert-rule tests)
# Everything lands under one cache directory, ${KBACKUP_CACHE:-$HOME/.cache/kbackup}.
# Re-running is cheap: finished parts leave a marker and are skipped.
#
# Usage: testenv/install.sh [kafka] [minio] [python] [helm] [promtool]   (default: all)
# Env:   KBACKUP_CACHE            cache directory
#        KBACKUP_KAFKA_VERSIONS   Kafka versions to install (default "3.9.1 4.3.1")
#        KBACKUP_HELM_VERSION, KBACKUP_PROMTOOL_VERSION   module versions (promtool: a
#                                 github.com/prometheus/prometheus version without replace
#                                 directives in its go.mod: v0.315.1 has some, go install refuses it)
set -euo pipefail

CACHE="${KBACKUP_CACHE:-$HOME/.cache/kbackup}"
KAFKA_VERSIONS="${KBACKUP_KAFKA_VERSIONS:-3.9.1 4.3.1}"
MINIO_VERSION="${KBACKUP_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
HELM_VERSION="${KBACKUP_HELM_VERSION:-v3.22.0}"
PROMTOOL_VERSION="${KBACKUP_PROMTOOL_VERSION:-v0.316.0}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE/bin" "$CACHE/logs"

log() { printf '[testenv-install %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# kafka_pom VERSION: a throwaway pom whose runtime closure is what a broker needs.
kafka_pom() {
  local v=$1 binding
  case "$v" in
    3.*) binding='
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
    <dependency><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId><version>1.2.25</version></dependency>' ;;
    *) binding='
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>' ;;
  esac
  cat <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>kbackup.testenv</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$v</version>
      <exclusions>
        <exclusion><groupId>ch.qos.logback</groupId><artifactId>*</artifactId></exclusion>
        <exclusion><groupId>org.slf4j</groupId><artifactId>slf4j-log4j12</artifactId></exclusion>
      </exclusions>
    </dependency>$binding
  </dependencies>
</project>
POM
}

install_kafka() {
  local v dir
  for v in $KAFKA_VERSIONS; do
    dir="$CACHE/kafka/$v"
    if [ -f "$dir/.complete" ]; then log "kafka $v: cached in $dir"; continue; fi
    log "kafka $v: resolving kafka_2.13 and its runtime dependencies with mvn"
    rm -rf "$dir"; mkdir -p "$dir/libs"
    kafka_pom "$v" > "$dir/pom.xml"
    mvn -B -q -f "$dir/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir/libs" \
      > "$CACHE/logs/mvn-kafka-$v.log" 2>&1 || { tail -50 "$CACHE/logs/mvn-kafka-$v.log" >&2; return 1; }
    ls "$dir/libs" | grep -q "^kafka_2.13-$v.jar$" || { log "kafka $v: kafka_2.13 jar missing"; return 1; }
    touch "$dir/.complete"
    log "kafka $v: $(ls "$dir/libs" | wc -l) jars in $dir/libs"
  done
}

# go_tool NAME PACKAGE VERSION: go install PACKAGE@VERSION into $CACHE/bin (once per version).
go_tool() {
  local name=$1 pkg=$2 version=$3 t0
  local stamp="$CACHE/bin/.$name-$version"
  if [ -x "$CACHE/bin/$name" ] && [ -f "$stamp" ]; then log "$name: cached in $CACHE/bin/$name"; return; fi
  log "$name: go install $pkg@$version"
  t0=$(date +%s)
  rm -f "$CACHE/bin/.$name-"*
  ( cd /tmp && GOBIN="$CACHE/bin" GOFLAGS=-buildvcs=false go install "$pkg@$version" ) \
    > "$CACHE/logs/$name-install.log" 2>&1 || { tail -50 "$CACHE/logs/$name-install.log" >&2; return 1; }
  touch "$stamp"
  log "$name: installed $CACHE/bin/$name in $(( $(date +%s) - t0 ))s"
}

install_minio() { go_tool minio github.com/minio/minio "$MINIO_VERSION"; }
install_helm() { go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"; }
install_promtool() { go_tool promtool github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL_VERSION"; }

install_python() {
  local venv="$CACHE/venv"
  if [ -f "$venv/.complete" ]; then log "python: cached venv $venv"; return; fi
  log "python: venv $venv with moto[server], confluent-kafka"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q 'moto[server]' 'confluent-kafka' > "$CACHE/logs/pip.log" 2>&1 \
    || { tail -50 "$CACHE/logs/pip.log" >&2; return 1; }
  "$venv/bin/python" -c 'import confluent_kafka, moto; print("confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0], "moto", moto.__version__)' >&2
  touch "$venv/.complete"
}

parts=("$@"); [ ${#parts[@]} -gt 0 ] || parts=(kafka minio python helm promtool)
start=$(date +%s)
pids=(); names=()
for p in "${parts[@]}"; do
  case "$p" in
    kafka|minio|python|helm|promtool) "install_$p" & pids+=($!); names+=("$p") ;;
    *) echo "unknown part $p (want kafka, minio, python, helm, promtool)" >&2; exit 2 ;;
  esac
done
rc=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then log "${names[$i]}: FAILED"; rc=1; fi
done
log "done in $(( $(date +%s) - start ))s (cache $CACHE)"
exit $rc
