package restore

import (
	"errors"
	"strings"
)

// Refusal is an item of a plan that the restore refuses to write: a
// non-empty target partition, a group with active members, a window before
// the first groups capture, another process running the restore. A dry run
// lists them all with the rest of the plan; a real run writes nothing when
// there is any.
type Refusal struct {
	// Item names what is refused ("target partition orders/3", "group
	// billing", "--groups", "restore r-...").
	Item string `json:"item"`
	// Reason says why.
	Reason string `json:"reason"`
	// Remedy, when there is one, says what to do instead.
	Remedy string `json:"remedy,omitempty"`
}

// String is "<item> <reason>[: <remedy>]".
func (r Refusal) String() string {
	s := r.Item + " " + r.Reason
	if r.Remedy != "" {
		s += ": " + r.Remedy
	}
	return s
}

// refusalsError joins refusals into the error a real run returns.
func refusalsError(rs []Refusal) error {
	var parts []string
	for _, r := range rs {
		parts = append(parts, r.String())
	}
	return errors.New(strings.Join(parts, "; "))
}
