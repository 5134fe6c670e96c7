//go:build integration

package main

import (
	"testing"

	"github.com/kbackup/kbackup/testenv"
)

// TestArchiversDefaultFlagsRealKafka is TestArchiversDefaultFlags against a
// real 3-broker Kafka cluster and MinIO.
func TestArchiversDefaultFlagsRealKafka(t *testing.T) {
	k := testenv.UseKafka(t)
	s3 := testenv.UseMinIO(t)
	topic := testenv.TopicName(t, "orders")
	k.CreateTopic(t, topic, 6, 3, nil)
	url, flags := s3.StoreURL(s3.Prefix(t))
	runArchiversScenario(t, archiverEnv{brokers: k.Brokers(), store: url, storeFlags: flags, env: s3.AWSEnv(), partitions: 6}, topic)
}
