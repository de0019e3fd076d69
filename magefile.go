//go:build mage

// MTTR lab measures how fast an MQTT device client recovers when its broker
// goes away. Each target is a one-line call into internal/lab; settings come
// from MTTR_* environment variables, listed in README.md.
package main

import (
	"context"

	"github.com/mttrlab/mttr/internal/lab"
)

// Certs writes a self-signed certificate and key for host (MTTR_CERT_DIR, MTTR_CERT_DAYS).
func Certs(ctx context.Context, host string) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { return l.Certs(ctx, host) })
}

// Image builds the broker image with MTTR_HOST's certificate (MTTR_IMAGE, MTTR_NODE_IMAGE, MTTR_HOST, MTTR_CERT_DIR, MTTR_CERT_DAYS, MTTR_ENGINE_TIMEOUT, DOCKER_HOST).
func Image(ctx context.Context) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { return l.Image(ctx) })
}

// Rmi removes the broker image (MTTR_IMAGE, MTTR_ENGINE_TIMEOUT, DOCKER_HOST).
func Rmi(ctx context.Context) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { return l.RemoveImage(ctx) })
}

// Up runs the broker container and waits until it answers MQTT over verified TLS (MTTR_CONTAINER, MTTR_NETNS, MTTR_IMAGE, MTTR_PORT, MTTR_BIND, MTTR_HOST, MTTR_BROKER_ADDR, MTTR_READY_TIMEOUT, MTTR_ENGINE_TIMEOUT, DOCKER_HOST).
func Up(ctx context.Context) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { return l.Up(ctx) })
}

// Down stops and removes the broker container and its network-namespace holder (MTTR_CONTAINER, MTTR_ENGINE_TIMEOUT, DOCKER_HOST).
func Down(ctx context.Context) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { return l.Down(ctx) })
}

// Send connects a device to the running broker and publishes telemetry until Ctrl-C (MTTR_CONNECTION_STRING, MTTR_HOST, MTTR_PORT, MTTR_BROKER_ADDR, MTTR_KEEP_ALIVE, MTTR_SEND_INTERVAL and the device timings and TLS policy of mttr).
func Send(ctx context.Context) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { _, err := l.Send(ctx); return err })
}

// Mttr runs the recovery experiment and stores every cycle in SQLite (MTTR_BROKER, MTTR_NETNS, MTTR_FAULT, MTTR_RESTART_COUNT, MTTR_KEEP_RUNNING, MTTR_KEEP_DEAD, MTTR_FACTOR_OF_KEEP_ALIVE, MTTR_RECOVERY_TIMEOUT, MTTR_DEVICES, MTTR_SEND_INTERVAL, MTTR_KEEP_ALIVE, MTTR_PING_TIMEOUT, MTTR_CONNECT_TIMEOUT, MTTR_MAX_RECONNECT_INTERVAL, MTTR_CONNECT_RETRY_INTERVAL, MTTR_CLEAN_SESSION, MTTR_TLS_RESUMPTION, MTTR_TLS_GROUPS, MTTR_RESUBSCRIBE, MTTR_C2D_INTERVAL, MTTR_QOS, MTTR_CLIENT, MTTR_CLIENT_CMD, MTTR_LABEL, MTTR_DB and those of image and up). Any stop signal interrupts it as Ctrl-C does.
func Mttr(ctx context.Context) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { _, err := l.Mttr(ctx); return err })
}

// Report prints the newest runs and compares the newest completed run with its baseline, and writes an HTML page (MTTR_DB, MTTR_LAST, MTTR_BASELINE, MTTR_ALPHA, MTTR_FORMAT, MTTR_HTML).
func Report(ctx context.Context) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { return l.Report(ctx) })
}

// Compare compares two runs, each a run id or label, with every metric and the settings that differ (MTTR_DB, MTTR_ALPHA, MTTR_FORMAT).
func Compare(ctx context.Context, a, b string) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { return l.Compare(ctx, a, b) })
}

// Export writes the runs named by what (run ids, run labels or study labels, comma-separated) from MTTR_DB, with their cycles and studies, to the SQLite file file (MTTR_DB).
func Export(ctx context.Context, what, file string) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { return l.Export(ctx, what, file) })
}

// Import loads the runs of the SQLite file file (an export) into MTTR_DB under new ids, skipping those it has already (MTTR_DB).
func Import(ctx context.Context, file string) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { return l.Import(ctx, file) })
}

// Check fails when the newest completed run regressed: p95 over MTTR_MAX_P95, a device not recovered in either direction, or recovery or downstream significantly worse than its baseline (MTTR_DB, MTTR_BASELINE, MTTR_ALPHA, MTTR_MAX_P95).
func Check(ctx context.Context) error {
	return lab.Do(ctx, func(ctx context.Context, l *lab.Lab) error { return l.Check(ctx) })
}
