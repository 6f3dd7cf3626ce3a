package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// CreateStream creates a stream on the server or cluster at url, trying
// again for up to 30 s while JetStream is not ready (a cluster electing
// its meta leader, a replicated stream waiting for its peers). The
// connection behind the returned stream closes with the test.
func CreateStream(t testing.TB, url string, cfg jetstream.StreamConfig) jetstream.Stream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("natstest: connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := js.CreateStream(ctx, cfg)
		cancel()
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: create stream %s: %v", cfg.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
