package broker

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/mttrlab/mttr/internal/netfault"
)

// DefaultNetfilterImage is the helper image for network faults, made from
// this machine's nft and ss when it is missing (MakeNetfilterImage).
const DefaultNetfilterImage = "mttr-netfilter"

// The helper's tools, found on this machine's PATH and copied with the
// shared libraries they load into an image of their own.
var netfilterTools = []string{"nft", "ss"}

// labelTool records a tool's path in the helper image, by the tool's name.
const labelTool = "org.mttrlab.tool."

// netfilterSuffix names a broker's netfilter helper.
const netfilterSuffix = "-netfilter"

// NetfilterName is the name of the netfilter helper of broker container name.
func NetfilterName(name string) string { return name + netfilterSuffix }

// MakeNetfilterImage makes image tag, unless it exists, from this
// machine's nft and ss and the libraries they load, with nothing else in
// it: the engine has no registry to pull from, and the tools need no more.
// Its command, `nft monitor`, waits for the rules that execs apply and
// logs them.
func (e *Engine) MakeNetfilterImage(ctx context.Context, tag string, out io.Writer) error {
	if _, err := e.InspectImage(ctx, tag); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	files, paths, err := netfilterFiles(ctx)
	if err != nil {
		return fmt.Errorf("make image %s: %w", tag, err)
	}
	fmt.Fprintf(out, "making image %s from this machine's %s\n", tag, strings.Join(paths, " and "))
	var buf bytes.Buffer
	if err := writeRootFS(&buf, files); err != nil {
		return fmt.Errorf("make image %s: %w", tag, err)
	}
	ctx, release := e.answering(ctx, "image import")
	defer release()
	res, err := e.cli.ImageImport(ctx, client.ImageImportSource{Source: &buf, SourceName: "-"}, tag, client.ImageImportOptions{
		Changes: []string{
			fmt.Sprintf(`CMD [%q, "monitor"]`, paths[0]),
			fmt.Sprintf("LABEL %s=true %s=%s %snft=%s %sss=%s", LabelManaged, LabelRole, RoleNetfilter, labelTool, paths[0], labelTool, paths[1]),
		},
	})
	if err != nil {
		return fmt.Errorf("make image %s: %w", tag, noAnswer(ctx, err))
	}
	defer res.Close()
	if _, err := readBuildStream(res, io.Discard); err != nil {
		return fmt.Errorf("make image %s: %w", tag, noAnswer(ctx, err))
	}
	return nil
}

// netfilterFiles lists the helper image's files: each tool and every
// library ldd says it loads, at the paths it loads them from. paths are
// the tools' own paths, in netfilterTools' order.
func netfilterFiles(ctx context.Context) (files, paths []string, err error) {
	seen := map[string]bool{}
	for _, tool := range netfilterTools {
		p, err := exec.LookPath(tool)
		if err != nil {
			return nil, nil, fmt.Errorf("%s not found on this machine (Debian: apt-get install nftables iproute2): %w", tool, err)
		}
		if p, err = filepath.Abs(p); err != nil {
			return nil, nil, err
		}
		paths = append(paths, p)
		libs, err := ldd(ctx, p)
		if err != nil {
			return nil, nil, err
		}
		for _, f := range append([]string{p}, libs...) {
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
	}
	return files, paths, nil
}

// ldd returns the absolute paths of the shared libraries bin loads, its
// loader included; a library it cannot find is an error, not an image
// whose tool fails later.
func ldd(ctx context.Context, bin string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "not found") {
			return nil, fmt.Errorf("ldd %s: %s", bin, strings.TrimSpace(sc.Text()))
		}
		for _, f := range strings.Fields(sc.Text()) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	return libs, nil
}

// writeRootFS writes files into a tar at their own paths, each as a
// regular file with its target's content (a library path is often a
// symbolic link).
func writeRootFS(w io.Writer, files []string) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, f := range files {
		var parents []string
		for d := filepath.Dir(f); d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: parents[i][1:] + "/", Mode: 0o755}); err != nil {
				return err
			}
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f[1:], Mode: 0o755, Size: int64(len(data))}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// Netfilter is a helper container in a broker's network namespace, with
// NET_ADMIN there only, that runs nft and ss in it.
type Netfilter struct {
	eng   *Engine
	id    string
	name  string
	tools []string // nft's and ss's paths in the image
}

// RunNetfilter starts the netfilter helper of broker c from image, in the
// network namespace c lives in (its holder's, when it has one), labelled
// like the broker with labels. An earlier helper of ours with its name is
// replaced.
func (e *Engine) RunNetfilter(ctx context.Context, c *Container, image string, labels map[string]string) (*Netfilter, error) {
	name := NetfilterName(c.Name)
	if old, err := e.own(ctx, name); err == nil {
		if err := e.containerRemove(ctx, old.ID, true); err != nil && !cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("run %s: remove the previous one: %w", name, err)
		}
	} else if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("run %s: %w", name, err)
	}
	res, err := e.imageInspect(ctx, image)
	if err != nil {
		return nil, fmt.Errorf("run %s: image %s: %w", name, image, err)
	}
	var tools []string
	if res.Config != nil {
		for _, t := range netfilterTools {
			if p := res.Config.Labels[labelTool+t]; p != "" {
				tools = append(tools, p)
			}
		}
	}
	if len(tools) != len(netfilterTools) {
		return nil, fmt.Errorf("run %s: image %s does not say where nft and ss are (labels %snft, %sss): remove it, and the next run makes it anew", name, image, labelTool, labelTool)
	}
	owner := c.ID
	if c.HolderID != "" {
		owner = c.HolderID
	}
	l := map[string]string{LabelManaged: "true", LabelRole: RoleNetfilter}
	for k, v := range labels {
		l[k] = v
	}
	created, err := e.containerCreate(ctx, client.ContainerCreateOptions{
		Name:   name,
		Config: &container.Config{Image: image, Labels: l, StopSignal: "SIGKILL"},
		HostConfig: &container.HostConfig{
			NetworkMode: container.NetworkMode("container:" + owner),
			CapAdd:      []string{"NET_ADMIN"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("run %s: create: %w", name, err)
	}
	if err := e.containerStart(ctx, created.ID); err != nil {
		e.discard(ctx, created.ID)
		return nil, fmt.Errorf("run %s: start: %w", name, err)
	}
	n := &Netfilter{eng: e, id: created.ID, name: name, tools: tools}
	if err := n.findTools(ctx); err != nil {
		e.discard(ctx, created.ID)
		return nil, err
	}
	return n, nil
}

// findTools checks that nft and ss run in the helper.
func (n *Netfilter) findTools(ctx context.Context) error {
	for _, t := range n.tools {
		if _, err := n.exec(ctx, t, "--version"); err != nil {
			return fmt.Errorf("run %s: %w", n.name, err)
		}
	}
	return nil
}

// Apply makes the namespace's packet filter run script (nft's syntax) in
// one transaction, and returns the moment nft had exited: the rules were
// in effect by then, and not before it was asked.
func (n *Netfilter) Apply(ctx context.Context, script string) (time.Time, error) {
	if _, err := n.exec(ctx, n.tools[0], script); err != nil {
		return time.Time{}, fmt.Errorf("packet filter: %w", err)
	}
	return time.Now(), nil
}

// Abort destroys every TCP socket on port in the namespace but those whose
// peer's port lies in own (the tool's own clients; none when zero), which
// sends each peer a RST.
func (n *Netfilter) Abort(ctx context.Context, port int, own netfault.Ports) error {
	filter := fmt.Sprintf("sport = :%d", port)
	if own != (netfault.Ports{}) {
		filter += fmt.Sprintf(" and not ( dport >= :%d and dport <= :%d )", own.Lo, own.Hi)
	}
	if _, err := n.exec(ctx, n.tools[1], "-K", "-t", filter); err != nil {
		return fmt.Errorf("abort connections: %w", err)
	}
	return nil
}

// exec runs cmd in the helper and returns its output; a command that
// exits non-zero is an error carrying what it wrote.
func (n *Netfilter) exec(ctx context.Context, cmd ...string) (string, error) {
	e := n.eng
	created, err := call(ctx, e, "exec create", 0, func(ctx context.Context) (client.ExecCreateResult, error) {
		return e.cli.ExecCreate(ctx, n.id, client.ExecCreateOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	})
	if err != nil {
		return "", fmt.Errorf("%s: %w", cmd[0], err)
	}
	att, err := stream(ctx, e, "exec start", func(ctx context.Context) (client.ExecAttachResult, error) {
		return e.cli.ExecAttach(ctx, created.ID, client.ExecAttachOptions{})
	})
	if err != nil {
		return "", fmt.Errorf("%s: %w", cmd[0], err)
	}
	defer att.Close()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader)
		done <- err
	}()
	t := time.NewTimer(e.timeout)
	defer t.Stop()
	select {
	case err = <-done:
	case <-t.C:
		att.Close()
		return "", fmt.Errorf("%s: %w", cmd[0], &NoAnswerError{Call: "exec " + cmd[0], After: e.timeout, Host: e.host})
	case <-ctx.Done():
		att.Close()
		return "", ctx.Err()
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", cmd[0], err)
	}
	res, err := call(ctx, e, "exec inspect", 0, func(ctx context.Context) (client.ExecInspectResult, error) {
		return e.cli.ExecInspect(ctx, created.ID, client.ExecInspectOptions{})
	})
	if err != nil {
		return "", fmt.Errorf("%s: %w", cmd[0], err)
	}
	if res.ExitCode != 0 {
		msg := strings.TrimSpace(stderr.String() + stdout.String())
		return "", fmt.Errorf("%s exited %d: %s", filepath.Base(cmd[0]), res.ExitCode, msg)
	}
	return stdout.String(), nil
}
