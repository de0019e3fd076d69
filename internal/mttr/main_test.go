package mttr

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/mttrlab/mttr/internal/brokerlog"
	"github.com/mttrlab/mttr/internal/mqttprobe"
	"github.com/mttrlab/mttr/internal/mqtttest"
)

// brokerEnv, when set, makes the test binary serve as a broker process:
// "<addr> <cert.pem> <key.pem>". Benchmarks use it to keep the broker's
// memory out of the measured process.
const brokerEnv = "MTTR_TEST_BROKER_PROCESS"

func TestMain(m *testing.M) {
	if spec := os.Getenv(brokerEnv); spec != "" {
		var addr, cert, key string
		if _, err := fmt.Sscan(spec, &addr, &cert, &key); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := mqtttest.Serve(addr, cert, key, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// procFault runs the broker as a child process of the test binary and
// kills it for the fault. The connections it accepts go to log.
type procFault struct {
	addr, cert, key string
	tls             *tls.Config
	cmd             *exec.Cmd
	log             BrokerLog
}

func startProcBroker(tb testing.TB) *procFault {
	tb.Helper()
	b := mqtttest.Start(tb, "localhost") // for its certificate and a free port
	addr := b.Addr
	b.Close()
	f := &procFault{addr: addr, cert: b.CertPath, key: b.KeyPath, tls: b.Client}
	if _, err := f.Heal(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Inject(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.Ready(ctx); err != nil {
		tb.Fatal(err)
	}
	return f
}

func (f *procFault) Inject(context.Context) (time.Time, error) {
	if f.cmd == nil {
		return time.Now(), nil
	}
	err := f.cmd.Process.Kill()
	at := time.Now()
	_ = f.cmd.Wait()
	f.cmd = nil
	return at, err
}

func (f *procFault) Heal(context.Context) (time.Time, error) {
	cmd := exec.Command(os.Args[0])
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its CPU is its group's
	cmd.Env = append(os.Environ(), brokerEnv+"="+f.addr+" "+f.cert+" "+f.key)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return time.Time{}, err
	}
	err = cmd.Start()
	f.cmd = cmd
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if e, ok := brokerlog.Parse(sc.Bytes()); ok {
				f.log.Observe(e)
			}
		}
	}()
	return time.Now(), err
}

func (f *procFault) Ready(ctx context.Context) (time.Time, error) {
	return mqttprobe.Wait(ctx, f.addr, f.tls, 10*time.Millisecond, nil)
}
