package broker

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mttrlab/mttr/internal/certs"
)

func TestReadBuildStream(t *testing.T) {
	ok := `{"stream":"Step 1/2 : FROM base\n"}
{"stream":" ---\u003e 1234\n"}
{"stream":"Step 2/2 : RUN true\n"}
{"aux":{"ID":"sha256:abcd"}}
{"stream":"Successfully built abcd\n"}
`
	var out strings.Builder
	id, err := readBuildStream(strings.NewReader(ok), &out)
	if err != nil || id != "sha256:abcd" {
		t.Fatalf("readBuildStream = %q, %v", id, err)
	}
	if !strings.Contains(out.String(), "Step 2/2 : RUN true\n") || strings.Contains(out.String(), "aux") {
		t.Errorf("output %q", out.String())
	}

	failing := `{"stream":"Step 1/3 : FROM base\n"}
{"stream":"Step 2/3 : RUN npm ci\n"}
{"stream":"npm ERR! network\n"}
{"errorDetail":{"code":1,"message":"The command '/bin/sh -c npm ci' returned a non-zero code: 1"},"error":"The command '/bin/sh -c npm ci' returned a non-zero code: 1"}
`
	_, err = readBuildStream(strings.NewReader(failing), io.Discard)
	if err == nil {
		t.Fatal("no error for a failing step")
	}
	want := "Step 2/3 : RUN npm ci: The command '/bin/sh -c npm ci' returned a non-zero code: 1"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if _, err := readBuildStream(strings.NewReader(`{"stream":"x"}`+"\n"), io.Discard); err == nil {
		t.Error("no error for a stream without an image id")
	}
	if _, err := readBuildStream(strings.NewReader(`{"stream":`), io.Discard); err == nil {
		t.Error("no error for truncated JSON")
	}
}

func TestWriteContext(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"Dockerfile":              "FROM x\n",
		"server.js":               "//\n",
		".dockerignore":           "# comment\nnode_modules\n*.log\n",
		"node_modules/aedes/a.js": "x",
		"npm-debug.log":           "x",
		"certs/cert.pem":          "stale, must not be sent",
		"lib/nested/keep.js":      "x",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pair := certs.For(t.TempDir(), "localhost")
	if _, err := certs.Generate(pair, 1); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeContext(pw, BuildSpec{Dir: dir, Cert: pair})) }()
	tr := tar.NewReader(pr)
	var names []string
	certBody := ""
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "certs/cert.pem" {
			b, _ := io.ReadAll(tr)
			certBody = string(b)
		}
	}
	slices.Sort(names)
	want := []string{".dockerignore", "Dockerfile", "certs/cert.pem", "certs/key.pem", "lib/nested/keep.js", "server.js"}
	if !slices.Equal(names, want) {
		t.Errorf("context holds %v, want %v", names, want)
	}
	if !strings.Contains(certBody, "BEGIN CERTIFICATE") {
		t.Errorf("certs/cert.pem is %q, not the generated certificate", certBody)
	}
}

func TestConnectUnreachable(t *testing.T) {
	t.Setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
	t.Setenv("DOCKER_TLS_VERIFY", "")
	_, err := Connect(context.Background())
	if err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
	if !strings.Contains(err.Error(), `DOCKER_HOST="tcp://127.0.0.1:1"`) || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q should be one line naming DOCKER_HOST", err)
	}
}

func TestSourceDigest(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("Dockerfile", "FROM x\n")
	write("server.js", "a")
	write(".dockerignore", "node_modules\n")
	d1, err := SourceDigest(dir)
	if err != nil {
		t.Fatal(err)
	}
	write("node_modules/x.js", "ignored")
	write("certs/cert.pem", "not source")
	if d2, _ := SourceDigest(dir); d2 != d1 {
		t.Error("ignored files changed the digest")
	}
	write("server.js", "b")
	if d3, _ := SourceDigest(dir); d3 == d1 || len(d3) != 64 {
		t.Errorf("digest %q did not change with server.js", d3)
	}
}
