package bench

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteTable writes steps as an aligned text table, one row a step, then
// every step's warnings on a line of their own.
func WriteTable(w io.Writer, steps []Step) error {
	err := writeAligned(w, func(tw io.Writer) {
		fmt.Fprintln(tw, "target\tmodel\tload\tbatch\timg/s\treq/s\tp50\tp90\tp99\tp99.9\tmax\terrors\tserver q/pre/in/comp/out ms\tmean batch\tbusy\tserver cpu/req, share\tclient cpu\t")
		for _, s := range steps {
			split, meanBatch, busy, cpu := "-", "-", "-", "-"
			if s.Server != nil {
				sv := s.Server
				split = strings.Join([]string{fmtMs(sv.QueueMs), fmtMs(sv.PreprocessMs), fmtMs(sv.InputMs), fmtMs(sv.ComputeMs), fmtMs(sv.OutputMs)}, "/")
				meanBatch = fmt.Sprintf("%.1f", s.Server.MeanBatchSize)
				if sv.InstanceBusy > 0 {
					busy = fmt.Sprintf("%.0f%%", 100*sv.InstanceBusy)
				}
				if s.Server.CPUMsPerRequest > 0 {
					cpu = fmtMs(s.Server.CPUMsPerRequest) + " ms"
				}
				if s.Server.CPUShare > 0 {
					cpu += fmt.Sprintf(", %.0f%%", 100*s.Server.CPUShare)
				}
			}
			stable := ""
			if !s.Stable {
				stable = "unstable"
			}
			l := s.Latency
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.1f\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f%%\t%s\n",
				s.Target, s.Model, loadLabel(s), s.BatchSize, s.ImagesPerSec, s.Throughput,
				fmtMs(l.P50), fmtMs(l.P90), fmtMs(l.P99), fmtMs(l.P999), fmtMs(l.Max),
				errorsLabel(s.Errors), split, meanBatch, busy, cpu, 100*s.ClientCPU, stable)
		}
	})
	if err != nil {
		return err
	}
	for _, s := range steps {
		for _, warn := range s.Warnings {
			if _, err := fmt.Fprintf(w, "warning: %s: %s\n", s.Key(), warn); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeAligned runs fill against a tabwriter and copies the result to w
// without the padding tabwriter leaves before an empty last cell, so
// goldens and terminals see no trailing spaces.
func writeAligned(w io.Writer, fill func(io.Writer)) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fill(tw)
	if err := tw.Flush(); err != nil {
		return err
	}
	var out strings.Builder
	for line := range strings.Lines(buf.String()) {
		out.WriteString(strings.TrimRight(line, " \n"))
		out.WriteByte('\n')
	}
	_, err := io.WriteString(w, out.String())
	return err
}

// loadLabel is "c=16" for closed loop, "r=100/s poisson" for open loop.
func loadLabel(s Step) string {
	if s.Mode != ModeRate {
		return fmt.Sprintf("c=%d", s.Concurrency)
	}
	l := fmt.Sprintf("r=%g/s", s.Rate)
	if s.Arrivals != "" {
		l += " " + s.Arrivals
	}
	return l
}

// errorsLabel is "429:3 transport:1" (sorted by kind), or "-" for none.
func errorsLabel(errs map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(errs)) {
		if n := errs[k]; n != 0 {
			parts = append(parts, fmt.Sprintf("%s:%d", k, n))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// fmtMs keeps about three significant figures: two decimals below
// 100 ms, one above.
func fmtMs(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

// WriteComparisons writes one line a ratio, judged against its goal when
// it has one: "server jpeg / raw: 0.91 (goal ≥ 0.90) ok".
func WriteComparisons(w io.Writer, cs []Comparison) error {
	for _, c := range cs {
		line := fmt.Sprintf("%s: %.2f", c.Name, c.Value)
		if c.Unit != "" {
			line += " " + c.Unit
		}
		if c.Goal != 0 {
			verdict, rel := "ok", "≥"
			met := c.Value >= c.Goal // NaN meets no goal
			if c.AtMost {
				met, rel = c.Value <= c.Goal, "≤"
			}
			if !met {
				verdict = "BELOW GOAL"
				if c.AtMost {
					verdict = "OVER GOAL"
				}
			}
			line += fmt.Sprintf(" (goal %s %.2f%s) %s", rel, c.Goal, unitSuffix(c.Unit), verdict)
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

func unitSuffix(u string) string {
	if u == "" {
		return ""
	}
	return " " + u
}
