package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"text/template"
	"time"
)

// Broker is one broker as the control hooks and providers see it.
type Broker struct {
	// ID is the Kafka node id.
	ID int32
	// Host is the configured host name.
	Host string
	// Cluster is the configured cluster name.
	Cluster string
}

// Control starts, stops and inspects brokers. Production uses ShellControl
// (the configured hooks); tests may pass FuncControl. Implementations must
// be safe for concurrent use on different brokers.
type Control interface {
	// Stop asks the broker to stop. It returns when the request was made;
	// the orchestrator polls Running to confirm the broker is down.
	Stop(ctx context.Context, b Broker) error
	// Start asks the broker to start; the orchestrator polls Running.
	Start(ctx context.Context, b Broker) error
	// Running reports whether the broker process runs. An error means the
	// state is unknown (the orchestrator retries until its timeout).
	Running(ctx context.Context, b Broker) (bool, error)
}

// FuncControl is a Control made of Go functions (for tests and embedding).
// A nil function is an error when called.
type FuncControl struct {
	StopFn    func(ctx context.Context, b Broker) error
	StartFn   func(ctx context.Context, b Broker) error
	RunningFn func(ctx context.Context, b Broker) (bool, error)
}

var errNoFunc = errors.New("no function configured")

// Stop implements Control.
func (f FuncControl) Stop(ctx context.Context, b Broker) error {
	if f.StopFn == nil {
		return errNoFunc
	}
	return f.StopFn(ctx, b)
}

// Start implements Control.
func (f FuncControl) Start(ctx context.Context, b Broker) error {
	if f.StartFn == nil {
		return errNoFunc
	}
	return f.StartFn(ctx, b)
}

// Running implements Control.
func (f FuncControl) Running(ctx context.Context, b Broker) (bool, error) {
	if f.RunningFn == nil {
		return false, errNoFunc
	}
	return f.RunningFn(ctx, b)
}

// ShellControl runs the configured hook commands with sh -c, each bounded
// by a timeout; the hook's process group is killed when it runs over.
type ShellControl struct {
	cfg     *Config
	timeout time.Duration
	log     *slog.Logger
}

// NewShellControl returns the Control that runs cfg's hooks. A nil log
// discards the hooks' output.
func NewShellControl(cfg *Config, log *slog.Logger) *ShellControl {
	if log == nil {
		log = discardLogger()
	}
	return &ShellControl{cfg: cfg, timeout: cfg.Timeouts.HookTimeout(), log: log}
}

var _ Control = (*ShellControl)(nil)

// hookData is what a hook template sees.
type hookData struct {
	ID      int32
	Host    string
	Cluster string
}

func parseHook(cmd string) (*template.Template, error) {
	t, err := template.New("hook").Option("missingkey=error").Parse(cmd)
	if err != nil {
		return nil, fmt.Errorf("invalid template %q: %w", cmd, err)
	}
	if _, err := render(t, Broker{ID: 1, Host: "h", Cluster: "c"}); err != nil {
		return nil, fmt.Errorf("invalid template %q: %w", cmd, err)
	}
	return t, nil
}

func render(t *template.Template, b Broker) (string, error) {
	var buf bytes.Buffer
	if err := t.Execute(&buf, hookData{ID: b.ID, Host: b.Host, Cluster: b.Cluster}); err != nil {
		return "", err
	}
	return buf.String(), nil
}

func (s *ShellControl) hooks(b Broker) (Hooks, error) {
	bc, ok := s.cfg.broker(b.ID)
	if !ok {
		return Hooks{}, fmt.Errorf("broker %d is not in the configuration", b.ID)
	}
	return bc.Hooks.merge(s.cfg.Hooks), nil
}

// run executes one hook; it returns the exit code (0 on success) and an
// error when the command could not run or ran over its timeout.
func (s *ShellControl) run(ctx context.Context, name, cmd string, b Broker) (int, string, error) {
	t, err := parseHook(cmd)
	if err != nil {
		return -1, "", err
	}
	line, err := render(t, b)
	if err != nil {
		return -1, "", fmt.Errorf("%s hook for broker %d: %w", name, b.ID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	c.Env = append(os.Environ(),
		fmt.Sprintf("KBACKUP_BROKER_ID=%d", b.ID), "KBACKUP_BROKER_HOST="+b.Host, "KBACKUP_CLUSTER="+b.Cluster)
	var out tailBuffer
	c.Stdout, c.Stderr = &out, &out
	killGroupOnCancel(c)
	c.WaitDelay = 5 * time.Second
	err = c.Run()
	text := strings.TrimSpace(out.String())
	s.log.Debug("hook ran", "hook", name, "broker", b.ID, "output", text, "err", err)
	if ctx.Err() != nil {
		return -1, text, fmt.Errorf("%s hook for broker %d ran over %s: %w", name, b.ID, s.timeout, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), text, nil
	}
	if err != nil {
		return -1, text, fmt.Errorf("%s hook for broker %d: %w", name, b.ID, err)
	}
	return 0, text, nil
}

func (s *ShellControl) action(ctx context.Context, name string, b Broker, pick func(Hooks) string) error {
	h, err := s.hooks(b)
	if err != nil {
		return err
	}
	code, out, err := s.run(ctx, name, pick(h), b)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("%s hook for broker %d exited %d: %s", name, b.ID, code, oneLine(out))
	}
	return nil
}

// Stop implements Control with the stop hook.
func (s *ShellControl) Stop(ctx context.Context, b Broker) error {
	return s.action(ctx, "stop", b, func(h Hooks) string { return h.Stop })
}

// Start implements Control with the start hook.
func (s *ShellControl) Start(ctx context.Context, b Broker) error {
	return s.action(ctx, "start", b, func(h Hooks) string { return h.Start })
}

// Running implements Control with the status hook: exit 0 = running.
func (s *ShellControl) Running(ctx context.Context, b Broker) (bool, error) {
	h, err := s.hooks(b)
	if err != nil {
		return false, err
	}
	code, _, err := s.run(ctx, "status", h.Status, b)
	if err != nil {
		return false, err
	}
	return code == 0, nil
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// oneLine folds text onto one line, at most 300 characters.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = "..." + s[len(s)-300:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
