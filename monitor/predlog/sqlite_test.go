package predlog

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// The schema of the first release: one row per record.
const sqliteSchemaV1 = `
CREATE TABLE predictions (
	id INTEGER PRIMARY KEY, time INTEGER NOT NULL, request_id TEXT NOT NULL,
	model TEXT NOT NULL, version INTEGER NOT NULL, topk TEXT NOT NULL,
	preprocess_ms REAL, queue_ms REAL, infer_ms REAL, total_ms REAL,
	width INTEGER NOT NULL, height INTEGER NOT NULL, brightness REAL, contrast REAL, image BLOB);
CREATE INDEX predictions_model_version_time ON predictions (model, version, time);
CREATE INDEX predictions_time ON predictions (time);`

// A database written by the row-per-record release opens with every record
// moved into batches, and nothing else in its place.
func TestSQLiteMigratesRowsTable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(sqliteSchemaV1); err != nil {
		t.Fatal(err)
	}
	const n = 600 // more than one batch
	for i := range n {
		r := makeRecord(i)
		_, err := db.Exec(`INSERT INTO predictions (`+strings.Join(columns, ", ")+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			r.Time.UnixMicro(), r.RequestID, r.Model, r.Version, string(appendTopK(nil, r.TopK)),
			nullFloat(r.Latency.PreprocessMs), nullFloat(r.Latency.QueueMs), nullFloat(r.Latency.InferMs), nullFloat(r.Latency.TotalMs),
			r.Width, r.Height, nullFloat(r.Brightness), nullFloat(r.Contrast), nullBytes(r.Image))
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	l := openT(t, "sqlite:"+path, Options{})
	checkRecords(t, queryT(t, l, Query{}), seq(0, n))
	closeT(t, l)

	db, err = sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var kind string
	if err := db.QueryRowContext(ctx, `SELECT type FROM sqlite_master WHERE name = 'predictions'`).Scan(&kind); err != nil || kind != "view" {
		t.Errorf("predictions is a %q (%v), want the view", kind, err)
	}
	var left int
	db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name LIKE 'predictions_%'`).Scan(&left)
	if left != 0 {
		t.Errorf("%d tables or indexes of the old schema remain", left)
	}
}

// The predictions view gives SQL users one row per record.
func TestSQLiteView(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	l := openT(t, "sqlite:"+path, Options{BatchSize: 7})
	for i := range 20 {
		r := makeRecord(i)
		r.Image = []byte{1, 2, byte(i)}
		l.Add(r)
	}
	flushT(t, l)
	closeT(t, l)
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT time, request_id, model, version, json_extract(topk, '$[0].index'), queue_ms, width, image
		FROM predictions ORDER BY time`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for ; rows.Next(); i++ {
		var (
			micros, version, top, width int64
			id, model, image            string
			queue                       sql.NullFloat64
		)
		if err := rows.Scan(&micros, &id, &model, &version, &top, &queue, &width, &image); err != nil {
			t.Fatal(err)
		}
		want := makeRecord(i)
		if micros != want.Time.UnixMicro() || id != want.RequestID || model != want.Model || version != int64(want.Version) ||
			top != int64(want.TopK[0].Index) || width != int64(want.Width) || queue.Valid == isNaN(want.Latency.QueueMs) {
			t.Errorf("row %d: %d %s %s %d %d %v %d, want record %+v", i, micros, id, model, version, top, queue, width, want)
		}
		if image == "" {
			t.Errorf("row %d: no image (base64)", i)
		}
	}
	if i != 20 {
		t.Errorf("the view has %d rows, want 20", i)
	}
}

// Batches whose times overlap still give records in time order, and a
// limit takes the earliest.
func TestSQLiteQueryOrdersAcrossBatches(t *testing.T) {
	l := openT(t, "sqlite:"+filepath.Join(t.TempDir(), "p.db"), Options{BatchSize: 2})
	defer closeT(t, l)
	// Written as batches [0 3] [1 4] [2 5]: the times interleave.
	for _, i := range []int{0, 3, 1, 4, 2, 5} {
		l.Add(makeRecord(i))
	}
	flushT(t, l)
	checkRecords(t, queryT(t, l, Query{}), seq(0, 6))
	checkRecords(t, queryT(t, l, Query{Limit: 4}), seq(0, 4))
	checkRecords(t, queryT(t, l, Query{Since: makeRecord(2).Time, Limit: 2}), []int{2, 3})
	checkRecords(t, queryT(t, l, Query{Until: makeRecord(2).Time}), []int{0, 1})
}

func isNaN(f float64) bool { return f != f }

// The schema of the batch release before formats: records as objects.
const sqliteSchemaObjects = `
CREATE TABLE prediction_batches (
	id INTEGER PRIMARY KEY, first INTEGER NOT NULL, last INTEGER NOT NULL,
	n INTEGER NOT NULL, records TEXT NOT NULL);
CREATE INDEX prediction_batches_first ON prediction_batches (first);
CREATE INDEX prediction_batches_last ON prediction_batches (last);
CREATE VIEW predictions AS SELECT b.id AS batch, r.key AS position,
	json_extract(r.value, '$.time') AS time
FROM prediction_batches AS b, json_each(b.records) AS r;`

// A database whose batches hold objects (format 1) opens with them
// readable beside new format-2 batches: by Query, by the view, and after
// retention rewrites a straddling old batch.
func TestSQLiteReadsObjectBatches(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "objects.db")
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(sqliteSchemaObjects); err != nil {
		t.Fatal(err)
	}
	// Format 1 is jsonRecord as encoding/json writes it.
	var old []jsonRecord
	for i := range 10 {
		r := makeRecord(i)
		j := jsonRecord{Time: r.Time.UnixMicro(), RequestID: r.RequestID, Model: r.Model, Version: r.Version,
			Width: r.Width, Height: r.Height, Image: r.Image}
		ptr := func(f float64) *float64 {
			if f != f {
				return nil
			}
			return &f
		}
		for _, c := range r.TopK {
			j.TopK = append(j.TopK, jsonClass{Index: c.Index, Label: c.Label, Score: ptr(c.Score)})
		}
		j.PreprocessMs, j.QueueMs, j.InferMs, j.TotalMs = ptr(r.Latency.PreprocessMs), ptr(r.Latency.QueueMs), ptr(r.Latency.InferMs), ptr(r.Latency.TotalMs)
		j.Brightness, j.Contrast = ptr(r.Brightness), ptr(r.Contrast)
		old = append(old, j)
	}
	text, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO prediction_batches (first, last, n, records) VALUES (?, ?, ?, ?)`,
		old[0].Time, old[9].Time, 10, string(text)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	l := openT(t, "sqlite:"+path, Options{})
	for i := 10; i < 20; i++ {
		l.Add(makeRecord(i))
	}
	flushT(t, l)
	checkRecords(t, queryT(t, l, Query{}), seq(0, 20))

	db, err = sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT time, model, json_extract(topk, '$[0].index'), json_extract(topk, '$[1].label'), width FROM predictions ORDER BY time`)
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for ; rows.Next(); i++ {
		var micros, top, width int64
		var model, label string
		if err := rows.Scan(&micros, &model, &top, &label, &width); err != nil {
			t.Fatal(err)
		}
		want := makeRecord(i)
		if micros != want.Time.UnixMicro() || model != want.Model || top != int64(want.TopK[0].Index) ||
			label != want.TopK[1].Label || width != int64(want.Width) {
			t.Errorf("view row %d: %d %s %d %s %d, want record %+v", i, micros, model, top, label, width, want)
		}
	}
	rows.Close()
	if i != 20 {
		t.Errorf("the view has %d rows, want 20", i)
	}

	if n, err := l.store.deleteBefore(ctx, makeRecord(5).Time, 1000); err != nil || n != 5 {
		t.Fatalf("deleteBefore = %d, %v; want 5 deleted", n, err)
	}
	checkRecords(t, queryT(t, l, Query{}), seq(5, 20))
	var formats string
	db.QueryRowContext(ctx, `SELECT group_concat(DISTINCT format) FROM prediction_batches`).Scan(&formats)
	if formats != "2" {
		t.Errorf("formats after the rewrite: %q, want only 2", formats)
	}
	closeT(t, l)
}
