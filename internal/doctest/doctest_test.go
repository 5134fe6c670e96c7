package doctest

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

const sample = "# Title\n\n" +
	"<!-- doctest: sh name=quick -->\n" +
	"```sh\n" +
	"# a comment\n" +
	"kbackup ls --store s3://backups/x\n" +
	"\n" +
	"kbackup archive \\\n" +
	"  --brokers kafka-0:9092 \\\n" +
	"  --topics 'orders\\..*'   # continuous\n" +
	"```\n\n" +
	"Some text.\n\n" +
	"```sh\nnot an example\n<!-- doctest: sh name=inside -->\n```\n\n" +
	"Prose may name `<!-- doctest: sh name=x -->` markers.\n" +
	"- item:\n" +
	"  <!-- doctest: systemd name=unit path=/etc/x.service -->\n" +
	"  ```ini\n" +
	"  [Service]\n" +
	"  ExecStart=/usr/local/bin/kbackup archive\n" +
	"  ```\n"

func TestParse(t *testing.T) {
	t.Parallel()
	bs, err := Parse("X.md", sample)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 {
		t.Fatalf("%d blocks: %+v", len(bs), bs)
	}
	if b := bs[0]; b.Kind != "sh" || b.Name != "quick" || b.Lang != "sh" || b.Line != 4 || b.ID() != "X.md#quick" ||
		!strings.HasPrefix(b.Text, "# a comment\n") {
		t.Fatalf("block 0: %+v", b)
	}
	if b := bs[1]; b.Kind != "systemd" || b.Attrs["path"] != "/etc/x.service" || b.Text != "[Service]\nExecStart=/usr/local/bin/kbackup archive\n" {
		t.Fatalf("block 1: %+v", b)
	}
	cmds := Commands(bs[0].Text)
	want := []Command{{2, "kbackup ls --store s3://backups/x"}, {4, "kbackup archive    --brokers kafka-0:9092    --topics 'orders\\..*'   # continuous"}}
	if !reflect.DeepEqual(cmds, want) {
		t.Fatalf("commands %+v", cmds)
	}
	args, err := Args(cmds[1].Text)
	if err != nil || !reflect.DeepEqual(args, []string{"kbackup", "archive", "--brokers", "kafka-0:9092", "--topics", `orders\..*`}) {
		t.Fatalf("args %q %v", args, err)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for name, md := range map[string]string{
		"no fence":      "<!-- doctest: sh name=a -->\ntext\n",
		"at end":        "<!-- doctest: sh name=a -->",
		"no name":       "<!-- doctest: sh -->\n```sh\nx\n```\n",
		"bad attr":      "<!-- doctest: sh name=a path -->\n```sh\nx\n```\n",
		"unclosed":      "<!-- doctest: sh name=a -->\n```sh\nx\n",
		"duplicate":     "<!-- doctest: sh name=a -->\n```sh\nx\n```\n<!-- doctest: sh name=a -->\n```sh\ny\n```\n",
		"typo'd marker": "<!-- doctest sh name=a -->\n```sh\nx\n```\n",
	} {
		if _, err := Parse("X.md", md); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestArgs(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][]string{
		`a "b c" 'd e'`:          {"a", "b c", "d e"},
		`--groups 'billing|x' #`: {"--groups", "billing|x"},
		`a\ b "q\"x" 'r\n'`:      {"a b", `q"x`, `r\n`},
		`x=a#b`:                  {"x=a#b"},
	} {
		got, err := Args(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Args(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`a 'b`, `a "b`} {
		if _, err := Args(bad); err == nil {
			t.Errorf("Args(%q) accepted", bad)
		}
	}
}

func TestSubstitute(t *testing.T) {
	t.Parallel()
	subs := []Substitution{{Name: "brokers", Pattern: regexp.MustCompile(`kafka-\d:9092(,kafka-\d:9092)*`),
		Replace: func([]string) string { return "127.0.0.1:1,127.0.0.1:2" }},
		{Name: "bucket", Pattern: regexp.MustCompile(`s3://([a-z-]+)/`), Replace: func(m []string) string { return "s3://test/run/" + m[1] + "/" }}}
	got := Substitute("kbackup x --brokers kafka-0:9092,kafka-1:9092 --store s3://backups/prod", subs)
	if got != "kbackup x --brokers 127.0.0.1:1,127.0.0.1:2 --store s3://test/run/backups/prod" {
		t.Fatalf("%q", got)
	}
}
