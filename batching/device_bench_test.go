package batching

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// deviceInstance stands in for one instance on a GPU: Run holds the one
// shared device for a + b·rows, sleeping, since the device works while
// the host waits, and batches of different instances on one device take
// turns.
type deviceInstance struct {
	dev     *sync.Mutex
	a, b    time.Duration
	in, out []float32
	inLen   int
	outLen  int
	busy    *time.Duration // device time, under dev
	runs    *int
}

func (d *deviceInstance) Input(rows int) []byte     { return floatBytes(d.in[:rows*d.inLen]) }
func (d *deviceInstance) Output(rows int) []float32 { return d.out[:rows*d.outLen] }
func (d *deviceInstance) Run(rows int) error {
	d.dev.Lock()
	t := time.Now()
	time.Sleep(d.a + time.Duration(rows)*d.b)
	*d.busy += time.Since(t)
	*d.runs++
	d.dev.Unlock()
	return nil
}

// stagedDevice is deviceInstance with a second input slot.
type stagedDevice struct {
	*deviceInstance
	in1 []float32
}

func (d *stagedDevice) Slots() int { return 2 }
func (d *stagedDevice) InputSlot(slot, rows int) []byte {
	if slot == 1 {
		return floatBytes(d.in1[:rows*d.inLen])
	}
	return d.Input(rows)
}
func (d *stagedDevice) RunSlot(_, rows int) error { return d.Run(rows) }

// BenchmarkSimulatedDevice is the batcher alone in front of a simulated
// GPU shaped like ResNet-50 fp16 on an H100 (1 ms + 0.11 ms a row: 8 ms
// for 64 rows, as raw measured 7.8 ms), with 256 closed-loop clients of
// one row each. Rows are ResNet's 602 KB ("resnet") or 12 bytes ("tiny",
// the hand-offs without the copies). It needs no GPU and measures the
// host: "device-busy" is the share of the time a batch held the device,
// "of-device" images/s over the device's own rate at 64 rows (sleep
// overshoot takes ~3 % off it), each by instance count and with staged
// instances (two input slots). On the 2-core development machine, tiny
// rows keep the device 99.5 % busy; ResNet rows 74 % with one instance
// and 86 % with two or three, while each batch's copy takes 3.4 ms, and
// 99 % with one or two staged instances (7,321-7,423 against at most
// 6,417 images/s).
func BenchmarkSimulatedDevice(b *testing.B) {
	const (
		outLen    = 1000
		maxBatch  = 64
		clients   = 256
		a, perRow = time.Millisecond, 110 * time.Microsecond
	)
	ceiling := maxBatch / (a + maxBatch*perRow).Seconds()
	for _, tc := range []struct {
		name  string
		inLen int
	}{{"resnet", 3 * 224 * 224}, {"tiny", 3}} {
		inLen := tc.inLen
		ins := make([][]float32, clients)
		for i := range ins {
			ins[i] = make([]float32, inLen)
		}
		for _, st := range []struct {
			n      int
			staged bool
		}{{1, false}, {2, false}, {3, false}, {1, true}, {2, true}} {
			n := st.n
			name := fmt.Sprintf("%s/instances%d", tc.name, n)
			if st.staged {
				name += "/staged"
			}
			b.Run(name, func(b *testing.B) {
				var (
					dev  sync.Mutex
					busy time.Duration
					runs int
				)
				insts := make([]Instance, n)
				for i := range insts {
					d := &deviceInstance{dev: &dev, a: a, b: perRow, in: make([]float32, maxBatch*inLen), out: make([]float32, maxBatch*outLen),
						inLen: inLen, outLen: outLen, busy: &busy, runs: &runs}
					insts[i] = d
					if st.staged {
						insts[i] = &stagedDevice{d, make([]float32, maxBatch*inLen)}
					}
				}
				s, err := New(Config{MaxBatchSize: maxBatch, MaxQueueDelay: 2 * time.Millisecond}, 4*inLen, outLen, insts, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				var (
					wg   sync.WaitGroup
					mu   sync.Mutex
					left = b.N
				)
				take := func() bool {
					mu.Lock()
					defer mu.Unlock()
					left--
					return left >= 0
				}
				b.ResetTimer()
				for c := range clients {
					wg.Go(func() {
						out := make([]float32, outLen)
						for take() {
							if _, err := s.Do(context.Background(), ins[c], 1, out, RequestOptions{}); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				rate := float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(rate, "images/s")
				b.ReportMetric(rate/ceiling, "of-device")
				b.ReportMetric(busy.Seconds()/b.Elapsed().Seconds(), "device-busy")
				b.ReportMetric(float64(b.N)/float64(runs), "rows/run")
			})
		}
	}
}
