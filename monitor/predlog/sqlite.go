package predlog

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

const sqliteSchema = `
CREATE TABLE IF NOT EXISTS predictions (
	id            INTEGER PRIMARY KEY,
	time          INTEGER NOT NULL, -- Unix microseconds, UTC
	request_id    TEXT    NOT NULL,
	model         TEXT    NOT NULL,
	version       INTEGER NOT NULL,
	topk          TEXT    NOT NULL, -- JSON: [{"index":3,"label":"cat","score":0.91}]
	preprocess_ms REAL,             -- NULL: NaN
	queue_ms      REAL,
	infer_ms      REAL,
	total_ms      REAL,
	width         INTEGER NOT NULL, -- 0: unknown
	height        INTEGER NOT NULL,
	brightness    REAL,             -- NULL: unknown (NaN)
	contrast      REAL,
	image         BLOB              -- NULL: not logged
);
CREATE INDEX IF NOT EXISTS predictions_model_version_time ON predictions (model, version, time);
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time);
`

// sqliteRowsPerStmt is the most rows one INSERT carries (14 columns each,
// well under SQLite's 32,766 parameters).
const sqliteRowsPerStmt = 64

type sqliteStore struct {
	db    *sql.DB
	stmts map[int]*sql.Stmt // multi-row inserts by row count; the writer's only
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
	s := &sqliteStore{db: db, stmts: map[int]*sql.Stmt{}}
	if _, err := db.ExecContext(ctx, sqliteSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("predlog: sqlite %s: schema: %w", path, err)
	}
	return s, nil
}

func (s *sqliteStore) stmt(ctx context.Context, rows int) (*sql.Stmt, error) {
	if st, ok := s.stmts[rows]; ok {
		return st, nil
	}
	var b strings.Builder
	b.WriteString("INSERT INTO predictions (" + strings.Join(columns, ", ") + ") VALUES ")
	one := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(columns)), ", ") + ")"
	for i := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(one)
	}
	st, err := s.db.PrepareContext(ctx, b.String())
	if err != nil {
		return nil, err
	}
	s.stmts[rows] = st
	return st, nil
}

func (s *sqliteStore) insert(ctx context.Context, recs []Record) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	args := make([]any, 0, len(columns)*min(len(recs), sqliteRowsPerStmt))
	for len(recs) > 0 {
		chunk := recs[:min(len(recs), sqliteRowsPerStmt)]
		recs = recs[len(chunk):]
		args = args[:0]
		for _, r := range chunk {
			top, err := encodeTopK(r.TopK)
			if err != nil {
				return err
			}
			args = append(args,
				r.Time.UnixMicro(), cleanString(r.RequestID), cleanString(r.Model), int64(r.Version), string(top),
				nullFloat(r.Latency.PreprocessMs), nullFloat(r.Latency.QueueMs),
				nullFloat(r.Latency.InferMs), nullFloat(r.Latency.TotalMs),
				int64(r.Width), int64(r.Height), nullFloat(r.Brightness), nullFloat(r.Contrast),
				nullBytes(r.Image))
		}
		st, err := s.stmt(ctx, len(chunk))
		if err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *sqliteStore) deleteBefore(ctx context.Context, t time.Time, limit int) (int64, error) {
	res, err := s.db.ExecContext(ctx,
		`DELETE FROM predictions WHERE id IN (SELECT id FROM predictions WHERE time < ? ORDER BY time LIMIT ?)`,
		t.UnixMicro(), limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s *sqliteStore) query(ctx context.Context, q Query) ([]Record, error) {
	var (
		where []string
		args  []any
	)
	if !q.Since.IsZero() {
		where, args = append(where, "time >= ?"), append(args, q.Since.UnixMicro())
	}
	if !q.Until.IsZero() {
		where, args = append(where, "time < ?"), append(args, q.Until.UnixMicro())
	}
	if q.Model != "" {
		where, args = append(where, "model = ?"), append(args, q.Model)
	}
	sqlText := "SELECT " + strings.Join(columns, ", ") + " FROM predictions"
	if len(where) > 0 {
		sqlText += " WHERE " + strings.Join(where, " AND ")
	}
	sqlText += " ORDER BY time, id"
	if q.Limit > 0 {
		sqlText += " LIMIT ?"
		args = append(args, q.Limit)
	}
	rows, err := s.db.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var (
			r                        Record
			micros, version, w, h    int64
			top                      string
			pre, queue, infer, total *float64
			brightness, contrast     *float64
			image                    []byte
		)
		if err := rows.Scan(&micros, &r.RequestID, &r.Model, &version, &top,
			&pre, &queue, &infer, &total, &w, &h, &brightness, &contrast, &image); err != nil {
			return nil, err
		}
		r.Time = time.UnixMicro(micros).UTC()
		r.Version, r.Width, r.Height = int(version), int(w), int(h)
		if r.TopK, err = decodeTopK([]byte(top)); err != nil {
			return nil, fmt.Errorf("predlog: topk of a %s record: %w", r.Model, err)
		}
		r.Latency = Latency{floatOrNaN(pre), floatOrNaN(queue), floatOrNaN(infer), floatOrNaN(total)}
		r.Brightness, r.Contrast = floatOrNaN(brightness), floatOrNaN(contrast)
		if len(image) > 0 {
			r.Image = image
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *sqliteStore) close() error {
	for _, st := range s.stmts {
		st.Close()
	}
	return s.db.Close()
}
