package main

import (
	"testing"

	"github.com/kbackup/kbackup/internal/kfaketest"
)

// TestArchiversDefaultFlags runs the deployment scenario (two continuous
// archivers with default flags, SIGKILL, SIGTERM, /metrics, exact archive)
// on the built binary against in-process Kafka (kfake) and a local store.
// Its real-Kafka twin is TestArchiversDefaultFlagsRealKafka.
func TestArchiversDefaultFlags(t *testing.T) {
	c := kfaketest.Cluster(t)
	kfaketest.CreateTopic(t, c, "orders", 6, nil)
	_, dir := kfaketest.Store(t)
	runArchiversScenario(t, archiverEnv{brokers: c.ListenAddrs(), store: "file://" + dir, partitions: 6}, "orders")
}
