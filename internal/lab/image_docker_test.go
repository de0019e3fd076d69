package lab

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/config"
	"github.com/mttrlab/mttr/internal/dockertest"
)

// TestCheckoutsShareAnEngine guards that two checkouts (each with its own
// certificate) using one engine and one image name do not rebuild each
// other's image back and forth: the second builds for its certificate,
// and the first then finds the image built for its own and tags it again,
// unbuilt.
func TestCheckoutsShareAnEngine(t *testing.T) {
	eng := dockertest.Engine(t)
	name := dockertest.Name("mqtt-broker")
	checkout := func() (*Lab, *strings.Builder) {
		cfg := config.Defaults
		cfg.Host, cfg.CertDir, cfg.CertDays, cfg.Image = "localhost", t.TempDir(), 1, name
		cfg.NodeImage = dockertest.NodeImage(config.Defaults.NodeImage)
		out := new(strings.Builder)
		return &Lab{Config: cfg, Out: out, BuildDir: filepath.Join("..", "..", "aedes")}, out
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	image := func(l *Lab) string {
		t.Helper()
		id, _, err := l.currentImage(ctx, eng)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = eng.RemoveImage(context.Background(), id) })
		return id
	}
	a, aOut := checkout()
	b, _ := checkout()
	idA := image(a)
	idB := image(b)
	if idA == idB {
		t.Fatalf("two certificates, one image %s", idA)
	}
	aOut.Reset()
	if again := image(a); again != idA {
		t.Errorf("the first checkout got image %s, want its own %s", again, idA)
	}
	if out := aOut.String(); !strings.Contains(out, "tagged the image already built for this certificate") || strings.Contains(out, "building") {
		t.Errorf("the first checkout built again:\n%s", out)
	}
	if tagged, err := eng.ImageID(ctx, name); err != nil || tagged != idA {
		t.Errorf("%s is %s, %v; want %s", name, tagged, err, idA)
	}
}
