package store

import (
	"context"
	"fmt"
	"github.com/mttrlab/mttr/internal/dbref"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// connectTimeout bounds the first connection to a PostgreSQL server.
const connectTimeout = 10 * time.Second

// openPostgres connects to the database ref (a postgres:// URL), read-only
// when asked: every transaction of a read-only store is. Errors name the
// URL with the password hidden, and never carry it; the caller names the
// input it came from.
func openPostgres(ctx context.Context, ref string, readOnly bool) (*Store, error) {
	shown, secret := dbref.Redact(ref)
	fail := func(err error) error {
		return fmt.Errorf("store %s: %w", shown, &hidden{err: err, secret: secret})
	}
	cfg, err := pgx.ParseConfig(ref)
	if err != nil {
		return nil, fail(err)
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > connectTimeout {
		cfg.ConnectTimeout = connectTimeout
	}
	if readOnly {
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
	}
	db := stdlib.OpenDB(*cfg)
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fail(err)
	}
	return &Store{db: db, path: shown, pg: true}, nil
}

// Shown is MTTR_DB as it may be printed or stored (dbref.Shown).
func Shown(ref string) string { return dbref.Shown(ref) }

// hidden is an error whose text never shows secret.
type hidden struct {
	err    error
	secret string
}

// Error is err's text on one line (pgconn joins the errors of each address
// it tried with newlines), without the secret.
func (h *hidden) Error() string {
	msg := strings.ReplaceAll(strings.TrimSpace(h.err.Error()), "\n", "; ")
	if h.secret == "" {
		return msg
	}
	return strings.ReplaceAll(msg, h.secret, "xxxxx")
}

func (h *hidden) Unwrap() error { return h.err }
