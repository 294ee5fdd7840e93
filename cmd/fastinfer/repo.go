package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"fastinfer/batching"
	"fastinfer/models"
	"fastinfer/monitor/drift"
	"fastinfer/runtime"
	"fastinfer/server"
)

// repoManager keeps the server's models in step with the repository: at
// start, on the repository API's load and unload (Triton's EXPLICIT mode),
// and on every poll (POLL mode). New versions are loaded and warmed up
// before they take traffic; replaced or retired ones finish their
// requests before they close; a failed load changes nothing served.
type repoManager struct {
	root    string
	env     *runtime.Env
	cfg     *serveConfig
	metrics *batching.Metrics
	srv     *server.Server
	log     *slog.Logger

	mu     sync.Mutex // one change at a time
	served map[string]map[int]*servedVersion
	reason map[string]string // why a model is not (fully) served
	// Poll state: each version folder's fingerprint at the last poll, and
	// the version set whose load failed (not retried until it changes).
	seen   map[string]string
	failed map[string]string
	// Models unloaded through the API: the poller leaves them unloaded
	// until the API loads them again, or an operator's unload would be
	// undone one interval later.
	held map[string]bool
}

type servedVersion struct {
	lm          loadedModel
	fingerprint string
}

func newRepoManager(env *runtime.Env, cfg *serveConfig, metrics *batching.Metrics, srv *server.Server, log *slog.Logger) *repoManager {
	return &repoManager{
		root: cfg.models, env: env, cfg: cfg, metrics: metrics, srv: srv, log: log,
		served: map[string]map[int]*servedVersion{}, reason: map[string]string{},
		seen: map[string]string{}, failed: map[string]string{}, held: map[string]bool{},
	}
}

// LoadAll loads every model of the repository; failures are returned and
// the rest serve.
func (r *repoManager) LoadAll() (loaded int, errs []error) {
	ms, scanErrs, err := models.Scan(r.root)
	if err != nil {
		return 0, []error{err}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range scanErrs {
		var le *models.LoadError
		if errors.As(e, &le) {
			r.reason[le.Model] = e.Error()
		}
		errs = append(errs, e)
	}
	for _, m := range ms {
		if err := r.load(m.Name, nil); err != nil {
			errs = append(errs, err)
			continue
		}
		loaded++
	}
	r.rememberFingerprints()
	return loaded, errs
}

// Load implements server.Repository.
func (r *repoManager) Load(_ context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.load(name, nil); err != nil {
		return err
	}
	delete(r.held, name)
	return nil
}

// Unload implements server.Repository.
func (r *repoManager) Unload(_ context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unload(name)
	r.reason[name] = "unloaded"
	r.held[name] = true
	return nil
}

// Index implements server.Repository: every model folder, with each
// served version READY, or the model UNAVAILABLE with the reason.
func (r *repoManager) Index() []server.RepositoryModel {
	ms, scanErrs, _ := models.Scan(r.root)
	r.mu.Lock()
	defer r.mu.Unlock()
	names := map[string]bool{}
	for _, m := range ms {
		names[m.Name] = true
	}
	for _, e := range scanErrs {
		var le *models.LoadError
		if errors.As(e, &le) {
			names[le.Model] = true
		}
	}
	for name := range r.served {
		names[name] = true
	}
	var out []server.RepositoryModel
	for _, name := range slices.Sorted(maps.Keys(names)) {
		vs := slices.Sorted(maps.Keys(r.served[name]))
		for _, v := range vs {
			out = append(out, server.RepositoryModel{Name: name, Version: strconv.Itoa(v), State: "READY", Reason: r.reason[name]})
		}
		if len(vs) == 0 {
			reason := r.reason[name]
			if reason == "" {
				reason = "not loaded"
			}
			out = append(out, server.RepositoryModel{Name: name, State: "UNAVAILABLE", Reason: reason})
		}
	}
	return out
}

// load brings name's served versions to what its version policy chooses
// among the versions eligible accepts (nil: all). r.mu is held.
func (r *repoManager) load(name string, eligible func(models.Version) bool) error {
	if !models.ValidName(name) {
		return fmt.Errorf("%w: %q is not a model name", server.ErrModelNotInRepository, name)
	}
	m, ok, err := models.Read(filepath.Join(r.root, name))
	if err != nil {
		r.reason[name] = err.Error()
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s", server.ErrModelNotInRepository, name)
	}
	var candidates []models.Version
	for _, v := range m.Versions {
		if eligible == nil || eligible(v) {
			candidates = append(candidates, v)
		}
	}
	want := m.Config.VersionPolicy.Select(candidates)
	if len(want) == 0 {
		err := fmt.Errorf("model %s: its version policy chooses none of the versions %v", name, versionNumbers(m.Versions))
		r.reason[name] = err.Error()
		return err
	}
	// Load what is new or changed, beside what serves.
	fresh := map[int]*servedVersion{}
	for _, v := range want {
		fp, err := v.Fingerprint()
		fp += "|" + configStamp(m)
		if err != nil {
			err = fmt.Errorf("model %s version %d: %w", name, v.Number, err)
			r.abandon(fresh)
			r.reason[name] = err.Error()
			return err
		}
		if cur := r.served[name][v.Number]; cur != nil && cur.fingerprint == fp {
			continue
		}
		start := time.Now()
		lm, err := loadModel(r.env, m, v, r.cfg, r.metrics)
		if err != nil {
			r.abandon(fresh)
			r.reason[name] = err.Error()
			return err
		}
		fresh[v.Number] = &servedVersion{lm: lm, fingerprint: fp}
		sm := lm.model
		r.log.Info("model loaded", "model", sm.Name, "version", sm.Version, "provider", sm.Provider,
			"input", fmt.Sprint(sm.Inputs[0].Name, sm.Inputs[0].Shape), "classes", sm.Classes,
			"labels", len(sm.Labels), "max_batch_size", sm.Batching.MaxBatchSize, "scores", sm.Scores, "instances", groupsText(sm.InstanceGroups),
			"load_ms", time.Since(start).Milliseconds())
		if lm.note != "" {
			r.log.Info("model served differently", "model", sm.Name, "version", sm.Version, "note", lm.note)
		}
	}
	if len(fresh) > 0 { // once per change, not at every poll
		for _, n := range m.Notes {
			r.log.Warn("model configuration", "model", name, "file", m.ConfigPath, "note", n)
		}
	}
	// Switch: new versions take traffic, replaced ones drain and close.
	if r.served[name] == nil {
		r.served[name] = map[int]*servedVersion{}
	}
	for v, sv := range fresh {
		if old := r.srv.AddModel(sv.lm.model); old != nil {
			r.retire(r.served[name][v])
		}
		r.served[name][v] = sv
	}
	keep := map[int]bool{}
	for _, v := range want {
		keep[v.Number] = true
	}
	for v, sv := range r.served[name] {
		if !keep[v] {
			r.srv.RemoveModel(name, v)
			r.retire(sv)
			delete(r.served[name], v)
			r.log.Info("model version retired", "model", name, "version", v)
		}
	}
	delete(r.reason, name)
	return nil
}

// unload stops serving every version of name; r.mu is held.
func (r *repoManager) unload(name string) {
	for v, sv := range r.served[name] {
		r.srv.RemoveModel(name, v)
		r.retire(sv)
		r.log.Info("model unloaded", "model", name, "version", v)
	}
	delete(r.served, name)
}

// retire waits for a version's last request, then closes it.
func (r *repoManager) retire(sv *servedVersion) {
	if sv == nil {
		return
	}
	sv.lm.model.Drain()
	if err := sv.lm.closer.Close(); err != nil {
		r.log.Warn("closing model", "model", sv.lm.model.Name, "version", sv.lm.model.Version, "err", err)
	}
}

// abandon closes versions loaded for a change that failed.
func (r *repoManager) abandon(fresh map[int]*servedVersion) {
	for _, sv := range fresh {
		sv.lm.closer.Close()
	}
}

// Close unloads everything (at shutdown, after the HTTP server stopped).
func (r *repoManager) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.served {
		r.unload(name)
	}
}

// Poll applies the repository's changes every interval until ctx ends. A
// version is eligible once it holds the READY marker or its files stood
// still for a whole interval, so a version still being copied in is not
// loaded half-written.
func (r *repoManager) Poll(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.pollOnce()
		}
	}
}

func (r *repoManager) pollOnce() {
	ms, scanErrs, err := models.Scan(r.root)
	if err != nil {
		r.log.Error("polling the repository", "err", err)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.seen
	r.rememberFingerprints()
	stable := func(v models.Version) bool {
		return v.Ready() || (prev[v.Dir] != "" && prev[v.Dir] == r.seen[v.Dir])
	}
	present := map[string]bool{}
	for _, e := range scanErrs {
		// A model folder that no longer reads keeps its served versions.
		var le *models.LoadError
		if errors.As(e, &le) {
			present[le.Model] = true
			if r.failed[le.Model] != e.Error() {
				r.failed[le.Model] = e.Error()
				r.reason[le.Model] = e.Error()
				r.log.Error("model folder unreadable; still serving what was loaded", "model", le.Model, "err", e)
			}
		}
	}
	for _, m := range ms {
		present[m.Name] = true
		if r.held[m.Name] {
			continue
		}
		key := r.wantKey(m, stable)
		if key == r.servedKey(m.Name) || key == "" || key == r.failed[m.Name] {
			continue
		}
		if err := r.load(m.Name, stable); err != nil {
			r.failed[m.Name] = key
			r.log.Error("model not loaded; still serving what was loaded", "model", m.Name, "err", err)
			continue
		}
		delete(r.failed, m.Name)
	}
	for name := range r.served {
		if !present[name] {
			r.log.Info("model removed from the repository", "model", name)
			r.unload(name)
			r.reason[name] = "removed from the repository"
		}
	}
}

// rememberFingerprints records every version folder's fingerprint; r.mu
// is held.
func (r *repoManager) rememberFingerprints() {
	ms, _, _ := models.Scan(r.root)
	seen := map[string]string{}
	for _, m := range ms {
		for _, v := range m.Versions {
			if fp, err := v.Fingerprint(); err == nil {
				seen[v.Dir] = fp
			}
		}
	}
	r.seen = seen
}

// wantKey names the versions (and their files) m's policy chooses among
// the stable ones; "" when none is.
func (r *repoManager) wantKey(m models.Model, stable func(models.Version) bool) string {
	var vs []models.Version
	for _, v := range m.Versions {
		if stable(v) {
			vs = append(vs, v)
		}
	}
	var b strings.Builder
	stamp := configStamp(m)
	for _, v := range m.Config.VersionPolicy.Select(vs) {
		fmt.Fprintf(&b, "%d:%s|%s;", v.Number, r.seen[v.Dir], stamp)
	}
	return b.String()
}

// configStamp changes when the model's config.yaml (or config.pbtxt) or labels file is
// rewritten: a changed batching policy or label set reloads the model.
func configStamp(m models.Model) string {
	var b strings.Builder
	for _, name := range []string{models.ConfigFile, models.TritonConfigFile, m.Config.Labels} {
		if name == "" {
			continue
		}
		if st, err := os.Stat(filepath.Join(m.Dir, name)); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d,", name, st.Size(), st.ModTime().UnixNano())
		}
	}
	return b.String()
}

// servedKey is wantKey for what is served.
func (r *repoManager) servedKey(name string) string {
	var b strings.Builder
	for _, v := range slices.Sorted(maps.Keys(r.served[name])) {
		fmt.Fprintf(&b, "%d:%s;", v, r.served[name][v].fingerprint)
	}
	return b.String()
}

// Monitors lists the drift monitors of every served version, for the
// drift metrics.
func (r *repoManager) Monitors() []*drift.Monitor {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*drift.Monitor
	for _, name := range slices.Sorted(maps.Keys(r.served)) {
		for _, v := range slices.Sorted(maps.Keys(r.served[name])) {
			if d := r.served[name][v].lm.model.Drift; d != nil {
				out = append(out, d)
			}
		}
	}
	return out
}

func versionNumbers(vs []models.Version) []int {
	out := make([]int, len(vs))
	for i, v := range vs {
		out[i] = v.Number
	}
	return out
}
