package server

import (
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"fastinfer/monitor/predlog"
)

// PredictionLog receives one record per answered image (monitor/predlog's
// Log fits). Add must not block; it reports whether the record was kept.
type PredictionLog interface {
	Add(predlog.Record) bool
}

// logTopK is how many classes each logged prediction keeps.
const logTopK = 5

var requestSeq atomic.Uint64

// requestID is the client's X-Request-Id when it sent a usable one, else a
// new id: the process start time and a sequence number, unique per
// process and sortable. It is echoed in the response.
func (s *Server) requestID(ctx *fasthttp.RequestCtx) string {
	if h := ctx.Request.Header.Peek("X-Request-Id"); len(h) > 0 && len(h) <= 128 && printable(h) {
		id := string(h)
		ctx.Response.Header.Set("X-Request-Id", id)
		return id
	}
	id := s.newRequestID()
	ctx.Response.Header.Set("X-Request-Id", id)
	return id
}

// newRequestID is the process start time and a sequence number.
func (s *Server) newRequestID() string {
	b := make([]byte, 0, 32)
	b = strconv.AppendInt(b, s.started.UnixMilli(), 36)
	b = append(b, '-')
	b = strconv.AppendUint(b, requestSeq.Add(1), 36)
	return string(b)
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// logPredictions hands one record per row to the prediction log. imgs and
// stats may be nil (tensor requests); images are kept only when
// LogImageBytes allows, copied because the request's buffer is reused.
func (s *Server) logPredictions(m *Model, id string, logits []float32, rows int, imgs [][]byte, stats []ImageStats, t timings, sm []rowSoftmax) {
	now := time.Now()
	lat := predlog.Latency{PreprocessMs: ms(t.preprocess), QueueMs: ms(t.queue), InferMs: ms(t.infer), TotalMs: ms(t.total)}
	var idx [logTopK]int
	for r := range rows {
		row := logits[r*m.Classes : (r+1)*m.Classes]
		top := topIndices(row, min(logTopK, m.Classes), idx[:0])
		rec := predlog.Record{Time: now, RequestID: id, Model: m.Name, Version: m.Version, Latency: lat,
			TopK: make([]predlog.Class, len(top)), Brightness: math.NaN(), Contrast: math.NaN()}
		for i, k := range top {
			rec.TopK[i] = predlog.Class{Index: k, Score: sm[r].score(row[k])}
			if k < len(m.Labels) {
				rec.TopK[i].Label = m.Labels[k]
			}
		}
		if stats != nil {
			st := stats[r]
			rec.Width, rec.Height, rec.Brightness, rec.Contrast = st.Width, st.Height, st.Brightness, st.Contrast
		}
		if imgs != nil && s.opts.LogImageBytes > 0 && len(imgs[r]) <= s.opts.LogImageBytes {
			rec.Image = append([]byte(nil), imgs[r]...)
		}
		s.opts.PredictionLog.Add(rec) // a full log counts its own drops
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
