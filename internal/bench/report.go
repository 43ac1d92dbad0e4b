package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// count formats a figure with thousands separators: 12,345.
func count[T int | int64 | float64](x T) string {
	s := strconv.FormatInt(int64(math.Round(float64(x))), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// millis formats milliseconds with three significant digits or so.
func millis(ms float64) string {
	switch {
	case ms >= 1000:
		return fmt.Sprintf("%.2f s", ms/1000)
	case ms >= 100:
		return fmt.Sprintf("%.0f ms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.2f ms", ms)
	}
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func mib(bytes int64) string { return fmt.Sprintf("%.0f MiB", float64(bytes)/(1<<20)) }

// cells are a row's cells in the table's order.
func (r Row) cells() []string {
	ratioCell := ""
	if r.Ratio != nil {
		ratioCell = fmt.Sprintf("%.2f", *r.Ratio)
	}
	met := ""
	if r.Error != "" {
		met = "failed: " + r.Error
	} else if ok, has := r.Met(); has && ok {
		met = "met"
	} else if has {
		met = "missed"
	}
	cells := []string{r.What, r.Ordo, r.Baseline, ratioCell, r.Target, met}
	for i, c := range cells {
		cells[i] = strings.Join(strings.Fields(c), " ") // a cell is one line, whatever an error said
	}
	return cells
}

var header = []string{"what", "Ordo", "baseline (same run)", "ratio", "target", "met?"}

// WriteText writes the table for a terminal.
func (rep *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rep.Rows {
		fmt.Fprintln(tw, strings.Join(r.cells(), "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%s\n", rep.summary())
	return err
}

func (rep *Report) summary() string {
	mode := "full size"
	if rep.Quick {
		mode = "--quick (scaled down: the figures show that each scenario runs, not whether a target is met)"
	}
	s := fmt.Sprintf("%s, %s; %s; %s; took %s", rep.Started.Format("2006-01-02 15:04"), rep.Machine, rep.Postgres, mode, rep.Duration.Round(time.Second))
	if rep.Load != "" {
		s += "; " + rep.Load
	}
	return s
}

// WriteMarkdown writes the table, the notes of its rows and how it was
// measured, as Markdown.
func (rep *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	mdRow := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + strings.ReplaceAll(c, "|", `\|`) + " |")
		}
		b.WriteString("\n")
	}
	mdRow(header)
	mdRow(strings.Split(strings.Repeat("---,", len(header)-1)+"---", ","))
	for _, r := range rep.Rows {
		mdRow(r.cells())
	}
	b.WriteString("\n")
	for _, r := range rep.Rows {
		if r.Note != "" {
			fmt.Fprintf(&b, "- %s: %s.\n", r.What, r.Note)
		}
	}
	fmt.Fprintf(&b, "\nMeasured %s", rep.summary())
	if rep.Command != "" {
		fmt.Fprintf(&b, ", with `%s`", rep.Command)
	}
	b.WriteString(".\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// bar is one bar of the chart.
type bar struct {
	label, value string
	x, tick      float64 // the bar's length and the target's, in the panel's unit
	met, hasTick bool
	known        bool // met is known (the bar has a target)
}

// WriteSVG draws two bar charts: each ratio to its baseline measured in the
// same run, with the target as a tick; and each absolute target, as how far
// past it Ordo is (target ÷ figure for an upper bound, figure ÷ target for a
// lower one), so that in both a bar right of its tick is a target met.
func (rep *Report) WriteSVG(w io.Writer) error {
	var ratios, absolute []bar
	for _, r := range rep.Rows {
		if r.Ratio != nil {
			b := bar{label: r.What, value: fmt.Sprintf("%.2f", *r.Ratio), x: *r.Ratio}
			for _, c := range r.Checks {
				if c.Name == "ratio" {
					b.tick, b.hasTick, b.met, b.known = c.Limit, true, c.Met, true
					b.value += " (target " + bound(c) + ")"
				}
			}
			ratios = append(ratios, b)
		}
		for _, c := range r.Checks {
			if c.Name == "ratio" || c.Value <= 0 {
				continue
			}
			x := c.Value / c.Limit
			if c.AtMost {
				x = c.Limit / c.Value
			}
			absolute = append(absolute, bar{label: r.What + " — " + c.Name, value: fmt.Sprintf("%s (target %s)", figure(c.Value), bound(c)),
				x: x, tick: 1, hasTick: true, met: c.Met, known: true})
		}
	}
	const width, rowH, top = 960, 40, 20
	var body strings.Builder
	y := top
	panel := func(title string, bars []bar, unitMax float64) {
		if len(bars) == 0 {
			return
		}
		fmt.Fprintf(&body, `<text x="10" y="%d" font-size="15" font-weight="bold">%s</text>`+"\n", y+5, html.EscapeString(title))
		y += 20
		scale := 1.0
		for _, b := range bars {
			scale = max(scale, min(b.x, unitMax), b.tick)
		}
		scale *= 1.1
		const x0, plotW = 10, 640
		for _, b := range bars {
			color := "#8a8f98"
			if b.known && b.met {
				color = "#2e9e5b"
			} else if b.known {
				color = "#d2473f"
			}
			fmt.Fprintf(&body, `<text x="%d" y="%d" font-size="12">%s</text>`+"\n", x0, y+12, html.EscapeString(b.label))
			length := min(b.x, scale) / scale * plotW
			fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%.1f" height="14" fill="%s"/>`+"\n", x0, y+17, length, color)
			if b.hasTick {
				tx := float64(x0) + b.tick/scale*plotW
				fmt.Fprintf(&body, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#222" stroke-width="2"/>`+"\n", tx, y+14, tx, y+34)
			}
			more := ""
			if b.x > scale {
				more = " »"
			}
			fmt.Fprintf(&body, `<text x="%d" y="%d" font-size="12">%s</text>`+"\n", x0+plotW+10, y+29, html.EscapeString(b.value+more))
			y += rowH
		}
		y += 15
	}
	panel("Ordo ÷ baseline measured in the same run (tick: target)", ratios, 3)
	panel("Against absolute targets: how far past the target (tick: the target; right of it is met)", absolute, 3)
	mode := "full size"
	if rep.Quick {
		mode = "--quick"
	}
	fmt.Fprintf(&body, `<text x="10" y="%d" font-size="11" fill="#555">%s</text>`+"\n", y+5,
		html.EscapeString(fmt.Sprintf("ordo bench %s, %s, %s; %s", mode, rep.Started.Format("2006-01-02"), rep.Machine, rep.Postgres)))
	y += 20
	_, err := fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">
<rect width="100%%" height="100%%" fill="white"/>
%s</svg>
`, width, y, width, y, body.String())
	return err
}

func bound(c Check) string {
	op := "≥"
	if c.AtMost {
		op = "≤"
	}
	return op + " " + figure(c.Limit)
}

// figure formats a check's figure: whole with separators from 1,000 on,
// else with three significant digits.
func figure(x float64) string {
	if math.Abs(x) >= 1000 {
		return count(x)
	}
	return strconv.FormatFloat(x, 'g', 3, 64)
}
