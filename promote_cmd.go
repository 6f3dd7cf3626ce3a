package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// promoteCmd runs `routehound promote`: it asks a running standby to
// become its depot's writer (POST /v1/admin/promote) and prints the answer:
// the new epoch and the last LSN applied from the stream.
func promoteCmd(args []string) error {
	fs := flag.NewFlagSet("promote", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: routehound promote [--url URL] [--token TOKEN] [--config FILE] [--data DIR]")
		fs.PrintDefaults()
	}
	ac := adminFlags(fs, "standby")
	timeout := fs.Duration("timeout", time.Minute, "how long the standby may take to apply what the stream holds and fence the old primary")
	if err := fs.Parse(reorder(args)); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errors.New("promote: no arguments")
	}
	url, token, err := ac.resolve("promote")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(url, "/")+"/v1/admin/promote", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("promote: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Printf("promoted: %s\n", strings.TrimSpace(string(body)))
	return nil
}
