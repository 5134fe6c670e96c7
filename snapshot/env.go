// Package snapshot is the snapshot-cycle orchestrator: coordinated volume
// snapshots of every broker of a Kafka cluster (cold, rolling or hot),
// cycle records in the store with the partition high watermarks they hold,
// listing and pruning of cycles, and whole-cluster restore from one
// complete cycle (stop all, restore all volumes, start all, wait healthy).
//
// Entry points (Run, List, Prune, Restore) take an Env with everything a
// job needs; the CLI (kbackup snapshot) builds it from the YAML Config with
// snapshot/setup. Providers live in sub-packages: snapshot/ebs (AWS EBS)
// and snapshot/dirprov (directories, for bare metal, development and
// tests). Brokers are controlled through hooks (shell commands, see
// ShellControl), so systemd over ssh, kubectl or anything else works.
package snapshot

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kbackup/kbackup/store"
)

// Defaults of the Env fields whose zero value means "the default".
const (
	DefaultPoll          = 2 * time.Second
	DefaultStartAttempts = 3
)

// Env is what every snapshot job needs. Fields marked required must be
// set; the others have documented defaults.
type Env struct {
	// Config is the validated configuration. Required.
	Config *Config
	// Store holds cycle records and the lock. Required.
	Store store.Store
	// Provider takes and restores snapshots. Required.
	Provider Provider
	// Cluster answers health and high-watermark questions. Required by
	// Run and Restore; List and Prune do not use it.
	Cluster Cluster
	// Control stops and starts brokers; nil means the configured shell
	// hooks (NewShellControl).
	Control Control
	// Logger receives one line per step and a summary; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Poll is the interval between broker status and cluster health
	// checks; 0 means 2s.
	Poll time.Duration
	// StartAttempts is how often a broker's start is tried before giving
	// up; 0 means 3.
	StartAttempts int
}

// prepared returns a copy with defaults applied, or an error naming what
// is missing.
func (e Env) prepared(needCluster bool) (Env, error) {
	var errs []error
	if e.Config == nil {
		errs = append(errs, errors.New("no Config"))
	}
	if e.Store == nil {
		errs = append(errs, errors.New("no Store"))
	}
	if e.Provider == nil {
		errs = append(errs, errors.New("no Provider"))
	}
	if needCluster && e.Cluster == nil {
		errs = append(errs, errors.New("no Cluster"))
	}
	if len(errs) > 0 {
		return e, fmt.Errorf("snapshot: incomplete environment: %w", errors.Join(errs...))
	}
	if e.Logger == nil {
		e.Logger = discardLogger()
	}
	if e.Control == nil {
		e.Control = NewShellControl(e.Config, e.Logger)
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.Poll <= 0 {
		e.Poll = DefaultPoll
	}
	if e.StartAttempts <= 0 {
		e.StartAttempts = DefaultStartAttempts
	}
	return e, nil
}

func (e Env) broker(id int32) Broker {
	b, _ := e.Config.broker(id)
	return Broker{ID: id, Host: b.Host, Cluster: e.Config.Cluster}
}
