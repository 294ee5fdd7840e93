package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"fastinfer/batching"
	"fastinfer/internal/dtype"
	"fastinfer/vision/guard"
)

const defaultTopK = 5

// classify answers POST /v1/models/{m}[/versions/{v}]/classify.
func (s *Server) classify(ctx *fasthttp.RequestCtx, name, version string) {
	s.inference(ctx, name, version, false, s.classifyModel)
}

// inference is what every inference endpoint shares: the API token, a
// counted reference on the model while the handler runs (so a replaced
// version drains before it closes), the error answer in the endpoint's
// form (v2: the protocol's), and the request metrics.
func (s *Server) inference(ctx *fasthttp.RequestCtx, name, version string, v2 bool,
	handle func(*fasthttp.RequestCtx, *Model, time.Time) *apiError) {
	start := time.Now()
	if !s.authorized(ctx, s.apiToken, v2) {
		s.metrics.requests.WithLabelValues(unknownModel, "", "401").Inc()
		return
	}
	m, aerr := s.models.acquire(name, version)
	if aerr == nil {
		func() {
			defer m.refs.Done() // even if the handler panics, or Drain hangs
			aerr = handle(ctx, m, start)
		}()
	}
	if aerr != nil {
		if v2 {
			writeV2Error(ctx, aerr)
		} else {
			writeError(ctx, aerr)
		}
	}
	s.finished(m, ctx.Response.StatusCode(), start)
}

// finished records an inference request's outcome, whichever transport
// carried it: the version's statistics, when one was acquired (m is nil
// otherwise), and the request metrics by HTTP status (a gRPC call's is the
// status its error maps from).
func (s *Server) finished(m *Model, status int, start time.Time) {
	label, ver, elapsed := unknownModel, "", time.Since(start)
	if m != nil {
		label, ver = m.Name, m.versionLabel
		m.stats.finished(status == fasthttp.StatusOK, elapsed)
	}
	code := strconv.Itoa(status)
	s.metrics.requests.WithLabelValues(label, ver, code).Inc()
	s.metrics.duration.WithLabelValues(label, ver, code).Observe(elapsed.Seconds())
}

func (s *Server) classifyModel(ctx *fasthttp.RequestCtx, m *Model, start time.Time) *apiError {
	if m.Preprocess == nil {
		return errorf(400, codeBadRequest, "model "+m.Name+" takes tensors only: "+m.ImagesNote+
			"; send them to /v2/models/"+m.Name+"/infer, or give its config.yaml a preprocess section")
	}
	args := ctx.QueryArgs()
	topK, aerr := parseTopK(args.Peek("top_k"), m.Classes)
	if aerr != nil {
		return aerr
	}
	opts, aerr := parseScheduling(args.Peek("priority"), args.Peek("timeout_ms"))
	if aerr != nil {
		return aerr
	}
	imgs, aerr := s.images(ctx)
	if aerr != nil {
		return aerr
	}
	rows := len(imgs)

	var stats []ImageStats
	if m.Drift != nil || s.opts.PredictionLog != nil {
		stats = make([]ImageStats, rows)
	}
	// The input rows: float32, or the model's datatype written directly.
	var inF *[]float32
	var inB *[]byte
	var fill func(i int, img []byte, stats bool) (ImageStats, error)
	if dt := m.inputType(); dt != "FP32" && m.PreprocessBytes != nil && m.InferBytes != nil {
		row := m.InputLen * dtype.Size(dt)
		inB = m.byteBuffer(rows * row)
		defer m.bpool.Put(inB)
		fill = func(i int, img []byte, stats bool) (ImageStats, error) {
			return m.PreprocessBytes(img, (*inB)[i*row:(i+1)*row], stats)
		}
	} else {
		inF = m.buffer(rows * m.InputLen)
		defer m.release(inF)
		fill = func(i int, img []byte, stats bool) (ImageStats, error) {
			return m.Preprocess(img, (*inF)[i*m.InputLen:(i+1)*m.InputLen], stats)
		}
	}
	pre := time.Now()
	if aerr := preprocessAll(imgs, fill, stats); aerr != nil {
		return aerr
	}
	preDur := time.Since(pre)
	m.preprocessObs.Observe(preDur.Seconds())

	out := m.buffer(rows * m.Classes)
	defer m.release(out)
	g := watchClient(ctx)
	opts.Gone = g.fn
	var tm batching.Timing
	var err error
	if inB != nil {
		tm, err = m.InferBytes(context.Background(), *inB, rows, *out, opts)
	} else {
		tm, err = m.inferFloats(context.Background(), *inF, rows, *out, opts)
	}
	unwatchClient(g)
	if err != nil {
		return s.inferError(m, err)
	}
	if aerr := s.checkOutputs(m, *out, rows, false); aerr != nil {
		return aerr
	}
	m.stats.ran(rows, tm)
	m.imagesCtr.Add(float64(rows))
	var smBuf [8]rowSoftmax
	sm := softmaxRows(m, *out, rows, smBuf[:0])
	m.observePredictions(*out, rows, stats, sm)

	t := timings{preprocess: preDur, queue: tm.Queue, infer: tm.Compute, total: time.Since(start)}
	if s.opts.PredictionLog != nil {
		s.logPredictions(m, s.requestID(ctx), *out, rows, imgs, stats, t, sm)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	b := ctx.Response.Body()[:0]
	b = appendClassification(b, m, *out, rows, topK, t, sm)
	ctx.Response.SetBodyRaw(b)
	return nil
}

func parseTopK(raw []byte, classes int) (int, *apiError) {
	if raw == nil {
		return min(defaultTopK, classes), nil
	}
	k, err := strconv.Atoi(string(raw))
	if err != nil || k < 1 {
		return 0, errorf(400, codeBadRequest, "top_k must be a positive integer, got "+strconv.Quote(string(raw)))
	}
	return min(k, classes), nil
}

// parseScheduling reads ?priority= (1 = highest) and ?timeout_ms=.
func parseScheduling(prio, timeout []byte) (batching.RequestOptions, *apiError) {
	var o batching.RequestOptions
	if prio != nil {
		p, err := strconv.Atoi(string(prio))
		if err != nil || p < 1 {
			return o, errorf(400, codeBadRequest, "priority must be a positive integer (1 = highest), got "+strconv.Quote(string(prio)))
		}
		o.Priority = p
	}
	if timeout != nil {
		ms, err := strconv.ParseFloat(string(timeout), 64)
		if err != nil || !(ms > 0) || ms > 3.6e6 {
			return o, errorf(400, codeBadRequest, "timeout_ms must be a positive number of milliseconds up to one hour, got "+strconv.Quote(string(timeout)))
		}
		o.Timeout = time.Duration(ms * float64(time.Millisecond))
	}
	return o, nil
}

var (
	mediaMultipart = []byte("multipart/form-data")
	mediaOctet     = []byte("application/octet-stream")
	mediaImage     = []byte("image/")
)

// images returns the uploaded images in upload order: the raw body, or each
// multipart part named "image".
// multipartForm parses a multipart/form-data body. A compressed one is
// inflated by requestBody, as every other body is, held to the body
// limit, and parsed in memory: fasthttp's own parser inflates gzip only,
// parsed deflate as garbage (400, and 400 for br where 415 is due), and
// refused "identity".
func (s *Server) multipartForm(ctx *fasthttp.RequestCtx) (*multipart.Form, *apiError) {
	if len(ctx.Request.Header.ContentEncoding()) > 0 {
		body, aerr := s.requestBody(ctx)
		if aerr != nil {
			return nil, aerr
		}
		boundary := ctx.Request.Header.MultipartFormBoundary()
		if len(boundary) == 0 {
			return nil, errorf(400, codeBadRequest, "malformed multipart body: no boundary in Content-Type")
		}
		// Parts fit the memory allowance, so none is written to disk.
		form, err := multipart.NewReader(bytes.NewReader(body), string(boundary)).ReadForm(int64(len(body)) + 1)
		if err != nil {
			return nil, errorf(400, codeBadRequest, "malformed multipart body: "+err.Error())
		}
		return form, nil
	}
	form, err := ctx.MultipartFormWithLimit(s.opts.MaxBodyBytes)
	if err != nil {
		if errors.Is(err, fasthttp.ErrBodyTooLarge) {
			return nil, errorf(413, codeTooLarge, "multipart body too large")
		}
		return nil, errorf(400, codeBadRequest, "malformed multipart body: "+err.Error())
	}
	return form, nil
}

func (s *Server) images(ctx *fasthttp.RequestCtx) ([][]byte, *apiError) {
	ct := ctx.Request.Header.ContentType()
	media := ct
	if i := bytes.IndexByte(media, ';'); i >= 0 {
		media = media[:i]
	}
	media = bytes.ToLower(bytes.TrimSpace(media))
	switch {
	case bytes.Equal(media, mediaMultipart):
		form, aerr := s.multipartForm(ctx)
		if aerr != nil {
			return nil, aerr
		}
		parts := form.File["image"]
		if len(parts) == 0 {
			return nil, errorf(400, codeBadRequest, `multipart body has no file part named "image"`)
		}
		if len(parts) > s.opts.MaxImages {
			return nil, errorf(413, codeTooLarge, fmt.Sprintf("%d images in one request; the limit is %d", len(parts), s.opts.MaxImages))
		}
		imgs := make([][]byte, len(parts))
		for i, fh := range parts {
			f, err := fh.Open()
			if err != nil {
				return nil, errorf(400, codeBadRequest, fmt.Sprintf("reading image part %d: %v", i, err))
			}
			imgs[i], err = io.ReadAll(io.LimitReader(f, int64(s.opts.MaxBodyBytes)))
			f.Close()
			if err != nil {
				return nil, errorf(400, codeBadRequest, fmt.Sprintf("reading image part %d: %v", i, err))
			}
		}
		return imgs, nil
	case bytes.HasPrefix(media, mediaImage), bytes.Equal(media, mediaOctet):
		body, aerr := s.requestBody(ctx)
		if aerr != nil {
			return nil, aerr
		}
		return [][]byte{body}, nil
	case len(media) == 0:
		return nil, errorf(415, codeMediaType, "missing Content-Type: send image bytes as image/jpeg, image/png or application/octet-stream, or multipart/form-data with image parts")
	default:
		return nil, errorf(415, codeMediaType, "unsupported Content-Type "+strconv.Quote(string(ct))+": send image/jpeg, image/png, application/octet-stream or multipart/form-data")
	}
}

// preprocessAll fills one input row per image (fill writes row i), and
// each one's stats into stats when it is not nil; several images decode
// in parallel (vision bounds how many decodes run at once).
func preprocessAll(imgs [][]byte, fill func(i int, img []byte, stats bool) (ImageStats, error), stats []ImageStats) *apiError {
	errs := make([]error, len(imgs))
	one := func(i int) {
		st, err := fill(i, imgs[i], stats != nil)
		errs[i] = err
		if stats != nil {
			stats[i] = st
		}
	}
	if len(imgs) == 1 {
		one(0)
	} else {
		// A panic in a decode goroutine would end the process: it is
		// carried back to the handler's goroutine, whose recoverer answers
		// 500 and logs it, as for one image.
		var wg sync.WaitGroup
		var mu sync.Mutex
		var panicked any
		for i := range imgs {
			wg.Go(func() {
				defer func() {
					if v := recover(); v != nil {
						mu.Lock()
						panicked = fmt.Sprintf("%v (image %d; its goroutine: %s)", v, i, debug.Stack())
						mu.Unlock()
					}
				}()
				one(i)
			})
		}
		wg.Wait()
		if panicked != nil {
			panic(panicked)
		}
	}
	for i, err := range errs {
		if err == nil {
			continue
		}
		prefix := ""
		if len(imgs) > 1 {
			prefix = fmt.Sprintf("image %d: ", i)
		}
		switch {
		case errors.Is(err, guard.ErrTooLarge):
			return errorf(413, codeTooLarge, prefix+err.Error())
		case errors.Is(err, guard.ErrEmpty), errors.Is(err, guard.ErrBadImage):
			return errorf(400, codeBadImage, prefix+err.Error())
		default:
			return errorf(500, codeInternal, prefix+"preprocessing failed: "+err.Error())
		}
	}
	return nil
}

func (s *Server) inferError(m *Model, err error) *apiError {
	switch {
	case errors.Is(err, batching.ErrQueueFull):
		return errorf(429, codeQueueFull, "model "+m.Name+" is overloaded: "+err.Error()+"; retry later")
	case errors.Is(err, batching.ErrQueueTimeout):
		return errorf(504, codeQueueTimeout, "model "+m.Name+": "+err.Error())
	case errors.Is(err, batching.ErrDeadlineUnmeetable):
		return errorf(503, codeUnmeetable, "model "+m.Name+": "+err.Error())
	case errors.Is(err, batching.ErrBadRequest):
		return errorf(400, codeBadRequest, err.Error())
	case errors.Is(err, batching.ErrClientGone):
		// Nobody reads this answer; the status is for access logs (nginx's 499).
		return errorf(499, codeClientGone, "model "+m.Name+": "+err.Error())
	case errors.Is(err, batching.ErrInputFault):
		return errorf(400, codeBadRequest, "model "+m.Name+": the input's shared memory region could not be read while the batch was formed: its object no longer holds it (truncated?)")
	case errors.Is(err, batching.ErrClosed):
		return errorf(503, codeUnavailable, "model "+m.Name+" is shutting down")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errorf(503, codeUnavailable, "request abandoned: "+err.Error())
	}
	s.log.Error("inference failed", "model", m.Name, "version", m.Version, "err", err)
	return errorf(500, codeInternal, "inference failed: "+err.Error())
}

// checkOutputs fails a request whose logits hold NaN or ±Inf. JSON cannot
// carry them (strconv writes NaN, which no JSON parser reads), softmax and
// top-k over them are arbitrary, and a client's argmax over a NaN row picks
// a class without a word; so the request fails in every encoding, and
// nothing of it reaches the prediction log or the drift window. From a
// tensor, the input is to blame (values far outside what the model was
// trained on overflow it: 422); from an image, preprocessing bounds the
// input, so the model is (500, logged).
func (s *Server) checkOutputs(m *Model, out []float32, rows int, tensor bool) *apiError {
	i := firstNonFinite(out[:rows*m.Classes])
	if i < 0 {
		return nil
	}
	what := "NaN"
	if v := float64(out[i]); math.IsInf(v, 0) {
		what = strconv.FormatFloat(v, 'g', -1, 32)
	}
	msg := "model " + m.Name + " gave " + what + " for row " + strconv.Itoa(i/m.Classes) +
		" (output element " + strconv.Itoa(i%m.Classes) + " of " + strconv.Itoa(m.Classes) + ")"
	if tensor {
		return errorf(422, codeNonFinite, msg+": the input is outside the range the model computes in")
	}
	s.log.Error("model output is not finite", "model", m.Name, "version", m.Version, "row", i/m.Classes, "element", i%m.Classes)
	return errorf(500, codeNonFinite, msg+" on a preprocessed image: the model is broken")
}

type timings struct{ preprocess, queue, infer, total time.Duration }

// appendClassification writes the 200 body by hand: this is the hot path,
// and reflection-based JSON would allocate per prediction.
func appendClassification(b []byte, m *Model, logits []float32, rows, topK int, t timings, sm []rowSoftmax) []byte {
	b = append(b, `{"model":`...)
	b = appendJSONString(b, m.Name)
	b = append(b, `,"version":"`...)
	b = strconv.AppendInt(b, int64(m.Version), 10)
	b = append(b, `","results":[`...)
	var idxBuf [16]int
	for r := range rows {
		if r > 0 {
			b = append(b, ',')
		}
		row := logits[r*m.Classes : (r+1)*m.Classes]
		top := topIndices(row, topK, idxBuf[:0])
		b = append(b, `{"predictions":[`...)
		for i, idx := range top {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"index":`...)
			b = strconv.AppendInt(b, int64(idx), 10)
			if idx < len(m.Labels) && m.Labels[idx] != "" {
				b = append(b, `,"label":`...)
				b = appendJSONString(b, m.Labels[idx])
			}
			b = append(b, `,"score":`...)
			b = appendFloat(b, sm[r].score(row[idx]), 32)
			b = append(b, '}')
		}
		b = append(b, "]}"...)
	}
	b = append(b, `],"timing_ms":{"preprocess":`...)
	b = appendMillis(b, t.preprocess)
	b = append(b, `,"queue":`...)
	b = appendMillis(b, t.queue)
	b = append(b, `,"infer":`...)
	b = appendMillis(b, t.infer)
	b = append(b, `,"total":`...)
	b = appendMillis(b, t.total)
	return append(b, "}}\n"...)
}

func appendMillis(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', -1, 64)
}

// rowSoftmax is a row's softmax normaliser: a score is exp(x-max)/sum,
// or x itself for a model whose outputs are probabilities (probs).
type rowSoftmax struct {
	max, sum float64
	probs    bool
}

// score is the score of an output value x of the row.
func (s rowSoftmax) score(x float32) float64 {
	if s.probs {
		return float64(x)
	}
	return math.Exp(float64(x)-s.max) / s.sum
}

// softmaxRows appends each row's normaliser to dst. A request computes
// them once for the response, the prediction metrics and the log: with
// 1,000 classes a row's exponentials take about 10 µs.
func softmaxRows(m *Model, logits []float32, rows int, dst []rowSoftmax) []rowSoftmax {
	probs := m.Scores == "probabilities"
	for r := range rows {
		if probs {
			dst = append(dst, rowSoftmax{probs: true})
			continue
		}
		mx, s := softmaxDenominator(logits[r*m.Classes : (r+1)*m.Classes])
		dst = append(dst, rowSoftmax{max: mx, sum: s})
	}
	return dst
}

// softmaxDenominator returns max(row) and Σexp(x-max), so a score is
// exp(x-max)/sum without overflow.
func softmaxDenominator(row []float32) (float64, float64) {
	maxv := math.Inf(-1)
	for _, v := range row {
		maxv = math.Max(maxv, float64(v))
	}
	sum := 0.0
	for _, v := range row {
		sum += math.Exp(float64(v) - maxv)
	}
	return maxv, sum
}

// topIndices returns the indices of the k largest values, largest first, the
// lower index first among equals. NaN sorts below everything.
func topIndices(row []float32, k int, dst []int) []int {
	k = min(k, len(row))
	greater := func(a, b int) bool {
		va, vb := row[a], row[b]
		if va != vb {
			return va > vb || (vb != vb && va == va) // a beats a NaN b
		}
		return a < b
	}
	for i := range row {
		if len(dst) < k {
			dst = append(dst, i)
		} else if greater(i, dst[k-1]) {
			dst[k-1] = i
		} else {
			continue
		}
		// Insertion step: bubble the new entry up to its place.
		for j := len(dst) - 1; j > 0 && greater(dst[j], dst[j-1]); j-- {
			dst[j], dst[j-1] = dst[j-1], dst[j]
		}
	}
	return dst
}
