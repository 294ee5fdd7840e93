package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"fastinfer/models"
	"fastinfer/monitor/drift"
	"fastinfer/monitor/predlog"
	"fastinfer/monitor/report"
)

// reportCmd writes an HTML report of a period of the prediction log:
//
//	fastinfer report --since 24h [--until now] [--model M] --out report.html
func reportCmd(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	const synopsis = "fastinfer report [--since 24h] [--until now] [--model M] [--out report.html] [--data-dir DIR | --prediction-log DSN] [--models DIR]"
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	since := fs.String("since", "24h", "start of the period: a duration ago (24h, 90m) or a UTC time (2006-01-02, 2006-01-02T15:04, RFC 3339)")
	until := fs.String("until", "now", "end of the period (exclusive): now, a duration ago, or a UTC time")
	model := fs.String("model", "", "report only this model (default: all)")
	out := fs.String("out", "report.html", "the HTML file to write (- for standard output)")
	dataDir := fs.String("data-dir", "data", "the server's --data-dir: its prediction log is DATA-DIR/predictions.db")
	dsn := fs.String("prediction-log", "sqlite", "the prediction log: sqlite (DATA-DIR/predictions.db), sqlite:PATH or postgres://…")
	repo := fs.String("models", "models", "model repository: each version's reference.json adds drift tests")
	fs.Usage = usageWithEnv(fs, synopsis)
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments %v\n", fs.Args())
		fs.Usage()
		return errUsage
	}
	now := time.Now().UTC()
	from, err := parseWhen(*since, now)
	if err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	to, err := parseWhen(*until, now)
	if err != nil {
		return fmt.Errorf("--until: %w", err)
	}
	if !from.Before(to) {
		return fmt.Errorf("--since %s is not before --until %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	profiles, warns, err := loadProfiles(*repo)
	if err != nil && given["models"] {
		return fmt.Errorf("--models: %w", err)
	}
	for _, w := range warns {
		fmt.Fprintln(stderr, "warning:", w)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	l, where, err := openReportLog(ctx, *dsn, *dataDir)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l.Close(cctx)
	}()
	r, err := report.FromLog(ctx, l, *model, profiles, from, to)
	if err != nil {
		return fmt.Errorf("reading the prediction log %s: %w", where, err)
	}
	if *out == "-" {
		if err := report.WriteHTML(stdout, r); err != nil {
			return err
		}
		fmt.Fprintln(stderr, r.Summary())
		return nil
	}
	if err := writeReportFile(*out, r); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %s\n", *out, r.Summary())
	return nil
}

// parseWhen reads a point in time: "now", a duration before now, or a
// UTC date or time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "now" {
		return now, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a negative duration", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (24h) nor a time (2006-01-02, 2006-01-02T15:04, RFC 3339)", s)
}

// openReportLog opens an existing prediction log for reading; a SQLite
// file that does not exist is an error (predlog.Open would create it).
func openReportLog(ctx context.Context, dsn, dataDir string) (*predlog.Log, string, error) {
	switch dsn {
	case "off", "none":
		return nil, "", errors.New("--prediction-log off: there is no log to report on")
	case "sqlite", "":
		dsn = "sqlite:" + filepath.Join(dataDir, "predictions.db")
	}
	where := dsn
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path != dsn {
			path = strings.TrimPrefix(path, "//")
		}
		where = path
		if st, err := os.Stat(path); err != nil || !st.Mode().IsRegular() {
			return nil, "", fmt.Errorf("no prediction log at %s (set --data-dir to the server's, or --prediction-log): %v", path, err)
		}
	} else {
		where = "PostgreSQL"
	}
	l, err := predlog.Open(ctx, dsn, predlog.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, "", fmt.Errorf("--prediction-log: %w", err)
	}
	return l, where, nil
}

var versionDirRE = regexp.MustCompile(`^[1-9][0-9]{0,8}$`)

// loadProfiles reads the reference profile (reference.json) of every
// version folder of the repository that has one, keyed "model/version"
// and taken as that folder's, as the server does. Unreadable profiles are
// warnings; an unreadable repository is an error.
func loadProfiles(repo string) (map[string]*drift.Profile, []string, error) {
	entries, err := os.ReadDir(repo)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]*drift.Profile{}
	var warns []string
	for _, e := range entries {
		if !models.ValidName(e.Name()) {
			continue
		}
		mdir := filepath.Join(repo, e.Name())
		vers, err := os.ReadDir(mdir) // follows a symlinked model folder
		if err != nil {
			continue // a file, not a model folder
		}
		for _, v := range vers {
			if !versionDirRE.MatchString(v.Name()) {
				continue
			}
			vdir := filepath.Join(mdir, v.Name())
			if st, err := os.Stat(vdir); err != nil || !st.IsDir() {
				continue
			}
			n, _ := strconv.Atoi(v.Name())
			p, err := drift.ReadFile(filepath.Join(vdir, drift.ReferenceFile))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				warns = append(warns, fmt.Sprintf("%s version %d: no drift tests: %v", e.Name(), n, err))
				continue
			}
			p.Model, p.Version = e.Name(), n
			out[report.Key(e.Name(), n)] = p
		}
	}
	return out, warns, nil
}

// writeReportFile writes r to path atomically (a temporary file in the
// same folder, then a rename), so a reader never sees half a page.
func writeReportFile(path string, r *report.Report) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := report.WriteHTML(&buf, r); err != nil {
		return err
	}
	return models.WriteFileAtomic(dir, filepath.Base(path), buf.Bytes())
}

// reportFileName is the name of the report of the period ending at until,
// as GET /reports/ lists and serves them.
func reportFileName(until time.Time) string {
	return "report-" + until.UTC().Format("20060102-150405") + ".html"
}

// reportLoop writes, until ctx ends, a report of each period of length
// every into dir, at multiples of every (UTC: with 3h, at 00:00, 03:00, …).
// It runs beside the server: the log is read in pages from its own
// connection, and a failed report is logged, not fatal.
func reportLoop(ctx context.Context, every time.Duration, dir, repo string, plog *predlog.Log, log *slog.Logger) {
	log = log.With("component", "report")
	for {
		next := time.Now().Truncate(every).Add(every)
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		path, r, err := periodReport(ctx, plog, repo, dir, next.Add(-every), next, log)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Error("writing the period's report failed", "until", next, "err", err)
		default:
			log.Info("report written", "file", path, "summary", r.Summary())
		}
	}
}

// periodReport writes the report of [since, until) into dir.
func periodReport(ctx context.Context, plog *predlog.Log, repo, dir string, since, until time.Time, log *slog.Logger) (string, *report.Report, error) {
	// What was answered before until is committed first (the log writes
	// in batches, within a second).
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	plog.Flush(fctx)
	cancel()
	profiles, warns, err := loadProfiles(repo)
	if err != nil {
		log.Warn("no reference profiles for the report", "err", err)
	}
	for _, w := range warns {
		log.Warn(w)
	}
	r, err := report.FromLog(ctx, plog, "", profiles, since, until)
	if err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, reportFileName(until))
	return path, r, writeReportFile(path, r)
}
