package osmand

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // time_zone works on a box without a zoneinfo database
	"unicode/utf8"

	"routehound/engine"
	"routehound/fleet"
	"routehound/internal/netguard"
)

// Config is the listener's configuration.
type Config struct {
	Listen     string
	PathSecret string // "" : any path; else the path must start /osmand/<secret>
	SpeedUnit  SpeedUnit
	Zone       *time.Location
	TLSCert    string // PEM files; both set: HTTPS
	TLSKey     string
	// Devices registered in the config (id → driver), looked up before
	// the devices table.
	Devices           map[string]string
	MaxBodyBytes      int64
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// BodyReadTimeout bounds the time a request's body takes to arrive
	// (netguard.BodyDeadline; 0: a minute).
	BodyReadTimeout time.Duration
	// Conns bounds the open connections, in total and per source address.
	Conns netguard.Limits
	// MaxUnknownDevices is how many distinct unknown device ids (and wrong
	// path secrets) one source address may send within
	// UnknownDeviceWindow; past it every request of the address is closed
	// without an answer until the window ends (0: no limit).
	MaxUnknownDevices   int
	UnknownDeviceWindow time.Duration
}

// QuarantineSlots is how many malformed requests the quarantine keeps per
// device: the keys are <device>~00 … ~63, reused in turn, so a phone that
// keeps sending garbage cannot grow the table without bound. Each entry
// holds its received_at; the counter starts again at 00 after a restart.
const QuarantineSlots = 64

// Listener serves the OsmAnd protocol on its own port.
type Listener struct {
	e    *engine.Engine
	cfg  Config
	log  *slog.Logger
	srv  *http.Server
	addr net.Addr
	done chan error // cap 1: Serve's end

	guard *netguard.Listener // the connection caps (nil before Start)

	// guesses counts unknown device ids and wrong path secrets per source
	// address (nil: no limit).
	guesses *netguard.FailureLimiter

	qmu   sync.Mutex        // guards qnext only
	qnext map[string]uint32 // device → next quarantine slot; bounded by the registered devices
}

// New builds the listener's handler without serving: tests drive it with
// httptest, Start serves it.
func New(e *engine.Engine, cfg Config, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Zone == nil {
		cfg.Zone = time.UTC
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 64 << 10
	}
	return &Listener{e: e, cfg: cfg, log: log, qnext: map[string]uint32{}, done: make(chan error, 1),
		guesses: netguard.NewFailureLimiter(cfg.MaxUnknownDevices, cfg.UnknownDeviceWindow)}
}

// Start listens on cfg.Listen and serves until Shutdown.
func Start(e *engine.Engine, cfg Config, log *slog.Logger) (*Listener, error) {
	l := New(e, cfg, log)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("osmand: listen %s: %w", cfg.Listen, err)
	}
	l.addr = ln.Addr()
	l.guard = netguard.Listen(ln, cfg.Conns)
	ln = l.guard
	bodyTimeout := cfg.BodyReadTimeout
	if bodyTimeout <= 0 {
		bodyTimeout = time.Minute
	}
	l.srv = &http.Server{
		// A body is at most max_body_bytes; body_read_timeout is plenty
		// on a poor mobile link and stops a trickling client from holding
		// a handler (also after a 403 or 404, while net/http reads the
		// unread body away).
		Handler:           netguard.BodyDeadline(l, bodyTimeout),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		MaxHeaderBytes:    netguard.MaxHeaderBytes,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelWarn),
	}
	tls := cfg.TLSCert != "" && cfg.TLSKey != ""
	go func() {
		var err error
		if tls {
			err = l.srv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
		} else {
			err = l.srv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		l.done <- err
	}()
	l.log.Info("phone listener serving", "listen", l.addr.String(), "tls", tls, "path_secret", cfg.PathSecret != "")
	return l, nil
}

// Addr is where the listener is bound (nil before Start).
func (l *Listener) Addr() net.Addr { return l.addr }

// Refused counts the connections closed at the cap in total and at the
// cap per address (0, 0 before Start).
func (l *Listener) Refused() (total, perAddr uint64) {
	if l.guard == nil {
		return 0, 0
	}
	return l.guard.Refused()
}

// Done delivers Serve's end: nil after Shutdown, else why it stopped.
func (l *Listener) Done() <-chan error { return l.done }

// Shutdown stops accepting and waits for requests in flight (each waits
// for its commit); call it before the engine closes. Safe to call twice.
func (l *Listener) Shutdown(ctx context.Context) error {
	if l.srv == nil {
		return nil
	}
	if err := l.srv.Shutdown(ctx); err != nil {
		l.srv.Close()
		return fmt.Errorf("osmand: shutdown: %w", err)
	}
	return nil
}

// ServeHTTP answers one request of a phone. Any method and any path (under
// the secret, when one is set) is accepted, as the apps use both.
//
// A device id is a phone's only credential, so the answers do not tell
// which ids exist: a request naming an unknown device is answered as one
// of a registered device is (200, empty body) and stores nothing; a wrong
// path secret is a 404 before the device is looked at. Guessing is
// limited per source address: past MaxUnknownDevices distinct unknown ids
// or wrong secrets within UnknownDeviceWindow, every request of the
// address (whatever its device) is closed without an answer until the
// window ends, and counted (PhoneStats.Throttled).
func (l *Listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := l.e.Phone()
	if _, blocked := l.guesses.Blocked(r); blocked {
		st.Throttled.Add(1)
		l.e.Reject(engine.LaneDriver, "throttled")
		l.abort(w, nil)
		return
	}
	if !l.secretOK(r.URL.Path) {
		st.BadSecret.Add(1)
		l.guesses.FailedKey(r, "secret\x00"+r.URL.Path)
		l.e.Reject(engine.LaneDriver, "bad_secret")
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, l.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			l.e.Reject(engine.LaneDriver, "body_too_large")
			http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
			return
		}
		l.abort(w, nil) // the phone went away mid-body: nothing to answer
		return
	}
	now := time.Now()
	rep, derr := Decode(r.URL.RawQuery, r.Header.Get("Content-Type"), body,
		Options{SpeedUnit: l.cfg.SpeedUnit, Zone: l.cfg.Zone, Now: now})
	if errors.Is(derr, ErrNoDevice) {
		st.NoDevice.Add(1)
		l.e.Reject(engine.LaneDriver, "no_device")
		http.Error(w, "no device id (id, deviceid or device_id)", http.StatusBadRequest)
		return
	}
	driver, ok, err := l.driverOf(rep.Device)
	if err != nil {
		l.log.Error("phone listener: device lookup failed", "device", rep.Device, "err", err)
		l.abort(w, err)
		return
	}
	if !ok {
		// Answered as a stored point is, so that the answer does not
		// confirm which ids exist; the guess is counted against the
		// source address.
		st.Unknown.Add(1)
		l.guesses.FailedKey(r, "device\x00"+rep.Device)
		l.e.Reject(engine.LaneDriver, "unknown_device")
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return
	}
	ctx := r.Context()
	switch {
	case derr != nil:
		err = l.quarantine(ctx, r, body, rep.Device, driver, now, derr)
		if err == nil {
			st.Quarantined.Add(1)
		}
	case !rep.Position:
		var v []byte
		if v, err = rep.StatusValue(driver, now); err == nil {
			err = l.e.PutPhoneRecord(ctx, fleet.TableDeviceStatus, rep.Device, v)
		}
		if err == nil {
			st.Statuses.Add(1)
		}
	default:
		var v []byte
		if v, err = rep.PointValue(); err == nil {
			_, err = l.e.SubmitPhonePoint(ctx, engine.PhonePoint{Driver: driver, Device: rep.Device,
				FixMs: rep.Fix.UnixMilli(), Lat: rep.Lat, Lng: rep.Lon, Value: v})
		}
	}
	if err != nil {
		l.abort(w, err)
		return
	}
	// 200 with an empty body: the point (status, quarantine entry) is durable.
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

// secretOK checks the path secret: /osmand/<secret> or /osmand/<secret>/…
func (l *Listener) secretOK(path string) bool {
	if l.cfg.PathSecret == "" {
		return true
	}
	rest, ok := strings.CutPrefix(path, "/osmand/")
	if !ok {
		return false
	}
	seg, _, _ := strings.Cut(rest, "/")
	return subtle.ConstantTimeCompare([]byte(seg), []byte(l.cfg.PathSecret)) == 1
}

// driverOf resolves a device: the config first, then the devices table.
func (l *Listener) driverOf(device string) (string, bool, error) {
	if d, ok := l.cfg.Devices[device]; ok {
		return d, true, nil
	}
	if fleet.CheckDeviceID(device) != nil {
		return "", false, nil // could never have been registered
	}
	return l.e.DeviceDriver(device)
}

// abort ends the exchange without an HTTP status: the phone keeps its
// point and retries on the broken connection, where any status would make
// some app versions delete it. It covers a full lane (counted as
// closed_lane_full; the lane counts lane_full), a failed or closing store,
// and a client that left (err nil or its context's error).
func (l *Listener) abort(w http.ResponseWriter, err error) {
	st := l.e.Phone()
	switch {
	case errors.Is(err, engine.ErrLaneFull):
		st.ClosedFull.Add(1)
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
	default:
		st.ClosedError.Add(1)
		if !engine.IsStorageRefusal(err) {
			l.log.Error("phone listener: storing failed", "err", err)
		}
	}
	conn, _, herr := http.NewResponseController(w).Hijack()
	if herr != nil {
		// HTTP/2 cannot hand the connection over: reset the stream, the
		// net/http way of answering nothing.
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

// quarantined is a quarantine entry: the raw request, kept whole.
type quarantined struct {
	Device      string `json:"device"`
	Driver      string `json:"driver"`
	ReceivedAt  string `json:"received_at"`
	Error       string `json:"error"`
	Method      string `json:"method"`
	Path        string `json:"path"` // the secret segment replaced by "…"
	Query       string `json:"query"`
	ContentType string `json:"content_type,omitempty"`
	Body        string `json:"body,omitempty"`
	BodyBase64  string `json:"body_base64,omitempty"` // a body that is not UTF-8
}

func (l *Listener) quarantine(ctx context.Context, r *http.Request, body []byte, device, driver string, now time.Time, why error) error {
	q := quarantined{Device: device, Driver: driver, ReceivedAt: now.UTC().Format(tsLayout),
		Error: strings.TrimPrefix(why.Error(), "osmand: "), Method: r.Method, Path: r.URL.Path,
		Query: r.URL.RawQuery, ContentType: r.Header.Get("Content-Type")}
	if l.cfg.PathSecret != "" {
		q.Path = strings.Replace(q.Path, l.cfg.PathSecret, "…", 1)
	}
	if utf8.Valid(body) {
		q.Body = string(body)
	} else {
		q.BodyBase64 = base64.StdEncoding.EncodeToString(body)
	}
	v, err := json.Marshal(q)
	if err != nil {
		return fmt.Errorf("osmand: encode quarantine entry of %s: %w", device, err)
	}
	l.qmu.Lock()
	slot := l.qnext[device]
	l.qnext[device] = (slot + 1) % QuarantineSlots
	l.qmu.Unlock()
	key := fmt.Sprintf("%s~%02d", device, slot)
	return l.e.PutPhoneRecord(ctx, fleet.TableQuarantine, key, v)
}
