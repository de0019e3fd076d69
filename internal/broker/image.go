package broker

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"

	"github.com/mttrlab/mttr/internal/certs"
)

// LabelSource records the SHA-256 of the build context's own files (not
// the certificate), so that an image built from older sources is known.
const LabelSource = "org.mttrlab.source-sha256"

// SourceDigest hashes the files of the build context dir that a build sends
// (the .dockerignore applied, certs/ left out), in a stable order.
func SourceDigest(dir string) (string, error) {
	h := sha256.New()
	err := walkContext(dir, func(rel string, data []byte) error {
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(data))
		h.Write(data)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("build context %s: %w", dir, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// BuildSpec describes a broker image build.
type BuildSpec struct {
	Dir         string     // build context: Dockerfile, package.json, package-lock.json, server.js
	Tag         string     // image tag, e.g. mqtt-broker
	NodeImage   string     // base image, passed as build argument NODE_IMAGE
	Cert        certs.Pair // certificate and key baked in as certs/cert.pem and certs/key.pem
	Fingerprint string     // the certificate's SHA-256, recorded as a label
	Source      string     // SourceDigest of Dir, recorded as a label
}

// Build builds the broker image from spec, streaming the builder's output
// to out, and returns the image id. A failing Dockerfile step is returned as
// an error that names the step and carries the builder's message.
func (e *Engine) Build(ctx context.Context, spec BuildSpec, out io.Writer) (string, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeContext(pw, spec)) }()
	defer pr.Close()

	// A build may rightly take minutes: bounded is whether the engine
	// still answers meanwhile, not how long it takes.
	ctx, release := e.answering(ctx, "image build")
	defer release()
	res, err := e.cli.ImageBuild(ctx, pr, client.ImageBuildOptions{
		Tags:        []string{spec.Tag},
		Dockerfile:  "Dockerfile",
		BuildArgs:   map[string]*string{"NODE_IMAGE": &spec.NodeImage},
		Remove:      true,
		ForceRemove: true,
		Labels: map[string]string{
			LabelManaged:    "true",
			LabelHost:       spec.Cert.Host,
			LabelCertSHA256: spec.Fingerprint,
			LabelSource:     spec.Source,
		},
	})
	if err != nil {
		return "", fmt.Errorf("build %s: %w", spec.Tag, noAnswer(ctx, err))
	}
	defer res.Body.Close()
	id, err := readBuildStream(res.Body, out)
	if err != nil {
		return "", fmt.Errorf("build %s: %w", spec.Tag, noAnswer(ctx, err))
	}
	return id, nil
}

// readBuildStream copies the builder's JSON message stream to out as text
// and returns the built image id, or the builder's error with the step it
// failed in.
func readBuildStream(r io.Reader, out io.Writer) (string, error) {
	dec := json.NewDecoder(r)
	var id, step string
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return "", fmt.Errorf("read build output: %w", err)
		}
		if m.Error != nil {
			msg := strings.TrimSpace(m.Error.Message)
			if step != "" {
				return "", fmt.Errorf("%s: %s", step, msg)
			}
			return "", errors.New(msg)
		}
		if m.Aux != nil {
			var aux struct{ ID string }
			if json.Unmarshal(*m.Aux, &aux) == nil && aux.ID != "" {
				id = aux.ID
			}
			continue
		}
		// An import reports the new image's id as its only status.
		if m.Stream == "" && strings.HasPrefix(m.Status, "sha256:") {
			id = strings.TrimSpace(m.Status)
			continue
		}
		text := m.Stream
		if text == "" && m.Status != "" {
			text = m.Status + "\n"
		}
		for line := range strings.Lines(text) {
			if s := strings.TrimSpace(line); strings.HasPrefix(s, "Step ") {
				step = s
			}
		}
		if _, err := io.WriteString(out, text); err != nil {
			return "", err
		}
	}
	if id == "" {
		return "", errors.New("builder reported no image id")
	}
	return id, nil
}

// writeContext writes the build context as a tar stream: spec.Dir without
// what its .dockerignore names, plus the certificate pair under certs/.
func writeContext(w io.Writer, spec BuildSpec) error {
	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0)
	err := walkContext(spec.Dir, func(rel string, data []byte) error {
		return addFile(tw, rel, data, 0o644, mtime)
	})
	if err != nil {
		return fmt.Errorf("build context %s: %w", spec.Dir, err)
	}
	for _, f := range []struct{ name, src string }{{"certs/cert.pem", spec.Cert.CertPath}, {"certs/key.pem", spec.Cert.KeyPath}} {
		data, err := os.ReadFile(f.src)
		if err != nil {
			return fmt.Errorf("build context: %w", err)
		}
		if err := addFile(tw, f.name, data, 0o600, mtime); err != nil {
			return err
		}
	}
	return tw.Close()
}

// walkContext calls fn, in lexical order, for every regular file of dir
// that a build sends: not what .dockerignore names, and not certs/.
func walkContext(dir string, fn func(rel string, data []byte) error) error {
	ignore, err := readIgnore(filepath.Join(dir, ".dockerignore"))
	if err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if ignored(ignore, rel) || rel == "certs" || strings.HasPrefix(rel, "certs/") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return fn(rel, data)
	})
}

func addFile(tw *tar.Writer, name string, data []byte, mode int64, mtime time.Time) error {
	hdr := &tar.Header{Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// readIgnore reads the patterns of a .dockerignore (one per line, # comments).
func readIgnore(p string) ([]string, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	defer f.Close()
	var pats []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			pats = append(pats, strings.TrimSuffix(strings.TrimPrefix(line, "/"), "/"))
		}
	}
	return pats, sc.Err()
}

// ignored reports whether rel (slash-separated) or one of its parent
// directories matches a pattern.
func ignored(patterns []string, rel string) bool {
	for _, pat := range patterns {
		for p := rel; p != "." && p != "/"; p = path.Dir(p) {
			if ok, _ := path.Match(pat, p); ok {
				return true
			}
		}
	}
	return false
}

// Image is what the engine knows of a built broker image.
type Image struct {
	ID          string
	Host        string // LabelHost
	Fingerprint string // LabelCertSHA256
	Source      string // LabelSource
}

// InspectImage returns the image tagged tag, or an error wrapping
// ErrNotFound when there is none.
func (e *Engine) InspectImage(ctx context.Context, tag string) (Image, error) {
	res, err := e.imageInspect(ctx, tag)
	if cerrdefs.IsNotFound(err) {
		return Image{}, fmt.Errorf("image %s: %w", tag, ErrNotFound)
	} else if err != nil {
		return Image{}, fmt.Errorf("inspect image %s: %w", tag, err)
	}
	img := Image{ID: res.ID}
	if res.Config != nil {
		img.Host = res.Config.Labels[LabelHost]
		img.Fingerprint = res.Config.Labels[LabelCertSHA256]
		img.Source = res.Config.Labels[LabelSource]
	}
	return img, nil
}

// RemoveImage removes the image tagged tag. It returns an error wrapping
// ErrNotFound when there is no such image, and one naming the containers
// that still use it when there are any.
func (e *Engine) RemoveImage(ctx context.Context, tag string) error {
	if _, err := e.InspectImage(ctx, tag); err != nil {
		return err
	}
	list, err := e.containerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("ancestor", tag),
	})
	if err != nil {
		return fmt.Errorf("remove image %s: list containers: %w", tag, err)
	}
	if len(list.Items) > 0 {
		var names []string
		for _, c := range list.Items {
			names = append(names, containerName(c.Names, c.ID))
		}
		return fmt.Errorf("remove image %s: still used by container %s; remove it first", tag, strings.Join(names, ", "))
	}
	if err := e.imageRemove(ctx, tag); err != nil {
		if cerrdefs.IsConflict(err) {
			return fmt.Errorf("remove image %s: in use: %w", tag, err)
		}
		return fmt.Errorf("remove image %s: %w", tag, err)
	}
	return nil
}

func containerName(names []string, id string) string {
	if len(names) > 0 {
		return strings.TrimPrefix(names[0], "/")
	}
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// FindBuilt returns the id of an image of ours built for host with the
// certificate of fingerprint from sources source, tagged or not (a tag
// another checkout's build moved away leaves it dangling), or an error
// wrapping ErrNotFound when there is none.
func (e *Engine) FindBuilt(ctx context.Context, host, fingerprint, source string) (string, error) {
	f := client.Filters{}.Add("label", LabelManaged+"=true", LabelHost+"="+host, LabelCertSHA256+"="+fingerprint, LabelSource+"="+source)
	res, err := call(ctx, e, "image list", 0, func(ctx context.Context) (client.ImageListResult, error) {
		return e.cli.ImageList(ctx, client.ImageListOptions{Filters: f})
	})
	if err != nil {
		return "", fmt.Errorf("list images: %w", err)
	}
	if len(res.Items) == 0 {
		return "", fmt.Errorf("image for %s, certificate sha256 %s: %w", host, fingerprint, ErrNotFound)
	}
	newest := res.Items[0]
	for _, img := range res.Items[1:] {
		if img.Created > newest.Created {
			newest = img
		}
	}
	return newest.ID, nil
}

// Tag points tag at the image id.
func (e *Engine) Tag(ctx context.Context, id, tag string) error {
	return do(ctx, e, "image tag", 0, func(ctx context.Context) (client.ImageTagResult, error) {
		return e.cli.ImageTag(ctx, client.ImageTagOptions{Source: id, Target: tag})
	})
}
