// Package doctest extracts the examples that docs/*.md and README.md tell
// operators to run, so that tests run them exactly as written (docs as
// tests). A fenced code block is an example when the line right before its
// opening fence is a marker:
//
//	<!-- doctest: KIND name=NAME [key=value ...] -->
//	```sh
//	kbackup ls --store s3://backups/prod-kafka
//	```
//
// KIND says how a test runs the block (sh: a shell session; env-file,
// systemd, helm-values, helm-install, snapshot-config: see docs/TESTING.md);
// NAME identifies it (unique per file). A marker without a fence after it,
// a duplicate name or a malformed attribute is an error, so a typo cannot
// silently drop an example from the tests.
package doctest

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Block is one marked example.
type Block struct {
	File  string            // path as given to Extract
	Line  int               // 1-based line of the opening fence
	Kind  string            // e.g. "sh"
	Name  string            // unique within the file
	Attrs map[string]string // other key=value attributes
	Lang  string            // the fence's info string ("sh", "yaml", ...)
	Text  string            // the block's content, ending in a newline
}

// ID is "FILE#NAME", how tests and messages refer to a block.
func (b Block) ID() string { return b.File + "#" + b.Name }

var markerRE = regexp.MustCompile(`^<!--\s*doctest:\s*(.*?)\s*-->\s*$`)

// Extract returns the marked blocks of the Markdown file at path, in
// document order.
func Extract(path string) ([]Block, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, string(b))
}

// Parse is Extract on Markdown text; file names it in messages.
func Parse(file, text string) ([]Block, error) {
	var out []Block
	names := map[string]int{}
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimSpace(lines[i])
		if strings.HasPrefix(trimmed, "```") { // an unmarked block: skip it whole
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			}
			continue
		}
		m := markerRE.FindStringSubmatch(trimmed)
		if m == nil {
			if strings.HasPrefix(trimmed, "<!--") && strings.Contains(trimmed, "doctest") {
				return nil, fmt.Errorf("%s:%d: malformed doctest marker %q", file, i+1, lines[i])
			}
			continue
		}
		blk, err := parseMarker(m[1])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", file, i+1, err)
		}
		if i+1 >= len(lines) {
			return nil, fmt.Errorf("%s:%d: doctest marker %q is not followed by a fenced block", file, i+1, blk.Name)
		}
		fence := strings.TrimRight(lines[i+1], " ")
		indent := len(fence) - len(strings.TrimLeft(fence, " "))
		f := strings.TrimLeft(fence, " ")
		if !strings.HasPrefix(f, "```") {
			return nil, fmt.Errorf("%s:%d: doctest marker %q is not followed by a fenced block", file, i+1, blk.Name)
		}
		blk.File, blk.Line, blk.Lang = file, i+2, strings.TrimSpace(strings.TrimLeft(f, "`"))
		var body strings.Builder
		j := i + 2
		for ; j < len(lines); j++ {
			if strings.TrimSpace(lines[j]) == "```" {
				break
			}
			l := lines[j]
			if len(l) >= indent && strings.TrimSpace(l[:indent]) == "" {
				l = l[indent:]
			}
			body.WriteString(l + "\n")
		}
		if j >= len(lines) {
			return nil, fmt.Errorf("%s:%d: block %q has no closing fence", file, blk.Line, blk.Name)
		}
		blk.Text = body.String()
		if prev, dup := names[blk.Name]; dup {
			return nil, fmt.Errorf("%s:%d: block name %q already used at line %d", file, blk.Line, blk.Name, prev)
		}
		names[blk.Name] = blk.Line
		out = append(out, blk)
		i = j
	}
	return out, nil
}

var attrRE = regexp.MustCompile(`^([a-z][a-z0-9-]*)=(\S+)$`)

func parseMarker(s string) (Block, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return Block{}, fmt.Errorf("doctest marker without a kind")
	}
	b := Block{Kind: fields[0], Attrs: map[string]string{}}
	if !regexp.MustCompile(`^[a-z][a-z0-9-]*$`).MatchString(b.Kind) {
		return Block{}, fmt.Errorf("doctest marker: bad kind %q", b.Kind)
	}
	for _, f := range fields[1:] {
		m := attrRE.FindStringSubmatch(f)
		if m == nil {
			return Block{}, fmt.Errorf("doctest marker: bad attribute %q (want key=value)", f)
		}
		if m[1] == "name" {
			b.Name = m[2]
		} else {
			b.Attrs[m[1]] = m[2]
		}
	}
	if b.Name == "" {
		return Block{}, fmt.Errorf("doctest marker %q has no name=", s)
	}
	return b, nil
}

// Command is one shell command of an sh block.
type Command struct {
	Line int    // 1-based line in the block where it starts
	Text string // the command, continuation lines joined, comments kept
}

// Commands splits an sh block into commands: one per line, lines ending in
// a backslash joined with the next; blank lines and whole-line comments
// are dropped. (The examples use no here-documents or multi-line quotes.)
func Commands(text string) []Command {
	var out []Command
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if cur.Len() == 0 {
			t := strings.TrimSpace(line)
			if t == "" || strings.HasPrefix(t, "#") {
				continue
			}
			start = n
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		out = append(out, Command{Line: start, Text: strings.TrimSpace(cur.String())})
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, Command{Line: start, Text: strings.TrimSpace(cur.String())})
	}
	return out
}

// Substitution replaces a documented placeholder (docs/TESTING.md lists
// them) with the test environment's value.
type Substitution struct {
	Name    string // what the placeholder stands for, for messages
	Pattern *regexp.Regexp
	Replace func(match []string) string
}

// Substitute applies subs in order to text.
func Substitute(text string, subs []Substitution) string {
	for _, s := range subs {
		text = s.Pattern.ReplaceAllStringFunc(text, func(m string) string {
			return s.Replace(s.Pattern.FindStringSubmatch(m))
		})
	}
	return text
}

// Args splits a command into words the way the shell would for the simple
// commands the examples use: spaces separate words, single and double
// quotes group, a backslash outside single quotes escapes the next
// character. A trailing comment (" # ...") ends the command.
func Args(cmd string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(cmd); i++ {
		c := cmd[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(cmd[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", cmd)
			}
			cur.WriteString(cmd[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(cmd) && cmd[i] != '"'; i++ {
				if cmd[i] == '\\' && i+1 < len(cmd) && strings.IndexByte(`"\$`+"`", cmd[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(cmd[i])
			}
			if i >= len(cmd) {
				return nil, fmt.Errorf("unterminated \" in %q", cmd)
			}
			inWord = true
		case c == '\\' && i+1 < len(cmd):
			i++
			cur.WriteByte(cmd[i])
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			i = len(cmd)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}
