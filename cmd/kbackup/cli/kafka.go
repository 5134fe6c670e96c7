package cli

import (
	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/kafkaconn"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/storeurl"
)

// kafkaOptions builds the Kafka connection options of a command that talks
// to Kafka: the global --brokers plus the connection-security flags.
func kafkaOptions(c *cli.Context, s *session) (kafkaconn.Options, error) {
	o := kafkaConnOptions(c)
	o.Brokers = s.g.brokers
	o.Logger = s.log
	if len(o.Brokers) == 0 {
		return o, usagef(c, "no Kafka brokers given: use --brokers host:port,... or %s", EnvVar(flagBrokers))
	}
	if err := o.Validate(); err != nil {
		return o, usagef(c, "%v", err)
	}
	return o, nil
}

// openStore opens --store for writing (a file:// directory is created).
func openStore(c *cli.Context, s *session) (store.Store, error) {
	if s.g.store == "" {
		return nil, usagef(c, "no archive given: use --store URL or %s (file:///abs/dir or s3://bucket/prefix)", EnvVar(flagStore))
	}
	if _, err := storeurl.Parse(s.g.store); err != nil {
		return nil, usagef(c, "%v", err)
	}
	return storeurl.Open(c.Context, s.g.store, storeurl.S3Flags{Endpoint: s.g.s3Endpoint, Region: s.g.s3Region,
		PathStyle: s.g.s3PathStyle, SSE: s.g.s3SSE, SSEKMSKeyID: s.g.s3KMSKeyID})
}
