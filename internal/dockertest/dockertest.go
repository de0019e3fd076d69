// Package dockertest gives tests a Docker engine, or skips them when none
// answers, unless MTTR_REQUIRE_DOCKER=1 makes a missing engine a failure;
// in -short mode it skips them always (package needs).
// Names it hands out carry a random suffix so tests never collide with a
// user's own mqtt-broker image or expecto-patronum container.
package dockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/mttrlab/mttr/internal/broker"
	"github.com/mttrlab/mttr/internal/needs"
)

// Required reports whether MTTR_REQUIRE_DOCKER=1 is set.
func Required() bool { return needs.Docker.Required() }

// Engine connects to the engine from the environment. It skips the test
// in -short mode or when none answers, or fails it when Required.
func Engine(t testing.TB) *broker.Engine {
	t.Helper()
	needs.Docker.Short(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eng, err := broker.Connect(ctx)
	if err != nil {
		needs.Docker.Missing(t, err.Error())
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

// Name returns prefix with a random suffix, e.g. "expecto-patronum-test-1a2b3c".
func Name(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-test-" + hex.EncodeToString(b[:])
}

// NodeImage is the base image for test builds: MTTR_NODE_IMAGE when set,
// else the product default.
func NodeImage(def string) string {
	if v := os.Getenv("MTTR_NODE_IMAGE"); v != "" {
		return v
	}
	return def
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// CreateForeign creates (without starting) a container called name from
// image that carries none of our labels, the way a user's own container
// would, and removes it when the test ends. It returns the container id.
func CreateForeign(t testing.TB, name, image string) string {
	t.Helper()
	cli := rawClient(t)
	res, err := cli.ContainerCreate(t.Context(), client.ContainerCreateOptions{
		Name: name, Config: &container.Config{Image: image, Cmd: []string{"true"}},
	})
	if err != nil {
		t.Fatalf("create foreign container: %v", err)
	}
	t.Cleanup(func() {
		_, _ = cli.ContainerRemove(context.Background(), res.ID, client.ContainerRemoveOptions{Force: true})
	})
	return res.ID
}

// Exists reports whether a container with id exists.
func Exists(t testing.TB, id string) bool {
	t.Helper()
	_, err := rawClient(t).ContainerInspect(t.Context(), id, client.ContainerInspectOptions{})
	return err == nil
}

func rawClient(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// engineSocket returns the engine's address as the environment names it
// and, when that is a Unix socket, its path.
func engineSocket() (host, path string, ok bool) {
	host = os.Getenv("DOCKER_HOST")
	if host == "" {
		host = client.DefaultDockerHost
	}
	path, ok = strings.CutPrefix(host, "unix://")
	return host, path, ok
}

// TCPProxy serves the engine's API on a TCP port on 127.0.0.1 by relaying
// to its Unix socket, and returns the DOCKER_HOST value that reaches it. An
// engine that is already on TCP is returned as it is.
func TCPProxy(t testing.TB) string {
	t.Helper()
	host, sock, ok := engineSocket()
	if !ok {
		return host
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				up, err := net.Dial("unix", sock)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, in); up.(*net.UnixConn).CloseWrite() }()
				_, _ = io.Copy(in, up)
			}()
		}
	}()
	return "tcp://" + ln.Addr().String()
}

// RunLikeCLI runs image as `docker run -d --publish 127.0.0.1:<port>:8883
// --name <name> <image>` would: nothing but the image's own settings, and
// removes it when the test ends.
func RunLikeCLI(t testing.TB, name, image string, port int) {
	t.Helper()
	cli := rawClient(t)
	p := network.MustParsePort("8883/tcp")
	res, err := cli.ContainerCreate(t.Context(), client.ContainerCreateOptions{
		Name:   name,
		Config: &container.Config{Image: image, ExposedPorts: network.PortSet{p: {}}},
		HostConfig: &container.HostConfig{PortBindings: network.PortMap{
			p: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}},
		}},
	})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	t.Cleanup(func() {
		_, _ = cli.ContainerRemove(context.Background(), res.ID, client.ContainerRemoveOptions{Force: true})
	})
	if _, err := cli.ContainerStart(t.Context(), res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
}
