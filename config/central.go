package config

import (
	"errors"
	"fmt"
	"strings"
)

// Central is the central view (issue 20, part 4): a box that follows
// several depots' shipped logs from NATS JetStream and serves their tables,
// subscriptions and dashboard read-only, each key under its depot
// (<depot>/<key>). Off while NATSURL is empty. `serve --central URL` sets
// it.
type Central struct {
	// NATSURL is the NATS server URL (several, comma-separated, for a
	// cluster); empty: not a central view.
	NATSURL string `toml:"nats_url"`
	// Depots are the depots followed; empty: every depot the streams hold.
	Depots []string `toml:"depots"`
	// Streams are the JetStream streams read; empty: every stream whose
	// subjects lie under routehound.> (one stream for all depots, or one
	// per depot), looked for again every few seconds.
	Streams []string `toml:"streams"`
}

// Validate reports the first [central] setting that cannot work.
func (c Central) Validate(u Uplink) error {
	if c.NATSURL == "" {
		if len(c.Depots) > 0 || len(c.Streams) > 0 {
			return errors.New("config: central.depots and central.streams need central.nats_url")
		}
		return nil
	}
	if u.NATSURL != "" {
		return errors.New("config: central.nats_url and uplink.nats_url exclude each other: a central view follows depots, it is none of them (run it on its own box or data dir)")
	}
	for _, d := range c.Depots {
		if d == "" || len(d) > 64 || strings.Trim(d, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
			return fmt.Errorf("config: central.depots: %q is not a depot (1 to 64 letters, digits, - and _)", d)
		}
	}
	for _, s := range c.Streams {
		if s == "" || strings.ContainsAny(s, " .*>") {
			return fmt.Errorf("config: central.streams: %q is not a stream name (no spaces, '.', '*' or '>')", s)
		}
	}
	return nil
}
