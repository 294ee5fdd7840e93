package predlog

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgServer is a real, throw-away PostgreSQL server: Debian's binaries,
// a cluster in a temporary directory, a free loopback port, a unix socket
// in the same directory. PostgreSQL refuses to run as root, so as root it
// runs as the postgres system user (created by the Debian package).
type pgServer struct {
	bin, dir, data string
	port           int
	asUser         []string
}

const pgMissing = "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin " +
	"(initdb, pg_ctl): install them with scripts/deps.sh (Debian package postgresql); " +
	"`go test -short` skips the PostgreSQL tests"

func startPostgres(t *testing.T) *pgServer {
	t.Helper()
	ctls, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(ctls) == 0 {
		t.Fatal(pgMissing)
	}
	// The newest major version.
	major := func(p string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return n
	}
	slices.SortFunc(ctls, func(a, b string) int { return major(a) - major(b) })
	s := &pgServer{bin: filepath.Dir(ctls[len(ctls)-1])}
	for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(s.bin, b)); err != nil {
			t.Fatalf("%s: %v", pgMissing, err)
		}
	}

	// Not t.TempDir(): its parent is private to root, and the server may
	// run as another user. Registered first, so removed last.
	dir, err := os.MkdirTemp("", "predlog-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s.dir, s.data = dir, filepath.Join(dir, "data")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, and PostgreSQL refuses root: need the postgres system user "+
				"(Debian package postgresql, scripts/deps.sh): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		if ru, err := exec.LookPath("runuser"); err == nil {
			s.asUser = []string{ru, "-u", "postgres", "--"}
		} else {
			t.Fatalf("running as root without runuser (util-linux) to start PostgreSQL as postgres: %v", err)
		}
	}
	if out, err := s.cmd("initdb", "-D", s.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
		"--no-locale", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	var startErr error
	for range 3 { // a free port can be taken between asking and listening
		s.port = freePort(t)
		if startErr = s.start(); startErr == nil {
			break
		}
	}
	if startErr != nil {
		t.Fatalf("starting PostgreSQL: %v", startErr)
	}
	t.Cleanup(func() {
		if out, err := s.cmd("pg_ctl", "-D", s.data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
			t.Errorf("pg_ctl stop: %v\n%s", err, out)
		}
	})
	t.Logf("PostgreSQL (%s) on 127.0.0.1:%d, data in %s", s.bin, s.port, s.data)
	return s
}

// cmd runs one of the server's binaries as the server's user, in its
// directory (the test's working directory may be closed to that user).
func (s *pgServer) cmd(name string, args ...string) *exec.Cmd {
	argv := append(append(slices.Clone(s.asUser), filepath.Join(s.bin, name)), args...)
	c := exec.Command(argv[0], argv[1:]...)
	c.Dir = s.dir
	return c
}

// start starts the server and waits until it accepts connections.
func (s *pgServer) start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c shared_buffers=16MB "+
		"-c max_connections=40 -c fsync=on -c synchronous_commit=on", s.port, s.dir)
	logFile := filepath.Join(s.dir, "server.log")
	if out, err := s.cmd("pg_ctl", "-D", s.data, "-l", logFile, "-w", "-t", "60", "-o", opts, "start").CombinedOutput(); err != nil {
		serverLog, _ := os.ReadFile(logFile)
		return fmt.Errorf("pg_ctl start: %v\n%s\nserver log:\n%s", err, out, serverLog)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		c, err := pgx.Connect(ctx, s.dsn("postgres"))
		if err == nil {
			c.Close(ctx)
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("server does not accept connections: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *pgServer) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, db)
}

// createDB creates an empty database and returns its DSN.
func (s *pgServer) createDB(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, s.dsn("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return s.dsn(name)
}

// crashRestart kills the server (immediate shutdown: no checkpoint, crash
// recovery from the WAL at the next start) and starts it again.
func (s *pgServer) crashRestart(t *testing.T) {
	t.Helper()
	if out, err := s.cmd("pg_ctl", "-D", s.data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl stop -m immediate: %v\n%s", err, out)
	}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	serverLog, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	if !strings.Contains(string(serverLog), "not properly shut down") {
		t.Log("server log does not mention crash recovery")
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
