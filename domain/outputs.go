package domain

import (
	"fmt"
	"maps"
	"math"
	"path"
	"slices"
	"strings"
	"unicode/utf8"
)

// Output is one file a task attempt left in ORDO_OUTPUT_DIR, stored in the
// blob store and named in the attempt's completion. Name is relative to the
// directory, with slashes; SHA256 (lower-case hex) is the blob's address.
type Output struct {
	Name      string `json:"name"`
	SHA256    string `json:"sha256"`
	Size      int64  `json:"size"`
	MediaType string `json:"media_type"`
}

// Limits on what one completion may carry.
const (
	MaxOutputsPerAttempt = 1000
	MaxOutputNameBytes   = 1024
	MaxMetrics           = 200
	MaxMetricNameBytes   = 200
)

// ValidateOutputName checks an output's name: relative, slash-separated,
// clean (no "." or ".." element, no empty element), valid UTF-8, no NUL or
// other control character.
func ValidateOutputName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("an output name is empty")
	case len(name) > MaxOutputNameBytes:
		return fmt.Errorf("output name %q is longer than %d bytes", name[:64]+"…", MaxOutputNameBytes)
	case !utf8.ValidString(name):
		return fmt.Errorf("output name %q is not valid UTF-8", name)
	case strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("output name %q contains a NUL or another control character", name)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("output name %q is absolute: names are relative to ORDO_OUTPUT_DIR", name)
	case strings.Contains(name, `\`):
		return fmt.Errorf("output name %q contains a backslash", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("output name %q has a %q element: names must stay inside ORDO_OUTPUT_DIR", name, el)
		}
	}
	if path.Clean(name) != name {
		return fmt.Errorf("output name %q is not clean", name)
	}
	return nil
}

// ValidateDigest checks a SHA-256 digest in lower-case hex.
func ValidateDigest(d string) error {
	if len(d) != 64 || strings.ContainsFunc(d, func(r rune) bool { return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') }) {
		return fmt.Errorf("%q is not a SHA-256 digest in lower-case hex", d)
	}
	return nil
}

// ValidateOutputs checks the outputs of one completion: valid names, unique,
// valid digests, sizes not negative.
func ValidateOutputs(outs []Output) error {
	if len(outs) > MaxOutputsPerAttempt {
		return fmt.Errorf("%d outputs: at most %d per attempt", len(outs), MaxOutputsPerAttempt)
	}
	seen := make(map[string]bool, len(outs))
	for _, o := range outs {
		if err := ValidateOutputName(o.Name); err != nil {
			return err
		}
		if seen[o.Name] {
			return fmt.Errorf("output %q is listed twice", o.Name)
		}
		seen[o.Name] = true
		if err := ValidateDigest(o.SHA256); err != nil {
			return fmt.Errorf("output %q: %w", o.Name, err)
		}
		if o.Size < 0 {
			return fmt.Errorf("output %q: size %d is negative", o.Name, o.Size)
		}
	}
	return nil
}

// ValidateMetrics checks a task's metrics: at most MaxMetrics names, each
// non-empty, printable and at most MaxMetricNameBytes, each value finite.
func ValidateMetrics(m map[string]float64) error {
	if len(m) > MaxMetrics {
		return fmt.Errorf("%d metrics: at most %d", len(m), MaxMetrics)
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		v := m[name]
		switch {
		case name == "":
			return fmt.Errorf("a metric name is empty")
		case len(name) > MaxMetricNameBytes:
			return fmt.Errorf("metric name %q is longer than %d bytes", name[:32]+"…", MaxMetricNameBytes)
		case !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			return fmt.Errorf("metric name %q is not printable text", name)
		case math.IsNaN(v) || math.IsInf(v, 0):
			return fmt.Errorf("metric %q is %v: metrics must be finite numbers", name, v)
		}
	}
	return nil
}
