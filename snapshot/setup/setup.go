// Package setup builds a snapshot.Env from a snapshot.Config: the store
// from its URL, the provider from its type (snapshot/ebs or
// snapshot/dirprov), the Kafka cluster connection and the shell hooks. It
// is separate from package snapshot so that the providers can import it.
package setup

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/kbackup/kbackup/snapshot"
	"github.com/kbackup/kbackup/snapshot/dirprov"
	"github.com/kbackup/kbackup/snapshot/ebs"
	"github.com/kbackup/kbackup/store"
	"github.com/kbackup/kbackup/store/storeurl"
)

// Provider returns the provider the configuration names.
func Provider(ctx context.Context, cfg *snapshot.Config, log *slog.Logger) (snapshot.Provider, error) {
	switch cfg.Provider.Type {
	case "dir":
		return dirprov.New(cfg.Provider.Dir.Path)
	case "ebs":
		return ebs.NewFromConfig(ctx, cfg.Provider.EBS, log)
	}
	return nil, fmt.Errorf("%w: provider.type %q is not ebs or dir", snapshot.ErrConfig, cfg.Provider.Type)
}

// Store opens the store cfg names (its store URL and s3 section), the one
// way the snapshot job and roll-forward open it.
func Store(ctx context.Context, cfg *snapshot.Config) (store.Store, error) {
	return storeurl.Open(ctx, cfg.Store, storeurl.S3Flags{Endpoint: cfg.S3.Endpoint, Region: cfg.S3.Region,
		PathStyle: cfg.S3.PathStyle, SSE: cfg.S3.SSE, SSEKMSKeyID: cfg.S3.SSEKMSKeyID})
}

// Env opens everything cfg names. withCluster also creates the Kafka
// client (run and restore need it; list and prune do not). The returned
// function closes what was opened.
func Env(ctx context.Context, cfg *snapshot.Config, log *slog.Logger, withCluster bool) (snapshot.Env, func(), error) {
	st, err := Store(ctx, cfg)
	if err != nil {
		return snapshot.Env{}, nil, err
	}
	p, err := Provider(ctx, cfg, log)
	if err != nil {
		return snapshot.Env{}, nil, err
	}
	env := snapshot.Env{Config: cfg, Store: st, Provider: p, Logger: log, Control: snapshot.NewShellControl(cfg, log)}
	closeFn := func() {}
	if withCluster {
		kc, err := snapshot.NewKafkaCluster(ctx, cfg.Kafka.Options())
		if err != nil {
			return snapshot.Env{}, nil, err
		}
		env.Cluster = kc
		closeFn = kc.Close
	}
	return env, closeFn, nil
}
