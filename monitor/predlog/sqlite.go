package predlog

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLite keeps each written batch as one row: its records as a JSON array.
// Row per record cost about 6 µs of CPU each (binding 14 parameters,
// maintaining two indexes in pure-Go SQLite), enough to cut 8 % off the
// throughput of a small model at saturation; a batch row costs a fraction
// of that. The predictions view gives SQL users one row per record.
//
// A batch's format says how its records are written:
//
//	1: objects, {"time":…,"request_id":…,…} (written before format 2);
//	2: arrays of the columns in order, classes as [index, label, score],
//	   except that time is microseconds after the row's first, and model
//	   and version are the row's (a batch is one row per version):
//	   about half the bytes, and cheaper to write.
//
// The view reads both; the writer writes only format 2.
const sqliteSchema = `
CREATE TABLE IF NOT EXISTS prediction_batches (
	id      INTEGER PRIMARY KEY,
	first   INTEGER NOT NULL, -- earliest record time, Unix microseconds UTC
	last    INTEGER NOT NULL, -- latest
	n       INTEGER NOT NULL, -- records
	records TEXT    NOT NULL, -- JSON array, one element per record
	format  INTEGER NOT NULL DEFAULT 1, -- of the elements: 1 objects, 2 arrays
	model   TEXT,   -- format 2: every record's model and version
	version INTEGER
);
CREATE INDEX IF NOT EXISTS prediction_batches_first ON prediction_batches (first);
CREATE INDEX IF NOT EXISTS prediction_batches_last ON prediction_batches (last);
DROP VIEW IF EXISTS predictions;
CREATE VIEW predictions AS
SELECT b.id AS batch, r.key AS position,
	b.first + (r.value->>0) AS time,
	r.value->>1 AS request_id,
	b.model AS model,
	b.version AS version,
	(SELECT json_group_array(json_object('index', c.value->>0, 'label', c.value->>1, 'score', c.value->>2))
		FROM json_each(r.value, '$[2]') AS c) AS topk,
	r.value->>3 AS preprocess_ms,
	r.value->>4 AS queue_ms,
	r.value->>5 AS infer_ms,
	r.value->>6 AS total_ms,
	r.value->>7 AS width,
	r.value->>8 AS height,
	r.value->>9 AS brightness,
	r.value->>10 AS contrast,
	r.value->>11 AS image
FROM prediction_batches AS b, json_each(b.records) AS r WHERE b.format = 2
UNION ALL
SELECT b.id, r.key,
	json_extract(r.value, '$.time'),
	json_extract(r.value, '$.request_id'),
	json_extract(r.value, '$.model'),
	json_extract(r.value, '$.version'),
	json_extract(r.value, '$.topk'),
	json_extract(r.value, '$.preprocess_ms'),
	json_extract(r.value, '$.queue_ms'),
	json_extract(r.value, '$.infer_ms'),
	json_extract(r.value, '$.total_ms'),
	json_extract(r.value, '$.width'),
	json_extract(r.value, '$.height'),
	json_extract(r.value, '$.brightness'),
	json_extract(r.value, '$.contrast'),
	json_extract(r.value, '$.image')
FROM prediction_batches AS b, json_each(b.records) AS r WHERE b.format = 1;
`

// formatArrays is the format the writer writes.
const formatArrays = 2

type sqliteStore struct {
	db  *sql.DB
	buf []byte // the writer's encoding buffer
}

// sqliteDSN is the modernc.org/sqlite DSN for path: WAL, synchronous=FULL
// (a commit fsyncs the WAL), a busy timeout for readers beside the writer,
// and write transactions that take the write lock at BEGIN.
func sqliteDSN(path string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + esc + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(FULL)&_txlock=immediate"
}

func openSQLite(ctx context.Context, path string) (*sqliteStore, error) {
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		return nil, fmt.Errorf("predlog: sqlite %s: %w", path, err)
	}
	if path == ":memory:" {
		db.SetMaxOpenConns(1) // each connection would be its own database
	} else {
		db.SetMaxOpenConns(4) // the writer and a few report readers (WAL)
	}
	db.SetMaxIdleConns(4)
	s := &sqliteStore{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("predlog: sqlite %s: %w", path, err)
	}
	return s, nil
}

// migrate creates the schema, first moving the records of a database
// written by an earlier version (one row per record in a predictions
// table) into batches, in one transaction.
func (s *sqliteStore) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var kind string
	err = tx.QueryRowContext(ctx, `SELECT type FROM sqlite_master WHERE name = 'predictions'`).Scan(&kind)
	old := err == nil && kind == "table"
	if err != nil && err != sql.ErrNoRows {
		return err
	}
	if old {
		if _, err := tx.ExecContext(ctx, `ALTER TABLE predictions RENAME TO predictions_v1`); err != nil {
			return fmt.Errorf("migrating: %w", err)
		}
	}
	if err := addBatchColumns(ctx, tx); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	if _, err := tx.ExecContext(ctx, sqliteSchema); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	if old {
		if err := migrateRows(ctx, tx); err != nil {
			return fmt.Errorf("migrating the predictions table: %w", err)
		}
	}
	return tx.Commit()
}

// addBatchColumns adds the columns of format 2 to a prediction_batches
// table written before them (its batches are all format 1, the format
// column's default).
func addBatchColumns(ctx context.Context, tx *sql.Tx) error {
	for _, c := range []struct{ name, decl string }{
		{"format", "INTEGER NOT NULL DEFAULT 1"}, {"model", "TEXT"}, {"version", "INTEGER"},
	} {
		var tables, has int
		err := tx.QueryRowContext(ctx, `SELECT
			(SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'prediction_batches'),
			(SELECT count(*) FROM pragma_table_info('prediction_batches') WHERE name = ?)`, c.name).Scan(&tables, &has)
		if err != nil || tables == 0 {
			return err
		}
		if has == 0 {
			if _, err := tx.ExecContext(ctx, "ALTER TABLE prediction_batches ADD COLUMN "+c.name+" "+c.decl); err != nil {
				return err
			}
		}
	}
	return nil
}

func migrateRows(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, "SELECT "+strings.Join(columns, ", ")+" FROM predictions_v1 ORDER BY id")
	if err != nil {
		return err
	}
	var batch []Record
	var recs [][]Record
	for rows.Next() {
		var micros int64
		r, err := scanRecord(rows, &micros, func() time.Time { return time.UnixMicro(micros) })
		if err != nil {
			rows.Close()
			return err
		}
		if batch = append(batch, r); len(batch) == DefaultBatchSize {
			recs, batch = append(recs, batch), nil
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(batch) > 0 {
		recs = append(recs, batch)
	}
	var buf []byte
	for _, b := range recs {
		if buf, err = insertBatch(ctx, tx, buf, b); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, `DROP TABLE predictions_v1`)
	return err
}

// execer is a *sql.DB or *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

const insertSQL = `INSERT INTO prediction_batches (first, last, n, records, format, model, version) VALUES (?, ?, ?, ?, ?, ?, ?)`

// insertBatch writes recs as format-2 rows, one per model version in the
// order each first appears, encoding into buf (returned for reuse). e
// must be a transaction, so that the rows commit together.
func insertBatch(ctx context.Context, e execer, buf []byte, recs []Record) ([]byte, error) {
	type version struct {
		model  string
		number int
	}
	groups := [][]Record{recs}
	if slices.ContainsFunc(recs, func(r Record) bool { return r.Model != recs[0].Model || r.Version != recs[0].Version }) {
		// Several versions: rare, so the common case copies nothing.
		at := map[version]int{}
		groups = nil
		for _, r := range recs {
			k := version{r.Model, r.Version}
			i, ok := at[k]
			if !ok {
				i = len(groups)
				at[k] = i
				groups = append(groups, nil)
			}
			groups[i] = append(groups[i], r)
		}
	}
	for _, g := range groups {
		if len(g) == 0 {
			continue
		}
		first, last := g[0].Time.UnixMicro(), g[0].Time.UnixMicro()
		for _, r := range g {
			t := r.Time.UnixMicro()
			first, last = min(first, t), max(last, t)
		}
		buf = append(buf[:0], '[')
		for i, r := range g {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendRecord(buf, r, first)
		}
		buf = append(buf, ']')
		if _, err := e.ExecContext(ctx, insertSQL, first, last, len(g), string(buf), formatArrays,
			cleanString(g[0].Model), g[0].Version); err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// insert writes the batch in one transaction.
func (s *sqliteStore) insert(ctx context.Context, recs []Record) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	s.buf, err = insertBatch(ctx, tx, s.buf, recs)
	if cap(s.buf) > 4<<20 {
		s.buf = nil // do not keep a batch of logged images
	}
	if err != nil {
		return err
	}
	return tx.Commit()
}

// deleteBefore deletes whole batches older than t, about limit records
// at a time, then trims the batches that straddle t.
func (s *sqliteStore) deleteBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	cut := t.UnixMicro()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	// A batch goes when the records before it are fewer than limit, so
	// one batch larger than limit still goes.
	rows, err := tx.QueryContext(ctx, `
		DELETE FROM prediction_batches WHERE id IN (
			SELECT id FROM (
				SELECT id, n, SUM(n) OVER (ORDER BY last, id) AS c
				FROM prediction_batches WHERE last < ?)
			WHERE c - n < ?)
		RETURNING n`, cut, limit)
	if err != nil {
		return 0, err
	}
	var deleted int64
	for rows.Next() {
		var n int64
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return 0, err
		}
		deleted += n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if deleted < int64(limit) {
		n, err := trimStraddling(ctx, tx, cut)
		if err != nil {
			return 0, err
		}
		deleted += n
	}
	return deleted, tx.Commit()
}

// trimStraddling rewrites the batches holding records on both sides of
// cut without the older ones.
func trimStraddling(ctx context.Context, tx *sql.Tx, cut int64) (int64, error) {
	type batch struct {
		id   int64
		recs []Record
	}
	var bs []batch
	rows, err := tx.QueryContext(ctx, `SELECT id, records, format, first, model, version FROM prediction_batches WHERE first < ? AND last >= ?`, cut, cut)
	if err != nil {
		return 0, err
	}
	for rows.Next() {
		var b batch
		var text string
		var m batchMeta
		if err := rows.Scan(&b.id, &text, &m.format, &m.first, &m.model, &m.version); err != nil {
			rows.Close()
			return 0, err
		}
		if b.recs, err = decodeRecords(text, m); err != nil {
			rows.Close()
			return 0, fmt.Errorf("batch %d: %w", b.id, err)
		}
		bs = append(bs, b)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	var deleted int64
	var buf []byte
	for _, b := range bs {
		kept := slices.DeleteFunc(b.recs, func(r Record) bool { return r.Time.UnixMicro() < cut })
		deleted += int64(len(b.recs) - len(kept))
		if _, err := tx.ExecContext(ctx, `DELETE FROM prediction_batches WHERE id = ?`, b.id); err != nil {
			return 0, err
		}
		if buf, err = insertBatch(ctx, tx, buf, kept); err != nil {
			return 0, err
		}
	}
	return deleted, nil
}

// query reads the batches that can hold matching records, in order of
// their earliest record, and stops once no later batch can hold one that
// sorts before the limit-th found. Records come back ordered by time, then
// write order (batch, position).
func (s *sqliteStore) query(ctx context.Context, q Query) ([]Record, error) {
	where, args := []string{"1"}, []any{}
	if !q.Since.IsZero() {
		where, args = append(where, "last >= ?"), append(args, q.Since.UnixMicro())
	}
	if !q.Until.IsZero() {
		where, args = append(where, "first < ?"), append(args, q.Until.UnixMicro())
	}
	if q.Model != "" {
		where, args = append(where, "(format = 1 OR model = ?)"), append(args, q.Model)
	}
	rows, err := s.db.QueryContext(ctx,
		"SELECT first, records, format, model, version FROM prediction_batches WHERE "+strings.Join(where, " AND ")+" ORDER BY first, id", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Record
	since, until := q.Since.UnixMicro(), q.Until.UnixMicro()
	for rows.Next() {
		var text string
		var m batchMeta
		if err := rows.Scan(&m.first, &text, &m.format, &m.model, &m.version); err != nil {
			return nil, err
		}
		if q.Limit > 0 && len(out) >= q.Limit && m.first > out[q.Limit-1].Time.UnixMicro() {
			break // every later record sorts after the limit-th
		}
		recs, err := decodeRecords(text, m)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			t := r.Time.UnixMicro()
			if (!q.Since.IsZero() && t < since) || (!q.Until.IsZero() && t >= until) || (q.Model != "" && r.Model != q.Model) {
				continue
			}
			out = append(out, r)
		}
		if q.Limit > 0 && len(out) >= q.Limit {
			// Stable: equal times keep write order.
			slices.SortStableFunc(out, func(a, b Record) int { return a.Time.Compare(b.Time) })
			out = out[:q.Limit]
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, func(a, b Record) int { return a.Time.Compare(b.Time) })
	return out, nil
}

func (s *sqliteStore) close() error { return s.db.Close() }

// jsonRecord is a Record in a batch's JSON (NaN and ±Inf are null).
type jsonRecord struct {
	Time         int64       `json:"time"`
	RequestID    string      `json:"request_id"`
	Model        string      `json:"model"`
	Version      int         `json:"version"`
	TopK         []jsonClass `json:"topk"`
	PreprocessMs *float64    `json:"preprocess_ms"`
	QueueMs      *float64    `json:"queue_ms"`
	InferMs      *float64    `json:"infer_ms"`
	TotalMs      *float64    `json:"total_ms"`
	Width        int         `json:"width"`
	Height       int         `json:"height"`
	Brightness   *float64    `json:"brightness"`
	Contrast     *float64    `json:"contrast"`
	Image        []byte      `json:"image"` // base64
}

// arrayRecord decodes a format-2 record, [time after first, request_id,
// topk, …], into the same fields (decoding into a slice of pointers fills
// each field in place; a missing image leaves it nil, later fields are
// ignored).
type arrayRecord struct{ jsonRecord }

func (a *arrayRecord) UnmarshalJSON(b []byte) error {
	j := &a.jsonRecord
	var top []arrayClass
	err := json.Unmarshal(b, &[]any{&j.Time, &j.RequestID, &top,
		&j.PreprocessMs, &j.QueueMs, &j.InferMs, &j.TotalMs, &j.Width, &j.Height, &j.Brightness, &j.Contrast, &j.Image})
	j.TopK = make([]jsonClass, len(top))
	for i, c := range top {
		j.TopK[i] = c.jsonClass
	}
	return err
}

// arrayClass decodes a format-2 class, [index, label, score].
type arrayClass struct{ jsonClass }

func (c *arrayClass) UnmarshalJSON(b []byte) error {
	return json.Unmarshal(b, &[]any{&c.Index, &c.Label, &c.Score})
}

// batchMeta is what a batch row says about its records.
type batchMeta struct {
	format  int
	first   int64          // format 2: record times count from here
	model   sql.NullString // format 2: every record's
	version sql.NullInt64
}

func decodeRecords(text string, m batchMeta) ([]Record, error) {
	var js []jsonRecord
	switch m.format {
	case 1:
		if err := json.Unmarshal([]byte(text), &js); err != nil {
			return nil, fmt.Errorf("predlog: a batch of records: %w", err)
		}
	case formatArrays:
		var as []arrayRecord
		if err := json.Unmarshal([]byte(text), &as); err != nil {
			return nil, fmt.Errorf("predlog: a batch of records: %w", err)
		}
		js = make([]jsonRecord, len(as))
		for i := range as {
			js[i] = as[i].jsonRecord
			js[i].Time += m.first
			js[i].Model, js[i].Version = m.model.String, int(m.version.Int64)
		}
	default:
		return nil, fmt.Errorf("predlog: a batch of records in format %d, newer than this fastinfer", m.format)
	}
	recs := make([]Record, len(js))
	for i, j := range js {
		r := &recs[i]
		r.Time = time.UnixMicro(j.Time).UTC()
		r.RequestID, r.Model, r.Version = j.RequestID, j.Model, j.Version
		r.TopK = classes(j.TopK)
		r.Latency = Latency{floatOrNaN(j.PreprocessMs), floatOrNaN(j.QueueMs), floatOrNaN(j.InferMs), floatOrNaN(j.TotalMs)}
		r.Width, r.Height = j.Width, j.Height
		r.Brightness, r.Contrast = float32OrNaN(j.Brightness), float32OrNaN(j.Contrast)
		if len(j.Image) > 0 {
			r.Image = j.Image
		}
	}
	return recs, nil
}
