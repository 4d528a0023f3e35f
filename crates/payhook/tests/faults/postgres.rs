//! A PostgreSQL server of the scenario's own — its own data directory and port, started and
//! stopped with `pg_ctl` — so a scenario can take it away without touching the shared server.
//! `initdb` and `postgres` refuse to run as root, so they run as the `postgres` user on a
//! directory that user owns.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl OwnPostgres {
    /// initdb, then start; the database `test` exists when this returns.
    pub fn start() -> OwnPostgres {
        let bin = server_bin();
        let port = free_port();
        // Named after the namespace, so scripts/faults can remove what a killed run left.
        let ns = std::env::var("PAYHOOK_FAULTS_NETNS").unwrap_or_else(|_| "none".into());
        let dir = std::env::temp_dir().join(format!("payhook-faults-pg-{ns}-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the server's directory");
        run("chown", &["postgres:postgres", path(&dir)]);
        let pg = OwnPostgres { port, dir, bin };
        pg.as_postgres(
            "initdb",
            &["-D", path(&pg.data()), "-U", "postgres", "-A", "trust", "--no-sync"],
        );
        pg.start_again();
        pg.as_postgres("createdb", &["-h", "127.0.0.1", "-p", &port.to_string(), "test"]);
        pg
    }

    /// The URL of its `test` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/test", self.port)
    }

    /// `pg_ctl stop -m fast`: sessions are disconnected, the server shuts down cleanly.
    pub fn stop(&self) {
        self.as_postgres("pg_ctl", &["-D", path(&self.data()), "-m", "fast", "-w", "stop"]);
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
            self.port,
            path(&self.dir)
        );
        let log = self.dir.join("server.log");
        self.as_postgres(
            "pg_ctl",
            &["-D", path(&self.data()), "-o", &opts, "-l", path(&log), "-w", "start"],
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut all = vec!["-u", "postgres", "--", path(&exe)];
        all.extend_from_slice(args);
        run("runuser", &all);
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", path(&self.data()), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest installed server's `bin` directory (Debian: /usr/lib/postgresql/N/bin).
fn server_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries in /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server with pg_ctl")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
