// Command kbackup backs up Kafka topics to an object store and restores
// them. See the cli package and docs/CLI.md, the command-line contract.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/kbackup/kbackup/cmd/kbackup/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
