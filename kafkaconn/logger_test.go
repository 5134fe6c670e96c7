package kafkaconn

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKgoLoggerLevels: franz-go's info lines are kbackup debug lines; its
// warnings and errors keep their level.
func TestKgoLoggerLevels(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level   slog.Level
		want    kgo.LogLevel
		printed []string
		hidden  []string
	}{
		{slog.LevelInfo, kgo.LogLevelWarn, []string{"w-line", "e-line"}, []string{"i-line", "d-line"}},
		{slog.LevelDebug, kgo.LogLevelDebug, []string{"w-line", "e-line", "i-line", "d-line"}, nil},
		{slog.LevelError, kgo.LogLevelError, []string{"e-line"}, []string{"w-line", "i-line"}},
	} {
		var buf bytes.Buffer
		l := kgoLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level}))}
		if got := l.Level(); got != tc.want {
			t.Errorf("slog %v: Level() = %v, want %v", tc.level, got, tc.want)
		}
		l.Log(kgo.LogLevelError, "e-line", "k", 1)
		l.Log(kgo.LogLevelWarn, "w-line")
		l.Log(kgo.LogLevelInfo, "i-line", "broker", "1")
		l.Log(kgo.LogLevelDebug, "d-line")
		out := buf.String()
		for _, w := range tc.printed {
			if !strings.Contains(out, w) {
				t.Errorf("slog %v: %q not printed:\n%s", tc.level, w, out)
			}
		}
		for _, w := range tc.hidden {
			if strings.Contains(out, w) {
				t.Errorf("slog %v: %q printed:\n%s", tc.level, w, out)
			}
		}
		if tc.level == slog.LevelDebug && !strings.Contains(out, "level=DEBUG msg=i-line broker=1") {
			t.Errorf("info line not at debug with its attributes:\n%s", out)
		}
	}
}
