// Package train trains small ResNets with Gorgonia and registers them in
// the model repository as ONNX, closing the loop train → register → serve
// → monitor in Go.
package train

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"time"

	G "gorgonia.org/gorgonia"

	"fastinfer/train/data"
)

// Options are a training run's hyperparameters.
type Options struct {
	Arch         Arch
	Epochs       int
	Batch        int
	LR           float64 // peak learning rate (Adam)
	WarmupEpochs float64 // linear warm-up, then cosine decay to 0
	WeightDecay  float64 // L2 on all parameters
	Augment      bool    // random crop (pad 2) and horizontal flip
	Seed         uint64
	// Replicas splits each batch across this many concurrent graphs
	// (0: one per core, at most 4, dividing the batch).
	Replicas int
	Logger   *slog.Logger
	// Progress, if set, is called after every step (for a progress bar).
	Progress func(epoch, step, steps int)
}

// EpochStats is one epoch's summary.
type EpochStats struct {
	Epoch          int
	Loss           float64 // mean training loss
	TrainAccuracy  float64 // on the (augmented) training batches
	ValAccuracy    float64
	ImagesPerSec   float64
	Elapsed        time.Duration
	LearningRate   float64
	Interrupted    bool
	StepsCompleted int
}

// Result is a finished (or interrupted) run.
type Result struct {
	Params  *Params
	Epochs  []EpochStats
	Elapsed time.Duration
	// Replicas is how many graphs shared each batch.
	Replicas int
	// Interrupted is true when ctx ended before the last epoch finished;
	// Params then hold the weights so far.
	Interrupted bool
}

// Fit trains on train, evaluating on valid after every epoch. It starts
// from p when p is non-nil (a resumed run, at epoch len(done)), else from
// fresh weights. Ending ctx stops at the next step and returns what was
// trained so far with Interrupted set: nothing trained is lost.
func Fit(ctx context.Context, o Options, trainSet, valid *data.Set, p *Params, done []EpochStats) (*Result, error) {
	if o.Epochs <= 0 || o.Batch <= 0 || o.LR <= 0 {
		return nil, fmt.Errorf("epochs, batch and learning rate must be positive: %+v", o)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	var err error
	if p == nil {
		if p, err = NewParams(o.Arch, o.Seed); err != nil {
			return nil, err
		}
	}
	a := p.Arch
	if trainSet.C != a.InC || trainSet.H != a.InH || trainSet.W != a.InW {
		return nil, fmt.Errorf("data is %d×%d×%d, the network takes %d×%d×%d", trainSet.C, trainSet.H, trainSet.W, a.InC, a.InH, a.InW)
	}
	solverOpts := []G.SolverOpt{G.WithLearnRate(o.LR)}
	if o.WeightDecay > 0 {
		solverOpts = append(solverOpts, G.WithL2Reg(o.WeightDecay))
	}
	solver := G.NewAdamSolver(solverOpts...)
	replicas := o.Replicas
	if replicas <= 0 {
		replicas = autoReplicas(o.Batch)
	}
	if replicas > 1 {
		// Parallelism comes from the replicas; BLAS threads would only
		// compete with them.
		singleThreadBLAS()
	}
	tr, err := newTrainer(p, o.Batch, replicas, solver)
	if err != nil {
		return nil, err
	}
	defer tr.close()
	ev, err := newEvaluator(p, o.Batch)
	if err != nil {
		return nil, err
	}
	defer ev.close()

	res := &Result{Params: p, Epochs: append([]EpochStats(nil), done...), Replicas: replicas}
	start := time.Now()
	batches := data.NewBatcher(trainSet, o.Batch, true, o.Seed)
	steps := batches.Batches()
	x := make([]float32, o.Batch*a.InC*a.InH*a.InW)
	y := make([]int, o.Batch)
	rng := rand.New(rand.NewPCG(o.Seed, 0xa5a5))
	scratch := make([]float32, a.InC*(a.InH+4)*(a.InW+4))
	imgLen := a.InC * a.InH * a.InW
	for epoch := len(done); epoch < o.Epochs; epoch++ {
		es := EpochStats{Epoch: epoch + 1}
		t0 := time.Now()
		batches.Reset(epoch)
		var lossSum float64
		var correct, seen int
		for step := 0; ; step++ {
			if ctx.Err() != nil {
				es.Interrupted = true
				break
			}
			real, ok := batches.Next(x, y)
			if !ok {
				break
			}
			if o.Augment {
				for i := range o.Batch {
					data.Augment(x[i*imgLen:(i+1)*imgLen], a.InC, a.InH, a.InW, 2, rng, scratch)
				}
			}
			lr := schedule(o, epoch, step, steps)
			G.WithLearnRate(lr)(solver)
			es.LearningRate = lr
			loss, c, err := tr.step(x, y, real)
			if err != nil {
				return nil, fmt.Errorf("epoch %d step %d: %w", epoch+1, step, err)
			}
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				return nil, fmt.Errorf("epoch %d step %d: loss is %v; lower the learning rate", epoch+1, step, loss)
			}
			lossSum += loss * float64(real)
			correct += c
			seen += real
			es.StepsCompleted = step + 1
			if o.Progress != nil {
				o.Progress(epoch+1, step+1, steps)
			}
		}
		tr.saveStats()
		es.Elapsed = time.Since(t0)
		if seen > 0 {
			es.Loss = lossSum / float64(seen)
			es.TrainAccuracy = float64(correct) / float64(seen)
			es.ImagesPerSec = float64(seen) / es.Elapsed.Seconds()
		}
		if es.Interrupted {
			res.Interrupted = true
			res.Epochs = append(res.Epochs, es)
			log.Warn("training interrupted", "epoch", es.Epoch, "steps", es.StepsCompleted)
			break
		}
		if valid != nil && valid.Len() > 0 {
			acc, err := Accuracy(ev, valid)
			if err != nil {
				return nil, err
			}
			es.ValAccuracy = acc
		}
		res.Epochs = append(res.Epochs, es)
		eta := time.Duration(float64(time.Since(start)) / float64(epoch+1-len(done)) * float64(o.Epochs-epoch-1))
		log.Info("epoch", "epoch", fmt.Sprintf("%d/%d", es.Epoch, o.Epochs), "loss", round(es.Loss, 4),
			"train_acc", round(es.TrainAccuracy, 4), "val_acc", round(es.ValAccuracy, 4),
			"images_per_s", math.Round(es.ImagesPerSec), "lr", es.LearningRate, "eta", eta.Round(time.Second))
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// autoReplicas is one replica per core, at most 4, with at least 16 rows
// each, dividing the batch.
func autoReplicas(batch int) int {
	n := min(runtime.GOMAXPROCS(0), 4, max(batch/16, 1))
	for batch%n != 0 {
		n--
	}
	return n
}

// schedule is a linear warm-up followed by a cosine decay, per step.
func schedule(o Options, epoch, step, steps int) float64 {
	t := float64(epoch) + float64(step)/float64(max(steps, 1))
	if o.WarmupEpochs > 0 && t < o.WarmupEpochs {
		return o.LR * (t + 1.0/float64(steps)) / o.WarmupEpochs
	}
	span := float64(o.Epochs) - o.WarmupEpochs
	if span <= 0 {
		return o.LR
	}
	return o.LR * 0.5 * (1 + math.Cos(math.Pi*(t-o.WarmupEpochs)/span))
}

// Predict returns the logits of every image of s (len × classes).
func Predict(p *Params, s *data.Set, batch int) ([]float32, error) {
	ev, err := newEvaluator(p, batch)
	if err != nil {
		return nil, err
	}
	defer ev.close()
	return predict(ev, s)
}

func predict(ev *evaluator, s *data.Set) ([]float32, error) {
	k := ev.p.Arch.Classes
	out := make([]float32, s.Len()*k)
	b := data.NewBatcher(s, ev.batch, false, 0)
	x := make([]float32, ev.batch*s.C*s.H*s.W)
	y := make([]int, ev.batch)
	logits := make([]float32, ev.batch*k)
	row := 0
	for {
		real, ok := b.Next(x, y)
		if !ok {
			break
		}
		if err := ev.logits(x, logits); err != nil {
			return nil, err
		}
		copy(out[row*k:], logits[:real*k])
		row += real
	}
	if row != s.Len() {
		return nil, errors.New("batcher did not cover the set")
	}
	return out, nil
}

// Accuracy is the top-1 accuracy of the evaluation graph on s.
func Accuracy(ev *evaluator, s *data.Set) (float64, error) {
	logits, err := predict(ev, s)
	if err != nil {
		return 0, err
	}
	return float64(countCorrect(logits, s.Y, s.Len(), ev.p.Arch.Classes)) / float64(max(s.Len(), 1)), nil
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}
