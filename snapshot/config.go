package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kbackup/kbackup/kafkaconn"
)

// Mode is how a cycle treats the brokers while their volumes are snapshot.
type Mode string

// Cycle modes.
const (
	// ModeCold stops every broker, snapshots all volumes in parallel and
	// starts every broker again: the strongest consistency (one cut across
	// the whole cluster), at the price of a full outage.
	ModeCold Mode = "cold"
	// ModeRolling stops, snapshots and starts one broker at a time, waiting
	// until its replicas are back in sync before the next: no outage with
	// replication factor >= 2 (producers with acks=all keep working when
	// min.insync.replicas <= RF-1), but the brokers' cuts differ in time.
	ModeRolling Mode = "rolling"
	// ModeHot stops nothing: each broker's volumes are snapshot together
	// (crash-consistent per instance). Weaker: a broker restored from it
	// recovers as after a power loss (log recovery truncates torn tails).
	ModeHot Mode = "hot"
)

// Valid reports whether m is a known mode.
func (m Mode) Valid() bool { return m == ModeCold || m == ModeRolling || m == ModeHot }

// Duration is a time.Duration read from YAML as a Go duration string
// ("90s", "15m", "2h") or a number of days ("30d").
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration: %w", n.Line, err)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// ParseDuration parses a Go duration or a whole number of days ("7d").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		const maxDays = int(math.MaxInt64 / int64(24*time.Hour))
		if err != nil || n < 0 || n > maxDays {
			return 0, fmt.Errorf("invalid duration %q: want e.g. 30d, 12h, 90s (at most %dd)", s, maxDays)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid duration %q: want e.g. 30d, 12h, 90s", s)
	}
	return time.Duration(v), nil
}

// Config is the snapshot job's YAML configuration (docs/OPERATIONS.md has
// a full, commented example). Zero values mean the documented defaults.
type Config struct {
	// Cluster names the cluster; it is part of every store key and tag of
	// its cycles, and restore refuses cycles of another name. Required;
	// [A-Za-z0-9._-], 1..100 characters.
	Cluster string `yaml:"cluster"`
	// Store is the store URL where cycle records and the lock live
	// (file:///abs/dir or s3://bucket/prefix). Required.
	Store string `yaml:"store"`
	// S3 carries S3 settings for an s3:// Store.
	S3 S3Config `yaml:"s3"`
	// Kafka is how the job reaches the cluster for health checks and high
	// watermarks.
	Kafka KafkaConfig `yaml:"kafka"`
	// Provider selects and configures the volume provider.
	Provider ProviderConfig `yaml:"provider"`
	// Mode is the default cycle mode; "" means cold.
	Mode Mode `yaml:"mode"`
	// Hooks are the default broker control commands; a broker's own hooks
	// override them one by one.
	Hooks Hooks `yaml:"hooks"`
	// Brokers are every broker of the cluster. Required, ids unique.
	Brokers []BrokerConfig `yaml:"brokers"`
	// Retention is what prune keeps.
	Retention Retention `yaml:"retention"`
	// Tags are added to every snapshot and restored volume (EBS).
	Tags map[string]string `yaml:"tags"`
	// Timeouts bound each step.
	Timeouts Timeouts `yaml:"timeouts"`
}

// S3Config are the --s3-* settings for an s3:// store.
type S3Config struct {
	// Endpoint is a custom endpoint URL (MinIO); "" = AWS.
	Endpoint string `yaml:"endpoint"`
	// Region; "" = the AWS chain's.
	Region string `yaml:"region"`
	// PathStyle addresses buckets in the URL path.
	PathStyle bool `yaml:"path_style"`
	// SSE is the server-side encryption of objects the job writes: ""
	// (the bucket's default), "AES256" or "aws:kms" (as --s3-sse).
	SSE string `yaml:"sse"`
	// SSEKMSKeyID is the KMS key with SSE "aws:kms"; "" = the AWS managed
	// key (as --s3-sse-kms-key-id).
	SSEKMSKeyID string `yaml:"sse_kms_key_id"`
}

// KafkaConfig is the connection to the cluster (see kafkaconn.Options).
type KafkaConfig struct {
	// Brokers are seed brokers host:port; "" entries are ignored. Required.
	Brokers []string `yaml:"brokers"`
	// TLS enables TLS with the system roots (implied by the TLS files).
	TLS bool `yaml:"tls"`
	// TLSCAFile, TLSCertFile, TLSKeyFile are PEM files.
	TLSCAFile   string `yaml:"tls_ca_file"`
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// SASLMechanism: "", PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, AWS_MSK_IAM.
	SASLMechanism string `yaml:"sasl_mechanism"`
	// SASLUsername for PLAIN and SCRAM.
	SASLUsername string `yaml:"sasl_username"`
	// SASLPasswordFile holds the password (never in the config itself).
	SASLPasswordFile string `yaml:"sasl_password_file"`
}

// Options returns the kafkaconn options for this connection.
func (k KafkaConfig) Options() kafkaconn.Options {
	return kafkaconn.Options{
		Brokers: k.Brokers, ClientID: "kbackup-snapshot", TLS: k.TLS,
		TLSCAFile: k.TLSCAFile, TLSCertFile: k.TLSCertFile, TLSKeyFile: k.TLSKeyFile,
		SASLMechanism: k.SASLMechanism, SASLUsername: k.SASLUsername, SASLPasswordFile: k.SASLPasswordFile,
	}
}

// ProviderConfig selects the provider: Type "ebs" or "dir".
type ProviderConfig struct {
	// Type is "ebs" or "dir". Required.
	Type string `yaml:"type"`
	// EBS configures the ebs provider.
	EBS EBSConfig `yaml:"ebs"`
	// Dir configures the dir provider.
	Dir DirConfig `yaml:"dir"`
}

// EBSConfig configures the ebs provider.
type EBSConfig struct {
	// Region; "" = the AWS chain's.
	Region string `yaml:"region"`
	// Endpoint is a custom EC2 endpoint URL (moto in tests); "" = AWS.
	Endpoint string `yaml:"endpoint"`
	// PollInterval between DescribeSnapshots/DescribeVolumes calls; 0 = 5s.
	PollInterval Duration `yaml:"poll_interval"`
}

// DirConfig configures the dir provider.
type DirConfig struct {
	// Path is the directory snapshots are copied to. Required for dir.
	Path string `yaml:"path"`
}

// BrokerConfig is one broker.
type BrokerConfig struct {
	// ID is the Kafka node id. Required, unique.
	ID int32 `yaml:"id"`
	// Host is the broker's host name, for hooks ({{.Host}}). Required.
	Host string `yaml:"host"`
	// Volumes are EBS volume ids (ebs provider); or use VolumeTags.
	Volumes []string `yaml:"volumes"`
	// VolumeTags discover the EBS volumes by tag (all must match).
	VolumeTags map[string]string `yaml:"volume_tags"`
	// Dirs are the broker's data directories (dir provider; log.dirs and
	// the KRaft metadata directory).
	Dirs []string `yaml:"dirs"`
	// Hooks override the default hooks for this broker.
	Hooks Hooks `yaml:"hooks"`
}

// Hooks are shell commands (run with sh -c) that control a broker. They
// are Go templates with the fields {{.ID}}, {{.Host}} and {{.Cluster}};
// the same values are in the environment as KBACKUP_BROKER_ID,
// KBACKUP_BROKER_HOST and KBACKUP_CLUSTER.
type Hooks struct {
	// Stop stops the broker (exit 0 = the stop was requested).
	Stop string `yaml:"stop"`
	// Start starts the broker (exit 0 = the start was requested).
	Start string `yaml:"start"`
	// Status exits 0 while the broker process runs and non-zero when it
	// does not (systemctl is-active semantics).
	Status string `yaml:"status"`
}

// merge returns h with empty commands taken from def.
func (h Hooks) merge(def Hooks) Hooks {
	if h.Stop == "" {
		h.Stop = def.Stop
	}
	if h.Start == "" {
		h.Start = def.Start
	}
	if h.Status == "" {
		h.Status = def.Status
	}
	return h
}

// Retention is what prune keeps. A complete cycle is kept when any rule
// keeps it; the newest complete cycle is always kept.
type Retention struct {
	// KeepLast keeps the newest N complete cycles; 0 = no count rule.
	KeepLast int `yaml:"keep_last"`
	// MaxAge keeps complete cycles younger than this; 0 = no age rule.
	MaxAge Duration `yaml:"max_age"`
}

// Timeouts bound the steps of a cycle. Zero means the default.
type Timeouts struct {
	// Hook bounds one hook command; 0 = 2m.
	Hook Duration `yaml:"hook"`
	// Stop bounds stopping a broker until its status says it is down; 0 = 10m.
	Stop Duration `yaml:"stop"`
	// Start bounds starting a broker until its status says it runs; 0 = 10m.
	Start Duration `yaml:"start"`
	// Healthy bounds waiting for the cluster to become healthy; 0 = 15m.
	Healthy Duration `yaml:"healthy"`
	// Snapshot bounds waiting for snapshots to complete; 0 = 6h.
	Snapshot Duration `yaml:"snapshot"`
	// Lock is how long a cycle's lock is valid; an older lock is taken
	// over as stale. It must exceed the longest cycle; 0 = 24h.
	Lock Duration `yaml:"lock"`
}

// Defaults of the Timeouts fields (documented in docs/OPERATIONS.md).
const (
	DefaultHookTimeout     = 2 * time.Minute
	DefaultStopTimeout     = 10 * time.Minute
	DefaultStartTimeout    = 10 * time.Minute
	DefaultHealthyTimeout  = 15 * time.Minute
	DefaultSnapshotTimeout = 6 * time.Hour
	DefaultLockTTL         = 24 * time.Hour
)

func def(d Duration, v time.Duration) time.Duration {
	if d <= 0 {
		return v
	}
	return time.Duration(d)
}

// HookTimeout etc. return the timeouts with defaults applied.
func (t Timeouts) HookTimeout() time.Duration { return def(t.Hook, DefaultHookTimeout) }

// StopTimeout returns Stop or its default.
func (t Timeouts) StopTimeout() time.Duration { return def(t.Stop, DefaultStopTimeout) }

// StartTimeout returns Start or its default.
func (t Timeouts) StartTimeout() time.Duration { return def(t.Start, DefaultStartTimeout) }

// HealthyTimeout returns Healthy or its default.
func (t Timeouts) HealthyTimeout() time.Duration { return def(t.Healthy, DefaultHealthyTimeout) }

// SnapshotTimeout returns Snapshot or its default.
func (t Timeouts) SnapshotTimeout() time.Duration { return def(t.Snapshot, DefaultSnapshotTimeout) }

// LockTTL returns Lock or its default.
func (t Timeouts) LockTTL() time.Duration { return def(t.Lock, DefaultLockTTL) }

// ErrConfig marks an invalid configuration.
var ErrConfig = errors.New("invalid snapshot configuration")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// LoadConfig reads and validates the YAML configuration at path.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read snapshot config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes YAML strictly (unknown keys are errors) and validates it.
func ParseConfig(b []byte) (*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: the file is empty", ErrConfig)
		}
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate reports every problem at once, wrapped in ErrConfig.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRE.MatchString(c.Cluster) {
		add("cluster: %q must be 1..100 characters of [A-Za-z0-9._-]", c.Cluster)
	}
	if c.Store == "" {
		add("store: required (file:///abs/dir or s3://bucket/prefix)")
	}
	if c.Mode != "" && !c.Mode.Valid() {
		add("mode: %q is not cold, rolling or hot", c.Mode)
	}
	switch c.S3.SSE {
	case "", "AES256":
		if c.S3.SSEKMSKeyID != "" {
			add("s3.sse_kms_key_id: needs s3.sse aws:kms")
		}
	case "aws:kms":
	default:
		add("s3.sse: %q is not AES256 or aws:kms", c.S3.SSE)
	}
	var brokers []string
	for _, b := range c.Kafka.Brokers {
		if strings.TrimSpace(b) != "" {
			brokers = append(brokers, b)
		}
	}
	if len(brokers) == 0 {
		add("kafka.brokers: required (host:port, ...)")
	}
	switch c.Provider.Type {
	case "ebs":
	case "dir":
		if c.Provider.Dir.Path == "" {
			add("provider.dir.path: required for the dir provider")
		}
	case "":
		add("provider.type: required (ebs or dir)")
	default:
		add("provider.type: %q is not ebs or dir", c.Provider.Type)
	}
	if len(c.Brokers) == 0 {
		add("brokers: at least one broker is required")
	}
	seen := map[int32]bool{}
	for i, b := range c.Brokers {
		where := fmt.Sprintf("brokers[%d] (id %d)", i, b.ID)
		if seen[b.ID] {
			add("%s: duplicate id", where)
		}
		seen[b.ID] = true
		if b.ID < 0 {
			add("%s: id must be >= 0", where)
		}
		if b.Host == "" {
			add("%s: host is required", where)
		}
		switch c.Provider.Type {
		case "ebs":
			if len(b.Volumes) == 0 && len(b.VolumeTags) == 0 {
				add("%s: volumes or volume_tags required for the ebs provider", where)
			}
			if len(b.Volumes) > 0 && len(b.VolumeTags) > 0 {
				add("%s: give volumes or volume_tags, not both", where)
			}
		case "dir":
			if len(b.Dirs) == 0 {
				add("%s: dirs required for the dir provider", where)
			}
			for _, d := range b.Dirs {
				if !strings.HasPrefix(d, "/") {
					add("%s: dir %q must be absolute", where, d)
				}
			}
		}
		h := b.Hooks.merge(c.Hooks)
		for _, hk := range []struct{ name, cmd string }{{"stop", h.Stop}, {"start", h.Start}, {"status", h.Status}} {
			if hk.cmd == "" {
				add("%s: no %s hook (set hooks.%s or the broker's own)", where, hk.name, hk.name)
			} else if _, err := parseHook(hk.cmd); err != nil {
				add("%s: %s hook: %w", where, hk.name, err)
			}
		}
	}
	if c.Retention.KeepLast < 0 {
		add("retention.keep_last: must be >= 0")
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrConfig, errors.Join(errs...))
}

// mode returns the configured mode or cold.
func (c *Config) mode() Mode {
	if c.Mode == "" {
		return ModeCold
	}
	return c.Mode
}

// broker returns the configured broker with id.
func (c *Config) broker(id int32) (BrokerConfig, bool) {
	for _, b := range c.Brokers {
		if b.ID == id {
			return b, true
		}
	}
	return BrokerConfig{}, false
}

// brokerIDs returns the configured broker ids in config order.
func (c *Config) brokerIDs() []int32 {
	out := make([]int32, len(c.Brokers))
	for i, b := range c.Brokers {
		out[i] = b.ID
	}
	return out
}
