// Command trimfatbin writes a copy of a CUDA shared library in which the
// GPU code for every architecture but one is zeroed.
//
// ONNX Runtime's CUDA provider is 229 MB, 166 MB of it fat binaries with
// machine code for sm_75, 80, 86, 89, 90 and 120. The device machine we
// measure on takes at most 64 MiB per call, so scripts/gpu-bundle.sh
// keeps only the H100/H200's sm_90 code: the fatbin and entry headers
// stay where they are (the registration code points into them), only
// the other entries' payloads become zeros, which compress to nothing.
// The driver reads the headers, picks the sm_90 entry and never touches
// the zeroed ones. A trimmed library is for measuring on that one GPU
// generation, never for shipping.
//
// Usage: go run ./scripts/trimfatbin -arch 90 IN OUT
package main

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
)

const fatbinMagic = 0xBA55ED50

func main() {
	arch := flag.Uint("arch", 90, "SM architecture whose code is kept (90 = Hopper)")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: trimfatbin -arch 90 IN OUT")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), flag.Arg(1), uint32(*arch)); err != nil {
		fmt.Fprintln(os.Stderr, "trimfatbin:", err)
		os.Exit(1)
	}
}

func run(in, out string, arch uint32) error {
	f, err := elf.Open(in)
	if err != nil {
		return err
	}
	sec := f.Section(".nv_fatbin")
	f.Close()
	if sec == nil {
		return errors.New("no .nv_fatbin section")
	}
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	kept, zeroed, err := trim(data[sec.Offset:sec.Offset+sec.Size], arch)
	if err != nil {
		return err
	}
	if kept == 0 {
		return fmt.Errorf("no code for sm_%d: the result would not run", arch)
	}
	fmt.Printf("kept %d bytes of sm_%d code, zeroed %d bytes of other architectures\n", kept, arch, zeroed)
	return os.WriteFile(out, data, 0o755)
}

// trim walks the fat binaries in sec (each: a 16-byte header with magic,
// version, header size and payload size, then entries with their own
// header size, payload size and, at offset 28, the SM architecture) and
// zeroes the payload of every entry for another architecture.
func trim(sec []byte, arch uint32) (kept, zeroed int, err error) {
	le := binary.LittleEndian
	for pos := 0; pos+16 <= len(sec); {
		if le.Uint32(sec[pos:]) != fatbinMagic {
			pos += 8 // fat binaries are 8-byte aligned, padding between them
			continue
		}
		hsz := int(le.Uint16(sec[pos+6:]))
		end := pos + hsz + int(le.Uint64(sec[pos+8:]))
		if end > len(sec) {
			return 0, 0, fmt.Errorf("fatbin at %#x runs past the section", pos)
		}
		for e := pos + hsz; e+32 <= end; {
			ehsz := int(le.Uint32(sec[e+4:]))
			psz := int(le.Uint64(sec[e+8:]))
			if ehsz < 32 || e+ehsz+psz > end {
				return 0, 0, fmt.Errorf("bad entry at %#x", e)
			}
			payload := sec[e+ehsz : e+ehsz+psz]
			if le.Uint32(sec[e+28:]) == arch {
				kept += psz
			} else {
				clear(payload)
				zeroed += psz
			}
			e += ehsz + psz
		}
		pos = end
	}
	return kept, zeroed, nil
}
