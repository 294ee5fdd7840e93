//go:build ignore

// gen writes the first images of the Fashion-MNIST test split as PNG, for
// README examples and tests: go run testdata/fashion/gen.go
package main

import (
	"fmt"
	"image"
	"image/png"
	"log"
	"os"
	"path/filepath"
	"strings"

	"fastinfer/train/data"
)

func main() {
	s, err := data.FashionMNIST("", "t10k")
	if err != nil {
		log.Fatal(err)
	}
	for i := range 6 {
		img := image.NewGray(image.Rect(0, 0, s.W, s.H))
		for j, v := range s.Image(i) {
			img.Pix[j] = uint8(v*255 + 0.5)
		}
		name := strings.NewReplacer("/", "-", " ", "-").Replace(strings.ToLower(s.Classes[s.Y[i]]))
		path := filepath.Join("testdata", "fashion", fmt.Sprintf("test-%d-%s.png", i, name))
		f, err := os.Create(path)
		if err != nil {
			log.Fatal(err)
		}
		if err := png.Encode(f, img); err != nil {
			log.Fatal(err)
		}
		f.Close()
		fmt.Println(path)
	}
}
