package cli

import (
	"encoding/json"
	"io"

	"github.com/urfave/cli/v2"
)

// jsonFlag is --json, the same on every command that prints a result: one
// JSON document on stdout instead of text (its schema is in docs/CLI.md).
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print the result as one JSON document (schema in docs/CLI.md)"}
}

// writeJSON prints v as one indented JSON document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
