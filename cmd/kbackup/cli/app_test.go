package cli

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/kbackup/kbackup/manifest"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	out, errOut, code := runCLI(t, nil, "version")
	want := "kbackup " + Version + "\nbuilt with " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH +
		"\narchive format version 3\n"
	if code != 0 || errOut != "" || out != want || manifest.FormatVersion != 3 {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errOut)
	}
}

func TestNoArchive(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	missing := filepath.Join(t.TempDir(), "nope")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"empty dir ls", []string{"ls", "--store", "file://" + empty}, []string{"no kbackup archive at file://" + empty, "kbackup.json", "wrong --store"}},
		{"empty dir cat", []string{"cat", "--store", "file://" + empty, "--topic", "t"}, []string{"no kbackup archive"}},
		{"empty dir verify", []string{"verify", "--store", "file://" + empty}, []string{"no kbackup archive"}},
		{"missing dir", []string{"ls", "--store", "file://" + missing}, []string{"no kbackup archive at file://" + missing, "does not exist"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCLI(t, nil, tc.args...)
			if code != ExitFailure || out != "" {
				t.Fatalf("exit %d stdout %q", code, out)
			}
			oneLineErr(t, errOut, tc.want...)
		})
	}
	// Reading commands create nothing.
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("ls created %s: %v", missing, err)
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Fatalf("ls wrote into %s: %v", empty, ents)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"unknown command", []string{"frobnicate"}, nil, []string{`unknown command "frobnicate"`, "kbackup --help"}},
		{"unknown flag", []string{"ls", "--bogus"}, nil, []string{"bogus", "kbackup ls --help"}},
		{"unknown global flag", []string{"--bogus", "ls"}, nil, []string{"bogus", "kbackup --help"}},
		{"no store", []string{"ls"}, nil, []string{"--store", "KBACKUP_STORE"}},
		{"bad store URL", []string{"ls", "--store", "/tmp/x"}, nil, []string{"missing scheme", "file:///tmp/x"}},
		{"bad scheme", []string{"verify", "--store", "ftp://x/y"}, nil, []string{"unsupported scheme"}},
		{"bad regex", []string{"ls", "--store", "file:///tmp", "--topics", "("}, nil, []string{"--topics"}},
		{"bad log level", []string{"ls", "--store", "file:///tmp", "--log-level", "loud"}, nil, []string{"--log-level"}},
		{"bad log format env", []string{"ls", "--store", "file:///tmp"}, map[string]string{"KBACKUP_LOG_FORMAT": "xml"}, []string{"--log-format"}},
		{"bad path style env", []string{"ls", "--store", "file:///tmp"}, map[string]string{"KBACKUP_S3_PATH_STYLE": "maybe"}, []string{"KBACKUP_S3_PATH_STYLE"}},
		{"bad sse", []string{"ls", "--store", "s3://bucket/p", "--s3-sse", "rot13"}, nil, []string{"--s3-sse"}},
		{"verify concurrency", []string{"verify", "--store", "file:///tmp", "--concurrency", "0"}, nil, []string{"--concurrency"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCLI(t, tc.env, tc.args...)
			if code == ExitOK || out != "" {
				t.Fatalf("exit %d stdout %q", code, out)
			}
			oneLineErr(t, errOut, tc.want...)
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"--help"}, {"ls", "--help"}, {"cat", "-h"}, {"verify", "--help"}} {
		out, errOut, code := runCLI(t, nil, args...)
		if code != 0 || errOut != "" || !strings.Contains(out, "USAGE") {
			t.Fatalf("%v: exit %d stderr %q stdout %q", args, code, errOut, out)
		}
	}
	out, _, _ := runCLI(t, nil, "cat", "--help")
	for _, w := range []string{"--from-offset", "--topic-id", "KBACKUP_TOPIC", "KBACKUP_STORE", "RFC 3339"} {
		if !strings.Contains(out, w) {
			t.Errorf("cat --help lacks %q", w)
		}
	}
}

// TestGlobalFlags: global flags work before and after the command name and
// from the environment; the command line wins over the environment, and a
// flag after the command name over one before it.
func TestGlobalFlags(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	other := "file://" + t.TempDir() // an empty store: "no kbackup archive"
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		ok   bool
	}{
		{"after", []string{"ls", "--store", f.url}, nil, true},
		{"before", []string{"--store", f.url, "ls"}, nil, true},
		{"env", []string{"ls"}, map[string]string{"KBACKUP_STORE": f.url}, true},
		{"flag before beats env", []string{"--store", f.url, "ls"}, map[string]string{"KBACKUP_STORE": other}, true},
		{"flag after beats env", []string{"ls", "--store", f.url}, map[string]string{"KBACKUP_STORE": other}, true},
		{"after beats before", []string{"--store", other, "ls", "--store", f.url}, nil, true},
		{"env wrong", []string{"ls"}, map[string]string{"KBACKUP_STORE": other}, false},
		{"log flags", []string{"--log-level", "debug", "ls", "--store", f.url, "--log-format", "json"}, nil, true},
		{"s3 flags ignored for file", []string{"ls", "--store", f.url, "--s3-region", "eu-west-1", "--s3-path-style"}, map[string]string{"KBACKUP_S3_ENDPOINT": "http://localhost:1"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCLI(t, tc.env, tc.args...)
			if tc.ok != (code == 0) {
				t.Fatalf("exit %d stderr %q", code, errOut)
			}
			if tc.ok && !strings.Contains(out, "2 topics, 4 partitions") {
				t.Fatalf("stdout %q", out)
			}
		})
	}
}

// TestEnvFromProcess: KBACKUP_STORE in the real process environment (Run,
// not run) selects the store. Not parallel: it sets the environment.
func TestEnvFromProcess(t *testing.T) {
	f := newFixture(t)
	t.Setenv("KBACKUP_STORE", f.url)
	t.Setenv("KBACKUP_TOPIC", "orders")
	t.Setenv("KBACKUP_PARTITION", "1")
	var out, errb strings.Builder
	code := Run(t.Context(), []string{"kbackup", "cat"}, &out, &errb)
	if code != 0 || out.String() != lines(catOrders1) {
		t.Fatalf("exit %d stdout %q stderr %q", code, out.String(), errb.String())
	}
}
