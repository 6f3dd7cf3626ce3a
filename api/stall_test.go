package api_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"routehound/api"
)

// fillStore puts n values of about size bytes into the table bulk: enough
// that an answer holding them outgrows the sockets' buffers.
func (f *fixture) fillStore(t *testing.T, n, size int) {
	t.Helper()
	raw := make([]byte, size/2)
	for i := range n {
		rand.Read(raw)
		wantStatus(t, f.do(t, "PUT", fmt.Sprintf("/v1/tables/bulk/keys/k%d", i), tok(api.RoleDashboard),
			`{"v":"`+hex.EncodeToString(raw)+`"}`), http.StatusCreated)
	}
}

// stalledGET sends a GET on a raw connection, reads the status line, and
// stops reading (the receive buffer keeps its default size: it does not
// grow while nothing is read).
func (f *fixture) stalledGET(t *testing.T, path, token string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: routehound\r\nAuthorization: Bearer %s\r\n\r\n", path, token)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(conn, 16).ReadString('\n')
	if err != nil || !strings.Contains(line, " 200 ") {
		t.Fatalf("GET %s: %q %v", path, line, err)
	}
	return conn
}

// closedByServer reads what is left on conn and wants the server to have
// closed it (EOF or reset) before the whole answer arrived, not a timeout.
func closedByServer(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: the server did not close the stalled connection: %v", what, err)
	}
}

// TestBackupStalledClientIsCut: a backup whose client stops reading is cut
// after the write timeout, which releases the backup slot (and the
// snapshot and store read lock it held): the next backup runs.
func TestBackupStalledClientIsCut(t *testing.T) {
	defer api.SetResponseWriteTimeoutForTest(500 * time.Millisecond)()
	f := newFixture(t)
	// ~24 MB of table state and log: far more than the server's send
	// buffer (tcp_wmem, 4 MiB at most by default) and the client's.
	f.fillStore(t, 60, 200<<10)
	conn := f.stalledGET(t, "/v1/admin/backup", tok(api.RoleAdmin))

	t0 := time.Now()
	r, err := f.send("GET", "/v1/admin/backup", tok(api.RoleAdmin), nil) // 15 s client timeout
	if err != nil {
		t.Fatalf("a backup after a stalled one (%v): %v", time.Since(t0), err)
	}
	wantStatus(t, r, http.StatusOK)
	if _, err := api.VerifyBackup(bytes.NewReader(r.body)); err != nil {
		t.Fatal(err)
	}
	closedByServer(t, conn, "backup")
}
