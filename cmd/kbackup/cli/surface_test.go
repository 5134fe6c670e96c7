package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/urfave/cli/v2"

	"github.com/kbackup/kbackup/archive"
)

// allCommands walks the command tree with each command's top-level name.
func allCommands(app *cli.App, fn func(top string, path string, cmd *cli.Command)) {
	var walk func(top, path string, cmds []*cli.Command)
	walk = func(top, path string, cmds []*cli.Command) {
		for _, c := range cmds {
			t, p := top, strings.TrimSpace(path+" "+c.Name)
			if t == "" {
				t = c.Name
			}
			fn(t, p, c)
			walk(t, p, c.Subcommands)
		}
	}
	walk("", "", app.Commands)
}

// TestEveryFlagReadsTheEnvironment: the one rule of assignEnv holds for
// every flag of every command (docs/CLI.md, Environment).
func TestEveryFlagReadsTheEnvironment(t *testing.T) {
	t.Parallel()
	allCommands(newApp(&bytes.Buffer{}, &bytes.Buffer{}, nil), func(top, path string, cmd *cli.Command) {
		for _, f := range cmd.Flags {
			name := f.Names()[0]
			if flagCategory(f) == globalFlagCategory || name == "help" {
				continue
			}
			env := f.(interface{ GetEnvVars() []string }).GetEnvVars()
			var want []string
			switch {
			case flagCategory(f) == kafkaFlagCategory:
				want = []string{EnvVar(name)}
			case top != "archive" && (name == "topics" || name == "exclude" || name == "groups"):
				want = []string{CommandEnvVar(top, name)}
			default:
				want = []string{CommandEnvVar(top, name), EnvVar(name)}
			}
			if strings.Join(env, ",") != strings.Join(want, ",") {
				t.Errorf("%s --%s reads %v, want %v", path, name, env, want)
			}
		}
	})
	if got := CommandEnvVar("restore", "dry-run"); got != "KBACKUP_RESTORE_DRY_RUN" {
		t.Errorf("CommandEnvVar = %s", got)
	}
}

// TestHelpShowsDefaultsOnce: every command's --help shows each default at
// most once, and no zero value dressed up as a default.
func TestHelpShowsDefaultsOnce(t *testing.T) {
	t.Parallel()
	var paths [][]string
	allCommands(newApp(&bytes.Buffer{}, &bytes.Buffer{}, nil), func(_, path string, _ *cli.Command) {
		paths = append(paths, strings.Fields(path))
	})
	paths = append(paths, nil)
	for _, p := range paths {
		out, errOut, code := runCLI(t, nil, append(p, "--help")...)
		if code != 0 || errOut != "" {
			t.Fatalf("%v --help: exit %d %s", p, code, errOut)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.Count(line, "(default") > 1 {
				t.Errorf("%v --help: default shown twice: %s", p, line)
			}
			for _, bad := range []string{"(default: 0s)", "(default: false)", "(default: 0)", `(default: "")`, "(default 5m)", "(default 3s)"} {
				if strings.Contains(line, bad) {
					t.Errorf("%v --help: %q in %s", p, bad, line)
				}
			}
		}
	}
	out, _, _ := runCLI(t, nil, "archive", "--help")
	for _, want := range []string{"(default: 3s)", "(default: 5m)", "(default: 30s)", `(default: "32MiB")`, `(default: "kbackup-archiver")`,
		"$KBACKUP_ARCHIVE_TOPICS, $KBACKUP_TOPICS", "--bootstrap-server"} {
		if !strings.Contains(out, want) {
			t.Errorf("archive --help lacks %q", want)
		}
	}
	out, _, _ = runCLI(t, nil, "restore", "--help")
	if !strings.Contains(out, "(default: 8)") || !strings.Contains(out, "[$KBACKUP_RESTORE_TOPICS]") {
		t.Errorf("restore --help:\n%s", out)
	}
}

func TestVersionFlagAndJSON(t *testing.T) {
	t.Parallel()
	cmd, _, code1 := runCLI(t, nil, "version")
	flag, _, code2 := runCLI(t, nil, "--version")
	if code1 != 0 || code2 != 0 || cmd != flag || !strings.HasPrefix(flag, "kbackup "+Version+"\n") {
		t.Fatalf("version %d %q, --version %d %q", code1, cmd, code2, flag)
	}
	out, _, code := runCLI(t, nil, "version", "--json")
	var v versionInfo
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 {
		t.Fatalf("version --json: %d %v\n%s", code, err, out)
	}
	if v.Schema != "kbackup.version/v1" || v.Version != Version || v.GoVersion != runtime.Version() || v.FormatVersion != 3 {
		t.Fatalf("version --json: %+v", v)
	}
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := runCLI(t, nil, "completion", sh)
		if code != 0 || errOut != "" {
			t.Fatalf("completion %s: exit %d %s", sh, code, errOut)
		}
		for _, want := range []string{"archive", "restore", "flush-interval", "keep-last"} {
			if !strings.Contains(out, want) {
				t.Errorf("completion %s lacks %q", sh, want)
			}
		}
		if sh == "bash" {
			if bash, err := exec.LookPath("bash"); err == nil {
				// The script parses, and completes "kbackup snapshot pr" to prune.
				script := out + `
COMP_WORDS=(kbackup snapshot pr); COMP_CWORD=2; _kbackup; echo "${COMPREPLY[*]}"
COMP_WORDS=(kbackup archive --flush); COMP_CWORD=2; _kbackup; echo "${COMPREPLY[*]}"`
				res, err := exec.Command(bash, "-c", script).CombinedOutput()
				if err != nil || string(res) != "prune\n--flush-interval\n" {
					t.Errorf("bash completion: %v\n%s", err, res)
				}
			}
		}
	}
	for _, args := range [][]string{{"completion"}, {"completion", "powershell"}} {
		_, errOut, code := runCLI(t, nil, args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d %s", args, code, errOut)
		}
	}
}

// TestArchiverEnvDoesNotLeak: the archiver's selection variables in the
// environment (an env file shared with other commands) do not change what
// ls selects; the command-scoped variable does. Not parallel: it sets the
// process environment.
func TestArchiverEnvDoesNotLeak(t *testing.T) {
	f := newFixture(t)
	t.Setenv("KBACKUP_TOPICS", "payments")
	out, errOut, code := runCLI(t, nil, "ls", "--store", f.url)
	if code != 0 || !strings.Contains(out, "orders") || !strings.Contains(out, "payments") {
		t.Fatalf("ls with KBACKUP_TOPICS set: exit %d %s\n%s", code, errOut, out)
	}
	t.Setenv("KBACKUP_LS_TOPICS", "payments")
	out, _, code = runCLI(t, nil, "ls", "--store", f.url)
	if code != 0 || strings.Contains(out, "orders") || !strings.Contains(out, "payments") {
		t.Fatalf("ls with KBACKUP_LS_TOPICS=payments: exit %d\n%s", code, out)
	}
}

// TestArchiveOnceSummaryAndExitCodes: --once prints what it archived, and
// exits 4 when nothing matched and 3 after DATA-LOSS; --bootstrap-server is
// --brokers.
func TestArchiveOnceSummaryAndExitCodes(t *testing.T) {
	t.Parallel()
	c, cl := kfakeWithTopic(t, "r", 1, 10)
	url := "file://" + filepath.Join(t.TempDir(), "a")
	brokers := c.ListenAddrs()[0]
	once := func(extra ...string) (string, string, int) {
		return runCLI(t, nil, append([]string{"archive", "--once", "--bootstrap-server", brokers, "--store", url, "--group", "", "--log-level", "error"}, extra...)...)
	}

	out, errOut, code := once()
	if code != 0 || !strings.HasPrefix(out, "archived 1 topics, 1 partitions: 10 records,") || !strings.Contains(out, "DATA-LOSS=0") {
		t.Fatalf("first run: exit %d stdout %q stderr %q", code, out, errOut)
	}

	out, errOut, code = once("--topics", "nothing-.*")
	if code != ExitNothingSelected || !strings.HasPrefix(out, "archived 0 topics") {
		t.Fatalf("no match: exit %d stdout %q", code, out)
	}
	oneLineErr(t, errOut, "no topic in the cluster matches")

	// Retention deletes offsets 10..14 before they are archived.
	produceN(t, cl, 10)
	if _, err := kadm.NewClient(cl).DeleteRecords(context.Background(), kadm.Offsets{"r": {0: {Topic: "r", Partition: 0, At: 15}}}); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = once("--json")
	var doc archiveSummaryDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if code != ExitDataLoss || doc.Schema != "kbackup.archive-summary/v1" || doc.GapOffsets["DATA-LOSS"] != 5 || doc.Records != 5 ||
		doc.Topics != 1 || doc.Partitions != 1 || len(doc.GapOffsets) != 5 {
		t.Fatalf("DATA-LOSS run: exit %d %+v", code, doc)
	}
	// The DATA-LOSS error lines are logged, then the one-line reason.
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if !strings.Contains(errOut, "level=ERROR msg=\"DATA LOSS") {
		t.Errorf("DATA-LOSS not logged at error level:\n%s", errOut)
	}
	oneLineErr(t, lines[len(lines)-1]+"\n", "DATA-LOSS: 5 offsets")
}

// TestCatTimeForms: --from/--to take a date (UTC midnight), now and times
// relative to now (the fixture's records are from 1970).
func TestCatTimeForms(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	count := func(args ...string) int {
		t.Helper()
		out, errOut, code := runCLI(t, nil, append([]string{"cat", "--store", f.url, "--topic", "orders"}, args...)...)
		if code != 0 {
			t.Fatalf("cat %v: exit %d %s", args, code, errOut)
		}
		return strings.Count(out, "\n")
	}
	all := count()
	if all == 0 || count("--to", "now") != all || count("--from", "1970-01-01", "--to", "1970-01-02") != all {
		t.Fatalf("cat with now / dates: all %d", all)
	}
	if n := count("--from", "-1d"); n != 0 {
		t.Fatalf("cat --from -1d: %d records from 1970", n)
	}
	_, errOut, code := runCLI(t, nil, "cat", "--store", f.url, "--topic", "orders", "--from", "yesterday")
	if code != ExitUsage || !strings.Contains(errOut, "relative to now") {
		t.Fatalf("cat --from yesterday: exit %d %s", code, errOut)
	}
}

// TestArchiveSummarySuperseded: records a run committed in entries another
// archiver's later claim voided are reported apart from the records it
// archived, in the line and in --json.
func TestArchiveSummarySuperseded(t *testing.T) {
	sum := archive.Summary{Topics: 1, Partitions: 2, Records: 10, Segments: 1, Bytes: 100, Superseded: 40}
	var line, doc bytes.Buffer
	if err := printArchiveSummary(&line, sum, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line.String(), ": 10 records,") || !strings.Contains(line.String(), "; 40 more records committed in entries another archiver's later claim voided") {
		t.Fatalf("summary line %q", line.String())
	}
	if err := printArchiveSummary(&doc, sum, true); err != nil {
		t.Fatal(err)
	}
	var d archiveSummaryDoc
	if err := json.Unmarshal(doc.Bytes(), &d); err != nil || d.Records != 10 || d.SupersededRecords != 40 {
		t.Fatalf("summary document %s (%v)", doc.String(), err)
	}
	line.Reset()
	if err := printArchiveSummary(&line, archive.Summary{Records: 3}, false); err != nil || strings.Contains(line.String(), "voided") {
		t.Fatalf("summary line without superseded records %q (%v)", line.String(), err)
	}
}
