//! A PostgreSQL server of the scenario's own — its own data directory and port, started and
//! stopped with `pg_ctl` — so a scenario can take it away without touching the shared server.
//! `initdb` and `postgres` refuse to run as root, so they run as the `postgres` user on a
//! directory that user owns.

use crate::disk::{path, run};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// The data directory is a tmpfs of this many MiB, mounted by [`OwnPostgres::on_tmpfs`].
    tmpfs_mib: Option<u32>,
}

impl OwnPostgres {
    /// initdb, then start; the database `test` exists when this returns.
    pub fn start() -> OwnPostgres {
        OwnPostgres::init(None)
    }

    /// [`OwnPostgres::start`] with the data directory on a tmpfs of `mib` MiB (WAL segments of
    /// 1 MiB, so the WAL fits), for filling it up.
    pub fn on_tmpfs(mib: u32) -> OwnPostgres {
        OwnPostgres::init(Some(mib))
    }

    fn init(tmpfs_mib: Option<u32>) -> OwnPostgres {
        let bin = server_bin();
        let port = free_port();
        // Named after the namespace, so scripts/faults can remove what a killed run left.
        let ns = std::env::var("PAYHOOK_FAULTS_NETNS").unwrap_or_else(|_| "none".into());
        let dir = std::env::temp_dir().join(format!("payhook-faults-pg-{ns}-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("the server's directory");
        let pg = OwnPostgres { port, dir, bin, tmpfs_mib };
        let data = pg.data();
        let mut initdb = vec!["-D", path(&data), "-U", "postgres", "-A", "trust", "--no-sync"];
        if let Some(mib) = tmpfs_mib {
            run("mount", &["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs", path(&data)]);
            initdb.push("--wal-segsize=1");
        }
        run("chown", &["-R", "postgres:postgres", path(&pg.dir)]);
        pg.as_postgres("initdb", &initdb);
        pg.start_again();
        pg.as_postgres("createdb", &["-h", "127.0.0.1", "-p", &port.to_string(), "test"]);
        pg
    }

    /// The data directory (a mount point, for [`OwnPostgres::on_tmpfs`]).
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
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
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200{}",
            self.port,
            path(&self.dir),
            // On a tmpfs: a WAL that recycles a few small segments, never growing nor removing
            // one (which would free space under a test that filled the disk), and no vacuum
            // truncating tables behind its back either.
            if self.tmpfs_mib.is_some() {
                " -c min_wal_size=4MB -c max_wal_size=4MB -c autovacuum=off"
            } else {
                ""
            }
        );
        let log = self.dir.join("server.log");
        self.as_postgres(
            "pg_ctl",
            &["-D", path(&self.data()), "-o", &opts, "-l", path(&log), "-w", "start"],
        );
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
        if self.tmpfs_mib.is_some() {
            let _ = Command::new("umount").arg(self.data()).output();
        }
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
