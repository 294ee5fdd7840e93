package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	ort "github.com/yalue/onnxruntime_go"
)

// ProviderTensorRT is what Session.Provider reports for a session that
// TensorRT runs (with CUDA taking the nodes TensorRT leaves).
const ProviderTensorRT = "tensorrt"

// TensorRT modes (Config.TensorRT).
const (
	TensorRTAuto = "auto" // when libonnxruntime_providers_tensorrt.so is beside the ORT library
	TensorRTOff  = "off"
)

// OnGPU reports whether a session provider runs on a GPU.
func OnGPU(provider string) bool { return provider == ProviderCUDA || provider == ProviderTensorRT }

// tensorRTProviderLib is the TensorRT provider ORT's GPU builds ship beside
// their own library. The npm build that scripts/deps.sh installs has none,
// and no TensorRT build for CUDA 13 could be had here, so this path has
// never found one: TensorRT is only ever tried when the file is there,
// and any failure (the file, libnvinfer, an unsupported graph) falls back
// to plain CUDA with the reason logged once.
func tensorRTProviderLib(ortLib string) string {
	return filepath.Join(filepath.Dir(ortLib), "libonnxruntime_providers_tensorrt.so")
}

// tryTensorRT says whether a session about to try CUDA should try
// TensorRT first.
func (e *Env) tryTensorRT() bool {
	if e.cfg.TensorRT == TensorRTOff {
		return false
	}
	_, err := os.Stat(tensorRTProviderLib(e.cfg.Lib))
	return err == nil
}

// appendTensorRT adds TensorRT, then CUDA for what TensorRT does not take
// (ORT assigns nodes to providers in the order they were appended).
// TensorRT builds an engine per input shape, which takes seconds to
// minutes; with a cache folder the engines survive restarts.
func (e *Env) appendTensorRT(opts *ort.SessionOptions, device int) error {
	to, err := ort.NewTensorRTProviderOptions()
	if err != nil {
		return fmt.Errorf("TensorRT provider options: %w", err)
	}
	defer to.Destroy()
	o := map[string]string{"device_id": strconv.Itoa(device)}
	if dir := e.cfg.TensorRTCache; dir != "" {
		o["trt_engine_cache_enable"] = "1"
		o["trt_engine_cache_path"] = dir
		o["trt_timing_cache_enable"] = "1"
		o["trt_timing_cache_path"] = dir
	}
	if err := to.Update(o); err != nil {
		return fmt.Errorf("TensorRT provider options: %w", err)
	}
	if err := opts.AppendExecutionProviderTensorRT(to); err != nil {
		return fmt.Errorf("appending TensorRT provider: %w", err)
	}
	// No CUDA graphs here: they need every node on the CUDA provider.
	return e.appendCUDA(opts, device, false)
}

// noteTensorRT logs once per reason that TensorRT could not be used.
func (e *Env) noteTensorRT(model string, err error) string {
	reason := "TensorRT provider unusable: " + err.Error()
	e.noteOnce(reason, func() {
		e.logger.Warn("TensorRT execution provider unusable, trying CUDA", "model", model, "reason", err.Error())
	})
	return reason
}
