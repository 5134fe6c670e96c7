// Package topicsel is the one rule by which every kbackup command selects
// topics from --topics and --exclude (documented once, in docs/CLI.md):
//
//   - each expression is a Go regular expression that must match the whole
//     topic name (it is anchored);
//   - a topic is selected when it matches an include expression (every topic
//     when there is none) and no exclude expression;
//   - an internal topic (a name starting with "__", e.g. __consumer_offsets)
//     is selected only by an include expression that itself starts with
//     "__": "--topics '.*'" never selects internal topics, "--topics
//     '__consumer_offsets'" does.
package topicsel

import (
	"fmt"
	"regexp"
	"strings"
)

// Selector selects topics by name. The nil *Selector selects every
// non-internal topic. A Selector is immutable and safe for concurrent use.
type Selector struct {
	include []*regexp.Regexp
	src     []string // include expressions as given
	exclude []*regexp.Regexp
	exSrc   []string
}

// Compile builds a Selector from include and exclude expressions. Empty
// expressions are ignored; with no expressions at all it returns nil (every
// non-internal topic). An invalid expression is an error naming it.
func Compile(include, exclude []string) (*Selector, error) {
	s := &Selector{}
	var err error
	if s.include, s.src, err = compileAll(include); err != nil {
		return nil, err
	}
	if s.exclude, s.exSrc, err = compileAll(exclude); err != nil {
		return nil, err
	}
	if len(s.include) == 0 && len(s.exclude) == 0 {
		return nil, nil
	}
	return s, nil
}

// compileAll anchors and compiles the non-empty expressions.
func compileAll(exprs []string) (res []*regexp.Regexp, src []string, err error) {
	for _, e := range exprs {
		if e == "" {
			continue
		}
		re, err := Anchored(e)
		if err != nil {
			return nil, nil, err
		}
		res, src = append(res, re), append(src, e)
	}
	return res, src, nil
}

// Anchored compiles expr so that it must match a whole name (also used for
// consumer-group selections).
func Anchored(expr string) (*regexp.Regexp, error) {
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %w", expr, err)
	}
	return re, nil
}

// Internal reports whether topic is an internal topic ("__" prefix).
func Internal(topic string) bool { return strings.HasPrefix(topic, "__") }

// Match reports whether s selects topic.
func (s *Selector) Match(topic string) bool {
	internal := Internal(topic)
	if s == nil {
		return !internal
	}
	matched := len(s.include) == 0 && !internal
	for i, re := range s.include {
		if re.MatchString(topic) && (!internal || strings.HasPrefix(s.src[i], "__")) {
			matched = true
			break
		}
	}
	if !matched {
		return false
	}
	for _, re := range s.exclude {
		if re.MatchString(topic) {
			return false
		}
	}
	return true
}

// Patterns returns the anchored include expressions (a consumer's regex
// subscription), or [".*"] when every topic is included. Callers still
// apply Match: patterns ignore the exclude and internal rules.
func (s *Selector) Patterns() []string {
	if s == nil || len(s.include) == 0 {
		return []string{".*"}
	}
	out := make([]string, len(s.include))
	for i, re := range s.include {
		out[i] = re.String()
	}
	return out
}

// String describes the selection for messages: "every non-internal topic",
// "topics a|b, excluding c".
func (s *Selector) String() string {
	if s == nil {
		return "every non-internal topic"
	}
	inc := "every non-internal topic"
	if len(s.src) > 0 {
		inc = "topics " + strings.Join(s.src, ", ")
	}
	if len(s.exSrc) > 0 {
		return inc + ", excluding " + strings.Join(s.exSrc, ", ")
	}
	return inc
}

// Flags renders the selection as the flags that give it, for messages:
// "--topics a --exclude b"; "--topics <all>" for the nil Selector.
func (s *Selector) Flags() string {
	if s == nil {
		return "--topics <all>"
	}
	var parts []string
	for _, e := range s.src {
		parts = append(parts, "--topics "+e)
	}
	for _, e := range s.exSrc {
		parts = append(parts, "--exclude "+e)
	}
	return strings.Join(parts, " ")
}

// Key is a canonical text of the selection that stays the same across
// versions (restore ids hash it): "<all>" for the nil Selector, the
// anchored expression "^(?:EXPR)$" for one include expression and no
// exclude, else the quoted anchored include and exclude expressions.
func (s *Selector) Key() string {
	if s == nil {
		return "<all>"
	}
	if len(s.include) == 1 && len(s.exclude) == 0 {
		return s.include[0].String()
	}
	anchored := func(res []*regexp.Regexp) []string {
		out := []string{}
		for _, re := range res {
			out = append(out, re.String())
		}
		return out
	}
	return fmt.Sprintf("include %q exclude %q", anchored(s.include), anchored(s.exclude))
}

// Select returns the archived topics (all) that s selects, in order; none
// is an error that names the selection and the archived topics.
func (s *Selector) Select(all []string) ([]string, error) {
	var out []string
	for _, t := range all {
		if s.Match(t) {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no archived topic matches %s (archived: %s)", s.Flags(), listOrNone(all))
	}
	return out, nil
}

// listOrNone lists names for a message, at most 20 of them.
func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	if len(s) > 20 {
		return strings.Join(s[:20], ", ") + fmt.Sprintf(" and %d more", len(s)-20)
	}
	return strings.Join(s, ", ")
}
