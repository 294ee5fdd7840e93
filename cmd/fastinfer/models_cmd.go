package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"fastinfer/models"
	"fastinfer/models/resnet"
)

func modelsCmd(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: fastinfer models build ARCH --out DIR | fastinfer models list [--models DIR]")
		return errUsage
	}
	switch args[0] {
	case "build":
		return modelsBuild(args[1:], stdout, stderr, getenv)
	case "list":
		return modelsList(args[1:], stdout, stderr, getenv)
	}
	fmt.Fprintf(stderr, "fastinfer models: unknown subcommand %q (want build or list)\n", args[0])
	return errUsage
}

func modelsBuild(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("models build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "model folder to write (its next version number is used)")
	seed := fs.Uint64("seed", 1, "random seed for the weights")
	classes := fs.Int("classes", 1000, "number of output classes")
	fs.Usage = usageWithEnv(fs, "fastinfer models build resnet18|resnet34|resnet50 --out DIR")
	// The architecture may come before or after the flags.
	var arch string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		arch, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	if arch == "" && fs.NArg() > 0 {
		arch = fs.Arg(0)
	}
	if arch == "" || *out == "" {
		fs.Usage()
		return errUsage
	}
	start := time.Now()
	m, err := resnet.Build(arch, *classes, *seed)
	if err != nil {
		return err
	}
	v, err := resnet.WriteModelDir(*out, m)
	if err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	fmt.Fprintf(stdout, "wrote %s (%s, %d parameters, seeded random weights) in %s\n",
		filepath.Join(*out, fmt.Sprint(v), models.ModelFile), arch, resnet.ParamCount(m), time.Since(start).Round(time.Millisecond))
	return nil
}

func modelsList(args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("models list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("models", "models", "model repository folder")
	fs.Usage = usageWithEnv(fs, "fastinfer models list [--models DIR]")
	if err := parseFlags(fs, args, getenv); err != nil {
		return err
	}
	ms, errs, err := models.Scan(*dir)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tSERVED\tVERSIONS\tLABELS\tPREPROCESS")
	for _, m := range ms {
		var vs []string
		for _, v := range m.Versions {
			vs = append(vs, fmt.Sprint(v.Number))
		}
		p := m.Config.Preprocess
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\tresize %d crop %d %s\n", m.Name, m.Latest().Number, strings.Join(vs, ","), len(m.Labels), p.Resize, p.Crop, p.Color)
	}
	tw.Flush()
	for _, e := range errs {
		fmt.Fprintln(stderr, "error:", e)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d model folder(s) could not be read", len(errs))
	}
	return nil
}
