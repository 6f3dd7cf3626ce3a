package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"

	"routehound/appliance"
	"routehound/config"
)

// backupCmd runs `routehound backup FILE`: it asks the running server for
// an online backup at one LSN (GET /v1/admin/backup) and saves it, verified.
func backupCmd(args []string) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: routehound backup [--url URL] [--token TOKEN] [--config FILE] [--data DIR] FILE")
		fs.PrintDefaults()
	}
	ac := adminFlags(fs, "server")
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("backup: one FILE to write")
	}
	url, token, err := ac.resolve("backup")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	h, err := appliance.FetchBackup(ctx, http.DefaultClient, url, token, fs.Arg(0))
	if err != nil {
		return err
	}
	fi, _ := os.Stat(fs.Arg(0))
	fmt.Printf("backup at lsn %d written to %s (%d bytes, verified)\n", h.LSN, fs.Arg(0), fi.Size())
	return nil
}

// adminToken is the first admin token of the config, or of
// DATA_DIR/tokens.toml (read, never generated).
func adminToken(cfg config.Config) (string, error) {
	tokens := cfg.Tokens
	if len(tokens) == 0 {
		path := filepath.Join(cfg.DataDir, config.TokensFile)
		var f struct {
			Tokens []config.Token `toml:"tokens"`
		}
		if _, err := toml.DecodeFile(path, &f); err != nil {
			return "", fmt.Errorf("backup: no --token and no readable %s: %w", path, err)
		}
		tokens = f.Tokens
	}
	for _, t := range tokens {
		if t.Role == "admin" {
			return t.Token, nil
		}
	}
	return "", errors.New("backup: no admin token in the config or tokens.toml; pass --token")
}

// restoreCmd runs `routehound restore FILE --data DIR`.
func restoreCmd(args []string) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: routehound restore FILE --data DIR [--config FILE]")
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "", "TOML config file (the store's memory and the replica as serve will use them)")
	dataDir := fs.String("data", "", "the new data directory: empty or absent (required)")
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 1 || *dataDir == "" {
		fs.Usage()
		return errors.New("restore: one FILE and --data DIR")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	cfg.DataDir = *dataDir
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h, err := appliance.Restore(cfg, fs.Arg(0), log)
	if err != nil {
		return err
	}
	fmt.Printf("restored the backup at lsn %d (taken %s) into %s; start it with: routehound serve --data %s\n",
		h.LSN, h.CreatedAt.Format("2006-01-02 15:04:05Z07:00"), *dataDir, *dataDir)
	return nil
}

// replicaCmd runs `routehound replica snapshot FILE`.
func replicaCmd(args []string) error {
	if len(args) == 0 || args[0] != "snapshot" {
		return errors.New("usage: routehound replica snapshot [--data DIR] [--config FILE] FILE")
	}
	fs := flag.NewFlagSet("replica snapshot", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "TOML config file (for data_dir)")
	dataDir := fs.String("data", "", "data directory (overrides data_dir)")
	if err := fs.Parse(reorder(args[1:])); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: routehound replica snapshot [--data DIR] [--config FILE] FILE")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	if err := appliance.ReplicaSnapshot(cfg.DataDir, fs.Arg(0)); err != nil {
		return err
	}
	fmt.Printf("replica copied to %s (read-only SQLite)\n", fs.Arg(0))
	return nil
}

// reorder puts flags before the positional arguments, so that
// `restore FILE --data DIR` parses as `restore --data DIR FILE`.
func reorder(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
}

// adminCall is the flags of a command that calls a running server's admin
// API (backup, promote): where it listens and an admin token.
type adminCall struct {
	url, token, cfgPath, dataDir *string
}

// adminFlags registers --url, --token, --config and --data on fs; what
// names the server in the help (server, standby).
func adminFlags(fs *flag.FlagSet, what string) adminCall {
	return adminCall{
		url:     fs.String("url", "", "the "+what+"'s base URL (default: http://127.0.0.1:PORT from the config's listen)"),
		token:   fs.String("token", "", "an admin token (default: $ROUTEHOUND_TOKEN, else the admin token of the config or DATA_DIR/tokens.toml)"),
		cfgPath: fs.String("config", "", "TOML config file (for listen, data_dir and tokens)"),
		dataDir: fs.String("data", "", "data directory (overrides data_dir; where tokens.toml is)"),
	}
}

// resolve answers the server's base URL (--url, else the config's listen
// port on loopback) and the admin token (--token, $ROUTEHOUND_TOKEN, else
// the config's or DATA_DIR/tokens.toml's); cmd names the command in errors.
func (a adminCall) resolve(cmd string) (url, token string, err error) {
	cfg, err := config.Load(*a.cfgPath)
	if err != nil {
		return "", "", err
	}
	if *a.dataDir != "" {
		cfg.DataDir = *a.dataDir
	}
	url, token = *a.url, *a.token
	if url == "" {
		_, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return "", "", fmt.Errorf("%s: listen %q: %w; pass --url", cmd, cfg.Listen, err)
		}
		scheme := "http"
		if cfg.HTTP.TLSCert != "" {
			scheme = "https"
		}
		url = fmt.Sprintf("%s://127.0.0.1:%s", scheme, port)
	}
	if token == "" {
		token = os.Getenv("ROUTEHOUND_TOKEN")
	}
	if token == "" {
		if token, err = adminToken(cfg); err != nil {
			return "", "", err
		}
	}
	return url, token, nil
}
