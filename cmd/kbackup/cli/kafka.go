package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/kafkaconn"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/storeurl"
)

// kafkaOptions builds the Kafka connection options of a command that talks
// to Kafka: the global --brokers plus the connection-security flags.
func kafkaOptions(c *cli.Context, s *session) (kafkaconn.Options, error) {
	o := kafkaconn.FromContext(c)
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

// parseSize parses a byte size: a plain number, or one with a suffix
// (KB, MB, GB = powers of 1000; KiB, MiB, GiB = powers of 1024).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q: use a number of bytes, optionally with KiB, MiB, GiB, KB, MB or GB", s)
	}
	return n * mult, nil
}
