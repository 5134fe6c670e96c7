package kafkaconn

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoLogger bridges franz-go's log lines into slog one level quieter for
// information: franz-go logs its internal progress (group joins,
// "assigning partitions", metadata updates) at info, which is chatter next
// to kbackup's own lines, so it goes to debug. Warnings and errors keep
// their level.
type kgoLogger struct{ l *slog.Logger }

var _ kgo.Logger = kgoLogger{}

// Level tells franz-go what to build: debug lines only when slog would
// print them, warnings otherwise (info is printed at debug).
func (k kgoLogger) Level() kgo.LogLevel {
	ctx := context.Background()
	switch {
	case k.l.Enabled(ctx, slog.LevelDebug):
		return kgo.LogLevelDebug
	case k.l.Enabled(ctx, slog.LevelWarn):
		return kgo.LogLevelWarn
	case k.l.Enabled(ctx, slog.LevelError):
		return kgo.LogLevelError
	default:
		return kgo.LogLevelNone
	}
}

// Log writes one franz-go line.
func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		lv = slog.LevelError
	case kgo.LogLevelWarn:
		lv = slog.LevelWarn
	}
	k.l.Log(context.Background(), lv, msg, keyvals...)
}
