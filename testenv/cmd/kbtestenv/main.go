// Command kbtestenv starts and stops kbackup's real-component test
// environment in the background (make testenv-up / make testenv-down):
// a 3-broker Kafka cluster, MinIO and moto_server on 127.0.0.1.
//
//	kbtestenv up [-dir D] [-brokers 3] [-kafka-version V] [-no-kafka] [-no-minio] [-no-moto]
//	kbtestenv down [-dir D]
//	kbtestenv env [-dir D]
//
// up prints `export KBACKUP_TEST_...` lines on stdout (progress on
// stderr); eval "$(make -s testenv-up)" points tests at the environment.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kbackup/kbackup/testenv"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kbtestenv up|down|env [flags]")
		os.Exit(2)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	dir := fs.String("dir", testenv.DefaultUpDir(), "state directory (pids, env.sh, data, logs)")
	var o testenv.UpOptions
	fs.IntVar(&o.KafkaBrokers, "brokers", 3, "number of Kafka brokers")
	fs.StringVar(&o.KafkaVersion, "kafka-version", testenv.KafkaVersion(), "cached Kafka version")
	fs.BoolVar(&o.NoKafka, "no-kafka", false, "do not start Kafka")
	fs.BoolVar(&o.NoMinIO, "no-minio", false, "do not start MinIO")
	fs.BoolVar(&o.NoMoto, "no-moto", false, "do not start moto_server")
	_ = fs.Parse(os.Args[2:])
	o.Dir = *dir
	o.Log = os.Stderr
	switch cmd {
	case "up":
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		if _, err := testenv.Up(ctx, o); err != nil {
			fmt.Fprintln(os.Stderr, "kbtestenv up:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "kbtestenv: up in %s; stop with make testenv-down\n", time.Since(start).Round(100*time.Millisecond))
		printEnv(*dir)
	case "down":
		if err := testenv.Down(*dir, 30*time.Second, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "kbtestenv down:", err)
			os.Exit(1)
		}
	case "env":
		printEnv(*dir)
	default:
		fmt.Fprintf(os.Stderr, "kbtestenv: unknown command %q (up, down, env)\n", cmd)
		os.Exit(2)
	}
}

func printEnv(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "env.sh"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kbtestenv:", err)
		os.Exit(1)
	}
	os.Stdout.Write(b)
}
