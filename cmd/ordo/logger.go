package main

import (
	"io"
	"log/slog"
	"os"

	"golang.org/x/term"
)

// newLogger logs as text on a terminal and as JSON lines otherwise (for log
// collectors). ORDO_LOG_LEVEL=debug shows more.
func newLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if v := os.Getenv("ORDO_LOG_LEVEL"); v != "" {
		_ = level.UnmarshalText([]byte(v))
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	logger := slog.New(h)
	slog.SetDefault(logger)
	return logger
}
