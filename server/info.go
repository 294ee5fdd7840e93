package server

import (
	"bytes"
	"cmp"
	"encoding/json"
	"strconv"

	"github.com/valyala/fasthttp"
)

// modelJSON is a model version as GET /v1/models shows it.
type modelJSON struct {
	Name          string       `json:"name"`
	Version       string       `json:"version"`
	Versions      []string     `json:"versions"`
	Platform      string       `json:"platform"`
	Provider      string       `json:"provider"`
	ProviderNote  string       `json:"provider_note,omitempty"`
	Precision     string       `json:"precision"`
	Scores        string       `json:"scores"`
	Inputs        []Tensor     `json:"inputs"`
	Outputs       []Tensor     `json:"outputs"`
	Classes       int          `json:"classes"`
	Labels        bool         `json:"labels"`
	Preprocessing any          `json:"preprocessing,omitempty"`
	ImagesNote    string       `json:"images_note,omitempty"` // why a model takes tensors only
	Batching      BatchingInfo `json:"batching"`

	// Card is the model card (card.json) of the version, when it has one.
	Card json.RawMessage `json:"card,omitempty"`
}

func (s *Server) describe(m *Model) modelJSON {
	var versions []string
	for _, o := range s.models.list() {
		if o.Name == m.Name {
			versions = append(versions, strconv.Itoa(o.Version))
		}
	}
	return modelJSON{
		Name: m.Name, Version: strconv.Itoa(m.Version), Versions: versions,
		Platform: m.Platform, Provider: m.Provider, ProviderNote: m.ProviderNote, Precision: cmp.Or(m.Precision, "fp32"),
		Scores: cmp.Or(m.Scores, "logits"),
		Inputs: m.Inputs, Outputs: m.Outputs, Classes: m.Classes, Labels: len(m.Labels) > 0,
		Preprocessing: m.Preprocessing, ImagesNote: m.ImagesNote, Batching: m.Batching, Card: card(m.Card),
	}
}

// card is c if it is a JSON object, else nil: a malformed card must not
// turn every model listing into an encoding error.
func card(c json.RawMessage) json.RawMessage {
	if t := bytes.TrimLeft(c, " \t\r\n"); len(t) == 0 || t[0] != '{' || !json.Valid(t) {
		return nil
	}
	return c
}

// listModels answers GET /v1/models: every served model version.
func (s *Server) listModels(ctx *fasthttp.RequestCtx) {
	out := struct {
		Models []modelJSON `json:"models"`
	}{Models: []modelJSON{}}
	for _, m := range s.models.list() {
		out.Models = append(out.Models, s.describe(m))
	}
	writeJSON(ctx, out)
}

// modelInfo answers GET /v1/models/{m}[/versions/{v}].
func (s *Server) modelInfo(ctx *fasthttp.RequestCtx, name, version string) {
	m, aerr := s.models.get(name, version)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	writeJSON(ctx, s.describe(m))
}

// serverMetadata answers GET /v2 (Open Inference Protocol server metadata),
// extended with the execution provider each model runs on.
func (s *Server) serverMetadata(ctx *fasthttp.RequestCtx) {
	type served struct {
		Name     string `json:"name"`
		Version  string `json:"version"`
		Provider string `json:"provider"`
	}
	out := struct {
		Name       string   `json:"name"`
		Version    string   `json:"version"`
		Extensions []string `json:"extensions"`
		Runtime    string   `json:"runtime,omitempty"`
		Models     []served `json:"models"`
	}{Name: "fastinfer", Version: s.opts.Version, Extensions: s.extensions(), Runtime: s.opts.Runtime, Models: []served{}}
	for _, m := range s.models.list() {
		out.Models = append(out.Models, served{m.Name, strconv.Itoa(m.Version), m.Provider})
	}
	writeJSON(ctx, out)
}

// extensions are the protocol extensions GET /v2 and gRPC's
// ServerMetadata name.
func (s *Server) extensions() []string {
	ext := []string{"classification", "binary_tensor_data", "statistics"}
	if s.shm.enabled {
		ext = append(ext, "system_shared_memory")
		if s.shm.cuda != nil {
			ext = append(ext, "cuda_shared_memory")
		}
	}
	return ext
}

func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(ctx, errorf(500, codeInternal, "encoding response: "+err.Error()))
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}
