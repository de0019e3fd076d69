package report

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/needs"
)

// TestHTMLRendersInBrowser opens the page in headless Chromium and reads
// back what its check script found: every chart drawn, no script error.
// It needs Debian's chromium; MTTR_REQUIRE_BROWSER=1 (set by .ci/run) makes
// a missing browser a failure.
func TestHTMLRendersInBrowser(t *testing.T) {
	needs.Browser.Short(t)
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		needs.Browser.Missing(t, "no chromium is installed")
	}
	rep := build(t, Options{Last: 20, Alpha: 0.05})
	var page, studyPage bytes.Buffer
	if err := WriteHTML(&page, rep); err != nil {
		t.Fatal(err)
	}
	if err := WriteStudyHTML(&studyPage, buildStudy(t, studyFixture(t), "sdk-1.0")); err != nil {
		t.Fatal(err)
	}
	for _, pg := range []struct {
		name   string
		html   []byte
		charts int
	}{{"report", page.Bytes(), 2}, {"study", studyPage.Bytes(), 1}} {
		t.Run(pg.name, func(t *testing.T) { rendersInBrowser(t, bin, pg.html, pg.charts) })
	}
}

// rendersInBrowser opens html in the browser bin and checks that all
// charts of its charts were drawn, with no script error.
func rendersInBrowser(t *testing.T, bin string, html []byte, charts int) {
	dir := t.TempDir()
	file := filepath.Join(dir, "report.html")
	if err := os.WriteFile(file, html, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--virtual-time-budget=5000", "--dump-dom", "file://"+file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	dom, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	body := regexp.MustCompile(`<body[^>]*>`).Find(dom)
	if !bytes.Contains(body, fmt.Appendf(nil, `data-charts="rendered:%d"`, charts)) {
		t.Errorf("charts did not render; body tag %s", body)
	}
	if bytes.Contains(body, []byte("data-errors")) {
		t.Errorf("script error in the page: %s", body)
	}
}
